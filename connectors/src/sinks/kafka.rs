//! The Kafka sink: records on a topic through the idempotent producer
//! ([`crate::kafka::KafkaSink`]); alerts keyed by alert id, case events by case id (one
//! case's events stay in order on one partition), dead letters with their reason and
//! position in headers. Delivery is asynchronous: a barrier counts as delivered once the
//! broker acknowledged every record produced before it.

use std::sync::Arc;

use gridwatch_runtime::{Health, OutputReport, Record, Routes, Sink, SinkError};

use crate::error::ConnectorError;
use crate::kafka::{KafkaOptions, KafkaSink, KafkaStatus};

/// See the module docs.
pub struct KafkaTopicSink {
    name: String,
    routes: Routes,
    topic: String,
    producer: KafkaSink,
    status: Arc<KafkaStatus>,
    written: u64,
}

impl KafkaTopicSink {
    /// A producer for `topic` on the brokers of `kafka`.
    pub fn new(
        name: &str,
        routes: Routes,
        topic: &str,
        kafka: &KafkaOptions,
        status: Arc<KafkaStatus>,
    ) -> Result<KafkaTopicSink, SinkError> {
        let producer = KafkaSink::new(kafka, status.clone()).map_err(|e| error(name, e))?;
        Ok(KafkaTopicSink { name: name.to_string(), routes, topic: topic.to_string(), producer, status, written: 0 })
    }
}

fn error(name: &str, e: ConnectorError) -> SinkError {
    SinkError::caused(name, e.class(), "the Kafka producer", e)
}

impl Sink for KafkaTopicSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "kafka"
    }

    fn routes(&self) -> &Routes {
        &self.routes
    }

    fn write(&mut self, record: &Record<'_>) -> Result<(), SinkError> {
        let r = match record {
            Record::Alert { alert, .. } => self.producer.send_alert_to(&self.topic, alert),
            Record::Case(u) => self.producer.send_json(&self.topic, &u.case.case_id, u),
            Record::DeadLetter(d) => self.producer.send_dead_letter_to(&self.topic, d),
        };
        self.written += 1;
        r.map_err(|e| error(&self.name, e))
    }

    fn barrier(&mut self, seq: u64) -> Result<(), SinkError> {
        self.producer.barrier_passed(seq);
        Ok(())
    }

    fn delivered(&mut self) -> Result<u64, SinkError> {
        self.producer.delivered_through().map_err(|e| error(&self.name, e))
    }

    fn close(&mut self) -> Result<(), SinkError> {
        self.producer.flush().map_err(|e| error(&self.name, e))
    }

    fn report(&self) -> OutputReport {
        OutputReport {
            sink: self.name.clone(),
            what: super::console::what(&self.routes),
            location: format!("Kafka topic {}", self.topic),
            records: Some(self.written),
        }
    }

    fn health(&self) -> Health {
        let failing = self.status.sink_failing.load(std::sync::atomic::Ordering::Relaxed);
        Health { failing, reason: failing.then(|| "deliveries fail and are retried".to_string()), delivered: None }
    }
}
