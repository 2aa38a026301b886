//! JSON → Arrow decoding.
//!
//! Each stream has a [`Decoder`] that parses payloads with sonic-rs straight into Arrow
//! column builders: a serde `DeserializeSeed` walks the object once, looks each key up among
//! the declared fields, writes the typed value into a reusable row scratch, and only when
//! the whole row is valid appends it to the builders. So a bad row never leaves a partial
//! row behind, and the happy path allocates nothing per event (strings are copied into one
//! reused buffer). Unknown keys are skipped without being materialised.

use std::fmt;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, StringBuilder, TimestampMillisecondBuilder,
};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};

use crate::reject::{Reject, RejectKind};
use crate::schema::{EpochUnit, FieldDef, FieldType, StreamDef};

#[derive(Clone, Copy, Debug)]
enum Slot {
    Missing,
    Null,
    Str(u32, u32),
    Int(i64),
    Float(f64),
    Bool(bool),
    Ts(i64),
}

enum ColumnBuilder {
    Str(StringBuilder),
    Int(Int64Builder),
    Float(Float64Builder),
    Bool(BooleanBuilder),
    Ts(TimestampMillisecondBuilder),
}

impl ColumnBuilder {
    fn new(ty: FieldType, cap: usize) -> Self {
        match ty {
            FieldType::String => ColumnBuilder::Str(StringBuilder::with_capacity(cap, cap * 16)),
            FieldType::Int => ColumnBuilder::Int(Int64Builder::with_capacity(cap)),
            FieldType::Float => ColumnBuilder::Float(Float64Builder::with_capacity(cap)),
            FieldType::Bool => ColumnBuilder::Bool(BooleanBuilder::with_capacity(cap)),
            FieldType::Timestamp => ColumnBuilder::Ts(TimestampMillisecondBuilder::with_capacity(cap)),
        }
    }

    fn append(&mut self, slot: Slot, strings: &str) {
        match (self, slot) {
            (ColumnBuilder::Str(b), Slot::Str(s, e)) => b.append_value(&strings[s as usize..e as usize]),
            (ColumnBuilder::Int(b), Slot::Int(v)) => b.append_value(v),
            (ColumnBuilder::Float(b), Slot::Float(v)) => b.append_value(v),
            (ColumnBuilder::Bool(b), Slot::Bool(v)) => b.append_value(v),
            (ColumnBuilder::Ts(b), Slot::Ts(v)) => b.append_value(v),
            (ColumnBuilder::Str(b), _) => b.append_null(),
            (ColumnBuilder::Int(b), _) => b.append_null(),
            (ColumnBuilder::Float(b), _) => b.append_null(),
            (ColumnBuilder::Bool(b), _) => b.append_null(),
            (ColumnBuilder::Ts(b), _) => b.append_null(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            ColumnBuilder::Str(b) => Arc::new(b.finish()),
            ColumnBuilder::Int(b) => Arc::new(b.finish()),
            ColumnBuilder::Float(b) => Arc::new(b.finish()),
            ColumnBuilder::Bool(b) => Arc::new(b.finish()),
            ColumnBuilder::Ts(b) => Arc::new(b.finish().with_timezone("+00:00")),
        }
    }
}

/// Decodes JSON payloads of one stream into Arrow record batches.
pub struct Decoder {
    def: Arc<StreamDef>,
    schema: SchemaRef,
    builders: Vec<ColumnBuilder>,
    slots: Vec<Slot>,
    strings: String,
    rows: usize,
    time_values: Vec<i64>,
    /// Per enrichment, per zone, per column: the property value rendered as text.
    enrich_values: Vec<Vec<Vec<Option<String>>>>,
    hits: crate::zones::ZoneHits,
    /// Fields decoded; the others are skipped like undeclared keys and stay null.
    needed: Vec<bool>,
    /// Enrichments whose columns some rule reads.
    enrich_needed: Vec<bool>,
}

impl fmt::Debug for Decoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decoder").field("stream", &self.def.name).field("rows", &self.rows).finish()
    }
}

/// A decoded batch together with the event time of every row (milliseconds since epoch).
#[derive(Debug, Clone)]
pub struct DecodedBatch {
    /// Columns as declared by the stream.
    pub batch: RecordBatch,
    /// Event time per row; the time field is required, so never null.
    pub event_time: Vec<i64>,
}

impl Decoder {
    /// A decoder for `def` with builders sized for `capacity` rows, decoding every field.
    pub fn new(def: Arc<StreamDef>, capacity: usize) -> Self {
        let all = vec![true; def.fields.len()];
        Self::with_fields(def, capacity, all)
    }

    /// A decoder that decodes (and validates) only the fields marked in `needed` — those
    /// the rules read — plus the event time; the other columns are null, and enrichments
    /// none of whose columns is needed are not looked up.
    pub fn with_fields(def: Arc<StreamDef>, capacity: usize, mut needed: Vec<bool>) -> Self {
        needed.resize(def.fields.len(), true);
        needed[def.time_field] = true;
        let enrich_needed: Vec<bool> =
            def.enrichments.iter().map(|e| e.columns.iter().any(|&(_, c)| needed[c])).collect();
        for (e, &on) in def.enrichments.iter().zip(&enrich_needed) {
            if on {
                needed[e.lat] = true;
                needed[e.lon] = true;
            }
        }
        // Skipped fields are null, so their columns must be nullable whatever the stream says.
        let declared = def.arrow_schema();
        let schema: SchemaRef = if needed.iter().all(|&n| n) {
            declared
        } else {
            let fields: Vec<arrow::datatypes::Field> = declared
                .fields()
                .iter()
                .zip(&needed)
                .map(|(f, &n)| if n { f.as_ref().clone() } else { f.as_ref().clone().with_nullable(true) })
                .collect();
            Arc::new(arrow::datatypes::Schema::new(fields))
        };
        let builders = def.fields.iter().map(|f| ColumnBuilder::new(f.ty, capacity)).collect();
        let slots = vec![Slot::Missing; def.fields.len()];
        // Property values are rendered once here, not per event.
        let enrich_values = def
            .enrichments
            .iter()
            .map(|e| {
                e.zones
                    .zones
                    .iter()
                    .map(|z| {
                        e.columns
                            .iter()
                            .map(|(prop, _)| match prop.as_str() {
                                "id" => Some(z.id.clone()),
                                "name" => Some(z.name.clone()),
                                "kind" => Some(z.kind.clone()),
                                p => z.properties.get(p).map(|v| match v {
                                    serde_json::Value::String(s) => s.clone(),
                                    other => other.to_string(),
                                }),
                            })
                            .collect()
                    })
                    .collect()
            })
            .collect();
        Decoder {
            def,
            schema,
            builders,
            slots,
            strings: String::new(),
            rows: 0,
            time_values: Vec::with_capacity(capacity),
            enrich_values,
            hits: Default::default(),
            needed,
            enrich_needed,
        }
    }

    /// The stream this decoder serves.
    pub fn stream(&self) -> &Arc<StreamDef> {
        &self.def
    }

    /// Rows appended since the last [`Decoder::finish`].
    pub fn len(&self) -> usize {
        self.rows
    }

    /// True when no rows are pending.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Decodes one payload and appends it. On error nothing is appended and the reason is
    /// returned (for the dead-letter output).
    pub fn push(&mut self, payload: &[u8]) -> Result<(), Reject> {
        self.parse(payload)?;
        self.commit();
        Ok(())
    }

    /// Decodes one payload into the row scratch and returns its event time, without
    /// appending it: the caller decides (e.g. after a lateness check) whether to
    /// [`Decoder::commit`] it.
    pub fn parse(&mut self, payload: &[u8]) -> Result<i64, Reject> {
        self.slots.fill(Slot::Missing);
        self.strings.clear();
        let mut de = sonic_rs::Deserializer::from_slice(payload);
        let mut failed_field = None;
        let seed = RowSeed {
            fields: &self.def.fields,
            needed: &self.needed,
            slots: &mut self.slots,
            strings: &mut self.strings,
            failed_field: &mut failed_field,
        };
        if let Err(e) = seed.deserialize(&mut de).and_then(|()| de.end()) {
            return Err(describe_json_error(&e, failed_field.map(|i| &*self.def.fields[i].name)));
        }
        for ((field, slot), &needed) in self.def.fields.iter().zip(&self.slots).zip(&self.needed) {
            if needed && field.required && matches!(slot, Slot::Missing | Slot::Null) {
                return Err(missing(&field.name, "missing required field"));
            }
        }
        if let Some((lat, lon)) = self.def.location {
            check_coordinate(&self.slots, &self.def.fields, lat, 90.0, "latitude")?;
            check_coordinate(&self.slots, &self.def.fields, lon, 180.0, "longitude")?;
        }
        match self.slots[self.def.time_field] {
            Slot::Ts(time) => Ok(time),
            _ => Err(missing(&self.def.fields[self.def.time_field].name, "missing event time field")),
        }
    }

    /// Appends the row last returned by a successful [`Decoder::parse`].
    pub fn commit(&mut self) {
        let Slot::Ts(time) = self.slots[self.def.time_field] else {
            debug_assert!(false, "commit() without a successful parse()");
            return;
        };
        if !self.def.enrichments.is_empty() {
            self.enrich();
        }
        for (builder, slot) in self.builders.iter_mut().zip(&self.slots) {
            builder.append(*slot, &self.strings);
        }
        self.time_values.push(time);
        self.rows += 1;
    }

    /// Fills enriched columns from the zone at the row's position.
    fn enrich(&mut self) {
        for ((e, values), _) in
            self.def.enrichments.iter().zip(&self.enrich_values).zip(&self.enrich_needed).filter(|(_, on)| **on)
        {
            // Enriched columns come from the zones only, never from the payload.
            for &(_, field) in &e.columns {
                self.slots[field] = Slot::Missing;
            }
            let (Slot::Float(lat), Slot::Float(lon)) = (self.slots[e.lat], self.slots[e.lon]) else { continue };
            e.zones.containing(e.zones.project(lon, lat), &mut self.hits);
            let Some(&zone) = self.hits.first() else { continue };
            for (c, &(_, field)) in e.columns.iter().enumerate() {
                let Some(v) = &values[zone as usize][c] else { continue };
                self.slots[field] = if self.def.fields[field].ty == FieldType::Float {
                    v.parse().map_or(Slot::Null, Slot::Float)
                } else {
                    let start = self.strings.len();
                    self.strings.push_str(v);
                    Slot::Str(start as u32, self.strings.len() as u32)
                };
            }
        }
    }

    /// Takes the rows decoded so far as one batch.
    pub fn finish(&mut self) -> DecodedBatch {
        let columns: Vec<ArrayRef> = self.builders.iter_mut().map(ColumnBuilder::finish).collect();
        self.rows = 0;
        let batch = RecordBatch::try_new(self.schema.clone(), columns)
            .expect("builders follow the stream schema by construction");
        DecodedBatch { batch, event_time: std::mem::take(&mut self.time_values) }
    }
}

/// A position field must hold a coordinate: |value| ≤ `limit` (NaN and infinities are
/// not JSON numbers, so finite values are all that can arrive).
#[inline]
fn check_coordinate(slots: &[Slot], fields: &[FieldDef], i: usize, limit: f64, what: &str) -> Result<(), Reject> {
    match slots.get(i) {
        Some(&Slot::Float(v)) if v.abs() > limit => Err(out_of_range(&fields[i].name, v, limit, what)),
        Some(&Slot::Int(v)) if (v as f64).abs() > limit => Err(out_of_range(&fields[i].name, v as f64, limit, what)),
        _ => Ok(()),
    }
}

#[cold]
fn out_of_range(field: &str, v: f64, limit: f64, what: &str) -> Reject {
    Reject::field(RejectKind::BadField, field, format!("field `{field}`: {v} is not a {what} (-{limit}..{limit})"))
}

#[cold]
fn missing(field: &str, what: &str) -> Reject {
    Reject::field(RejectKind::MissingField, field, format!("{what} `{field}`"))
}

/// The class comes from where the error arose: inside a declared field's value (the
/// decoder noted which), a JSON syntax error, or a document that is not an object.
#[cold]
fn describe_json_error(e: &sonic_rs::Error, failed_field: Option<&str>) -> Reject {
    // sonic-rs appends a multi-line snippet; the first line has the message and position.
    let full = e.to_string();
    let msg = full.lines().next().unwrap_or_default().trim();
    match failed_field {
        _ if e.is_syntax() || e.is_eof() => Reject::new(RejectKind::InvalidJson, format!("invalid JSON: {msg}")),
        Some(field) => Reject::field(RejectKind::BadField, field, msg),
        None => Reject::new(RejectKind::NotAnObject, msg),
    }
}

struct RowSeed<'a> {
    fields: &'a [FieldDef],
    needed: &'a [bool],
    slots: &'a mut [Slot],
    strings: &'a mut String,
    /// The declared field whose value failed to decode, for the rejection's class.
    failed_field: &'a mut Option<usize>,
}

impl<'de> DeserializeSeed<'de> for RowSeed<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RowSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(idx) = map.next_key_seed(KeySeed(self.fields, self.needed))? {
            match idx {
                Some(i) => {
                    let field = &self.fields[i];
                    match map.next_value_seed(ValueSeed { field, strings: self.strings }) {
                        Ok(slot) => self.slots[i] = slot,
                        Err(e) => {
                            *self.failed_field = Some(i);
                            return Err(e);
                        }
                    }
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

struct KeySeed<'a>(&'a [FieldDef], &'a [bool]);

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Option<usize>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = Option<usize>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<usize>, E> {
        Ok(self.0.iter().position(|f| f.name == v).filter(|&i| self.1[i]))
    }
}

struct ValueSeed<'a> {
    field: &'a FieldDef,
    strings: &'a mut String,
}

impl ValueSeed<'_> {
    #[cold]
    #[inline(never)]
    fn epoch_out_of_range<E: de::Error>(&self, v: fmt::Arguments<'_>) -> E {
        let unit = match self.field.unit {
            EpochUnit::Seconds => "seconds",
            EpochUnit::Millis => "milliseconds",
            EpochUnit::Micros => "microseconds",
            EpochUnit::Nanos => "nanoseconds",
        };
        self.mismatch(format_args!(
            "{v} (epoch {unit} outside years 1-9999; is the stream's `time_unit` ({}) right?)",
            self.field.unit.name()
        ))
    }

    fn mismatch<E: de::Error>(&self, got: fmt::Arguments<'_>) -> E {
        E::custom(format_args!("field `{}`: expected {}, got {}", self.field.name, self.field.ty.name(), got))
    }
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Slot;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Slot, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Slot;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a {} for field `{}`", self.field.ty.name(), self.field.name)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Slot, E> {
        Ok(Slot::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Slot, E> {
        Ok(Slot::Null)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Slot, E> {
        match self.field.ty {
            FieldType::Bool => Ok(Slot::Bool(v)),
            _ => Err(self.mismatch(format_args!("boolean {v}"))),
        }
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Slot, E> {
        match self.field.ty {
            FieldType::Int => Ok(Slot::Int(v)),
            FieldType::Float => Ok(Slot::Float(v as f64)),
            FieldType::Timestamp => match self.field.unit.int_to_millis(v).filter(|&ms| crate::time::in_range(ms)) {
                Some(ms) => Ok(Slot::Ts(ms)),
                None => Err(self.epoch_out_of_range(format_args!("{v}"))),
            },
            _ => Err(self.mismatch(format_args!("number {v}"))),
        }
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Slot, E> {
        match i64::try_from(v) {
            Ok(v) => self.visit_i64(v),
            Err(_) => Err(self.mismatch(format_args!("number {v} (out of range)"))),
        }
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Slot, E> {
        match self.field.ty {
            FieldType::Float => Ok(Slot::Float(v)),
            FieldType::Int if v.fract() == 0.0 && v.abs() < 9.0e15 => Ok(Slot::Int(v as i64)),
            FieldType::Timestamp => match self.field.unit.float_to_millis(v).filter(|&ms| crate::time::in_range(ms)) {
                Some(ms) => Ok(Slot::Ts(ms)),
                None => Err(self.epoch_out_of_range(format_args!("{v}"))),
            },
            _ => Err(self.mismatch(format_args!("number {v}"))),
        }
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Slot, E> {
        match self.field.ty {
            FieldType::String => {
                let start = self.strings.len();
                self.strings.push_str(v);
                Ok(Slot::Str(start as u32, self.strings.len() as u32))
            }
            FieldType::Timestamp => match crate::time::parse_timestamp(v) {
                Some(ms) => Ok(Slot::Ts(ms)),
                None => Err(self.mismatch(format_args!("{v:?} (not RFC 3339)"))),
            },
            _ => Err(self.mismatch(format_args!("string {v:?}"))),
        }
    }
    fn visit_map<A: MapAccess<'de>>(self, _map: A) -> Result<Slot, A::Error> {
        Err(self.mismatch(format_args!("an object")))
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, _seq: A) -> Result<Slot, A::Error> {
        Err(self.mismatch(format_args!("an array")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::Float64Type;

    fn def() -> Arc<StreamDef> {
        let fields = vec![
            FieldDef::new("ts", FieldType::Timestamp, true),
            FieldDef::new("device_id", FieldType::String, true),
            FieldDef::new("value", FieldType::Float, true),
            FieldDef::new("ok", FieldType::Bool, false),
        ];
        Arc::new(StreamDef::new("gas", fields, 0, vec![1]))
    }

    #[test]
    fn decodes_valid_rows_and_rejects_bad_ones_whole() {
        let mut d = Decoder::new(def(), 8);
        d.push(br#"{"ts":"2026-01-01T00:00:00Z","device_id":"a","value":1.5,"extra":{"x":[1]}}"#).unwrap();
        d.push(br#"{"ts":1000,"device_id":"b","value":2,"ok":true}"#).unwrap();
        let e = d.push(br#"{"ts":1000,"device_id":"c","value":"high"}"#).unwrap_err();
        assert_eq!(e.message, r#"field `value`: expected float, got string "high" at line 1 column 41"#);
        assert_eq!((e.kind, e.field.as_deref()), (RejectKind::BadField, Some("value")));
        let e = d.push(br#"{"ts":1000,"value":3.0}"#).unwrap_err();
        assert_eq!(e.message, "missing required field `device_id`");
        assert_eq!((e.kind, e.field.as_deref()), (RejectKind::MissingField, Some("device_id")));
        let e = d.push(br#"{"ts":1000,"device_id":"c""#).unwrap_err();
        assert!(e.message.starts_with("invalid JSON"), "{e}");
        assert_eq!(e.kind, RejectKind::InvalidJson);
        let e = d.push(br#"[1,2]"#).unwrap_err();
        assert_eq!(e.kind, RejectKind::NotAnObject, "{e}");
        let e = d.push(br#"{"ts":9223372036854775807,"device_id":"c","value":1}"#).unwrap_err();
        assert!(e.message.contains("outside years 1-9999"), "{e}");
        assert_eq!((e.kind, e.field.as_deref()), (RejectKind::BadField, Some("ts")));
        let e = d.push(br#"{"ts":"yesterday","device_id":"c","value":1}"#).unwrap_err();
        assert!(e.message.contains("not RFC 3339"), "{e}");
        let out = d.finish();
        assert_eq!(out.batch.num_rows(), 2);
        assert_eq!(out.event_time, vec![1_767_225_600_000, 1000]);
        let v = out.batch.column(2).as_primitive::<Float64Type>();
        assert_eq!(v.values().to_vec(), vec![1.5, 2.0]);
        assert!(out.batch.column(3).is_null(0));
        assert!(d.is_empty());
    }

    #[test]
    fn numeric_timestamps_are_read_in_the_stream_time_unit() {
        use crate::schema::EpochUnit;
        let at = |unit: EpochUnit, ts: &str| {
            let mut def = (*def()).clone();
            def.time_unit = unit;
            def.fields[0].unit = unit;
            let def = Arc::new(def);
            let mut d = Decoder::new(def, 8);
            let row = format!(r#"{{"ts":{ts},"device_id":"a","value":1}}"#);
            d.push(row.as_bytes()).map(|()| d.finish().event_time[0]).map_err(|e| e.message)
        };
        assert_eq!(at(EpochUnit::Seconds, "1700000000"), Ok(1_700_000_000_000));
        assert_eq!(at(EpochUnit::Seconds, "1700000000.25"), Ok(1_700_000_000_250));
        assert_eq!(at(EpochUnit::Millis, "1700000000000"), Ok(1_700_000_000_000));
        assert_eq!(at(EpochUnit::Micros, "1700000000000999"), Ok(1_700_000_000_000), "floored");
        assert_eq!(at(EpochUnit::Nanos, "1700000000000000000"), Ok(1_700_000_000_000));
        assert_eq!(at(EpochUnit::Micros, "-1"), Ok(-1), "floored towards the past");
        let e = at(EpochUnit::Millis, "1700000000000000000").unwrap_err();
        assert!(e.contains("epoch milliseconds outside years 1-9999") && e.contains("time_unit"), "{e}");
        let e = at(EpochUnit::Seconds, "1e300").unwrap_err();
        assert!(e.contains("epoch seconds outside years 1-9999"), "{e}");
        // RFC 3339 text does not depend on the unit.
        assert_eq!(at(EpochUnit::Seconds, r#""1970-01-01T00:00:01Z""#), Ok(1_000));
    }

    #[test]
    fn fields_no_rule_reads_are_neither_decoded_nor_validated() {
        // Only ts, device_id (key) and ok are read: `value` is skipped even when malformed
        // or missing, and its column is null (and nullable).
        let mut d = Decoder::with_fields(def(), 8, vec![false, true, false, true]);
        d.push(br#"{"ts":1000,"device_id":"a","value":"high","ok":true}"#).unwrap();
        d.push(br#"{"ts":2000,"device_id":"b"}"#).unwrap();
        let e = d.push(br#"{"ts":3000,"value":1}"#).unwrap_err();
        assert_eq!(e.message, "missing required field `device_id`", "needed fields are still validated");
        let out = d.finish();
        assert_eq!(out.batch.num_rows(), 2);
        assert_eq!(out.event_time, vec![1000, 2000], "the event time is always decoded");
        assert_eq!(out.batch.column(2).null_count(), 2);
        assert!(out.batch.schema().field(2).is_nullable());
        assert!(!out.batch.column(3).is_null(0));
    }
}

#[cfg(test)]
mod enrichment_tests {
    use super::*;
    use crate::schema::Enrichment;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::Float64Type;

    #[test]
    fn positions_are_enriched_with_the_containing_zone_attributes() {
        let zones = crate::testutil::test_zones(None);
        let fields = vec![
            FieldDef::new("ts", FieldType::Timestamp, true),
            FieldDef::new("id", FieldType::String, true),
            FieldDef::new("lat", FieldType::Float, false),
            FieldDef::new("lon", FieldType::Float, false),
            FieldDef::new("zone", FieldType::String, false),
            FieldDef::new("limit", FieldType::Float, false),
        ];
        let def = Arc::new(StreamDef {
            location: Some((2, 3)),
            enrichments: vec![Enrichment {
                zones,
                lat: 2,
                lon: 3,
                columns: vec![("id".into(), 4), ("speed_limit_kmh".into(), 5)],
            }],
            ..StreamDef::new("gps", fields, 0, vec![1])
        });
        let mut d = Decoder::new(def, 8);
        d.push(br#"{"ts":1,"id":"a","lat":36.005,"lon":120.005}"#).unwrap();
        d.push(br#"{"ts":2,"id":"b","lat":36.5,"lon":120.5}"#).unwrap();
        d.push(br#"{"ts":3,"id":"c"}"#).unwrap();
        // A payload cannot set an enriched column itself.
        d.push(br#"{"ts":4,"id":"d","lat":36.02,"lon":120.01,"zone":"fake"}"#).unwrap();
        d.push(br#"{"ts":5,"id":"e","lat":37.0,"lon":120.01,"zone":"fake"}"#).unwrap();
        let b = d.finish().batch;
        let zone = b.column(4).as_string::<i32>();
        assert_eq!(zone.value(0), "site");
        assert!(zone.is_null(1) && zone.is_null(2));
        assert_eq!(zone.value(3), "route-1");
        assert!(zone.is_null(4));
        let limit = b.column(5).as_primitive::<Float64Type>();
        assert!(limit.is_null(0), "speed_limit_kmh is not a property of the test zones");
    }

    #[test]
    fn positions_outside_the_globe_are_rejected_as_bad_fields() {
        let fields = vec![
            FieldDef::new("ts", FieldType::Timestamp, true),
            FieldDef::new("id", FieldType::String, true),
            FieldDef::new("lat", FieldType::Float, false),
            FieldDef::new("lon", FieldType::Float, false),
        ];
        let def = Arc::new(StreamDef { location: Some((2, 3)), ..StreamDef::new("gps", fields, 0, vec![1]) });
        let mut d = Decoder::new(def, 8);
        d.push(br#"{"ts":1,"id":"a","lat":-90,"lon":180}"#).unwrap();
        let e = d.push(br#"{"ts":2,"id":"b","lat":91.5,"lon":120}"#).unwrap_err();
        assert_eq!(e.message, "field `lat`: 91.5 is not a latitude (-90..90)");
        assert_eq!((e.kind, e.field.as_deref()), (RejectKind::BadField, Some("lat")));
        let e = d.push(br#"{"ts":3,"id":"c","lat":36,"lon":500}"#).unwrap_err();
        assert_eq!(e.message, "field `lon`: 500 is not a longitude (-180..180)");
        d.push(br#"{"ts":4,"id":"d"}"#).unwrap();
        assert_eq!(d.finish().batch.num_rows(), 2, "only the rows with real positions (or none)");
    }
}
