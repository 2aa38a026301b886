//! `gridwatch state inspect DIR`: what the snapshots in a state directory hold.

use std::process::ExitCode;

use anyhow::Result;
use gridwatch_engine::time::format_timestamp;
use gridwatch_runtime::snapshot::{Listed, SnapshotDir};
use serde::Serialize;

use crate::cli::StateInspectArgs;

#[derive(Default, Serialize)]
struct Inspected {
    path: String,
    bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    written_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gridwatch_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    workers: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    position: Option<serde_json::Value>,
    rules: Vec<RuleSummary>,
    streams: Vec<StreamSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    case_stage_bytes: Option<usize>,
}

#[derive(Serialize)]
struct RuleSummary {
    rule: String,
    keys: usize,
    bytes: usize,
}

#[derive(Serialize)]
struct StreamSummary {
    stream: String,
    watermark: Option<String>,
    received: u64,
    waiting: usize,
}

fn inspected(l: Listed) -> Inspected {
    let path = l.path.display().to_string();
    match l.content {
        Err(e) => Inspected { path, bytes: l.bytes, error: Some(e), ..Default::default() },
        Ok(s) => Inspected {
            path,
            bytes: l.bytes,
            error: None,
            seq: Some(s.meta.seq),
            written_at: Some(format_timestamp(s.meta.written_at_ms)),
            gridwatch_version: Some(s.meta.gridwatch_version),
            workers: Some(s.meta.workers),
            position: Some(
                serde_json::from_slice(&s.meta.position)
                    .unwrap_or_else(|_| serde_json::Value::String(format!("{} bytes", s.meta.position.len()))),
            ),
            source: Some(s.meta.source),
            rules: s
                .engine
                .rules
                .iter()
                .map(|r| RuleSummary { rule: r.id.clone(), keys: r.keys.len(), bytes: r.keys.bytes() })
                .collect(),
            streams: s
                .engine
                .streams
                .iter()
                .map(|st| StreamSummary {
                    stream: st.name.clone(),
                    watermark: (st.tracker.watermark() != gridwatch_engine::time::WATERMARK_START)
                        .then(|| format_timestamp(st.tracker.watermark())),
                    received: st.stats.received,
                    waiting: st.waiting.len(),
                })
                .collect(),
            case_stage_bytes: s.stage.as_ref().map(Vec::len),
        },
    }
}

/// Prints what each snapshot in the directory holds, newest first. Exit status 1 if the
/// newest cannot be read (a restart would fall back to an older one).
pub fn inspect(args: StateInspectArgs) -> Result<ExitCode> {
    let dir = SnapshotDir::existing(&args.dir)?;
    let all: Vec<Inspected> = dir.list()?.into_iter().map(inspected).collect();
    let mut text = String::new();
    if args.json {
        text = serde_json::to_string_pretty(&all)? + "\n";
    } else if all.is_empty() {
        text = format!("{}: no snapshots\n", args.dir.display());
    } else {
        for (i, s) in all.iter().enumerate() {
            if i > 0 {
                text.push('\n');
            }
            print_one(&mut text, s, i == 0);
        }
    }
    // `| head` closing the pipe early is not an error.
    use std::io::Write as _;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e.into()),
        _ => {}
    }
    let newest_bad = all.first().is_some_and(|s| s.error.is_some());
    Ok(if newest_bad { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

fn print_one(out: &mut String, s: &Inspected, newest: bool) {
    use std::fmt::Write as _;
    let tag = if newest { " (newest: a restart resumes from it)" } else { "" };
    let _ = writeln!(out, "{}  {} bytes{tag}", s.path, s.bytes);
    if let Some(e) = &s.error {
        let _ = writeln!(out, "  cannot be read: {e}");
        return;
    }
    let _ = writeln!(
        out,
        "  barrier {}  written {}  by gridwatch {}  with {} workers",
        s.seq.unwrap_or(0),
        s.written_at.as_deref().unwrap_or("?"),
        s.gridwatch_version.as_deref().unwrap_or("?"),
        s.workers.unwrap_or(0)
    );
    let _ = writeln!(
        out,
        "  source {}  position {}",
        s.source.as_deref().unwrap_or("?"),
        s.position.as_ref().map(|p| p.to_string()).unwrap_or_default()
    );
    let _ = writeln!(out, "  {:<40} {:>10} {:>12}", "rule", "keys", "bytes");
    for r in &s.rules {
        let _ = writeln!(out, "  {:<40} {:>10} {:>12}", r.rule, r.keys, r.bytes);
    }
    let _ = writeln!(out, "  {:<40} {:>24} {:>10} {:>8}", "stream", "watermark", "received", "waiting");
    for st in &s.streams {
        let _ = writeln!(
            out,
            "  {:<40} {:>24} {:>10} {:>8}",
            st.stream,
            st.watermark.as_deref().unwrap_or("-"),
            st.received,
            st.waiting
        );
    }
    if let Some(b) = s.case_stage_bytes {
        let _ = writeln!(out, "  case stage: {b} bytes");
    }
}
