//! # gridwatch-engine
//!
//! The complex-event-processing runtime of gridwatch, with no network or file I/O.
//!
//! ## The model
//!
//! * **Streams** ([`schema::StreamDef`]) are named flows of JSON events with declared,
//!   typed fields, an event-time field and an entity key.
//! * **Decoding** ([`decode::Decoder`]) turns payloads into Arrow record batches; rows that
//!   do not fit the schema become dead letters, never panics.
//! * **Event time** ([`time`]): each stream's watermark trails its newest event by the
//!   allowed out-of-orderness and is computed row by row in input order, before rows are
//!   partitioned. Rows behind it are late. Timers fire when the watermark passes them.
//! * **Rules** arrive compiled as a [`plan::Plan`]; conditions are DataFusion physical
//!   expressions evaluated vectorized per batch.
//! * **Partitions** ([`pipeline::Pipeline`]): rows are hashed by rule key to one of N
//!   workers, each a thread that owns the state of its keys; only whole batches cross
//!   threads, over bounded channels.
//! * **Operators** ([`operator`]) keep per-key state — threshold with `for` and hysteresis,
//!   tumbling/sliding windows, absence — and raise [`alert::Alert`]s with deterministic ids.
//!
//! The same input gives the same alerts whatever the number of workers or the batch size:
//! lateness and timer firing depend only on the per-row watermark, and each key's rows stay
//! in input order within one worker.

#![deny(missing_docs)]

pub mod alert;
pub mod clock;
pub mod decode;
pub mod error;
pub mod future;
mod ingest;
pub mod keys;
pub mod operator;
pub mod pipeline;
pub mod plan;
pub mod reject;
pub mod rowexpr;
pub mod schema;
pub mod state;
pub mod time;
pub mod zones;

#[cfg(test)]
mod future_tests;
#[cfg(test)]
mod split_tests;
#[cfg(test)]
pub(crate) mod testutil;

pub use alert::{Alert, AlertState};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{EngineError, Result};
pub use pipeline::{
    CheckpointStart, DeadLetter, EngineState, Origin, Output, Pipeline, PipelineOptions, PipelineReport, RuleState,
    StreamState,
};
pub use plan::Plan;
pub use reject::{Reject, RejectKind};
