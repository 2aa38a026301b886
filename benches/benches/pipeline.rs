//! The whole example city: decode → partition → 17 rules → alerts, per event, with two
//! workers, fed in 1k-event slices of the city's mixed stream.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gridwatch_benches::{city_events, city_plan};
use gridwatch_engine::{Output, Pipeline, PipelineOptions};

fn pipeline(c: &mut Criterion) {
    let plan = city_plan();
    let events = city_events(200_000);
    let index: Vec<usize> = events.iter().map(|(s, _)| plan.stream_index(s).expect("stream")).collect();
    let mut group = c.benchmark_group("pipeline");
    group.sample_size(10);
    group.throughput(Throughput::Elements(events.len() as u64));
    for workers in [1usize, 2] {
        group.bench_function(format!("city_{workers}_workers"), |b| {
            b.iter(|| {
                let (mut p, rx) = Pipeline::start(
                    plan.clone(),
                    PipelineOptions { workers, batch_size: 1024, queue_depth: 8, ..Default::default() },
                );
                let sink = std::thread::spawn(move || rx.iter().filter(|o| matches!(o, Output::Alerts(_))).count());
                for ((_, payload), &s) in events.iter().zip(&index) {
                    p.push(s, payload).expect("push");
                }
                p.finish().expect("finish");
                sink.join().expect("sink")
            });
        });
    }
    group.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
