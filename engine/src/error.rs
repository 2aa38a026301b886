//! Engine errors.

use thiserror::Error;

/// Errors raised while building or running a pipeline.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum EngineError {
    /// An expression failed to evaluate on a batch.
    #[error("rule `{rule}`: evaluating `{expr}` failed: {source}")]
    Eval {
        /// Rule id.
        rule: String,
        /// Which expression (where / condition / clear_condition).
        expr: &'static str,
        /// DataFusion's error.
        #[source]
        source: datafusion::error::DataFusionError,
    },
    /// An expression did not produce a boolean column.
    #[error("rule `{rule}`: `{expr}` must be a boolean expression, got {got}")]
    NotBoolean {
        /// Rule id.
        rule: String,
        /// Which expression.
        expr: &'static str,
        /// The type it produced.
        got: String,
    },
    /// Building an Arrow batch failed.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// A worker thread stopped unexpectedly.
    #[error("partition worker {0} stopped unexpectedly")]
    WorkerGone(usize),
    /// A decoder thread stopped unexpectedly.
    #[error("decoder thread {0} stopped unexpectedly")]
    DecoderGone(usize),
    /// A reload cannot be applied to the running pipeline.
    #[error("reload: {0}")]
    Reload(String),
    /// A snapshot's state could not be read back.
    #[error(
        "snapshot: the state of key `{key}` of rule `{rule}` cannot be read ({reason}); the snapshot was written by an incompatible gridwatch or is damaged: start without it (move it out of the state directory)"
    )]
    BadState {
        /// Rule id.
        rule: String,
        /// The key.
        key: String,
        /// What was wrong.
        reason: String,
    },
}

/// Result alias for the engine.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;
