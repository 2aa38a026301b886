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
///
/// Keys are never removed, so their text is appended to one string (no allocation and no
/// allocator overhead per key: 8 bytes of bookkeeping instead of a 16-byte box and its
/// ~32-byte heap block).
#[derive(Debug)]
pub struct KeyTable<S> {
    index: HashTable<u32>,
    text: String,
    /// End of each slot's key in `text`; it starts where the previous one ends.
    ends: Vec<u64>,
    states: Vec<S>,
}

impl<S> Default for KeyTable<S> {
    fn default() -> Self {
        KeyTable { index: HashTable::new(), text: String::new(), ends: Vec::new(), states: Vec::new() }
    }
}

/// The key of `slot` in a key table's text.
#[inline]
fn key_of<'a>(text: &'a str, ends: &[u64], slot: u32) -> &'a str {
    let slot = slot as usize;
    let start = if slot == 0 { 0 } else { ends[slot - 1] as usize };
    &text[start..ends[slot] as usize]
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
        if let Some(&slot) = self.index.find(hash, |&s| key_of(&self.text, &self.ends, s) == key) {
            return slot;
        }
        let slot = self.ends.len() as u32;
        self.text.push_str(key);
        self.ends.push(self.text.len() as u64);
        self.states.push(init());
        let (text, ends) = (&self.text, &self.ends);
        self.index.insert_unique(hash, slot, |&s| key_hash(key_of(text, ends, s)));
        slot
    }

    /// State of a slot.
    #[inline]
    pub fn state_mut(&mut self, slot: u32) -> &mut S {
        &mut self.states[slot as usize]
    }

    /// State of a slot, read-only.
    #[inline]
    pub fn get(&self, slot: u32) -> &S {
        &self.states[slot as usize]
    }

    /// Key and state of a slot, read-only (snapshots walk slots `0..len()` with it).
    #[inline]
    pub fn entry(&self, slot: u32) -> (&str, &S) {
        (key_of(&self.text, &self.ends, slot), &self.states[slot as usize])
    }

    /// Key and state of a slot.
    #[inline]
    pub fn entry_mut(&mut self, slot: u32) -> (&str, &mut S) {
        (key_of(&self.text, &self.ends, slot), &mut self.states[slot as usize])
    }

    /// Number of keys tracked.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// True when no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
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

/// Variable-length byte strings in one arena, each addressed by a 4-byte [`SlabRef`]: no
/// allocator header and no fat pointer per entry. Blocks are 16-byte multiples (a 4-byte
/// length, then the bytes); a freed block is reused by the next entry of its size class,
/// and the entries of one rule (e.g. compact start events) are nearly all of one or two
/// classes, so the arena stays about as large as what is live at its peak.
#[derive(Debug, Default)]
pub struct ByteSlab {
    data: Vec<u8>,
    /// Per size class (block size / 16): offsets of free blocks.
    free: Vec<Vec<u32>>,
}

/// An entry of a [`ByteSlab`]: its block's offset in 16-byte units (up to 64 GiB), or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SlabRef(u32);

impl SlabRef {
    /// No entry.
    pub const NONE: SlabRef = SlabRef(u32::MAX);

    /// Whether this refers to an entry.
    pub fn is_some(self) -> bool {
        self != Self::NONE
    }

    /// The reference as 4 bytes, to be stored inside another entry (a chain of entries).
    pub fn to_bits(self) -> u32 {
        self.0
    }

    /// The reference stored by [`SlabRef::to_bits`].
    pub fn from_bits(bits: u32) -> SlabRef {
        SlabRef(bits)
    }
}

impl ByteSlab {
    const UNIT: usize = 16;
    const HEADER: usize = 4;

    fn class_of(len: usize) -> usize {
        (Self::HEADER + len).div_ceil(Self::UNIT)
    }

    /// Stores `bytes` (at most 4 GiB).
    pub fn insert(&mut self, bytes: &[u8]) -> SlabRef {
        let class = Self::class_of(bytes.len());
        let start = match self.free.get_mut(class).and_then(Vec::pop) {
            Some(unit) => unit as usize * Self::UNIT,
            None => {
                let start = self.data.len();
                self.data.resize(start + class * Self::UNIT, 0);
                start
            }
        };
        let len = u32::try_from(bytes.len()).expect("a slab entry is under 4 GiB");
        self.data[start..start + Self::HEADER].copy_from_slice(&len.to_le_bytes());
        self.data[start + Self::HEADER..start + Self::HEADER + bytes.len()].copy_from_slice(bytes);
        SlabRef(u32::try_from(start / Self::UNIT).expect("a slab is under 64 GiB"))
    }

    /// The bytes of `entry` (empty for [`SlabRef::NONE`]).
    pub fn get(&self, entry: SlabRef) -> &[u8] {
        if !entry.is_some() {
            return &[];
        }
        let start = entry.0 as usize * Self::UNIT;
        let len = u32::from_le_bytes(self.data[start..start + Self::HEADER].try_into().expect("4 bytes")) as usize;
        &self.data[start + Self::HEADER..start + Self::HEADER + len]
    }

    /// Frees `entry` (nothing for [`SlabRef::NONE`]) for reuse; it must not be used again.
    pub fn remove(&mut self, entry: SlabRef) {
        if !entry.is_some() {
            return;
        }
        let class = Self::class_of(self.get(entry).len());
        if self.free.len() <= class {
            self.free.resize_with(class + 1, Vec::new);
        }
        self.free[class].push(entry.0);
    }

    /// Bytes held by the arena (live and free blocks).
    pub fn arena_len(&self) -> usize {
        self.data.len()
    }
}

/// Encodes row `row` compactly into `out` (cleared first), to be rendered as
/// [`row_to_json`] would only if an alert needs it later ([`compact_row_to_json`]): each
/// non-null cell as its column number, a type tag and its value in binary — no field
/// names, no number or time formatting — which is under half the size of the row's JSON
/// text. Kept per pending key, so size is memory.
pub fn compact_row_into(batch: &RecordBatch, row: usize, out: &mut Vec<u8>) {
    out.clear();
    for (c, col) in batch.columns().iter().enumerate() {
        if col.is_null(row) {
            continue;
        }
        put_varint(out, c as u64);
        match col.data_type() {
            DataType::Utf8 => put_bytes(out, CELL_STR, col.as_string::<i32>().value(row).as_bytes()),
            DataType::Int64 => put_word(out, CELL_INT, col.as_primitive::<Int64Type>().value(row).to_le_bytes()),
            DataType::Float64 => put_word(out, CELL_FLOAT, col.as_primitive::<Float64Type>().value(row).to_le_bytes()),
            DataType::Boolean => out.push(if col.as_boolean().value(row) { CELL_TRUE } else { CELL_FALSE }),
            DataType::Timestamp(_, _) => {
                put_word(out, CELL_TIME, col.as_primitive::<TimestampMillisecondType>().value(row).to_le_bytes())
            }
            other => put_bytes(out, CELL_STR, format!("<{other}>").as_bytes()),
        }
    }
}

/// The JSON object of a row encoded by [`compact_row`]; `names` are the batch's field names.
pub fn compact_row_to_json(bytes: &[u8], names: &[String]) -> serde_json::Value {
    let obj = compact_cells_of(bytes)
        .map(|(column, cell)| {
            let name = names.get(column).cloned().unwrap_or_else(|| format!("column_{column}"));
            (name, cell.to_json())
        })
        .collect();
    serde_json::Value::Object(obj)
}

/// One cell of a compact row, borrowed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CellRef<'a> {
    /// Text.
    Str(&'a str),
    /// Integer.
    Int(i64),
    /// Float.
    Float(f64),
    /// Boolean.
    Bool(bool),
    /// Timestamp, epoch milliseconds.
    Time(i64),
}

impl CellRef<'_> {
    /// The cell as it appears in alert JSON (timestamps as RFC 3339 text).
    pub fn to_json(self) -> serde_json::Value {
        match self {
            CellRef::Str(s) => s.into(),
            CellRef::Int(i) => i.into(),
            CellRef::Float(f) => f.into(),
            CellRef::Bool(b) => b.into(),
            CellRef::Time(t) => format_timestamp(t).into(),
        }
    }
}

/// The non-null cells of a row encoded by [`compact_row_into`], as (column, cell), in column
/// order. Rows are only ever decoded from what `compact_row_into` wrote; a short read ends
/// the row.
pub fn compact_cells_of(bytes: &[u8]) -> CompactCells<'_> {
    CompactCells { bytes }
}

/// Iterator of [`compact_cells_of`].
#[derive(Debug, Clone)]
pub struct CompactCells<'a> {
    bytes: &'a [u8],
}

impl<'a> Iterator for CompactCells<'a> {
    type Item = (usize, CellRef<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        let bytes = &mut self.bytes;
        let column = take_varint(bytes)? as usize;
        let (&tag, rest) = bytes.split_first()?;
        *bytes = rest;
        let cell = match tag {
            CELL_STR => {
                let len = take_varint(bytes)? as usize;
                let (text, rest) = bytes.split_at_checked(len)?;
                *bytes = rest;
                CellRef::Str(std::str::from_utf8(text).ok()?)
            }
            CELL_INT | CELL_FLOAT | CELL_TIME => {
                let (w, rest) = bytes.split_first_chunk::<8>()?;
                *bytes = rest;
                match tag {
                    CELL_INT => CellRef::Int(i64::from_le_bytes(*w)),
                    CELL_FLOAT => CellRef::Float(f64::from_le_bytes(*w)),
                    _ => CellRef::Time(i64::from_le_bytes(*w)),
                }
            }
            CELL_TRUE => CellRef::Bool(true),
            CELL_FALSE => CellRef::Bool(false),
            _ => return None,
        };
        Some((column, cell))
    }
}

/// The cell of `column` in a row encoded by [`compact_row_into`]; None when it is null (or
/// the row is cut short). Rows are a few cells long, so a scan is cheaper than an index.
pub fn compact_cell(bytes: &[u8], column: usize) -> Option<CellRef<'_>> {
    // Cells before the wanted one are skipped, not decoded: a sequence step's reference to
    // an earlier step reads one cell per (event, partial match) pair, and validating the
    // UTF-8 of every string it passes cost more than the comparison itself.
    let mut rest = bytes;
    while !rest.is_empty() {
        let at = rest;
        let c = take_varint(&mut rest)? as usize;
        if c == column {
            return compact_cells_of(at).next().map(|(_, cell)| cell);
        }
        let (&tag, after) = rest.split_first()?;
        rest = match tag {
            CELL_STR => {
                let mut r = after;
                let len = take_varint(&mut r)? as usize;
                r.get(len..)?
            }
            CELL_INT | CELL_FLOAT | CELL_TIME => after.get(8..)?,
            CELL_TRUE | CELL_FALSE => after,
            _ => return None,
        };
    }
    None
}

/// Encodes cells (column, value) as [`compact_row_into`] would, for tests.
#[cfg(test)]
pub(crate) fn compact_cells(cells: &[(usize, CellRef<'_>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for &(c, cell) in cells {
        put_varint(&mut out, c as u64);
        match cell {
            CellRef::Str(s) => put_bytes(&mut out, CELL_STR, s.as_bytes()),
            CellRef::Int(i) => put_word(&mut out, CELL_INT, i.to_le_bytes()),
            CellRef::Float(f) => put_word(&mut out, CELL_FLOAT, f.to_le_bytes()),
            CellRef::Time(t) => put_word(&mut out, CELL_TIME, t.to_le_bytes()),
            CellRef::Bool(b) => out.push(if b { CELL_TRUE } else { CELL_FALSE }),
        }
    }
    out
}

const CELL_STR: u8 = 0;
const CELL_INT: u8 = 1;
const CELL_FLOAT: u8 = 2;
const CELL_FALSE: u8 = 3;
const CELL_TRUE: u8 = 4;
const CELL_TIME: u8 = 5;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn take_varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = bytes.split_first()?;
        *bytes = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

fn put_bytes(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
    out.push(tag);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn put_word(out: &mut Vec<u8>, tag: u8, word: [u8; 8]) {
    out.push(tag);
    out.extend_from_slice(&word);
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{BooleanArray, Float64Array, Int64Array, StringArray, TimestampMillisecondArray};
    use arrow::datatypes::{Field, Schema, TimeUnit};
    use proptest::prelude::*;

    use super::*;

    type Row = (Option<String>, Option<i64>, Option<f64>, Option<bool>, Option<i64>);

    fn batch_of(rows: &[Row]) -> RecordBatch {
        let schema = Schema::new(vec![
            Field::new("s", DataType::Utf8, true),
            Field::new("i", DataType::Int64, true),
            Field::new("f", DataType::Float64, true),
            Field::new("b", DataType::Boolean, true),
            Field::new("t", DataType::Timestamp(TimeUnit::Millisecond, Some("+00:00".into())), true),
        ]);
        let columns: Vec<ArrayRef> = vec![
            Arc::new(rows.iter().map(|r| r.0.clone()).collect::<StringArray>()),
            Arc::new(rows.iter().map(|r| r.1).collect::<Int64Array>()),
            Arc::new(rows.iter().map(|r| r.2).collect::<Float64Array>()),
            Arc::new(rows.iter().map(|r| r.3).collect::<BooleanArray>()),
            Arc::new(rows.iter().map(|r| r.4).collect::<TimestampMillisecondArray>().with_timezone("+00:00")),
        ];
        RecordBatch::try_new(Arc::new(schema), columns).unwrap()
    }

    proptest! {
        /// A compact row renders exactly as the row itself would have.
        #[test]
        fn compact_rows_render_like_the_row(
            rows in prop::collection::vec((
                prop::option::of(".{0,200}"),
                prop::option::of(any::<i64>()),
                prop::option::of(any::<f64>()),
                prop::option::of(any::<bool>()),
                prop::option::of(-62_135_596_800_000i64..253_402_300_799_999),
            ), 1..8)
        ) {
            let batch = batch_of(&rows);
            let names: Vec<String> = batch.schema().fields().iter().map(|f| f.name().clone()).collect();
            let mut slab = ByteSlab::default();
            let mut scratch = Vec::new();
            let mut stored = Vec::new();
            for row in 0..batch.num_rows() {
                compact_row_into(&batch, row, &mut scratch);
                prop_assert_eq!(compact_row_to_json(&scratch, &names), row_to_json(&batch, row));
                stored.push(slab.insert(&scratch));
            }
            for (row, &entry) in stored.iter().enumerate() {
                prop_assert_eq!(compact_row_to_json(slab.get(entry), &names), row_to_json(&batch, row));
            }
        }

        /// Whatever is inserted and removed, live entries read back as written, and a freed
        /// block is reused before the arena grows for its size class.
        #[test]
        fn slab_entries_read_back_and_freed_blocks_are_reused(
            ops in prop::collection::vec((prop::collection::vec(any::<u8>(), 0..100), any::<bool>()), 1..200)
        ) {
            let mut slab = ByteSlab::default();
            let mut live: Vec<(SlabRef, Vec<u8>)> = Vec::new();
            for (bytes, remove_one) in ops {
                if remove_one && !live.is_empty() {
                    let (entry, _) = live.swap_remove(bytes.len() % live.len());
                    slab.remove(entry);
                }
                let before = slab.arena_len();
                let reusable = slab.free.get(ByteSlab::class_of(bytes.len())).is_some_and(|f| !f.is_empty());
                let entry = slab.insert(&bytes);
                prop_assert!(!reusable || slab.arena_len() == before, "a free block of the class was not reused");
                live.push((entry, bytes));
                for (entry, bytes) in &live {
                    prop_assert_eq!(slab.get(*entry), bytes.as_slice());
                }
            }
            prop_assert_eq!(slab.get(SlabRef::NONE), &[] as &[u8]);
        }
    }

    #[test]
    fn key_table_keeps_each_key_once_and_finds_it_again() {
        let mut t: KeyTable<u32> = KeyTable::default();
        let keys = ["a", "", "gas-0001", "a|b", "gas-0002"];
        let slots: Vec<u32> = keys.iter().map(|k| t.slot(k, || 7)).collect();
        assert_eq!(slots, [0, 1, 2, 3, 4]);
        assert_eq!(keys.iter().map(|k| t.slot(k, || 0)).collect::<Vec<_>>(), slots);
        assert_eq!(t.len(), 5);
        for (k, &s) in keys.iter().zip(&slots) {
            assert_eq!(t.entry_mut(s).0, *k);
        }
    }
}
