//! End-to-end tests of the HTTP ingest source (`POST /ingest/{stream}`) with real HTTP
//! clients.
//!
//! mod list:
//! - the city posted by three concurrent clients (one per stream, NDJSON and JSON arrays)
//!   gives exactly the embedded run's alerts;
//! - per-line answers: rejected lines are listed with their line number and reason and
//!   dead-lettered, the good ones go in; 401 without the token, 404 for an unknown stream,
//!   413 above the body limit; under load every answer is 202 or 429 with Retry-After, and
//!   every accepted line arrives;
//! - a graceful stop (SIGTERM) under load processes every line it answered 202, and
//!   answers 503 with Retry-After while it drains.

mod util;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const STREAMS: [&str; 6] = ["sensor", "gps", "detection", "permits", "leak", "closed_cases"];

fn city_with_http(dir: &Path, port: u16, extra: &str) -> std::path::PathBuf {
    let config = util::copy_city(dir);
    let text = std::fs::read_to_string(&config).unwrap();
    let start = text.find("\nsource:").expect("a source block") + 1;
    let end = start + text[start..].find("\n\n").expect("the block ends");
    let source = format!("source:\n  http:\n    listen: 127.0.0.1:{port}\n    token: ${{INGEST_TOKEN}}\n{extra}");
    std::fs::write(&config, format!("{}{}{}", &text[..start], source, &text[end..])).unwrap();
    config
}

fn start(config: &Path, alerts: &Path) -> Child {
    let mut cmd = Command::new(util::bin());
    cmd.args(["run", "--config", config.to_str().unwrap(), "--quiet", "--no-cases", "--until-idle", "3s"])
        .args(["--alerts-out", alerts.to_str().unwrap()])
        .arg("--dead-letter-out")
        .arg(alerts.with_extension("dead"))
        .arg("--summary-json")
        .arg(alerts.with_extension("summary"))
        .env("INGEST_TOKEN", "t0ken")
        .stdout(Stdio::null());
    let (child, rx) = util::spawn_until(&mut cmd, "HTTP ingest on");
    std::thread::spawn(move || for _ in rx {});
    child
}

fn finish(mut child: Child) {
    let started = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            assert!(s.success(), "{s}");
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "did not finish");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().unwrap()
}

fn post(
    c: &reqwest::blocking::Client,
    port: u16,
    stream: &str,
    body: String,
    token: Option<&str>,
) -> (u16, serde_json::Value, Option<String>) {
    let mut req = c.post(format!("http://127.0.0.1:{port}/ingest/{stream}")).body(body);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let r = req.send().expect("request");
    let status = r.status().as_u16();
    let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
    let body: serde_json::Value = serde_json::from_str(&r.text().unwrap()).unwrap_or_default();
    (status, body, retry)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn sorted_lines(path: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_to_string(path).unwrap_or_default().lines().map(String::from).collect();
    v.sort();
    v
}

#[test]
fn the_city_posted_by_concurrent_clients_gives_the_embedded_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson");
    util::generate_events(&events, "30m", &["--seed", "6"]);
    let (expected, _) = util::run_city(dir.path(), "embedded", &["--events", events.to_str().unwrap(), "--no-cases"]);
    let mut by_stream = vec![Vec::new(); STREAMS.len()];
    for line in std::fs::read_to_string(&events).unwrap().lines() {
        if let Some(i) = STREAMS.iter().position(|s| line.starts_with(&format!(r#"{{"stream":"{s}""#))) {
            by_stream[i].push(line.to_string());
        }
    }
    let port = free_port();
    let config = city_with_http(dir.path(), port, "");
    let alerts = dir.path().join("http-alerts.ndjson");
    let child = start(&config, &alerts);
    std::thread::scope(|scope| {
        for (i, lines) in by_stream.iter().enumerate() {
            scope.spawn(move || {
                let c = client();
                for (n, chunk) in lines.chunks(1000).enumerate() {
                    // NDJSON bodies, and every third one a JSON array (malformed lines as such
                    // cannot be array elements: they go as NDJSON).
                    let as_array =
                        n % 3 == 2 && chunk.iter().all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok());
                    let body = if as_array { format!("[{}]", chunk.join(",")) } else { chunk.join("\n") };
                    loop {
                        let (status, answer, _) = post(&c, port, STREAMS[i], body.clone(), Some("t0ken"));
                        if status == 429 {
                            std::thread::sleep(Duration::from_millis(50));
                            continue;
                        }
                        assert!(status == 202 || status == 400, "{status} {answer}");
                        break;
                    }
                }
            });
        }
    });
    finish(child);
    assert_eq!(sorted_lines(&alerts), expected, "alerts through HTTP ingest differ from the embedded run's");
}

#[test]
fn answers_name_rejected_lines_and_refuse_what_they_must() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = city_with_http(dir.path(), port, "    max_body: 64KiB\n    queue: 1\n");
    let alerts = dir.path().join("alerts.ndjson");
    let child = start(&config, &alerts);
    let c = client();
    let good = r#"{"ts":"2026-11-23T00:00:00Z","device_id":"gas-0001","kind":"gas","metric":"ch4_lel","value":3.1,"lat":36.07,"lon":120.38}"#;
    let bad_field = r#"{"ts":"2026-11-23T00:00:01Z","device_id":"gas-0002","kind":"gas","metric":"ch4_lel","value":"high","lat":36.07,"lon":120.38}"#;
    let body = format!("{good}\n{{not json\n\n{bad_field}\n");
    let (status, answer, _) = post(&c, port, "sensor", body, Some("t0ken"));
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["accepted"], 1);
    let rejected = answer["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 2, "{answer}");
    assert_eq!(rejected[0]["line"], 2);
    assert!(rejected[0]["reason"].as_str().unwrap().starts_with("invalid JSON"), "{answer}");
    assert_eq!(rejected[1]["line"], 4);
    assert!(rejected[1]["reason"].as_str().unwrap().contains("field `value`"), "{answer}");
    // Only bad lines: 400, still listed.
    let (status, answer, _) = post(&c, port, "sensor", "nope\n".into(), Some("t0ken"));
    assert_eq!((status, answer["accepted"].as_u64()), (400, Some(0)), "{answer}");
    assert_eq!(post(&c, port, "sensor", good.into(), None).0, 401, "no token");
    assert_eq!(post(&c, port, "sensor", good.into(), Some("wrong")).0, 401, "wrong token");
    let (status, answer, _) = post(&c, port, "parking", good.into(), Some("t0ken"));
    assert_eq!(status, 404);
    assert_eq!(answer["streams"], serde_json::json!(STREAMS));
    let big = std::iter::repeat_n(good, 1000).collect::<Vec<_>>().join("\n");
    assert_eq!(post(&c, port, "sensor", big, Some("t0ken")).0, 413, "above max_body");
    // Under load (queue: 1): every answer is 202, or 429 with Retry-After; nothing is lost.
    let accepted = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|scope| {
        for t in 0..8 {
            let accepted = &accepted;
            scope.spawn(move || {
                let c = client();
                for k in 0..20 {
                    let line = good.replace("gas-0001", &format!("gas-{t}{k:02}"));
                    let body = std::iter::repeat_n(line.as_str(), 200).collect::<Vec<_>>().join("\n");
                    let (status, answer, retry) = post(&c, port, "sensor", body, Some("t0ken"));
                    match status {
                        202 => {
                            accepted
                                .fetch_add(answer["accepted"].as_u64().unwrap(), std::sync::atomic::Ordering::Relaxed);
                        }
                        429 => assert_eq!(retry.as_deref(), Some("1"), "{answer}"),
                        other => panic!("{other} {answer}"),
                    }
                }
            });
        }
    });
    finish(child);
    let dead = std::fs::read_to_string(alerts.with_extension("dead")).unwrap();
    assert!(dead.contains("HTTP ingest line 2") && dead.contains("HTTP ingest line 4"), "{dead}");
    // Every accepted line reached the engine: the first good line and the load's.
    let n = accepted.load(std::sync::atomic::Ordering::Relaxed);
    assert!(n > 0);
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(alerts.with_extension("summary")).unwrap()).unwrap();
    assert_eq!(summary["events_in"].as_u64(), Some(n + 1), "{summary}");
    assert_eq!(summary["dead_lettered"].as_u64(), Some(3), "the three rejected lines: {summary}");
}

#[test]
fn a_graceful_stop_processes_every_request_it_answered_202() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = city_with_http(dir.path(), port, "");
    let alerts = dir.path().join("alerts.ndjson");
    let mut child = start(&config, &alerts);
    let good = r#"{"ts":"2026-11-23T00:00:00Z","device_id":"gas-0001","kind":"gas","metric":"ch4_lel","value":3.1,"lat":36.07,"lon":120.38}"#;
    let accepted = std::sync::atomic::AtomicU64::new(0);
    let refused_while_stopping = std::sync::atomic::AtomicU64::new(0);
    let stopping = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        for t in 0..8 {
            let (accepted, refused, stopping) = (&accepted, &refused_while_stopping, &stopping);
            scope.spawn(move || {
                let c = client();
                for k in 0.. {
                    let line = good.replace("gas-0001", &format!("gas-{t}{k:04}"));
                    // Large bodies, so the engine has a backlog of accepted requests at the stop.
                    let body = std::iter::repeat_n(line.as_str(), 2000).collect::<Vec<_>>().join("\n");
                    let mut req = c.post(format!("http://127.0.0.1:{port}/ingest/sensor")).body(body);
                    req = req.header("authorization", "Bearer t0ken");
                    let Ok(r) = req.send() else {
                        assert!(stopping.load(std::sync::atomic::Ordering::SeqCst), "refused before the stop");
                        return; // the server is gone: the process is exiting
                    };
                    let status = r.status().as_u16();
                    let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
                    let answer: serde_json::Value =
                        serde_json::from_str(&r.text().unwrap_or_default()).unwrap_or_default();
                    match status {
                        202 => {
                            accepted
                                .fetch_add(answer["accepted"].as_u64().unwrap(), std::sync::atomic::Ordering::SeqCst);
                        }
                        429 => std::thread::sleep(Duration::from_millis(20)),
                        503 => {
                            assert_eq!(retry.as_deref(), Some("5"), "{answer}");
                            refused.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            return;
                        }
                        other => panic!("{other} {answer}"),
                    }
                }
            });
        }
        std::thread::sleep(Duration::from_millis(1500));
        stopping.store(true, std::sync::atomic::Ordering::SeqCst);
        let ok = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill").success();
        assert!(ok, "SIGTERM sent");
    });
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "a graceful stop exits 0: {status}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(alerts.with_extension("summary")).unwrap()).unwrap();
    let n = accepted.load(std::sync::atomic::Ordering::SeqCst);
    assert!(n > 0);
    assert_eq!(summary["events_in"].as_u64(), Some(n), "every line answered 202 was processed: {summary}");
    // Each client ended on a 503 with Retry-After or a closed port, never on lost data.
    let refused = refused_while_stopping.load(std::sync::atomic::Ordering::SeqCst);
    eprintln!("{n} lines accepted; {refused} of 8 clients were answered 503 while stopping");
}
