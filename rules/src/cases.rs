//! The `cases:` block of the config: the alert stage (silences, inhibition, flapping), case
//! grouping, dispatch, SLA table, case sinks and the feedback stream.
//!
//! ```yaml
//! cases:
//!   store: out/cases.db                    # SQLite file, or postgres://… / "host=… user=…"
//!   events_file: out/case_events.ndjson    # every case event with the case after it
//!   kafka_topic: city.cases                # case events to Kafka (with `gridwatch run --kafka`)
//!   webhook: {url: "http://…", batch: 100, linger: 200ms, queue: 10000, send: [cases, alerts]}
//!   feedback: {file: feedback.ndjson}      # or {topic: city.case_feedback} (Kafka),
//!                                          # or {simulate: {seed: 7}} (the example city's crew)
//!   grouping:                              # first match wins; default: by [category, key], 24h
//!     - {match: {category: emergency/gas}, by: [category, grid], window: 2h}
//!     - {match: {stream: detection}, by: [category], within_m: 50, window: 2h}
//!   dispatch:                              # owner first, then territory, then the default
//!     registry: registry/components.csv    # component_id,owner (CSV with header, or NDJSON)
//!     grid: {zones: unit_grid, id: grid_id, unit: unit}
//!     default_unit: city-operations-centre
//!   sla:                                   # first matching row; `category` is a path prefix
//!     - {category: emergency/gas, severity: critical, within: 30m}
//!     - {within: 24h}
//!   reminders: [0.5, 0.8]                  # fractions of the time limit
//!   escalation: [1.0, 1.5]                 # level 1 at the deadline, level 2 later
//!   key: {categories: [emergency], grids: [G0042]}
//!   titles: {emergency/gas: Gas build-up}
//!   silences:
//!     - {id: works-1, match: {rule: sensor-offline}, from: 2026-11-23T00:00:00Z, until: 2026-11-23T02:00:00Z}
//!   inhibit:
//!     - {source: {rule: sensor-offline}, target: {stream: sensor}, equal: [key]}
//!   flapping: {changes: 4, within: 30m, stable_for: 15m}
//!   exclude:                               # notifications only: never open a case
//!     - {category: event/muck-truck/trip}
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use gridwatch_cases::config::{
    CasesConfig, DispatchConfig, Flapping, GridLayer, GroupRule, Inhibition, KeyList, KeyPart, Matcher, Silence,
    SlaRule,
};
use gridwatch_engine::plan::Severity;
use gridwatch_engine::schema::StreamDef;
use gridwatch_engine::time::parse_timestamp;
use gridwatch_engine::zones::ZoneSet;

use crate::diagnostic::{Code, Diagnostics};
use crate::kafka::expand_env;
use crate::yaml::{Kind, Node, Reader};

/// Where case-feedback events come from.
#[derive(Debug, Clone, PartialEq)]
pub enum FeedbackSource {
    /// None: cases only move by timers.
    None,
    /// An NDJSON file of feedback events.
    File(PathBuf),
    /// A Kafka topic (connection from the `kafka:` block), read from its beginning.
    Kafka(String),
    /// The simulated crew of the example city.
    Simulate {
        /// Seed of the crew's choices.
        seed: u64,
        /// Unit that takes reassigned cases.
        reassign_to: String,
    },
}

pub use crate::sinks::WebhookConfig;

/// The resolved `cases:` block.
#[derive(Debug, Clone)]
pub struct CasesSettings {
    /// The stage's configuration.
    pub stage: CasesConfig,
    /// Sinks written with the keys of earlier versions (`store`, `events_file`,
    /// `kafka_topic`, `webhook`), now ordinary sinks (see [`crate::sinks`]).
    pub legacy_sinks: Vec<crate::sinks::SinkSpec>,
    /// Deprecation warnings for them, located.
    pub warnings: Vec<String>,
    /// Feedback stream.
    pub feedback: FeedbackSource,
    /// Rule ids named by matchers, checked against the rules once they are compiled.
    pub rule_refs: Vec<(String, Node)>,
}

const KEYS: [&str; 18] = [
    "exclude",
    "store",
    "events_file",
    "kafka_topic",
    "webhook",
    "feedback",
    "grouping",
    "dispatch",
    "sla",
    "reminders",
    "escalation",
    "key",
    "titles",
    "silences",
    "inhibit",
    "flapping",
    "evidence",
    "locations",
];

/// Reads the `cases:` block. `zones` and `streams` are the config's, for the grid layer
/// and each stream's location fields.
pub fn parse_cases(
    node: &Node,
    base: &Path,
    zones: &BTreeMap<String, Arc<ZoneSet>>,
    streams: &[Arc<StreamDef>],
    r: &Reader,
    diags: &mut Diagnostics,
) -> Option<CasesSettings> {
    let m = r.map(node, "`cases`", &KEYS, diags)?;
    let mut p = Parser { r, diags, rule_refs: Vec::new() };
    let mut stage = CasesConfig::default();
    for s in streams {
        if let Some((lat, lon)) = s.location {
            stage.locations.insert(s.name.clone(), (s.fields[lat].name.clone(), s.fields[lon].name.clone()));
        }
    }
    let (legacy_sinks, warnings) = legacy_case_sinks(&m, base, p.r, p.diags);
    let feedback = m.get("feedback").map_or(FeedbackSource::None, |n| p.feedback(n, base));
    if let Some(n) = m.get("grouping") {
        stage.grouping = p.list(n, "grouping", |p, item| p.group(item));
    }
    if let Some(n) = m.get("dispatch") {
        stage.dispatch = p.dispatch(n, base, zones).unwrap_or(stage.dispatch);
    }
    if let Some(n) = m.get("sla") {
        stage.sla = p.list(n, "sla", |p, item| p.sla(item));
    }
    if let Some(n) = m.get("reminders") {
        stage.reminders = p.fractions(n, "reminders");
    }
    if let Some(n) = m.get("escalation") {
        stage.escalations = p.fractions(n, "escalation");
    }
    if let Some(n) = m.get("key") {
        stage.key_list = p.key_list(n).unwrap_or_default();
    }
    if let Some(n) = m.get("titles")
        && let Some(tm) = p.r.map(n, "`titles`", &[], p.diags)
    {
        for (cat, _, v) in tm.entries() {
            if let Some(t) = p.r.string(v, "title", p.diags) {
                stage.titles.push((cat.to_string(), t));
            }
        }
    }
    if let Some(n) = m.get("exclude") {
        stage.exclude = p.list(n, "exclude", |p, item| p.matcher(item, "an `exclude` matcher"));
    }
    if let Some(n) = m.get("silences") {
        stage.silences = p.list(n, "silences", |p, item| p.silence(item));
    }
    if let Some(n) = m.get("inhibit") {
        stage.inhibitions = p.list(n, "inhibit", |p, item| p.inhibition(item));
    }
    if let Some(n) = m.get("flapping") {
        stage.flapping = p.flapping(n);
    }
    if let Some(n) = m.get("evidence") {
        stage.evidence_limit = p.r.uint(n, "evidence", p.diags).map_or(stage.evidence_limit, |v| v as usize);
    }
    let rule_refs = p.rule_refs;
    Some(CasesSettings { stage, legacy_sinks, warnings, feedback, rule_refs })
}

struct Parser<'a> {
    r: &'a Reader,
    diags: &'a mut Diagnostics,
    rule_refs: Vec<(String, Node)>,
}

impl Parser<'_> {
    fn list<T>(&mut self, node: &Node, what: &str, mut item: impl FnMut(&mut Self, &Node) -> Option<T>) -> Vec<T> {
        let Kind::Seq(items) = &node.kind else {
            self.diags.push(self.r.error(
                Code::WrongType,
                node,
                format!("`{what}` must be a list, found {}", node.kind.describe()),
            ));
            return Vec::new();
        };
        items.iter().filter_map(|i| item(self, i)).collect()
    }

    fn strings(&mut self, node: &Node, what: &str) -> Vec<(String, Node)> {
        self.r.string_list(node, what, self.diags).unwrap_or_default()
    }

    fn matcher(&mut self, node: &Node, what: &str) -> Option<Matcher> {
        if matches!(node.kind, Kind::Null) {
            return Some(Matcher::default());
        }
        let m =
            self.r.map(node, what, &["rule", "category", "stream", "severity", "key", "grid", "labels"], self.diags)?;
        let mut out = Matcher::default();
        if let Some(n) = m.get("rule") {
            let rules = self.strings(n, "rule");
            out.rule = rules.iter().map(|(s, _)| s.clone()).collect();
            self.rule_refs.extend(rules);
        }
        let list =
            |p: &mut Self, key: &str| m.get(key).map(|n| p.strings(n, key).into_iter().map(|(s, _)| s).collect());
        out.category = list(self, "category").unwrap_or_default();
        out.stream = list(self, "stream").unwrap_or_default();
        out.key = list(self, "key").unwrap_or_default();
        out.grid = list(self, "grid").unwrap_or_default();
        if let Some(n) = m.get("severity") {
            out.severity_min = self.severity(n);
        }
        if let Some(n) = m.get("labels")
            && let Some(lm) = self.r.map(n, "`labels`", &[], self.diags)
        {
            for (k, _, v) in lm.entries() {
                if let Some(v) = self.r.string(v, k, self.diags) {
                    out.labels.push((k.to_string(), v));
                }
            }
        }
        Some(out)
    }

    fn severity(&mut self, n: &Node) -> Option<Severity> {
        let s = self.r.string(n, "severity", self.diags)?;
        let sev = Severity::parse(&s);
        if sev.is_none() {
            self.diags.push(self.r.error(Code::BadValue, n, format!("unknown severity `{s}`")).suggest(
                &s,
                &Severity::NAMES,
                "severities",
            ));
        }
        sev
    }

    fn key_parts(&mut self, n: &Node, what: &str) -> Vec<KeyPart> {
        let mut out = Vec::new();
        for (s, node) in self.strings(n, what) {
            match KeyPart::parse(&s) {
                Some(k) => out.push(k),
                None => self.diags.push(
                    self.r.error(Code::BadValue, &node, format!("unknown part `{s}` in `{what}`")).suggest(
                        &s,
                        &KeyPart::NAMES,
                        "parts",
                    ),
                ),
            }
        }
        out
    }

    fn positive_duration(&mut self, n: &Node, what: &str) -> Option<i64> {
        let d = self.r.duration(n, what, self.diags)?;
        if d <= 0 {
            self.diags.push(self.r.error(Code::BadDuration, n, format!("`{what}` must be longer than zero")));
            return None;
        }
        Some(d)
    }

    fn group(&mut self, node: &Node) -> Option<GroupRule> {
        let m = self.r.map(node, "a grouping rule", &["match", "by", "window", "within_m"], self.diags)?;
        let matcher = match m.get("match") {
            Some(n) => self.matcher(n, "`match`")?,
            None => Matcher::default(),
        };
        let by_node = m.require("by", "a grouping rule", self.r, self.diags)?;
        let by = self.key_parts(by_node, "by");
        let window_ms = match m.get("window") {
            Some(n) => self.positive_duration(n, "window")?,
            None => gridwatch_cases::config::DEFAULT_WINDOW_MS,
        };
        let within_m = match m.get("within_m") {
            Some(n) => Some(self.positive_number(n, "within_m")?),
            None => None,
        };
        Some(GroupRule { matcher, by, window_ms, within_m })
    }

    fn positive_number(&mut self, n: &Node, what: &str) -> Option<f64> {
        match n.kind {
            Kind::Int(i) if i > 0 => Some(i as f64),
            Kind::Float(f) if f > 0.0 => Some(f),
            _ => {
                self.diags.push(self.r.error(Code::BadValue, n, format!("`{what}` must be a positive number")));
                None
            }
        }
    }

    fn fractions(&mut self, node: &Node, what: &str) -> Vec<f64> {
        let Kind::Seq(items) = &node.kind else {
            self.diags.push(self.r.error(Code::WrongType, node, format!("`{what}` must be a list of fractions")));
            return Vec::new();
        };
        let mut out: Vec<f64> = Vec::new();
        for n in items {
            let Some(f) = self.positive_number(n, what) else { continue };
            if out.last().is_some_and(|&prev| f <= prev) {
                self.diags.push(
                    self.r
                        .error(Code::BadValue, n, format!("`{what}` must increase: {f} follows {}", out[out.len() - 1]))
                        .with_hint("list the fractions of the time limit in order, e.g. [0.5, 0.8]"),
                );
                continue;
            }
            out.push(f);
        }
        out
    }

    fn sla(&mut self, node: &Node) -> Option<SlaRule> {
        let m = self.r.map(node, "an SLA row", &["category", "severity", "within"], self.diags)?;
        let category = m.get("category").and_then(|n| self.r.string(n, "category", self.diags)).unwrap_or_default();
        let severity = match m.get("severity") {
            Some(n) => Some(self.severity(n)?),
            None => None,
        };
        let within = m.require("within", "an SLA row", self.r, self.diags)?;
        Some(SlaRule { category, severity, within_ms: self.positive_duration(within, "within")? })
    }

    fn key_list(&mut self, node: &Node) -> Option<KeyList> {
        let m = self.r.map(node, "`key`", &["categories", "grids"], self.diags)?;
        let list = |p: &mut Self, k: &str| {
            m.get(k).map(|n| p.strings(n, k).into_iter().map(|(s, _)| s).collect()).unwrap_or_default()
        };
        Some(KeyList { categories: list(self, "categories"), grids: list(self, "grids") })
    }

    fn timestamp(&mut self, n: &Node, what: &str) -> Option<i64> {
        let s = self.r.string(n, what, self.diags)?;
        let t = parse_timestamp(&s);
        if t.is_none() {
            self.diags.push(
                self.r
                    .error(Code::BadValue, n, format!("`{what}` must be an RFC 3339 timestamp, found `{s}`"))
                    .with_hint("for example 2026-11-23T08:00:00Z"),
            );
        }
        t
    }

    fn silence(&mut self, node: &Node) -> Option<Silence> {
        let m = self.r.map(node, "a silence", &["id", "match", "from", "until", "comment"], self.diags)?;
        let id = m.require("id", "a silence", self.r, self.diags).and_then(|n| self.r.string(n, "id", self.diags));
        let match_node = m.require("match", "a silence", self.r, self.diags)?;
        let matcher = self.matcher(match_node, "`match`");
        let starts = m.get("from").map_or(Some(i64::MIN), |n| self.timestamp(n, "from"));
        let ends = m.get("until").map_or(Some(i64::MAX), |n| self.timestamp(n, "until"));
        let comment = m.get("comment").and_then(|n| self.r.string(n, "comment", self.diags)).unwrap_or_default();
        let (starts, ends) = (starts?, ends?);
        if ends <= starts {
            self.diags.push(self.r.error(Code::BadValue, node, "a silence must end after it starts"));
            return None;
        }
        Some(Silence { id: id?, matcher: matcher?, starts, ends, comment })
    }

    fn inhibition(&mut self, node: &Node) -> Option<Inhibition> {
        let m = self.r.map(node, "an inhibition rule", &["source", "target", "equal"], self.diags)?;
        let source_node = m.require("source", "an inhibition rule", self.r, self.diags)?;
        let target_node = m.require("target", "an inhibition rule", self.r, self.diags)?;
        let source = self.matcher(source_node, "`source`");
        let target = self.matcher(target_node, "`target`");
        let equal = m.get("equal").map(|n| self.key_parts(n, "equal")).unwrap_or_default();
        Some(Inhibition { source: source?, target: target?, equal })
    }

    fn flapping(&mut self, node: &Node) -> Option<Flapping> {
        let m = self.r.map(node, "`flapping`", &["changes", "within", "stable_for"], self.diags)?;
        let changes = self.r.uint(m.require("changes", "`flapping`", self.r, self.diags)?, "changes", self.diags);
        let within_node = m.require("within", "`flapping`", self.r, self.diags)?;
        let within = self.positive_duration(within_node, "within");
        let stable = match m.get("stable_for") {
            Some(n) => self.positive_duration(n, "stable_for"),
            None => within,
        };
        Some(Flapping { changes: changes? as u32, window_ms: within?, stable_ms: stable? })
    }

    fn dispatch(&mut self, node: &Node, base: &Path, zones: &BTreeMap<String, Arc<ZoneSet>>) -> Option<DispatchConfig> {
        let m = self.r.map(node, "`dispatch`", &["registry", "grid", "default_unit", "component_field"], self.diags)?;
        let mut d = DispatchConfig { default_unit: "city-operations-centre".into(), ..Default::default() };
        if let Some(n) = m.get("default_unit") {
            d.default_unit = self.r.string(n, "default_unit", self.diags).unwrap_or(d.default_unit);
        }
        d.component_field = m.get("component_field").and_then(|n| self.r.string(n, "component_field", self.diags));
        if let Some(n) = m.get("registry")
            && let Some(file) = self.r.string(n, "registry", self.diags)
        {
            match load_registry(&base.join(&file)) {
                Ok(owners) => d.owners = owners,
                Err(why) => self.diags.push(
                    self.r
                        .error(Code::Io, n, format!("cannot load the component registry `{file}`: {why}"))
                        .with_hint("a CSV file with a header `component_id,owner`, or NDJSON lines {\"component_id\": …, \"owner\": …}"),
                ),
            }
        }
        if let Some(n) = m.get("grid")
            && let Some(gm) = self.r.map(n, "`grid`", &["zones", "id", "unit"], self.diags)
        {
            let set = gm.require("zones", "`grid`", self.r, self.diags).and_then(|zn| {
                let name = self.r.string(zn, "zones", self.diags)?;
                let set = zones.get(&name).cloned();
                if set.is_none() {
                    let d = self.r.error(Code::BadValue, zn, format!("unknown zone set `{name}`"));
                    self.diags.push(if zones.is_empty() {
                        d.with_hint("declare the grid layer under the top-level `zones:`, e.g. `unit_grid: {file: zones/unit_grid.geojson}`")
                    } else {
                        d.suggest(&name, &zones.keys().map(String::as_str).collect::<Vec<_>>(), "zone sets")
                    });
                }
                set
            });
            let field = |p: &mut Self, k: &str, default: &str| {
                gm.get(k).and_then(|n| p.r.string(n, k, p.diags)).unwrap_or_else(|| default.to_string())
            };
            let id_field = field(self, "id", "grid_id");
            let unit_field = field(self, "unit", "unit");
            if let Some(zones) = set {
                d.grid = Some(GridLayer { zones, id_field, unit_field });
            }
        }
        Some(d)
    }

    fn feedback(&mut self, node: &Node, base: &Path) -> FeedbackSource {
        let Some(m) = self.r.map(node, "`feedback`", &["file", "topic", "simulate"], self.diags) else {
            return FeedbackSource::None;
        };
        if let Some(n) = m.get("topic") {
            return self.r.string(n, "topic", self.diags).map_or(FeedbackSource::None, FeedbackSource::Kafka);
        }
        if let Some(n) = m.get("file") {
            return self
                .r
                .string(n, "file", self.diags)
                .map_or(FeedbackSource::None, |f| FeedbackSource::File(base.join(f)));
        }
        if let Some(n) = m.get("simulate") {
            let mut seed = 7;
            let mut reassign_to = "city-operations-centre".to_string();
            if !matches!(n.kind, Kind::Null)
                && let Some(sm) = self.r.map(n, "`simulate`", &["seed", "reassign_to"], self.diags)
            {
                if let Some(s) = sm.get("seed") {
                    seed = self.r.uint(s, "seed", self.diags).unwrap_or(seed);
                }
                if let Some(s) = sm.get("reassign_to") {
                    reassign_to = self.r.string(s, "reassign_to", self.diags).unwrap_or(reassign_to);
                }
            }
            return FeedbackSource::Simulate { seed, reassign_to };
        }
        FeedbackSource::None
    }
}

/// The case sinks of earlier versions (`store`, `events_file`, `kafka_topic`, `webhook` in
/// `cases:`) as ordinary sinks, with a deprecation warning each.
fn legacy_case_sinks(
    m: &crate::yaml::Fields<'_>,
    base: &Path,
    r: &Reader,
    diags: &mut Diagnostics,
) -> (Vec<crate::sinks::SinkSpec>, Vec<String>) {
    use crate::sinks::{RecordKind, SinkKind, SinkSpec, parse_webhook, path_value, resolve_store};
    let mut sinks = Vec::new();
    let mut warnings = Vec::new();
    let mut warn = |key: &str, node: &Node, instead: &str| {
        warnings.push(format!(
            "{}: `cases.{key}` is deprecated: add a sink to `sinks:` instead, e.g. `{instead}`",
            r.location(node)
        ));
    };
    if let Some(n) = m.get("store")
        && let Some(s) = r.string(n, "store", diags)
        && let Some(s) = expand_env(&s, n, r, diags)
    {
        warn("store", n, "store: {kind: case_store, location: out/cases.db, send: [cases]}");
        sinks.push(SinkSpec::new(
            "cases.store",
            SinkKind::CaseStore { location: resolve_store(&s, base) },
            &[RecordKind::Cases],
        ));
    }
    if let Some(n) = m.get("events_file")
        && let Some(path) = path_value(n, "events_file", base, r, diags)
    {
        warn("events_file", n, "case_events: {kind: file, path: out/case_events.ndjson, send: [cases]}");
        sinks.push(SinkSpec::new("cases.events_file", SinkKind::File { path }, &[RecordKind::Cases]));
    }
    if let Some(n) = m.get("kafka_topic")
        && let Some(topic) = r.string(n, "kafka_topic", diags)
    {
        warn("kafka_topic", n, "case_topic: {kind: kafka, topic: city.cases, send: [cases], when: kafka}");
        let mut spec = SinkSpec::new("cases.kafka_topic", SinkKind::Kafka { topic }, &[RecordKind::Cases]);
        spec.only_with_kafka = true;
        sinks.push(spec);
    }
    if let Some(n) = m.get("webhook") {
        warn("webhook", n, "ops: {kind: webhook, url: \"http://…\", send: [cases]}");
        if let Some(fields) =
            r.map(n, "`webhook`", &["url", "batch", "linger", "queue", "headers", "dead_letter", "send"], diags)
            && let Some(w) = parse_webhook(n, "`webhook`", base, r, diags)
        {
            let mut send = Vec::new();
            match fields.get("send") {
                None => send.push(RecordKind::Cases),
                Some(sn) => {
                    for (s, item) in r.string_list(sn, "send", diags).unwrap_or_default() {
                        match s.as_str() {
                            "cases" => send.push(RecordKind::Cases),
                            "alerts" => send.push(RecordKind::Alerts),
                            _ => diags.push(
                                r.error(Code::BadValue, &item, format!("unknown `send` value `{s}`")).suggest(
                                    &s,
                                    &["cases", "alerts"],
                                    "values",
                                ),
                            ),
                        }
                    }
                }
            }
            sinks.push(SinkSpec::new("cases.webhook", SinkKind::Webhook(w), &send));
        }
    }
    (sinks, warnings)
}

/// Reads a component registry: CSV with a `component_id,owner` header (read with the `csv`
/// crate: quoted fields, BOM, CRLF), or NDJSON objects with those keys. A component listed
/// twice with different owners is an error. The error names the line.
pub fn load_registry(path: &Path) -> Result<HashMap<String, String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let rows: Vec<crate::table::Row> = if text.trim_start_matches('\u{feff}').trim_start().starts_with('{') {
        let mut rows = Vec::new();
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#')) {
            let v: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("line {}: {e}", i + 1))?;
            let get = |k: &str| v.get(k).and_then(|x| x.as_str()).filter(|s| !s.is_empty()).map(str::to_string);
            match (get("component_id"), get("owner")) {
                (Some(key), Some(value)) => rows.push(crate::table::Row { line: i as u64 + 1, key, value }),
                _ => return Err(format!("line {}: needs a component_id and an owner", i + 1)),
            }
        }
        rows
    } else {
        crate::table::read_pairs(path, ["component_id", "owner"], true)?
    };
    let mut owners: HashMap<String, (String, u64)> = HashMap::new();
    for row in rows {
        if let Some((owner, line)) = owners.get(&row.key)
            && *owner != row.value
        {
            return Err(format!(
                "line {}: component `{}` is owned by `{}`, but line {line} says `{owner}`",
                row.line, row.key, row.value
            ));
        }
        owners.insert(row.key, (row.value, row.line));
    }
    Ok(owners.into_iter().map(|(k, (v, _))| (k, v)).collect())
}

#[cfg(test)]
mod tests {
    use super::load_registry;

    fn load(text: &str) -> Result<Vec<(String, String)>, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("components.csv");
        std::fs::write(&path, text).unwrap();
        let mut v: Vec<(String, String)> = load_registry(&path)?.into_iter().collect();
        v.sort();
        Ok(v)
    }

    #[test]
    fn an_owner_with_a_comma_is_read_whole() {
        let owners = load("component_id,owner\r\ngas-0001,\"Qingdao Gas, Shibei branch\"\r\nmh-1,Water\r\n").unwrap();
        assert_eq!(owners[0], ("gas-0001".into(), "Qingdao Gas, Shibei branch".into()));
        assert_eq!(owners[1], ("mh-1".into(), "Water".into()));
        // Unquoted, the comma makes a third field: an error, not an owner cut at the comma.
        let e = load("component_id,owner\ngas-0001,Qingdao Gas, Shibei branch\n").unwrap_err();
        assert!(e.contains("line 2: 3 fields"), "{e}");
    }

    #[test]
    fn a_component_with_two_owners_is_an_error() {
        let e = load("component_id,owner\ngas-1,Gas\ngas-1,Water\n").unwrap_err();
        assert_eq!(e, "line 3: component `gas-1` is owned by `Water`, but line 2 says `Gas`");
        assert!(load("component_id,owner\ngas-1,Gas\ngas-1,Gas\n").is_ok(), "a repeated identical row is fine");
    }

    #[test]
    fn ndjson_registries_still_work() {
        let owners = load("{\"component_id\":\"a\",\"owner\":\"X, Y\"}\n").unwrap();
        assert_eq!(owners, vec![("a".into(), "X, Y".into())]);
    }
}
