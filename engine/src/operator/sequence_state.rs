//! Snapshot records of sequence rules (see [`crate::state`]): one [`SequenceRecord`] per
//! key with partial matches or rows held back.
//!
//! Operator-wide state:
//! - **Per-stream watermarks** are not in the records. The pipeline re-sends each stream's
//!   watermark at restore, before any row, and [`SequenceOperator::advance_stream`] sets
//!   them; a stream that had no watermark yet is not re-sent and stays at the start, as it
//!   was. Once every re-sent stream is in, the bound (the least watermark) is where it was
//!   at the snapshot: the rows held below it and the timers due before it had already been
//!   evaluated and fired then, so the re-sent watermarks release nothing twice, and a
//!   restored row is released by the first watermark past it, as it would have been.
//! - **The arrival and evaluation counters** only order one key's rows and partial matches
//!   among themselves (ties in time and rank; SKIP PAST LAST ROW and completion order by
//!   `start_seq`/`last_seq`), so a restored operator continues each above every restored
//!   value: what comes after the restore is ordered after what came before, as it is in
//!   the uninterrupted operator.
//! - **`partials_dropped`** is a counter of the whole operator: the first record written
//!   carries it (with no key with state, a record with no state of the first key seen
//!   does) and a restore adds each record's part, so the sum over the workers of a
//!   restored run continues the one of the run that wrote the snapshot.

use std::cmp::Reverse;

use serde::{Deserialize, Serialize};

use super::{KeyState, Partial, Pending, SequenceOperator, link_parts, push_link};
use crate::error::{EngineError, Result};
use crate::keys::{ByteSlab, SlabRef};
use crate::state::{KeyStates, decode};
use crate::time::Millis;

/// The state of one key of a sequence rule.
#[derive(Debug, Serialize, Deserialize)]
struct SequenceRecord {
    /// Its partial matches, in creation order (the order `max_partial` drops them in).
    partials: Vec<PartialRecord>,
    /// Its rows waiting for every stream's watermark, in evaluation order.
    pending: Vec<PendingRecord>,
    /// The key's earliest live timer (`Millis::MAX`: none), scheduled again on restore.
    scheduled: Millis,
    /// Partial matches the operator dropped for `max_partial` (see the module docs).
    dropped: u64,
}

/// A partial match with its evidence.
#[derive(Debug, Serialize, Deserialize)]
struct PartialRecord {
    /// First step's event time (the alert's episode start), last matched event's time,
    /// and the time step `within`s count from.
    start: Millis,
    last: Millis,
    step_base: Millis,
    /// Evaluation numbers of its first and last matched events.
    start_seq: u64,
    last_seq: u64,
    /// The positive step awaited (the number of steps: waiting for the trailing `not`s'
    /// deadline), and how many events of it matched so far (`times`).
    next: u16,
    count: u32,
    /// The evidence chain, oldest first: (step, compact row) per matched event.
    chain: Vec<(u8, Vec<u8>)>,
}

/// A row held until every stream's watermark has passed it.
#[derive(Debug, Serialize, Deserialize)]
struct PendingRecord {
    /// Its place in the evaluation order: event time, rank of its stream, arrival number.
    t: Millis,
    rank: u8,
    seq: u64,
    /// The rule's input it came from, and the steps whose event-only condition it passes.
    input: u8,
    mask: u16,
    /// Its compact row.
    row: Vec<u8>,
}

/// The links of the chain ending at `head`, oldest first.
fn chain_of(evidence: &ByteSlab, mut head: SlabRef) -> Vec<(u8, Vec<u8>)> {
    let mut links = Vec::new();
    while head.is_some() {
        let (prev, step, row) = link_parts(evidence.get(head));
        links.push((step as u8, row.to_vec()));
        head = prev;
    }
    links.reverse();
    links
}

impl SequenceOperator {
    /// See [`crate::operator::Operator::snapshot`].
    pub(super) fn snapshot_keys(&self, out: &mut KeyStates) -> Result<()> {
        let mut pending: Vec<Vec<PendingRecord>> = (0..self.keys.len()).map(|_| Vec::new()).collect();
        for Reverse(p) in &self.pending {
            pending[p.slot as usize].push(PendingRecord {
                t: p.t,
                rank: p.rank,
                seq: p.seq,
                input: p.input,
                mask: p.mask,
                row: self.rows.get(p.row).to_vec(),
            });
        }
        let mut dropped = self.dropped;
        for (slot, mut rows) in pending.into_iter().enumerate() {
            let (key, st) = self.keys.entry(slot as u32);
            // With no partial match and no held row, a key is as good as new (a timer it may
            // still have has nothing to settle).
            if st.partials.is_empty() && rows.is_empty() {
                continue;
            }
            rows.sort_unstable_by_key(|p| (p.t, p.rank, p.seq));
            let partials = st
                .partials
                .iter()
                .map(|p| PartialRecord {
                    start: p.start,
                    last: p.last,
                    step_base: p.step_base,
                    start_seq: p.start_seq,
                    last_seq: p.last_seq,
                    next: p.next,
                    count: p.count,
                    chain: chain_of(&self.evidence, p.head),
                })
                .collect();
            let record = SequenceRecord {
                partials,
                pending: rows,
                scheduled: st.scheduled,
                dropped: std::mem::take(&mut dropped),
            };
            out.push(key, &record)?;
        }
        if dropped > 0 && !self.keys.is_empty() {
            // No key has state: the counter rides on a key seen, restored with none.
            let record = SequenceRecord { partials: Vec::new(), pending: Vec::new(), scheduled: Millis::MAX, dropped };
            out.push(self.keys.entry(0).0, &record)?;
        }
        Ok(())
    }

    /// See [`crate::operator::Operator::restore`].
    pub(super) fn restore_key(&mut self, key: &str, bytes: &[u8]) -> Result<()> {
        let r: SequenceRecord = decode(&self.rule.meta.id, key, bytes)?;
        // A record that decodes but does not fit the rule's steps and inputs would index
        // out of bounds later: refuse it now.
        let (steps, inputs) = (self.shape.plan.steps.len(), self.shape.plan.inputs.len());
        let reason = if let Some(p) = r.pending.iter().find(|p| usize::from(p.input) >= inputs) {
            Some(format!("a held row of input {} (the rule reads {inputs})", p.input))
        } else if let Some(p) = r.partials.iter().find(|p| usize::from(p.next) > steps) {
            Some(format!("a partial match awaiting step {} (the rule has {steps})", p.next))
        } else if r.partials.iter().flat_map(|p| &p.chain).any(|(s, _)| usize::from(*s) >= steps) {
            Some(format!("evidence of a step past the rule's {steps}"))
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(EngineError::BadState { rule: self.rule.meta.id.to_string(), key: key.to_string(), reason });
        }
        let slot = self.keys.slot(key, KeyState::default);
        let mut partials = Vec::with_capacity(r.partials.len());
        for p in r.partials {
            let mut head = SlabRef::NONE;
            for (step, row) in &p.chain {
                head = push_link(&mut self.evidence, &mut self.link_buf, head, usize::from(*step), row);
            }
            // Rows evaluated after the restore are numbered after every restored match.
            self.evaluated = self.evaluated.max(p.start_seq).max(p.last_seq);
            partials.push(Partial {
                start: p.start,
                last: p.last,
                step_base: p.step_base,
                start_seq: p.start_seq,
                last_seq: p.last_seq,
                head,
                next: p.next,
                count: p.count,
            });
        }
        *self.keys.state_mut(slot) = KeyState { partials, scheduled: r.scheduled };
        if r.scheduled != Millis::MAX {
            self.timers.schedule(r.scheduled, slot);
        }
        // The record's timer is never after the key's earliest due partial; this only
        // matters for a record that breaks that (it then gets the timer it needs).
        self.schedule(slot);
        for p in r.pending {
            let row = self.rows.insert(&p.row);
            self.pending.push(Reverse(Pending {
                t: p.t,
                rank: p.rank,
                seq: p.seq,
                slot,
                input: p.input,
                mask: p.mask,
                row,
            }));
            // Rows that arrive after the restore come after every restored one in ties.
            self.arrivals = self.arrivals.max(p.seq);
        }
        self.dropped += r.dropped;
        Ok(())
    }
}
