//! Tumbling and sliding (hopping) event-time windows.
//!
//! Windows are `[start, start + size)` with `start` a multiple of `slide` (tumbling:
//! `slide == size`). Each key keeps *panes* of length `slide` with mergeable partial
//! aggregates; a window is the merge of its `size / slide` panes, so an event is
//! aggregated once however many windows it belongs to. A window closes when the watermark
//! reaches its end: the results of all windows closed by one watermark step form one Arrow
//! batch on which the condition is evaluated vectorized. An event exactly at a window's
//! end belongs to the next window.
//!
//! Episodes: the first window whose condition holds fires; the alert stays firing over
//! following windows that hold (re-notified if configured) and resolves at the end of the
//! first evaluated window that does not. Windows with no events are not evaluated.

use std::collections::VecDeque;
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, Float64Builder, Int64Builder};
use arrow::datatypes::Float64Type;
use arrow::record_batch::RecordBatch;
use rustc_hash::FxHashSet;
use xxhash_rust::xxh3::xxh3_64;

use super::{BatchInput, Operator, Timers, eval_predicate, for_each_selected, key_columns, selected_rows};
use crate::alert::{Alert, AlertParts, AlertState};
use crate::error::Result;
use crate::keys::{KeyTable, write_key};
use crate::plan::{AggFunc, RuleKind, RulePlan, WindowPlan};
use crate::schema::StreamDef;
use crate::time::{Millis, format_timestamp};

/// Mergeable partial aggregate of one input column.
#[derive(Debug, Clone)]
struct Acc {
    n: u64,
    sum: f64,
    min: f64,
    max: f64,
    first: (Millis, f64),
    last: (Millis, f64),
    distinct: Option<FxHashSet<u64>>,
}

impl Acc {
    fn new(distinct: bool) -> Self {
        Acc {
            n: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            first: (Millis::MAX, 0.0),
            last: (Millis::MIN, 0.0),
            distinct: distinct.then(FxHashSet::default),
        }
    }

    #[inline]
    fn add(&mut self, t: Millis, v: f64) {
        self.n += 1;
        self.sum += v;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        // Ties keep the earliest-arriving first and the latest-arriving last.
        if t < self.first.0 {
            self.first = (t, v);
        }
        if t >= self.last.0 {
            self.last = (t, v);
        }
    }

    fn merge(&mut self, o: &Acc) {
        self.n += o.n;
        self.sum += o.sum;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        if o.first.0 < self.first.0 {
            self.first = o.first;
        }
        if o.last.0 >= self.last.0 {
            self.last = o.last;
        }
        if let (Some(a), Some(b)) = (self.distinct.as_mut(), o.distinct.as_ref()) {
            a.extend(b.iter().copied());
        }
    }

    fn clear(&mut self) {
        let distinct = self.distinct.take().map(|mut d| {
            d.clear();
            d
        });
        *self = Acc::new(false);
        self.distinct = distinct;
    }
}

#[derive(Debug)]
struct Pane {
    index: i64,
    count: u64,
    accs: Vec<Acc>,
}

#[derive(Debug, Default)]
struct KeyState {
    panes: VecDeque<Pane>,
    /// End of the next window to close, with a live timer.
    next_close: Option<Millis>,
    firing: bool,
    episode_start: Millis,
    last_notify: Millis,
    notifications: u32,
}

/// Where an accumulator reads its input.
#[derive(Debug, Clone, Copy)]
enum Input {
    None,
    Column(usize),
}

/// Operator for window rules.
pub struct WindowOperator {
    rule: Arc<RulePlan>,
    stream: Arc<str>,
    plan: WindowPlan,
    /// Distinct input columns; `Acc` i aggregates `inputs[i]`.
    inputs: Vec<Input>,
    /// For each aggregate, which acc it reads.
    agg_input: Vec<usize>,
    keys: KeyTable<KeyState>,
    timers: Timers,
    key_buf: String,
    /// Scratch accumulators for merging a window's panes.
    merged: Vec<Acc>,
}

impl WindowOperator {
    /// A new operator with no state.
    pub fn new(rule: Arc<RulePlan>, stream: &StreamDef) -> Self {
        let plan = match &rule.kind {
            RuleKind::Window(p) => p.clone(),
            _ => unreachable!("WindowOperator is only built for window rules"),
        };
        let mut inputs: Vec<(Option<usize>, bool)> = Vec::new();
        let mut agg_input = Vec::new();
        for agg in &plan.aggregates {
            let distinct = agg.func == AggFunc::CountDistinct;
            let pos = match inputs.iter().position(|(f, _)| *f == agg.field) {
                Some(p) => {
                    inputs[p].1 |= distinct;
                    p
                }
                None => {
                    inputs.push((agg.field, distinct));
                    inputs.len() - 1
                }
            };
            agg_input.push(pos);
        }
        let merged = inputs.iter().map(|&(_, d)| Acc::new(d)).collect();
        let inputs_kind = inputs.iter().map(|&(f, _)| f.map_or(Input::None, Input::Column)).collect();
        WindowOperator {
            rule,
            stream: stream.name.as_str().into(),
            plan,
            inputs: inputs_kind,
            agg_input,
            keys: KeyTable::default(),
            timers: Timers::default(),
            key_buf: String::new(),
            merged,
        }
    }

    fn new_pane(&self, index: i64) -> Pane {
        let accs = self.merged.iter().map(|a| Acc::new(a.distinct.is_some())).collect();
        Pane { index, count: 0, accs }
    }

    /// Closes every window due at `wm`, evaluates the condition on their results and
    /// applies the episode logic.
    fn close_windows(&mut self, wm: Millis, out: &mut Vec<Alert>) -> Result<()> {
        if !self.timers.any_due(wm) {
            return Ok(());
        }
        let size = self.plan.size_ms;
        let slide = self.plan.slide_ms;
        let panes_per_window = size / slide;
        let mut closed: Vec<(u32, Millis)> = Vec::new();
        let mut builders: Vec<ColBuilder> = self
            .plan
            .aggregates
            .iter()
            .map(|a| {
                if a.func.is_count() {
                    ColBuilder::Int(Int64Builder::new())
                } else {
                    ColBuilder::Float(Float64Builder::new())
                }
            })
            .collect();
        while let Some((end, slot)) = self.timers.pop_due(wm) {
            let st = self.keys.state_mut(slot);
            if st.next_close != Some(end) {
                continue;
            }
            let first_pane = end.div_euclid(slide) - panes_per_window;
            let last_pane = end.div_euclid(slide); // exclusive
            for m in self.merged.iter_mut() {
                m.clear();
            }
            let mut count = 0u64;
            for pane in st.panes.iter().filter(|p| p.index >= first_pane && p.index < last_pane) {
                count += pane.count;
                for (m, a) in self.merged.iter_mut().zip(&pane.accs) {
                    m.merge(a);
                }
            }
            // Panes before the next window's start are no longer needed.
            let keep_from = first_pane + 1;
            while st.panes.front().is_some_and(|p| p.index < keep_from) {
                st.panes.pop_front();
            }
            st.next_close = st.panes.front().map(|p| (end + slide).max((p.index + 1) * slide));
            if let Some(next) = st.next_close {
                self.timers.schedule(next, slot);
            }
            if count == 0 {
                continue;
            }
            for (a, (agg, b)) in self.plan.aggregates.iter().zip(builders.iter_mut()).enumerate() {
                b.push(agg.func, &self.merged[self.agg_input[a]], count);
            }
            closed.push((slot, end));
        }
        if closed.is_empty() {
            return Ok(());
        }
        let columns: Vec<ArrayRef> = builders.iter_mut().map(ColBuilder::finish).collect();
        let results = RecordBatch::try_new(self.plan.result_schema.clone(), columns)?;
        let holds = eval_predicate(&self.rule, "condition", &self.plan.condition, &results)?;
        let renotify = self.rule.meta.renotify_ms;
        for (row, &(slot, end)) in closed.iter().enumerate() {
            let start = end - size;
            let (key, st) = self.keys.entry_mut(slot);
            let h = holds.value(row);
            let (state, notification) = match (h, st.firing) {
                (true, false) => {
                    st.firing = true;
                    st.episode_start = start;
                    st.last_notify = end;
                    st.notifications = 1;
                    (AlertState::Firing, 1)
                }
                (true, true) => match renotify {
                    Some(every) if end >= st.last_notify + every => {
                        st.notifications += 1;
                        st.last_notify = end;
                        (AlertState::Firing, st.notifications)
                    }
                    _ => continue,
                },
                (false, true) => {
                    st.firing = false;
                    (AlertState::Resolved, st.notifications)
                }
                (false, false) => continue,
            };
            let mut values = serde_json::Map::new();
            values.insert("window_start".into(), format_timestamp(start).into());
            values.insert("window_end".into(), format_timestamp(end).into());
            for (c, agg) in self.plan.aggregates.iter().enumerate() {
                values.insert(agg.name.clone(), result_json(&results, c, row));
            }
            let parts = AlertParts {
                key: key.to_string(),
                state,
                event_time: end,
                episode_start: st.episode_start,
                notification,
                values,
                evidence: Vec::new(),
            };
            out.push(Alert::new(&self.rule.meta, &self.stream, parts));
        }
        Ok(())
    }
}

fn result_json(batch: &RecordBatch, col: usize, row: usize) -> serde_json::Value {
    crate::keys::cell_to_json(batch.column(col), row)
}

enum ColBuilder {
    Int(Int64Builder),
    Float(Float64Builder),
}

impl ColBuilder {
    fn push(&mut self, func: AggFunc, acc: &Acc, count: u64) {
        match self {
            ColBuilder::Int(b) => b.append_value(match func {
                AggFunc::Count => count as i64,
                _ => acc.distinct.as_ref().map_or(0, |d| d.len() as i64),
            }),
            ColBuilder::Float(b) => {
                let v = match func {
                    _ if acc.n == 0 => None,
                    AggFunc::Sum => Some(acc.sum),
                    AggFunc::Avg => Some(acc.sum / acc.n as f64),
                    AggFunc::Min => Some(acc.min),
                    AggFunc::Max => Some(acc.max),
                    AggFunc::Delta => Some(acc.last.1 - acc.first.1),
                    AggFunc::Rate => {
                        let secs = (acc.last.0 - acc.first.0) as f64 / 1000.0;
                        (secs > 0.0).then(|| (acc.last.1 - acc.first.1) / secs)
                    }
                    AggFunc::Count | AggFunc::CountDistinct => None,
                };
                b.append_option(v);
            }
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            ColBuilder::Int(b) => Arc::new(b.finish()),
            ColBuilder::Float(b) => Arc::new(b.finish()),
        }
    }
}

impl Operator for WindowOperator {
    fn process_rows(&mut self, input: &BatchInput<'_>, out: &mut Vec<Alert>) -> Result<()> {
        let batch = input.batch;
        let mask = selected_rows(&self.rule, input)?;
        let key_cols: Vec<ArrayRef> = key_columns(&self.rule, batch);
        // Numeric inputs as f64 columns (ints and timestamps cast once per batch); other
        // types only feed count_distinct, through a hash of the rendered value.
        let mut numeric: Vec<Option<ArrayRef>> = Vec::with_capacity(self.inputs.len());
        let mut raw: Vec<Option<ArrayRef>> = Vec::with_capacity(self.inputs.len());
        for input_kind in &self.inputs {
            match *input_kind {
                Input::None => {
                    numeric.push(None);
                    raw.push(None);
                }
                Input::Column(c) => {
                    let col = batch.column(c);
                    let as_f64 = arrow::compute::cast(col, &arrow::datatypes::DataType::Float64).ok();
                    numeric.push(as_f64);
                    raw.push(Some(col.clone()));
                }
            }
        }
        let slide = self.plan.slide_ms;
        let mut value_buf = String::new();
        for_each_selected(batch.num_rows(), mask.as_ref(), |i| {
            let wm = input.watermarks[i];
            if self.timers.any_due(wm) {
                self.close_windows(wm, out)?;
            }
            let mut key = std::mem::take(&mut self.key_buf);
            write_key(&key_cols, i, &mut key);
            let slot = self.keys.slot(&key, KeyState::default);
            self.key_buf = key;
            let t = input.times[i];
            let pane_index = t.div_euclid(slide);
            let st = self.keys.state_mut(slot);
            let pos = match st.panes.iter().rposition(|p| p.index <= pane_index) {
                Some(p) if st.panes[p].index == pane_index => p,
                found => {
                    let at = found.map_or(0, |p| p + 1);
                    let pane = self.new_pane(pane_index);
                    let st = self.keys.state_mut(slot);
                    st.panes.insert(at, pane);
                    at
                }
            };
            let st = self.keys.state_mut(slot);
            let pane = &mut st.panes[pos];
            pane.count += 1;
            for (j, acc) in pane.accs.iter_mut().enumerate() {
                let Some(col) = &raw[j] else { continue };
                if arrow::array::Array::is_null(col.as_ref(), i) {
                    continue;
                }
                let v = numeric[j].as_ref().map_or(0.0, |c| c.as_primitive::<Float64Type>().value(i));
                if let Some(d) = acc.distinct.as_mut() {
                    write_key(std::slice::from_ref(col), i, &mut value_buf);
                    d.insert(xxh3_64(value_buf.as_bytes()));
                }
                acc.add(t, v);
            }
            let close = (pane_index + 1) * slide;
            if st.next_close.is_none_or(|n| close < n) {
                st.next_close = Some(close);
                self.timers.schedule(close, slot);
            }
            Ok(())
        })
    }

    fn advance(&mut self, wm: Millis, out: &mut Vec<Alert>) -> Result<()> {
        self.close_windows(wm, out)
    }

    fn key_count(&self) -> usize {
        self.keys.len()
    }
}
