//! The sequencer: the order-dependent steps of ingest, on the caller's thread.
//!
//! Decoded chunks come back from the decoders in the order they were cut. Per stream they
//! wait in a queue and are taken row by row in input order: the future-time check (see
//! [`crate::future`]), the watermark, lateness, dead letters. Then each worker is sent its
//! rows of the pass.
//!
//! Usually a chunk is sequenced in one pass. A row whose clock is in doubt is judged by the
//! rows of its split after it; if not enough of them have been decoded yet, the pass stops
//! at that row (the rows before it are sent) and the rest of the chunk waits for the next
//! chunk of the stream, or for the end of the input. Nothing is reordered, so the verdict
//! and every later decision depend only on the input. Rows waiting so are not processed:
//! a source must not count them as such ([`Pipeline::unsequenced`]).

use std::time::Instant;

use arrow::array::BooleanArray;
use arrow::compute::filter_record_batch;
use arrow::record_batch::RecordBatch;

use super::{DeadLetter, Origin, Pipeline, StreamIngest, WorkerMsg, lossy, send_to};
use crate::error::Result;
use crate::future::{self, Verdict};
use crate::ingest::{DecodedChunk, NO_ARRIVAL};
use crate::reject::{Reject, RejectKind};
use crate::schema::LatePolicy;
use crate::time::{Millis, Observed, format_timestamp};

/// Event times before this (1990-01-01) are taken for a unit mistake worth a warning: epoch
/// seconds read as milliseconds land in January 1970.
const PLAUSIBLE_FROM: Millis = 631_152_000_000;

/// A decoded chunk on its way through the sequencer.
pub(super) struct Sequencing {
    chunk: DecodedChunk,
    /// Next payload (index into the raw chunk) and next decoded row to sequence.
    next_payload: usize,
    next_row: usize,
    /// Next entry of the chunk's decode errors.
    next_error: usize,
    /// Per decoded row sequenced so far: the stream's and the row's split's watermark after
    /// it.
    watermarks: Vec<Millis>,
    split_watermarks: Vec<Millis>,
    /// Rows sequenced so far that do not go to the workers (late, future), ascending.
    rejected: Vec<usize>,
    /// No pass has run yet.
    fresh: bool,
}

impl Sequencing {
    pub(super) fn new(chunk: DecodedChunk) -> Self {
        let rows = chunk.decoded.batch.num_rows();
        Sequencing {
            chunk,
            next_payload: 0,
            next_row: 0,
            next_error: 0,
            watermarks: Vec::with_capacity(rows),
            split_watermarks: Vec::with_capacity(rows),
            rejected: Vec::new(),
            fresh: true,
        }
    }

    /// Position (among everything pushed) of the first payload not sequenced yet.
    pub(super) fn next_position(&self) -> Option<u64> {
        self.chunk.raw.positions.get(self.next_payload).copied()
    }

    /// The chunk's payloads.
    pub(super) fn raw(&self) -> &crate::ingest::RawChunk {
        &self.chunk.raw
    }

    /// Index of the first payload not sequenced yet.
    pub(super) fn next_payload(&self) -> usize {
        self.next_payload
    }

    /// Whether a pass has run, which counted the chunk's payloads as received.
    pub(super) fn counted(&self) -> bool {
        !self.fresh
    }

    fn done(&self) -> bool {
        self.next_payload >= self.chunk.raw.len()
    }
}

/// Per row of a batch: its event time, and the stream's and its own split's watermark after
/// it (see [`crate::operator::BatchInput`]).
#[derive(Debug, Clone)]
pub(super) struct RowClocks {
    pub times: Vec<Millis>,
    pub watermarks: Vec<Millis>,
    pub split_watermarks: Vec<Millis>,
}

impl RowClocks {
    /// The clocks of `rows`, in that order.
    fn select(&self, rows: impl Iterator<Item = usize> + Clone) -> RowClocks {
        let pick = |v: &[Millis]| rows.clone().map(|r| v[r]).collect();
        RowClocks {
            times: pick(&self.times),
            watermarks: pick(&self.watermarks),
            split_watermarks: pick(&self.split_watermarks),
        }
    }
}

impl Pipeline {
    /// Takes a decoded chunk through the order-dependent steps (see the module docs).
    pub(super) fn sequence(&mut self, chunk: DecodedChunk) -> Result<()> {
        let started = Instant::now();
        let stream = chunk.raw.stream;
        self.streams[stream].queue.push_back(Sequencing::new(chunk));
        let result = self.drain_sequencer(stream, false);
        self.route_ns += started.elapsed().as_nanos() as u64;
        result
    }

    /// Per (stream, split) with rows that wait in the sequencer (see the module docs): the
    /// offset of the first. After [`Pipeline::barrier`], these are the only rows pushed
    /// before it that are not processed; a source acknowledging positions must stop there.
    pub fn unsequenced(&self) -> Vec<(usize, usize, i64)> {
        let mut out: Vec<(usize, usize, i64)> = Vec::new();
        for (stream, s) in self.streams.iter().enumerate() {
            for (k, seq) in s.queue.iter().enumerate() {
                let raw = &seq.chunk.raw;
                let from = if k == 0 { seq.next_payload } else { 0 };
                for i in from..raw.len() {
                    let split = raw.splits[i] as usize;
                    match out.iter_mut().find(|(st, sp, _)| *st == stream && *sp == split) {
                        Some(e) => e.2 = e.2.min(raw.offsets[i]),
                        None => out.push((stream, split, raw.offsets[i])),
                    }
                }
            }
        }
        out
    }

    /// Sequences every row still queued, judging doubtful rows with the rows there are: the
    /// input has ended (or its watermark is being moved by fiat).
    pub(super) fn settle(&mut self, stream: usize) -> Result<()> {
        if self.streams[stream].queue.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let result = self.drain_sequencer(stream, true);
        self.route_ns += started.elapsed().as_nanos() as u64;
        result
    }

    /// Runs passes over the stream's queued chunks until it is empty or a row must wait.
    fn drain_sequencer(&mut self, stream: usize, complete: bool) -> Result<()> {
        while !self.streams[stream].queue.is_empty() {
            let from = self.streams[stream].queue[0].next_row;
            let now = self.options.clock.now();
            let dead = sequence_pass(&mut self.streams[stream], complete, now);
            let s = &mut self.streams[stream];
            let head = &mut s.queue[0];
            for (i, reason) in dead {
                let raw = &head.chunk.raw;
                let origin = match raw.topic_of(i) {
                    Some(topic) => Some(Origin { topic: topic.clone(), partition: 0, offset: raw.offsets[i] }),
                    None => s
                        .split_origins
                        .get(raw.splits[i] as usize)
                        .and_then(Option::as_ref)
                        .map(|(topic, p)| Origin { topic: topic.clone(), partition: *p, offset: raw.offsets[i] }),
                };
                let dl = DeadLetter::new(s.stats.stream.clone(), reason, lossy(raw.payload(i)), origin);
                self.held_dead.insert(raw.positions[i], dl);
            }
            let done = head.done();
            let mut item = if done { s.queue.pop_front() } else { None };
            self.route_pass(stream, from, item.as_mut())?;
            match item {
                Some(item) => {
                    let mut raw = item.chunk.raw;
                    raw.clear();
                    self.free_chunks.push(raw);
                    self.release_dead()?;
                }
                None => {
                    self.release_dead()?;
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Sends the workers the rows `from..` sequenced by the last pass over the stream's
    /// head chunk (`finished`, when that pass completed it and took it off the queue).
    fn route_pass(&mut self, stream: usize, from: usize, finished: Option<&mut Sequencing>) -> Result<()> {
        let s = &self.streams[stream];
        let whole = finished.is_some() && from == 0;
        let (seq, clocks) = match finished {
            // The usual case, a chunk sequenced in one pass: its clocks move, not copied.
            Some(seq) if whole => {
                let clocks = RowClocks {
                    times: std::mem::take(&mut seq.chunk.decoded.event_time),
                    watermarks: std::mem::take(&mut seq.watermarks),
                    split_watermarks: std::mem::take(&mut seq.split_watermarks),
                };
                (&*seq, clocks)
            }
            finished => {
                let seq = match finished {
                    Some(seq) => &*seq,
                    None => &s.queue[0],
                };
                let clocks = RowClocks {
                    times: seq.chunk.decoded.event_time[..seq.next_row].to_vec(),
                    watermarks: seq.watermarks.clone(),
                    split_watermarks: seq.split_watermarks.clone(),
                };
                (seq, clocks)
            }
        };
        let batch = &seq.chunk.decoded.batch;
        let (rows, to) = (batch.num_rows(), seq.next_row);
        let accepted = (to - from) - seq.rejected.iter().filter(|&&r| r >= from).count();
        if accepted == 0 {
            // Nothing on time: the watermark did not move, so the workers have nothing to learn.
            return Ok(());
        }
        let end_watermark = s.tracker.watermark();
        let replayed = seq.chunk.raw.replayed;
        let keep = (from > 0 || to < rows || !seq.rejected.is_empty()).then(|| {
            let mut keep = vec![false; rows];
            keep[from..to].iter_mut().for_each(|k| *k = true);
            seq.rejected.iter().for_each(|&r| keep[r] = false);
            keep
        });
        let parts = self.workers.len();
        if parts == 1 {
            let (batch, clocks) = match &keep {
                None => (batch.clone(), clocks),
                Some(keep) => keep_rows(batch, keep, &clocks)?,
            };
            for g in 0..s.groups.len() {
                let msg = WorkerMsg::Batch {
                    stream,
                    group: g,
                    batch: batch.clone(),
                    clocks: clocks.clone(),
                    end_watermark,
                    replayed,
                };
                send_to(&self.workers, &mut self.send_wait_ns, 0, msg)?;
            }
            return Ok(());
        }
        for (g, partitions) in seq.chunk.routed.iter().enumerate() {
            let mut reached = vec![false; parts];
            for part in partitions {
                let rows = part.rows.values();
                let (sub, part_clocks) = match &keep {
                    None => (part.batch.clone(), clocks.select(rows.iter().map(|&r| r as usize))),
                    Some(keep) => {
                        let keep_part: Vec<bool> = rows.iter().map(|&r| keep[r as usize]).collect();
                        let kept = rows.iter().map(|&r| r as usize).filter(|&r| keep[r]);
                        let sub = filter_record_batch(&part.batch, &BooleanArray::from(keep_part))?;
                        (sub, clocks.select(kept))
                    }
                };
                if sub.num_rows() == 0 {
                    continue;
                }
                reached[part.partition] = true;
                let msg =
                    WorkerMsg::Batch { stream, group: g, batch: sub, clocks: part_clocks, end_watermark, replayed };
                send_to(&self.workers, &mut self.send_wait_ns, part.partition, msg)?;
            }
            // Workers that got no rows of this group still learn how far the watermark
            // moved, for this group's rules only: the worker's rows of a later group are
            // still on their way and must see their own per-row watermarks first.
            for (p, got) in reached.iter().enumerate() {
                if !got {
                    let msg = WorkerMsg::Watermark { stream, group: Some(g), watermark: end_watermark, replayed };
                    send_to(&self.workers, &mut self.send_wait_ns, p, msg)?;
                }
            }
        }
        Ok(())
    }
}

/// One pass over the stream's head chunk, from where the last one stopped: until the chunk
/// ends, or a doubtful row must wait for more rows after it (unless `complete`). Returns
/// the dead letters of the pass (payload index in the chunk, reason).
fn sequence_pass(s: &mut StreamIngest, complete: bool, now: Instant) -> Vec<(usize, Reject)> {
    let queue = s.queue.make_contiguous();
    let (head, later) = queue.split_first_mut().expect("the caller checked the queue is not empty");
    if std::mem::take(&mut head.fresh) {
        s.last_arrival = Some(now);
        s.idle_base = None;
        s.stats.received += head.chunk.raw.len() as u64;
    }
    let dead_late = s.def.late_policy == LatePolicy::DeadLetter;
    let max_future = s.def.max_future_ms;
    let raw = &head.chunk.raw;
    let times = &head.chunk.decoded.event_time;
    let errors = &head.chunk.errors;
    // The hot loop works on locals (cursors, per-row vectors, counters) and writes them back
    // once: through `head` and `s` every row they would be reloaded and stored each time.
    let (mut i, mut row, mut next_error) = (head.next_payload, head.next_row, head.next_error);
    let mut watermarks = std::mem::take(&mut head.watermarks);
    let mut split_watermarks = std::mem::take(&mut head.split_watermarks);
    let mut rejected = std::mem::take(&mut head.rejected);
    let (mut accepted, mut late, mut future_rows, mut invalid) = (0u64, 0u64, 0u64, 0u64);
    let tracker = &mut s.tracker;
    let mut dead = Vec::new();
    let mut warned = s.stats.time_warning.is_some();
    while i < raw.len() {
        if errors.get(next_error).is_some_and(|(e, _)| *e as usize == i) {
            dead.push((i, errors[next_error].1.clone()));
            next_error += 1;
            i += 1;
            invalid += 1;
            continue;
        }
        let t = times[row];
        let split = raw.splits[i] as usize;
        if let Some(max_future) = max_future {
            let arrival = raw.arrivals[i];
            let ahead = arrival != NO_ARRIVAL && future::ahead_of_arrival(t, arrival, max_future);
            let reason = if ahead {
                Some(ahead_of_arrival_reason(t, arrival, max_future))
            } else if suspect(t, arrival, tracker.split_max_event_time(split), max_future) {
                // Judged by the rows after it of its own split, whose order is fixed by the
                // input alone however the splits' reads interleave.
                let after = rows_of_split(&head.chunk, i + 1, row + 1, next_error, raw.splits[i])
                    .chain(later.iter().flat_map(|q| rows_of_split(&q.chunk, 0, 0, 0, raw.splits[i])));
                match future::judge(t, max_future, after, complete) {
                    Verdict::Accept => None,
                    Verdict::Future => Some(judged_future_reason(t, max_future)),
                    Verdict::Undecided => break,
                }
            } else {
                None
            };
            if let Some(reason) = reason {
                future_rows += 1;
                let wm = tracker.watermark();
                watermarks.push(wm);
                split_watermarks.push(wm);
                rejected.push(row);
                dead.push((i, reason));
                i += 1;
                row += 1;
                continue;
            }
        }
        match tracker.observe(split, t) {
            Observed::OnTime(wm) => {
                accepted += 1;
                watermarks.push(wm);
                split_watermarks.push(tracker.split_watermark(split));
                if t < PLAUSIBLE_FROM && !warned {
                    warned = true;
                    s.stats.time_warning = Some(unit_warning(&s.def, t));
                }
            }
            Observed::Late { behind_ms } => {
                late += 1;
                // Kept in place so rows and watermarks stay aligned; filtered out when sent.
                watermarks.push(tracker.watermark());
                split_watermarks.push(tracker.watermark());
                rejected.push(row);
                if dead_late {
                    dead.push((i, late_reason(behind_ms)));
                }
            }
        }
        i += 1;
        row += 1;
    }
    (head.next_payload, head.next_row, head.next_error) = (i, row, next_error);
    (head.watermarks, head.split_watermarks, head.rejected) = (watermarks, split_watermarks, rejected);
    if accepted > 0 {
        s.awaited_since = None;
    }
    s.stats.accepted += accepted;
    s.stats.late += late;
    s.stats.future += future_rows;
    s.stats.invalid += invalid;
    s.stats.watermark = s.tracker.watermark();
    dead
}

#[cold]
fn late_reason(behind_ms: Millis) -> Reject {
    Reject::new(RejectKind::Late, format!("late: {behind_ms} ms behind the watermark"))
}

#[cold]
fn ahead_of_arrival_reason(t: Millis, arrival: Millis, max_future: Millis) -> Reject {
    let message = format!(
        "future: {} ms ahead of its arrival at {} (max_future {max_future} ms)",
        t.saturating_sub(arrival),
        format_timestamp(arrival)
    );
    Reject::new(RejectKind::Future, message)
}

#[cold]
fn judged_future_reason(t: Millis, max_future: Millis) -> Reject {
    let message = format!(
        "future: {} is more than max_future ({max_future} ms) ahead of most of the {} events after it",
        format_timestamp(t),
        future::EVIDENCE_ROWS
    );
    Reject::new(RejectKind::Future, message)
}

#[cold]
fn unit_warning(def: &crate::schema::StreamDef, t: Millis) -> String {
    let warning = format!(
        "stream `{}`: event time {} is before 1990; if the source sends epoch seconds (or other units), set the stream's `time_unit` (now `{}`)",
        def.name,
        format_timestamp(t),
        def.time_unit.name()
    );
    tracing::warn!("{warning}");
    warning
}

/// Whether a row at `t` must be judged by the rows after it (see [`crate::future`]), given
/// its arrival time ([`NO_ARRIVAL`] for replays) and the newest event time of its split.
fn suspect(t: Millis, arrival: Millis, newest: Millis, max_future: Millis) -> bool {
    if arrival == NO_ARRIVAL {
        return future::is_suspect(t, newest, max_future);
    }
    // A live event close to its arrival is in no doubt; an old one (a backlog being read)
    // is judged like a replay's.
    t < arrival.saturating_sub(max_future) && future::is_suspect(t, newest, max_future)
}

/// Event times of the decoded rows of `split` in `chunk`, from payload `payload` (decoded
/// row `row`, next decode error `error`) on, in input order.
fn rows_of_split(
    chunk: &DecodedChunk,
    mut payload: usize,
    mut row: usize,
    mut error: usize,
    split: u32,
) -> impl Iterator<Item = Millis> + '_ {
    std::iter::from_fn(move || {
        while payload < chunk.raw.len() {
            let j = payload;
            payload += 1;
            if chunk.errors.get(error).is_some_and(|(e, _)| *e as usize == j) {
                error += 1;
                continue;
            }
            let r = row;
            row += 1;
            if chunk.raw.splits[j] == split {
                return Some(chunk.decoded.event_time[r]);
            }
        }
        None
    })
}

/// The rows of `batch` marked in `keep`, with their clocks (`clocks` covers at least every
/// kept row).
fn keep_rows(batch: &RecordBatch, keep: &[bool], clocks: &RowClocks) -> Result<(RecordBatch, RowClocks)> {
    let kept = filter_record_batch(batch, &BooleanArray::from(keep.to_vec()))?;
    Ok((kept, clocks.select(keep.iter().enumerate().filter(|(_, k)| **k).map(|(r, _)| r))))
}
