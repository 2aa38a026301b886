//! The PostgreSQL case store: one connection, statements prepared once, and each batch
//! written by one statement (rows passed as column arrays, the frontier alongside), so a
//! batch is one transaction and one round trip whatever its size.

use std::time::Duration;

use ::postgres::config::Host;
use ::postgres::types::ToSql;
use ::postgres::{Client, Config, NoTls, Statement, ToStatement};
use gridwatch_cases::model::{Case, CaseEvent, CaseUpdate};
use gridwatch_engine::time::Millis;

use super::{
    CaseFilter, CaseStore, Dialect, FRONTIER_KEY, SCHEMA, StoreError, batch_rows, decode_case, decode_event,
    list_query, open_condition, redact, write_action,
};

/// A case store in a PostgreSQL database.
pub struct PostgresStore {
    config: Config,
    client: Client,
    statements: Statements,
    /// The connection string without its password, for messages.
    location: String,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").field("location", &self.location).finish_non_exhaustive()
    }
}

/// The statements every call reuses, prepared on each (re)connection.
struct Statements {
    write: Statement,
    frontier: Statement,
    get: Statement,
    events: Statement,
    load_open: Statement,
}

const DIALECT: Dialect = Dialect { placeholder: '$', case_id_order: "case_id COLLATE \"C\"" };

/// Unless the connection string sets `connect_timeout`: an unreachable server fails the
/// start-up within this time instead of the operating system's minutes.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Serialises schema creation between instances starting together (`CREATE … IF NOT
/// EXISTS` alone races on the catalog). Any constant works; this one spells "gridwatc".
const SCHEMA_LOCK: i64 = 0x6772_6964_7761_7463;

/// The whole batch as one statement, so one round trip and (outside an explicit
/// transaction) one implicit transaction: the cases upsert and the frontier upsert run as
/// data-modifying CTEs, which PostgreSQL always runs to completion, and the events insert
/// is the main query. Rows arrive as one array per column, expanded by `unnest`; the
/// frontier (`$26`, stored under the key `$25`) is written only when not NULL and never
/// lowers the stored one. The three touch different tables, so no row is written twice.
const WRITE_BATCH: &str = concat!(
    "WITH upserted AS (INSERT INTO cases (",
    case_columns!(),
    ") SELECT * FROM unnest($1::text[], $2::int4[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], ",
    "$8::text[], $9::int8[], $10::int8[], $11::int8[], $12::bool[], $13::bool[], $14::bool[], $15::int8[], $16::text[])",
    case_upsert_tail!(),
    r#"), frontier AS (INSERT INTO gridwatch_meta ("key", value) SELECT $25::text, $26::int8 WHERE $26::int8 IS NOT NULL"#,
    r#" ON CONFLICT ("key") DO UPDATE SET value = GREATEST(gridwatch_meta.value, EXCLUDED.value)"#,
    ") INSERT INTO case_events (",
    event_columns!(),
    ") SELECT * FROM unnest($17::text[], $18::text[], $19::int4[], $20::int8[], $21::text[], $22::text[], ",
    "$23::text[], $24::text[]) ON CONFLICT (event_id) DO NOTHING"
);

impl PostgresStore {
    /// Connects to the database named by `conninfo` (`postgres://USER[:PASSWORD]@HOST[:PORT]/DBNAME`
    /// or `host=HOST port=PORT user=USER dbname=DBNAME`, without TLS) and creates the tables
    /// if missing.
    pub fn open(conninfo: &str) -> Result<PostgresStore, StoreError> {
        let location = redact(conninfo);
        let mut config: Config = conninfo.parse().map_err(|e: ::postgres::Error| StoreError::Location {
            location: location.clone(),
            message: format!(
                "not a PostgreSQL connection string ({}): expected `postgres://USER[:PASSWORD]@HOST[:PORT]/DBNAME` \
                 or `host=HOST port=PORT user=USER dbname=DBNAME`",
                chain(&e)
            ),
        })?;
        if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
            return Err(StoreError::Location {
                location,
                message: "no server named: add `host=HOST` (or write `postgres://USER@HOST/DBNAME`)".into(),
            });
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("gridwatch");
        }
        let mut client = connect(&config, &location)?;
        let fail = |action: &str| {
            let (location, action, config) = (location.clone(), action.to_string(), &config);
            move |e: ::postgres::Error| pg_error(&location, &action, &e, config)
        };
        let mut tx = client.transaction().map_err(fail("create the tables"))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK]).map_err(fail("create the tables"))?;
        tx.batch_execute(SCHEMA).map_err(fail("create the tables"))?;
        tx.commit().map_err(fail("create the tables"))?;
        let statements = prepare(&mut client).map_err(fail("prepare statements"))?;
        tracing::debug!(message = "case store opened", backend = "postgres", %location);
        Ok(PostgresStore { config, client, statements, location })
    }

    /// Connects to a database that already holds the store's tables, creating nothing.
    pub fn open_existing(conninfo: &str) -> Result<PostgresStore, StoreError> {
        let location = redact(conninfo);
        let mut config: Config = conninfo.parse().map_err(|e: ::postgres::Error| StoreError::Location {
            location: location.clone(),
            message: format!("not a PostgreSQL connection string ({})", chain(&e)),
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let mut client = connect(&config, &location)?;
        let row = client
            .query_one("SELECT to_regclass('cases') IS NOT NULL AND to_regclass('case_events') IS NOT NULL", &[])
            .map_err(|e| pg_error(&location, "read the schema", &e, &config))?;
        if !row.get::<_, bool>(0) {
            return Err(StoreError::Missing {
                location,
                message:
                    "this database holds no gridwatch case store (no `cases` table); reading commands never create one"
                        .into(),
            });
        }
        let statements = prepare(&mut client).map_err(|e| pg_error(&location, "prepare statements", &e, &config))?;
        Ok(PostgresStore { config, client, statements, location })
    }

    fn err(&self, action: &str, e: &::postgres::Error) -> StoreError {
        pg_error(&self.location, action, e, &self.config)
    }

    /// Reconnects when the connection was lost (the server restarted, a proxy cut it): the
    /// call that saw the loss failed with a transient error; the retry lands here.
    fn connected(&mut self) -> Result<(), StoreError> {
        if !self.client.is_closed() {
            return Ok(());
        }
        tracing::warn!(message = "case store connection lost; reconnecting", location = %self.location);
        let mut client = connect(&self.config, &self.location)?;
        self.statements = prepare(&mut client).map_err(|e| self.err("prepare statements", &e))?;
        self.client = client;
        Ok(())
    }
}

/// The first column (`body`) of every row `query` returns.
fn bodies<T: ?Sized + ToStatement>(
    client: &mut Client,
    query: &T,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<String>, ::postgres::Error> {
    client.query(query, params)?.iter().map(|r| r.try_get::<_, String>(0)).collect()
}

fn connect(config: &Config, location: &str) -> Result<Client, StoreError> {
    config.connect(NoTls).map_err(|e| pg_error(location, "connect", &e, config))
}

fn prepare(client: &mut Client) -> Result<Statements, ::postgres::Error> {
    Ok(Statements {
        write: client.prepare(WRITE_BATCH)?,
        frontier: client.prepare(r#"SELECT value FROM gridwatch_meta WHERE "key" = $1"#)?,
        get: client.prepare("SELECT body FROM cases WHERE case_id = $1")?,
        events: client.prepare("SELECT body FROM case_events WHERE case_id = $1 ORDER BY seq")?,
        load_open: client.prepare(&format!("SELECT body FROM cases WHERE {}", open_condition()))?,
    })
}

impl CaseStore for PostgresStore {
    fn write(&mut self, updates: &[CaseUpdate], frontier: Option<Millis>) -> Result<(), StoreError> {
        if updates.is_empty() && frontier.is_none() {
            return Ok(());
        }
        self.connected()?;
        let (cases, events) = batch_rows(updates, &self.location)?;
        // Column arrays, in `case_columns!` order.
        let case_id: Vec<&str> = cases.iter().map(|r| r.case.case_id.as_str()).collect();
        let version: Vec<i32> = cases.iter().map(|r| r.version).collect();
        let status: Vec<&str> = cases.iter().map(|r| r.case.status.name()).collect();
        let category: Vec<&str> = cases.iter().map(|r| r.case.category.as_str()).collect();
        let severity: Vec<&str> = cases.iter().map(|r| r.case.severity.name()).collect();
        let unit: Vec<Option<&str>> = cases.iter().map(|r| r.case.unit.as_deref()).collect();
        let grid_id: Vec<Option<&str>> = cases.iter().map(|r| r.case.grid_id.as_deref()).collect();
        let component_id: Vec<Option<&str>> = cases.iter().map(|r| r.case.component_id.as_deref()).collect();
        let first_seen: Vec<i64> = cases.iter().map(|r| r.case.first_seen).collect();
        let last_seen: Vec<i64> = cases.iter().map(|r| r.case.last_seen).collect();
        let deadline: Vec<Option<i64>> = cases.iter().map(|r| r.case.deadline).collect();
        let overdue: Vec<bool> = cases.iter().map(|r| r.case.flags.overdue).collect();
        let key: Vec<bool> = cases.iter().map(|r| r.case.flags.key).collect();
        let difficult: Vec<bool> = cases.iter().map(|r| r.case.flags.difficult).collect();
        let updated_at: Vec<i64> = cases.iter().map(|r| r.case.updated_at).collect();
        let body: Vec<&str> = cases.iter().map(|r| r.body.as_str()).collect();
        // And in `event_columns!` order.
        let event_id: Vec<&str> = events.iter().map(|r| r.event.event_id.as_str()).collect();
        let ev_case_id: Vec<&str> = events.iter().map(|r| r.event.case_id.as_str()).collect();
        let seq: Vec<i32> = events.iter().map(|r| r.seq).collect();
        let at: Vec<i64> = events.iter().map(|r| r.event.at).collect();
        let kind: Vec<&str> = events.iter().map(|r| r.event.kind.name()).collect();
        let ev_status: Vec<&str> = events.iter().map(|r| r.event.status.name()).collect();
        let ev_unit: Vec<Option<&str>> = events.iter().map(|r| r.event.unit.as_deref()).collect();
        let ev_body: Vec<&str> = events.iter().map(|r| r.body.as_str()).collect();

        self.client
            .execute(
                &self.statements.write,
                &[
                    &case_id,
                    &version,
                    &status,
                    &category,
                    &severity,
                    &unit,
                    &grid_id,
                    &component_id,
                    &first_seen,
                    &last_seen,
                    &deadline,
                    &overdue,
                    &key,
                    &difficult,
                    &updated_at,
                    &body,
                    &event_id,
                    &ev_case_id,
                    &seq,
                    &at,
                    &kind,
                    &ev_status,
                    &ev_unit,
                    &ev_body,
                    &FRONTIER_KEY,
                    &frontier,
                ],
            )
            .map_err(|e| self.err(&write_action(updates, frontier), &e))?;
        Ok(())
    }

    fn frontier(&mut self) -> Result<Option<Millis>, StoreError> {
        self.connected()?;
        let action = "read the case frontier";
        let row =
            self.client.query_opt(&self.statements.frontier, &[&FRONTIER_KEY]).map_err(|e| self.err(action, &e))?;
        row.map(|r| r.try_get::<_, i64>(0)).transpose().map_err(|e| self.err(action, &e))
    }

    fn load_open(&mut self) -> Result<Vec<Case>, StoreError> {
        self.connected()?;
        let bodies = bodies(&mut self.client, &self.statements.load_open, &[])
            .map_err(|e| self.err("read the open cases", &e))?;
        bodies.iter().map(|b| decode_case(b, &self.location)).collect()
    }

    fn list(&mut self, filter: &CaseFilter) -> Result<Vec<Case>, StoreError> {
        self.connected()?;
        let (sql, params) = list_query(filter, DIALECT);
        let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        let bodies = bodies(&mut self.client, sql.as_str(), &params).map_err(|e| self.err("list cases", &e))?;
        bodies.iter().map(|b| decode_case(b, &self.location)).collect()
    }

    fn get(&mut self, case_id: &str) -> Result<Option<Case>, StoreError> {
        self.connected()?;
        let bodies = bodies(&mut self.client, &self.statements.get, &[&case_id])
            .map_err(|e| self.err(&format!("read case `{case_id}`"), &e))?;
        bodies.first().map(|b| decode_case(b, &self.location)).transpose()
    }

    fn events(&mut self, case_id: &str) -> Result<Vec<CaseEvent>, StoreError> {
        self.connected()?;
        let bodies = bodies(&mut self.client, &self.statements.events, &[&case_id])
            .map_err(|e| self.err(&format!("read the events of case `{case_id}`"), &e))?;
        bodies.iter().map(|b| decode_event(b, &self.location)).collect()
    }

    fn counts(&mut self) -> Result<(u64, u64), StoreError> {
        self.connected()?;
        let action = "count rows";
        let row = self
            .client
            .query_one("SELECT (SELECT count(*) FROM cases), (SELECT count(*) FROM case_events)", &[])
            .map_err(|e| self.err(action, &e))?;
        let cases: i64 = row.try_get(0).map_err(|e| self.err(action, &e))?;
        let events: i64 = row.try_get(1).map_err(|e| self.err(action, &e))?;
        Ok((cases.unsigned_abs(), events.unsigned_abs()))
    }
}

/// A [`StoreError::Postgres`] with the client's whole error and a hint for the causes a
/// user can fix.
fn pg_error(location: &str, action: &str, e: &::postgres::Error, config: &Config) -> StoreError {
    let mut message = chain(e);
    if let Some(hint) = hint(e, config) {
        message.push_str(". ");
        message.push_str(&hint);
    }
    StoreError::Postgres {
        location: location.to_string(),
        action: action.to_string(),
        message,
        transient: transient(e),
    }
}

/// The error and its causes on one line; a server error with its SQLSTATE, detail and hint.
fn chain(e: &::postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!("{} (SQLSTATE {})", db.message(), db.code().code());
        if let Some(detail) = db.detail() {
            s.push_str(&format!("; {detail}"));
        }
        if let Some(hint) = db.hint() {
            s.push_str(&format!("; hint: {hint}"));
        }
        return s;
    }
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

/// How to fix the usual connection problems.
fn hint(e: &::postgres::Error, config: &Config) -> Option<String> {
    let server = server(config);
    if let Some(code) = e.code() {
        return match code.code() {
            "28P01" | "28000" => Some(format!(
                "Check the user and password in the connection string (this client does not read PGPASSWORD or \
                 ~/.pgpass), and that {server} allows this user to connect (pg_hba.conf)"
            )),
            "3D000" => Some(format!(
                "Create the database (`createdb -h HOST -p PORT -U USER {}`) or name an existing one with dbname=",
                config.get_dbname().or(config.get_user()).unwrap_or("DBNAME")
            )),
            "42501" => Some(
                "The user may not create the tables: grant it CREATE on the schema, or create the tables once as \
                 their owner"
                    .into(),
            ),
            "53300" => Some(format!("{server} has no free connection slot; retry later or raise max_connections")),
            _ => None,
        };
    }
    let text = chain(e);
    if text.contains("password missing") {
        Some(
            "The server asks for a password: add it to the connection string (`password=…` or `USER:PASSWORD@`)".into(),
        )
    } else if text.starts_with("error performing TLS handshake") {
        Some("This client connects without TLS: use `sslmode=disable` or `sslmode=prefer`".into())
    } else if text.starts_with("error connecting to server") || text.starts_with("timeout waiting for server") {
        Some(format!(
            "Is PostgreSQL running at {server} and accepting connections from this machine? Start it or fix the \
             host and port in the connection string (or use a SQLite file: `sqlite:PATH`)"
        ))
    } else {
        None
    }
}

/// `host:port` of every configured server, for hints.
fn server(config: &Config) -> String {
    let ports = config.get_ports();
    let port = |i: usize| ports.get(i).or(ports.first()).copied().unwrap_or(5432);
    let mut names: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| match h {
            Host::Tcp(name) => format!("{name}:{}", port(i)),
            Host::Unix(dir) => format!("{}/.s.PGSQL.{}", dir.display(), port(i)),
        })
        .collect();
    if names.is_empty() {
        names = config.get_hostaddrs().iter().enumerate().map(|(i, a)| format!("{a}:{}", port(i))).collect();
    }
    names.join(", ")
}

/// Whether retrying may help: the connection broke, the server is restarting or busy, or
/// the transaction lost a serialisation race.
fn transient(e: &::postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if let Some(code) = e.code() {
        let code = code.code();
        return code.starts_with("08") || code.starts_with("57P") || matches!(code, "40001" | "40P01" | "53300");
    }
    let text = e.to_string();
    ["error communicating with the server", "error connecting to server", "timeout waiting for server"]
        .iter()
        .any(|t| text.starts_with(t))
}
