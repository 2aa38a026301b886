//! Sources, and the driver that runs one into the engine.
//!
//! A source reads its input and pushes it, payload by payload, into the engine
//! ([`Ingest`]). The driver owns everything else: barriers (every `barrier_every` payloads
//! for a bounded input, every 100 ms for a live one), cutting batches that lingered,
//! advancing idle streams' watermarks, telling the source when what it pushed has been
//! delivered by every sink ([`Source::acknowledged`], so it can acknowledge or commit its
//! input: an MQTT PUBACK, a Kafka offset), and the end:
//!
//! - the end of a bounded input (a file, the generator) — or, with `until_idle`, of a live
//!   one that stayed silent that long — finishes the engine as at the end of a file: every
//!   window that ends by the last event time closes;
//! - a stop request (SIGTERM, Ctrl-C) stops a live source gracefully: intake stops (an
//!   HTTP server answers 503), what the source had already taken is pushed, then a last
//!   barrier, a bounded wait for the sinks to acknowledge it, the source acknowledges its
//!   input, and the engine stops without closing windows. A bounded input is finished as
//!   at its end.
//!
//! With [`DriveOptions::checkpoint_interval`], the first barrier after each interval is a
//! checkpoint barrier (see [`crate::snapshot`]) if the source can say where it is
//! ([`Source::position`]: files and the generator), and so is the barrier before the end
//! of a bounded input (the state before the end closes its windows, so a run on the same
//! input grown longer goes on from there). Without a snapshot, open windows are not saved:
//! sources that resend unacknowledged input (Kafka replays from its committed offsets)
//! rebuild them after a restart; for MQTT, HTTP and pipes the state of windows still open
//! at the stop is lost (alerts already sent are not).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use gridwatch_engine::pipeline::PipelineReport;
use gridwatch_engine::time::Millis;
use gridwatch_engine::{Pipeline, Plan, Reject};

use crate::acks::Progress;
use crate::error::ErrorClass;
use crate::reload::{ReloadStatus, Reloader};

/// A source failed.
#[derive(Debug, thiserror::Error)]
#[error("source `{source_name}` ({class} error: {}): {message}", class.who_can_fix())]
pub struct SourceError {
    /// The source's kind or name.
    pub source_name: String,
    /// Who can fix it.
    pub class: ErrorClass,
    /// What failed, with the offending value.
    pub message: String,
}

impl SourceError {
    /// An error of `source`.
    pub fn new(source: &str, class: ErrorClass, message: impl Into<String>) -> SourceError {
        SourceError { source_name: source.to_string(), class, message: message.into() }
    }
}

impl From<gridwatch_engine::EngineError> for SourceError {
    fn from(e: gridwatch_engine::EngineError) -> SourceError {
        SourceError::new("engine", ErrorClass::Internal, e.to_string())
    }
}

/// What a call to [`Source::poll`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Polled {
    /// Pushed something (there may be more at once).
    Data,
    /// Nothing arrived within the wait.
    Idle,
    /// The input has ended (bounded sources).
    End,
}

/// A source. See the module docs.
pub trait Source: Send {
    /// Its kind, for logs (`file`, `generator`, `mqtt`, `http`).
    fn name(&self) -> &str;

    /// Whether the input ends by itself (a file, the generator).
    fn bounded(&self) -> bool;

    /// Pushes what is available, waiting at most `wait` for something to arrive. A source
    /// pushes a moderate amount per call (a few thousand payloads) so the driver keeps its
    /// rhythm.
    fn poll(&mut self, ingest: &mut Ingest<'_>, wait: Duration) -> Result<Polled, SourceError>;

    /// Barrier `seq` was sent after everything pushed so far.
    fn barrier(&mut self, _seq: u64) {}

    /// A graceful stop begins: take no new input (an HTTP server answers 503), but keep
    /// handing out, through [`Source::poll`], what was already taken from a client.
    fn stop_intake(&mut self) {}

    /// After [`Source::stop_intake`]: whether everything taken has been handed out.
    fn drained(&self) -> bool {
        true
    }

    /// Everything pushed before barrier `seq` has been delivered by every sink: the source
    /// may acknowledge (or commit) that input.
    fn acknowledged(&mut self, _seq: u64) -> Result<(), SourceError> {
        Ok(())
    }

    /// Whether the silence of `stream` may be taken for the passing of time (its watermark
    /// advancing with the clock after the stream's idle timeout): false while the source is
    /// cut off from its input (a broker down), when silence says nothing.
    fn silence_counts(&self) -> bool {
        true
    }

    /// For sources connected to a broker: a flag that is true while connected, which
    /// readiness checks (`/readyz`) read from another thread.
    fn connected(&self) -> Option<std::sync::Arc<AtomicBool>> {
        None
    }

    /// The position after everything pushed so far, in the source's own encoding, for a
    /// snapshot (see [`crate::snapshot`]); `None` if the source cannot resume from one
    /// (then no snapshot is taken).
    fn position(&self) -> Option<Vec<u8>> {
        None
    }

    /// Resumes reading after `position`, as [`Source::position`] wrote it in a snapshot
    /// of a run of the same source; before the first poll.
    fn resume(&mut self, position: &[u8]) -> Result<(), SourceError> {
        let _ = position;
        Err(SourceError::new(
            self.name(),
            ErrorClass::Config,
            "this source cannot resume from a snapshot: remove `checkpoint` from the config or move its state directory away",
        ))
    }

    /// Messages (or lines) received, for the summary.
    fn received(&self) -> u64;

    /// Payloads that named no known stream (already dead-lettered), for the summary.
    fn unknown_stream(&self) -> u64 {
        0
    }
}

/// How a source pushes into the engine.
pub struct Ingest<'a> {
    pipeline: &'a mut Pipeline,
    pushed: u64,
}

impl Ingest<'_> {
    /// The plan being run (stream names and indexes).
    pub fn plan(&self) -> &Plan {
        self.pipeline.plan()
    }

    /// Pushes one payload of `stream` (a replay: no arrival time).
    pub fn push(&mut self, stream: usize, payload: &[u8]) -> Result<(), SourceError> {
        self.pushed += 1;
        Ok(self.pipeline.push(stream, payload)?)
    }

    /// Pushes one payload of a live source, received at `arrival` (ms since the epoch), at
    /// position `offset` of `split`.
    pub fn push_arrived(
        &mut self,
        stream: usize,
        split: usize,
        payload: &[u8],
        offset: i64,
        arrival: Millis,
    ) -> Result<(), SourceError> {
        self.pushed += 1;
        Ok(self.pipeline.push_arrived(stream, split, payload, offset, Some(arrival))?)
    }

    /// Like [`Ingest::push_arrived`] for a payload read from `topic` (an MQTT topic),
    /// which its dead letter, if it becomes one, names.
    pub fn push_topic(
        &mut self,
        stream: usize,
        payload: &[u8],
        offset: i64,
        arrival: Millis,
        topic: std::sync::Arc<str>,
    ) -> Result<(), SourceError> {
        self.pushed += 1;
        Ok(self.pipeline.push_from(stream, 0, payload, offset, Some(arrival), Some(topic))?)
    }

    /// A payload that cannot reach a stream, to the dead-letter sinks with `reason`.
    pub fn reject(&mut self, stream: &str, reason: Reject, payload: &[u8]) -> Result<(), SourceError> {
        self.pushed += 1;
        Ok(self.pipeline.reject(stream, reason, payload)?)
    }
}

/// How the driver runs a source.
#[derive(Debug, Clone)]
pub struct DriveOptions {
    /// Bounded inputs: payloads between barriers.
    pub barrier_every: u64,
    /// Live inputs: time between barriers.
    pub barrier_interval: Duration,
    /// Live inputs: finish (as at the end of a file) after this much silence.
    pub until_idle: Option<Duration>,
    /// Stopping a live source: how long to wait for the sinks to acknowledge.
    pub stop_wait: Duration,
    /// Take a snapshot at the first barrier after this much time since the last one (and
    /// at the end of the input, and at a graceful stop); `None`: no snapshots.
    pub checkpoint_interval: Option<Duration>,
}

impl Default for DriveOptions {
    fn default() -> Self {
        DriveOptions {
            barrier_every: 1 << 16,
            barrier_interval: Duration::from_millis(100),
            until_idle: None,
            stop_wait: Duration::from_secs(10),
            checkpoint_interval: None,
        }
    }
}

/// How a driven run ended.
#[derive(Debug)]
pub struct Driven {
    /// The engine's report.
    pub report: PipelineReport,
    /// Stopped on request (not at the end of the input).
    pub interrupted: bool,
}

/// Runs `source` into `pipeline` until the input ends (or stays idle for `until_idle`),
/// or `stop` is raised. See the module docs.
pub fn drive(
    source: &mut dyn Source,
    mut pipeline: Pipeline,
    progress: &Progress,
    stop: &AtomicBool,
    options: &DriveOptions,
    mut reload: Option<(&mut dyn Reloader, &ReloadStatus)>,
) -> Result<Driven, SourceError> {
    let bounded = source.bounded();
    // Processing time from the engine's clock (a test may drive it); the bounded waits
    // for acknowledgements below are real waits and use the system's clock.
    let clock = pipeline.clock().clone();
    let mut seq = progress.acked();
    let mut acked = seq;
    // A bounded input's barriers fall every `barrier_every` payloads from its start, also
    // after a resume from a snapshot (its sources poll in blocks aligned the same way), so
    // a resumed run's barriers — and what is decided at them — are an uninterrupted run's.
    let mut since_barrier = if bounded { source.received() % options.barrier_every.max(1) } else { 0 };
    let mut last_barrier = clock.now();
    let mut last_idle_check = last_barrier;
    let mut last_checkpoint = Instant::now();
    // A checkpoint barrier if snapshots are on and the source can say where it is.
    let barrier = |pipeline: &mut Pipeline, source: &mut dyn Source, seq: u64, checkpoint: bool| match source
        .position()
        .filter(|_| checkpoint && options.checkpoint_interval.is_some())
    {
        Some(position) => pipeline.checkpoint(seq, position),
        None => pipeline.barrier(seq).map(|_| ()),
    };
    // `until_idle` counts from the first input on: a live source may start before its data.
    let mut last_data: Option<Instant> = None;
    let interrupted = loop {
        if stop.load(Ordering::Relaxed) {
            break true;
        }
        let mut ingest = Ingest { pipeline: &mut pipeline, pushed: 0 };
        let polled = source.poll(&mut ingest, Duration::from_millis(10))?;
        let pushed = ingest.pushed;
        since_barrier += pushed;
        let now = clock.now();
        if pushed > 0 {
            last_data = Some(now);
        }
        if polled == Polled::End {
            break false;
        }
        let due = if bounded {
            since_barrier >= options.barrier_every
        } else {
            now.duration_since(last_barrier) >= options.barrier_interval && since_barrier > 0
        };
        if due {
            seq += 1;
            if bounded {
                // A recording's silent streams follow its event time (see the method).
                pipeline.advance_idle_by_event_time()?;
            }
            let checkpoint = options.checkpoint_interval.is_some_and(|i| last_checkpoint.elapsed() >= i);
            if checkpoint {
                last_checkpoint = Instant::now();
            }
            barrier(&mut pipeline, source, seq, checkpoint)?;
            source.barrier(seq);
            since_barrier = 0;
            last_barrier = now;
        }
        if !bounded {
            pipeline.flush_lingering(now)?;
            if now.duration_since(last_idle_check) >= Duration::from_millis(250) {
                last_idle_check = now;
                let counts = source.silence_counts();
                pipeline.on_idle_where(now, counts, |_| counts)?;
            }
            if let (Some(d), Some(last)) = (options.until_idle, last_data)
                && now.duration_since(last) >= d
            {
                tracing::info!(source = source.name(), "no input for the idle time given: finishing");
                break false;
            }
        }
        if let Some((reloader, status)) = reload.as_mut()
            && let Some(loaded) = reloader.poll()
        {
            pipeline = reload_rules(pipeline, loaded, status)?;
        }
        let now_acked = progress.acked();
        if now_acked > acked {
            acked = now_acked;
            source.acknowledged(acked)?;
        }
    };
    if interrupted && !bounded {
        // Graceful stop of a live source: intake stops, what the source had already taken
        // (an HTTP request answered 202) is pushed, processed and delivered, the source
        // acknowledges it, and no window closes early.
        source.stop_intake();
        let started = Instant::now();
        loop {
            let mut ingest = Ingest { pipeline: &mut pipeline, pushed: 0 };
            let polled = source.poll(&mut ingest, Duration::from_millis(10))?;
            if polled != Polled::Data && source.drained() {
                break;
            }
            if started.elapsed() >= options.stop_wait {
                tracing::warn!(
                    source = source.name(),
                    "stopping: the source did not hand out all it had taken in time"
                );
                break;
            }
        }
        seq += 1;
        barrier(&mut pipeline, source, seq, true)?;
        source.barrier(seq);
        let started = Instant::now();
        while progress.acked() < seq && started.elapsed() < options.stop_wait {
            std::thread::sleep(Duration::from_millis(5));
        }
        if progress.acked() >= seq {
            source.acknowledged(seq)?;
        } else {
            tracing::warn!(
                waited = ?options.stop_wait,
                "stopping: the sinks did not acknowledge in time; unacknowledged input is sent again by sources that resend (Kafka, MQTT) and may be lost from those that do not (HTTP, pipes)"
            );
        }
        let report = pipeline.stop()?;
        return Ok(Driven { report, interrupted });
    }
    // The end of the input (or a bounded input stopped on request): windows close at the
    // last event time; the last barrier releases the case stage up to the end. Before
    // that, a snapshot of the state as it is — not with the windows closed — so a run on
    // the same input grown longer goes on from here.
    if options.checkpoint_interval.is_some() {
        seq += 1;
        barrier(&mut pipeline, source, seq, true)?;
        source.barrier(seq);
    }
    seq += 1;
    let report = pipeline.finish_with_barrier(Some(seq))?;
    let started = Instant::now();
    while !bounded && progress.acked() < seq && started.elapsed() < options.stop_wait {
        std::thread::sleep(Duration::from_millis(5));
    }
    if progress.acked() >= seq {
        source.acknowledged(seq)?;
    }
    Ok(Driven { report, interrupted })
}

/// A loaded reload: valid new rules are swapped in (see [`Pipeline::reload`]); invalid,
/// the old ones keep running and `status` keeps why.
fn reload_rules(
    pipeline: Pipeline,
    loaded: Result<std::sync::Arc<gridwatch_engine::Plan>, String>,
    status: &ReloadStatus,
) -> Result<Pipeline, SourceError> {
    let started = Instant::now();
    let plan = match loaded.and_then(|plan| pipeline.can_reload(&plan).map(|()| plan).map_err(|e| e.to_string())) {
        Ok(plan) => plan,
        Err(e) => {
            tracing::error!("reload refused; the running rules stay:\n{e}");
            eprintln!("reload refused; the running rules stay:\n{e}");
            status.failed(e);
            return Ok(pipeline);
        }
    };
    let (pipeline, changes) = pipeline.reload(plan)?;
    eprintln!(
        "reloaded (swap: {} ms): {} rules kept their state, {} changed, {} removed, {} added",
        started.elapsed().as_millis(),
        changes.kept.len(),
        changes.changed.len(),
        changes.removed.len(),
        changes.added.len()
    );
    tracing::info!(?changes, "rules reloaded");
    status.succeeded(changes);
    Ok(pipeline)
}
