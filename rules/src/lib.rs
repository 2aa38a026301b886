//! # gridwatch-rules
//!
//! The YAML rule language and service config of gridwatch: read with positions, validated
//! with every problem reported at once, and compiled into an engine [`Plan`].
//!
//! The pipeline is `text → yaml::Node (positions) → config/rule ASTs → compile → Plan`.
//! Nothing is evaluated here; expressions are planned once with DataFusion against the
//! declared stream schemas.
//!
//! [`Plan`]: gridwatch_engine::Plan

#![deny(missing_docs)]

pub mod cases;
pub mod compile;
pub mod config;
pub mod diagnostic;
pub mod duration;
pub mod expr;
pub mod kafka;
pub mod rule;
mod sequence;
pub mod sinks;
pub mod sources;
pub mod table;
mod window;
pub mod yaml;
pub mod zones;

pub use compile::{Loaded, load_config, load_from_strings, load_rules_only};
pub use diagnostic::{Diagnostic, Diagnostics};
