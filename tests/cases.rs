//! End-to-end tests of the case stage in `gridwatch run` and of `gridwatch cases`.
//!
//! mod list:
//! - the example city opens, dispatches (owner first, then territory), reminds, escalates
//!   and closes cases, silences and inhibits alerts, and fills the three lists;
//! - the same input gives the same case events for any worker count;
//! - a run killed mid-way and restarted on the same store ends with exactly the cases and
//!   transitions of an uninterrupted run (no duplicates, nothing missing): by SIGKILL, and
//!   at 20 seeded crash points inside and right after store transactions;
//! - feedback from a file: illegal transitions go to the dead-letter file with the reason.

mod util;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use util::{bin, city_config, gridwatch, root, run_city};

fn cases_json(store: &Path, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["cases", "--store", store.to_str().unwrap(), "list", "--json", "--limit", "1000000"];
    args.extend_from_slice(extra);
    let out = gridwatch(&args);
    String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).expect("case json")).collect()
}

/// Cases committed to a SQLite store so far (0 while it does not exist yet).
fn stored_cases(store: &Path) -> u64 {
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY;
    rusqlite::Connection::open_with_flags(store, flags)
        .and_then(|c| c.query_row("SELECT count(*) FROM cases", [], |r| r.get::<_, i64>(0)))
        .map_or(0, |n| n as u64)
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

#[test]
fn the_city_turns_alerts_into_dispatched_timed_and_closed_cases() {
    let dir = tempfile::tempdir().unwrap();
    let (alerts, summary) = run_city(dir.path(), "city", &["--duration", "4h"]);
    let store = dir.path().join("city-cases.db");
    let cases = cases_json(&store, &[]);
    assert!(cases.len() >= 20, "{} cases", cases.len());
    let stats = &summary["cases"];
    assert_eq!(stats["cases_opened"].as_u64().unwrap() as usize, cases.len());

    let count = |f: &dyn Fn(&Value) -> bool| cases.iter().filter(|c| f(c)).count();
    // Owner first (registered assets), then territory (the grid cell's unit).
    assert!(count(&|c| c["dispatch_by"] == "owner" && c["unit"] == "Qingdao gas company") > 0);
    assert!(count(&|c| c["dispatch_by"] == "grid" && c["unit"].as_str().unwrap().contains("street office")) > 0);
    assert!(count(&|c| c["dispatch_by"] == "reassigned" && c["unit"] == "city-operations-centre") > 0);
    // The crew closes most cases; some are still open at the end.
    assert!(count(&|c| c["status"] == "closed") > cases.len() / 3);
    assert!(count(&|c| c["status"] != "closed") > 0);
    let kinds: Vec<&str> =
        cases.iter().flat_map(|c| c["history"].as_array().unwrap()).map(|e| e["kind"].as_str().unwrap()).collect();
    for k in [
        "opened",
        "dispatched",
        "alert_joined",
        "accepted",
        "reminder",
        "escalated",
        "resolved",
        "verified",
        "closed",
        "reopened",
    ] {
        assert!(kinds.contains(&k), "no `{k}` event in {kinds:?}");
    }
    // The three lists.
    let overdue = cases_json(&store, &["--overdue"]);
    assert!(!overdue.is_empty() && overdue.iter().all(|c| c["flags"]["overdue"] == true));
    let key = cases_json(&store, &["--key"]);
    assert!(
        !key.is_empty()
            && key.iter().all(|c| c["category"].as_str().unwrap().starts_with("emergency")
                || c["category"].as_str().unwrap().starts_with("operation/drainage"))
    );
    assert!(!cases_json(&store, &["--difficult"]).is_empty());
    // `cases show` prints the history.
    let id = cases[0]["case_id"].as_str().unwrap();
    let shown = gridwatch(&["cases", "--store", store.to_str().unwrap(), "show", id]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(text.contains(id) && text.contains("dispatched"), "{text}");

    // The alert stage: the silence and the inhibition rules suppressed alerts, recorded with
    // the reason in the alerts file.
    let verdicts: Vec<Value> = alerts
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|a| a.get("verdict").is_some())
        .collect();
    assert!(
        verdicts.iter().any(|a| a["verdict"] == "silenced" && a["silence"] == "heating-maintenance"),
        "{verdicts:?}"
    );
    assert!(
        verdicts.iter().any(|a| a["verdict"] == "inhibited" && a["rule_id"] == "gas-methane-warning"),
        "{verdicts:?}"
    );
}

#[test]
fn case_events_are_identical_for_any_worker_count() {
    let dir = tempfile::tempdir().unwrap();
    let base = ["--duration", "2h", "--seed", "11"];
    run_city(dir.path(), "w1", &[&base[..], &["--workers", "1", "--batch-size", "4096"]].concat());
    let reference = std::fs::read_to_string(dir.path().join("w1-case-events.ndjson")).unwrap();
    assert!(reference.lines().count() > 20);
    for (workers, batch) in [("2", "100"), ("3", "7")] {
        let name = format!("w{workers}");
        run_city(dir.path(), &name, &[&base[..], &["--workers", workers, "--batch-size", batch]].concat());
        let other = std::fs::read_to_string(dir.path().join(format!("{name}-case-events.ndjson"))).unwrap();
        assert!(reference == other, "case events differ with {workers} workers, batch {batch}");
    }
}

/// Every case with its full history, by id.
fn snapshot(store: &Path) -> BTreeMap<String, Value> {
    cases_json(store, &[]).into_iter().map(|c| (c["case_id"].as_str().unwrap().to_string(), c)).collect()
}

#[test]
fn a_run_killed_mid_way_and_restarted_ends_with_the_same_cases() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson");
    let config = city_config();
    util::generate_events(&events, "5h", &[]);
    let run_args = |store: &Path, case_events: &Path| -> Vec<String> {
        [
            "run",
            "--config",
            config.to_str().unwrap(),
            "--events",
            events.to_str().unwrap(),
            "--quiet",
            "--alerts-out",
            dir.path().join("alerts.ndjson").to_str().unwrap(),
            "--cases-store",
            store.to_str().unwrap(),
            "--case-events-out",
            case_events.to_str().unwrap(),
            "--workers",
            "2",
            "--batch-size",
            "512",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    // Reference: one uninterrupted run.
    let clean = dir.path().join("clean.db");
    let args = run_args(&clean, &dir.path().join("clean-events.ndjson"));
    gridwatch(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let expected = snapshot(&clean);
    assert!(expected.len() > 10);

    // Crash: SIGKILL once the store holds some cases, then run again to the end.
    let store = dir.path().join("crash.db");
    let crash_events = dir.path().join("crash-events.ndjson");
    let mut child = Command::new(bin())
        .args(run_args(&store, &crash_events))
        .current_dir(root())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while stored_cases(&store) < 10 && started.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "the run ended before it could be killed; make the input longer");
    let partial = snapshot(&store);
    assert!(
        !partial.is_empty() && partial.len() < expected.len(),
        "killed mid-way: {} of {}",
        partial.len(),
        expected.len()
    );

    let args = run_args(&store, &dir.path().join("restart-events.ndjson"));
    gridwatch(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let after = snapshot(&store);
    assert_eq!(after.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>(), "same cases, none duplicated");
    for (id, case) in &expected {
        assert_eq!(&after[id], case, "case {id} differs after the restart");
    }
}

#[test]
fn crashes_inside_and_after_store_writes_at_20_seeded_points_change_no_case() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson");
    let config = city_config();
    util::generate_events(&events, "2h", &["--seed", "21"]);
    // A barrier (and a store transaction) every 8192 events: about 40 of them in the run.
    let run = |name: &str, crash: Option<&str>| -> std::process::Output {
        let mut cmd = Command::new(bin());
        cmd.args(["run", "--config", config.to_str().unwrap(), "--events", events.to_str().unwrap(), "--quiet"])
            .arg("--alerts-out")
            .arg(dir.path().join(format!("{name}-alerts.ndjson")))
            .arg("--cases-store")
            .arg(dir.path().join(format!("{name}.db")))
            .arg("--case-events-out")
            .arg(dir.path().join(format!("{name}-events.ndjson")))
            .args(["--workers", "2", "--batch-size", "512", "--barrier-every", "8192"])
            .current_dir(root())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        match crash {
            Some(point) => cmd.env("GRIDWATCH_CRASH_AT", point),
            None => cmd.env_remove("GRIDWATCH_CRASH_AT"),
        };
        cmd.output().unwrap()
    };
    let clean = run("clean", None);
    assert!(clean.status.success(), "{}", String::from_utf8_lossy(&clean.stderr));
    let expected = snapshot(&dir.path().join("clean.db"));
    assert!(expected.len() > 30, "{} cases", expected.len());
    // 20 crash points from a fixed seed: the n-th transaction, killed before or after its commit.
    let mut seed = 2026u64;
    let points: Vec<String> = (0..20)
        .map(|i| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let point = if i % 2 == 0 { "store-write" } else { "store-committed" };
            format!("{point}:{}", 1 + (seed >> 33) % 36)
        })
        .collect();
    std::thread::scope(|scope| {
        for pair in points.chunks(2) {
            let handles: Vec<_> = pair
                .iter()
                .map(|point| {
                    let (run, expected, dir) = (&run, &expected, dir.path());
                    scope.spawn(move || {
                        let name = point.replace(':', "-");
                        let crashed = run(&name, Some(point));
                        assert!(!crashed.status.success(), "{point}: the run was not killed");
                        let stderr = String::from_utf8_lossy(&crashed.stderr);
                        assert!(stderr.contains("crash point"), "{point}: {stderr}");
                        let restarted = run(&name, None);
                        assert!(restarted.status.success(), "{point}: {}", String::from_utf8_lossy(&restarted.stderr));
                        let after = snapshot(&dir.join(format!("{name}.db")));
                        assert_eq!(
                            after.keys().collect::<Vec<_>>(),
                            expected.keys().collect::<Vec<_>>(),
                            "{point}: same cases, none duplicated"
                        );
                        for (id, case) in expected {
                            assert_eq!(&after[id], case, "{point}: case {id} differs after the restart");
                        }
                        // The case-events file kept what the crashed run wrote: together with
                        // the restart's, every event is there at least once.
                        let written: std::collections::BTreeSet<String> =
                            lines(&dir.join(format!("{name}-events.ndjson")))
                                .iter()
                                .map(|u| u["event"]["event_id"].as_str().unwrap().to_string())
                                .collect();
                        for case in expected.values() {
                            for e in case["history"].as_array().unwrap() {
                                let id = e["event_id"].as_str().unwrap();
                                assert!(written.contains(id), "{point}: case event {id} lost from the file");
                            }
                        }
                    })
                })
                .collect();
            for h in handles {
                h.join().expect("a crash point failed");
            }
        }
    });
}

#[test]
fn feedback_from_a_file_drives_cases_and_illegal_steps_are_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    // First learn a case id from a run with the simulated crew switched off.
    let empty = dir.path().join("empty.ndjson");
    std::fs::write(&empty, "").unwrap();
    run_city(dir.path(), "first", &["--duration", "1h", "--feedback", empty.to_str().unwrap()]);
    let cases = cases_json(&dir.path().join("first-cases.db"), &[]);
    let case = &cases[cases.len() - 1];
    let id = case["case_id"].as_str().unwrap();
    let opened = case["first_seen"].as_str().unwrap();
    let t = |min: i64| {
        let ms = gridwatch_engine::time::parse_timestamp(opened).unwrap() + min * 60_000;
        gridwatch_engine::time::format_timestamp(ms)
    };
    let feedback = dir.path().join("feedback.ndjson");
    std::fs::write(
        &feedback,
        format!(
            "{{\"ts\":\"{}\",\"case_id\":\"{id}\",\"action\":\"accept\"}}\n\
             {{\"ts\":\"{}\",\"case_id\":\"{id}\",\"action\":\"close\"}}\n\
             {{\"ts\":\"{}\",\"case_id\":\"{id}\",\"action\":\"resolve\",\"note\":\"cover replaced\"}}\n\
             not json\n",
            t(1),
            t(2),
            t(3)
        ),
    )
    .unwrap();
    run_city(dir.path(), "second", &["--duration", "1h", "--feedback", feedback.to_str().unwrap()]);
    let cases = cases_json(&dir.path().join("second-cases.db"), &[]);
    let case = cases.iter().find(|c| c["case_id"] == id).expect("the same case id on the same input");
    assert_eq!(case["status"], "resolved");
    let dead = lines(&dir.path().join("second-dead.ndjson"));
    let feedback_dead: Vec<&Value> = dead.iter().filter(|d| d["stream"] == "case_feedback").collect();
    assert_eq!(feedback_dead.len(), 2, "{feedback_dead:?}");
    assert!(feedback_dead.iter().any(|d| d["reason"].as_str().unwrap().contains("`close` is not allowed")));
    assert!(feedback_dead.iter().any(|d| d["reason"].as_str().unwrap().contains("feedback.ndjson:4")));
}
