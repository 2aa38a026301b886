//! Swapping the rules of a running pipeline (hot reload).
//!
//! A reload is a barrier at which the pipeline hands over to a new one built from the new
//! plan. Everything pushed before it is flushed and sequenced; each worker resolves the
//! open episodes of the rules that changed or went away (a `Resolved` alert with
//! `values.reason` = `rule_changed` / `rule_removed`, dated at the stream's watermark),
//! hands over the state of every rule and stops. The new pipeline starts from that state
//! as from a snapshot ([`super::snapshot`]): a rule whose compiled form is unchanged keeps
//! every key's state; a changed or new rule starts empty. The streams' watermarks and the
//! payloads waiting in the sequencer carry over, so no event is lost or evaluated twice:
//! the source is not read while the swap runs.

use crossbeam_channel::bounded;

#[allow(clippy::wildcard_imports)]
use super::*;
use crate::state::KeyStates;
use snapshot::rule_fingerprint;

/// What a reload changed.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct ReloadChanges {
    /// Rules whose compiled form is unchanged: they kept their state.
    pub kept: Vec<String>,
    /// Rules whose definition changed: their episodes were resolved, they start empty.
    pub changed: Vec<String>,
    /// Rules that are gone: their episodes were resolved.
    pub removed: Vec<String>,
    /// New rules.
    pub added: Vec<String>,
}

/// Per old rule: close its episodes with this reason at this time, or keep it.
pub(super) type Closing = Arc<[Option<(&'static str, Millis)>]>;

impl Pipeline {
    /// Whether [`Pipeline::reload`] can swap in `plan`: it declares the same streams, in
    /// the same order.
    pub fn can_reload(&self, plan: &Plan) -> Result<()> {
        // Any change to a stream (fields, time unit, out-of-orderness…) needs a restart:
        // the source routes by index and the watermarks were built under the old rules.
        let same = plan.streams.len() == self.plan.streams.len()
            && plan.streams.iter().zip(&self.plan.streams).all(|(a, b)| format!("{a:?}") == format!("{b:?}"));
        if same {
            Ok(())
        } else {
            Err(EngineError::Reload(
                "the streams changed (a stream added, removed, reordered or redefined): a reload swaps rules (and their zones) only; restart to change streams".into(),
            ))
        }
    }

    /// Swaps the rules for `plan`'s at a barrier (see the module docs). The new plan must
    /// declare the same streams, in the same order (the source routes by their index).
    pub fn reload(mut self, plan: Arc<Plan>) -> Result<(Pipeline, ReloadChanges)> {
        self.can_reload(&plan)?;
        self.flush()?;
        self.release_all_dead()?;
        let old = self.plan.clone();
        let old_fingerprints = self.fingerprints.clone();
        let mut changes = ReloadChanges::default();
        let closing: Closing = (0..old.rules.len())
            .map(|r| {
                let id = &*old.rules[r].meta.id;
                let reason = match plan.rules.iter().position(|n| *n.meta.id == *id) {
                    Some(j) if rule_fingerprint(&plan, j) == old_fingerprints[r] => {
                        changes.kept.push(id.to_string());
                        return None;
                    }
                    Some(_) => {
                        changes.changed.push(id.to_string());
                        "rule_changed"
                    }
                    None => {
                        changes.removed.push(id.to_string());
                        "rule_removed"
                    }
                };
                let at = self.streams[old.rules[r].stream].tracker.watermark();
                (at != WATERMARK_START).then_some((reason, at))
            })
            .collect();
        changes.added = plan
            .rules
            .iter()
            .filter(|n| !old.rules.iter().any(|o| o.meta.id == n.meta.id))
            .map(|n| n.meta.id.to_string())
            .collect();
        let streams: Vec<StreamState> = self.streams.iter().map(snapshot::stream_state).collect();
        let (reply_tx, reply_rx) = bounded::<(usize, Vec<KeyStates>)>(self.workers.len());
        self.broadcast(|| WorkerMsg::Retire { closing: closing.clone(), reply: reply_tx.clone() })?;
        drop(reply_tx);
        let mut rules: Vec<KeyStates> = vec![KeyStates::default(); old.rules.len()];
        for (_, states) in reply_rx.iter() {
            for (into, from) in rules.iter_mut().zip(states) {
                into.keys.extend(from.keys);
            }
        }
        let (options, out) = (self.options.clone(), self.out.clone());
        // Processing-time state (when a stream was last heard, since when it is awaited)
        // is not in a snapshot, but a reload must not reset it: a silent feed's idle
        // timeout goes on counting, an unheard stream's wait since the start too.
        let clocks: Vec<_> =
            self.streams.iter().map(|s| (s.last_arrival, s.idle_base, s.awaited_since, s.last_split_check)).collect();
        let started = self.started;
        self.join()?;
        let state = EngineState {
            rules: rules
                .into_iter()
                .enumerate()
                .map(|(r, keys)| RuleState {
                    id: old.rules[r].meta.id.to_string(),
                    fingerprint: old_fingerprints[r],
                    keys,
                })
                .collect(),
            streams,
        };
        let mut pipeline = Pipeline::restored(plan, options, out, &state)?;
        pipeline.started = started;
        for (s, (last_arrival, idle_base, awaited_since, last_split_check)) in pipeline.streams.iter_mut().zip(clocks) {
            s.last_arrival = last_arrival;
            s.idle_base = idle_base;
            s.awaited_since = awaited_since;
            s.last_split_check = last_split_check;
        }
        Ok((pipeline, changes))
    }
}
