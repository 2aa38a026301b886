//! Compiled rule plans: what the `rules` crate hands the engine.
//!
//! A [`Plan`] is immutable and shared by every partition worker. Expressions are DataFusion
//! physical expressions, planned once against the stream's Arrow schema (or, for window
//! conditions, against the schema of the window results).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion::physical_expr::PhysicalExpr;
use serde::Serialize;

use crate::schema::StreamDef;
use crate::time::Millis;
use crate::zones::{ActiveWindow, ZoneSet};

/// Alert severity, ordered from least to most severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Informational.
    Info,
    /// Needs attention.
    Warning,
    /// Needs action soon.
    Major,
    /// Needs action now.
    Critical,
}

impl Severity {
    /// All names, for hints.
    pub const NAMES: [&'static str; 4] = ["info", "warning", "major", "critical"];

    /// Parses a config name.
    pub fn parse(s: &str) -> Option<Severity> {
        Some(match s {
            "info" => Severity::Info,
            "warning" => Severity::Warning,
            "major" => Severity::Major,
            "critical" => Severity::Critical,
            _ => return None,
        })
    }

    /// The config name.
    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

/// Descriptive fields copied onto every alert of a rule.
#[derive(Debug, Clone)]
pub struct RuleMeta {
    /// Unique rule id.
    pub id: Arc<str>,
    /// Human-readable name.
    pub name: String,
    /// Longer description.
    pub description: String,
    /// Severity of its alerts.
    pub severity: Severity,
    /// Category (e.g. `emergency/gas`).
    pub category: String,
    /// Free-form labels.
    pub labels: BTreeMap<String, String>,
    /// Re-send a still-firing alert after this much event time.
    pub renotify_ms: Option<Millis>,
}

/// A boolean expression with its source text (for errors and docs).
#[derive(Clone)]
pub struct Predicate {
    /// The SQL text as written.
    pub sql: String,
    /// The planned physical expression.
    pub expr: Arc<dyn PhysicalExpr>,
}

impl fmt::Debug for Predicate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Predicate({:?})", self.sql)
    }
}

/// Threshold rule: a condition per event, optionally sustained, with hysteresis.
#[derive(Debug, Clone)]
pub struct ThresholdPlan {
    /// Fires when true (for `for_ms`).
    pub condition: Predicate,
    /// While firing, resolves only when this is true (else when `condition` is false).
    pub clear_condition: Option<Predicate>,
    /// The condition must hold this long in event time; 0 fires at once.
    pub for_ms: Millis,
    /// … and on at least this many consecutive events of the key (1: no count required).
    pub consecutive: u32,
    /// Columns reported as observed values (those the conditions reference).
    pub observed: Vec<usize>,
    /// `order: event_time`: a key's rows are evaluated in event-time order once the
    /// watermark has passed them, rather than in arrival order as they come.
    pub event_time_order: bool,
}

/// Aggregate functions over a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AggFunc {
    /// Number of events.
    Count,
    /// Sum of a field.
    Sum,
    /// Mean of a field.
    Avg,
    /// Minimum of a field.
    Min,
    /// Maximum of a field.
    Max,
    /// Number of distinct values of a field.
    CountDistinct,
    /// Last minus first value (by event time).
    Delta,
    /// Delta divided by the seconds between the first and last sample.
    Rate,
    /// Value of the earliest event (by event time; ties: the first to arrive).
    First,
    /// Value of the latest event (by event time; ties: the last to arrive).
    Last,
    /// Sample standard deviation (null with fewer than two values).
    Stddev,
    /// Exact percentile with linear interpolation (`percentile_cont`); `median` is 0.5.
    Percentile,
    /// Number of events for which a condition holds.
    CountIf,
}

impl AggFunc {
    /// All function names, for hints.
    pub const NAMES: [&'static str; 14] = [
        "count",
        "sum",
        "avg",
        "min",
        "max",
        "count_distinct",
        "delta",
        "rate",
        "first",
        "last",
        "stddev",
        "percentile",
        "median",
        "count_if",
    ];

    /// Parses a function name.
    pub fn parse(s: &str) -> Option<AggFunc> {
        Some(match s {
            "count" => AggFunc::Count,
            "sum" => AggFunc::Sum,
            "avg" => AggFunc::Avg,
            "min" => AggFunc::Min,
            "max" => AggFunc::Max,
            "count_distinct" => AggFunc::CountDistinct,
            "delta" => AggFunc::Delta,
            "rate" => AggFunc::Rate,
            "first" => AggFunc::First,
            "last" => AggFunc::Last,
            "stddev" => AggFunc::Stddev,
            "percentile" | "median" => AggFunc::Percentile,
            "count_if" => AggFunc::CountIf,
            _ => return None,
        })
    }

    /// True for functions whose result is an integer count.
    pub fn is_count(self) -> bool {
        matches!(self, AggFunc::Count | AggFunc::CountDistinct | AggFunc::CountIf)
    }
}

/// One aggregate column of a window rule.
#[derive(Debug, Clone)]
pub struct Aggregate {
    /// Function.
    pub func: AggFunc,
    /// Input column (None for `count` and `count_if`).
    pub field: Option<usize>,
    /// Output column name, usable in the condition.
    pub name: String,
    /// `percentile`'s fraction in `[0, 1]` (`median`: 0.5); 0 for other functions.
    pub fraction: f64,
    /// `count_if`'s condition over the stream's fields.
    pub filter: Option<Predicate>,
}

impl Aggregate {
    /// An aggregate of `func` over `field` (no fraction, no condition).
    pub fn new(func: AggFunc, field: Option<usize>, name: impl Into<String>) -> Aggregate {
        Aggregate { func, field, name: name.into(), fraction: 0.0, filter: None }
    }
}

/// Which events of a key a window holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowShape {
    /// `[start, start + size)` in event time, `start` a multiple of `slide` (tumbling:
    /// `slide == size`).
    Time {
        /// Window length.
        size_ms: Millis,
        /// Distance between window starts; divides `size_ms`.
        slide_ms: Millis,
    },
    /// Events of a key closer than `gap` to each other; closes when the watermark passes the
    /// last event + `gap`, or its first event + `max_ms`.
    Session {
        /// Silence that ends a session.
        gap_ms: Millis,
        /// Longest a session lasts.
        max_ms: Millis,
    },
    /// `size` consecutive events of a key in event-time order, a new window every `slide`
    /// events (tumbling: `slide == size`).
    Count {
        /// Events per window.
        size: u32,
        /// Events between window starts; divides `size`.
        slide: u32,
        /// Events older than this before a key's newest one leave its open windows.
        max_ms: Millis,
    },
}

impl WindowShape {
    /// How much event time a window's state can span (see [`Plan::state_horizon_ms`]).
    pub fn horizon_ms(&self) -> Millis {
        match *self {
            WindowShape::Time { size_ms, slide_ms } => size_ms.saturating_add(slide_ms),
            WindowShape::Session { gap_ms, max_ms } => max_ms.saturating_add(gap_ms),
            WindowShape::Count { max_ms, .. } => max_ms,
        }
    }
}

/// Window aggregate rule: time (tumbling or sliding), session or count windows.
#[derive(Debug, Clone)]
pub struct WindowPlan {
    /// Which events a window holds.
    pub shape: WindowShape,
    /// Aggregates computed per window and key.
    pub aggregates: Vec<Aggregate>,
    /// Condition over the aggregate columns.
    pub condition: Predicate,
    /// Schema of the aggregate results the condition is planned against.
    pub result_schema: SchemaRef,
}

/// Absence rule: no event for a key for `absent_for_ms`.
#[derive(Debug, Clone)]
pub struct AbsencePlan {
    /// Silence that triggers the alert.
    pub absent_for_ms: Millis,
}

/// What a geofence rule detects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GeofenceEvent {
    /// The entity entered a zone (edge).
    Enter,
    /// The entity left a zone (edge).
    Exit,
    /// The entity entered and then left a zone (edge, on leaving).
    Cross,
    /// The entity is inside a zone (level; `for` makes it sustained).
    Inside,
    /// The entity is outside every zone of the set (level).
    Outside,
    /// The entity has stayed inside the same zone for `for` (level).
    Dwell,
    /// The entity is farther than `max_distance_m` from its assigned route (level).
    Corridor,
    /// The entity is inside a zone faster than the zone's `speed_limit_kmh` (level).
    Speeding,
}

impl GeofenceEvent {
    /// All names, for hints.
    pub const NAMES: [&'static str; 8] =
        ["enter", "exit", "cross", "inside", "outside", "dwell", "corridor", "speeding"];

    /// Parses a config name.
    pub fn parse(s: &str) -> Option<GeofenceEvent> {
        Some(match s {
            "enter" => GeofenceEvent::Enter,
            "exit" => GeofenceEvent::Exit,
            "cross" => GeofenceEvent::Cross,
            "inside" => GeofenceEvent::Inside,
            "outside" => GeofenceEvent::Outside,
            "dwell" => GeofenceEvent::Dwell,
            "corridor" => GeofenceEvent::Corridor,
            "speeding" => GeofenceEvent::Speeding,
            _ => return None,
        })
    }

    /// True for edge events (one alert per transition, no resolved record).
    pub fn is_edge(self) -> bool {
        matches!(self, GeofenceEvent::Enter | GeofenceEvent::Exit | GeofenceEvent::Cross)
    }
}

/// Geofence rule over a stream with coordinates.
#[derive(Debug, Clone)]
pub struct GeofencePlan {
    /// The zones.
    pub zones: Arc<ZoneSet>,
    /// What to detect.
    pub event: GeofenceEvent,
    /// Latitude column.
    pub lat: usize,
    /// Longitude column.
    pub lon: usize,
    /// A level must hold this long (inside, outside, dwell, corridor, speeding).
    pub for_ms: Millis,
    /// Enter only when at least this far inside, exit only when this far outside (metres).
    pub margin_m: f64,
    /// Enter/exit only after this many consecutive points agree.
    pub confirm: u32,
    /// … and only after the new state has lasted this long (event time).
    pub confirm_for_ms: Millis,
    /// Extra condition that must hold for a level (e.g. `speed_kmh < 2`).
    pub condition: Option<Predicate>,
    /// Rule-level active hours (in addition to each zone's own).
    pub active: Option<ActiveWindow>,
    /// Column naming the entity's assigned route (a zone id), for `corridor`.
    pub route_field: Option<usize>,
    /// Entity key → route id, for entities whose events do not name their route (ordered:
    /// the rule's fingerprint is its debug text, which must not depend on a hash seed).
    pub route_table: Option<Arc<std::collections::BTreeMap<String, String>>>,
    /// Allowed distance from the route, for `corridor`.
    pub max_distance_m: f64,
    /// Speed column (km/h), for `speeding`.
    pub speed_field: Option<usize>,
}

/// The input streams of a sequence rule, and the key each is correlated by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SequenceInput {
    /// Index of the stream in [`Plan::streams`].
    pub stream: usize,
    /// The key columns in that stream (same arity and types for every input).
    pub key_fields: Vec<usize>,
}

/// One step of a sequence.
#[derive(Debug, Clone)]
pub struct SequenceStep {
    /// The step's `as` name (evidence and values are labelled with it).
    pub name: String,
    /// Index into [`SequencePlan::inputs`].
    pub input: usize,
    /// The part of the step's `where` over the event alone (vectorized); None: every event.
    pub filter: Option<Predicate>,
    /// The part that reads earlier steps' events (`value < high.value * 0.8`).
    pub refs: Option<crate::rowexpr::RowExpr>,
    /// `not: true`: the step must not happen.
    pub negated: bool,
    /// At most this long after the previous step's (last) event.
    pub within_ms: Option<Millis>,
    /// Number of events that must match the step (`times`).
    pub times: u32,
    /// No non-matching event of the key on the step's stream in between (`contiguous`).
    pub contiguous: bool,
    /// Every column of the step's stream this rule reads from its events (filters,
    /// references from later steps): the decoder parses them, and a matched (not negated)
    /// step reports them as `values` (`name.field`).
    pub columns: Vec<usize>,
}

/// Sequence rule: steps matched in event-time order across streams, by a shared key.
#[derive(Debug, Clone)]
pub struct SequencePlan {
    /// First step's event to last step's event.
    pub within_ms: Option<Millis>,
    /// Partial matches kept per key; the oldest are dropped beyond it.
    pub max_partial: usize,
    /// Distinct input streams, in the order the steps first read them.
    pub inputs: Vec<SequenceInput>,
    /// The steps, in order.
    pub steps: Vec<SequenceStep>,
}

impl SequencePlan {
    /// The longest event-time span of a match (its state horizon).
    pub fn span_ms(&self) -> Millis {
        self.within_ms.unwrap_or_else(|| self.steps.iter().filter_map(|s| s.within_ms).fold(0, Millis::saturating_add))
    }
}

/// The kind-specific part of a rule.
#[derive(Debug, Clone)]
pub enum RuleKind {
    /// See [`ThresholdPlan`].
    Threshold(ThresholdPlan),
    /// See [`WindowPlan`].
    Window(WindowPlan),
    /// See [`AbsencePlan`].
    Absence(AbsencePlan),
    /// See [`GeofencePlan`].
    Geofence(GeofencePlan),
    /// See [`SequencePlan`].
    Sequence(SequencePlan),
}

/// One compiled rule.
#[derive(Debug, Clone)]
pub struct RulePlan {
    /// Descriptive fields.
    pub meta: Arc<RuleMeta>,
    /// Index of the input stream in [`Plan::streams`].
    pub stream: usize,
    /// Columns forming the rule's key; state is kept per distinct key.
    pub key_fields: Vec<usize>,
    /// Optional pre-filter.
    pub filter: Option<Predicate>,
    /// Kind-specific plan.
    pub kind: RuleKind,
}

impl RulePlan {
    /// The streams the rule reads, each with its key columns there: one for most kinds,
    /// every input of a sequence.
    pub fn inputs(&self) -> Vec<(usize, &[usize])> {
        match &self.kind {
            RuleKind::Sequence(s) => s.inputs.iter().map(|i| (i.stream, i.key_fields.as_slice())).collect(),
            _ => vec![(self.stream, self.key_fields.as_slice())],
        }
    }

    /// True when the rule reads `stream`.
    pub fn reads(&self, stream: usize) -> bool {
        self.inputs().iter().any(|&(s, _)| s == stream)
    }
}

/// Everything the runtime needs: streams and rules.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Declared streams.
    pub streams: Vec<Arc<StreamDef>>,
    /// Compiled rules.
    pub rules: Vec<Arc<RulePlan>>,
}

impl Plan {
    /// Index of the stream with this name.
    pub fn stream_index(&self, name: &str) -> Option<usize> {
        self.streams.iter().position(|s| s.name == name)
    }

    /// How much event time of `stream` the rules' state can span: replaying input from
    /// this far behind a watermark rebuilds every pending `for`, window, absence and dwell
    /// decision due after it. Used to choose the Kafka offsets that are safe to commit.
    pub fn state_horizon_ms(&self, stream: usize) -> Millis {
        self.rules
            .iter()
            .filter(|r| r.reads(stream))
            .map(|r| match &r.kind {
                RuleKind::Threshold(t) => t.for_ms,
                RuleKind::Window(w) => w.shape.horizon_ms(),
                RuleKind::Absence(a) => a.absent_for_ms,
                RuleKind::Geofence(g) => g.for_ms.saturating_add(g.confirm_for_ms),
                RuleKind::Sequence(q) => q.span_ms(),
            })
            .max()
            .unwrap_or(0)
    }

    /// Which fields of `stream` the rules read (keys, filters, conditions, aggregated and
    /// reported fields, positions, routes, speeds): the decoder parses only these.
    pub fn needed_fields(&self, stream: usize) -> Vec<bool> {
        use datafusion::physical_expr::utils::collect_columns;
        let def = &self.streams[stream];
        let mut needed = vec![false; def.fields.len()];
        let mut mark = |i: usize| {
            if let Some(n) = needed.get_mut(i) {
                *n = true;
            }
        };
        mark(def.time_field);
        def.key_fields.iter().for_each(|&k| mark(k));
        let mark_expr = |p: &Predicate, mark: &mut dyn FnMut(usize)| {
            collect_columns(&p.expr).iter().for_each(|c| mark(c.index()));
        };
        for rule in self.rules.iter().filter(|r| r.reads(stream)) {
            if let RuleKind::Sequence(q) = &rule.kind {
                for input in q.inputs.iter().filter(|i| i.stream == stream) {
                    input.key_fields.iter().for_each(|&k| mark(k));
                }
                for step in q.steps.iter().filter(|s| q.inputs[s.input].stream == stream) {
                    step.columns.iter().for_each(|&c| mark(c));
                }
                continue;
            }
            rule.key_fields.iter().for_each(|&k| mark(k));
            if let Some(f) = &rule.filter {
                mark_expr(f, &mut mark);
            }
            match &rule.kind {
                RuleKind::Threshold(t) => {
                    mark_expr(&t.condition, &mut mark);
                    if let Some(c) = &t.clear_condition {
                        mark_expr(c, &mut mark);
                    }
                    t.observed.iter().for_each(|&c| mark(c));
                }
                RuleKind::Window(w) => {
                    for a in &w.aggregates {
                        a.field.into_iter().for_each(&mut mark);
                        if let Some(f) = &a.filter {
                            mark_expr(f, &mut mark);
                        }
                    }
                }
                RuleKind::Absence(_) | RuleKind::Sequence(_) => {}
                RuleKind::Geofence(g) => {
                    mark(g.lat);
                    mark(g.lon);
                    g.route_field.into_iter().chain(g.speed_field).for_each(&mut mark);
                    if let Some(c) = &g.condition {
                        mark_expr(c, &mut mark);
                    }
                }
            }
        }
        needed
    }

    /// Rules of `stream` grouped by key columns: one routing pass per group.
    pub fn key_groups(&self, stream: usize) -> Vec<KeyGroup> {
        let mut groups: Vec<KeyGroup> = Vec::new();
        for (i, rule) in self.rules.iter().enumerate() {
            for (_, key_fields) in rule.inputs().into_iter().filter(|&(s, _)| s == stream) {
                match groups.iter_mut().find(|g| g.key_fields == key_fields) {
                    Some(g) => g.rules.push(i),
                    None => groups.push(KeyGroup { key_fields: key_fields.to_vec(), rules: vec![i] }),
                }
            }
        }
        groups
    }
}

/// Rules of one stream that share a key, and so a partitioning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyGroup {
    /// Key columns.
    pub key_fields: Vec<usize>,
    /// Indexes into [`Plan::rules`].
    pub rules: Vec<usize>,
}
