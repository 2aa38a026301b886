//! NDJSON files: an event source that replays a recorded file, and line sinks.
//!
//! A recorded events file holds one JSON object per line; each names its stream in a
//! `stream` field (the generator writes it first, which lets the reader find it without
//! parsing the whole line).

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{ConnectorError, Result};

/// Reads an NDJSON events file line by line.
#[derive(Debug)]
pub struct NdjsonSource {
    path: PathBuf,
    reader: BufReader<File>,
    line: Vec<u8>,
    line_no: u64,
}

/// One line of an events file.
#[derive(Debug)]
pub struct Line<'a> {
    /// The stream named in the line, if any.
    pub stream: Option<&'a str>,
    /// The whole line without its newline.
    pub payload: &'a [u8],
    /// 1-based line number.
    pub line_no: u64,
}

impl NdjsonSource {
    /// Opens `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|source| ConnectorError::Open { path: path.to_path_buf(), source })?;
        Ok(NdjsonSource {
            path: path.to_path_buf(),
            reader: BufReader::with_capacity(1 << 20, file),
            line: Vec::new(),
            line_no: 0,
        })
    }

    /// The next non-empty line, or None at the end of the file.
    pub fn next_line(&mut self) -> Result<Option<Line<'_>>> {
        loop {
            self.line.clear();
            let n = self
                .reader
                .read_until(b'\n', &mut self.line)
                .map_err(|source| ConnectorError::Read { path: self.path.clone(), source })?;
            if n == 0 {
                return Ok(None);
            }
            self.line_no += 1;
            while self.line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                self.line.pop();
            }
            if self.line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let stream = sniff_stream(&self.line);
            return Ok(Some(Line { stream, payload: &self.line, line_no: self.line_no }));
        }
    }
}

/// Finds the `stream` field of a JSON line: fast when it comes first, else by a full parse.
pub fn sniff_stream(line: &[u8]) -> Option<&str> {
    const PREFIX: &[u8] = br#"{"stream":""#;
    if let Some(rest) = line.strip_prefix(PREFIX)
        && let Some(end) = rest.iter().position(|&b| b == b'"' || b == b'\\')
        && rest[end] == b'"'
    {
        return std::str::from_utf8(&rest[..end]).ok();
    }
    #[derive(serde::Deserialize)]
    struct Envelope<'a> {
        #[serde(borrow)]
        stream: Option<&'a str>,
    }
    serde_json::from_slice::<Envelope<'_>>(line).ok().and_then(|e| e.stream)
}

/// Appends JSON lines to a file (created with its parent directories).
#[derive(Debug)]
pub struct NdjsonWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl NdjsonWriter {
    /// Creates (truncates) `path`.
    pub fn create(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| ConnectorError::Open { path: dir.to_path_buf(), source })?;
        }
        let file = File::create(path).map_err(|source| ConnectorError::Open { path: path.to_path_buf(), source })?;
        Ok(NdjsonWriter { path: path.to_path_buf(), out: BufWriter::with_capacity(1 << 16, file) })
    }

    /// Writes one value as a line.
    pub fn write<T: serde::Serialize>(&mut self, value: &T) -> Result<()> {
        serde_json::to_writer(&mut self.out, value)
            .map_err(|e| ConnectorError::Write { path: self.path.clone(), source: e.into() })?;
        self.out.write_all(b"\n").map_err(|source| ConnectorError::Write { path: self.path.clone(), source })?;
        Ok(())
    }

    /// Writes raw bytes as a line.
    pub fn write_raw(&mut self, line: &[u8]) -> Result<()> {
        self.out
            .write_all(line)
            .and_then(|()| self.out.write_all(b"\n"))
            .map_err(|source| ConnectorError::Write { path: self.path.clone(), source })?;
        Ok(())
    }

    /// Flushes to the OS.
    pub fn flush(&mut self) -> Result<()> {
        self.out.flush().map_err(|source| ConnectorError::Write { path: self.path.clone(), source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_stream_fast_and_slow() {
        assert_eq!(sniff_stream(br#"{"stream":"gps","ts":1}"#), Some("gps"));
        assert_eq!(sniff_stream(br#"{"ts":1, "stream":"sensor"}"#), Some("sensor"));
        assert_eq!(sniff_stream(br#"{"ts":1}"#), None);
        assert_eq!(sniff_stream(b"not json"), None);
    }
}
