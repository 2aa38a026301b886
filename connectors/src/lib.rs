//! # gridwatch-connectors
//!
//! Sources and sinks around the engine: the seeded example-city [`generator`], NDJSON
//! [`file`] replay and output, and [`kafka`] source and sinks, the case [`store`] (SQLite, PostgreSQL) and the [`webhook`] sink. Connectors move bytes; they never evaluate rules.

#![deny(missing_docs)]

pub mod city_map;
pub use gridwatch_runtime::crash;
pub mod error;
pub mod file;
pub mod generator;
pub mod kafka;
pub mod net;
pub mod sinks;
pub mod sources;
pub mod store;
pub mod webhook;

pub use error::{ConnectorError, Result};
