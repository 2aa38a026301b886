//! Assembling snapshots on the output thread and writing them on their own thread.
//!
//! A checkpoint barrier's parts arrive on the output channel: the pipeline's
//! ([`Output::Checkpoint`](gridwatch_engine::Output::Checkpoint)) first, then one
//! [`Output::State`](gridwatch_engine::Output::State) per worker. When the barrier
//! completes, the case stage has taken everything before it and adds its state. The
//! snapshot is written only once the barrier is acknowledged — every sink delivered what
//! came before it — since a restart from it does not send those records again. Writing
//! happens on a thread of its own so that sinks keep flowing meanwhile; while it writes
//! one, the newest acknowledged snapshot waits (older ones are dropped): a slow disk makes
//! snapshots rarer, never the engine slower.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Sender, bounded};
use gridwatch_engine::state::KeyStates;
use gridwatch_engine::{CheckpointStart, EngineState, RuleState};

use crate::metrics::RunMetrics;
use crate::snapshot::{SnapshotDir, SnapshotFile, SnapshotMeta};

struct Assembly {
    start: Box<CheckpointStart>,
    rules: Vec<KeyStates>,
    /// Workers whose state arrived.
    got: usize,
}

/// Snapshots on their way from the output channel to disk.
pub(crate) struct Snapshots {
    source: String,
    metrics: Arc<RunMetrics>,
    assembling: BTreeMap<u64, Assembly>,
    /// Complete, waiting for their barrier to be acknowledged.
    ready: VecDeque<SnapshotFile>,
    writer: Option<(Sender<SnapshotFile>, JoinHandle<()>)>,
}

impl Snapshots {
    pub(crate) fn start(dir: SnapshotDir, source: String, metrics: Arc<RunMetrics>) -> Snapshots {
        let (tx, rx) = bounded::<SnapshotFile>(1);
        let counters = metrics.clone();
        let handle = std::thread::Builder::new()
            .name("gridwatch-snapshot".into())
            .spawn(move || {
                let metrics = counters;
                for snapshot in rx {
                    let started = Instant::now();
                    match dir.write(&snapshot) {
                        Ok((path, bytes)) => {
                            metrics.snapshots_written.fetch_add(1, Ordering::Relaxed);
                            metrics.snapshot_bytes.store(bytes, Ordering::Relaxed);
                            tracing::info!(path = %path.display(), bytes, took = ?started.elapsed(), seq = snapshot.meta.seq, "snapshot written");
                        }
                        Err(e) => {
                            // The run goes on: it only loses the ability to resume from
                            // here (the previous snapshot stays).
                            metrics.snapshot_failures.fetch_add(1, Ordering::Relaxed);
                            tracing::error!(error = %e, "snapshot not written; a restart resumes from the previous one");
                        }
                    }
                }
            })
            .expect("spawning the snapshot thread");
        Snapshots { source, metrics, assembling: BTreeMap::new(), ready: VecDeque::new(), writer: Some((tx, handle)) }
    }

    pub(crate) fn begin(&mut self, start: Box<CheckpointStart>) {
        let rules = vec![KeyStates::default(); start.rules.len()];
        self.assembling.insert(start.seq, Assembly { start, rules, got: 0 });
    }

    pub(crate) fn worker_state(&mut self, seq: u64, rules: Vec<KeyStates>) {
        let Some(a) = self.assembling.get_mut(&seq) else { return };
        a.got += 1;
        for (into, from) in a.rules.iter_mut().zip(rules) {
            into.keys.extend(from.keys);
        }
    }

    /// Barrier `seq` passed every worker; `stage` is the case stage's state at it.
    pub(crate) fn complete(&mut self, seq: u64, stage: Option<Vec<u8>>) {
        let Some(a) = self.assembling.remove(&seq) else { return };
        if a.got < a.start.workers {
            // A worker could not write its state (its error went to the rule errors): a
            // snapshot without its keys would restore a run that lost them.
            self.metrics.snapshot_failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(seq, "snapshot incomplete ({} of {} workers' state): not written", a.got, a.start.workers);
            return;
        }
        let CheckpointStart { seq, workers, rules, streams, position } = *a.start;
        let rules = rules
            .into_iter()
            .zip(a.rules)
            .map(|((id, fingerprint), mut keys)| {
                // Workers finish in any order: sorted, the same state gives the same file.
                keys.keys.sort_unstable_by(|x, y| x.0.cmp(&y.0));
                RuleState { id, fingerprint, keys }
            })
            .collect();
        // While the sinks do not acknowledge (a webhook down), keep the oldest waiting — the
        // next to be written — and the newest: the ones in between would be replaced at
        // once, and a long outage must not hold one snapshot per interval in memory.
        while self.ready.len() >= 2 {
            self.ready.remove(1);
        }
        self.ready.push_back(SnapshotFile {
            meta: SnapshotMeta {
                seq,
                written_at_ms: crate::wall_clock_ms(),
                gridwatch_version: env!("CARGO_PKG_VERSION").to_string(),
                workers,
                source: self.source.clone(),
                position,
            },
            engine: EngineState { rules, streams },
            stage,
        });
    }

    /// Takes the snapshots up to barrier `acked` off the queue; returns the newest of them.
    fn newest_acked(&mut self, acked: u64) -> Option<SnapshotFile> {
        let mut newest = None;
        while self.ready.front().is_some_and(|s| s.meta.seq <= acked) {
            newest = self.ready.pop_front();
        }
        newest
    }

    /// Every sink delivered what came before barrier `acked`: the snapshots up to it go to
    /// disk (only the newest of them: an older one would be replaced at once).
    pub(crate) fn delivered(&mut self, acked: u64) {
        let newest = self.newest_acked(acked);
        let (Some(s), Some((tx, _))) = (newest, self.writer.as_ref()) else { return };
        // The writer is busy with the previous one: this one waits (a newer one may
        // replace it) rather than hold up the sinks.
        if let Err(crossbeam_channel::TrySendError::Full(s)) = tx.try_send(s) {
            self.ready.push_front(s);
        }
    }

    /// Writes the newest acknowledged snapshot still waiting, and waits for the writer.
    pub(crate) fn finish(&mut self, acked: u64) {
        let newest = self.newest_acked(acked);
        if let Some((tx, handle)) = self.writer.take() {
            if let Some(s) = newest {
                let _ = tx.send(s);
            }
            drop(tx);
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(seq: u64) -> Box<CheckpointStart> {
        Box::new(CheckpointStart {
            seq,
            workers: 2,
            rules: vec![("r".into(), 7)],
            streams: Vec::new(),
            position: b"{}".to_vec(),
        })
    }

    fn keys(names: &[&str]) -> Vec<KeyStates> {
        vec![KeyStates { keys: names.iter().map(|k| (k.to_string(), vec![1])).collect() }]
    }

    #[test]
    fn a_snapshot_is_written_once_acknowledged_with_every_workers_keys_and_never_incomplete() {
        let tmp = tempfile::tempdir().unwrap();
        let metrics = Arc::new(RunMetrics::default());
        let mut s = Snapshots::start(SnapshotDir::create(tmp.path(), 5).unwrap(), "file".into(), metrics.clone());
        // Barrier 1: both workers' state, acknowledged.
        s.begin(start(1));
        s.worker_state(1, keys(&["b", "c"]));
        s.worker_state(1, keys(&["a"]));
        s.complete(1, None);
        // Barrier 2: one worker's state is missing (its snapshot failed).
        s.begin(start(2));
        s.worker_state(2, keys(&["a"]));
        s.complete(2, None);
        // Barrier 3: complete, but never acknowledged.
        s.begin(start(3));
        s.worker_state(3, keys(&["a"]));
        s.worker_state(3, keys(&["b"]));
        s.complete(3, None);
        s.delivered(2);
        s.finish(2);
        let dir = SnapshotDir::existing(tmp.path()).unwrap();
        let listed = dir.list().unwrap();
        assert_eq!(listed.len(), 1, "only barrier 1: 2 was incomplete, 3 not acknowledged");
        let snap = listed[0].content.as_ref().unwrap();
        assert_eq!(snap.meta.seq, 1);
        let ks: Vec<&str> = snap.engine.rules[0].keys.keys.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(ks, ["a", "b", "c"], "both workers' keys, sorted");
        assert_eq!(snap.engine.rules[0].fingerprint, 7);
        assert_eq!(metrics.snapshot_failures.load(Ordering::Relaxed), 1);
        assert_eq!(metrics.snapshots_written.load(Ordering::Relaxed), 1);
    }
}
