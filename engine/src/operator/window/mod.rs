//! Window aggregates: time (tumbling and sliding), session and count windows.
//!
//! Every shape keeps, per key, *panes* of mergeable partial aggregates ([`acc`]):
//!
//! - **time**: windows are `[start, start + size)` with `start` a multiple of `slide`
//!   (tumbling: `slide == size`); a pane covers `slide` of event time and a window is the
//!   merge of its `size / slide` panes, so an event is aggregated once however many windows
//!   it belongs to. A window closes when the watermark reaches its end; an event exactly at
//!   a window's end belongs to the next window.
//! - **session**: a pane is a session — events of the key less than `gap` apart. An event
//!   within `gap` of two sessions joins them into one. A session closes when the watermark
//!   reaches its last event + `gap` (or its first event + `max`); it is reported as
//!   `[first event, close)`. Sessions do not depend on arrival order: a row is never behind
//!   the watermark, so it can never belong to a session already closed.
//! - **count**: `size` consecutive events of the key, a new window every `slide` events; a
//!   pane holds `slide` events. Which events are consecutive must not depend on how Kafka
//!   partitions or batches interleave, so rows wait until the watermark has passed them and
//!   are counted in event-time order (ties: arrival). A window closes on its last event and
//!   is reported as `[first event, last event]`. Events more than `max` before the key's
//!   newest one leave its open panes.
//!
//! The results of all windows closed by one step form one Arrow batch on which the
//! condition is evaluated vectorized.
//!
//! Episodes: the first window whose condition holds fires; the alert stays firing over
//! following windows that hold (re-notified if configured) and resolves at the end of the
//! first evaluated window that does not. Windows with no events are not evaluated.

mod acc;
mod shapes;
mod state;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array};
use arrow::buffer::BooleanBuffer;
use arrow::datatypes::Float64Type;
use arrow::record_batch::RecordBatch;
use xxhash_rust::xxh3::xxh3_64;

use super::{BatchInput, Operator, Timers, eval_predicate, for_each_selected, key_columns, selected_rows};
use crate::alert::{Alert, AlertParts, AlertState};
use crate::error::Result;
use crate::keys::{KeyTable, write_key};
use crate::plan::{RuleKind, RulePlan, WindowPlan, WindowShape};
use crate::schema::StreamDef;
use crate::state::KeyStates;
use crate::time::{Millis, format_timestamp};
use acc::{Acc, ColBuilder, Needs};

/// Partial aggregates of a stretch of a key's events (see the module docs).
#[derive(Debug)]
struct Pane {
    /// Time windows: the pane's number (`start / slide`); unused otherwise.
    index: i64,
    count: u64,
    /// Event times of its earliest and latest event.
    first_t: Millis,
    last_t: Millis,
    accs: Vec<Acc>,
}

#[derive(Debug, Default)]
struct KeyState {
    /// Time: by index; session: sessions by first event; count: oldest first.
    panes: VecDeque<Pane>,
    /// When the next window or session closes, with a live timer (time and session).
    next_close: Option<Millis>,
    firing: bool,
    episode_start: Millis,
    last_notify: Millis,
    notifications: u32,
}

/// Where an accumulator reads its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Input {
    /// Nothing (`count` counts the pane's events).
    None,
    Column(usize),
    /// The condition of aggregate `i` (`count_if`): the accumulator counts rows where it holds.
    Condition(usize),
}

/// One input of one row, ready to be added to an accumulator.
#[derive(Debug, Clone, Copy, Default)]
struct Cell {
    present: bool,
    value: f64,
    /// Hash of the rendered value, for `count_distinct`.
    hash: u64,
}

/// A row of a count-window rule waiting for the watermark (see the module docs).
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Held {
    t: Millis,
    seq: u64,
    slot: u32,
    /// Index of its first cell in `held_cells`.
    base: u32,
}

/// Operator for window rules.
pub struct WindowOperator {
    rule: Arc<RulePlan>,
    stream: Arc<str>,
    plan: WindowPlan,
    /// Distinct inputs; `Acc` i aggregates `inputs[i]`.
    inputs: Vec<Input>,
    /// For each aggregate, which acc it reads.
    agg_input: Vec<usize>,
    keys: KeyTable<KeyState>,
    timers: Timers,
    key_buf: String,
    /// Scratch accumulators for merging a window's panes.
    merged: Vec<Acc>,
    /// Scratch: the current row's inputs.
    cells: Vec<Cell>,
    /// Windows closed by the current step, and their result columns.
    closed: Vec<(u32, Millis, Millis)>,
    builders: Vec<ColBuilder>,
    /// Count windows: rows waiting for the watermark, their cells (`inputs.len()` per row,
    /// slots reused through `free_cells`) and the arrival counter that breaks time ties.
    held: BinaryHeap<Reverse<Held>>,
    held_cells: Vec<Cell>,
    free_cells: Vec<u32>,
    arrivals: u64,
}

impl WindowOperator {
    /// A new operator with no state.
    pub fn new(rule: Arc<RulePlan>, stream: &StreamDef) -> Self {
        let plan = match &rule.kind {
            RuleKind::Window(p) => p.clone(),
            _ => unreachable!("WindowOperator is only built for window rules"),
        };
        let mut inputs: Vec<(Input, Needs)> = Vec::new();
        let mut agg_input = Vec::new();
        for (a, agg) in plan.aggregates.iter().enumerate() {
            let input = match (agg.field, &agg.filter) {
                (_, Some(_)) => Input::Condition(a),
                (Some(c), None) => Input::Column(c),
                (None, None) => Input::None,
            };
            let needs = Needs::of(agg.func);
            let pos = match inputs.iter().position(|(i, _)| *i == input) {
                Some(p) => {
                    inputs[p].1 = inputs[p].1.union(needs);
                    p
                }
                None => {
                    inputs.push((input, needs));
                    inputs.len() - 1
                }
            };
            agg_input.push(pos);
        }
        let merged = inputs.iter().map(|&(_, n)| Acc::new(n)).collect();
        let builders = plan.aggregates.iter().map(ColBuilder::for_aggregate).collect();
        WindowOperator {
            rule,
            stream: stream.name.as_str().into(),
            cells: vec![Cell::default(); inputs.len()],
            inputs: inputs.into_iter().map(|(i, _)| i).collect(),
            plan,
            agg_input,
            keys: KeyTable::default(),
            timers: Timers::default(),
            key_buf: String::new(),
            merged,
            closed: Vec::new(),
            builders,
            held: BinaryHeap::new(),
            held_cells: Vec::new(),
            free_cells: Vec::new(),
            arrivals: 0,
        }
    }

    fn new_pane(&self, index: i64, t: Millis) -> Pane {
        let accs = self.merged.iter().map(|a| Acc::new(a.needs())).collect();
        Pane { index, count: 0, first_t: t, last_t: t, accs }
    }

    /// Records the window `[start, end)` of `slot` whose aggregates are in `merged`.
    fn collect(&mut self, slot: u32, start: Millis, end: Millis, count: u64) {
        for (a, (agg, b)) in self.plan.aggregates.iter().zip(self.builders.iter_mut()).enumerate() {
            b.push(agg, &mut self.merged[self.agg_input[a]], count);
        }
        self.closed.push((slot, start, end));
    }

    /// Closes the time windows and sessions due at `wm`.
    fn close_due(&mut self, wm: Millis) {
        while let Some((end, slot)) = self.timers.pop_due(wm) {
            if self.keys.state_mut(slot).next_close != Some(end) {
                continue;
            }
            match self.plan.shape {
                WindowShape::Time { size_ms, slide_ms } => self.close_time_window(slot, end, size_ms, slide_ms),
                WindowShape::Session { gap_ms, max_ms } => self.close_sessions(slot, wm, gap_ms, max_ms),
                WindowShape::Count { .. } => {}
            }
        }
    }

    /// Evaluates the condition on the windows collected since the last call and applies
    /// the episode logic.
    fn emit_closed(&mut self, out: &mut Vec<Alert>) -> Result<()> {
        if self.closed.is_empty() {
            return Ok(());
        }
        let columns: Vec<ArrayRef> = self.builders.iter_mut().map(ColBuilder::finish).collect();
        let results = RecordBatch::try_new(self.plan.result_schema.clone(), columns)?;
        let holds = eval_predicate(&self.rule, "condition", &self.plan.condition, &results)?;
        let renotify = self.rule.meta.renotify_ms;
        for (row, &(slot, start, end)) in self.closed.iter().enumerate() {
            let (key, st) = self.keys.entry_mut(slot);
            let (state, notification) = match (holds.value(row), st.firing) {
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
            let (key, episode_start) = (key.to_string(), st.episode_start);
            let mut values = serde_json::Map::new();
            values.insert("window_start".into(), format_timestamp(start).into());
            values.insert("window_end".into(), format_timestamp(end).into());
            for (c, agg) in self.plan.aggregates.iter().enumerate() {
                values.insert(agg.name.clone(), crate::keys::cell_to_json(results.column(c), row));
            }
            out.push(self.episode_alert(key, (state, end, episode_start, notification), values));
        }
        self.closed.clear();
        Ok(())
    }

    /// An alert of `key`'s episode of the window condition: (state, event time, episode
    /// start, notification). Window alerts carry no evidence (a window is many events).
    fn episode_alert(
        &self,
        key: String,
        (state, event_time, episode_start, notification): (AlertState, Millis, Millis, u32),
        values: serde_json::Map<String, serde_json::Value>,
    ) -> Alert {
        let parts = AlertParts { key, state, event_time, episode_start, notification, values, evidence: Vec::new() };
        Alert::new(&self.rule.meta, &self.stream, parts)
    }

    /// Time windows and sessions close by timers; count windows by their rows.
    fn step(&mut self, wm: Millis, out: &mut Vec<Alert>) -> Result<()> {
        if let WindowShape::Count { .. } = self.plan.shape {
            self.release(|t| t < wm);
        } else if self.timers.any_due(wm) {
            self.close_due(wm);
        }
        self.emit_closed(out)
    }

    /// Adds one row (its inputs in `cells`) to the key's panes.
    fn add_row(&mut self, slot: u32, t: Millis) {
        match self.plan.shape {
            WindowShape::Time { slide_ms, .. } => self.add_to_time_pane(slot, t, slide_ms),
            WindowShape::Session { gap_ms, max_ms } => self.add_to_session(slot, t, gap_ms, max_ms),
            WindowShape::Count { size, slide, max_ms } => self.add_counted(slot, t, size, slide, max_ms),
        }
    }

    /// Count windows: holds the row in `cells` until the watermark passes it.
    fn hold(&mut self, slot: u32, t: Millis) {
        let base = self.store_cells();
        self.arrivals += 1;
        self.held.push(Reverse(Held { t, seq: self.arrivals, slot, base }));
    }

    /// Copies `cells` into a free block of `held_cells`; returns its index.
    #[inline]
    fn store_cells(&mut self) -> u32 {
        let k = self.inputs.len();
        let base = match self.free_cells.pop() {
            Some(b) => b,
            None => {
                self.held_cells.resize(self.held_cells.len() + k, Cell::default());
                (self.held_cells.len() - k) as u32
            }
        };
        self.held_cells[base as usize..base as usize + k].copy_from_slice(&self.cells);
        base
    }

    /// Counts the held rows for which `due(t)`, in event-time order.
    fn release(&mut self, due: impl Fn(Millis) -> bool) {
        let k = self.inputs.len();
        while self.held.peek().is_some_and(|Reverse(h)| due(h.t)) {
            let Reverse(h) = self.held.pop().expect("peeked");
            let base = h.base as usize;
            self.cells.copy_from_slice(&self.held_cells[base..base + k]);
            self.free_cells.push(h.base);
            self.add_row(h.slot, h.t);
        }
    }

    /// Reads row `i`'s inputs into `cells`.
    fn read_cells(&mut self, cols: &[InputColumn], i: usize, value_buf: &mut String) {
        for (cell, col) in self.cells.iter_mut().zip(cols) {
            *cell = match col {
                // `count` reads the pane's event count; its accumulator stays empty.
                InputColumn::None => Cell::default(),
                InputColumn::Condition(holds) => Cell { present: holds.value(i), value: 1.0, hash: 0 },
                InputColumn::Column { raw, numeric, distinct } => {
                    if raw.is_null(i) {
                        Cell::default()
                    } else {
                        let value = numeric.as_ref().map_or(0.0, |c| c.value(i));
                        let hash = if *distinct {
                            write_key(std::slice::from_ref(raw), i, value_buf);
                            xxh3_64(value_buf.as_bytes())
                        } else {
                            0
                        };
                        Cell { present: true, value, hash }
                    }
                }
            };
        }
    }
}

/// One input's column in the current batch.
enum InputColumn {
    None,
    Condition(BooleanBuffer),
    /// Numeric inputs as an f64 column (ints and timestamps cast once per batch); other
    /// types only feed `count_distinct`, through a hash of the rendered value.
    Column {
        raw: ArrayRef,
        numeric: Option<Float64Array>,
        distinct: bool,
    },
}

/// Adds a row's cells to a pane's accumulators.
fn add_cells(pane: &mut Pane, cells: &[Cell], t: Millis) {
    pane.count += 1;
    pane.first_t = pane.first_t.min(t);
    pane.last_t = pane.last_t.max(t);
    for (acc, cell) in pane.accs.iter_mut().zip(cells) {
        if !cell.present {
            continue;
        }
        if let Some(d) = acc.distinct.as_mut() {
            d.insert(cell.hash);
        }
        acc.add(t, cell.value);
    }
}

impl Operator for WindowOperator {
    fn process_rows(&mut self, input: &BatchInput<'_>, out: &mut Vec<Alert>) -> Result<()> {
        let batch = input.batch;
        let mask = selected_rows(&self.rule, input)?;
        let key_cols: Vec<ArrayRef> = key_columns(&self.rule, batch);
        let mut cols = Vec::with_capacity(self.inputs.len());
        for (j, input_kind) in self.inputs.iter().enumerate() {
            cols.push(match *input_kind {
                Input::None => InputColumn::None,
                Input::Condition(a) => {
                    let p = self.plan.aggregates[a].filter.as_ref().expect("count_if has a condition");
                    InputColumn::Condition(eval_predicate(&self.rule, "count_if", p, batch)?)
                }
                Input::Column(c) => {
                    let raw = batch.column(c).clone();
                    let numeric = arrow::compute::cast(&raw, &arrow::datatypes::DataType::Float64)
                        .ok()
                        .map(|c| c.as_primitive::<Float64Type>().clone());
                    InputColumn::Column { raw, numeric, distinct: self.merged[j].distinct.is_some() }
                }
            });
        }
        let counted = matches!(self.plan.shape, WindowShape::Count { .. });
        let mut value_buf = String::new();
        for_each_selected(batch.num_rows(), mask.as_ref(), |i| {
            let wm = input.watermarks[i];
            let due =
                if counted { self.held.peek().is_some_and(|Reverse(h)| h.t < wm) } else { self.timers.any_due(wm) };
            if due {
                self.step(wm, out)?;
            }
            let mut key = std::mem::take(&mut self.key_buf);
            write_key(&key_cols, i, &mut key);
            let slot = self.keys.slot(&key, KeyState::default);
            self.key_buf = key;
            self.read_cells(&cols, i, &mut value_buf);
            if counted {
                self.hold(slot, input.times[i]);
            } else {
                self.add_row(slot, input.times[i]);
            }
            Ok(())
        })
    }

    fn advance(&mut self, wm: Millis, out: &mut Vec<Alert>) -> Result<()> {
        self.step(wm, out)
    }

    fn end_of_input(&mut self, out: &mut Vec<Alert>) -> Result<()> {
        // Every row is final: count the held ones (open windows stay open, as time windows
        // whose end the watermark has not reached do).
        self.release(|_| true);
        self.emit_closed(out)
    }

    fn alert_floor(&self) -> Option<Millis> {
        // A held row can close a count window dated at it.
        self.held.peek().map(|Reverse(h)| h.t)
    }

    fn key_count(&self) -> usize {
        self.keys.len()
    }

    fn snapshot(&self, out: &mut KeyStates) -> Result<()> {
        self.snapshot_keys(out)
    }

    fn restore(&mut self, key: &str, record: &[u8]) -> Result<()> {
        self.restore_key(key, record)
    }

    fn close_episodes(&mut self, at: Millis, reason: &str, out: &mut Vec<Alert>) -> Result<()> {
        // Open windows and sessions, and held rows, are dropped with the operator: only a
        // closed window is evaluated.
        for slot in 0..self.keys.len() as u32 {
            let (key, st) = self.keys.entry_mut(slot);
            if !st.firing {
                continue;
            }
            st.firing = false;
            // No window ends it: the values are only the reason. Never before the end of
            // the window last notified (the end of a bounded input closes count windows
            // ahead of the watermark).
            let mut values = serde_json::Map::new();
            values.insert("reason".into(), reason.into());
            let alert = (AlertState::Resolved, at.max(st.last_notify), st.episode_start, st.notifications);
            let key = key.to_string();
            out.push(self.episode_alert(key, alert, values));
        }
        Ok(())
    }
}
