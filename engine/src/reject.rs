//! Why an input record was rejected: a stable class for counters, routing and alerting on
//! data quality, plus a message for the person reading the dead letter.
//!
//! Every producer of a dead letter (the decoder, the event-time sequencer, sources that
//! cannot place a payload on a stream, the case stage's feedback reader) says which
//! [`RejectKind`] it is at the point where it knows; nothing downstream re-parses the
//! message text to find out.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;

/// The class of a rejected record. Serialized as `kind` in dead letters (snake case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum RejectKind {
    /// Not JSON at all (syntax error, truncated).
    InvalidJson,
    /// JSON, but not an object (or an array where a body of objects was expected).
    NotAnObject,
    /// A declared field has a value of the wrong type or out of range.
    BadField,
    /// A required field (or the event-time field) is absent or null.
    MissingField,
    /// Behind its stream's watermark.
    Late,
    /// Too far ahead of its arrival or of the stream's other events (`max_future`).
    Future,
    /// Names no declared stream, or came from a topic/path no stream claims.
    UnknownStream,
    /// Larger than the source accepts.
    TooLarge,
    /// A case feedback event that does not apply (unknown case, wrong transition).
    BadFeedback,
}

impl RejectKind {
    /// The stable machine name (snake case), as in dead letters' `kind` and the Kafka
    /// dead-letter header `gridwatch.kind`.
    pub fn name(self) -> &'static str {
        match self {
            RejectKind::InvalidJson => "invalid_json",
            RejectKind::NotAnObject => "not_an_object",
            RejectKind::BadField => "bad_field",
            RejectKind::MissingField => "missing_field",
            RejectKind::Late => "late",
            RejectKind::Future => "future",
            RejectKind::UnknownStream => "unknown_stream",
            RejectKind::TooLarge => "too_large",
            RejectKind::BadFeedback => "bad_feedback",
        }
    }

    /// Short label used in summaries and metrics.
    pub fn label(self) -> &'static str {
        match self {
            RejectKind::InvalidJson => "invalid JSON",
            RejectKind::NotAnObject => "not a JSON object",
            RejectKind::BadField => "bad field",
            RejectKind::MissingField => "missing field",
            RejectKind::Late => "late",
            RejectKind::Future => "future",
            RejectKind::UnknownStream => "unknown stream",
            RejectKind::TooLarge => "too large",
            RejectKind::BadFeedback => "bad feedback",
        }
    }
}

impl Serialize for RejectKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// A rejection: its class, the declared field it concerns (if any) and the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// The class.
    pub kind: RejectKind,
    /// The declared field at fault, for [`RejectKind::BadField`] and
    /// [`RejectKind::MissingField`].
    pub field: Option<Arc<str>>,
    /// What is wrong, for people ("field `value`: expected float, got string …").
    pub message: String,
}

impl Reject {
    /// A rejection that concerns no particular field.
    pub fn new(kind: RejectKind, message: impl Into<String>) -> Self {
        Reject { kind, field: None, message: message.into() }
    }

    /// A rejection about the declared field `field`.
    pub fn field(kind: RejectKind, field: &str, message: impl Into<String>) -> Self {
        Reject { kind, field: Some(Arc::from(field)), message: message.into() }
    }

    /// The summary's group: the kind's label, with the field for bad fields
    /// ("bad field `ts`").
    pub fn class(kind: RejectKind, field: Option<&str>) -> String {
        match (kind, field) {
            (RejectKind::BadField, Some(f)) => format!("bad field `{f}`"),
            _ => kind.label().to_string(),
        }
    }
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_name_the_field_only_for_bad_fields() {
        assert_eq!(Reject::class(RejectKind::BadField, Some("ts")), "bad field `ts`");
        assert_eq!(Reject::class(RejectKind::MissingField, Some("ts")), "missing field");
        assert_eq!(Reject::class(RejectKind::Late, None), "late");
    }

    #[test]
    fn kinds_serialize_in_snake_case() {
        assert_eq!(serde_json::to_string(&RejectKind::InvalidJson).unwrap(), r#""invalid_json""#);
        assert_eq!(serde_json::to_string(&RejectKind::UnknownStream).unwrap(), r#""unknown_stream""#);
    }
}
