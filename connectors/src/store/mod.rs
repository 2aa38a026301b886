//! The case store: every case (its latest snapshot) and every case event, in SQLite (the
//! embedded default, one file) or PostgreSQL (production, shared by several instances).
//!
//! # Writing
//!
//! The case stage hands its sink a batch of [`CaseUpdate`]s; [`CaseStore::write`] stores
//! the batch in one transaction. Both tables are upserts keyed by deterministic ids, so a
//! batch replayed after a crash changes nothing:
//!
//! - `cases` is keyed by `case_id` and keeps the highest version (history length): an older
//!   snapshot written after a newer one is ignored;
//! - `case_events` is keyed by `event_id` (`<case id>:<seq>`): an event already there is
//!   left alone.
//!
//! The same transaction can record the case stage's frontier in `gridwatch_meta` (see
//! [`CaseStore::write`]), so the stored cases and the frontier never disagree.
//!
//! # Reading
//!
//! [`CaseStore::load_open`] and [`CaseStore::frontier`] let the case stage resume its timers
//! and its input position after a restart;
//! [`CaseStore::list`], [`CaseStore::get`] and [`CaseStore::events`] serve the CLI and the
//! admin API. Each row holds the whole record as JSON (`body`) next to the columns queries
//! filter on, so reads decode exactly what was written.
//!
//! # Choosing a backend
//!
//! [`open`] takes one location string: `postgres://…`, `postgresql://…` or a libpq
//! `host=… user=…` string selects PostgreSQL; `sqlite:PATH` or a plain path selects SQLite.

// The statements' shared parts, as macros so each backend can `concat!` its complete
// statements into constants.

/// The `cases` columns in schema order; both backends bind values in this order.
macro_rules! case_columns {
    () => {
        concat!(
            "case_id, version, status, category, severity, unit, grid_id, component_id, first_seen, last_seen, ",
            r#"deadline, overdue, "key", difficult, updated_at, body"#
        )
    };
}

/// The `cases` upsert's conflict clause: every column but the key is replaced, only when
/// the incoming version is not older (an equal version is the same snapshot replayed).
macro_rules! case_upsert_tail {
    () => {
        r#" ON CONFLICT (case_id) DO UPDATE SET
    version = excluded.version, status = excluded.status, category = excluded.category,
    severity = excluded.severity, unit = excluded.unit, grid_id = excluded.grid_id,
    component_id = excluded.component_id, first_seen = excluded.first_seen,
    last_seen = excluded.last_seen, deadline = excluded.deadline, overdue = excluded.overdue,
    "key" = excluded."key", difficult = excluded.difficult, updated_at = excluded.updated_at,
    body = excluded.body
WHERE excluded.version >= cases.version"#
    };
}

/// The `case_events` columns in schema order.
macro_rules! event_columns {
    () => {
        "event_id, case_id, seq, at, kind, status, unit, body"
    };
}

mod postgres;
mod sqlite;

use std::fmt::Write as _;
use std::path::PathBuf;

use gridwatch_cases::model::{Case, CaseEvent, CaseStatus, CaseUpdate};
use gridwatch_engine::time::Millis;
use thiserror::Error;

pub use self::postgres::PostgresStore;
pub use self::sqlite::SqliteStore;

/// A durable home for cases and their events. Implementations are single-connection and
/// used from one thread at a time (the case sink), hence `&mut self` everywhere.
pub trait CaseStore: Send {
    /// Writes a batch of updates in one transaction: cases upserted by `case_id` keeping the
    /// highest version (an older snapshot replayed after a crash never overwrites a newer
    /// one), events upserted by `event_id` (a replay creates no duplicates and loses none).
    /// Only the latest snapshot of each case in the batch is written.
    ///
    /// With `frontier`, the same transaction also records the case stage's frontier (read back
    /// by [`CaseStore::frontier`]), keeping the larger of the stored and the given value so it
    /// never moves back; `updates` may then be empty. The case stage has processed every input
    /// before its frontier when it commits; after a restart it resumes from the stored frontier
    /// and ignores replayed inputs before it, so a replay cannot open a duplicate case for an
    /// alert that joined a case already closed. Committing both together means the frontier
    /// never runs ahead of the cases written (nor behind them). Without `frontier` and with
    /// no updates, nothing is written.
    fn write(&mut self, updates: &[CaseUpdate], frontier: Option<Millis>) -> Result<(), StoreError>;

    /// The case stage's frontier as last recorded by [`CaseStore::write`] (the largest ever
    /// given), or `None` if none was ever recorded.
    fn frontier(&mut self) -> Result<Option<Millis>, StoreError>;

    /// Open cases ([`CaseStatus::is_open`]), for the case stage to resume timers after a restart.
    fn load_open(&mut self) -> Result<Vec<Case>, StoreError>;

    /// Cases matching `filter`, newest first (`first_seen` descending, then `case_id`), at
    /// most `filter.limit`.
    fn list(&mut self, filter: &CaseFilter) -> Result<Vec<Case>, StoreError>;

    /// One case, with its history, if present.
    fn get(&mut self, case_id: &str) -> Result<Option<Case>, StoreError>;

    /// The events of one case in `seq` order, read from the events table (not the snapshot).
    fn events(&mut self, case_id: &str) -> Result<Vec<CaseEvent>, StoreError>;

    /// Row counts: `(cases, events)`.
    fn counts(&mut self) -> Result<(u64, u64), StoreError>;
}

/// Which cases [`CaseStore::list`] returns; every set condition must hold, the default
/// selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaseFilter {
    /// Only cases in this status.
    pub status: Option<CaseStatus>,
    /// Only open cases ([`CaseStatus::is_open`]).
    pub open_only: bool,
    /// Only cases flagged overdue.
    pub overdue: bool,
    /// Only cases flagged key.
    pub key: bool,
    /// Only cases flagged difficult.
    pub difficult: bool,
    /// Only cases with this unit.
    pub unit: Option<String>,
    /// Only cases whose category starts with this (`emergency/` or `emergency/gas`).
    pub category_prefix: Option<String>,
    /// At most this many cases.
    pub limit: Option<usize>,
}

/// Case store errors; each names the store (path, or connection string without its
/// password) and what it was doing.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The location cannot be used as it is written; the message says how to fix it.
    #[error("case store `{location}`: {message}")]
    Location {
        /// The location, password removed.
        location: String,
        /// What is wrong and what is expected.
        message: String,
    },
    /// A reading command named a store that does not exist (reading never creates one).
    #[error("case store `{location}`: {message}")]
    Missing {
        /// The location, password removed.
        location: String,
        /// What is missing and how to find the right store.
        message: String,
    },
    /// The directory for a SQLite file could not be created.
    #[error("case store `{location}`: cannot create directory `{}`: {error}", dir.display())]
    CreateDir {
        /// The SQLite file.
        location: String,
        /// The directory.
        dir: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// SQLite failed.
    #[error("SQLite case store `{location}`: cannot {action}: {error}")]
    Sqlite {
        /// The SQLite file.
        location: String,
        /// What the store was doing (`open`, `write 12 updates`, `read case x`…).
        action: String,
        /// Why.
        error: rusqlite::Error,
    },
    /// PostgreSQL failed.
    #[error("PostgreSQL case store `{location}`: cannot {action}: {message}")]
    Postgres {
        /// The connection string, password removed.
        location: String,
        /// What the store was doing (`connect`, `write 12 updates`, `read case x`…).
        action: String,
        /// The client's error with its causes, and a hint on how to fix it where one is known.
        message: String,
        /// The connection is gone or the server is busy: retrying later may succeed.
        transient: bool,
    },
    /// A record could not be converted to or from its JSON body.
    #[error("case store `{location}`: cannot {action}: {error}")]
    Json {
        /// The store.
        location: String,
        /// What was being converted (`decode case x`…).
        action: String,
        /// Why.
        error: serde_json::Error,
    },
}

impl StoreError {
    /// True when retrying the same call later may succeed: the PostgreSQL connection was
    /// lost (the next call reconnects) or SQLite stayed locked by another process.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Postgres { transient, .. } => *transient,
            StoreError::Sqlite { error, .. } => matches!(
                error.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            ),
            _ => false,
        }
    }
}

/// Opens the store at `location`, creating its tables if missing:
///
/// - `postgres://USER[:PASSWORD]@HOST[:PORT]/DBNAME`, `postgresql://…`, or a libpq
///   key/value string (`host=HOST port=PORT user=USER dbname=DBNAME`) → [`PostgresStore`];
/// - `sqlite:PATH`, `sqlite://PATH` or any other string, read as a file path →
///   [`SqliteStore`] (missing parent directories are created).
pub fn open(location: &str) -> Result<Box<dyn CaseStore>, StoreError> {
    if location.trim().is_empty() {
        return Err(StoreError::Location {
            location: location.to_string(),
            message: "no location given: name a SQLite file (`sqlite:PATH`) or a PostgreSQL database \
                      (`postgres://USER@HOST/DBNAME`)"
                .into(),
        });
    }
    Ok(match Backend::of(location) {
        Backend::Postgres => Box::new(PostgresStore::open(location)?),
        Backend::Sqlite(path) => Box::new(SqliteStore::open(path)?),
    })
}

/// Opens an existing store for reading (`gridwatch cases`): a missing SQLite file, or a
/// PostgreSQL database without gridwatch's tables, is an error — nothing is created.
pub fn open_existing(location: &str) -> Result<Box<dyn CaseStore>, StoreError> {
    if location.trim().is_empty() {
        return open(location);
    }
    Ok(match Backend::of(location) {
        Backend::Postgres => Box::new(PostgresStore::open_existing(location)?),
        Backend::Sqlite(path) => Box::new(SqliteStore::open_existing(path)?),
    })
}

/// `location` with any password replaced by `***`, for logs and messages.
pub fn redact(location: &str) -> String {
    let mut out = location.to_string();
    // URL user info: scheme://user:password@host
    if let Some(scheme_end) = out.find("://") {
        let auth_start = scheme_end + 3;
        let auth_end = out[auth_start..].find(['/', '?']).map_or(out.len(), |i| auth_start + i);
        if let Some(at) = out[auth_start..auth_end].rfind('@')
            && let Some(colon) = out[auth_start..auth_start + at].find(':')
        {
            out.replace_range(auth_start + colon + 1..auth_start + at, "***");
        }
    }
    // `password=…` in a key/value string or a URL query, possibly spaced, possibly quoted.
    let mut from = 0;
    while let Some(i) = out[from..].find("password").map(|i| from + i) {
        from = i + "password".len();
        let at_word_start = out[..i].chars().next_back().is_none_or(|c| c.is_whitespace() || c == '?' || c == '&');
        let rest = out[from..].trim_start();
        if !at_word_start || !rest.starts_with('=') {
            continue;
        }
        let value = rest[1..].trim_start();
        let start = out.len() - value.len();
        let len = if let Some(quoted) = value.strip_prefix('\'') {
            // libpq quoting: backslash escapes the next character.
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((j, c)) = chars.next() {
                match c {
                    '\\' => {
                        chars.next();
                    }
                    '\'' => {
                        end = j + 1;
                        break;
                    }
                    _ => {}
                }
            }
            1 + end
        } else {
            value.find(|c: char| c.is_whitespace() || c == '&').unwrap_or(value.len())
        };
        out.replace_range(start..start + len, "***");
        from = start + 3;
    }
    out
}

/// Which backend a location selects.
#[derive(Debug, PartialEq, Eq)]
enum Backend<'a> {
    Postgres,
    Sqlite(&'a str),
}

impl<'a> Backend<'a> {
    fn of(location: &'a str) -> Backend<'a> {
        let trimmed = location.trim_start();
        if trimmed.starts_with("postgres://") || trimmed.starts_with("postgresql://") || is_libpq_keyvalue(trimmed) {
            return Backend::Postgres;
        }
        let path = location.strip_prefix("sqlite://").or_else(|| location.strip_prefix("sqlite:")).unwrap_or(location);
        Backend::Sqlite(path)
    }
}

/// True for libpq key/value strings (`host=db user=gw`): the first word is a libpq keyword
/// followed by `=`. Requiring a known keyword keeps file names with `=` SQLite paths.
fn is_libpq_keyvalue(s: &str) -> bool {
    const KEYWORDS: [&str; 14] = [
        "host",
        "hostaddr",
        "port",
        "user",
        "password",
        "dbname",
        "options",
        "application_name",
        "sslmode",
        "connect_timeout",
        "keepalives",
        "target_session_attrs",
        "channel_binding",
        "load_balance_hosts",
    ];
    let Some((key, _)) = s.split_once('=') else { return false };
    KEYWORDS.contains(&key.trim())
}

/// The tables and indexes, identical on both backends (times are epoch milliseconds).
/// `first_seen` is indexed too: `list` reads the newest cases first. `gridwatch_meta` holds
/// single values by name (the case frontier under [`FRONTIER_KEY`]); every table is created
/// if missing, so stores created before it gain it when opened.
const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS cases (
    case_id      TEXT PRIMARY KEY,
    version      INTEGER NOT NULL,
    status       TEXT NOT NULL,
    category     TEXT NOT NULL,
    severity     TEXT NOT NULL,
    unit         TEXT NULL,
    grid_id      TEXT NULL,
    component_id TEXT NULL,
    first_seen   BIGINT NOT NULL,
    last_seen    BIGINT NOT NULL,
    deadline     BIGINT NULL,
    overdue      BOOL NOT NULL,
    "key"        BOOL NOT NULL,
    difficult    BOOL NOT NULL,
    updated_at   BIGINT NOT NULL,
    body         TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS cases_status ON cases (status);
CREATE INDEX IF NOT EXISTS cases_unit ON cases (unit);
CREATE INDEX IF NOT EXISTS cases_overdue ON cases (overdue);
CREATE INDEX IF NOT EXISTS cases_first_seen ON cases (first_seen);
CREATE TABLE IF NOT EXISTS case_events (
    event_id TEXT PRIMARY KEY,
    case_id  TEXT NOT NULL,
    seq      INTEGER NOT NULL,
    at       BIGINT NOT NULL,
    kind     TEXT NOT NULL,
    status   TEXT NOT NULL,
    unit     TEXT NULL,
    body     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS case_events_case_seq ON case_events (case_id, seq);
CREATE TABLE IF NOT EXISTS gridwatch_meta (
    "key" TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
"#;

/// The `gridwatch_meta` key of the case stage's frontier.
const FRONTIER_KEY: &str = "case_frontier";

/// `write N updates[ and the frontier F]`, for errors.
fn write_action(updates: &[CaseUpdate], frontier: Option<Millis>) -> String {
    match frontier {
        Some(f) => format!("write {} updates and the frontier {f}", updates.len()),
        None => format!("write {} updates", updates.len()),
    }
}

/// A case as one `cases` row.
struct CaseRow<'a> {
    case: &'a Case,
    version: i32,
    body: String,
}

impl<'a> CaseRow<'a> {
    fn new(case: &'a Case, location: &str) -> Result<CaseRow<'a>, StoreError> {
        let body = serde_json::to_string(case).map_err(|error| StoreError::Json {
            location: location.to_string(),
            action: format!("encode case `{}`", case.case_id),
            error,
        })?;
        // A history of 2^31 entries cannot exist in memory; saturate rather than fail.
        let version = i32::try_from(case.version()).unwrap_or(i32::MAX);
        Ok(CaseRow { case, version, body })
    }
}

/// An event as one `case_events` row.
struct EventRow<'a> {
    event: &'a CaseEvent,
    seq: i32,
    body: String,
}

impl<'a> EventRow<'a> {
    fn new(event: &'a CaseEvent, location: &str) -> Result<EventRow<'a>, StoreError> {
        let body = serde_json::to_string(event).map_err(|error| StoreError::Json {
            location: location.to_string(),
            action: format!("encode event `{}`", event.event_id),
            error,
        })?;
        Ok(EventRow { event, seq: i32::try_from(event.seq).unwrap_or(i32::MAX), body })
    }
}

/// The rows one batch writes: the highest-version snapshot of each case (a later one on
/// ties) and each event once, both sorted by id. One row per key matters: PostgreSQL
/// refuses to upsert the same row twice in one statement; the order keeps lock order the
/// same across concurrent writers.
fn batch_rows<'a>(
    updates: &'a [CaseUpdate],
    location: &str,
) -> Result<(Vec<CaseRow<'a>>, Vec<EventRow<'a>>), StoreError> {
    let mut cases: std::collections::BTreeMap<&str, &Case> = std::collections::BTreeMap::new();
    let mut events: std::collections::BTreeMap<&str, &CaseEvent> = std::collections::BTreeMap::new();
    for u in updates {
        let slot = cases.entry(u.case.case_id.as_str()).or_insert(&u.case);
        if u.case.version() >= slot.version() {
            *slot = &u.case;
        }
        events.insert(u.event.event_id.as_str(), &u.event);
    }
    let cases = cases.into_values().map(|c| CaseRow::new(c, location)).collect::<Result<_, _>>()?;
    let events = events.into_values().map(|e| EventRow::new(e, location)).collect::<Result<_, _>>()?;
    Ok((cases, events))
}

/// How a backend writes query parameters.
#[derive(Clone, Copy)]
struct Dialect {
    /// `?1` (SQLite) or `$1` (PostgreSQL).
    placeholder: char,
    /// Orders `case_id` bytewise whatever the database's collation, so both backends list
    /// ties in the same order.
    case_id_order: &'static str,
}

/// `SELECT body FROM cases WHERE … ORDER BY … LIMIT …` for `filter`, with its text parameters.
fn list_query(filter: &CaseFilter, dialect: Dialect) -> (String, Vec<String>) {
    let mut conditions: Vec<String> = Vec::new();
    let mut params: Vec<String> = Vec::new();
    let param = |value: &str, params: &mut Vec<String>| {
        params.push(value.to_string());
        format!("{}{}", dialect.placeholder, params.len())
    };
    if let Some(status) = filter.status {
        conditions.push(format!("status = {}", param(status.name(), &mut params)));
    }
    if filter.open_only {
        conditions.push(open_condition());
    }
    for (set, column) in [(filter.overdue, "overdue"), (filter.key, "\"key\""), (filter.difficult, "difficult")] {
        if set {
            conditions.push(format!("{column} = TRUE"));
        }
    }
    if let Some(unit) = &filter.unit {
        conditions.push(format!("unit = {}", param(unit, &mut params)));
    }
    if let Some(prefix) = &filter.category_prefix {
        // substr counts characters on both backends; LIKE would need escaping and is
        // case-insensitive in SQLite but not in PostgreSQL.
        let len = prefix.chars().count();
        conditions.push(format!("substr(category, 1, {len}) = {}", param(prefix, &mut params)));
    }
    let mut sql = String::from("SELECT body FROM cases");
    if !conditions.is_empty() {
        let _ = write!(sql, " WHERE {}", conditions.join(" AND "));
    }
    let _ = write!(sql, " ORDER BY first_seen DESC, {}", dialect.case_id_order);
    if let Some(limit) = filter.limit {
        let _ = write!(sql, " LIMIT {limit}");
    }
    (sql, params)
}

/// `status IN (…open statuses…)`, from the model so the two never disagree.
fn open_condition() -> String {
    let names: Vec<String> =
        CaseStatus::ALL.into_iter().filter(|s| s.is_open()).map(|s| format!("'{}'", s.name())).collect();
    format!("status IN ({})", names.join(", "))
}

/// Decodes a `cases.body`.
fn decode_case(body: &str, location: &str) -> Result<Case, StoreError> {
    serde_json::from_str(body).map_err(|error| StoreError::Json {
        location: location.to_string(),
        action: format!("decode a stored case ({})", excerpt(body)),
        error,
    })
}

/// Decodes a `case_events.body`.
fn decode_event(body: &str, location: &str) -> Result<CaseEvent, StoreError> {
    serde_json::from_str(body).map_err(|error| StoreError::Json {
        location: location.to_string(),
        action: format!("decode a stored event ({})", excerpt(body)),
        error,
    })
}

/// The start of a body, enough to find the row.
fn excerpt(body: &str) -> String {
    let cut: String = body.chars().take(80).collect();
    if cut.len() < body.len() { format!("{cut}…") } else { cut }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_select_backends() {
        assert_eq!(Backend::of("postgres://gw@db/cases"), Backend::Postgres);
        assert_eq!(Backend::of("postgresql://db"), Backend::Postgres);
        assert_eq!(Backend::of("host=db user=gw dbname=cases"), Backend::Postgres);
        assert_eq!(Backend::of("dbname = cases"), Backend::Postgres);
        assert_eq!(Backend::of("sqlite:state/cases.db"), Backend::Sqlite("state/cases.db"));
        assert_eq!(Backend::of("sqlite:///var/cases.db"), Backend::Sqlite("/var/cases.db"));
        assert_eq!(Backend::of("state/cases.db"), Backend::Sqlite("state/cases.db"));
        assert_eq!(Backend::of("run=3/cases.db"), Backend::Sqlite("run=3/cases.db"));
    }

    #[test]
    fn an_empty_location_is_refused() {
        let err = open(" ").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("no location given"), "{err}");
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("postgres://gw:s3cret@db:5432/cases"), "postgres://gw:***@db:5432/cases");
        assert_eq!(
            redact("postgres://gw@db/cases?password=s3cret&sslmode=disable"),
            "postgres://gw@db/cases?password=***&sslmode=disable"
        );
        assert_eq!(redact("host=db password=s3cret user=gw"), "host=db password=*** user=gw");
        assert_eq!(redact("host=db password = 's3 \\' cret' user=gw"), "host=db password = *** user=gw");
        assert_eq!(redact("postgres://gw@db/cases"), "postgres://gw@db/cases");
        assert_eq!(redact("/data/password-store/cases.db"), "/data/password-store/cases.db");
    }

    #[test]
    fn list_queries_combine_every_condition() {
        let sqlite = Dialect { placeholder: '?', case_id_order: "case_id" };
        let (sql, params) = list_query(&CaseFilter::default(), sqlite);
        assert_eq!(sql, "SELECT body FROM cases ORDER BY first_seen DESC, case_id");
        assert!(params.is_empty());
        let filter = CaseFilter {
            status: Some(CaseStatus::Dispatched),
            open_only: true,
            overdue: true,
            key: true,
            difficult: true,
            unit: Some("water-2".into()),
            category_prefix: Some("emergency/ä".into()),
            limit: Some(5),
        };
        let (sql, params) = list_query(&filter, Dialect { placeholder: '$', case_id_order: "case_id COLLATE \"C\"" });
        assert_eq!(
            sql,
            "SELECT body FROM cases WHERE status = $1 AND status IN ('reported', 'dispatched', 'in_progress', \
             'resolved', 'verified') AND overdue = TRUE AND \"key\" = TRUE AND difficult = TRUE AND unit = $2 \
             AND substr(category, 1, 11) = $3 ORDER BY first_seen DESC, case_id COLLATE \"C\" LIMIT 5"
        );
        assert_eq!(params, ["dispatched", "water-2", "emergency/ä"]);
    }
}
