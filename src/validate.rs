//! `gridwatch validate`: every error at once, located, with hints.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Result, bail};
use gridwatch_rules::compile::{is_config_file, render_all};
use gridwatch_rules::{load_config, load_rules_only};

use crate::cli::ValidateArgs;

pub fn validate(args: ValidateArgs) -> Result<ExitCode> {
    let (configs, rule_paths): (Vec<PathBuf>, Vec<PathBuf>) =
        args.paths.iter().cloned().partition(|p| p.is_file() && is_config_file(p));
    let config = match args.config.clone().or_else(|| configs.first().cloned()) {
        Some(c) => c,
        None => match find_config(&rule_paths[0]) {
            Some(c) => c,
            None => bail!(
                "no config with stream schemas found for `{}`; pass one with --config (rules are checked against its streams)",
                rule_paths[0].display()
            ),
        },
    };
    let loaded = if rule_paths.is_empty() { load_config(&config) } else { load_rules_only(&config, &rule_paths) };
    if !loaded.diagnostics.is_empty() {
        println!("{}", render_all(&loaded.diagnostics));
        return Ok(ExitCode::FAILURE);
    }
    let rules = loaded.plan.rules.len();
    let files = loaded.rule_files.len();
    let streams = loaded.plan.streams.len();
    println!(
        "ok: {rules} rule{} in {files} file{} valid against {streams} stream{} of {}",
        plural(rules),
        plural(files),
        plural(streams),
        config.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// `gridwatch.yaml` in the path's directory or up to three levels above.
fn find_config(start: &Path) -> Option<PathBuf> {
    let abs = std::path::absolute(start).ok()?;
    let mut dir = if abs.is_dir() { Some(abs.as_path()) } else { abs.parent() };
    for _ in 0..4 {
        let d = dir?;
        let candidate = d.join("gridwatch.yaml");
        if candidate.is_file() {
            return Some(candidate);
        }
        dir = d.parent();
    }
    None
}
