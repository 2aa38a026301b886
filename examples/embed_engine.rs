//! Using gridwatch as a library: compile a config and rules from text, run events through
//! a pipeline, read the alerts.
//!
//! `cargo run --example embed_engine`

use std::sync::Arc;

use gridwatch_engine::{Output, Pipeline, PipelineOptions};

const CONFIG: &str = r#"
streams:
  sensor:
    time_field: ts
    key: [device_id]
    fields:
      ts: timestamp
      device_id: string
      value: float
"#;

const RULES: &str = r#"
rules:
  - id: too-hot
    kind: threshold
    source: sensor
    condition: value > 80
    for: 1m
    clear_condition: value < 70
    severity: major
"#;

fn main() -> anyhow::Result<()> {
    let loaded = gridwatch_rules::load_from_strings("embedded.yaml", CONFIG, &[("rules.yaml", RULES)]);
    let (_, plan) = loaded.into_result().map_err(|e| anyhow::anyhow!("{e}"))?;
    let sensor = plan.stream_index("sensor").expect("declared above");
    let (mut pipeline, outputs) = Pipeline::start(Arc::new(plan), PipelineOptions { workers: 2, ..Default::default() });
    // Outputs must be drained while events go in: the channel is bounded.
    let printer = std::thread::spawn(move || {
        for output in outputs {
            match output {
                Output::Alerts(alerts) => {
                    for a in alerts {
                        println!("{:?} {} key={} values={:?}", a.state, a.rule_id, a.key, a.values);
                    }
                }
                Output::DeadLetter(d) => println!("dead letter: {}", d.reason),
                // Snapshots are the runtime's business.
                Output::Checkpoint(_) | Output::State { .. } => {}
                Output::RuleError { rule, message } => println!("rule {rule} failed: {message}"),
                // Barriers mark delivery points for sources that commit positions (Kafka).
                Output::Barrier { .. } => {}
            }
        }
    });
    for (minute, value) in [(0, 75.0), (1, 85.0), (2, 86.0), (3, 88.0), (4, 72.0), (5, 65.0)] {
        let event = format!(r#"{{"ts":"2026-11-23T08:{minute:02}:00Z","device_id":"boiler-1","value":{value}}}"#);
        pipeline.push(sensor, event.as_bytes())?;
    }
    pipeline.push(sensor, b"not json")?;
    let report = pipeline.finish()?;
    printer.join().expect("printer thread");
    println!("accepted {} events", report.streams[0].accepted);
    Ok(())
}
