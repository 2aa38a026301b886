//! The case store contract, run against both backends: SQLite in a temporary directory and
//! PostgreSQL in a throwaway cluster this test starts itself (see `pg/mod.rs`).
//!
//! Every scenario opens its store through `store::open` on a location of its own (a new
//! file, a new database), so they cannot see each other's rows.

mod pg;

use std::collections::BTreeSet;
use std::time::Instant;

use gridwatch_cases::model::{Case, CaseEvent, CaseStatus, CaseUpdate, DispatchBy, EventKind, Flags, Point};
use gridwatch_connectors::store::{self, CaseFilter, CaseStore, StoreError};
use gridwatch_engine::plan::Severity;
use gridwatch_engine::time::Millis;
use serde_json::json;

/// 2026-11-18T00:00:00Z.
const T0: Millis = 1_795_046_400_000;
const MINUTE: Millis = 60_000;

/// A case to generate: where its lifecycle ends and what it looks like.
#[derive(Clone)]
struct Spec {
    id: &'static str,
    category: &'static str,
    unit: Option<&'static str>,
    status: CaseStatus,
    flags: Flags,
    /// Minutes after [`T0`].
    first_seen: Millis,
    /// Alerts that join after the first.
    joins: usize,
}

fn flags(overdue: bool, key: bool, difficult: bool) -> Flags {
    Flags { overdue, key, difficult }
}

/// The updates a case stage emits for `spec`, one per event, each with the case as it is
/// after the event: opened, dispatched (when it has a unit), `joins` joined alerts, then the
/// feedback that brings it to its final status. Flags are set on the last snapshot.
fn updates(spec: &Spec) -> Vec<CaseUpdate> {
    use CaseStatus as S;
    use EventKind as K;
    let first_seen = T0 + spec.first_seen * MINUTE;
    let mut steps: Vec<(EventKind, CaseStatus)> = vec![(K::Opened, S::Reported)];
    if spec.unit.is_some() {
        steps.push((K::Dispatched, S::Dispatched));
    }
    let after_dispatch = if spec.unit.is_some() { S::Dispatched } else { S::Reported };
    steps.extend(std::iter::repeat_n((K::AlertJoined, after_dispatch), spec.joins));
    let feedback: &[(EventKind, CaseStatus)] = match spec.status {
        S::Reported | S::Dispatched => &[],
        S::InProgress => &[(K::Accepted, S::InProgress)],
        S::Resolved => &[(K::Accepted, S::InProgress), (K::Resolved, S::Resolved)],
        S::Verified => &[(K::Accepted, S::InProgress), (K::Resolved, S::Resolved), (K::Verified, S::Verified)],
        S::Closed => &[
            (K::Accepted, S::InProgress),
            (K::Resolved, S::Resolved),
            (K::Verified, S::Verified),
            (K::Closed, S::Closed),
        ],
        S::Merged => &[(K::Merged, S::Merged)],
        S::Rejected => &[(K::Rejected, S::Rejected)],
    };
    steps.extend_from_slice(feedback);

    let mut case = Case {
        // Dyadic fractions: exact in binary, so the JSON round trip compares equal.
        location: Some(Point { lat: 52.5 + spec.first_seen as f64 / 1024.0, lon: 13.375 }),
        grid_id: Some("g-3-4".into()),
        component_id: spec.category.starts_with("emergency/gas").then(|| "pipe-17".to_string()),
        rules: vec!["gas-leak".into()],
        evidence: vec![json!({"stream": "sensor", "sensor_id": "s-17", "ppm": 412.5})],
        sla_ms: Some(4 * 60 * MINUTE),
        ..Case::reported(
            spec.id.to_string(),
            format!("{}|g-3-4", spec.category),
            spec.category.to_string(),
            format!("{} near Main St", spec.category.rsplit('/').next().unwrap_or(spec.category)),
            if spec.flags.key { Severity::Critical } else { Severity::Major },
            first_seen,
        )
    };
    let mut out = Vec::new();
    for (seq, &(kind, status)) in steps.iter().enumerate() {
        let at = first_seen + seq as Millis * MINUTE;
        let mut detail = serde_json::Map::new();
        match kind {
            K::Opened | K::AlertJoined => {
                let alert = format!("{}-alert-{}", spec.id, case.alert_ids.len());
                detail.insert("alert_id".into(), json!(alert));
                case.alert_ids.push(alert.clone());
                case.firing.push(alert);
                case.last_seen = at;
            }
            K::Dispatched => {
                case.unit = spec.unit.map(String::from);
                case.dispatch_by = Some(DispatchBy::Owner);
                case.clock_started = Some(at);
                case.deadline = case.sla_ms.map(|sla| at + sla);
                detail.insert("by".into(), json!("owner"));
            }
            _ => {
                let feedback = format!("fb-{}-{seq}", spec.id);
                detail.insert("feedback_id".into(), json!(feedback));
                detail.insert("note".into(), json!(format!("{} by crew 4", kind.name())));
                case.feedback_ids.push(feedback);
                if kind == K::Merged {
                    case.merged_into = Some("a01".into());
                }
                if !status.clock_runs() {
                    case.deadline = None;
                }
            }
        }
        let event = CaseEvent {
            event_id: format!("{}:{seq}", spec.id),
            case_id: spec.id.to_string(),
            seq: seq as u32,
            at,
            kind,
            status,
            unit: case.unit.clone(),
            detail,
        };
        case.status = status;
        case.updated_at = at;
        case.history.push(event.clone());
        if seq + 1 == steps.len() {
            case.flags = spec.flags;
            case.escalation_level = u32::from(spec.flags.overdue);
            case.reminders_sent = 2 * u32::from(spec.flags.overdue);
            case.reassigned = u32::from(spec.flags.difficult);
        }
        out.push(CaseUpdate { event, case: case.clone() });
    }
    out
}

/// The final snapshot of `spec`.
fn final_case(spec: &Spec) -> Case {
    updates(spec).pop().map(|u| u.case).expect("every case has an opening event")
}

/// Nine cases covering every status and flag; `first_seen` ties between a01 and a05 make
/// `case_id` decide. Listed newest first: a01, a05, a02, a03, a04, a06, a07, a08, a09.
fn population() -> Vec<Spec> {
    use CaseStatus as S;
    let spec = |id, category, unit, status, flags, first_seen, joins| Spec {
        id,
        category,
        unit,
        status,
        flags,
        first_seen,
        joins,
    };
    vec![
        spec("a01", "emergency/gas/leak", Some("gas-1"), S::Dispatched, flags(true, true, false), 100, 2),
        spec("a02", "emergency/gas/smell", Some("gas-1"), S::InProgress, flags(false, false, true), 90, 0),
        spec("a03", "roads/pothole/large", Some("roads-2"), S::Resolved, flags(false, false, false), 80, 1),
        spec("a04", "roads/pothole/small", Some("roads-2"), S::Closed, flags(false, false, false), 70, 0),
        spec("a05", "emergency/flood/street", None, S::Reported, flags(false, true, false), 100, 3),
        spec("a06", "lighting/outage", Some("roads-2"), S::Verified, flags(true, false, false), 60, 0),
        spec("a07", "emergency/gas/leak", Some("gas-1"), S::Merged, flags(false, false, false), 50, 1),
        spec("a08", "roads/sign", None, S::Rejected, flags(false, false, false), 40, 0),
        spec("a09", "emergency/gasworks", Some("gas-1"), S::Dispatched, flags(true, false, true), 30, 4),
    ]
}

/// Every update of `specs`, interleaved in event-time order as the case stage emits them.
fn stream(specs: &[Spec]) -> Vec<CaseUpdate> {
    let mut all: Vec<CaseUpdate> = specs.iter().flat_map(updates).collect();
    all.sort_by(|a, b| (a.event.at, &a.event.event_id).cmp(&(b.event.at, &b.event.event_id)));
    all
}

fn open(location: &str) -> Box<dyn CaseStore> {
    store::open(location).unwrap_or_else(|e| panic!("open {location}: {e}"))
}

fn write_in_batches(store: &mut dyn CaseStore, updates: &[CaseUpdate], batch: usize) {
    for chunk in updates.chunks(batch) {
        store.write(chunk, None).unwrap_or_else(|e| panic!("write: {e}"));
    }
}

fn ids(cases: &[Case]) -> Vec<&str> {
    cases.iter().map(|c| c.case_id.as_str()).collect()
}

/// `(case_id, version)` of each case: what a failed comparison should show first.
fn versions(cases: &[Case]) -> Vec<(&str, u32)> {
    cases.iter().map(|c| (c.case_id.as_str(), c.version())).collect()
}

fn event_count(specs: &[Spec]) -> u64 {
    specs.iter().map(|s| updates(s).len() as u64).sum()
}

/// The shared contract; `location(name)` gives a fresh, empty store location per scenario.
fn contract(backend: &str, location: &mut dyn FnMut(&str) -> String) {
    let started = Instant::now();
    replays_write_no_duplicates(backend, &location("replay"));
    older_snapshots_never_overwrite_newer(backend, &location("versions"));
    events_come_back_complete_in_seq_order(backend, &location("events"));
    load_open_returns_exactly_the_open_cases(backend, &location("open"));
    list_filters_select_the_right_cases(backend, &location("list"));
    the_frontier_is_recorded_with_the_writes_and_never_moves_back(backend, &location("frontier"));
    eprintln!("{backend}: contract held in {:?}", started.elapsed());
}

fn replays_write_no_duplicates(backend: &str, location: &str) {
    let specs = population();
    let all = stream(&specs);
    let mut store = open(location);
    write_in_batches(store.as_mut(), &all, 7);
    let expected = (specs.len() as u64, event_count(&specs));
    assert_eq!(store.counts().unwrap(), expected, "{backend}: rows after the first write");
    let before: Vec<Case> = store.list(&CaseFilter::default()).unwrap();

    // A replay after a crash: the same updates again, batched differently, partly twice in one batch.
    write_in_batches(store.as_mut(), &all, 50);
    store.write(&[all[3..9].to_vec(), all[3..9].to_vec()].concat(), None).unwrap();
    assert_eq!(store.counts().unwrap(), expected, "{backend}: a replay added rows");
    let after = store.list(&CaseFilter::default()).unwrap();
    assert_eq!(versions(&after), versions(&before), "{backend}: a replay changed versions");
    assert!(after == before, "{backend}: a replay changed rows");

    // Still there, unchanged, when the store is opened again (the schema step is idempotent).
    drop(store);
    let mut store = open(location);
    assert_eq!(store.counts().unwrap(), expected, "{backend}: rows after reopening");
    for spec in &specs {
        assert_eq!(store.get(spec.id).unwrap().as_ref(), Some(&final_case(spec)), "{backend}: case {}", spec.id);
    }
    assert!(store.write(&[], None).is_ok(), "{backend}: an empty batch is a no-op");
    assert_eq!(store.counts().unwrap(), expected, "{backend}: rows after an empty batch");
    assert_eq!(store.frontier().unwrap(), None, "{backend}: writes without a frontier record none");
}

fn the_frontier_is_recorded_with_the_writes_and_never_moves_back(backend: &str, location: &str) {
    let ups = updates(&population()[0]);
    let mut store = open(location);
    assert_eq!(store.frontier().unwrap(), None, "{backend}: a fresh store has no frontier");

    // A write without updates still records the frontier; extreme values survive.
    store.write(&[], Some(Millis::MIN)).unwrap();
    assert_eq!(store.frontier().unwrap(), Some(Millis::MIN), "{backend}: an updates-empty write records it");
    store.write(&[], Some(T0)).unwrap();
    assert_eq!(store.frontier().unwrap(), Some(T0), "{backend}: a larger frontier replaces it");
    assert_eq!(store.counts().unwrap(), (0, 0), "{backend}: no rows from frontier-only writes");

    // With updates, both land.
    store.write(&ups[..2], Some(T0 + 5 * MINUTE)).unwrap();
    assert_eq!(store.frontier().unwrap(), Some(T0 + 5 * MINUTE), "{backend}");
    assert_eq!(store.counts().unwrap(), (1, 2), "{backend}");

    // A smaller frontier does not lower it (its updates are still written); neither does none.
    store.write(&ups[2..3], Some(T0 + MINUTE)).unwrap();
    assert_eq!(store.frontier().unwrap(), Some(T0 + 5 * MINUTE), "{backend}: a smaller frontier lowered it");
    assert_eq!(store.get(ups[0].case.case_id.as_str()).unwrap().map(|c| c.version()), Some(3), "{backend}");
    store.write(&[], Some(Millis::MIN)).unwrap();
    store.write(&ups[3..], None).unwrap();
    store.write(&[], None).unwrap();
    assert_eq!(store.frontier().unwrap(), Some(T0 + 5 * MINUTE), "{backend}: the frontier moved back");
    assert_eq!(store.counts().unwrap(), (1, ups.len() as u64), "{backend}");

    // A replayed batch with a larger frontier moves it and still changes no case.
    store.write(&ups[..1], Some(T0 + 9 * MINUTE)).unwrap();
    drop(store);
    let mut store = open(location);
    assert_eq!(store.frontier().unwrap(), Some(T0 + 9 * MINUTE), "{backend}: the frontier after reopening");
    assert_eq!(store.get(ups[0].case.case_id.as_str()).unwrap(), Some(final_case(&population()[0])), "{backend}");
}

fn older_snapshots_never_overwrite_newer(backend: &str, location: &str) {
    let spec = population().swap_remove(0);
    let ups = updates(&spec);
    let newest = final_case(&spec);
    let mut store = open(location);
    write_in_batches(store.as_mut(), &ups, 1);
    // Replays of older versions, alone and after the newest in one batch.
    store.write(&ups[..1], None).unwrap();
    store.write(&[ups[ups.len() - 1].clone(), ups[1].clone()], None).unwrap();
    let got = store.get(spec.id).unwrap().expect("stored");
    assert_eq!(got.version(), newest.version(), "{backend}: an older snapshot overwrote the newest");
    assert!(got == newest, "{backend}: the stored case differs from the newest snapshot");
    assert_eq!(versions(&store.list(&CaseFilter::default()).unwrap()), versions(&[newest]), "{backend}");

    // A newer snapshot does replace an older one, also when both come in one batch, older last.
    let mut other = open(location);
    let more = updates(&Spec { id: "b01", joins: 3, ..spec.clone() });
    other.write(&more[..2], None).unwrap();
    assert_eq!(other.get("b01").unwrap().map(|c| c.version()), Some(2), "{backend}");
    other.write(&[more[4].clone(), more[3].clone(), more[2].clone()], None).unwrap();
    let got = other.get("b01").unwrap().expect("b01 stored");
    assert_eq!((got.version(), got.history.len()), (5, 5), "{backend}: the newest snapshot of the batch wins");
    assert_eq!(got, more[4].case, "{backend}");
    assert_eq!(other.events("b01").unwrap().len(), 5, "{backend}: every event of the batch written");
}

fn events_come_back_complete_in_seq_order(backend: &str, location: &str) {
    let specs = population();
    // Events arrive in reverse and in uneven batches; seq order comes from the table.
    let mut all = stream(&specs);
    all.reverse();
    let mut store = open(location);
    write_in_batches(store.as_mut(), &all, 5);
    for spec in &specs {
        let expected = final_case(spec).history;
        let events = store.events(spec.id).unwrap();
        assert_eq!(events, expected, "{backend}: events of {}", spec.id);
        assert!(events.iter().enumerate().all(|(i, e)| e.seq as usize == i), "{backend}: seq order of {}", spec.id);
        // The snapshot is the newest even though it was written first.
        assert_eq!(store.get(spec.id).unwrap().map(|c| c.history), Some(expected), "{backend}: history of {}", spec.id);
    }
    assert!(store.events("nope").unwrap().is_empty(), "{backend}");
    assert_eq!(store.get("nope").unwrap(), None, "{backend}");
}

fn load_open_returns_exactly_the_open_cases(backend: &str, location: &str) {
    let specs = population();
    let mut store = open(location);
    assert!(store.load_open().unwrap().is_empty(), "{backend}: an empty store has no open cases");
    write_in_batches(store.as_mut(), &stream(&specs), 1000);
    let mut open_cases = store.load_open().unwrap();
    open_cases.sort_by(|a, b| a.case_id.cmp(&b.case_id));
    let expected: Vec<Case> = specs.iter().filter(|s| s.status.is_open()).map(final_case).collect();
    assert_eq!(ids(&open_cases), ["a01", "a02", "a03", "a05", "a06", "a09"], "{backend}");
    assert_eq!(open_cases, expected, "{backend}: open cases come back whole");

    // Closing a case removes it from the open ones.
    let mut closing = updates(&Spec { status: CaseStatus::Rejected, ..specs[4].clone() });
    let closed = closing.pop().expect("a rejection event");
    store.write(&[closed], None).unwrap();
    let reopened_ids: BTreeSet<String> = store.load_open().unwrap().into_iter().map(|c| c.case_id).collect();
    assert!(!reopened_ids.contains("a05") && reopened_ids.len() == 5, "{backend}: {reopened_ids:?}");
}

fn list_filters_select_the_right_cases(backend: &str, location: &str) {
    let mut store = open(location);
    write_in_batches(store.as_mut(), &stream(&population()), 4);
    let list = |store: &mut Box<dyn CaseStore>, filter: CaseFilter| -> Vec<String> {
        store.list(&filter).unwrap().into_iter().map(|c| c.case_id).collect()
    };
    let cases: &[(CaseFilter, &[&str])] = &[
        (CaseFilter::default(), &["a01", "a05", "a02", "a03", "a04", "a06", "a07", "a08", "a09"]),
        (CaseFilter { overdue: true, ..Default::default() }, &["a01", "a06", "a09"]),
        (CaseFilter { key: true, ..Default::default() }, &["a01", "a05"]),
        (CaseFilter { difficult: true, ..Default::default() }, &["a02", "a09"]),
        (CaseFilter { unit: Some("gas-1".into()), ..Default::default() }, &["a01", "a02", "a07", "a09"]),
        (CaseFilter { unit: Some("nobody".into()), ..Default::default() }, &[]),
        (CaseFilter { status: Some(CaseStatus::Dispatched), ..Default::default() }, &["a01", "a09"]),
        (CaseFilter { status: Some(CaseStatus::Closed), ..Default::default() }, &["a04"]),
        (CaseFilter { open_only: true, ..Default::default() }, &["a01", "a05", "a02", "a03", "a06", "a09"]),
        (CaseFilter { limit: Some(3), ..Default::default() }, &["a01", "a05", "a02"]),
        (CaseFilter { limit: Some(0), ..Default::default() }, &[]),
        (CaseFilter { category_prefix: Some("emergency/gas/".into()), ..Default::default() }, &["a01", "a02", "a07"]),
        (CaseFilter { category_prefix: Some("Emergency/".into()), ..Default::default() }, &[]),
        (CaseFilter { category_prefix: Some("roads/".into()), open_only: true, ..Default::default() }, &["a03"]),
        (
            CaseFilter {
                open_only: true,
                overdue: true,
                unit: Some("gas-1".into()),
                limit: Some(10),
                ..Default::default()
            },
            &["a01", "a09"],
        ),
        (CaseFilter { key: true, difficult: true, ..Default::default() }, &[]),
    ];
    for (filter, expected) in cases {
        assert_eq!(list(&mut store, filter.clone()), *expected, "{backend}: {filter:?}");
    }
    // Listed cases are the whole snapshots.
    let listed = store.list(&CaseFilter { status: Some(CaseStatus::Merged), ..Default::default() }).unwrap();
    assert_eq!(listed, vec![final_case(&population()[6])], "{backend}");
}

#[test]
fn sqlite_store_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    // Nested directories: `open` creates them. Half the scenarios use the `sqlite:` prefix.
    let mut n = 0;
    contract("sqlite", &mut |name| {
        n += 1;
        let path = dir.path().join(name).join("state").join("cases.db");
        if n % 2 == 0 { format!("sqlite:{}", path.display()) } else { path.display().to_string() }
    });
    assert!(dir.path().join("replay/state/cases.db").is_file());
}

#[test]
fn postgres_store_keeps_the_contract() {
    let mut server = pg::PgServer::start();
    // Half the scenarios connect with a URL, half with a libpq key/value string.
    let mut n = 0;
    contract("postgres", &mut |name| {
        n += 1;
        let url = server.create_database(name);
        if n % 2 == 0 { server.conninfo(name) } else { url }
    });

    // A missing database: the error names it and says how to create it.
    let err = store::open(&server.url("no_such_db")).err().expect("opening a missing database fails");
    let msg = err.to_string();
    assert!(msg.contains("no_such_db") && msg.contains("createdb"), "{msg}");

    // Reading commands open an existing store only: an empty database is refused and stays
    // empty; once a run created the tables, it opens.
    let location = server.create_database("read_only");
    let err = store::open_existing(&location).err().expect("no store in an empty database");
    assert!(matches!(err, store::StoreError::Missing { .. }), "{err}");
    assert!(store::open_existing(&location).is_err(), "still no tables: nothing was created");
    drop(open(&location));
    let mut existing = store::open_existing(&location).expect("the store exists now");
    assert!(existing.load_open().expect("read").is_empty());

    // The frontier commits with its batch or not at all: a batch the database refuses (here
    // by a trigger on its last event) records neither its cases nor its frontier.
    let location = server.create_database("atomic");
    let mut store = open(&location);
    let ups = updates(&population()[0]);
    store.write(&ups[..1], Some(T0)).unwrap();
    server
        .client("atomic")
        .batch_execute(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused'; END $$; \
             CREATE TRIGGER refuse BEFORE INSERT ON case_events FOR EACH ROW WHEN (NEW.seq = 2) EXECUTE FUNCTION refuse()",
        )
        .unwrap();
    let msg = store.write(&ups[1..3], Some(T0 + MINUTE)).unwrap_err().to_string();
    assert!(msg.contains("refused") && msg.contains("write 2 updates and the frontier"), "{msg}");
    assert_eq!(store.frontier().unwrap(), Some(T0), "the frontier of a refused batch was recorded");
    assert_eq!(store.counts().unwrap(), (1, 1), "the cases of a refused batch were written");
    drop(store);

    // The server restarts under an open store: the call that sees the broken connection fails
    // with a transient error; a retry reconnects and writes.
    let location = server.create_database("restart");
    let mut store = open(&location);
    let ups = updates(&population()[0]);
    store.write(&ups[..2], None).unwrap();
    server.restart();
    let mut errors = Vec::new();
    while let Err(e) = store.write(&ups[2..], Some(T0)) {
        assert!(e.is_transient(), "not transient: {e}");
        eprintln!("after the restart: {e}");
        errors.push(e.to_string());
        assert!(errors.len() < 3, "still failing after reconnecting: {errors:#?}");
    }
    assert_eq!(store.get(&ups[0].case.case_id).unwrap(), Some(final_case(&population()[0])));
    assert_eq!(store.counts().unwrap(), (1, ups.len() as u64));
    assert_eq!(store.frontier().unwrap(), Some(T0));
}

#[test]
fn postgres_errors_say_how_to_fix_them() {
    // Nothing listens on a port held bound (a port merely found free could be taken by the
    // cluster another test restarts meanwhile).
    let (_held, port) = pg::refusing_port();
    let err = store::open(&format!("postgres://gw:s3cret@127.0.0.1:{port}/cases")).err().expect("no server");
    let msg = err.to_string();
    assert!(msg.contains(&format!("postgres://gw:***@127.0.0.1:{port}/cases")), "{msg}");
    assert!(msg.contains(&format!("Is PostgreSQL running at 127.0.0.1:{port}")), "{msg}");
    assert!(!msg.contains("s3cret"), "{msg}");
    assert!(err.is_transient(), "an unreachable server may come back: {msg}");

    let err = store::open("postgres://gw:s3cret@db:notaport/cases").err().expect("bad port");
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Location { .. }), "{msg}");
    assert!(msg.contains("not a PostgreSQL connection string") && msg.contains("postgres://USER"), "{msg}");
    assert!(!msg.contains("s3cret"), "{msg}");

    let err = store::open("user=gw password='s3 cret' dbname=cases").err().expect("no host");
    let msg = err.to_string();
    assert!(msg.contains("add `host=HOST`") && !msg.contains("s3"), "{msg}");
}

/// Rough write rates (updates per second) for both backends; run with
/// `cargo test --release -p gridwatch-connectors --test case_store -- --ignored --nocapture`.
/// The PostgreSQL cluster runs with fsync off, so its numbers are an upper bound.
#[test]
#[ignore = "measurement, prints numbers"]
fn write_rate() {
    // 4,000 cases with 6 events each, interleaved as the case stage emits them.
    let units = ["gas-1", "roads-2", "water-3"];
    let specs: Vec<Spec> = (0..4000)
        .map(|i| Spec {
            id: Box::leak(format!("c{i:05}").into_boxed_str()),
            category: ["emergency/gas/leak", "roads/pothole/large", "lighting/outage"][i % 3],
            unit: Some(units[i % 3]),
            status: CaseStatus::Resolved,
            flags: flags(i % 7 == 0, i % 11 == 0, false),
            first_seen: (i / 10) as Millis,
            joins: 2,
        })
        .collect();
    let all = stream(&specs);
    // The JSON bodies are part of every write; their share tells how much is the database.
    let start = Instant::now();
    let bytes: usize = all
        .iter()
        .map(|u| serde_json::to_string(&u.case).unwrap().len() + serde_json::to_string(&u.event).unwrap().len())
        .sum();
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "JSON encoding alone: {:.0} updates/s ({} bytes per update on average)",
        all.len() as f64 / secs,
        bytes / all.len()
    );
    let dir = tempfile::tempdir().unwrap();
    let server = pg::PgServer::start();
    for batch in [1000, 100, 1] {
        // Per-update transactions are slow; time them on a prefix.
        let n = if batch == 1 { 3000 } else { all.len() };
        let sqlite = format!("sqlite:{}", dir.path().join(format!("rate-{batch}.db")).display());
        let postgres = server.create_database(&format!("rate_{batch}"));
        for (backend, location) in [("sqlite", sqlite), ("postgres", postgres)] {
            let mut store = open(&location);
            let start = Instant::now();
            write_in_batches(store.as_mut(), &all[..n], batch);
            let secs = start.elapsed().as_secs_f64();
            eprintln!(
                "{backend:>8}, batches of {batch:>4}: {n} updates in {secs:.2} s = {:.0} updates/s",
                n as f64 / secs
            );
        }
    }
}
