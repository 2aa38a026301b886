//! Offsets: marks at barriers, what was acknowledged, the commit point and its metadata,
//! the local state file.

#[allow(clippy::wildcard_imports)]
use super::*;

// ---------------------------------------------------------------------------------------
// Offsets: marks, acknowledgements, the commit point
// ---------------------------------------------------------------------------------------

/// A partition being consumed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct PartitionId {
    pub(super) topic: Arc<str>,
    pub(super) partition: i32,
}

/// What is committed for a partition: where a restart replays from, and up to where the
/// replayed input was acknowledged (with the stream's watermark then).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Committed {
    /// The committed offset: replay starts here.
    pub(super) offset: i64,
    /// Next offset at the latest acknowledged barrier: input before it was delivered.
    pub(super) acked: i64,
    /// The stream's watermark at that barrier (at most the case stage's frontier).
    pub(super) watermark: Millis,
}

impl Committed {
    const METADATA_PREFIX: &str = "gridwatch:";

    /// The commit metadata: `gridwatch:wm=W;acked=O`.
    pub(super) fn metadata(&self) -> String {
        format!("{}wm={};acked={}", Self::METADATA_PREFIX, self.watermark, self.acked)
    }

    /// Reads [`Committed::metadata`] of a commit at `offset`; `None` if it is not ours.
    /// Metadata of older versions (`gridwatch:wm=W`) has no acknowledged offset: the replay
    /// then treats everything as new input.
    pub(super) fn parse(offset: i64, metadata: &str) -> Option<Committed> {
        let fields = metadata.strip_prefix(Self::METADATA_PREFIX)?;
        let mut c = Committed { offset, acked: offset, watermark: WATERMARK_START };
        let mut has_watermark = false;
        for field in fields.split(';') {
            match field.split_once('=') {
                Some(("wm", v)) => {
                    c.watermark = v.parse().ok()?;
                    has_watermark = true;
                }
                Some(("acked", v)) => c.acked = v.parse().ok()?,
                _ => {}
            }
        }
        has_watermark.then_some(c)
    }
}

#[derive(Debug, Clone)]
pub(super) struct Mark {
    pub(super) seq: u64,
    /// Next offset to read, per partition, at the barrier.
    pub(super) next: Vec<(PartitionId, i64)>,
    /// Stream watermarks at the barrier.
    pub(super) watermarks: Vec<Millis>,
}

/// Chooses offsets that are safe to commit (see the module docs).
#[derive(Debug)]
pub(super) struct CommitTracker {
    pub(super) marks: VecDeque<Mark>,
    /// Per stream: state horizon + allowed out-of-orderness.
    pub(super) replay_span: Vec<Millis>,
    pub(super) stream_of_topic: HashMap<Arc<str>, usize>,
    pub(super) committed: BTreeMap<PartitionId, Committed>,
}

impl CommitTracker {
    /// What to commit now, given the highest acknowledged barrier: for each partition
    /// whose commit would move forward.
    pub(super) fn commit_point(&mut self, acked: u64) -> Vec<(PartitionId, Committed)> {
        let Some(latest) = self.marks.iter().rev().find(|m| m.seq <= acked).cloned() else { return Vec::new() };
        let mut out = Vec::new();
        for (pid, acked_offset) in &latest.next {
            let s = self.stream_of_topic[&pid.topic];
            let wm = latest.watermarks[s];
            if wm == WATERMARK_START {
                continue;
            }
            // The newest acknowledged mark whose input is entirely older than what the
            // rules can still need at the latest acknowledged watermark.
            let limit = wm.saturating_sub(self.replay_span[s]);
            let Some(mark) = self.marks.iter().rev().find(|m| m.seq <= acked && m.watermarks[s] < limit) else {
                continue;
            };
            let Some(&(_, offset)) = mark.next.iter().find(|(p, _)| p == pid) else { continue };
            let point = Committed { offset, acked: *acked_offset, watermark: wm };
            if self
                .committed
                .get(pid)
                .is_none_or(|c| c.offset < offset || (c.offset == offset && c.acked < point.acked))
            {
                out.push((pid.clone(), point));
            }
        }
        out
    }

    /// Drops marks before the oldest one any partition may still commit from.
    pub(super) fn trim(&mut self, acked: u64) {
        // A mark can be chosen later only if it is the newest satisfying the limit for some
        // stream; since watermarks only grow, everything older than the currently chosen
        // candidate of *every* stream is dead.
        let Some(latest) = self.marks.iter().rev().find(|m| m.seq <= acked).cloned() else { return };
        let mut oldest_alive = self.marks.len().saturating_sub(1);
        for (s, &wm) in latest.watermarks.iter().enumerate() {
            let limit = wm.saturating_sub(self.replay_span[s]);
            let idx = self
                .marks
                .iter()
                .enumerate()
                .rev()
                .find(|(_, m)| m.seq <= acked && m.watermarks[s] < limit)
                .map_or(0, |(i, _)| i);
            oldest_alive = oldest_alive.min(idx);
        }
        self.marks.drain(..oldest_alive);
    }
}

pub(super) fn sanitize(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' { c } else { '_' }).collect()
}

/// Records committed offsets with what was acknowledged (see [`KafkaOptions::state_dir`]);
/// merges with what the file holds, replaces it atomically.
pub(super) fn save_state(path: &std::path::Path, point: &[(PartitionId, Committed)]) {
    let mut state = load_state(path);
    for (pid, c) in point {
        state.insert((pid.topic.to_string(), pid.partition), *c);
    }
    let json: Vec<serde_json::Value> = state
        .iter()
        .map(|((t, p), c)| {
            serde_json::json!({"topic": t, "partition": p, "offset": c.offset, "acked": c.acked, "watermark": c.watermark})
        })
        .collect();
    let write = || -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&json)?)?;
        std::fs::rename(&tmp, path)
    };
    if let Err(e) = write() {
        tracing::warn!(path = %path.display(), error = %e, "cannot record committed positions");
    }
}

pub(super) fn load_state(path: &std::path::Path) -> BTreeMap<(String, i32), Committed> {
    let Ok(text) = std::fs::read(path) else { return BTreeMap::new() };
    let Ok(items) = serde_json::from_slice::<Vec<serde_json::Value>>(&text) else { return BTreeMap::new() };
    items
        .iter()
        .filter_map(|v| {
            let key = (v["topic"].as_str()?.to_string(), i32::try_from(v["partition"].as_i64()?).ok()?);
            let offset = v["offset"].as_i64()?;
            // Files of older versions have no `acked`: nothing counts as acknowledged.
            let acked = v["acked"].as_i64().unwrap_or(offset);
            Some((key, Committed { offset, acked, watermark: v["watermark"].as_i64()? }))
        })
        .collect()
}
