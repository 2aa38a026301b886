//! Snapshot records of window rules (see [`crate::state`]): one [`WindowRecord`] per key
//! with panes, held rows or an open episode.
//!
//! Operator-wide state: the window operator keeps no watermark of its own (each step is
//! given one), and its arrival counter only orders one key's held rows among themselves,
//! so a restored operator continues it above every restored row's number. The watermark
//! the pipeline re-sends at restore, before any row, reaches [`WindowOperator::advance`]:
//! it closes only windows whose end it has reached, which the uninterrupted operator would
//! close at its next step anyway (that step's watermark is at least as far), so the
//! records need no watermark.

use std::cmp::Reverse;

use serde::{Deserialize, Serialize};

use super::acc::Acc;
use super::{Cell, Held, KeyState, Pane, WindowOperator};
use crate::error::{EngineError, Result};
use crate::state::{KeyStates, decode};
use crate::time::Millis;

/// The state of one key of a window rule.
#[derive(Debug, Serialize, Deserialize)]
struct WindowRecord {
    /// The key's panes, in the order the shape keeps them (time: by pane number; session:
    /// by first event; count: oldest first): the open windows and sessions.
    panes: Vec<PaneRecord>,
    /// When the key's next time window or session closes: its timer, scheduled again on
    /// restore (stale timers of the old operator are not carried; they fire nothing).
    next_close: Option<Millis>,
    /// Episode of the window condition: whether it is firing, when the episode started,
    /// the end of the window last notified and how many notifications it has had (for
    /// `renotify` and the resolved alert's notification number).
    firing: bool,
    episode_start: Millis,
    last_notify: Millis,
    notifications: u32,
    /// Count windows: the key's rows waiting for the watermark, in (event time, arrival)
    /// order, with their inputs already read.
    held: Vec<HeldRecord>,
}

/// A pane: partial aggregates of a stretch of the key's events.
#[derive(Debug, Serialize, Deserialize)]
struct PaneRecord {
    /// Time windows: the pane's number (`start / slide`); 0 for the other shapes.
    index: i64,
    /// Events in it.
    count: u64,
    /// Event times of its earliest and latest event (session ends, count horizons).
    first_t: Millis,
    last_t: Millis,
    /// One accumulator per distinct input of the rule, in the operator's input order.
    accs: Vec<AccRecord>,
}

/// A mergeable partial aggregate, every field as the accumulator keeps it (see
/// [`super::acc`]), so a restored window's results are bit-for-bit those of the
/// uninterrupted one.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct AccRecord {
    /// Values added, their sum and extremes.
    pub n: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    /// (event time, value) of the earliest and the latest event (`first`, `last`, `delta`,
    /// `rate`).
    pub first: (Millis, f64),
    pub last: (Millis, f64),
    /// Welford mean and sum of squared deviations, and whether they are kept (`stddev`).
    pub mean: f64,
    pub m2: f64,
    pub moments: bool,
    /// Hashes of the distinct values (`count_distinct`), sorted; None if not kept.
    pub distinct: Option<Vec<u64>>,
    /// The values themselves, in the order added (`percentile`, `median`); None if not kept.
    pub values: Option<Vec<f64>>,
}

/// A held row of a count-window rule.
#[derive(Debug, Serialize, Deserialize)]
struct HeldRecord {
    /// Event time, and the arrival number that orders rows of equal time.
    t: Millis,
    seq: u64,
    /// Its inputs, one per distinct input of the rule.
    cells: Vec<CellRecord>,
}

/// One input of a held row: whether present, the value, the hash for `count_distinct`.
#[derive(Debug, Serialize, Deserialize)]
struct CellRecord {
    present: bool,
    value: f64,
    hash: u64,
}

impl WindowOperator {
    /// See [`crate::operator::Operator::snapshot`].
    pub(super) fn snapshot_keys(&self, out: &mut KeyStates) -> Result<()> {
        let k = self.inputs.len();
        let mut held: Vec<Vec<HeldRecord>> = (0..self.keys.len()).map(|_| Vec::new()).collect();
        for Reverse(h) in &self.held {
            let base = h.base as usize;
            let cells = self.held_cells[base..base + k]
                .iter()
                .map(|c| CellRecord { present: c.present, value: c.value, hash: c.hash })
                .collect();
            held[h.slot as usize].push(HeldRecord { t: h.t, seq: h.seq, cells });
        }
        for (slot, mut held) in held.into_iter().enumerate() {
            let (key, st) = self.keys.entry(slot as u32);
            // A key with no pane, no held row and no episode is as good as new.
            if st.panes.is_empty() && held.is_empty() && !st.firing {
                continue;
            }
            held.sort_unstable_by_key(|h| (h.t, h.seq));
            let panes = st
                .panes
                .iter()
                .map(|p| PaneRecord {
                    index: p.index,
                    count: p.count,
                    first_t: p.first_t,
                    last_t: p.last_t,
                    accs: p.accs.iter().map(Acc::to_record).collect(),
                })
                .collect();
            let record = WindowRecord {
                panes,
                next_close: st.next_close,
                firing: st.firing,
                episode_start: st.episode_start,
                last_notify: st.last_notify,
                notifications: st.notifications,
                held,
            };
            out.push(key, &record)?;
        }
        Ok(())
    }

    /// See [`crate::operator::Operator::restore`].
    pub(super) fn restore_key(&mut self, key: &str, bytes: &[u8]) -> Result<()> {
        let r: WindowRecord = decode(&self.rule.meta.id, key, bytes)?;
        let bad = |reason: String| EngineError::BadState {
            rule: self.rule.meta.id.to_string(),
            key: key.to_string(),
            reason,
        };
        // A record that decodes but does not fit the rule's inputs would index out of
        // bounds later: refuse it now.
        let mut panes = std::collections::VecDeque::with_capacity(r.panes.len());
        for p in r.panes {
            if p.accs.len() != self.merged.len() {
                return Err(bad(format!("a pane has {} accumulators, the rule {}", p.accs.len(), self.merged.len())));
            }
            let accs: Vec<Acc> = p.accs.into_iter().map(Acc::from_record).collect();
            if accs.iter().zip(&self.merged).any(|(a, m)| a.needs() != m.needs()) {
                return Err(bad("a pane's accumulators keep other parts than the rule's aggregates need".into()));
            }
            panes.push_back(Pane { index: p.index, count: p.count, first_t: p.first_t, last_t: p.last_t, accs });
        }
        if let Some(h) = r.held.iter().find(|h| h.cells.len() != self.inputs.len()) {
            return Err(bad(format!("a held row has {} inputs, the rule {}", h.cells.len(), self.inputs.len())));
        }
        let slot = self.keys.slot(key, KeyState::default);
        *self.keys.state_mut(slot) = KeyState {
            panes,
            next_close: r.next_close,
            firing: r.firing,
            episode_start: r.episode_start,
            last_notify: r.last_notify,
            notifications: r.notifications,
        };
        if let Some(due) = r.next_close {
            self.timers.schedule(due, slot);
        }
        for h in r.held {
            for (cell, c) in self.cells.iter_mut().zip(&h.cells) {
                *cell = Cell { present: c.present, value: c.value, hash: c.hash };
            }
            let base = self.store_cells();
            self.held.push(Reverse(Held { t: h.t, seq: h.seq, slot, base }));
            // Rows that arrive after the restore come after every restored one, as they do
            // in the uninterrupted operator.
            self.arrivals = self.arrivals.max(h.seq);
        }
        Ok(())
    }
}
