//! End-to-end tests of the `sinks:` block: named sinks of any kind, each receiving what its
//! `send:` and `match:` select; two webhooks to two systems; a webhook without cases; the
//! keys of earlier versions still work, with a located deprecation warning.
//!
//! mod list:
//! - two webhooks (cases to one, emergency alerts to the other) get exactly what the files
//!   of the same run got, filtered;
//! - a webhook without the case stage receives alerts;
//! - a config in the format of earlier versions runs, writes the same outputs, and warns.

mod util;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use serde_json::Value;

/// A local HTTP endpoint that accepts every POST and keeps the records.
struct Endpoint {
    addr: SocketAddr,
    records: Arc<Mutex<Vec<Value>>>,
    _runtime: tokio::runtime::Runtime,
}

impl Endpoint {
    fn start() -> Endpoint {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let records = Arc::new(Mutex::new(Vec::new()));
        async fn hook(State(records): State<Arc<Mutex<Vec<Value>>>>, body: Bytes) -> &'static str {
            let batch: Vec<Value> = serde_json::from_slice(&body).unwrap_or_default();
            records.lock().unwrap().extend(batch);
            "ok"
        }
        let app = Router::new().route("/hook", post(hook)).with_state(records.clone());
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        runtime.spawn(async move { axum::serve(listener, app).await });
        Endpoint { addr, records, _runtime: runtime }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn records(&self) -> Vec<Value> {
        self.records.lock().unwrap().clone()
    }
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(|l| serde_json::from_str(l).expect("json")).collect()
}

/// The city config copied into `dir`, with its `sinks:` block replaced by `sinks`.
fn city_with_sinks(dir: &Path, sinks: &str) -> std::path::PathBuf {
    let config = util::copy_city(dir);
    let text = std::fs::read_to_string(&config).unwrap();
    let start = text.find("\nsinks:\n").expect("a sinks block") + 1;
    let end = start + text[start..].find("\n\n").expect("the block ends");
    std::fs::write(&config, format!("{}{}{}", &text[..start], sinks, &text[end..])).unwrap();
    config
}

fn run(config: &Path, extra: &[&str]) -> std::process::Output {
    let out = std::process::Command::new(util::bin())
        .args(["run", "--config", config.to_str().unwrap(), "--duration", "2h", "--seed", "4"])
        .args(extra)
        .output()
        .expect("spawn");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out
}

#[test]
fn two_webhooks_get_what_their_send_and_match_select() {
    let dir = tempfile::tempdir().unwrap();
    let (ops, gas) = (Endpoint::start(), Endpoint::start());
    let sinks = format!(
        "sinks:
  alerts: {{kind: file, path: out/alerts.ndjson, send: [alerts], held: false}}
  case_events: {{kind: file, path: out/case_events.ndjson, send: [cases]}}
  cases: {{kind: case_store, location: out/cases.db, send: [cases]}}
  ops: {{kind: webhook, url: \"{}\", send: [cases], linger: 10ms}}
  gas: {{kind: webhook, url: \"{}\", send: [alerts], match: {{category: [emergency/gas], severity: major}}, linger: 10ms}}",
        ops.url(),
        gas.url()
    );
    let config = city_with_sinks(dir.path(), &sinks);
    let out = run(&config, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("output         ops") && stderr.contains("output         gas"), "{stderr}");
    let out_dir = config.parent().unwrap().join("out");
    // Every case event, in order, to the operations system.
    let case_events = lines(&out_dir.join("case_events.ndjson"));
    assert!(case_events.len() > 50, "{} case events", case_events.len());
    assert_eq!(ops.records(), case_events, "the cases webhook got the case events, in order");
    // Only major-or-worse gas alerts to the gas company, as sent (no held ones).
    let rank = |s: &str| ["info", "warning", "major", "critical"].iter().position(|x| *x == s).unwrap();
    let expected: Vec<Value> = lines(&out_dir.join("alerts.ndjson"))
        .into_iter()
        .filter(|a| {
            let cat = a["category"].as_str().unwrap();
            (cat == "emergency/gas" || cat.starts_with("emergency/gas/")) && rank(a["severity"].as_str().unwrap()) >= 2
        })
        .collect();
    assert!(!expected.is_empty(), "the city raises gas alerts");
    assert_eq!(gas.records(), expected);
    assert!(gas.records().iter().all(|a| a.get("case_id").is_none()), "no case events to the alerts webhook");
}

#[test]
fn a_webhook_without_cases_receives_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let hook = Endpoint::start();
    let sinks = format!(
        "sinks:
  alerts: {{kind: file, path: out/alerts.ndjson, send: [alerts]}}
  hook: {{kind: webhook, url: \"{}\", send: [alerts], linger: 10ms}}",
        hook.url()
    );
    let config = city_with_sinks(dir.path(), &sinks);
    run(&config, &["--no-cases"]);
    let alerts = lines(&config.parent().unwrap().join("out/alerts.ndjson"));
    assert!(alerts.len() > 50);
    assert_eq!(hook.records(), alerts, "without a case stage every alert goes out as raised");
}

#[test]
fn the_sink_keys_of_earlier_versions_still_work_and_warn() {
    let dir = tempfile::tempdir().unwrap();
    let legacy = "sinks:
  stdout: false
  alerts_file: out/alerts.ndjson
  dead_letter_file: out/dead_letter.ndjson";
    let config = city_with_sinks(dir.path(), legacy);
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text.replacen("cases:\n", "cases:\n  store: out/cases.db\n  events_file: out/case_events.ndjson\n", 1);
    std::fs::write(&config, text).unwrap();
    let out = run(&config, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let shown = config.display().to_string();
    for key in [
        "`sinks: {stdout, alerts_file, dead_letter_file}` is deprecated",
        "`cases.store` is deprecated",
        "`cases.events_file` is deprecated",
    ] {
        assert!(
            stderr.lines().any(|l| l.starts_with("warning: ") && l.contains(&shown) && l.contains(key)),
            "{key}:\n{stderr}"
        );
    }
    assert!(out.stdout.is_empty(), "stdout: false");
    let out_dir = config.parent().unwrap().join("out");
    assert!(lines(&out_dir.join("alerts.ndjson")).len() > 50);
    assert!(!lines(&out_dir.join("dead_letter.ndjson")).is_empty());
    assert!(lines(&out_dir.join("case_events.ndjson")).len() > 50);
    assert!(out_dir.join("cases.db").exists());
}
