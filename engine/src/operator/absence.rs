//! Absence: a key that has been silent for `absent_for` in event time.
//!
//! Each key remembers the newest event time it sent and holds at most one live timer at
//! `last_seen + absent_for`. Events only move `last_seen`; when the timer pops and the key
//! has been heard from since, the timer is re-armed at the new deadline instead (lazy
//! rescheduling keeps the heap at about one entry per key, not one per event). Because
//! timers are driven by the stream's watermark, a key that goes silent while other keys keep
//! reporting fires on time; a stream that goes silent altogether fires once its idle
//! timeout lets the watermark advance with processing time. The next event from the key
//! resolves the alert.

use std::sync::Arc;

use arrow::array::ArrayRef;
use serde::{Deserialize, Serialize};

use super::{BatchInput, Operator, Timers, for_each_selected, key_columns, selected_rows};
use crate::alert::{Alert, AlertParts, AlertState};
use crate::error::{EngineError, Result};
use crate::keys::{KeyTable, row_to_json, write_key};
use crate::plan::{RuleKind, RulePlan};
use crate::schema::StreamDef;
use crate::state::KeyStates;
use crate::time::{Millis, format_timestamp};

#[derive(Debug)]
struct KeyState {
    last_seen: Millis,
    /// Due time of the live timer, if any.
    armed: Option<Millis>,
    firing: bool,
    episode_start: Millis,
    notifications: u32,
}

/// One key's state in a snapshot ([`crate::state`]): its [`KeyState`] field for field.
#[derive(Debug, Serialize, Deserialize)]
struct AbsenceRecord {
    /// Newest event time the key sent (the silence is measured from it).
    last_seen: Millis,
    /// Due time of the key's live timer (first deadline or re-notification), scheduled
    /// again on restore; the heap's stale entries are not needed.
    armed: Option<Millis>,
    /// The key is silent and has fired; its next event resolves.
    firing: bool,
    /// When the silence episode fired (its alert id).
    episode_start: Millis,
    /// Notifications of the episode so far.
    notifications: u32,
}

/// Operator for absence rules.
pub struct AbsenceOperator {
    rule: Arc<RulePlan>,
    stream: Arc<str>,
    absent_for: Millis,
    keys: KeyTable<KeyState>,
    timers: Timers,
    key_buf: String,
}

impl AbsenceOperator {
    /// A new operator with no state.
    pub fn new(rule: Arc<RulePlan>, stream: &StreamDef) -> Self {
        let absent_for = match &rule.kind {
            RuleKind::Absence(p) => p.absent_for_ms,
            _ => unreachable!("AbsenceOperator is only built for absence rules"),
        };
        AbsenceOperator {
            rule,
            stream: stream.name.as_str().into(),
            absent_for,
            keys: KeyTable::default(),
            timers: Timers::default(),
            key_buf: String::new(),
        }
    }

    fn fire_timers(&mut self, wm: Millis, out: &mut Vec<Alert>) {
        while let Some((due, slot)) = self.timers.pop_due(wm) {
            self.fire(slot, due, out);
        }
    }

    /// Fires the timer `due` of `slot`, if it is still the armed one: the key has been
    /// silent since `due - absent_for` (or since the last notification).
    fn fire(&mut self, slot: u32, due: Millis, out: &mut Vec<Alert>) {
        let renotify = self.rule.meta.renotify_ms;
        let (key, st) = self.keys.entry_mut(slot);
        if st.armed != Some(due) {
            return;
        }
        st.armed = None;
        if st.firing {
            // A re-notification timer of a still-silent key.
            st.notifications += 1;
        } else {
            let deadline = st.last_seen + self.absent_for;
            if deadline > due {
                st.armed = Some(deadline);
                self.timers.schedule(deadline, slot);
                return;
            }
            st.firing = true;
            st.episode_start = due;
            st.notifications = 1;
        }
        let mut values = serde_json::Map::new();
        values.insert("last_seen".into(), format_timestamp(st.last_seen).into());
        values.insert("silent_ms".into(), (due - st.last_seen).into());
        let parts = AlertParts {
            key: key.to_string(),
            state: AlertState::Firing,
            event_time: due,
            episode_start: st.episode_start,
            notification: st.notifications,
            values,
            evidence: Vec::new(),
        };
        if let Some(every) = renotify.filter(|&every| every > 0) {
            st.armed = Some(due + every);
            self.timers.schedule(due + every, slot);
        }
        out.push(Alert::new(&self.rule.meta, &self.stream, parts));
    }

    /// The resolved alert of `slot`'s silence episode, ended at `t` (by a row of the key,
    /// its `evidence`, or by a reload).
    fn resolved(&self, slot: u32, t: Millis, evidence: Vec<serde_json::Value>) -> Alert {
        let (key, st) = self.keys.entry(slot);
        let mut values = serde_json::Map::new();
        values.insert("silent_ms".into(), (t - st.episode_start + self.absent_for).into());
        let parts = AlertParts {
            key: key.to_string(),
            state: AlertState::Resolved,
            event_time: t,
            episode_start: st.episode_start,
            notification: st.notifications,
            values,
            evidence,
        };
        Alert::new(&self.rule.meta, &self.stream, parts)
    }
}

impl Operator for AbsenceOperator {
    fn process_rows(&mut self, input: &BatchInput<'_>, out: &mut Vec<Alert>) -> Result<()> {
        let batch = input.batch;
        let mask = selected_rows(&self.rule, input)?;
        let key_cols: Vec<ArrayRef> = key_columns(&self.rule, batch);
        let absent_for = self.absent_for;
        for_each_selected(batch.num_rows(), mask.as_ref(), |i| {
            let wm = input.watermarks[i];
            if self.timers.any_due(wm) {
                self.fire_timers(wm, out);
            }
            let mut key = std::mem::take(&mut self.key_buf);
            write_key(&key_cols, i, &mut key);
            let t = input.times[i];
            let slot = self.keys.slot(&key, || KeyState {
                last_seen: t,
                armed: None,
                firing: false,
                episode_start: 0,
                notifications: 0,
            });
            // A row of the key at `t`, once the key's own split is past the deadline (no
            // earlier row of the key can still come), shows it was silent until then: fire
            // what the stream's watermark would have, whether or not it got there (it may
            // lag behind another split), so the outcome does not depend on it.
            let seen_until = t.min(input.split_watermarks[i]);
            while let Some(due) = self.keys.state_mut(slot).armed.filter(|&due| due <= seen_until) {
                self.fire(slot, due, out);
            }
            let st = self.keys.state_mut(slot);
            if t > st.last_seen {
                st.last_seen = t;
            }
            if st.firing {
                st.firing = false;
                st.armed = None;
                out.push(self.resolved(slot, t, vec![row_to_json(batch, i)]));
            }
            let st = self.keys.state_mut(slot);
            if st.armed.is_none() {
                let due = st.last_seen + absent_for;
                st.armed = Some(due);
                self.timers.schedule(due, slot);
            }
            self.key_buf = key;
            Ok(())
        })
    }

    fn advance(&mut self, wm: Millis, out: &mut Vec<Alert>) -> Result<()> {
        self.fire_timers(wm, out);
        Ok(())
    }

    fn key_count(&self) -> usize {
        self.keys.len()
    }

    fn snapshot(&self, out: &mut KeyStates) -> Result<()> {
        // Every key has state: its last event time.
        for slot in 0..self.keys.len() as u32 {
            let (key, st) = self.keys.entry(slot);
            let record = AbsenceRecord {
                last_seen: st.last_seen,
                armed: st.armed,
                firing: st.firing,
                episode_start: st.episode_start,
                notifications: st.notifications,
            };
            out.push(key, &record)?;
        }
        Ok(())
    }

    fn close_episodes(&mut self, at: Millis, reason: &str, out: &mut Vec<Alert>) -> Result<()> {
        let every = self.rule.meta.renotify_ms.filter(|&every| every > 0);
        for slot in 0..self.keys.len() as u32 {
            let st = self.keys.get(slot);
            if !st.firing {
                continue; // a deadline not reached yet never fired
            }
            // Never before the last notification: the n-th is `every` after the one before,
            // and a key's own row may have raised one ahead of the stream's watermark.
            let last = st.episode_start + every.map_or(0, |e| e * Millis::from(st.notifications.saturating_sub(1)));
            // No row ends it: no evidence, as the silence's firing alerts have none.
            let mut alert = self.resolved(slot, at.max(last), Vec::new());
            alert.values.insert("reason".into(), reason.into());
            out.push(alert);
            let st = self.keys.state_mut(slot);
            st.firing = false;
            st.armed = None;
        }
        Ok(())
    }

    fn restore(&mut self, key: &str, record: &[u8]) -> Result<()> {
        let r: AbsenceRecord = crate::state::decode(&self.rule.meta.id, key, record)?;
        let known = self.keys.len();
        let state = KeyState {
            last_seen: r.last_seen,
            armed: r.armed,
            firing: r.firing,
            episode_start: r.episode_start,
            notifications: r.notifications,
        };
        let slot = self.keys.slot(key, || state);
        if self.keys.len() == known {
            // A second timer would be armed for one key.
            return Err(EngineError::BadState {
                rule: self.rule.meta.id.to_string(),
                key: key.to_string(),
                reason: "the key is restored twice".into(),
            });
        }
        if let Some(due) = r.armed {
            self.timers.schedule(due, slot);
        }
        Ok(())
    }
}
