//! Kafka settings of the config file.
//!
//! ```yaml
//! kafka:                                  # connection shared by every stream
//!   brokers: ${KAFKA_BROKERS:-127.0.0.1:9092}
//!   group_id: gridwatch-city
//!   alerts_topic: city.alerts             # alerts out, keyed by alert id
//!   dead_letter_topic: city.dead_letter   # undecodable input, reason in headers
//!   commit_interval: 1s
//!   state_dir: state/                   # offsets + watermarks, if the broker drops commit metadata
//!   properties:                           # any librdkafka setting, passed through
//!     security.protocol: SASL_SSL
//!     sasl.password: ${KAFKA_PASSWORD}    # from the environment; never logged
//! streams:
//!   sensor:
//!     kafka: {topic: city.sensor}         # or topics: [...]; may override the keys above
//! source: kafka
//! ```
//!
//! One gridwatch instance is one consumer in one group, so every stream must end up with
//! the same brokers, group and properties; the per-stream keys exist so a stream can be
//! declared self-contained.

use std::collections::BTreeMap;

use gridwatch_engine::time::Millis;

use crate::diagnostic::{Code, Diagnostics};
use crate::yaml::{Kind, Node, Reader};

/// The resolved Kafka settings of a config.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct KafkaConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// Consumer group.
    pub group_id: String,
    /// librdkafka properties passed through (environment variables already expanded).
    pub properties: BTreeMap<String, String>,
    /// Input topics and the stream each feeds.
    pub topics: BTreeMap<String, String>,
    /// Topic alerts go to.
    pub alerts_topic: Option<String>,
    /// Topic dead letters go to.
    pub dead_letter_topic: Option<String>,
    /// How often acknowledged offsets are committed.
    pub commit_interval_ms: Millis,
    /// Local directory recording committed offsets with their watermarks.
    pub state_dir: Option<std::path::PathBuf>,
}

impl KafkaConfig {
    /// Properties safe to print: values of keys that look secret are masked.
    pub fn redacted_properties(&self) -> BTreeMap<String, String> {
        self.properties
            .iter()
            .map(|(k, v)| {
                let v = if is_secret_key(k) { "***".to_string() } else { v.clone() };
                (k.clone(), v)
            })
            .collect()
    }
}

/// Whether a librdkafka property holds a secret (passwords, keys, tokens).
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["password", "secret", "token", ".key", "jaas"].iter().any(|s| k.contains(s))
}

/// Settings read from one `kafka:` block (top level or a stream's).
#[derive(Debug, Default)]
pub(crate) struct KafkaBlock {
    pub brokers: Option<(String, Node)>,
    pub group_id: Option<(String, Node)>,
    pub properties: BTreeMap<String, String>,
    pub topics: Vec<(String, Node)>,
    pub alerts_topic: Option<String>,
    pub dead_letter_topic: Option<String>,
    pub commit_interval_ms: Option<Millis>,
    pub state_dir: Option<String>,
    pub node: Option<Node>,
}

const TOP_KEYS: [&str; 7] =
    ["brokers", "group_id", "properties", "alerts_topic", "dead_letter_topic", "commit_interval", "state_dir"];
const STREAM_KEYS: [&str; 5] = ["topic", "topics", "brokers", "group_id", "properties"];

/// Reads a `kafka:` block; `top` selects the top-level keys, else the per-stream ones.
pub(crate) fn parse_block(node: &Node, top: bool, r: &Reader, diags: &mut Diagnostics) -> KafkaBlock {
    let mut b = KafkaBlock { node: Some(node.clone()), ..Default::default() };
    let keys: &[&str] = if top { &TOP_KEYS } else { &STREAM_KEYS };
    let Some(m) = r.map(node, "`kafka`", keys, diags) else { return b };
    let string = |key: &str, diags: &mut Diagnostics| -> Option<(String, Node)> {
        let n = m.get(key)?;
        let s = r.string(n, key, diags)?;
        Some((expand_env(&s, n, r, diags)?, n.clone()))
    };
    b.brokers = string("brokers", diags);
    b.group_id = string("group_id", diags);
    b.alerts_topic = string("alerts_topic", diags).map(|(s, _)| s);
    b.dead_letter_topic = string("dead_letter_topic", diags).map(|(s, _)| s);
    b.state_dir = string("state_dir", diags).map(|(s, _)| s);
    if let Some(n) = m.get("commit_interval") {
        b.commit_interval_ms = r.duration(n, "commit_interval", diags);
    }
    if let Some(t) = string("topic", diags) {
        b.topics.push(t);
    }
    if let Some(n) = m.get("topics")
        && let Some(list) = r.string_list(n, "topics", diags)
    {
        b.topics.extend(list);
    }
    if let Some(n) = m.get("properties")
        && let Some(pm) = r.map(n, "`properties`", &[], diags)
    {
        for (key, _, vnode) in pm.entries() {
            let value = match &vnode.kind {
                Kind::Str(s) => Some(s.clone()),
                Kind::Int(i) => Some(i.to_string()),
                Kind::Float(f) => Some(f.to_string()),
                Kind::Bool(v) => Some(v.to_string()),
                _ => {
                    diags.push(
                        r.error(
                            Code::WrongType,
                            vnode,
                            format!("property `{key}` must be a string, number or boolean"),
                        )
                        .with_hint("librdkafka properties are strings, e.g. `linger.ms: 5`"),
                    );
                    None
                }
            };
            if let Some(v) = value.and_then(|v| expand_env(&v, vnode, r, diags)) {
                b.properties.insert(key.to_string(), v);
            }
        }
    }
    b
}

/// Merges the top-level block with each stream's block into one consumer's settings.
pub(crate) fn resolve(
    base: &std::path::Path,
    top: Option<KafkaBlock>,
    streams: Vec<(String, KafkaBlock)>,
    r: &Reader,
    diags: &mut Diagnostics,
) -> Option<KafkaConfig> {
    if top.is_none() && streams.is_empty() {
        return None;
    }
    let top = top.unwrap_or_default();
    let mut cfg = KafkaConfig {
        brokers: top.brokers.as_ref().map(|(s, _)| s.clone()).unwrap_or_default(),
        group_id: top.group_id.as_ref().map(|(s, _)| s.clone()).unwrap_or_default(),
        properties: top.properties.clone(),
        topics: BTreeMap::new(),
        alerts_topic: top.alerts_topic.clone(),
        dead_letter_topic: top.dead_letter_topic.clone(),
        commit_interval_ms: top.commit_interval_ms.unwrap_or(1_000).max(10),
        state_dir: top.state_dir.as_ref().map(|d| base.join(d)),
    };
    let mut first: Option<String> = None;
    for (stream, block) in &streams {
        for (key, value, base) in
            [("brokers", &block.brokers, &mut cfg.brokers), ("group_id", &block.group_id, &mut cfg.group_id)]
        {
            let Some((v, node)) = value else { continue };
            if base.is_empty() {
                *base = v.clone();
            } else if base != v {
                diags.push(
                    r.error(Code::BadValue, node, format!("stream `{stream}` sets Kafka `{key}` to `{v}`, but the consumer already uses `{base}`"))
                        .with_hint("one gridwatch instance is one consumer in one group: use the same value for every stream (set it once in the top-level `kafka:` block)"),
                );
            }
        }
        for (k, v) in &block.properties {
            match cfg.properties.get(k) {
                Some(existing) if existing != v && first.is_some() => {
                    if let Some(node) = &block.node {
                        diags.push(
                            r.error(Code::BadValue, node, format!("stream `{stream}` sets Kafka property `{k}` differently from another stream"))
                                .with_hint("all streams share one consumer: set consumer properties in the top-level `kafka:` block"),
                        );
                    }
                }
                _ => {
                    cfg.properties.insert(k.clone(), v.clone());
                }
            }
        }
        first.get_or_insert_with(|| stream.clone());
        for (topic, node) in &block.topics {
            if let Some(other) = cfg.topics.get(topic) {
                diags.push(
                    r.error(Code::DuplicateId, node, format!("topic `{topic}` already feeds stream `{other}`"))
                        .with_hint("a topic feeds one stream; events of several kinds need one topic per stream"),
                );
            } else {
                cfg.topics.insert(topic.clone(), stream.clone());
            }
        }
    }
    if let Some(node) = top.node.as_ref().or_else(|| streams.first().and_then(|(_, b)| b.node.as_ref())) {
        if cfg.brokers.is_empty() {
            diags.push(
                r.error(Code::MissingKey, node, "Kafka `brokers` is not set")
                    .with_hint("add `brokers: host:9092` to the top-level `kafka:` block"),
            );
        }
        if cfg.group_id.is_empty() {
            diags.push(
                r.error(Code::MissingKey, node, "Kafka `group_id` is not set")
                    .with_hint("add `group_id: gridwatch` to the top-level `kafka:` block"),
            );
        }
    }
    Some(cfg)
}

/// Expands `${NAME}` and `${NAME:-default}` from the environment.
pub(crate) fn expand_env(text: &str, node: &Node, r: &Reader, diags: &mut Diagnostics) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            diags.push(
                r.error(Code::BadValue, node, format!("unclosed `${{` in `{text}`")).with_hint("write `${NAME}`"),
            );
            return None;
        };
        let inner = &after[..end];
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        match (std::env::var(name), default) {
            (Ok(v), _) => out.push_str(&v),
            (Err(_), Some(d)) => out.push_str(d),
            (Err(_), None) => {
                diags.push(
                    r.error(Code::BadValue, node, format!("environment variable `{name}` is not set"))
                        .with_hint(format!("export {name}=… before starting, or give a default: `${{{name}:-value}}`")),
                );
                return None;
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use crate::compile::load_from_strings;

    const STREAMS: &str = "
streams:
  sensor:
    time_field: ts
    key: [device_id]
    kafka: {topic: city.sensor}
    fields: {ts: timestamp, device_id: string}
  gps:
    time_field: ts
    key: [vehicle_id]
    kafka: {topics: [city.gps, city.gps.legacy], properties: {fetch.wait.max.ms: 10}}
    fields: {ts: timestamp, vehicle_id: string}
";

    #[test]
    fn top_level_and_stream_blocks_resolve_to_one_consumer() {
        let config = format!(
            "{STREAMS}
kafka:
  brokers: ${{GRIDWATCH_TEST_KAFKA_HOST:-localhost}}:9092
  group_id: city
  alerts_topic: city.alerts
  commit_interval: 250ms
  properties: {{sasl.password: hunter2, linger.ms: 5, enable.idempotence: true}}
source: kafka
"
        );
        let loaded = load_from_strings("gridwatch.yaml", &config, &[]);
        assert!(loaded.diagnostics.is_empty(), "{:#?}", loaded.diagnostics);
        let k = loaded.config.unwrap().kafka.unwrap();
        assert_eq!(k.brokers, "localhost:9092", "the default of an unset variable");
        assert_eq!(k.group_id, "city");
        assert_eq!(k.commit_interval_ms, 250);
        assert_eq!(k.alerts_topic.as_deref(), Some("city.alerts"));
        let topics: Vec<(&str, &str)> = k.topics.iter().map(|(t, s)| (t.as_str(), s.as_str())).collect();
        assert_eq!(topics, [("city.gps", "gps"), ("city.gps.legacy", "gps"), ("city.sensor", "sensor")]);
        assert_eq!(k.properties["linger.ms"], "5");
        assert_eq!(k.properties["enable.idempotence"], "true");
        assert_eq!(k.properties["fetch.wait.max.ms"], "10", "stream properties join the consumer's");
        let shown = k.redacted_properties();
        assert_eq!(shown["sasl.password"], "***");
        assert_eq!(shown["linger.ms"], "5");
    }

    #[test]
    fn secrets_are_recognised_by_key() {
        for key in
            ["sasl.password", "ssl.key.password", "ssl.key.pem", "sasl.oauthbearer.client.secret", "sasl.jaas.config"]
        {
            assert!(super::is_secret_key(key), "{key}");
        }
        for key in ["linger.ms", "security.protocol", "sasl.username", "group.id"] {
            assert!(!super::is_secret_key(key), "{key}");
        }
    }
}
