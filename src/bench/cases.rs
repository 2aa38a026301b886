//! `gridwatch bench cases`: alerts → cases throughput of the case stage, and the case
//! store's write rate (SQLite, and PostgreSQL with `--postgres`).

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use gridwatch_cases::model::CaseUpdate;
use gridwatch_cases::{CaseStage, CrewSimulator, StageOutput, synthetic};
use gridwatch_connectors::store::{self, CaseStore};
use serde::Serialize;

use crate::cli::BenchCasesArgs;

#[derive(Debug, Serialize)]
struct Results {
    alerts: usize,
    keys: u64,
    stage_alerts_per_s: f64,
    cases_opened: u64,
    case_events: usize,
    store_batch: usize,
    sqlite_updates_per_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    postgres_updates_per_s: Option<f64>,
}

/// Runs the benchmark.
pub fn run(args: BenchCasesArgs) -> Result<std::process::ExitCode> {
    let alerts = synthetic::alerts(args.alerts, args.keys, args.seed);
    let cfg = Arc::new(synthetic::config());
    let mut stage = CaseStage::new(cfg, Some(CrewSimulator::new(7, 4 * 3_600_000, "centre")));
    let bar = super::progress(alerts.len() as u64, "alerts → cases")?;
    let started = Instant::now();
    let mut updates: Vec<CaseUpdate> = Vec::new();
    // Barriers every 4096 alerts, as the engine would release them.
    for chunk in alerts.chunks(4096) {
        let frontier = chunk.last().map_or(i64::MIN, |a| a.event_time);
        stage.push_alerts(chunk.iter().cloned());
        stage.advance(frontier);
        collect(stage.drain(), &mut updates);
        bar.inc(chunk.len() as u64);
    }
    stage.finish();
    collect(stage.drain(), &mut updates);
    let stage_s = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let stats = stage.stats();

    let dir = tempfile::tempdir()?;
    let sqlite = dir.path().join("bench-cases.db");
    let mut s = store::open(&sqlite.display().to_string())?;
    let sqlite_rate = write_rate(&mut *s, &updates, args.batch, "SQLite")?;
    let postgres_rate = match &args.postgres {
        Some(url) => {
            let mut pg = store::open(url).with_context(|| format!("opening `{}`", store::redact(url)))?;
            Some(write_rate(&mut *pg, &updates, args.batch, "PostgreSQL")?)
        }
        None => None,
    };
    let r = Results {
        alerts: alerts.len(),
        keys: args.keys,
        stage_alerts_per_s: alerts.len() as f64 / stage_s,
        cases_opened: stats.cases_opened,
        case_events: updates.len(),
        store_batch: args.batch,
        sqlite_updates_per_s: sqlite_rate,
        postgres_updates_per_s: postgres_rate,
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "alerts            {:>12}   ({} keys)", r.alerts, r.keys)?;
    writeln!(
        out,
        "case stage        {:>12.0} alerts/s   ({} cases, {} case events)",
        r.stage_alerts_per_s, r.cases_opened, r.case_events
    )?;
    writeln!(out, "SQLite store      {:>12.0} case events/s   (batches of {})", r.sqlite_updates_per_s, r.store_batch)?;
    if let Some(p) = r.postgres_updates_per_s {
        writeln!(out, "PostgreSQL store  {:>12.0} case events/s   (batches of {})", p, r.store_batch)?;
    }
    if let Some(path) = &args.json {
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        serde_json::to_writer(&mut f, &r)?;
        f.write_all(b"\n")?;
    }
    Ok(std::process::ExitCode::SUCCESS)
}

fn collect(outputs: Vec<StageOutput>, updates: &mut Vec<CaseUpdate>) {
    updates.extend(outputs.into_iter().filter_map(|o| match o {
        StageOutput::Case(u) => Some(*u),
        _ => None,
    }));
}

/// Case events per second written in transactions of `batch` updates (each with the
/// frontier checkpoint, as the run loop writes them).
fn write_rate(store: &mut dyn CaseStore, updates: &[CaseUpdate], batch: usize, name: &str) -> Result<f64> {
    let bar = super::progress(updates.len() as u64, name)?;
    let started = Instant::now();
    for chunk in updates.chunks(batch.max(1)) {
        store.write(chunk, chunk.last().map(|u| u.event.at))?;
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok(updates.len() as f64 / started.elapsed().as_secs_f64())
}
