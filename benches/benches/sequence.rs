//! The sequence operator per core, by open partial matches per key (1–64).
//!
//! 1,000 pressure sensors report once a second; the rule's first step matches every
//! reading (each opens a partial match) and its second step looks for a reading below 80 %
//! of an earlier one, which never comes: with `within: P s` every key holds P open partial
//! matches in the steady state, and every reading is checked against all of them. The
//! `vectorized` variant's second step reads only the event (`value < 100`), so it costs no
//! per-partial interpretation: the difference is the price of a reference to an earlier step.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use gridwatch_benches::{decode_batches, drive_stream, feed_stream, plan_with_rules};
use gridwatch_engine::operator;

const KEYS: usize = 1000;
const BATCH: usize = 4096;
const EVENTS: usize = 16 * BATCH;

/// A rule whose keys hold `partials` open partial matches: its `within` spans that many
/// readings of a key (half a second short, so the oldest has just expired).
fn rule(id: &str, partials: usize, second: &str) -> String {
    let within_ms = partials * 1000 - 500;
    format!(
        r#"
  - id: {id}
    kind: sequence
    key: [device_id]
    within: {within_ms}ms
    steps:
      - {{as: high, source: sensor, where: "metric = 'pressure_kpa'"}}
      - {{as: low, source: sensor, where: "metric = 'pressure_kpa' AND {second}"}}
"#
    )
}

/// Readings of `KEYS` sensors, one per key per second, in time order.
fn payloads() -> Vec<Vec<u8>> {
    (0..EVENTS)
        .map(|i| {
            let key = i % KEYS;
            let ts = 1_795_000_000_000_i64 + (i / KEYS) as i64 * 1000 + (key % 1000) as i64;
            let value = 600.0 + ((i * 7919) % 13) as f64 * 0.5;
            format!(
                r#"{{"stream":"sensor","ts":{ts},"device_id":"hp-{key:05}","kind":"heating","metric":"pressure_kpa","value":{value:.1},"lat":36.07,"lon":120.38}}"#
            )
            .into_bytes()
        })
        .collect()
}

/// Prints what an open partial match costs once the input's rows are all evaluated (the
/// steady state: every key holds its `within` of partial matches).
fn report_memory(
    rule: &std::sync::Arc<gridwatch_engine::plan::RulePlan>,
    plan: &gridwatch_engine::plan::Plan,
    stream: usize,
    data: &[gridwatch_benches::OperatorBatch],
) {
    let mut op = operator::SequenceOperator::new(rule.clone(), &plan.streams);
    feed_stream(&mut op, stream, data);
    let m = op.partial_memory();
    let per = |bytes: usize| bytes as f64 / m.open.max(1) as f64;
    println!(
        "{}: {} open partial matches, {:.0} B each: record {:.0} B, evidence {:.0} B",
        rule.meta.id,
        m.open,
        per(m.record_bytes + m.evidence_bytes),
        per(m.record_bytes),
        per(m.evidence_bytes)
    );
}

fn sequence(c: &mut Criterion) {
    let partials = [1usize, 4, 16, 64];
    let mut yaml = String::from("rules:\n");
    for p in partials {
        yaml.push_str(&rule(&format!("reference-{p}"), p, "value < high.value * 0.8"));
    }
    yaml.push_str(&rule("vectorized-64", 64, "value < 100"));
    let plan = plan_with_rules(&yaml);
    let stream = plan.stream_index("sensor").expect("sensor");
    let data = decode_batches(&plan.streams[stream], &payloads(), BATCH);
    let rows: u64 = data.iter().map(|(b, _, _)| b.batch.num_rows() as u64).sum();
    assert_eq!(rows as usize, EVENTS, "every reading decodes");
    let mut group = c.benchmark_group("sequence");
    group.throughput(Throughput::Elements(rows));
    for rule in &plan.rules {
        // Nothing completes: a bench that raised alerts would measure alert building.
        let mut op = operator::build(rule.clone(), &plan.streams);
        assert_eq!(drive_stream(op.as_mut(), stream, &data), 0, "{} raised alerts", rule.meta.id);
        report_memory(rule, &plan, stream, &data);
        group.bench_function(BenchmarkId::new("partials_per_key", &*rule.meta.id), |b| {
            b.iter_batched(
                || operator::build(rule.clone(), &plan.streams),
                |mut op| drive_stream(op.as_mut(), stream, &data),
                criterion::BatchSize::LargeInput,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, sequence);
criterion_main!(benches);
