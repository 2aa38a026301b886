//! The alert and case stage per alert: the alert stage's decision (silences, inhibition,
//! flapping — dedup itself happens in the operators) and alerts → cases (grouping,
//! dispatch, SLA timers, case events) on a seeded synthetic alert stream.

use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use gridwatch_cases::gate::AlertGate;
use gridwatch_cases::{CaseStage, synthetic};

const ALERTS: usize = 10_000;

fn alert_gate(c: &mut Criterion) {
    let cfg = synthetic::config();
    let alerts = synthetic::alerts(ALERTS, 1_000, 42);
    let facts: Vec<_> = alerts.iter().map(|a| cfg.facts(a)).collect();
    let mut g = c.benchmark_group("alert_gate");
    g.throughput(Throughput::Elements(ALERTS as u64));
    g.bench_function("decide", |b| {
        b.iter(|| {
            let mut gate = AlertGate::default();
            let mut sent = 0usize;
            for (a, f) in alerts.iter().zip(&facts) {
                sent += usize::from(gate.decide(&cfg, a, f).is_sent());
            }
            std::hint::black_box(sent)
        })
    });
    g.finish();
}

fn case_grouping(c: &mut Criterion) {
    let cfg = Arc::new(synthetic::config());
    let mut g = c.benchmark_group("case_grouping");
    g.throughput(Throughput::Elements(ALERTS as u64));
    for keys in [1_000u64, 100_000] {
        let alerts = synthetic::alerts(ALERTS, keys, 42);
        g.bench_with_input(BenchmarkId::from_parameter(keys), &alerts, |b, alerts| {
            b.iter_batched(
                || alerts.clone(),
                |alerts| {
                    let mut stage = CaseStage::new(cfg.clone(), None);
                    stage.push_alerts(alerts);
                    stage.finish();
                    std::hint::black_box(stage.drain().len())
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(3));
    targets = alert_gate, case_grouping
}
criterion_main!(benches);
