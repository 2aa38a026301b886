//! The example city's map: zones and routes that the generator drives vehicles through
//! and that the example config loads as GeoJSON (`gridwatch generate --zones DIR` writes
//! them; the committed files under `examples/city/zones/` are checked against this code).
//!
//! Coordinates are WGS84 (longitude, latitude) around a city centre at 36.07° N,
//! 120.38° E. At that latitude 0.001° of longitude is about 90 m and of latitude 111 m.

use serde_json::{Value, json};

/// City centre (lat, lon).
pub const CENTER: (f64, f64) = (36.07, 120.38);

/// A rectangle given by its centre and half sizes in degrees.
#[derive(Debug, Clone, Copy)]
pub struct Rect {
    /// Centre longitude.
    pub lon: f64,
    /// Centre latitude.
    pub lat: f64,
    /// Half width (degrees of longitude).
    pub half_w: f64,
    /// Half height (degrees of latitude).
    pub half_h: f64,
}

impl Rect {
    fn ring(&self) -> Vec<[f64; 2]> {
        let (x0, x1, y0, y1) =
            (self.lon - self.half_w, self.lon + self.half_w, self.lat - self.half_h, self.lat + self.half_h);
        vec![[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
    }
}

/// Construction sites (origins of muck-truck trips).
pub fn construction_sites() -> Vec<Rect> {
    (0..6).map(|i| Rect { lon: 120.29 + 0.02 * i as f64, lat: 36.02, half_w: 0.0012, half_h: 0.001 }).collect()
}

/// Approved disposal sites (destinations).
pub fn disposal_sites() -> Vec<Rect> {
    (0..3).map(|j| Rect { lon: 120.47, lat: 35.995 + 0.02 * j as f64, half_w: 0.0018, half_h: 0.0015 }).collect()
}

/// Approved routes: site i → disposal site i % 3, via a waypoint; buffer in metres.
pub fn routes() -> Vec<(String, Vec<[f64; 2]>)> {
    let sites = construction_sites();
    let dumps = disposal_sites();
    sites
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let d = dumps[i % dumps.len()];
            let via = [(s.lon + d.lon) / 2.0, 36.03 - 0.002 * i as f64];
            (format!("route-{i}"), vec![[s.lon, s.lat], via, [d.lon, d.lat]])
        })
        .collect()
}

/// Corridor half-width of the approved routes, metres.
pub const ROUTE_BUFFER_M: f64 = 50.0;

/// Restricted zones for muck trucks: the old town (with a logistics yard cut out as a
/// hole) and a school area, active in the daytime, Shanghai time.
pub fn restricted() -> Vec<Value> {
    let old_town = Rect { lon: 120.38, lat: 36.07, half_w: 0.012, half_h: 0.01 };
    let yard = Rect { lon: 120.384, lat: 36.066, half_w: 0.002, half_h: 0.002 };
    vec![
        feature(
            "restricted-old-town",
            json!({"name": "Old town", "kind": "restricted", "speed_limit_kmh": 30,
                   "active": {"days": ["mon..sun"], "hours": "07:00-20:00", "tz": "Asia/Shanghai"}}),
            json!({"type": "Polygon", "coordinates": [old_town.ring(), yard.ring()]}),
        ),
        feature(
            "restricted-school-7",
            json!({"name": "No. 7 Middle School", "kind": "restricted", "speed_limit_kmh": 20, "radius_m": 300,
                   "active": {"days": ["mon..fri"], "hours": "07:00-17:30", "tz": "Asia/Shanghai"}}),
            json!({"type": "Point", "coordinates": [120.35, 36.09]}),
        ),
    ]
}

/// The old town's centre, where the restricted-zone violator drives.
pub const OLD_TOWN: [f64; 2] = [120.376, 36.073];

/// No-parking zones for shared bikes along the main road.
pub fn no_parking() -> Vec<Rect> {
    (0..4).map(|i| Rect { lon: 120.36 + 0.01 * i as f64, lat: 36.05, half_w: 0.0015, half_h: 0.0004 }).collect()
}

/// Bike parking fences and their capacities.
pub fn parking_fences() -> Vec<(Rect, u32)> {
    (0..6).map(|i| (Rect { lon: 120.34 + 0.015 * i as f64, lat: 36.10, half_w: 0.0003, half_h: 0.0002 }, 15)).collect()
}

/// Gas-pipeline buffer zones: 5 m either side of six 400 m main segments, where digging
/// needs an excavation permit (domain.md §2 #2).
pub fn gas_buffers() -> Vec<Rect> {
    (0..6)
        .map(|i| Rect {
            lon: 120.31 + 0.03 * i as f64,
            lat: 36.11 - 0.01 * (i % 2) as f64,
            half_w: 0.0022,
            half_h: 0.000045,
        })
        .collect()
}

/// Unit grid: 0.02° cells over the city with the responsible unit and road chief.
pub fn unit_grid() -> Vec<Value> {
    let districts = ["Shinan", "Shibei", "Licang", "Laoshan"];
    let mut out = Vec::new();
    for row in 0..10 {
        for col in 0..12 {
            let r =
                Rect { lon: 120.27 + 0.02 * col as f64, lat: 35.98 + 0.02 * row as f64, half_w: 0.01, half_h: 0.01 };
            let id = format!("G{row:02}{col:02}");
            let unit = format!("{} street office {}", districts[col / 3], row / 3 + 1);
            out.push(feature(
                &id,
                json!({"grid_id": id, "unit": unit, "road_chief": format!("chief-{:02}", (row * 12 + col) % 37)}),
                json!({"type": "Polygon", "coordinates": [r.ring()]}),
            ));
        }
    }
    out
}

fn feature(id: &str, properties: Value, geometry: Value) -> Value {
    json!({"type": "Feature", "id": id, "properties": properties, "geometry": geometry})
}

fn rect_features(prefix: &str, kind: &str, rects: &[Rect]) -> Vec<Value> {
    rects
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let id = format!("{prefix}-{i}");
            feature(
                &id,
                json!({"name": format!("{kind} {i}"), "kind": kind}),
                json!({"type": "Polygon", "coordinates": [r.ring()]}),
            )
        })
        .collect()
}

/// Every zone file of the example city as (file name, GeoJSON text).
pub fn geojson_files() -> Vec<(&'static str, String)> {
    let collection = |features: Vec<Value>| {
        let mut text = serde_json::to_string_pretty(&json!({"type": "FeatureCollection", "features": features}))
            .unwrap_or_default();
        text.push('\n');
        text
    };
    let mut truck_sites = rect_features("site", "construction_site", &construction_sites());
    truck_sites.extend(rect_features("dump", "disposal_site", &disposal_sites()));
    let routes = routes()
        .into_iter()
        .map(|(id, line)| {
            feature(
                &id,
                json!({"name": id, "kind": "approved_route", "buffer_m": ROUTE_BUFFER_M}),
                json!({"type": "LineString", "coordinates": line}),
            )
        })
        .collect();
    let fences = parking_fences()
        .iter()
        .enumerate()
        .map(|(i, (r, cap))| {
            let id = format!("fence-{i}");
            feature(
                &id,
                json!({"name": format!("Parking fence {i}"), "kind": "parking_fence", "capacity": cap}),
                json!({"type": "Polygon", "coordinates": [r.ring()]}),
            )
        })
        .collect();
    vec![
        ("construction_sites.geojson", collection(rect_features("site", "construction_site", &construction_sites()))),
        ("disposal_sites.geojson", collection(rect_features("dump", "disposal_site", &disposal_sites()))),
        ("truck_sites.geojson", collection(truck_sites)),
        ("routes.geojson", collection(routes)),
        ("restricted.geojson", collection(restricted())),
        ("no_parking.geojson", collection(rect_features("no-parking", "no_parking", &no_parking()))),
        ("parking_fences.geojson", collection(fences)),
        ("unit_grid.geojson", collection(unit_grid())),
        ("gas_buffers.geojson", collection(rect_features("gas-buffer", "gas_pipeline_buffer", &gas_buffers()))),
    ]
}

/// A point along a polyline at `s` metres from its start (clamped), with a local metric
/// approximation good enough for driving vehicles around a city.
pub fn along(line: &[[f64; 2]], s: f64) -> [f64; 2] {
    let k_lon = 111_320.0 * CENTER.0.to_radians().cos();
    let k_lat = 110_574.0;
    let mut left = s.max(0.0);
    for w in line.windows(2) {
        let (dx, dy) = ((w[1][0] - w[0][0]) * k_lon, (w[1][1] - w[0][1]) * k_lat);
        let len = dx.hypot(dy);
        if left <= len && len > 0.0 {
            let f = left / len;
            return [w[0][0] + (w[1][0] - w[0][0]) * f, w[0][1] + (w[1][1] - w[0][1]) * f];
        }
        left -= len;
    }
    *line.last().unwrap_or(&[CENTER.1, CENTER.0])
}

/// Length of a polyline in metres (same approximation as [`along`]).
pub fn length_m(line: &[[f64; 2]]) -> f64 {
    let k_lon = 111_320.0 * CENTER.0.to_radians().cos();
    line.windows(2).map(|w| ((w[1][0] - w[0][0]) * k_lon).hypot((w[1][1] - w[0][1]) * 110_574.0)).sum()
}
