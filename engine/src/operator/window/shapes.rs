//! How each window shape adds a row to a key's panes and closes its windows (see the
//! parent module's docs for the model).

use super::{Pane, WindowOperator, add_cells};
use crate::time::Millis;

impl WindowOperator {
    /// Time windows: the row goes into the pane of `slide` it falls in.
    pub(super) fn add_to_time_pane(&mut self, slot: u32, t: Millis, slide: Millis) {
        let pane_index = t.div_euclid(slide);
        let st = self.keys.state_mut(slot);
        let pos = match st.panes.iter().rposition(|p| p.index <= pane_index) {
            Some(p) if st.panes[p].index == pane_index => p,
            found => {
                let at = found.map_or(0, |p| p + 1);
                let pane = self.new_pane(pane_index, t);
                self.keys.state_mut(slot).panes.insert(at, pane);
                at
            }
        };
        let st = self.keys.state_mut(slot);
        add_cells(&mut st.panes[pos], &self.cells, t);
        let close = (pane_index + 1) * slide;
        if st.next_close.is_none_or(|n| close < n) {
            st.next_close = Some(close);
            self.timers.schedule(close, slot);
        }
    }

    /// Closes the time window of `slot` ending at `end` and moves its timer to the next.
    pub(super) fn close_time_window(&mut self, slot: u32, end: Millis, size: Millis, slide: Millis) {
        let panes_per_window = size / slide;
        let first_pane = end.div_euclid(slide) - panes_per_window;
        let last_pane = end.div_euclid(slide); // exclusive
        self.merged.iter_mut().for_each(|m| m.clear());
        let st = self.keys.state_mut(slot);
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
        if count > 0 {
            self.collect(slot, end - size, end, count);
        }
    }

    /// Sessions: the row joins every session it is within `gap` of (merging them), or
    /// opens one.
    pub(super) fn add_to_session(&mut self, slot: u32, t: Millis, gap: Millis, max: Millis) {
        let st = self.keys.state_mut(slot);
        // Within `gap` of the session, and not past its `max` (a reading delayed by the
        // out-of-orderness must not stretch a session beyond it).
        let joins = |p: &Pane| {
            t > p.first_t.saturating_sub(gap) && t < p.last_t.saturating_add(gap) && t < p.first_t.saturating_add(max)
        };
        let first = st.panes.iter().position(joins);
        let at = match first {
            Some(at) => {
                // Sessions are disjoint and sorted, so the ones it joins are contiguous.
                while st.panes.get(at + 1).is_some_and(joins) {
                    let next = st.panes.remove(at + 1).expect("checked");
                    let session = &mut st.panes[at];
                    session.count += next.count;
                    session.first_t = session.first_t.min(next.first_t);
                    session.last_t = session.last_t.max(next.last_t);
                    for (a, b) in session.accs.iter_mut().zip(&next.accs) {
                        a.merge(b);
                    }
                }
                at
            }
            None => {
                let at = st.panes.iter().position(|p| p.first_t > t).unwrap_or(st.panes.len());
                let pane = self.new_pane(0, t);
                self.keys.state_mut(slot).panes.insert(at, pane);
                at
            }
        };
        let st = self.keys.state_mut(slot);
        add_cells(&mut st.panes[at], &self.cells, t);
        self.reschedule_sessions(slot, gap, max);
    }

    /// Closes the sessions of `slot` that end at or before `wm`.
    pub(super) fn close_sessions(&mut self, slot: u32, wm: Millis, gap: Millis, max: Millis) {
        loop {
            let st = self.keys.state_mut(slot);
            let Some(pos) = st.panes.iter().position(|p| session_end(p, gap, max) <= wm) else { break };
            let session = st.panes.remove(pos).expect("found");
            self.merged.iter_mut().for_each(|m| m.clear());
            for (m, a) in self.merged.iter_mut().zip(&session.accs) {
                m.merge(a);
            }
            self.collect(slot, session.first_t, session_end(&session, gap, max), session.count);
        }
        self.reschedule_sessions(slot, gap, max);
    }

    /// Points the key's timer at the end of its earliest-ending session.
    fn reschedule_sessions(&mut self, slot: u32, gap: Millis, max: Millis) {
        let st = self.keys.state_mut(slot);
        let next = st.panes.iter().map(|p| session_end(p, gap, max)).min();
        if next != st.next_close {
            st.next_close = next;
            if let Some(end) = next {
                self.timers.schedule(end, slot);
            }
        }
    }

    /// Count windows: the row (in event-time order) goes into the newest pane, and closes
    /// a window when it completes the last of its `size / slide` panes.
    pub(super) fn add_counted(&mut self, slot: u32, t: Millis, size: u32, slide: u32, max: Millis) {
        let st = self.keys.state_mut(slot);
        let horizon = t.saturating_sub(max);
        while st.panes.front().is_some_and(|p| p.last_t < horizon) {
            st.panes.pop_front();
        }
        if st.panes.back().is_none_or(|p| p.count >= u64::from(slide)) {
            let pane = self.new_pane(0, t);
            self.keys.state_mut(slot).panes.push_back(pane);
        }
        let st = self.keys.state_mut(slot);
        let pane = st.panes.back_mut().expect("pushed");
        add_cells(pane, &self.cells, t);
        if pane.count < u64::from(slide) || st.panes.len() < (size / slide) as usize {
            return;
        }
        self.merged.iter_mut().for_each(|m| m.clear());
        let mut count = 0;
        for pane in &st.panes {
            count += pane.count;
            for (m, a) in self.merged.iter_mut().zip(&pane.accs) {
                m.merge(a);
            }
        }
        let start = st.panes.front().map_or(t, |p| p.first_t);
        st.panes.pop_front();
        self.collect(slot, start, t, count);
    }
}

/// When a session closes: `gap` after its last event, or `max` after its first.
fn session_end(p: &Pane, gap: Millis, max: Millis) -> Millis {
    p.last_t.saturating_add(gap).min(p.first_t.saturating_add(max))
}
