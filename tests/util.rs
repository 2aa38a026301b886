//! Helpers for end-to-end tests: run the real `gridwatch` binary in a temp dir.

// Each test file uses its own subset of the helpers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Path of the built binary.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_gridwatch")
}

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The example city's config.
pub fn city_config() -> PathBuf {
    root().join("examples/city/gridwatch.yaml")
}

/// Runs `gridwatch args…`, panicking with its output if it fails.
pub fn gridwatch(args: &[&str]) -> Output {
    let out = Command::new(bin()).args(args).current_dir(root()).output().expect("spawn gridwatch");
    assert!(
        out.status.success(),
        "gridwatch {args:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Records the example city's events (`duration`, `extra` generator flags) to `out`.
pub fn generate_events(out: &Path, duration: &str, extra: &[&str]) {
    let config = city_config();
    let mut args =
        vec!["generate", "--config", config.to_str().expect("utf-8 path"), "--out", out.to_str().expect("utf-8 path")];
    args.extend_from_slice(&["--duration", duration]);
    args.extend_from_slice(extra);
    gridwatch(&args);
}

/// Runs the city with extra args; returns (alerts file lines sorted, summary JSON).
pub fn run_city(dir: &Path, name: &str, extra: &[&str]) -> (Vec<String>, serde_json::Value) {
    let alerts = dir.join(format!("{name}-alerts.ndjson"));
    let dead = dir.join(format!("{name}-dead.ndjson"));
    let summary = dir.join(format!("{name}-summary.json"));
    let store = dir.join(format!("{name}-cases.db"));
    let case_events = dir.join(format!("{name}-case-events.ndjson"));
    let config = city_config();
    let mut args = vec![
        "run",
        "--config",
        config.to_str().expect("utf-8 path"),
        "--quiet",
        "--alerts-out",
        alerts.to_str().expect("utf-8 path"),
        "--dead-letter-out",
        dead.to_str().expect("utf-8 path"),
        "--summary-json",
        summary.to_str().expect("utf-8 path"),
        "--cases-store",
        store.to_str().expect("utf-8 path"),
        "--case-events-out",
        case_events.to_str().expect("utf-8 path"),
    ];
    args.extend_from_slice(extra);
    gridwatch(&args);
    let mut lines: Vec<String> =
        std::fs::read_to_string(&alerts).expect("alerts file").lines().map(String::from).collect();
    lines.sort();
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).expect("summary")).expect("summary json");
    (lines, summary)
}

/// `rule key state event_time` of each alert line, sorted.
pub fn brief(lines: &[String]) -> Vec<String> {
    let mut out: Vec<String> = lines
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("alert json");
            format!(
                "{} {} {} {} #{}",
                v["rule_id"].as_str().unwrap_or_default(),
                v["key"].as_str().unwrap_or_default(),
                v["state"].as_str().unwrap_or_default(),
                v["event_time"].as_str().unwrap_or_default(),
                v["notification"]
            )
        })
        .collect();
    out.sort();
    out
}

/// Returns the recording with one copy of its middle sensor reading re-dated to `ts`
/// (milliseconds) inserted after it.
pub fn with_wrong_clock(events: &[String], ts: i64) -> (Vec<String>, String) {
    let middle = events.len() / 2;
    let at = middle
        + events[middle..].iter().position(|l| l.starts_with(r#"{"stream":"sensor","ts":"#)).expect("a sensor line");
    let v: serde_json::Value = serde_json::from_str(&events[at]).expect("json");
    let mut wrong = v.clone();
    wrong["ts"] = ts.into();
    wrong["device_id"] = "gas-0001".into();
    let wrong = serde_json::to_string(&wrong).expect("json");
    let mut out = events.to_vec();
    out.insert(at + 1, wrong.clone());
    (out, wrong)
}

/// Copies the example city (config, rules, zones, registry) into `dir`: it must run from
/// anywhere. Returns the copied config.
pub fn copy_city(dir: &Path) -> PathBuf {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).expect("mkdir");
        for e in std::fs::read_dir(from).expect("read_dir") {
            let e = e.expect("entry");
            let target = to.join(e.file_name());
            if e.file_type().expect("type").is_dir() {
                if e.file_name() != "out" {
                    copy(&e.path(), &target);
                }
            } else {
                std::fs::copy(e.path(), &target).expect("copy");
            }
        }
    }
    let to = dir.join("city");
    copy(&root().join("examples/city"), &to);
    to.join("gridwatch.yaml")
}

/// Spawns `cmd` (its stderr piped) and waits until a stderr line contains `ready`;
/// returns the child and the rest of its stderr, line by line.
pub fn spawn_until(
    cmd: &mut std::process::Command,
    ready: &str,
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead;
    let mut child = cmd.stderr(std::process::Stdio::piped()).spawn().expect("spawn gridwatch");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let started = std::time::Instant::now();
    loop {
        match rx.recv_timeout(std::time::Duration::from_millis(100)) {
            Ok(l) if l.contains(ready) => return (child, rx),
            _ => assert!(started.elapsed() < std::time::Duration::from_secs(30), "no `{ready}` on stderr within 30 s"),
        }
    }
}
