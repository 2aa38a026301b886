//! A simulated city crew for the example city: answers each dispatched case with a
//! seeded, deterministic script of feedback events, so the default run shows the whole
//! lifecycle — most cases accepted, resolved on time, verified and closed; some resolved
//! late (reminded and escalated first), some reopened after a failed check (twice makes a
//! case "difficult"), some reassigned to another unit, and some never resolved (overdue).
//!
//! The script is a pure function of facts fixed at the case's first dispatch — seed, case
//! id, dispatch time and unit, SLA — so a restarted run re-derives the same script from the
//! restored case and skips the steps it already applied. (It once read the case's *current*
//! unit: after a reassignment a restart derived a different script whose step numbers
//! matched the wrong steps, and a case stayed in progress for ever.)

use gridwatch_engine::time::Millis;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::model::{Action, Case, EventKind, Feedback};

const MINUTE: Millis = 60_000;

/// The crew simulator. See the module docs.
#[derive(Debug, Clone)]
pub struct CrewSimulator {
    seed: u64,
    /// Limit assumed for cases whose category has no SLA.
    default_sla_ms: Millis,
    /// Unit that takes reassigned cases.
    fallback_unit: String,
}

/// How one case's story goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Story {
    OnTime,
    Late,
    ReopenedOnce,
    ReopenedTwice,
    Reassigned,
    Abandoned,
}

impl CrewSimulator {
    /// A crew; `fallback_unit` receives reassigned cases.
    pub fn new(seed: u64, default_sla_ms: Millis, fallback_unit: impl Into<String>) -> CrewSimulator {
        CrewSimulator { seed, default_sla_ms, fallback_unit: fallback_unit.into() }
    }

    /// The feedback the crew sends for `case`, from its first dispatch on.
    pub fn plan(&self, case: &Case) -> Vec<Feedback> {
        let Some(first) = case.history.iter().find(|e| e.kind == EventKind::Dispatched) else {
            return Vec::new();
        };
        let (dispatched, first_unit) = (first.at, first.unit.as_deref());
        let sla = case.sla_ms.unwrap_or(self.default_sla_ms).max(MINUTE);
        let h = xxh3_64_with_seed(case.case_id.as_bytes(), self.seed);
        // Independent draws from one hash: each uses different bits.
        let draw = |shift: u32, n: u64| (h >> shift) % n;
        let mut story = match draw(0, 100) {
            0..60 => Story::OnTime,
            60..72 => Story::Late,
            72..82 => Story::ReopenedOnce,
            82..87 => Story::ReopenedTwice,
            87..93 => Story::Reassigned,
            _ => Story::Abandoned,
        };
        if story == Story::Reassigned && first_unit == Some(self.fallback_unit.as_str()) {
            story = Story::OnTime; // already with the unit reassignments go to
        }
        let at_frac = |f: f64| dispatched + (sla as f64 * f) as Millis;
        let mut steps: Vec<(Millis, Action, Option<String>)> = Vec::new();
        let accept = dispatched + (2 + draw(8, 8) as Millis) * MINUTE;
        if story == Story::Reassigned {
            steps.push((accept, Action::Reassign, Some(self.fallback_unit.clone())));
        }
        steps.push((accept + MINUTE, Action::Accept, None));
        if story == Story::Abandoned {
            return self.feedback(case, steps);
        }
        let on_time = 0.2 + draw(16, 50) as f64 / 100.0; // 0.20..0.70 of the limit
        let mut t = match story {
            Story::Late => at_frac(1.1 + draw(24, 50) as f64 / 100.0),
            _ => at_frac(on_time),
        }
        .max(accept + 2 * MINUTE);
        let reopens = match story {
            Story::ReopenedOnce => 1,
            Story::ReopenedTwice => 2,
            _ => 0,
        };
        for _ in 0..reopens {
            steps.push((t, Action::Resolve, None));
            t += 15 * MINUTE;
            steps.push((t, Action::Reopen, Some("inspector: not fixed".into())));
            // The stopwatch restarts at the reopen.
            t += (sla as f64 * on_time) as Millis;
        }
        steps.push((t, Action::Resolve, None));
        steps.push((t + 15 * MINUTE, Action::Verify, None));
        steps.push((t + 20 * MINUTE, Action::Close, None));
        self.feedback(case, steps)
    }

    fn feedback(&self, case: &Case, steps: Vec<(Millis, Action, Option<String>)>) -> Vec<Feedback> {
        steps
            .into_iter()
            .enumerate()
            .map(|(i, (at, action, extra))| {
                let (unit, note) = match action {
                    Action::Reassign => (extra, Some("wrong owner".to_string())),
                    _ => (None, extra),
                };
                Feedback {
                    feedback_id: format!("sim:{}:{i}", case.case_id),
                    at,
                    case_id: case.case_id.clone(),
                    action,
                    unit,
                    into: None,
                    note,
                }
            })
            .collect()
    }
}
