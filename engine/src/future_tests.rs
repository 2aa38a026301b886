//! Events from the future through a real pipeline (see [`crate::future`]): one wrong clock
//! costs exactly that event, whatever the batch size, worker count or decoder count; a real
//! jump of a replayed stream's clock loses nothing; a live source bounds event times by
//! their arrival.

use std::sync::Arc;

use proptest::prelude::*;

use crate::pipeline::{Output, Pipeline, PipelineOptions};
use crate::plan::{Plan, RulePlan};
use crate::schema::StreamDef;
use crate::testutil::{absence, ev, run_with, stream, threshold, window};
use crate::time::Millis;

const S: Millis = 1000;
const MIN: Millis = 60 * S;
const HOUR: Millis = 60 * MIN;

fn bounded(max_future: Option<Millis>) -> Arc<StreamDef> {
    Arc::new(StreamDef { max_future_ms: max_future, ..(*stream(2 * S, None)).clone() })
}

fn rules(s: &StreamDef) -> Vec<RulePlan> {
    let mut rules = vec![
        threshold(s, "value > 40", Some("value < 20"), 0),
        threshold(s, "value > 60", None, 5 * S),
        window(20 * S, 10 * S, "count >= 3 AND delta_value > 10"),
        absence(15 * S, None),
    ];
    for (i, r) in rules.iter_mut().enumerate() {
        let mut meta = (*r.meta).clone();
        meta.id = format!("{}-{i}", meta.id).into();
        r.meta = Arc::new(meta);
    }
    rules
}

/// Every alert in full (JSON, sorted) and the dead letters' reasons.
fn outcome(s: Arc<StreamDef>, payloads: &[String], options: PipelineOptions) -> (Vec<String>, Vec<String>) {
    let rules = rules(&s);
    let out = run_with(s, rules, payloads, options, None, None);
    let mut alerts: Vec<String> = out.alerts.iter().map(|a| serde_json::to_string(a).expect("json")).collect();
    alerts.sort();
    (alerts, out.dead.into_iter().map(|d| d.reason).collect())
}

/// Rows mostly in time order (up to 1.5 s backwards), keys a–c.
fn events() -> impl Strategy<Value = Vec<(Millis, usize, u32)>> {
    prop::collection::vec((0..3 * S, 0usize..3, 0u32..100, any::<bool>()), 2..120).prop_map(|steps| {
        let mut ts = 1_800_000_000_000;
        steps
            .into_iter()
            .map(|(gap, k, v, back)| {
                ts += gap;
                (if back { ts - 1_500 } else { ts }, k, v)
            })
            .collect()
    })
}

fn payloads(rows: &[(Millis, usize, u32)]) -> Vec<String> {
    rows.iter().map(|&(t, k, v)| ev(t, ["a", "b", "c"][k], f64::from(v))).collect()
}

fn options(workers: usize, decoders: usize, batch_size: usize) -> PipelineOptions {
    PipelineOptions { workers, decoders, batch_size, queue_depth: 4, ..Default::default() }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// A row dated an hour, a year or to the year 9999 ahead, anywhere in the input (first
    /// row included), is dead-lettered as `future` and changes no alert.
    #[test]
    fn one_wrong_clock_costs_exactly_that_event(
        rows in events(),
        at in any::<prop::sample::Index>(),
        ahead in prop::sample::select(vec![HOUR, 365 * 24 * HOUR, 0]),
        key in 0usize..4,
        workers in 1usize..4,
        decoders in 0usize..3,
        batch_size in 1usize..64,
    ) {
        let clean = payloads(&rows);
        let (expected, expected_dead) = outcome(bounded(Some(5 * MIN)), &clean, options(1, 0, 4096));
        prop_assert!(expected_dead.is_empty(), "{expected_dead:?}");
        // Inserted before at least one real row, so there is evidence against it.
        let i = at.index(rows.len() - 1);
        let t = if ahead == 0 { 253_402_300_799_000 } else { rows[i].0 + ahead };
        let mut dirty = clean.clone();
        dirty.insert(i, ev(t, ["a", "b", "c", "z"][key], 99.0));
        let (alerts, dead) = outcome(bounded(Some(5 * MIN)), &dirty, options(workers, decoders, batch_size));
        prop_assert_eq!(alerts, expected);
        prop_assert_eq!(dead.len(), 1, "{:?}", dead);
        prop_assert!(dead[0].starts_with("future: "), "{}", dead[0]);
    }

    /// A replayed stream whose clock really jumps (a gap in a recording) loses nothing: the
    /// same alerts and dead letters as without the bound.
    #[test]
    fn a_gap_in_a_recording_loses_nothing(
        rows in events(),
        at in any::<prop::sample::Index>(),
        gap in prop::sample::select(vec![10 * MIN, 2 * HOUR, 30 * 24 * HOUR]),
        batch_size in 1usize..64,
    ) {
        let i = at.index(rows.len());
        let shifted: Vec<_> = rows.iter().enumerate().map(|(j, &(t, k, v))| (if j >= i { t + gap } else { t }, k, v)).collect();
        let input = payloads(&shifted);
        let unbounded = outcome(bounded(None), &input, options(2, 1, batch_size));
        let with_bound = outcome(bounded(Some(5 * MIN)), &input, options(2, 1, batch_size));
        prop_assert_eq!(with_bound, unbounded);
    }
}

#[test]
fn a_row_waiting_for_evidence_at_a_chunk_end_is_judged_when_more_rows_come() {
    // Batch size 1: every row is its own chunk, so the suspect's evidence is always in
    // chunks that have not been decoded yet when it is sequenced.
    let mut rows: Vec<String> = (0..50).map(|i| ev(1_000 + i * S, "a", 10.0)).collect();
    rows.insert(5, ev(1_000 + 2 * HOUR, "a", 99.0));
    let (alerts, dead) = outcome(bounded(Some(5 * MIN)), &rows, options(2, 2, 1));
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(dead[0].contains("1970-01-01T02:00:01.000Z"), "{}", dead[0]);
    let (expected, _) = outcome(bounded(Some(5 * MIN)), &[&rows[..5], &rows[6..]].concat(), options(1, 0, 4096));
    assert_eq!(alerts, expected);
}

#[test]
fn the_end_of_the_input_judges_with_the_rows_there_are() {
    let s = bounded(Some(5 * MIN));
    // The last row jumps with nothing after it: accepted (a sparse stream is not a clock).
    let rows = vec![ev(1_000, "a", 10.0), ev(2_000, "a", 10.0), ev(2 * HOUR, "a", 70.0)];
    let (_, dead) = outcome(s.clone(), &rows, options(1, 0, 4096));
    assert!(dead.is_empty(), "{dead:?}");
    // One row after it, far behind: the jump was a wrong clock.
    let rows = vec![ev(1_000, "a", 10.0), ev(2 * HOUR, "a", 70.0), ev(3_000, "a", 10.0)];
    let (_, dead) = outcome(s, &rows, options(1, 0, 4096));
    assert_eq!(dead.len(), 1, "{dead:?}");
}

#[test]
fn a_live_source_bounds_event_times_by_their_arrival() {
    let s = bounded(Some(5 * MIN));
    let plan = Arc::new(Plan { streams: vec![s.clone()], rules: rules(&s).into_iter().map(Arc::new).collect() });
    let (mut p, rx) = Pipeline::start(plan, options(2, 1, 8));
    let arrival = 1_800_000_000_000;
    // On time, a little ahead (a fast device clock: fine), too far ahead.
    for (i, t) in [arrival - S, arrival + 2 * S, arrival + 6 * MIN, arrival + 4 * MIN].into_iter().enumerate() {
        p.push_arrived(0, 0, ev(t, "a", 10.0).as_bytes(), i as i64, Some(arrival)).expect("push");
    }
    let report = p.finish().expect("finish");
    let dead: Vec<String> = rx
        .iter()
        .filter_map(|o| match o {
            Output::DeadLetter(d) => Some(d.reason),
            _ => None,
        })
        .collect();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(dead[0].starts_with("future: 360000 ms ahead of its arrival"), "{}", dead[0]);
    assert_eq!(report.streams[0].future, 1);
    assert_eq!(report.streams[0].accepted, 3);
    // At the end of the input the watermark moves to the largest accepted event time.
    assert_eq!(report.streams[0].watermark, arrival + 4 * MIN, "the future row moved nothing");
}

#[test]
fn epoch_seconds_read_as_milliseconds_are_flagged() {
    let s = bounded(Some(5 * MIN));
    let rules = rules(&s);
    let plan = Arc::new(Plan { streams: vec![s], rules: rules.into_iter().map(Arc::new).collect() });
    let (mut p, rx) = Pipeline::start(plan, options(1, 0, 8));
    p.push(0, ev(1_700_000_000, "a", 10.0).as_bytes()).expect("push");
    let report = p.finish().expect("finish");
    drop(rx);
    let warning = report.streams[0].time_warning.as_deref().expect("a warning");
    assert!(warning.contains("1970-01-20") && warning.contains("time_unit"), "{warning}");
}

/// Pushes `rows` — (split, payload, offset) — into a pipeline of [`rules`] reading 2 splits,
/// each arriving at `arrival`; returns every alert (JSON, sorted) and the dead letters' reasons.
fn run_splits(rows: &[(usize, String, i64)], arrival: Option<Millis>, batch_size: usize) -> (Vec<String>, Vec<String>) {
    let s = bounded(Some(5 * MIN));
    let plan = Arc::new(Plan { streams: vec![s.clone()], rules: rules(&s).into_iter().map(Arc::new).collect() });
    let (mut p, rx) = Pipeline::start(plan, options(2, 1, batch_size));
    p.declare_splits(0, 2);
    let collector = std::thread::spawn(move || {
        let (mut alerts, mut dead) = (Vec::new(), Vec::new());
        for o in rx {
            match o {
                Output::Alerts(a) => alerts.extend(a.iter().map(|a| serde_json::to_string(a).expect("json"))),
                Output::DeadLetter(d) => dead.push(d.reason),
                _ => {}
            }
        }
        alerts.sort();
        (alerts, dead)
    });
    for (split, payload, offset) in rows {
        p.push_arrived(0, *split, payload.as_bytes(), *offset, arrival).expect("push");
    }
    p.finish().expect("finish");
    collector.join().expect("collector")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// A wrong clock in one split of a backlog (old events read through a live source, or a
    /// replay) is judged by its own split: the verdict and every alert are the same however
    /// the two splits' reads interleave.
    #[test]
    fn a_wrong_clock_is_judged_within_its_split_whatever_the_read_order(
        a in events(),
        b in events(),
        at in any::<prop::sample::Index>(),
        picks in prop::collection::vec(any::<bool>(), 240),
        live in any::<bool>(),
        batch_size in 1usize..40,
    ) {
        let mut split0: Vec<String> = payloads(&a);
        let i = at.index(a.len() - 1);
        split0.insert(i, ev(a[i].0 + HOUR, "a", 99.0));
        let split1: Vec<String> = payloads(&b).into_iter().map(|p| p.replace(r#""id":""#, r#""id":"x"#)).collect();
        let tagged = |split: usize, v: &[String]| -> Vec<(usize, String, i64)> {
            v.iter().enumerate().map(|(o, p)| (split, p.clone(), o as i64)).collect()
        };
        let (s0, s1) = (tagged(0, &split0), tagged(1, &split1));
        let sequential: Vec<_> = s0.iter().chain(&s1).cloned().collect();
        let (mut x, mut y, mut interleaved) = (0, 0, Vec::new());
        for &p in &picks {
            if p && x < s0.len() { interleaved.push(s0[x].clone()); x += 1; }
            else if y < s1.len() { interleaved.push(s1[y].clone()); y += 1; }
        }
        interleaved.extend(s0[x..].iter().cloned());
        interleaved.extend(s1[y..].iter().cloned());
        // Live: read a day after the events happened (a backlog), so arrival times catch nothing.
        let arrival = live.then_some(a[0].0 + 24 * HOUR);
        let first = run_splits(&sequential, arrival, batch_size);
        let second = run_splits(&interleaved, arrival, batch_size);
        prop_assert_eq!(&first, &second);
        prop_assert_eq!(first.1.iter().filter(|r| r.starts_with("future")).count(), 1, "{:?}", first.1);
    }
}

#[test]
fn rows_waiting_for_evidence_are_not_counted_as_processed() {
    let s = bounded(Some(5 * MIN));
    let plan = Arc::new(Plan { streams: vec![s.clone()], rules: rules(&s).into_iter().map(Arc::new).collect() });
    let (mut p, rx) = Pipeline::start(plan, options(1, 0, 4));
    let collector = std::thread::spawn(move || rx.iter().count());
    // 40 rows (the first row of a replay is judged by the 32 after it), then offset 40 jumps
    // an hour ahead, and fewer than 32 rows follow it before the barrier.
    for o in 0..40i64 {
        p.push_split(0, 0, ev(1_000 + o * S, "a", 10.0).as_bytes(), o).expect("push");
    }
    p.push_split(0, 0, ev(HOUR, "a", 10.0).as_bytes(), 40).expect("push");
    for o in 41..45i64 {
        p.push_split(0, 0, ev(1_000 + o * S, "a", 10.0).as_bytes(), o).expect("push");
    }
    p.barrier(1).expect("barrier");
    assert_eq!(p.unsequenced(), vec![(0, 0, 40)], "the doubtful row and those after it wait");
    let report = p.finish().expect("finish");
    assert_eq!(report.streams[0].future, 1);
    assert_eq!(report.streams[0].accepted, 44);
    collector.join().expect("collector");
}
