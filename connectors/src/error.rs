//! Connector errors.

use std::path::PathBuf;

use thiserror::Error;

/// Errors of sources and sinks; each names the file or endpoint involved.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConnectorError {
    /// A file could not be opened or created.
    #[error("cannot open `{path}`: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Reading failed.
    #[error("cannot read `{path}`: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Writing failed.
    #[error("cannot write `{path}`: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A Kafka client failed; the message names the operation and the topic.
    #[error("Kafka: {0}")]
    Kafka(String),
}

/// Result alias for connectors.
pub type Result<T, E = ConnectorError> = std::result::Result<T, E>;
