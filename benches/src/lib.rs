//! Shared setup for the criterion benchmarks: the example city's plan and events.

use std::path::PathBuf;
use std::sync::Arc;

use gridwatch_connectors::generator::{CityGenerator, GeneratorSettings};
use gridwatch_engine::Plan;

/// Repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The example city's compiled plan.
pub fn city_plan() -> Arc<Plan> {
    let (_, plan) = gridwatch_rules::load_config(&root().join("examples/city/gridwatch.yaml"))
        .into_result()
        .unwrap_or_else(|e| panic!("example city does not compile:\n{e}"));
    Arc::new(plan)
}

/// A plan with the example city's streams and the given rules (YAML text).
pub fn plan_with_rules(rules_yaml: &str) -> Arc<Plan> {
    let config = std::fs::read_to_string(root().join("examples/city/gridwatch.yaml")).expect("city config");
    let (_, plan) = gridwatch_rules::load_from_strings("gridwatch.yaml", &config, &[("bench.yaml", rules_yaml)])
        .into_result()
        .unwrap_or_else(|e| panic!("bench rules do not compile:\n{e}"));
    Arc::new(plan)
}

/// `n` events of the example city as (stream name, payload), in generation order.
pub fn city_events(n: usize) -> Vec<(&'static str, Vec<u8>)> {
    let mut g = CityGenerator::new(GeneratorSettings {
        seed: 1,
        start_ms: 1_795_000_000_000,
        duration_ms: 86_400_000,
        scale: 1,
    });
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let Some((s, p)) = g.next_event() else { break };
        out.push((gridwatch_connectors::generator::STREAMS[s], p.to_vec()));
    }
    out
}

/// `n` payloads of one stream.
pub fn stream_events(stream: &str, n: usize) -> Vec<Vec<u8>> {
    let mut g = CityGenerator::new(GeneratorSettings {
        seed: 1,
        start_ms: 1_795_000_000_000,
        duration_ms: 86_400_000 * 7,
        scale: 1,
    });
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let Some((s, p)) = g.next_event() else { break };
        if gridwatch_connectors::generator::STREAMS[s] == stream {
            out.push(p.to_vec());
        }
    }
    out
}
