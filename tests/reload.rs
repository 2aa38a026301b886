//! End-to-end tests of hot reload (`SIGHUP`, `POST /-/reload`).
//!
//! - a changed rule's open episode is resolved with `rule_changed` and the rule starts
//!   afresh, a removed rule's with `rule_removed`, an unchanged rule keeps its episode (no
//!   second alert), a new rule starts; an invalid change keeps the old rules running, with
//!   the diagnostics at `/api/rules/status` and `gridwatch_config_last_reload_successful 0`;
//!   `POST /-/reload` needs the bearer token;
//! - under load, reloads (SIGHUP) with unchanged rules lose and repeat nothing: the alerts
//!   equal a run without reloads.

mod util;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use serde_json::Value;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

const RULES: &str = "rules:
  - {id: keep, kind: threshold, source: reading, condition: value > 80}
  - {id: change, kind: threshold, source: reading, condition: value > 50}
  - {id: remove, kind: threshold, source: reading, condition: value > 10}
";

fn config(dir: &Path, port: u16) -> std::path::PathBuf {
    std::fs::write(
        dir.join("gridwatch.yaml"),
        format!(
            "streams:\n  reading:\n    time_field: ts\n    key: [device_id]\n    fields: {{ts: timestamp, device_id: string, value: float}}\nrules: [rules.yaml]\nsource:\n  http: {{listen: 127.0.0.1:{port}}}\nsinks:\n  out: {{kind: file, path: alerts.ndjson, send: [alerts]}}\n  dead: {{kind: file, path: dead.ndjson, send: [dead_letters]}}\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.join("rules.yaml"), RULES).unwrap();
    dir.join("gridwatch.yaml")
}

/// Starts `gridwatch run` and waits until HTTP ingest (and the admin server) listen;
/// returns the child and its stderr lines.
fn start(dir: &Path, admin: Option<u16>) -> (Child, Receiver<String>) {
    let mut cmd = Command::new(util::bin());
    cmd.args(["run", "--config", dir.join("gridwatch.yaml").to_str().unwrap(), "--quiet", "--until-idle", "4s"])
        .current_dir(dir)
        .env("GRIDWATCH_ADMIN_TOKEN", "s3cret")
        .stdout(Stdio::null());
    if let Some(p) = admin {
        cmd.args(["--admin", &format!("127.0.0.1:{p}")]);
    }
    util::spawn_until(&mut cmd, "HTTP ingest on")
}

fn wait_for(rx: &Receiver<String>, what: &str) -> String {
    let started = Instant::now();
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(l) if l.contains(what) => return l,
            _ => assert!(started.elapsed() < Duration::from_secs(30), "no `{what}` on stderr"),
        }
    }
}

/// Waits until the alerts file holds `n` records (the sinks wrote them).
fn wait_alerts(dir: &Path, n: usize) {
    let started = Instant::now();
    while alerts(dir).len() < n {
        assert!(started.elapsed() < Duration::from_secs(30), "{} of {n} alerts: {:?}", alerts(dir).len(), alerts(dir));
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn finish(mut child: Child) {
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(started.elapsed() < Duration::from_secs(120), "did not finish");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(child.wait().unwrap().success());
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().unwrap()
}

fn post(c: &reqwest::blocking::Client, port: u16, lines: &[String]) {
    let r = c.post(format!("http://127.0.0.1:{port}/ingest/reading")).body(lines.join("\n")).send().unwrap();
    assert_eq!(r.status().as_u16(), 202, "{}", r.text().unwrap());
}

/// Event times near the wall clock, as a live feed's: `BASE` is the test's start (whole
/// seconds), shared by every test in this file.
fn base() -> i64 {
    static BASE: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *BASE.get_or_init(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64 - 60
    })
}

fn reading(t: i64, device: &str, value: f64) -> String {
    format!(r#"{{"ts":{},"device_id":"{device}","value":{value}}}"#, (base() + t) * 1000)
}

fn alerts(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("alerts.ndjson"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// (rule, state, seconds after the start, reason) of each alert.
fn brief(all: &[Value]) -> Vec<(String, String, i64, String)> {
    let mut v: Vec<_> = all
        .iter()
        .map(|a| {
            let t = chrono::DateTime::parse_from_rfc3339(a["event_time"].as_str().unwrap()).unwrap().timestamp();
            (
                a["rule_id"].as_str().unwrap().to_string(),
                a["state"].as_str().unwrap().to_string(),
                t - base(),
                a["values"]["reason"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn a_reload_resolves_changed_and_removed_rules_keeps_unchanged_ones_and_refuses_invalid_rules() {
    let dir = tempfile::tempdir().unwrap();
    let (port, admin) = (free_port(), free_port());
    config(dir.path(), port);
    let (child, rx) = start(dir.path(), Some(admin));
    let c = client();
    // Every rule fires for d1 at t=0; the watermark reaches t=5.
    post(&c, port, &[reading(0, "d1", 90.0), reading(5, "d2", 1.0)]);
    wait_alerts(dir.path(), 3);

    // Without the token, no reload.
    let url = format!("http://127.0.0.1:{admin}/-/reload");
    assert_eq!(c.post(&url).send().unwrap().status().as_u16(), 401);
    // `keep` unchanged, `change` changed, `remove` gone, `added` new.
    std::fs::write(
        dir.path().join("rules.yaml"),
        "rules:\n  - {id: keep, kind: threshold, source: reading, condition: value > 80}\n  - {id: change, kind: threshold, source: reading, condition: value > 60}\n  - {id: added, kind: threshold, source: reading, condition: value > 85}\n",
    )
    .unwrap();
    let r = c.post(&url).header("authorization", "Bearer s3cret").send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let outcome: Value = serde_json::from_str(&r.text().unwrap()).unwrap();
    assert_eq!(outcome["changes"]["kept"], serde_json::json!(["keep"]));
    assert_eq!(outcome["changes"]["changed"], serde_json::json!(["change"]));
    assert_eq!(outcome["changes"]["removed"], serde_json::json!(["remove"]));
    assert_eq!(outcome["changes"]["added"], serde_json::json!(["added"]));

    // d1 still high at t=10: `keep` goes on (no second alert); `change` and `added` fire.
    post(&c, port, &[reading(10, "d1", 95.0), reading(12, "d2", 1.0)]);
    wait_alerts(dir.path(), 7);
    // An invalid change: refused, the running rules stay.
    std::fs::write(
        dir.path().join("rules.yaml"),
        "rules:\n  - {id: keep, kind: threshold, source: reading, condition: valeu > 80}\n",
    )
    .unwrap();
    let r = c.post(&url).header("authorization", "Bearer s3cret").send().unwrap();
    assert_eq!(r.status().as_u16(), 422);
    let status: Value = serde_json::from_str(
        &c.get(format!("http://127.0.0.1:{admin}/api/rules/status")).send().unwrap().text().unwrap(),
    )
    .unwrap();
    assert_eq!(status["last_successful"], false);
    let error = status["error"].as_str().unwrap();
    assert!(error.contains("rules.yaml:2:") && error.contains("valeu"), "{error}");
    let metrics = c.get(format!("http://127.0.0.1:{admin}/metrics")).send().unwrap().text().unwrap();
    assert!(metrics.contains("gridwatch_config_last_reload_successful 0"), "{metrics}");
    assert!(metrics.contains("gridwatch_config_reloads_total 1"), "{metrics}");
    // d1 drops at t=20: the running rules (keep, change, added) resolve.
    post(&c, port, &[reading(20, "d1", 1.0)]);
    finish(child);
    drop(rx);

    let got = brief(&alerts(dir.path()));
    let s = |r: &str, st: &str, t: i64, why: &str| (r.to_string(), st.to_string(), t, why.to_string());
    assert_eq!(
        got,
        vec![
            s("added", "firing", 10, ""),
            s("added", "resolved", 20, ""),
            s("change", "firing", 0, ""),
            s("change", "firing", 10, ""),
            s("change", "resolved", 5, "rule_changed"),
            s("change", "resolved", 20, ""),
            s("keep", "firing", 0, ""),
            s("keep", "resolved", 20, ""),
            s("remove", "firing", 0, ""),
            s("remove", "resolved", 5, "rule_removed"),
        ]
    );
    let all = alerts(dir.path());
    let id = |rule: &str, state: &str, t: i64| {
        all.iter()
            .find(|a| a["rule_id"] == rule && a["state"] == state && brief(std::slice::from_ref(a))[0].2 == t)
            .map(|a| a["alert_id"].as_str().unwrap().to_string())
            .unwrap()
    };
    assert_eq!(id("keep", "firing", 0), id("keep", "resolved", 20), "the unchanged rule kept its episode");
    assert_eq!(id("change", "firing", 0), id("change", "resolved", 5), "the changed rule's episode is resolved");
    assert_ne!(id("change", "firing", 0), id("change", "firing", 10), "and starts afresh");
}

/// 400 devices, 60 readings each (4 s apart), alternating high and low spells.
fn load_events() -> Vec<String> {
    let mut out = Vec::new();
    for t in 0..60i64 {
        for d in 0..400 {
            let value = if (t / (3 + d % 5)) % 2 == 0 { 90.0 } else { 20.0 + (d % 7) as f64 };
            out.push(reading(t * 4, &format!("d{d:03}"), value));
        }
    }
    out
}

fn run_under_load(dir: &Path, reloads: bool) -> (Vec<Value>, usize) {
    let port = free_port();
    config(dir, port);
    std::fs::write(
        dir.join("rules.yaml"),
        "rules:\n  - {id: high, kind: threshold, source: reading, condition: value > 80, consecutive: 2}\n  - {id: high-for, kind: threshold, source: reading, condition: value > 80, for: 10s}\n  - id: mean\n    kind: window\n    source: reading\n    window: {size: 24s, slide: 8s}\n    aggregates: [avg(value), count]\n    condition: avg_value > 60\n",
    )
    .unwrap();
    let (child, rx) = start(dir, None);
    let c = client();
    let events = load_events();
    let mut applied = 0;
    for chunk in events.chunks(1200) {
        post(&c, port, chunk);
        if reloads {
            let ok = Command::new("kill").args(["-HUP", &child.id().to_string()]).status().unwrap();
            assert!(ok.success());
            wait_for(&rx, "reloaded (swap");
            applied += 1;
        }
    }
    finish(child);
    (alerts(dir), applied)
}

#[test]
fn reloads_under_load_lose_and_repeat_nothing() {
    let plain = tempfile::tempdir().unwrap();
    let (expected, _) = run_under_load(plain.path(), false);
    assert!(expected.len() > 1000, "{} alerts", expected.len());
    let reloaded = tempfile::tempdir().unwrap();
    let (got, applied) = run_under_load(reloaded.path(), true);
    assert_eq!(applied, 20);
    let key = |a: &Value| format!("{} {} {} {}", a["alert_id"], a["state"], a["notification"], a["event_time"]);
    let mut want: Vec<String> = expected.iter().map(key).collect();
    let mut have: Vec<String> = got.iter().map(key).collect();
    want.sort();
    have.sort();
    assert_eq!(have.len(), want.len(), "as many alerts with 20 reloads as without");
    assert_eq!(have, want, "the same alerts");
}
