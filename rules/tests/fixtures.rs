//! Rule-language fixtures: every `valid/*.yaml` must compile cleanly; every
//! `invalid/*.yaml` must produce exactly the diagnostics its header lists, in order:
//!
//! ```yaml
//! # expect: 7:12 E104 unknown field `valu` in `where`: stream `sensor` has no such field
//! # hint: did you mean `value`?
//! ```

use std::path::{Path, PathBuf};

use gridwatch_rules::load_rules_only;

fn fixtures(dir: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {}", root.display());
    files
}

fn config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gridwatch.yaml")
}

#[test]
fn valid_fixtures_compile() {
    for file in fixtures("valid") {
        let loaded = load_rules_only(&config(), std::slice::from_ref(&file));
        let rendered: Vec<String> = loaded.diagnostics.iter().map(ToString::to_string).collect();
        assert!(rendered.is_empty(), "{}:\n{}", file.display(), rendered.join("\n"));
        assert!(!loaded.plan.rules.is_empty(), "{} has no rules", file.display());
    }
}

/// The `# expect:` / `# hint:` header of a fixture, one string per diagnostic.
fn expectations(text: &str) -> Vec<String> {
    let mut expected: Vec<String> = Vec::new();
    for line in text.lines() {
        if let Some(e) = line.strip_prefix("# expect: ") {
            expected.push(e.to_string());
        } else if let Some(h) = line.strip_prefix("# hint: ") {
            let last = expected.last_mut().expect("a hint follows an expectation");
            last.push_str(" | hint: ");
            last.push_str(h);
        }
    }
    expected
}

/// Diagnostics in the header's form.
fn rendered(diags: &[gridwatch_rules::Diagnostic]) -> Vec<String> {
    diags
        .iter()
        .map(|d| {
            let mut s = format!("{}:{} {} {}", d.pos.line, d.pos.col, d.code.as_str(), d.message);
            if let Some(h) = &d.hint {
                s.push_str(" | hint: ");
                s.push_str(h);
            }
            s
        })
        .collect()
}

#[test]
fn invalid_configs_report_every_error() {
    for file in fixtures("config") {
        let expected = expectations(&std::fs::read_to_string(&file).expect("read fixture"));
        assert!(!expected.is_empty(), "{} has no `# expect:` header", file.display());
        let loaded = gridwatch_rules::load_config(&file);
        assert_eq!(rendered(&loaded.diagnostics), expected, "{}", file.display());
    }
}

#[test]
fn invalid_fixtures_report_exactly_the_expected_diagnostics() {
    let mut failures = Vec::new();
    for file in fixtures("invalid") {
        let expected = expectations(&std::fs::read_to_string(&file).expect("read fixture"));
        assert!(!expected.is_empty(), "{} has no `# expect:` header", file.display());
        let loaded = load_rules_only(&config(), std::slice::from_ref(&file));
        let actual = rendered(&loaded.diagnostics);
        if actual != expected {
            failures.push(format!(
                "{}\n  expected:\n    {}\n  actual:\n    {}",
                file.display(),
                expected.join("\n    "),
                actual.join("\n    ")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn diagnostics_render_with_location_snippet_caret_and_hint() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/invalid/unknown_field.yaml");
    let loaded = load_rules_only(&config(), std::slice::from_ref(&file));
    let rendered = loaded.diagnostics[0].to_string();
    let expected = format!(
        "error[E104]: unknown field `valu` in `where`: stream `sensor` has no such field\n \
         --> {}:7:12\n  |\n7 |     where: valu > 25\n  |            ^^^^\n  = hint: did you mean `value`?\n",
        file.display()
    );
    assert_eq!(rendered, expected);
    assert_eq!(loaded.diagnostics[0].snippet().as_deref(), Some("valu"));
}

#[test]
fn every_valid_fixture_loaded_twice_gives_the_same_rule_fingerprints() {
    // Snapshots restore (and reloads keep) a rule's state only into the same fingerprint:
    // nothing in a compiled rule may depend on a hash seed (the geofence fixtures have a
    // route table).
    for file in fixtures("valid") {
        let load = || load_rules_only(&config(), std::slice::from_ref(&file)).plan;
        let (a, b) = (load(), load());
        for r in 0..a.rules.len() {
            assert_eq!(
                gridwatch_engine::pipeline::snapshot::rule_fingerprint(&a, r),
                gridwatch_engine::pipeline::snapshot::rule_fingerprint(&b, r),
                "{}: rule {}",
                file.display(),
                a.rules[r].meta.id
            );
        }
    }
}
