//! Stateful per-key operators, one per rule kind.
//!
//! An operator owns the state of the keys routed to its partition. It consumes batches row
//! by row over the rows that pass the rule's `where` filter (the filter and the conditions
//! themselves are evaluated vectorized, once per batch), and it keeps event-time timers.
//! Before each row it fires the timers due at the watermark in force for that row; at the
//! end of a batch it fires those due at the batch's closing watermark. Since the watermark
//! of each row is fixed by the ingest stage, the alerts do not depend on how rows were
//! partitioned or batched.

mod absence;
mod geofence;
mod sequence;
mod threshold;
mod window;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray};
use arrow::buffer::BooleanBuffer;
use arrow::compute::prep_null_mask_filter;
use arrow::record_batch::RecordBatch;

pub use absence::AbsenceOperator;
pub use geofence::GeofenceOperator;
pub use sequence::{PartialMemory, SequenceOperator};
pub use threshold::ThresholdOperator;
pub use window::WindowOperator;

use crate::alert::Alert;
use crate::error::{EngineError, Result};
use crate::plan::{Predicate, RuleKind, RulePlan};
use crate::schema::StreamDef;
use crate::state::KeyStates;
use crate::time::Millis;

/// One batch as an operator sees it.
#[derive(Debug, Clone, Copy)]
pub struct BatchInput<'a> {
    /// Index of the rows' stream in the plan (rules that read several streams need it).
    pub stream: usize,
    /// Rows of the rule's stream routed to this partition.
    pub batch: &'a RecordBatch,
    /// Event time per row.
    pub times: &'a [Millis],
    /// Watermark in force at each row (after observing it).
    pub watermarks: &'a [Millis],
    /// Watermark of each row's own split (after observing it): no row of that split before
    /// it can still arrive. A decision about one key (a deadline reached by its next row)
    /// uses it, so it does not depend on how far other splits have got.
    pub split_watermarks: &'a [Millis],
    /// Watermark after the whole input chunk this batch was cut from.
    pub end_watermark: Millis,
    /// `where` results already computed for this batch by other rules, by SQL text: rules
    /// with the same filter evaluate it once per batch (a city has many rules per metric).
    pub shared_where: Option<&'a WhereCache>,
}

/// Memo of `where` masks for one batch, shared by the rules evaluated on it.
#[derive(Debug, Default)]
pub struct WhereCache {
    masks: std::cell::RefCell<std::collections::HashMap<String, BooleanBuffer>>,
}

impl WhereCache {
    /// Forgets the masks (a new batch).
    pub fn clear(&self) {
        self.masks.borrow_mut().clear();
    }
}

/// A per-key stateful operator.
pub trait Operator: Send {
    /// Consumes a batch's rows (firing timers due before each row), appending alerts.
    fn process_rows(&mut self, input: &BatchInput<'_>, out: &mut Vec<Alert>) -> Result<()>;
    /// Consumes a batch: its rows, then the timers due at its closing watermark.
    fn process(&mut self, input: &BatchInput<'_>, out: &mut Vec<Alert>) -> Result<()> {
        self.process_rows(input, out)?;
        self.advance(input.end_watermark, out)
    }
    /// Fires timers due at watermark `wm`.
    fn advance(&mut self, wm: Millis, out: &mut Vec<Alert>) -> Result<()>;
    /// The watermark of `stream` (one the rule reads) reached `wm`: fires what is due. A
    /// rule over one stream does what [`Operator::advance`] does.
    fn advance_stream(&mut self, stream: usize, wm: Millis, out: &mut Vec<Alert>) -> Result<()> {
        let _ = stream;
        self.advance(wm, out)
    }
    /// The input ended (a bounded run): no row of any stream can come any more. Operators
    /// that hold rows back until every stream they read has passed them evaluate the rest.
    fn end_of_input(&mut self, out: &mut Vec<Alert>) -> Result<()> {
        let _ = out;
        Ok(())
    }
    /// The earliest event time an alert this operator may still raise could carry, if
    /// that can be behind its streams' watermarks: an operator that holds rows back until
    /// every stream it reads has passed them (sequences) raises alerts dated at those rows.
    /// Stages behind the workers order alerts by event time and must not pass it.
    fn alert_floor(&self) -> Option<Millis> {
        None
    }
    /// Number of keys with state.
    fn key_count(&self) -> usize;
    /// Partial matches dropped because a key had too many (sequence rules' `max_partial`).
    fn partials_dropped(&self) -> u64 {
        0
    }
    /// Writes the state of every key that has any, one record per key (see
    /// [`crate::state`]): episodes, stopwatches, panes, timers' deadlines, held rows,
    /// memberships, partial matches — everything the next row or watermark depends on.
    fn snapshot(&self, out: &mut KeyStates) -> Result<()>;
    /// Restores one key's record as [`Operator::snapshot`] wrote it, possibly in another
    /// worker of a run with another worker count; keys come in any order, each once, into
    /// an operator that has seen no input. Schedules the key's timers.
    fn restore(&mut self, key: &str, record: &[u8]) -> Result<()>;
    /// The rule is being replaced (its definition changed) or removed, at a hot reload:
    /// every firing episode of every key ends now — a `Resolved` alert per episode, dated
    /// `at` (the stream's watermark at the reload; never before the episode's last alert),
    /// with the episode's alert id, and `values["reason"] = reason` (`"rule_changed"` or
    /// `"rule_removed"`). Pending `for` stopwatches and partial matches are dropped without
    /// an alert: they never fired. The operator is dropped afterwards.
    ///
    /// The operator is left with no open episode (a second call raises nothing), so a
    /// snapshot taken after it carries none.
    fn close_episodes(&mut self, at: Millis, reason: &str, out: &mut Vec<Alert>) -> Result<()>;
}

/// Builds the operator for a rule; `streams` are the plan's streams.
pub fn build(rule: Arc<RulePlan>, streams: &[Arc<StreamDef>]) -> Box<dyn Operator> {
    let stream = &streams[rule.stream];
    match &rule.kind {
        RuleKind::Threshold(_) => Box::new(ThresholdOperator::new(rule, stream)),
        RuleKind::Window(_) => Box::new(WindowOperator::new(rule, stream)),
        RuleKind::Absence(_) => Box::new(AbsenceOperator::new(rule, stream)),
        RuleKind::Geofence(_) => Box::new(GeofenceOperator::new(rule, stream)),
        RuleKind::Sequence(_) => Box::new(SequenceOperator::new(rule, streams)),
    }
}

/// Evaluates a boolean predicate on a batch; nulls count as false.
pub(crate) fn eval_predicate(
    rule: &RulePlan,
    which: &'static str,
    p: &Predicate,
    batch: &RecordBatch,
) -> Result<BooleanBuffer> {
    let value = p
        .expr
        .evaluate(batch)
        .and_then(|v| v.into_array(batch.num_rows()))
        .map_err(|source| EngineError::Eval { rule: rule.meta.id.to_string(), expr: which, source })?;
    let Some(bools) = value.as_any().downcast_ref::<BooleanArray>() else {
        return Err(EngineError::NotBoolean {
            rule: rule.meta.id.to_string(),
            expr: which,
            got: value.data_type().to_string(),
        });
    };
    Ok(if bools.null_count() > 0 { prep_null_mask_filter(bools).values().clone() } else { bools.values().clone() })
}

/// The rows of `batch` that pass the rule's `where` (all rows if it has none).
pub(crate) fn selected_rows(rule: &RulePlan, input: &BatchInput<'_>) -> Result<Option<BooleanBuffer>> {
    let Some(p) = &rule.filter else { return Ok(None) };
    shared_mask(rule, "where", p, input).map(Some)
}

/// The rows of `input` for which `p` is true, through the batch's [`WhereCache`].
pub(crate) fn shared_mask(
    rule: &RulePlan,
    which: &'static str,
    p: &Predicate,
    input: &BatchInput<'_>,
) -> Result<BooleanBuffer> {
    let Some(cache) = input.shared_where else { return eval_predicate(rule, which, p, input.batch) };
    if let Some(mask) = cache.masks.borrow().get(&p.sql) {
        return Ok(mask.clone());
    }
    let mask = eval_predicate(rule, which, p, input.batch)?;
    cache.masks.borrow_mut().insert(p.sql.clone(), mask.clone());
    Ok(mask)
}

/// Key columns of the rule in this batch.
pub(crate) fn key_columns(rule: &RulePlan, batch: &RecordBatch) -> Vec<ArrayRef> {
    rule.key_fields.iter().map(|&i| batch.column(i).clone()).collect()
}

/// Calls `f` for each selected row index in order.
#[inline]
pub(crate) fn for_each_selected(
    n: usize,
    mask: Option<&BooleanBuffer>,
    mut f: impl FnMut(usize) -> Result<()>,
) -> Result<()> {
    match mask {
        Some(m) => {
            for i in m.set_indices() {
                f(i)?;
            }
        }
        None => {
            for i in 0..n {
                f(i)?;
            }
        }
    }
    Ok(())
}

/// Event-time timers: a min-heap of (due time, key slot). Entries are not removed when a
/// key's deadline moves; the operator checks on pop whether the entry is still current.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(Millis, u32)>>,
}

impl Timers {
    #[inline]
    pub(crate) fn schedule(&mut self, due: Millis, slot: u32) {
        self.heap.push(Reverse((due, slot)));
    }

    /// Pops the next timer due at or before `wm`.
    #[inline]
    pub(crate) fn pop_due(&mut self, wm: Millis) -> Option<(Millis, u32)> {
        match self.heap.peek() {
            Some(Reverse((due, _))) if *due <= wm => self.heap.pop().map(|Reverse(t)| t),
            _ => None,
        }
    }

    /// The earliest timer (possibly one no longer current).
    #[inline]
    pub(crate) fn earliest(&self) -> Option<Millis> {
        self.heap.peek().map(|Reverse((due, _))| *due)
    }

    /// True if a timer is due at or before `wm`.
    #[inline]
    pub(crate) fn any_due(&self, wm: Millis) -> bool {
        matches!(self.heap.peek(), Some(Reverse((due, _))) if *due <= wm)
    }
}

#[cfg(test)]
mod close_tests;
#[cfg(test)]
mod sequence_tests;
#[cfg(test)]
mod tests;
