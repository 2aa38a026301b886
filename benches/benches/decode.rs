//! JSON → Arrow decoding of example-city sensor events, per event.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use gridwatch_benches::{city_plan, stream_events};
use gridwatch_engine::decode::Decoder;

fn decode(c: &mut Criterion) {
    let plan = city_plan();
    let mut group = c.benchmark_group("decode");
    for stream in ["sensor", "gps", "detection"] {
        let def = plan.streams[plan.stream_index(stream).expect("stream")].clone();
        let payloads = stream_events(stream, 4096);
        group.throughput(Throughput::Elements(payloads.len() as u64));
        group.bench_with_input(BenchmarkId::new("sonic_to_arrow", stream), &payloads, |b, payloads| {
            let mut decoder = Decoder::new(def.clone(), payloads.len());
            b.iter(|| {
                for p in payloads {
                    let _ = decoder.push(p);
                }
                decoder.finish()
            });
        });
    }
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
