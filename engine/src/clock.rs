//! The engine's clock: the only source of processing time in the engine.
//!
//! Event time comes from the events; processing time decides only when a batch has
//! lingered long enough, when a silent stream counts as idle (its watermark then follows
//! the clock), and when a stalled replay gives up. All of it is read through a [`Clock`]
//! given in [`crate::PipelineOptions::clock`], so tests drive it with a [`ManualClock`]
//! instead of sleeping, and nothing in the engine reads the system's clock behind the
//! caller's back. (Time spent per stage, for the report, is measured with `Instant`
//! directly: it decides nothing.)

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Processing time, monotonic.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Now.
    fn now(&self) -> Instant;
}

/// The system's monotonic clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that moves only when told to ([`ManualClock::advance`]), for tests.
#[derive(Debug)]
pub struct ManualClock {
    base: Instant,
    elapsed_ns: AtomicU64,
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock { base: Instant::now(), elapsed_ns: AtomicU64::new(0) }
    }
}

impl ManualClock {
    /// A clock standing still at an arbitrary instant.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.elapsed_ns.fetch_add(u64::try_from(by.as_nanos()).unwrap_or(u64::MAX), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.base + Duration::from_nanos(self.elapsed_ns.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_advanced() {
        let c = ManualClock::new();
        let t0 = c.now();
        assert_eq!(c.now(), t0);
        c.advance(Duration::from_secs(90));
        assert_eq!(c.now() - t0, Duration::from_secs(90));
    }
}
