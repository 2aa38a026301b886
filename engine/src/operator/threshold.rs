//! Threshold with optional `for` duration and hysteresis.
//!
//! Per key: *idle* → (condition true) → *pending* since t₀ → (held until t₀ + for, seen by
//! an event or by the watermark passing t₀ + for) → *firing* → (clear condition, or the
//! condition false when there is none) → *resolved*, back to idle. A false condition while
//! pending resets the stopwatch. One firing alert per episode; the resolved alert shares its
//! id. Events of one key are evaluated in arrival order, or with `order: event_time` in
//! event-time order (ties: arrival): rows are then held until the watermark passes them, so
//! a delayed reading takes its place in a "3 in a row" rather than ending it.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

use arrow::array::ArrayRef;
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use super::{BatchInput, Operator, Timers, eval_predicate, key_columns, selected_rows};
use crate::alert::{Alert, AlertParts, AlertState};
use crate::error::{EngineError, Result};
use crate::keys::{
    ByteSlab, KeyTable, SlabRef, cell_to_json, compact_row_into, compact_row_to_json, row_to_json, write_key,
};
use crate::plan::{RuleKind, RulePlan, ThresholdPlan};
use crate::schema::StreamDef;
use crate::state::KeyStates;
use crate::time::Millis;

#[derive(Debug)]
struct KeyState {
    pending: bool,
    firing: bool,
    since: Millis,
    last_notify: Millis,
    notifications: u32,
    /// Consecutive events of the key satisfying the condition (saturating).
    streak: u32,
    /// The event that started the episode (only while pending or firing), as a compact
    /// row ([`compact_row_into`]) in the operator's slab: a pending key costs ~60 bytes for
    /// it (~150 as JSON text, ~1 KB as a `Value` tree), and it is rendered only when an
    /// alert is raised.
    start_event: SlabRef,
    /// When the last episode resolved: a new one never starts before it, so an
    /// out-of-order event cannot reopen an episode start (and its alert id) already used.
    /// `Millis::MIN` (not an `Option`: 8 bytes less per key) until one has.
    last_end: Millis,
}

impl Default for KeyState {
    fn default() -> Self {
        KeyState {
            pending: false,
            firing: false,
            since: 0,
            last_notify: 0,
            notifications: 0,
            streak: 0,
            start_event: SlabRef::NONE,
            last_end: Millis::MIN,
        }
    }
}

/// One key's state in a snapshot ([`crate::state`]): its [`KeyState`] field for field,
/// with the start event and the held rows copied out of the operator's slabs.
#[derive(Debug, Serialize, Deserialize)]
struct ThresholdRecord {
    /// An episode is open and waiting for its `for` duration or its consecutive count; the
    /// `for` timer at `since + for` is scheduled again from it.
    pending: bool,
    /// The episode has fired and not resolved.
    firing: bool,
    /// Start of the open episode (its alert id), and the stopwatch's origin.
    since: Millis,
    /// When the last notification went out (re-notification schedule).
    last_notify: Millis,
    /// Notifications of the firing episode so far.
    notifications: u32,
    /// Consecutive events satisfying the condition.
    streak: u32,
    /// The compact row of the episode's start event (evidence); `None` where the key has
    /// none (no open episode), which renders differently from an empty row.
    start_event: Option<Vec<u8>>,
    /// When the last episode resolved (`Millis::MIN` if none has).
    last_end: Millis,
    /// `order: event_time`: the key's rows still waiting for the watermark.
    held: Vec<HeldRecord>,
}

/// A held row of an `order: event_time` rule, in a [`ThresholdRecord`].
#[derive(Debug, Serialize, Deserialize)]
struct HeldRecord {
    /// Event time.
    t: Millis,
    /// Arrival number: orders rows of equal time as they arrived; the operator's arrival
    /// counter resumes above every restored one.
    seq: u64,
    /// The condition held on the row.
    holds: bool,
    /// The clear condition (or the negated condition) held on the row.
    clears: bool,
    /// The row, compact ([`compact_row_into`]).
    row: Vec<u8>,
}

/// Operator for threshold rules.
pub struct ThresholdOperator {
    rule: Arc<RulePlan>,
    stream: Arc<str>,
    observed_names: Vec<String>,
    /// The stream's field names, to render stored start events.
    field_names: Vec<String>,
    keys: KeyTable<KeyState>,
    /// Start events of pending and firing keys.
    start_events: ByteSlab,
    /// Where a start event is encoded before it goes into the slab.
    row_buf: Vec<u8>,
    timers: Timers,
    key_buf: String,
    /// `order: event_time`: rows waiting for the watermark, their compact rows, the
    /// arrival counter that breaks ties in event time, and a scratch row.
    held: BinaryHeap<Reverse<Held>>,
    held_rows: ByteSlab,
    arrivals: u64,
    release_buf: Vec<u8>,
    /// Keys pending or firing. While none is, a row whose condition is false changes
    /// nothing, so only the rows where it holds are visited (with many rules on a stream,
    /// most have no open episode most of the time).
    active: usize,
}

impl ThresholdOperator {
    /// A new operator with no state.
    pub fn new(rule: Arc<RulePlan>, stream: &StreamDef) -> Self {
        let observed_names = match &rule.kind {
            RuleKind::Threshold(p) => p.observed.iter().map(|&c| stream.fields[c].name.clone()).collect(),
            _ => Vec::new(),
        };
        ThresholdOperator {
            rule,
            stream: stream.name.as_str().into(),
            observed_names,
            field_names: stream.fields.iter().map(|f| f.name.clone()).collect(),
            keys: KeyTable::default(),
            start_events: ByteSlab::default(),
            row_buf: Vec::new(),
            timers: Timers::default(),
            key_buf: String::new(),
            held: BinaryHeap::new(),
            held_rows: ByteSlab::default(),
            arrivals: 0,
            release_buf: Vec::new(),
            active: 0,
        }
    }

    fn plan(&self) -> &ThresholdPlan {
        match &self.rule.kind {
            RuleKind::Threshold(p) => p,
            _ => unreachable!("ThresholdOperator is only built for threshold rules"),
        }
    }

    fn observed_values(&self, batch: &RecordBatch, row: usize) -> serde_json::Map<String, serde_json::Value> {
        let schema = batch.schema();
        self.plan()
            .observed
            .iter()
            .map(|&c| (schema.field(c).name().clone(), cell_to_json(batch.column(c), row)))
            .collect()
    }

    fn fire_timers(&mut self, wm: Millis, out: &mut Vec<Alert>) {
        while let Some((due, slot)) = self.timers.pop_due(wm) {
            self.fire_due(slot, due, out);
        }
    }

    /// Fires the `for` timer `due` of `slot`, if it is still live: the condition has held
    /// since `due - for` (a watermark past `due`, or a later row of the key, shows it).
    fn fire_due(&mut self, slot: u32, due: Millis, out: &mut Vec<Alert>) {
        let (for_ms, consecutive) = (self.plan().for_ms, self.plan().consecutive);
        let st = self.keys.state_mut(slot);
        if !st.pending || st.firing || st.since + for_ms != due {
            return; // reset or already fired since this timer was set
        }
        if st.streak < consecutive {
            return; // the event that completes the count will fire it
        }
        st.firing = true;
        st.pending = false;
        st.last_notify = due;
        st.notifications = 1;
        out.push(self.stored_event_alert(slot, AlertState::Firing, due));
    }

    /// An alert of `slot`'s open episode raised without a row of its own (its `for` timer,
    /// a reload that ends it): the episode's start event is the evidence, and the observed
    /// values are taken from it.
    fn stored_event_alert(&self, slot: u32, state: AlertState, event_time: Millis) -> Alert {
        let (key, st) = self.keys.entry(slot);
        let start = match st.start_event {
            e if e.is_some() => compact_row_to_json(self.start_events.get(e), &self.field_names),
            _ => serde_json::Value::default(),
        };
        let values = observed_from_event(&self.observed_names, &start);
        let parts = AlertParts {
            key: key.to_string(),
            state,
            event_time,
            episode_start: st.since,
            notification: st.notifications,
            values,
            evidence: vec![start],
        };
        Alert::new(&self.rule.meta, &self.stream, parts)
    }
}

/// Observed values taken from a stored evidence event (timer-fired alerts).
fn observed_from_event(names: &[String], event: &serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    names.iter().filter_map(|n| event.get(n).map(|v| (n.clone(), v.clone()))).collect()
}

/// The row a threshold decision is about: still in its batch, or held as a compact row.
#[derive(Clone, Copy)]
enum Row<'a> {
    Batch(&'a RecordBatch, usize),
    Compact(&'a [u8]),
}

/// A row of an `order: event_time` rule waiting for the watermark to pass it, ordered by
/// (event time, arrival): `seq` is unique, so the fields after it never decide.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Held {
    t: Millis,
    seq: u64,
    slot: u32,
    holds: bool,
    clears: bool,
    row: SlabRef,
}

impl ThresholdOperator {
    /// Applies one row of key `slot` at time `t` (its condition `holds`; its clear
    /// condition, or the negated condition without one, `clears`).
    fn evaluate(&mut self, slot: u32, t: Millis, holds: bool, clears: bool, row: Row<'_>, out: &mut Vec<Alert>) {
        let (for_ms, consecutive) = (self.plan().for_ms, self.plan().consecutive);
        let renotify = self.rule.meta.renotify_ms;
        let st = self.keys.state_mut(slot);
        let was_active = st.pending || st.firing;
        let mut emit: Option<(AlertState, u32, Millis)> = None;
        if st.firing {
            if clears {
                emit = Some((AlertState::Resolved, st.notifications, st.since));
                st.firing = false;
                st.streak = 0;
                self.start_events.remove(std::mem::replace(&mut st.start_event, SlabRef::NONE));
                st.last_end = t.max(st.since + 1);
            } else if let Some(every) = renotify
                && t >= st.last_notify + every
            {
                st.notifications += 1;
                st.last_notify = t;
                emit = Some((AlertState::Firing, st.notifications, st.since));
            }
        } else if holds {
            st.streak = st.streak.saturating_add(1);
            if !st.pending {
                st.pending = true;
                st.since = t.max(st.last_end);
                match row {
                    Row::Batch(batch, i) => compact_row_into(batch, i, &mut self.row_buf),
                    Row::Compact(bytes) => {
                        self.row_buf.clear();
                        self.row_buf.extend_from_slice(bytes);
                    }
                }
                self.start_events.remove(st.start_event);
                st.start_event = self.start_events.insert(&self.row_buf);
                if for_ms > 0 {
                    self.timers.schedule(st.since + for_ms, slot);
                }
            }
            let st = self.keys.state_mut(slot);
            if t.max(st.since) - st.since >= for_ms && st.streak >= consecutive {
                st.pending = false;
                st.firing = true;
                st.last_notify = t;
                st.notifications = 1;
                emit = Some((AlertState::Firing, 1, st.since));
            }
        } else {
            st.pending = false;
            self.start_events.remove(std::mem::replace(&mut st.start_event, SlabRef::NONE));
            st.streak = 0;
        }
        let st = self.keys.state_mut(slot);
        match (was_active, st.pending || st.firing) {
            (false, true) => self.active += 1,
            (true, false) => self.active -= 1,
            _ => {}
        }
        let Some((state, notification, episode_start)) = emit else { return };
        let start_event = self.keys.state_mut(slot).start_event;
        let (trigger, values) = match row {
            Row::Batch(batch, i) => (row_to_json(batch, i), self.observed_values(batch, i)),
            Row::Compact(bytes) => {
                let trigger = compact_row_to_json(bytes, &self.field_names);
                let values = observed_from_event(&self.observed_names, &trigger);
                (trigger, values)
            }
        };
        let mut evidence = Vec::with_capacity(2);
        if state == AlertState::Firing && start_event.is_some() {
            let start = compact_row_to_json(self.start_events.get(start_event), &self.field_names);
            if start != trigger {
                evidence.push(start);
            }
        }
        evidence.push(trigger);
        let parts = AlertParts {
            key: self.keys.entry_mut(slot).0.to_string(),
            state,
            // Never before the episode start (see `last_end`).
            event_time: t.max(episode_start),
            episode_start,
            notification,
            values,
            evidence,
        };
        out.push(Alert::new(&self.rule.meta, &self.stream, parts));
    }

    /// `order: event_time`: evaluates the held rows before `bound` in event-time order
    /// (ties: arrival), each after the `for` deadlines it reaches, then the deadlines due.
    fn release(&mut self, bound: Millis, out: &mut Vec<Alert>) {
        self.evaluate_held_before(bound, out);
        self.fire_timers(bound, out);
    }

    /// Evaluates the held rows before `bound` in order, each after the deadlines it reaches.
    fn evaluate_held_before(&mut self, bound: Millis, out: &mut Vec<Alert>) {
        let mut bytes = std::mem::take(&mut self.release_buf);
        while self.held.peek().is_some_and(|Reverse(h)| h.t < bound) {
            let Reverse(h) = self.held.pop().expect("peeked");
            self.fire_timers(h.t, out);
            bytes.clear();
            bytes.extend_from_slice(self.held_rows.get(h.row));
            self.held_rows.remove(h.row);
            self.evaluate(h.slot, h.t, h.holds, h.clears, Row::Compact(&bytes), out);
        }
        self.release_buf = bytes;
    }
}

impl Operator for ThresholdOperator {
    fn process_rows(&mut self, input: &BatchInput<'_>, out: &mut Vec<Alert>) -> Result<()> {
        let batch = input.batch;
        let mask = selected_rows(&self.rule, input)?;
        let plan = self.plan().clone();
        let cond = eval_predicate(&self.rule, "condition", &plan.condition, batch)?;
        let clear = match &plan.clear_condition {
            Some(p) => Some(eval_predicate(&self.rule, "clear_condition", p, batch)?),
            None => None,
        };
        let key_cols: Vec<ArrayRef> = key_columns(&self.rule, batch);
        if plan.event_time_order {
            // Every selected row is held: a row that changes nothing now may reset a streak
            // that an earlier-stamped row arriving later starts.
            let mut hold = |this: &mut Self, i: usize| {
                this.release(input.watermarks[i], out);
                let mut key = std::mem::take(&mut this.key_buf);
                write_key(&key_cols, i, &mut key);
                let slot = this.keys.slot(&key, KeyState::default);
                this.key_buf = key;
                let holds = cond.value(i);
                let clears = clear.as_ref().map_or(!holds, |c| c.value(i));
                compact_row_into(batch, i, &mut this.row_buf);
                let row = this.held_rows.insert(&this.row_buf);
                this.arrivals += 1;
                this.held.push(Reverse(Held { t: input.times[i], seq: this.arrivals, slot, holds, clears, row }));
            };
            match &mask {
                Some(m) => m.set_indices().for_each(|i| hold(self, i)),
                None => (0..batch.num_rows()).for_each(|i| hold(self, i)),
            }
            return Ok(());
        }
        let visit = |this: &mut Self, i: usize, out: &mut Vec<Alert>| {
            let wm = input.watermarks[i];
            if this.timers.any_due(wm) {
                this.fire_timers(wm, out);
            }
            let mut key = std::mem::take(&mut this.key_buf);
            write_key(&key_cols, i, &mut key);
            let slot = this.keys.slot(&key, KeyState::default);
            this.key_buf = key;
            let t = input.times[i];
            // A row of the key at or after the `for` deadline, once the key's own split is past
            // it (no earlier row of the key can still come), shows the condition held until
            // then: fire as the stream's watermark passing the deadline would have, whether
            // or not it has (it may lag behind another split), so the outcome does not
            // depend on how the splits' reads interleave.
            let st = this.keys.state_mut(slot);
            let due = st.since + plan.for_ms;
            if plan.for_ms > 0 && st.pending && t >= due && input.split_watermarks[i] >= due {
                this.fire_due(slot, due, out);
            }
            let holds = cond.value(i);
            let clears = clear.as_ref().map_or(!holds, |c| c.value(i));
            this.evaluate(slot, t, holds, clears, Row::Batch(batch, i), out);
        };
        // While no episode is open (so no timer is live), a row whose condition is false
        // changes nothing: visit only rows where it holds until one opens an episode, then
        // every selected row from there on.
        let n = batch.num_rows();
        let mut resume = 0;
        if self.active == 0 {
            let sparse = match &mask {
                Some(m) => m & &cond,
                None => cond.clone(),
            };
            resume = n;
            for i in sparse.set_indices() {
                visit(self, i, out);
                if self.active > 0 {
                    resume = i + 1;
                    break;
                }
            }
        }
        match &mask {
            Some(m) => m.set_indices().skip_while(|&i| i < resume).for_each(|i| visit(self, i, out)),
            None => (resume..n).for_each(|i| visit(self, i, out)),
        }
        Ok(())
    }

    fn advance(&mut self, wm: Millis, out: &mut Vec<Alert>) -> Result<()> {
        if self.held.is_empty() {
            self.fire_timers(wm, out);
        } else {
            self.release(wm, out);
        }
        Ok(())
    }

    fn end_of_input(&mut self, out: &mut Vec<Alert>) -> Result<()> {
        // Every row is final; deadlines stay where the watermark got (a bounded run's end
        // does not make time pass).
        self.evaluate_held_before(Millis::MAX, out);
        Ok(())
    }

    fn alert_floor(&self) -> Option<Millis> {
        // A held row can raise an alert dated at it.
        self.held.peek().map(|Reverse(h)| h.t)
    }

    fn key_count(&self) -> usize {
        self.keys.len()
    }

    fn snapshot(&self, out: &mut KeyStates) -> Result<()> {
        // Held rows are in one heap for all keys: sort them out per key first.
        let mut held: Vec<Vec<HeldRecord>> = (0..self.keys.len()).map(|_| Vec::new()).collect();
        for Reverse(h) in self.held.iter() {
            let row = self.held_rows.get(h.row).to_vec();
            held[h.slot as usize].push(HeldRecord { t: h.t, seq: h.seq, holds: h.holds, clears: h.clears, row });
        }
        for (slot, rows) in held.iter_mut().enumerate() {
            // The heap's order is arbitrary: sorted, the same state always writes the same bytes.
            rows.sort_by_key(|h| (h.t, h.seq));
            let (key, st) = self.keys.entry(slot as u32);
            // An idle key that never ended an episode is what a fresh key is (its stale
            // `since` is overwritten when an episode starts): nothing to write.
            if !st.pending && !st.firing && st.streak == 0 && st.last_end == Millis::MIN && rows.is_empty() {
                continue;
            }
            let record = ThresholdRecord {
                pending: st.pending,
                firing: st.firing,
                since: st.since,
                last_notify: st.last_notify,
                notifications: st.notifications,
                streak: st.streak,
                start_event: st.start_event.is_some().then(|| self.start_events.get(st.start_event).to_vec()),
                last_end: st.last_end,
                held: std::mem::take(rows),
            };
            out.push(key, &record)?;
        }
        Ok(())
    }

    fn close_episodes(&mut self, at: Millis, reason: &str, out: &mut Vec<Alert>) -> Result<()> {
        for slot in 0..self.keys.len() as u32 {
            let st = self.keys.get(slot);
            if !st.pending && !st.firing {
                continue;
            }
            let mut end = at;
            if st.firing {
                // Never before the episode's last notification: a row ahead of the watermark
                // may have raised it (and a firing alert is never before the episode start).
                end = at.max(st.last_notify).max(st.since);
                let mut alert = self.stored_event_alert(slot, AlertState::Resolved, end);
                alert.values.insert("reason".into(), reason.into());
                out.push(alert);
            }
            // The episode ends as a clearing row ends it; a pending stopwatch (its timer goes
            // stale) is dropped as a false condition drops it.
            let st = self.keys.state_mut(slot);
            if st.firing {
                st.last_end = end.max(st.since + 1);
            }
            st.firing = false;
            st.pending = false;
            st.streak = 0;
            self.start_events.remove(std::mem::replace(&mut st.start_event, SlabRef::NONE));
            self.active -= 1;
        }
        Ok(())
    }

    fn restore(&mut self, key: &str, record: &[u8]) -> Result<()> {
        let r: ThresholdRecord = crate::state::decode(&self.rule.meta.id, key, record)?;
        let known = self.keys.len();
        let slot = self.keys.slot(key, KeyState::default);
        if self.keys.len() == known {
            // Restoring over live state would leak its slab entries and miscount `active`.
            return Err(EngineError::BadState {
                rule: self.rule.meta.id.to_string(),
                key: key.to_string(),
                reason: "the key is restored twice".into(),
            });
        }
        let start_event = match &r.start_event {
            Some(bytes) => self.start_events.insert(bytes),
            None => SlabRef::NONE,
        };
        *self.keys.state_mut(slot) = KeyState {
            pending: r.pending,
            firing: r.firing,
            since: r.since,
            last_notify: r.last_notify,
            notifications: r.notifications,
            streak: r.streak,
            start_event,
            last_end: r.last_end,
        };
        if r.pending || r.firing {
            self.active += 1;
        }
        // The only timer that can still matter is the open stopwatch's: the others were
        // reset or fired (a timer already popped without firing, waiting for the count, pops
        // again to the same no-op).
        let for_ms = self.plan().for_ms;
        if r.pending && for_ms > 0 {
            self.timers.schedule(r.since + for_ms, slot);
        }
        for h in r.held {
            let row = self.held_rows.insert(&h.row);
            // New rows must come after every restored one of equal time.
            self.arrivals = self.arrivals.max(h.seq);
            self.held.push(Reverse(Held { t: h.t, seq: h.seq, slot, holds: h.holds, clears: h.clears, row }));
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "snapshot_tests_a.rs"]
pub(crate) mod snapshot_tests_a;
