//! Seeded synthetic alert streams for benchmarks: a city-like mix of gas, drainage, video
//! and device alerts over a grid of locations, in event-time order, each episode fired and
//! (mostly) resolved, with a case configuration that groups, dispatches, times and
//! inhibits them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use gridwatch_engine::plan::Severity;
use gridwatch_engine::time::Millis;
use gridwatch_engine::{Alert, AlertState};
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::config::{CasesConfig, DispatchConfig, Flapping, GroupRule, Inhibition, KeyPart, Matcher, SlaRule};

const MIN: Millis = 60_000;
/// Event time of the first alert.
pub const START: Millis = 1_795_392_000_000; // 2026-11-23T00:00:00Z

const KINDS: [(&str, &str, Severity, &str); 5] = [
    ("gas-warning", "emergency/gas", Severity::Major, "sensor"),
    ("gas-alarm", "emergency/gas", Severity::Critical, "sensor"),
    ("pipe-full", "operation/drainage", Severity::Critical, "sensor"),
    ("stall", "event/appearance", Severity::Info, "detection"),
    ("offline", "device/offline", Severity::Warning, "sensor"),
];

/// `n` alert records (firings and resolutions) from `keys` devices over about `n` seconds
/// of event time, sorted by event time.
pub fn alerts(n: usize, keys: u64, seed: u64) -> Vec<Alert> {
    let mut out = Vec::with_capacity(n);
    let mut i = 0u64;
    while out.len() < n {
        let h = xxh3_64_with_seed(&i.to_le_bytes(), seed);
        let (rule, category, severity, stream) = KINDS[(h % KINDS.len() as u64) as usize];
        let key = format!("dev-{:05}", (h >> 8) % keys.max(1));
        let at = START + i as Millis * 2_000 + ((h >> 24) % 1000) as Millis;
        let lat = 36.0 + ((h >> 32) % 100) as f64 * 0.001;
        let lon = 120.3 + ((h >> 40) % 100) as f64 * 0.001;
        let base = |state, t| Alert {
            alert_id: crate::stage::case_id(rule, &format!("{key}@{at}")),
            rule_id: Arc::from(rule),
            rule_name: rule.to_string(),
            key: key.clone(),
            state,
            severity,
            category: category.to_string(),
            labels: BTreeMap::new(),
            stream: stream.to_string(),
            event_time: t,
            episode_start: at,
            notification: 1,
            values: serde_json::Map::new(),
            evidence: vec![serde_json::json!({"lat": lat, "lon": lon, "id": key})],
        };
        out.push(base(AlertState::Firing, at));
        if !(h >> 48).is_multiple_of(4) {
            out.push(base(AlertState::Resolved, at + (5 + (h >> 52) % 30) as Millis * MIN));
        }
        i += 1;
    }
    out.truncate(n);
    out.sort_by(|a, b| (a.event_time, &a.alert_id).cmp(&(b.event_time, &b.alert_id)));
    out
}

/// A case configuration exercising every stage: grouping by key and by radius, owner
/// dispatch for a tenth of the devices, SLA timers, inhibition and flap suppression.
pub fn config() -> CasesConfig {
    let owners: HashMap<String, String> =
        (0..1000).step_by(10).map(|d| (format!("dev-{d:05}"), "utility".to_string())).collect();
    CasesConfig {
        grouping: vec![
            GroupRule {
                matcher: Matcher { category: vec!["emergency".into()], ..Default::default() },
                by: vec![KeyPart::Category, KeyPart::Key],
                window_ms: 120 * MIN,
                within_m: None,
            },
            GroupRule {
                matcher: Matcher { stream: vec!["detection".into()], ..Default::default() },
                by: vec![KeyPart::Category],
                window_ms: 120 * MIN,
                within_m: Some(50.0),
            },
        ],
        dispatch: DispatchConfig { owners, default_unit: "centre".into(), ..Default::default() },
        sla: vec![
            SlaRule { category: "emergency".into(), severity: Some(Severity::Critical), within_ms: 30 * MIN },
            SlaRule { category: String::new(), severity: None, within_ms: 4 * 60 * MIN },
        ],
        inhibitions: vec![Inhibition {
            source: Matcher { rule: vec!["offline".into()], ..Default::default() },
            target: Matcher::default(),
            equal: vec![KeyPart::Key],
        }],
        flapping: Some(Flapping { changes: 4, window_ms: 30 * MIN, stable_ms: 15 * MIN }),
        locations: [("sensor", ()), ("detection", ())]
            .into_iter()
            .map(|(s, ())| (s.to_string(), ("lat".to_string(), "lon".to_string())))
            .collect(),
        ..Default::default()
    }
}
