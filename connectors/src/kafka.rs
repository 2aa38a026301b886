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
//! watermark; while replaying, alerts raised before the watermark gets back there are
//! recomputed but not sent again
//! ([`PipelineOptions::replay_until`]), because they were delivered before. Alerts after it
//! may arrive twice; their ids are deterministic, so sinks upsert and consumers dedup.
//!
//! ## Rebalance
//!
//! Revoked partitions are drained inside the rebalance callback: a final barrier, wait for
//! its acknowledgement, a synchronous commit. The engine then drops all rule state and, on
//! the new assignment, starts a fresh pipeline that replays from the committed offsets.
//!
//! ## Backpressure and broker outages
//!
//! The consumer must keep polling (or the group evicts it), so it never blocks on a full
//! engine: when a worker queue is half full or too many marks wait for acknowledgement it
//! pauses its partitions and resumes when the engine has caught up. A broker outage shows
//! as transport errors: the source reports not-ready, holds idle-stream watermarks (silence
//! during an outage is not evidence of absence), and librdkafka reconnects with backoff.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use gridwatch_engine::pipeline::PipelineReport;
use gridwatch_engine::time::{Millis, WATERMARK_START};
use gridwatch_engine::{Alert, DeadLetter, Origin, Output, Pipeline, PipelineOptions, Plan};
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::util::Timeout;

use crate::error::{ConnectorError, Result};

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
    /// Highest barrier acknowledged by the sinks.
    pub acked_seq: AtomicU64,
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
    const PREFIXES: [&str; 8] =
        ["group.", "session.", "heartbeat.", "max.poll.", "fetch.", "auto.", "enable.auto.", "partition.assignment"];
    PREFIXES.iter().any(|p| key.starts_with(p)) || key == "isolation.level" || key == "enable.partition.eof"
}

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
    error: String,
}

struct ProducerCtx {
    status: Arc<KafkaStatus>,
    failed: Mutex<Vec<Failed>>,
}

impl ClientContext for ProducerCtx {
    fn error(&self, error: KafkaError, reason: &str) {
        note_client_error(&self.status, "producer", &error, reason);
    }
}

impl ProducerContext for ProducerCtx {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.status.broker_up.store(true, Ordering::Relaxed);
            }
            Err((e, msg)) => {
                self.status.delivery_retries.fetch_add(1, Ordering::Relaxed);
                let failed = Failed {
                    topic: msg.topic().to_string(),
                    key: msg.key().map(<[u8]>::to_vec),
                    payload: msg.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                    headers: msg.headers().map(rdkafka::message::BorrowedHeaders::detach),
                    error: e.to_string(),
                };
                lock(&self.failed).push(failed);
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
pub struct KafkaSink {
    producer: ThreadedProducer<ProducerCtx>,
    alerts_topic: Option<String>,
    dead_letter_topic: Option<String>,
    status: Arc<KafkaStatus>,
    pending_alerts: u64,
    pending_dead: u64,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink").field("alerts_topic", &self.alerts_topic).finish()
    }
}

impl KafkaSink {
    /// An idempotent producer (`enable.idempotence`, no delivery timeout: a message waits
    /// out a broker outage instead of failing).
    pub fn new(opts: &KafkaOptions, status: Arc<KafkaStatus>) -> Result<KafkaSink> {
        let ctx = ProducerCtx { status: status.clone(), failed: Mutex::new(Vec::new()) };
        let producer = client_config(
            opts,
            Role::Producer,
            &[
                ("enable.idempotence", "true"),
                ("message.timeout.ms", "0"),
                ("linger.ms", "5"),
                ("compression.type", "lz4"),
                ("reconnect.backoff.max.ms", "2000"),
            ],
        )
        .create_with_context(ctx)
        .map_err(|e| ConnectorError::Kafka(format!("creating the producer: {e}")))?;
        Ok(KafkaSink {
            producer,
            alerts_topic: opts.alerts_topic.clone(),
            dead_letter_topic: opts.dead_letter_topic.clone(),
            status,
            pending_alerts: 0,
            pending_dead: 0,
        })
    }

    /// Queues an alert (key = alert id, value = JSON).
    pub fn send_alert(&mut self, alert: &Alert) -> Result<()> {
        let Some(topic) = self.alerts_topic.clone() else { return Ok(()) };
        let payload = serde_json::to_vec(alert).map_err(|e| ConnectorError::Kafka(e.to_string()))?;
        self.enqueue(&topic, Some(alert.alert_id.as_bytes()), &payload, None)?;
        self.pending_alerts += 1;
        Ok(())
    }

    /// Queues a dead letter: value = raw payload, headers = reason, stream and, for Kafka
    /// input, the source topic, partition and offset.
    pub fn send_dead_letter(&mut self, dl: &DeadLetter) -> Result<()> {
        let Some(topic) = self.dead_letter_topic.clone() else { return Ok(()) };
        let mut headers = OwnedHeaders::new()
            .insert(Header { key: "gridwatch.reason", value: Some(&dl.reason) })
            .insert(Header { key: "gridwatch.stream", value: Some(&dl.stream) });
        if let Some(o) = &dl.origin {
            headers = headers
                .insert(Header { key: "gridwatch.source.topic", value: Some(&*o.topic) })
                .insert(Header { key: "gridwatch.source.partition", value: Some(&o.partition.to_string()) })
                .insert(Header { key: "gridwatch.source.offset", value: Some(&o.offset.to_string()) });
        }
        self.enqueue(&topic, None, dl.payload.as_bytes(), Some(headers))?;
        self.pending_dead += 1;
        Ok(())
    }

    fn enqueue(&self, topic: &str, key: Option<&[u8]>, payload: &[u8], headers: Option<OwnedHeaders>) -> Result<()> {
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).payload(payload);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(h) = headers {
            record = record.headers(h);
        }
        let mut record = record;
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                // The local queue is full: wait for deliveries to make room.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    self.producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => return Err(ConnectorError::Kafka(format!("producing to `{topic}`: {e}"))),
            }
        }
    }

    /// Blocks until everything queued so far is acknowledged by Kafka, sending failed
    /// records again (with backoff) until they are.
    pub fn flush(&mut self) -> Result<()> {
        let mut backoff = Duration::from_millis(100);
        loop {
            while self.producer.flush(Duration::from_secs(5)).is_err() {
                tracing::warn!(in_flight = self.producer.in_flight_count(), "Kafka sink: waiting for the broker");
            }
            let failed = std::mem::take(&mut *lock(&self.producer.context().failed));
            if failed.is_empty() {
                break;
            }
            tracing::warn!(
                records = failed.len(),
                error = %failed[0].error,
                retry_in_ms = backoff.as_millis() as u64,
                "Kafka sink: delivery failed; sending again"
            );
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(10));
            for f in failed {
                self.enqueue(&f.topic, f.key.as_deref(), &f.payload, f.headers)?;
            }
        }
        self.status.alerts_out.fetch_add(std::mem::take(&mut self.pending_alerts), Ordering::Relaxed);
        self.status.dead_letters_out.fetch_add(std::mem::take(&mut self.pending_dead), Ordering::Relaxed);
        Ok(())
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
    committed: BTreeMap<PartitionId, i64>,
}

impl CommitTracker {
    /// The offsets (with metadata) to commit now, given the highest acknowledged barrier;
    /// forgets marks that can no longer be chosen.
    fn commit_point(&mut self, acked: u64) -> Vec<(PartitionId, i64, Millis)> {
        let Some(latest) = self.marks.iter().rev().find(|m| m.seq <= acked).cloned() else { return Vec::new() };
        let mut out = Vec::new();
        for (pid, _) in &latest.next {
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
            if self.committed.get(pid).is_none_or(|&c| c < offset) {
                out.push((pid.clone(), offset, wm));
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
        self.seq += 1;
        let watermarks = p.barrier(self.seq).map_err(engine_err)?;
        self.tracker.marks.push_back(Mark { seq: self.seq, next: self.positions.clone(), watermarks });
        Ok(self.seq)
    }

    fn wait_acked(&self, seq: u64) {
        let started = Instant::now();
        let mut warned = Instant::now();
        while self.status.acked_seq.load(Ordering::Acquire) < seq {
            std::thread::sleep(Duration::from_millis(1));
            if warned.elapsed() > Duration::from_secs(5) {
                tracing::warn!(waited_s = started.elapsed().as_secs(), "waiting for the sinks to acknowledge");
                warned = Instant::now();
            }
        }
    }

    fn commit<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>, mode: CommitMode) {
        let acked = self.status.acked_seq.load(Ordering::Acquire);
        let point = self.tracker.commit_point(acked);
        self.tracker.trim(acked);
        if point.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for (pid, offset, wm) in &point {
            let mut e = tpl.add_partition(&pid.topic, pid.partition);
            if e.set_offset(Offset::Offset(*offset)).is_ok() {
                e.set_metadata(format!("gridwatch:wm={wm}"));
            }
        }
        match consumer.commit(&tpl, mode) {
            Ok(()) => {
                tracing::debug!(?point, "offsets committed");
                if let Some(path) = &self.state_file {
                    save_state(path, &point);
                }
                for (pid, offset, _) in point {
                    self.tracker.committed.insert(pid, offset);
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

fn engine_err(e: gridwatch_engine::EngineError) -> ConnectorError {
    ConnectorError::Kafka(format!("engine: {e}"))
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
        seq: status.acked_seq.load(Ordering::Acquire),
        positions: Vec::new(),
        splits: Vec::new(),
        state_file: kafka.state_dir.as_ref().map(|d| d.join(format!("{}.offsets.json", sanitize(&kafka.group_id)))),
        reports: Vec::new(),
        assigned: false,
        last_commit_error: None,
    }));
    let ctx = ConsumerCtx { core: core.clone(), status: status.clone() };
    let consumer: BaseConsumer<ConsumerCtx> = client_config(
        kafka,
        Role::Consumer,
        &[
            ("group.id", &kafka.group_id),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "earliest"),
            ("partition.assignment.strategy", "range,roundrobin"),
            ("reconnect.backoff.max.ms", "2000"),
        ],
    )
    .create_with_context(ctx)
    .map_err(|e| ConnectorError::Kafka(format!("creating the consumer: {e}")))?;
    if kafka.properties.get("partition.assignment.strategy").is_some_and(|s| s.contains("cooperative")) {
        return Err(ConnectorError::Kafka(
            "partition.assignment.strategy: the cooperative protocol is not supported (state is rebuilt per assignment); use range or roundrobin".into(),
        ));
    }
    let topics: Vec<&str> = kafka.topics.keys().map(String::as_str).collect();
    consumer.subscribe(&topics).map_err(|e| ConnectorError::Kafka(format!("subscribing to {topics:?}: {e}")))?;
    tracing::info!(brokers = %kafka.brokers, group = %kafka.group_id, topics = ?topics, "Kafka source started");

    let mut messages = 0u64;
    let mut first_last: Option<(Instant, Instant)> = None;
    let mut since_mark = 0u64;
    let mut last_mark = Instant::now();
    let mut last_commit = Instant::now();
    let mut last_idle_check = Instant::now();
    let mut last_message = vec![Instant::now(); plan.streams.len()];
    let mut caught_up = vec![false; plan.streams.len()];
    let mut last_topic: (Arc<str>, usize) = (Arc::from(""), usize::MAX);
    let mut paused = false;
    const MARK_EVERY: Duration = Duration::from_millis(100);
    const MARK_MESSAGES: u64 = 100_000;
    const MAX_UNACKED_MARKS: u64 = 32;

    loop {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        {
            let mut c = lock(&core);
            if c.assigned {
                c.assigned = false;
                start_pipeline(&mut c, &consumer, &stream_of_topic);
                caught_up.iter_mut().for_each(|x| *x = false);
            }
            // Backpressure: never block inside the poll loop.
            if let Some(p) = c.pipeline.as_ref() {
                let (backlog, depth) = p.backlog();
                let unacked = c.seq.saturating_sub(c.status.acked_seq.load(Ordering::Acquire));
                let overloaded = backlog * 2 >= depth || unacked > MAX_UNACKED_MARKS;
                let relieved = backlog * 4 <= depth && unacked <= MAX_UNACKED_MARKS / 2;
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
        }
        let polled = consumer.poll(Duration::from_millis(if paused { 5 } else { 20 }));
        let mut c = lock(&core);
        match polled {
            Some(Ok(msg)) => {
                status.broker_up.store(true, Ordering::Relaxed);
                messages += 1;
                let now = Instant::now();
                first_last = Some(first_last.map_or((now, now), |(f, _)| (f, now)));
                since_mark += 1;
                if *last_topic.0 != *msg.topic() {
                    let t: Arc<str> = Arc::from(msg.topic());
                    let s = stream_of_topic.get(&t).copied().unwrap_or(usize::MAX);
                    last_topic = (t, s);
                }
                let (topic, stream) = (&last_topic.0, last_topic.1);
                let (partition, offset) = (msg.partition(), msg.offset());
                let origin = || Some(Origin { topic: topic.clone(), partition, offset });
                if let Some(p) = c.pipeline.as_mut() {
                    let pushed = match (stream, msg.payload()) {
                        (usize::MAX, payload) => {
                            let reason = format!("topic `{topic}` feeds no stream");
                            p.reject_from("", reason, payload.unwrap_or_default(), origin())
                        }
                        (s, None) => {
                            let name = plan.streams[s].name.clone();
                            p.reject_from(&name, "empty message (no value)".into(), &[], origin())
                        }
                        (s, Some(payload)) => {
                            last_message[s] = Instant::now();
                            caught_up[s] = false;
                            let split = c.splits.iter().find(|(p, _)| p.partition == partition && p.topic == *topic);
                            let split = split.map_or(0, |(_, i)| *i);
                            let p = c.pipeline.as_mut().expect("checked above");
                            p.push_split(s, split, payload, origin)
                        }
                    };
                    pushed.map_err(engine_err)?;
                    set_position(&mut c.positions, topic, partition, offset + 1);
                }
            }
            Some(Err(e)) => {
                note_client_error(&status, "consumer", &e, "poll");
            }
            None => {}
        }
        if c.pipeline.is_some() && (since_mark >= MARK_MESSAGES || last_mark.elapsed() >= MARK_EVERY) {
            c.mark()?;
            since_mark = 0;
            last_mark = Instant::now();
        }
        if last_commit.elapsed() >= kafka.commit_interval {
            c.commit(&consumer, CommitMode::Async);
            last_commit = Instant::now();
            let ready = status.broker_up.load(Ordering::Relaxed) && c.pipeline.is_some();
            status.ready.store(ready, Ordering::Relaxed);
        }
        // Idle streams: advance their watermark only when caught up with a reachable broker.
        if c.pipeline.is_some() && last_idle_check.elapsed() >= Duration::from_millis(250) {
            last_idle_check = Instant::now();
            if status.broker_up.load(Ordering::Relaxed) && !paused {
                for s in 0..caught_up.len() {
                    if !caught_up[s] && last_message[s].elapsed() >= Duration::from_millis(200) {
                        caught_up[s] = stream_caught_up(&consumer, &c.positions, &stream_of_topic, s);
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
                let up = status.broker_up.load(Ordering::Relaxed) && !paused;
                p.on_idle_where(Instant::now(), up, |s| ups[s]).map_err(engine_err)?;
            }
        }
        status.messages_in.store(messages, Ordering::Relaxed);
    }
    tracing::info!("stopping the Kafka source: draining");
    lock(&core).drain(&consumer)?;
    consumer.unsubscribe();
    let reports = std::mem::take(&mut lock(&core).reports);
    Ok(SourceReport { pipelines: reports, messages, first_last })
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
    let watermarks = report.streams.iter().map(|s| s.watermark).collect();
    core.tracker.marks.push_back(Mark { seq, next: core.positions.clone(), watermarks });
    core.wait_acked(seq);
    core.commit(consumer, CommitMode::Sync);
    core.status.replay_suppressed.fetch_add(report.replay_suppressed, Ordering::Relaxed);
    core.reports.push(report);
    Ok(())
}

fn set_position(positions: &mut Vec<(PartitionId, i64)>, topic: &Arc<str>, partition: i32, next: i64) {
    // Few partitions per instance: a linear scan beats hashing the topic name.
    if let Some(p) = positions.iter_mut().find(|(p, _)| p.partition == partition && *p.topic == **topic) {
        p.1 = next;
    } else {
        positions.push((PartitionId { topic: topic.clone(), partition }, next));
    }
}

/// Whether every assigned partition of `stream`'s topics has been read to its end.
fn stream_caught_up<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    positions: &[(PartitionId, i64)],
    stream_of_topic: &HashMap<Arc<str>, usize>,
    stream: usize,
) -> bool {
    let Ok(assignment) = consumer.assignment() else { return false };
    let mut any = false;
    for e in assignment.elements() {
        if stream_of_topic.get(e.topic()) != Some(&stream) {
            continue;
        }
        any = true;
        let Ok((_, high)) =
            consumer.fetch_watermarks(e.topic(), e.partition(), Timeout::After(Duration::from_millis(500)))
        else {
            return false;
        };
        let pos = positions.iter().find(|(p, _)| p.partition == e.partition() && *p.topic == *e.topic()).map(|p| p.1);
        let at_end = match pos {
            Some(next) => next >= high,
            // Nothing read yet: caught up only if the partition is empty from our start.
            None => {
                let committed = consumer
                    .committed_offsets(
                        partition_list(e.topic(), e.partition()),
                        Timeout::After(Duration::from_millis(500)),
                    )
                    .ok()
                    .and_then(|l| l.elements().first().map(|x| x.offset()));
                let (low, _) = consumer
                    .fetch_watermarks(e.topic(), e.partition(), Timeout::After(Duration::from_millis(500)))
                    .unwrap_or((0, high));
                match committed {
                    Some(Offset::Offset(c)) => c >= high,
                    _ => low >= high,
                }
            }
        };
        if !at_end {
            return false;
        }
    }
    any
}

fn partition_list(topic: &str, partition: i32) -> TopicPartitionList {
    let mut l = TopicPartitionList::new();
    l.add_partition(topic, partition);
    l
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
    for e in elements {
        let Some(&s) = stream_of_topic.get(e.topic()) else { continue };
        seen[s] = true;
        // The watermark acknowledged with the committed offset: from the commit's metadata,
        // else from the local state file if it recorded this very offset.
        let saved_wm = match e.offset() {
            Offset::Offset(o) => {
                saved.get(&(e.topic().to_string(), e.partition())).filter(|(so, _)| *so == o).map(|(_, wm)| *wm)
            }
            _ => None,
        };
        let wm = e.metadata().strip_prefix("gridwatch:wm=").and_then(|v| v.parse::<Millis>().ok()).or(saved_wm);
        let wm = match (e.offset(), wm) {
            (Offset::Offset(_), Some(wm)) => wm,
            _ => WATERMARK_START,
        };
        replay_until[s] = replay_until[s].min(wm);
        core.tracker.committed.insert(
            PartitionId { topic: Arc::from(e.topic()), partition: e.partition() },
            match e.offset() {
                Offset::Offset(o) => o,
                _ => -1,
            },
        );
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
    let options = PipelineOptions { replay_until, ..core.options.clone() };
    let mut pipeline = Pipeline::start_with_output(core.plan.clone(), options, core.out.clone());
    for (s, &count) in per_stream.iter().enumerate() {
        pipeline.declare_splits(s, count);
    }
    core.pipeline = Some(pipeline);
    core.positions.clear();
    core.tracker.marks.clear();
    core.status.ready.store(true, Ordering::Relaxed);
}

fn sanitize(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' { c } else { '_' }).collect()
}

/// Records committed offsets with their acknowledged watermarks (see
/// [`KafkaOptions::state_dir`]); merges with what the file holds, replaces it atomically.
fn save_state(path: &std::path::Path, point: &[(PartitionId, i64, Millis)]) {
    let mut state = load_state(path);
    for (pid, offset, wm) in point {
        state.insert((pid.topic.to_string(), pid.partition), (*offset, *wm));
    }
    let json: Vec<serde_json::Value> = state
        .iter()
        .map(|((t, p), (o, w))| serde_json::json!({"topic": t, "partition": p, "offset": o, "watermark": w}))
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

fn load_state(path: &std::path::Path) -> BTreeMap<(String, i32), (i64, Millis)> {
    let Ok(text) = std::fs::read(path) else { return BTreeMap::new() };
    let Ok(items) = serde_json::from_slice::<Vec<serde_json::Value>>(&text) else { return BTreeMap::new() };
    items
        .iter()
        .filter_map(|v| {
            let key = (v["topic"].as_str()?.to_string(), i32::try_from(v["partition"].as_i64()?).ok()?);
            Some((key, (v["offset"].as_i64()?, v["watermark"].as_i64()?)))
        })
        .collect()
}
