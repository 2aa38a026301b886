//! The case stage: alerts and feedback in, case events out, in event-time order.
//!
//! Inputs wait in a buffer ordered by (event time, kind, id) until the engine's watermark
//! (the *frontier*) passes them: no alert or feedback earlier than the frontier can arrive
//! any more, so the buffer's order is the order the same input always produces, whatever
//! the number of partitions or the interleaving of the workers. SLA timers fire as the
//! frontier passes their due time, interleaved with the inputs by time (timers first on a
//! tie). An input that arrives behind the frontier anyway (a stream that started late) is
//! processed at once and counted as late.
//!
//! Open cases live in memory (tens of thousands at city scale); closed, merged and
//! rejected ones leave it once their last event is out. [`CaseStage::restore`] reloads open
//! cases from the store after a restart, so timers resume and replayed alerts and feedback
//! already applied change nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use gridwatch_engine::time::{Millis, WATERMARK_START};
use gridwatch_engine::{Alert, AlertState};
use serde::Serialize;
use xxhash_rust::xxh3::Xxh3;

use crate::config::{AlertFacts, CasesConfig, DEFAULT_WINDOW_MS, KeyPart, category_within, distance_m};
use crate::gate::{AlertGate, GateCounts, GatedAlert, Verdict};
use crate::model::{Action, Case, CaseEvent, CaseStatus, CaseUpdate, DispatchBy, EventKind, Feedback, Flags};
use crate::simulate::CrewSimulator;

/// What the stage emits, in processing order.
#[derive(Debug, Clone)]
pub enum StageOutput {
    /// An alert with the alert stage's verdict (for alert sinks).
    Alert(GatedAlert),
    /// A case changed.
    Case(Box<CaseUpdate>),
    /// A feedback event that could not be applied (for the dead-letter output).
    Rejected {
        /// The feedback.
        feedback: Feedback,
        /// Why.
        reason: String,
    },
}

/// Counters of the stage.
#[derive(Debug, Default, Clone, Serialize, serde::Deserialize)]
pub struct StageStats {
    /// Alert verdicts.
    pub alerts: GateCounts,
    /// Cases opened.
    pub cases_opened: u64,
    /// Alerts that joined an existing case.
    pub alerts_joined: u64,
    /// Feedback events applied.
    pub feedback_applied: u64,
    /// Feedback events rejected (unknown case, illegal transition).
    pub feedback_rejected: u64,
    /// Feedback events already applied (replays).
    pub feedback_duplicate: u64,
    /// Reminders emitted.
    pub reminders: u64,
    /// Escalations emitted.
    pub escalations: u64,
    /// Case events emitted.
    pub case_events: u64,
    /// Inputs that arrived behind the frontier.
    pub late_inputs: u64,
    /// Replayed inputs a previous run processed (before the restored frontier): they change
    /// no case again (alerts still pass the alert stage to the alert sinks).
    pub replayed_skipped: u64,
    /// Cases open now.
    pub open_cases: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Order {
    at: Millis,
    /// Alerts before feedback at the same instant: feedback may refer to the case an alert
    /// opens.
    rank: u8,
    id: String,
    state: u8,
    notification: u32,
}

#[derive(Debug)]
enum Input {
    Alert(Alert),
    Feedback(Feedback),
}

impl Input {
    fn at(&self) -> Millis {
        match self {
            Input::Alert(a) => a.event_time,
            Input::Feedback(f) => f.at,
        }
    }
}

/// The alert and case stage. See the module docs.
#[derive(Debug)]
pub struct CaseStage {
    cfg: Arc<CasesConfig>,
    gate: AlertGate,
    pending: BTreeMap<Order, Input>,
    cases: HashMap<String, Case>,
    by_key: HashMap<String, Vec<String>>,
    by_alert: HashMap<String, String>,
    timers: BTreeSet<(Millis, String)>,
    due: HashMap<String, Millis>,
    frontier: Millis,
    /// Inputs before this were processed by a previous run (restored from the store).
    resume_from: Millis,
    /// Time of the latest input or timer processed.
    clock: Millis,
    /// Latest event time of an input from outside (alerts, feedback streams): the end of
    /// the input at [`CaseStage::finish`].
    last_input: Millis,
    simulator: Option<CrewSimulator>,
    out: Vec<StageOutput>,
    stats: StageStats,
}

impl CaseStage {
    /// A stage with no open cases.
    pub fn new(cfg: Arc<CasesConfig>, simulator: Option<CrewSimulator>) -> CaseStage {
        CaseStage {
            cfg,
            gate: AlertGate::default(),
            pending: BTreeMap::new(),
            cases: HashMap::new(),
            by_key: HashMap::new(),
            by_alert: HashMap::new(),
            timers: BTreeSet::new(),
            due: HashMap::new(),
            frontier: WATERMARK_START,
            resume_from: WATERMARK_START,
            clock: WATERMARK_START,
            last_input: WATERMARK_START,
            simulator,
            out: Vec::new(),
            stats: StageStats::default(),
        }
    }

    /// Reloads open cases (from the store, after a restart) and the frontier the previous
    /// run had processed everything before ([`CaseStage::checkpoint`]): timers resume, and
    /// replayed inputs before that frontier are skipped — a replayed alert of a case closed
    /// meanwhile must not open a duplicate.
    pub fn restore(&mut self, cases: Vec<Case>, processed_before: Option<Millis>) {
        if let Some(f) = processed_before {
            self.resume_from = f;
            self.clock = self.clock.max(f);
        }
        for case in cases.into_iter().filter(|c| c.status.is_open()) {
            if let Some(sim) = &self.simulator {
                for fb in sim.plan(&case) {
                    if !case.feedback_ids.contains(&fb.feedback_id) {
                        self.enqueue(Input::Feedback(fb));
                    }
                }
            }
            self.index(&case);
            let id = case.case_id.clone();
            self.cases.insert(id.clone(), case);
            self.reschedule(&id);
        }
        self.stats.open_cases = self.cases.len() as u64;
    }

    /// Queues alerts; they are processed once the frontier passes their event time.
    pub fn push_alerts(&mut self, alerts: impl IntoIterator<Item = Alert>) {
        for a in alerts {
            self.push(Input::Alert(a));
        }
    }

    /// Queues one feedback event.
    pub fn push_feedback(&mut self, feedback: Feedback) {
        self.push(Input::Feedback(feedback));
    }

    fn push(&mut self, input: Input) {
        let at = input.at();
        self.last_input = self.last_input.max(at);
        if at < self.frontier {
            self.stats.late_inputs += 1;
            self.process(input);
            // What it queued below the frontier (the crew's feedback on a case it opened)
            // is due too: the checkpoint says everything before the frontier is processed.
            let frontier = self.frontier;
            self.release(|at| at < frontier);
        } else {
            self.enqueue(input);
        }
    }

    fn enqueue(&mut self, input: Input) {
        let order = match &input {
            Input::Alert(a) => Order {
                at: a.event_time,
                rank: 0,
                id: a.alert_id.clone(),
                state: a.state as u8,
                notification: a.notification,
            },
            Input::Feedback(f) => Order { at: f.at, rank: 1, id: f.feedback_id.clone(), state: 0, notification: 0 },
        };
        // A replayed duplicate (same alert record, same feedback id) lands on the same key.
        self.pending.insert(order, input);
    }

    /// Processes every input and timer before `frontier` (the engine's watermark).
    pub fn advance(&mut self, frontier: Millis) {
        if frontier <= self.frontier {
            return;
        }
        self.frontier = frontier;
        self.release(|at| at < frontier);
        self.fire_timers_before(frontier);
    }

    /// End of input: processes everything up to the last input's time. Like the engine's
    /// timers, what lies beyond it (SLA deadlines, the simulated crew's later feedback)
    /// does not happen: a restart on more input takes it from there.
    pub fn finish(&mut self) {
        let end = self.last_input.max(self.frontier);
        if end == WATERMARK_START {
            return;
        }
        self.release(|at| at <= end);
        self.fire_timers_before(end.saturating_add(1));
        self.frontier = self.frontier.max(end.saturating_add(1));
    }

    /// Takes what was emitted since the last call.
    pub fn drain(&mut self) -> Vec<StageOutput> {
        std::mem::take(&mut self.out)
    }

    /// Counters.
    pub fn stats(&self) -> StageStats {
        let mut s = self.stats.clone();
        s.alerts = self.gate.counts;
        s.open_cases = self.cases.len() as u64;
        s
    }

    /// Every input before this time has been processed (for the store, with the updates up
    /// to now): a restarted stage skips replayed inputs before it. `None` before any input.
    pub fn checkpoint(&self) -> Option<Millis> {
        debug_assert!(
            self.pending.first_key_value().is_none_or(|(k, _)| k.at >= self.frontier),
            "an input before the frontier is still queued"
        );
        (self.frontier != WATERMARK_START).then_some(self.frontier)
    }

    /// Inputs waiting for the frontier.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    fn release(&mut self, before: impl Fn(Millis) -> bool) {
        while let Some(at) = self.pending.first_key_value().map(|(k, _)| k.at) {
            if !before(at) {
                break;
            }
            self.fire_timers_before(at.saturating_add(1));
            // Timers may have queued feedback (the crew simulator), so take the first again.
            let Some((_, input)) = self.pending.pop_first() else { break };
            self.process(input);
        }
    }

    fn next_timer(&self) -> Option<Millis> {
        let sla = self.timers.first().map(|(t, _)| *t);
        match (sla, self.gate.next_settle(&self.cfg)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Fires every SLA and flapping timer due before `limit`, in time order.
    fn fire_timers_before(&mut self, limit: Millis) {
        while let Some(due) = self.next_timer().filter(|&t| t < limit) {
            self.clock = self.clock.max(due);
            let mut settled = self.gate.settle(&self.cfg, due);
            if due < self.resume_from {
                settled.clear(); // settled before the restored frontier: the previous run sent it
            }
            for alert in settled {
                let facts = self.cfg.facts(&alert);
                self.on_sent_alert(&alert, &facts);
                self.out.push(StageOutput::Alert(GatedAlert { alert, verdict: Verdict::Stable }));
            }
            let ids: Vec<String> = self
                .timers
                .range((due, String::new())..)
                .take_while(|(t, _)| *t == due)
                .map(|(_, id)| id.clone())
                .collect();
            for id in ids {
                self.timers.remove(&(due, id.clone()));
                self.due.remove(&id);
                self.fire_sla(&id, due);
                self.reschedule(&id);
            }
        }
    }

    fn process(&mut self, input: Input) {
        if input.at() < self.resume_from {
            // Processed by the previous run: its effects are in the restored cases. Alerts
            // still pass the alert stage (rebuilding inhibition and flapping state) and go
            // to the alert sinks as before, but do not touch cases again.
            self.stats.replayed_skipped += 1;
            if let Input::Alert(alert) = input {
                let facts = self.cfg.facts(&alert);
                let verdict = self.gate.decide(&self.cfg, &alert, &facts);
                self.out.push(StageOutput::Alert(GatedAlert { alert, verdict }));
            }
            return;
        }
        match input {
            Input::Alert(alert) => {
                self.clock = self.clock.max(alert.event_time);
                let facts = self.cfg.facts(&alert);
                let verdict = self.gate.decide(&self.cfg, &alert, &facts);
                if verdict.is_sent() {
                    self.on_sent_alert(&alert, &facts);
                }
                self.out.push(StageOutput::Alert(GatedAlert { alert, verdict }));
            }
            Input::Feedback(fb) => {
                self.clock = self.clock.max(fb.at);
                if let Err(reason) = self.on_feedback(&fb) {
                    self.stats.feedback_rejected += 1;
                    self.out.push(StageOutput::Rejected { feedback: fb, reason });
                }
            }
        }
    }

    fn on_sent_alert(&mut self, alert: &Alert, facts: &AlertFacts) {
        match alert.state {
            AlertState::Firing => {
                // Re-notifications and replays of an alert a case already holds change nothing.
                let excluded = self.cfg.exclude.iter().any(|m| m.matches(alert, facts));
                if !excluded && !self.by_alert.contains_key(&alert.alert_id) {
                    self.join_or_open(alert, facts);
                }
            }
            AlertState::Resolved => {
                let Some(id) = self.by_alert.get(&alert.alert_id).cloned() else { return };
                let Some(case) = self.cases.get_mut(&id) else { return };
                if !case.firing.contains(&alert.alert_id) {
                    return;
                }
                case.firing.retain(|a| *a != alert.alert_id);
                let detail = json_map([
                    ("alert_id", alert.alert_id.clone().into()),
                    ("rule", alert.rule_id.to_string().into()),
                    ("all_clear", case.firing.is_empty().into()),
                ]);
                self.emit(&id, alert.event_time, EventKind::AlertResolved, detail);
            }
        }
    }

    fn join_or_open(&mut self, alert: &Alert, facts: &AlertFacts) {
        let cfg = self.cfg.clone();
        let group = cfg.grouping.iter().find(|g| g.matcher.matches(alert, facts));
        let default_by = [KeyPart::Category, KeyPart::Key];
        let by = group.map_or(&default_by[..], |g| &g.by[..]);
        let window = group.map_or(DEFAULT_WINDOW_MS, |g| g.window_ms);
        let within = group.and_then(|g| g.within_m);
        let base_key = by.iter().map(|p| p.value(alert, facts).unwrap_or(&alert.key)).collect::<Vec<_>>().join("|");
        // Radius grouping: cases are indexed by a cell of the radius' size, so only the
        // 3×3 cells around the alert are searched, not every open case of the key.
        let (case_key, candidates) = match (within, facts.location) {
            (Some(r), Some(p)) => {
                let (cx, cy) = cell(p, r);
                let keys = (-1..=1)
                    .flat_map(|dx| (-1..=1).map(move |dy| (dx, dy)))
                    .map(|(dx, dy)| format!("{base_key}@{},{}", cx + dx, cy + dy))
                    .collect();
                (format!("{base_key}@{cx},{cy}"), keys)
            }
            _ => (base_key.clone(), vec![base_key]),
        };
        let joined = candidates
            .iter()
            .filter_map(|k| self.by_key.get(k))
            .flat_map(|ids| ids.iter())
            .filter(|id| {
                let c = &self.cases[*id];
                alert.event_time - c.last_seen <= window
                    && match (within, c.location, facts.location) {
                        (Some(r), Some(a), Some(b)) => distance_m(a, b) <= r,
                        _ => true,
                    }
            })
            // The oldest matching case, whatever cell it sits in (ids are unique).
            .min_by_key(|id| (self.cases[*id].first_seen, (*id).clone()))
            .cloned();
        match joined {
            Some(id) => self.join(&id, alert),
            None => self.open(case_key, alert, facts),
        }
    }

    fn join(&mut self, id: &str, alert: &Alert) {
        let limit = self.cfg.evidence_limit;
        let Some(case) = self.cases.get_mut(id) else { return };
        case.alert_ids.push(alert.alert_id.clone());
        case.firing.push(alert.alert_id.clone());
        if !case.rules.iter().any(|r| **r == *alert.rule_id) {
            case.rules.push(alert.rule_id.to_string());
        }
        case.severity = case.severity.max(alert.severity);
        case.last_seen = case.last_seen.max(alert.event_time);
        let room = limit.saturating_sub(case.evidence.len());
        case.evidence.extend(alert.evidence.iter().take(room).cloned());
        self.by_alert.insert(alert.alert_id.clone(), id.to_string());
        self.stats.alerts_joined += 1;
        let detail = json_map([
            ("alert_id", alert.alert_id.clone().into()),
            ("rule", alert.rule_id.to_string().into()),
            ("severity", alert.severity.name().into()),
        ]);
        self.emit(id, alert.event_time, EventKind::AlertJoined, detail);
    }

    fn open(&mut self, case_key: String, alert: &Alert, facts: &AlertFacts) {
        let cfg = self.cfg.clone();
        let case_id = case_id(&case_key, &alert.alert_id);
        let at = alert.event_time;
        let title = cfg
            .titles
            .iter()
            .filter(|(prefix, _)| category_within(&alert.category, prefix))
            .max_by_key(|(prefix, _)| prefix.len())
            .map_or_else(|| alert.rule_name.clone(), |(_, t)| t.clone());
        let key_case = cfg.key_list.categories.iter().any(|c| category_within(&alert.category, c))
            || facts.grid_id.as_ref().is_some_and(|g| cfg.key_list.grids.contains(g));
        let case = Case {
            location: facts.location,
            grid_id: facts.grid_id.clone(),
            component_id: facts.component_id.clone(),
            alert_ids: vec![alert.alert_id.clone()],
            firing: vec![alert.alert_id.clone()],
            rules: vec![alert.rule_id.to_string()],
            evidence: alert.evidence.iter().take(cfg.evidence_limit).cloned().collect(),
            sla_ms: cfg.sla_for(&alert.category, alert.severity),
            flags: Flags { key: key_case, ..Flags::default() },
            ..Case::reported(case_id.clone(), case_key, alert.category.clone(), title, alert.severity, at)
        };
        self.index(&case);
        self.cases.insert(case_id.clone(), case);
        self.stats.cases_opened += 1;
        let detail =
            json_map([("alert_id", alert.alert_id.clone().into()), ("rule", alert.rule_id.to_string().into())]);
        self.emit(&case_id, at, EventKind::Opened, detail);

        // Owner first, then territory, then the default unit.
        let (unit, by) = match facts.component_id.as_ref().and_then(|c| cfg.dispatch.owners.get(c)) {
            Some(owner) => (owner.clone(), DispatchBy::Owner),
            None => match &facts.grid_unit {
                Some(u) => (u.clone(), DispatchBy::Grid),
                None => (cfg.dispatch.default_unit.clone(), DispatchBy::Default),
            },
        };
        let Some(case) = self.cases.get_mut(&case_id) else { return };
        case.unit = Some(unit);
        case.dispatch_by = Some(by);
        case.status = CaseStatus::Dispatched;
        start_clock(case, at);
        let mut detail = json_map([("by", serde_json::to_value(by).unwrap_or_default())]);
        if let Some(d) = case.deadline {
            detail.insert("deadline".into(), gridwatch_engine::time::format_timestamp(d).into());
        }
        self.emit(&case_id, at, EventKind::Dispatched, detail);
        self.reschedule(&case_id);
        if let Some(sim) = &self.simulator {
            let plan = sim.plan(&self.cases[&case_id]);
            for fb in plan {
                self.enqueue(Input::Feedback(fb));
            }
        }
    }

    fn on_feedback(&mut self, fb: &Feedback) -> Result<(), String> {
        let Some(case) = self.cases.get(&fb.case_id) else {
            return Err(format!("case `{}` is not open (unknown, closed, merged or rejected)", fb.case_id));
        };
        if case.feedback_ids.contains(&fb.feedback_id) {
            self.stats.feedback_duplicate += 1;
            return Ok(());
        }
        use CaseStatus as S;
        let status = case.status;
        let allowed: &[CaseStatus] = match fb.action {
            Action::Accept => &[S::Dispatched],
            Action::Resolve | Action::Reassign => &[S::Dispatched, S::InProgress],
            Action::Verify => &[S::Resolved],
            Action::Close => &[S::Verified],
            Action::Reopen => &[S::Resolved, S::Verified],
            Action::Merge | Action::Reject => &[S::Reported, S::Dispatched, S::InProgress, S::Resolved, S::Verified],
        };
        let action =
            serde_json::to_value(fb.action).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        if !allowed.contains(&status) {
            let from: Vec<&str> = allowed.iter().map(|s| s.name()).collect();
            return Err(format!(
                "`{action}` is not allowed on case `{}` in status `{}` (only from: {})",
                fb.case_id,
                status.name(),
                from.join(", ")
            ));
        }
        let mut detail = json_map([("feedback_id", fb.feedback_id.clone().into())]);
        if let Some(note) = &fb.note {
            detail.insert("note".into(), note.clone().into());
        }
        if let Some(unit) = &fb.unit {
            detail.insert("by_unit".into(), unit.clone().into());
        }
        let merge_target = match fb.action {
            Action::Merge => {
                let into = fb.into.as_deref().ok_or("`merge` needs `into`: the case to merge into")?;
                if into == fb.case_id || !self.cases.contains_key(into) {
                    return Err(format!(
                        "cannot merge `{}` into `{into}`: the target is not another open case",
                        fb.case_id
                    ));
                }
                detail.insert("into".into(), into.into());
                Some(into.to_string())
            }
            _ => None,
        };
        if fb.action == Action::Reassign && fb.unit.as_ref().is_none_or(|u| Some(u) == case.unit.as_ref()) {
            return Err(format!("`reassign` of case `{}` needs a `unit` other than the current one", fb.case_id));
        }
        let at = fb.at;
        let Some(case) = self.cases.get_mut(&fb.case_id) else { return Ok(()) };
        case.feedback_ids.push(fb.feedback_id.clone());
        let kind = match fb.action {
            Action::Accept => {
                case.status = S::InProgress;
                EventKind::Accepted
            }
            Action::Resolve => {
                case.status = S::Resolved;
                EventKind::Resolved
            }
            Action::Verify => {
                case.status = S::Verified;
                EventKind::Verified
            }
            Action::Close => {
                case.status = S::Closed;
                EventKind::Closed
            }
            Action::Reassign => {
                detail.insert("from_unit".into(), case.unit.clone().unwrap_or_default().into());
                case.unit = fb.unit.clone();
                case.dispatch_by = Some(DispatchBy::Reassigned);
                case.reassigned += 1;
                case.flags.difficult = true;
                case.status = S::Dispatched;
                EventKind::Reassigned
            }
            Action::Reopen => {
                case.reopened += 1;
                case.flags.difficult |= case.reopened >= 2;
                case.status = S::InProgress;
                start_clock(case, at);
                EventKind::Reopened
            }
            Action::Merge => {
                case.status = S::Merged;
                case.merged_into = merge_target.clone();
                EventKind::Merged
            }
            Action::Reject => {
                case.status = S::Rejected;
                EventKind::Rejected
            }
        };
        self.stats.feedback_applied += 1;
        let id = fb.case_id.clone();
        self.emit(&id, at, kind, detail);
        if let Some(target) = merge_target {
            self.absorb(&target, &id, at);
        }
        self.reschedule(&id);
        if !self.cases.get(&id).is_some_and(|c| c.status.is_open()) {
            self.forget(&id);
        }
        Ok(())
    }

    /// Moves the alerts of `from` (just merged) into `into`.
    fn absorb(&mut self, into: &str, from: &str, at: Millis) {
        let Some(src) = self.cases.get(from).cloned() else { return };
        let Some(dst) = self.cases.get_mut(into) else { return };
        for a in &src.alert_ids {
            if !dst.alert_ids.contains(a) {
                dst.alert_ids.push(a.clone());
            }
        }
        for a in &src.firing {
            if !dst.firing.contains(a) {
                dst.firing.push(a.clone());
            }
        }
        for r in &src.rules {
            if !dst.rules.contains(r) {
                dst.rules.push(r.clone());
            }
        }
        dst.severity = dst.severity.max(src.severity);
        dst.first_seen = dst.first_seen.min(src.first_seen);
        dst.last_seen = dst.last_seen.max(src.last_seen);
        for a in &src.alert_ids {
            self.by_alert.insert(a.clone(), into.to_string());
        }
        self.emit(into, at, EventKind::Absorbed, json_map([("case_id", from.into())]));
    }

    fn fire_sla(&mut self, id: &str, now: Millis) {
        let cfg = self.cfg.clone();
        loop {
            let Some(case) = self.cases.get_mut(id) else { return };
            let (Some(sla), Some(start)) = (case.sla_ms, case.clock_started) else { return };
            if !case.status.clock_runs() {
                return;
            }
            let reminder = cfg.reminders.get(case.reminders_sent as usize).map(|f| (start + frac(sla, *f), *f));
            let escalation = cfg.escalations.get(case.escalation_level as usize).map(|f| (start + frac(sla, *f), *f));
            let (kind, due, f) = match (reminder, escalation) {
                (Some((r, fr)), Some((e, _))) if r < e => (EventKind::Reminder, r, fr),
                (Some((r, fr)), None) => (EventKind::Reminder, r, fr),
                (_, Some((e, fe))) => (EventKind::Escalated, e, fe),
                (None, None) => return,
            };
            if due > now {
                return;
            }
            let mut detail = json_map([("fraction", f.into())]);
            if kind == EventKind::Reminder {
                case.reminders_sent += 1;
                self.stats.reminders += 1;
            } else {
                case.escalation_level += 1;
                case.flags.overdue |= f >= 1.0;
                detail.insert("level".into(), case.escalation_level.into());
                self.stats.escalations += 1;
            }
            self.emit(id, due, kind, detail);
        }
    }

    fn reschedule(&mut self, id: &str) {
        if let Some(old) = self.due.remove(id) {
            self.timers.remove(&(old, id.to_string()));
        }
        let Some(case) = self.cases.get(id) else { return };
        let (Some(sla), Some(start)) = (case.sla_ms, case.clock_started) else { return };
        if !case.status.clock_runs() {
            return;
        }
        let next = [
            self.cfg.reminders.get(case.reminders_sent as usize),
            self.cfg.escalations.get(case.escalation_level as usize),
        ]
        .into_iter()
        .flatten()
        .map(|f| start + frac(sla, *f))
        .min();
        if let Some(due) = next {
            self.timers.insert((due, id.to_string()));
            self.due.insert(id.to_string(), due);
        }
    }

    fn index(&mut self, case: &Case) {
        self.by_key.entry(case.case_key.clone()).or_default().push(case.case_id.clone());
        for a in &case.alert_ids {
            self.by_alert.insert(a.clone(), case.case_id.clone());
        }
    }

    fn forget(&mut self, id: &str) {
        if let Some(old) = self.due.remove(id) {
            self.timers.remove(&(old, id.to_string()));
        }
        let Some(case) = self.cases.remove(id) else { return };
        if let Some(ids) = self.by_key.get_mut(&case.case_key) {
            ids.retain(|c| c != id);
            if ids.is_empty() {
                self.by_key.remove(&case.case_key);
            }
        }
        for a in &case.alert_ids {
            if self.by_alert.get(a).is_some_and(|c| c == id) {
                self.by_alert.remove(a);
            }
        }
    }

    fn emit(&mut self, id: &str, at: Millis, kind: EventKind, detail: serde_json::Map<String, serde_json::Value>) {
        let Some(case) = self.cases.get_mut(id) else { return };
        let seq = case.history.len() as u32;
        let event = CaseEvent {
            event_id: format!("{id}:{seq}"),
            case_id: id.to_string(),
            seq,
            at,
            kind,
            status: case.status,
            unit: case.unit.clone(),
            detail,
        };
        case.history.push(event.clone());
        case.updated_at = case.updated_at.max(at);
        self.stats.case_events += 1;
        self.out.push(StageOutput::Case(Box::new(CaseUpdate { event, case: case.clone() })));
    }
}

/// The cell of side `r` metres containing `p` (equirectangular; fine at city scale).
fn cell(p: crate::model::Point, r: f64) -> (i64, i64) {
    let y = p.lat * 110_540.0;
    let x = p.lon * 111_320.0 * p.lat.to_radians().cos();
    ((x / r).floor() as i64, (y / r).floor() as i64)
}

fn start_clock(case: &mut Case, at: Millis) {
    case.clock_started = Some(at);
    case.deadline = case.sla_ms.map(|s| at + s);
    case.reminders_sent = 0;
    case.escalation_level = 0;
}

fn frac(sla: Millis, f: f64) -> Millis {
    (sla as f64 * f).round() as Millis
}

/// The deterministic id of the case opened by `first_alert` under `case_key`.
pub fn case_id(case_key: &str, first_alert: &str) -> String {
    let mut h = Xxh3::new();
    h.update(case_key.as_bytes());
    h.update(&[0]);
    h.update(first_alert.as_bytes());
    format!("case-{:016x}", h.digest())
}

fn json_map<const N: usize>(entries: [(&str, serde_json::Value); N]) -> serde_json::Map<String, serde_json::Value> {
    entries.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

#[path = "stage_state.rs"]
mod state;
