//! # gridwatch-connectors
//!
//! Sources and sinks around the engine: the seeded example-city [`generator`], NDJSON
//! [`file`] replay and output. Connectors move bytes; they never evaluate rules.

#![deny(missing_docs)]

pub mod city_map;
pub mod error;
pub mod file;
pub mod generator;

pub use error::{ConnectorError, Result};
