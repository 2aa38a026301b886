//! The alert and case stage's state in a snapshot.
//!
//! Everything the stage would otherwise rebuild by replaying its input: the inputs still
//! waiting for the frontier (alerts and feedback), the open cases with their timers, the
//! alert stage's inhibition and flapping state, and the clocks. Encoded as JSON (alerts and
//! cases carry free-form JSON values); maps keyed by tuples become lists of pairs.

use std::collections::HashMap;

use gridwatch_engine::time::Millis;
use serde::{Deserialize, Serialize};

use super::{CaseStage, Input, StageStats};
use crate::gate::{AlertGate, FlapState, GateCounts};
use crate::model::{Case, Feedback};

/// What a snapshot holds of the stage.
#[derive(Debug, Serialize, Deserialize)]
struct StageState {
    alerts: Vec<gridwatch_engine::Alert>,
    feedback: Vec<Feedback>,
    cases: Vec<Case>,
    /// Case ids per case key, in the order the cases were opened.
    by_key: Vec<(String, Vec<String>)>,
    gate: GateState,
    frontier: Millis,
    resume_from: Millis,
    clock: Millis,
    last_input: Millis,
    stats: StageStats,
}

/// (inhibition rule, equal values) → the firing source alerts' ids.
type Inhibiting = ((usize, Vec<String>), Vec<String>);

#[derive(Debug, Serialize, Deserialize)]
struct GateState {
    inhibiting: Vec<Inhibiting>,
    flaps: Vec<((String, String), FlapState)>,
    counts: GateCounts,
}

impl CaseStage {
    /// The stage's state, for a snapshot (see the module docs).
    pub fn snapshot(&self) -> Result<Vec<u8>, serde_json::Error> {
        let (mut alerts, mut feedback) = (Vec::new(), Vec::new());
        for input in self.pending.values() {
            match input {
                Input::Alert(a) => alerts.push(a.clone()),
                Input::Feedback(f) => feedback.push(f.clone()),
            }
        }
        let mut cases: Vec<Case> = self.cases.values().cloned().collect();
        cases.sort_by(|a, b| a.case_id.cmp(&b.case_id));
        let mut by_key: Vec<(String, Vec<String>)> = self.by_key.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        by_key.sort();
        let mut inhibiting: Vec<_> = self.gate.inhibiting.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        inhibiting.sort();
        let mut flaps: Vec<_> = self.gate.flaps.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        flaps.sort_by(|a, b| a.0.cmp(&b.0));
        let state = StageState {
            alerts,
            feedback,
            cases,
            by_key,
            gate: GateState { inhibiting, flaps, counts: self.gate.counts },
            frontier: self.frontier,
            resume_from: self.resume_from,
            clock: self.clock,
            last_input: self.last_input,
            stats: self.stats.clone(),
        };
        serde_json::to_vec(&state)
    }

    /// Takes the state of a snapshot (see [`CaseStage::snapshot`]) in place of a new
    /// stage's: the run goes on from there.
    pub fn restore_snapshot(&mut self, bytes: &[u8]) -> Result<(), serde_json::Error> {
        let state: StageState = serde_json::from_slice(bytes)?;
        self.frontier = state.frontier;
        self.resume_from = state.resume_from;
        self.clock = state.clock;
        self.last_input = state.last_input;
        self.stats = state.stats;
        let mut flapping = std::collections::BTreeSet::new();
        for (pair, f) in &state.gate.flaps {
            if f.flapping {
                flapping.insert(pair.clone());
            }
        }
        self.gate = AlertGate {
            inhibiting: state.gate.inhibiting.into_iter().collect::<HashMap<_, _>>(),
            flaps: state.gate.flaps.into_iter().collect(),
            flapping,
            counts: state.gate.counts,
        };
        for a in state.alerts {
            self.enqueue(Input::Alert(a));
        }
        for f in state.feedback {
            self.enqueue(Input::Feedback(f));
        }
        self.by_key = state.by_key.into_iter().collect();
        for case in state.cases {
            for a in &case.alert_ids {
                self.by_alert.insert(a.clone(), case.case_id.clone());
            }
            let id = case.case_id.clone();
            self.cases.insert(id.clone(), case);
            self.reschedule(&id);
        }
        Ok(())
    }
}
