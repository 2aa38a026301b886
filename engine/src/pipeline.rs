//! The runtime: parallel decoding, sequencing on the caller's thread, shared-nothing
//! partition workers behind it.
//!
//! ```text
//!  push(stream, payload) ──► raw chunk of the stream (payload bytes copied, nothing parsed)
//!         ▼ every `batch_size` payloads of a stream (or flush(), or linger)
//!  decoder pool (see [`crate::ingest`]): JSON → Arrow, per key group hash(key) → partition,
//!  take() the rows of each partition; chunks come back in the order they were cut
//!         ▼
//!  sequencer (caller's thread): watermark per row in input order; bad rows, late rows
//!         │ ──────────────────────────────────────────────────► Output::DeadLetter
//!         ▼ bounded crossbeam channels carry whole batches
//!  worker 0 … worker N−1: one OS thread each, owns its operators' state, no locks
//!         ▼
//!  Output::Alerts(batch of alerts) on one bounded channel to the caller's sinks
//! ```
//!
//! Bounded channels give backpressure end to end: a slow sink blocks the workers, which
//! block `push`, which stops the source. Nothing is dropped.

use std::collections::VecDeque;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use arrow::record_batch::RecordBatch;
use crossbeam_channel::{Receiver, Sender, bounded};
use serde::Serialize;

use crate::alert::Alert;
use crate::clock::Clock;
use crate::error::{EngineError, Result};
use crate::ingest::{Decoding, NO_ARRIVAL, RawChunk};
use crate::operator::{self, BatchInput, Operator, WhereCache};
use crate::plan::{KeyGroup, Plan};
use crate::reject::{Reject, RejectKind};
use crate::schema::StreamDef;
use crate::time::{Millis, SplitWatermarks, WATERMARK_START};

mod idle;
mod options;
mod output;
mod reload;
mod replay;
mod sequencer;
pub mod snapshot;
mod worker;

pub use options::PipelineOptions;
pub use output::{DeadLetter, Origin, Output, PipelineReport, StreamStats};
pub use reload::ReloadChanges;
use replay::ReplayGate;
use sequencer::{RowClocks, Sequencing};
pub use snapshot::{CheckpointStart, EngineState, RuleState, StreamState};
use worker::{WorkerMsg, WorkerReport, run_worker};

/// How much of an oversized payload its dead letter keeps.
const TOO_LARGE_KEPT: usize = 1024;

struct StreamIngest {
    def: Arc<StreamDef>,
    /// Payloads pushed since the last cut.
    pending: RawChunk,
    /// Source (topic, partition) of each split, for the origin of dead letters.
    split_origins: Vec<Option<(Arc<str>, i32)>>,
    tracker: SplitWatermarks,
    groups: Vec<KeyGroup>,
    stats: StreamStats,
    last_arrival: Option<Instant>,
    idle_base: Option<(Instant, Millis)>,
    last_split_check: Option<Instant>,
    /// `stats.received` at the last [`Pipeline::advance_idle_by_event_time`].
    received_at_idle_check: u64,
    /// When the first payload of the pending chunk was pushed.
    pending_since: Option<Instant>,
    /// The pending chunk is decoded payload by payload as it is pushed, on the ingest
    /// thread (low rates: the rows are ready when the chunk lingers), not at its cut.
    eager: bool,
    /// Payloads of an eager chunk that failed to decode.
    eager_errors: Vec<(u32, Reject)>,
    /// The last chunk lingered (low rate): decode the next one eagerly if the pool is idle.
    /// A chunk that fills up clears it, handing decoding back to the pool.
    prefer_eager: bool,
    /// Since when data is expected (splits were declared) but none has come: the stream
    /// holds the frontier back until its first row or its idle timeout.
    awaited_since: Option<Instant>,
    /// Restoring state after a restart: see [`Pipeline::replay_split`].
    replay: Option<ReplayGate>,
    /// Decoded chunks not yet (completely) sequenced, in cut order (see [`sequencer`]).
    queue: VecDeque<Sequencing>,
}

/// A running pipeline. Feed it with [`Pipeline::push`], end it with [`Pipeline::finish`].
pub struct Pipeline {
    plan: Arc<Plan>,
    options: PipelineOptions,
    streams: Vec<StreamIngest>,
    workers: Vec<Sender<WorkerMsg>>,
    handles: Vec<JoinHandle<WorkerReport>>,
    out: Sender<Output>,
    decoding: Decoding,
    /// Emptied chunks, reused so that pushing allocates nothing in the steady state.
    free_chunks: Vec<RawChunk>,
    /// Payloads pushed or rejected so far: the next one's position.
    pushed: u64,
    /// When the pipeline started (its clock): how long a stream has been unheard.
    started: Instant,
    /// Dead letters waiting for every earlier payload to be decoded, so that they leave in
    /// input order, by position.
    held_dead: std::collections::BTreeMap<u64, DeadLetter>,
    /// [`snapshot::rule_fingerprint`] of each rule, computed once (zone sets make it long).
    fingerprints: Arc<[u64]>,
    route_ns: u64,
    send_wait_ns: u64,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline").field("workers", &self.workers.len()).finish()
    }
}

impl Pipeline {
    /// Starts the workers. Outputs arrive on the returned receiver, which must be drained
    /// concurrently (it is bounded).
    pub fn start(plan: Arc<Plan>, options: PipelineOptions) -> (Pipeline, Receiver<Output>) {
        let (out_tx, out_rx) = bounded::<Output>(Self::output_capacity(&options));
        (Self::start_with_output(plan, options, out_tx), out_rx)
    }

    /// A good capacity for the output channel of [`Pipeline::start_with_output`].
    pub fn output_capacity(options: &PipelineOptions) -> usize {
        options.queue_depth.max(1) * options.workers.max(1) * 4
    }

    /// Starts the workers, sending outputs to `out`: successive pipelines (e.g. one per
    /// Kafka assignment) can share one sink.
    pub fn start_with_output(plan: Arc<Plan>, options: PipelineOptions, out_tx: Sender<Output>) -> Pipeline {
        let workers_n = options.workers.max(1);
        let ops = (0..workers_n)
            .map(|w| snapshot::build_operators(&plan, None, (w, workers_n)))
            .collect::<Result<Vec<_>>>()
            .expect("operators without restored state always build");
        Self::launch(plan, options, out_tx, ops)
    }

    /// Like [`Pipeline::start_with_output`], from a snapshot's state (see [`snapshot`]).
    pub fn restored(
        plan: Arc<Plan>,
        options: PipelineOptions,
        out_tx: Sender<Output>,
        state: &EngineState,
    ) -> Result<Pipeline> {
        let workers_n = options.workers.max(1);
        let ops = (0..workers_n)
            .map(|w| snapshot::build_operators(&plan, Some(state), (w, workers_n)))
            .collect::<Result<Vec<_>>>()?;
        let mut pipeline = Self::launch(plan, options, out_tx, ops);
        pipeline.restore_streams(state)?;
        Ok(pipeline)
    }

    fn launch(
        plan: Arc<Plan>,
        options: PipelineOptions,
        out_tx: Sender<Output>,
        ops: Vec<Vec<Box<dyn Operator>>>,
    ) -> Pipeline {
        let workers_n = ops.len();
        let started = options.clock.now();
        let replay_until: Arc<[Millis]> =
            (0..plan.streams.len()).map(|i| options.replay_until.get(i).copied().unwrap_or(WATERMARK_START)).collect();
        let mut workers = Vec::with_capacity(workers_n);
        let mut handles = Vec::with_capacity(workers_n);
        for (index, worker_ops) in ops.into_iter().enumerate() {
            let (tx, rx) = bounded::<WorkerMsg>(options.queue_depth.max(1));
            let plan = plan.clone();
            let out = out_tx.clone();
            let replay_until = replay_until.clone();
            let handle = std::thread::Builder::new()
                .name(format!("gridwatch-worker-{index}"))
                .spawn(move || run_worker(&plan, worker_ops, &rx, &out, &replay_until, (index, workers_n)))
                .expect("spawning a worker thread");
            workers.push(tx);
            handles.push(handle);
        }
        let streams = plan
            .streams
            .iter()
            .enumerate()
            .map(|(i, def)| StreamIngest {
                def: def.clone(),
                pending: RawChunk::new(i),
                split_origins: Vec::new(),
                tracker: SplitWatermarks::new(def.max_out_of_orderness_ms),
                groups: plan.key_groups(i),
                stats: StreamStats { stream: def.name.clone(), watermark: WATERMARK_START, ..Default::default() },
                last_arrival: None,
                idle_base: None,
                received_at_idle_check: 0,
                last_split_check: None,
                pending_since: None,
                eager: false,
                eager_errors: Vec::new(),
                prefer_eager: true,
                awaited_since: None,
                replay: None,
                queue: VecDeque::new(),
            })
            .collect();
        let decoding = Decoding::new(&plan, options.decoders, workers_n, options.batch_size);
        let fingerprints = (0..plan.rules.len()).map(|r| snapshot::rule_fingerprint(&plan, r)).collect();
        Pipeline {
            plan,
            options,
            streams,
            workers,
            handles,
            out: out_tx,
            decoding,
            free_chunks: Vec::new(),
            pushed: 0,
            started,
            held_dead: Default::default(),
            fingerprints,
            route_ns: 0,
            send_wait_ns: 0,
        }
    }

    /// The plan being run.
    pub fn plan(&self) -> &Arc<Plan> {
        &self.plan
    }

    /// The clock the pipeline reads processing time from ([`PipelineOptions::clock`]):
    /// drivers pass its `now()` to [`Pipeline::flush_lingering`] and [`Pipeline::on_idle`].
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.options.clock
    }

    /// Queues one payload of `stream` (an index into the plan's streams) for decoding.
    pub fn push(&mut self, stream: usize, payload: &[u8]) -> Result<()> {
        self.push_split(stream, 0, payload, -1)
    }

    /// Declares that `stream` is read from `splits` independent splits (the partitions of
    /// a Kafka assignment), numbered from 0: its watermark then waits for all of them (see
    /// [`SplitWatermarks`]).
    pub fn declare_splits(&mut self, stream: usize, splits: usize) {
        let s = &mut self.streams[stream];
        s.tracker.declare(splits);
        if splits > 0 && s.tracker.watermark() == WATERMARK_START {
            s.awaited_since.get_or_insert_with(|| self.options.clock.now());
        }
    }

    /// Names the source of `split` of `stream` (a Kafka topic and partition): dead letters
    /// of its payloads carry that [`Origin`] with their offset.
    pub fn label_split(&mut self, stream: usize, split: usize, topic: Arc<str>, partition: i32) {
        let origins = &mut self.streams[stream].split_origins;
        if origins.len() <= split {
            origins.resize(split + 1, None);
        }
        origins[split] = Some((topic, partition));
    }

    /// Like [`Pipeline::push`], for a payload read from `split` of the stream at `offset`
    /// (its position in the split, reported with a dead letter when the split is labelled).
    pub fn push_split(&mut self, stream: usize, split: usize, payload: &[u8], offset: i64) -> Result<()> {
        self.push_arrived(stream, split, payload, offset, None)
    }

    /// Like [`Pipeline::push_split`], for a live source that knows when the payload arrived
    /// (`arrival`, ms since the epoch: a Kafka message's timestamp, the time an MQTT or HTTP
    /// message was received). Its event time may then be at most the stream's `max_future`
    /// ahead of the arrival (see [`crate::future`]); without an arrival time it is judged
    /// against the stream's recent event times.
    pub fn push_arrived(
        &mut self,
        stream: usize,
        split: usize,
        payload: &[u8],
        offset: i64,
        arrival: Option<Millis>,
    ) -> Result<()> {
        self.push_from(stream, split, payload, offset, arrival, None)
    }

    /// Like [`Pipeline::push_arrived`], for a payload that came from `topic` (an MQTT
    /// topic): if it becomes a dead letter, its [`Origin`] names that topic.
    pub fn push_from(
        &mut self,
        stream: usize,
        split: usize,
        payload: &[u8],
        offset: i64,
        arrival: Option<Millis>,
        topic: Option<Arc<str>>,
    ) -> Result<()> {
        let arrival = arrival.unwrap_or(NO_ARRIVAL);
        if let Some(gate) = self.streams[stream].replay.as_mut() {
            let acked = gate.pending.get(split).copied().flatten();
            let replayed = acked.is_some_and(|a| offset < a);
            if let Some(a) = acked
                && offset.saturating_add(1) >= a
            {
                gate.pending[split] = None;
            }
            if acked.is_some() {
                gate.progress = self.options.clock.now();
            }
            if !replayed {
                gate.held.push(payload, split, offset, 0, arrival);
                if let Some(t) = topic {
                    gate.held.label_last(t);
                }
                if gate.done() || gate.held.bytes_len() >= ReplayGate::MAX_HELD_BYTES {
                    return self.end_replay(stream);
                }
                return Ok(());
            }
            let done = gate.done();
            self.push_acked(stream, split, payload, offset, arrival, topic)?;
            return if done { self.end_replay(stream) } else { Ok(()) };
        }
        self.push_acked(stream, split, payload, offset, arrival, topic)
    }

    /// [`Pipeline::push_arrived`] past the replay gate.
    fn push_acked(
        &mut self,
        stream: usize,
        split: usize,
        payload: &[u8],
        offset: i64,
        arrival: Millis,
        topic: Option<Arc<str>>,
    ) -> Result<()> {
        if payload.len() > self.options.max_event_bytes {
            return self.reject_too_large(stream, split, payload, offset);
        }
        let s = &mut self.streams[stream];
        if s.pending.is_empty() {
            s.pending_since = Some(self.options.clock.now());
            s.eager = self.decoding.pool.is_none() || (s.prefer_eager && self.decoding.pool_idle());
        }
        let index = s.pending.len() as u32;
        s.pending.push(payload, split, offset, self.pushed, arrival);
        if let Some(t) = topic {
            s.pending.label_last(t);
        }
        self.pushed += 1;
        if s.eager
            && let Err(reason) = self.decoding.decode_one_here(stream, payload)
        {
            s.eager_errors.push((index, reason));
        }
        if s.pending.len() >= self.options.batch_size {
            s.prefer_eager = false;
            self.cut(stream)?;
        }
        Ok(())
    }

    #[cold]
    fn reject_too_large(&mut self, stream: usize, split: usize, payload: &[u8], offset: i64) -> Result<()> {
        let s = &self.streams[stream];
        let message = format!(
            "event of {} bytes is above engine.max_event_size ({} bytes); its first {TOO_LARGE_KEPT} bytes are kept",
            payload.len(),
            self.options.max_event_bytes
        );
        let origin = s.split_origins.get(split).and_then(Option::as_ref).map(|(topic, partition)| Origin {
            topic: topic.clone(),
            partition: *partition,
            offset,
        });
        let name = s.def.name.clone();
        let kept = &payload[..payload.len().min(TOO_LARGE_KEPT)];
        self.reject_from(&name, Reject::new(RejectKind::TooLarge, message), kept, origin)
    }

    /// Sends a payload that never reached a stream (e.g. it names no known stream) to the
    /// dead-letter output, so nothing is lost silently.
    pub fn reject(&mut self, stream: &str, reason: Reject, payload: &[u8]) -> Result<()> {
        self.reject_from(stream, reason, payload, None)
    }

    /// Like [`Pipeline::reject`], with the payload's source position.
    pub fn reject_from(&mut self, stream: &str, reason: Reject, payload: &[u8], origin: Option<Origin>) -> Result<()> {
        let dl = DeadLetter::new(stream, reason, lossy(payload), origin);
        self.held_dead.insert(self.pushed, dl);
        self.pushed += 1;
        self.release_dead()
    }

    /// Sends every held dead letter now, whatever precedes it (a stop, a checkpoint, a
    /// reload: the payloads still waiting are not evaluated by this pipeline).
    fn release_all_dead(&mut self) -> Result<()> {
        while let Some((_, dl)) = self.held_dead.pop_first() {
            self.send_out(Output::DeadLetter(dl))?;
        }
        Ok(())
    }

    /// Sends the held dead letters that no payload still being decoded precedes.
    fn release_dead(&mut self) -> Result<()> {
        if self.held_dead.is_empty() {
            return Ok(());
        }
        let pending = self.streams.iter().filter_map(|s| s.pending.first_position()).min();
        let in_flight = self.decoding.pool.as_ref().and_then(|p| p.earliest_in_flight());
        let queued = self.streams.iter().filter_map(|s| s.queue.front().and_then(Sequencing::next_position)).min();
        let before = pending.into_iter().chain(in_flight).chain(queued).min().unwrap_or(u64::MAX);
        while let Some(entry) = self.held_dead.first_entry() {
            if *entry.key() >= before {
                break;
            }
            let dl = entry.remove();
            self.send_out(Output::DeadLetter(dl))?;
        }
        Ok(())
    }

    /// Flushes every stream and sends a barrier through every worker: each emits
    /// [`Output::Barrier`] once it has processed all input pushed before. Returns the
    /// watermark of each stream at the barrier.
    pub fn barrier(&mut self, seq: u64) -> Result<Vec<Millis>> {
        self.flush()?;
        let watermark = self.frontier();
        self.broadcast(|| WorkerMsg::Barrier { seq, watermark, snapshot: false })?;
        Ok(self.watermarks())
    }

    /// The minimum watermark over the streams that have seen data ([`WATERMARK_START`] if
    /// none has): no later alert can have an earlier event time.
    pub fn frontier(&self) -> Millis {
        let mut min = None::<Millis>;
        for s in &self.streams {
            let w = s.tracker.watermark();
            // A stream that has not been heard from counts only while it is awaited (its
            // partitions are assigned): a topic read later must not find the frontier past
            // its first events.
            if w != WATERMARK_START || s.awaited_since.is_some() {
                min = Some(min.map_or(w, |m| m.min(w)));
            }
        }
        min.unwrap_or(WATERMARK_START)
    }
    /// The current watermark of each stream (index as in the plan).
    pub fn watermarks(&self) -> Vec<Millis> {
        self.streams.iter().map(|s| s.tracker.watermark()).collect()
    }

    /// Input batches waiting in the fullest worker queue, and that queue's capacity: a
    /// source that must never block (a Kafka consumer has to keep polling) pauses while
    /// the queues are nearly full.
    pub fn backlog(&self) -> (usize, usize) {
        let most = self.workers.iter().map(|tx| tx.len()).max().unwrap_or(0);
        let out = self.out.len() * self.options.queue_depth.max(1) / self.out.capacity().unwrap_or(1).max(1);
        (most.max(out), self.options.queue_depth.max(1))
    }

    /// Routes the pending rows of every stream whose batch has waited longer than
    /// [`PipelineOptions::linger`]; sources call it often (every poll) to bound latency.
    pub fn flush_lingering(&mut self, now: Instant) -> Result<()> {
        let mut lingered = false;
        for i in 0..self.streams.len() {
            if self.streams[i].pending_since.is_some_and(|t| now.saturating_duration_since(t) >= self.options.linger) {
                self.cut_chunk(i, true)?;
                lingered = true;
            }
        }
        // A lingering chunk is late already: wait for it rather than for the next call.
        self.take_decoded(lingered)
    }

    /// Decodes and routes every pending row to the workers.
    pub fn flush(&mut self) -> Result<()> {
        for i in 0..self.streams.len() {
            self.cut(i)?;
        }
        self.take_decoded(true)
    }

    /// Advances the watermark of streams idle longer than their idle timeout: from then on
    /// event time is taken to pass at the speed of the clock, so absence rules fire even
    /// when a whole stream has gone silent.
    pub fn on_idle(&mut self, now: Instant) -> Result<()> {
        self.on_idle_where(now, true, |_| true)
    }

    /// Like [`Pipeline::on_idle`], for the streams where `may_advance(stream)` is true: a
    /// source that knows it is behind (or cut off from its broker) holds the others back,
    /// since their silence does not mean no events happened. Splits silent for the idle
    /// timeout stop holding their stream back only if `splits_may_idle`.
    pub fn on_idle_where(
        &mut self,
        now: Instant,
        splits_may_idle: bool,
        may_advance: impl Fn(usize) -> bool,
    ) -> Result<()> {
        self.flush()?;
        for i in 0..self.streams.len() {
            if let Some(gate) = self.streams[i].replay.as_mut() {
                if !splits_may_idle {
                    // Cut off from the source (broker down, consumption paused): the
                    // silence is not a stall.
                    gate.progress = now;
                    continue;
                }
                if now.saturating_duration_since(gate.progress) < ReplayGate::STALL {
                    // Replaying: input is flowing, and a clock-driven advance could fire
                    // timers the run before the restart had not reached.
                    continue;
                }
                tracing::warn!(
                    stream = %self.streams[i].def.name,
                    "replayed splits made no progress for {:?}: ending the replay (some alerts may be sent twice)",
                    ReplayGate::STALL
                );
                self.end_replay(i)?;
            }
            let s = &mut self.streams[i];
            if let (Some(since), Some(timeout)) = (s.awaited_since, s.def.idle_timeout_ms)
                && now.saturating_duration_since(since).as_millis() as Millis >= timeout
            {
                // Silent since its partitions were assigned: an empty topic must not hold
                // every other stream's alerts back forever.
                s.awaited_since = None;
            }
            if let Some(timeout) = s.def.idle_timeout_ms {
                let checked = *s.last_split_check.get_or_insert(now);
                if now.saturating_duration_since(checked).as_millis() as Millis >= timeout {
                    s.last_split_check = Some(now);
                    let before = s.tracker.watermark();
                    if splits_may_idle && s.tracker.mark_silent_splits_idle() > before {
                        let wm = s.tracker.watermark();
                        s.stats.watermark = wm;
                        self.broadcast_watermark(i, wm)?;
                    }
                }
            }
            let s = &mut self.streams[i];
            if !may_advance(i) {
                // The silence so far does not count towards the idle timeout.
                if s.last_arrival.is_some() {
                    s.last_arrival = Some(now);
                    s.idle_base = None;
                }
                continue;
            }
            let Some(timeout) = s.def.idle_timeout_ms else { continue };
            let Some(last) = s.last_arrival else { continue };
            let idle_ms = now.saturating_duration_since(last).as_millis() as Millis;
            if idle_ms < timeout {
                continue;
            }
            let (_, base) = *s.idle_base.get_or_insert((last, s.tracker.watermark()));
            let before = s.tracker.watermark();
            let wm = s.tracker.advance_to(base.saturating_add(idle_ms));
            if wm > before {
                s.stats.watermark = wm;
                self.broadcast_watermark(i, wm)?;
            }
        }
        self.unheard_follow(now, &may_advance)
    }

    /// Moves `stream`'s watermark to `wm` (never backwards) and fires due timers.
    pub fn advance_watermark(&mut self, stream: usize, wm: Millis) -> Result<()> {
        self.cut(stream)?;
        self.take_decoded(true)?;
        // Moving the watermark by fiat ends the input as far as doubtful rows go.
        self.settle(stream)?;
        let before = self.streams[stream].tracker.watermark();
        let wm = self.streams[stream].tracker.advance_to(wm);
        self.streams[stream].stats.watermark = wm;
        if wm > before { self.broadcast_watermark(stream, wm) } else { Ok(()) }
    }

    /// Ends a bounded input: flushes, moves every stream's watermark to the largest event
    /// time it saw (no more out-of-order data can come, so windows ending by then close),
    /// stops the workers and reports. Timers beyond that point do not fire.
    pub fn finish(self) -> Result<PipelineReport> {
        self.finish_with_barrier(None)
    }

    /// [`Pipeline::finish`], then a last [`Pipeline::barrier`] `seq` after the final alerts.
    pub fn finish_with_barrier(mut self, seq: Option<u64>) -> Result<PipelineReport> {
        self.end_all_replays()?;
        self.flush()?;
        for i in 0..self.streams.len() {
            self.settle(i)?;
        }
        for i in 0..self.streams.len() {
            let max = self.streams[i].tracker.max_event_time();
            if max != WATERMARK_START {
                self.advance_watermark(i, max)?;
            }
        }
        self.broadcast(|| WorkerMsg::EndOfInput)?;
        if let Some(seq) = seq {
            self.barrier(seq)?;
        }
        self.join()
    }

    /// Stops a service that is not at the end of its input (shutdown, rebalance): pushed
    /// rows are processed, but watermarks stay where they are, so windows and timers that
    /// are not due yet do not fire; the input that would fire them is replayed on restart.
    /// Rows still waiting in the sequencer for the rows after them (see
    /// [`Pipeline::unsequenced`]) are dropped unprocessed: the restart reads them again.
    pub fn stop(mut self) -> Result<PipelineReport> {
        self.end_all_replays()?;
        self.flush()?;
        // Dead letters held behind waiting rows of another split go now: their own
        // positions may be acknowledged.
        self.release_all_dead()?;
        self.join()
    }

    fn join(self) -> Result<PipelineReport> {
        let Pipeline { plan, streams, workers, handles, route_ns, send_wait_ns, decoding, .. } = self;
        let mut decoder_busy_ns = vec![decoding.local_busy_ns];
        if let Some(pool) = decoding.pool {
            decoder_busy_ns.extend_from_slice(&pool.busy_ns);
            pool.join();
        }
        drop(workers);
        let mut keys = vec![0usize; plan.rules.len()];
        let mut dropped = vec![0u64; plan.rules.len()];
        let mut replay_suppressed = 0;
        let mut worker_busy_ns = Vec::with_capacity(handles.len());
        for (w, h) in handles.into_iter().enumerate() {
            let report = h.join().map_err(|_| EngineError::WorkerGone(w))?;
            for (k, c) in keys.iter_mut().zip(report.keys_per_rule) {
                *k += c;
            }
            for (d, c) in dropped.iter_mut().zip(report.partials_dropped) {
                *d += c;
            }
            replay_suppressed += report.replay_suppressed;
            worker_busy_ns.push(report.busy_ns);
        }
        Ok(PipelineReport {
            streams: streams.into_iter().map(|s| s.stats).collect(),
            keys_per_rule: plan.rules.iter().zip(keys).map(|(r, k)| (r.meta.id.to_string(), k)).collect(),
            partials_dropped: plan
                .rules
                .iter()
                .zip(dropped)
                .filter(|&(_, d)| d > 0)
                .map(|(r, d)| (r.meta.id.to_string(), d))
                .collect(),
            replay_suppressed,
            route_ns: route_ns.saturating_sub(send_wait_ns),
            send_wait_ns,
            decoder_busy_ns,
            worker_busy_ns,
        })
    }

    fn send_out(&self, o: Output) -> Result<()> {
        self.out.send(o).map_err(|_| EngineError::WorkerGone(usize::MAX))
    }

    fn broadcast_watermark(&self, stream: usize, watermark: Millis) -> Result<()> {
        self.broadcast(|| WorkerMsg::Watermark { stream, group: None, watermark, replayed: false })
    }

    /// Sends one `msg()` to every worker.
    fn broadcast(&self, msg: impl Fn() -> WorkerMsg) -> Result<()> {
        for (w, tx) in self.workers.iter().enumerate() {
            tx.send(msg()).map_err(|_| EngineError::WorkerGone(w))?;
        }
        Ok(())
    }

    /// Cuts the pending chunk of `stream` and hands it to the decoders (or decodes it here).
    fn cut(&mut self, stream: usize) -> Result<()> {
        self.cut_chunk(stream, false)
    }

    /// Like [`Pipeline::cut`]; a chunk cut because it lingered (`lingered`) is decoded on
    /// this thread when the pool is idle: at rates where chunks linger, handing one to a
    /// decoder thread and waiting for it costs two thread wake-ups of latency and buys no
    /// throughput.
    fn cut_chunk(&mut self, stream: usize, lingered: bool) -> Result<()> {
        if self.streams[stream].pending.is_empty() {
            return Ok(());
        }
        let mut fresh = self.free_chunks.pop().unwrap_or_default();
        fresh.stream = stream;
        let s = &mut self.streams[stream];
        s.pending_since = None;
        s.prefer_eager |= lingered;
        let mut raw = std::mem::replace(&mut s.pending, fresh);
        raw.replayed = s.replay.is_some();
        if std::mem::take(&mut s.eager) {
            let errors = std::mem::take(&mut s.eager_errors);
            let chunk = self.decoding.finish_here(raw, errors)?;
            // Chunks of this stream cut earlier may still be on the pool.
            self.take_decoded(true)?;
            return self.sequence(chunk);
        }
        if self.decoding.pool.is_none() || (lingered && self.decoding.pool_idle()) {
            let chunk = self.decoding.decode_here(raw)?;
            return self.sequence(chunk);
        }
        loop {
            let pool = self.decoding.pool.as_mut().expect("checked above");
            if pool.has_room() {
                pool.dispatch(raw)?;
                break;
            }
            let chunk = pool.take_oldest(true)?.expect("a full pool has chunks in flight");
            self.sequence(chunk)?;
        }
        self.take_decoded(false)
    }

    /// Sequences the decoded chunks that are back: all of them (waiting) if `wait`, else
    /// those ready now, oldest first.
    fn take_decoded(&mut self, wait: bool) -> Result<()> {
        loop {
            let chunk = match &mut self.decoding.pool {
                Some(pool) => pool.take_oldest(wait)?,
                None => None,
            };
            match chunk {
                Some(chunk) => self.sequence(chunk)?,
                None => return Ok(()),
            }
        }
    }
}

/// Sends `msg` to worker `p`, adding the wait to `waited_ns` when its queue is full.
fn send_to(workers: &[Sender<WorkerMsg>], waited_ns: &mut u64, p: usize, msg: WorkerMsg) -> Result<()> {
    match workers[p].try_send(msg) {
        Ok(()) => Ok(()),
        Err(crossbeam_channel::TrySendError::Full(msg)) => {
            let started = Instant::now();
            let sent = workers[p].send(msg).map_err(|_| EngineError::WorkerGone(p));
            *waited_ns += started.elapsed().as_nanos() as u64;
            sent
        }
        Err(crossbeam_channel::TrySendError::Disconnected(_)) => Err(EngineError::WorkerGone(p)),
    }
}

fn lossy(payload: &[u8]) -> String {
    String::from_utf8_lossy(payload).into_owned()
}
