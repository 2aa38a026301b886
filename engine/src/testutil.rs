//! Test helpers: a small stream, rules built from SQL, and a driver that runs events
//! through a real [`Pipeline`] and collects what comes out.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::common::DFSchema;
use datafusion::prelude::SessionContext;

use crate::alert::{Alert, AlertState};
use crate::clock::Clock;
use crate::pipeline::{DeadLetter, Output, Pipeline, PipelineOptions};
use crate::plan::{
    AbsencePlan, AggFunc, Aggregate, Plan, Predicate, RuleKind, RuleMeta, RulePlan, Severity, ThresholdPlan,
    WindowPlan, WindowShape,
};
use crate::schema::{FieldDef, FieldType, StreamDef};
use crate::time::Millis;

/// A stream `s` with fields ts, id (key), value and out-of-orderness `ooo` ms.
pub fn stream(ooo: Millis, idle_timeout_ms: Option<Millis>) -> Arc<StreamDef> {
    let fields = vec![
        FieldDef::new("ts", FieldType::Timestamp, true),
        FieldDef::new("id", FieldType::String, true),
        FieldDef::new("value", FieldType::Float, true),
    ];
    Arc::new(StreamDef { max_out_of_orderness_ms: ooo, idle_timeout_ms, ..StreamDef::new("s", fields, 0, vec![1]) })
}

/// Plans `sql` against `schema`.
pub fn predicate(sql: &str, schema: &arrow::datatypes::SchemaRef) -> Predicate {
    let ctx = SessionContext::new();
    let df = DFSchema::try_from(schema.as_ref().clone()).expect("schema");
    let e = ctx.parse_sql_expr(sql, &df).expect("parse");
    Predicate { sql: sql.into(), expr: ctx.create_physical_expr(e, &df).expect("plan") }
}

fn meta(id: &str, renotify_ms: Option<Millis>) -> Arc<RuleMeta> {
    Arc::new(RuleMeta {
        id: id.into(),
        name: id.into(),
        description: String::new(),
        severity: Severity::Warning,
        category: "test".into(),
        labels: BTreeMap::new(),
        renotify_ms,
    })
}

/// A threshold rule on [`stream`].
pub fn threshold(s: &StreamDef, cond: &str, clear: Option<&str>, for_ms: Millis) -> RulePlan {
    let schema = s.arrow_schema();
    RulePlan {
        meta: meta("th", None),
        stream: 0,
        key_fields: vec![1],
        filter: None,
        kind: RuleKind::Threshold(ThresholdPlan {
            condition: predicate(cond, &schema),
            clear_condition: clear.map(|c| predicate(c, &schema)),
            for_ms,
            consecutive: 1,
            observed: vec![2],
            event_time_order: false,
        }),
    }
}

/// A window rule with aggregates `count` and `delta(value)`, `sum(value)`.
/// The result row of a window's `aggregates`: counts are Int64, the rest Float64.
pub fn result_schema(aggregates: &[Aggregate]) -> arrow::datatypes::SchemaRef {
    let fields: Vec<arrow::datatypes::Field> = aggregates
        .iter()
        .map(|a| {
            let ty =
                if a.func.is_count() { arrow::datatypes::DataType::Int64 } else { arrow::datatypes::DataType::Float64 };
            arrow::datatypes::Field::new(&a.name, ty, true)
        })
        .collect();
    Arc::new(arrow::datatypes::Schema::new(fields))
}

pub fn window(size_ms: Millis, slide_ms: Millis, cond: &str) -> RulePlan {
    let aggregates = vec![
        Aggregate::new(AggFunc::Count, None, "count"),
        Aggregate::new(AggFunc::Sum, Some(2), "sum_value"),
        Aggregate::new(AggFunc::Delta, Some(2), "delta_value"),
        Aggregate::new(AggFunc::Rate, Some(2), "rate_value"),
        Aggregate::new(AggFunc::CountDistinct, Some(2), "distinct_value"),
    ];
    let result_schema = result_schema(&aggregates);
    RulePlan {
        meta: meta("win", None),
        stream: 0,
        key_fields: vec![1],
        filter: None,
        kind: RuleKind::Window(WindowPlan {
            shape: WindowShape::Time { size_ms, slide_ms },
            aggregates,
            condition: predicate(cond, &result_schema),
            result_schema,
        }),
    }
}

/// An absence rule.
pub fn absence(absent_for_ms: Millis, renotify_ms: Option<Millis>) -> RulePlan {
    RulePlan {
        meta: meta("abs", renotify_ms),
        stream: 0,
        key_fields: vec![1],
        filter: None,
        kind: RuleKind::Absence(AbsencePlan { absent_for_ms }),
    }
}

/// An event of [`stream`].
pub fn ev(ts: Millis, id: &str, value: f64) -> String {
    format!(r#"{{"ts":{ts},"id":"{id}","value":{value}}}"#)
}

/// What a run produced.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Alerts sorted by (rule, key, time, state, notification).
    pub alerts: Vec<Alert>,
    /// Dead letters in arrival order.
    pub dead: Vec<DeadLetter>,
}

impl Outcome {
    /// Compact `(key, state, event_time)` triples.
    pub fn brief(&self) -> Vec<(String, AlertState, Millis)> {
        self.alerts.iter().map(|a| (a.key.clone(), a.state, a.event_time)).collect()
    }
}

/// Runs `payloads` through a pipeline; `idle_at` optionally simulates that much processing
/// time of silence before the end (for idle-stream tests).
pub fn run(
    stream: Arc<StreamDef>,
    rules: Vec<RulePlan>,
    payloads: &[String],
    workers: usize,
    batch_size: usize,
    idle_ms: Option<u64>,
) -> Outcome {
    let options = PipelineOptions { workers, batch_size, queue_depth: 4, ..Default::default() };
    run_with(stream, rules, payloads, options, idle_ms, None)
}

/// [`run`] with every pipeline option given; `linger_every`: after every that many
/// payloads, the pending batches are cut as if they had waited longer than the linger.
pub fn run_with(
    stream: Arc<StreamDef>,
    rules: Vec<RulePlan>,
    payloads: &[String],
    options: PipelineOptions,
    idle_ms: Option<u64>,
    linger_every: Option<usize>,
) -> Outcome {
    let plan = Arc::new(Plan { streams: vec![stream], rules: rules.into_iter().map(Arc::new).collect() });
    // Processing time is driven, not slept: the pipeline reads this clock.
    let clock = Arc::new(crate::clock::ManualClock::new());
    let linger = options.linger;
    let options = PipelineOptions { clock: clock.clone(), ..options };
    let (mut p, rx) = Pipeline::start(plan, options);
    let collector = std::thread::spawn(move || {
        let mut out = Outcome::default();
        for o in rx {
            match o {
                Output::Alerts(a) => out.alerts.extend(a),
                Output::DeadLetter(d) => out.dead.push(d),
                // Snapshots are the runtime's business.
                Output::Checkpoint(_) | Output::State { .. } => {}
                Output::RuleError { rule, message } => panic!("rule {rule} failed: {message}"),
                Output::Barrier { .. } => {}
            }
        }
        out
    });
    for (i, payload) in payloads.iter().enumerate() {
        p.push(0, payload.as_bytes()).expect("push");
        if linger_every.is_some_and(|n| (i + 1) % n == 0) {
            clock.advance(linger);
            p.flush_lingering(clock.now()).expect("flush_lingering");
        }
    }
    if let Some(ms) = idle_ms {
        p.flush().expect("flush");
        clock.advance(std::time::Duration::from_millis(ms));
        p.on_idle(clock.now()).expect("idle");
    }
    p.finish().expect("finish");
    let mut out = collector.join().expect("collector");
    out.alerts.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()).then_with(|| a.rule_id.cmp(&b.rule_id)));
    out
}

/// Every alert, in full (as JSON, sorted), of `rows` — (split, payload, offset) — pushed in
/// that order into a pipeline of `plan` whose stream 0 is read from `splits` splits.
pub fn alerts_of_splits<'a>(
    plan: Arc<Plan>,
    splits: usize,
    rows: impl IntoIterator<Item = (usize, &'a str, i64)>,
    options: PipelineOptions,
) -> Vec<String> {
    let (mut p, rx) = Pipeline::start(plan, options);
    p.declare_splits(0, splits);
    let collector = std::thread::spawn(move || {
        let mut alerts = Vec::new();
        for o in rx {
            if let Output::Alerts(a) = o {
                alerts.extend(a.iter().map(|a| serde_json::to_string(a).expect("json")));
            }
        }
        alerts
    });
    for (split, payload, offset) in rows {
        p.push_split(0, split, payload.as_bytes(), offset).expect("push");
    }
    p.finish().expect("finish");
    let mut alerts = collector.join().expect("collector");
    alerts.sort();
    alerts
}

/// A GPS stream `gps`: ts, id (key), lat, lon, speed, route (optional).
pub fn gps_stream() -> Arc<StreamDef> {
    let fields = vec![
        FieldDef::new("ts", FieldType::Timestamp, true),
        FieldDef::new("id", FieldType::String, true),
        FieldDef::new("lat", FieldType::Float, true),
        FieldDef::new("lon", FieldType::Float, true),
        FieldDef::new("speed", FieldType::Float, true),
        FieldDef::new("route", FieldType::String, false),
    ];
    Arc::new(StreamDef { location: Some((2, 3)), ..StreamDef::new("gps", fields, 0, vec![1]) })
}

/// A GPS point of [`gps_stream`].
pub fn gps(ts: Millis, id: &str, lon: f64, lat: f64, speed: f64, route: Option<&str>) -> String {
    let route = route.map_or_else(|| "null".to_string(), |r| format!("\"{r}\""));
    format!(r#"{{"ts":{ts},"id":"{id}","lat":{lat},"lon":{lon},"speed":{speed},"route":{route}}}"#)
}

/// Zones near (120.0, 36.0): `site` a 0.01° square (≈ 900 × 1110 m) with a 40 km/h limit,
/// and `route-1` a corridor along latitude 36.02 with a 30 m buffer.
pub fn test_zones(active: Option<crate::zones::ActiveWindow>) -> Arc<crate::zones::ZoneSet> {
    use crate::zones::{Shape, Zone, ZoneSet, ZoneSpec};
    use geo::{LineString, MultiPolygon, Polygon};
    let zone = |id: &str, limit: Option<f64>| Zone {
        id: id.into(),
        name: id.into(),
        kind: "test".into(),
        properties: Default::default(),
        shape: Shape::Circle(geo::Coord { x: 0.0, y: 0.0 }, 0.0),
        active: active.clone(),
        speed_limit_kmh: limit,
    };
    let square = Polygon::new(
        LineString::from(vec![(120.0, 36.0), (120.01, 36.0), (120.01, 36.01), (120.0, 36.01), (120.0, 36.0)]),
        vec![],
    );
    Arc::new(ZoneSet::new(
        "test",
        vec![zone("site", Some(40.0)), zone("route-1", None)],
        vec![
            ZoneSpec::Area(MultiPolygon(vec![square])),
            ZoneSpec::Corridor(LineString::from(vec![(120.0, 36.02), (120.02, 36.02)]), 30.0),
        ],
    ))
}

/// A geofence rule on [`gps_stream`] over `zones`.
pub fn geofence(
    zones: Arc<crate::zones::ZoneSet>,
    event: crate::plan::GeofenceEvent,
    for_ms: Millis,
    margin_m: f64,
    confirm: u32,
    condition: Option<&str>,
) -> RulePlan {
    let s = gps_stream();
    let schema = s.arrow_schema();
    RulePlan {
        meta: meta("geo", None),
        stream: 0,
        key_fields: vec![1],
        filter: None,
        kind: RuleKind::Geofence(crate::plan::GeofencePlan {
            zones,
            event,
            lat: 2,
            lon: 3,
            for_ms,
            margin_m,
            confirm,
            confirm_for_ms: 0,
            condition: condition.map(|c| predicate(c, &schema)),
            active: None,
            route_field: Some(5),
            route_table: None,
            max_distance_m: 200.0,
            speed_field: Some(4),
        }),
    }
}
