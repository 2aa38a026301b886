//! Snapshots of a running pipeline, and starting one from a snapshot.
//!
//! A checkpoint barrier ([`Pipeline::checkpoint`]) is a barrier that also asks for state.
//! Everything pushed before it is flushed and sequenced; then the pipeline sends
//! [`Output::Checkpoint`] with its own part — per stream the watermark tracker, the
//! counters and the payloads still waiting in the sequencer for the rows after them — and
//! the source's position, which the caller gives. Each worker, when it reaches the barrier,
//! sends [`Output::State`] with the state of every key of every rule it owns, then its
//! [`Output::Barrier`]. The three parts describe the same cut of the input: what the
//! source handed over before the barrier, minus the waiting payloads, which the snapshot
//! carries instead.
//!
//! A pipeline started with [`PipelineOptions::restore`] takes the snapshot's place: each
//! rule's keys go to the worker that owns them under the new worker count (keys are hashed
//! as the exchange hashes rows), the streams get their trackers and counters back, their
//! watermarks are sent to the workers, and the waiting payloads are pushed again before any
//! new input. A rule whose compiled form changed since the snapshot starts with no state.

use serde::{Deserialize, Serialize};

#[allow(clippy::wildcard_imports)]
use super::*;
use crate::keys::partition_of;
use crate::state::KeyStates;
use crate::time::SplitWatermarks;

/// The engine's part of a snapshot.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct EngineState {
    /// Per rule of the plan that wrote it.
    pub rules: Vec<RuleState>,
    /// Per stream of the plan that wrote it.
    pub streams: Vec<StreamState>,
}

/// One rule's state in a snapshot.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct RuleState {
    /// Rule id.
    pub id: String,
    /// Hash of the rule's compiled form and its streams' definitions
    /// ([`rule_fingerprint`]): state is restored only into the same rule.
    pub fingerprint: u64,
    /// Its keys, from every worker.
    pub keys: KeyStates,
}

/// One stream's ingest state in a snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamState {
    /// Stream name.
    pub name: String,
    /// Watermark per split, and the newest event times (for late and future rows).
    pub tracker: SplitWatermarks,
    /// Counters so far (a restored run continues them).
    pub stats: StreamCounters,
    /// `stats.received` at the last event-time idle check (see [`Pipeline::advance_idle_by_event_time`]).
    pub received_at_idle_check: u64,
    /// Payloads pushed before the barrier but still waiting in the sequencer, in input order.
    pub waiting: Vec<WaitingPayload>,
}

/// A stream's counters, as a snapshot holds them ([`StreamStats`] without its name, in a
/// layout of its own: the summary's JSON shape may change without changing snapshots).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamCounters {
    /// Payloads received.
    pub received: u64,
    /// Rows accepted.
    pub accepted: u64,
    /// Rows rejected by the decoder.
    pub invalid: u64,
    /// Late rows.
    pub late: u64,
    /// Rows dated too far ahead.
    pub future: u64,
    /// The time-unit warning, if given.
    pub time_warning: Option<String>,
    /// The watermark.
    pub watermark: Millis,
}

impl StreamCounters {
    fn of(s: &StreamStats) -> StreamCounters {
        StreamCounters {
            received: s.received,
            accepted: s.accepted,
            invalid: s.invalid,
            late: s.late,
            future: s.future,
            time_warning: s.time_warning.clone(),
            watermark: s.watermark,
        }
    }

    fn stats(&self, stream: &str) -> StreamStats {
        StreamStats {
            stream: stream.to_string(),
            received: self.received,
            accepted: self.accepted,
            invalid: self.invalid,
            late: self.late,
            future: self.future,
            time_warning: self.time_warning.clone(),
            watermark: self.watermark,
        }
    }
}

/// A payload pushed before a checkpoint that had not been sequenced yet.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WaitingPayload {
    /// Split it came from.
    pub split: usize,
    /// Its position in the split.
    pub offset: i64,
    /// Arrival time, for live sources.
    pub arrival: Option<Millis>,
    /// The topic it came from (MQTT), if labelled.
    pub topic: Option<String>,
    /// The payload.
    pub payload: Vec<u8>,
}

/// The pipeline's part of a checkpoint, sent on the output channel before the workers'.
#[derive(Debug, Clone)]
pub struct CheckpointStart {
    /// The barrier's sequence number.
    pub seq: u64,
    /// Workers that will each send [`Output::State`] for it.
    pub workers: usize,
    /// Rule ids and fingerprints, in plan order (the workers' states follow it).
    pub rules: Vec<(String, u64)>,
    /// The streams' part.
    pub streams: Vec<StreamState>,
    /// The source's position at the barrier (its own encoding).
    pub position: Vec<u8>,
}

/// A stable hash of a rule's compiled form and of the definitions of the streams it reads:
/// a snapshot's state is restored only into a rule with the same fingerprint.
pub fn rule_fingerprint(plan: &Plan, rule: usize) -> u64 {
    // Not the rule's name, description, severity or labels: they change what its alerts
    // say, not its state.
    let r = &plan.rules[rule];
    let mut text = format!("{:?}|{:?}|{:?}|{:?}", r.stream, r.key_fields, r.filter, r.kind);
    for (s, _) in r.inputs() {
        text.push_str(&format!("{:?}", plan.streams[s]));
    }
    xxhash_rust::xxh3::xxh3_64(text.as_bytes())
}

impl Pipeline {
    /// A checkpoint barrier: like [`Pipeline::barrier`], and the pipeline and every worker
    /// send their state (see the module docs). `position` is the source's position after
    /// everything it pushed so far.
    pub fn checkpoint(&mut self, seq: u64, position: Vec<u8>) -> Result<()> {
        self.flush()?;
        // Dead letters held behind waiting payloads leave now: the waiting payloads go
        // into the snapshot, the dead letters would not.
        self.release_all_dead()?;
        let streams = self.streams.iter().map(stream_state).collect();
        let rules = (0..self.plan.rules.len())
            .map(|r| (self.plan.rules[r].meta.id.to_string(), rule_fingerprint(&self.plan, r)))
            .collect();
        let start = CheckpointStart { seq, workers: self.workers.len(), rules, streams, position };
        self.send_out(Output::Checkpoint(Box::new(start)))?;
        let watermark = self.frontier();
        self.broadcast(|| WorkerMsg::Barrier { seq, watermark, snapshot: true })
    }

    /// Applies the streams' part of a snapshot (see [`PipelineOptions::restore`]): trackers,
    /// counters, the workers' view of each watermark, then the waiting payloads.
    pub(super) fn restore_streams(&mut self, state: &EngineState) -> Result<()> {
        for saved in &state.streams {
            let Some(i) = self.streams.iter().position(|s| *s.def.name == *saved.name) else {
                tracing::warn!(stream = %saved.name, "snapshot: the stream is no longer configured; its state is dropped");
                continue;
            };
            let s = &mut self.streams[i];
            if s.def.max_out_of_orderness_ms != saved.tracker.out_of_orderness() {
                tracing::warn!(stream = %saved.name, "snapshot: max_out_of_orderness changed; the stream's watermark restarts from its next event");
                continue;
            }
            s.tracker = saved.tracker.clone();
            s.stats = saved.stats.stats(&s.def.name);
            s.received_at_idle_check = saved.received_at_idle_check;
            let wm = s.tracker.watermark();
            if wm != WATERMARK_START {
                self.broadcast_watermark(i, wm)?;
            }
        }
        for saved in &state.streams {
            let Some(i) = self.streams.iter().position(|s| *s.def.name == *saved.name) else { continue };
            for w in &saved.waiting {
                let topic = w.topic.as_deref().map(Arc::from);
                self.push_from(i, w.split, &w.payload, w.offset, w.arrival, topic)?;
            }
        }
        Ok(())
    }
}

/// Builds every rule's operator for worker `worker` of `workers`, with the keys of
/// `state` that this worker owns restored.
pub(super) fn build_operators(
    plan: &Plan,
    state: Option<&EngineState>,
    (worker, workers): (usize, usize),
) -> Result<Vec<Box<dyn Operator>>> {
    let mut ops: Vec<Box<dyn Operator>> =
        plan.rules.iter().map(|r| operator::build(r.clone(), &plan.streams)).collect();
    let Some(state) = state else { return Ok(ops) };
    for (r, op) in ops.iter_mut().enumerate() {
        let id = &*plan.rules[r].meta.id;
        let Some(saved) = state.rules.iter().find(|s| s.id == id) else { continue };
        if saved.fingerprint != rule_fingerprint(plan, r) {
            if worker == 0 {
                tracing::warn!(rule = id, "snapshot: the rule changed since the snapshot; it starts with no state");
            }
            continue;
        }
        for (key, record) in &saved.keys.keys {
            if workers == 1 || partition_of(key, workers) == worker {
                op.restore(key, record)?;
            }
        }
    }
    Ok(ops)
}

pub(super) fn stream_state(s: &StreamIngest) -> StreamState {
    let mut waiting = Vec::new();
    // Waiting payloads are pushed again at the restore, and counted again then: the
    // counters leave out those already counted (a chunk is counted at its first pass).
    let mut counted = 0u64;
    for (k, seq) in s.queue.iter().enumerate() {
        let raw = seq.raw();
        let from = if k == 0 { seq.next_payload() } else { 0 };
        if seq.counted() {
            counted += (raw.len() - from) as u64;
        }
        for i in from..raw.len() {
            waiting.push(WaitingPayload {
                split: raw.splits[i] as usize,
                offset: raw.offsets[i],
                arrival: (raw.arrivals[i] != NO_ARRIVAL).then_some(raw.arrivals[i]),
                topic: raw.topic_of(i).map(|t| t.to_string()),
                payload: raw.payload(i).to_vec(),
            });
        }
    }
    let mut stats = StreamCounters::of(&s.stats);
    stats.received -= counted;
    StreamState {
        name: s.def.name.to_string(),
        tracker: s.tracker.clone(),
        stats,
        received_at_idle_check: s.received_at_idle_check,
        waiting,
    }
}
