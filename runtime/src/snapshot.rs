//! Snapshots on disk: the state of a whole running topology at one checkpoint barrier.
//!
//! ## What one holds
//!
//! The engine's part ([`gridwatch_engine::EngineState`]: every rule's keys, every stream's
//! watermarks and waiting payloads), the alert and case stage's state, and the source's
//! position after the input the state covers. Restoring one and reading the input on from
//! that position continues the run as if it had not stopped: an open episode keeps its
//! alert id, a 24 h window its panes. Records the sinks received after the snapshot are
//! sent again, with the same ids.
//!
//! ## The file
//!
//! ```text
//!  "GWSNAP\r\n"  format version (u32 LE)  payload length (u64 LE)  xxh3-64 of payload (u64 LE)
//!  payload: postcard of SnapshotFile
//! ```
//!
//! Written to a temporary file in the directory, fsynced, renamed to
//! `snapshot-<seq>.gws`, and the directory fsynced: a crash leaves the previous snapshots
//! and at most a stray temporary file, never a torn snapshot under a snapshot's name. The
//! newest `keep` are kept. Loading takes the newest that reads back whole (magic, length,
//! checksum, decoding); a damaged one is skipped with a warning. One written by a newer
//! format version is an error: this gridwatch cannot read it and must not overwrite it.
//!
//! ## The upgrade rule
//!
//! [`FORMAT_VERSION`] changes whenever the layout of anything in the payload changes (the
//! operators' per-key records included). A gridwatch reads snapshots of its own format
//! version only; an older one is reported and ignored (the run starts without state, as
//! before snapshots existed), a newer one stops the run. Changing a rule, or the
//! definition of a stream it reads, keeps the snapshot readable: that rule starts with no
//! state, the others keep theirs.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use gridwatch_engine::EngineState;
use serde::{Deserialize, Serialize};

use crate::error::{ErrorClass, SnapshotError};

/// The layout version of snapshot files this gridwatch writes and reads.
pub const FORMAT_VERSION: u32 = 1;

const MAGIC: &[u8; 8] = b"GWSNAP\r\n";
const HEADER: usize = 8 + 4 + 8 + 8;

/// What a snapshot says about itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// The checkpoint barrier it was taken at.
    pub seq: u64,
    /// When it was written (ms since the epoch).
    pub written_at_ms: i64,
    /// The gridwatch that wrote it.
    pub gridwatch_version: String,
    /// Its partition workers (a restore may use another count).
    pub workers: usize,
    /// The source's kind (`file`, `generator`…).
    pub source: String,
    /// The source's position, in the source's own encoding.
    pub position: Vec<u8>,
}

/// One snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotFile {
    /// About it.
    pub meta: SnapshotMeta,
    /// The engine's part.
    pub engine: EngineState,
    /// The alert and case stage's part, if the run had one.
    pub stage: Option<Vec<u8>>,
}

/// A directory of snapshots.
#[derive(Debug, Clone)]
pub struct SnapshotDir {
    dir: PathBuf,
    keep: usize,
}

/// A snapshot found in a directory, by [`SnapshotDir::list`].
#[derive(Debug)]
pub struct Listed {
    /// Its file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// What it holds, or why it cannot be read.
    pub content: Result<SnapshotFile, String>,
}

fn io_error(what: String, e: std::io::Error) -> SnapshotError {
    SnapshotError::new(ErrorClass::External, format!("{what}: {e}"))
}

impl SnapshotDir {
    /// The snapshots in `dir` (created if missing), keeping the newest `keep` (at least 1).
    pub fn create(dir: &Path, keep: usize) -> Result<SnapshotDir, SnapshotError> {
        fs::create_dir_all(dir).map_err(|e| io_error(format!("creating the state directory {}", dir.display()), e))?;
        // A crash during a write leaves its temporary file: never a snapshot, only litter.
        for e in fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(".snapshot-") && name.ends_with(".tmp") {
                let _ = fs::remove_file(e.path());
            }
        }
        Ok(SnapshotDir { dir: dir.to_path_buf(), keep: keep.max(1) })
    }

    /// The snapshots in an existing `dir`, for reading (`state inspect`): never creates it.
    pub fn existing(dir: &Path) -> Result<SnapshotDir, SnapshotError> {
        if !dir.is_dir() {
            return Err(SnapshotError::new(
                ErrorClass::Config,
                format!("{} is not a directory of snapshots (check the path)", dir.display()),
            ));
        }
        Ok(SnapshotDir { dir: dir.to_path_buf(), keep: usize::MAX })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn file_of(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("snapshot-{seq:016}.gws"))
    }

    /// Snapshot files by sequence, newest first.
    fn files(&self) -> Result<Vec<(u64, PathBuf)>, SnapshotError> {
        let entries = fs::read_dir(&self.dir)
            .map_err(|e| io_error(format!("reading the state directory {}", self.dir.display()), e))?;
        let mut files: Vec<(u64, PathBuf)> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let seq = name.strip_prefix("snapshot-")?.strip_suffix(".gws")?.parse().ok()?;
                Some((seq, e.path()))
            })
            .collect();
        files.sort_by_key(|f| std::cmp::Reverse(f.0));
        Ok(files)
    }

    /// Writes `snapshot` (see the module docs) and removes all but the newest `keep`.
    /// Returns its path and size.
    pub fn write(&self, snapshot: &SnapshotFile) -> Result<(PathBuf, u64), SnapshotError> {
        let payload = postcard::to_stdvec(snapshot)
            .map_err(|e| SnapshotError::new(ErrorClass::Internal, format!("encoding a snapshot: {e}")))?;
        let mut bytes = Vec::with_capacity(HEADER + payload.len());
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(&payload).to_le_bytes());
        bytes.extend_from_slice(&payload);
        let path = self.file_of(snapshot.meta.seq);
        let tmp = self.dir.join(format!(".snapshot-{:016}.tmp", snapshot.meta.seq));
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            let half = bytes.len() / 2;
            f.write_all(&bytes[..half])?;
            crate::crash::point("snapshot-write");
            f.write_all(&bytes[half..])?;
            f.sync_all()?;
            drop(f);
            fs::rename(&tmp, &path)?;
            // The rename is durable once the directory is.
            File::open(&self.dir)?.sync_all()?;
            crate::crash::point("snapshot-written");
            Ok(())
        };
        write().map_err(|e| io_error(format!("writing snapshot {}", path.display()), e))?;
        for (_, old) in self.files()?.into_iter().skip(self.keep) {
            if let Err(e) = fs::remove_file(&old) {
                tracing::warn!(path = %old.display(), error = %e, "could not remove an old snapshot");
            }
        }
        Ok((path, bytes.len() as u64))
    }

    /// The newest snapshot that reads back whole, if any; damaged ones are skipped with a
    /// warning. A snapshot of a newer format version is an error.
    pub fn load_newest(&self) -> Result<Option<(PathBuf, SnapshotFile)>, SnapshotError> {
        for (_, path) in self.files()? {
            match read(&path) {
                Ok(s) => return Ok(Some((path, s))),
                Err(Unreadable::Newer(v)) => {
                    return Err(SnapshotError::new(
                        ErrorClass::Config,
                        format!(
                            "snapshot {} was written by a newer gridwatch (snapshot format {v}; this one reads format {FORMAT_VERSION}): run that version, or move the state directory away to start without state",
                            path.display()
                        ),
                    ));
                }
                Err(Unreadable::Damaged(why)) => {
                    tracing::warn!(path = %path.display(), "snapshot skipped: {why}; trying the one before");
                    eprintln!("warning: snapshot {} skipped: {why}; trying the one before", path.display());
                }
            }
        }
        Ok(None)
    }

    /// Every snapshot file, newest first, read or with the reason it cannot be.
    pub fn list(&self) -> Result<Vec<Listed>, SnapshotError> {
        Ok(self
            .files()?
            .into_iter()
            .map(|(_, path)| {
                let bytes = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                let content = read(&path).map_err(|e| match e {
                    Unreadable::Newer(v) => format!("written by a newer gridwatch (format {v})"),
                    Unreadable::Damaged(why) => why,
                });
                Listed { path, bytes, content }
            })
            .collect())
    }
}

enum Unreadable {
    Newer(u32),
    Damaged(String),
}

fn read(path: &Path) -> Result<SnapshotFile, Unreadable> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| Unreadable::Damaged(format!("cannot be read: {e}")))?;
    if bytes.len() < HEADER || &bytes[..8] != MAGIC {
        return Err(Unreadable::Damaged("not a gridwatch snapshot (bad header)".into()));
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version > FORMAT_VERSION {
        return Err(Unreadable::Newer(version));
    }
    if version < FORMAT_VERSION {
        return Err(Unreadable::Damaged(format!(
            "written in the older snapshot format {version} (this gridwatch reads {FORMAT_VERSION})"
        )));
    }
    let len = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes")) as usize;
    let sum = u64::from_le_bytes(bytes[20..28].try_into().expect("8 bytes"));
    let payload = &bytes[HEADER..];
    if payload.len() != len {
        return Err(Unreadable::Damaged(format!("truncated ({} of {len} payload bytes)", payload.len())));
    }
    if xxhash_rust::xxh3::xxh3_64(payload) != sum {
        return Err(Unreadable::Damaged("checksum mismatch".into()));
    }
    postcard::from_bytes(payload).map_err(|e| Unreadable::Damaged(format!("cannot be decoded: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(seq: u64) -> SnapshotFile {
        SnapshotFile {
            meta: SnapshotMeta {
                seq,
                written_at_ms: 1,
                gridwatch_version: "test".into(),
                workers: 2,
                source: "file".into(),
                position: vec![1, 2, 3],
            },
            engine: EngineState::default(),
            stage: Some(b"{}".to_vec()),
        }
    }

    #[test]
    fn the_newest_whole_snapshot_is_loaded_and_only_keep_are_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = SnapshotDir::create(tmp.path(), 2).unwrap();
        assert!(dir.load_newest().unwrap().is_none());
        for seq in [3, 7, 12] {
            dir.write(&snap(seq)).unwrap();
        }
        let names: Vec<u64> = dir.files().unwrap().into_iter().map(|(s, _)| s).collect();
        assert_eq!(names, vec![12, 7], "the oldest was removed");
        let (path, s) = dir.load_newest().unwrap().unwrap();
        assert_eq!(s.meta.seq, 12);
        assert!(path.ends_with("snapshot-0000000000000012.gws"));
    }

    #[test]
    fn a_truncated_or_corrupt_snapshot_falls_back_to_the_one_before() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = SnapshotDir::create(tmp.path(), 5).unwrap();
        let (first, _) = dir.write(&snap(1)).unwrap();
        let (second, _) = dir.write(&snap(2)).unwrap();
        let (third, len) = dir.write(&snap(3)).unwrap();
        // Truncated: a crash can not do this (rename), a disk or a copy can.
        let f = fs::OpenOptions::new().write(true).open(&third).unwrap();
        f.set_len(len - 3).unwrap();
        // Corrupt: one flipped byte in the payload.
        let mut bytes = fs::read(&second).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(&second, bytes).unwrap();
        let (path, s) = dir.load_newest().unwrap().unwrap();
        assert_eq!((path, s.meta.seq), (first, 1));
        let listed = dir.list().unwrap();
        assert_eq!(listed.len(), 3);
        assert!(
            listed[0].content.as_ref().unwrap_err().contains("truncated"),
            "{:?}",
            listed[0].content.as_ref().err()
        );
        assert_eq!(listed[1].content.as_ref().unwrap_err(), "checksum mismatch");
        assert!(listed[2].content.is_ok());
    }

    #[test]
    fn a_snapshot_of_a_newer_format_is_an_error_not_a_fallback() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = SnapshotDir::create(tmp.path(), 5).unwrap();
        dir.write(&snap(1)).unwrap();
        let (newer, _) = dir.write(&snap(2)).unwrap();
        let mut bytes = fs::read(&newer).unwrap();
        bytes[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
        fs::write(&newer, bytes).unwrap();
        let err = dir.load_newest().unwrap_err().to_string();
        assert!(err.contains("newer gridwatch") && err.contains("snapshot-0000000000000002.gws"), "{err}");
    }

    #[test]
    fn reading_a_missing_directory_does_not_create_it() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("typo");
        assert!(SnapshotDir::existing(&missing).is_err());
        assert!(!missing.exists());
    }
}
