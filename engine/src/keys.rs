//! Keys: extracting a row's key, interning per-key state, rendering rows as evidence.

use std::fmt::Write as _;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, Float64Type, Int64Type, TimestampMillisecondType};
use arrow::record_batch::RecordBatch;
use hashbrown::HashTable;
use xxhash_rust::xxh3::xxh3_64;

use crate::time::format_timestamp;

/// Writes the key of row `row` (key columns joined by `|`; nulls as empty) into `out`.
#[inline]
pub fn write_key(columns: &[ArrayRef], row: usize, out: &mut String) {
    out.clear();
    for (i, col) in columns.iter().enumerate() {
        if i > 0 {
            out.push('|');
        }
        write_value(col, row, out);
    }
}

#[inline]
fn write_value(col: &ArrayRef, row: usize, out: &mut String) {
    if col.is_null(row) {
        return;
    }
    match col.data_type() {
        DataType::Utf8 => out.push_str(col.as_string::<i32>().value(row)),
        DataType::Int64 => {
            let _ = write!(out, "{}", col.as_primitive::<Int64Type>().value(row));
        }
        DataType::Float64 => {
            let _ = write!(out, "{}", col.as_primitive::<Float64Type>().value(row));
        }
        DataType::Boolean => out.push_str(if col.as_boolean().value(row) { "true" } else { "false" }),
        DataType::Timestamp(_, _) => {
            let _ = write!(out, "{}", col.as_primitive::<TimestampMillisecondType>().value(row));
        }
        other => {
            let _ = write!(out, "<{other}>");
        }
    }
}

/// Stable hash of a key string, used to pick a partition.
#[inline]
pub fn partition_of(key: &str, partitions: usize) -> usize {
    (xxh3_64(key.as_bytes()) % partitions as u64) as usize
}

/// Per-key state, interned: each distinct key gets a dense slot; lookups by `&str` do not
/// allocate, only the first sighting of a key does, and each key is stored once (the hash
/// table holds slot numbers; the key text lives in `keys`).
#[derive(Debug)]
pub struct KeyTable<S> {
    index: HashTable<u32>,
    keys: Vec<Box<str>>,
    states: Vec<S>,
}

impl<S> Default for KeyTable<S> {
    fn default() -> Self {
        KeyTable { index: HashTable::new(), keys: Vec::new(), states: Vec::new() }
    }
}

#[inline]
fn key_hash(key: &str) -> u64 {
    xxh3_64(key.as_bytes())
}

impl<S> KeyTable<S> {
    /// The slot of `key`, creating its state with `init` on first sight.
    #[inline]
    pub fn slot(&mut self, key: &str, init: impl FnOnce() -> S) -> u32 {
        let hash = key_hash(key);
        if let Some(&slot) = self.index.find(hash, |&s| &*self.keys[s as usize] == key) {
            return slot;
        }
        let slot = self.keys.len() as u32;
        self.keys.push(key.into());
        self.states.push(init());
        let keys = &self.keys;
        self.index.insert_unique(hash, slot, |&s| key_hash(&keys[s as usize]));
        slot
    }

    /// State of a slot.
    #[inline]
    pub fn state_mut(&mut self, slot: u32) -> &mut S {
        &mut self.states[slot as usize]
    }

    /// Key and state of a slot.
    #[inline]
    pub fn entry_mut(&mut self, slot: u32) -> (&str, &mut S) {
        (&self.keys[slot as usize], &mut self.states[slot as usize])
    }

    /// Number of keys tracked.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Renders row `row` as a JSON object (for evidence). Only called when an alert is raised.
/// Null cells — absent optional fields, and fields no rule reads (they are not decoded) —
/// are left out.
pub fn row_to_json(batch: &RecordBatch, row: usize) -> serde_json::Value {
    let mut obj = serde_json::Map::with_capacity(batch.num_columns());
    for (field, col) in batch.schema().fields().iter().zip(batch.columns()) {
        if col.is_null(row) {
            continue;
        }
        obj.insert(field.name().clone(), cell_to_json(col, row));
    }
    serde_json::Value::Object(obj)
}

/// One cell as JSON.
pub fn cell_to_json(col: &ArrayRef, row: usize) -> serde_json::Value {
    use serde_json::Value;
    if col.is_null(row) {
        return Value::Null;
    }
    match col.data_type() {
        DataType::Utf8 => Value::from(col.as_string::<i32>().value(row)),
        DataType::Int64 => Value::from(col.as_primitive::<Int64Type>().value(row)),
        DataType::Float64 => Value::from(col.as_primitive::<Float64Type>().value(row)),
        DataType::Boolean => Value::from(col.as_boolean().value(row)),
        DataType::Timestamp(_, _) => {
            Value::from(format_timestamp(col.as_primitive::<TimestampMillisecondType>().value(row)))
        }
        other => Value::from(format!("<{other}>")),
    }
}
