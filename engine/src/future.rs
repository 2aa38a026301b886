//! Events from the future: bounding how far ahead of the stream an event time may be.
//!
//! A stream's watermark follows its largest event time, so one event from a device with a
//! wrong clock (an hour ahead, a year, the year 9999) would move the watermark past every
//! real event still to come: they would all be late. So before an event may move anything,
//! its time is checked against a reference, and an event more than `max_future` ahead of it
//! is dead-lettered with reason `future` and changes no state:
//!
//! - **Live sources** (Kafka, MQTT, HTTP) know when each event arrived; an event cannot have
//!   happened after it arrived, so the reference is the arrival time (for Kafka the
//!   message's timestamp, capped by the wall clock; the source supplies it).
//! - **Replays** (a recorded file, the generator) have no arrival times. The reference is the
//!   stream's own recent event times: a row more than `max_future` ahead of the newest
//!   accepted one is a *suspect*. A suspect is either a wrong clock or a real jump (a gap in
//!   the recording, a sparse stream), and the rows after it tell which: if at least half of
//!   the next [`EVIDENCE_ROWS`] rows are more than `max_future` *behind* it, the stream's
//!   clock did not move and the suspect is dead-lettered; otherwise it is accepted, and
//!   nothing is lost on a real gap. The first row of a stream is always a suspect (there is
//!   nothing to compare it with yet).
//!
//! The verdict depends only on the rows in input order (always exactly the next
//! [`EVIDENCE_ROWS`] decoded rows, or all that remain at the end of the input), never on how
//! the input was cut into batches, so alerts stay the same for any batch size.

use crate::time::{Millis, WATERMARK_START};

/// Rows after a suspect that decide whether it is a wrong clock.
pub const EVIDENCE_ROWS: usize = 32;

/// What the rows after a suspect say about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Most of the rows after it are far behind it: its clock is wrong.
    Future,
    /// The stream really moved ahead (or there is no evidence against it).
    Accept,
    /// Not enough rows after it yet.
    Undecided,
}

/// True if a row at `t` of a replayed stream whose newest accepted event time is
/// `newest` must be judged by the rows after it.
#[inline]
pub fn is_suspect(t: Millis, newest: Millis, max_future: Millis) -> bool {
    newest == WATERMARK_START || t > newest.saturating_add(max_future)
}

/// Judges a suspect row at `t` by the event times of the rows after it, in input order.
/// `complete` says the input has ended: fewer than [`EVIDENCE_ROWS`] rows then suffice.
pub fn judge(t: Millis, max_future: Millis, after: impl Iterator<Item = Millis>, complete: bool) -> Verdict {
    let floor = t.saturating_sub(max_future);
    let (mut seen, mut behind) = (0usize, 0usize);
    for next in after.take(EVIDENCE_ROWS) {
        seen += 1;
        behind += usize::from(next < floor);
    }
    if seen < EVIDENCE_ROWS && !complete {
        Verdict::Undecided
    } else if seen > 0 && 2 * behind >= seen {
        Verdict::Future
    } else {
        Verdict::Accept
    }
}

/// True if an event at `t` that arrived at `arrival` is further ahead than `max_future`.
#[inline]
pub fn ahead_of_arrival(t: Millis, arrival: Millis, max_future: Millis) -> bool {
    t > arrival.saturating_add(max_future)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MIN: Millis = 60_000;

    #[test]
    fn a_wrong_clock_among_steady_rows_is_future() {
        let after = (1..=40).map(|i| i * 1_000);
        assert_eq!(judge(3_600_000, 5 * MIN, after, false), Verdict::Future);
    }

    #[test]
    fn a_gap_in_the_recording_is_accepted() {
        let after = (1..=40).map(|i| 3_600_000 + i * 1_000);
        assert_eq!(judge(3_600_000, 5 * MIN, after, false), Verdict::Accept);
    }

    #[test]
    fn too_few_rows_wait_unless_the_input_ended() {
        let after = [1_000, 2_000];
        assert_eq!(judge(3_600_000, 5 * MIN, after.into_iter(), false), Verdict::Undecided);
        assert_eq!(judge(3_600_000, 5 * MIN, after.into_iter(), true), Verdict::Future);
        assert_eq!(judge(3_600_000, 5 * MIN, std::iter::empty(), true), Verdict::Accept, "nothing against it");
    }

    #[test]
    fn a_burst_of_wrong_rows_shorter_than_half_the_evidence_is_caught() {
        // A device uploads 10 buffered readings an hour ahead, among steady rows.
        let mut after: Vec<Millis> = vec![3_600_000; 9];
        after.extend((1..=30).map(|i| i * 1_000));
        assert_eq!(judge(3_600_000, 5 * MIN, after.into_iter(), false), Verdict::Future);
    }

    #[test]
    fn suspects_and_arrivals() {
        assert!(is_suspect(0, WATERMARK_START, MIN), "the first row of a stream");
        assert!(!is_suspect(MIN, 0, MIN), "exactly max_future ahead is fine");
        assert!(is_suspect(MIN + 1, 0, MIN));
        assert!(!ahead_of_arrival(MIN, 0, MIN));
        assert!(ahead_of_arrival(MIN + 1, 0, MIN));
        assert!(!is_suspect(i64::MAX, i64::MAX - 1, MIN), "saturating");
    }

    proptest! {
        /// The verdict only depends on the first EVIDENCE_ROWS rows after the suspect.
        #[test]
        fn only_the_next_rows_count(
            t in 0i64..10_000_000,
            after in prop::collection::vec(0i64..10_000_000, EVIDENCE_ROWS..80),
            extra in prop::collection::vec(0i64..10_000_000, 0..20),
        ) {
            let a = judge(t, 5 * MIN, after.iter().copied(), false);
            let b = judge(t, 5 * MIN, after.iter().chain(&extra).copied(), false);
            prop_assert_eq!(a, b);
            prop_assert_ne!(a, Verdict::Undecided);
        }
    }
}
