//! Event time: timestamps, watermarks and lateness.
//!
//! Every stream has one [`WatermarkTracker`], advanced row by row in input order by the
//! ingest stage. The watermark after row *i* is `max(event_time[0..=i]) − out_of_orderness`
//! (never decreasing). A row whose event time is *strictly* behind the watermark in force
//! before it is late. Because the tracker runs in input order, before rows are split across
//! partitions, the watermark each row sees, and so every late decision and every timer
//! firing, is the same for any number of workers and any batch size.

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};

/// Milliseconds since the Unix epoch (UTC).
pub type Millis = i64;

/// The watermark before any event has been seen.
pub const WATERMARK_START: Millis = i64::MIN;

/// Earliest accepted event time: 0001-01-01T00:00:00Z.
pub const MIN_EVENT_TIME: Millis = -62_135_596_800_000;
/// Latest accepted event time: 9999-12-31T23:59:59.999Z.
pub const MAX_EVENT_TIME: Millis = 253_402_300_799_999;

/// True for event times the engine accepts. Bounding them (and durations, see the rules
/// crate) keeps every `time + duration` in operators far from `i64` overflow.
pub fn in_range(t: Millis) -> bool {
    (MIN_EVENT_TIME..=MAX_EVENT_TIME).contains(&t)
}

/// Parses RFC 3339 text (`2026-11-23T08:00:00Z`, `…+08:00`, fractional seconds allowed).
pub fn parse_timestamp(text: &str) -> Option<Millis> {
    DateTime::parse_from_rfc3339(text).ok().map(|t| t.timestamp_millis()).filter(|t| in_range(*t))
}

/// Formats milliseconds as RFC 3339 UTC with millisecond precision.
pub fn format_timestamp(ms: Millis) -> String {
    match Utc.timestamp_millis_opt(ms) {
        chrono::LocalResult::Single(t) => t.to_rfc3339_opts(SecondsFormat::Millis, true),
        _ => ms.to_string(),
    }
}

/// Tracks one stream's watermark in input order.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct WatermarkTracker {
    out_of_orderness: Millis,
    max_seen: Millis,
    watermark: Millis,
}

/// The outcome of observing one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// In time; the watermark after this row.
    OnTime(Millis),
    /// Behind the watermark by `behind_ms`.
    Late {
        /// How far behind the watermark the event was.
        behind_ms: Millis,
    },
}

impl WatermarkTracker {
    /// A tracker that allows events up to `out_of_orderness` ms behind the newest one.
    pub fn new(out_of_orderness: Millis) -> Self {
        WatermarkTracker { out_of_orderness, max_seen: WATERMARK_START, watermark: WATERMARK_START }
    }

    /// The current watermark.
    pub fn watermark(&self) -> Millis {
        self.watermark
    }

    /// The largest event time seen.
    pub fn max_event_time(&self) -> Millis {
        self.max_seen
    }

    /// Observes one event time.
    #[inline]
    pub fn observe(&mut self, t: Millis) -> Observed {
        if t < self.watermark {
            return Observed::Late { behind_ms: self.watermark - t };
        }
        if t > self.max_seen {
            self.max_seen = t;
            let candidate = t.saturating_sub(self.out_of_orderness);
            if candidate > self.watermark {
                self.watermark = candidate;
            }
        }
        Observed::OnTime(self.watermark)
    }

    /// Moves the watermark forward (idle source, end of input); never backwards.
    pub fn advance_to(&mut self, wm: Millis) -> Millis {
        if wm > self.watermark {
            self.watermark = wm;
        }
        self.watermark
    }
}

/// The watermark of a stream read from several independent splits (Kafka partitions),
/// Flink-style: each split bounds its own out-of-orderness, and the stream's watermark is
/// the minimum over the active splits, so a partition that is read ahead of another does
/// not make the other's events late.
///
/// Lateness is judged per split (against the split's own watermark), so which rows are
/// accepted depends only on each split's own order, never on how the splits' reads
/// interleave. A split that stays silent can be marked idle; it then stops holding the
/// stream back, and its next rows are also checked against the stream's watermark.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SplitWatermarks {
    out_of_orderness: Millis,
    splits: Vec<Split>,
    watermark: Millis,
    max_seen: Millis,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Split {
    tracker: WatermarkTracker,
    active: bool,
    rows_since_check: u64,
}

impl SplitWatermarks {
    /// One split (the common case of a single source); more are added as they appear.
    pub fn new(out_of_orderness: Millis) -> Self {
        let mut w = SplitWatermarks {
            out_of_orderness,
            splits: Vec::new(),
            watermark: WATERMARK_START,
            max_seen: WATERMARK_START,
        };
        w.declare(1);
        w
    }

    /// The out-of-orderness it allows.
    pub fn out_of_orderness(&self) -> Millis {
        self.out_of_orderness
    }

    /// Makes sure splits `0..n` exist. Declaring the splits before reading (the partitions
    /// of an assignment) keeps the watermark at the start until each has been heard from.
    pub fn declare(&mut self, n: usize) {
        while self.splits.len() < n {
            let tracker = WatermarkTracker::new(self.out_of_orderness);
            self.splits.push(Split { tracker, active: true, rows_since_check: 0 });
        }
    }

    /// The stream's watermark.
    pub fn watermark(&self) -> Millis {
        self.watermark
    }

    /// The largest event time seen in any split.
    pub fn max_event_time(&self) -> Millis {
        self.max_seen
    }

    /// Observes one event time read from `split`.
    #[inline]
    pub fn observe(&mut self, split: usize, t: Millis) -> Observed {
        if split >= self.splits.len() {
            self.declare(split + 1);
        }
        if t < self.watermark {
            return Observed::Late { behind_ms: self.watermark - t };
        }
        let single = self.splits.len() == 1;
        let sp = &mut self.splits[split];
        let before = sp.tracker.watermark();
        let observed = sp.tracker.observe(t);
        let Observed::OnTime(wm) = observed else { return observed };
        sp.rows_since_check += 1;
        let was_idle = !std::mem::replace(&mut sp.active, true);
        self.max_seen = self.max_seen.max(t);
        if single {
            self.watermark = self.watermark.max(wm);
        } else if wm > before && (before <= self.watermark || was_idle) {
            // Only a split that was holding the minimum can move it.
            self.recompute();
        }
        Observed::OnTime(self.watermark)
    }

    /// The watermark of `split` alone: rows of that split before it can no longer arrive on
    /// time. Unlike the stream's, it does not depend on how far the other splits have got.
    pub fn split_watermark(&self, split: usize) -> Millis {
        self.splits.get(split).map_or(WATERMARK_START, |s| s.tracker.watermark())
    }

    /// The largest event time accepted from `split` ([`WATERMARK_START`] before its first).
    pub fn split_max_event_time(&self, split: usize) -> Millis {
        self.splits.get(split).map_or(WATERMARK_START, |s| s.tracker.max_event_time())
    }

    fn recompute(&mut self) {
        let min = self.splits.iter().filter(|s| s.active).map(|s| s.tracker.watermark()).min();
        if let Some(m) = min
            && m > self.watermark
        {
            self.watermark = m;
        }
    }

    /// Marks splits that received no rows since the previous call as idle (they stop
    /// holding the watermark back) and returns the watermark. Call it once per idle timeout.
    pub fn mark_silent_splits_idle(&mut self) -> Millis {
        if self.splits.len() > 1 {
            for s in &mut self.splits {
                if s.rows_since_check == 0 {
                    s.active = false;
                }
                s.rows_since_check = 0;
            }
            self.recompute();
        }
        self.watermark
    }

    /// Moves the watermark forward (idle source, end of input); never backwards.
    pub fn advance_to(&mut self, wm: Millis) -> Millis {
        if wm > self.watermark {
            self.watermark = wm;
        }
        self.watermark
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn out_of_order_within_bounds_is_accepted_and_late_is_not() {
        let mut w = WatermarkTracker::new(10);
        assert_eq!(w.observe(100), Observed::OnTime(90));
        assert_eq!(w.observe(95), Observed::OnTime(90));
        assert_eq!(w.observe(90), Observed::OnTime(90), "exactly at the watermark is on time");
        assert_eq!(w.observe(89), Observed::Late { behind_ms: 1 });
        assert_eq!(w.observe(120), Observed::OnTime(110));
        assert_eq!(w.advance_to(105), 110, "never moves back");
    }

    #[test]
    fn timestamps_round_trip() {
        let ms = parse_timestamp("2026-11-23T08:00:00.250+08:00").unwrap();
        assert_eq!(format_timestamp(ms), "2026-11-23T00:00:00.250Z");
        assert_eq!(parse_timestamp("23/11/2026"), None);
    }

    #[test]
    fn a_split_read_ahead_does_not_make_another_late() {
        let mut w = SplitWatermarks::new(10);
        w.declare(2);
        assert_eq!(w.observe(0, 1_000), Observed::OnTime(WATERMARK_START), "split 1 not heard from yet");
        assert_eq!(w.observe(1, 100), Observed::OnTime(90));
        assert_eq!(w.observe(1, 95), Observed::OnTime(90));
        assert_eq!(w.observe(1, 80), Observed::Late { behind_ms: 10 }, "late within its own split");
        assert_eq!(w.observe(1, 2_000), Observed::OnTime(990));
        assert_eq!(w.max_event_time(), 2_000);
        // Split 0 falls silent: once idle, it no longer holds the stream back.
        assert_eq!(w.mark_silent_splits_idle(), 990);
        w.observe(1, 2_005);
        assert_eq!(w.mark_silent_splits_idle(), 1_995);
        assert_eq!(w.observe(0, 1_500), Observed::Late { behind_ms: 495 }, "behind the stream after idling");
    }

    proptest! {
        /// Which rows are accepted depends only on each split's own order, not on how the
        /// reads of the splits interleave; the stream's watermark is monotone and never
        /// ahead of any split's.
        #[test]
        fn lateness_is_independent_of_split_interleaving(
            a in prop::collection::vec(0i64..5_000, 1..80),
            b in prop::collection::vec(0i64..5_000, 1..80),
            picks in prop::collection::vec(any::<bool>(), 160),
            bound in 0i64..300,
        ) {
            let accepted = |order: &[(usize, i64)]| {
                let mut w = SplitWatermarks::new(bound);
                w.declare(2);
                let mut prev = WATERMARK_START;
                let mut out = [Vec::new(), Vec::new()];
                for &(split, t) in order {
                    if let Observed::OnTime(wm) = w.observe(split, t) {
                        assert!(wm >= prev);
                        prev = wm;
                        out[split].push(t);
                    }
                }
                out
            };
            let sequential: Vec<(usize, i64)> =
                a.iter().map(|&t| (0, t)).chain(b.iter().map(|&t| (1, t))).collect();
            let (mut i, mut j) = (0, 0);
            let mut interleaved = Vec::new();
            for &p in &picks {
                if (p && i < a.len()) || j >= b.len() {
                    if i < a.len() { interleaved.push((0, a[i])); i += 1; }
                } else {
                    interleaved.push((1, b[j])); j += 1;
                }
            }
            interleaved.extend(a[i..].iter().map(|&t| (0, t)));
            interleaved.extend(b[j..].iter().map(|&t| (1, t)));
            prop_assert_eq!(accepted(&sequential), accepted(&interleaved));
        }
    }

    proptest! {
        /// The watermark never decreases, never passes max − bound, and every accepted
        /// event is at or after the watermark in force before it.
        #[test]
        fn watermark_is_monotone_and_bounded(times in prop::collection::vec(0i64..10_000, 1..200), bound in 0i64..500) {
            let mut w = WatermarkTracker::new(bound);
            let mut prev = WATERMARK_START;
            let mut max = WATERMARK_START;
            for t in times {
                let before = w.watermark();
                match w.observe(t) {
                    Observed::OnTime(wm) => {
                        prop_assert!(t >= before);
                        max = max.max(t);
                        prop_assert!(wm >= prev);
                        prop_assert_eq!(wm, (max - bound).max(prev));
                        prev = wm;
                    }
                    Observed::Late { behind_ms } => {
                        prop_assert!(t < before);
                        prop_assert_eq!(behind_ms, before - t);
                    }
                }
            }
        }
    }
}
