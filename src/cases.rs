//! `gridwatch cases list|show`: cases from the store, with the three supervision lists.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, anyhow};
use gridwatch_cases::model::Case;
use gridwatch_connectors::store::{self, CaseFilter};
use gridwatch_engine::time::format_timestamp;
use gridwatch_rules::config::Config;

use crate::cli::{CasesArgs, CasesCommand};

/// `gridwatch cases list|show`.
pub fn command(args: CasesArgs) -> Result<std::process::ExitCode> {
    let location = match (&args.store, &args.config) {
        (Some(s), _) => s.clone(),
        (None, config) => store_of(config)?,
    };
    let mut store = store::open_existing(&location)
        .with_context(|| format!("opening the case store `{}`", store::redact(&location)))?;
    let mut out = std::io::stdout().lock();
    match args.command {
        CasesCommand::List(l) => {
            let filter = CaseFilter {
                status: match &l.status {
                    Some(s) => Some(gridwatch_cases::CaseStatus::parse(s).ok_or_else(|| {
                        let names: Vec<&str> = gridwatch_cases::CaseStatus::ALL.iter().map(|s| s.name()).collect();
                        anyhow!("unknown status `{s}` (one of: {})", names.join(", "))
                    })?),
                    None => None,
                },
                open_only: l.open,
                overdue: l.overdue,
                key: l.key,
                difficult: l.difficult,
                unit: l.unit.clone(),
                category_prefix: l.category.clone(),
                limit: Some(l.limit),
            };
            let cases = store.list(&filter)?;
            if l.json {
                for c in &cases {
                    serde_json::to_writer(&mut out, c)?;
                    writeln!(out)?;
                }
            } else {
                writeln!(
                    out,
                    "{:<21} {:<11} {:<8} {:<24} {:<40} {:<26} {:<20} flags",
                    "case", "status", "severity", "first seen", "category", "unit", "deadline"
                )?;
                for c in &cases {
                    writeln!(out, "{}", list_line(c))?;
                }
                let (n, events) = store.counts()?;
                writeln!(out, "{} shown; {n} cases, {events} events in the store", cases.len())?;
            }
        }
        CasesCommand::Show(s) => {
            let case = store.get(&s.id)?.ok_or_else(|| anyhow!("no case `{}` in the store", s.id))?;
            if s.json {
                serde_json::to_writer_pretty(&mut out, &case)?;
                writeln!(out)?;
            } else {
                show(&mut out, &case)?;
            }
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

fn store_of(config: &Path) -> Result<String> {
    let loaded = gridwatch_rules::load_config(config);
    let (config, _): (Config, _) = loaded.into_result().map_err(|e| anyhow!("invalid configuration:\n{e}"))?;
    config
        .sinks
        .iter()
        .find_map(|s| match &s.kind {
            gridwatch_rules::sinks::SinkKind::CaseStore { location } => Some(location.clone()),
            _ => None,
        })
        .ok_or_else(|| {
            anyhow!("`{}` has no case store sink (`kind: case_store`); pass --store PATH|URL", config.path.display())
        })
}

fn flags(c: &Case) -> String {
    let mut f = Vec::new();
    if c.flags.overdue {
        f.push("overdue");
    }
    if c.flags.key {
        f.push("key");
    }
    if c.flags.difficult {
        f.push("difficult");
    }
    f.join(",")
}

fn list_line(c: &Case) -> String {
    format!(
        "{:<21} {:<11} {:<8} {:<24} {:<40} {:<26} {:<20} {}",
        c.case_id,
        c.status.name(),
        c.severity.name(),
        format_timestamp(c.first_seen),
        c.category,
        c.unit.as_deref().unwrap_or("-"),
        c.deadline.map(format_timestamp).unwrap_or_default(),
        flags(c)
    )
}

fn show(out: &mut impl Write, c: &Case) -> Result<()> {
    writeln!(out, "case        {}", c.case_id)?;
    writeln!(out, "title       {}", c.title)?;
    writeln!(out, "category    {}   severity {}   status {}", c.category, c.severity.name(), c.status.name())?;
    writeln!(out, "case key    {}", c.case_key)?;
    if let Some(p) = c.location {
        writeln!(out, "location    {:.6}, {:.6}   grid {}", p.lat, p.lon, c.grid_id.as_deref().unwrap_or("-"))?;
    }
    if let Some(comp) = &c.component_id {
        writeln!(out, "component   {comp}")?;
    }
    let by = c.dispatch_by.and_then(|b| serde_json::to_value(b).ok()).and_then(|v| v.as_str().map(str::to_string));
    writeln!(out, "unit        {} (by {})", c.unit.as_deref().unwrap_or("-"), by.unwrap_or_else(|| "-".into()))?;
    if let Some(d) = c.deadline {
        writeln!(out, "deadline    {}", format_timestamp(d))?;
    }
    writeln!(out, "flags       {}", flags(c))?;
    writeln!(out, "seen        {} → {}", format_timestamp(c.first_seen), format_timestamp(c.last_seen))?;
    writeln!(out, "alerts      {} ({} firing): {}", c.alert_ids.len(), c.firing.len(), c.rules.join(", "))?;
    writeln!(out, "history")?;
    for e in &c.history {
        let detail =
            if e.detail.is_empty() { String::new() } else { serde_json::Value::Object(e.detail.clone()).to_string() };
        writeln!(
            out,
            "  {:>3} {} {:<14} → {:<11} {:<26} {}",
            e.seq,
            format_timestamp(e.at),
            e.kind.name(),
            e.status.name(),
            e.unit.as_deref().unwrap_or("-"),
            detail
        )?;
    }
    Ok(())
}
