//! The case-store sink: cases in SQLite or PostgreSQL ([`crate::store`]), written in one
//! transaction per acknowledged barrier together with the alert and case stage's
//! checkpoint — only once every other sink has delivered that barrier (see
//! `gridwatch_runtime::acks`).

use gridwatch_cases::CaseUpdate;
use gridwatch_engine::time::Millis;
use gridwatch_runtime::{ErrorClass, OutputReport, Record, Resume, Routes, Sink, SinkError};

use crate::store::{self, CaseStore, StoreError};

/// See the module docs.
pub struct CaseStoreSink {
    name: String,
    routes: Routes,
    store: Box<dyn CaseStore>,
    location: String,
    unstored: Vec<CaseUpdate>,
    written: u64,
}

impl CaseStoreSink {
    /// Opens (creating if need be) the store at `location`.
    pub fn open(name: &str, routes: Routes, location: &str) -> Result<CaseStoreSink, SinkError> {
        let store = store::open(location).map_err(|e| error(name, e))?;
        Ok(CaseStoreSink {
            name: name.to_string(),
            routes,
            store,
            location: store::redact(location),
            unstored: Vec::new(),
            written: 0,
        })
    }
}

fn error(name: &str, e: StoreError) -> SinkError {
    let class = match e {
        StoreError::Location { .. } | StoreError::Missing { .. } => ErrorClass::Config,
        StoreError::Json { .. } => ErrorClass::Internal,
        _ => ErrorClass::External,
    };
    SinkError::caused(name, class, "the case store", e)
}

impl Sink for CaseStoreSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "case_store"
    }

    fn routes(&self) -> &Routes {
        &self.routes
    }

    fn write(&mut self, record: &Record<'_>) -> Result<(), SinkError> {
        if let Record::Case(u) = record {
            self.unstored.push((*u).clone());
        }
        Ok(())
    }

    fn barrier(&mut self, _seq: u64) -> Result<(), SinkError> {
        Ok(())
    }

    fn delivered(&mut self) -> Result<u64, SinkError> {
        // A checkpointing sink is not waited for: its checkpoint waits for the others.
        Ok(u64::MAX)
    }

    fn checkpoints(&self) -> bool {
        true
    }

    fn resume(&mut self) -> Result<Option<Resume>, SinkError> {
        let open_cases = self.store.load_open().map_err(|e| error(&self.name, e))?;
        let frontier = self.store.frontier().map_err(|e| error(&self.name, e))?;
        Ok(Some(Resume { open_cases, frontier }))
    }

    fn checkpoint(&mut self, frontier: Option<Millis>) -> Result<(), SinkError> {
        if self.unstored.is_empty() && frontier.is_none() {
            return Ok(());
        }
        self.store.write(&self.unstored, frontier).map_err(|e| error(&self.name, e))?;
        self.written += self.unstored.len() as u64;
        self.unstored.clear();
        Ok(())
    }

    fn close(&mut self) -> Result<(), SinkError> {
        Ok(())
    }

    fn report(&self) -> OutputReport {
        OutputReport {
            sink: self.name.clone(),
            what: "cases".into(),
            location: format!("{} (store)", self.location),
            records: Some(self.written),
        }
    }
}
