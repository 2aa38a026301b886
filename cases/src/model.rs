//! Case records, the events that change them, and the feedback that drives them.
//!
//! A [`Case`] is one problem: alerts that share a case key within a time window, sent to
//! one unit, timed against one deadline. Everything that happens to a case is a
//! [`CaseEvent`] with a deterministic id (`<case id>:<seq>`), appended to the case's
//! history; sinks receive a [`CaseUpdate`] (the event plus the case after it), and stores
//! upsert both by id, so a replay after a crash writes the same rows again.

use gridwatch_engine::plan::Severity;
use gridwatch_engine::time::{Millis, format_timestamp, parse_timestamp};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Where a case is in its lifecycle (domain.md §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaseStatus {
    /// Created from alerts, not yet sent anywhere.
    Reported,
    /// Sent to a unit; the SLA stopwatch runs.
    Dispatched,
    /// The unit accepted it.
    InProgress,
    /// The unit reported it fixed (stopwatch stopped).
    Resolved,
    /// An inspector checked the fix.
    Verified,
    /// Done.
    Closed,
    /// Folded into another case.
    Merged,
    /// Invalid (false alarm, duplicate report).
    Rejected,
}

impl CaseStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [CaseStatus; 8] = [
        CaseStatus::Reported,
        CaseStatus::Dispatched,
        CaseStatus::InProgress,
        CaseStatus::Resolved,
        CaseStatus::Verified,
        CaseStatus::Closed,
        CaseStatus::Merged,
        CaseStatus::Rejected,
    ];

    /// The name used in JSON, SQL and the CLI.
    pub fn name(self) -> &'static str {
        match self {
            CaseStatus::Reported => "reported",
            CaseStatus::Dispatched => "dispatched",
            CaseStatus::InProgress => "in_progress",
            CaseStatus::Resolved => "resolved",
            CaseStatus::Verified => "verified",
            CaseStatus::Closed => "closed",
            CaseStatus::Merged => "merged",
            CaseStatus::Rejected => "rejected",
        }
    }

    /// Parses [`CaseStatus::name`].
    pub fn parse(s: &str) -> Option<CaseStatus> {
        CaseStatus::ALL.into_iter().find(|c| c.name() == s)
    }

    /// Open cases accept alerts and feedback; closed, merged and rejected ones are final.
    pub fn is_open(self) -> bool {
        !matches!(self, CaseStatus::Closed | CaseStatus::Merged | CaseStatus::Rejected)
    }

    /// Whether the SLA stopwatch runs in this status.
    pub fn clock_runs(self) -> bool {
        matches!(self, CaseStatus::Dispatched | CaseStatus::InProgress)
    }
}

/// What happened to a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The case was created from its first alert.
    Opened,
    /// Sent to a unit (owner first, then territory, then the default unit).
    Dispatched,
    /// Another alert joined the case.
    AlertJoined,
    /// One of the case's alerts resolved.
    AlertResolved,
    /// Feedback: the unit accepted the case.
    Accepted,
    /// Feedback: the unit reported the problem fixed.
    Resolved,
    /// Feedback: the fix was checked.
    Verified,
    /// Feedback: the case is closed.
    Closed,
    /// Feedback: the case goes to another unit.
    Reassigned,
    /// Feedback: the check failed; back to work.
    Reopened,
    /// Feedback: folded into another case.
    Merged,
    /// Another case was folded into this one.
    Absorbed,
    /// Feedback: not a real problem.
    Rejected,
    /// The SLA stopwatch passed a reminder fraction.
    Reminder,
    /// The SLA stopwatch passed an escalation fraction (level 1 at the deadline).
    Escalated,
}

impl EventKind {
    /// The name used in JSON and SQL.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Opened => "opened",
            EventKind::Dispatched => "dispatched",
            EventKind::AlertJoined => "alert_joined",
            EventKind::AlertResolved => "alert_resolved",
            EventKind::Accepted => "accepted",
            EventKind::Resolved => "resolved",
            EventKind::Verified => "verified",
            EventKind::Closed => "closed",
            EventKind::Reassigned => "reassigned",
            EventKind::Reopened => "reopened",
            EventKind::Merged => "merged",
            EventKind::Absorbed => "absorbed",
            EventKind::Rejected => "rejected",
            EventKind::Reminder => "reminder",
            EventKind::Escalated => "escalated",
        }
    }
}

/// How the dispatch target was found ("owner first, then territory").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DispatchBy {
    /// The component registry names the asset's owner.
    Owner,
    /// The unit responsible for the grid cell.
    Grid,
    /// Neither: the configured default unit.
    Default,
    /// A `reassign` feedback event.
    Reassigned,
}

/// The three supervision lists are flags, not states (domain.md §5).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flags {
    /// Past its deadline while the clock ran.
    pub overdue: bool,
    /// A configured priority category or place.
    pub key: bool,
    /// Reopened at least twice, or reassigned.
    pub difficult: bool,
}

/// A point in WGS84 degrees.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// Latitude.
    pub lat: f64,
    /// Longitude.
    pub lon: f64,
}

/// One entry of a case's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseEvent {
    /// `<case id>:<seq>`: the same input always yields the same ids.
    pub event_id: String,
    /// The case.
    pub case_id: String,
    /// Position in the case's history, from 0.
    pub seq: u32,
    /// Event time it happened at.
    #[serde(serialize_with = "ser_time", deserialize_with = "de_time")]
    pub at: Millis,
    /// What happened.
    pub kind: EventKind,
    /// The case's status after the event.
    pub status: CaseStatus,
    /// The unit the case is with after the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Event-specific facts: the alert id, reminder fraction, escalation level, feedback
    /// id and note, merge target…
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub detail: serde_json::Map<String, serde_json::Value>,
}

/// A case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Case {
    /// Deterministic id: hash of the case key and the first alert's id.
    pub case_id: String,
    /// The grouping key alerts of this case share (e.g. `emergency/gas|g-3-4`).
    pub case_key: String,
    /// Category path of the first alert (`type/major/minor`).
    pub category: String,
    /// Human-readable title.
    pub title: String,
    /// Where (the first alert's location), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Point>,
    /// The unit grid cell at the location, if a grid layer is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grid_id: Option<String>,
    /// The asset (component) concerned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component_id: Option<String>,
    /// Highest severity of its alerts.
    pub severity: Severity,
    /// Event time of the first alert.
    #[serde(serialize_with = "ser_time", deserialize_with = "de_time")]
    pub first_seen: Millis,
    /// Event time of the latest alert.
    #[serde(serialize_with = "ser_time", deserialize_with = "de_time")]
    pub last_seen: Millis,
    /// Every alert (episode) id that joined, in order.
    pub alert_ids: Vec<String>,
    /// Alerts still firing.
    pub firing: Vec<String>,
    /// Rules whose alerts joined.
    pub rules: Vec<String>,
    /// Evidence events of the first alerts (bounded).
    pub evidence: Vec<serde_json::Value>,
    /// The unit the case is with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// How the unit was chosen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispatch_by: Option<DispatchBy>,
    /// SLA time limit for its category and severity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sla_ms: Option<Millis>,
    /// When the stopwatch (re)started.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_opt_time",
        deserialize_with = "de_opt_time"
    )]
    pub clock_started: Option<Millis>,
    /// When it is due (while the clock runs).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_opt_time",
        deserialize_with = "de_opt_time"
    )]
    pub deadline: Option<Millis>,
    /// Lifecycle status.
    pub status: CaseStatus,
    /// Supervision lists.
    pub flags: Flags,
    /// Reminders emitted since the clock last started.
    pub reminders_sent: u32,
    /// Escalation level reached since the clock last started (0 = none).
    pub escalation_level: u32,
    /// Times reopened.
    pub reopened: u32,
    /// Times reassigned.
    pub reassigned: u32,
    /// The case this one was merged into.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_into: Option<String>,
    /// Feedback ids already applied (a replayed feedback event is ignored).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub feedback_ids: Vec<String>,
    /// Everything that happened, in order.
    pub history: Vec<CaseEvent>,
    /// Event time of the latest history entry.
    #[serde(serialize_with = "ser_time", deserialize_with = "de_time")]
    pub updated_at: Millis,
}

impl Case {
    /// A case as it is reported, before anything joins it: no alerts, location, unit,
    /// clock, flags or history yet (set what is known with struct update syntax).
    pub fn reported(
        case_id: String,
        case_key: String,
        category: String,
        title: String,
        severity: Severity,
        at: Millis,
    ) -> Case {
        Case {
            case_id,
            case_key,
            category,
            title,
            location: None,
            grid_id: None,
            component_id: None,
            severity,
            first_seen: at,
            last_seen: at,
            alert_ids: Vec::new(),
            firing: Vec::new(),
            rules: Vec::new(),
            evidence: Vec::new(),
            unit: None,
            dispatch_by: None,
            sla_ms: None,
            clock_started: None,
            deadline: None,
            status: CaseStatus::Reported,
            flags: Flags::default(),
            reminders_sent: 0,
            escalation_level: 0,
            reopened: 0,
            reassigned: 0,
            merged_into: None,
            feedback_ids: Vec::new(),
            history: Vec::new(),
            updated_at: at,
        }
    }

    /// Number of history entries: the case's version (stores keep the highest).
    pub fn version(&self) -> u32 {
        self.history.len() as u32
    }
}

/// What sinks receive: one event and the case as it is after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseUpdate {
    /// The event.
    pub event: CaseEvent,
    /// The case after the event.
    pub case: Case,
}

/// A feedback action on the case-feedback stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// dispatched → in_progress.
    Accept,
    /// dispatched | in_progress → resolved (stops the stopwatch).
    Resolve,
    /// resolved → verified.
    Verify,
    /// verified → closed.
    Close,
    /// dispatched | in_progress → dispatched to `unit`.
    Reassign,
    /// resolved | verified → in_progress (restarts the stopwatch).
    Reopen,
    /// any open status → merged `into` another open case.
    Merge,
    /// any open status → rejected.
    Reject,
}

impl Action {
    /// Every action name, for error messages.
    pub const NAMES: [&'static str; 8] =
        ["accept", "resolve", "verify", "close", "reassign", "reopen", "merge", "reject"];
}

/// One case-feedback event (one JSON object per line of the feedback stream):
/// `{"ts": "...", "case_id": "...", "action": "accept", "unit": "...", "into": "...", "note": "..."}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Feedback {
    /// Unique id of the feedback event; derived from its content when absent.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub feedback_id: String,
    /// Event time.
    #[serde(rename = "ts", serialize_with = "ser_time", deserialize_with = "de_time")]
    pub at: Millis,
    /// The case.
    pub case_id: String,
    /// What to do.
    pub action: Action,
    /// New unit (reassign) or the acting unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Merge target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub into: Option<String>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Feedback {
    /// Parses one feedback line; the error says what is wrong with it.
    pub fn parse(line: &[u8]) -> Result<Feedback, String> {
        let mut f: Feedback = serde_json::from_slice(line).map_err(|e| {
            let msg = e.to_string();
            if msg.contains("unknown variant") { format!("{msg} (actions: {})", Action::NAMES.join(", ")) } else { msg }
        })?;
        if f.feedback_id.is_empty() {
            let mut h = xxhash_rust::xxh3::Xxh3::new();
            h.update(line);
            f.feedback_id = format!("fb-{:016x}", h.digest());
        }
        Ok(f)
    }
}

fn ser_time<S: Serializer>(t: &Millis, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_timestamp(*t))
}

fn de_time<'de, D: Deserializer<'de>>(d: D) -> Result<Millis, D::Error> {
    let s = String::deserialize(d)?;
    parse_timestamp(&s).ok_or_else(|| serde::de::Error::custom(format!("`{s}` is not an RFC 3339 timestamp")))
}

fn ser_opt_time<S: Serializer>(t: &Option<Millis>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&format_timestamp(*t)),
        None => s.serialize_none(),
    }
}

fn de_opt_time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Millis>, D::Error> {
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(s) => parse_timestamp(&s)
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom(format!("`{s}` is not an RFC 3339 timestamp"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feedback_parses_and_names_bad_actions() {
        let f = Feedback::parse(br#"{"ts":"2026-11-23T01:00:00Z","case_id":"c1","action":"accept"}"#).unwrap();
        assert_eq!(f.action, Action::Accept);
        assert!(f.feedback_id.starts_with("fb-"));
        let same = Feedback::parse(br#"{"ts":"2026-11-23T01:00:00Z","case_id":"c1","action":"accept"}"#).unwrap();
        assert_eq!(f.feedback_id, same.feedback_id);
        let err = Feedback::parse(br#"{"ts":"2026-11-23T01:00:00Z","case_id":"c1","action":"fix"}"#).unwrap_err();
        assert!(err.contains("accept, resolve"), "{err}");
        assert!(Feedback::parse(br#"{"ts":"yesterday","case_id":"c1","action":"close"}"#).is_err());
    }

    #[test]
    fn statuses_round_trip_their_names() {
        for s in CaseStatus::ALL {
            assert_eq!(CaseStatus::parse(s.name()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), serde_json::Value::String(s.name().into()));
        }
        assert!(CaseStatus::Resolved.is_open() && !CaseStatus::Closed.is_open());
    }
}
