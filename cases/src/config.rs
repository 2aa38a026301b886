//! The resolved settings of the `cases:` block (parsed, with diagnostics, by the rules
//! crate): matchers, grouping, dispatch, SLA table, silences, inhibition and flapping.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use gridwatch_engine::Alert;
use gridwatch_engine::plan::Severity;
use gridwatch_engine::time::Millis;
use gridwatch_engine::zones::{ZoneHits, ZoneSet};

use crate::model::Point;

/// Selects alerts. Every condition given must hold; a list matches any of its values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Matcher {
    /// Rule ids.
    pub rule: Vec<String>,
    /// Category paths; `emergency` matches `emergency/gas` (whole segments).
    pub category: Vec<String>,
    /// Input streams.
    pub stream: Vec<String>,
    /// Lowest severity.
    pub severity_min: Option<Severity>,
    /// Alert keys.
    pub key: Vec<String>,
    /// Grid cells.
    pub grid: Vec<String>,
    /// Label values that must all be equal.
    pub labels: Vec<(String, String)>,
}

impl Matcher {
    /// Whether `alert` (located in `facts`) matches.
    pub fn matches(&self, alert: &Alert, facts: &AlertFacts) -> bool {
        (self.rule.is_empty() || self.rule.iter().any(|r| **r == *alert.rule_id))
            && (self.category.is_empty() || self.category.iter().any(|c| category_within(&alert.category, c)))
            && (self.stream.is_empty() || self.stream.contains(&alert.stream))
            && self.severity_min.is_none_or(|s| alert.severity >= s)
            && (self.key.is_empty() || self.key.contains(&alert.key))
            && (self.grid.is_empty() || facts.grid_id.as_ref().is_some_and(|g| self.grid.contains(g)))
            && self.labels.iter().all(|(k, v)| alert.labels.get(k) == Some(v))
    }
}

/// Whether `category` is `prefix` or below it (`emergency/gas` is within `emergency`).
pub fn category_within(category: &str, prefix: &str) -> bool {
    prefix.is_empty()
        || category == prefix
        || (category.starts_with(prefix) && category.as_bytes().get(prefix.len()) == Some(&b'/'))
}

/// A part of a case key (or of an inhibition's `equal` list).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPart {
    /// The alert's category path.
    Category,
    /// The rule's key value (the device, vehicle, camera…).
    Key,
    /// The grid cell at the alert's location.
    Grid,
    /// The component (asset) id.
    Component,
    /// The zone id of a geofence alert (`zone_id` value).
    Zone,
    /// The rule id.
    Rule,
    /// A label of the rule.
    Label(String),
}

impl KeyPart {
    /// Names accepted in the config.
    pub const NAMES: [&'static str; 7] = ["category", "key", "grid", "component", "zone", "rule", "label.<name>"];

    /// Parses a config name.
    pub fn parse(s: &str) -> Option<KeyPart> {
        Some(match s {
            "category" => KeyPart::Category,
            "key" => KeyPart::Key,
            "grid" => KeyPart::Grid,
            "component" => KeyPart::Component,
            "zone" => KeyPart::Zone,
            "rule" => KeyPart::Rule,
            _ => KeyPart::Label(s.strip_prefix("label.").filter(|l| !l.is_empty())?.to_string()),
        })
    }

    /// This part's value for an alert; `None` when the alert lacks it (no location…).
    pub fn value<'a>(&self, alert: &'a Alert, facts: &'a AlertFacts) -> Option<&'a str> {
        match self {
            KeyPart::Category => Some(&alert.category),
            KeyPart::Key => Some(&alert.key),
            KeyPart::Grid => facts.grid_id.as_deref(),
            KeyPart::Component => facts.component_id.as_deref(),
            KeyPart::Zone => facts.zone_id.as_deref(),
            KeyPart::Rule => Some(&alert.rule_id),
            KeyPart::Label(l) => alert.labels.get(l).map(String::as_str),
        }
    }
}

/// How alerts matching `matcher` are grouped into cases.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupRule {
    /// Which alerts.
    pub matcher: Matcher,
    /// The case key (values joined by `|`); a missing value falls back to the alert key.
    pub by: Vec<KeyPart>,
    /// An alert joins an open case whose latest alert is at most this old.
    pub window_ms: Millis,
    /// If set, only a case within this distance (metres) of the alert's location joins it
    /// (video-AI: the same class from different cameras within R metres).
    pub within_m: Option<f64>,
}

/// The grid layer dispatch falls back to ("then territory").
#[derive(Debug, Clone)]
pub struct GridLayer {
    /// Zone set of grid cells.
    pub zones: Arc<ZoneSet>,
    /// Property naming the cell.
    pub id_field: String,
    /// Property naming the responsible unit.
    pub unit_field: String,
}

impl GridLayer {
    /// The cell containing a point and its unit.
    pub fn locate(&self, p: Point) -> Option<(String, Option<String>)> {
        let mut hits = ZoneHits::new();
        self.zones.containing(self.zones.project(p.lon, p.lat), &mut hits);
        let zone = &self.zones.zones[*hits.first()? as usize];
        let prop = |f: &str| zone.properties.get(f).and_then(|v| v.as_str()).map(str::to_string);
        Some((prop(&self.id_field).unwrap_or_else(|| zone.id.clone()), prop(&self.unit_field)))
    }
}

/// "Owner first, then territory" (domain.md §1).
#[derive(Debug, Clone, Default)]
pub struct DispatchConfig {
    /// Component id → owning unit.
    pub owners: HashMap<String, String>,
    /// Grid cells and their units.
    pub grid: Option<GridLayer>,
    /// Unit when neither knows.
    pub default_unit: String,
    /// Alert value holding the component id; default: the first part of the alert key.
    pub component_field: Option<String>,
}

/// One row of the SLA table: the first row matching a case gives its time limit.
#[derive(Debug, Clone, PartialEq)]
pub struct SlaRule {
    /// Category path prefix (empty = any).
    pub category: String,
    /// Severity, if the row is severity-specific.
    pub severity: Option<Severity>,
    /// Time limit from dispatch.
    pub within_ms: Millis,
}

/// A silence: matching alerts with event time in `[starts, ends)` are recorded, not sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Silence {
    /// Id shown on silenced alerts.
    pub id: String,
    /// Which alerts.
    pub matcher: Matcher,
    /// Start (inclusive).
    pub starts: Millis,
    /// End (exclusive).
    pub ends: Millis,
    /// Why.
    pub comment: String,
}

/// While a `source` alert fires, `target` alerts sharing the `equal` parts are inhibited.
#[derive(Debug, Clone, PartialEq)]
pub struct Inhibition {
    /// Alerts that inhibit.
    pub source: Matcher,
    /// Alerts inhibited.
    pub target: Matcher,
    /// Parts that must be equal (e.g. `key`, `grid`); empty = any.
    pub equal: Vec<KeyPart>,
}

/// Flap suppression (Kapacitor's `flapping`): more than `changes` state changes of one
/// (rule, key) within `window_ms` hold it as flapping until it is stable for `stable_ms`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Flapping {
    /// State changes allowed within the window.
    pub changes: u32,
    /// Window.
    pub window_ms: Millis,
    /// Quiet time after which it is stable again.
    pub stable_ms: Millis,
}

/// Priority ("key") cases: categories or grid cells.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeyList {
    /// Category path prefixes.
    pub categories: Vec<String>,
    /// Grid cells.
    pub grids: Vec<String>,
}

/// The whole case stage configuration.
#[derive(Debug, Clone)]
pub struct CasesConfig {
    /// First matching rule groups an alert; alerts matching none group by category + key.
    pub grouping: Vec<GroupRule>,
    /// Dispatch.
    pub dispatch: DispatchConfig,
    /// SLA table.
    pub sla: Vec<SlaRule>,
    /// Reminder fractions of the time limit (e.g. 0.5, 0.8).
    pub reminders: Vec<f64>,
    /// Escalation fractions (level 1, 2, …), e.g. 1.0, 1.5.
    pub escalations: Vec<f64>,
    /// Priority list.
    pub key_list: KeyList,
    /// Silences.
    pub silences: Vec<Silence>,
    /// Inhibition rules.
    pub inhibitions: Vec<Inhibition>,
    /// Flap suppression.
    pub flapping: Option<Flapping>,
    /// Location fields (lat, lon) of each stream's events, read from alert evidence.
    pub locations: BTreeMap<String, (String, String)>,
    /// Evidence events kept per case.
    pub evidence_limit: usize,
    /// Title per category prefix (longest match wins); default: the first rule's name.
    pub titles: Vec<(String, String)>,
    /// Alerts that are notifications only and never open or join a case (trip logs…).
    pub exclude: Vec<Matcher>,
}

impl Default for CasesConfig {
    fn default() -> Self {
        CasesConfig {
            grouping: Vec::new(),
            dispatch: DispatchConfig { default_unit: "city-operations-centre".into(), ..Default::default() },
            sla: Vec::new(),
            reminders: vec![0.5, 0.8],
            escalations: vec![1.0],
            key_list: KeyList::default(),
            silences: Vec::new(),
            inhibitions: Vec::new(),
            flapping: None,
            locations: BTreeMap::new(),
            evidence_limit: 5,
            titles: Vec::new(),
            exclude: Vec::new(),
        }
    }
}

/// Default join window for alerts that match no grouping rule.
pub const DEFAULT_WINDOW_MS: Millis = 24 * 3_600_000;

impl CasesConfig {
    /// The time limit of a case of `category` at `severity`, if the table has one.
    pub fn sla_for(&self, category: &str, severity: Severity) -> Option<Millis> {
        self.sla
            .iter()
            .find(|r| category_within(category, &r.category) && r.severity.is_none_or(|s| s == severity))
            .map(|r| r.within_ms)
    }

    /// Where an alert happened and what it concerns, looked up once per alert.
    pub fn facts(&self, alert: &Alert) -> AlertFacts {
        let location = self.locations.get(&alert.stream).and_then(|(lat, lon)| {
            alert
                .evidence
                .iter()
                .rev()
                .find_map(|e| Some(Point { lat: e.get(lat)?.as_f64()?, lon: e.get(lon)?.as_f64()? }))
        });
        let (grid_id, grid_unit) = match (location, &self.dispatch.grid) {
            (Some(p), Some(g)) => g.locate(p).map_or((None, None), |(id, unit)| (Some(id), unit)),
            _ => (None, None),
        };
        let component_id = match &self.dispatch.component_field {
            Some(f) => alert.values.get(f).and_then(|v| v.as_str()).map(str::to_string),
            None => alert.key.split('|').next().map(str::to_string),
        };
        let zone_id = alert.values.get("zone_id").and_then(|v| v.as_str()).map(str::to_string);
        AlertFacts { location, grid_id, grid_unit, component_id, zone_id }
    }
}

/// Facts about one alert the stage needs: location, grid cell, component, zone.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AlertFacts {
    /// Location from the latest evidence event.
    pub location: Option<Point>,
    /// Grid cell there.
    pub grid_id: Option<String>,
    /// Unit responsible for that cell.
    pub grid_unit: Option<String>,
    /// Component (asset) id.
    pub component_id: Option<String>,
    /// Zone of a geofence alert.
    pub zone_id: Option<String>,
}

/// Great-circle distance in metres (haversine; ample for "within 50 m").
pub fn distance_m(a: Point, b: Point) -> f64 {
    let (la1, la2) = (a.lat.to_radians(), b.lat.to_radians());
    let dlat = la2 - la1;
    let dlon = (b.lon - a.lon).to_radians();
    let h = (dlat / 2.0).sin().powi(2) + la1.cos() * la2.cos() * (dlon / 2.0).sin().powi(2);
    2.0 * 6_371_008.8 * h.sqrt().asin()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_match_whole_segments() {
        assert!(category_within("emergency/gas", "emergency"));
        assert!(category_within("emergency/gas", "emergency/gas"));
        assert!(category_within("emergency/gas", ""));
        assert!(!category_within("emergency/gasworks", "emergency/gas"));
        assert!(!category_within("emergency", "emergency/gas"));
    }

    #[test]
    fn key_parts_parse() {
        assert_eq!(KeyPart::parse("grid"), Some(KeyPart::Grid));
        assert_eq!(KeyPart::parse("label.team"), Some(KeyPart::Label("team".into())));
        assert_eq!(KeyPart::parse("label."), None);
        assert_eq!(KeyPart::parse("colour"), None);
    }

    #[test]
    fn distance_is_in_metres() {
        let a = Point { lat: 36.0, lon: 120.0 };
        let b = Point { lat: 36.0, lon: 120.001 };
        let d = distance_m(a, b);
        assert!((89.0..91.0).contains(&d), "{d}");
        assert_eq!(distance_m(a, a), 0.0);
    }
}
