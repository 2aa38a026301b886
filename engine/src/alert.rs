//! Alerts: what rules emit.
//!
//! An alert's id is a hash of (rule id, key, episode start), so the same input always
//! yields the same ids, and the firing and resolved records of one episode share an id:
//! sinks upsert by it and a replay after a crash re-emits the same ids.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Serialize, Serializer};
use xxhash_rust::xxh3::Xxh3;

use crate::plan::{RuleMeta, Severity};
use crate::time::{Millis, format_timestamp};

/// Firing or resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// The condition holds.
    Firing,
    /// The episode ended.
    Resolved,
}

/// One alert record.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Alert {
    /// Deterministic id of the episode.
    pub alert_id: String,
    /// Rule id.
    pub rule_id: Arc<str>,
    /// Rule name.
    pub rule_name: String,
    /// Rule key value (key fields joined by `|`).
    pub key: String,
    /// Firing or resolved.
    pub state: AlertState,
    /// Severity from the rule.
    pub severity: Severity,
    /// Category from the rule.
    pub category: String,
    /// Labels from the rule.
    pub labels: BTreeMap<String, String>,
    /// Input stream.
    pub stream: String,
    /// Event time of the trigger (or of the resolution).
    #[serde(serialize_with = "ser_time", deserialize_with = "de_time")]
    pub event_time: Millis,
    /// Event time the episode started.
    #[serde(serialize_with = "ser_time", deserialize_with = "de_time")]
    pub episode_start: Millis,
    /// 1 for the first notification of an episode, then 2, 3… for re-notifications.
    pub notification: u32,
    /// Observed values (fields of the trigger, or aggregates).
    pub values: serde_json::Map<String, serde_json::Value>,
    /// Events that triggered the alert.
    pub evidence: Vec<serde_json::Value>,
}

fn ser_time<S: Serializer>(t: &Millis, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_timestamp(*t))
}

fn de_time<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Millis, D::Error> {
    let s = <String as serde::Deserialize>::deserialize(d)?;
    crate::time::parse_timestamp(&s)
        .ok_or_else(|| serde::de::Error::custom(format!("`{s}` is not an RFC 3339 timestamp")))
}

/// The deterministic id of the episode of `rule_id` for `key` that started at `episode_start`.
pub fn alert_id(rule_id: &str, key: &str, episode_start: Millis) -> String {
    let mut h = Xxh3::new();
    h.update(rule_id.as_bytes());
    h.update(&[0]);
    h.update(key.as_bytes());
    h.update(&[0]);
    h.update(&episode_start.to_le_bytes());
    format!("{:032x}", h.digest128())
}

/// Everything an operator knows when it raises an alert.
#[derive(Debug)]
pub struct AlertParts {
    /// Key value.
    pub key: String,
    /// Firing or resolved.
    pub state: AlertState,
    /// Trigger time.
    pub event_time: Millis,
    /// Episode start.
    pub episode_start: Millis,
    /// Notification count within the episode.
    pub notification: u32,
    /// Observed values.
    pub values: serde_json::Map<String, serde_json::Value>,
    /// Evidence events.
    pub evidence: Vec<serde_json::Value>,
}

impl Alert {
    /// Builds an alert of `meta`'s rule on `stream`.
    pub fn new(meta: &RuleMeta, stream: &str, parts: AlertParts) -> Alert {
        Alert {
            alert_id: alert_id(&meta.id, &parts.key, parts.episode_start),
            rule_id: meta.id.clone(),
            rule_name: meta.name.clone(),
            key: parts.key,
            state: parts.state,
            severity: meta.severity,
            category: meta.category.clone(),
            labels: meta.labels.clone(),
            stream: stream.to_string(),
            event_time: parts.event_time,
            episode_start: parts.episode_start,
            notification: parts.notification,
            values: parts.values,
            evidence: parts.evidence,
        }
    }

    /// A total order used to compare alert sets across runs (ids, then state, then time).
    pub fn sort_key(&self) -> (&str, &str, Millis, AlertState, u32) {
        (&self.rule_id, &self.key, self.event_time, self.state, self.notification)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_distinguish_inputs() {
        let a = alert_id("gas", "dev-1", 1000);
        assert_eq!(a, alert_id("gas", "dev-1", 1000));
        assert_eq!(a.len(), 32);
        assert_ne!(a, alert_id("gas", "dev-1", 1001));
        assert_ne!(a, alert_id("gas", "dev-2", 1000));
        // The separator keeps ("ab","c") and ("a","bc") apart.
        assert_ne!(alert_id("ab", "c", 0), alert_id("a", "bc", 0));
    }
}
