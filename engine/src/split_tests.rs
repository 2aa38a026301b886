//! Input read from several splits (Kafka partitions): the order in which the splits are
//! read changes no alert, and in restore mode ([`Pipeline::replay_split`]) a replay of
//! acknowledged input loses none, whatever order the splits are read in the second time.

use std::collections::BTreeSet;
use std::sync::Arc;

use proptest::prelude::*;

use crate::alert::{Alert, AlertState};
use crate::pipeline::{Output, Pipeline, PipelineOptions};
use crate::plan::{Plan, RuleKind, RulePlan, WindowShape};
use crate::testutil::{absence, alerts_of_splits, ev, stream, threshold, window};
use crate::time::Millis;

const S: Millis = 1000;

type AlertKey = (String, String, Millis, AlertState, u32);

fn identity(a: &Alert) -> AlertKey {
    let (_, key, at, state, n) = a.sort_key();
    (a.rule_id.to_string(), key.to_string(), at, state, n)
}

fn plan() -> Arc<Plan> {
    let s = stream(2 * S, None);
    let rules: Vec<RulePlan> = vec![
        threshold(&s, "value > 40", Some("value < 20"), 0),
        threshold(&s, "value > 60", None, 5 * S),
        window(20 * S, 10 * S, "count >= 3 AND delta_value > 10"),
        absence(15 * S, None),
        in_event_time_order(threshold(&s, "value > 50", None, 0), 3),
        counted(window(20 * S, 10 * S, "count >= 3 AND delta_value > 10"), 4, 2),
    ];
    let mut rules: Vec<RulePlan> = rules;
    // Distinct ids: the helpers name every rule of a kind alike.
    for (i, r) in rules.iter_mut().enumerate() {
        let mut meta = (*r.meta).clone();
        meta.id = format!("{}-{i}", meta.id).into();
        r.meta = Arc::new(meta);
    }
    Arc::new(Plan { streams: vec![s], rules: rules.into_iter().map(Arc::new).collect() })
}

/// `r` (a threshold) with `consecutive` and `order: event_time`.
fn in_event_time_order(mut r: RulePlan, consecutive: u32) -> RulePlan {
    if let RuleKind::Threshold(t) = &mut r.kind {
        t.consecutive = consecutive;
        t.event_time_order = true;
    }
    r
}

/// `r` (a window rule) over count windows of `size` events every `slide`.
fn counted(mut r: RulePlan, size: u32, slide: u32) -> RulePlan {
    if let RuleKind::Window(w) = &mut r.kind {
        w.shape = WindowShape::Count { size, slide, max_ms: 3600 * S };
    }
    r
}

/// Two splits of events, each in time order (so no row is late in any interleaving).
fn splits() -> impl Strategy<Value = [Vec<String>; 2]> {
    let split = |keys: &'static [&'static str]| {
        prop::collection::vec((0..3 * S, 0usize..keys.len(), 0u32..100), 5..60).prop_map(move |steps| {
            let mut ts = 0;
            steps
                .into_iter()
                .map(|(gap, k, v)| {
                    ts += gap;
                    ev(ts, keys[k], f64::from(v))
                })
                .collect::<Vec<_>>()
        })
    };
    (split(&["a", "b", "c"]), split(&["d", "e"])).prop_map(|(x, y)| [x, y])
}

/// Merges the splits in the order `picks` gives (true: split 1), the rest in turn.
fn interleave(splits: &[Vec<String>; 2], picks: &[bool]) -> Vec<(usize, i64)> {
    let mut next = [0usize; 2];
    let mut order = Vec::new();
    let mut picks = picks.iter().copied().chain(std::iter::repeat_n(false, usize::MAX));
    while next[0] < splits[0].len() || next[1] < splits[1].len() {
        let want = usize::from(picks.next().unwrap_or(false));
        let s = if next[want] < splits[want].len() { want } else { 1 - want };
        order.push((s, next[s] as i64));
        next[s] += 1;
    }
    order
}

/// The run before the crash: everything raised before a barrier after `acked_after`
/// payloads (that is what the sinks acknowledged), and everything the whole input raises.
struct Original {
    delivered: BTreeSet<AlertKey>,
    all: BTreeSet<AlertKey>,
    acked: [i64; 2],
    replay_until: Millis,
}

fn original(
    splits: &[Vec<String>; 2],
    order: &[(usize, i64)],
    acked_after: usize,
    options: PipelineOptions,
) -> Original {
    let workers = options.workers;
    let (mut p, rx) = Pipeline::start(plan(), options);
    p.declare_splits(0, 2);
    let (barrier_tx, barrier_rx) = crossbeam_channel::bounded(1);
    let collector = std::thread::spawn(move || {
        let (mut alerts, mut barriers) = (Vec::new(), 0);
        for o in rx {
            match o {
                Output::Alerts(a) => alerts.extend(a.iter().map(identity)),
                Output::Barrier { .. } => {
                    barriers += 1;
                    if barriers == workers {
                        barrier_tx.send(alerts.iter().cloned().collect::<BTreeSet<_>>()).expect("test waits");
                    }
                }
                Output::DeadLetter(d) => panic!("dead letter: {d:?}"),
                // Snapshots are the runtime's business.
                Output::Checkpoint(_) | Output::State { .. } => {}
                Output::RuleError { rule, message } => panic!("rule {rule}: {message}"),
            }
        }
        alerts.into_iter().collect::<BTreeSet<_>>()
    });
    let mut acked = [0i64; 2];
    for &(s, offset) in &order[..acked_after] {
        p.push_split(0, s, splits[s][offset as usize].as_bytes(), offset).expect("push");
        acked[s] = offset + 1;
    }
    let watermarks = p.barrier(1).expect("barrier");
    let replay_until = watermarks[0].min(p.frontier());
    // Nothing is pushed until every worker passed the barrier: what came before it is all
    // that was delivered when the process died.
    let delivered = barrier_rx.recv().expect("barrier passed");
    for &(s, offset) in &order[acked_after..] {
        p.push_split(0, s, splits[s][offset as usize].as_bytes(), offset).expect("push");
    }
    p.finish().expect("finish");
    Original { delivered, all: collector.join().expect("collector"), acked, replay_until }
}

/// The run after the crash: replays every split from its start, in `order`.
fn restored(
    splits: &[Vec<String>; 2],
    order: &[(usize, i64)],
    before: &Original,
    options: PipelineOptions,
) -> (BTreeSet<AlertKey>, u64) {
    let options = PipelineOptions { replay_until: vec![before.replay_until], ..options };
    let (mut p, rx) = Pipeline::start(plan(), options);
    p.declare_splits(0, 2);
    for (split, &acked) in before.acked.iter().enumerate() {
        if acked > 0 {
            p.replay_split(0, split, acked);
        }
    }
    let collector = std::thread::spawn(move || {
        let mut alerts = BTreeSet::new();
        for o in rx {
            if let Output::Alerts(a) = o {
                alerts.extend(a.iter().map(identity));
            }
        }
        alerts
    });
    for &(s, offset) in order {
        p.push_split(0, s, splits[s][offset as usize].as_bytes(), offset).expect("push");
    }
    let report = p.finish().expect("finish");
    (collector.join().expect("collector"), report.replay_suppressed)
}

/// Every alert, in full, of the splits read in `order`.
fn alerts_in_order(splits: &[Vec<String>; 2], order: &[(usize, i64)], options: PipelineOptions) -> Vec<String> {
    let rows = order.iter().map(|&(s, offset)| (s, splits[s][offset as usize].as_str(), offset));
    alerts_of_splits(plan(), 2, rows, options)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// How far one split runs ahead of the other (so how far the watermark has got when a
    /// row arrives) changes no alert.
    #[test]
    fn alerts_do_not_depend_on_the_order_splits_are_read_in(
        splits in splits(),
        picks_a in prop::collection::vec(any::<bool>(), 0..120),
        picks_b in prop::collection::vec(prop::bool::weighted(0.1), 0..120),
        workers in 1usize..4,
        batch in 1usize..32,
    ) {
        let options = PipelineOptions { workers, decoders: 0, batch_size: batch, queue_depth: 4, ..Default::default() };
        let a = alerts_in_order(&splits, &interleave(&splits, &picks_a), options.clone());
        let b = alerts_in_order(&splits, &interleave(&splits, &picks_b), options);
        prop_assert_eq!(a, b);
    }

    /// Whatever was not delivered before the crash is raised after it: one split may race
    /// ahead into new input while the other still replays what was acknowledged.
    #[test]
    fn a_replay_in_any_split_order_loses_no_alert(
        splits in splits(),
        picks_before in prop::collection::vec(any::<bool>(), 0..120),
        picks_after in prop::collection::vec(prop::bool::weighted(0.15), 0..120),
        acked_share in 0.0f64..1.0,
        workers in 1usize..4,
        decoders in 0usize..3,
        batch in 1usize..32,
    ) {
        let options = PipelineOptions { workers, decoders, batch_size: batch, queue_depth: 4, ..Default::default() };
        let order = interleave(&splits, &picks_before);
        let acked_after = ((order.len() as f64) * acked_share) as usize;
        let before = original(&splits, &order, acked_after, options.clone());
        // Mostly split 0 first: split 0 runs far into new input while split 1 replays.
        let (after, suppressed) = restored(&splits, &interleave(&splits, &picks_after), &before, options);

        let lost: Vec<_> = before.all.difference(&before.delivered).filter(|a| !after.contains(*a)).collect();
        prop_assert!(lost.is_empty(), "lost across the restart: {lost:?}");
        let invented: Vec<_> = after.difference(&before.all).collect();
        prop_assert!(invented.is_empty(), "the replay raised alerts the input does not: {invented:?}");
        let dropped: Vec<_> = before.all.difference(&after).collect();
        prop_assert_eq!(dropped.len() as u64, suppressed, "every alert missing from the replay was suppressed, and counted: {:?}, delivered {:?}, until {}", dropped, before.delivered, before.replay_until);
    }
}

/// Without anything acknowledged there is nothing to suppress; with everything
/// acknowledged, only alerts after the acknowledged watermark come again.
#[test]
fn suppression_is_bounded_by_what_was_acknowledged() {
    let splits = [
        (0..40).map(|i| ev(i * S, "a", if i % 4 == 0 { 90.0 } else { 10.0 })).collect::<Vec<_>>(),
        (0..40).map(|i| ev(i * S, "d", if i % 5 == 0 { 90.0 } else { 10.0 })).collect::<Vec<_>>(),
    ];
    let options = PipelineOptions { workers: 2, decoders: 1, batch_size: 8, queue_depth: 4, ..Default::default() };
    let order = interleave(&splits, &[false, true].repeat(40));

    let none = original(&splits, &order, 0, options.clone());
    let (after, suppressed) = restored(&splits, &order, &none, options.clone());
    assert_eq!((after, suppressed), (none.all.clone(), 0), "nothing acknowledged: everything is sent");

    let most = original(&splits, &order, 70, options.clone());
    assert!(!most.delivered.is_empty());
    let (after, suppressed) = restored(&splits, &order, &most, options);
    assert!(suppressed > 0, "acknowledged alerts are not sent again");
    assert!(most.all.iter().all(|a| most.delivered.contains(a) || after.contains(a)));
    assert!(after.iter().all(|a| a.2 >= most.replay_until || !most.delivered.contains(a)));
}
