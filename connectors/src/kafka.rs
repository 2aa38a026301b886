//! Kafka in and out: a consumer-group source that commits only what has been delivered,
//! and an idempotent producer for alerts and dead letters.
//!
//! ## Delivery guarantee: at-least-once, with deterministic ids
//!
//! The source cuts the input into *marks*: every ~100 ms it sends a barrier through the
//! pipeline ([`Pipeline::barrier`]) and remembers, for that barrier, the next offset of every
//! partition and the watermark of every stream. The sink thread acknowledges a barrier once
//! every alert caused by input before it has been delivered to every sink (Kafka
//! acknowledged the writes, files were flushed). Offsets are committed only from
//! acknowledged marks.
//!
//! Rule state (open windows, pending `for` timers, absence clocks) is not checkpointed: it
//! is rebuilt after a restart or rebalance by replaying input. So the committed offset of a
//! partition trails the acknowledged position by the state horizon of its stream
//! ([`Plan::state_horizon_ms`] plus the allowed out-of-orderness): replaying from there
//! rebuilds every decision still pending. The committed metadata carries the acknowledged
//! offset and watermark (`gridwatch:wm=W;acked=O`, also kept in the state file for brokers
//! that drop commit metadata). On restart the input up to the acknowledged offsets is
//! replayed as such ([`Pipeline::replay_split`]): its alerts were delivered before and
//! are not sent again if their event time is before the watermark
//! ([`PipelineOptions::replay_until`]); input past those offsets is held back until every
//! partition of the stream has replayed up to its own, then evaluated as new. Alerts may
//! arrive twice (after a crash between delivery and commit); their ids are
//! deterministic, so sinks upsert and consumers dedup.
//!
//! ## Rebalance
//!
//! Revoked partitions are drained inside the rebalance callback: a final barrier, wait for
//! its acknowledgement, a synchronous commit. The engine then drops all rule state and, on
//! the new assignment, starts a fresh pipeline that replays from the committed offsets.
//!
//! ## Backpressure and broker outages
//!
//! The consumer must keep polling (or the group evicts it), so it never waits long: a busy
//! engine makes a push wait only until a worker takes the next batch (milliseconds), while
//! sinks that stop acknowledging (more than 32 marks, ~3 s, outstanding) make it pause its
//! partitions and keep polling until they catch up. (Pausing is not used for a merely busy
//! engine: librdkafka drops its prefetched messages on pause.) A broker outage shows
//! as transport errors: the source reports not-ready, holds idle-stream watermarks (silence
//! during an outage is not evidence of absence), and librdkafka reconnects with backoff.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use gridwatch_engine::pipeline::PipelineReport;
use gridwatch_engine::time::{Millis, WATERMARK_START};
use gridwatch_engine::{Alert, DeadLetter, Origin, Output, Pipeline, PipelineOptions, Plan, Reject, RejectKind};
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::util::Timeout;

use gridwatch_runtime::Progress;

use crate::error::{ConnectorError, Result};

mod commit;
mod ends;
mod feedback;
mod producer;
mod source;
#[cfg(test)]
mod tests;

use ends::EndProbe;
pub use feedback::FeedbackReader;
pub use producer::KafkaSink;
pub use source::{SourceReport, run_source};

/// Everything the Kafka source and sink need, resolved from the config.
#[derive(Debug, Clone, Default)]
pub struct KafkaOptions {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// Consumer group id.
    pub group_id: String,
    /// librdkafka properties passed through to consumer and producer.
    pub properties: BTreeMap<String, String>,
    /// Input topic → stream index in the plan.
    pub topics: BTreeMap<String, usize>,
    /// Where alerts go (keyed by alert id, JSON values).
    pub alerts_topic: Option<String>,
    /// Where dead letters go (reason and source position in headers).
    pub dead_letter_topic: Option<String>,
    /// How often acknowledged offsets are committed.
    pub commit_interval: Duration,
    /// Stop (as at the end of a bounded input) once every assigned partition has been
    /// read to its end: for backfills, benchmarks and tests.
    pub until_caught_up: bool,
    /// Where committed positions are also recorded with their watermarks, for brokers that
    /// do not keep commit metadata.
    pub state_dir: Option<std::path::PathBuf>,
}

/// Live state shared with the admin endpoint and the sink thread.
#[derive(Debug, Default)]
pub struct KafkaStatus {
    /// Partitions are assigned and the broker answers.
    pub ready: AtomicBool,
    /// The last contact with the broker succeeded.
    pub broker_up: AtomicBool,
    /// Consumption is paused for backpressure.
    pub paused: AtomicBool,
    /// The sink's last deliveries failed and are being retried.
    pub sink_failing: AtomicBool,
    /// Messages consumed.
    pub messages_in: AtomicU64,
    /// Alerts delivered to Kafka.
    pub alerts_out: AtomicU64,
    /// Dead letters delivered to Kafka.
    pub dead_letters_out: AtomicU64,
    /// Deliveries that failed and were queued again.
    pub delivery_retries: AtomicU64,
    /// Offset commits that succeeded.
    pub commits: AtomicU64,
    /// Rebalances seen.
    pub rebalances: AtomicU64,
    /// Alerts recomputed during replay and not sent again.
    pub replay_suppressed: AtomicU64,
    /// Assigned partitions.
    pub assigned_partitions: AtomicI64,
}

/// Which kind of client a config is for: consumer-only properties are left out of
/// producer configs (librdkafka warns about them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The source.
    Consumer,
    /// Sinks and `gridwatch produce`.
    Producer,
}

fn consumer_only(key: &str) -> bool {
    const PREFIXES: [&str; 13] = [
        "group.",
        "session.",
        "heartbeat.",
        "max.poll.",
        "max.partition.",
        "fetch.",
        "queued.",
        "auto.",
        "enable.auto.",
        "partition.assignment",
        "offset.",
        "consume.",
        "coordinator.",
    ];
    PREFIXES.iter().any(|p| key.starts_with(p))
        || matches!(key, "isolation.level" | "enable.partition.eof" | "check.crcs")
}

/// The consumer settings gridwatch uses unless the config's `properties` say otherwise:
/// large fetches (3–4× the throughput of librdkafka's defaults on the example city), a
/// deep prefetch queue, short group-join and failure-detection times, and a short broker
/// long-poll at the end of the data. Users should not need to know librdkafka to get the
/// speed (BENCHMARKS.md, "Kafka defaults").
pub const CONSUMER_DEFAULTS: [(&str, &str); 7] = [
    ("session.timeout.ms", "6000"),
    ("heartbeat.interval.ms", "500"),
    ("max.poll.interval.ms", "60000"),
    ("fetch.wait.max.ms", "100"),
    ("max.partition.fetch.bytes", "16777216"),
    ("fetch.max.bytes", "67108864"),
    ("queued.min.messages", "1000000"),
];

/// Builds a client config: brokers, then the user's properties (they win), then `extra`
/// for keys the user did not set.
pub fn client_config(opts: &KafkaOptions, role: Role, extra: &[(&str, &str)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &opts.brokers);
    for (k, v) in &opts.properties {
        if role == Role::Producer && consumer_only(k) {
            continue;
        }
        c.set(k, v);
    }
    for (k, v) in extra {
        if !opts.properties.contains_key(*k) {
            c.set(*k, *v);
        }
    }
    c
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn note_client_error(status: &KafkaStatus, who: &str, error: &KafkaError, reason: &str) {
    let down = matches!(
        error.rdkafka_error_code(),
        Some(RDKafkaErrorCode::AllBrokersDown | RDKafkaErrorCode::BrokerTransportFailure)
    );
    if down {
        if status.broker_up.swap(false, Ordering::Relaxed) {
            tracing::warn!(client = who, error = %error, reason, "Kafka broker unreachable; retrying with backoff");
        }
    } else {
        tracing::warn!(client = who, error = %error, reason, "Kafka client error");
    }
}

/// Waits until the brokers of `kafka` answer a metadata request, logging while they do
/// not; false if `stop` was raised first. A run checks this before it opens any output.
pub fn wait_reachable(kafka: &KafkaOptions, stop: &AtomicBool) -> Result<bool> {
    let probe: BaseConsumer = client_config(kafka, Role::Consumer, &[("group.id", &kafka.group_id)])
        .create()
        .map_err(|source| ConnectorError::KafkaClient { what: "creating the consumer", source })?;
    let mut warned: Option<Instant> = None;
    loop {
        match probe.fetch_metadata(None, Timeout::After(Duration::from_secs(2))) {
            Ok(_) => {
                if warned.is_some() {
                    tracing::info!(brokers = %kafka.brokers, "Kafka brokers reachable");
                }
                return Ok(true);
            }
            Err(e) => {
                if warned.is_none_or(|at| at.elapsed() > Duration::from_secs(30)) {
                    tracing::warn!(brokers = %kafka.brokers, error = %e, "waiting for the Kafka brokers (nothing is read or written until they answer)");
                    warned = Some(Instant::now());
                }
            }
        }
        if stop.load(Ordering::Relaxed) {
            return Ok(false);
        }
    }
}
