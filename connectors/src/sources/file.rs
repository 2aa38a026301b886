//! The file source: a recorded NDJSON file, each line naming its stream in a `stream`
//! field. A regular file is read directly; anything else (a FIFO, `-` for stdin) is read on
//! a thread of its own, so a blocking read never holds up signals, linger or the idle
//! handling: a pipe that stays silent lets partial batches go and idle streams advance.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use gridwatch_runtime::{ErrorClass, Ingest, Polled, Source, SourceError};

use crate::file::{NdjsonSource, sniff_stream};
use gridwatch_engine::{Reject, RejectKind};

/// Lines read per poll from a regular file.
const LINES_PER_POLL: usize = 4096;

enum Input {
    File(NdjsonSource),
    /// Lines read by a thread (line number, bytes); the channel closes at the end.
    Stream(Receiver<std::io::Result<(u64, Vec<u8>)>>),
}

/// See the module docs.
pub struct FileSource {
    path: PathBuf,
    input: Input,
    /// Lines received, and those that named no known stream.
    counts: (u64, u64),
    /// After a resume: lines the first poll leaves out so that polls end where an
    /// uninterrupted run's do (every `LINES_PER_POLL` lines from the start).
    align: usize,
}

impl FileSource {
    /// Opens `path` (`-` is stdin). Fails here, before any output is opened, if it cannot.
    pub fn open(path: &Path) -> Result<FileSource, SourceError> {
        let err = |e: std::io::Error| {
            SourceError::new(
                "file",
                ErrorClass::Config,
                format!("cannot open the events file `{}`: {e}", path.display()),
            )
        };
        let input = if path == Path::new("-") {
            Input::Stream(read_lines(|| Ok(Box::new(std::io::stdin()))))
        } else if std::fs::metadata(path).map_err(err)?.is_file() {
            Input::File(
                NdjsonSource::open(path).map_err(|e| SourceError::new("file", ErrorClass::Config, e.to_string()))?,
            )
        } else {
            // Opened on the reader thread: opening a FIFO waits for a writer, and that wait
            // must not hold up a signal.
            let p = path.to_path_buf();
            Input::Stream(read_lines(move || File::open(&p).map(|f| Box::new(f) as Box<dyn Read + Send>)))
        };
        Ok(FileSource { path: path.to_path_buf(), input, counts: (0, 0), align: 0 })
    }
}

/// How many leading bytes of a file its position vouches for.
const HEAD_BYTES: u64 = 4096;

/// Where a snapshot of a file run stopped reading.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct FilePosition {
    /// Byte offset of the next line.
    offset: u64,
    /// Lines read before it.
    line: u64,
    /// xxh3 of the file's first `min(offset, 4096)` bytes.
    head: u64,
    /// Lines received, and of them naming no stream (the summary goes on counting).
    received: u64,
    unknown: u64,
}

fn head_hash(path: &Path, offset: u64) -> std::io::Result<u64> {
    let mut head = Vec::new();
    File::open(path)?.take(offset.min(HEAD_BYTES)).read_to_end(&mut head)?;
    Ok(xxhash_rust::xxh3::xxh3_64(&head))
}

/// Pushes one line into its stream, or dead-letters it if it names none.
/// `arrival`: when a line of live input (a pipe) was read; `None` for a replayed file.
fn push_line(
    ingest: &mut Ingest<'_>,
    counts: &mut (u64, u64),
    line_no: u64,
    payload: &[u8],
    arrival: Option<i64>,
) -> Result<(), SourceError> {
    counts.0 += 1;
    let named = sniff_stream(payload);
    match named.and_then(|s| ingest.plan().stream_index(s)) {
        Some(i) => match arrival {
            Some(at) => ingest.push_arrived(i, 0, payload, line_no as i64, at),
            None => ingest.push(i, payload),
        },
        None => {
            counts.1 += 1;
            let reason = match named {
                Some(s) => format!("line {line_no}: unknown stream `{s}`"),
                None => format!("line {line_no}: no `stream` field naming the stream"),
            };
            let reason = Reject::new(RejectKind::UnknownStream, reason);
            let stream = named.unwrap_or("").to_string();
            ingest.reject(&stream, reason, payload)
        }
    }
}

/// Opens an input (on the reader thread).
type Opener = dyn FnOnce() -> std::io::Result<Box<dyn Read + Send>> + Send;

/// Reads the lines of what `open` opens on a thread of its own.
fn read_lines(
    open: impl FnOnce() -> std::io::Result<Box<dyn Read + Send>> + Send + 'static,
) -> Receiver<std::io::Result<(u64, Vec<u8>)>> {
    let open: Box<Opener> = Box::new(open);
    let (tx, rx) = crossbeam_channel::bounded(LINES_PER_POLL);
    std::thread::Builder::new()
        .name("gridwatch-file-reader".into())
        .spawn(move || {
            let input = match open() {
                Ok(i) => i,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            let mut reader = BufReader::new(input);
            let mut n = 0u64;
            loop {
                let mut line = Vec::new();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) => return,
                    Ok(_) => {
                        n += 1;
                        while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                            line.pop();
                        }
                        if line.iter().all(u8::is_ascii_whitespace) {
                            continue;
                        }
                        if tx.send(Ok((n, line))).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
            }
        })
        .expect("spawning the file reader");
    rx
}

impl Source for FileSource {
    fn name(&self) -> &str {
        "file"
    }

    /// A regular file is a replay; a pipe or stdin is live input (its silence is time
    /// passing, and what it sent goes out without waiting for more).
    fn bounded(&self) -> bool {
        matches!(self.input, Input::File(_))
    }

    fn poll(&mut self, ingest: &mut Ingest<'_>, wait: Duration) -> Result<Polled, SourceError> {
        let read_err = |path: &Path, e: &dyn std::fmt::Display| {
            SourceError::new("file", ErrorClass::External, format!("cannot read `{}`: {e}", path.display()))
        };
        let FileSource { path, input, counts, align } = self;
        match input {
            Input::File(f) => {
                for _ in 0..LINES_PER_POLL - std::mem::take(align) {
                    let Some(line) = f.next_line().map_err(|e| read_err(path, &e))? else {
                        return Ok(Polled::End);
                    };
                    push_line(ingest, counts, line.line_no, line.payload, None)?;
                }
                Ok(Polled::Data)
            }
            Input::Stream(rx) => {
                let first = match rx.recv_timeout(wait) {
                    Ok(item) => item,
                    Err(RecvTimeoutError::Timeout) => return Ok(Polled::Idle),
                    Err(RecvTimeoutError::Disconnected) => return Ok(Polled::End),
                };
                let now = crate::net::wall_clock_ms();
                for item in std::iter::once(first).chain(rx.try_iter().take(LINES_PER_POLL)) {
                    let (line_no, payload) = item.map_err(|e| read_err(path, &e))?;
                    push_line(ingest, counts, line_no, &payload, Some(now))?;
                }
                Ok(Polled::Data)
            }
        }
    }

    /// A regular file's position: the byte offset and line number of the next line, with
    /// a hash of the bytes before it (up to 4 KiB) so that a resume on another file is
    /// caught. A pipe has none: what it sent cannot be read again.
    fn position(&self) -> Option<Vec<u8>> {
        let Input::File(f) = &self.input else { return None };
        let (offset, line) = f.position();
        let head = head_hash(&self.path, offset).ok()?;
        let position = FilePosition { offset, line, head, received: self.counts.0, unknown: self.counts.1 };
        serde_json::to_vec(&position).ok()
    }

    fn resume(&mut self, position: &[u8]) -> Result<(), SourceError> {
        let fail = |class, message: String| SourceError::new("file", class, message);
        let Input::File(f) = &mut self.input else {
            return Err(fail(
                ErrorClass::Config,
                format!("`{}` is not a regular file: a snapshot cannot say where to go on in it", self.path.display()),
            ));
        };
        let p: FilePosition = serde_json::from_slice(position)
            .map_err(|e| fail(ErrorClass::Config, format!("the snapshot's file position cannot be read: {e}")))?;
        let len = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        let same = len >= p.offset && head_hash(&self.path, p.offset).is_ok_and(|h| h == p.head);
        if !same {
            return Err(fail(
                ErrorClass::Config,
                format!(
                    "`{}` is not the file the snapshot was taken on (its first {} bytes differ, or it is shorter than the snapshot's position, byte {} at line {}): give that file, or move the state directory away to start over",
                    self.path.display(),
                    p.offset.min(HEAD_BYTES),
                    p.offset,
                    p.line
                ),
            ));
        }
        f.seek(p.offset, p.line).map_err(|e| fail(ErrorClass::External, e.to_string()))?;
        self.counts = (p.received, p.unknown);
        self.align = (p.received % LINES_PER_POLL as u64) as usize;
        Ok(())
    }

    fn received(&self) -> u64 {
        self.counts.0
    }

    fn unknown_stream(&self) -> u64 {
        self.counts.1
    }
}
