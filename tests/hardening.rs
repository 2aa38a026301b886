//! End-to-end tests of what a careless or hostile user does to the `gridwatch` binary.
//!
//! mod list:
//! - clocks: one event from a device with a wrong clock costs exactly that event.

mod util;

use std::path::Path;

use util::{run_city, with_wrong_clock};

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(String::from).collect()
}

#[test]
fn one_wrong_device_clock_costs_exactly_that_event_from_a_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let recorded = dir.path().join("events.ndjson");
    util::generate_events(&recorded, "30m", &["--seed", "5"]);
    let events = lines(&recorded);
    let (clean_alerts, clean_summary) = run_city(dir.path(), "clean", &["--events", recorded.to_str().unwrap()]);
    assert!(clean_alerts.len() > 20, "the city raises alerts: {}", clean_alerts.len());
    let clean_dead = lines(&dir.path().join("clean-dead.ndjson"));
    let clean_cases = lines(&dir.path().join("clean-case-events.ndjson"));
    let first: serde_json::Value = serde_json::from_str(&events[0]).expect("json");
    let start = first["ts"].as_i64().expect("epoch ms");
    let hour = 3_600_000i64;
    for (name, ts) in [("hour", start + hour), ("year", start + 365 * 24 * hour), ("y9999", 253_402_300_799_000)] {
        let (dirty, wrong) = with_wrong_clock(&events, ts);
        let file = dir.path().join(format!("{name}.ndjson"));
        std::fs::write(&file, dirty.join("\n") + "\n").expect("write");
        let (alerts, summary) = run_city(dir.path(), name, &["--events", file.to_str().unwrap()]);
        assert_eq!(alerts, clean_alerts, "{name}: a wrong clock changed the alerts");
        assert_eq!(
            lines(&dir.path().join(format!("{name}-case-events.ndjson"))),
            clean_cases,
            "{name}: a wrong clock changed the cases"
        );
        let dead = lines(&dir.path().join(format!("{name}-dead.ndjson")));
        assert_eq!(dead.len(), clean_dead.len() + 1, "{name}: exactly one more dead letter");
        let extra: Vec<&String> = dead.iter().filter(|d| !clean_dead.contains(d)).collect();
        assert_eq!(extra.len(), 1, "{name}: {extra:?}");
        let extra: serde_json::Value = serde_json::from_str(extra[0]).expect("json");
        assert!(extra["reason"].as_str().unwrap_or_default().starts_with("future: "), "{name}: {extra}");
        let payload: serde_json::Value =
            serde_json::from_str(extra["payload"].as_str().expect("payload")).expect("json");
        let wrong: serde_json::Value = serde_json::from_str(&wrong).expect("json");
        assert_eq!(payload, wrong, "{name}: the dead letter carries the wrong-clock event");
        assert_eq!(summary["dead_letter_reasons"]["future"], 1, "{name}: {}", summary["dead_letter_reasons"]);
        assert_eq!(summary["events_accepted"], clean_summary["events_accepted"], "{name}");
    }
}

#[test]
fn a_rerun_keeps_what_the_first_run_wrote_and_says_where_output_went() {
    let dir = tempfile::tempdir().expect("tempdir");
    let recorded = dir.path().join("events.ndjson");
    util::generate_events(&recorded, "30m", &["--seed", "5"]);
    let args = ["--events", recorded.to_str().unwrap()];
    let (first, _) = run_city(dir.path(), "out", &args);
    let dead = lines(&dir.path().join("out-dead.ndjson"));
    let case_events = lines(&dir.path().join("out-case-events.ndjson"));
    assert!(!first.is_empty() && !dead.is_empty() && !case_events.is_empty());
    let (second, summary) = run_city(dir.path(), "out", &args);
    // Alerts and dead letters are written again after the first run's; the store resumes,
    // so the rerun adds no case event, and the first run's stay.
    assert_eq!(second.len(), 2 * first.len(), "the alerts file holds both runs");
    assert_eq!(lines(&dir.path().join("out-dead.ndjson")).len(), 2 * dead.len());
    assert_eq!(lines(&dir.path().join("out-case-events.ndjson")), case_events);
    let outputs = summary["outputs"].as_array().expect("outputs in the summary");
    let find = |what: &str| outputs.iter().find(|o| o["what"] == what).unwrap_or_else(|| panic!("{what}: {outputs:?}"));
    assert!(find("alerts")["location"].as_str().unwrap().contains("out-alerts.ndjson"));
    assert_eq!(find("alerts")["records"].as_u64(), Some(first.len() as u64), "records of this run");
    assert!(find("dead letters")["location"].as_str().unwrap().contains("out-dead.ndjson"));
    assert!(find("cases")["location"].as_str().unwrap().contains("out-cases.db"));
}

#[test]
fn a_start_that_fails_creates_and_changes_no_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let alerts = dir.path().join("alerts.ndjson");
    std::fs::write(&alerts, "{\"earlier\":1}\n").expect("write");
    let store = dir.path().join("new/cases.db");
    let config = util::city_config();
    let out = std::process::Command::new(util::bin())
        .args(["run", "--config", config.to_str().unwrap(), "--quiet"])
        .args(["--events", dir.path().join("missing.ndjson").to_str().unwrap()])
        .args(["--alerts-out", alerts.to_str().unwrap()])
        .args(["--dead-letter-out", dir.path().join("dead.ndjson").to_str().unwrap()])
        .args(["--cases-store", store.to_str().unwrap()])
        .args(["--case-events-out", dir.path().join("case-events.ndjson").to_str().unwrap()])
        .output()
        .expect("spawn");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("missing.ndjson"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&alerts).unwrap(), "{\"earlier\":1}\n", "untouched");
    for never in ["dead.ndjson", "case-events.ndjson", "new"] {
        assert!(!dir.path().join(never).exists(), "{never} was created by a run that could not start");
    }
}

#[test]
fn generate_never_overwrites_a_recording_unless_forced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("events.ndjson");
    std::fs::write(&out, "precious\n").expect("write");
    let config = util::city_config();
    let run = |force: bool| {
        let mut cmd = std::process::Command::new(util::bin());
        cmd.args([
            "generate",
            "--config",
            config.to_str().unwrap(),
            "--duration",
            "1m",
            "--out",
            out.to_str().unwrap(),
        ]);
        if force {
            cmd.arg("--force");
        }
        cmd.output().expect("spawn")
    };
    let refused = run(false);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--force"));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "precious\n");
    assert!(run(true).status.success());
    assert!(lines(&out).len() > 100);
}

#[test]
fn reading_cases_from_a_store_that_does_not_exist_is_an_error_and_creates_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, _) = run_city(dir.path(), "real", &["--duration", "30m"]);
    let typo = dir.path().join("real-case.db");
    for cmd in [&["list"][..], &["show", "case-0000"][..]] {
        let out = std::process::Command::new(util::bin())
            .args(["cases", "--store", typo.to_str().unwrap()])
            .args(cmd)
            .output()
            .expect("spawn");
        assert!(!out.status.success(), "{cmd:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("no SQLite file") && stderr.contains("real-cases.db"), "{cmd:?}: {stderr}");
        assert!(!typo.exists(), "{cmd:?} created a store");
    }
    // A SQLite file that is not a store is refused too, and left as it was.
    let other = dir.path().join("other.db");
    std::fs::write(&other, "").expect("write");
    let out = std::process::Command::new(util::bin())
        .args(["cases", "--store", other.to_str().unwrap(), "list"])
        .output()
        .expect("spawn");
    assert!(!out.status.success());
    assert_eq!(std::fs::metadata(&other).expect("still there").len(), 0);
}

fn mkfifo(path: &Path) {
    let ok = std::process::Command::new("mkfifo").arg(path).status().expect("mkfifo").success();
    assert!(ok, "mkfifo {}", path.display());
}

fn signal(child: &std::process::Child, sig: &str) {
    let ok = std::process::Command::new("kill").args([sig, &child.id().to_string()]).status().expect("kill").success();
    assert!(ok);
}

fn wait_exit(child: &mut std::process::Child, within: std::time::Duration) -> std::process::ExitStatus {
    let started = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(started.elapsed() < within, "did not exit within {within:?} of the signal");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn a_silent_pipe_lets_alerts_out_and_a_signal_ends_the_run() {
    use std::io::Write;
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("events.fifo");
    mkfifo(&fifo);
    let (alerts, summary) = (dir.path().join("alerts.ndjson"), dir.path().join("summary.json"));
    let config = util::city_config();
    let mut child = std::process::Command::new(util::bin())
        .args(["run", "--config", config.to_str().unwrap(), "--quiet", "--no-cases"])
        .args(["--events", fifo.to_str().unwrap(), "--alerts-out", alerts.to_str().unwrap()])
        .args(["--dead-letter-out", dir.path().join("dead.ndjson").to_str().unwrap()])
        .args(["--summary-json", summary.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    // A methane reading at the alarm level, now; then the writer stays open and silent.
    let mut writer = std::fs::OpenOptions::new().write(true).open(&fifo).expect("open the fifo");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
    writeln!(
        writer,
        r#"{{"stream":"sensor","ts":{now},"device_id":"gas-0003","kind":"gas","metric":"ch4_lel","value":62.5,"lat":36.07,"lon":120.38}}"#
    )
    .expect("write");
    writer.flush().expect("flush");
    let started = std::time::Instant::now();
    while !lines(&alerts).iter().any(|l| l.contains("gas-methane-alarm")) {
        assert!(started.elapsed() < std::time::Duration::from_secs(20), "no alert while the pipe is silent");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    signal(&child, "-TERM");
    let status = wait_exit(&mut child, std::time::Duration::from_secs(15));
    assert!(status.success(), "{status}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).expect("summary")).unwrap();
    assert_eq!(summary["interrupted"], true);
    assert_eq!(summary["events_in"], 1);
    drop(writer);
}

#[test]
fn a_fifo_nobody_writes_to_still_stops_on_a_signal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("never.fifo");
    mkfifo(&fifo);
    let config = util::city_config();
    let mut child = std::process::Command::new(util::bin())
        .args(["run", "--config", config.to_str().unwrap(), "--quiet", "--no-cases"])
        .args(["--events", fifo.to_str().unwrap(), "--alerts-out", dir.path().join("a.ndjson").to_str().unwrap()])
        .args(["--dead-letter-out", dir.path().join("d.ndjson").to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    signal(&child, "-INT");
    let status = wait_exit(&mut child, std::time::Duration::from_secs(15));
    assert!(status.success(), "{status}");
}

#[test]
fn an_oversized_event_and_an_impossible_position_are_dead_lettered_and_cost_nothing_else() {
    let dir = tempfile::tempdir().expect("tempdir");
    let events = dir.path().join("events.ndjson");
    let huge = format!(
        r#"{{"stream":"sensor","ts":1000,"device_id":"gas-1","kind":"gas","metric":"ch4_lel","value":1,"note":"{}"}}"#,
        "x".repeat(3 << 20)
    );
    let lines = [
        huge.as_str(),
        r#"{"stream":"gps","ts":"2026-11-23T00:00:00Z","vehicle_id":"muck-001","kind":"muck_truck","lat":91.5,"lon":120.38,"speed_kmh":10}"#,
        r#"{"stream":"sensor","ts":"2026-11-23T00:00:00Z","device_id":"gas-1","kind":"gas","metric":"ch4_lel","value":55}"#,
    ];
    std::fs::write(&events, lines.join("\n") + "\n").unwrap();
    let (alerts, summary) = run_city(dir.path(), "big", &["--events", events.to_str().unwrap()]);
    assert_eq!(alerts.len(), 1, "the good event still raises its alert: {alerts:?}");
    assert_eq!(summary["dead_lettered"], 2, "{summary}");
    let dead: Vec<serde_json::Value> = std::fs::read_to_string(dir.path().join("big-dead.ndjson"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(dead[0]["kind"], "too_large");
    assert_eq!(dead[0]["stream"], "sensor");
    assert_eq!(dead[0]["payload"].as_str().unwrap().len(), 1024, "only the first KiB is kept");
    assert!(dead[0]["reason"].as_str().unwrap().contains("max_event_size (1048576 bytes)"), "{}", dead[0]);
    assert_eq!((dead[1]["kind"].as_str(), dead[1]["field"].as_str()), (Some("bad_field"), Some("lat")), "{}", dead[1]);
}

#[test]
fn a_rule_that_cannot_evaluate_is_counted_per_rule_and_fails_the_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = util::copy_city(dir.path());
    let city = config.parent().unwrap();
    std::fs::write(
        city.join("broken.yaml"),
        "rules:\n  - id: broken-cast\n    name: A cast that fails on every row\n    kind: threshold\n    source: sensor\n    condition: \"CAST(device_id AS INT) > 3\"\n    severity: warning\n    category: test/broken\n",
    )
    .unwrap();
    let text = std::fs::read_to_string(&config).unwrap().replace("rules: [rules/]", "rules: [rules/, broken.yaml]");
    std::fs::write(&config, text).unwrap();
    let summary = dir.path().join("summary.json");
    let out = std::process::Command::new(util::bin())
        .args(["run", "--config", config.to_str().unwrap(), "--duration", "10m", "--no-cases", "--quiet"])
        .arg("--summary-json")
        .arg(&summary)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "a run whose rule never evaluated fails:\n{stderr}");
    let s: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    let (n, first) = (&s["rule_errors_by_rule"]["broken-cast"][0], &s["rule_errors_by_rule"]["broken-cast"][1]);
    assert!(n.as_u64().unwrap() > 0 && s["rule_errors"] == *n, "{s}");
    assert!(first.as_str().unwrap().contains("Cannot cast string"), "{s}");
    assert_eq!(stderr.matches("rule evaluation failed").count(), 1, "logged once, then counted:\n{stderr}");
    // The other rules ran as usual.
    assert!(s["alerts_total"].as_u64().unwrap() > 0, "{s}");
}

#[test]
fn an_admin_address_reachable_from_the_network_is_warned_about() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |addr: &str| {
        let out = std::process::Command::new(util::bin())
            .args(["run", "--config", util::copy_city(dir.path()).to_str().unwrap(), "--duration", "1m"])
            .args(["--no-cases", "--quiet", "--admin", addr])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let open = run("0.0.0.0:0");
    assert!(open.contains("warning: admin HTTP listens on 0.0.0.0:"), "{open}");
    assert!(open.contains("bind 127.0.0.1"), "the warning says how to fix it: {open}");
    let local = run("127.0.0.1:0");
    assert!(!local.contains("not a loopback address"), "{local}");
}
