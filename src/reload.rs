//! Hot reload of the rules: SIGHUP and `POST /-/reload` ask, the driver applies (see the
//! runtime's reload module).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use gridwatch_engine::Plan;
use gridwatch_runtime::Reloader;

/// Reloads the rules of the config file the run started with. Loading (YAML, SQL
/// planning, zone files) runs on a thread of its own; the driver only swaps.
pub struct ConfigReloader {
    config: PathBuf,
    requested: Arc<AtomicBool>,
    loading: Option<std::thread::JoinHandle<Result<Arc<Plan>, String>>>,
}

impl ConfigReloader {
    /// Reloads `config`'s rules when `requested` is raised (SIGHUP is wired to it here).
    pub fn new(config: PathBuf, requested: Arc<AtomicBool>) -> anyhow::Result<ConfigReloader> {
        signal_hook::flag::register(signal_hook::consts::SIGHUP, requested.clone())?;
        Ok(ConfigReloader { config, requested, loading: None })
    }
}

fn load(config: &std::path::Path) -> Result<Arc<Plan>, String> {
    let started = std::time::Instant::now();
    let (config, plan) = gridwatch_rules::load_config(config).into_result()?;
    for w in &config.warnings {
        eprintln!("warning: {w}");
    }
    tracing::info!(took = ?started.elapsed(), "new rules loaded and validated");
    Ok(Arc::new(plan))
}

impl Reloader for ConfigReloader {
    fn poll(&mut self) -> Option<Result<Arc<Plan>, String>> {
        if self.loading.as_ref().is_some_and(std::thread::JoinHandle::is_finished) {
            let done = self.loading.take()?.join();
            return Some(done.unwrap_or_else(|_| Err("loading the new rules panicked (a bug in gridwatch)".into())));
        }
        // A request while one loads is folded into it (it reads the files after).
        if self.loading.is_none() && self.requested.swap(false, Ordering::AcqRel) {
            let config = self.config.clone();
            self.loading = std::thread::Builder::new()
                .name("gridwatch-reload".into())
                .spawn(move || load(&config))
                .map_err(|e| tracing::error!(error = %e, "cannot start loading the new rules"))
                .ok();
        }
        None
    }
}
