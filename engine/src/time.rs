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
#[derive(Debug, Clone)]
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
