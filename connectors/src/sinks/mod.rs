//! Sinks as components: each config kind ([`gridwatch_rules::sinks::SinkKind`]) builds its
//! [`gridwatch_runtime::Sink`] here. A new kind is a module of its own, its config type
//! and one line in [`build`].

use std::sync::Arc;

use gridwatch_rules::sinks::{SinkKind, SinkSpec};
use gridwatch_runtime::{ErrorClass, Routes, Sink, SinkError};

use crate::kafka::{KafkaOptions, KafkaStatus};

pub mod console;
pub mod file;
pub mod kafka;
pub mod store;
pub mod webhook;

/// What sinks may need from the run they are built for.
#[derive(Default)]
pub struct SinkEnv<'a> {
    /// The config's Kafka connection (brokers, properties), for Kafka sinks.
    pub kafka: Option<&'a KafkaOptions>,
    /// Shared Kafka client state (delivery failures show on `/readyz`).
    pub kafka_status: Option<Arc<KafkaStatus>>,
}

/// Builds the sink `spec` describes.
pub fn build(spec: &SinkSpec, env: &SinkEnv<'_>) -> Result<Box<dyn Sink>, SinkError> {
    let routes = Routes { send: spec.send.clone(), held_alerts: spec.held_alerts, filter: spec.filter.clone() };
    let name = spec.name.as_str();
    Ok(match &spec.kind {
        SinkKind::Stdout { format } => Box::new(console::ConsoleSink::new(name, routes, *format)),
        SinkKind::File { path } => Box::new(file::FileSink::open(name, routes, path)?),
        SinkKind::Kafka { topic } => {
            let kafka = env.kafka.ok_or_else(|| {
                SinkError::new(name, ErrorClass::Config, format!("sink `{name}` writes to Kafka topic `{topic}`, but the config has no `kafka:` block with the brokers"))
            })?;
            let status = env.kafka_status.clone().unwrap_or_default();
            Box::new(kafka::KafkaTopicSink::new(name, routes, topic, kafka, status)?)
        }
        SinkKind::Webhook(w) => Box::new(webhook::WebhookOut::start(name, routes, w)?),
        SinkKind::CaseStore { location } => Box::new(store::CaseStoreSink::open(name, routes, location)?),
    })
}
