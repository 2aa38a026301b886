//! Sequence rules: steps matched in event-time order, across streams, per correlation key.
//!
//! **Ordering.** Rows of the rule's streams that can take part in a match (they pass some
//! step's event-only condition, or feed a `contiguous` step) are held in one min-heap,
//! ordered by (event time, rank of the row's stream — the index of the first step that
//! reads it — arrival). A row is evaluated only once the watermark of *every* stream the
//! rule reads has passed it: no row before it can arrive any more, so the order of
//! evaluation, and with it the alerts, does not depend on how the streams' batches
//! interleaved on the way to this worker.
//!
//! **Matching.** Per key, a list of partial matches in creation order. Each waits for its
//! next positive step; the first later event that satisfies it advances it
//! (skip-till-next-match). `not` steps are guards: between two positive steps, a matching
//! event kills the partial; after the last one, the partial waits until its deadline and
//! completes when the watermark passes it with no guard event seen. A partial expires when
//! it can no longer complete (`within`). On completion the key's partial matches holding an
//! event at or before the match's last event are discarded (SKIP PAST LAST ROW).
//!
//! **Memory.** A partial match is 56 bytes; its evidence is a chain of compact rows in one
//! [`ByteSlab`] (each link: the previous link, the step, the row), so extending a match
//! copies one row and allocates nothing per event.

#[path = "sequence_state.rs"]
mod state;

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::sync::Arc;

use arrow::buffer::BooleanBuffer;

use super::{BatchInput, Operator, Timers, shared_mask};
use crate::alert::{Alert, AlertParts, AlertState};
use crate::error::Result;
use crate::keys::{ByteSlab, KeyTable, SlabRef, compact_cell, compact_row_into, compact_row_to_json, write_key};
use crate::plan::{RuleKind, RulePlan, SequencePlan};
use crate::rowexpr::RowSource;
use crate::schema::StreamDef;
use crate::state::KeyStates;
use crate::time::{Millis, WATERMARK_START};

/// A row waiting for every input's watermark to pass it.
#[derive(Debug)]
struct Pending {
    t: Millis,
    rank: u8,
    seq: u64,
    slot: u32,
    input: u8,
    /// Bit `j`: the row passes step `j`'s event-only condition.
    mask: u16,
    row: SlabRef,
}

impl Pending {
    fn order(&self) -> (Millis, u8, u64) {
        (self.t, self.rank, self.seq)
    }
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        self.order() == other.order()
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    fn cmp(&self, other: &Self) -> Ordering {
        self.order().cmp(&other.order())
    }
}

/// One partial match.
#[derive(Debug, Clone, Copy)]
struct Partial {
    /// First step's event time (the alert's episode start).
    start: Millis,
    /// Last matched event's time.
    last: Millis,
    /// Time of the last event of the previous step: step `within`s count from it.
    step_base: Millis,
    /// Evaluation sequence number of the first and the last matched events.
    start_seq: u64,
    last_seq: u64,
    /// Newest link of the evidence chain.
    head: SlabRef,
    /// The positive step awaited, or `steps.len()`: all matched, waiting for the deadline
    /// of the trailing `not` steps.
    next: u16,
    /// Events matched so far for step `next` (`times`).
    count: u32,
}

/// See [`SequenceOperator::partial_memory`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartialMemory {
    /// Open partial matches.
    pub open: usize,
    /// Bytes of their records.
    pub record_bytes: usize,
    /// Bytes of their evidence.
    pub evidence_bytes: usize,
}

#[derive(Debug)]
struct KeyState {
    partials: Vec<Partial>,
    /// The key's earliest live timer (`Millis::MAX`: none), never after the earliest due
    /// partial: a row before it has nothing to settle, and only an earlier due needs a
    /// new timer (one per row would grow the heap by one entry per event).
    scheduled: Millis,
}

impl Default for KeyState {
    fn default() -> Self {
        KeyState { partials: Vec::new(), scheduled: Millis::MAX }
    }
}

/// The rule's shape, precomputed from its plan.
#[derive(Debug)]
struct Shape {
    plan: SequencePlan,
    /// Per plan stream: the input index, if the rule reads it.
    input_of_stream: Vec<Option<usize>>,
    /// Per input: index of the first step that reads it (ties in event time go by it).
    rank: Vec<u8>,
    /// Per input: it feeds a `contiguous` step, so every row of it is held.
    hold_all: Vec<bool>,
    /// Per step: the next positive step after it (`steps.len()` if none).
    next_positive: Vec<usize>,
    /// Per positive step: the `not` steps between the previous positive step and it.
    guards_before: Vec<Vec<usize>>,
    /// The `not` steps after the last positive step.
    trailing: Vec<usize>,
    /// Per input: field names, for evidence.
    names: Vec<Vec<String>>,
}

impl Shape {
    fn new(plan: SequencePlan, streams: &[Arc<StreamDef>]) -> Shape {
        let n = plan.steps.len();
        let mut input_of_stream = vec![None; streams.len()];
        for (i, input) in plan.inputs.iter().enumerate() {
            input_of_stream[input.stream] = Some(i);
        }
        let rank =
            (0..plan.inputs.len()).map(|i| plan.steps.iter().position(|s| s.input == i).unwrap_or(n) as u8).collect();
        let hold_all =
            (0..plan.inputs.len()).map(|i| plan.steps.iter().any(|s| s.input == i && s.contiguous)).collect();
        let next_positive =
            (0..n).map(|j| (j + 1..n).find(|&k| !plan.steps[k].negated).unwrap_or(n)).collect::<Vec<_>>();
        let mut guards_before = vec![Vec::new(); n];
        let mut guards = Vec::new();
        for (j, step) in plan.steps.iter().enumerate() {
            if step.negated {
                guards.push(j);
            } else {
                guards_before[j] = std::mem::take(&mut guards);
            }
        }
        let names =
            plan.inputs.iter().map(|i| streams[i.stream].fields.iter().map(|f| f.name.clone()).collect()).collect();
        Shape { plan, input_of_stream, rank, hold_all, next_positive, guards_before, trailing: guards, names }
    }

    fn done(&self) -> u16 {
        self.plan.steps.len() as u16
    }

    /// Last time at which `p` can still take its next step (it expires after it).
    fn expiry(&self, p: &Partial) -> Millis {
        let step = &self.plan.steps[p.next as usize];
        let by_rule = self.plan.within_ms.map_or(Millis::MAX, |w| p.start.saturating_add(w));
        let by_step = step.within_ms.map_or(Millis::MAX, |w| p.step_base.saturating_add(w));
        by_rule.min(by_step)
    }

    /// When a partial waiting on trailing `not` steps completes: the latest guard end.
    fn deadline(&self, p: &Partial) -> Millis {
        self.trailing.iter().map(|&g| self.guard_end(g, p)).max().unwrap_or(p.last)
    }

    /// Last time at which an event of guard `g` still kills `p`.
    fn guard_end(&self, g: usize, p: &Partial) -> Millis {
        match self.plan.steps[g].within_ms {
            Some(w) => p.step_base.saturating_add(w),
            None => self.plan.within_ms.map_or(Millis::MAX, |w| p.start.saturating_add(w)),
        }
    }

    /// When the operator must look at `p` again without an event of its key.
    fn due(&self, p: &Partial) -> Millis {
        if p.next == self.done() { self.deadline(p) } else { self.expiry(p) }
    }
}

/// The rows a step condition reads: the event tried and the partial's evidence chain.
struct ChainRows<'a> {
    current: &'a [u8],
    evidence: &'a ByteSlab,
    head: SlabRef,
}

/// A link of an evidence chain: previous link (4 bytes), step (1 byte), compact row.
const LINK_HEADER: usize = 5;

fn link_parts(bytes: &[u8]) -> (SlabRef, usize, &[u8]) {
    let prev = SlabRef::from_bits(u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes")));
    (prev, bytes[4] as usize, &bytes[LINK_HEADER..])
}

/// The newest event of `step` in the chain ending at `head`.
fn step_row(evidence: &ByteSlab, mut head: SlabRef, step: usize) -> &[u8] {
    while head.is_some() {
        let (prev, s, row) = link_parts(evidence.get(head));
        if s == step {
            return row;
        }
        head = prev;
    }
    &[]
}

impl<'a> RowSource<'a> for ChainRows<'a> {
    fn row(&self, step: Option<usize>) -> &'a [u8] {
        match step {
            None => self.current,
            Some(s) => step_row(self.evidence, self.head, s),
        }
    }
}

/// See the module docs.
pub struct SequenceOperator {
    rule: Arc<RulePlan>,
    shape: Shape,
    stream_name: String,
    /// Per input: the watermark reached.
    watermarks: Vec<Millis>,
    pending: BinaryHeap<Reverse<Pending>>,
    /// Compact rows of pending events.
    rows: ByteSlab,
    /// Evidence chains of partial matches.
    evidence: ByteSlab,
    keys: KeyTable<KeyState>,
    timers: Timers,
    /// Arrival counter (ties in time and rank) and evaluation counter (partial order).
    arrivals: u64,
    evaluated: u64,
    dropped: u64,
    key_buf: String,
    row_buf: Vec<u8>,
    link_buf: Vec<u8>,
    masks: Vec<(usize, Option<BooleanBuffer>)>,
}

impl std::fmt::Debug for SequenceOperator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SequenceOperator").field("rule", &self.rule.meta.id).finish_non_exhaustive()
    }
}

impl SequenceOperator {
    /// The operator of a sequence rule; `streams` are the plan's streams.
    ///
    /// # Panics
    /// If the rule is not a sequence (a bug in [`super::build`]).
    pub fn new(rule: Arc<RulePlan>, streams: &[Arc<StreamDef>]) -> SequenceOperator {
        let RuleKind::Sequence(plan) = &rule.kind else { panic!("SequenceOperator::new needs a sequence rule") };
        let shape = Shape::new(plan.clone(), streams);
        let inputs = plan.inputs.len();
        SequenceOperator {
            stream_name: streams[plan.inputs[0].stream].name.clone(),
            rule,
            shape,
            watermarks: vec![WATERMARK_START; inputs],
            pending: BinaryHeap::new(),
            rows: ByteSlab::default(),
            evidence: ByteSlab::default(),
            keys: KeyTable::default(),
            timers: Timers::default(),
            arrivals: 0,
            evaluated: 0,
            dropped: 0,
            key_buf: String::new(),
            row_buf: Vec::new(),
            link_buf: Vec::new(),
            masks: Vec::new(),
        }
    }

    /// Evaluates the held rows before `bound`, then what is due before `fire_bound`.
    fn release(&mut self, bound: Millis, fire_bound: Millis, out: &mut Vec<Alert>) {
        while self.pending.peek().is_some_and(|Reverse(p)| p.t < bound) {
            let Reverse(row) = self.pending.pop().expect("peeked");
            self.evaluate(&row, out);
            self.rows.remove(row.row);
        }
        while let Some((due, slot)) = self.timers.pop_due(fire_bound.saturating_sub(1)) {
            let st = self.keys.state_mut(slot);
            if st.scheduled == due {
                st.scheduled = Millis::MAX;
            }
            self.settle(slot, fire_bound, out);
            self.schedule(slot);
        }
    }

    fn schedule(&mut self, slot: u32) {
        let shape = &self.shape;
        let st = self.keys.state_mut(slot);
        if let Some(due) = st.partials.iter().map(|p| shape.due(p)).min()
            && due < st.scheduled
        {
            st.scheduled = due;
            self.timers.schedule(due, slot);
        }
    }

    /// Completes the key's partial matches whose trailing deadline is before `bound` (in
    /// deadline order) and drops those expired before it.
    fn settle(&mut self, slot: u32, bound: Millis, out: &mut Vec<Alert>) {
        let done = self.shape.done();
        loop {
            let state = self.keys.state_mut(slot);
            let next = state
                .partials
                .iter()
                .enumerate()
                .filter(|(_, p)| p.next == done)
                .map(|(i, p)| (self.shape.deadline(p), p.start_seq, i))
                .filter(|&(d, _, _)| d < bound)
                .min();
            let Some((deadline, _, i)) = next else { break };
            let p = state.partials.remove(i);
            self.complete(slot, &p, deadline, out);
        }
        let (shape, evidence) = (&self.shape, &mut self.evidence);
        self.keys.state_mut(slot).partials.retain(|p| {
            let keep = p.next == done || shape.expiry(p) >= bound;
            if !keep {
                free_chain(evidence, p.head);
            }
            keep
        });
    }

    /// Raises the alert of a completed match and discards the key's partial matches that
    /// hold an event at or before its last one.
    fn complete(&mut self, slot: u32, p: &Partial, event_time: Millis, out: &mut Vec<Alert>) {
        let alert = self.alert(slot, p, event_time);
        out.push(alert);
        free_chain(&mut self.evidence, p.head);
        let evidence = &mut self.evidence;
        self.keys.state_mut(slot).partials.retain(|q| {
            let keep = q.start_seq > p.last_seq;
            if !keep {
                free_chain(evidence, q.head);
            }
            keep
        });
    }

    fn alert(&mut self, slot: u32, p: &Partial, event_time: Millis) -> Alert {
        let steps = &self.shape.plan.steps;
        let mut links = Vec::new();
        let mut head = p.head;
        while head.is_some() {
            let (prev, step, row) = link_parts(self.evidence.get(head));
            links.push((step, row));
            head = prev;
        }
        links.reverse();
        let mut values = serde_json::Map::new();
        for (j, step) in steps.iter().enumerate().filter(|(_, s)| !s.negated) {
            let row = step_row(&self.evidence, p.head, j);
            let names = &self.shape.names[step.input];
            for &c in &step.columns {
                let v = compact_cell(row, c).map_or(serde_json::Value::Null, |cell| cell.to_json());
                values.insert(format!("{}.{}", step.name, names[c]), v);
            }
        }
        let evidence = links
            .into_iter()
            .map(|(step, row)| {
                let mut v = compact_row_to_json(row, &self.shape.names[steps[step].input]);
                if let serde_json::Value::Object(o) = &mut v {
                    o.insert("_step".into(), steps[step].name.clone().into());
                }
                v
            })
            .collect();
        let (key, _) = self.keys.entry_mut(slot);
        let parts = AlertParts {
            key: key.to_string(),
            state: AlertState::Firing,
            event_time,
            episode_start: p.start,
            notification: 1,
            values,
            evidence,
        };
        Alert::new(&self.rule.meta, &self.stream_name, parts)
    }

    /// Evaluates one released row against its key's partial matches.
    fn evaluate(&mut self, e: &Pending, out: &mut Vec<Alert>) {
        self.evaluated += 1;
        let seq = self.evaluated;
        if self.keys.state_mut(e.slot).scheduled < e.t {
            self.settle(e.slot, e.t, out);
        }
        let done = self.shape.done();
        let mut completed = None;
        {
            let shape = &self.shape;
            let steps = &shape.plan.steps;
            let (rows, evidence) = (&self.rows, &mut self.evidence);
            let current = rows.get(e.row);
            let input = e.input as usize;
            let hits = |j: usize, head: SlabRef, evidence: &ByteSlab| {
                let step = &steps[j];
                step.input == input
                    && e.mask & (1 << j) != 0
                    && step.refs.as_ref().is_none_or(|x| x.matches(&ChainRows { current, evidence, head }))
            };
            let partials = &mut self.keys.state_mut(e.slot).partials;
            let mut i = 0;
            while i < partials.len() {
                let p = partials[i];
                let guards: &[usize] =
                    if p.next == done { &shape.trailing } else { &shape.guards_before[p.next as usize] };
                let killed = guards.iter().any(|&g| e.t <= shape.guard_end(g, &p) && hits(g, p.head, evidence));
                if killed {
                    free_chain(evidence, p.head);
                    partials.remove(i);
                    continue;
                }
                if p.next == done {
                    i += 1;
                    continue;
                }
                let j = p.next as usize;
                if hits(j, p.head, evidence) {
                    let q = &mut partials[i];
                    q.head = push_link(evidence, &mut self.link_buf, q.head, j, current);
                    q.count += 1;
                    q.last = e.t;
                    q.last_seq = seq;
                    if q.count >= steps[j].times {
                        q.count = 0;
                        q.step_base = e.t;
                        q.next = shape.next_positive[j] as u16;
                        if q.next == done && shape.trailing.is_empty() {
                            completed = Some(partials.remove(i));
                            break;
                        }
                    }
                    i += 1;
                } else if steps[j].contiguous && steps[j].input == input {
                    free_chain(evidence, p.head);
                    partials.remove(i);
                } else {
                    i += 1;
                }
            }
            if completed.is_none() && hits(0, SlabRef::NONE, evidence) {
                let mut p = Partial {
                    start: e.t,
                    last: e.t,
                    step_base: e.t,
                    start_seq: seq,
                    last_seq: seq,
                    head: push_link(evidence, &mut self.link_buf, SlabRef::NONE, 0, current),
                    next: 0,
                    count: 1,
                };
                if steps[0].times <= 1 {
                    p.count = 0;
                    p.next = shape.next_positive[0] as u16;
                }
                if p.next == done && shape.trailing.is_empty() {
                    completed = Some(p);
                } else {
                    if partials.len() >= shape.plan.max_partial {
                        let oldest = partials.remove(0);
                        free_chain(evidence, oldest.head);
                        self.dropped += 1;
                    }
                    partials.push(p);
                }
            }
        }
        if let Some(p) = completed {
            self.complete(e.slot, &p, p.last, out);
        }
        self.schedule(e.slot);
    }

    /// Memory of the open partial matches: how many there are, the bytes of their records
    /// (reserved `Vec` capacity included) and of their evidence chains (the arena, free
    /// blocks included).
    pub fn partial_memory(&self) -> PartialMemory {
        let (mut open, mut reserved) = (0, 0);
        for slot in 0..self.keys.len() as u32 {
            let partials = &self.keys.get(slot).partials;
            open += partials.len();
            reserved += partials.capacity();
        }
        PartialMemory {
            open,
            record_bytes: reserved * std::mem::size_of::<Partial>(),
            evidence_bytes: self.evidence.arena_len(),
        }
    }

    fn input_index(&self, stream: usize) -> Option<usize> {
        self.shape.input_of_stream.get(stream).copied().flatten()
    }

    fn min_watermark(&self) -> Millis {
        self.watermarks.iter().copied().min().unwrap_or(WATERMARK_START)
    }
}

fn push_link(evidence: &mut ByteSlab, buf: &mut Vec<u8>, prev: SlabRef, step: usize, row: &[u8]) -> SlabRef {
    buf.clear();
    buf.extend_from_slice(&prev.to_bits().to_le_bytes());
    buf.push(step as u8);
    buf.extend_from_slice(row);
    evidence.insert(buf)
}

fn free_chain(evidence: &mut ByteSlab, mut head: SlabRef) {
    while head.is_some() {
        let (prev, _, _) = link_parts(evidence.get(head));
        evidence.remove(head);
        head = prev;
    }
}

impl Operator for SequenceOperator {
    fn process_rows(&mut self, input: &BatchInput<'_>, _out: &mut Vec<Alert>) -> Result<()> {
        let Some(inp) = self.input_index(input.stream) else { return Ok(()) };
        let batch = input.batch;
        let mut masks = std::mem::take(&mut self.masks);
        masks.clear();
        for (j, step) in self.shape.plan.steps.iter().enumerate().filter(|(_, s)| s.input == inp) {
            let mask = match &step.filter {
                None => None,
                Some(p) => Some(shared_mask(&self.rule, "where", p, input)?),
            };
            masks.push((j, mask));
        }
        let key_columns: Vec<_> =
            self.shape.plan.inputs[inp].key_fields.iter().map(|&c| batch.column(c).clone()).collect();
        let hold_all = self.shape.hold_all[inp];
        let rank = self.shape.rank[inp];
        for row in 0..batch.num_rows() {
            let mut mask = 0u16;
            for (j, m) in &masks {
                if m.as_ref().is_none_or(|m| m.value(row)) {
                    mask |= 1 << j;
                }
            }
            if (mask == 0 && !hold_all) || key_columns.iter().any(|c| c.is_null(row)) {
                continue;
            }
            write_key(&key_columns, row, &mut self.key_buf);
            let slot = self.keys.slot(&self.key_buf, KeyState::default);
            compact_row_into(batch, row, &mut self.row_buf);
            self.arrivals += 1;
            self.pending.push(Reverse(Pending {
                t: input.times[row],
                rank,
                seq: self.arrivals,
                slot,
                input: inp as u8,
                mask,
                row: self.rows.insert(&self.row_buf),
            }));
        }
        self.masks = masks;
        Ok(())
    }

    fn process(&mut self, input: &BatchInput<'_>, out: &mut Vec<Alert>) -> Result<()> {
        self.process_rows(input, out)?;
        self.advance_stream(input.stream, input.end_watermark, out)
    }

    fn advance(&mut self, wm: Millis, out: &mut Vec<Alert>) -> Result<()> {
        for w in &mut self.watermarks {
            *w = (*w).max(wm);
        }
        let bound = self.min_watermark();
        self.release(bound, bound, out);
        Ok(())
    }

    fn advance_stream(&mut self, stream: usize, wm: Millis, out: &mut Vec<Alert>) -> Result<()> {
        let Some(i) = self.input_index(stream) else { return Ok(()) };
        if wm <= self.watermarks[i] {
            return Ok(());
        }
        let before = self.min_watermark();
        self.watermarks[i] = wm;
        let bound = self.min_watermark();
        if bound > before {
            self.release(bound, bound, out);
        }
        Ok(())
    }

    fn end_of_input(&mut self, out: &mut Vec<Alert>) -> Result<()> {
        // Every row is final; deadlines fire up to the furthest any input got (a bounded
        // run's end does not make time pass).
        let furthest = self.watermarks.iter().copied().max().unwrap_or(WATERMARK_START);
        self.release(Millis::MAX, furthest, out);
        Ok(())
    }

    fn alert_floor(&self) -> Option<Millis> {
        // A held row can complete a match dated at it; a timer can fire a trailing `not`
        // dated at its deadline (stale timers only make the floor lower, never wrong).
        let held = self.pending.peek().map(|Reverse(p)| p.t);
        held.into_iter().chain(self.timers.earliest()).min()
    }

    fn key_count(&self) -> usize {
        self.keys.len()
    }

    fn partials_dropped(&self) -> u64 {
        self.dropped
    }

    fn snapshot(&self, out: &mut KeyStates) -> Result<()> {
        self.snapshot_keys(out)
    }

    fn restore(&mut self, key: &str, record: &[u8]) -> Result<()> {
        self.restore_key(key, record)
    }

    fn close_episodes(&mut self, at: Millis, reason: &str, out: &mut Vec<Alert>) -> Result<()> {
        // A sequence has no open episodes: a completed match raises one firing alert that
        // never resolves, and partial matches (and rows held for the watermarks) never
        // fired, so they go with the operator without an alert.
        let _ = (at, reason, out);
        Ok(())
    }
}

#[cfg(test)]
mod memory_tests {
    use super::Partial;

    #[test]
    fn a_partial_match_record_is_56_bytes() {
        // The budget is 200 bytes per open partial match plus its evidence; the
        // record is a quarter of it (the evidence is one compact row per matched event).
        assert_eq!(std::mem::size_of::<Partial>(), 56);
    }
}

#[cfg(test)]
#[path = "snapshot_tests_b.rs"]
pub(crate) mod snapshot_tests_b;
