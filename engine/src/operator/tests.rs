//! Event-time edge cases of every operator, run through the real pipeline.

use crate::alert::AlertState::{Firing, Resolved};
use crate::plan::RuleKind;
use crate::testutil::{absence, ev, run, stream, threshold, window};

const S: i64 = 1000;

#[test]
fn threshold_without_for_fires_once_per_episode_and_resolves() {
    let s = stream(0, None);
    let events =
        [ev(0, "a", 1.0), ev(10 * S, "a", 30.0), ev(20 * S, "a", 31.0), ev(30 * S, "a", 2.0), ev(40 * S, "a", 40.0)];
    let out = run(s.clone(), vec![threshold(&s, "value > 25", None, 0)], &events, 1, 16, None);
    assert_eq!(
        out.brief(),
        vec![("a".into(), Firing, 10 * S), ("a".into(), Resolved, 30 * S), ("a".into(), Firing, 40 * S)]
    );
    // Firing and resolved of one episode share the id; the next episode gets a new one.
    assert_eq!(out.alerts[0].alert_id, out.alerts[1].alert_id);
    assert_ne!(out.alerts[0].alert_id, out.alerts[2].alert_id);
    assert_eq!(out.alerts[0].values["value"], serde_json::json!(30.0));
}

#[test]
fn threshold_consecutive_needs_that_many_events_in_a_row() {
    let s = stream(0, None);
    let mut rule = threshold(&s, "value > 25", None, 0);
    if let RuleKind::Threshold(p) = &mut rule.kind {
        p.consecutive = 3;
    }
    // "a": two over, one under (the count restarts), then three over → fires on the third,
    // with the episode starting at the first of the three. "b": only two in a row.
    let events = [
        ev(0, "a", 30.0),
        ev(10 * S, "a", 31.0),
        ev(20 * S, "a", 1.0),
        ev(30 * S, "a", 32.0),
        ev(31 * S, "b", 40.0),
        ev(40 * S, "a", 33.0),
        ev(41 * S, "b", 40.0),
        ev(50 * S, "a", 34.0),
        ev(60 * S, "a", 2.0),
    ];
    for workers in [1, 2] {
        let out = run(s.clone(), vec![rule.clone()], &events, workers, 2, None);
        assert_eq!(out.brief(), vec![("a".into(), Firing, 50 * S), ("a".into(), Resolved, 60 * S)]);
        assert_eq!(out.alerts[0].episode_start, 30 * S);
    }
}

#[test]
fn threshold_for_fires_on_the_watermark_and_resets_when_it_stops_holding() {
    let s = stream(0, None);
    // "a" holds 0..=20 s then drops: the 30 s stopwatch resets, no alert.
    // "b" holds from 5 s with no further reading of its own; "c"'s readings move the
    // watermark past 35 s, so "b" fires at exactly 35 s by timer.
    let events = [
        ev(0, "a", 30.0),
        ev(5 * S, "b", 30.0),
        ev(10 * S, "a", 30.0),
        ev(20 * S, "a", 30.0),
        ev(25 * S, "a", 1.0),
        ev(40 * S, "c", 1.0),
        ev(50 * S, "a", 30.0),
    ];
    let out = run(s.clone(), vec![threshold(&s, "value > 25", None, 30 * S)], &events, 2, 3, None);
    assert_eq!(out.brief(), vec![("b".into(), Firing, 35 * S)]);
    assert_eq!(out.alerts[0].episode_start, 5 * S);
    assert_eq!(out.alerts[0].evidence.len(), 1, "the event that started the episode");
}

#[test]
fn threshold_for_fires_on_an_event_exactly_at_the_deadline() {
    let s = stream(0, None);
    let events = [ev(0, "a", 30.0), ev(30 * S, "a", 30.0)];
    let out = run(s.clone(), vec![threshold(&s, "value > 25", None, 30 * S)], &events, 1, 1, None);
    assert_eq!(out.brief(), vec![("a".into(), Firing, 30 * S)]);
}

#[test]
fn an_out_of_order_event_cannot_reuse_an_ended_episode_start() {
    let s = stream(100 * S, None);
    // Fires at 100 s (for 0), resolves at 151 s; a late-but-on-time event at 100 s
    // starts a new episode, dated at the end of the previous one, with a new id.
    let events = [ev(100 * S, "a", 30.0), ev(151 * S, "a", 1.0), ev(100 * S, "a", 30.0), ev(300 * S, "b", 1.0)];
    let out = run(s.clone(), vec![threshold(&s, "value > 25", None, 0)], &events, 1, 8, None);
    let first: Vec<&crate::alert::Alert> =
        out.alerts.iter().filter(|a| a.key == "a" && a.episode_start == 100 * S).collect();
    let second: Vec<&crate::alert::Alert> =
        out.alerts.iter().filter(|a| a.key == "a" && a.episode_start == 151 * S).collect();
    assert_eq!((first.len(), second.len()), (2, 1), "{:?}", out.brief());
    assert_eq!(first[0].alert_id, first[1].alert_id, "firing and resolved share the id");
    assert_ne!(second[0].alert_id, first[0].alert_id);
    assert_eq!((second[0].state, second[0].event_time), (Firing, 151 * S));
}

#[test]
fn hysteresis_keeps_firing_until_the_clear_condition() {
    let s = stream(0, None);
    let events = [ev(0, "a", 30.0), ev(10 * S, "a", 20.0), ev(20 * S, "a", 12.0), ev(30 * S, "a", 9.0)];
    let out = run(s.clone(), vec![threshold(&s, "value > 25", Some("value < 10"), 0)], &events, 1, 4, None);
    assert_eq!(out.brief(), vec![("a".into(), Firing, 0), ("a".into(), Resolved, 30 * S)]);
}

#[test]
fn late_events_go_to_dead_letter_and_out_of_order_within_bounds_is_kept() {
    let s = stream(5 * S, None);
    let events = [ev(100 * S, "a", 1.0), ev(96 * S, "a", 30.0), ev(94 * S, "a", 30.0), ev(95 * S, "a", 30.0)];
    let out = run(s.clone(), vec![threshold(&s, "value > 25", None, 0)], &events, 1, 8, None);
    // 96 s is within 5 s of 100 s; 94 s is behind the watermark (95 s); 95 s is exactly on it.
    assert_eq!(out.brief(), vec![("a".into(), Firing, 96 * S)]);
    assert_eq!(out.dead.len(), 1);
    assert_eq!(out.dead[0].reason, "late: 1000 ms behind the watermark");
    assert!(out.dead[0].payload.contains("94000"));
}

#[test]
fn tumbling_window_boundaries_are_half_open() {
    let s = stream(0, None);
    // Window [0, 60 s): two events; the event at exactly 60 s belongs to [60 s, 120 s).
    let events = [ev(0, "a", 1.0), ev(59_999, "a", 2.0), ev(60 * S, "a", 3.0), ev(130 * S, "b", 0.0)];
    let out = run(s, vec![window(60 * S, 60 * S, "count >= 1")], &events, 1, 2, None);
    let counts: Vec<(i64, serde_json::Value)> =
        out.alerts.iter().filter(|a| a.key == "a").map(|a| (a.event_time, a.values["count"].clone())).collect();
    // Fires for [0,60) with count 2, stays firing for [60,120) (count 1): one episode.
    assert_eq!(counts, vec![(60 * S, serde_json::json!(2))]);
    assert_eq!(out.alerts[0].values["sum_value"], serde_json::json!(3.0));
}

#[test]
fn window_resolves_when_condition_stops_holding_and_computes_delta_and_rate() {
    let s = stream(0, None);
    let events = [
        ev(0, "a", 10.0),
        ev(30 * S, "a", 40.0), // window [0,60): delta 30 over 30 s → rate 1/s
        ev(60 * S, "a", 40.0),
        ev(90 * S, "a", 41.0), // window [60,120): delta 1
        ev(200 * S, "a", 41.0),
    ];
    let out = run(s, vec![window(60 * S, 60 * S, "delta_value >= 20")], &events, 1, 5, None);
    assert_eq!(out.brief(), vec![("a".into(), Firing, 60 * S), ("a".into(), Resolved, 120 * S)]);
    assert_eq!(out.alerts[0].values["rate_value"], serde_json::json!(1.0));
    assert_eq!(out.alerts[0].values["distinct_value"], serde_json::json!(2));
}

#[test]
fn sliding_windows_see_each_event_in_every_window_it_belongs_to() {
    let s = stream(0, None);
    // size 30 s, slide 10 s: an event at 25 s is in [0,30), [10,40) and [20,50). With
    // renotify every 10 s each of those windows notifies once; none after.
    let mut rule = window(30 * S, 10 * S, "sum_value >= 1");
    rule.meta = std::sync::Arc::new(crate::plan::RuleMeta { renotify_ms: Some(10 * S), ..(*rule.meta).clone() });
    let events = [ev(25 * S, "a", 1.0), ev(100 * S, "b", 0.0)];
    let out = run(s, vec![rule], &events, 1, 1, None);
    let a: Vec<(i64, u32)> =
        out.alerts.iter().filter(|x| x.key == "a").map(|x| (x.event_time, x.notification)).collect();
    assert_eq!(a, vec![(30 * S, 1), (40 * S, 2), (50 * S, 3)]);
    assert_eq!(out.alerts[0].episode_start, 0);
}

#[test]
fn absence_fires_for_a_silent_key_while_others_move_the_watermark() {
    let s = stream(0, None);
    let mut events = vec![ev(0, "quiet", 1.0)];
    for i in 0..40 {
        events.push(ev(i * 30 * S, "chatty", 1.0));
    }
    events.push(ev(1300 * S, "quiet", 1.0)); // returns after the alert
    let out = run(s, vec![absence(15 * 60 * S, None)], &events, 2, 7, None);
    assert_eq!(out.brief(), vec![("quiet".into(), Firing, 900 * S), ("quiet".into(), Resolved, 1300 * S)]);
    assert_eq!(out.alerts[0].values["silent_ms"], serde_json::json!(900_000));
}

#[test]
fn absence_fires_when_the_whole_stream_goes_silent_after_its_idle_timeout() {
    let s = stream(0, Some(1000));
    let events = [ev(0, "a", 1.0), ev(10 * S, "b", 1.0)];
    // Without idle time nothing fires: the watermark stops at 10 s.
    let out = run(s.clone(), vec![absence(60 * S, None)], &events, 1, 1, None);
    assert!(out.alerts.is_empty());
    // 120 s of processing-time silence: past the 1 s idle timeout the watermark advances
    // with the clock, so both keys are found absent.
    let out = run(s, vec![absence(60 * S, None)], &events, 1, 1, Some(120_000));
    assert_eq!(out.brief(), vec![("a".into(), Firing, 60 * S), ("b".into(), Firing, 70 * S)]);
}

#[test]
fn absence_renotifies_while_silent() {
    let s = stream(0, None);
    let events = [ev(0, "a", 1.0), ev(100 * S, "b", 1.0)];
    let out = run(s, vec![absence(20 * S, Some(30 * S))], &events, 1, 1, None);
    let a: Vec<(i64, u32)> =
        out.alerts.iter().filter(|x| x.key == "a").map(|x| (x.event_time, x.notification)).collect();
    assert_eq!(a, vec![(20 * S, 1), (50 * S, 2), (80 * S, 3)]);
}

#[test]
fn bad_rows_are_dead_lettered_with_a_reason_and_never_panic() {
    let s = stream(0, None);
    let events = vec![
        "{not json".to_string(),
        r#"{"ts":1,"id":"a"}"#.to_string(),
        r#"{"ts":1,"id":"a","value":"x"}"#.to_string(),
        r#"[1,2,3]"#.to_string(),
        String::new(),
        ev(5, "a", 30.0),
    ];
    let out = run(s.clone(), vec![threshold(&s, "value > 25", None, 0)], &events, 2, 2, None);
    assert_eq!(out.alerts.len(), 1);
    assert_eq!(out.dead.len(), 5);
    assert!(out.dead.iter().all(|d| !d.reason.is_empty() && d.stream == "s"));
}

/// Dead letters leave in input order whatever decodes them, rejected payloads included,
/// and carry the topic, partition and offset of a labelled split.
#[test]
fn dead_letters_keep_input_order_and_source_positions() {
    use std::sync::Arc;

    use crate::{Output, Pipeline, PipelineOptions, Plan, Reject, RejectKind};
    let s = stream(0, None);
    for decoders in [0, 1, 3] {
        let plan =
            Arc::new(Plan { streams: vec![s.clone()], rules: vec![Arc::new(threshold(&s, "value > 25", None, 0))] });
        let options = PipelineOptions { workers: 2, decoders, batch_size: 3, ..Default::default() };
        let (mut p, rx) = Pipeline::start(plan, options);
        p.declare_splits(0, 2);
        p.label_split(0, 1, Arc::from("city.sensor"), 7);
        let good = ev(5, "a", 1.0);
        p.push_split(0, 0, good.as_bytes(), 100).unwrap();
        p.push_split(0, 1, b"{bad 1", 200).unwrap();
        p.reject("nowhere", Reject::new(RejectKind::UnknownStream, "rejected 2"), b"x").unwrap();
        p.push_split(0, 0, b"{bad 3", 101).unwrap();
        for i in 0..7 {
            p.push_split(0, 1, ev(10 + i, "b", 1.0).as_bytes(), 201 + i).unwrap();
        }
        p.push_split(0, 1, b"{bad 4", 208).unwrap();
        p.reject("nowhere", Reject::new(RejectKind::UnknownStream, "rejected 5"), b"y").unwrap();
        p.finish().unwrap();
        let dead: Vec<_> = rx
            .iter()
            .filter_map(|o| match o {
                Output::DeadLetter(d) => Some(d),
                _ => None,
            })
            .collect();
        let payloads: Vec<&str> = dead.iter().map(|d| d.payload.as_str()).collect();
        assert_eq!(payloads, ["{bad 1", "x", "{bad 3", "{bad 4", "y"], "decoders: {decoders}");
        let origin = dead[0].origin.as_ref().expect("split 1 is labelled");
        assert_eq!((&*origin.topic, origin.partition, origin.offset), ("city.sensor", 7, 200));
        assert!(dead[2].origin.is_none(), "split 0 is not labelled");
        assert_eq!(dead[3].origin.as_ref().map(|o| o.offset), Some(208));
    }
}

mod determinism {
    use proptest::prelude::*;

    use super::S;
    use crate::PipelineOptions;
    use crate::testutil::{absence, ev, run_with, stream, threshold, window};

    fn events() -> impl Strategy<Value = Vec<String>> {
        // Mostly increasing time with backward jitter up to 8 s (the bound is 5 s, so some
        // rows are late), five keys, values around the thresholds.
        prop::collection::vec((0i64..20, 0i64..8000, 0usize..5, 0u32..60), 1..300).prop_map(|steps| {
            let mut t = 0;
            steps
                .into_iter()
                .map(|(advance, jitter, key, value)| {
                    t += advance * S / 2;
                    ev(t - jitter, ["a", "b", "c", "d", "e"][key], f64::from(value))
                })
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// The same input gives the same alerts and dead letters for any worker count,
        /// decoder count (0: on the ingest thread), batch size and batches cut by linger.
        #[test]
        fn alerts_do_not_depend_on_workers_decoders_or_batch_size(
            events in events(),
            workers in 2usize..5,
            decoders in 0usize..4,
            batch in 1usize..64,
            linger_every in prop::option::of(1usize..40),
        ) {
            let s = stream(5 * S, None);
            let rules = || {
                // A second key group (keyed by value, not id) routes the same rows apart.
                let mut by_value = threshold(&s, "value > 30", None, 5 * S);
                by_value.key_fields = vec![2];
                vec![
                    threshold(&s, "value > 40", Some("value < 20"), 10 * S),
                    window(30 * S, 10 * S, "count >= 3 AND delta_value > 10"),
                    absence(20 * S, Some(15 * S)),
                    by_value,
                ]
            };
            let options = |workers, decoders, batch_size| PipelineOptions {
                workers,
                decoders,
                batch_size,
                queue_depth: 4,
                ..Default::default()
            };
            let reference = run_with(s.clone(), rules(), &events, options(1, 0, 4096), None, None);
            let other = run_with(s.clone(), rules(), &events, options(workers, decoders, batch), None, linger_every);
            prop_assert_eq!(&reference.alerts, &other.alerts);
            let dead = |o: &crate::testutil::Outcome| {
                let mut d: Vec<(String, String)> = o.dead.iter().map(|d| (d.payload.clone(), d.reason.clone())).collect();
                d.sort();
                d
            };
            prop_assert_eq!(dead(&reference), dead(&other));
        }
    }
}

mod geofences {
    use super::S;
    use crate::alert::AlertState::{Firing, Resolved};
    use crate::plan::GeofenceEvent::{self, *};
    use crate::testutil::{geofence, gps, gps_stream, run, test_zones};

    const M: i64 = 60 * S;

    fn brief(
        event: GeofenceEvent,
        margin: f64,
        confirm: u32,
        for_ms: i64,
        cond: Option<&str>,
        events: &[String],
    ) -> Vec<(String, crate::alert::AlertState, i64)> {
        let out = run(
            gps_stream(),
            vec![geofence(test_zones(None), event, for_ms, margin, confirm, cond)],
            events,
            2,
            3,
            None,
        );
        out.brief()
    }

    /// A bike riding the west edge of `site` (lon 120.0): ±0.00005° ≈ ±4.5 m of jitter.
    fn riding_the_edge() -> Vec<String> {
        let mut v = vec![gps(0, "b", 119.99, 36.005, 10.0, None)];
        for i in 1..20 {
            let lon = if i % 2 == 0 { 120.00005 } else { 119.99995 };
            v.push(gps(i * 10 * S, "b", lon, 36.005, 10.0, None));
        }
        v.push(gps(300 * S, "b", 120.005, 36.005, 10.0, None)); // well inside (≈ 450 m)
        v.push(gps(310 * S, "b", 119.99, 36.005, 10.0, None)); // well outside
        v
    }

    #[test]
    fn enter_and_exit_are_edges_and_jitter_flaps_without_hysteresis() {
        let events = riding_the_edge();
        let enters = brief(Enter, 0.0, 1, 0, None, &events);
        assert_eq!(enters.len(), 10, "every jitter crossing counts without hysteresis: {enters:?}");
        let exits = brief(Exit, 0.0, 1, 0, None, &events);
        assert_eq!(exits.len(), 10);
    }

    #[test]
    fn margin_hysteresis_stops_boundary_flapping() {
        let events = riding_the_edge();
        assert_eq!(brief(Enter, 20.0, 1, 0, None, &events), vec![("b|site".into(), Firing, 300 * S)]);
        assert_eq!(brief(Exit, 20.0, 1, 0, None, &events), vec![("b|site".into(), Firing, 310 * S)]);
        let cross = run(gps_stream(), vec![geofence(test_zones(None), Cross, 0, 20.0, 1, None)], &events, 1, 8, None);
        assert_eq!(cross.alerts.len(), 1);
        assert_eq!(cross.alerts[0].values["inside_ms"], serde_json::json!(10_000));
    }

    #[test]
    fn confirm_points_stop_boundary_flapping() {
        let events = riding_the_edge();
        // Two consecutive points are needed; the edge rider never gives two in a row.
        assert_eq!(brief(Enter, 0.0, 2, 0, None, &events), Vec::new());
        let mut events = events;
        events.push(gps(320 * S, "b", 120.005, 36.005, 10.0, None));
        events.push(gps(330 * S, "b", 120.006, 36.005, 10.0, None));
        // Entered as of the first of the two agreeing points.
        let out = run(gps_stream(), vec![geofence(test_zones(None), Enter, 0, 0.0, 2, None)], &events, 1, 8, None);
        assert_eq!(out.brief(), vec![("b|site".into(), Firing, 330 * S)]);
        assert_eq!(out.alerts[0].episode_start, 320 * S);
    }

    #[test]
    fn dwell_resets_on_leaving() {
        let inside = |t: i64| gps(t, "bike", 120.005, 36.005, 0.0, None);
        let outside = |t: i64| gps(t, "bike", 119.99, 36.005, 0.0, None);
        // 5 min inside, out, then 12 min inside: dwell ≥ 10 min fires once, 10 min after
        // the second entry, and resolves on leaving.
        let mut events: Vec<String> = (0..=5).map(|m| inside(m * M)).collect();
        events.push(outside(6 * M));
        events.extend((7..=19).map(|m| inside(m * M)));
        events.push(outside(20 * M));
        assert_eq!(
            brief(Dwell, 0.0, 1, 10 * M, None, &events),
            vec![("bike|site".into(), Firing, 17 * M), ("bike|site".into(), Resolved, 20 * M)]
        );
    }

    #[test]
    fn dwell_fires_on_the_watermark_without_another_point() {
        // The bike reports once inside and then nothing; another vehicle moves the watermark.
        let events = vec![gps(0, "bike", 120.005, 36.005, 0.0, None), gps(15 * M, "other", 119.0, 36.0, 0.0, None)];
        assert_eq!(brief(Dwell, 0.0, 1, 10 * M, None, &events), vec![("bike|site".into(), Firing, 10 * M)]);
    }

    #[test]
    fn outside_all_zones_while_stopped_suspects_dumping() {
        let stopped_outside = |t: i64, speed: f64| gps(t, "truck", 119.99, 36.005, speed, None);
        let mut events: Vec<String> = (0..4).map(|m| stopped_outside(m * M, 0.5)).collect();
        events.push(stopped_outside(4 * M, 30.0)); // drives off: resets
        events.extend((5..=11).map(|m| stopped_outside(m * M, 1.0)));
        events.push(gps(12 * M, "truck", 120.005, 36.005, 1.0, None)); // into the site: resolves
        assert_eq!(
            brief(Outside, 0.0, 1, 5 * M, Some("speed < 2"), &events),
            vec![("truck".into(), Firing, 10 * M), ("truck".into(), Resolved, 12 * M)]
        );
    }

    #[test]
    fn corridor_deviation_beyond_the_distance_for_longer_than_allowed() {
        // route-1 runs along latitude 36.02; 0.003° ≈ 333 m off, 0.001° ≈ 111 m off.
        let at = |t: i64, lat: f64| gps(t, "truck", 120.01, lat, 30.0, Some("route-1"));
        let events = vec![
            at(0, 36.02),
            at(M, 36.023),
            at(2 * M, 36.023),
            at(3 * M, 36.023),
            at(4 * M, 36.021),
            at(5 * M, 36.023),
        ];
        let out =
            run(gps_stream(), vec![geofence(test_zones(None), Corridor, 2 * M, 0.0, 1, None)], &events, 1, 2, None);
        assert_eq!(out.brief(), vec![("truck".into(), Firing, 3 * M), ("truck".into(), Resolved, 4 * M)]);
        let d = out.alerts[0].values["distance_m"].as_f64().unwrap();
        assert!((d - 333.6).abs() < 2.0, "{d}");
        // An unknown route raises nothing.
        let events =
            vec![gps(0, "x", 120.01, 36.03, 1.0, Some("nope")), gps(10 * M, "x", 120.01, 36.03, 1.0, Some("nope"))];
        assert!(brief(Corridor, 0.0, 1, 0, None, &events).is_empty());
    }

    #[test]
    fn corridor_routes_can_come_from_a_lookup_table() {
        let mut rule = geofence(test_zones(None), Corridor, 0, 0.0, 1, None);
        if let crate::plan::RuleKind::Geofence(g) = &mut rule.kind {
            g.route_table =
                Some(std::sync::Arc::new([("truck".to_string(), "route-1".to_string())].into_iter().collect()));
        }
        // No route on the events: the table assigns route-1 to "truck"; "other" has none.
        let events = vec![gps(0, "truck", 120.01, 36.023, 30.0, None), gps(0, "other", 120.01, 36.023, 30.0, None)];
        let out = run(gps_stream(), vec![rule], &events, 1, 2, None);
        assert_eq!(out.brief(), vec![("truck".into(), Firing, 0)]);
    }

    #[test]
    fn confirm_for_needs_the_new_state_to_last() {
        let mut rule = geofence(test_zones(None), Enter, 0, 0.0, 1, None);
        if let crate::plan::RuleKind::Geofence(g) = &mut rule.kind {
            g.confirm_for_ms = 30 * S;
        }
        let inside = |t: i64| gps(t, "b", 120.005, 36.005, 1.0, None);
        let outside = |t: i64| gps(t, "b", 119.99, 36.005, 1.0, None);
        // In for 20 s (too short), out, then in for 40 s: one entry, dated at its first point.
        let events = vec![inside(0), inside(20 * S), outside(25 * S), inside(60 * S), inside(80 * S), inside(100 * S)];
        let out = run(gps_stream(), vec![rule], &events, 1, 3, None);
        assert_eq!(out.brief(), vec![("b|site".into(), Firing, 100 * S)]);
        assert_eq!(out.alerts[0].episode_start, 60 * S);
    }

    #[test]
    fn a_jitter_point_inside_does_not_end_outside_when_entering_needs_confirmation() {
        let out_at = |t: i64| gps(t, "truck", 119.99, 36.005, 0.0, None);
        let mut events: Vec<String> = (0..=6).map(|m| out_at(m * M)).collect();
        events.push(gps(7 * M, "truck", 120.005, 36.005, 0.0, None)); // one stray point inside
        events.extend((8..=9).map(|m| out_at(m * M)));
        let out =
            run(gps_stream(), vec![geofence(test_zones(None), Outside, 5 * M, 0.0, 3, None)], &events, 1, 4, None);
        assert_eq!(out.brief(), vec![("truck".into(), Firing, 5 * M)], "one episode, not resolved by the stray point");
    }

    #[test]
    fn points_in_the_margin_band_never_complete_an_exit() {
        let mut rule = geofence(test_zones(None), Exit, 0, 20.0, 2, None);
        if let crate::plan::RuleKind::Geofence(g) = &mut rule.kind {
            g.confirm_for_ms = 60 * S;
        }
        // Entered at 60 s (two points, 60 s apart); clearly out at 70 s and 80 s (not yet
        // 60 s); a band point 5 m outside the edge at 135 s keeps it inside; clearly out
        // again at 140 s completes the exit.
        let events = vec![
            gps(0, "b", 120.005, 36.005, 1.0, None),
            gps(30 * S, "b", 120.005, 36.005, 1.0, None),
            gps(60 * S, "b", 120.005, 36.005, 1.0, None),
            gps(70 * S, "b", 119.99, 36.005, 1.0, None),
            gps(80 * S, "b", 119.99, 36.005, 1.0, None),
            gps(135 * S, "b", 119.99995, 36.005, 1.0, None),
            gps(140 * S, "b", 119.99, 36.005, 1.0, None),
        ];
        let out = run(gps_stream(), vec![rule], &events, 1, 5, None);
        assert_eq!(out.brief(), vec![("b|site".into(), Firing, 140 * S)]);
    }

    #[test]
    fn speeding_uses_the_zone_limit() {
        let at = |t: i64, speed: f64| gps(t, "car", 120.005, 36.005, speed, None);
        let events =
            vec![at(0, 30.0), at(10 * S, 55.0), at(20 * S, 35.0), gps(30 * S, "car", 120.02, 36.005, 80.0, None)];
        let out = run(gps_stream(), vec![geofence(test_zones(None), Speeding, 0, 0.0, 1, None)], &events, 1, 4, None);
        assert_eq!(out.brief(), vec![("car|site".into(), Firing, 10 * S), ("car|site".into(), Resolved, 20 * S)]);
        assert_eq!(out.alerts[0].values["speed_kmh"], serde_json::json!(55.0));
        assert_eq!(out.alerts[0].values["zone_id"], serde_json::json!("site"));
    }

    #[test]
    fn zones_count_only_during_their_active_hours() {
        // Active 08:00-09:00 UTC: a truck inside from 07:30 to 08:30 is inside from 08:00.
        let (start_min, end_min) = crate::zones::ActiveWindow::parse_hours("08:00-09:00").unwrap();
        let w = crate::zones::ActiveWindow { days: [true; 7], start_min, end_min, tz: chrono_tz::UTC };
        let base = crate::time::parse_timestamp("2026-11-23T07:30:00Z").unwrap();
        let events: Vec<String> =
            (0..=60).step_by(10).map(|m| gps(base + m * M, "t", 120.005, 36.005, 5.0, None)).collect();
        let out = run(gps_stream(), vec![geofence(test_zones(Some(w)), Inside, 0, 0.0, 1, None)], &events, 1, 4, None);
        assert_eq!(out.brief(), vec![("t|site".into(), Firing, base + 30 * M)]);
    }
}

#[test]
fn the_decoder_needs_only_the_fields_rules_read() {
    use crate::plan::Plan;
    use std::sync::Arc;
    let s = stream(0, None);
    let mut plan = Plan { streams: vec![s.clone()], rules: Vec::new() };
    assert_eq!(plan.needed_fields(0), [true, true, false], "time and stream key only");
    plan.rules.push(Arc::new(threshold(&s, "value > 25", None, 0)));
    assert_eq!(plan.needed_fields(0), [true, true, true], "the condition reads `value`");
}

/// Deadlines (`for`, absence, dwell) are reached by the stream's watermark or by the key's
/// next row once the key's own split is past them, whichever comes first, with the same
/// alerts either way: how far another split has got when a row arrives changes nothing.
mod deadlines {
    use std::sync::Arc;

    use super::S;
    use crate::PipelineOptions;
    use crate::plan::{GeofenceEvent, Plan, RulePlan};
    use crate::schema::StreamDef;
    use crate::testutil::{
        absence, alerts_of_splits, ev, geofence, gps, gps_stream, run, stream, test_zones, threshold,
    };

    /// Every alert, in full, of `key_rows` read from split 0 while split 1 carries `other`
    /// (another key, far ahead in time): read first, so the stream's watermark follows
    /// split 0, or last, so it stays at the start while split 0 is read.
    fn alerts(
        s: &Arc<StreamDef>,
        rule: RulePlan,
        key_rows: &[String],
        other: &[String],
        other_first: bool,
    ) -> Vec<String> {
        let plan = Arc::new(Plan { streams: vec![s.clone()], rules: vec![Arc::new(rule)] });
        let options = PipelineOptions { workers: 2, decoders: 0, batch_size: 2, queue_depth: 4, ..Default::default() };
        let mut order: Vec<(usize, &String)> = key_rows.iter().map(|r| (0, r)).collect();
        let others = other.iter().map(|r| (1, r));
        if other_first {
            order.splice(0..0, others);
        } else {
            order.extend(others);
        }
        let rows = order.into_iter().enumerate().map(|(i, (split, row))| (split, row.as_str(), i as i64));
        alerts_of_splits(plan, 2, rows, options)
    }

    fn both_orders(s: Arc<StreamDef>, rule: impl Fn() -> RulePlan, key_rows: &[String], other: &[String]) {
        let ahead = alerts(&s, rule(), key_rows, other, true);
        let behind = alerts(&s, rule(), key_rows, other, false);
        assert!(!ahead.is_empty(), "the input raises alerts");
        assert_eq!(ahead, behind);
    }

    #[test]
    fn threshold_for() {
        // Above for 8 s (the 5 s deadline passes between rows), below, above again for 1 s.
        let values = [(0, 70.0), (8, 70.0), (9, 10.0), (20, 70.0), (21, 10.0), (40, 70.0), (47, 70.0)];
        let rows: Vec<String> = values.iter().map(|&(t, v)| ev(t * S, "a", v)).collect();
        let other = vec![ev(3600 * S, "z", 0.0)];
        for ooo in [0, 2 * S] {
            let s = stream(ooo, None);
            both_orders(s.clone(), || threshold(&s, "value > 60", None, 5 * S), &rows, &other);
        }
    }

    #[test]
    fn absence_with_renotification() {
        let rows: Vec<String> = [0, 5, 40, 41, 100].iter().map(|&t| ev(t * S, "a", 1.0)).collect();
        let other = vec![ev(3600 * S, "z", 1.0)];
        for ooo in [0, 2 * S] {
            both_orders(stream(ooo, None), || absence(10 * S, Some(7 * S)), &rows, &other);
        }
    }

    #[test]
    fn geofence_dwell() {
        let inside = |t: i64| gps(t * S, "bike", 120.005, 36.005, 0.0, None);
        let outside = |t: i64| gps(t * S, "bike", 119.99, 36.005, 0.0, None);
        let rows = vec![inside(0), inside(30), inside(620), outside(800), inside(900), inside(1520), outside(1600)];
        let other = vec![gps(7200 * S, "far", 119.0, 36.0, 0.0, None)];
        for ooo in [0, 2 * S] {
            let s = Arc::new(StreamDef { max_out_of_orderness_ms: ooo, ..(*gps_stream()).clone() });
            both_orders(s, || geofence(test_zones(None), GeofenceEvent::Dwell, 600 * S, 0.0, 1, None), &rows, &other);
        }
    }

    #[test]
    fn a_row_past_the_deadline_does_not_fire_while_an_earlier_row_may_still_come() {
        // Out-of-orderness 60 s: after the row at 9 s an earlier one (3 s) may still arrive,
        // and does, showing the condition broke before the 5 s deadline.
        let s = stream(60 * S, None);
        let rows = [ev(0, "a", 70.0), ev(9 * S, "a", 10.0), ev(3 * S, "a", 10.0)];
        let out = run(s.clone(), vec![threshold(&s, "value > 60", None, 5 * S)], &rows, 2, 1, None);
        assert!(out.alerts.is_empty(), "{:?}", out.brief());
    }
}
