//! NDJSON files: an event source that replays a recorded file, and line sinks.
//!
//! A recorded events file holds one JSON object per line; each names its stream in a
//! `stream` field (the generator writes it first, which lets the reader find it without
//! parsing the whole line).

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use crate::error::{ConnectorError, Result};

/// Reads an NDJSON events file line by line.
#[derive(Debug)]
pub struct NdjsonSource {
    path: PathBuf,
    reader: BufReader<File>,
    line: Vec<u8>,
    line_no: u64,
    /// Bytes consumed so far (the start of the next line).
    offset: u64,
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
            offset: 0,
        })
    }

    /// Where the next line starts: (byte offset, lines read so far).
    pub fn position(&self) -> (u64, u64) {
        (self.offset, self.line_no)
    }

    /// Goes on from `offset`, where line `line_no + 1` starts (as [`NdjsonSource::position`] said).
    pub fn seek(&mut self, offset: u64, line_no: u64) -> Result<()> {
        use std::io::Seek;
        self.reader
            .seek(std::io::SeekFrom::Start(offset))
            .map_err(|source| ConnectorError::Read { path: self.path.clone(), source })?;
        self.offset = offset;
        self.line_no = line_no;
        Ok(())
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
            self.offset += n as u64;
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

/// Writes JSON lines to a file, never destroying what an earlier run wrote there.
///
/// - [`NdjsonWriter::append`] adds to the end of an existing file (a restart after a crash,
///   or a rerun, continues it). If the file ends in a partial line (a crash in the middle of
///   a write), that fragment is moved to `<file>.torn` first, so every line stays whole.
/// - [`NdjsonWriter::replace`] writes a new version into `<file>.partial` and renames it
///   over the file only at [`NdjsonWriter::commit`]: a failed run leaves the old file as it
///   was.
///
/// Only whole lines reach the file: lines are gathered in a buffer and written in one go
/// at [`NdjsonWriter::flush`] (or when the buffer is full); if a write fails part-way (the
/// disk is full), the file is cut back to its last complete line and the error names the
/// file and the cause.
#[derive(Debug)]
pub struct NdjsonWriter {
    path: PathBuf,
    /// Where the bytes go: `path`, or its `.partial` sibling for a replacement.
    target: PathBuf,
    file: File,
    buf: Vec<u8>,
    /// File length after the last complete flush.
    len: u64,
    lines: u64,
    replacing: bool,
}

/// Lines gathered before they are written.
const WRITE_BUFFER: usize = 1 << 16;

impl NdjsonWriter {
    /// Opens `path` (creating it and its parent directories) to add lines at its end.
    pub fn append(path: &Path) -> Result<Self> {
        create_parent(path)?;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .map_err(|source| ConnectorError::Open { path: path.to_path_buf(), source })?;
        let len = repair_torn_tail(&mut file, path)?;
        Ok(NdjsonWriter {
            path: path.to_path_buf(),
            target: path.to_path_buf(),
            file,
            buf: Vec::with_capacity(WRITE_BUFFER),
            len,
            lines: 0,
            replacing: false,
        })
    }

    /// Starts a new version of `path`, written beside it and put in its place by
    /// [`NdjsonWriter::commit`].
    pub fn replace(path: &Path) -> Result<Self> {
        create_parent(path)?;
        let mut target = path.as_os_str().to_owned();
        target.push(".partial");
        let target = PathBuf::from(target);
        let file = File::create(&target).map_err(|source| ConnectorError::Open { path: target.clone(), source })?;
        Ok(NdjsonWriter {
            path: path.to_path_buf(),
            target,
            file,
            buf: Vec::with_capacity(WRITE_BUFFER),
            len: 0,
            lines: 0,
            replacing: true,
        })
    }

    /// The file written to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Lines written (or buffered) by this writer.
    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// Writes one value as a line.
    pub fn write<T: serde::Serialize>(&mut self, value: &T) -> Result<()> {
        let start = self.buf.len();
        if let Err(e) = serde_json::to_writer(&mut self.buf, value) {
            self.buf.truncate(start);
            return Err(ConnectorError::Write { path: self.path.clone(), source: e.into() });
        }
        self.end_line()
    }

    /// Writes raw bytes as a line.
    pub fn write_raw(&mut self, line: &[u8]) -> Result<()> {
        self.buf.extend_from_slice(line);
        self.end_line()
    }

    fn end_line(&mut self) -> Result<()> {
        self.buf.push(b'\n');
        self.lines += 1;
        if self.buf.len() >= WRITE_BUFFER { self.flush() } else { Ok(()) }
    }

    /// Writes the buffered lines to the OS.
    pub fn flush(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        match self.file.write_all(&self.buf) {
            Ok(()) => {
                self.len += self.buf.len() as u64;
                self.buf.clear();
                Ok(())
            }
            Err(source) => {
                // Keep the file to whole lines: cut off whatever part of the buffer landed.
                let _ = self.file.set_len(self.len);
                Err(ConnectorError::Write { path: self.target.clone(), source })
            }
        }
    }

    /// Flushes and makes the lines durable (fsync).
    pub fn sync(&mut self) -> Result<()> {
        self.flush()?;
        self.file.sync_data().map_err(|source| ConnectorError::Write { path: self.target.clone(), source })
    }

    /// Flushes; a replacement ([`NdjsonWriter::replace`]) is synced and renamed over the file.
    pub fn commit(mut self) -> Result<()> {
        if !self.replacing {
            return self.flush();
        }
        self.sync()?;
        std::fs::rename(&self.target, &self.path)
            .map_err(|source| ConnectorError::Write { path: self.path.clone(), source })
    }
}

impl Drop for NdjsonWriter {
    fn drop(&mut self) {
        if self.replacing {
            // Not committed: the old file stays as it was.
            let _ = std::fs::remove_file(&self.target);
        }
    }
}

fn create_parent(path: &Path) -> Result<()> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|source| ConnectorError::Open { path: dir.to_path_buf(), source })
        }
        None => Ok(()),
    }
}

/// If `file` ends in a partial line, moves that fragment to `<path>.torn` (appending) and
/// cuts the file back to its last newline. Returns the file's length after.
fn repair_torn_tail(file: &mut File, path: &Path) -> Result<u64> {
    use std::io::{Read, Seek, SeekFrom};
    let read_err = |source| ConnectorError::Read { path: path.to_path_buf(), source };
    let len = file.metadata().map_err(read_err)?.len();
    if len == 0 {
        return Ok(0);
    }
    // Scan back from the end in blocks for the last newline.
    let mut end_of_whole = 0u64;
    let mut pos = len;
    let mut block = vec![0u8; 64 * 1024];
    let mut tail_checked = false;
    while pos > 0 {
        let start = pos.saturating_sub(block.len() as u64);
        let n = (pos - start) as usize;
        file.seek(SeekFrom::Start(start)).map_err(read_err)?;
        file.read_exact(&mut block[..n]).map_err(read_err)?;
        if !tail_checked {
            if block[n - 1] == b'\n' {
                return Ok(len);
            }
            tail_checked = true;
        }
        if let Some(i) = block[..n].iter().rposition(|&b| b == b'\n') {
            end_of_whole = start + i as u64 + 1;
            break;
        }
        pos = start;
    }
    let mut fragment = Vec::with_capacity((len - end_of_whole) as usize);
    file.seek(SeekFrom::Start(end_of_whole)).map_err(read_err)?;
    file.read_to_end(&mut fragment).map_err(read_err)?;
    let mut torn = path.as_os_str().to_owned();
    torn.push(".torn");
    let torn = PathBuf::from(torn);
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&torn)
        .and_then(|mut t| t.write_all(&fragment).and_then(|()| t.write_all(b"\n")))
        .map_err(|source| ConnectorError::Write { path: torn.clone(), source })?;
    file.set_len(end_of_whole).map_err(|source| ConnectorError::Write { path: path.to_path_buf(), source })?;
    tracing::warn!(
        file = %path.display(),
        bytes = fragment.len(),
        moved_to = %torn.display(),
        "the file ended in a partial line (a crash while writing?): moved it aside"
    );
    Ok(end_of_whole)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap_or_default()
    }

    #[test]
    fn appending_keeps_what_was_there_and_moves_a_torn_line_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/alerts.ndjson");
        let mut w = NdjsonWriter::append(&path).unwrap();
        w.write(&serde_json::json!({"a": 1})).unwrap();
        w.commit().unwrap();
        let mut w = NdjsonWriter::append(&path).unwrap();
        w.write(&serde_json::json!({"a": 2})).unwrap();
        w.commit().unwrap();
        assert_eq!(read(&path), "{\"a\":1}\n{\"a\":2}\n", "a second run appends");
        // A crash in the middle of a line.
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"{\"a\":3,\"b\"").unwrap();
        let mut w = NdjsonWriter::append(&path).unwrap();
        w.write_raw(b"{\"a\":4}").unwrap();
        w.commit().unwrap();
        assert_eq!(read(&path), "{\"a\":1}\n{\"a\":2}\n{\"a\":4}\n");
        assert_eq!(read(&dir.path().join("sub/alerts.ndjson.torn")), "{\"a\":3,\"b\"\n", "nothing is destroyed");
        // A file that is one partial line.
        let only = dir.path().join("only.ndjson");
        std::fs::write(&only, "{\"x\"").unwrap();
        NdjsonWriter::append(&only).unwrap().commit().unwrap();
        assert_eq!(read(&only), "");
    }

    #[test]
    fn a_replacement_lands_only_when_committed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("summary.json");
        std::fs::write(&path, "old\n").unwrap();
        let mut w = NdjsonWriter::replace(&path).unwrap();
        w.write_raw(b"new").unwrap();
        drop(w);
        assert_eq!(read(&path), "old\n", "a run that fails leaves the old file");
        assert!(!dir.path().join("summary.json.partial").exists());
        let mut w = NdjsonWriter::replace(&path).unwrap();
        w.write_raw(b"new").unwrap();
        w.commit().unwrap();
        assert_eq!(read(&path), "new\n");
    }

    #[test]
    fn sniffs_stream_fast_and_slow() {
        assert_eq!(sniff_stream(br#"{"stream":"gps","ts":1}"#), Some("gps"));
        assert_eq!(sniff_stream(br#"{"ts":1, "stream":"sensor"}"#), Some("sensor"));
        assert_eq!(sniff_stream(br#"{"ts":1}"#), None);
        assert_eq!(sniff_stream(b"not json"), None);
    }
}
