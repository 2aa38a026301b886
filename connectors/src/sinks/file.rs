//! The file sink: NDJSON lines appended to a file (see [`crate::file::NdjsonWriter`]).

use std::path::Path;

use gridwatch_runtime::{ErrorClass, OutputReport, Record, Routes, Sink, SinkError};

use crate::error::ConnectorError;
use crate::file::NdjsonWriter;

/// See the module docs. Alerts are written with the alert stage's verdict when there is
/// one (so held-back alerts say why); cases as the event with the case after it.
pub struct FileSink {
    name: String,
    routes: Routes,
    writer: NdjsonWriter,
    barrier: u64,
}

impl FileSink {
    /// Opens `path` for appending.
    pub fn open(name: &str, routes: Routes, path: &Path) -> Result<FileSink, SinkError> {
        let writer = NdjsonWriter::append(path).map_err(|e| error(name, e))?;
        Ok(FileSink { name: name.to_string(), routes, writer, barrier: 0 })
    }
}

fn error(name: &str, e: ConnectorError) -> SinkError {
    SinkError::caused(name, ErrorClass::External, "the file (disk full? permissions?)", e)
}

impl Sink for FileSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "file"
    }

    fn routes(&self) -> &Routes {
        &self.routes
    }

    fn write(&mut self, record: &Record<'_>) -> Result<(), SinkError> {
        let r = match record {
            Record::Alert { gated: Some(g), .. } => self.writer.write(g),
            Record::Alert { alert, gated: None, .. } => self.writer.write(alert),
            Record::Case(u) => self.writer.write(u),
            Record::DeadLetter(d) => self.writer.write(d),
        };
        r.map_err(|e| error(&self.name, e))
    }

    fn barrier(&mut self, seq: u64) -> Result<(), SinkError> {
        self.writer.flush().map_err(|e| error(&self.name, e))?;
        self.barrier = seq;
        Ok(())
    }

    fn delivered(&mut self) -> Result<u64, SinkError> {
        Ok(self.barrier)
    }

    fn close(&mut self) -> Result<(), SinkError> {
        self.writer.flush().map_err(|e| error(&self.name, e))
    }

    fn report(&self) -> OutputReport {
        OutputReport {
            sink: self.name.clone(),
            what: super::console::what(&self.routes),
            location: format!("{} (appended)", self.writer.path().display()),
            records: Some(self.writer.lines()),
        }
    }
}
