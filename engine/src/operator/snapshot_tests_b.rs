//! Snapshots of window and sequence operators: an operator restored from a snapshot taken
//! at any cut of the input, into one worker or into two (keys split as the exchange splits
//! them), raises exactly the alerts an uninterrupted operator raises from the cut on.

use std::ops::Range;
use std::sync::Arc;

use arrow::record_batch::RecordBatch;

use crate::alert::{Alert, AlertState};
use crate::decode::Decoder;
use crate::error::EngineError;
use crate::keys::partition_of;
use crate::operator::{Operator, build};
use crate::plan::{AggFunc, Aggregate, RuleKind, RuleMeta, RulePlan, SequenceStep, WindowPlan, WindowShape};
use crate::rowexpr::{BinOp, RowExpr, Scalar};
use crate::schema::StreamDef;
use crate::state::KeyStates;
use crate::testutil::{ev, predicate, stream, window};
use crate::time::{Millis, Observed, WATERMARK_START, WatermarkTracker};

const S: Millis = 1000;

/// One event as the ingest stage hands it over.
struct Row {
    stream: usize,
    /// Its row in its stream's batch.
    row: usize,
    time: Millis,
    /// Its stream's watermark after it.
    watermark: Millis,
    key: String,
}

/// The decoded input: one batch per stream, and the events in input order.
pub(crate) struct Rows {
    batches: Vec<RecordBatch>,
    events: Vec<Row>,
    /// Per stream: its largest event time (the end of a bounded input moves it there).
    max_time: Vec<Millis>,
}

/// A rule and its input, (stream, payload) in input order.
pub(crate) struct Case {
    name: &'static str,
    streams: Vec<Arc<StreamDef>>,
    rule: Arc<RulePlan>,
    pub(crate) events: Vec<(usize, String)>,
    pub(crate) batch_size: usize,
}

impl Case {
    pub(crate) fn op(&self) -> Box<dyn Operator> {
        build(self.rule.clone(), &self.streams)
    }

    pub(crate) fn decode(&self) -> Rows {
        let mut decoders: Vec<Decoder> = self.streams.iter().map(|s| Decoder::new(s.clone(), 16)).collect();
        let mut trackers: Vec<WatermarkTracker> =
            self.streams.iter().map(|s| WatermarkTracker::new(s.max_out_of_orderness_ms)).collect();
        let mut counts = vec![0; self.streams.len()];
        let mut max_time = vec![WATERMARK_START; self.streams.len()];
        let mut events = Vec::new();
        for (s, payload) in &self.events {
            let time = decoders[*s].parse(payload.as_bytes()).expect("a valid test payload");
            decoders[*s].commit();
            let watermark = match trackers[*s].observe(time) {
                Observed::OnTime(wm) => wm,
                late => panic!("{}: test rows are on time: {payload} is {late:?}", self.name),
            };
            let json: serde_json::Value = serde_json::from_str(payload).expect("json");
            let key = json["id"].as_str().expect("id").to_string();
            events.push(Row { stream: *s, row: counts[*s], time, watermark, key });
            counts[*s] += 1;
            max_time[*s] = max_time[*s].max(time);
        }
        let batches = decoders.iter_mut().map(|d| d.finish().batch).collect();
        Rows { batches, events, max_time }
    }
}

/// One worker of `workers`, or the only one.
pub(crate) type Part = Option<(usize, usize)>;

fn owns(part: Part, key: &str) -> bool {
    part.is_none_or(|(worker, workers)| partition_of(key, workers) == worker)
}

/// Feeds events `range` to `op`: runs of one stream's events, at most `batch_size` long
/// (cut from the start of the range), each with the rows of `part`'s keys only; a batch
/// with none of them is its stream's watermark.
pub(crate) fn feed(
    op: &mut dyn Operator,
    rows: &Rows,
    range: Range<usize>,
    batch_size: usize,
    part: Part,
) -> Vec<Alert> {
    let mut out = Vec::new();
    let mut start = range.start;
    while start < range.end {
        let stream = rows.events[start].stream;
        let mut end = start + 1;
        while end < range.end && end - start < batch_size && rows.events[end].stream == stream {
            end += 1;
        }
        let end_watermark = rows.events[end - 1].watermark;
        let picked: Vec<&Row> = rows.events[start..end].iter().filter(|r| owns(part, &r.key)).collect();
        if picked.is_empty() {
            op.advance_stream(stream, end_watermark, &mut out).expect("advance");
        } else {
            let picked: Vec<(usize, Millis, Millis)> = picked.iter().map(|r| (r.row, r.time, r.watermark)).collect();
            crate::operator::threshold::snapshot_tests_a::process_picked(
                op,
                stream,
                &rows.batches[stream],
                &picked,
                end_watermark,
                &mut out,
            );
        }
        start = end;
    }
    out
}

/// What the pipeline does at restore before any row: each stream's watermark at the cut,
/// for the streams that had one.
fn resend_watermarks(op: &mut dyn Operator, rows: &Rows, cut: usize) -> Vec<Alert> {
    let mut out = Vec::new();
    for s in 0..rows.batches.len() {
        if let Some(r) = rows.events[..cut].iter().rev().find(|r| r.stream == s) {
            op.advance_stream(s, r.watermark, &mut out).expect("advance");
        }
    }
    out
}

/// The end of a bounded input: each stream's watermark moves to its largest event time,
/// then the input ends.
fn finish(op: &mut dyn Operator, rows: &Rows) -> Vec<Alert> {
    let mut out = Vec::new();
    for (s, &max) in rows.max_time.iter().enumerate() {
        if max != WATERMARK_START {
            op.advance_stream(s, max, &mut out).expect("advance");
        }
    }
    op.end_of_input(&mut out).expect("end of input");
    out
}

fn sorted(mut alerts: Vec<Alert>) -> Vec<Alert> {
    alerts.sort_by(|a, b| {
        (a.event_time, &a.key, a.state, a.notification, &a.alert_id).cmp(&(
            b.event_time,
            &b.key,
            b.state,
            b.notification,
            &b.alert_id,
        ))
    });
    alerts
}

fn brief(alerts: &[Alert]) -> Vec<(String, AlertState, Millis, u32)> {
    alerts.iter().map(|a| (a.key.clone(), a.state, a.event_time, a.notification)).collect()
}

/// Restores `states` into `workers` fresh operators (each gets the keys it owns), keys in
/// reverse order of writing (any order must do), and re-sends the watermarks at `cut`.
fn restored(case: &Case, rows: &Rows, states: &KeyStates, workers: usize, cut: usize) -> Vec<Box<dyn Operator>> {
    let mut ops: Vec<Box<dyn Operator>> = (0..workers).map(|_| case.op()).collect();
    for (key, record) in states.keys.iter().rev() {
        ops[partition_of(key, workers)].restore(key, record).expect("restore");
    }
    for op in &mut ops {
        assert_eq!(resend_watermarks(op.as_mut(), rows, cut), vec![], "{}: re-sent watermarks fire nothing", case.name);
    }
    ops
}

/// Runs `ops` (worker `w` of `ops.len()`) over `range` and the end: all alerts together
/// and the partial matches dropped.
fn run_rest(case: &Case, rows: &Rows, ops: &mut [Box<dyn Operator>], range: Range<usize>) -> (Vec<Alert>, u64) {
    let workers = ops.len();
    let mut alerts = Vec::new();
    for (w, op) in ops.iter_mut().enumerate() {
        let part = (workers > 1).then_some((w, workers));
        alerts.extend(feed(op.as_mut(), rows, range.clone(), case.batch_size, part));
        alerts.extend(finish(op.as_mut(), rows));
    }
    (sorted(alerts), ops.iter().map(|o| o.partials_dropped()).sum())
}

/// What [`check_cuts`] found.
struct Checked {
    /// The uninterrupted run's alerts.
    all: Vec<Alert>,
    /// Per cut: the uninterrupted run's alerts before it, and whether the restored state
    /// changed what came after it (a fresh operator raised other alerts).
    cuts: Vec<(Vec<Alert>, bool)>,
    /// Partial matches the uninterrupted run dropped.
    dropped: u64,
}

impl Checked {
    /// The cuts at which state mattered.
    fn mattered(&self) -> impl Iterator<Item = usize> + '_ {
        self.cuts.iter().enumerate().filter(|(_, (_, m))| *m).map(|(c, _)| c)
    }

    /// Cuts with an episode that fired before them and resolved after them.
    fn episodes_across(&self) -> Vec<usize> {
        let resolved_after = |cut: usize, id: &str| {
            self.all.iter().any(|a| a.alert_id == id && a.state == AlertState::Resolved)
                && !self.cuts[cut].0.iter().any(|a| a.alert_id == id && a.state == AlertState::Resolved)
        };
        (0..self.cuts.len())
            .filter(|&c| self.cuts[c].1)
            .filter(|&c| self.cuts[c].0.iter().any(|a| a.state == AlertState::Firing && resolved_after(c, &a.alert_id)))
            .collect()
    }
}

/// Checks every cut of `case`: snapshots of one worker restored into one and into two, and
/// of two workers restored into one and into two, give the uninterrupted run's alerts from
/// the cut on (every field: ids, states, times, values, evidence) and drop as many partial
/// matches; asserts that some cut carries state that changes what comes after it.
fn check_cuts(case: &Case) -> Checked {
    let rows = case.decode();
    let n = rows.events.len();
    let mut whole = case.op();
    let mut all = feed(whole.as_mut(), &rows, 0..n, case.batch_size, None);
    all.extend(finish(whole.as_mut(), &rows));
    let all = sorted(all);
    let dropped = whole.partials_dropped();
    let mut cuts = Vec::new();
    for cut in 0..=n {
        // Uninterrupted: the same batches, the cut just a batch boundary.
        let mut op = case.op();
        let before = feed(op.as_mut(), &rows, 0..cut, case.batch_size, None);
        let mut rest = feed(op.as_mut(), &rows, cut..n, case.batch_size, None);
        rest.extend(finish(op.as_mut(), &rows));
        let expected = sorted(rest);
        assert_eq!(sorted([before.clone(), expected.clone()].concat()), all, "{}: batching at {cut}", case.name);
        assert_eq!(op.partials_dropped(), dropped, "{}: batching at {cut}", case.name);

        let mut op = case.op();
        assert_eq!(feed(op.as_mut(), &rows, 0..cut, case.batch_size, None), before);
        let mut one = KeyStates::default();
        op.snapshot(&mut one).expect("snapshot");
        let mut two = KeyStates::default();
        let mut before_two = Vec::new();
        for w in 0..2 {
            let mut op = case.op();
            before_two.extend(feed(op.as_mut(), &rows, 0..cut, case.batch_size, Some((w, 2))));
            op.snapshot(&mut two).expect("snapshot");
        }
        assert_eq!(sorted(before_two), sorted(before.clone()), "{}: two workers before {cut}", case.name);
        let keys = |s: &KeyStates| {
            let mut keys: Vec<String> = s.keys.iter().map(|(k, _)| k.clone()).collect();
            keys.sort();
            keys
        };
        // (The partials-dropped counter may ride on a key with no state: see the sequence
        // operator's records.)
        if op.partials_dropped() == 0 {
            assert_eq!(keys(&one), keys(&two), "{}: keys with state at {cut}", case.name);
        }

        for (from, into, states) in [(1, 1, &one), (1, 2, &one), (2, 1, &two), (2, 2, &two)] {
            let mut ops = restored(case, &rows, states, into, cut);
            let (got, got_dropped) = run_rest(case, &rows, &mut ops, cut..n);
            assert_eq!(
                got,
                expected,
                "{}: cut at {cut}, {from} worker(s) restored into {into}:\n got {:?}\nwant {:?}",
                case.name,
                brief(&got),
                brief(&expected)
            );
            assert_eq!(got_dropped, dropped, "{}: partials dropped, cut at {cut}, {from} into {into}", case.name);
        }
        let mut fresh = [case.op()];
        resend_watermarks(fresh[0].as_mut(), &rows, cut);
        let mattered = run_rest(case, &rows, &mut fresh, cut..n).0 != expected;
        assert!(!mattered || !one.is_empty(), "{}: state mattered at {cut} but none was written", case.name);
        cuts.push((before, mattered));
    }
    let checked = Checked { all, cuts, dropped };
    assert!(checked.mattered().next().is_some(), "{}: no cut carries state that matters", case.name);
    checked
}

fn with_renotify(mut rule: RulePlan, every: Millis) -> RulePlan {
    rule.meta = Arc::new(RuleMeta { renotify_ms: Some(every), ..(*rule.meta).clone() });
    rule
}

/// A window rule on [`stream`] with `shape`, `aggregates` and `condition`.
fn window_rule(shape: WindowShape, aggregates: Vec<Aggregate>, condition: &str) -> RulePlan {
    let result_schema = crate::testutil::result_schema(&aggregates);
    let mut rule = window(10 * S, 10 * S, "count > 0");
    rule.kind = RuleKind::Window(WindowPlan {
        shape,
        aggregates,
        condition: predicate(condition, &result_schema),
        result_schema,
    });
    rule
}

fn window_case(name: &'static str, ooo: Millis, rule: RulePlan, events: Vec<String>, batch_size: usize) -> Case {
    Case {
        name,
        streams: vec![stream(ooo, None)],
        rule: Arc::new(rule),
        events: events.into_iter().map(|e| (0, e)).collect(),
        batch_size,
    }
}

#[test]
fn sliding_window_panes_and_renotified_episodes_cross_the_cut() {
    // 30 s windows every 10 s; rows every 2.5 s over three keys, every fifth 4 s out of
    // order. "a" alternates blocks of high and low values (episodes fire and resolve),
    // "c" stays over (re-notified every 20 s), "b" wanders.
    let events: Vec<String> = (0..60)
        .map(|i: i64| {
            let t = i * 2500 - if i % 5 == 3 { 4 * S } else { 0 };
            let key = ["a", "b", "c"][i as usize % 3];
            let value = match key {
                "a" if (i / 12) % 2 == 0 => 9.0,
                "a" => 1.0,
                "b" => (i % 7) as f64,
                _ => 20.0 - (i % 13) as f64,
            };
            ev(t, key, value)
        })
        .collect();
    let rule = with_renotify(window(30 * S, 10 * S, "sum_value > 30"), 20 * S);
    let checked = check_cuts(&window_case("sliding window", 5 * S, rule, events, 2));
    assert!(checked.all.iter().any(|a| a.key == "c" && a.notification >= 3), "c is re-notified");
    assert!(!checked.episodes_across().is_empty(), "an episode fires before a cut and resolves after it");
    assert!(checked.mattered().count() > 40, "open panes matter at most cuts");
}

#[test]
fn session_windows_open_merged_and_split_by_max_across_the_cut() {
    // Sessions: gap 6 s, at most 40 s; out-of-orderness 3 s.
    let mut events = Vec::new();
    for t in [0, 2, 4, 6, 8] {
        events.push(ev(t * S, "a", 1.0));
    }
    events.push(ev(9 * S, "b", 5.0));
    events.push(ev(17 * S, "b", 5.0));
    events.push(ev(20 * S, "a", 2.0));
    events.push(ev(23 * S, "a", 2.0));
    events.push(ev(25 * S, "b", 5.0));
    // 30 and 36 are a gap apart; 33 (on time: the watermark is 33) joins them into one.
    events.push(ev(30 * S, "a", 3.0));
    events.push(ev(36 * S, "a", 4.0));
    events.push(ev(33 * S, "a", 5.0));
    for t in (50..54).step_by(2) {
        events.push(ev(t * S, "b", 6.0));
    }
    // A long burst: split by `max`.
    for t in (60..120).step_by(2) {
        events.push(ev(t * S, "a", (t % 7) as f64));
        if t % 10 == 0 {
            events.push(ev(t * S + 500, "b", 1.0));
        }
    }
    events.push(ev(200 * S, "z", 0.0));
    let shape = WindowShape::Session { gap_ms: 6 * S, max_ms: 40 * S };
    let aggregates = vec![
        Aggregate::new(AggFunc::Count, None, "count"),
        Aggregate::new(AggFunc::Sum, Some(2), "sum_value"),
        Aggregate::new(AggFunc::Last, Some(2), "last_value"),
    ];
    let rule = window_rule(shape, aggregates, "count >= 3");
    let checked = check_cuts(&window_case("session window", 3 * S, rule, events, 3));
    let a: Vec<_> = checked.all.iter().filter(|x| x.key == "a" && x.state == AlertState::Firing).collect();
    assert!(a.iter().any(|x| x.values["count"] == 3), "the bridged session: {:?}", brief(&checked.all));
    assert!(!checked.episodes_across().is_empty(), "an episode fires before a cut and resolves after it");
}

#[test]
fn count_window_half_full_with_held_rows_across_the_cut() {
    // 4 events a window, a new one every 2; rows wait for the 4 s watermark lag, every
    // fourth 3 s out of order.
    let events: Vec<String> = (0..48)
        .map(|i: i64| {
            let t = i * 1500 - if i % 4 == 2 { 3 * S } else { 0 };
            let key = if i % 3 == 0 { "b" } else { "a" };
            ev(t, key, ((i * 5) % 11) as f64)
        })
        .collect();
    let shape = WindowShape::Count { size: 4, slide: 2, max_ms: 30 * S };
    let aggregates = vec![
        Aggregate::new(AggFunc::Count, None, "count"),
        Aggregate::new(AggFunc::Sum, Some(2), "sum_value"),
        Aggregate::new(AggFunc::First, Some(2), "first_value"),
        Aggregate::new(AggFunc::Last, Some(2), "last_value"),
    ];
    let rule = window_rule(shape, aggregates, "sum_value > 20");
    let checked = check_cuts(&window_case("count window", 4 * S, rule, events, 2));
    assert!(checked.all.len() >= 4, "{:?}", brief(&checked.all));
    assert!(!checked.episodes_across().is_empty(), "an episode fires before a cut and resolves after it");
    assert!(checked.mattered().count() > 30, "held rows and open panes matter at most cuts");
}

#[test]
fn percentile_median_stddev_and_friends_survive_the_cut() {
    let s = stream(5 * S, None);
    let schema = s.arrow_schema();
    let pct = |name: &str, fraction: f64| Aggregate { fraction, ..Aggregate::new(AggFunc::Percentile, Some(2), name) };
    let aggregates = vec![
        Aggregate::new(AggFunc::Count, None, "count"),
        pct("p90", 0.9),
        pct("median", 0.5),
        Aggregate::new(AggFunc::Stddev, Some(2), "sd"),
        Aggregate::new(AggFunc::First, Some(2), "first"),
        Aggregate::new(AggFunc::Last, Some(2), "last"),
        Aggregate::new(AggFunc::Avg, Some(2), "avg"),
        Aggregate::new(AggFunc::Min, Some(2), "min"),
        Aggregate::new(AggFunc::Max, Some(2), "max"),
        Aggregate::new(AggFunc::CountDistinct, Some(2), "distinct"),
        Aggregate { filter: Some(predicate("value > 5", &schema)), ..Aggregate::new(AggFunc::CountIf, None, "hot") },
    ];
    let rule = window_rule(WindowShape::Time { size_ms: 20 * S, slide_ms: 20 * S }, aggregates, "p90 > 8 AND hot >= 2");
    let events: Vec<String> = (0..50)
        .map(|i: i64| {
            let t = i * 1700 - if i % 6 == 4 { 4 * S } else { 0 };
            let key = if i % 2 == 0 { "a" } else { "b" };
            // Spells of high and of low values: episodes fire and resolve.
            let spread = if (i / 12) % 2 == 0 { 13 } else { 5 };
            ev(t, key, ((i * 37) % spread) as f64 + 0.25)
        })
        .collect();
    let checked = check_cuts(&window_case("percentile", 5 * S, rule, events, 3));
    let fired = checked.all.iter().find(|a| a.state == AlertState::Firing).expect("fires");
    for name in ["p90", "median", "sd", "first", "last", "hot", "distinct"] {
        assert!(!fired.values[name].is_null(), "{name} in {:?}", fired.values);
    }
    assert!(!checked.episodes_across().is_empty(), "an episode fires before a cut and resolves after it");
}

// The sequence tests' stream, event and step helpers.
use crate::operator::sequence_tests::{ev as sev, step, stream as seq_stream};

pub(crate) fn seq_case(
    name: &'static str,
    within_ms: Option<Millis>,
    steps: Vec<SequenceStep>,
    events: Vec<(usize, String)>,
) -> Case {
    let rule = crate::operator::sequence_tests::rule(within_ms, steps, 3);
    Case {
        name,
        streams: vec![seq_stream("a", 2 * S), seq_stream("b", 0)],
        rule: Arc::new(rule),
        events,
        batch_size: 2,
    }
}

/// Merges per-stream events (when read, payload) into input order with stream b read
/// `lag` later than stream a, so a's rows wait in Pending for b's watermark.
fn lagged(a: Vec<(Millis, String)>, b: Vec<(Millis, String)>, lag: Millis) -> Vec<(usize, String)> {
    let mut all: Vec<(Millis, usize, String)> =
        a.into_iter().map(|(t, p)| (t, 0, p)).chain(b.into_iter().map(|(t, p)| (t + lag, 1, p))).collect();
    all.sort_by_key(|(t, s, _)| (*t, *s));
    all.into_iter().map(|(_, s, p)| (s, p)).collect()
}

#[test]
fn two_stream_sequence_with_held_rows_and_a_reference_to_an_earlier_step() {
    // high on a, then low on b with value < high.value * 0.8, within 30 s; three partial
    // matches at most per key (a key's highs come every 4 s: some are dropped).
    let mut low = step("low", 1, Some("p"));
    low.refs = Some(RowExpr::Binary(
        Box::new(RowExpr::Column { step: None, column: 3 }),
        BinOp::Lt,
        Box::new(RowExpr::Binary(
            Box::new(RowExpr::Column { step: Some(0), column: 3 }),
            BinOp::Multiply,
            Box::new(RowExpr::Literal(Scalar::Float(0.8))),
        )),
    ));
    let a: Vec<(Millis, String)> = (0..40)
        .flat_map(|i: i64| {
            // Every fifth 1 s out of order (read in the order of `i`).
            let t = i * 2 * S - if i % 5 == 2 { S } else { 0 };
            let (key, value) = (["k1", "k2"][i as usize % 2], 10.0 + ((i * 3) % 5) as f64 * 2.0);
            // Every seventh has a twin of the same key and time: arrival decides which
            // partial match is older (and completes first).
            let twin = (i % 7 == 0).then(|| (i * 2 * S, sev(t, key, "p", value + 5.0)));
            std::iter::once((i * 2 * S, sev(t, key, "p", value))).chain(twin)
        })
        .collect();
    let b: Vec<(Millis, String)> = (0..27)
        .map(|i: i64| {
            let t = i * 3 * S + 500;
            (t, sev(t, ["k2", "k1", "k3"][i as usize % 3], if i % 4 == 3 { "q" } else { "p" }, ((i * 7) % 13) as f64))
        })
        .collect();
    let mut events = lagged(a, b, 15 * S);
    events.push((0, sev(200 * S, "end", "p", 0.0)));
    events.push((1, sev(200 * S, "end", "q", 0.0)));
    let case = seq_case("high then low", Some(30 * S), vec![step("high", 0, Some("p")), low], events);
    let checked = check_cuts(&case);
    assert!(checked.all.len() >= 5, "{:?}", brief(&checked.all));
    assert!(checked.dropped > 0, "max_partial drops partial matches");
    for alert in &checked.all {
        let (high, low) = (alert.values["high.value"].as_f64().unwrap(), alert.values["low.value"].as_f64().unwrap());
        assert!(low < high * 0.8, "{:?}", alert.values);
        assert_eq!(alert.evidence.len(), 2);
    }
    assert!(checked.mattered().count() > 50, "held rows and partial matches matter at most cuts");
}

#[test]
fn trailing_not_deadline_pending_across_the_cut() {
    // dig on a, then no permit on b within 10 s: fires at the deadline.
    let mut permit = step("permit", 1, Some("ok"));
    permit.negated = true;
    permit.within_ms = Some(10 * S);
    let mut a = Vec::new();
    let mut b = Vec::new();
    for i in 0..16i64 {
        let t = i * 4 * S;
        let key = format!("z{}", i % 4);
        a.push((t, sev(t, &key, "dig", i as f64)));
        // Half the digs get their permit in time, a quarter too late.
        let after = match i % 4 {
            0 | 1 => Some(6 * S),
            2 => Some(11 * S),
            _ => None,
        };
        if let Some(after) = after {
            b.push((t + after, sev(t + after, &key, "ok", 0.0)));
        }
        b.push((t + 2 * S, sev(t + 2 * S, "noise", "x", 0.0)));
    }
    b.sort_by_key(|(t, _)| *t);
    let mut events = lagged(a, b, 3 * S);
    events.push((0, sev(300 * S, "end", "x", 0.0)));
    events.push((1, sev(300 * S, "end", "x", 0.0)));
    let case = seq_case("trailing not", None, vec![step("dig", 0, Some("dig")), permit], events);
    let checked = check_cuts(&case);
    // z2 (permit 11 s after) and z3 (none) fire at their deadlines.
    assert_eq!(checked.all.len(), 8, "{:?}", brief(&checked.all));
    assert!(checked.all.iter().all(|a| a.event_time == a.episode_start + 10 * S && a.evidence.len() == 1));
    assert!(checked.mattered().count() > 20, "pending deadlines matter at most cuts");
}

#[test]
fn times_count_half_done_across_the_cut() {
    // Three hot readings on a, then a cool one on b, within 60 s.
    let mut hot = step("hot", 0, Some("hot"));
    hot.times = 3;
    let a: Vec<(Millis, String)> = (0..36)
        .map(|i: i64| {
            let t = i * 2 * S;
            let kind = if i % 5 == 4 { "cold" } else { "hot" };
            (t, sev(t, ["m1", "m2", "m3"][i as usize % 3], kind, i as f64))
        })
        .collect();
    let b: Vec<(Millis, String)> = (0..12)
        .map(|i: i64| {
            let t = i * 6 * S + 1500;
            (t, sev(t, ["m1", "m2", "m3"][(i as usize / 2) % 3], "cool", -(i as f64)))
        })
        .collect();
    let mut events = lagged(a, b, 5 * S);
    events.push((0, sev(400 * S, "end", "x", 0.0)));
    events.push((1, sev(400 * S, "end", "x", 0.0)));
    let case = seq_case("times", Some(60 * S), vec![hot, step("cool", 1, Some("cool"))], events);
    let checked = check_cuts(&case);
    assert!(checked.all.len() >= 3, "{:?}", brief(&checked.all));
    for alert in &checked.all {
        let steps: Vec<&str> = alert.evidence.iter().map(|e| e["_step"].as_str().unwrap()).collect();
        assert_eq!(steps, ["hot", "hot", "hot", "cool"]);
    }
    assert!(checked.mattered().count() > 20, "partial counts matter at most cuts");
}

#[test]
fn a_garbage_or_mismatched_record_is_bad_state_not_a_panic() {
    let win = window_case("w", 0, window(30 * S, 10 * S, "sum_value > 30"), vec![], 1);
    let pct = window_case(
        "p",
        0,
        window_rule(
            WindowShape::Time { size_ms: 20 * S, slide_ms: 20 * S },
            vec![Aggregate { fraction: 0.5, ..Aggregate::new(AggFunc::Percentile, Some(2), "m") }],
            "m > 1",
        ),
        vec![],
        1,
    );
    let seq = seq_case("s", Some(S), vec![step("x", 0, None), step("y", 1, None)], vec![]);
    // A real record of each.
    let record_of = |case: &Case, events: Vec<(usize, String)>| {
        let case =
            Case { name: case.name, streams: case.streams.clone(), rule: case.rule.clone(), events, batch_size: 1 };
        let rows = case.decode();
        let mut op = case.op();
        feed(op.as_mut(), &rows, 0..rows.events.len(), 1, None);
        let mut states = KeyStates::default();
        op.snapshot(&mut states).expect("snapshot");
        assert_eq!(states.len(), 1);
        states.keys.remove(0).1
    };
    let win_record = record_of(&win, vec![(0, ev(S, "k", 1.0))]);
    let pct_record = record_of(&pct, vec![(0, ev(S, "k", 1.0))]);
    let seq_record = record_of(&seq, vec![(0, sev(S, "k", "x", 1.0))]);
    let is_bad = |case: &Case, bytes: &[u8]| match case.op().restore("k", bytes) {
        Err(EngineError::BadState { rule, key, .. }) => rule == case.rule.meta.id.as_ref() && key == "k",
        other => panic!("{}: {other:?}", case.name),
    };
    for case in [&win, &pct, &seq] {
        assert!(is_bad(case, &[0xff; 7]));
        assert!(is_bad(case, &[]));
    }
    for (case, record) in [(&win, &win_record), (&pct, &pct_record), (&seq, &seq_record)] {
        assert!(case.op().restore("k", record).is_ok(), "{}: its own record", case.name);
        assert!(is_bad(case, &record[..record.len() - 1]), "{}: a truncated record", case.name);
    }
    // Records of another rule's shape: other accumulators, another kind of operator.
    assert!(is_bad(&win, &pct_record));
    assert!(is_bad(&pct, &win_record));
    // Another operator's record may even decode: it must then be refused or harmless.
    for (case, record) in [(&seq, &win_record), (&win, &seq_record), (&pct, &seq_record)] {
        match case.op().restore("k", record) {
            Ok(()) | Err(EngineError::BadState { .. }) => {}
            Err(e) => panic!("{}: {e:?}", case.name),
        }
    }
}
