//! Session and count windows, the new aggregates and `order: event_time` from YAML through a
//! real pipeline, on readings that arrive out of order: the alerts are those the rule text
//! says, and the same for any worker count and batch size.

use std::path::Path;
use std::sync::Arc;

use gridwatch_engine::AlertState;
use gridwatch_engine::pipeline::{Output, Pipeline, PipelineOptions};
use gridwatch_rules::load_rules_only;

const S: i64 = 1000;

fn reading(ts: i64, device: &str, value: f64) -> String {
    format!(r#"{{"ts":{ts},"device_id":"{device}","value":{value}}}"#)
}

/// The readings every test runs, in arrival order.
fn readings() -> Vec<String> {
    let mut events = vec![
        // a: a session of three (0, 5 s, 12 s), then one alone at 30 s.
        reading(0, "a", 1.0),
        reading(5 * S, "a", 2.0),
        reading(12 * S, "a", 9.0),
        reading(30 * S, "a", 4.0),
        // b: 0 and 15 s are two sessions until 7 s arrives and joins them.
        reading(0, "b", 1.0),
        reading(15 * S, "b", 1.0),
        reading(7 * S, "b", 1.0),
        // d: in event time 20, 20, 20, 5 — but the 5 at 4 s arrives before the 20 at 3 s.
        reading(S, "d", 20.0),
        reading(2 * S, "d", 20.0),
        reading(4 * S, "d", 5.0),
        reading(3 * S, "d", 20.0),
    ];
    // c: values 1, 20, 30, 2, 40, 3, 1, 1 at 1..8 s, each pair arriving swapped.
    let c = [1.0, 20.0, 30.0, 2.0, 40.0, 3.0, 1.0, 1.0];
    for pair in [[2, 1], [4, 3], [6, 5], [8, 7]] {
        for i in pair {
            events.push(reading(i * S, "c", c[i as usize - 1]));
        }
    }
    // Much later, on another key: the watermark passes everything above.
    events.push(reading(10_000 * S, "z", 0.0));
    events
}

fn run(workers: usize, batch_size: usize) -> Vec<gridwatch_engine::Alert> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/windows");
    let loaded = load_rules_only(&dir.join("gridwatch.yaml"), &[dir.join("rules.yaml")]);
    assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
    let plan = Arc::new(loaded.plan);
    let options = PipelineOptions { workers, batch_size, ..Default::default() };
    let (mut p, rx) = Pipeline::start(plan, options);
    let collect = std::thread::spawn(move || {
        rx.into_iter().filter_map(|o| if let Output::Alerts(a) = o { Some(a) } else { None }).flatten().collect()
    });
    for e in readings() {
        p.push(0, e.as_bytes()).expect("push");
    }
    p.finish().expect("finish");
    let mut alerts: Vec<gridwatch_engine::Alert> = collect.join().expect("collector");
    alerts.sort_by(|x, y| (&x.rule_id, &x.key, x.event_time).cmp(&(&y.rule_id, &y.key, y.event_time)));
    alerts
}

fn of<'a>(alerts: &'a [gridwatch_engine::Alert], rule: &str) -> Vec<&'a gridwatch_engine::Alert> {
    alerts.iter().filter(|a| &*a.rule_id == rule).collect()
}

fn brief(alerts: &[&gridwatch_engine::Alert]) -> Vec<(String, AlertState, i64)> {
    alerts.iter().map(|a| (a.key.clone(), a.state, a.event_time)).collect()
}

#[test]
fn sessions_close_a_gap_after_their_last_event_and_merge_when_an_event_bridges_them() {
    let alerts = run(2, 3);
    let got = of(&alerts, "burst-session");
    assert_eq!(
        brief(&got),
        vec![
            ("a".into(), AlertState::Firing, 22 * S),
            ("a".into(), AlertState::Resolved, 40 * S), // the lone reading at 30 s
            ("b".into(), AlertState::Firing, 25 * S),   // 0, 7 s, 15 s: one session
            ("c".into(), AlertState::Firing, 18 * S),   // 1..8 s
            ("d".into(), AlertState::Firing, 14 * S),   // 1..4 s
        ]
    );
    let a = got[0];
    assert_eq!(a.values["window_start"], "1970-01-01T00:00:00.000Z");
    assert_eq!(a.values["window_end"], "1970-01-01T00:00:22.000Z");
    assert_eq!(a.values["count"], 3);
    assert_eq!(a.values["first_value"], 1.0);
    assert_eq!(a.values["last_value"], 9.0);
    assert_eq!(a.values["p50"], 2.0);
    assert_eq!(got[2].values["count"], 3);
}

#[test]
fn a_session_ends_at_max_however_close_its_events_are() {
    let alerts = run(2, 3);
    let a: Vec<_> = of(&alerts, "capped-session").into_iter().filter(|a| a.key == "a").collect();
    // 0 and 5 s: closed at 0 + max; 12 s is past it and starts the next session, alone.
    assert_eq!(brief(&a), vec![("a".into(), AlertState::Firing, 10 * S), ("a".into(), AlertState::Resolved, 22 * S)]);
    assert_eq!(a[0].values["count"], 2);
}

#[test]
fn count_windows_count_in_event_time_order_whatever_the_arrival_order() {
    let alerts = run(2, 3);
    let got = of(&alerts, "spread-count");
    // c: [1 20 30 2] fires, [30 2 40 3] still holds, [40 3 1 1] resolves. d's four readings
    // in event-time order are 20 20 20 5.
    assert_eq!(
        brief(&got),
        vec![
            ("c".into(), AlertState::Firing, 4 * S),
            ("c".into(), AlertState::Resolved, 8 * S),
            ("d".into(), AlertState::Firing, 4 * S),
        ]
    );
    let c = got[0];
    assert_eq!(c.values["window_start"], "1970-01-01T00:00:01.000Z");
    assert_eq!(c.values["high"], 2);
    assert_eq!(c.values["count"], 4);
    assert_eq!(c.values["median_value"], 11.0);
    let sd = c.values["stddev_value"].as_f64().expect("stddev");
    assert!((sd - (602.75f64 / 3.0).sqrt()).abs() < 1e-9, "{sd}");
    assert_eq!(got[1].values["high"], 1);
}

#[test]
fn event_time_order_sees_a_run_a_late_reading_hid() {
    let alerts = run(2, 3);
    assert_eq!(
        brief(&of(&alerts, "three-in-a-row")),
        vec![("d".into(), AlertState::Firing, 3 * S), ("d".into(), AlertState::Resolved, 4 * S)]
    );
    let fired = of(&alerts, "three-in-a-row")[0];
    assert_eq!(fired.episode_start, S);
    assert_eq!(fired.values["value"], 20.0);
    assert_eq!(fired.evidence.len(), 2, "the run's first reading and the one that completed it");
    // In arrival order the 5 at 4 s broke the run.
    assert!(of(&alerts, "three-in-a-row-as-they-come").is_empty());
}

#[test]
fn the_alerts_do_not_depend_on_workers_or_batch_size() {
    let reference = run(1, 1000);
    assert!(!reference.is_empty());
    let key = |a: &gridwatch_engine::Alert| (a.alert_id.clone(), a.state, a.event_time, a.values.clone());
    let expected: Vec<_> = reference.iter().map(key).collect();
    for (workers, batch) in [(1, 1), (2, 1), (2, 2), (3, 5), (4, 3)] {
        let got: Vec<_> = run(workers, batch).iter().map(key).collect();
        assert_eq!(got, expected, "workers {workers}, batch size {batch}");
    }
}
