//! End-to-end tests of snapshots (`checkpoint:`): state survives a crash and a restart.
//!
//! - the example city from a file, killed at 20 seeded points (inside and right after a
//!   snapshot write, inside and right after a case-store transaction, and by SIGKILL from
//!   outside at seeded moments) and restarted: the alerts and the cases equal an
//!   uninterrupted run's — same ids, nothing missing, duplicates only of records the
//!   uninterrupted run also wrote;
//! - a run over a file that then grows goes on from its snapshot with a different worker
//!   count: a 24 h window keeps its panes and an open `for` its stopwatch;
//! - a damaged newest snapshot falls back to the one before; `gridwatch state inspect`.

mod util;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use util::{bin, city_config, root};

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

/// An alert record's identity: one episode's n-th notification, or its resolution.
fn alert_key(v: &Value) -> String {
    format!("{} {} #{}", v["alert_id"].as_str().unwrap(), v["state"].as_str().unwrap(), v["notification"])
}

/// Every case with its full history, by id.
fn cases(store: &Path) -> BTreeMap<String, Value> {
    let out = Command::new(bin())
        .args(["cases", "--store", store.to_str().unwrap(), "list", "--json", "--limit", "1000000"])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|c| (c["case_id"].as_str().unwrap().to_string(), c))
        .collect()
}

/// The alerts a crashed-and-restarted run wrote equal the uninterrupted run's: each record
/// of the uninterrupted run is there, identical; any other record is a duplicate of one.
fn assert_same_alerts(point: &str, expected: &[Value], got: &[Value]) {
    let want: BTreeMap<String, &Value> = expected.iter().map(|v| (alert_key(v), v)).collect();
    assert_eq!(want.len(), expected.len(), "the uninterrupted run wrote each record once");
    let mut seen = BTreeSet::new();
    for v in got {
        let k = alert_key(v);
        let Some(w) = want.get(&k) else { panic!("{point}: alert {k} is not in the uninterrupted run: {v}") };
        assert_eq!(*w, v, "{point}: alert {k} differs");
        seen.insert(k);
    }
    let missing: Vec<&String> = want.keys().filter(|k| !seen.contains(*k)).collect();
    assert!(
        missing.is_empty(),
        "{point}: {} alerts missing, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
}

#[test]
fn a_city_run_killed_at_20_points_resumes_from_its_snapshots_with_the_same_alerts_and_cases() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson");
    util::generate_events(&events, "2h", &["--seed", "21"]);
    let config = city_config();
    // A barrier every 8192 events (about 40 in the run), a snapshot at every one.
    let command = |name: &str| -> Command {
        let mut cmd = Command::new(bin());
        cmd.args(["run", "--config", config.to_str().unwrap(), "--events", events.to_str().unwrap(), "--quiet"])
            .arg("--alerts-out")
            .arg(dir.path().join(format!("{name}-alerts.ndjson")))
            .arg("--cases-store")
            .arg(dir.path().join(format!("{name}.db")))
            .arg("--case-events-out")
            .arg(dir.path().join(format!("{name}-events.ndjson")))
            .arg("--checkpoint-dir")
            .arg(dir.path().join(format!("{name}-state")))
            .args(["--checkpoint-interval", "1ms", "--workers", "2", "--batch-size", "512", "--barrier-every", "8192"])
            .current_dir(root())
            .env_remove("GRIDWATCH_CRASH_AT")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd
    };
    let clean = command("clean").output().unwrap();
    assert!(clean.status.success(), "{}", String::from_utf8_lossy(&clean.stderr));
    let expected_alerts = lines(&dir.path().join("clean-alerts.ndjson"));
    let expected_cases = cases(&dir.path().join("clean.db"));
    assert!(expected_alerts.len() > 100 && expected_cases.len() > 30, "{} alerts", expected_alerts.len());

    // 20 seeded points: 12 crash points at the n-th snapshot or store write, 8 SIGKILLs
    // from outside after a seeded delay.
    let mut seed = 14u64;
    let mut next = |m: u64| {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 33) % m
    };
    let kinds = ["snapshot-write", "snapshot-written", "store-write", "store-committed", "sigkill"];
    let points: Vec<String> = (0..20)
        .map(|i| {
            let kind = kinds[if i < 8 { 4 } else { i % 4 }];
            if kind == "sigkill" { format!("sigkill:{}", 200 + next(2500)) } else { format!("{kind}:{}", 2 + next(34)) }
        })
        .collect();
    let mut resumed = 0;
    std::thread::scope(|scope| {
        for pair in points.chunks(2) {
            let handles: Vec<_> = pair
                .iter()
                .map(|point| {
                    let (command, expected_alerts, expected_cases, dir) =
                        (&command, &expected_alerts, &expected_cases, dir.path());
                    scope.spawn(move || {
                        let name = point.replace(':', "-");
                        let mut crash = command(&name);
                        let (kind, n) = point.split_once(':').unwrap();
                        if kind == "sigkill" {
                            let mut child = crash.stderr(Stdio::null()).spawn().unwrap();
                            let started = Instant::now();
                            while started.elapsed() < Duration::from_millis(n.parse().unwrap()) {
                                if child.try_wait().unwrap().is_some() {
                                    break;
                                }
                                std::thread::sleep(Duration::from_millis(5));
                            }
                            let _ = child.kill();
                            child.wait().unwrap();
                        } else {
                            let crashed = crash.env("GRIDWATCH_CRASH_AT", point).output().unwrap();
                            let stderr = String::from_utf8_lossy(&crashed.stderr);
                            assert!(!crashed.status.success() && stderr.contains("crash point"), "{point}: {stderr}");
                        }
                        let restarted = command(&name).output().unwrap();
                        let stderr = String::from_utf8_lossy(&restarted.stderr).to_string();
                        assert!(restarted.status.success(), "{point}: {stderr}");
                        assert_same_alerts(point, expected_alerts, &lines(&dir.join(format!("{name}-alerts.ndjson"))));
                        let after = cases(&dir.join(format!("{name}.db")));
                        assert_eq!(
                            after.keys().collect::<Vec<_>>(),
                            expected_cases.keys().collect::<Vec<_>>(),
                            "{point}: same cases, none duplicated"
                        );
                        for (id, case) in expected_cases {
                            assert_eq!(&after[id], case, "{point}: case {id} differs after the restart");
                        }
                        stderr.contains("resuming from snapshot")
                    })
                })
                .collect();
            for h in handles {
                resumed += usize::from(h.join().expect("a crash point failed"));
            }
        }
    });
    assert!(resumed >= 10, "only {resumed} of 20 restarts resumed from a snapshot: the points fall too early");
}

/// A small config: one stream, a 24 h window, a 3 h `for`, an absence rule.
fn long_state_config(dir: &Path) -> std::path::PathBuf {
    std::fs::write(
        dir.join("gridwatch.yaml"),
        "streams:\n  reading:\n    time_field: ts\n    key: [device_id]\n    idle_timeout: 1h\n    fields: {ts: timestamp, device_id: string, value: float}\nrules: [rules.yaml]\nsinks:\n  out: {kind: file, path: alerts.ndjson, send: [alerts]}\n  dead: {kind: file, path: dead.ndjson, send: [dead_letters]}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("rules.yaml"),
        "rules:\n  - id: daily-mean-high\n    kind: window\n    source: reading\n    window: {size: 24h}\n    aggregates: [avg(value), count]\n    condition: avg_value > 50 AND count >= 20\n  - id: high-for-3h\n    kind: threshold\n    source: reading\n    condition: value > 80\n    for: 3h\n  - id: device-silent\n    kind: absence\n    source: reading\n    absent_for: 5h\n",
    )
    .unwrap();
    dir.join("gridwatch.yaml")
}

/// Two days of hourly readings of four devices: `d1` runs high all along (its daily mean
/// and its 3 h `for` both span the cut), `d2` goes silent for 6 h across the cut.
fn long_state_events() -> Vec<String> {
    let start = 1_763_856_000_000i64; // 2025-11-23T00:00:00Z
    let mut out = Vec::new();
    for h in 0..48i64 {
        for (d, base) in [("d1", 90.0), ("d2", 40.0), ("d3", 60.0), ("d4", 20.0)] {
            if d == "d2" && (22..28).contains(&h) {
                continue;
            }
            let value = base + ((h * 7 + d.len() as i64) % 11) as f64;
            let ts = start + h * 3_600_000 + 60_000 * (d.as_bytes()[1] - b'0') as i64;
            out.push(format!(r#"{{"stream":"reading","ts":{ts},"device_id":"{d}","value":{value}}}"#));
        }
    }
    out
}

fn run_small(dir: &Path, events: &Path, workers: &str, state: bool) -> String {
    let mut cmd = Command::new(bin());
    cmd.args(["run", "--config", dir.join("gridwatch.yaml").to_str().unwrap(), "--events", events.to_str().unwrap()])
        .args(["--quiet", "--workers", workers, "--batch-size", "7", "--barrier-every", "16"])
        .current_dir(dir);
    if state {
        cmd.args(["--checkpoint-dir", "state", "--checkpoint-interval", "0s"]);
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    stderr
}

#[test]
fn a_run_on_a_file_that_grew_goes_on_from_its_snapshot_with_another_worker_count() {
    let events = long_state_events();
    // Uninterrupted: the whole file in one run.
    let whole = tempfile::tempdir().unwrap();
    long_state_config(whole.path());
    let file = whole.path().join("events.ndjson");
    std::fs::write(&file, events.join("\n") + "\n").unwrap();
    run_small(whole.path(), &file, "2", false);
    let expected = lines(&whole.path().join("alerts.ndjson"));
    let rules: BTreeSet<&str> = expected.iter().map(|a| a["rule_id"].as_str().unwrap()).collect();
    assert_eq!(rules.len(), 3, "every rule fires: {rules:?}");

    // The first 26 hours with one worker; then the file grows and a run with three goes on.
    let grown = tempfile::tempdir().unwrap();
    long_state_config(grown.path());
    let file = grown.path().join("events.ndjson");
    let cut = events.len() * 26 / 48;
    std::fs::write(&file, events[..cut].join("\n") + "\n").unwrap();
    run_small(grown.path(), &file, "1", true);
    let first = lines(&grown.path().join("alerts.ndjson")).len();
    let mut f = std::fs::OpenOptions::new().append(true).open(&file).unwrap();
    std::io::Write::write_all(&mut f, (events[cut..].join("\n") + "\n").as_bytes()).unwrap();
    drop(f);
    let stderr = run_small(grown.path(), &file, "3", true);
    assert!(stderr.contains("resuming from snapshot") && stderr.contains("1 workers then"), "{stderr}");
    let got = lines(&grown.path().join("alerts.ndjson"));
    assert!(first > 0 && got.len() > first, "{first} alerts before the cut, {} in all", got.len());
    assert_same_alerts("grown file", &expected, &got);
    // The day window and the `for` spanning the cut fired after it, with their whole
    // history: the state was restored, not rebuilt from the input after the cut.
    let after_cut = &got[first..];
    let day = after_cut.iter().find(|a| a["rule_id"] == "daily-mean-high" && a["key"] == "d1").expect("d1's day");
    assert_eq!(day["values"]["count"], 24, "{day}");
    assert!(
        after_cut.iter().any(|a| a["rule_id"] == "device-silent" && a["key"] == "d2"),
        "d2's silence spans the cut"
    );
}

#[test]
fn a_damaged_newest_snapshot_falls_back_to_the_one_before_and_inspect_says_so() {
    let dir = tempfile::tempdir().unwrap();
    long_state_config(dir.path());
    let file = dir.path().join("events.ndjson");
    let events = long_state_events();
    // Three runs on a file that grows: each ends with a snapshot of its own.
    std::fs::write(&file, "").unwrap();
    for part in events.chunks(events.len() / 3 + 1) {
        let mut f = std::fs::OpenOptions::new().append(true).open(&file).unwrap();
        std::io::Write::write_all(&mut f, (part.join("\n") + "\n").as_bytes()).unwrap();
        drop(f);
        run_small(dir.path(), &file, "2", true);
    }
    let state = dir.path().join("state");
    let mut snaps: Vec<_> = std::fs::read_dir(&state).unwrap().map(|e| e.unwrap().path()).collect();
    snaps.sort();
    assert_eq!(snaps.len(), 3, "the newest three are kept: {snaps:?}");
    let newest = snaps.last().unwrap();
    let len = std::fs::metadata(newest).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(newest).unwrap().set_len(len / 2).unwrap();

    let inspect = Command::new(bin()).args(["state", "inspect", state.to_str().unwrap()]).output().unwrap();
    let text = String::from_utf8_lossy(&inspect.stdout);
    assert!(!inspect.status.success(), "the newest cannot be read: exit 1\n{text}");
    assert!(text.contains("cannot be read: truncated"), "{text}");
    assert!(text.contains("daily-mean-high") && text.contains("reading"), "{text}");

    let stderr = run_small(dir.path(), &file, "2", true);
    let previous = snaps[snaps.len() - 2].file_name().unwrap().to_string_lossy().to_string();
    assert!(stderr.contains("skipped: truncated") && stderr.contains(&previous), "{stderr}");
    let json = Command::new(bin()).args(["state", "inspect", "--json", state.to_str().unwrap()]).output().unwrap();
    let listed: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert!(
        listed[0]["rules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["rule"] == "high-for-3h" && r["keys"].as_u64() > Some(0))
    );
}

#[test]
fn the_same_config_loaded_twice_gives_the_same_rule_fingerprints() {
    // A rule's state is restored (and kept at a reload) only into the same fingerprint:
    // nothing in it may depend on a hash seed or an address.
    let load = || gridwatch_rules::load_config(&city_config()).into_result().expect("the city config is valid").1;
    let (a, b) = (load(), load());
    assert_eq!(a.rules.len(), b.rules.len());
    for r in 0..a.rules.len() {
        assert_eq!(
            gridwatch_engine::pipeline::snapshot::rule_fingerprint(&a, r),
            gridwatch_engine::pipeline::snapshot::rule_fingerprint(&b, r),
            "rule {}",
            a.rules[r].meta.id
        );
    }
}
