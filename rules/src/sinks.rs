//! The `sinks:` block: any number of named sinks of any kind, each with what it receives.
//!
//! ```yaml
//! sinks:
//!   console: {kind: stdout, send: [alerts, cases]}           # format: text (default) | json
//!   alerts:  {kind: file, path: out/alerts.ndjson, send: [alerts]}
//!   dead:    {kind: file, path: out/dead_letter.ndjson, send: [dead_letters]}
//!   store:   {kind: case_store, location: out/cases.db, send: [cases]}
//!   ops:     {kind: webhook, url: "http://ops.local/hook", send: [cases, alerts],
//!             match: {category: [emergency], severity: major}}
//!   topic:   {kind: kafka, topic: city.alerts, send: [alerts], when: kafka}
//! ```
//!
//! Every sink names its `kind` and what it receives (`send:` — `alerts`, `cases`,
//! `dead_letters`), optionally only what `match` selects (`rule`, `category`, `severity` at
//! least, `stream`). File sinks also keep the alerts the alert stage held back, with its
//! verdict (`held: true`, their default). `when: kafka` enables a sink only when the run
//! reads Kafka. Paths, URLs and locations expand `${VAR}` / `${VAR:-default}`.
//!
//! The keys of earlier versions — `sinks: {stdout, alerts_file, dead_letter_file}`,
//! `kafka: {alerts_topic, dead_letter_topic}`, `cases: {store, events_file, kafka_topic,
//! webhook}` — still work: they become sinks of the same kinds, with a warning.

use std::path::{Path, PathBuf};

use gridwatch_engine::plan::Severity;

use crate::diagnostic::{Code, Diagnostics};
use crate::kafka::expand_env;
use crate::yaml::{Kind, Node, Reader};

/// Kinds of records, as named in a sink's `send:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    /// `alerts`.
    Alerts,
    /// `cases` (case events with the case after each).
    Cases,
    /// `dead_letters`.
    DeadLetters,
}

impl RecordKind {
    /// The name in `send:`.
    pub fn name(self) -> &'static str {
        match self {
            RecordKind::Alerts => "alerts",
            RecordKind::Cases => "cases",
            RecordKind::DeadLetters => "dead_letters",
        }
    }

    /// Parses a name of `send:`.
    pub fn parse(name: &str) -> Option<RecordKind> {
        Some(match name {
            "alerts" => RecordKind::Alerts,
            "cases" => RecordKind::Cases,
            "dead_letters" => RecordKind::DeadLetters,
            _ => return None,
        })
    }

    /// Every name, for hints.
    pub const NAMES: [&'static str; 3] = ["alerts", "cases", "dead_letters"];
}

/// Which alerts, cases and dead letters a sink receives: every list given must match (a
/// list matches any of its values).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SinkFilter {
    /// Rule ids (alerts; cases that hold an alert of one of them).
    pub rule: Vec<String>,
    /// Category paths; `emergency` takes `emergency/gas` (whole segments).
    pub category: Vec<String>,
    /// Lowest severity (alerts, cases).
    pub severity_min: Option<Severity>,
    /// Input streams (alerts, dead letters).
    pub stream: Vec<String>,
}

/// How the console prints alerts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConsoleFormat {
    /// One line per alert and per case event.
    #[default]
    Text,
    /// Alerts as JSON lines.
    Json,
}

/// Webhook settings: batched JSON POSTs with retries.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookConfig {
    /// Endpoint.
    pub url: String,
    /// Records per POST.
    pub batch: usize,
    /// How long a partial batch waits.
    pub linger_ms: i64,
    /// Queue capacity (records) before the engine is held back.
    pub queue: usize,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// Where permanently rejected batches go.
    pub dead_letter: Option<PathBuf>,
}

/// A sink's kind and its own settings.
#[derive(Debug, Clone, PartialEq)]
pub enum SinkKind {
    /// The console (stdout).
    Stdout {
        /// Text lines or JSON.
        format: ConsoleFormat,
    },
    /// An NDJSON file (appended to).
    File {
        /// The file.
        path: PathBuf,
    },
    /// A Kafka topic (brokers and properties from the top-level `kafka:` block).
    Kafka {
        /// The topic.
        topic: String,
    },
    /// An HTTP endpoint.
    Webhook(WebhookConfig),
    /// The case store (SQLite file or PostgreSQL database); it also records the case
    /// stage's checkpoint.
    CaseStore {
        /// `PATH`, `sqlite:PATH`, `postgres://…` or `host=… user=…`.
        location: String,
    },
}

impl SinkKind {
    /// The name in `kind:`.
    pub fn name(&self) -> &'static str {
        match self {
            SinkKind::Stdout { .. } => "stdout",
            SinkKind::File { .. } => "file",
            SinkKind::Kafka { .. } => "kafka",
            SinkKind::Webhook(_) => "webhook",
            SinkKind::CaseStore { .. } => "case_store",
        }
    }

    /// Every kind, for hints.
    pub const NAMES: [&'static str; 5] = ["stdout", "file", "kafka", "webhook", "case_store"];
}

/// One configured sink.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkSpec {
    /// Its name (the key under `sinks:`).
    pub name: String,
    /// Kind and settings.
    pub kind: SinkKind,
    /// What it receives.
    pub send: Vec<RecordKind>,
    /// Also the alerts the alert stage held back, with the verdict.
    pub held_alerts: bool,
    /// Only what matches.
    pub filter: Option<SinkFilter>,
    /// Only when the run reads Kafka.
    pub only_with_kafka: bool,
}

impl SinkSpec {
    /// A sink of `kind` named `name`, receiving `send`; files keep held alerts.
    pub fn new(name: &str, kind: SinkKind, send: &[RecordKind]) -> SinkSpec {
        let held_alerts = matches!(kind, SinkKind::File { .. });
        SinkSpec { name: name.into(), kind, send: send.to_vec(), held_alerts, filter: None, only_with_kafka: false }
    }

    /// Whether it receives `kind`.
    pub fn sends(&self, kind: RecordKind) -> bool {
        self.send.contains(&kind)
    }
}

/// The sinks when the config has no `sinks:` block: alerts (and case events) on the console.
pub fn default_sinks() -> Vec<SinkSpec> {
    vec![SinkSpec::new(
        "stdout",
        SinkKind::Stdout { format: ConsoleFormat::Text },
        &[RecordKind::Alerts, RecordKind::Cases],
    )]
}

const LEGACY_KEYS: [&str; 3] = ["stdout", "alerts_file", "dead_letter_file"];
const SINK_KEYS: [&str; 15] = [
    "kind",
    "send",
    "match",
    "held",
    "when",
    "format",
    "path",
    "topic",
    "location",
    "url",
    "batch",
    "linger",
    "queue",
    "headers",
    "dead_letter",
];

/// Reads the `sinks:` block (the named form, or the keys of earlier versions with a
/// warning). `warnings` gets the deprecations, located.
pub fn parse_sinks(
    node: &Node,
    base: &Path,
    r: &Reader,
    diags: &mut Diagnostics,
    warnings: &mut Vec<String>,
) -> Vec<SinkSpec> {
    let Kind::Map(entries) = &node.kind else {
        diags.push(r.error(
            Code::WrongType,
            node,
            format!("`sinks` must be a mapping of named sinks, found {}", node.kind.describe()),
        ));
        return Vec::new();
    };
    let legacy = !entries.is_empty()
        && entries.iter().all(|(k, v)| {
            matches!(&k.kind, Kind::Str(s) if LEGACY_KEYS.contains(&s.as_str())) && !matches!(v.kind, Kind::Map(_))
        });
    if legacy {
        warnings.push(format!(
            "{}: `sinks: {{stdout, alerts_file, dead_letter_file}}` is deprecated: name each sink, e.g. `sinks: {{console: {{kind: stdout, send: [alerts, cases]}}, alerts: {{kind: file, path: out/alerts.ndjson, send: [alerts]}}}}`",
            r.location(node)
        ));
        return parse_legacy(node, base, r, diags);
    }
    let Some(m) = r.map(node, "`sinks`", &[], diags) else { return Vec::new() };
    let mut out = Vec::new();
    for (name, key, spec) in m.entries() {
        if let Some(s) = parse_sink(name, key, spec, base, r, diags) {
            out.push(s);
        }
    }
    let stores: Vec<&SinkSpec> = out.iter().filter(|s| matches!(s.kind, SinkKind::CaseStore { .. })).collect();
    if stores.len() > 1 {
        let (_, key, _) = m.entries().iter().find(|(n, ..)| *n == stores[1].name).copied().expect("parsed from here");
        diags.push(
            r.error(Code::DuplicateId, key, format!("a second case store `{}` (the first is `{}`)", stores[1].name, stores[0].name))
                .with_hint("the case store records the case stage's checkpoint: keep one; send cases elsewhere with a file, kafka or webhook sink"),
        );
    }
    out
}

fn parse_legacy(node: &Node, base: &Path, r: &Reader, diags: &mut Diagnostics) -> Vec<SinkSpec> {
    let Some(m) = r.map(node, "`sinks`", &LEGACY_KEYS, diags) else { return Vec::new() };
    let mut out = Vec::new();
    let stdout = m.get("stdout").map_or(Some(true), |n| r.boolean(n, "stdout", diags)).unwrap_or(true);
    if stdout {
        out.extend(default_sinks());
    }
    for (key, send) in [("alerts_file", RecordKind::Alerts), ("dead_letter_file", RecordKind::DeadLetters)] {
        if let Some(n) = m.get(key)
            && let Some(path) = path_value(n, key, base, r, diags)
        {
            out.push(SinkSpec::new(key, SinkKind::File { path }, &[send]));
        }
    }
    out
}

fn parse_sink(
    name: &str,
    key: &Node,
    node: &Node,
    base: &Path,
    r: &Reader,
    diags: &mut Diagnostics,
) -> Option<SinkSpec> {
    let what = format!("sink `{name}`");
    let m = r.map(node, &what, &SINK_KEYS, diags)?;
    let kind_node = m.require("kind", &what, r, diags)?;
    let kind_name = r.string(kind_node, "kind", diags)?;
    let setting = |k: &str, diags: &mut Diagnostics| -> Option<String> {
        let n = m.require(k, &format!("{what} (kind {kind_name})"), r, diags)?;
        let s = r.string(n, k, diags)?;
        expand_env(&s, n, r, diags)
    };
    let kind = match kind_name.as_str() {
        "stdout" => {
            let format = match m.get("format") {
                None => ConsoleFormat::Text,
                Some(n) => match r.string(n, "format", diags).as_deref() {
                    Some("text") => ConsoleFormat::Text,
                    Some("json") => ConsoleFormat::Json,
                    Some(other) => {
                        diags.push(r.error(Code::BadValue, n, format!("unknown console format `{other}`")).suggest(
                            other,
                            &["text", "json"],
                            "formats",
                        ));
                        ConsoleFormat::Text
                    }
                    None => ConsoleFormat::Text,
                },
            };
            SinkKind::Stdout { format }
        }
        "file" => SinkKind::File { path: path_value(m.require("path", &what, r, diags)?, "path", base, r, diags)? },
        "kafka" => SinkKind::Kafka { topic: setting("topic", diags)? },
        "webhook" => SinkKind::Webhook(parse_webhook(node, &what, base, r, diags)?),
        "case_store" => {
            let location = setting("location", diags)?;
            SinkKind::CaseStore { location: resolve_store(&location, base) }
        }
        other => {
            diags.push(r.error(Code::BadValue, kind_node, format!("unknown sink kind `{other}`")).suggest(
                other,
                &SinkKind::NAMES,
                "sink kinds",
            ));
            return None;
        }
    };
    // Keys that belong to another kind are mistakes, not silently ignored settings.
    let own: &[&str] = match &kind {
        SinkKind::Stdout { .. } => &["format"],
        SinkKind::File { .. } => &["path"],
        SinkKind::Kafka { .. } => &["topic"],
        SinkKind::Webhook(_) => &["url", "batch", "linger", "queue", "headers", "dead_letter"],
        SinkKind::CaseStore { .. } => &["location"],
    };
    for (k, kn, _) in m.entries() {
        let general = ["kind", "send", "match", "held", "when"].contains(k);
        if !general && !own.contains(k) {
            diags.push(
                r.error(Code::UnknownKey, kn, format!("`{k}` is not a setting of a {} sink", kind.name()))
                    .with_hint(format!("{} sinks take: {}", kind.name(), own.join(", "))),
            );
        }
    }
    let send_node = m.get("send");
    let Some(send_node) = send_node else {
        diags.push(
            r.error(Code::MissingKey, key, format!("{what} has no `send`: say what it receives"))
                .with_hint("e.g. `send: [alerts]`; one or more of alerts, cases, dead_letters"),
        );
        return None;
    };
    let mut send = Vec::new();
    let listed = r.string_list(send_node, "send", diags).unwrap_or_default();
    let none_listed = listed.is_empty();
    for (s, sn) in listed {
        match RecordKind::parse(&s) {
            Some(k) if !send.contains(&k) => send.push(k),
            Some(_) => {}
            None => diags.push(r.error(Code::BadValue, &sn, format!("unknown `send` value `{s}`")).suggest(
                &s,
                &RecordKind::NAMES,
                "values",
            )),
        }
    }
    if send.is_empty() {
        if none_listed {
            diags.push(r.error(Code::BadValue, send_node, format!("{what} receives nothing: `send` is empty")));
        }
        return None;
    }
    if matches!(kind, SinkKind::CaseStore { .. }) && send != [RecordKind::Cases] {
        diags.push(
            r.error(Code::BadValue, send_node, "a case store keeps cases only").with_hint("write `send: [cases]`"),
        );
    }
    let mut spec = SinkSpec::new(name, kind, &send);
    if let Some(n) = m.get("held") {
        spec.held_alerts = r.boolean(n, "held", diags).unwrap_or(spec.held_alerts);
    }
    if let Some(n) = m.get("when") {
        match r.string(n, "when", diags).as_deref() {
            Some("kafka") => spec.only_with_kafka = true,
            Some(other) => diags.push(
                r.error(Code::BadValue, n, format!("unknown `when` value `{other}`"))
                    .with_hint("`when: kafka` enables the sink only when the run reads Kafka"),
            ),
            None => {}
        }
    }
    if let Some(n) = m.get("match") {
        spec.filter = parse_filter(n, r, diags);
    }
    Some(spec)
}

fn parse_filter(node: &Node, r: &Reader, diags: &mut Diagnostics) -> Option<SinkFilter> {
    let m = r.map(node, "`match`", &["rule", "category", "severity", "stream"], diags)?;
    let list = |k: &str, diags: &mut Diagnostics| -> Vec<String> {
        m.get(k).and_then(|n| r.string_list(n, k, diags)).unwrap_or_default().into_iter().map(|(s, _)| s).collect()
    };
    let mut f = SinkFilter {
        rule: list("rule", diags),
        category: list("category", diags),
        stream: list("stream", diags),
        severity_min: None,
    };
    if let Some(n) = m.get("severity")
        && let Some(s) = r.string(n, "severity", diags)
    {
        f.severity_min = Severity::parse(&s);
        if f.severity_min.is_none() {
            diags.push(r.error(Code::BadValue, n, format!("unknown severity `{s}`")).suggest(
                &s,
                &Severity::NAMES,
                "severities",
            ));
        }
    }
    Some(f)
}

/// A file path: `${VAR}` expanded, relative to the config's directory.
pub(crate) fn path_value(n: &Node, what: &str, base: &Path, r: &Reader, diags: &mut Diagnostics) -> Option<PathBuf> {
    let s = r.string(n, what, diags)?;
    let s = expand_env(&s, n, r, diags)?;
    Some(base.join(s))
}

/// A store location: a SQLite path relative to the config's directory, or a database URL.
pub(crate) fn resolve_store(location: &str, base: &Path) -> String {
    let is_pg =
        location.starts_with("postgres://") || location.starts_with("postgresql://") || location.contains("host=");
    if is_pg {
        location.to_string()
    } else {
        base.join(location.strip_prefix("sqlite:").unwrap_or(location)).display().to_string()
    }
}

/// Reads webhook settings (a `kind: webhook` sink, or the earlier `cases.webhook`).
pub(crate) fn parse_webhook(
    node: &Node,
    what: &str,
    base: &Path,
    r: &Reader,
    diags: &mut Diagnostics,
) -> Option<WebhookConfig> {
    let Kind::Map(_) = &node.kind else {
        diags.push(r.error(Code::WrongType, node, format!("{what} must be a mapping")));
        return None;
    };
    let m = r.map(node, what, &[], diags)?;
    let url_node = m.require("url", what, r, diags)?;
    let url = r.string(url_node, "url", diags)?;
    let url = expand_env(&url, url_node, r, diags)?;
    if !url.starts_with("http://") {
        let d = r.error(Code::BadValue, url_node, format!("the webhook URL `{url}` must start with http://"));
        diags.push(d.with_hint(
            "this build has no TLS client: for an https endpoint put a TLS-terminating proxy in front, e.g. http://127.0.0.1:8080/gridwatch",
        ));
    }
    let mut w =
        WebhookConfig { url, batch: 100, linger_ms: 200, queue: 10_000, headers: Vec::new(), dead_letter: None };
    if let Some(n) = m.get("batch") {
        w.batch = r.uint(n, "batch", diags).map_or(w.batch, |v| v.max(1) as usize);
    }
    if let Some(n) = m.get("queue") {
        w.queue = r.uint(n, "queue", diags).map_or(w.queue, |v| v.max(1) as usize);
    }
    if let Some(n) = m.get("linger") {
        w.linger_ms = r.duration(n, "linger", diags).unwrap_or(w.linger_ms);
    }
    if let Some(n) = m.get("dead_letter") {
        w.dead_letter = path_value(n, "dead_letter", base, r, diags);
    }
    if let Some(n) = m.get("headers")
        && let Some(hm) = r.map(n, "`headers`", &[], diags)
    {
        for (k, _, v) in hm.entries() {
            if let Some(s) = r.string(v, k, diags)
                && let Some(s) = expand_env(&s, v, r, diags)
            {
                w.headers.push((k.to_string(), s));
            }
        }
    }
    Some(w)
}
