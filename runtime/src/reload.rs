//! Hot reload: what asks for one, and what the last one did.
//!
//! The driver ([`crate::source::drive`]) asks its [`Reloader`] at every turn whether a
//! reload was requested (SIGHUP, `POST /-/reload`). If so, the reloader loads and
//! validates the new rules; if they are invalid, the old rules keep running and the
//! diagnostics are kept in the [`ReloadStatus`] (served at `/api/rules/status`,
//! `gridwatch_config_last_reload_successful` 0). If they are valid, the driver swaps them in
//! at a barrier ([`gridwatch_engine::Pipeline::reload`]).

use std::sync::Arc;
use std::sync::Mutex;

use gridwatch_engine::Plan;
use gridwatch_engine::pipeline::ReloadChanges;
use serde::Serialize;

/// Loads the rules to swap in.
pub trait Reloader: Send {
    /// Called at every turn of the driver: once a requested reload has loaded and
    /// validated the new config and rules (off the driver's thread, so input keeps flowing
    /// meanwhile), the plan to swap in, or every diagnostic (file:line:column) of why it
    /// cannot be; `None` while there is nothing to apply.
    fn poll(&mut self) -> Option<Result<Arc<Plan>, String>>;
}

/// The outcome of the reloads so far, shared with the admin endpoints.
#[derive(Debug, Default)]
pub struct ReloadStatus {
    inner: Mutex<ReloadState>,
}

/// What [`ReloadStatus`] holds.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadState {
    /// Whether the last reload succeeded (true before any).
    pub last_successful: bool,
    /// When the last successful reload (or the start) happened, ms since the epoch.
    pub last_success_ms: i64,
    /// When the last attempt happened, ms since the epoch (0: none yet).
    pub last_attempt_ms: i64,
    /// Reloads applied.
    pub reloads: u64,
    /// Reloads refused (invalid rules, or streams changed).
    pub failures: u64,
    /// Why the last one was refused: every diagnostic.
    pub error: Option<String>,
    /// What the last successful one changed.
    pub changes: Option<ReloadChanges>,
}

impl Default for ReloadState {
    fn default() -> Self {
        ReloadState {
            last_successful: true,
            last_success_ms: crate::wall_clock_ms(),
            last_attempt_ms: 0,
            reloads: 0,
            failures: 0,
            error: None,
            changes: None,
        }
    }
}

impl ReloadStatus {
    /// The current state.
    pub fn get(&self) -> ReloadState {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Attempts so far (applied or refused): a caller waiting for its request's outcome
    /// waits for this to grow.
    pub fn attempts(&self) -> u64 {
        let s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        s.reloads + s.failures
    }

    /// A reload was applied.
    pub fn succeeded(&self, changes: ReloadChanges) {
        let mut s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let now = crate::wall_clock_ms();
        s.last_successful = true;
        s.last_success_ms = now;
        s.last_attempt_ms = now;
        s.reloads += 1;
        s.error = None;
        s.changes = Some(changes);
    }

    /// A reload was refused; the old rules keep running.
    pub fn failed(&self, error: String) {
        let mut s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        s.last_successful = false;
        s.last_attempt_ms = crate::wall_clock_ms();
        s.failures += 1;
        s.error = Some(error);
    }
}
