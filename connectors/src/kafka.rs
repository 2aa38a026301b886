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

mod ends;
use ends::EndProbe;

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

// ---------------------------------------------------------------------------------------
// Producer
// ---------------------------------------------------------------------------------------

/// A record whose delivery failed, kept to be sent again.
#[derive(Debug)]
struct Failed {
    topic: String,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    headers: Option<OwnedHeaders>,
    epoch: u64,
    error: String,
}

/// Deliveries in flight per epoch (the barrier a record was produced after) and failures
/// waiting to be sent again; shared with librdkafka's delivery callback.
#[derive(Default)]
struct Deliveries {
    pending: BTreeMap<u64, u64>,
    failed: Vec<Failed>,
}

struct ProducerCtx {
    status: Arc<KafkaStatus>,
    deliveries: Mutex<Deliveries>,
}

impl ClientContext for ProducerCtx {
    fn error(&self, error: KafkaError, reason: &str) {
        note_client_error(&self.status, "producer", &error, reason);
    }
}

impl ProducerContext for ProducerCtx {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, epoch: usize) {
        let epoch = epoch as u64;
        let mut d = lock(&self.deliveries);
        match result {
            Ok(_) => {
                self.status.broker_up.store(true, Ordering::Relaxed);
                if let Some(n) = d.pending.get_mut(&epoch) {
                    *n -= 1;
                    if *n == 0 {
                        d.pending.remove(&epoch);
                    }
                }
            }
            // Still pending: it is sent again, under the same epoch.
            Err((e, msg)) => {
                self.status.delivery_retries.fetch_add(1, Ordering::Relaxed);
                d.failed.push(Failed {
                    topic: msg.topic().to_string(),
                    key: msg.key().map(<[u8]>::to_vec),
                    payload: msg.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                    headers: msg.headers().map(rdkafka::message::BorrowedHeaders::detach),
                    epoch,
                    error: e.to_string(),
                });
            }
        }
    }
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

/// Sends alerts and dead letters to Kafka; nothing is acknowledged before Kafka has it.
///
/// Acknowledgement is asynchronous: every record is tagged with the last barrier passed
/// before it was produced (its *epoch*); barrier `s` is delivered once no record of an
/// epoch before `s` is still in flight. The sink thread never waits on the broker, so
/// alerts keep flowing while earlier ones are being acknowledged.
pub struct KafkaSink {
    producer: ThreadedProducer<ProducerCtx>,
    alerts_topic: Option<String>,
    dead_letter_topic: Option<String>,
    status: Arc<KafkaStatus>,
    epoch: u64,
    retry_at: Option<(Instant, Duration)>,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink").field("alerts_topic", &self.alerts_topic).field("epoch", &self.epoch).finish()
    }
}

impl KafkaSink {
    /// The topics alerts and dead letters go to: (what, topic).
    pub fn topics(&self) -> Vec<(&'static str, &str)> {
        let alerts = self.alerts_topic.as_deref().map(|t| ("alerts", t));
        let dead = self.dead_letter_topic.as_deref().map(|t| ("dead letters", t));
        alerts.into_iter().chain(dead).collect()
    }

    /// An idempotent producer (`enable.idempotence`, no delivery timeout: a message waits
    /// out a broker outage instead of failing).
    pub fn new(opts: &KafkaOptions, status: Arc<KafkaStatus>) -> Result<KafkaSink> {
        let ctx = ProducerCtx { status: status.clone(), deliveries: Mutex::new(Deliveries::default()) };
        let producer = client_config(
            opts,
            Role::Producer,
            &[
                ("enable.idempotence", "true"),
                ("message.timeout.ms", "0"),
                ("linger.ms", "1"),
                ("compression.type", "lz4"),
                ("reconnect.backoff.max.ms", "2000"),
            ],
        )
        .create_with_context(ctx)
        .map_err(|source| ConnectorError::KafkaClient { what: "creating the producer", source })?;
        Ok(KafkaSink {
            producer,
            alerts_topic: opts.alerts_topic.clone(),
            dead_letter_topic: opts.dead_letter_topic.clone(),
            status,
            epoch: 0,
            retry_at: None,
        })
    }

    /// Queues an alert (key = alert id, value = JSON) on the alerts topic, if there is one.
    pub fn send_alert(&mut self, alert: &Alert) -> Result<()> {
        let Some(topic) = self.alerts_topic.clone() else { return Ok(()) };
        self.send_alert_to(&topic, alert)
    }

    /// Queues an alert (key = alert id, value = JSON) on `topic`.
    pub fn send_alert_to(&mut self, topic: &str, alert: &Alert) -> Result<()> {
        let payload = serde_json::to_vec(alert)?;
        self.enqueue(topic, Some(alert.alert_id.as_bytes()), &payload, None, self.epoch, true)?;
        self.status.alerts_out.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Queues a JSON record on `topic` with `key` (case events are keyed by case id, so the
    /// events of one case stay in order on one partition).
    pub fn send_json(&mut self, topic: &str, key: &str, value: &impl serde::Serialize) -> Result<()> {
        let payload = serde_json::to_vec(value)?;
        self.enqueue(topic, Some(key.as_bytes()), &payload, None, self.epoch, true)
    }

    /// Queues a dead letter: value = raw payload, headers = reason, stream and, for Kafka
    /// input, the source topic, partition and offset.
    pub fn send_dead_letter(&mut self, dl: &DeadLetter) -> Result<()> {
        let Some(topic) = self.dead_letter_topic.clone() else { return Ok(()) };
        self.send_dead_letter_to(&topic, dl)
    }

    /// Queues a dead letter on `topic` (see [`KafkaSink::send_dead_letter`]).
    pub fn send_dead_letter_to(&mut self, topic: &str, dl: &DeadLetter) -> Result<()> {
        let mut headers = OwnedHeaders::new()
            .insert(Header { key: "gridwatch.kind", value: Some(dl.kind.name()) })
            .insert(Header { key: "gridwatch.reason", value: Some(&dl.reason) })
            .insert(Header { key: "gridwatch.stream", value: Some(&dl.stream) });
        if let Some(o) = &dl.origin {
            headers = headers
                .insert(Header { key: "gridwatch.source.topic", value: Some(&*o.topic) })
                .insert(Header { key: "gridwatch.source.partition", value: Some(&o.partition.to_string()) })
                .insert(Header { key: "gridwatch.source.offset", value: Some(&o.offset.to_string()) });
        }
        self.enqueue(topic, None, dl.payload.as_bytes(), Some(headers), self.epoch, true)?;
        self.status.dead_letters_out.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn enqueue(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: Option<OwnedHeaders>,
        epoch: u64,
        count: bool,
    ) -> Result<()> {
        if count {
            *lock(&self.producer.context().deliveries).pending.entry(epoch).or_default() += 1;
        }
        let mut record: BaseRecord<'_, [u8], [u8], usize> =
            BaseRecord::with_opaque_to(topic, epoch as usize).payload(payload);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(h) = headers {
            record = record.headers(h);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                // The local queue is full: wait for deliveries to make room.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((source, _)) => {
                    return Err(ConnectorError::KafkaRequest {
                        what: "producing to",
                        topic: topic.to_string(),
                        source,
                    });
                }
            }
        }
    }

    /// Everything sent from now on belongs after barrier `seq`.
    pub fn barrier_passed(&mut self, seq: u64) {
        self.epoch = self.epoch.max(seq);
    }

    /// The highest barrier whose records are all delivered. Also sends failed records
    /// again, with exponential backoff (100 ms to 10 s).
    pub fn delivered_through(&mut self) -> Result<u64> {
        let (oldest_pending, failed) = {
            let mut d = lock(&self.producer.context().deliveries);
            let failed = match self.retry_at {
                Some((at, _)) if Instant::now() < at => Vec::new(),
                _ => std::mem::take(&mut d.failed),
            };
            (d.pending.keys().next().copied(), failed)
        };
        if failed.is_empty() {
            if self.retry_at.is_some() && lock(&self.producer.context().deliveries).failed.is_empty() {
                self.retry_at = None;
                self.status.sink_failing.store(false, Ordering::Relaxed);
            }
        } else {
            let backoff =
                self.retry_at.map_or(Duration::from_millis(100), |(_, b)| (b * 2).min(Duration::from_secs(10)));
            tracing::warn!(
                records = failed.len(),
                error = %failed[0].error,
                retry_in_ms = backoff.as_millis() as u64,
                "Kafka sink: delivery failed; sending again"
            );
            self.status.sink_failing.store(true, Ordering::Relaxed);
            self.retry_at = Some((Instant::now() + backoff, backoff));
            for f in failed {
                self.enqueue(&f.topic, f.key.as_deref(), &f.payload, f.headers, f.epoch, false)?;
            }
        }
        Ok(oldest_pending.map_or(self.epoch, |p| p.min(self.epoch)))
    }

    /// Blocks until everything queued so far is delivered (sending failures again).
    pub fn flush(&mut self) -> Result<()> {
        loop {
            while self.producer.flush(Duration::from_secs(5)).is_err() {
                tracing::warn!(in_flight = self.producer.in_flight_count(), "Kafka sink: waiting for the broker");
            }
            self.retry_at = None;
            self.delivered_through()?;
            let d = lock(&self.producer.context().deliveries);
            if d.pending.is_empty() && d.failed.is_empty() {
                return Ok(());
            }
            drop(d);
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Offsets: marks, acknowledgements, the commit point
// ---------------------------------------------------------------------------------------

/// A partition being consumed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct PartitionId {
    topic: Arc<str>,
    partition: i32,
}

/// What is committed for a partition: where a restart replays from, and up to where the
/// replayed input was acknowledged (with the stream's watermark then).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Committed {
    /// The committed offset: replay starts here.
    offset: i64,
    /// Next offset at the latest acknowledged barrier: input before it was delivered.
    acked: i64,
    /// The stream's watermark at that barrier (at most the case stage's frontier).
    watermark: Millis,
}

impl Committed {
    const METADATA_PREFIX: &str = "gridwatch:";

    /// The commit metadata: `gridwatch:wm=W;acked=O`.
    fn metadata(&self) -> String {
        format!("{}wm={};acked={}", Self::METADATA_PREFIX, self.watermark, self.acked)
    }

    /// Reads [`Committed::metadata`] of a commit at `offset`; `None` if it is not ours.
    /// Metadata of older versions (`gridwatch:wm=W`) has no acknowledged offset: the replay
    /// then treats everything as new input.
    fn parse(offset: i64, metadata: &str) -> Option<Committed> {
        let fields = metadata.strip_prefix(Self::METADATA_PREFIX)?;
        let mut c = Committed { offset, acked: offset, watermark: WATERMARK_START };
        let mut has_watermark = false;
        for field in fields.split(';') {
            match field.split_once('=') {
                Some(("wm", v)) => {
                    c.watermark = v.parse().ok()?;
                    has_watermark = true;
                }
                Some(("acked", v)) => c.acked = v.parse().ok()?,
                _ => {}
            }
        }
        has_watermark.then_some(c)
    }
}

#[derive(Debug, Clone)]
struct Mark {
    seq: u64,
    /// Next offset to read, per partition, at the barrier.
    next: Vec<(PartitionId, i64)>,
    /// Stream watermarks at the barrier.
    watermarks: Vec<Millis>,
}

/// Chooses offsets that are safe to commit (see the module docs).
#[derive(Debug)]
struct CommitTracker {
    marks: VecDeque<Mark>,
    /// Per stream: state horizon + allowed out-of-orderness.
    replay_span: Vec<Millis>,
    stream_of_topic: HashMap<Arc<str>, usize>,
    committed: BTreeMap<PartitionId, Committed>,
}

impl CommitTracker {
    /// What to commit now, given the highest acknowledged barrier: for each partition
    /// whose commit would move forward.
    fn commit_point(&mut self, acked: u64) -> Vec<(PartitionId, Committed)> {
        let Some(latest) = self.marks.iter().rev().find(|m| m.seq <= acked).cloned() else { return Vec::new() };
        let mut out = Vec::new();
        for (pid, acked_offset) in &latest.next {
            let s = self.stream_of_topic[&pid.topic];
            let wm = latest.watermarks[s];
            if wm == WATERMARK_START {
                continue;
            }
            // The newest acknowledged mark whose input is entirely older than what the
            // rules can still need at the latest acknowledged watermark.
            let limit = wm.saturating_sub(self.replay_span[s]);
            let Some(mark) = self.marks.iter().rev().find(|m| m.seq <= acked && m.watermarks[s] < limit) else {
                continue;
            };
            let Some(&(_, offset)) = mark.next.iter().find(|(p, _)| p == pid) else { continue };
            let point = Committed { offset, acked: *acked_offset, watermark: wm };
            if self
                .committed
                .get(pid)
                .is_none_or(|c| c.offset < offset || (c.offset == offset && c.acked < point.acked))
            {
                out.push((pid.clone(), point));
            }
        }
        out
    }

    /// Drops marks before the oldest one any partition may still commit from.
    fn trim(&mut self, acked: u64) {
        // A mark can be chosen later only if it is the newest satisfying the limit for some
        // stream; since watermarks only grow, everything older than the currently chosen
        // candidate of *every* stream is dead.
        let Some(latest) = self.marks.iter().rev().find(|m| m.seq <= acked).cloned() else { return };
        let mut oldest_alive = self.marks.len().saturating_sub(1);
        for (s, &wm) in latest.watermarks.iter().enumerate() {
            let limit = wm.saturating_sub(self.replay_span[s]);
            let idx = self
                .marks
                .iter()
                .enumerate()
                .rev()
                .find(|(_, m)| m.seq <= acked && m.watermarks[s] < limit)
                .map_or(0, |(i, _)| i);
            oldest_alive = oldest_alive.min(idx);
        }
        self.marks.drain(..oldest_alive);
    }
}

// ---------------------------------------------------------------------------------------
// Consumer
// ---------------------------------------------------------------------------------------

/// The part of the source the rebalance callback needs.
struct Core {
    plan: Arc<Plan>,
    options: PipelineOptions,
    out: Sender<Output>,
    status: Arc<KafkaStatus>,
    /// How far the sinks acknowledged (the runtime's tracker publishes it).
    progress: Arc<Progress>,
    pipeline: Option<Pipeline>,
    tracker: CommitTracker,
    seq: u64,
    /// Next offset per consumed partition.
    positions: Vec<(PartitionId, i64)>,
    /// Split (index among its stream's assigned partitions) of each assigned partition.
    splits: Vec<(PartitionId, usize)>,
    /// `<state_dir>/<group>.offsets.json`, see [`KafkaOptions::state_dir`].
    state_file: Option<std::path::PathBuf>,
    reports: Vec<PipelineReport>,
    /// Set by the callback on a new assignment: the loop starts a pipeline.
    assigned: bool,
    last_commit_error: Option<String>,
}

impl Core {
    fn mark(&mut self) -> Result<u64> {
        let Some(p) = self.pipeline.as_mut() else { return Ok(self.seq) };
        if p.replaying() {
            // Input read so far may be held back, unprocessed: positions are no evidence.
            return Ok(self.seq);
        }
        self.seq += 1;
        let mut watermarks = p.barrier(self.seq).map_err(engine_err)?;
        // The case stage behind the workers has processed only what lies before the
        // pipeline's frontier (the minimum over streams) when this barrier is acknowledged:
        // a replay must re-send every alert from there on.
        cap_at_frontier(&mut watermarks, p.frontier());
        let mut next = self.positions.clone();
        // Rows the sequencer holds back (judging a doubtful clock by the rows after it) are
        // not processed yet: the acknowledged position of their partition stops before them.
        for (stream, split, offset) in p.unsequenced() {
            let held = self
                .splits
                .iter()
                .find(|(pid, sp)| *sp == split && self.tracker.stream_of_topic.get(&pid.topic) == Some(&stream));
            if let Some((pid, _)) = held
                && let Some(n) = next.iter_mut().find(|(p, _)| p == pid)
            {
                n.1 = n.1.min(offset);
            }
        }
        self.tracker.marks.push_back(Mark { seq: self.seq, next, watermarks });
        Ok(self.seq)
    }

    fn wait_acked(&self, seq: u64) {
        let started = Instant::now();
        let mut warned = Instant::now();
        while self.progress.acked() < seq {
            std::thread::sleep(Duration::from_millis(1));
            if warned.elapsed() > Duration::from_secs(5) {
                tracing::warn!(waited_s = started.elapsed().as_secs(), "waiting for the sinks to acknowledge");
                warned = Instant::now();
            }
        }
    }

    fn commit<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>, mode: CommitMode) {
        let acked = self.progress.acked();
        let point = self.tracker.commit_point(acked);
        self.tracker.trim(acked);
        if point.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for (pid, c) in &point {
            let mut e = tpl.add_partition(&pid.topic, pid.partition);
            if e.set_offset(Offset::Offset(c.offset)).is_ok() {
                e.set_metadata(c.metadata());
            }
        }
        match consumer.commit(&tpl, mode) {
            Ok(()) => {
                tracing::debug!(?point, "offsets committed");
                if let Some(path) = &self.state_file {
                    save_state(path, &point);
                }
                for (pid, c) in point {
                    self.tracker.committed.insert(pid, c);
                }
                self.status.commits.fetch_add(1, Ordering::Relaxed);
                self.last_commit_error = None;
            }
            Err(e) => {
                let msg = e.to_string();
                if self.last_commit_error.as_deref() != Some(&msg) {
                    tracing::warn!(error = %msg, "committing offsets failed; will retry");
                }
                self.last_commit_error = Some(msg);
            }
        }
    }

    /// Finishes all in-flight work, commits, and drops the rule state.
    fn drain<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>) -> Result<()> {
        if self.pipeline.is_none() {
            return Ok(());
        }
        let seq = self.mark()?;
        self.wait_acked(seq);
        self.commit(consumer, CommitMode::Sync);
        if let Some(p) = self.pipeline.take() {
            let report = p.stop().map_err(engine_err)?;
            self.status.replay_suppressed.fetch_add(report.replay_suppressed, Ordering::Relaxed);
            self.reports.push(report);
        }
        self.tracker.marks.clear();
        self.positions.clear();
        Ok(())
    }
}

/// Caps the stream watermarks of a mark (those that have one) at the pipeline's frontier.
fn cap_at_frontier(watermarks: &mut [Millis], frontier: Millis) {
    for w in watermarks.iter_mut().filter(|w| **w != WATERMARK_START) {
        *w = (*w).min(frontier);
    }
}

fn engine_err(e: gridwatch_engine::EngineError) -> ConnectorError {
    ConnectorError::Engine(e)
}

struct ConsumerCtx {
    core: Arc<Mutex<Core>>,
    status: Arc<KafkaStatus>,
}

impl ClientContext for ConsumerCtx {
    fn error(&self, error: KafkaError, reason: &str) {
        note_client_error(&self.status, "consumer", &error, reason);
    }
}

impl ConsumerContext for ConsumerCtx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        self.status.rebalances.fetch_add(1, Ordering::Relaxed);
        self.status.ready.store(false, Ordering::Relaxed);
        if let Rebalance::Revoke(tpl) = rebalance {
            tracing::info!(partitions = tpl.count(), "partitions revoked: draining in-flight work");
            let mut core = lock(&self.core);
            if let Err(e) = core.drain(consumer) {
                tracing::error!(error = %e, "draining before the rebalance failed");
            }
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                tracing::info!(partitions = tpl.count(), "partitions assigned");
                self.status.assigned_partitions.store(tpl.count() as i64, Ordering::Relaxed);
                lock(&self.core).assigned = true;
            }
            Rebalance::Revoke(_) => self.status.assigned_partitions.store(0, Ordering::Relaxed),
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }
}

/// What the source did.
#[derive(Debug, Default)]
pub struct SourceReport {
    /// Reports of every pipeline run (one per assignment).
    pub pipelines: Vec<PipelineReport>,
    /// Messages consumed.
    pub messages: u64,
    /// When the first and the last message were received: the consumption span, without
    /// the group join before it.
    pub first_last: Option<(Instant, Instant)>,
}

impl SourceReport {
    /// Messages per second between the first and the last message (engine included: a
    /// slower engine pauses the consumer).
    pub fn rate(&self) -> Option<f64> {
        let (first, last) = self.first_last?;
        let secs = last.duration_since(first).as_secs_f64();
        (secs > 0.0).then(|| self.messages.saturating_sub(1) as f64 / secs)
    }
}

/// Consumes the configured topics into successive pipelines until `stop` is set (or, with
/// [`KafkaOptions::until_caught_up`], until every assigned partition was read to its end).
pub fn run_source(
    plan: Arc<Plan>,
    options: PipelineOptions,
    kafka: &KafkaOptions,
    out: Sender<Output>,
    status: Arc<KafkaStatus>,
    progress: Arc<Progress>,
    stop: &AtomicBool,
) -> Result<SourceReport> {
    let replay_span: Vec<Millis> = plan
        .streams
        .iter()
        .enumerate()
        .map(|(i, s)| plan.state_horizon_ms(i).saturating_add(s.max_out_of_orderness_ms).saturating_add(1))
        .collect();
    tracing::info!(
        ?replay_span,
        "replay span per stream (ms): committed offsets trail the acknowledged watermark by this much"
    );
    let stream_of_topic: HashMap<Arc<str>, usize> =
        kafka.topics.iter().map(|(t, &s)| (Arc::from(t.as_str()), s)).collect();
    let core = Arc::new(Mutex::new(Core {
        plan: plan.clone(),
        options,
        out,
        status: status.clone(),
        pipeline: None,
        tracker: CommitTracker {
            marks: VecDeque::new(),
            replay_span,
            stream_of_topic: stream_of_topic.clone(),
            committed: BTreeMap::new(),
        },
        seq: progress.acked(),
        progress: progress.clone(),
        positions: Vec::new(),
        splits: Vec::new(),
        state_file: kafka.state_dir.as_ref().map(|d| d.join(format!("{}.offsets.json", sanitize(&kafka.group_id)))),
        reports: Vec::new(),
        assigned: false,
        last_commit_error: None,
    }));
    let ctx = ConsumerCtx { core: core.clone(), status: status.clone() };
    let mut settings: Vec<(&str, &str)> = vec![
        ("group.id", &kafka.group_id),
        ("enable.auto.commit", "false"),
        ("enable.auto.offset.store", "false"),
        ("auto.offset.reset", "earliest"),
        ("partition.assignment.strategy", "range,roundrobin"),
        ("reconnect.backoff.max.ms", "2000"),
    ];
    settings.extend(CONSUMER_DEFAULTS);
    let consumer: BaseConsumer<ConsumerCtx> = client_config(kafka, Role::Consumer, &settings)
        .create_with_context(ctx)
        .map_err(|source| ConnectorError::KafkaClient { what: "creating the consumer", source })?;
    if kafka.properties.get("partition.assignment.strategy").is_some_and(|s| s.contains("cooperative")) {
        return Err(ConnectorError::KafkaSetting(
            "partition.assignment.strategy: the cooperative protocol is not supported (state is rebuilt per assignment); use range or roundrobin",
        ));
    }
    let ends = EndProbe::start(kafka)?;
    let topics: Vec<&str> = kafka.topics.keys().map(String::as_str).collect();
    consumer.subscribe(&topics).map_err(|source| ConnectorError::KafkaRequest {
        what: "subscribing to",
        topic: topics.join("`, `"),
        source,
    })?;
    tracing::info!(brokers = %kafka.brokers, group = %kafka.group_id, topics = ?topics, "Kafka source started");

    let mut messages = 0u64;
    let mut first_last: Option<(Instant, Instant)> = None;
    let mut since_mark = 0u64;
    let mut last_mark = Instant::now();
    let mut last_commit = Instant::now();
    let mut last_idle_check = Instant::now();
    let mut caught_up = vec![false; plan.streams.len()];
    let mut paused = false;
    const MARK_EVERY: Duration = Duration::from_millis(100);
    const MARK_MESSAGES: u64 = 100_000;
    const MAX_UNACKED_MARKS: u64 = 32;

    // The per-message path is kept short: one lock, one push; everything periodic (marks,
    // commits, linger, backpressure, idleness) runs every HOUSEKEEPING messages or when a
    // poll comes back empty, from one clock reading.
    const HOUSEKEEPING: u64 = 64;
    let mut stream_messages = vec![0u64; plan.streams.len()];
    let mut seen_at_check = stream_messages.clone();
    let mut silent_since: Vec<Option<Instant>> = vec![None; plan.streams.len()];
    // (topic, partition) of the previous message and where it goes: stream, split, position slot.
    let mut route: Option<(Arc<str>, i32, usize, usize, usize, u64)> = None;
    let mut generation = 0u64;
    let mut empty_poll = true;
    // When a message arrived bounds how far ahead its event time may be (a wrong device
    // clock must not move the watermark): the broker's timestamp, but never later than the
    // wall clock, read once per housekeeping round rather than per message.
    let mut now_ms = crate::net::wall_clock_ms();
    loop {
        let polled = consumer.poll(Duration::from_millis(if paused {
            5
        } else if empty_poll {
            20
        } else {
            0
        }));
        let mut c = lock(&core);
        empty_poll = !matches!(polled, Some(Ok(_)));
        if matches!(polled, Some(Ok(_))) && (c.assigned || c.pipeline.is_none()) {
            // The assignment callback ran inside this poll: start the pipeline before the
            // first message of the new assignment.
            c.assigned = false;
            start_pipeline(&mut c, &consumer, &stream_of_topic);
            generation += 1;
            caught_up.iter_mut().for_each(|x| *x = false);
        }
        match polled {
            Some(Ok(msg)) if c.pipeline.is_some() => {
                messages += 1;
                since_mark += 1;
                let (partition, offset) = (msg.partition(), msg.offset());
                let topic_name = msg.topic();
                let hit = route.as_ref().is_some_and(|r| r.1 == partition && r.5 == generation && *r.0 == *topic_name);
                if !hit {
                    let t: Arc<str> = Arc::from(topic_name);
                    let stream = stream_of_topic.get(&t).copied().unwrap_or(usize::MAX);
                    let split =
                        c.splits.iter().find(|(p, _)| p.partition == partition && p.topic == t).map_or(0, |x| x.1);
                    let slot = match c.positions.iter().position(|(p, _)| p.partition == partition && p.topic == t) {
                        Some(i) => i,
                        None => {
                            c.positions.push((PartitionId { topic: t.clone(), partition }, offset));
                            c.positions.len() - 1
                        }
                    };
                    route = Some((t, partition, stream, split, slot, generation));
                }
                let (topic, _, stream, split, slot, _) = route.as_ref().expect("set above");
                let (stream, split, slot) = (*stream, *split, *slot);
                let origin = || Some(Origin { topic: topic.clone(), partition, offset });
                let c = &mut *c;
                let p = c.pipeline.as_mut().expect("matched above");
                let pushed = match (stream, msg.payload()) {
                    (usize::MAX, payload) => {
                        let reason = Reject::new(RejectKind::UnknownStream, format!("topic `{topic}` feeds no stream"));
                        p.reject_from("", reason, payload.unwrap_or_default(), origin())
                    }
                    (s, None) => {
                        let reason = Reject::new(RejectKind::InvalidJson, "empty message (no value)");
                        p.reject_from(&plan.streams[s].name, reason, &[], origin())
                    }
                    (s, Some(payload)) => {
                        stream_messages[s] += 1;
                        let arrival = msg.timestamp().to_millis().map_or(now_ms, |t| t.min(now_ms));
                        p.push_arrived(s, split, payload, offset, Some(arrival))
                    }
                };
                pushed.map_err(engine_err)?;
                c.positions[slot].1 = offset + 1;
                if first_last.is_none() {
                    let now = Instant::now();
                    first_last = Some((now, now));
                }
                if !messages.is_multiple_of(HOUSEKEEPING) {
                    continue;
                }
            }
            Some(Ok(_)) => return Err(ConnectorError::Internal("a Kafka message arrived without a pipeline")),
            Some(Err(e)) => note_client_error(&status, "consumer", &e, "poll"),
            None => {}
        }
        // ---- housekeeping ----
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let now = Instant::now();
        now_ms = crate::net::wall_clock_ms();
        // Only a message received now proves the broker is back (not any earlier one).
        if !empty_poll {
            status.broker_up.store(true, Ordering::Relaxed);
            if let Some((_, last)) = first_last.as_mut() {
                *last = now;
            }
        }
        status.messages_in.store(messages, Ordering::Relaxed);
        if c.assigned {
            c.assigned = false;
            start_pipeline(&mut c, &consumer, &stream_of_topic);
            generation += 1;
            caught_up.iter_mut().for_each(|x| *x = false);
        }
        // Backpressure: never block inside the poll loop.
        if let Some(p) = c.pipeline.as_ref() {
            let (backlog, depth) = p.backlog();
            let unacked = c.seq.saturating_sub(c.progress.acked());
            // A slow engine just makes `push` wait (briefly: workers drain their queues);
            // pausing is for sinks that stop acknowledging (a broker outage), since a
            // pause makes librdkafka drop what it has prefetched.
            let overloaded = unacked > MAX_UNACKED_MARKS;
            let relieved = backlog * 2 <= depth && unacked <= MAX_UNACKED_MARKS / 2;
            let want = if paused { !relieved } else { overloaded };
            if want != paused
                && let Ok(a) = consumer.assignment()
                && (if want { consumer.pause(&a) } else { consumer.resume(&a) }).is_ok()
            {
                paused = want;
                status.paused.store(want, Ordering::Relaxed);
                tracing::debug!(paused, backlog, unacked, "backpressure");
            }
        }
        if let Some(p) = c.pipeline.as_mut() {
            p.flush_lingering(now).map_err(engine_err)?;
        }
        if c.pipeline.is_some() && (since_mark >= MARK_MESSAGES || now.duration_since(last_mark) >= MARK_EVERY) {
            c.mark()?;
            since_mark = 0;
            last_mark = now;
        }
        if now.duration_since(last_commit) >= kafka.commit_interval {
            c.commit(&consumer, CommitMode::Async);
            last_commit = now;
            let ready = status.broker_up.load(Ordering::Relaxed) && c.pipeline.is_some();
            status.ready.store(ready, Ordering::Relaxed);
        }
        // Idle streams: advance their watermark only when caught up with a reachable broker.
        if c.pipeline.is_some() && now.duration_since(last_idle_check) >= Duration::from_millis(250) {
            last_idle_check = now;
            // With no traffic, only asking the broker shows that it is back.
            if !status.broker_up.load(Ordering::Relaxed)
                && consumer.fetch_metadata(None, Timeout::After(Duration::from_millis(200))).is_ok()
            {
                tracing::info!("Kafka broker reachable again");
                status.broker_up.store(true, Ordering::Relaxed);
            }
            for s in 0..stream_messages.len() {
                if stream_messages[s] != seen_at_check[s] {
                    seen_at_check[s] = stream_messages[s];
                    silent_since[s] = None;
                    caught_up[s] = false;
                } else {
                    silent_since[s].get_or_insert(now);
                }
            }
            let assignment: Vec<PartitionId> = consumer.assignment().map_or_else(
                |_| Vec::new(),
                |a| {
                    a.elements()
                        .iter()
                        .map(|e| PartitionId { topic: Arc::from(e.topic()), partition: e.partition() })
                        .collect()
                },
            );
            ends.want(assignment.clone());
            if status.broker_up.load(Ordering::Relaxed) && !paused {
                for s in 0..caught_up.len() {
                    let Some(since) = silent_since[s] else { continue };
                    if !caught_up[s] && now.duration_since(since) >= Duration::from_millis(200) {
                        caught_up[s] = stream_caught_up(&ends, &assignment, &c.positions, &stream_of_topic, s, since);
                    }
                }
            } else {
                caught_up.iter_mut().for_each(|x| *x = false);
            }
            if kafka.until_caught_up
                && caught_up.iter().enumerate().all(|(s, &up)| up || !kafka.topics.values().any(|&t| t == s))
            {
                tracing::info!(messages, "every assigned partition read to its end: finishing");
                let pipeline = c.pipeline.take();
                finish_bounded(&mut c, pipeline, &consumer)?;
                drop(c);
                return Ok(SourceReport { pipelines: std::mem::take(&mut lock(&core).reports), messages, first_last });
            }
            let ups = caught_up.clone();
            if let Some(p) = c.pipeline.as_mut() {
                // A stream read to its end has replayed all there is of its acknowledged input.
                for s in (0..ups.len()).filter(|&s| ups[s]) {
                    p.end_replay(s).map_err(engine_err)?;
                }
                let up = status.broker_up.load(Ordering::Relaxed) && !paused;
                p.on_idle_where(now, up, |s| ups[s]).map_err(engine_err)?;
            }
        }
    }
    tracing::info!("stopping the Kafka source: draining");
    lock(&core).drain(&consumer)?;
    consumer.unsubscribe();
    let reports = std::mem::take(&mut lock(&core).reports);
    Ok(SourceReport { pipelines: reports, messages, first_last })
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

/// End of a bounded run: like the end of a file, windows close at the last event time.
fn finish_bounded<C: ConsumerContext>(
    core: &mut Core,
    pipeline: Option<Pipeline>,
    consumer: &BaseConsumer<C>,
) -> Result<()> {
    let Some(p) = pipeline else { return Ok(()) };
    core.seq += 1;
    let seq = core.seq;
    let report = p.finish_with_barrier(Some(seq)).map_err(engine_err)?;
    let mut watermarks: Vec<Millis> = report.streams.iter().map(|s| s.watermark).collect();
    // As in `Core::mark`: the case stage was given only the frontier (the minimum over the
    // streams) with the last barrier, so a replay must re-send what lies beyond it.
    if let Some(frontier) = watermarks.iter().copied().filter(|&w| w != WATERMARK_START).min() {
        cap_at_frontier(&mut watermarks, frontier);
    }
    core.tracker.marks.push_back(Mark { seq, next: core.positions.clone(), watermarks });
    core.wait_acked(seq);
    core.commit(consumer, CommitMode::Sync);
    core.status.replay_suppressed.fetch_add(report.replay_suppressed, Ordering::Relaxed);
    core.reports.push(report);
    Ok(())
}

/// Whether every assigned partition of `stream`'s topics has been read to its end.
/// Whether every assigned partition of `stream` has been read to its end, by the end
/// probe's answers to queries sent after `since` (when the stream fell silent).
fn stream_caught_up(
    ends: &EndProbe,
    assignment: &[PartitionId],
    positions: &[(PartitionId, i64)],
    stream_of_topic: &HashMap<Arc<str>, usize>,
    stream: usize,
    since: Instant,
) -> bool {
    let mut any = false;
    for pid in assignment.iter().filter(|p| stream_of_topic.get(&p.topic) == Some(&stream)) {
        any = true;
        let Some(end) = ends.end(pid, since) else { return false };
        let at_end = match positions.iter().find(|(p, _)| p == pid).map(|p| p.1) {
            Some(next) => next >= end.high,
            // Nothing read yet: caught up only if the partition is empty from our start.
            None => end.committed.unwrap_or(end.low) >= end.high,
        };
        if !at_end {
            return false;
        }
    }
    any
}

/// A new assignment: a fresh pipeline that suppresses what was delivered before.
fn start_pipeline<C: ConsumerContext>(
    core: &mut Core,
    consumer: &BaseConsumer<C>,
    stream_of_topic: &HashMap<Arc<str>, usize>,
) {
    let n = core.plan.streams.len();
    let mut replay_until = vec![Millis::MAX; n];
    let mut seen = vec![false; n];
    let assignment = consumer.assignment().unwrap_or_default();
    let committed =
        consumer.committed_offsets(assignment.clone(), Timeout::After(Duration::from_secs(10))).unwrap_or(assignment);
    let saved = core.state_file.as_deref().map(load_state).unwrap_or_default();
    let mut elements = committed.elements();
    elements.sort_by(|a, b| (a.topic(), a.partition()).cmp(&(b.topic(), b.partition())));
    let mut per_stream = vec![0usize; n];
    core.splits.clear();
    for e in &elements {
        let Some(&s) = stream_of_topic.get(e.topic()) else { continue };
        core.splits.push((PartitionId { topic: Arc::from(e.topic()), partition: e.partition() }, per_stream[s]));
        per_stream[s] += 1;
    }
    // (stream, split, acknowledged offset) of partitions that replay acknowledged input.
    let mut replays = Vec::new();
    for e in &elements {
        let Some(&s) = stream_of_topic.get(e.topic()) else { continue };
        seen[s] = true;
        let pid = PartitionId { topic: Arc::from(e.topic()), partition: e.partition() };
        let split = core.splits.iter().find(|(p, _)| *p == pid).map_or(0, |(_, split)| *split);
        // What was acknowledged with the committed offset: from the commit's metadata,
        // else from the local state file if it recorded this very offset.
        let recorded = match e.offset() {
            Offset::Offset(o) => Committed::parse(o, e.metadata())
                .or_else(|| saved.get(&(e.topic().to_string(), e.partition())).filter(|c| c.offset == o).copied()),
            _ => None,
        };
        let Some(recorded) = recorded else {
            replay_until[s] = WATERMARK_START;
            core.tracker.committed.remove(&pid);
            continue;
        };
        replay_until[s] = replay_until[s].min(recorded.watermark);
        if recorded.acked > recorded.offset {
            replays.push((s, split, recorded.acked));
        }
        core.tracker.committed.insert(pid, recorded);
    }
    for (s, until) in replay_until.iter_mut().enumerate() {
        if !seen[s] {
            *until = WATERMARK_START;
        }
    }
    if replay_until.iter().any(|&w| w != WATERMARK_START) {
        tracing::info!(
            ?replay_until,
            "restoring state by replay: alerts raised before the committed watermarks are not sent again"
        );
    }
    let options = PipelineOptions { replay_until: replay_until.clone(), ..core.options.clone() };
    let mut pipeline = Pipeline::start_with_output(core.plan.clone(), options, core.out.clone());
    for (s, &count) in per_stream.iter().enumerate() {
        pipeline.declare_splits(s, count);
    }
    for (id, split) in &core.splits {
        if let Some(&s) = stream_of_topic.get(&*id.topic) {
            pipeline.label_split(s, *split, id.topic.clone(), id.partition);
        }
    }
    // A stream without a recorded watermark suppresses nothing: it has nothing to gate.
    for (s, split, acked) in replays.into_iter().filter(|&(s, ..)| replay_until[s] != WATERMARK_START) {
        pipeline.replay_split(s, split, acked);
    }
    core.pipeline = Some(pipeline);
    core.positions.clear();
    core.tracker.marks.clear();
    core.status.ready.store(true, Ordering::Relaxed);
}

fn sanitize(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' { c } else { '_' }).collect()
}

/// Records committed offsets with what was acknowledged (see [`KafkaOptions::state_dir`]);
/// merges with what the file holds, replaces it atomically.
fn save_state(path: &std::path::Path, point: &[(PartitionId, Committed)]) {
    let mut state = load_state(path);
    for (pid, c) in point {
        state.insert((pid.topic.to_string(), pid.partition), *c);
    }
    let json: Vec<serde_json::Value> = state
        .iter()
        .map(|((t, p), c)| {
            serde_json::json!({"topic": t, "partition": p, "offset": c.offset, "acked": c.acked, "watermark": c.watermark})
        })
        .collect();
    let write = || -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&json)?)?;
        std::fs::rename(&tmp, path)
    };
    if let Err(e) = write() {
        tracing::warn!(path = %path.display(), error = %e, "cannot record committed positions");
    }
}

fn load_state(path: &std::path::Path) -> BTreeMap<(String, i32), Committed> {
    let Ok(text) = std::fs::read(path) else { return BTreeMap::new() };
    let Ok(items) = serde_json::from_slice::<Vec<serde_json::Value>>(&text) else { return BTreeMap::new() };
    items
        .iter()
        .filter_map(|v| {
            let key = (v["topic"].as_str()?.to_string(), i32::try_from(v["partition"].as_i64()?).ok()?);
            let offset = v["offset"].as_i64()?;
            // Files of older versions have no `acked`: nothing counts as acknowledged.
            let acked = v["acked"].as_i64().unwrap_or(offset);
            Some((key, Committed { offset, acked, watermark: v["watermark"].as_i64()? }))
        })
        .collect()
}

/// Reads a case-feedback topic from its beginning on a background thread (every partition,
/// no consumer group): feedback is idempotent by id, so re-reading it after a restart
/// applies nothing twice, and no offsets need committing.
pub struct FeedbackReader {
    rx: crossbeam_channel::Receiver<(Vec<u8>, Origin)>,
    stop: Arc<AtomicBool>,
    last_message: Arc<Mutex<Instant>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for FeedbackReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedbackReader").finish_non_exhaustive()
    }
}

impl FeedbackReader {
    /// Starts reading `topic` with the connection settings of `opts`.
    pub fn start(opts: &KafkaOptions, topic: &str) -> Result<FeedbackReader> {
        let consumer: BaseConsumer = client_config(
            opts,
            Role::Consumer,
            &[("group.id", "gridwatch-feedback-reader"), ("enable.auto.commit", "false"), ("fetch.wait.max.ms", "50")],
        )
        .create()
        .map_err(|source| ConnectorError::KafkaClient { what: "creating the feedback reader", source })?;
        let (tx, rx) = crossbeam_channel::bounded(10_000);
        let stop = Arc::new(AtomicBool::new(false));
        let last_message = Arc::new(Mutex::new(Instant::now()));
        let (stop2, last2, topic) = (stop.clone(), last_message.clone(), topic.to_string());
        let handle = std::thread::Builder::new()
            .name("gridwatch-feedback".into())
            .spawn(move || read_feedback(&consumer, &topic, &tx, &stop2, &last2))
            .map_err(|_| ConnectorError::Internal("cannot start the feedback reader thread"))?;
        Ok(FeedbackReader { rx, stop, last_message, handle: Some(handle) })
    }

    /// Feedback payloads read so far (with their positions), without waiting.
    pub fn try_iter(&self) -> impl Iterator<Item = (Vec<u8>, Origin)> + '_ {
        self.rx.try_iter()
    }

    /// Waits (at most `limit`) until the topic has been quiet for `quiet`: the end of a
    /// bounded run takes the feedback already in the topic into account.
    pub fn wait_quiet(&self, quiet: Duration, limit: Duration) {
        let started = Instant::now();
        while started.elapsed() < limit {
            if lock(&self.last_message).elapsed() >= quiet && self.rx.is_empty() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl gridwatch_runtime::FeedbackInput for FeedbackReader {
    fn poll(&mut self) -> Vec<std::result::Result<gridwatch_cases::Feedback, Box<DeadLetter>>> {
        self.try_iter()
            .map(|(payload, origin)| {
                gridwatch_cases::Feedback::parse(&payload).map_err(|why| {
                    gridwatch_runtime::stage::feedback_dead_letter(
                        why,
                        String::from_utf8_lossy(&payload).into_owned(),
                        Some(origin),
                    )
                })
            })
            .collect()
    }

    /// Waits for the topic to be quiet for 1 s (10 s at most): the end of a bounded run.
    fn settle(&mut self) {
        self.wait_quiet(Duration::from_secs(1), Duration::from_secs(10));
    }
}

impl Drop for FeedbackReader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        while self.rx.try_recv().is_ok() {}
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn read_feedback(
    consumer: &BaseConsumer,
    topic: &str,
    tx: &crossbeam_channel::Sender<(Vec<u8>, Origin)>,
    stop: &AtomicBool,
    last_message: &Mutex<Instant>,
) {
    let mut assigned = 0usize;
    let topic_arc: Arc<str> = Arc::from(topic);
    while !stop.load(Ordering::Relaxed) {
        if assigned == 0 {
            // The topic may not exist yet: look again until it does.
            match consumer.fetch_metadata(Some(topic), Timeout::After(Duration::from_secs(1))) {
                Ok(md) => {
                    let mut tpl = TopicPartitionList::new();
                    for t in md.topics().iter().filter(|t| t.name() == topic && t.error().is_none()) {
                        for p in t.partitions() {
                            let _ = tpl.add_partition_offset(topic, p.id(), Offset::Beginning);
                        }
                    }
                    assigned = tpl.count();
                    if assigned > 0 {
                        if let Err(e) = consumer.assign(&tpl) {
                            tracing::warn!(topic, error = %e, "feedback reader: cannot assign partitions");
                            assigned = 0;
                        } else {
                            tracing::info!(topic, partitions = assigned, "reading case feedback");
                        }
                    }
                }
                Err(e) => tracing::debug!(topic, error = %e, "feedback topic not available yet"),
            }
            if assigned == 0 {
                std::thread::sleep(Duration::from_millis(500));
                continue;
            }
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                *lock(last_message) = Instant::now();
                let origin = Origin { topic: topic_arc.clone(), partition: m.partition(), offset: m.offset() };
                let payload = m.payload().unwrap_or_default().to_vec();
                // Blocks while the case stage is behind: feedback is never dropped.
                while let Err(crossbeam_channel::SendTimeoutError::Timeout(v)) =
                    tx.send_timeout((payload.clone(), origin.clone()), Duration::from_millis(100))
                {
                    drop(v);
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                }
            }
            Some(Err(e)) => tracing::warn!(topic, error = %e, "feedback reader"),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(topic: &str) -> PartitionId {
        PartitionId { topic: Arc::from(topic), partition: 0 }
    }

    fn tracker(span: Millis) -> CommitTracker {
        CommitTracker {
            marks: VecDeque::new(),
            replay_span: vec![span],
            stream_of_topic: [(Arc::from("t"), 0)].into_iter().collect(),
            committed: BTreeMap::new(),
        }
    }

    fn mark(seq: u64, next: i64, wm: Millis) -> Mark {
        Mark { seq, next: vec![(pid("t"), next)], watermarks: vec![wm] }
    }

    fn committed(offset: i64, acked: i64, watermark: Millis) -> Committed {
        Committed { offset, acked, watermark }
    }

    #[test]
    fn commits_trail_the_acknowledged_watermark_by_the_replay_span() {
        let mut t = tracker(100);
        for (seq, next, wm) in [(1, 10, 0), (2, 20, 50), (3, 30, 120), (4, 40, 160), (5, 50, 400)] {
            t.marks.push_back(mark(seq, next, wm));
        }
        // Nothing acknowledged: nothing to commit.
        assert!(t.commit_point(0).is_empty());
        // Acknowledged up to seq 4 (wm 160, next offset 40): marks with wm < 60 are old
        // enough; the newest is seq 2.
        assert_eq!(t.commit_point(4), vec![(pid("t"), committed(20, 40, 160))]);
        t.committed.insert(pid("t"), committed(20, 40, 160));
        assert!(t.commit_point(4).is_empty(), "no commit that does not move forward");
        // Unacknowledged marks never count, however old their watermark would make them.
        assert_eq!(t.commit_point(5), vec![(pid("t"), committed(40, 50, 400))]);
    }

    #[test]
    fn a_commit_is_repeated_when_only_the_acknowledged_position_moves() {
        // A long state horizon keeps the replay start in place while input is acknowledged:
        // the acknowledged offset must still be recorded, or a restart would send again
        // everything since the last time the replay start moved.
        let mut t = tracker(1000);
        for (seq, next, wm) in [(1, 10, 0), (2, 20, 1500), (3, 30, 1600)] {
            t.marks.push_back(mark(seq, next, wm));
        }
        assert_eq!(t.commit_point(2), vec![(pid("t"), committed(10, 20, 1500))]);
        t.committed.insert(pid("t"), committed(10, 20, 1500));
        assert_eq!(t.commit_point(3), vec![(pid("t"), committed(10, 30, 1600))]);
    }

    #[test]
    fn commit_metadata_round_trips_and_older_metadata_acknowledges_nothing() {
        let c = committed(20, 40, 160);
        assert_eq!(c.metadata(), "gridwatch:wm=160;acked=40");
        assert_eq!(Committed::parse(20, &c.metadata()), Some(c));
        assert_eq!(Committed::parse(20, "gridwatch:wm=160"), Some(committed(20, 20, 160)));
        assert_eq!(Committed::parse(20, "someone else's"), None);
        assert_eq!(Committed::parse(20, "gridwatch:acked=40"), None, "no watermark, no replay bound");
        assert_eq!(Committed::parse(20, "gridwatch:wm=x;acked=40"), None);
    }

    #[test]
    fn trimming_keeps_every_mark_that_can_still_be_chosen() {
        let mut t = tracker(100);
        for (seq, next, wm) in [(1, 10, 0), (2, 20, 50), (3, 30, 120), (4, 40, 160), (5, 50, 400)] {
            t.marks.push_back(mark(seq, next, wm));
        }
        t.trim(4);
        let seqs: Vec<u64> = t.marks.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, [2, 3, 4, 5], "mark 1 can no longer be the newest old-enough mark");
        assert_eq!(t.commit_point(4), vec![(pid("t"), committed(20, 40, 160))], "trimming does not change the choice");
    }

    #[test]
    fn streams_without_a_watermark_are_not_committed() {
        let mut t = tracker(0);
        t.marks.push_back(mark(1, 10, WATERMARK_START));
        t.marks.push_back(mark(2, 20, WATERMARK_START));
        assert!(t.commit_point(2).is_empty());
    }

    #[test]
    fn the_state_file_round_trips_and_merges() {
        let dir = std::env::temp_dir().join(format!("gridwatch-state-test-{}", std::process::id()));
        let path = dir.join("g.offsets.json");
        save_state(&path, &[(pid("a"), committed(5, 9, 100))]);
        save_state(&path, &[(pid("b"), committed(7, 8, 200)), (pid("a"), committed(6, 10, 150))]);
        let state = load_state(&path);
        assert_eq!(state[&("a".to_string(), 0)], committed(6, 10, 150));
        assert_eq!(state[&("b".to_string(), 0)], committed(7, 8, 200));
        // A file of an older version: no acknowledged offsets.
        std::fs::write(&path, r#"[{"topic":"a","partition":0,"offset":6,"watermark":150}]"#).unwrap();
        assert_eq!(load_state(&path)[&("a".to_string(), 0)], committed(6, 6, 150));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(load_state(&path).is_empty(), "a missing file is an empty state");
    }

    #[test]
    fn producer_configs_leave_out_consumer_properties() {
        let opts = KafkaOptions {
            brokers: "b:9092".into(),
            properties: [
                ("session.timeout.ms", "6000"),
                ("linger.ms", "7"),
                ("fetch.wait.max.ms", "10"),
                ("max.partition.fetch.bytes", "16777216"),
                ("queued.min.messages", "1000000"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            ..Default::default()
        };
        let p = client_config(&opts, Role::Producer, &[("linger.ms", "5"), ("acks", "all")]);
        assert_eq!(p.get("linger.ms"), Some("7"), "the user's setting wins");
        assert_eq!(p.get("acks"), Some("all"));
        assert_eq!(p.get("session.timeout.ms"), None);
        assert_eq!(p.get("fetch.wait.max.ms"), None);
        assert_eq!(p.get("max.partition.fetch.bytes"), None);
        assert_eq!(p.get("queued.min.messages"), None);
        let c = client_config(&opts, Role::Consumer, &[]);
        assert_eq!(c.get("session.timeout.ms"), Some("6000"));
        assert_eq!(c.get("bootstrap.servers"), Some("b:9092"));
    }
}
