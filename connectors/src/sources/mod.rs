//! Sources as components: each implements [`gridwatch_runtime::Source`] and is driven by
//! [`gridwatch_runtime::drive`]. (The Kafka source, whose consumer group assigns
//! partitions and so decides when a pipeline starts and stops, runs its own loop:
//! [`crate::kafka::run_source`].)

pub mod file;
pub mod generator;
pub mod http;
pub mod mqtt;
