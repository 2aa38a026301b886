//! The generator source: the example city's seeded events (see [`crate::generator`]).

use std::time::Duration;

use gridwatch_runtime::{Ingest, Polled, Source, SourceError};

use crate::generator::{self, CityGenerator, GeneratorSettings};
use gridwatch_engine::{Reject, RejectKind};

/// Events generated per poll.
const EVENTS_PER_POLL: usize = 4096;

/// See the module docs.
pub struct GeneratorSource {
    generator: CityGenerator,
    /// Plan stream index of each generated stream (`None`: not declared by the config).
    index: Option<Vec<Option<usize>>>,
    received: u64,
    unknown: u64,
    /// After a resume: events the first poll leaves out, so that polls end where an
    /// uninterrupted run's do.
    align: usize,
}

impl GeneratorSource {
    /// A generator with these settings.
    pub fn new(settings: GeneratorSettings) -> GeneratorSource {
        GeneratorSource { generator: CityGenerator::new(settings), index: None, received: 0, unknown: 0, align: 0 }
    }
}

impl Source for GeneratorSource {
    fn name(&self) -> &str {
        "generator"
    }

    fn bounded(&self) -> bool {
        true
    }

    fn poll(&mut self, ingest: &mut Ingest<'_>, _wait: Duration) -> Result<Polled, SourceError> {
        let index = self
            .index
            .get_or_insert_with(|| generator::STREAMS.iter().map(|s| ingest.plan().stream_index(s)).collect());
        for _ in 0..EVENTS_PER_POLL - std::mem::take(&mut self.align) {
            let Some((stream, payload)) = self.generator.next_event() else { return Ok(Polled::End) };
            self.received += 1;
            match index[stream] {
                Some(i) => ingest.push(i, payload)?,
                None => {
                    self.unknown += 1;
                    let reason = Reject::new(RejectKind::UnknownStream, "unknown stream: not declared in the config");
                    ingest.reject(generator::STREAMS[stream], reason, payload)?;
                }
            }
        }
        Ok(Polled::Data)
    }

    /// Events generated so far (with the settings, the generator is deterministic: a
    /// resume generates them again and skips them).
    fn position(&self) -> Option<Vec<u8>> {
        serde_json::to_vec(&serde_json::json!({ "events": self.received, "unknown": self.unknown })).ok()
    }

    fn resume(&mut self, position: &[u8]) -> Result<(), SourceError> {
        let bad = |m: String| SourceError::new("generator", gridwatch_runtime::ErrorClass::Config, m);
        let p: serde_json::Value = serde_json::from_slice(position)
            .map_err(|e| bad(format!("the snapshot's position cannot be read: {e}")))?;
        let (Some(events), Some(unknown)) = (p["events"].as_u64(), p["unknown"].as_u64()) else {
            return Err(bad(format!("the snapshot's position is not a generator's: {p}")));
        };
        for skipped in 0..events {
            if self.generator.next_event().is_none() {
                return Err(bad(format!(
                    "the generator ends after {skipped} events, before the snapshot's position ({events}): the generator settings (duration, seed) changed since; restore them, or move the state directory away"
                )));
            }
        }
        self.received = events;
        self.unknown = unknown;
        self.align = (events % EVENTS_PER_POLL as u64) as usize;
        Ok(())
    }

    fn received(&self) -> u64 {
        self.received
    }

    fn unknown_stream(&self) -> u64 {
        self.unknown
    }
}
