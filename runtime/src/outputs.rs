//! The output thread: everything the workers emit, through the alert and case stage, to
//! the sinks, with one acknowledgement tracker for all of them.
//!
//! ```text
//!  workers ──Output──► alerts ─┬─► (no stage) ──────────────────────────► sinks
//!                              └─► alert & case stage (event-time order, released at
//!                                  each barrier's frontier) ─► alerts, cases ─► sinks
//!          dead letters, feedback that cannot be used ──────────────────► sinks
//!          barriers (once every worker passed one) ─► each sink's barrier, then the
//!          acknowledgement tracker ─► the store's checkpoint ─► Progress (sources commit)
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use gridwatch_cases::{GatedAlert, StageOutput, StageStats, Verdict};
use gridwatch_engine::{Alert, AlertState, DeadLetter, Output};
use serde::Serialize;

use crate::acks::{AckTracker, BarrierCount, Progress};
use crate::checkpoint::Snapshots;
use crate::error::{ErrorClass, RuntimeError, SinkError};
use crate::metrics::RunMetrics;
use crate::sink::{OutputReport, Record, Sink};
use crate::snapshot::SnapshotDir;
use crate::stage::{CaseStageRunner, feedback_dead_letter};

/// Per-rule alert counts.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct RuleCounts {
    /// Firing records (first notifications and re-notifications).
    pub firing: u64,
    /// Resolved records.
    pub resolved: u64,
}

/// What the output thread saw.
#[derive(Debug, Default, Serialize)]
pub struct OutputsReport {
    /// Alerts per rule (including those the alert stage held back).
    pub alerts: BTreeMap<String, RuleCounts>,
    /// The alert and case stage's counters, if it ran.
    pub cases: Option<StageStats>,
    /// Dead letters written.
    pub dead_letters: u64,
    /// Dead letters by reason class (`late`, `future`, `invalid JSON`, `bad field x`…).
    pub dead_letter_reasons: BTreeMap<String, u64>,
    /// Rule evaluation failures.
    pub rule_errors: u64,
    /// Per rule: evaluation failures and the first failure's message.
    pub rule_errors_by_rule: BTreeMap<String, (u64, String)>,
    /// Where output went.
    pub outputs: Vec<OutputReport>,
}

/// The output side of a running topology. See the module docs.
pub struct Outputs {
    snapshots: Option<Snapshots>,
    sinks: Vec<Box<dyn Sink>>,
    stage: Option<CaseStageRunner>,
    progress: Arc<Progress>,
    metrics: Arc<RunMetrics>,
    acks: AckTracker,
    barriers: BarrierCount,
    report: OutputsReport,
}

impl Outputs {
    /// Sinks and an optional alert and case stage. The stage resumes from what the
    /// checkpointing sink (the case store) holds; at most one sink may checkpoint.
    pub fn new(
        sinks: Vec<Box<dyn Sink>>,
        stage: Option<CaseStageRunner>,
        progress: Arc<Progress>,
        metrics: Arc<RunMetrics>,
    ) -> Result<Outputs, SinkError> {
        Self::build(sinks, stage, progress, metrics, None)
    }

    /// Like [`Outputs::new`], for a run restored from a snapshot: the stage takes the
    /// snapshot's state (`stage_state`) instead of resuming from the case store, which may
    /// be ahead of the snapshot (records after it are written again, with the same ids).
    pub fn restored(
        sinks: Vec<Box<dyn Sink>>,
        stage: Option<CaseStageRunner>,
        progress: Arc<Progress>,
        metrics: Arc<RunMetrics>,
        stage_state: Option<&[u8]>,
    ) -> Result<Outputs, SinkError> {
        Self::build(sinks, stage, progress, metrics, Some(stage_state))
    }

    fn build(
        mut sinks: Vec<Box<dyn Sink>>,
        mut stage: Option<CaseStageRunner>,
        progress: Arc<Progress>,
        metrics: Arc<RunMetrics>,
        snapshot_stage: Option<Option<&[u8]>>,
    ) -> Result<Outputs, SinkError> {
        let checkpointing: Vec<&str> = sinks.iter().filter(|s| s.checkpoints()).map(|s| s.name()).collect();
        if checkpointing.len() > 1 {
            return Err(SinkError::new(
                checkpointing[1],
                ErrorClass::Config,
                format!("only one case store may record the case stage's checkpoint; found {checkpointing:?}"),
            ));
        }
        if let (Some(stage), Some(saved)) = (stage.as_mut(), snapshot_stage) {
            metrics.cases_enabled.store(true, Ordering::Relaxed);
            if let Some(bytes) = saved {
                stage.restore_snapshot(bytes).map_err(|e| {
                    SinkError::new(
                        "case stage",
                        ErrorClass::Config,
                        format!("the snapshot's case stage state cannot be read ({e}); move the state directory away to start without state"),
                    )
                })?;
            }
        } else if let Some(stage) = stage.as_mut() {
            metrics.cases_enabled.store(true, Ordering::Relaxed);
            for s in sinks.iter_mut().filter(|s| s.checkpoints()) {
                let name = s.report().location;
                if let Some(resume) = s.resume()? {
                    stage.resume(resume, &name);
                }
            }
        }
        Ok(Outputs {
            snapshots: None,
            sinks,
            stage,
            progress,
            metrics,
            acks: AckTracker::default(),
            barriers: BarrierCount::default(),
            report: OutputsReport::default(),
        })
    }

    /// Writes a snapshot at every checkpoint barrier (see [`crate::snapshot`]) into `dir`,
    /// once the barrier is acknowledged; `source` names the source in it.
    pub fn with_snapshots(mut self, dir: SnapshotDir, source: &str) -> Outputs {
        self.snapshots = Some(Snapshots::start(dir, source.to_string(), self.metrics.clone()));
        self
    }

    /// Runs until the workers' channel closes, then delivers what is left and closes the
    /// sinks.
    pub fn run(mut self, outputs: &Receiver<Output>) -> Result<OutputsReport, RuntimeError> {
        let mut last_health = Instant::now();
        loop {
            let o = match outputs.recv_timeout(Duration::from_millis(10)) {
                Ok(o) => Some(o),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            self.poll_feedback(false)?;
            if let Some(o) = o {
                self.handle(o)?;
            }
            for s in &mut self.sinks {
                s.tick()?;
            }
            let delivered = self.acks.poll(&mut self.sinks, &self.progress)?;
            if let Some(s) = self.snapshots.as_mut() {
                s.delivered(delivered);
            }
            if last_health.elapsed() > Duration::from_secs(1) {
                self.publish_health();
                last_health = Instant::now();
            }
        }
        self.poll_feedback(true)?;
        if let Some(stage) = self.stage.as_mut() {
            let staged = stage.finish();
            self.write_stage(staged)?;
        }
        self.close()
    }

    fn handle(&mut self, o: Output) -> Result<(), RuntimeError> {
        match o {
            Output::Alerts(alerts) => {
                self.metrics.alerts.fetch_add(alerts.len() as u64, Ordering::Relaxed);
                match self.stage.as_mut() {
                    Some(stage) => stage.push_alerts(alerts),
                    None => {
                        for a in &alerts {
                            self.write_alert(a, None, true)?;
                        }
                    }
                }
            }
            Output::DeadLetter(d) => self.write_dead_letter(&d)?,
            Output::Checkpoint(start) => {
                if let Some(s) = self.snapshots.as_mut() {
                    s.begin(start);
                }
            }
            Output::State { seq, rules, .. } => {
                if let Some(s) = self.snapshots.as_mut() {
                    s.worker_state(seq, rules);
                }
            }
            Output::Barrier { seq, workers, watermark, .. } => {
                if let Some(watermark) = self.barriers.arrived(seq, workers, watermark) {
                    // Everything before the watermark has arrived: the stage may process it.
                    if let Some(stage) = self.stage.as_mut() {
                        let staged = stage.advance(watermark);
                        self.write_stage(staged)?;
                    }
                    for s in &mut self.sinks {
                        s.barrier(seq)?;
                    }
                    let frontier = self.stage.as_ref().and_then(CaseStageRunner::checkpoint);
                    self.acks.completed(seq, frontier);
                    if let Some(s) = self.snapshots.as_mut() {
                        // The stage has taken everything before the barrier: its state
                        // belongs to the same cut as the workers'.
                        let stage = self.stage.as_ref().map(CaseStageRunner::snapshot).transpose().map_err(|e| {
                            SinkError::new(
                                "case stage",
                                ErrorClass::Internal,
                                format!("snapshot of the case stage: {e}"),
                            )
                        })?;
                        s.complete(seq, stage);
                    }
                    self.metrics.barriers_acked.fetch_add(1, Ordering::Relaxed);
                    if let Some(stage) = &self.stage {
                        publish_stage(&self.metrics, &stage.stats());
                    }
                }
            }
            Output::RuleError { rule, message } => {
                self.report.rule_errors += 1;
                self.metrics.rule_errors.fetch_add(1, Ordering::Relaxed);
                self.metrics.note_rule_error(&rule);
                // The first failure of a rule is logged; the rest are counted (a failing
                // condition fails on every batch).
                match self.report.rule_errors_by_rule.get_mut(rule.as_str()) {
                    Some(entry) => {
                        entry.0 += 1;
                        tracing::debug!(rule = %rule, error = %message, "rule evaluation failed");
                    }
                    None => {
                        tracing::error!(rule = %rule, error = %message, "rule evaluation failed (later failures of this rule are counted, not logged)");
                        self.report.rule_errors_by_rule.insert(rule.clone(), (1, message.clone()));
                    }
                }
            }
        }
        Ok(())
    }

    fn poll_feedback(&mut self, settle: bool) -> Result<(), RuntimeError> {
        let Some(stage) = self.stage.as_mut() else { return Ok(()) };
        for d in stage.poll_feedback(settle) {
            self.write_dead_letter(&d)?;
        }
        Ok(())
    }

    /// Hands one record to every sink that takes it.
    fn send(&mut self, record: Record<'_>) -> Result<(), SinkError> {
        for s in &mut self.sinks {
            if s.routes().accepts(&record) {
                s.write(&record)?;
            }
        }
        Ok(())
    }

    fn write_alert(&mut self, a: &Alert, gated: Option<&GatedAlert>, sent: bool) -> Result<(), SinkError> {
        let c = self.report.alerts.entry(a.rule_id.to_string()).or_default();
        match a.state {
            AlertState::Firing => c.firing += 1,
            AlertState::Resolved => c.resolved += 1,
        }
        self.send(Record::Alert { alert: a, gated, sent })
    }

    fn write_dead_letter(&mut self, d: &DeadLetter) -> Result<(), SinkError> {
        self.report.dead_letters += 1;
        self.metrics.dead_letters.fetch_add(1, Ordering::Relaxed);
        *self.report.dead_letter_reasons.entry(d.class()).or_default() += 1;
        self.send(Record::DeadLetter(d))
    }

    /// Writes what the stage emitted, in its order.
    fn write_stage(&mut self, staged: Vec<StageOutput>) -> Result<(), SinkError> {
        for s in staged {
            match s {
                StageOutput::Alert(g) => {
                    if g.verdict == Verdict::Stable {
                        tracing::info!(rule = %g.alert.rule_id, key = %g.alert.key, "alert stable again after flapping");
                    }
                    self.write_alert(&g.alert, Some(&g), g.verdict.is_sent())?;
                }
                StageOutput::Case(u) => self.send(Record::Case(&u))?,
                StageOutput::Rejected { feedback, reason } => {
                    let payload = serde_json::to_string(&feedback).unwrap_or_default();
                    let d = feedback_dead_letter(format!("feedback {}: {reason}", feedback.feedback_id), payload, None);
                    self.write_dead_letter(&d)?;
                }
            }
        }
        Ok(())
    }

    /// The end: every other sink delivers what it holds (bounded), then the store records
    /// the final checkpoint.
    fn close(mut self) -> Result<OutputsReport, RuntimeError> {
        for s in self.sinks.iter_mut().filter(|s| !s.checkpoints()) {
            s.close()?;
        }
        let frontier = self.stage.as_ref().and_then(CaseStageRunner::checkpoint);
        for s in self.sinks.iter_mut().filter(|s| s.checkpoints()) {
            s.checkpoint(frontier)?;
            s.close()?;
        }
        // Everything is delivered and checkpointed: the last barrier is acknowledged (a
        // live source waits for it to acknowledge its input).
        let delivered = self.acks.poll(&mut self.sinks, &self.progress)?;
        if let Some(mut s) = self.snapshots.take() {
            s.finish(delivered);
        }
        self.publish_health();
        if let Some(stage) = &self.stage {
            let stats = stage.stats();
            publish_stage(&self.metrics, &stats);
            self.report.cases = Some(stats);
        }
        self.report.outputs = self.sinks.iter().map(|s| s.report()).collect();
        Ok(self.report)
    }

    fn publish_health(&self) {
        let health: Vec<_> = self.sinks.iter().map(|s| (s.name().to_string(), s.kind(), s.health())).collect();
        let (mut delivered, mut failing) = (0, false);
        for (_, _, h) in health.iter().filter(|(_, kind, _)| *kind == "webhook") {
            delivered += h.delivered.unwrap_or(0);
            failing |= h.failing;
        }
        self.metrics.webhook_delivered.store(delivered, Ordering::Relaxed);
        self.metrics.webhook_failing.store(failing, Ordering::Relaxed);
        *self.metrics.sinks.lock().unwrap_or_else(|p| p.into_inner()) = health;
    }
}

fn publish_stage(m: &RunMetrics, s: &StageStats) {
    m.alerts_suppressed.store(s.alerts.silenced + s.alerts.inhibited + s.alerts.flapping, Ordering::Relaxed);
    m.cases_opened.store(s.cases_opened, Ordering::Relaxed);
    m.case_events.store(s.case_events, Ordering::Relaxed);
    m.cases_open.store(s.open_cases, Ordering::Relaxed);
    m.case_escalations.store(s.escalations, Ordering::Relaxed);
    m.feedback_rejected.store(s.feedback_rejected, Ordering::Relaxed);
}
