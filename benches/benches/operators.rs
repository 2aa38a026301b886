//! Filter expression, threshold + for, tumbling and sliding windows and absence, each on a
//! decoded 4096-row batch of sensor events (the cost per event of one rule).

use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use gridwatch_benches::{OperatorBatch, decode_batches, drive, plan_with_rules, stream_events};
use gridwatch_engine::operator;

const RULES: &str = r#"
rules:
  - id: filter-only
    kind: threshold
    source: sensor
    where: metric = 'ch4_lel' AND value > 25
    condition: value > 1000
  - id: threshold-for
    kind: threshold
    source: sensor
    condition: value > 50
    for: 30s
    clear_condition: value < 20
  - id: tumbling-avg
    kind: window
    source: sensor
    window: {size: 1m}
    aggregates: [avg(value), count]
    condition: avg_value > 30 AND count >= 3
  - id: sliding-delta
    kind: window
    source: sensor
    window: {size: 10m, slide: 1m}
    aggregates: [delta(value), max(value)]
    condition: delta_value >= 20
  - id: absence
    kind: absence
    source: sensor
    absent_for: 15m
"#;

/// Decoded consecutive batches of sensor events with their per-row watermarks.
fn batches(def: &Arc<gridwatch_engine::schema::StreamDef>, n_batches: usize) -> Vec<OperatorBatch> {
    decode_batches(def, &stream_events("sensor", 4096 * n_batches), 4096)
}

fn operators(c: &mut Criterion) {
    let plan = plan_with_rules(RULES);
    let def = plan.streams[plan.stream_index("sensor").expect("sensor")].clone();
    let data = batches(&def, 16);
    let rows: u64 = data.iter().map(|(b, _, _)| b.batch.num_rows() as u64).sum();
    let mut group = c.benchmark_group("operator");
    group.throughput(Throughput::Elements(rows));
    for rule in &plan.rules {
        group.bench_function(BenchmarkId::from_parameter(&*rule.meta.id), |b| {
            b.iter_batched(
                || operator::build(rule.clone(), &plan.streams),
                |mut op| drive(op.as_mut(), &data),
                criterion::BatchSize::LargeInput,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, operators);
criterion_main!(benches);
