//! The tuning knobs of a [`super::Pipeline`].

use std::sync::Arc;

use crate::clock::{Clock, SystemClock};
use crate::time::Millis;

/// Tuning knobs of a pipeline.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// Number of partition workers (threads).
    pub workers: usize,
    /// Number of decoder threads; 0 decodes on the thread that calls [`Pipeline::push`].
    pub decoders: usize,
    /// Payloads per stream gathered before a batch is cut, decoded and routed.
    pub batch_size: usize,
    /// Batches queued per worker before `push` blocks.
    pub queue_depth: usize,
    /// How long a partly filled batch may wait for more rows before
    /// [`Pipeline::flush_lingering`] sends it: the latency bound a slow stream adds.
    pub linger: std::time::Duration,
    /// Restore mode, per stream (index as in the plan): while a stream replays input that
    /// was acknowledged before a restart (see [`Pipeline::replay_split`]), the alerts that
    /// input raises with an event time before this instant are dropped (and counted): they
    /// were delivered before and are only recomputed while state is rebuilt. Later ones
    /// are sent again (a stage behind the workers may not have processed them). Empty:
    /// nothing is suppressed.
    pub replay_until: Vec<Millis>,
    /// Processing time: lingering batches, idle streams, stalled replays (see
    /// [`crate::clock`]). The system's clock unless a test drives one.
    pub clock: Arc<dyn Clock>,
    /// Payloads larger than this are dead-lettered (`too_large`, their first KiB kept)
    /// before any parsing: one huge line must not cost the memory of many.
    pub max_event_bytes: usize,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        PipelineOptions {
            workers: cores,
            decoders: if cores > 1 { cores } else { 0 },
            batch_size: 4096,
            queue_depth: 8,
            linger: std::time::Duration::from_millis(5),
            replay_until: Vec::new(),
            clock: Arc::new(SystemClock),
            max_event_bytes: 1 << 20,
        }
    }
}
