//! Crash points for restart tests: `GRIDWATCH_CRASH_AT=<point>:<n>` makes the process abort
//! (no destructors, no flushing: as abrupt as SIGKILL) the `n`-th time it reaches `<point>`.
//!
//! A SIGKILL sent from outside lands wherever the process happens to be; these land exactly
//! where a crash is most dangerous — in the middle of a store transaction, or just after it
//! committed but before anything else was flushed — so a test can kill a run at every such
//! point and compare the result with an uninterrupted run. Points:
//!
//! | point | where |
//! |---|---|
//! | `store-write` | inside a case-store transaction, after its rows, before its commit |
//! | `store-committed` | right after a case-store transaction committed |
//! | `snapshot-write` | half-way through writing a snapshot's temporary file |
//! | `snapshot-written` | right after a snapshot was renamed into place |
//!
//! Unset (the normal case), a crash point costs one relaxed atomic load.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

struct Armed {
    point: String,
    at: u64,
    hits: AtomicU64,
}

fn armed() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let spec = std::env::var("GRIDWATCH_CRASH_AT").ok()?;
            let (point, at) = spec.rsplit_once(':')?;
            Some(Armed { point: point.to_string(), at: at.parse().ok()?, hits: AtomicU64::new(0) })
        })
        .as_ref()
}

/// Aborts the process if `GRIDWATCH_CRASH_AT` names this point and this is its n-th hit.
pub fn point(name: &str) {
    if let Some(a) = armed()
        && a.point == name
        && a.hits.fetch_add(1, Ordering::Relaxed) + 1 == a.at
    {
        eprintln!("crash point {name}:{} reached: aborting (GRIDWATCH_CRASH_AT)", a.at);
        std::process::abort();
    }
}
