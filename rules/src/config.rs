//! The service config file (`gridwatch.yaml`): streams, rule files, source, sinks, engine.
//!
//! ```yaml
//! streams:
//!   sensor:
//!     time_field: ts
//!     key: [device_id]
//!     max_out_of_orderness: 10s
//!     idle_timeout: 2m
//!     late_events: dead_letter        # or drop
//!     fields:
//!       ts: timestamp
//!       device_id: string
//!       value: float
//!       unit: string?                 # `?` = optional
//! rules: [rules/]                     # files or directories, relative to this file
//! source:
//!   generator: {seed: 42, duration: 6h}
//!   # or: file: events.ndjson
//! sinks:
//!   stdout: true
//!   alerts_file: out/alerts.ndjson
//!   dead_letter_file: out/dead_letter.ndjson
//! engine: {workers: 2, batch_size: 4096, linger: 5ms}
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::collections::BTreeMap;

use gridwatch_engine::schema::{Enrichment, EpochUnit, FieldDef, FieldType, LatePolicy, StreamDef};
use gridwatch_engine::time::{Millis, parse_timestamp};
use gridwatch_engine::zones::{ActiveWindow, ZoneSet};

use crate::diagnostic::{Code, Diagnostics, did_you_mean};
use crate::kafka::{self, KafkaConfig};
use crate::yaml::{Kind, Node, Reader};
use crate::zones::ZoneSetConfig;

/// The seeded example-city generator's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratorConfig {
    /// Random seed: the same seed gives the same events.
    pub seed: u64,
    /// Simulated event-time span.
    pub duration_ms: Millis,
    /// Event time of the first event.
    pub start_ms: Millis,
    /// Multiplies the number of devices, vehicles and cameras.
    pub scale: u32,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
            seed: 42,
            duration_ms: 6 * 3_600_000,
            start_ms: parse_timestamp("2026-11-23T00:00:00Z").unwrap_or(0),
            scale: 1,
        }
    }
}

/// Where events come from.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceConfig {
    /// The built-in example-city generator.
    Generator(GeneratorConfig),
    /// An NDJSON file; each line names its stream in a `stream` field.
    File {
        /// Path (relative paths are relative to the config file).
        path: PathBuf,
    },
    /// Kafka topics, as set in [`Config::kafka`].
    Kafka,
    /// An MQTT broker's topics.
    Mqtt(crate::sources::MqttConfig),
    /// HTTP ingest: `POST /ingest/{stream}`.
    Http(crate::sources::HttpIngestConfig),
}

/// Engine tuning.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EngineConfig {
    /// Partition workers (default: number of cores).
    pub workers: Option<usize>,
    /// Decoder threads (default: number of cores; 0 decodes on the ingest thread).
    pub decoders: Option<usize>,
    /// Rows per batch (default 4096).
    pub batch_size: Option<usize>,
    /// How long a partly filled batch may wait for more rows (default 5 ms).
    pub linger_ms: Option<Millis>,
    /// Largest event (one line, one message) accepted; larger ones are dead-lettered
    /// (default 1 MiB).
    pub max_event_bytes: Option<usize>,
}

/// A parsed config file.
#[derive(Debug, Clone)]
pub struct Config {
    /// The config file.
    pub path: PathBuf,
    /// Declared streams.
    pub streams: Vec<Arc<StreamDef>>,
    /// Rule files and directories, resolved against the config's directory.
    pub rule_paths: Vec<PathBuf>,
    /// Event source.
    pub source: SourceConfig,
    /// Named sinks (see [`crate::sinks`]), including those written with the keys of
    /// earlier versions.
    pub sinks: Vec<crate::sinks::SinkSpec>,
    /// Deprecations and other warnings, located: printed, never fatal.
    pub warnings: Vec<String>,
    /// Engine tuning.
    pub engine: EngineConfig,
    /// Zone sets by name.
    pub zones: BTreeMap<String, Arc<ZoneSet>>,
    /// Kafka connection, topics and sink topics, if any `kafka:` block is present.
    pub kafka: Option<KafkaConfig>,
    /// The alert and case stage, if a `cases:` block is present.
    pub cases: Option<crate::cases::CasesSettings>,
    /// Snapshots of the running state, if a `checkpoint:` block is present.
    pub checkpoint: Option<CheckpointConfig>,
}

/// `checkpoint:` — snapshots of the running state (see the runtime's snapshot module).
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointConfig {
    /// Directory of the snapshots (`state_dir`), resolved against the config's directory.
    pub state_dir: PathBuf,
    /// Time between snapshots (`interval`, default 30 s; 0: at every barrier).
    pub interval_ms: Millis,
    /// Snapshots kept (`keep`, default 3).
    pub keep: usize,
}

/// Default time between snapshots.
pub const DEFAULT_CHECKPOINT_INTERVAL_MS: Millis = 30_000;

impl Config {
    /// The directory relative paths are resolved against.
    pub fn base_dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }
}

const TOP_KEYS: [&str; 9] = ["streams", "rules", "source", "sinks", "engine", "zones", "kafka", "cases", "checkpoint"];
/// How far ahead of its arrival (live sources) or of the stream's recent event times
/// (replays) an event may be by default: catches wrong clocks and time-zone mistakes, and
/// tolerates devices a few minutes fast.
pub const DEFAULT_MAX_FUTURE_MS: Millis = 5 * 60_000;

const STREAM_KEYS: [&str; 11] = [
    "fields",
    "time_field",
    "key",
    "max_out_of_orderness",
    "idle_timeout",
    "late_events",
    "max_future",
    "time_unit",
    "location",
    "enrich",
    "kafka",
];

/// Reads a config document. Problems go to `diags`; the result is as complete as possible.
pub fn parse_config(path: &Path, root: &Node, r: &Reader, diags: &mut Diagnostics) -> Config {
    let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let mut cfg = Config {
        path: path.to_path_buf(),
        streams: Vec::new(),
        rule_paths: Vec::new(),
        source: SourceConfig::Generator(GeneratorConfig::default()),
        sinks: crate::sinks::default_sinks(),
        warnings: Vec::new(),
        engine: EngineConfig::default(),
        zones: BTreeMap::new(),
        kafka: None,
        cases: None,
        checkpoint: None,
    };
    let Some(top) = r.map(root, "the config", &TOP_KEYS, diags) else { return cfg };
    let mut stream_kafka = Vec::new();
    if let Some(zones) = top.get("zones")
        && let Some(m) = r.map(zones, "`zones`", &[], diags)
    {
        for (name, _, node) in m.entries() {
            if let Some(set) = parse_zone_set_config(name, node, &base, r, diags) {
                cfg.zones.insert(name.to_string(), set);
            }
        }
    }
    if let Some(streams) = top.require("streams", "the config", r, diags)
        && let Some(m) = r.map(streams, "`streams`", &[], diags)
    {
        for (name, _, node) in m.entries() {
            if let Some(def) = parse_stream(name, node, r, &cfg.zones, diags) {
                cfg.streams.push(Arc::new(def));
            }
            if let Kind::Map(entries) = &node.kind
                && let Some((_, k)) = entries.iter().find(|(k, _)| matches!(&k.kind, Kind::Str(s) if s == "kafka"))
            {
                stream_kafka.push((name.to_string(), kafka::parse_block(k, false, r, diags)));
            }
        }
    }
    let top_kafka = top.get("kafka").map(|n| kafka::parse_block(n, true, r, diags));
    cfg.kafka = kafka::resolve(&base, top_kafka, stream_kafka, r, diags);
    if let Some(rules) = top.get("rules")
        && let Some(list) = r.string_list(rules, "rules", diags)
    {
        cfg.rule_paths = list.into_iter().map(|(p, _)| base.join(p)).collect();
    }
    if let Some(src) = top.get("source") {
        cfg.source = parse_source(src, &base, &cfg.streams, r, diags);
        if cfg.source == SourceConfig::Kafka && cfg.kafka.as_ref().is_none_or(|k| k.topics.is_empty()) {
            diags.push(
                r.error(Code::MissingKey, src, "the source is Kafka, but no stream names a topic")
                    .with_hint("add `kafka: {topic: <name>}` to each stream, and a top-level `kafka:` block with `brokers` and `group_id`"),
            );
        }
    }
    if let Some(sinks) = top.get("sinks") {
        cfg.sinks = crate::sinks::parse_sinks(sinks, &base, r, diags, &mut cfg.warnings);
    }
    if let Some(cases) = top.get("cases") {
        cfg.cases = crate::cases::parse_cases(cases, &base, &cfg.zones, &cfg.streams, r, diags);
        if let Some(c) = cfg.cases.as_mut() {
            cfg.sinks.append(&mut c.legacy_sinks);
            cfg.warnings.append(&mut c.warnings);
        }
    }
    if let Some(k) = &cfg.kafka {
        use crate::sinks::{RecordKind, SinkKind, SinkSpec};
        let topics = [
            ("alerts_topic", &k.alerts_topic, RecordKind::Alerts),
            ("dead_letter_topic", &k.dead_letter_topic, RecordKind::DeadLetters),
        ];
        for (key, topic, send) in topics {
            if let Some(topic) = topic {
                cfg.warnings.push(format!(
                    "{}: `kafka.{key}` is deprecated: add a sink to `sinks:` instead, e.g. `{{kind: kafka, topic: {topic}, send: [{}], when: kafka}}`",
                    path.display(),
                    send.name()
                ));
                let mut spec =
                    SinkSpec::new(&format!("kafka.{key}"), SinkKind::Kafka { topic: topic.clone() }, &[send]);
                spec.only_with_kafka = true;
                cfg.sinks.push(spec);
            }
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for s in &cfg.sinks {
        if !seen.insert(s.name.clone()) {
            // Point at the named sink, if it is one (the other may come from an older key).
            let at = top
                .get("sinks")
                .and_then(|n| match &n.kind {
                    Kind::Map(entries) => {
                        entries.iter().find(|(k, _)| matches!(&k.kind, Kind::Str(x) if *x == s.name)).map(|(k, _)| k)
                    }
                    _ => None,
                })
                .unwrap_or(root);
            diags.push(r.error(Code::DuplicateId, at, format!("two sinks are named `{}`", s.name)).with_hint(
                "a sink of the keys of earlier versions is named after its key (e.g. `cases.store`): rename the other",
            ));
        }
    }
    if let Some(engine) = top.get("engine")
        && let Some(m) =
            r.map(engine, "`engine`", &["workers", "decoders", "batch_size", "linger", "max_event_size"], diags)
    {
        cfg.engine.max_event_bytes =
            m.get("max_event_size").and_then(|n| crate::sources::byte_size(n, "max_event_size", r, diags));
        cfg.engine.linger_ms = m.get("linger").and_then(|n| r.duration(n, "linger", diags));
        cfg.engine.workers = m.get("workers").and_then(|n| r.uint(n, "workers", diags)).map(|v| v.max(1) as usize);
        cfg.engine.decoders = m.get("decoders").and_then(|n| r.uint(n, "decoders", diags)).map(|v| v as usize);
        cfg.engine.batch_size =
            m.get("batch_size").and_then(|n| r.uint(n, "batch_size", diags)).map(|v| v.max(1) as usize);
    }
    if let Some(node) = top.get("checkpoint")
        && let Some(m) = r.map(node, "`checkpoint`", &["state_dir", "interval", "keep"], diags)
    {
        let dir = m.get("state_dir").and_then(|n| crate::sinks::path_value(n, "state_dir", &base, r, diags));
        if m.get("state_dir").is_none() {
            diags.push(
                r.error(Code::MissingKey, node, "`checkpoint` needs `state_dir`")
                    .with_hint("the directory snapshots are written to, e.g. `state_dir: state/`"),
            );
        }
        let interval_ms = m.get("interval").and_then(|n| r.duration(n, "interval", diags));
        if let (Some(ms), Some(n)) = (interval_ms, m.get("interval"))
            && ms < 0
        {
            diags.push(
                r.error(Code::BadValue, n, "`interval` must not be negative")
                    .with_hint("e.g. `interval: 30s`; 0s takes a snapshot at every barrier"),
            );
        }
        let keep = m.get("keep").and_then(|n| r.uint(n, "keep", diags));
        if let (Some(0), Some(n)) = (keep, m.get("keep")) {
            diags.push(r.error(Code::BadValue, n, "`keep` must be at least 1").with_hint("e.g. `keep: 3`"));
        }
        if let Some(state_dir) = dir {
            cfg.checkpoint = Some(CheckpointConfig {
                state_dir,
                interval_ms: interval_ms.unwrap_or(DEFAULT_CHECKPOINT_INTERVAL_MS).max(0),
                keep: keep.unwrap_or(3).max(1) as usize,
            });
        }
    }
    cfg
}

fn parse_source(
    node: &Node,
    base: &Path,
    streams: &[Arc<StreamDef>],
    r: &Reader,
    diags: &mut Diagnostics,
) -> SourceConfig {
    let default = SourceConfig::Generator(GeneratorConfig::default());
    if matches!(&node.kind, Kind::Str(s) if s == "kafka") {
        return SourceConfig::Kafka;
    }
    let Some(m) = r.map(node, "`source`", &["generator", "file", "kafka", "mqtt", "http"], diags) else {
        return default;
    };
    if m.entries().len() > 1 {
        diags.push(
            r.error(Code::BadValue, node, "`source` names more than one source")
                .with_hint("one source per run: generator, file, kafka, mqtt or http"),
        );
    }
    if m.get("kafka").is_some() {
        return SourceConfig::Kafka;
    }
    if let Some(n) = m.get("mqtt") {
        return crate::sources::parse_mqtt(n, base, streams, r, diags).map_or(default, SourceConfig::Mqtt);
    }
    if let Some(n) = m.get("http") {
        return crate::sources::parse_http(n, r, diags).map_or(default, SourceConfig::Http);
    }
    if let Some(file) = m.get("file") {
        return match r.string(file, "file", diags) {
            Some(p) => SourceConfig::File { path: base.join(p) },
            None => default,
        };
    }
    let mut g = GeneratorConfig::default();
    if let Some(gen_node) = m.get("generator")
        && !matches!(gen_node.kind, Kind::Null)
        && let Some(gm) = r.map(gen_node, "`generator`", &["seed", "duration", "start", "scale"], diags)
    {
        if let Some(n) = gm.get("seed") {
            g.seed = r.uint(n, "seed", diags).unwrap_or(g.seed);
        }
        if let Some(n) = gm.get("duration") {
            g.duration_ms = r.duration(n, "duration", diags).unwrap_or(g.duration_ms);
        }
        if let Some(n) = gm.get("scale") {
            g.scale = r.uint(n, "scale", diags).map_or(g.scale, |v| v.clamp(1, 10_000) as u32);
        }
        if let Some(n) = gm.get("start")
            && let Some(s) = r.string(n, "start", diags)
        {
            match parse_timestamp(&s) {
                Some(ms) => g.start_ms = ms,
                None => diags.push(
                    r.error(Code::BadValue, n, format!("`start` must be an RFC 3339 timestamp, found `{s}`"))
                        .with_hint("for example 2026-11-23T00:00:00Z"),
                ),
            }
        }
    }
    SourceConfig::Generator(g)
}

fn parse_zone_set_config(
    name: &str,
    node: &Node,
    base: &Path,
    r: &Reader,
    diags: &mut Diagnostics,
) -> Option<Arc<ZoneSet>> {
    let what = format!("zone set `{name}`");
    let m = r.map(node, &what, &["file", "buffer_m", "radius_m", "active"], diags)?;
    let file = m.require("file", &what, r, diags).and_then(|n| r.string(n, "file", diags))?;
    let mut zc = ZoneSetConfig::default();
    let number = |key: &str, diags: &mut Diagnostics| -> Option<f64> {
        let n = m.get(key)?;
        match n.kind {
            Kind::Int(i) if i > 0 => Some(i as f64),
            Kind::Float(f) if f > 0.0 => Some(f),
            _ => {
                diags.push(r.error(Code::BadValue, n, format!("`{key}` must be a positive number of metres")));
                None
            }
        }
    };
    zc.buffer_m = number("buffer_m", diags);
    zc.radius_m = number("radius_m", diags);
    if let Some(n) = m.get("active") {
        zc.active = parse_active(n, r, diags);
    }
    crate::zones::load_zone_set(name, &base.join(file), &zc, diags)
}

/// Reads `{days: [mon..fri], hours: "07:00-20:00", tz: Asia/Shanghai}`.
pub fn parse_active(n: &Node, r: &Reader, diags: &mut Diagnostics) -> Option<ActiveWindow> {
    r.map(n, "`active`", &["days", "hours", "tz"], diags)?;
    match crate::zones::active_from_json(&crate::yaml::to_json(n)) {
        Ok(a) => Some(a),
        Err(why) => {
            diags.push(
                r.error(Code::BadValue, n, format!("invalid `active`: {why}"))
                    .with_hint("e.g. {days: [mon..fri], hours: \"07:00-20:00\", tz: Asia/Shanghai}"),
            );
            None
        }
    }
}

fn parse_stream(
    name: &str,
    node: &Node,
    r: &Reader,
    zones: &BTreeMap<String, Arc<ZoneSet>>,
    diags: &mut Diagnostics,
) -> Option<StreamDef> {
    let what = format!("stream `{name}`");
    let m = r.map(node, &what, &STREAM_KEYS, diags)?;
    let mut fields: Vec<FieldDef> = Vec::new();
    let mut field_nodes: Vec<&Node> = Vec::new();
    if let Some(fnode) = m.require("fields", &what, r, diags)
        && let Some(fm) = r.map(fnode, &format!("`fields` of {what}"), &[], diags)
    {
        for (fname, knode, tnode) in fm.entries() {
            if let Some(f) = parse_field(fname, tnode, r, diags) {
                fields.push(f);
                field_nodes.push(knode);
            }
        }
    }
    let names: Vec<String> = fields.iter().map(|f| f.name.clone()).collect();
    let field_ref = |n: &Node, s: &str, what: &str, diags: &mut Diagnostics| -> Option<usize> {
        let idx = names.iter().position(|f| f == s);
        if idx.is_none() {
            let mut d = r.error(Code::UnknownField, n, format!("{what} `{s}` is not a field of stream `{name}`"));
            if let Some(sugg) = did_you_mean(s, names.iter().map(String::as_str)) {
                d = d.with_hint(format!("did you mean `{sugg}`?"));
            } else {
                d = d.with_hint(format!("declared fields: {}", names.join(", ")));
            }
            diags.push(d);
        }
        idx
    };
    let time_field = m.require("time_field", &what, r, diags).and_then(|n| {
        let s = r.string(n, "time_field", diags)?;
        let i = field_ref(n, &s, "time_field", diags)?;
        if fields[i].ty != FieldType::Timestamp {
            diags.push(r.error(
                Code::TypeMismatch,
                n,
                format!("time_field `{s}` must have type timestamp, it is {}", fields[i].ty.name()),
            ));
            return None;
        }
        Some(i)
    });
    let mut key_fields = Vec::new();
    if let Some(n) = m.require("key", &what, r, diags)
        && let Some(list) = r.string_list(n, "key", diags)
    {
        for (s, kn) in list {
            if let Some(i) = field_ref(&kn, &s, "key field", diags) {
                key_fields.push(i);
            }
        }
    }
    let ooo = m.get("max_out_of_orderness").and_then(|n| r.duration(n, "max_out_of_orderness", diags)).unwrap_or(0);
    let idle = m.get("idle_timeout").and_then(|n| r.duration(n, "idle_timeout", diags));
    let late_policy = match m.get("late_events") {
        None => LatePolicy::DeadLetter,
        Some(n) => match r.string(n, "late_events", diags).as_deref() {
            Some("dead_letter") => LatePolicy::DeadLetter,
            Some("drop") => LatePolicy::Drop,
            Some(other) => {
                diags.push(
                    r.error(Code::BadValue, n, format!("unknown late_events policy `{other}`"))
                        .with_hint("use `dead_letter` (default) or `drop`"),
                );
                LatePolicy::DeadLetter
            }
            None => LatePolicy::DeadLetter,
        },
    };
    let max_future = match m.get("max_future") {
        None => Some(DEFAULT_MAX_FUTURE_MS),
        // `off` (YAML reads a bare `off` as false): no bound.
        Some(n) if matches!(&n.kind, Kind::Bool(false)) || matches!(&n.kind, Kind::Str(s) if s == "off") => None,
        Some(n) => Some(r.duration(n, "max_future", diags).unwrap_or(DEFAULT_MAX_FUTURE_MS)),
    };
    let time_unit = match m.get("time_unit") {
        None => EpochUnit::Millis,
        Some(n) => match r.string(n, "time_unit", diags) {
            Some(u) => EpochUnit::parse(&u).unwrap_or_else(|| {
                diags.push(r.error(Code::BadValue, n, format!("unknown time_unit `{u}`")).suggest(
                    &u,
                    &EpochUnit::NAMES,
                    "units of epoch timestamps",
                ));
                EpochUnit::Millis
            }),
            None => EpochUnit::Millis,
        },
    };
    let location = m.get("location").and_then(|n| {
        let lm = r.map(n, "`location`", &["lat", "lon"], diags)?;
        let pick = |k: &str, diags: &mut Diagnostics| -> Option<usize> {
            let kn = lm.require(k, "`location`", r, diags)?;
            let s = r.string(kn, k, diags)?;
            let i = field_ref(kn, &s, k, diags)?;
            if !matches!(fields[i].ty, FieldType::Float | FieldType::Int) {
                diags.push(r.error(
                    Code::TypeMismatch,
                    kn,
                    format!("`{k}` field `{s}` must be a number, it is {}", fields[i].ty.name()),
                ));
                return None;
            }
            Some(i)
        };
        let lat = pick("lat", diags);
        let lon = pick("lon", diags);
        Some((lat?, lon?))
    });
    let mut enrichments = Vec::new();
    if let Some(n) = m.get("enrich") {
        let items: Vec<Node> = match &n.kind {
            Kind::Seq(items) => items.clone(),
            _ => vec![n.clone()],
        };
        for item in &items {
            let Some(em) = r.map(item, "an `enrich` entry", &["zones", "fields"], diags) else { continue };
            let set = em.require("zones", "an `enrich` entry", r, diags).and_then(|zn| {
                let set_name = r.string(zn, "zones", diags)?;
                let found = zones.get(&set_name).cloned();
                if found.is_none() {
                    let names: Vec<&str> = zones.keys().map(String::as_str).collect();
                    let d = r.error(Code::UnknownStream, zn, format!("unknown zone set `{set_name}`"));
                    diags.push(match did_you_mean(&set_name, names.iter().copied()) {
                        Some(sugg) => d.with_hint(format!("did you mean `{sugg}`?")),
                        None => d.with_hint("declare it under `zones:`"),
                    });
                }
                found
            });
            let Some(Some((lat, lon))) = location.map(Some).or_else(|| {
                diags.push(r.error(
                    Code::MissingKey,
                    item,
                    format!("stream `{name}` needs `location: {{lat, lon}}` to be enriched from zones"),
                ));
                None::<Option<(usize, usize)>>
            }) else {
                continue;
            };
            let mut columns = Vec::new();
            if let Some(fm) = em
                .require("fields", "an `enrich` entry", r, diags)
                .and_then(|fnode| r.map(fnode, "`fields`", &[], diags))
            {
                for (prop, _, target) in fm.entries() {
                    let Some(col) = r.string(target, prop, diags) else { continue };
                    if fields.iter().any(|f| f.name == col) {
                        diags.push(r.error(
                            Code::DuplicateId,
                            target,
                            format!("enriched column `{col}` clashes with a declared field of stream `{name}`"),
                        ));
                        continue;
                    }
                    // A property that is a number in every zone becomes a float column, so
                    // rules can compare with it (`bikes > parking_capacity`).
                    let numeric = set.as_ref().is_some_and(|z| {
                        !z.zones.is_empty()
                            && z.zones
                                .iter()
                                .all(|zone| zone.properties.get(*prop).is_some_and(serde_json::Value::is_number))
                    });
                    let ty = if numeric { FieldType::Float } else { FieldType::String };
                    fields.push(FieldDef { name: col, ty, required: false, unit: EpochUnit::Millis });
                    columns.push((prop.to_string(), fields.len() - 1));
                }
            }
            if let Some(zones) = set {
                enrichments.push(Enrichment { zones, lat, lon, columns });
            }
        }
    }
    let time_field = time_field?;
    for f in fields.iter_mut().filter(|f| f.ty == FieldType::Timestamp) {
        f.unit = time_unit;
    }
    // Time and key fields are always required: without them a row cannot be placed.
    fields[time_field].required = true;
    for &k in &key_fields {
        fields[k].required = true;
    }
    let _ = field_nodes;
    Some(StreamDef {
        name: name.to_string(),
        fields,
        time_field,
        key_fields,
        max_out_of_orderness_ms: ooo,
        idle_timeout_ms: idle,
        late_policy,
        max_future_ms: max_future,
        time_unit,
        location,
        enrichments,
    })
}

fn parse_field(name: &str, node: &Node, r: &Reader, diags: &mut Diagnostics) -> Option<FieldDef> {
    let (ty_node, ty_text, mut required) = match &node.kind {
        Kind::Str(s) => (node, s.clone(), true),
        Kind::Map(_) => {
            let m = r.map(node, &format!("field `{name}`"), &["type", "required"], diags)?;
            let t = m.require("type", &format!("field `{name}`"), r, diags)?;
            let required = m.get("required").and_then(|n| r.boolean(n, "required", diags)).unwrap_or(true);
            (t, r.string(t, "type", diags)?, required)
        }
        other => {
            diags.push(r.error(
                Code::WrongType,
                node,
                format!("field `{name}` must be a type name or a mapping, found {}", other.describe()),
            ));
            return None;
        }
    };
    let ty_name = match ty_text.strip_suffix('?') {
        Some(t) => {
            required = false;
            t
        }
        None => ty_text.as_str(),
    };
    match FieldType::parse(ty_name) {
        Some(ty) => Some(FieldDef { name: name.to_string(), ty, required, unit: EpochUnit::Millis }),
        None => {
            let mut d = r.error(Code::BadValue, ty_node, format!("unknown type `{ty_name}` for field `{name}`"));
            d = d.suggest(ty_name, &FieldType::NAMES, "types");
            diags.push(d);
            None
        }
    }
}
