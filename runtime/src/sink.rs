//! Sinks: where alerts, cases and dead letters go.
//!
//! A sink is a component built from its own config (see the connectors crate): a console,
//! an NDJSON file, a Kafka topic, a webhook, a case store. Each says what it receives
//! ([`Routes`]: `send: [alerts, cases, dead_letters]` and a filter) and how far it has
//! delivered: the runtime acknowledges a barrier once every sink has delivered everything
//! written before it ([`Sink::delivered`]). A *checkpointing* sink (the case store) records
//! the alert and case stage's frontier; it writes a barrier's checkpoint only once every
//! other sink has delivered that barrier, because after the checkpoint a restart does not
//! emit those records again.

use gridwatch_cases::{Case, CaseUpdate, GatedAlert};
use gridwatch_engine::time::Millis;
use gridwatch_engine::{Alert, DeadLetter};
use serde::Serialize;

use crate::error::SinkError;

/// One record on its way to the sinks.
#[derive(Debug, Clone, Copy)]
pub enum Record<'a> {
    /// An alert. With an alert stage, `gated` carries its verdict; `sent` is false for
    /// alerts the stage held back (silenced, inhibited, flapping), which only sinks that
    /// keep a record of everything receive ([`Routes::held_alerts`]).
    Alert {
        /// The alert.
        alert: &'a Alert,
        /// The alert with the alert stage's verdict, if there is an alert stage.
        gated: Option<&'a GatedAlert>,
        /// Sent on (not held back by the alert stage).
        sent: bool,
    },
    /// A case changed (with the case after the change).
    Case(&'a CaseUpdate),
    /// An input record (or feedback event) that could not be used.
    DeadLetter(&'a DeadLetter),
}

impl Record<'_> {
    /// The kind of record.
    pub fn kind(&self) -> RecordKind {
        match self {
            Record::Alert { .. } => RecordKind::Alerts,
            Record::Case(_) => RecordKind::Cases,
            Record::DeadLetter(_) => RecordKind::DeadLetters,
        }
    }
}

pub use gridwatch_rules::sinks::{RecordKind, SinkFilter};

fn filter_alert(f: &SinkFilter, a: &Alert) -> bool {
    (f.rule.is_empty() || f.rule.iter().any(|r| **r == *a.rule_id))
        && (f.category.is_empty() || f.category.iter().any(|c| within(&a.category, c)))
        && f.severity_min.is_none_or(|s| a.severity >= s)
        && (f.stream.is_empty() || f.stream.contains(&a.stream))
}

fn filter_case(f: &SinkFilter, c: &Case) -> bool {
    (f.rule.is_empty() || f.rule.iter().any(|r| c.rules.iter().any(|cr| cr == r)))
        && (f.category.is_empty() || f.category.iter().any(|p| within(&c.category, p)))
        && f.severity_min.is_none_or(|s| c.severity >= s)
}

fn filter_dead_letter(f: &SinkFilter, d: &DeadLetter) -> bool {
    f.stream.is_empty() || f.stream.contains(&d.stream)
}

fn within(category: &str, prefix: &str) -> bool {
    gridwatch_cases::config::category_within(category, prefix)
}

/// What a sink receives.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Routes {
    /// Kinds of records.
    pub send: Vec<RecordKind>,
    /// Also the alerts the alert stage held back, with its verdict (a record of everything:
    /// the alerts file keeps them).
    pub held_alerts: bool,
    /// Only these alerts, cases and dead letters.
    pub filter: Option<SinkFilter>,
}

impl Routes {
    /// Routes for these kinds, no filter.
    pub fn of(send: &[RecordKind]) -> Routes {
        Routes { send: send.to_vec(), ..Default::default() }
    }

    /// Whether the sink takes `record`.
    pub fn accepts(&self, record: &Record<'_>) -> bool {
        if !self.send.contains(&record.kind()) {
            return false;
        }
        let f = self.filter.as_ref();
        match record {
            Record::Alert { alert, sent, .. } => {
                (*sent || self.held_alerts) && f.is_none_or(|f| filter_alert(f, alert))
            }
            Record::Case(u) => f.is_none_or(|f| filter_case(f, &u.case)),
            Record::DeadLetter(d) => f.is_none_or(|f| filter_dead_letter(f, d)),
        }
    }
}

/// Where one sink's output went, for the run summary.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OutputReport {
    /// The sink's name.
    pub sink: String,
    /// What it received: `alerts`, `cases`, `dead letters`…
    pub what: String,
    /// A file, a store, a topic, a URL.
    pub location: String,
    /// Records this run wrote there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub records: Option<u64>,
}

/// What a checkpointing sink (the case store) held when the run started.
#[derive(Debug, Clone, Default)]
pub struct Resume {
    /// Open cases.
    pub open_cases: Vec<Case>,
    /// The alert and case stage's checkpoint: every input before it was processed.
    pub frontier: Option<Millis>,
}

/// A sink's health, for `/readyz` and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    /// Deliveries fail (and are being retried).
    pub failing: bool,
    /// Why, if failing.
    pub reason: Option<String>,
    /// Records delivered so far, where the sink counts them.
    pub delivered: Option<u64>,
}

/// A sink. See the module docs.
pub trait Sink: Send {
    /// Its name in the config.
    fn name(&self) -> &str;

    /// Its kind (`stdout`, `file`, `kafka`, `webhook`, `case_store`).
    fn kind(&self) -> &'static str;

    /// What it receives.
    fn routes(&self) -> &Routes;

    /// Takes one record it accepts. May block for backpressure (a full queue), never drops.
    fn write(&mut self, record: &Record<'_>) -> Result<(), SinkError>;

    /// Barrier `seq` passed: everything written before must be delivered before the
    /// barrier counts as acknowledged. A sink that delivers synchronously (a file) makes
    /// it durable here; an asynchronous one notes where the barrier falls.
    fn barrier(&mut self, seq: u64) -> Result<(), SinkError>;

    /// The highest barrier whose records are all delivered.
    fn delivered(&mut self) -> Result<u64, SinkError>;

    /// Called every few milliseconds while the run goes on: time-driven work (the console
    /// flushes what it printed; an asynchronous sink sends failed records again).
    fn tick(&mut self) -> Result<(), SinkError> {
        Ok(())
    }

    /// True for the sink that records the alert and case stage's checkpoint (at most one).
    fn checkpoints(&self) -> bool {
        false
    }

    /// What the store held at the start (checkpointing sinks only).
    fn resume(&mut self) -> Result<Option<Resume>, SinkError> {
        Ok(None)
    }

    /// Records the stage's checkpoint with everything written so far (checkpointing sinks
    /// only), in one transaction; called only for a barrier every other sink has delivered.
    fn checkpoint(&mut self, _frontier: Option<Millis>) -> Result<(), SinkError> {
        Ok(())
    }

    /// End of the run: deliver what is left (waiting a bounded time).
    fn close(&mut self) -> Result<(), SinkError>;

    /// Where the output went, for the summary.
    fn report(&self) -> OutputReport;

    /// Health, for `/readyz` and metrics.
    fn health(&self) -> Health {
        Health::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gridwatch_engine::plan::Severity;

    fn alert(rule: &str, category: &str, severity: Severity) -> Alert {
        Alert {
            alert_id: "a".into(),
            rule_id: rule.into(),
            rule_name: rule.into(),
            key: "k".into(),
            state: gridwatch_engine::AlertState::Firing,
            severity,
            category: category.into(),
            labels: Default::default(),
            stream: "sensor".into(),
            event_time: 0,
            episode_start: 0,
            notification: 1,
            values: Default::default(),
            evidence: Vec::new(),
        }
    }

    #[test]
    fn routes_take_their_kinds_filtered_and_held_alerts_only_if_asked() {
        let a = alert("gas-alarm", "emergency/gas", Severity::Critical);
        let sent = Record::Alert { alert: &a, gated: None, sent: true };
        let held = Record::Alert { alert: &a, gated: None, sent: false };
        let everything = Routes { held_alerts: true, ..Routes::of(&[RecordKind::Alerts]) };
        assert!(everything.accepts(&sent) && everything.accepts(&held));
        let plain = Routes::of(&[RecordKind::Alerts, RecordKind::Cases]);
        assert!(plain.accepts(&sent) && !plain.accepts(&held));
        assert!(!Routes::of(&[RecordKind::Cases]).accepts(&sent));
        let emergencies = Routes {
            filter: Some(SinkFilter { category: vec!["emergency".into()], ..Default::default() }),
            ..Routes::of(&[RecordKind::Alerts])
        };
        assert!(emergencies.accepts(&sent));
        let b = alert("stall", "event/appearance", Severity::Warning);
        assert!(!emergencies.accepts(&Record::Alert { alert: &b, gated: None, sent: true }));
        let major = Routes {
            filter: Some(SinkFilter { severity_min: Some(Severity::Major), ..Default::default() }),
            ..Routes::of(&[RecordKind::Alerts])
        };
        assert!(major.accepts(&sent));
        assert!(!major.accepts(&Record::Alert { alert: &b, gated: None, sent: true }));
    }
}
