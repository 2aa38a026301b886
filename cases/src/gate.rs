//! The alert stage: silences, inhibition and flap suppression decide whether an alert is
//! sent on (to sinks and the case stage) or only recorded with the reason.
//!
//! Runs in event-time order (see [`crate::stage`]), so the same input gives the same
//! verdicts: an inhibiting alert that fired at 10:00 inhibits a target at 10:01 whatever
//! order the partition workers delivered them in.

use std::collections::{HashMap, VecDeque};

use gridwatch_engine::time::Millis;
use gridwatch_engine::{Alert, AlertState};
use serde::Serialize;

use crate::config::{AlertFacts, CasesConfig, Flapping};

/// What the alert stage decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// Sent on.
    Sent,
    /// Recorded, not sent: a silence matched.
    Silenced {
        /// The silence.
        silence: String,
    },
    /// Recorded, not sent: a firing source alert inhibits it.
    Inhibited {
        /// The inhibiting alert.
        by: String,
    },
    /// The (rule, key) started flapping: this alert is sent once, marked flapping.
    FlappingStarted,
    /// Recorded, not sent: the (rule, key) is flapping.
    Flapping,
    /// The (rule, key) is stable again: its current state is sent.
    Stable,
}

impl Verdict {
    /// Whether the alert goes to sinks and the case stage.
    pub fn is_sent(&self) -> bool {
        matches!(self, Verdict::Sent | Verdict::FlappingStarted | Verdict::Stable)
    }
}

/// An alert with the alert stage's verdict (what alert sinks write).
#[derive(Debug, Clone, Serialize)]
pub struct GatedAlert {
    /// The alert.
    #[serde(flatten)]
    pub alert: Alert,
    /// Why it was (not) sent; omitted when simply sent.
    #[serde(skip_serializing_if = "is_sent_plain", flatten)]
    pub verdict: Verdict,
}

fn is_sent_plain(v: &Verdict) -> bool {
    *v == Verdict::Sent
}

#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct FlapState {
    changes: VecDeque<Millis>,
    last_state: Option<AlertState>,
    pub(crate) flapping: bool,
    /// The latest alert held back while flapping (sent when stable, if it differs from the
    /// last one sent).
    held: Option<Alert>,
    last_sent_state: Option<AlertState>,
}

/// Silences, inhibition and flapping state.
#[derive(Debug, Default)]
pub struct AlertGate {
    /// (inhibition rule, equal values) → firing source alert ids.
    pub(crate) inhibiting: HashMap<(usize, Vec<String>), Vec<String>>,
    pub(crate) flaps: HashMap<(String, String), FlapState>,
    /// The pairs flapping now (few), so timers need not scan every pair.
    pub(crate) flapping: std::collections::BTreeSet<(String, String)>,
    /// Counters by verdict.
    pub counts: GateCounts,
}

/// Alerts per verdict.
#[derive(Debug, Default, Clone, Copy, Serialize, serde::Deserialize)]
pub struct GateCounts {
    /// Sent on.
    pub sent: u64,
    /// Silenced.
    pub silenced: u64,
    /// Inhibited.
    pub inhibited: u64,
    /// Held as flapping.
    pub flapping: u64,
}

impl AlertGate {
    /// Decides on one alert at its event time.
    pub fn decide(&mut self, cfg: &CasesConfig, alert: &Alert, facts: &AlertFacts) -> Verdict {
        // Inhibition sources are tracked whatever happens to the source alert itself.
        for (i, inh) in cfg.inhibitions.iter().enumerate() {
            if !inh.source.matches(alert, facts) {
                continue;
            }
            let Some(values) = equal_values(&inh.equal, alert, facts) else { continue };
            let ids = self.inhibiting.entry((i, values)).or_default();
            match alert.state {
                AlertState::Firing if !ids.contains(&alert.alert_id) => ids.push(alert.alert_id.clone()),
                AlertState::Resolved => ids.retain(|id| *id != alert.alert_id),
                AlertState::Firing => {}
            }
        }
        let verdict = self.verdict(cfg, alert, facts);
        match &verdict {
            Verdict::Silenced { .. } => self.counts.silenced += 1,
            Verdict::Inhibited { .. } => self.counts.inhibited += 1,
            Verdict::Flapping => self.counts.flapping += 1,
            _ => self.counts.sent += 1,
        }
        verdict
    }

    fn verdict(&mut self, cfg: &CasesConfig, alert: &Alert, facts: &AlertFacts) -> Verdict {
        if let Some(s) = cfg
            .silences
            .iter()
            .find(|s| alert.event_time >= s.starts && alert.event_time < s.ends && s.matcher.matches(alert, facts))
        {
            return Verdict::Silenced { silence: s.id.clone() };
        }
        for (i, inh) in cfg.inhibitions.iter().enumerate() {
            if !inh.target.matches(alert, facts) {
                continue;
            }
            let Some(values) = equal_values(&inh.equal, alert, facts) else { continue };
            if let Some(by) =
                self.inhibiting.get(&(i, values)).and_then(|ids| ids.iter().find(|id| **id != alert.alert_id))
            {
                return Verdict::Inhibited { by: by.clone() };
            }
        }
        match cfg.flapping {
            Some(f) => self.flap(f, alert),
            None => Verdict::Sent,
        }
    }

    fn flap(&mut self, f: Flapping, alert: &Alert) -> Verdict {
        let pair = (alert.rule_id.to_string(), alert.key.clone());
        let st = self.flaps.entry(pair.clone()).or_default();
        let changed = st.last_state.is_some_and(|s| s != alert.state) || st.last_state.is_none();
        st.last_state = Some(alert.state);
        if changed {
            st.changes.push_back(alert.event_time);
        }
        while st.changes.front().is_some_and(|&t| t <= alert.event_time - f.window_ms) {
            st.changes.pop_front();
        }
        if st.flapping {
            st.held = Some(alert.clone());
            return Verdict::Flapping;
        }
        if st.changes.len() as u32 > f.changes {
            st.flapping = true;
            self.flapping.insert(pair);
            st.last_sent_state = Some(alert.state);
            return Verdict::FlappingStarted;
        }
        st.last_sent_state = Some(alert.state);
        Verdict::Sent
    }

    /// Ends flapping of pairs quiet for the stable time as of `now`; returns the held
    /// alerts whose state differs from the last one sent (to be sent as [`Verdict::Stable`]),
    /// in a deterministic order.
    pub fn settle(&mut self, cfg: &CasesConfig, now: Millis) -> Vec<Alert> {
        let Some(f) = cfg.flapping else { return Vec::new() };
        let mut out = Vec::new();
        let mut settled = Vec::new();
        for pair in &self.flapping {
            let Some(st) = self.flaps.get_mut(pair) else { continue };
            if st.changes.back().is_some_and(|&t| t + f.stable_ms > now) {
                continue;
            }
            settled.push(pair.clone());
            st.flapping = false;
            st.changes.clear();
            if let Some(a) = st.held.take()
                && Some(a.state) != st.last_sent_state
            {
                st.last_sent_state = Some(a.state);
                out.push(a);
            }
        }
        for pair in settled {
            self.flapping.remove(&pair);
        }
        out.sort_by(|a, b| (a.event_time, &a.alert_id).cmp(&(b.event_time, &b.alert_id)));
        self.counts.sent += out.len() as u64;
        out
    }

    /// The earliest time a flapping pair may turn stable, for timer scheduling.
    pub fn next_settle(&self, cfg: &CasesConfig) -> Option<Millis> {
        let f = cfg.flapping?;
        self.flapping
            .iter()
            .filter_map(|p| self.flaps.get(p))
            .filter_map(|s| s.changes.back().map(|t| t + f.stable_ms))
            .min()
    }
}

fn equal_values(parts: &[crate::config::KeyPart], alert: &Alert, facts: &AlertFacts) -> Option<Vec<String>> {
    parts.iter().map(|p| p.value(alert, facts).map(str::to_string)).collect()
}
