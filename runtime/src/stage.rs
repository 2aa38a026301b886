//! The alert and case stage between the workers and the sinks, with its feedback inputs.

use std::sync::Arc;

use gridwatch_cases::{CaseStage, CasesConfig, CrewSimulator, Feedback, StageOutput, StageStats};
use gridwatch_engine::time::{Millis, format_timestamp};
use gridwatch_engine::{Alert, DeadLetter};

use crate::sink::Resume;

/// Stream name the dead letters of the feedback input carry.
pub const FEEDBACK_STREAM: &str = "case_feedback";

/// A feedback record that could not be used, for the dead-letter sinks.
pub fn feedback_dead_letter(
    reason: String,
    payload: String,
    origin: Option<gridwatch_engine::Origin>,
) -> Box<DeadLetter> {
    let reject = gridwatch_engine::Reject::new(gridwatch_engine::RejectKind::BadFeedback, reason);
    Box::new(DeadLetter::new(FEEDBACK_STREAM, reject, payload, origin))
}

/// Where case feedback comes from (a file read at the start, a Kafka topic…).
pub trait FeedbackInput: Send {
    /// What arrived since the last call: feedback events, or records that are not feedback
    /// (as dead letters).
    fn poll(&mut self) -> Vec<Result<Feedback, Box<DeadLetter>>>;

    /// End of a bounded run: waits (bounded) until the input has been quiet for a moment.
    fn settle(&mut self) {}
}

/// Feedback read in full before the run (a file).
#[derive(Debug, Default)]
pub struct Preloaded(pub Vec<Result<Feedback, Box<DeadLetter>>>);

impl FeedbackInput for Preloaded {
    fn poll(&mut self) -> Vec<Result<Feedback, Box<DeadLetter>>> {
        std::mem::take(&mut self.0)
    }
}

/// The stage and its feedback inputs.
pub struct CaseStageRunner {
    stage: CaseStage,
    feedback: Vec<Box<dyn FeedbackInput>>,
}

impl CaseStageRunner {
    /// A stage of `config`, with the simulated crew if given.
    pub fn new(config: Arc<CasesConfig>, simulator: Option<CrewSimulator>) -> CaseStageRunner {
        CaseStageRunner { stage: CaseStage::new(config, simulator), feedback: Vec::new() }
    }

    /// Adds a feedback input.
    pub fn with_feedback(mut self, input: Box<dyn FeedbackInput>) -> CaseStageRunner {
        self.feedback.push(input);
        self
    }

    /// Resumes from what the case store held: open cases and the frontier.
    pub fn resume(&mut self, from: Resume, store: &str) {
        if let Some(f) = from.frontier {
            // Said on the console: a re-run of the same input opens no case again.
            eprintln!(
                "case store {store}: resuming with {} open cases; input before {} was handled by an earlier run (delete the store to start over)",
                from.open_cases.len(),
                format_timestamp(f)
            );
        }
        self.stage.restore(from.open_cases, from.frontier);
    }

    /// Takes the state of a snapshot (see [`gridwatch_cases::CaseStage::snapshot`]) instead
    /// of resuming from the case store.
    pub fn restore_snapshot(&mut self, bytes: &[u8]) -> Result<(), serde_json::Error> {
        self.stage.restore_snapshot(bytes)
    }

    /// The stage's state for a snapshot.
    pub fn snapshot(&self) -> Result<Vec<u8>, serde_json::Error> {
        self.stage.snapshot()
    }

    /// Feeds what the feedback inputs delivered into the stage; returns the records that
    /// are not feedback. With `settle`, first waits for the inputs to go quiet (the end of
    /// a bounded run).
    pub fn poll_feedback(&mut self, settle: bool) -> Vec<DeadLetter> {
        let mut bad = Vec::new();
        for input in &mut self.feedback {
            if settle {
                input.settle();
            }
            for item in input.poll() {
                match item {
                    Ok(f) => self.stage.push_feedback(f),
                    Err(d) => bad.push(*d),
                }
            }
        }
        bad
    }

    /// Queues alerts from the workers.
    pub fn push_alerts(&mut self, alerts: Vec<Alert>) {
        self.stage.push_alerts(alerts);
    }

    /// Processes everything before `frontier`; returns what the stage emitted.
    pub fn advance(&mut self, frontier: Millis) -> Vec<StageOutput> {
        self.stage.advance(frontier);
        self.stage.drain()
    }

    /// End of input: processes everything left.
    pub fn finish(&mut self) -> Vec<StageOutput> {
        self.stage.finish();
        self.stage.drain()
    }

    /// The stage's checkpoint (see [`CaseStage::checkpoint`]).
    pub fn checkpoint(&self) -> Option<Millis> {
        self.stage.checkpoint()
    }

    /// Counters.
    pub fn stats(&self) -> StageStats {
        self.stage.stats()
    }
}
