//! [`Operator::close_episodes`] at a hot reload: every episode that fired and has not
//! resolved gets one resolved alert with its id, dated at the reload's watermark, with the
//! reason; stopwatches, open windows, memberships and partial matches raise nothing.

use std::collections::{BTreeMap, BTreeSet};

use crate::alert::{Alert, AlertState};
use crate::operator::Operator;
use crate::operator::sequence::snapshot_tests_b;
use crate::operator::sequence_tests::{ev as sev, step};
use crate::operator::threshold::snapshot_tests_a::{Case, S, decode, feed, inside, outside};
use crate::plan::GeofenceEvent;
use crate::testutil::{absence, ev, geofence, gps_stream, stream, test_zones, threshold, window};
use crate::time::Millis;

/// Feeds `case`'s rows to a fresh operator in its batches: the operator, the alerts in the
/// order raised, and the stream's watermark after the last row.
fn drive(case: &Case) -> (Box<dyn Operator>, Vec<Alert>, Millis) {
    let rows = decode(&case.stream, &case.rule, &case.payloads);
    let mut op = case.op();
    let alerts = feed(op.as_mut(), &rows, 0..case.payloads.len(), case.batch_size, None).concat();
    let watermark = rows.watermarks.last().copied().expect("the case has rows");
    (op, alerts, watermark)
}

/// The episodes `alerts` left open (their last alert is a firing one), by alert id.
fn open_episodes(alerts: &[Alert]) -> BTreeMap<&str, &Alert> {
    let mut last: BTreeMap<&str, &Alert> = BTreeMap::new();
    for a in alerts {
        last.insert(&a.alert_id, a);
    }
    last.retain(|_, a| a.state == AlertState::Firing);
    last
}

/// Closes `op`'s episodes at `at` for a changed rule and checks what comes out: exactly one
/// resolved alert per episode `alerts` left open — which must be those of the keys `open`,
/// else the case does not test what it says — with the episode's id, key, start, rule and
/// last notification number, dated `at`, with the reason; nothing for any other key. A
/// second close raises nothing. Returns the resolved alerts, sorted by key.
fn close_and_check(op: &mut dyn Operator, alerts: &[Alert], at: Millis, open: &[&str]) -> Vec<Alert> {
    let episodes = open_episodes(alerts);
    let mut keys: Vec<&str> = episodes.values().map(|a| a.key.as_str()).collect();
    keys.sort_unstable();
    assert_eq!(keys, open, "the episodes the rows left open");

    let mut out = Vec::new();
    op.close_episodes(at, "rule_changed", &mut out).expect("close");
    out.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(out.len(), episodes.len(), "one resolved alert per open episode: {out:#?}");
    let ids: BTreeSet<&str> = out.iter().map(|a| a.alert_id.as_str()).collect();
    assert_eq!(ids.len(), out.len(), "one alert per episode: {out:#?}");
    for r in &out {
        let Some(f) = episodes.get(r.alert_id.as_str()) else { panic!("{r:#?} closes no open episode") };
        assert_eq!(r.state, AlertState::Resolved);
        assert_eq!(r.event_time, at);
        assert_eq!(r.values["reason"], "rule_changed");
        assert_eq!(
            (&r.key, &r.rule_id, &r.rule_name, r.severity, &r.stream, r.episode_start, r.notification),
            (&f.key, &f.rule_id, &f.rule_name, f.severity, &f.stream, f.episode_start, f.notification),
        );
    }
    let mut again = Vec::new();
    op.close_episodes(at, "rule_changed", &mut again).expect("close again");
    assert_eq!(again, vec![], "the episodes are closed");
    out
}

#[test]
fn threshold_firing_episode_resolves_and_pending_for_raises_nothing() {
    let s = stream(0, None);
    // "a" holds from 0 s and fires at 10 s (timer); "d" fires at 11 s and clears at 13 s;
    // "b" holds from 15 s, its `for` due at 25 s; "c" never holds.
    let events = vec![
        ev(0, "a", 30.0),
        ev(S, "d", 30.0),
        ev(2 * S, "c", 1.0),
        ev(12 * S, "d", 31.0),
        ev(13 * S, "d", 1.0),
        ev(15 * S, "b", 30.0),
        ev(20 * S, "a", 32.0),
        ev(20 * S, "c", 2.0),
    ];
    let case = Case::new("threshold close", s.clone(), threshold(&s, "value > 25", None, 10 * S), events);
    let (mut op, alerts, watermark) = drive(&case);
    assert_eq!(watermark, 20 * S);
    let out = close_and_check(op.as_mut(), &alerts, watermark, &["a"]);
    // No row ends it: the start event is the evidence and its observed values are the
    // alert's, as in the timer-fired firing alert.
    let fired = alerts.iter().find(|x| x.key == "a").expect("a fired");
    assert_eq!((fired.event_time, &out[0].evidence), (10 * S, &fired.evidence));
    assert_eq!(out[0].values["value"], 30.0);
}

#[test]
fn threshold_with_only_a_pending_for_raises_nothing() {
    let s = stream(0, None);
    let events = vec![ev(0, "a", 30.0), ev(5 * S, "b", 30.0), ev(8 * S, "a", 31.0)];
    let case = Case::new("threshold pending", s.clone(), threshold(&s, "value > 25", None, 10 * S), events);
    let (mut op, alerts, watermark) = drive(&case);
    assert_eq!(alerts, vec![]);
    close_and_check(op.as_mut(), &alerts, watermark, &[]);
}

#[test]
fn threshold_closed_behind_its_firing_alert_is_dated_at_it() {
    // 10 s out of order: the row at 20 s fires with the watermark at 10 s.
    let s = stream(10 * S, None);
    let case =
        Case::new("threshold ahead", s.clone(), threshold(&s, "value > 25", None, 0), vec![ev(20 * S, "a", 30.0)]);
    let (mut op, alerts, watermark) = drive(&case);
    assert_eq!((alerts.len(), alerts[0].event_time, watermark), (1, 20 * S, 10 * S));
    let mut out = Vec::new();
    op.close_episodes(watermark, "rule_removed", &mut out).expect("close");
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].state, out[0].event_time, &out[0].alert_id),
        (AlertState::Resolved, 20 * S, &alerts[0].alert_id)
    );
    assert_eq!(out[0].values["reason"], "rule_removed");
}

#[test]
fn window_firing_episode_resolves_and_open_windows_raise_nothing() {
    // 10 s tumbling windows, sum over 30: [0, 10) fires "a" and "c"; [10, 20) keeps "a"
    // firing and resolves "c"; "b" never holds; "z" has an open window.
    let events = vec![
        ev(S, "a", 20.0),
        ev(2 * S, "a", 20.0),
        ev(3 * S, "b", 1.0),
        ev(4 * S, "c", 40.0),
        ev(11 * S, "a", 20.0),
        ev(12 * S, "a", 20.0),
        ev(13 * S, "b", 1.0),
        ev(14 * S, "c", 1.0),
        ev(21 * S, "z", 50.0),
    ];
    let case = Case::new("window close", stream(0, None), window(10 * S, 10 * S, "sum_value > 30"), events);
    let (mut op, alerts, watermark) = drive(&case);
    assert!(alerts.iter().any(|x| x.key == "c" && x.state == AlertState::Resolved), "{alerts:#?}");
    let out = close_and_check(op.as_mut(), &alerts, watermark, &["a"]);
    assert_eq!((out[0].episode_start, out[0].evidence.len()), (0, 0));
}

#[test]
fn absence_firing_episode_resolves_and_armed_deadlines_raise_nothing() {
    // Silent for 30 s, re-notified every 10 s: "a" fires at 30 s (then 40, 50 s); "c"
    // fires at 35 s and reports at 45 s; "b" keeps reporting.
    let mut events = vec![ev(0, "a", 1.0), ev(0, "b", 1.0), ev(5 * S, "c", 1.0)];
    events.extend((1..=5).map(|i| ev(i * 10 * S, "b", 1.0)));
    events.insert(7, ev(45 * S, "c", 1.0));
    let case = Case::new("absence close", stream(0, None), absence(30 * S, Some(10 * S)), events);
    let (mut op, alerts, watermark) = drive(&case);
    assert_eq!(watermark, 50 * S);
    let out = close_and_check(op.as_mut(), &alerts, watermark, &["a"]);
    assert_eq!((out[0].episode_start, out[0].notification), (30 * S, 3));
    assert_eq!(out[0].values["silent_ms"], 50 * S);
}

#[test]
fn geofence_firing_dwell_resolves_and_a_dwell_still_timing_raises_nothing() {
    // Dwell 20 s from entry: "v1" enters at 10 s and fires at 30 s; "v2" enters at 25 s
    // (due at 45 s); "v3" is never inside.
    let events = vec![
        inside(10 * S, "v1", 1.0),
        outside(15 * S, "v3", 1.0),
        inside(20 * S, "v1", 1.0),
        inside(25 * S, "v2", 1.0),
        inside(35 * S, "v1", 1.0),
        outside(40 * S, "v3", 1.0),
    ];
    let rule = geofence(test_zones(None), GeofenceEvent::Dwell, 20 * S, 0.0, 1, None);
    let (mut op, alerts, watermark) = drive(&Case::new("dwell close", gps_stream(), rule, events));
    let out = close_and_check(op.as_mut(), &alerts, watermark, &["v1|site"]);
    assert_eq!((out[0].episode_start, &out[0].values["held_ms"]), (10 * S, &serde_json::json!(30 * S)));
    assert_eq!(out[0].values["zone_id"], "site");
    // No point ends it: the level's start is the evidence, as when its timer fired it.
    let fired = alerts.iter().find(|x| x.key == "v1|site").expect("v1 fired");
    assert_eq!(out[0].evidence, fired.evidence);
}

#[test]
fn geofence_firing_speeding_resolves_and_a_member_under_the_limit_raises_nothing() {
    // Speeding for 5 s in `site` (40 km/h): "v1" at 60 fires at 15 s; "v2" is inside at
    // 1 km/h; "v3" speeds from 22 s (due at 27 s).
    let events = vec![
        inside(10 * S, "v1", 60.0),
        inside(12 * S, "v2", 1.0),
        inside(20 * S, "v1", 60.0),
        inside(22 * S, "v3", 70.0),
        inside(24 * S, "v2", 1.0),
    ];
    let rule = geofence(test_zones(None), GeofenceEvent::Speeding, 5 * S, 0.0, 1, None);
    let (mut op, alerts, watermark) = drive(&Case::new("speeding close", gps_stream(), rule, events));
    let out = close_and_check(op.as_mut(), &alerts, watermark, &["v1|site"]);
    assert_eq!((out[0].episode_start, watermark), (10 * S, 24 * S));
}

#[test]
fn geofence_edges_and_memberships_raise_nothing() {
    // An enter edge fires once and never resolves; an inside level timing its `for` has
    // not fired.
    let events = vec![inside(10 * S, "v1", 1.0), outside(12 * S, "v2", 1.0), inside(20 * S, "v1", 1.0)];
    for (event, for_ms) in [(GeofenceEvent::Enter, 0), (GeofenceEvent::Inside, 60 * S)] {
        let rule = geofence(test_zones(None), event, for_ms, 0.0, 1, None);
        let (mut op, alerts, watermark) = drive(&Case::new("edges close", gps_stream(), rule, events.clone()));
        assert_eq!(alerts.len(), usize::from(event == GeofenceEvent::Enter), "{event:?}: {alerts:#?}");
        let mut out = Vec::new();
        op.close_episodes(watermark, "rule_changed", &mut out).expect("close");
        assert_eq!(out, vec![], "{event:?}");
    }
}

#[test]
fn sequence_has_no_episodes_to_close() {
    // x on a then y on b within 30 s: "k1" completes a match, "k2" has a partial one.
    let events = vec![
        (0, sev(0, "k1", "x", 1.0)),
        (1, sev(S, "k1", "y", 1.0)),
        (0, sev(2 * S, "k2", "x", 1.0)),
        (0, sev(10 * S, "z", "q", 0.0)),
        (1, sev(10 * S, "z", "q", 0.0)),
    ];
    let steps = vec![step("x", 0, Some("x")), step("y", 1, Some("y"))];
    let case = snapshot_tests_b::seq_case("sequence close", Some(30 * S), steps, events);
    let rows = case.decode();
    let mut op = case.op();
    let alerts = snapshot_tests_b::feed(op.as_mut(), &rows, 0..case.events.len(), case.batch_size, None);
    assert_eq!(alerts.iter().map(|a| (a.key.as_str(), a.state)).collect::<Vec<_>>(), [("k1", AlertState::Firing)]);
    assert!(op.key_count() >= 2, "k2 has a partial match");
    let mut out = Vec::new();
    op.close_episodes(8 * S, "rule_changed", &mut out).expect("close");
    assert_eq!(out, vec![]);
}
