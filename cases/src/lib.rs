//! The alert and case stage: what happens to alerts after the rules.
//!
//! Alerts leave the partition workers already deduplicated per episode (one firing record,
//! re-notifications, one resolved record, all with the episode's deterministic id). This
//! crate takes them from there, on one thread, in event-time order:
//!
//! 1. **alert stage** — silences, inhibition and flap suppression decide whether an alert
//!    is sent or only recorded;
//! 2. **case stage** — sent alerts join an open case with the same case key (category +
//!    grid cell, asset, zone…) within a time window, or open one; a new case is dispatched
//!    "owner first, then territory" and timed against an SLA deadline that emits reminders
//!    and escalations; case-feedback events move it through its lifecycle.
//!
//! Processing order is event time (ties broken by ids), released up to the engine's
//! watermark, so the same input gives the same cases and the same history whatever the
//! partition count or thread timing.

pub mod model;

pub use model::{Action, Case, CaseEvent, CaseStatus, CaseUpdate, DispatchBy, EventKind, Feedback, Flags, Point};
pub mod config;
pub mod gate;
pub mod simulate;
pub mod stage;
pub mod synthetic;

pub use config::CasesConfig;
pub use gate::{GatedAlert, Verdict};
pub use simulate::CrewSimulator;
pub use stage::{CaseStage, StageOutput, StageStats};

#[cfg(test)]
mod tests;
