//! Counters of a run, for the admin endpoint's `/metrics` and `/readyz`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64};

use crate::sink::Health;

/// Counters the output thread keeps. The names are the Prometheus metrics'.
#[derive(Debug, Default)]
pub struct RunMetrics {
    /// Alerts written to the sinks.
    pub alerts: AtomicU64,
    /// Dead letters written.
    pub dead_letters: AtomicU64,
    /// Rule evaluation failures.
    pub rule_errors: AtomicU64,
    /// Barriers acknowledged (all outputs before them delivered).
    pub barriers_acked: AtomicU64,
    /// Snapshots written.
    pub snapshots_written: AtomicU64,
    /// Snapshots that could not be written.
    pub snapshot_failures: AtomicU64,
    /// Size of the last snapshot written, bytes.
    pub snapshot_bytes: AtomicU64,
    /// Set when a `cases:` block runs the case stage.
    pub cases_enabled: AtomicBool,
    /// Alerts the alert stage held back (silenced, inhibited, flapping).
    pub alerts_suppressed: AtomicU64,
    /// Cases opened.
    pub cases_opened: AtomicU64,
    /// Case events emitted.
    pub case_events: AtomicU64,
    /// Cases open now.
    pub cases_open: AtomicU64,
    /// SLA escalations emitted.
    pub case_escalations: AtomicU64,
    /// Feedback events rejected (illegal transitions, unknown cases).
    pub feedback_rejected: AtomicU64,
    /// Records the webhook endpoints acknowledged.
    pub webhook_delivered: AtomicU64,
    /// True while a webhook endpoint fails and records are retried.
    pub webhook_failing: AtomicBool,
    /// Each sink's health: (name, kind, health).
    pub sinks: Mutex<Vec<(String, &'static str, Health)>>,
    /// Rule evaluation failures per rule id (a metric labelled by rule).
    pub rule_errors_by_rule: Mutex<std::collections::BTreeMap<String, u64>>,
}

impl RunMetrics {
    /// Counts an evaluation failure of `rule`.
    pub fn note_rule_error(&self, rule: &str) {
        let mut m = self.rule_errors_by_rule.lock().unwrap_or_else(|p| p.into_inner());
        match m.get_mut(rule) {
            Some(n) => *n += 1,
            None => {
                m.insert(rule.to_string(), 1);
            }
        }
    }

    /// Sinks failing now, with their reasons, for `/readyz`.
    pub fn failing_sinks(&self) -> Vec<String> {
        let sinks = self.sinks.lock().unwrap_or_else(|p| p.into_inner());
        sinks
            .iter()
            .filter(|(_, _, h)| h.failing)
            .map(|(name, kind, h)| format!("{kind} sink `{name}`: {}", h.reason.as_deref().unwrap_or("failing")))
            .collect()
    }
}
