//! Config types of the live sources: MQTT and HTTP ingest.
//!
//! ```yaml
//! source:
//!   mqtt:
//!     broker: ${MQTT_BROKER:-127.0.0.1:1883}   # host:port
//!     client_id: gridwatch-city                 # the persistent session's id
//!     topics: {"city/sensor/#": sensor, "city/gps/+": gps}   # filter (+, #) -> stream
//!     username: ${MQTT_USER}                    # optional, with password
//!     password: ${MQTT_PASSWORD}
//!     tls: {ca_file: ca.pem}                    # optional; cert_file + key_file for mutual TLS
//!
//! source:
//!   http:
//!     listen: 127.0.0.1:8088                    # POST /ingest/{stream}
//!     token: ${INGEST_TOKEN}                    # optional bearer token
//!     max_body: 8MiB
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use gridwatch_engine::schema::StreamDef;

use crate::diagnostic::{Code, Diagnostics, did_you_mean};
use crate::kafka::expand_env;
use crate::sinks::path_value;
use crate::yaml::{Kind, Node, Reader};

/// TLS to an MQTT broker.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttTls {
    /// CA certificate(s), PEM.
    pub ca_file: PathBuf,
    /// Client certificate chain and key, PEM, for mutual TLS.
    pub client: Option<(PathBuf, PathBuf)>,
}

/// An MQTT source: QoS 1 subscriptions in a persistent session, acknowledged only once
/// what they carried has been delivered by every sink.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttConfig {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Client id: the broker keeps the session (subscriptions, unacknowledged messages)
    /// under it across restarts.
    pub client_id: String,
    /// Topic filter (with `+` and `#`) and the index of the stream it feeds, in config
    /// order: a topic takes the first filter it matches.
    pub topics: Vec<(String, usize)>,
    /// User name and password.
    pub credentials: Option<(String, String)>,
    /// TLS.
    pub tls: Option<MqttTls>,
    /// Keep-alive interval, seconds.
    pub keep_alive_s: u64,
    /// Largest message accepted, bytes.
    pub max_message_bytes: usize,
}

/// An HTTP ingest source: `POST /ingest/{stream}` with NDJSON or a JSON array.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpIngestConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Bearer token every request must carry, if set.
    pub token: Option<String>,
    /// Largest request body, bytes (413 beyond).
    pub max_body_bytes: usize,
    /// Requests queued for the engine before new ones are answered 429.
    pub queue: usize,
}

const MQTT_KEYS: [&str; 8] =
    ["broker", "client_id", "topics", "username", "password", "tls", "keep_alive", "max_message_size"];

/// Reads `source: {mqtt: …}`.
pub fn parse_mqtt(
    node: &Node,
    base: &Path,
    streams: &[Arc<StreamDef>],
    r: &Reader,
    diags: &mut Diagnostics,
) -> Option<MqttConfig> {
    let m = r.map(node, "`mqtt`", &MQTT_KEYS, diags)?;
    let setting = |k: &str, diags: &mut Diagnostics| -> Option<String> {
        let n = m.get(k)?;
        let s = r.string(n, k, diags)?;
        expand_env(&s, n, r, diags)
    };
    let broker_node = m.require("broker", "`mqtt`", r, diags)?;
    let broker = setting("broker", diags)?;
    let address = match broker.rsplit_once(':') {
        Some((h, p)) => match p.parse::<u16>() {
            Ok(p) => Some((h.to_string(), p)),
            Err(_) => {
                diags.push(
                    r.error(Code::BadValue, broker_node, format!("`{broker}` is not host:port"))
                        .with_hint("e.g. `broker: 127.0.0.1:1883` (8883 for TLS)"),
                );
                None
            }
        },
        None => Some((broker.clone(), 1883)),
    };
    let client_id = setting("client_id", diags).unwrap_or_else(|| "gridwatch".to_string());
    if client_id.is_empty()
        && let Some(n) = m.get("client_id")
    {
        diags.push(
            r.error(Code::BadValue, n, "`client_id` must not be empty")
                .with_hint("the broker keeps the session under this id"),
        );
    }
    let mut topics = Vec::new();
    if let Some(tn) = m.require("topics", "`mqtt`", r, diags)
        && let Some(tm) = r.map(tn, "`topics`", &[], diags)
    {
        let names: Vec<&str> = streams.iter().map(|s| s.name.as_str()).collect();
        for (filter, key, value) in tm.entries() {
            if let Err(why) = check_filter(filter) {
                diags.push(
                    r.error(Code::BadValue, key, format!("`{filter}` is not a valid MQTT topic filter: {why}"))
                        .with_hint(
                            "`+` stands for one whole level, `#` for the rest and only at the end: `city/+/sensor/#`",
                        ),
                );
                continue;
            }
            let Some(stream) = r.string(value, filter, diags) else { continue };
            match streams.iter().position(|s| s.name == stream) {
                Some(i) => topics.push((filter.to_string(), i)),
                None => {
                    let d = r.error(
                        Code::UnknownStream,
                        value,
                        format!("topic filter `{filter}` feeds stream `{stream}`, which is not declared"),
                    );
                    diags.push(match did_you_mean(&stream, names.iter().copied()) {
                        Some(s) => d.with_hint(format!("did you mean `{s}`?")),
                        None => d.with_hint(format!("declared streams: {}", names.join(", "))),
                    });
                }
            }
        }
        if topics.is_empty() && !matches!(&tn.kind, Kind::Map(e) if !e.is_empty()) {
            diags.push(
                r.error(Code::MissingKey, tn, "`topics` maps no topic filter to a stream")
                    .with_hint("e.g. `topics: {\"city/sensor/#\": sensor}`"),
            );
        }
    }
    let credentials = match (setting("username", diags), setting("password", diags)) {
        (Some(u), Some(p)) => Some((u, p)),
        (None, None) => None,
        (Some(_), None) | (None, Some(_)) => {
            let at = m.get("username").or_else(|| m.get("password")).unwrap_or(node);
            diags.push(
                r.error(Code::MissingKey, at, "`username` and `password` go together")
                    .with_hint("set both, or neither"),
            );
            None
        }
    };
    let tls = m.get("tls").and_then(|n| {
        let tm = r.map(n, "`tls`", &["ca_file", "cert_file", "key_file"], diags)?;
        let ca_file = path_value(tm.require("ca_file", "`tls`", r, diags)?, "ca_file", base, r, diags)?;
        let file = |k: &str, diags: &mut Diagnostics| tm.get(k).and_then(|n| path_value(n, k, base, r, diags));
        let client = match (file("cert_file", diags), file("key_file", diags)) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => {
                diags.push(r.error(Code::MissingKey, n, "`cert_file` and `key_file` go together (mutual TLS)"));
                None
            }
        };
        for p in std::iter::once(&ca_file).chain(client.iter().flat_map(|(c, k)| [c, k])) {
            if !p.is_file() {
                let shown = p.strip_prefix(base).unwrap_or(p);
                diags.push(
                    r.error(Code::Io, n, format!("cannot read `{}`", shown.display()))
                        .with_hint("PEM files, relative to the config file"),
                );
            }
        }
        Some(MqttTls { ca_file, client })
    });
    let keep_alive_s =
        m.get("keep_alive").and_then(|n| r.duration(n, "keep_alive", diags)).map_or(30, |ms| (ms / 1000).max(1) as u64);
    let max_message_bytes = match m.get("max_message_size") {
        Some(n) => byte_size(n, "max_message_size", r, diags),
        None => Some(1 << 20),
    };
    let (host, port) = address?;
    Some(MqttConfig {
        host,
        port,
        client_id,
        topics,
        credentials,
        tls,
        keep_alive_s,
        max_message_bytes: max_message_bytes?,
    })
}

/// Reads `source: {http: …}`.
pub fn parse_http(node: &Node, r: &Reader, diags: &mut Diagnostics) -> Option<HttpIngestConfig> {
    let m = r.map(node, "`http`", &["listen", "token", "max_body", "queue"], diags)?;
    let ln = m.require("listen", "`http`", r, diags)?;
    let text = r.string(ln, "listen", diags)?;
    let text = expand_env(&text, ln, r, diags)?;
    let listen: Option<SocketAddr> = text.parse().ok();
    if listen.is_none() {
        diags.push(
            r.error(Code::BadValue, ln, format!("`{text}` is not an address to listen on"))
                .with_hint("e.g. `listen: 127.0.0.1:8088`"),
        );
    }
    let token = m.get("token").and_then(|n| {
        let s = r.string(n, "token", diags)?;
        let token = expand_env(&s, n, r, diags)?;
        if token.is_empty() {
            // An empty token would refuse every request (no client can send it): say so.
            diags.push(
                r.error(Code::BadValue, n, "`token` is empty (the environment variable it reads is empty?)")
                    .with_hint("set the token, or remove `token` to accept requests without one"),
            );
            return None;
        }
        Some(token)
    });
    let max_body_bytes = match m.get("max_body") {
        Some(n) => byte_size(n, "max_body", r, diags),
        None => Some(8 << 20),
    };
    let queue = m.get("queue").and_then(|n| r.uint(n, "queue", diags)).map_or(64, |v| v.max(1) as usize);
    Some(HttpIngestConfig { listen: listen?, token, max_body_bytes: max_body_bytes?, queue })
}

/// `512`, `64KiB`, `8MiB`, `1GiB` (also kB/MB/GB as powers of ten).
pub(crate) fn byte_size(n: &Node, what: &str, r: &Reader, diags: &mut Diagnostics) -> Option<usize> {
    let text = r.string(n, what, diags)?;
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let factor: Option<usize> = match unit.trim() {
        "" | "B" => Some(1),
        "KiB" => Some(1 << 10),
        "MiB" => Some(1 << 20),
        "GiB" => Some(1 << 30),
        "kB" | "KB" => Some(1_000),
        "MB" => Some(1_000_000),
        "GB" => Some(1_000_000_000),
        _ => None,
    };
    match (digits.parse::<usize>(), factor) {
        (Ok(v), Some(f)) if v > 0 => Some(v.saturating_mul(f)),
        _ => {
            diags.push(
                r.error(Code::BadValue, n, format!("`{text}` is not a size"))
                    .with_hint("e.g. `64KiB`, `8MiB` or a number of bytes"),
            );
            None
        }
    }
}

/// MQTT topic filter rules: `#` only as the last level, `+` and `#` only as whole levels.
fn check_filter(filter: &str) -> Result<(), &'static str> {
    if filter.is_empty() {
        return Err("it is empty");
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i + 1 != levels.len()) {
            return Err("`#` must be a whole level at the end");
        }
        if level.contains('+') && *level != "+" {
            return Err("`+` must be a whole level");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_filter;

    #[test]
    fn topic_filters() {
        assert!(check_filter("city/sensor/#").is_ok());
        assert!(check_filter("city/+/gps").is_ok());
        assert!(check_filter("#").is_ok());
        assert!(check_filter("city/#/x").is_err());
        assert!(check_filter("city/se+").is_err());
        assert!(check_filter("").is_err());
    }

    #[test]
    fn an_empty_token_is_a_config_error_not_a_lock_out() {
        let config = "
streams:
  sensor:
    time_field: ts
    key: [device_id]
    fields: {ts: timestamp, device_id: string}
source:
  http:
    listen: 127.0.0.1:8088
    token: ${GRIDWATCH_TEST_SURELY_UNSET_TOKEN:-}
";
        let loaded = crate::compile::load_from_strings("gridwatch.yaml", config, &[]);
        let messages: Vec<&str> = loaded.diagnostics.iter().map(|d| d.message.as_str()).collect();
        assert_eq!(messages, ["`token` is empty (the environment variable it reads is empty?)"]);
        assert_eq!(
            loaded.diagnostics[0].hint.as_deref(),
            Some("set the token, or remove `token` to accept requests without one")
        );
    }
}
