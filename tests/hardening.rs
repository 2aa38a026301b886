//! End-to-end tests of what a careless or hostile user does to the `gridwatch` binary.
//!
//! mod list:
//! - clocks: one event from a device with a wrong clock costs exactly that event.

mod util;

use std::path::Path;

use util::{run_city, with_wrong_clock};

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(String::from).collect()
}

#[test]
fn one_wrong_device_clock_costs_exactly_that_event_from_a_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let recorded = dir.path().join("events.ndjson");
    util::generate_events(&recorded, "30m", &["--seed", "5"]);
    let events = lines(&recorded);
    let (clean_alerts, clean_summary) = run_city(dir.path(), "clean", &["--events", recorded.to_str().unwrap()]);
    assert!(clean_alerts.len() > 20, "the city raises alerts: {}", clean_alerts.len());
    let clean_dead = lines(&dir.path().join("clean-dead.ndjson"));
    let clean_cases = lines(&dir.path().join("clean-case-events.ndjson"));
    let first: serde_json::Value = serde_json::from_str(&events[0]).expect("json");
    let start = first["ts"].as_i64().expect("epoch ms");
    let hour = 3_600_000i64;
    for (name, ts) in [("hour", start + hour), ("year", start + 365 * 24 * hour), ("y9999", 253_402_300_799_000)] {
        let (dirty, wrong) = with_wrong_clock(&events, ts);
        let file = dir.path().join(format!("{name}.ndjson"));
        std::fs::write(&file, dirty.join("\n") + "\n").expect("write");
        let (alerts, summary) = run_city(dir.path(), name, &["--events", file.to_str().unwrap()]);
        assert_eq!(alerts, clean_alerts, "{name}: a wrong clock changed the alerts");
        assert_eq!(
            lines(&dir.path().join(format!("{name}-case-events.ndjson"))),
            clean_cases,
            "{name}: a wrong clock changed the cases"
        );
        let dead = lines(&dir.path().join(format!("{name}-dead.ndjson")));
        assert_eq!(dead.len(), clean_dead.len() + 1, "{name}: exactly one more dead letter");
        let extra: Vec<&String> = dead.iter().filter(|d| !clean_dead.contains(d)).collect();
        assert_eq!(extra.len(), 1, "{name}: {extra:?}");
        let extra: serde_json::Value = serde_json::from_str(extra[0]).expect("json");
        assert!(extra["reason"].as_str().unwrap_or_default().starts_with("future: "), "{name}: {extra}");
        let payload: serde_json::Value =
            serde_json::from_str(extra["payload"].as_str().expect("payload")).expect("json");
        let wrong: serde_json::Value = serde_json::from_str(&wrong).expect("json");
        assert_eq!(payload, wrong, "{name}: the dead letter carries the wrong-clock event");
        assert_eq!(summary["dead_letter_reasons"]["future"], 1, "{name}: {}", summary["dead_letter_reasons"]);
        assert_eq!(summary["events_accepted"], clean_summary["events_accepted"], "{name}");
    }
}
