//! Operator state in snapshots.
//!
//! A snapshot holds, per rule, the state of every key that has any, as `(key, bytes)`: the
//! key is the text the exchange hashes ([`crate::keys::write_key`]), so a snapshot written
//! by N workers restores into M: each key goes to the worker that owns it under M
//! ([`crate::keys::partition_of`]). The bytes are the operator's own per-key record, in
//! postcard (compact, schema-less: the record's Rust type is the schema). Compact rows
//! (evidence, held rows) are copied into the record, never referred to by slab position,
//! so a key's record stands alone.
//!
//! Each operator's record type is its on-disk format: changing one changes the snapshot
//! format (see the runtime's snapshot module for the version rule).

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::error::{EngineError, Result};

/// The state of one rule's keys, as written by one or more workers.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyStates {
    /// `(key, record)` per key with state.
    pub keys: Vec<(String, Vec<u8>)>,
}

impl KeyStates {
    /// Adds the record of `key`.
    pub fn push(&mut self, key: &str, record: &impl Serialize) -> Result<()> {
        let bytes = postcard::to_stdvec(record).map_err(|e| EngineError::BadState {
            rule: String::new(),
            key: key.to_string(),
            reason: format!("encoding: {e}"),
        })?;
        self.keys.push((key.to_string(), bytes));
        Ok(())
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key has state.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Bytes of records and keys.
    pub fn bytes(&self) -> usize {
        self.keys.iter().map(|(k, v)| k.len() + v.len()).sum()
    }
}

/// Reads a record written by [`KeyStates::push`]; `rule` and `key` name it in the error.
pub fn decode<T: DeserializeOwned>(rule: &str, key: &str, bytes: &[u8]) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|e| EngineError::BadState {
        rule: rule.to_string(),
        key: key.to_string(),
        reason: e.to_string(),
    })
}
