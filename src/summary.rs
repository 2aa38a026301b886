//! The run summary: printed on stderr at the end of a run and written by `--summary-json`.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use gridwatch_cases::StageStats;
use gridwatch_engine::pipeline::PipelineReport;
use gridwatch_runtime::{OutputReport, OutputsReport, RuleCounts};
use serde::Serialize;

/// What a run did, printed at the end and written by `--summary-json`.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub events_in: u64,
    pub events_accepted: u64,
    pub dead_lettered: u64,
    pub invalid: u64,
    pub late: u64,
    pub unknown_stream: u64,
    pub elapsed_s: f64,
    pub events_per_s: f64,
    pub workers: usize,
    pub batch_size: usize,
    pub alerts_total: u64,
    pub alerts: BTreeMap<String, RuleCounts>,
    pub dead_letter_reasons: BTreeMap<String, u64>,
    pub rule_errors: u64,
    /// Per rule: (failures, the first failure's message).
    pub rule_errors_by_rule: BTreeMap<String, (u64, String)>,
    pub streams: Vec<gridwatch_engine::pipeline::StreamStats>,
    pub keys_per_rule: Vec<(String, usize)>,
    /// Per sequence rule that dropped any: partial matches dropped at its `max_partial`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub partials_dropped: Vec<(String, u64)>,
    pub interrupted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_messages: Option<u64>,
    pub replay_suppressed: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cases: Option<StageStats>,
    pub outputs: Vec<OutputReport>,
}

/// The summary of a run from the engine's and the output thread's reports.
pub fn summarize(
    report: PipelineReport,
    sink: OutputsReport,
    unknown_stream: u64,
    elapsed: Duration,
    workers: usize,
    batch_size: usize,
    interrupted: bool,
) -> Summary {
    let events_in = report.streams.iter().map(|s| s.received).sum::<u64>() + unknown_stream;
    let accepted = report.streams.iter().map(|s| s.accepted).sum();
    let invalid = report.streams.iter().map(|s| s.invalid).sum();
    let late = report.streams.iter().map(|s| s.late).sum();
    let secs = elapsed.as_secs_f64();
    Summary {
        events_in,
        events_accepted: accepted,
        dead_lettered: sink.dead_letters,
        invalid,
        late,
        unknown_stream,
        elapsed_s: secs,
        events_per_s: if secs > 0.0 { events_in as f64 / secs } else { 0.0 },
        workers,
        batch_size,
        alerts_total: sink.alerts.values().map(|c| c.firing + c.resolved).sum(),
        alerts: sink.alerts,
        dead_letter_reasons: sink.dead_letter_reasons,
        rule_errors: sink.rule_errors,
        rule_errors_by_rule: sink.rule_errors_by_rule,
        streams: report.streams,
        keys_per_rule: report.keys_per_rule,
        partials_dropped: report.partials_dropped,
        interrupted,
        kafka_messages: None,
        replay_suppressed: 0,
        cases: sink.cases,
        outputs: sink.outputs,
    }
}

/// Prints the summary on stderr.
pub fn print_summary(s: &Summary) {
    let mut e = std::io::stderr().lock();
    let _ = writeln!(e, "\n── gridwatch run summary{} ──", if s.interrupted { " (interrupted)" } else { "" });
    let per_stream: Vec<String> = s.streams.iter().map(|st| format!("{} {}", st.stream, st.received)).collect();
    let _ = writeln!(e, "events in      {:>12}   ({})", s.events_in, per_stream.join(", "));
    let _ = writeln!(e, "accepted       {:>12}", s.events_accepted);
    let reasons: Vec<String> = s.dead_letter_reasons.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    let _ = writeln!(e, "dead-lettered  {:>12}   ({})", s.dead_lettered, reasons.join(", "));
    let _ = writeln!(
        e,
        "elapsed        {:>12.3} s → {:.0} events/s ({} workers, batch {})",
        s.elapsed_s, s.events_per_s, s.workers, s.batch_size
    );
    let _ = writeln!(e, "alerts         {:>12}", s.alerts_total);
    let _ = writeln!(e, "  {:<32} {:>8} {:>9}", "rule", "firing", "resolved");
    for (rule, c) in &s.alerts {
        let _ = writeln!(e, "  {:<32} {:>8} {:>9}", rule, c.firing, c.resolved);
    }
    let silent: Vec<&str> =
        s.keys_per_rule.iter().filter(|(r, _)| !s.alerts.contains_key(r)).map(|(r, _)| r.as_str()).collect();
    if !silent.is_empty() {
        let _ = writeln!(e, "  no alerts: {}", silent.join(", "));
    }
    if s.rule_errors > 0 {
        let _ =
            writeln!(e, "rule errors    {:>12}   (batches a rule could not evaluate; exit status 3)", s.rule_errors);
        for (rule, (n, first)) in &s.rule_errors_by_rule {
            let _ = writeln!(e, "  {rule:<32} {n:>8}   first: {first}");
        }
    }
    for w in s.streams.iter().filter_map(|st| st.time_warning.as_deref()) {
        let _ = writeln!(e, "warning: {w}");
    }
    for o in &s.outputs {
        let records = o.records.map_or_else(String::new, |n| format!("{n} records → "));
        let _ = writeln!(e, "output         {:<14} {:<13} {records}{}", o.sink, o.what, o.location);
    }
    if let Some(c) = &s.cases {
        let a = &c.alerts;
        let _ = writeln!(
            e,
            "alert stage    {:>12}   sent ({} silenced, {} inhibited, {} held as flapping)",
            a.sent, a.silenced, a.inhibited, a.flapping
        );
        let _ = writeln!(
            e,
            "cases          {:>12}   opened ({} still open, {} alerts joined, {} events; {} reminders, {} escalations; feedback {} applied, {} rejected)",
            c.cases_opened,
            c.open_cases,
            c.alerts_joined,
            c.case_events,
            c.reminders,
            c.escalations,
            c.feedback_applied,
            c.feedback_rejected
        );
    }
}
