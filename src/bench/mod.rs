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

/// Resident memory of this process now and at its peak (VmRSS, VmHWM), in bytes.
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
