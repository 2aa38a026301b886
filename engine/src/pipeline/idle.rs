//! Idle streams in a recording: event-time idleness at the barriers of a bounded input.
//!
//! A live source's silent stream follows the clock after its `idle_timeout`
//! ([`Pipeline::on_idle`]). A recording (a file, the generator) replays hours in seconds, so
//! the clock says nothing; what says a stream is silent is the recording itself: no row of
//! the stream between two barriers while the furthest stream's watermark is more than the
//! timeout past it. Such a stream stops holding the others back — the case stage's
//! frontier, a sequence rule's held rows — by moving its watermark to the furthest
//! watermark minus its timeout. Barriers of a bounded input fall at fixed input positions
//! and everything pushed before them is sequenced first, so the same recording gives the
//! same watermarks, hence the same alerts, for any batch size, worker or decoder count.

use super::Pipeline;
use crate::error::Result;
use crate::time::WATERMARK_START;

impl Pipeline {
    /// Moves the watermark of every stream that has an idle timeout, has been heard from,
    /// received nothing since the previous call and trails the furthest stream's
    /// watermark by more than its timeout, to that watermark minus the timeout; its rows
    /// still waiting for evidence of a wrong clock are judged first. Drivers of bounded
    /// inputs call it at each barrier (see the module docs).
    pub fn advance_idle_by_event_time(&mut self) -> Result<()> {
        self.flush()?;
        let mut idle = Vec::new();
        for i in 0..self.streams.len() {
            let s = &mut self.streams[i];
            let received = std::mem::replace(&mut s.received_at_idle_check, s.stats.received);
            if s.def.idle_timeout_ms.is_some() && received > 0 && s.stats.received == received && s.replay.is_none() {
                idle.push(i);
            }
        }
        self.follow_furthest(&idle)
    }

    /// For a live source that knows when a stream has nothing more to read (Kafka: every
    /// partition of it read to its end, and silent): such a stream with an idle timeout
    /// follows the furthest stream's watermark minus its timeout, heard from or not, so a
    /// sparse or empty topic does not hold back the case stage and the sequence rules
    /// while the others catch up on a backlog (the clock-driven advance of
    /// [`Pipeline::on_idle`] moves at the clock's pace, far slower than a catch-up).
    pub fn advance_caught_up(&mut self, caught_up: impl Fn(usize) -> bool) -> Result<()> {
        let idle: Vec<usize> = (0..self.streams.len())
            .filter(|&i| {
                caught_up(i) && self.streams[i].def.idle_timeout_ms.is_some() && self.streams[i].replay.is_none()
            })
            .collect();
        if idle.is_empty() {
            // Called every idle check of a busy consumer: cutting the batches here would
            // only make them smaller.
            return Ok(());
        }
        self.flush()?;
        self.follow_furthest(&idle)
    }

    /// A live stream never heard from for its idle timeout since the pipeline started
    /// (while `may_advance` says silence counts) follows the furthest watermark minus the
    /// timeout: a feed that sends nothing at all must not hold back forever the rules that
    /// read it and the stages behind them. Called by [`Pipeline::on_idle_where`].
    pub(super) fn unheard_follow(
        &mut self,
        now: std::time::Instant,
        may_advance: &impl Fn(usize) -> bool,
    ) -> Result<()> {
        let idle: Vec<usize> = (0..self.streams.len())
            .filter(|&i| {
                let s = &self.streams[i];
                s.stats.received == 0
                    && s.replay.is_none()
                    && may_advance(i)
                    && s.def.idle_timeout_ms.is_some_and(|t| {
                        now.saturating_duration_since(self.started).as_millis() as crate::time::Millis >= t
                    })
            })
            .collect();
        self.follow_furthest(&idle)
    }

    /// Moves each of `idle` to the furthest watermark minus its idle timeout (never back),
    /// judging its suspect rows first: the silence is the evidence they wait for (see
    /// `crate::future`). Everything pushed must have been flushed.
    fn follow_furthest(&mut self, idle: &[usize]) -> Result<()> {
        if idle.is_empty() {
            return Ok(());
        }
        for &i in idle {
            self.settle(i)?;
        }
        let furthest = self.streams.iter().map(|s| s.tracker.watermark()).filter(|&w| w != WATERMARK_START).max();
        let Some(furthest) = furthest else { return Ok(()) };
        for &i in idle {
            let s = &mut self.streams[i];
            let Some(timeout) = s.def.idle_timeout_ms else { continue };
            let before = s.tracker.watermark();
            if before == WATERMARK_START && s.stats.received > 0 {
                // Every row it had was rejected: nothing says where its time is.
                continue;
            }
            let target = furthest.saturating_sub(timeout);
            if target > before {
                let wm = s.tracker.advance_to(target);
                s.stats.watermark = wm;
                s.awaited_since = None;
                self.broadcast_watermark(i, wm)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::clock::Clock;
    use crate::pipeline::{Output, Pipeline, PipelineOptions};
    use crate::plan::Plan;
    use crate::schema::StreamDef;
    use crate::testutil::{ev, stream};
    use crate::time::{Millis, WATERMARK_START};

    const IDLE: Millis = 60_000;

    fn named(name: &str) -> Arc<StreamDef> {
        Arc::new(StreamDef { name: name.into(), ..(*stream(0, Some(IDLE))).clone() })
    }

    /// Streams `busy` and `sparse`, no rules; returns the pipeline and its outputs.
    fn pipeline() -> (Pipeline, crossbeam_channel::Receiver<Output>) {
        let plan = Arc::new(Plan { streams: vec![named("busy"), named("sparse")], rules: Vec::new() });
        Pipeline::start(plan, PipelineOptions { workers: 2, batch_size: 7, queue_depth: 4, ..Default::default() })
    }

    fn busy_minutes(p: &mut Pipeline, from: Millis, to: Millis) {
        for t in (from..to).step_by(1000) {
            p.push(0, ev(t, "a", 1.0).as_bytes()).expect("push");
        }
    }

    /// The frontier the barrier carried.
    fn barrier(p: &mut Pipeline, rx: &crossbeam_channel::Receiver<Output>, seq: u64) -> Millis {
        p.barrier(seq).expect("barrier");
        let mut seen = 0;
        let mut low = Millis::MAX;
        while seen < 2 {
            if let Output::Barrier { seq: s, watermark, .. } = rx.recv().expect("output") {
                assert_eq!(s, seq);
                low = low.min(watermark);
                seen += 1;
            }
        }
        low
    }

    #[test]
    fn a_silent_stream_follows_the_recording_after_a_quiet_interval() {
        let (mut p, rx) = pipeline();
        for t in (1_000..=10_000).step_by(1000) {
            p.push(1, ev(t, "permit", 1.0).as_bytes()).expect("push");
        }
        busy_minutes(&mut p, 0, 600_000);
        // The sparse stream had rows since the last check: it is not idle yet.
        p.advance_idle_by_event_time().expect("idle");
        assert_eq!(barrier(&mut p, &rx, 1), 10_000, "held back by the sparse stream");
        busy_minutes(&mut p, 600_000, 900_000);
        p.advance_idle_by_event_time().expect("idle");
        assert_eq!(p.watermarks(), vec![899_000, 899_000 - IDLE]);
        assert_eq!(barrier(&mut p, &rx, 2), 899_000 - IDLE);
        // A row of the sparse stream behind its new watermark is late; one after it is not.
        p.push(1, ev(800_000, "late", 1.0).as_bytes()).expect("push");
        p.push(1, ev(850_000, "fresh", 1.0).as_bytes()).expect("push");
        let report = p.finish().expect("finish");
        assert_eq!((report.streams[1].late, report.streams[1].accepted), (1, 11));
    }

    #[test]
    fn a_stream_that_lags_but_keeps_sending_is_not_idle_and_one_never_heard_is_not_moved() {
        let (mut p, _rx) = pipeline();
        busy_minutes(&mut p, 600_000, 900_000);
        p.advance_idle_by_event_time().expect("idle");
        for t in (0..300_000).step_by(10_000) {
            p.push(1, ev(t, "lagging", 1.0).as_bytes()).expect("push");
        }
        busy_minutes(&mut p, 900_000, 1_000_000);
        p.advance_idle_by_event_time().expect("idle");
        assert_eq!(p.watermarks(), vec![999_000, 290_000], "ten minutes behind, but sending");

        let (mut p, _rx) = pipeline();
        busy_minutes(&mut p, 0, 600_000);
        p.advance_idle_by_event_time().expect("idle");
        p.advance_idle_by_event_time().expect("idle");
        assert_eq!(p.watermarks(), vec![599_000, WATERMARK_START], "nothing says where its time is");
    }

    #[test]
    fn a_suspect_row_of_an_idle_stream_is_judged_by_its_silence() {
        let (mut p, _rx) = pipeline();
        // Two nights of a nightly upload: the second is a day ahead of the first, far past
        // `max_future`, and no row after it says whether its clock is wrong.
        p.push(1, ev(0, "night", 1.0).as_bytes()).expect("push");
        p.push(1, ev(86_400_000, "night", 1.0).as_bytes()).expect("push");
        busy_minutes(&mut p, 86_400_000, 86_400_000 + 300_000);
        p.advance_idle_by_event_time().expect("idle");
        busy_minutes(&mut p, 86_400_000 + 300_000, 86_400_000 + 600_000);
        p.advance_idle_by_event_time().expect("idle");
        let report = p.finish().expect("finish");
        assert_eq!((report.streams[1].accepted, report.streams[1].late, report.streams[1].future), (2, 0, 0));
    }

    #[test]
    fn a_stream_read_to_its_end_follows_the_others_heard_from_or_not() {
        let (mut p, _rx) = pipeline();
        busy_minutes(&mut p, 0, 600_000);
        p.advance_caught_up(|s| s == 0).expect("caught up");
        assert_eq!(p.watermarks(), vec![599_000, WATERMARK_START], "only streams the source says are at their end");
        p.advance_caught_up(|s| s == 1).expect("caught up");
        assert_eq!(p.watermarks(), vec![599_000, 599_000 - IDLE], "an empty topic holds nothing back");
    }

    #[test]
    fn a_live_stream_never_heard_from_follows_the_others_after_its_idle_timeout() {
        let clock = Arc::new(crate::clock::ManualClock::new());
        let plan = Arc::new(Plan { streams: vec![named("busy"), named("sparse")], rules: Vec::new() });
        let options = PipelineOptions { workers: 1, clock: clock.clone(), ..Default::default() };
        let (mut p, _rx) = Pipeline::start(plan, options);
        busy_minutes(&mut p, 0, 600_000);
        clock.advance(std::time::Duration::from_millis(IDLE as u64 - 1));
        p.on_idle(clock.now()).expect("idle");
        assert_eq!(p.watermarks()[1], WATERMARK_START, "not yet");
        clock.advance(std::time::Duration::from_millis(1));
        p.on_idle(clock.now()).expect("idle");
        assert_eq!(p.watermarks()[1], 599_000 - IDLE);
    }
}
