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
    /// A Kafka client could not be created or started (`what` names which): usually a
    /// property in the config's `kafka:` block that librdkafka rejects.
    #[error("Kafka: {what}: {source}")]
    KafkaClient {
        /// Which client, doing what ("creating the consumer").
        what: &'static str,
        /// librdkafka's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// The broker refused a request (subscribe, produce) on `topic`.
    #[error("Kafka: {what} `{topic}`: {source}")]
    KafkaRequest {
        /// The request ("producing to", "subscribing to").
        what: &'static str,
        /// The topic(s).
        topic: String,
        /// librdkafka's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// A setting gridwatch cannot run with (names the setting and the fix).
    #[error("Kafka: {0}")]
    KafkaSetting(&'static str),
    /// A record could not be encoded as JSON.
    #[error("encoding a record as JSON: {0}")]
    Encode(#[from] serde_json::Error),
    /// The engine failed under a connector.
    #[error("engine: {0}")]
    Engine(#[from] gridwatch_engine::EngineError),
    /// A broken invariant of gridwatch.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl ConnectorError {
    /// Who can fix it.
    pub fn class(&self) -> gridwatch_runtime::ErrorClass {
        use gridwatch_runtime::ErrorClass;
        use rdkafka::error::KafkaError;
        match self {
            ConnectorError::Open { .. } | ConnectorError::Read { .. } | ConnectorError::Write { .. } => {
                ErrorClass::External
            }
            // librdkafka rejects a property while building the client: a config problem.
            ConnectorError::KafkaClient { source: KafkaError::ClientCreation(_), .. } => ErrorClass::Config,
            ConnectorError::KafkaClient { .. } | ConnectorError::KafkaRequest { .. } => ErrorClass::External,
            ConnectorError::KafkaSetting(_) => ErrorClass::Config,
            ConnectorError::Encode(_) | ConnectorError::Engine(_) | ConnectorError::Internal(_) => ErrorClass::Internal,
        }
    }
}

/// Result alias for connectors.
pub type Result<T, E = ConnectorError> = std::result::Result<T, E>;
