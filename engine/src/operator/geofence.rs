//! Geofences: zone membership per entity as state, so enter/exit are edges and inside,
//! outside, dwell, corridor and speeding are levels with an optional `for`.
//!
//! Per key the operator keeps the zones the entity is *in* (with the time it entered) and
//! the zones it is about to enter. GPS jitter is absorbed two ways, both configurable: an
//! entity enters only when at least `margin_m` inside and leaves only when `margin_m`
//! outside (between the two it keeps its current state), and only after `confirm`
//! consecutive points agree. A zone outside its active hours counts as absent.
//!
//! Levels work like a threshold with `for`: the stopwatch starts when the level becomes
//! true (for dwell without a condition: when the entity entered the zone), the alert fires when it has held
//! for `for` (seen by an event or by the watermark), and resolves when the level ends.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::Float64Type;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use super::{BatchInput, Operator, eval_predicate, for_each_selected, key_columns, selected_rows};
use crate::alert::{Alert, AlertParts, AlertState};
use crate::error::{EngineError, Result};
use crate::keys::{KeyTable, row_to_json, write_key};
use crate::plan::{GeofenceEvent, GeofencePlan, RuleKind, RulePlan};
use crate::schema::StreamDef;
use crate::state::KeyStates;
use crate::time::{Millis, format_timestamp};
use crate::zones::ZoneSet;

/// The point where a level started, as evidence.
fn start_evidence((t, lon, lat): (Millis, f64, f64)) -> serde_json::Value {
    serde_json::json!({"level_started": format_timestamp(t), "lon": lon, "lat": lat})
}

/// Zones entered or left at one point, with the time the entity entered each.
type Transitions = SmallVec<[(u32, Millis); 2]>;

/// Level entries use this zone index for entity-wide levels (outside, corridor).
const WHOLE: u32 = u32::MAX;

#[derive(Debug, Clone, Copy)]
struct Member {
    zone: u32,
    since: Millis,
    /// Consecutive points seen clearly outside, and the time of the first of them.
    leaving: u32,
    leaving_since: Millis,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    zone: u32,
    first_seen: Millis,
    points: u32,
}

#[derive(Debug)]
struct Level {
    zone: u32,
    since: Millis,
    firing: bool,
    /// Where and when the level started: (time, lon, lat). Rendered as evidence only if
    /// the level fires, so starting a level allocates nothing.
    start: (Millis, f64, f64),
    /// Latest distance (corridor) or speed (speeding) while the level holds.
    measure: Option<f64>,
    /// When it fired (its firing alert's time), if `firing`: a reload that ends the
    /// episode does not date it before. Not in snapshots: a restored level has the
    /// earliest time it could have fired, `since + for`.
    fired_at: Millis,
}

#[derive(Debug, Default)]
struct KeyState {
    members: SmallVec<[Member; 2]>,
    pending: SmallVec<[Pending; 2]>,
    levels: SmallVec<[Level; 1]>,
}

/// One key's state in a snapshot ([`crate::state`]): its [`KeyState`], with zones named
/// by id rather than by their position in the zone set.
#[derive(Debug, Serialize, Deserialize)]
struct GeofenceRecord {
    /// Zones the entity is in, in membership order.
    members: Vec<MemberRecord>,
    /// Zones the entity is confirming an entry into.
    pending: Vec<PendingRecord>,
    /// Levels that hold (started, firing or not); each non-firing one has its `for` timer
    /// scheduled again on restore.
    levels: Vec<LevelRecord>,
}

/// A [`Member`] in a [`GeofenceRecord`].
#[derive(Debug, Serialize, Deserialize)]
struct MemberRecord {
    /// Zone id.
    zone: String,
    /// When the entity entered (its first confirming point).
    since: Millis,
    /// Consecutive points clearly outside (a pending exit) and the time of the first.
    leaving: u32,
    leaving_since: Millis,
}

/// A [`Pending`] entry in a [`GeofenceRecord`].
#[derive(Debug, Serialize, Deserialize)]
struct PendingRecord {
    /// Zone id.
    zone: String,
    /// First point deep enough inside, and how many there have been in a row.
    first_seen: Millis,
    points: u32,
}

/// A [`Level`] in a [`GeofenceRecord`].
#[derive(Debug, Serialize, Deserialize)]
struct LevelRecord {
    /// Zone id; `None` for an entity-wide level (outside, corridor).
    zone: Option<String>,
    /// Start of the level's stopwatch (and of its alert's episode).
    since: Millis,
    /// The level has fired.
    firing: bool,
    /// Where and when it started (time, lon, lat), for evidence.
    start: (Millis, f64, f64),
    /// Latest distance or speed while it holds.
    measure: Option<f64>,
}

/// Operator for geofence rules.
pub struct GeofenceOperator {
    rule: Arc<RulePlan>,
    stream: Arc<str>,
    plan: GeofencePlan,
    route_index: FxHashMap<String, u32>,
    keys: KeyTable<KeyState>,
    timers: BinaryHeap<Reverse<(Millis, u32, u32)>>,
    key_buf: String,
    hits: crate::zones::ZoneHits,
}

impl GeofenceOperator {
    /// A new operator with no state.
    pub fn new(rule: Arc<RulePlan>, stream: &StreamDef) -> Self {
        let plan = match &rule.kind {
            RuleKind::Geofence(p) => p.clone(),
            _ => unreachable!("GeofenceOperator is only built for geofence rules"),
        };
        let route_index = plan.zones.zones.iter().enumerate().map(|(i, z)| (z.id.clone(), i as u32)).collect();
        GeofenceOperator {
            rule,
            stream: stream.name.as_str().into(),
            plan,
            route_index,
            keys: KeyTable::default(),
            timers: BinaryHeap::new(),
            key_buf: String::new(),
            hits: Default::default(),
        }
    }

    fn zone_active(&self, zone: u32, t: Millis) -> bool {
        self.plan.zones.is_active(zone, t) && self.plan.active.as_ref().is_none_or(|w| w.is_active(t))
    }

    fn alert(
        &self,
        key: &str,
        zone: u32,
        (state, t, start): (AlertState, Millis, Millis),
        mut values: serde_json::Map<String, serde_json::Value>,
        evidence: Vec<serde_json::Value>,
    ) -> Alert {
        let key = match zone {
            WHOLE => key.to_string(),
            z => {
                let zone = &self.plan.zones.zones[z as usize];
                values.insert("zone_id".into(), zone.id.clone().into());
                values.insert("zone_name".into(), zone.name.clone().into());
                values.insert("zone_kind".into(), zone.kind.clone().into());
                for (k, v) in &zone.properties {
                    values.entry(format!("zone.{k}")).or_insert_with(|| v.clone());
                }
                format!("{key}|{}", zone.id)
            }
        };
        values.insert("zone_set".into(), self.plan.zones.name.clone().into());
        let parts = AlertParts { key, state, event_time: t, episode_start: start, notification: 1, values, evidence };
        Alert::new(&self.rule.meta, &self.stream, parts)
    }

    fn fire_timers(&mut self, wm: Millis, out: &mut Vec<Alert>) {
        while let Some(Reverse((due, slot, zone))) = self.timers.peek().copied() {
            if due > wm {
                break;
            }
            self.timers.pop();
            self.fire_level(slot, zone, due, out);
        }
    }

    /// Fires the dwell timer `due` of `slot` in `zone`, if it is still live: the level has
    /// held since `due - for`.
    fn fire_level(&mut self, slot: u32, zone: u32, due: Millis, out: &mut Vec<Alert>) {
        let for_ms = self.plan.for_ms;
        let (key, st) = self.keys.entry_mut(slot);
        let Some(level) = st.levels.iter_mut().find(|l| l.zone == zone) else { return };
        if level.firing || level.since + for_ms != due {
            return;
        }
        level.firing = true;
        level.fired_at = due;
        let since = level.since;
        let measure = level.measure;
        let evidence = vec![start_evidence(level.start)];
        let key = key.to_string();
        let mut values = serde_json::Map::new();
        values.insert("held_ms".into(), (due - since).into());
        values.insert("since".into(), format_timestamp(since).into());
        self.insert_measure(&mut values, measure);
        out.push(self.alert(&key, zone, (AlertState::Firing, due, since), values, evidence));
    }

    fn insert_measure(&self, values: &mut serde_json::Map<String, serde_json::Value>, measure: Option<f64>) {
        match (self.plan.event, measure) {
            (GeofenceEvent::Corridor, Some(d)) => {
                values.insert("distance_m".into(), ((d * 10.0).round() / 10.0).into());
            }
            (GeofenceEvent::Speeding, Some(v)) => {
                values.insert("speed_kmh".into(), v.into());
            }
            _ => {}
        }
    }

    /// Updates membership for a point; returns (entered, exited) as (zone, since[, t]).
    fn update_membership(&mut self, slot: u32, p: [f64; 2], t: Millis) -> (Transitions, Transitions) {
        let zones: &ZoneSet = &self.plan.zones;
        zones.containing(p, &mut self.hits);
        let margin = self.plan.margin_m;
        let confirm = self.plan.confirm.max(1);
        let confirm_for = self.plan.confirm_for_ms;
        let mut entered = SmallVec::new();
        let mut exited = SmallVec::new();
        // Collect activity first: borrowing rules keep the zone set and key state apart.
        let active: SmallVec<[bool; 4]> = self.hits.iter().map(|&z| self.zone_active(z, t)).collect();
        let members_active: SmallVec<[bool; 4]> = {
            let st = self.keys.state_mut(slot);
            let zs: SmallVec<[u32; 4]> = st.members.iter().map(|m| m.zone).collect();
            zs.iter().map(|&z| self.zone_active(z, t)).collect()
        };
        let zones: &ZoneSet = &self.plan.zones;
        let st = self.keys.state_mut(slot);
        // Leaving.
        let before = std::mem::take(&mut st.members);
        for (mut m, active) in before.into_iter().zip(members_active) {
            let inside = self.hits.contains(&m.zone);
            let clearly_out = !active || (!inside && (margin <= 0.0 || zones.signed_distance(m.zone, p) >= margin));
            if clearly_out {
                if m.leaving == 0 {
                    m.leaving_since = t;
                }
                m.leaving += 1;
            } else if inside {
                m.leaving = 0;
            }
            // Only a clearly-outside point can complete an exit: in the margin band the
            // entity keeps its state.
            if !active || (clearly_out && m.leaving >= confirm && t - m.leaving_since >= confirm_for) {
                exited.push((m.zone, m.since));
            } else {
                st.members.push(m);
            }
        }
        // Entering.
        st.pending.retain(|pd| self.hits.contains(&pd.zone));
        for (h, &z) in self.hits.iter().enumerate() {
            if !active[h] || st.members.iter().any(|m| m.zone == z) {
                continue;
            }
            let deep_enough = margin <= 0.0 || zones.signed_distance(z, p) <= -margin;
            if !deep_enough {
                continue;
            }
            let pos = match st.pending.iter().position(|pd| pd.zone == z) {
                Some(pos) => pos,
                None => {
                    st.pending.push(Pending { zone: z, first_seen: t, points: 0 });
                    st.pending.len() - 1
                }
            };
            st.pending[pos].points += 1;
            if st.pending[pos].points >= confirm && t - st.pending[pos].first_seen >= confirm_for {
                let since = st.pending[pos].first_seen;
                st.pending.remove(pos);
                st.members.push(Member { zone: z, since, leaving: 0, leaving_since: 0 });
                entered.push((z, since));
            }
        }
        (entered, exited)
    }
}

impl Operator for GeofenceOperator {
    fn process_rows(&mut self, input: &BatchInput<'_>, out: &mut Vec<Alert>) -> Result<()> {
        let batch = input.batch;
        let mask = selected_rows(&self.rule, input)?;
        let cond = match &self.plan.condition {
            Some(p) => Some(eval_predicate(&self.rule, "condition", p, batch)?),
            None => None,
        };
        let key_cols: Vec<ArrayRef> = key_columns(&self.rule, batch);
        let lat = arrow::compute::cast(batch.column(self.plan.lat), &arrow::datatypes::DataType::Float64)?;
        let lon = arrow::compute::cast(batch.column(self.plan.lon), &arrow::datatypes::DataType::Float64)?;
        let (lat, lon) = (lat.as_primitive::<Float64Type>().clone(), lon.as_primitive::<Float64Type>().clone());
        let speed = match self.plan.speed_field {
            Some(c) => Some(arrow::compute::cast(batch.column(c), &arrow::datatypes::DataType::Float64)?),
            None => None,
        };
        let route = self.plan.route_field.map(|c| batch.column(c).clone());
        let event = self.plan.event;
        for_each_selected(batch.num_rows(), mask.as_ref(), |i| {
            let wm = input.watermarks[i];
            if matches!(self.timers.peek(), Some(Reverse((due, _, _))) if *due <= wm) {
                self.fire_timers(wm, out);
            }
            if lat.is_null(i) || lon.is_null(i) {
                return Ok(());
            }
            let p = self.plan.zones.project(lon.value(i), lat.value(i));
            let t = input.times[i];
            let mut key = std::mem::take(&mut self.key_buf);
            write_key(&key_cols, i, &mut key);
            let slot = self.keys.slot(&key, KeyState::default);
            // A point of the key at or after a dwell deadline, once the key's own split is
            // past it (no earlier point of the key can still come), shows the level held
            // until then: fire as the stream's watermark passing the deadline would have,
            // whether or not it has (it may lag behind another split).
            let for_ms = self.plan.for_ms;
            let seen_until = t.min(input.split_watermarks[i]);
            if for_ms > 0 {
                let due: SmallVec<[(u32, Millis); 2]> = (self.keys.state_mut(slot).levels.iter())
                    .filter(|l| !l.firing && l.since + for_ms <= seen_until)
                    .map(|l| (l.zone, l.since + for_ms))
                    .collect();
                for (zone, due) in due {
                    self.fire_level(slot, zone, due, out);
                }
            }
            let holds = cond.as_ref().is_none_or(|c| c.value(i));
            let needs_membership = !matches!(event, GeofenceEvent::Corridor);
            let (entered, exited) =
                if needs_membership { self.update_membership(slot, p, t) } else { Default::default() };

            // Edge events.
            match event {
                GeofenceEvent::Enter => {
                    for &(z, since) in &entered {
                        let evidence = vec![row_to_json(batch, i)];
                        out.push(self.alert(&key, z, (AlertState::Firing, t, since), Default::default(), evidence));
                    }
                }
                GeofenceEvent::Exit | GeofenceEvent::Cross => {
                    for &(z, since) in &exited {
                        let mut values = serde_json::Map::new();
                        let start = if event == GeofenceEvent::Cross {
                            values.insert("entered_at".into(), format_timestamp(since).into());
                            values.insert("inside_ms".into(), (t - since).into());
                            since
                        } else {
                            t
                        };
                        let evidence = vec![row_to_json(batch, i)];
                        out.push(self.alert(&key, z, (AlertState::Firing, t, start), values, evidence));
                    }
                }
                _ => {}
            }
            if event.is_edge() {
                self.key_buf = key;
                return Ok(());
            }

            // Levels: which (zone, since) hold at this point.
            let mut holding: SmallVec<[(u32, Millis, Option<f64>); 2]> = SmallVec::new();
            let st = self.keys.state_mut(slot);
            match event {
                GeofenceEvent::Inside | GeofenceEvent::Dwell if holds => {
                    for m in &st.members {
                        // Dwell times the stay from entry; with a condition, from when the
                        // condition began to hold inside (so each episode has its own start).
                        let dwell_from_entry = event == GeofenceEvent::Dwell && self.plan.condition.is_none();
                        holding.push((m.zone, if dwell_from_entry { m.since } else { t }, None));
                    }
                }
                GeofenceEvent::Outside if holds && st.members.is_empty() => holding.push((WHOLE, t, None)),
                GeofenceEvent::Speeding if holds => {
                    if let Some(speed) = speed.as_ref().filter(|s| !s.is_null(i)) {
                        let v = speed.as_primitive::<Float64Type>().value(i);
                        for m in &st.members {
                            if self.plan.zones.zones[m.zone as usize].speed_limit_kmh.is_some_and(|lim| v > lim) {
                                holding.push((m.zone, t, Some(v)));
                            }
                        }
                    }
                }
                GeofenceEvent::Corridor if holds => {
                    let assigned = match route.as_ref().filter(|r| !r.is_null(i)) {
                        Some(r) => {
                            let mut id = String::new();
                            write_key(std::slice::from_ref(r), i, &mut id);
                            self.route_index.get(&id).copied()
                        }
                        None => self
                            .plan
                            .route_table
                            .as_ref()
                            .and_then(|t| t.get(&key))
                            .and_then(|id| self.route_index.get(id))
                            .copied(),
                    };
                    if let Some(z) = assigned
                        && self.zone_active(z, t)
                    {
                        let d = self.plan.zones.distance_to(z, p);
                        if d > self.plan.max_distance_m {
                            holding.push((WHOLE, t, Some(d)));
                        }
                    }
                }
                _ => {}
            }
            // End levels that no longer hold.
            let mut ended: SmallVec<[(u32, Millis, bool); 2]> = SmallVec::new();
            let st = self.keys.state_mut(slot);
            st.levels.retain(|l| {
                let still = holding.iter().any(|h| h.0 == l.zone);
                if !still {
                    ended.push((l.zone, l.since, l.firing));
                }
                still
            });
            for (z, since, was_firing) in ended {
                if was_firing {
                    let mut values = serde_json::Map::new();
                    values.insert("held_ms".into(), (t - since).into());
                    out.push(self.alert(
                        &key,
                        z,
                        (AlertState::Resolved, t, since),
                        values,
                        vec![row_to_json(batch, i)],
                    ));
                }
            }
            // Start or advance levels that hold.
            let for_ms = self.plan.for_ms;
            for (z, since, measure) in holding {
                let st = self.keys.state_mut(slot);
                let pos = match st.levels.iter().position(|l| l.zone == z) {
                    Some(pos) => pos,
                    None => {
                        st.levels.push(Level {
                            zone: z,
                            since,
                            firing: false,
                            start: (t, lon.value(i), lat.value(i)),
                            measure,
                            fired_at: 0,
                        });
                        if for_ms > 0 && since + for_ms > t {
                            self.timers.push(Reverse((since + for_ms, slot, z)));
                        }
                        self.keys.state_mut(slot).levels.len() - 1
                    }
                };
                let level = &mut self.keys.state_mut(slot).levels[pos];
                level.measure = measure.or(level.measure);
                if !level.firing && t - level.since >= for_ms {
                    level.firing = true;
                    level.fired_at = t;
                    let since = level.since;
                    // The start point, unless the level started on this very row.
                    let mut evidence = Vec::with_capacity(2);
                    if level.start.0 != t {
                        evidence.push(start_evidence(level.start));
                    }
                    evidence.push(row_to_json(batch, i));
                    let mut values = serde_json::Map::new();
                    values.insert("held_ms".into(), (t - since).into());
                    self.insert_measure(&mut values, measure);
                    out.push(self.alert(&key, z, (AlertState::Firing, t, since), values, evidence));
                }
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
        let zones = &self.plan.zones.zones;
        let id = |z: u32| zones[z as usize].id.clone();
        for slot in 0..self.keys.len() as u32 {
            let (key, st) = self.keys.entry(slot);
            if st.members.is_empty() && st.pending.is_empty() && st.levels.is_empty() {
                continue; // as a key never seen
            }
            let record = GeofenceRecord {
                members: (st.members.iter())
                    .map(|m| MemberRecord {
                        zone: id(m.zone),
                        since: m.since,
                        leaving: m.leaving,
                        leaving_since: m.leaving_since,
                    })
                    .collect(),
                pending: (st.pending.iter())
                    .map(|p| PendingRecord { zone: id(p.zone), first_seen: p.first_seen, points: p.points })
                    .collect(),
                levels: (st.levels.iter())
                    .map(|l| LevelRecord {
                        zone: (l.zone != WHOLE).then(|| id(l.zone)),
                        since: l.since,
                        firing: l.firing,
                        start: l.start,
                        measure: l.measure,
                    })
                    .collect(),
            };
            out.push(key, &record)?;
        }
        Ok(())
    }

    fn close_episodes(&mut self, at: Millis, reason: &str, out: &mut Vec<Alert>) -> Result<()> {
        // Only a level that fired is an episode: memberships and entries being confirmed
        // (an enter, exit or cross edge never resolves) and levels still timing their
        // `for` (their timers go stale) raise nothing.
        for slot in 0..self.keys.len() as u32 {
            let (key, st) = self.keys.entry_mut(slot);
            if st.levels.is_empty() {
                continue;
            }
            let levels = std::mem::take(&mut st.levels);
            let key = key.to_string();
            for level in levels.into_iter().filter(|l| l.firing) {
                let t = at.max(level.fired_at);
                let mut values = serde_json::Map::new();
                values.insert("held_ms".into(), (t - level.since).into());
                values.insert("reason".into(), reason.into());
                // No point ends it: its start point is the evidence, as when a timer fires it.
                let evidence = vec![start_evidence(level.start)];
                out.push(self.alert(&key, level.zone, (AlertState::Resolved, t, level.since), values, evidence));
            }
        }
        Ok(())
    }

    fn restore(&mut self, key: &str, record: &[u8]) -> Result<()> {
        let r: GeofenceRecord = crate::state::decode(&self.rule.meta.id, key, record)?;
        // Zones are found by id, so a zone file whose order changed still fits. State in a
        // zone the set no longer has is dropped: nothing can be inside a zone that is gone
        // (a fresh start would not know of it either).
        let index = |zone: &str| self.route_index.get(zone).copied();
        let for_ms = self.plan.for_ms;
        let mut st = KeyState::default();
        for m in &r.members {
            if let Some(zone) = index(&m.zone) {
                st.members.push(Member { zone, since: m.since, leaving: m.leaving, leaving_since: m.leaving_since });
            }
        }
        for p in &r.pending {
            if let Some(zone) = index(&p.zone) {
                st.pending.push(Pending { zone, first_seen: p.first_seen, points: p.points });
            }
        }
        for l in r.levels {
            let zone = match &l.zone {
                None => WHOLE,
                Some(id) => match index(id) {
                    Some(zone) => zone,
                    None => continue,
                },
            };
            let fired_at = l.since + for_ms;
            st.levels.push(Level {
                zone,
                since: l.since,
                firing: l.firing,
                start: l.start,
                measure: l.measure,
                fired_at,
            });
        }
        let known = self.keys.len();
        // A level that has not fired has exactly one live timer, at `since + for` (a level
        // due at its start fires on that row instead).
        let due: SmallVec<[(Millis, u32); 2]> =
            (st.levels.iter()).filter(|l| !l.firing && for_ms > 0).map(|l| (l.since + for_ms, l.zone)).collect();
        let slot = self.keys.slot(key, || st);
        if self.keys.len() == known {
            return Err(EngineError::BadState {
                rule: self.rule.meta.id.to_string(),
                key: key.to_string(),
                reason: "the key is restored twice".into(),
            });
        }
        for (due, zone) in due {
            self.timers.push(Reverse((due, slot, zone)));
        }
        Ok(())
    }
}
