//! Geofences: R-tree point lookups against 1k, 10k and 100k city-sized polygons (20–200
//! vertices), index build time, and a whole geofence rule (`inside`, per-vehicle state)
//! over 50k polygons on decoded GPS batches.

use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use gridwatch_benches::{drive, random_points, synthetic_zones};
use gridwatch_engine::operator;
use gridwatch_engine::plan::{GeofenceEvent, GeofencePlan, RuleKind, RuleMeta, RulePlan, Severity};
use gridwatch_engine::schema::{FieldDef, FieldType, StreamDef};
use gridwatch_engine::zones::ZoneHits;

fn lookups(c: &mut Criterion) {
    let points = random_points(100_000, 7);
    let mut group = c.benchmark_group("geofence_lookup");
    group.throughput(Throughput::Elements(points.len() as u64));
    for n in [1_000usize, 10_000, 100_000] {
        let zones = synthetic_zones(n, 1);
        eprintln!("{n} polygons: ~{} bytes per polygon (geometry + index)", zones.approx_bytes() / n);
        group.bench_with_input(BenchmarkId::from_parameter(n), &zones, |b, zones| {
            let mut hits = ZoneHits::new();
            b.iter(|| {
                let mut found = 0usize;
                for &(lon, lat) in &points {
                    zones.containing(zones.project(lon, lat), &mut hits);
                    found += hits.len();
                }
                found
            });
        });
    }
    group.finish();
    let mut group = c.benchmark_group("geofence_build");
    group.sample_size(10);
    for n in [1_000usize, 10_000, 100_000] {
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::from_parameter(n), |b| b.iter(|| synthetic_zones(n, 1).len()));
    }
    group.finish();
}

fn gps_def() -> Arc<StreamDef> {
    let fields = ["ts", "vehicle_id", "lat", "lon", "speed_kmh"];
    let types = [FieldType::Timestamp, FieldType::String, FieldType::Float, FieldType::Float, FieldType::Float];
    let fields = fields.iter().zip(types).map(|(name, ty)| FieldDef::new(name, ty, true)).collect();
    Arc::new(StreamDef { location: Some((2, 3)), ..StreamDef::new("gps", fields, 0, vec![1]) })
}

fn rule_evaluation(c: &mut Criterion) {
    let zones = Arc::new(synthetic_zones(50_000, 1));
    let def = gps_def();
    let rule = Arc::new(RulePlan {
        meta: Arc::new(RuleMeta {
            id: "inside".into(),
            name: "inside".into(),
            description: String::new(),
            severity: Severity::Warning,
            category: "bench".into(),
            labels: Default::default(),
            renotify_ms: None,
        }),
        stream: 0,
        key_fields: vec![1],
        filter: None,
        kind: RuleKind::Geofence(GeofencePlan {
            zones,
            event: GeofenceEvent::Inside,
            lat: 2,
            lon: 3,
            for_ms: 60_000,
            margin_m: 0.0,
            confirm: 1,
            confirm_for_ms: 0,
            condition: None,
            active: None,
            route_field: None,
            route_table: None,
            max_distance_m: 0.0,
            speed_field: None,
        }),
    });
    // 10k vehicles moving over the zone square, 1 point per vehicle per second.
    let points = random_points(10_000, 3);
    let mut batches = Vec::new();
    for step in 0..16i64 {
        let mut d = gridwatch_engine::decode::Decoder::new(def.clone(), 4096);
        let mut wms = Vec::new();
        for (v, &(lon, lat)) in points.iter().enumerate().skip((step as usize * 4096) % 6000).take(4096) {
            let t = 1_800_000_000_000 + step * 1000;
            let p = format!(
                r#"{{"ts":{t},"vehicle_id":"v{v}","lat":{},"lon":{},"speed_kmh":20}}"#,
                lat + step as f64 * 1e-5,
                lon
            );
            d.push(p.as_bytes()).expect("valid");
            wms.push(t);
        }
        let end = *wms.last().expect("rows");
        batches.push((d.finish(), wms, end));
    }
    let rows: u64 = batches.iter().map(|(b, _, _)| b.batch.num_rows() as u64).sum();
    let mut group = c.benchmark_group("geofence_rule");
    group.throughput(Throughput::Elements(rows));
    group.bench_function("inside_50k_polygons", |b| {
        b.iter_batched(
            || operator::build(rule.clone(), std::slice::from_ref(&def)),
            |mut op| drive(op.as_mut(), &batches),
            criterion::BatchSize::LargeInput,
        );
    });
    group.finish();
}

criterion_group!(benches, lookups, rule_evaluation);
criterion_main!(benches);
