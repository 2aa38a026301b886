//! Parallel decoding: raw payloads are gathered into chunks, decoded and pre-routed on a
//! pool of threads, and handed back **in the order they were cut**.
//!
//! ```text
//!  push ──► RawChunk (bytes + ends + split + offset per payload, per stream)
//!             │ cut every `batch_size` payloads (or on flush / linger)
//!             ▼ round robin: chunk n goes to decoder n % D
//!  decoder 0 … decoder D−1: JSON → Arrow, key hash → partition, take() per partition
//!             ▼ collected from decoder n % D, so chunk n+1 never overtakes chunk n
//!  sequencer (the caller's thread): per-row watermarks, lateness, dead letters, send
//! ```
//!
//! Everything that depends on the order of rows — the watermark of each row, whether it is
//! late, which split holds the stream back — stays on one thread and sees the rows in input
//! order, so parallel decoding changes no alert. What moves to the pool is the work that
//! depends on one row alone: parsing, enrichment, the key hash and the gather into
//! per-partition batches. With `decoders: 0` the same chunks are decoded on the caller's
//! thread.

use std::collections::VecDeque;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use arrow::array::UInt32Array;
use arrow::compute::take_record_batch;
use arrow::record_batch::RecordBatch;
use crossbeam_channel::{Receiver, Sender, bounded};

use crate::decode::{DecodedBatch, Decoder};
use crate::error::{EngineError, Result};
use crate::keys::{partition_of, write_key};
use crate::plan::{KeyGroup, Plan};
use crate::reject::Reject;

/// The arrival time of a payload from a replay (no arrival time).
pub(crate) const NO_ARRIVAL: i64 = i64::MIN;

/// Raw payloads of one stream, in arrival order, waiting to be decoded.
#[derive(Debug, Default)]
pub(crate) struct RawChunk {
    pub stream: usize,
    bytes: Vec<u8>,
    ends: Vec<u32>,
    pub splits: Vec<u32>,
    /// Source position of each payload (a Kafka offset), for dead letters.
    pub offsets: Vec<i64>,
    /// Position of each payload among everything pushed into the pipeline: dead letters
    /// are released in this order.
    pub positions: Vec<u64>,
    /// When each payload arrived (ms since the epoch), for live sources; [`NO_ARRIVAL`]
    /// for replays (see [`crate::future`]).
    pub arrivals: Vec<i64>,
    /// The topic of payloads that came with one (MQTT), by payload index, ascending: their
    /// dead letters name it.
    pub topics: Vec<(u32, Arc<str>)>,
    /// Cut while its stream was restoring state (see [`crate::Pipeline::replay_split`]):
    /// every payload is input acknowledged before a restart.
    pub replayed: bool,
}

impl RawChunk {
    pub fn new(stream: usize) -> Self {
        RawChunk { stream, ..Default::default() }
    }

    pub fn push(&mut self, payload: &[u8], split: usize, offset: i64, position: u64, arrival: i64) {
        self.bytes.extend_from_slice(payload);
        self.ends.push(self.bytes.len() as u32);
        self.splits.push(split as u32);
        self.offsets.push(offset);
        self.positions.push(position);
        self.arrivals.push(arrival);
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Labels the payload pushed last with the topic it came from.
    pub fn label_last(&mut self, topic: Arc<str>) {
        if let Some(last) = self.ends.len().checked_sub(1) {
            self.topics.push((last as u32, topic));
        }
    }

    /// The topic payload `i` came from, if it was labelled.
    pub fn topic_of(&self, i: usize) -> Option<&Arc<str>> {
        self.topics.binary_search_by_key(&(i as u32), |(j, _)| *j).ok().map(|k| &self.topics[k].1)
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn payload(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.bytes[start..self.ends[i] as usize]
    }

    pub fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
        self.splits.clear();
        self.offsets.clear();
        self.positions.clear();
        self.arrivals.clear();
        self.topics.clear();
        self.replayed = false;
    }

    /// Bytes of payload held.
    pub fn bytes_len(&self) -> usize {
        self.bytes.len()
    }

    /// Position of the first payload.
    pub fn first_position(&self) -> Option<u64> {
        self.positions.first().copied()
    }
}

/// Rows of one partition for one key group: indices into the decoded batch, and those rows.
pub(crate) struct PartitionRows {
    pub partition: usize,
    pub rows: UInt32Array,
    pub batch: RecordBatch,
}

/// A decoded chunk, with the rows of each key group already split by partition.
pub(crate) struct DecodedChunk {
    pub raw: RawChunk,
    pub decoded: DecodedBatch,
    /// Payloads that failed to decode: index in the chunk, reason. Ascending.
    pub errors: Vec<(u32, Reject)>,
    /// Per key group: the non-empty partitions. Empty when there is one partition (every
    /// group then takes the whole batch).
    pub routed: Vec<Vec<PartitionRows>>,
    /// Time spent decoding and routing, ns.
    pub busy_ns: u64,
}

/// Decodes a chunk and splits each key group's rows by partition.
pub(crate) fn decode_chunk(
    decoder: &mut Decoder,
    groups: &[KeyGroup],
    partitions: usize,
    key_buf: &mut String,
    raw: RawChunk,
) -> Result<DecodedChunk> {
    let started = Instant::now();
    let mut errors = Vec::new();
    for i in 0..raw.len() {
        if let Err(reason) = decoder.push(raw.payload(i)) {
            errors.push((i as u32, reason));
        }
    }
    let decoded = decoder.finish();
    let routed = route_rows(&decoded, groups, partitions, key_buf)?;
    Ok(DecodedChunk { raw, decoded, errors, routed, busy_ns: started.elapsed().as_nanos() as u64 })
}

/// Splits each key group's rows of a decoded batch by partition (nothing with one).
pub(crate) fn route_rows(
    decoded: &DecodedBatch,
    groups: &[KeyGroup],
    partitions: usize,
    key_buf: &mut String,
) -> Result<Vec<Vec<PartitionRows>>> {
    let mut routed = Vec::new();
    if partitions > 1 {
        let batch = &decoded.batch;
        for group in groups {
            let key_cols: Vec<_> = group.key_fields.iter().map(|&c| batch.column(c).clone()).collect();
            let mut rows: Vec<Vec<u32>> = vec![Vec::new(); partitions];
            for row in 0..batch.num_rows() {
                write_key(&key_cols, row, key_buf);
                rows[partition_of(key_buf, partitions)].push(row as u32);
            }
            let mut parts = Vec::new();
            for (partition, rows) in rows.into_iter().enumerate().filter(|(_, r)| !r.is_empty()) {
                let rows = UInt32Array::from(rows);
                let batch =
                    if rows.len() == batch.num_rows() { batch.clone() } else { take_record_batch(batch, &rows)? };
                parts.push(PartitionRows { partition, rows, batch });
            }
            routed.push(parts);
        }
    }
    Ok(routed)
}

/// One decoder per stream with the fields its rules read.
pub(crate) fn stream_decoders(plan: &Plan, batch_size: usize) -> Vec<Decoder> {
    plan.streams
        .iter()
        .enumerate()
        .map(|(i, def)| Decoder::with_fields(def.clone(), batch_size, plan.needed_fields(i)))
        .collect()
}

/// Where chunks are decoded: on the caller's thread (always possible), and on a pool that
/// returns them in order (when there is one).
pub(crate) struct Decoding {
    decoders: Vec<Decoder>,
    groups: Vec<Vec<KeyGroup>>,
    partitions: usize,
    key_buf: String,
    pub pool: Option<DecodePool>,
    /// Time spent decoding on the caller's thread, ns.
    pub local_busy_ns: u64,
}

impl Decoding {
    pub fn new(plan: &Arc<Plan>, threads: usize, partitions: usize, batch_size: usize) -> Decoding {
        Decoding {
            decoders: stream_decoders(plan, batch_size),
            groups: (0..plan.streams.len()).map(|s| plan.key_groups(s)).collect(),
            partitions,
            key_buf: String::new(),
            pool: (threads > 0).then(|| DecodePool::start(plan, threads, partitions, batch_size)),
            local_busy_ns: 0,
        }
    }

    /// Decodes a chunk on the caller's thread.
    pub fn decode_here(&mut self, raw: RawChunk) -> Result<DecodedChunk> {
        let s = raw.stream;
        let chunk = decode_chunk(&mut self.decoders[s], &self.groups[s], self.partitions, &mut self.key_buf, raw)?;
        self.local_busy_ns += chunk.busy_ns;
        Ok(chunk)
    }

    /// Decodes one payload of `stream` on the caller's thread, as it arrives (see
    /// [`Decoding::finish_here`]).
    pub fn decode_one_here(&mut self, stream: usize, payload: &[u8]) -> Result<(), Reject> {
        self.decoders[stream].push(payload)
    }

    /// The payloads of `raw` already decoded one by one with [`Decoding::decode_one_here`]
    /// (`errors`: those that failed), as a decoded chunk.
    pub fn finish_here(&mut self, raw: RawChunk, errors: Vec<(u32, Reject)>) -> Result<DecodedChunk> {
        let s = raw.stream;
        let started = Instant::now();
        let decoded = self.decoders[s].finish();
        let routed = route_rows(&decoded, &self.groups[s], self.partitions, &mut self.key_buf)?;
        let busy_ns = started.elapsed().as_nanos() as u64;
        self.local_busy_ns += busy_ns;
        Ok(DecodedChunk { raw, decoded, errors, routed, busy_ns })
    }

    /// True when no chunk is being decoded on the pool.
    pub fn pool_idle(&self) -> bool {
        self.pool.as_ref().is_none_or(|p| p.in_flight.is_empty())
    }
}

/// Decoder threads fed round robin; results are taken back in dispatch order.
pub(crate) struct DecodePool {
    inputs: Vec<Sender<RawChunk>>,
    outputs: Vec<Receiver<Result<DecodedChunk>>>,
    handles: Vec<JoinHandle<()>>,
    /// Decoder the next chunk goes to.
    next: usize,
    /// Chunks dispatched and not yet taken back, oldest first: their decoder and the
    /// position of their first payload.
    in_flight: VecDeque<(usize, u64)>,
    max_in_flight: usize,
    /// Busy time per decoder thread, ns, as reported with each chunk.
    pub busy_ns: Vec<u64>,
}

impl DecodePool {
    fn start(plan: &Arc<Plan>, threads: usize, partitions: usize, batch_size: usize) -> DecodePool {
        // Two chunks per decoder: one being decoded, one queued behind it.
        let max_in_flight = 2 * threads;
        let mut inputs = Vec::with_capacity(threads);
        let mut outputs = Vec::with_capacity(threads);
        let mut handles = Vec::with_capacity(threads);
        for index in 0..threads {
            // Capacities cover every chunk that can be in flight, so a decoder never blocks
            // on its output and the sequencer never deadlocks against it.
            let (in_tx, in_rx) = bounded::<RawChunk>(max_in_flight);
            let (out_tx, out_rx) = bounded::<Result<DecodedChunk>>(max_in_flight);
            let plan = plan.clone();
            let handle = std::thread::Builder::new()
                .name(format!("gridwatch-decode-{index}"))
                .spawn(move || {
                    let mut decoders = stream_decoders(&plan, batch_size);
                    let groups: Vec<Vec<KeyGroup>> = (0..plan.streams.len()).map(|s| plan.key_groups(s)).collect();
                    let mut key_buf = String::new();
                    for raw in in_rx {
                        let s = raw.stream;
                        let result = decode_chunk(&mut decoders[s], &groups[s], partitions, &mut key_buf, raw);
                        if out_tx.send(result).is_err() {
                            break;
                        }
                    }
                })
                .expect("spawning a decoder thread");
            inputs.push(in_tx);
            outputs.push(out_rx);
            handles.push(handle);
        }
        DecodePool {
            inputs,
            outputs,
            handles,
            next: 0,
            in_flight: VecDeque::with_capacity(max_in_flight),
            max_in_flight,
            busy_ns: vec![0; threads],
        }
    }

    /// True when another chunk can be dispatched without first taking one back.
    pub fn has_room(&self) -> bool {
        self.in_flight.len() < self.max_in_flight
    }

    /// Sends a chunk to the next decoder. The caller makes room first ([`Self::has_room`]).
    pub fn dispatch(&mut self, raw: RawChunk) -> Result<()> {
        let d = self.next;
        let first = raw.first_position().unwrap_or(u64::MAX);
        self.inputs[d].send(raw).map_err(|_| EngineError::DecoderGone(d))?;
        self.in_flight.push_back((d, first));
        self.next = (d + 1) % self.inputs.len();
        Ok(())
    }

    /// The oldest chunk in flight: waits for it if `block`, else only if it is ready.
    pub fn take_oldest(&mut self, block: bool) -> Result<Option<DecodedChunk>> {
        let Some(&(d, _)) = self.in_flight.front() else { return Ok(None) };
        let result = if block {
            self.outputs[d].recv().map_err(|_| EngineError::DecoderGone(d))?
        } else {
            match self.outputs[d].try_recv() {
                Ok(r) => r,
                Err(crossbeam_channel::TryRecvError::Empty) => return Ok(None),
                Err(crossbeam_channel::TryRecvError::Disconnected) => return Err(EngineError::DecoderGone(d)),
            }
        };
        self.in_flight.pop_front();
        let chunk = result?;
        self.busy_ns[d] += chunk.busy_ns;
        Ok(Some(chunk))
    }

    /// The earliest position of a payload still being decoded.
    pub fn earliest_in_flight(&self) -> Option<u64> {
        self.in_flight.iter().map(|&(_, first)| first).min()
    }

    /// Stops the threads (after the chunks in flight were taken back).
    pub fn join(self) {
        drop(self.inputs);
        for h in self.handles {
            let _ = h.join();
        }
    }
}
