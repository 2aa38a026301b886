//! Errors at the runtime's seams, classed by who can fix them.
//!
//! Every error a source or sink reports carries an [`ErrorClass`]: the operator reading a
//! log line or a `/readyz` reason should see at once whether to edit the config, look at
//! the input data, check an external system, or report a bug.

use std::fmt;

/// Who can fix a problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// The rule or config author: a setting is wrong.
    Config,
    /// The input data: a record cannot be used (these usually become dead letters).
    Input,
    /// An external system: a broker, database, endpoint, disk or network is unavailable or
    /// refuses; retrying later may succeed.
    External,
    /// A bug in gridwatch.
    Internal,
}

impl ErrorClass {
    /// The class as shown in logs and `/readyz` (`config`, `input`, `external`, `internal`).
    pub fn name(self) -> &'static str {
        match self {
            ErrorClass::Config => "config",
            ErrorClass::Input => "input",
            ErrorClass::External => "external",
            ErrorClass::Internal => "internal",
        }
    }

    /// Who to turn to.
    pub fn who_can_fix(self) -> &'static str {
        match self {
            ErrorClass::Config => "fix the configuration",
            ErrorClass::Input => "check the input data",
            ErrorClass::External => "check the external system named; gridwatch retries where it can",
            ErrorClass::Internal => "this is a bug in gridwatch: please report it",
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A sink failed. Names the sink, says what it was doing, and who can fix it.
#[derive(Debug, thiserror::Error)]
#[error("sink `{sink}` ({class} error: {}): {message}", class.who_can_fix())]
pub struct SinkError {
    /// The sink's name in the config.
    pub sink: String,
    /// Who can fix it.
    pub class: ErrorClass,
    /// What failed, with the offending value (file, URL, topic…).
    pub message: String,
    /// The underlying error.
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl SinkError {
    /// An error of `sink` of class `class`.
    pub fn new(sink: &str, class: ErrorClass, message: impl Into<String>) -> SinkError {
        SinkError { sink: sink.to_string(), class, message: message.into(), source: None }
    }

    /// An error with its cause.
    pub fn caused(
        sink: &str,
        class: ErrorClass,
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> SinkError {
        SinkError { sink: sink.to_string(), class, message: message.into(), source: Some(Box::new(source)) }
    }
}

/// Snapshots could not be written or read.
#[derive(Debug, thiserror::Error)]
#[error("snapshots ({class} error: {}): {message}", class.who_can_fix())]
pub struct SnapshotError {
    /// Who can fix it.
    pub class: ErrorClass,
    /// What failed, with the file.
    pub message: String,
}

impl SnapshotError {
    /// An error of class `class`.
    pub fn new(class: ErrorClass, message: impl Into<String>) -> SnapshotError {
        SnapshotError { class, message: message.into() }
    }
}

/// The runtime could not go on.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A sink failed for good.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The engine stopped (a worker died): a bug.
    #[error("the engine stopped: {0} (internal error: this is a bug in gridwatch: please report it)")]
    Engine(#[from] gridwatch_engine::EngineError),
    /// Snapshots failed.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}

impl RuntimeError {
    /// Who can fix it.
    pub fn class(&self) -> ErrorClass {
        match self {
            RuntimeError::Sink(e) => e.class,
            RuntimeError::Engine(_) => ErrorClass::Internal,
            RuntimeError::Snapshot(e) => e.class,
        }
    }
}
