//! The consumer-group source: its loop, the rebalance callback, restore by replay.

use super::commit::*;
#[allow(clippy::wildcard_imports)]
use super::*;

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
                // A stream read to its end follows the others' event time, so a sparse or
                // empty topic does not hold back the case stage during a catch-up.
                p.advance_caught_up(|s| ups[s]).map_err(engine_err)?;
            }
        }
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
