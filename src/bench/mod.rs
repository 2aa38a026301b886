//! `gridwatch bench …`: measurements that run the real engine.

pub mod cases;
pub mod kafka;
pub mod pipeline;

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};

/// A progress bar for long benchmark phases.
pub fn progress(len: u64, what: &str) -> Result<ProgressBar> {
    let bar = ProgressBar::new(len);
    bar.set_style(ProgressStyle::with_template(&format!(
        "{{spinner}} {what} {{wide_bar}} {{human_pos}}/{{human_len}} ({{per_sec}})"
    ))?);
    Ok(bar)
}

/// Resets this process's peak resident memory (VmHWM) to the current one, so that a later
/// [`rss`] peak covers only what ran since (Linux ≥ 4.0; false where unsupported).
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Resident memory of this process now and at its peak (VmRSS, VmHWM), in bytes.
/// CPU time used by this process so far, all threads, user + system, seconds (10 ms
/// resolution).
pub fn cpu_seconds() -> f64 {
    let text = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may contain spaces) start at field 3.
    let after = text.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15, i.e. 12 and 13 after the name.
    (ticks(11) + ticks(12)) as f64 / 100.0
}

pub fn rss() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}
