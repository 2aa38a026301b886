//! A sequence rule from YAML through a real pipeline: the compiled reference to an earlier
//! step (`high.value`) and the `not` deadline behave as the rule text says.

use std::path::Path;
use std::sync::Arc;

use gridwatch_engine::pipeline::{Output, Pipeline, PipelineOptions};
use gridwatch_rules::load_rules_only;

fn alerts(rule: &str, events: &[(&str, String)]) -> Vec<gridwatch_engine::Alert> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let loaded = load_rules_only(&dir.join("gridwatch.yaml"), &[dir.join("valid/sequences.yaml")]);
    assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
    let mut plan = loaded.plan;
    plan.rules.retain(|r| &*r.meta.id == rule);
    let plan = Arc::new(plan);
    let (mut p, rx) =
        Pipeline::start(plan.clone(), PipelineOptions { workers: 2, batch_size: 2, ..Default::default() });
    let collect = std::thread::spawn(move || {
        rx.into_iter().filter_map(|o| if let Output::Alerts(a) = o { Some(a) } else { None }).flatten().collect()
    });
    for (stream, payload) in events {
        p.push(plan.stream_index(stream).expect("stream"), payload.as_bytes()).expect("push");
    }
    p.finish().expect("finish");
    collect.join().expect("collector")
}

fn sensor(ts: i64, device: &str, metric: &str, value: f64) -> (&'static str, String) {
    ("sensor", format!(r#"{{"ts":{ts},"device_id":"{device}","metric":"{metric}","value":{value}}}"#))
}

#[test]
fn pressure_collapse_compares_with_the_earlier_reading() {
    let events = vec![
        sensor(0, "h1", "pressure_kpa", 500.0),
        sensor(60_000, "h1", "pressure_kpa", 450.0),
        sensor(120_000, "h1", "pressure_kpa", 390.0), // < 0.8 × 500
        sensor(200_000, "h2", "pressure_kpa", 500.0),
        sensor(600_000, "h2", "pressure_kpa", 100.0), // 6m40s later: past `within: 5m`
        sensor(700_000, "h3", "temp_c", 1.0),
    ];
    let got = alerts("heating-pressure-collapse", &events);
    assert_eq!(got.len(), 1, "{got:?}");
    let a = &got[0];
    assert_eq!((a.key.as_str(), a.episode_start, a.event_time), ("h1", 0, 120_000));
    assert_eq!(a.values["high.value"], 500.0);
    assert_eq!(a.values["low.value"], 390.0);
    assert_eq!(a.values["low.metric"], "pressure_kpa");
}

#[test]
fn excavation_fires_two_hours_after_the_dig_without_a_permit() {
    let hour = 3_600_000;
    let dig = |ts: i64, cam: &str| ("detection", format!(r#"{{"ts":{ts},"camera_id":"{cam}","class":"excavator"}}"#));
    let events = vec![
        dig(0, "z1"),
        dig(1000, "z2"),
        sensor(hour, "z2", "permit", 1.0), // z2's permit, keyed by the same value
        sensor(3 * hour, "z9", "noise", 0.0),
        dig(3 * hour, "z9"),
    ];
    let got = alerts("excavation-without-permit", &events);
    let brief: Vec<_> = got.iter().map(|a| (a.key.clone(), a.event_time)).collect();
    assert_eq!(brief, vec![("z1".to_string(), 2 * hour)]);
    assert_eq!(got[0].evidence[0]["_step"], "dig");
}
