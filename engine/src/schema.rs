//! Stream schemas: the declared shape of each input stream.
//!
//! A stream is a named flow of JSON events with a fixed set of typed fields, one of which is
//! the event time and some of which form the entity key. Each stream decodes into Arrow
//! record batches with exactly these columns, in declaration order.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::zones::ZoneSet;

/// The type of one declared field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldType {
    /// UTF-8 text.
    String,
    /// 64-bit signed integer.
    Int,
    /// 64-bit float; JSON integers are accepted and widened.
    Float,
    /// `true` / `false`.
    Bool,
    /// A point in time: RFC 3339 text or epoch milliseconds.
    Timestamp,
}

impl FieldType {
    /// The name used in config files.
    pub fn name(self) -> &'static str {
        match self {
            FieldType::String => "string",
            FieldType::Int => "int",
            FieldType::Float => "float",
            FieldType::Bool => "bool",
            FieldType::Timestamp => "timestamp",
        }
    }

    /// Parses a config type name.
    pub fn parse(name: &str) -> Option<FieldType> {
        Some(match name {
            "string" => FieldType::String,
            "int" => FieldType::Int,
            "float" => FieldType::Float,
            "bool" => FieldType::Bool,
            "timestamp" => FieldType::Timestamp,
            _ => return None,
        })
    }

    /// All type names, for hints.
    pub const NAMES: [&'static str; 5] = ["string", "int", "float", "bool", "timestamp"];

    /// The Arrow type the field decodes into.
    pub fn arrow_type(self) -> DataType {
        match self {
            FieldType::String => DataType::Utf8,
            FieldType::Int => DataType::Int64,
            FieldType::Float => DataType::Float64,
            FieldType::Bool => DataType::Boolean,
            FieldType::Timestamp => DataType::Timestamp(TimeUnit::Millisecond, Some("+00:00".into())),
        }
    }
}

/// One declared field of a stream.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldDef {
    /// JSON key and column name.
    pub name: String,
    /// Declared type.
    pub ty: FieldType,
    /// A row without this field (or with `null`) is dead-lettered.
    pub required: bool,
    /// Unit of numeric values of a timestamp field (the stream's `time_unit`).
    pub unit: EpochUnit,
}

/// What to do with an event that arrives behind the watermark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LatePolicy {
    /// Send it to the dead-letter output with reason `late` (the default).
    #[default]
    DeadLetter,
    /// Count it and drop it without a dead-letter record.
    Drop,
}

/// The unit of numeric (epoch) timestamps of a stream; RFC 3339 text is unaffected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EpochUnit {
    /// Seconds since the Unix epoch (fractions allowed: `1700000000.25`).
    Seconds,
    /// Milliseconds (the default).
    #[default]
    Millis,
    /// Microseconds.
    Micros,
    /// Nanoseconds.
    Nanos,
}

impl EpochUnit {
    /// Parses a config name: `s`, `ms`, `us`, `ns`.
    pub fn parse(name: &str) -> Option<EpochUnit> {
        Some(match name {
            "s" => EpochUnit::Seconds,
            "ms" => EpochUnit::Millis,
            "us" => EpochUnit::Micros,
            "ns" => EpochUnit::Nanos,
            _ => return None,
        })
    }

    /// The config name.
    pub fn name(self) -> &'static str {
        match self {
            EpochUnit::Seconds => "s",
            EpochUnit::Millis => "ms",
            EpochUnit::Micros => "us",
            EpochUnit::Nanos => "ns",
        }
    }

    /// All config names, for hints.
    pub const NAMES: [&'static str; 4] = ["s", "ms", "us", "ns"];

    /// An integer epoch value in this unit as milliseconds (floored); `None` on overflow.
    #[inline]
    pub fn int_to_millis(self, v: i64) -> Option<i64> {
        match self {
            EpochUnit::Seconds => v.checked_mul(1000),
            EpochUnit::Millis => Some(v),
            EpochUnit::Micros => Some(v.div_euclid(1000)),
            EpochUnit::Nanos => Some(v.div_euclid(1_000_000)),
        }
    }

    /// A fractional epoch value in this unit as milliseconds (floored); `None` if not finite
    /// or out of the `i64` range.
    pub fn float_to_millis(self, v: f64) -> Option<i64> {
        let ms = match self {
            EpochUnit::Seconds => v * 1000.0,
            EpochUnit::Millis => v,
            EpochUnit::Micros => v / 1000.0,
            EpochUnit::Nanos => v / 1_000_000.0,
        }
        .floor();
        (ms.is_finite() && ms.abs() < 9.0e18).then_some(ms as i64)
    }
}

/// Adds the attributes of the zone containing each event's position as columns.
#[derive(Debug, Clone)]
pub struct Enrichment {
    /// The zone set (a grid layer or any zone set).
    pub zones: Arc<ZoneSet>,
    /// Latitude field index.
    pub lat: usize,
    /// Longitude field index.
    pub lon: usize,
    /// (zone property, target field index): the target fields are optional strings that
    /// the decoder fills from the first zone containing the point (null outside all).
    pub columns: Vec<(String, usize)>,
}

/// A declared input stream.
#[derive(Debug, Clone)]
pub struct StreamDef {
    /// Stream name, referenced by rules' `source`.
    pub name: String,
    /// Declared fields, in column order.
    pub fields: Vec<FieldDef>,
    /// Index into `fields` of the event-time field (type timestamp).
    pub time_field: usize,
    /// Indexes into `fields` of the entity key.
    pub key_fields: Vec<usize>,
    /// Allowed out-of-orderness: the watermark trails the largest event time by this much.
    pub max_out_of_orderness_ms: i64,
    /// After this much processing time without events, the watermark advances with the clock.
    pub idle_timeout_ms: Option<i64>,
    /// Policy for events behind the watermark.
    pub late_policy: LatePolicy,
    /// How far ahead an event time may be (of its arrival time for live sources, of the
    /// stream's recent event times for replays) before it is dead-lettered as `future`
    /// (see [`crate::future`]); `None` accepts any.
    pub max_future_ms: Option<i64>,
    /// Unit of numeric timestamps.
    pub time_unit: EpochUnit,
    /// Latitude and longitude fields, if the stream has positions.
    pub location: Option<(usize, usize)>,
    /// Columns derived from zones at the event's position.
    pub enrichments: Vec<Enrichment>,
}

impl FieldDef {
    /// A field.
    pub fn new(name: &str, ty: FieldType, required: bool) -> Self {
        FieldDef { name: name.into(), ty, required, unit: EpochUnit::Millis }
    }
}

impl StreamDef {
    /// A stream with these fields, event-time field and key; everything else at its
    /// default: no out-of-orderness, no idle timeout, late events dead-lettered, no bound
    /// on future event times, epoch milliseconds, no location, no enrichment.
    pub fn new(name: &str, fields: Vec<FieldDef>, time_field: usize, key_fields: Vec<usize>) -> Self {
        StreamDef {
            name: name.into(),
            fields,
            time_field,
            key_fields,
            max_out_of_orderness_ms: 0,
            idle_timeout_ms: None,
            late_policy: LatePolicy::default(),
            max_future_ms: None,
            time_unit: EpochUnit::Millis,
            location: None,
            enrichments: Vec::new(),
        }
    }

    /// The Arrow schema of decoded batches.
    pub fn arrow_schema(&self) -> SchemaRef {
        let fields: Vec<Field> =
            self.fields.iter().map(|f| Field::new(&f.name, f.ty.arrow_type(), !f.required)).collect();
        Arc::new(Schema::new(fields))
    }

    /// Index of the field with this name.
    pub fn field_index(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name == name)
    }
}
