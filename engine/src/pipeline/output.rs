//! What a pipeline sends out (alerts, dead letters, barriers, rule errors) and reports.

#[allow(clippy::wildcard_imports)]
use super::*;

/// A record the engine could not process.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DeadLetter {
    /// Stream the payload was meant for.
    pub stream: String,
    /// The class of the rejection (for counters, routing, alerting on data quality).
    pub kind: RejectKind,
    /// The declared field at fault, for bad and missing fields.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<Arc<str>>,
    /// Why it was rejected, for people.
    pub reason: String,
    /// The raw payload (lossy UTF-8).
    pub payload: String,
    /// Where the payload came from, when the source has positions (Kafka).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
}

impl DeadLetter {
    /// The dead letter of `payload`, meant for `stream`, rejected for `reject`.
    pub fn new(stream: impl Into<String>, reject: Reject, payload: String, origin: Option<Origin>) -> Self {
        DeadLetter {
            stream: stream.into(),
            kind: reject.kind,
            field: reject.field,
            reason: reject.message,
            payload,
            origin,
        }
    }

    /// The summary's group of this dead letter ("late", "bad field `ts`", …).
    pub fn class(&self) -> String {
        Reject::class(self.kind, self.field.as_deref())
    }
}

/// Position of a record in its source: topic, partition and offset for Kafka.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Origin {
    /// Topic (or file) name.
    pub topic: Arc<str>,
    /// Partition.
    pub partition: i32,
    /// Offset within the partition.
    pub offset: i64,
}

/// What comes out of a pipeline.
#[derive(Debug)]
pub enum Output {
    /// Alerts raised by one worker for one batch.
    Alerts(Vec<Alert>),
    /// A rejected input record.
    DeadLetter(DeadLetter),
    /// Emitted once per worker by [`Pipeline::barrier`] after everything pushed before the
    /// barrier was processed by that worker: once all workers' barriers `seq` arrived,
    /// every output caused by input before it has been received.
    Barrier {
        /// The sequence number given to [`Pipeline::barrier`].
        seq: u64,
        /// Worker that passed it.
        worker: usize,
        /// Number of workers (barriers to expect for `seq`).
        workers: usize,
        /// The pipeline's watermark at the barrier (the minimum over streams that have
        /// seen data), lowered to the earliest event time the worker's held rows may
        /// still raise (see [`crate::operator::Operator::alert_floor`]): every alert
        /// received after all workers passed the barrier has an event time at or after the
        /// minimum over the workers, so stages behind the workers can order by event time.
        watermark: Millis,
    },
    /// The pipeline's part of checkpoint barrier `seq` (see [`super::snapshot`]).
    Checkpoint(Box<super::CheckpointStart>),
    /// A worker's state at checkpoint barrier `seq`, per rule in plan order; sent just
    /// before its [`Output::Barrier`] for `seq`.
    State {
        /// The barrier.
        seq: u64,
        /// The worker.
        worker: usize,
        /// Per rule of the plan, the keys this worker owns.
        rules: Vec<crate::state::KeyStates>,
    },
    /// A rule failed on a batch; its other batches and the other rules go on.
    RuleError {
        /// Rule id.
        rule: String,
        /// What failed.
        message: String,
    },
}

/// Counters of one stream.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StreamStats {
    /// Stream name.
    pub stream: String,
    /// Payloads received.
    pub received: u64,
    /// Rows decoded and accepted.
    pub accepted: u64,
    /// Rows rejected by the decoder.
    pub invalid: u64,
    /// Rows behind the watermark.
    pub late: u64,
    /// Rows dated too far ahead (see [`crate::future`]).
    pub future: u64,
    /// Set when event times look like a unit mistake (see `time_unit`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_warning: Option<String>,
    /// Final watermark.
    pub watermark: Millis,
}

/// Final report of a pipeline.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PipelineReport {
    /// Per-stream counters.
    pub streams: Vec<StreamStats>,
    /// Keys with state per rule id, summed over workers.
    pub keys_per_rule: Vec<(String, usize)>,
    /// Per sequence rule with any: partial matches dropped at its `max_partial`.
    pub partials_dropped: Vec<(String, u64)>,
    /// Alerts dropped in restore mode (see [`PipelineOptions::replay_until`]).
    pub replay_suppressed: u64,
    /// Time the ingest thread spent sequencing decoded batches (watermarks, lateness, dead
    /// letters) and handing them to the workers, in nanoseconds, not counting waits for a
    /// full worker queue.
    pub route_ns: u64,
    /// Time spent decoding and splitting rows by partition, ns: first on the ingest thread
    /// (everything with `decoders: 0`, else the chunks cut by linger while the pool was
    /// idle), then per decoder thread.
    pub decoder_busy_ns: Vec<u64>,
    /// Time the ingest thread waited for a full worker queue (backpressure), ns.
    pub send_wait_ns: u64,
    /// Per worker: time spent evaluating rules, ns (the rest of its life it waited).
    pub worker_busy_ns: Vec<u64>,
}
