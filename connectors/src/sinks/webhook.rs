//! The webhook sink: records POSTed in batches ([`crate::webhook::WebhookSink`]).
//!
//! The sender handles records strictly in queue order (one batch in flight, a failed
//! batch retried before anything after it), so a barrier is delivered once the records
//! handled — delivered, or dead-lettered as permanently refused — reach the number queued
//! when the barrier passed.

use std::collections::VecDeque;
use std::time::Duration;

use gridwatch_rules::sinks::WebhookConfig;
use gridwatch_runtime::{ErrorClass, Health, OutputReport, Record, Routes, Sink, SinkError};

use crate::webhook::{WebhookError, WebhookOptions, WebhookSink};

/// See the module docs.
pub struct WebhookOut {
    name: String,
    routes: Routes,
    sink: WebhookSink,
    /// (barrier, records queued when it passed), oldest first.
    marks: VecDeque<(u64, u64)>,
    queued: u64,
    delivered: u64,
}

/// How long the end of a run waits for the endpoint before dead-lettering what is left.
const CLOSE_WAIT: Duration = Duration::from_secs(30);

impl WebhookOut {
    /// Starts the sender for `config`.
    pub fn start(name: &str, routes: Routes, config: &WebhookConfig) -> Result<WebhookOut, SinkError> {
        let sink = WebhookSink::start(WebhookOptions {
            url: config.url.clone(),
            max_batch: config.batch,
            linger: Duration::from_millis(config.linger_ms.max(0) as u64),
            queue_capacity: config.queue,
            headers: config.headers.clone(),
            dead_letter: config.dead_letter.clone(),
            ..WebhookOptions::default()
        })
        .map_err(|e| error(name, e))?;
        Ok(WebhookOut { name: name.to_string(), routes, sink, marks: VecDeque::new(), queued: 0, delivered: 0 })
    }
}

fn error(name: &str, e: WebhookError) -> SinkError {
    let class = match e {
        WebhookError::Invalid { .. } => ErrorClass::Config,
        _ => ErrorClass::External,
    };
    SinkError::caused(name, class, "the webhook", e)
}

impl Sink for WebhookOut {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "webhook"
    }

    fn routes(&self) -> &Routes {
        &self.routes
    }

    fn write(&mut self, record: &Record<'_>) -> Result<(), SinkError> {
        let value = match record {
            Record::Alert { gated: Some(g), .. } => serde_json::to_value(g),
            Record::Alert { alert, gated: None, .. } => serde_json::to_value(alert),
            Record::Case(u) => serde_json::to_value(u),
            Record::DeadLetter(d) => serde_json::to_value(d),
        }
        .map_err(|e| SinkError::caused(&self.name, ErrorClass::Internal, "encoding a record", e))?;
        self.sink.send(value).map_err(|e| error(&self.name, e))?;
        self.queued += 1;
        Ok(())
    }

    fn barrier(&mut self, seq: u64) -> Result<(), SinkError> {
        self.marks.push_back((seq, self.queued));
        Ok(())
    }

    fn delivered(&mut self) -> Result<u64, SinkError> {
        let s = self.sink.stats();
        let handled = s.delivered + s.rejected + s.abandoned;
        while let Some(&(seq, queued)) = self.marks.front() {
            if queued > handled {
                break;
            }
            self.delivered = seq;
            self.marks.pop_front();
        }
        Ok(self.delivered)
    }

    fn close(&mut self) -> Result<(), SinkError> {
        match self.sink.flush(CLOSE_WAIT) {
            Ok(()) => Ok(()),
            // Undelivered records stay queued and are dead-lettered when the sink stops.
            Err(e @ WebhookError::Timeout { .. }) => {
                tracing::warn!(sink = %self.name, error = %e, "webhook: records left undelivered at the end go to its dead-letter file");
                Ok(())
            }
            Err(e) => Err(error(&self.name, e)),
        }
    }

    fn report(&self) -> OutputReport {
        let s = self.sink.stats();
        OutputReport {
            sink: self.name.clone(),
            what: super::console::what(&self.routes),
            location: format!("webhook {}", self.sink.url()),
            records: Some(s.queued),
        }
    }

    fn health(&self) -> Health {
        let s = self.sink.stats();
        Health { failing: s.failing, reason: s.last_error.filter(|_| s.failing), delivered: Some(s.delivered) }
    }
}
