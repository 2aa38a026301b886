//! Sequence semantics through a real pipeline: two streams `a` and `b` (ts, id, kind, value)
//! keyed by `id`, rules built by hand (the YAML compiler has its own tests).

use std::sync::Arc;

use proptest::prelude::*;

use crate::alert::Alert;
use crate::pipeline::{Output, Pipeline, PipelineOptions};
use crate::plan::{Plan, RuleKind, RuleMeta, RulePlan, SequenceInput, SequencePlan, SequenceStep, Severity};
use crate::rowexpr::{BinOp, RowExpr, Scalar};
use crate::schema::{FieldDef, FieldType, StreamDef};
use crate::testutil::predicate;
use crate::time::Millis;

pub(crate) fn stream(name: &str, ooo: Millis) -> Arc<StreamDef> {
    let fields = vec![
        FieldDef::new("ts", FieldType::Timestamp, true),
        FieldDef::new("id", FieldType::String, true),
        FieldDef::new("kind", FieldType::String, true),
        FieldDef::new("value", FieldType::Float, true),
    ];
    Arc::new(StreamDef { max_out_of_orderness_ms: ooo, ..StreamDef::new(name, fields, 0, vec![1]) })
}

pub(crate) fn ev(ts: Millis, id: &str, kind: &str, value: f64) -> String {
    format!(r#"{{"ts":{ts},"id":"{id}","kind":"{kind}","value":{value}}}"#)
}

/// A step on stream `input` (0: a, 1: b) matching `kind = '<kind>'` (any event if None).
pub(crate) fn step(name: &str, input: usize, kind: Option<&str>) -> SequenceStep {
    let schema = stream("x", 0).arrow_schema();
    SequenceStep {
        name: name.into(),
        input,
        filter: kind.map(|k| predicate(&format!("kind = '{k}'"), &schema)),
        refs: None,
        negated: false,
        within_ms: None,
        times: 1,
        contiguous: false,
        columns: vec![2, 3],
    }
}

pub(crate) fn rule(within_ms: Option<Millis>, steps: Vec<SequenceStep>, max_partial: usize) -> RulePlan {
    let inputs =
        vec![SequenceInput { stream: 0, key_fields: vec![1] }, SequenceInput { stream: 1, key_fields: vec![1] }];
    RulePlan {
        meta: Arc::new(RuleMeta {
            id: "seq".into(),
            name: "seq".into(),
            description: String::new(),
            severity: Severity::Warning,
            category: "test".into(),
            labels: Default::default(),
            renotify_ms: None,
        }),
        stream: 0,
        key_fields: vec![1],
        filter: None,
        kind: RuleKind::Sequence(SequencePlan { within_ms, max_partial, inputs, steps }),
    }
}

/// Runs (stream, payload) pairs in order; returns the alerts sorted.
fn run(rule: &RulePlan, events: &[(usize, String)], workers: usize, batch_size: usize) -> Vec<Alert> {
    let plan = Arc::new(Plan { streams: vec![stream("a", 0), stream("b", 0)], rules: vec![Arc::new(rule.clone())] });
    let options = PipelineOptions { workers, batch_size, queue_depth: 4, ..Default::default() };
    let (mut p, rx) = Pipeline::start(plan, options);
    let collector = std::thread::spawn(move || {
        let mut alerts = Vec::new();
        for o in rx {
            match o {
                Output::Alerts(a) => alerts.extend(a),
                // Snapshots are the runtime's business.
                Output::Checkpoint(_) | Output::State { .. } => {}
                Output::RuleError { rule, message } => panic!("rule {rule} failed: {message}"),
                _ => {}
            }
        }
        alerts
    });
    for (s, payload) in events {
        p.push(*s, payload.as_bytes()).expect("push");
    }
    p.finish().expect("finish");
    let mut alerts = collector.join().expect("collector");
    alerts.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    alerts
}

fn brief(alerts: &[Alert]) -> Vec<(String, Millis, Millis)> {
    alerts.iter().map(|a| (a.key.clone(), a.episode_start, a.event_time)).collect()
}

#[test]
fn two_steps_across_streams_within_the_limit() {
    let r = rule(Some(100), vec![step("rain", 0, Some("rain")), step("pond", 1, Some("pond"))], 64);
    let events = vec![
        (0, ev(10, "g1", "rain", 30.0)),
        (1, ev(50, "g1", "pond", 15.0)),  // g1: rain@10 → pond@50: fires
        (0, ev(20, "g2", "rain", 31.0)),  // late for stream a? no: a's watermark is 10
        (1, ev(200, "g2", "pond", 16.0)), // g2: 180 after the rain: too late
        (1, ev(210, "g3", "pond", 1.0)),  // pond before any rain
        (0, ev(220, "g3", "rain", 1.0)),
    ];
    let alerts = run(&r, &events, 2, 2);
    assert_eq!(brief(&alerts), vec![("g1".into(), 10, 50)]);
    let a = &alerts[0];
    assert_eq!(a.values["rain.value"], 30.0);
    assert_eq!(a.values["pond.value"], 15.0);
    let steps: Vec<&str> = a.evidence.iter().map(|e| e["_step"].as_str().unwrap()).collect();
    assert_eq!(steps, ["rain", "pond"]);
    assert_eq!(a.evidence[1]["kind"], "pond");
    assert_eq!(a.stream, "a", "alerts are raised on the first step's stream");
}

#[test]
fn rows_wait_for_every_stream_so_arrival_order_across_streams_does_not_matter() {
    let r = rule(Some(100), vec![step("x", 0, Some("x")), step("y", 1, Some("y"))], 64);
    // Stream b's event arrives first but happens after a's: it still completes the match.
    let events = vec![(1, ev(50, "k", "y", 0.0)), (0, ev(10, "k", "x", 0.0)), (0, ev(60, "k", "z", 0.0))];
    assert_eq!(brief(&run(&r, &events, 1, 1)), vec![("k".into(), 10, 50)]);
    // Ties in event time go by step order: x and y at the same instant is x then y.
    let tie = vec![(1, ev(10, "k", "y", 0.0)), (0, ev(10, "k", "x", 0.0))];
    assert_eq!(brief(&run(&r, &tie, 1, 1)), vec![("k".into(), 10, 10)]);
}

#[test]
fn a_step_compares_with_an_earlier_step() {
    // high, then low with value < high.value * 0.8, within 300.
    let mut low = step("low", 0, Some("p"));
    low.refs = Some(RowExpr::Binary(
        Box::new(RowExpr::Column { step: None, column: 3 }),
        BinOp::Lt,
        Box::new(RowExpr::Binary(
            Box::new(RowExpr::Column { step: Some(0), column: 3 }),
            BinOp::Multiply,
            Box::new(RowExpr::Literal(Scalar::Float(0.8))),
        )),
    ));
    let r = rule(Some(300), vec![step("high", 0, Some("p")), low], 64);
    let events: Vec<(usize, String)> =
        [(0, 100.0), (100, 90.0), (200, 75.0), (1000, 50.0)].iter().map(|&(t, v)| (0, ev(t, "d", "p", v))).collect();
    let alerts = run(&r, &events, 1, 3);
    // 75 < 0.8 × 100 (the partial opened at t=0): one match; the partial at 100 (90) is
    // discarded with it (SKIP PAST LAST ROW); 50 at t=1000 is past `within`.
    assert_eq!(brief(&alerts), vec![("d".into(), 0, 200)]);
    assert_eq!(alerts[0].values["high.value"], 100.0);
    assert_eq!(alerts[0].values["low.value"], 75.0);
}

#[test]
fn trailing_not_fires_at_the_deadline_unless_the_event_came() {
    let mut permit = step("permit", 1, None);
    permit.negated = true;
    permit.within_ms = Some(100);
    let r = rule(None, vec![step("dig", 0, Some("dig")), permit], 64);
    let events = vec![
        (0, ev(0, "z1", "dig", 0.0)),
        (0, ev(10, "z2", "dig", 0.0)),
        (1, ev(60, "z2", "ok", 0.0)), // z2 got its permit in time
        (0, ev(20, "z3", "dig", 0.0)),
        (1, ev(121, "z3", "ok", 0.0)), // z3's permit came 101 after: too late
        (0, ev(500, "other", "noise", 0.0)),
        (1, ev(500, "other", "noise", 0.0)),
    ];
    let alerts = run(&r, &events, 2, 1);
    assert_eq!(brief(&alerts), vec![("z1".into(), 0, 100), ("z3".into(), 20, 120)]);
    // Nothing fires before the watermark of every stream passed the deadline.
    let early = vec![(0, ev(0, "z1", "dig", 0.0)), (0, ev(500, "z1", "noise", 0.0))];
    assert_eq!(brief(&run(&r, &early[..1], 1, 1)), vec![], "the end of the input is not the deadline");
    assert_eq!(brief(&run(&r, &early, 1, 1)), vec![("z1".into(), 0, 100)], "stream b has no rows: it ends");
}

#[test]
fn a_not_between_two_steps_kills_the_partial_match() {
    let mut stop = step("stop", 1, Some("stop"));
    stop.negated = true;
    let r = rule(Some(1000), vec![step("a", 0, Some("a")), stop, step("b", 0, Some("b"))], 64);
    let events = vec![
        (0, ev(0, "k1", "a", 0.0)),
        (1, ev(5, "k1", "stop", 0.0)),
        (0, ev(10, "k1", "b", 0.0)),
        (0, ev(20, "k2", "a", 0.0)),
        (0, ev(30, "k2", "b", 0.0)),
        (1, ev(31, "k2", "stop", 0.0)), // after b: too late to prevent the match
    ];
    assert_eq!(brief(&run(&r, &events, 2, 2)), vec![("k2".into(), 20, 30)]);
}

#[test]
fn times_and_contiguous() {
    let mut hot = step("hot", 0, Some("hot"));
    hot.times = 3;
    let r = rule(Some(1000), vec![hot.clone()], 64);
    let relaxed: Vec<(usize, String)> =
        ["hot", "cold", "hot", "hot"].iter().enumerate().map(|(i, k)| (0, ev(i as Millis * 10, "k", k, 0.0))).collect();
    assert_eq!(brief(&run(&r, &relaxed, 1, 2)), vec![("k".into(), 0, 30)], "relaxed: other events may come between");
    hot.contiguous = true;
    let r = rule(Some(1000), vec![hot], 64);
    assert_eq!(brief(&run(&r, &relaxed, 1, 2)), vec![], "in a row: the cold reading breaks it");
    let in_a_row: Vec<(usize, String)> = ["hot", "cold", "hot", "hot", "hot"]
        .iter()
        .enumerate()
        .map(|(i, k)| (0, ev(i as Millis * 10, "k", k, 0.0)))
        .collect();
    let alerts = run(&r, &in_a_row, 1, 2);
    assert_eq!(brief(&alerts), vec![("k".into(), 20, 40)]);
    assert_eq!(alerts[0].evidence.len(), 3);
}

#[test]
fn skip_past_last_row_and_max_partial() {
    let r = rule(Some(1000), vec![step("x", 0, Some("x")), step("y", 0, Some("y"))], 64);
    let events: Vec<(usize, String)> =
        ["x", "x", "y", "x", "y"].iter().enumerate().map(|(i, k)| (0, ev(i as Millis, "k", k, 0.0))).collect();
    // x0 x1 y2 completes (x0, y2) and discards x1's match; x3 y4 is the next one.
    assert_eq!(brief(&run(&r, &events, 1, 1)), vec![("k".into(), 0, 2), ("k".into(), 3, 4)]);
    // With room for one partial match, the oldest (x0) is dropped for x1.
    let r1 = rule(Some(1000), vec![step("x", 0, Some("x")), step("y", 0, Some("y"))], 1);
    assert_eq!(brief(&run(&r1, &events, 1, 1)), vec![("k".into(), 1, 2), ("k".into(), 3, 4)]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Same input, same alerts, for any worker count and batch size, and for any
    /// interleaving of the two streams' (individually ordered) inputs.
    #[test]
    fn alerts_do_not_depend_on_workers_batches_or_stream_interleaving(
        rows in prop::collection::vec((0usize..2, 0u8..4, 0i64..40, 0u8..3), 1..60),
        workers in 1usize..4,
        batch in 1usize..8,
        mix_seed in any::<u64>(),
    ) {
        let mut not_c = step("c", 1, Some("c"));
        not_c.negated = true;
        not_c.within_ms = Some(30);
        let r = rule(Some(60), vec![step("a", 0, Some("a")), step("b", 1, Some("b")), not_c], 8);
        let kinds = ["a", "b", "c"];
        // Each stream's rows in time order (out-of-orderness 0: nothing late).
        let mut per_stream: [Vec<String>; 2] = [Vec::new(), Vec::new()];
        let mut t = [0i64; 2];
        for (s, key, dt, kind) in rows {
            t[s] += dt;
            per_stream[s].push(ev(t[s], &format!("k{key}"), kinds[kind as usize], 0.0));
        }
        let sequential: Vec<(usize, String)> =
            per_stream.iter().enumerate().flat_map(|(s, v)| v.iter().map(move |p| (s, p.clone()))).collect();
        let reference = run(&r, &sequential, 1, 1);
        // Interleave the streams pseudo-randomly.
        let (mut i, mut j, mut x) = (0, 0, mix_seed | 1);
        let mut mixed = Vec::new();
        while i < per_stream[0].len() || j < per_stream[1].len() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            if j >= per_stream[1].len() || (i < per_stream[0].len() && x % 2 == 0) {
                mixed.push((0, per_stream[0][i].clone())); i += 1;
            } else {
                mixed.push((1, per_stream[1][j].clone())); j += 1;
            }
        }
        let other = run(&r, &mixed, workers, batch);
        prop_assert_eq!(brief(&reference), brief(&other));
        let ids = |a: &[Alert]| a.iter().map(|a| a.alert_id.clone()).collect::<Vec<_>>();
        prop_assert_eq!(ids(&reference), ids(&other));
    }
}

#[test]
fn a_barrier_does_not_carry_the_frontier_past_rows_a_sequence_holds() {
    // Stream b has not been heard from, so a's rows wait for its watermark, while the
    // frontier counts only streams heard from: each worker lowers the barrier's frontier
    // to the earliest row it holds, so the case stage does not pass alerts still to come.
    let r = rule(Some(60_000), vec![step("x", 0, Some("x")), step("y", 1, Some("y"))], 64);
    let plan = Arc::new(Plan { streams: vec![stream("a", 0), stream("b", 0)], rules: vec![Arc::new(r)] });
    let options = PipelineOptions { workers: 2, batch_size: 3, queue_depth: 4, ..Default::default() };
    let (mut p, rx) = Pipeline::start(plan, options);
    for (i, t) in (10_000..=200_000).step_by(1000).enumerate() {
        p.push(0, ev(t, &format!("k{}", i % 5), "x", 1.0).as_bytes()).expect("push");
    }
    p.barrier(1).expect("barrier");
    assert!(p.frontier() > 100_000, "the pipeline's own frontier is far ahead: {}", p.frontier());
    let mut frontier = Millis::MAX;
    let mut seen = 0;
    while seen < 2 {
        if let Output::Barrier { watermark, .. } = rx.recv().expect("output") {
            frontier = frontier.min(watermark);
            seen += 1;
        }
    }
    assert_eq!(frontier, 10_000, "the earliest held row");
    drop(rx);
}

/// Runs (stream, split, payload) triples in order, each stream read from `splits` splits.
fn run_splits(rule: &RulePlan, events: &[(usize, usize, String)], splits: usize, workers: usize) -> Vec<Alert> {
    let plan = Arc::new(Plan { streams: vec![stream("a", 0), stream("b", 0)], rules: vec![Arc::new(rule.clone())] });
    let options = PipelineOptions { workers, batch_size: 3, queue_depth: 4, ..Default::default() };
    let (mut p, rx) = Pipeline::start(plan, options);
    p.declare_splits(0, splits);
    p.declare_splits(1, splits);
    let collector = std::thread::spawn(move || {
        rx.into_iter().filter_map(|o| if let Output::Alerts(a) = o { Some(a) } else { None }).flatten().collect()
    });
    let mut offsets = vec![0i64; 2 * splits];
    for (s, split, payload) in events {
        let offset = &mut offsets[s * splits + split];
        p.push_split(*s, *split, payload.as_bytes(), *offset).expect("push");
        *offset += 1;
    }
    p.finish().expect("finish");
    let mut alerts: Vec<Alert> = collector.join().expect("collector");
    alerts.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    alerts
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Each stream is a topic of 3 partitions, keys spread over them as a keyed producer
    /// does (each partition in time order): whatever order a consumer reads the six
    /// partitions in, the sequence raises the same alerts as reading them one after the
    /// other from a single partition.
    #[test]
    fn alerts_do_not_depend_on_the_order_kafka_partitions_are_read_in(
        rows in prop::collection::vec((0usize..2, 0u8..6, 0i64..40, 0u8..3), 1..80),
        workers in 1usize..4,
        mix_seed in any::<u64>(),
    ) {
        const PARTITIONS: usize = 3;
        let mut not_c = step("c", 1, Some("c"));
        not_c.negated = true;
        not_c.within_ms = Some(30);
        let r = rule(Some(60), vec![step("a", 0, Some("a")), step("b", 1, Some("b")), not_c], 8);
        let kinds = ["a", "b", "c"];
        // Per (stream, partition): rows in time order; a key always goes to one partition.
        let mut queues: Vec<Vec<String>> = vec![Vec::new(); 2 * PARTITIONS];
        let mut t = [0i64; 2];
        for (s, key, dt, kind) in rows {
            t[s] += dt;
            let partition = usize::from(key) % PARTITIONS;
            queues[s * PARTITIONS + partition].push(ev(t[s], &format!("k{key}"), kinds[kind as usize], 0.0));
        }
        // Every partition ends with a row past every deadline (as a live topic moves on),
        // so no empty partition holds its stream's watermark back in one run and not the other.
        let end = t[0].max(t[1]) + 1000;
        for (q, queue) in queues.iter_mut().enumerate() {
            queue.push(ev(end, &format!("tick{q}"), "z", 0.0));
        }
        let single: Vec<(usize, usize, String)> = (0..2)
            .flat_map(|s| {
                let mut rows: Vec<(i64, String)> = (0..PARTITIONS)
                    .flat_map(|p| queues[s * PARTITIONS + p].iter().cloned())
                    .map(|e| (serde_json::from_str::<serde_json::Value>(&e).expect("json")["ts"].as_i64().expect("ts"), e))
                    .collect();
                rows.sort_by_key(|(ts, _)| *ts);
                rows.into_iter().map(move |(_, e)| (s, 0, e))
            })
            .collect();
        let reference = run_splits(&r, &single, 1, 1);
        // Read the six partitions in a pseudo-random interleaving.
        let mut next = vec![0usize; queues.len()];
        let mut x = mix_seed | 1;
        let mut mixed = Vec::new();
        while let Some(q) = {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            let open: Vec<usize> = (0..queues.len()).filter(|&q| next[q] < queues[q].len()).collect();
            (!open.is_empty()).then(|| open[(x % open.len() as u64) as usize])
        } {
            mixed.push((q / PARTITIONS, q % PARTITIONS, queues[q][next[q]].clone()));
            next[q] += 1;
        }
        let other = run_splits(&r, &mixed, PARTITIONS, workers);
        prop_assert_eq!(brief(&reference), brief(&other));
        let ids = |a: &[Alert]| a.iter().map(|a| a.alert_id.clone()).collect::<Vec<_>>();
        prop_assert_eq!(ids(&reference), ids(&other));
    }
}
