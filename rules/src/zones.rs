//! Zone sets from GeoJSON files.
//!
//! Each feature becomes a zone: `Polygon`/`MultiPolygon` (holes allowed) as an area,
//! `LineString` as a corridor with `buffer_m` metres on each side (feature property, else
//! the set's `buffer_m`), `Point` as a circle of `radius_m` metres. The zone id is the
//! feature's `id`, else its `id` property, else `<set>-<index>`. Properties become zone
//! attributes; `name`, `kind`, `speed_limit_kmh` and `active` (`{days, hours, tz}`) have
//! meanings of their own. Every invalid feature is reported with its file, index, id and
//! reason: unclosed or too short rings, self-intersections, holes outside their shell,
//! coordinates out of range.

use std::path::Path;
use std::sync::Arc;

use geo::{Coord, LineString, MultiPolygon, Polygon, Validation};
use geojson::{Feature, GeoJson, GeometryValue, Position};
use gridwatch_engine::zones::{ActiveWindow, Shape, Zone, ZoneSet, ZoneSpec};

use crate::diagnostic::{Code, Diagnostic, Diagnostics};

/// Settings of one zone set in the config.
#[derive(Debug, Clone, Default)]
pub struct ZoneSetConfig {
    /// Default corridor half-width for LineStrings without `buffer_m`.
    pub buffer_m: Option<f64>,
    /// Default radius for Points without `radius_m`.
    pub radius_m: Option<f64>,
    /// Default active hours for zones without `active`.
    pub active: Option<ActiveWindow>,
}

/// Loads a zone set; problems go to `diags` and the invalid features are left out.
pub fn load_zone_set(name: &str, path: &Path, cfg: &ZoneSetConfig, diags: &mut Diagnostics) -> Option<Arc<ZoneSet>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            diags.push(Diagnostic::global(
                Code::Io,
                format!("zone set `{name}`: cannot read `{}`: {e}", path.display()),
            ));
            return None;
        }
    };
    match parse_zone_set(name, &path.display().to_string(), &text, cfg) {
        Ok(set) => Some(Arc::new(set)),
        Err(errors) => {
            for e in errors {
                diags.push(e);
            }
            None
        }
    }
}

/// Parses GeoJSON text into a zone set, or every problem found.
pub fn parse_zone_set(name: &str, file: &str, text: &str, cfg: &ZoneSetConfig) -> Result<ZoneSet, Vec<Diagnostic>> {
    let geojson: GeoJson = text.parse().map_err(|e| {
        vec![
            Diagnostic::global(Code::BadValue, format!("{file}: not valid GeoJSON: {e}"))
                .with_hint("a zone file is a GeoJSON FeatureCollection"),
        ]
    })?;
    let features: Vec<Feature> = match geojson {
        GeoJson::FeatureCollection(fc) => fc.features,
        GeoJson::Feature(f) => vec![f],
        GeoJson::Geometry(g) => vec![Feature { geometry: Some(g), ..Default::default() }],
    };
    let mut errors = Vec::new();
    let mut zones = Vec::new();
    let mut specs = Vec::new();
    let mut ids = std::collections::HashSet::new();
    for (index, f) in features.iter().enumerate() {
        let props = f.properties.clone().unwrap_or_default();
        let id = match &f.id {
            Some(geojson::feature::Id::String(s)) => s.clone(),
            Some(geojson::feature::Id::Number(n)) => n.to_string(),
            None => props
                .get("id")
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                .unwrap_or_else(|| format!("{name}-{index}")),
        };
        let fail =
            |why: String| Diagnostic::global(Code::BadValue, format!("{file}: feature {index} (id `{id}`): {why}"));
        if !ids.insert(id.clone()) {
            errors.push(fail("duplicate zone id".into()).with_hint("zone ids must be unique within a set"));
            continue;
        }
        let Some(geometry) = &f.geometry else {
            errors.push(fail("has no geometry".into()));
            continue;
        };
        let number = |key: &str| props.get(key).and_then(serde_json::Value::as_f64);
        let spec = match &geometry.value {
            GeometryValue::Polygon { coordinates } => {
                polygon(coordinates).map(|p| ZoneSpec::Area(MultiPolygon(vec![p])))
            }
            GeometryValue::MultiPolygon { coordinates } => coordinates
                .iter()
                .map(|p| polygon(p))
                .collect::<Result<Vec<_>, _>>()
                .map(|ps| ZoneSpec::Area(MultiPolygon(ps))),
            GeometryValue::LineString { coordinates } => match number("buffer_m").or(cfg.buffer_m) {
                Some(b) if b > 0.0 => coords(coordinates).and_then(|c| {
                    if c.len() < 2 {
                        Err("a corridor line needs at least 2 points".to_string())
                    } else {
                        Ok(ZoneSpec::Corridor(LineString(c), b))
                    }
                }),
                _ => {
                    Err("a LineString corridor needs a positive `buffer_m` (feature property or zone set setting)"
                        .into())
                }
            },
            GeometryValue::Point { coordinates } => match number("radius_m").or(cfg.radius_m) {
                Some(r) if r > 0.0 => coord(coordinates).map(|c| ZoneSpec::Circle(c, r)),
                _ => Err("a Point zone needs a positive `radius_m` (feature property or zone set setting)".into()),
            },
            other => Err(format!(
                "{} is not a zone geometry (use Polygon, MultiPolygon, LineString or Point)",
                other.type_name()
            )),
        };
        let spec = match spec {
            Ok(s) => s,
            Err(why) => {
                errors.push(fail(why));
                continue;
            }
        };
        if let ZoneSpec::Area(mp) = &spec {
            let problems = mp.validation_errors();
            if !problems.is_empty() {
                let why: Vec<String> = problems.iter().map(ToString::to_string).collect();
                errors.push(fail(why.join("; ")));
                continue;
            }
        }
        let active = match props.get("active") {
            None => cfg.active.clone(),
            Some(v) => match active_from_json(v) {
                Ok(a) => Some(a),
                Err(why) => {
                    errors.push(fail(format!("bad `active`: {why}")));
                    continue;
                }
            },
        };
        let text_prop = |k: &str| props.get(k).and_then(serde_json::Value::as_str).map(str::to_string);
        zones.push(Zone {
            name: text_prop("name").unwrap_or_else(|| id.clone()),
            kind: text_prop("kind").unwrap_or_else(|| name.to_string()),
            id,
            speed_limit_kmh: number("speed_limit_kmh"),
            properties: props,
            shape: Shape::Circle(Coord { x: 0.0, y: 0.0 }, 0.0),
            active,
        });
        specs.push(spec);
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(ZoneSet::new(name, zones, specs))
}

fn coord(p: &Position) -> Result<Coord<f64>, String> {
    let s = p.as_slice();
    if s.len() < 2 {
        return Err("a position needs longitude and latitude".into());
    }
    let (lon, lat) = (s[0], s[1]);
    if !lon.is_finite() || !lat.is_finite() || !(-180.0..=180.0).contains(&lon) || !(-90.0..=90.0).contains(&lat) {
        return Err(format!(
            "coordinate [{lon}, {lat}] is out of range (longitude −180..180, latitude −90..90; GeoJSON puts longitude first)"
        ));
    }
    Ok(Coord { x: lon, y: lat })
}

fn coords(ps: &[Position]) -> Result<Vec<Coord<f64>>, String> {
    ps.iter().map(coord).collect()
}

fn ring(ps: &[Position], which: &str) -> Result<LineString<f64>, String> {
    let c = coords(ps)?;
    if c.len() < 4 {
        return Err(format!("{which} ring has {} positions; a closed ring needs at least 4", c.len()));
    }
    if c.first() != c.last() {
        return Err(format!("{which} ring is not closed: its first and last positions differ"));
    }
    Ok(LineString(c))
}

fn polygon(rings: &[Vec<Position>]) -> Result<Polygon<f64>, String> {
    let Some((outer, holes)) = rings.split_first() else { return Err("polygon has no rings".into()) };
    let exterior = ring(outer, "exterior")?;
    let interiors =
        holes.iter().enumerate().map(|(i, h)| ring(h, &format!("interior {i}"))).collect::<Result<Vec<_>, _>>()?;
    Ok(Polygon::new(exterior, interiors))
}

/// Parses `{days: [mon, …], hours: "07:00-20:00", tz: "Asia/Shanghai"}` (all optional).
pub fn active_from_json(v: &serde_json::Value) -> Result<ActiveWindow, String> {
    let obj = v.as_object().ok_or("expected an object with days, hours and tz")?;
    let mut days = [true; 7];
    if let Some(list) = obj.get("days") {
        days = [false; 7];
        let list = list.as_array().ok_or("`days` must be a list like [mon, tue]")?;
        for d in list {
            let name = d.as_str().ok_or("`days` must be a list of day names")?;
            for i in parse_day_spec(name)? {
                days[i] = true;
            }
        }
    }
    let (start_min, end_min) = match obj.get("hours") {
        Some(h) => ActiveWindow::parse_hours(h.as_str().ok_or("`hours` must be text like 07:00-20:00")?)?,
        None => (0, 0),
    };
    let tz = match obj.get("tz") {
        Some(t) => {
            let name = t.as_str().ok_or("`tz` must be a time zone name")?;
            name.parse().map_err(|_| format!("unknown time zone `{name}` (use IANA names such as Asia/Shanghai)"))?
        }
        None => chrono_tz::UTC,
    };
    Ok(ActiveWindow { days, start_min, end_min, tz })
}

/// `mon`, `monday`, or a range `mon..fri`.
pub fn parse_day_spec(text: &str) -> Result<Vec<usize>, String> {
    let day =
        |s: &str| ActiveWindow::parse_day(s.trim()).ok_or_else(|| format!("unknown day `{s}` (use mon, tue, … sun)"));
    match text.split_once("..") {
        Some((a, b)) => {
            let (a, b) = (day(a)?, day(b)?);
            Ok(if a <= b { (a..=b).collect() } else { (a..7).chain(0..=b).collect() })
        }
        None => Ok(vec![day(text)?]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        match parse_zone_set("z", "z.geojson", text, &ZoneSetConfig::default()) {
            Ok(_) => Vec::new(),
            Err(e) => e.into_iter().map(|d| d.message).collect(),
        }
    }

    #[test]
    fn invalid_features_are_reported_with_index_id_and_reason() {
        let text = r#"{"type":"FeatureCollection","features":[
          {"type":"Feature","id":"open","properties":{},"geometry":{"type":"Polygon","coordinates":[[[0,0],[1,0],[1,1],[0,1]]]}},
          {"type":"Feature","properties":{"id":"bowtie"},"geometry":{"type":"Polygon","coordinates":[[[0,0],[1,1],[1,0],[0,1],[0,0]]]}},
          {"type":"Feature","properties":{},"geometry":{"type":"Polygon","coordinates":[[[0,0],[200,0],[1,1],[0,0]]]}},
          {"type":"Feature","properties":{},"geometry":{"type":"LineString","coordinates":[[0,0],[1,1]]}},
          {"type":"Feature","properties":{"radius_m":50},"geometry":{"type":"Point","coordinates":[120.0,36.0]}}
        ]}"#;
        assert_eq!(
            errors(text),
            vec![
                "z.geojson: feature 0 (id `open`): exterior ring is not closed: its first and last positions differ",
                "z.geojson: feature 1 (id `bowtie`): polygon at index 0 is invalid: exterior ring has a self-intersection",
                "z.geojson: feature 2 (id `z-2`): coordinate [200, 0] is out of range (longitude −180..180, latitude −90..90; GeoJSON puts longitude first)",
                "z.geojson: feature 3 (id `z-3`): a LineString corridor needs a positive `buffer_m` (feature property or zone set setting)",
            ]
        );
        assert_eq!(
            errors("{"),
            vec![
                "z.geojson: not valid GeoJSON: Error while deserializing GeoJSON: EOF while parsing an object at line 1 column 1"
            ]
        );
    }

    #[test]
    fn day_ranges() {
        assert_eq!(parse_day_spec("mon..fri").unwrap(), vec![0, 1, 2, 3, 4]);
        assert_eq!(parse_day_spec("sat..mon").unwrap(), vec![5, 6, 0]);
        assert!(parse_day_spec("funday").is_err());
    }
}
