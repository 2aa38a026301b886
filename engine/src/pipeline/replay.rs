//! Restore mode: replaying input acknowledged before a restart (Kafka), with the gate that
//! keeps replayed and new input apart.

#[allow(clippy::wildcard_imports)]
use super::*;

/// A stream replaying input acknowledged before a restart.
///
/// What was delivered before is known by position: everything the rules raised from input
/// before the acknowledged offset of each split. The watermark cannot tell: at a given
/// offset it may be lower in the replay than it was before the restart (a stream's
/// watermark waits for all its splits, and one may lag in the replay; or the clock had
/// advanced an idle stream's watermark before), so alerts of new input could look old.
/// So the gate keeps the two apart: new input of any split is held back until every split
/// has replayed up to its acknowledged offset; chunks cut before that are flagged as
/// replayed, and only their alerts may be suppressed.
pub(super) struct ReplayGate {
    /// Per split: the offset its unacknowledged input starts at, until the split reaches it.
    pub(super) pending: Vec<Option<i64>>,
    /// Input of splits past their acknowledged offset (or with none), in arrival order.
    pub(super) held: RawChunk,
    /// When a pending split last advanced (or the gate opened).
    pub(super) progress: Instant,
}

impl ReplayGate {
    /// Held input beyond which the gate opens anyway (a split that never reaches its
    /// offset, e.g. its records were deleted): opening early only sends duplicates.
    pub(super) const MAX_HELD_BYTES: usize = 64 << 20;
    /// How long pending splits may make no progress before the gate opens anyway.
    pub(super) const STALL: std::time::Duration = std::time::Duration::from_secs(5);

    pub(super) fn done(&self) -> bool {
        self.pending.iter().all(Option::is_none)
    }
}

impl Pipeline {
    /// Restore mode: declares that the input of `split` of `stream` before offset `acked`
    /// was processed, and everything it raised delivered, before a restart, and that it is
    /// now being replayed (from an earlier offset) to rebuild rule state. Until every
    /// split so declared has been read up to its offset, the stream's alerts with an event
    /// time before its [`PipelineOptions::replay_until`] are dropped, and input past the
    /// acknowledged offsets (or of undeclared splits) is held back, so that it is evaluated
    /// as new input. Call after [`Pipeline::declare_splits`], before pushing.
    ///
    /// The replay also ends when the source says so ([`Pipeline::end_replay`]: the split
    /// is at its end), when the pending splits make no progress for 5 s, or when 64 MiB of
    /// input is held; ending early only means some alerts are delivered twice.
    pub fn replay_split(&mut self, stream: usize, split: usize, acked: i64) {
        let gate = self.streams[stream].replay.get_or_insert_with(|| ReplayGate {
            pending: Vec::new(),
            held: RawChunk::new(stream),
            progress: self.options.clock.now(),
        });
        if gate.pending.len() <= split {
            gate.pending.resize(split + 1, None);
        }
        gate.pending[split] = Some(acked);
    }

    /// Whether some stream still replays acknowledged input (see [`Pipeline::replay_split`]).
    /// Input pushed meanwhile may be held back, so a source must not treat it as processed
    /// (e.g. commit offsets past it).
    pub fn replaying(&self) -> bool {
        self.streams.iter().any(|s| s.replay.is_some())
    }

    /// Ends the replay of `stream` (see [`Pipeline::replay_split`]): what was replayed is
    /// cut, and the held-back input is pushed as new input.
    pub fn end_replay(&mut self, stream: usize) -> Result<()> {
        if self.streams[stream].replay.is_none() {
            return Ok(());
        }
        // The pending chunk holds only replayed input: cut it while the gate still flags it.
        self.cut(stream)?;
        let Some(gate) = self.streams[stream].replay.take() else { return Ok(()) };
        let held = &gate.held;
        tracing::debug!(stream = %self.streams[stream].def.name, held = held.len(), "replay of acknowledged input done");
        for i in 0..held.len() {
            let arrival = (held.arrivals[i] != NO_ARRIVAL).then_some(held.arrivals[i]);
            let topic = held.topic_of(i).cloned();
            self.push_from(stream, held.splits[i] as usize, held.payload(i), held.offsets[i], arrival, topic)?;
        }
        Ok(())
    }

    pub(super) fn end_all_replays(&mut self) -> Result<()> {
        for i in 0..self.streams.len() {
            self.end_replay(i)?;
        }
        Ok(())
    }
}
