//! End-to-end tests of the MQTT source against a real Mosquitto broker, started per test.
//!
//! mod list:
//! - the city through MQTT (one topic per stream, QoS 1) gives exactly the embedded run's
//!   alerts;
//! - the broker restarted mid-run loses nothing: the persistent session keeps what was not
//!   acknowledged, and the alerts are again exactly the embedded run's;
//! - TLS with a CA the test generates, and username/password (a wrong password is a clear
//!   error, not a silent retry loop);
//! - a message above `max_message_size` is dead-lettered and the connection stays up; a
//!   topic filter added to the config is subscribed although the broker kept the session.

mod mosquitto;
mod util;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mosquitto::Mosquitto;

const STREAMS: [&str; 6] = ["sensor", "gps", "detection", "permits", "leak", "closed_cases"];

/// The city's events of `duration`, recorded, split by stream.
fn recorded(dir: &Path, duration: &str) -> (PathBuf, Vec<Vec<String>>) {
    let file = dir.join("events.ndjson");
    util::generate_events(&file, duration, &["--seed", "8"]);
    let mut by_stream = vec![Vec::new(); STREAMS.len()];
    for line in std::fs::read_to_string(&file).unwrap().lines() {
        if let Some(i) = STREAMS.iter().position(|s| line.starts_with(&format!(r#"{{"stream":"{s}""#))) {
            by_stream[i].push(line.to_string());
        }
    }
    (file, by_stream)
}

/// Alerts of the embedded run of `events`, sorted.
fn embedded(dir: &Path, events: &Path) -> Vec<String> {
    let (alerts, _) = util::run_city(dir, "embedded", &["--events", events.to_str().unwrap(), "--no-cases"]);
    alerts
}

/// The city config copied into `dir` with its source replaced by `source` (YAML).
fn city_with_source(dir: &Path, source: &str) -> PathBuf {
    let config = util::copy_city(dir);
    let text = std::fs::read_to_string(&config).unwrap();
    let start = text.find("\nsource:").expect("a source block") + 1;
    let end = start + text[start..].find("\n\n").expect("the block ends");
    std::fs::write(&config, format!("{}{}{}", &text[..start], source, &text[end..])).unwrap();
    config
}

fn mqtt_source(port: u16, client: &str, extra: &str) -> String {
    format!(
        "source:\n  mqtt:\n    broker: 127.0.0.1:{port}\n    client_id: {client}\n    topics: {{\"city/sensor\": sensor, \"city/gps\": gps, \"city/detection\": detection, \"city/permits\": permits, \"city/leak\": leak, \"city/closed_cases\": closed_cases}}\n{extra}"
    )
}

/// Starts `gridwatch run` on `config`; returns once its MQTT client is connected.
fn start_run(config: &Path, alerts: &Path, envs: &[(&str, &str)]) -> (Child, std::sync::mpsc::Receiver<String>) {
    let mut cmd = Command::new(util::bin());
    cmd.args(["run", "--config", config.to_str().unwrap(), "--quiet", "--no-cases", "-v"])
        .args(["--alerts-out", alerts.to_str().unwrap(), "--until-idle", "3s"])
        .arg("--dead-letter-out")
        .arg(alerts.with_extension("dead"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn");
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

fn wait_for(rx: &std::sync::mpsc::Receiver<String>, what: &str, log: &mut Vec<String>) {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            let hit = line.contains(what);
            log.push(line);
            if hit {
                return;
            }
        }
    }
    panic!("`{what}` did not appear:\n{}", log.join("\n"));
}

fn finish(mut child: Child, rx: std::sync::mpsc::Receiver<String>, mut log: Vec<String>) -> Vec<String> {
    let started = Instant::now();
    let status = loop {
        log.extend(rx.try_iter());
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if started.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("the run did not finish:\n{}", log.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    log.extend(rx.iter());
    assert!(status.success(), "gridwatch failed ({status}):\n{}", log.join("\n"));
    log
}

fn sorted_lines(path: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_to_string(path).unwrap_or_default().lines().map(String::from).collect();
    v.sort();
    v
}

fn publish_all(broker: &Mosquitto, by_stream: &[Vec<String>], part: std::ops::Range<f64>) {
    std::thread::scope(|scope| {
        for (i, lines) in by_stream.iter().enumerate() {
            let (from, to) = ((lines.len() as f64 * part.start) as usize, (lines.len() as f64 * part.end) as usize);
            let slice = &lines[from..to];
            scope.spawn(move || broker.publish_lines(&format!("city/{}", STREAMS[i]), slice));
        }
    });
}

#[test]
fn the_city_through_mqtt_gives_the_embedded_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let (events, by_stream) = recorded(dir.path(), "30m");
    let expected = embedded(dir.path(), &events);
    assert!(expected.len() > 50, "the city raises alerts");
    let broker = Mosquitto::start();
    let config = city_with_source(dir.path(), &mqtt_source(broker.port, "gw-city", ""));
    let alerts = dir.path().join("mqtt-alerts.ndjson");
    let (child, rx) = start_run(&config, &alerts, &[]);
    let mut log = Vec::new();
    wait_for(&rx, "MQTT connected", &mut log);
    std::thread::sleep(Duration::from_millis(500));
    publish_all(&broker, &by_stream, 0.0..1.0);
    let log = finish(child, rx, log);
    assert_eq!(
        sorted_lines(&alerts),
        expected,
        "alerts through MQTT differ from the embedded run's\n{}",
        log.join("\n")
    );
}

#[test]
fn a_broker_restart_mid_run_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (events, by_stream) = recorded(dir.path(), "30m");
    let expected = embedded(dir.path(), &events);
    let mut broker = Mosquitto::start();
    let config = city_with_source(dir.path(), &mqtt_source(broker.port, "gw-restart", ""));
    let alerts = dir.path().join("mqtt-alerts.ndjson");
    let (child, rx) = start_run(&config, &alerts, &[]);
    let mut log = Vec::new();
    wait_for(&rx, "MQTT connected", &mut log);
    std::thread::sleep(Duration::from_millis(500));
    publish_all(&broker, &by_stream, 0.0..0.5);
    // Part-way through, the broker goes away and comes back with the saved session.
    broker.restart();
    wait_for(&rx, "MQTT connected", &mut log);
    publish_all(&broker, &by_stream, 0.5..1.0);
    let log = finish(child, rx, log);
    assert!(log.iter().any(|l| l.contains("MQTT connection lost")), "the run saw the restart:\n{}", log.join("\n"));
    assert_eq!(sorted_lines(&alerts), expected, "alerts differ after a broker restart\n{}", log.join("\n"));
}

/// A CA and a server certificate for 127.0.0.1, made with openssl in `dir`.
fn make_certs(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=gridwatch-test-ca",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
}

#[test]
fn tls_and_passwords_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    make_certs(&certs);
    let passwd = certs.join("passwd");
    let ok = Command::new("mosquitto_passwd")
        .args(["-c", "-b", passwd.to_str().unwrap(), "city", "s3cret"])
        .status()
        .unwrap();
    assert!(ok.success());
    let tls_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    // The plain listener is for the test's publisher; gridwatch uses the TLS one.
    let broker = Mosquitto::start_with(&format!(
        "allow_anonymous true\nlistener {tls_port} 127.0.0.1\ncafile {c}/ca.crt\ncertfile {c}/server.crt\nkeyfile {c}/server.key\npassword_file {c}/passwd\n",
        c = certs.display()
    ));
    let (events, by_stream) = recorded(dir.path(), "10m");
    let expected = embedded(dir.path(), &events);
    let tls = format!(
        "    username: ${{MQTT_USER}}\n    password: ${{MQTT_PASSWORD}}\n    tls: {{ca_file: {}}}\n",
        certs.join("ca.crt").display()
    );
    let config = city_with_source(dir.path(), &mqtt_source(tls_port, "gw-tls", &tls));
    // A wrong password: a clear error, and the run ends.
    let alerts = dir.path().join("wrong.ndjson");
    let (mut child, rx) = start_run(&config, &alerts, &[("MQTT_USER", "city"), ("MQTT_PASSWORD", "wrong")]);
    let started = Instant::now();
    let mut log = Vec::new();
    let status = loop {
        log.extend(rx.try_iter());
        if let Some(s) = child.try_wait().unwrap() {
            log.extend(rx.iter());
            break s;
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("a wrong password must end the run:\n{}", log.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = log.join("\n");
    assert!(!status.success(), "{text}");
    assert!(text.contains("refused the connection") && text.contains("password"), "{text}");
    // The right one: the city through TLS gives the embedded alerts.
    let alerts = dir.path().join("tls.ndjson");
    let (child, rx) = start_run(&config, &alerts, &[("MQTT_USER", "city"), ("MQTT_PASSWORD", "s3cret")]);
    let mut log = Vec::new();
    wait_for(&rx, "MQTT connected", &mut log);
    std::thread::sleep(Duration::from_millis(500));
    publish_all(&broker, &by_stream, 0.0..1.0);
    let log = finish(child, rx, log);
    assert_eq!(sorted_lines(&alerts), expected, "alerts through TLS differ\n{}", log.join("\n"));
}

#[test]
fn an_oversized_message_is_dead_lettered_and_a_filter_added_later_is_subscribed() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start();
    let good = r#"{"ts":"2026-11-23T00:00:00Z","device_id":"gas-0001","kind":"gas","metric":"ch4_lel","value":3.1,"lat":36.07,"lon":120.38}"#;
    let big = good.replace("gas-0001", &format!("gas-{}", "9".repeat(10_000)));
    let source = |topics: &str| {
        format!(
            "source:\n  mqtt:\n    broker: 127.0.0.1:{}\n    client_id: gw-limits\n    topics: {topics}\n    max_message_size: 4KiB\n",
            broker.port
        )
    };
    // First run: a message above max_message_size is dead-lettered and acknowledged; the
    // messages after it go in (were the client to refuse it, the connection would drop and
    // the broker would send it again, for ever).
    let config = city_with_source(dir.path(), &source(r#"{"city/sensor": sensor}"#));
    let alerts = dir.path().join("first.ndjson");
    let (child, rx) = start_run(&config, &alerts, &[]);
    let mut log = Vec::new();
    wait_for(&rx, "MQTT connected", &mut log);
    std::thread::sleep(Duration::from_millis(300));
    broker.publish_lines("city/sensor", &[big.clone(), good.to_string(), good.replace("3.1", "\"high\"")]);
    let log = finish(child, rx, log);
    let dead: Vec<serde_json::Value> = std::fs::read_to_string(alerts.with_extension("dead"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = dead.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["too_large", "bad_field"], "the oversized one, then the bad one after it:\n{}", log.join("\n"));
    assert_eq!(dead[0]["stream"], "sensor");
    assert!(dead[0]["reason"].as_str().unwrap().contains("above max_message_size"), "{}", dead[0]);
    assert_eq!(dead[0]["payload"].as_str().unwrap().len(), 1024, "its first KiB is kept");
    assert!(!log.iter().any(|l| l.contains("connection lost")), "the connection stayed up:\n{}", log.join("\n"));

    // Second run, same client id (the broker kept the session), one more filter: it is
    // subscribed too, and nothing of the first run comes again.
    let config = city_with_source(dir.path(), &source(r#"{"city/sensor": sensor, "city/gps": gps}"#));
    let alerts = dir.path().join("second.ndjson");
    let (child, rx) = start_run(&config, &alerts, &[]);
    let mut log = Vec::new();
    wait_for(&rx, "MQTT connected", &mut log);
    std::thread::sleep(Duration::from_millis(300));
    broker.publish_lines("city/gps", &[r#"{"vehicle_id":"muck-001"}"#.to_string()]);
    let log = finish(child, rx, log);
    let dead = std::fs::read_to_string(alerts.with_extension("dead")).unwrap();
    let dead: Vec<serde_json::Value> = dead.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(dead.len(), 1, "only the new topic's message:\n{dead:?}\n{}", log.join("\n"));
    assert_eq!((dead[0]["stream"].as_str(), dead[0]["kind"].as_str()), (Some("gps"), Some("missing_field")));
}

#[test]
fn an_unreachable_broker_shows_on_readiness_and_a_signal_still_stops_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let free = |()| std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (nobody, admin) = (free(()), free(()));
    let config = city_with_source(dir.path(), &mqtt_source(nobody, "gw-nobody", ""));
    let mut child = Command::new(util::bin())
        .args(["run", "--config", config.to_str().unwrap(), "--quiet", "--no-cases"])
        .args(["--admin", &format!("127.0.0.1:{admin}")])
        .arg("--alerts-out")
        .arg(dir.path().join("a.ndjson"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let readyz = || -> Option<(u16, String)> {
        let r = reqwest::blocking::get(format!("http://127.0.0.1:{admin}/readyz")).ok()?;
        Some((r.status().as_u16(), r.text().unwrap_or_default()))
    };
    let started = Instant::now();
    let answer = loop {
        if let Some(a) = readyz() {
            break a;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the admin server did not answer");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(answer.0, 503, "{answer:?}");
    assert!(answer.1.contains("mqtt broker unreachable"), "{answer:?}");
    let ok = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success();
    assert!(ok);
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "a graceful stop is bounded without a broker");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
}
