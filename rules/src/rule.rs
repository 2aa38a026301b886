//! Rules as written (YAML) → compiled [`RulePlan`]s.
//!
//! ```yaml
//! rules:
//!   - id: gas-methane-sustained          # unique
//!     name: Methane build-up
//!     kind: threshold                    # threshold | window | absence
//!     source: sensor                     # a stream of the config
//!     where: metric = 'ch4_lel'          # optional SQL pre-filter
//!     key: [device_id]                   # default: the stream's key
//!     condition: value >= 20
//!     for: 30s                           # threshold only
//!     clear_condition: value < 10        # threshold only (hysteresis)
//!     severity: critical                 # info | warning | major | critical
//!     category: emergency/gas
//!     labels: {team: gas}
//!     renotify: 10m                      # optional
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use gridwatch_engine::plan::{
    AbsencePlan, GeofenceEvent, GeofencePlan, Predicate, RuleKind, RuleMeta, RulePlan, Severity, ThresholdPlan,
};
use gridwatch_engine::schema::StreamDef;
use gridwatch_engine::zones::ZoneSet;

use crate::diagnostic::{Code, Diagnostics};
use crate::expr::{ExprPlanner, Site};
use crate::yaml::{Kind, Node, Reader};

const COMMON_KEYS: [&str; 11] =
    ["id", "name", "description", "kind", "source", "where", "key", "severity", "category", "labels", "renotify"];
const THRESHOLD_KEYS: [&str; 5] = ["condition", "for", "clear_condition", "consecutive", "order"];
const WINDOW_KEYS: [&str; 3] = ["window", "aggregates", "condition"];
const ABSENCE_KEYS: [&str; 1] = ["absent_for"];
const GEOFENCE_KEYS: [&str; 12] = [
    "zones",
    "event",
    "for",
    "margin_m",
    "confirm",
    "confirm_for",
    "condition",
    "active",
    "route_field",
    "route_table",
    "max_distance_m",
    "speed_field",
];
const KINDS: [&str; 5] = ["threshold", "window", "absence", "geofence", "sequence"];

/// A compiled rule with the position of its id (for duplicate detection).
#[derive(Debug)]
pub struct CompiledRule {
    /// The plan.
    pub plan: RulePlan,
    /// The node of its `id` value.
    pub id_node: Node,
}

/// Compiles one rule mapping. Returns None if it has errors (all reported).
pub fn compile_rule(
    node: &Node,
    r: &Reader,
    streams: &[Arc<StreamDef>],
    zones: &BTreeMap<String, Arc<ZoneSet>>,
    planner: &ExprPlanner,
    diags: &mut Diagnostics,
) -> Option<CompiledRule> {
    // Pick the allowed keys by kind so a threshold key on a window rule is reported.
    let kind_text = match &node.kind {
        Kind::Map(entries) => entries.iter().find_map(|(k, v)| match (&k.kind, &v.kind) {
            (Kind::Str(k), Kind::Str(v)) if k == "kind" => Some(v.clone()),
            _ => None,
        }),
        _ => None,
    };
    let mut allowed: Vec<&str> = COMMON_KEYS.to_vec();
    match kind_text.as_deref() {
        Some("sequence") => allowed = crate::sequence::SEQUENCE_KEYS.to_vec(),
        Some("threshold") => allowed.extend(THRESHOLD_KEYS),
        Some("window") => allowed.extend(WINDOW_KEYS),
        Some("absence") => allowed.extend(ABSENCE_KEYS),
        Some("geofence") => allowed.extend(GEOFENCE_KEYS),
        _ => {
            allowed.extend(THRESHOLD_KEYS);
            allowed.extend(WINDOW_KEYS);
            allowed.extend(ABSENCE_KEYS);
            allowed.extend(GEOFENCE_KEYS.iter().filter(|k| !allowed.contains(k)).collect::<Vec<_>>());
        }
    }
    let m = r.map(node, "a rule", &allowed, diags)?;
    let before = diags.len();
    let id_node = m.require("id", "a rule", r, diags);
    let id = id_node.and_then(|n| r.string(n, "id", diags));
    let what = match &id {
        Some(id) => format!("rule `{id}`"),
        None => "a rule".to_string(),
    };
    if let (Some(id), Some(n)) = (&id, id_node)
        && (id.is_empty() || id.chars().any(|c| c.is_whitespace()))
    {
        diags.push(
            r.error(Code::BadValue, n, format!("rule id `{id}` must be non-empty and contain no spaces"))
                .with_hint("use kebab-case, e.g. `gas-methane-sustained`"),
        );
    }
    let name = m.get("name").and_then(|n| r.string(n, "name", diags)).or_else(|| id.clone()).unwrap_or_default();
    let description = m.get("description").and_then(|n| r.string(n, "description", diags)).unwrap_or_default();
    let kind_node = m.require("kind", &what, r, diags);
    let kind = kind_node.and_then(|n| {
        let k = r.string(n, "kind", diags)?;
        if KINDS.contains(&k.as_str()) {
            Some(k)
        } else {
            let d = r.error(Code::BadValue, n, format!("unknown rule kind `{k}`"));
            diags.push(d.suggest(&k, &KINDS, "kinds"));
            None
        }
    });
    let is_sequence = kind.as_deref() == Some("sequence");
    let source = if is_sequence { None } else { m.require("source", &what, r, diags) };
    let stream = source.and_then(|n| {
        let s = r.string(n, "source", diags)?;
        match streams.iter().position(|d| d.name == s) {
            Some(i) => Some(i),
            None => {
                let names: Vec<&str> = streams.iter().map(|d| d.name.as_str()).collect();
                let d = r.error(Code::UnknownStream, n, format!("unknown stream `{s}` in `source` of {what}"));
                diags.push(d.suggest(&s, &names, "declared streams"));
                None
            }
        }
    });
    let severity = match m.get("severity") {
        None => Some(Severity::Warning),
        Some(n) => r.string(n, "severity", diags).and_then(|s| match Severity::parse(&s) {
            Some(sev) => Some(sev),
            None => {
                let d = r.error(Code::BadValue, n, format!("unknown severity `{s}`"));
                diags.push(d.suggest(&s, &Severity::NAMES, "severities"));
                None
            }
        }),
    };
    let category =
        m.get("category").and_then(|n| r.string(n, "category", diags)).unwrap_or_else(|| "uncategorized".into());
    let mut labels = BTreeMap::new();
    if let Some(n) = m.get("labels")
        && let Some(lm) = r.map(n, "`labels`", &[], diags)
    {
        for (k, _, v) in lm.entries() {
            if let Some(s) = r.string(v, k, diags) {
                labels.insert(k.to_string(), s);
            }
        }
    }
    let renotify_ms = m.get("renotify").and_then(|n| r.duration(n, "renotify", diags));
    if let (Some(ms), Some(n)) = (renotify_ms, m.get("renotify"))
        && ms <= 0
    {
        diags.push(r.error(Code::BadDuration, n, "`renotify` must be longer than zero"));
    }

    // The stream the rule is keyed on, its key, its filter and its kind.
    let body = if is_sequence {
        crate::sequence::compile(&m, r, streams, planner, &what, diags)
            .map(|c| (c.stream, c.key_fields, None, RuleKind::Sequence(c.plan)))
    } else {
        stream.and_then(|stream| {
            compile_single_stream(&m, r, streams, zones, planner, &what, stream, kind.as_deref(), diags)
        })
    };
    if diags.len() > before {
        return None;
    }
    let (stream, key_fields, filter, kind) = body?;
    let meta =
        RuleMeta { id: id?.as_str().into(), name, description, severity: severity?, category, labels, renotify_ms };
    Some(CompiledRule {
        plan: RulePlan { meta: Arc::new(meta), stream, key_fields, filter, kind },
        id_node: id_node?.clone(),
    })
}

/// The body of a rule over one stream (threshold, window, absence, geofence): its key, its
/// `where` and its kind. Reports every error it finds.
#[allow(clippy::too_many_arguments)]
fn compile_single_stream(
    m: &crate::yaml::Fields<'_>,
    r: &Reader,
    streams: &[Arc<StreamDef>],
    zones: &BTreeMap<String, Arc<ZoneSet>>,
    planner: &ExprPlanner,
    what: &str,
    stream: usize,
    kind: Option<&str>,
    diags: &mut Diagnostics,
) -> Option<(usize, Vec<usize>, Option<Predicate>, RuleKind)> {
    let def = &streams[stream];
    let schema = def.arrow_schema();
    let schema_name = format!("stream `{}`", def.name);
    let field_names: Vec<&str> = def.fields.iter().map(|f| f.name.as_str()).collect();
    let key_fields = match m.get("key") {
        None => Some(def.key_fields.clone()),
        Some(n) => r.string_list(n, "key", diags).map(|list| {
            let mut out = Vec::new();
            for (s, kn) in list {
                match def.field_index(&s) {
                    Some(i) => out.push(i),
                    None => {
                        let d = r.error(
                            Code::UnknownField,
                            &kn,
                            format!("unknown field `{s}` in `key` of {what}: {schema_name} has no such field"),
                        );
                        diags.push(d.suggest(&s, &field_names, "declared fields"));
                    }
                }
            }
            out
        }),
    };
    let filter = m.get("where").and_then(|n| {
        let sql = r.string(n, "where", diags)?;
        planner.predicate(&sql, &schema, &schema_name, Site { reader: r, node: n, what: "where" }, diags)
    });
    let kind = match kind {
        Some("threshold") => {
            let cond_node = m.require("condition", what, r, diags);
            let condition = cond_node.and_then(|n| {
                let sql = r.string(n, "condition", diags)?;
                planner.predicate(&sql, &schema, &schema_name, Site { reader: r, node: n, what: "condition" }, diags)
            });
            let clear = m.get("clear_condition").and_then(|n| {
                let sql = r.string(n, "clear_condition", diags)?;
                planner.predicate(
                    &sql,
                    &schema,
                    &schema_name,
                    Site { reader: r, node: n, what: "clear_condition" },
                    diags,
                )
            });
            let for_ms = m.get("for").and_then(|n| r.duration(n, "for", diags)).unwrap_or(0);
            let consecutive = match m.get("consecutive") {
                Some(n) => match r.uint(n, "consecutive", diags) {
                    Some(v) if (1..=1_000_000).contains(&v) => v as u32,
                    Some(v) => {
                        diags.push(
                            r.error(
                                Code::BadValue,
                                n,
                                format!("`consecutive` must be between 1 and 1000000, found {v}"),
                            )
                            .with_hint("the number of events in a row that must satisfy the condition, e.g. 3"),
                        );
                        1
                    }
                    None => 1,
                },
                None => 1,
            };
            let event_time_order = match m.get("order") {
                None => false,
                Some(n) => match r.string(n, "order", diags).as_deref() {
                    Some("arrival") => false,
                    Some("event_time") => true,
                    Some(other) => {
                        let d = r.error(Code::BadValue, n, format!("unknown order `{other}`"));
                        diags.push(d.suggest(other, &["arrival", "event_time"], "orders"));
                        false
                    }
                    None => false,
                },
            };
            condition.map(|c| {
                let mut observed = c.columns.clone();
                if let Some(cl) = &clear {
                    observed.extend(&cl.columns);
                }
                observed.sort_unstable();
                observed.dedup();
                RuleKind::Threshold(ThresholdPlan {
                    condition: c.predicate,
                    clear_condition: clear.map(|c| c.predicate),
                    for_ms,
                    consecutive,
                    observed,
                    event_time_order,
                })
            })
        }
        Some("absence") => m
            .require("absent_for", what, r, diags)
            .and_then(|n| {
                let ms = r.duration(n, "absent_for", diags)?;
                if ms <= 0 {
                    diags.push(r.error(Code::BadDuration, n, "`absent_for` must be longer than zero"));
                    return None;
                }
                Some(ms)
            })
            .map(|absent_for_ms| RuleKind::Absence(AbsencePlan { absent_for_ms })),
        Some("window") => crate::window::compile_window(m, r, def, planner, what, diags).map(RuleKind::Window),
        Some("geofence") => compile_geofence(m, r, def, zones, planner, what, diags).map(RuleKind::Geofence),
        _ => None,
    };
    Some((stream, key_fields?, filter.map(|f| f.predicate), kind?))
}

fn compile_geofence(
    m: &crate::yaml::Fields<'_>,
    r: &Reader,
    def: &StreamDef,
    zones: &BTreeMap<String, Arc<ZoneSet>>,
    planner: &ExprPlanner,
    what: &str,
    diags: &mut Diagnostics,
) -> Option<GeofencePlan> {
    let before = diags.len();
    let location = def.location;
    if location.is_none() {
        diags.push(
            r.error_at(
                Code::MissingKey,
                m.pos,
                1,
                format!("{what} is a geofence but stream `{}` declares no `location`", def.name),
            )
            .with_hint("add `location: {lat: lat, lon: lon}` to the stream"),
        );
    }
    let set = m.require("zones", what, r, diags).and_then(|n| {
        let name = r.string(n, "zones", diags)?;
        let found = zones.get(&name).cloned();
        if found.is_none() {
            let names: Vec<&str> = zones.keys().map(String::as_str).collect();
            let d = r.error(Code::UnknownStream, n, format!("unknown zone set `{name}`"));
            diags.push(d.suggest(&name, &names, "declared zone sets"));
        }
        found
    });
    let event = m.require("event", what, r, diags).and_then(|n| {
        let e = r.string(n, "event", diags)?;
        let parsed = GeofenceEvent::parse(&e);
        if parsed.is_none() {
            let d = r.error(Code::BadValue, n, format!("unknown geofence event `{e}`"));
            diags.push(d.suggest(&e, &GeofenceEvent::NAMES, "events"));
        }
        parsed
    });
    let for_ms = m.get("for").and_then(|n| r.duration(n, "for", diags)).unwrap_or(0);
    if event == Some(GeofenceEvent::Dwell) && for_ms <= 0 {
        diags.push(r.error_at(
            Code::MissingKey,
            m.pos,
            1,
            format!("{what}: `dwell` needs `for` (how long inside the same zone)"),
        ));
    }
    let meters = |key: &str, diags: &mut Diagnostics| -> Option<f64> {
        let n = m.get(key)?;
        match n.kind {
            Kind::Int(i) if i >= 0 => Some(i as f64),
            Kind::Float(f) if f >= 0.0 => Some(f),
            _ => {
                diags.push(r.error(Code::BadValue, n, format!("`{key}` must be a non-negative number of metres")));
                None
            }
        }
    };
    let margin_m = meters("margin_m", diags).unwrap_or(0.0);
    let max_distance_m = meters("max_distance_m", diags);
    let confirm = m.get("confirm").and_then(|n| r.uint(n, "confirm", diags)).map_or(1, |c| c.clamp(1, 1000) as u32);
    let field = |key: &str, diags: &mut Diagnostics| -> Option<Option<usize>> {
        let Some(n) = m.get(key) else { return Some(None) };
        let s = r.string(n, key, diags)?;
        match def.field_index(&s) {
            Some(i) => Some(Some(i)),
            None => {
                let names: Vec<&str> = def.fields.iter().map(|f| f.name.as_str()).collect();
                let d = r.error(
                    Code::UnknownField,
                    n,
                    format!("unknown field `{s}` in `{key}`: stream `{}` has no such field", def.name),
                );
                diags.push(d.suggest(&s, &names, "declared fields"));
                None
            }
        }
    };
    let confirm_for_ms = m.get("confirm_for").and_then(|n| r.duration(n, "confirm_for", diags)).unwrap_or(0);
    let route_field = field("route_field", diags).flatten();
    let route_table = m.get("route_table").and_then(|n| {
        let file = r.string(n, "route_table", diags)?;
        let base = r.source.path.parent().unwrap_or(std::path::Path::new("."));
        load_route_table(&base.join(&file), set.as_deref(), r, n, diags)
    });
    let mut speed_field = field("speed_field", diags).flatten();
    match event {
        Some(GeofenceEvent::Corridor)
            if (route_field.is_none() && route_table.is_none()) || max_distance_m.is_none() =>
        {
            diags.push(
                r.error_at(
                    Code::MissingKey,
                    m.pos,
                    1,
                    format!(
                        "{what}: `corridor` needs `route_field` (the event field naming the route) and `max_distance_m`"
                    ),
                )
                .with_hint("or `route_table`: a CSV file `entity,route` assigning routes to entities"),
            );
        }
        Some(GeofenceEvent::Speeding) => {
            speed_field = speed_field.or_else(|| def.field_index("speed_kmh"));
            if speed_field.is_none() {
                diags.push(r.error_at(
                    Code::MissingKey,
                    m.pos,
                    1,
                    format!("{what}: `speeding` needs `speed_field` (km/h)"),
                ));
            }
        }
        _ => {}
    }
    let schema = def.arrow_schema();
    let condition = m.get("condition").and_then(|n| {
        let sql = r.string(n, "condition", diags)?;
        planner.predicate(
            &sql,
            &schema,
            &format!("stream `{}`", def.name),
            Site { reader: r, node: n, what: "condition" },
            diags,
        )
    });
    let active = m.get("active").and_then(|n| crate::config::parse_active(n, r, diags));
    if diags.len() > before {
        return None;
    }
    let (lat, lon) = location?;
    Some(GeofencePlan {
        zones: set?,
        event: event?,
        lat,
        lon,
        for_ms,
        margin_m,
        confirm,
        confirm_for_ms,
        condition: condition.map(|c| c.predicate),
        active,
        route_field,
        route_table,
        max_distance_m: max_distance_m.unwrap_or(0.0),
        speed_field,
    })
}

/// Reads a CSV of `entity,route` lines (a header line `entity,route` and `#` comments are
/// skipped); every route must be a zone of the set.
fn load_route_table(
    path: &std::path::Path,
    set: Option<&ZoneSet>,
    r: &Reader,
    n: &Node,
    diags: &mut Diagnostics,
) -> Option<Arc<std::collections::BTreeMap<String, String>>> {
    let rows = match crate::table::read_pairs(path, ["entity", "route"], false) {
        Ok(rows) => rows,
        Err(e) => {
            diags.push(r.error(Code::Io, n, format!("cannot read route table `{}`: {e}", path.display())));
            return None;
        }
    };
    let mut table = std::collections::BTreeMap::new();
    let before = diags.len();
    for row in rows {
        if let Some(set) = set
            && set.index_of(&row.value).is_none()
        {
            diags.push(r.error(
                Code::BadValue,
                n,
                format!("{}:{}: route `{}` is not a zone of set `{}`", path.display(), row.line, row.value, set.name),
            ));
            continue;
        }
        table.insert(row.key, row.value);
    }
    (diags.len() == before).then(|| Arc::new(table))
}
