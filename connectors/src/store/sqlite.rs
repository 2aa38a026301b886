//! The SQLite case store: one file, WAL mode, cached prepared statements.

use std::path::{Path, PathBuf};
use std::time::Duration;

use gridwatch_cases::model::{Case, CaseEvent, CaseUpdate};
use gridwatch_engine::time::Millis;
use rusqlite::{Connection, OptionalExtension, params};

use super::{
    CaseFilter, CaseStore, Dialect, FRONTIER_KEY, SCHEMA, StoreError, batch_rows, decode_case, decode_event,
    list_query, open_condition, write_action,
};

/// A case store in a SQLite file.
pub struct SqliteStore {
    conn: Connection,
    /// The path as given, for messages.
    location: String,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("location", &self.location).finish_non_exhaustive()
    }
}

const DIALECT: Dialect = Dialect { placeholder: '?', case_id_order: "case_id" };

/// How long a write waits for another connection (a CLI reading while the engine writes)
/// to release its lock before failing with a transient error.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

impl SqliteStore {
    /// Opens (creating if missing) the SQLite file at `path`, its parent directories and its tables.
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteStore, StoreError> {
        let path = path.as_ref();
        let location = path.display().to_string();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|error| StoreError::CreateDir {
                location: location.clone(),
                dir: PathBuf::from(dir),
                error,
            })?;
        }
        let fail = |action: &str| {
            let location = location.clone();
            let action = action.to_string();
            move |error| StoreError::Sqlite { location, action, error }
        };
        let conn = Connection::open(path).map_err(fail("open"))?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(fail("set the busy timeout"))?;
        // WAL lets readers (the CLI, the admin API) run while the sink writes. NORMAL syncs
        // the log at checkpoints only: a crashed process loses nothing and the file never
        // corrupts; only a power cut can lose the latest commits.
        conn.pragma_update(None, "journal_mode", "WAL").map_err(fail("switch to WAL mode"))?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(fail("set synchronous=NORMAL"))?;
        conn.execute_batch(SCHEMA).map_err(fail("create the tables"))?;
        tracing::debug!(message = "case store opened", backend = "sqlite", %location);
        Ok(SqliteStore { conn, location })
    }

    /// Opens an existing store file read-only: a path that is not there, or a file without
    /// the store's tables, is [`StoreError::Missing`].
    pub fn open_existing(path: impl AsRef<Path>) -> Result<SqliteStore, StoreError> {
        let path = path.as_ref();
        let location = path.display().to_string();
        if !path.is_file() {
            let mut message =
                format!("there is no SQLite file at `{location}` (reading commands never create a store)");
            if let Some(similar) = similar_file(path) {
                message.push_str(&format!("; did you mean `{}`?", similar.display()));
            } else {
                message.push_str("; pass the store the run wrote (`--store PATH`, or the config's `cases.store`)");
            }
            return Err(StoreError::Missing { location, message });
        }
        let fail = |action: &str| {
            let location = location.clone();
            let action = action.to_string();
            move |error| StoreError::Sqlite { location, action, error }
        };
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(fail("open"))?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(fail("set the busy timeout"))?;
        let tables: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ('cases', 'case_events')",
                [],
                |r| r.get(0),
            )
            .map_err(fail("read the schema"))?;
        if tables < 2 {
            return Err(StoreError::Missing {
                location: location.clone(),
                message: format!("`{location}` is a SQLite file but not a gridwatch case store (no `cases` table)"),
            });
        }
        Ok(SqliteStore { conn, location })
    }

    fn err(&self, action: impl Into<String>) -> impl FnOnce(rusqlite::Error) -> StoreError + '_ {
        let action = action.into();
        move |error| StoreError::Sqlite { location: self.location.clone(), action, error }
    }

    fn query_cases(&self, sql: &str, params: &[String], action: &str) -> Result<Vec<Case>, StoreError> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(self.err(action))?;
        let bodies = stmt
            .query_map(rusqlite::params_from_iter(params), |row| row.get::<_, String>(0))
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(self.err(action))?;
        bodies.iter().map(|body| decode_case(body, &self.location)).collect()
    }
}

/// A file next to `path` whose name is close to its name (a typo), if any.
fn similar_file(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?.to_str()?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".db") || n.ends_with(".sqlite") || n.ends_with(".sqlite3"))
        .map(|n| (strsim::levenshtein(name, &n), n))
        .filter(|(d, _)| *d <= 3)
        .min()
        .map(|(_, n)| dir.join(n))
}

const UPSERT_CASE: &str = concat!(
    "INSERT INTO cases (",
    case_columns!(),
    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
    case_upsert_tail!()
);

const INSERT_EVENT: &str = concat!(
    "INSERT INTO case_events (",
    event_columns!(),
    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (event_id) DO NOTHING"
);

/// Records a frontier (`?2`) under a key (`?1`), never lowering the stored one.
const UPSERT_META_MAX: &str = r#"INSERT INTO gridwatch_meta ("key", value) VALUES (?1, ?2)
ON CONFLICT ("key") DO UPDATE SET value = max(gridwatch_meta.value, excluded.value)"#;

impl CaseStore for SqliteStore {
    fn write(&mut self, updates: &[CaseUpdate], frontier: Option<Millis>) -> Result<(), StoreError> {
        if updates.is_empty() && frontier.is_none() {
            return Ok(());
        }
        let (cases, events) = batch_rows(updates, &self.location)?;
        let action = write_action(updates, frontier);
        let fail = |error| StoreError::Sqlite { location: self.location.clone(), action: action.clone(), error };
        let tx = self.conn.transaction().map_err(fail)?;
        {
            let mut upsert = tx.prepare_cached(UPSERT_CASE).map_err(fail)?;
            for row in &cases {
                let c = row.case;
                upsert
                    .execute(params![
                        c.case_id,
                        row.version,
                        c.status.name(),
                        c.category,
                        c.severity.name(),
                        c.unit,
                        c.grid_id,
                        c.component_id,
                        c.first_seen,
                        c.last_seen,
                        c.deadline,
                        c.flags.overdue,
                        c.flags.key,
                        c.flags.difficult,
                        c.updated_at,
                        row.body,
                    ])
                    .map_err(fail)?;
            }
            let mut insert = tx.prepare_cached(INSERT_EVENT).map_err(fail)?;
            for row in &events {
                let e = row.event;
                insert
                    .execute(params![
                        e.event_id,
                        e.case_id,
                        row.seq,
                        e.at,
                        e.kind.name(),
                        e.status.name(),
                        e.unit,
                        row.body
                    ])
                    .map_err(fail)?;
            }
            if let Some(frontier) = frontier {
                tx.prepare_cached(UPSERT_META_MAX)
                    .and_then(|mut stmt| stmt.execute(params![FRONTIER_KEY, frontier]))
                    .map_err(fail)?;
            }
        }
        crate::crash::point("store-write");
        tx.commit().map_err(fail)?;
        crate::crash::point("store-committed");
        Ok(())
    }

    fn frontier(&mut self) -> Result<Option<Millis>, StoreError> {
        self.conn
            .prepare_cached(r#"SELECT value FROM gridwatch_meta WHERE "key" = ?1"#)
            .and_then(|mut stmt| stmt.query_row([FRONTIER_KEY], |row| row.get(0)).optional())
            .map_err(self.err("read the case frontier"))
    }

    fn load_open(&mut self) -> Result<Vec<Case>, StoreError> {
        let sql = format!("SELECT body FROM cases WHERE {}", open_condition());
        self.query_cases(&sql, &[], "read the open cases")
    }

    fn list(&mut self, filter: &CaseFilter) -> Result<Vec<Case>, StoreError> {
        let (sql, params) = list_query(filter, DIALECT);
        self.query_cases(&sql, &params, "list cases")
    }

    fn get(&mut self, case_id: &str) -> Result<Option<Case>, StoreError> {
        let action = format!("read case `{case_id}`");
        let body: Option<String> = self
            .conn
            .prepare_cached("SELECT body FROM cases WHERE case_id = ?1")
            .and_then(|mut stmt| stmt.query_row([case_id], |row| row.get(0)).optional())
            .map_err(self.err(action))?;
        body.map(|b| decode_case(&b, &self.location)).transpose()
    }

    fn events(&mut self, case_id: &str) -> Result<Vec<CaseEvent>, StoreError> {
        let action = format!("read the events of case `{case_id}`");
        let bodies: Vec<String> = self
            .conn
            .prepare_cached("SELECT body FROM case_events WHERE case_id = ?1 ORDER BY seq")
            .and_then(|mut stmt| stmt.query_map([case_id], |row| row.get(0))?.collect())
            .map_err(self.err(action))?;
        bodies.iter().map(|b| decode_event(b, &self.location)).collect()
    }

    fn counts(&mut self) -> Result<(u64, u64), StoreError> {
        let (cases, events): (i64, i64) = self
            .conn
            .query_row("SELECT (SELECT count(*) FROM cases), (SELECT count(*) FROM case_events)", [], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .map_err(self.err("count rows"))?;
        Ok((cases.unsigned_abs(), events.unsigned_abs()))
    }
}

#[cfg(test)]
mod tests {
    use gridwatch_cases::model::{CaseStatus, EventKind};
    use gridwatch_engine::plan::Severity;

    use super::*;

    /// Case `id` after `version` events (opened, then alerts joining).
    fn update(id: &str, version: u32, status: CaseStatus) -> CaseUpdate {
        let event = |seq: u32| CaseEvent {
            event_id: format!("{id}:{seq}"),
            case_id: id.to_string(),
            seq,
            at: 1_000 * i64::from(seq),
            kind: if seq == 0 { EventKind::Opened } else { EventKind::AlertJoined },
            status,
            unit: Some("gas-1".into()),
            detail: serde_json::Map::new(),
        };
        let history: Vec<CaseEvent> = (0..version).map(event).collect();
        let last = 1_000 * i64::from(version - 1);
        let case = Case {
            last_seen: last,
            unit: Some("gas-1".into()),
            status,
            history: history.clone(),
            updated_at: last,
            ..Case::reported(
                id.to_string(),
                "emergency/gas|g-1-1".into(),
                "emergency/gas".into(),
                "gas".into(),
                Severity::Major,
                0,
            )
        };
        CaseUpdate { event: history[history.len() - 1].clone(), case }
    }

    #[test]
    fn opens_in_wal_mode_creating_directories_and_keeps_rows_across_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/cases.db");
        let mut store = SqliteStore::open(&path).unwrap();
        let mode: String = store.conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = store.conn.query_row("PRAGMA synchronous", [], |r| r.get(0)).unwrap();
        assert_eq!(sync, 1, "NORMAL");
        store.write(&[update("c1", 1, CaseStatus::Reported), update("c1", 2, CaseStatus::Reported)], None).unwrap();
        drop(store);
        let mut store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.counts().unwrap(), (1, 2));
        assert_eq!(store.get("c1").unwrap().map(|c| c.version()), Some(2));
    }

    #[test]
    fn keeps_the_highest_version_and_each_event_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path().join("cases.db")).unwrap();
        let (v1, v2, v3) = (
            update("c1", 1, CaseStatus::Reported),
            update("c1", 2, CaseStatus::Reported),
            update("c1", 3, CaseStatus::Closed),
        );
        store.write(&[v1.clone(), v3.clone()], None).unwrap();
        store.write(&[v2.clone(), v1.clone()], None).unwrap();
        let got = store.get("c1").unwrap().unwrap();
        assert_eq!((got.version(), got.status), (3, CaseStatus::Closed));
        assert_eq!(store.counts().unwrap(), (1, 3));
        let status: String = store.conn.query_row("SELECT status FROM cases", [], |r| r.get(0)).unwrap();
        assert_eq!(status, "closed", "the columns follow the body");
        assert!(store.load_open().unwrap().is_empty());
    }

    #[test]
    fn a_failed_write_records_neither_its_cases_nor_its_frontier() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path().join("cases.db")).unwrap();
        store.write(&[update("c1", 1, CaseStatus::Reported)], Some(1_000)).unwrap();
        store
            .conn
            .execute_batch(
                "CREATE TRIGGER refuse_c2 BEFORE INSERT ON case_events WHEN NEW.case_id = 'c2' \
                 BEGIN SELECT RAISE(ABORT, 'refused'); END",
            )
            .unwrap();
        let err = store
            .write(&[update("c1", 2, CaseStatus::Reported), update("c2", 1, CaseStatus::Reported)], Some(5_000))
            .unwrap_err()
            .to_string();
        assert!(err.contains("write 2 updates and the frontier 5000") && err.contains("refused"), "{err}");
        assert_eq!(store.frontier().unwrap(), Some(1_000), "the frontier of a failed write is not recorded");
        assert_eq!(store.counts().unwrap(), (1, 1), "nor are its cases");
        assert_eq!(store.get("c1").unwrap().map(|c| c.version()), Some(1));
    }

    #[test]
    fn a_store_created_before_the_meta_table_gains_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cases.db");
        let mut store = SqliteStore::open(&path).unwrap();
        store.write(&[update("c1", 1, CaseStatus::Reported)], None).unwrap();
        store.conn.execute_batch("DROP TABLE gridwatch_meta").unwrap();
        drop(store);
        let mut store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.frontier().unwrap(), None);
        store.write(&[], Some(7)).unwrap();
        assert_eq!((store.frontier().unwrap(), store.counts().unwrap()), (Some(7), (1, 1)));
    }

    #[test]
    fn a_corrupt_row_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cases.db");
        let mut store = SqliteStore::open(&path).unwrap();
        store.write(&[update("c1", 1, CaseStatus::Reported)], None).unwrap();
        store.conn.execute("UPDATE cases SET body = '{\"case_id\": 3}'", []).unwrap();
        let err = store.get("c1").unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()) && err.contains("decode a stored case"), "{err}");
    }

    #[test]
    fn an_unusable_path_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain-file");
        std::fs::write(&file, "not a database ".repeat(300)).unwrap();
        let err = SqliteStore::open(file.join("cases.db")).unwrap_err();
        assert!(matches!(err, StoreError::CreateDir { .. }), "{err}");
        assert!(err.to_string().contains("plain-file"), "{err}");
        let err = SqliteStore::open(&file).unwrap_err().to_string();
        assert!(err.starts_with(&format!("SQLite case store `{}`", file.display())), "{err}");
    }
}
