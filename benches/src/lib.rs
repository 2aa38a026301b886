//! Shared setup for the criterion benchmarks: the example city's plan and events.

use std::path::PathBuf;
use std::sync::Arc;

use gridwatch_connectors::generator::{CityGenerator, GeneratorSettings};
use gridwatch_engine::Plan;

/// Repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The example city's compiled plan.
pub fn city_plan() -> Arc<Plan> {
    let (_, plan) = gridwatch_rules::load_config(&root().join("examples/city/gridwatch.yaml"))
        .into_result()
        .unwrap_or_else(|e| panic!("example city does not compile:\n{e}"));
    Arc::new(plan)
}

/// A plan with the example city's streams and the given rules (YAML text).
pub fn plan_with_rules(rules_yaml: &str) -> Arc<Plan> {
    let path = root().join("examples/city/gridwatch.yaml");
    let config = std::fs::read_to_string(&path).expect("city config");
    // The config's own path, so its zone files resolve.
    let (_, plan) = gridwatch_rules::load_from_strings(&path.to_string_lossy(), &config, &[("bench.yaml", rules_yaml)])
        .into_result()
        .unwrap_or_else(|e| panic!("bench rules do not compile:\n{e}"));
    Arc::new(plan)
}

/// `n` events of the example city as (stream name, payload), in generation order.
pub fn city_events(n: usize) -> Vec<(&'static str, Vec<u8>)> {
    let mut g = CityGenerator::new(GeneratorSettings {
        seed: 1,
        start_ms: 1_795_000_000_000,
        duration_ms: 86_400_000,
        scale: 1,
    });
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let Some((s, p)) = g.next_event() else { break };
        out.push((gridwatch_connectors::generator::STREAMS[s], p.to_vec()));
    }
    out
}

/// `n` payloads of one stream.
pub fn stream_events(stream: &str, n: usize) -> Vec<Vec<u8>> {
    let mut g = CityGenerator::new(GeneratorSettings {
        seed: 1,
        start_ms: 1_795_000_000_000,
        duration_ms: 86_400_000 * 7,
        scale: 1,
    });
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let Some((s, p)) = g.next_event() else { break };
        if gridwatch_connectors::generator::STREAMS[s] == stream {
            out.push(p.to_vec());
        }
    }
    out
}

/// `n` city-sized polygons (30–150 m across, 20–200 vertices, irregular star shapes) laid
/// out over a ~40 × 40 km square, as a zone set.
pub fn synthetic_zones(n: usize, seed: u64) -> gridwatch_engine::zones::ZoneSet {
    use gridwatch_engine::zones::{Shape, Zone, ZoneSet, ZoneSpec};
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let side = (n as f64).sqrt().ceil() as usize;
    let step = 0.36 / side as f64; // degrees between cell centres
    let mut zones = Vec::with_capacity(n);
    let mut specs = Vec::with_capacity(n);
    for i in 0..n {
        let (cx, cy) = (120.2 + (i % side) as f64 * step, 35.9 + (i / side) as f64 * step);
        let vertices = rng.random_range(20..=200);
        let radius_deg = rng.random_range(15.0..75.0) / 111_000.0;
        let ring: Vec<(f64, f64)> = (0..=vertices)
            .map(|k| {
                let a = std::f64::consts::TAU * (k % vertices) as f64 / vertices as f64;
                let r = radius_deg * if k % 2 == 0 { 1.0 } else { 0.7 };
                (cx + r * a.cos() / 0.81, cy + r * a.sin())
            })
            .collect();
        specs.push(ZoneSpec::Area(geo::MultiPolygon(vec![geo::Polygon::new(geo::LineString::from(ring), vec![])])));
        zones.push(Zone {
            id: format!("z{i}"),
            name: format!("zone {i}"),
            kind: "synthetic".into(),
            properties: Default::default(),
            shape: Shape::Circle(geo::Coord { x: 0.0, y: 0.0 }, 0.0),
            active: None,
            speed_limit_kmh: Some(30.0),
        });
    }
    ZoneSet::new("synthetic", zones, specs)
}

/// `n` random points over the synthetic zones' square, as (lon, lat).
pub fn random_points(n: usize, seed: u64) -> Vec<(f64, f64)> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| (rng.random_range(120.2..120.56), rng.random_range(35.9..36.26))).collect()
}

/// A decoded batch with its per-row watermarks and closing watermark, as operators get it.
pub type OperatorBatch = (gridwatch_engine::decode::DecodedBatch, Vec<i64>, i64);

/// Decodes `payloads` of stream `def` into consecutive batches of `batch_size` rows, with
/// each row's watermark and the watermark at the batch's end, as the pipeline hands them
/// to operators.
pub fn decode_batches(
    def: &std::sync::Arc<gridwatch_engine::schema::StreamDef>,
    payloads: &[Vec<u8>],
    batch_size: usize,
) -> Vec<OperatorBatch> {
    use gridwatch_engine::time::{Observed, WatermarkTracker};
    let mut tracker = WatermarkTracker::new(def.max_out_of_orderness_ms);
    let mut out = Vec::new();
    for chunk in payloads.chunks(batch_size) {
        let mut d = gridwatch_engine::decode::Decoder::new(def.clone(), batch_size);
        let mut wms = Vec::new();
        for p in chunk {
            if let Ok(t) = d.parse(p)
                && let Observed::OnTime(wm) = tracker.observe(t)
            {
                d.commit();
                wms.push(wm);
            }
        }
        out.push((d.finish(), wms, tracker.watermark()));
    }
    out
}

/// Feeds `batches` (of the plan's first stream) to `op`; returns the number of alerts raised.
pub fn drive(op: &mut dyn gridwatch_engine::operator::Operator, batches: &[OperatorBatch]) -> usize {
    drive_stream(op, 0, batches)
}

/// Feeds `batches` of plan stream `stream` to `op`, then ends the input; returns the number
/// of alerts raised.
pub fn drive_stream(
    op: &mut dyn gridwatch_engine::operator::Operator,
    stream: usize,
    batches: &[OperatorBatch],
) -> usize {
    let mut alerts = feed_stream(op, stream, batches);
    op.end_of_input(&mut alerts).expect("end of input");
    alerts.len()
}

/// Feeds `batches` of plan stream `stream` to `op` without ending the input (what an
/// operator holds then is its steady state); returns the alerts raised.
pub fn feed_stream(
    op: &mut dyn gridwatch_engine::operator::Operator,
    stream: usize,
    batches: &[OperatorBatch],
) -> Vec<gridwatch_engine::Alert> {
    let mut alerts = Vec::new();
    for (batch, wms, end) in batches {
        let input = gridwatch_engine::operator::BatchInput {
            stream,
            batch: &batch.batch,
            times: &batch.event_time,
            watermarks: wms,
            split_watermarks: wms,
            end_watermark: *end,
            shared_where: None,
        };
        op.process(&input, &mut alerts).expect("process");
    }
    alerts
}
