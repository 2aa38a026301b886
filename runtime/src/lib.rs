//! # gridwatch-runtime
//!
//! The running topology: what lies between the sources, the engine and the sinks, owned in
//! one place.
//!
//! ## The model
//!
//! * **Sinks** ([`sink::Sink`]) are components built from their own config (the connectors
//!   crate builds them): a console, NDJSON files, Kafka topics, webhooks, a case store.
//!   Each receives the records its `send:` and filter select ([`sink::Routes`]) and says how
//!   far it has delivered.
//! * **The output thread** ([`outputs::Outputs`]) takes what the engine's workers emit,
//!   passes alerts through the alert and case stage ([`stage::CaseStageRunner`]) when
//!   there is one, and hands every record to the sinks that take it.
//! * **Barriers and acknowledgements** ([`acks`]): sources send barriers through the
//!   engine; once every worker passed one, the sinks are told, and the barrier is
//!   acknowledged when every sink delivered what came before it and the case store
//!   recorded the stage's checkpoint. Sources commit input positions only up to the
//!   acknowledged barrier ([`acks::Progress`]). One tracker serves every sink.
//! * **Sources** ([`source::Source`]) read their input and push it; one driver
//!   ([`source::drive`]) owns the rest of a run's life: barriers, linger, idle streams,
//!   acknowledging the source's input once every sink delivered it, and the end (the end of
//!   a bounded input, idleness, or a graceful stop).
//! * **Snapshots** ([`snapshot`]): at checkpoint barriers the engine's workers, the
//!   pipeline and the source hand over their state; once the barrier is acknowledged the
//!   output thread writes it as one file, and a restart resumes from the newest.
//! * **Errors** ([`error`]) are classed by who can fix them: the config's author, the input
//!   data, an external system, or gridwatch itself.

#![deny(missing_docs)]

pub mod acks;
mod checkpoint;
pub mod crash;
pub mod error;
pub mod metrics;
pub mod outputs;
pub mod reload;
pub mod sink;
pub mod snapshot;
pub mod source;
pub mod stage;

pub use acks::Progress;
pub use error::{ErrorClass, RuntimeError, SinkError, SnapshotError};
pub use metrics::RunMetrics;
pub use outputs::{Outputs, OutputsReport, RuleCounts};
pub use reload::{ReloadStatus, Reloader};
pub use sink::{Health, OutputReport, Record, RecordKind, Resume, Routes, Sink, SinkFilter};
pub use source::{DriveOptions, Driven, Ingest, Polled, Source, SourceError, drive};
pub use stage::{CaseStageRunner, FeedbackInput, Preloaded};

/// Milliseconds since the epoch, from the system's clock (for file metadata, not for event time).
pub(crate) fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
