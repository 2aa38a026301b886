//! One acknowledgement tracker for every sink.
//!
//! A barrier travels through every worker ([`gridwatch_engine::Output::Barrier`] once per
//! worker); once all passed it, every output caused by input before it has reached the
//! output thread, which hands it to the sinks and tells each sink the barrier passed. The
//! barrier is *acknowledged* once every sink has delivered everything written before it,
//! and — if a sink records the alert and case stage's checkpoint (the case store) — once
//! that checkpoint is written. The checkpoint waits for every other sink: once it is
//! written, a restart does not emit the records before it again, so they must all be
//! delivered by then (a crash in between only delivers some twice). Sources commit their
//! positions only up to the acknowledged barrier ([`Progress`]).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};

use gridwatch_engine::time::Millis;

use crate::error::SinkError;
use crate::sink::Sink;

/// Counts the workers' barriers and the lowest watermark they carry.
#[derive(Debug, Default)]
pub struct BarrierCount {
    seen: HashMap<u64, (usize, Millis)>,
}

impl BarrierCount {
    /// Records one worker's barrier `seq` with its `watermark`; when it was the last of
    /// `workers`, the lowest watermark of them all (each worker lowers it to what its
    /// held rows may still raise).
    pub fn arrived(&mut self, seq: u64, workers: usize, watermark: Millis) -> Option<Millis> {
        let (n, low) = self.seen.entry(seq).or_insert((0, Millis::MAX));
        *n += 1;
        *low = (*low).min(watermark);
        if *n >= workers {
            let low = *low;
            self.seen.remove(&seq);
            return Some(low);
        }
        None
    }
}

/// Progress shared with the sources: the highest acknowledged barrier.
#[derive(Debug, Default)]
pub struct Progress {
    acked: AtomicU64,
}

impl Progress {
    /// The highest barrier acknowledged by every sink (and checkpointed).
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::Acquire)
    }

    /// Starts counting at `seq` (a barrier sequence that continues an earlier pipeline's).
    pub fn start_at(&self, seq: u64) {
        self.acked.fetch_max(seq, Ordering::AcqRel);
    }

    fn publish(&self, seq: u64) {
        self.acked.fetch_max(seq, Ordering::AcqRel);
    }
}

/// Which barriers the sinks have delivered, and the checkpoints waiting for them.
#[derive(Debug, Default)]
pub struct AckTracker {
    /// Highest barrier completed (passed by every worker and handed to the sinks).
    completed: u64,
    /// Barriers with the stage's checkpoint at them, waiting for every other sink.
    checkpoints: VecDeque<(u64, Option<Millis>)>,
}

impl AckTracker {
    /// Barrier `seq` passed every worker and the sinks were told; `frontier` is the alert
    /// and case stage's checkpoint at it.
    pub fn completed(&mut self, seq: u64, frontier: Option<Millis>) {
        self.completed = self.completed.max(seq);
        self.checkpoints.push_back((seq, frontier));
    }

    /// Asks the sinks how far they delivered, writes the newest checkpoint all of them
    /// delivered, and publishes the acknowledged barrier to `progress`.
    pub fn poll(&mut self, sinks: &mut [Box<dyn Sink>], progress: &Progress) -> Result<u64, SinkError> {
        let mut delivered = self.completed;
        for s in sinks.iter_mut().filter(|s| !s.checkpoints()) {
            delivered = delivered.min(s.delivered()?);
        }
        let mut newest = None;
        while self.checkpoints.front().is_some_and(|(seq, _)| *seq <= delivered) {
            newest = self.checkpoints.pop_front();
        }
        if let Some((_, frontier)) = newest {
            for s in sinks.iter_mut().filter(|s| s.checkpoints()) {
                s.checkpoint(frontier)?;
            }
        }
        progress.publish(delivered);
        Ok(delivered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::{OutputReport, Record, Routes};

    /// A sink that delivers barrier `n` only when told, and logs checkpoints.
    struct Slow {
        checkpoints: bool,
        delivered: u64,
        log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
        routes: Routes,
    }

    impl Sink for Slow {
        fn name(&self) -> &str {
            "slow"
        }
        fn kind(&self) -> &'static str {
            "test"
        }
        fn routes(&self) -> &Routes {
            &self.routes
        }
        fn write(&mut self, _: &Record<'_>) -> Result<(), SinkError> {
            Ok(())
        }
        fn barrier(&mut self, _: u64) -> Result<(), SinkError> {
            Ok(())
        }
        fn delivered(&mut self) -> Result<u64, SinkError> {
            Ok(self.delivered)
        }
        fn checkpoints(&self) -> bool {
            self.checkpoints
        }
        fn checkpoint(&mut self, frontier: Option<Millis>) -> Result<(), SinkError> {
            self.log.lock().unwrap().push(format!("checkpoint {frontier:?}"));
            Ok(())
        }
        fn close(&mut self) -> Result<(), SinkError> {
            Ok(())
        }
        fn report(&self) -> OutputReport {
            OutputReport { sink: "slow".into(), what: String::new(), location: String::new(), records: None }
        }
    }

    #[test]
    fn the_checkpoint_waits_for_every_other_sink() {
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mk = |checkpoints| -> Box<dyn Sink> {
            Box::new(Slow { checkpoints, delivered: 0, log: log.clone(), routes: Routes::default() })
        };
        let mut sinks = vec![mk(false), mk(true)];
        let progress = Progress::default();
        let mut acks = AckTracker::default();
        acks.completed(1, Some(100));
        acks.completed(2, Some(200));
        assert_eq!(acks.poll(&mut sinks, &progress).unwrap(), 0, "the webhook has delivered nothing");
        assert!(log.lock().unwrap().is_empty(), "no checkpoint before the others delivered");
        // Downcasting is not needed: rebuild the slow sink with its new progress.
        sinks[0] = Box::new(Slow { checkpoints: false, delivered: 1, log: log.clone(), routes: Routes::default() });
        assert_eq!(acks.poll(&mut sinks, &progress).unwrap(), 1);
        assert_eq!(*log.lock().unwrap(), vec!["checkpoint Some(100)"]);
        sinks[0] = Box::new(Slow { checkpoints: false, delivered: 5, log: log.clone(), routes: Routes::default() });
        assert_eq!(acks.poll(&mut sinks, &progress).unwrap(), 2, "never past the completed barrier");
        assert_eq!(*log.lock().unwrap(), vec!["checkpoint Some(100)", "checkpoint Some(200)"]);
        assert_eq!(progress.acked(), 2);
    }

    #[test]
    fn barriers_complete_when_every_worker_passed() {
        let mut c = BarrierCount::default();
        assert_eq!(c.arrived(1, 2, 500), None);
        assert_eq!(c.arrived(2, 2, 900), None);
        assert_eq!(c.arrived(1, 2, 300), Some(300), "the lowest of the workers' watermarks");
        assert_eq!(c.arrived(2, 2, 1000), Some(900));
    }
}
