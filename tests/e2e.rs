//! End-to-end tests of the `gridwatch` binary.
//!
//! mod list:
//! - city: the example city from a fixed seed gives exactly the golden alert set, for any
//!   worker count and batch size, from the generator or a recorded file.
//! - cli: `validate` reports every error with locations and fails; `run` reports dead letters.

mod util;

use util::{brief, gridwatch, run_city};

const GOLDEN: &str = "tests/golden/city_seed42_3h.txt";

#[test]
fn city_run_matches_the_golden_alert_set() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Three hours: the longest deadline of the pack (a trailing `not` 2 h after a dig at
    // 5-25 % of the run) must fall inside the run.
    let (alerts, summary) = run_city(dir.path(), "golden", &["--duration", "3h", "--seed", "42"]);
    let actual = brief(&alerts).join("\n") + "\n";
    let golden_path = util::root().join(GOLDEN);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden_path, &actual).expect("write golden");
    }
    let golden = std::fs::read_to_string(&golden_path).expect("golden file (UPDATE_GOLDEN=1 to create)");
    assert_eq!(actual, golden, "alert set changed; review, then UPDATE_GOLDEN=1 cargo test --test e2e");
    // Every rule of the example pack fires at least once, even in three hours.
    let fired: std::collections::BTreeSet<&str> = golden.lines().filter_map(|l| l.split(' ').next()).collect();
    assert_eq!(fired.len(), 31, "rules that fired: {fired:?}");
    // The sequence scenarios fire exactly where the generator injects them
    // (connectors/src/generator/extras.rs), and nowhere else.
    let keys = |rule: &str| -> Vec<&str> {
        golden.lines().filter(|l| l.split(' ').next() == Some(rule)).filter_map(|l| l.split(' ').nth(1)).collect()
    };
    assert_eq!(keys("excavation-without-permit"), ["gas-buffer-2", "gas-buffer-5"], "no permit, a late one");
    assert_eq!(keys("muck-truck-no-disposal"), ["muc-0001", "muc-0041"]);
    assert_eq!(keys("leak-three-nights"), ["lk-0004"], "lk-0010 missed a night");
    assert_eq!(keys("leak-two-neighbours"), ["main-05"]);
    assert_eq!(keys("heating-pressure-collapse"), ["hp-0005", "hp-0018", "hp-0031"]);
    assert_eq!(
        keys("repeat-offence"),
        ["cam-0007|illegal_stall", "cam-0021|exposed_garbage", "cam-0100|smoke"],
        "the case closed 400 days ago is outside the 12 months"
    );
    assert_eq!(keys("rain-then-ponding").len(), 7, "one per grid cell of a ponding point");
    assert!(summary["dead_lettered"].as_u64().unwrap_or(0) > 0, "the generator injects bad rows");
    assert_eq!(
        summary["events_in"],
        summary["events_accepted"].as_u64().unwrap_or(0) + summary["dead_lettered"].as_u64().unwrap_or(0)
    );
}

#[test]
fn city_alerts_are_identical_for_any_workers_decoders_and_batch_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = ["--duration", "1h", "--seed", "7"];
    let (reference, _) = run_city(
        dir.path(),
        "w1",
        &[&base[..], &["--workers", "1", "--decoders", "0", "--batch-size", "4096"]].concat(),
    );
    assert!(reference.len() > 10, "expected some alerts, got {}", reference.len());
    for (workers, decoders, batch) in [("2", "2", "1000"), ("3", "1", "7"), ("4", "3", "333"), ("2", "0", "64")] {
        let name = format!("w{workers}d{decoders}b{batch}");
        let args = ["--workers", workers, "--decoders", decoders, "--batch-size", batch];
        let (other, _) = run_city(dir.path(), &name, &[&base[..], &args[..]].concat());
        // Whole alert records, ids, values and evidence included.
        assert_eq!(reference, other, "workers {workers}, decoders {decoders}, batch {batch}");
    }
}

#[test]
fn replaying_a_recorded_file_gives_the_same_alerts_as_the_generator() {
    let dir = tempfile::tempdir().expect("tempdir");
    let events = dir.path().join("events.ndjson");
    util::generate_events(&events, "1h", &["--seed", "9"]);
    let (from_generator, s1) = run_city(dir.path(), "gen", &["--duration", "1h", "--seed", "9"]);
    let (from_file, s2) = run_city(dir.path(), "file", &["--events", events.to_str().unwrap()]);
    assert_eq!(from_generator, from_file);
    assert_eq!(s1["events_in"], s2["events_in"]);
    assert_eq!(s1["dead_lettered"], s2["dead_lettered"]);
}

#[test]
fn dead_letters_carry_reason_and_raw_payload() {
    let dir = tempfile::tempdir().expect("tempdir");
    let events = dir.path().join("bad.ndjson");
    std::fs::write(
        &events,
        concat!(
            r#"{"stream":"sensor","ts":1000,"device_id":"gas-1","kind":"gas","metric":"ch4_lel","value":"high"}"#, "\n",
            r#"{"stream":"sensor","ts":1000,"device_id":"gas-1""#, "\n",
            r#"{"stream":"parking","ts":1000}"#, "\n",
            r#"{"ts":1000}"#, "\n",
            r#"{"stream":"sensor","ts":"2026-11-23T00:00:00Z","device_id":"gas-1","kind":"gas","metric":"ch4_lel","value":55}"#, "\n",
        ),
    )
    .unwrap();
    let (alerts, summary) = run_city(dir.path(), "bad", &["--events", events.to_str().unwrap()]);
    assert_eq!(brief(&alerts), vec!["gas-methane-alarm gas-1 firing 2026-11-23T00:00:00.000Z #1".to_string()]);
    assert_eq!(summary["dead_lettered"], 4);
    let dead: Vec<serde_json::Value> = std::fs::read_to_string(dir.path().join("bad-dead.ndjson"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let reasons: Vec<&str> = dead.iter().map(|d| d["reason"].as_str().unwrap()).collect();
    assert!(reasons[0].starts_with("field `value`: expected float, got string \"high\""), "{reasons:?}");
    assert!(reasons[1].starts_with("invalid JSON"), "{reasons:?}");
    assert_eq!(reasons[2], "line 3: unknown stream `parking`");
    assert_eq!(reasons[3], "line 4: no `stream` field naming the stream");
    assert!(dead[1]["payload"].as_str().unwrap().contains(r#""device_id":"gas-1""#));
    // A machine-readable class beside the message, set where the rejection was decided.
    let kinds: Vec<(&str, Option<&str>)> =
        dead.iter().map(|d| (d["kind"].as_str().unwrap(), d["field"].as_str())).collect();
    assert_eq!(
        kinds,
        vec![("bad_field", Some("value")), ("invalid_json", None), ("unknown_stream", None), ("unknown_stream", None)]
    );
}

#[test]
fn validate_lists_every_error_and_fails() {
    let root = util::root();
    let out = std::process::Command::new(util::bin())
        .current_dir(&root)
        .args([
            "validate",
            "--config",
            "rules/tests/fixtures/gridwatch.yaml",
            "rules/tests/fixtures/invalid/many_errors.yaml",
            "rules/tests/fixtures/invalid/window_errors.yaml",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.matches("error[").count(), 19, "{text}");
    assert!(text.contains("rules/tests/fixtures/invalid/many_errors.yaml:13:13"), "{text}");
    assert!(text.contains("= hint: did you mean `sensor`?"), "{text}");
    assert!(text.trim_end().ends_with("19 errors found"), "{text}");

    let ok = gridwatch(&["validate", "examples/city/rules"]);
    let text = String::from_utf8_lossy(&ok.stdout);
    assert!(text.starts_with("ok: 31 rules in 5 files"), "{text}");
}

#[test]
fn committed_zone_files_match_the_generator_map() {
    let dir = tempfile::tempdir().expect("tempdir");
    gridwatch(&["generate", "--zones", dir.path().to_str().unwrap()]);
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let committed = std::fs::read_to_string(util::root().join("examples/city/zones").join(&name))
            .unwrap_or_else(|e| panic!("examples/city/zones/{name}: {e}"));
        assert_eq!(
            committed,
            std::fs::read_to_string(&path).unwrap(),
            "{name} is stale: run `gridwatch generate --zones examples/city/zones`"
        );
    }
}
