//! A zone set: zones projected to a local metric plane, indexed by an R-tree.

use geo::{BoundingRect, Coord, Distance, Euclidean, LineString, MultiPolygon, Point, Rect};
use rstar::RTree;
use rstar::primitives::{GeomWithData, Rectangle};
use smallvec::SmallVec;

use super::{ActiveWindow, GridIndex, PreparedArea};
use crate::time::Millis;

const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// A zone's geometry as given, in longitude/latitude degrees.
#[derive(Debug, Clone)]
pub enum ZoneSpec {
    /// Polygon or multipolygon (holes allowed).
    Area(MultiPolygon<f64>),
    /// A line with a buffer on both sides, in metres.
    Corridor(LineString<f64>, f64),
    /// A point with a radius in metres.
    Circle(Coord<f64>, f64),
}

/// A zone's geometry on the set's local plane (metres).
#[derive(Debug, Clone)]
pub enum Shape {
    /// Polygon or multipolygon.
    Area(MultiPolygon<f64>),
    /// Line and buffer.
    Corridor(LineString<f64>, f64),
    /// Centre and radius.
    Circle(Coord<f64>, f64),
}

/// One zone.
#[derive(Debug, Clone)]
pub struct Zone {
    /// Id (feature id or `id` property), unique within the set.
    pub id: String,
    /// `name` property (or the id).
    pub name: String,
    /// `kind` property (or the set's name).
    pub kind: String,
    /// All feature properties, copied onto alerts.
    pub properties: serde_json::Map<String, serde_json::Value>,
    /// Geometry on the local plane.
    pub shape: Shape,
    /// When the zone applies (always, if None).
    pub active: Option<ActiveWindow>,
    /// `speed_limit_kmh` property.
    pub speed_limit_kmh: Option<f64>,
}

impl Zone {
    /// True if the zone applies at `t`.
    pub fn is_active(&self, t: Millis) -> bool {
        self.active.as_ref().is_none_or(|w| w.is_active(t))
    }
}

/// A named, indexed set of zones.
pub struct ZoneSet {
    /// Set name (from config).
    pub name: String,
    /// Zones, indexed by position.
    pub zones: Vec<Zone>,
    origin: (f64, f64),
    scale: (f64, f64),
    tree: RTree<GeomWithData<Rectangle<[f64; 2]>, u32>>,
    /// Per zone, its areas prepared for containment tests (None for other shapes).
    prepared: Vec<Option<PreparedArea>>,
    /// Uniform grid over the boxes, when the set is dense and even enough for one.
    grid: Option<GridIndex>,
    /// Zones without active hours, so the hot path need not read the zone record.
    always_active: Vec<bool>,
    /// A hash of every zone (ids, properties, hours, geometry): what a rule's fingerprint
    /// (snapshots, hot reload) sees of the set, instead of megabytes of debug text.
    digest: u64,
}

impl std::fmt::Debug for ZoneSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZoneSet")
            .field("name", &self.name)
            .field("zones", &self.zones.len())
            .field("digest", &format_args!("{:016x}", self.digest))
            .finish()
    }
}

/// Hashes what makes each zone what it is; see [`ZoneSet`]'s `digest`.
fn digest(zones: &[Zone], origin: (f64, f64)) -> u64 {
    use geo::CoordsIter;
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    // Shapes are on the set's plane: where that plane sits is part of them.
    h.update(&origin.0.to_bits().to_le_bytes());
    h.update(&origin.1.to_bits().to_le_bytes());
    for z in zones {
        for text in [&z.id, &z.name, &z.kind] {
            h.update(text.as_bytes());
            h.update(&[0]);
        }
        h.update(serde_json::Value::Object(z.properties.clone()).to_string().as_bytes());
        h.update(format!("{:?}|{:?}", z.active, z.speed_limit_kmh).as_bytes());
        let coord = |h: &mut xxhash_rust::xxh3::Xxh3, c: Coord<f64>| {
            h.update(&c.x.to_bits().to_le_bytes());
            h.update(&c.y.to_bits().to_le_bytes());
        };
        match &z.shape {
            Shape::Area(mp) => {
                h.update(b"area");
                mp.coords_iter().for_each(|c| coord(&mut h, c));
            }
            Shape::Corridor(ls, buffer) => {
                h.update(b"corridor");
                h.update(&buffer.to_bits().to_le_bytes());
                ls.coords_iter().for_each(|c| coord(&mut h, c));
            }
            Shape::Circle(c, r) => {
                h.update(b"circle");
                h.update(&r.to_bits().to_le_bytes());
                coord(&mut h, *c);
            }
        }
    }
    h.digest()
}

/// Zone indexes found at a point; small and inline for the usual 0–4.
pub type ZoneHits = SmallVec<[u32; 4]>;

impl ZoneSet {
    /// Builds a set from zones in lon/lat (`specs[i]` is the geometry of `zones[i]`; the
    /// zones' own `shape` is replaced by the projected one).
    pub fn new(name: impl Into<String>, mut zones: Vec<Zone>, specs: Vec<ZoneSpec>) -> ZoneSet {
        let mut bounds: Option<Rect<f64>> = None;
        for spec in &specs {
            let r = match spec {
                ZoneSpec::Area(mp) => mp.bounding_rect(),
                ZoneSpec::Corridor(ls, _) => ls.bounding_rect(),
                ZoneSpec::Circle(c, _) => Some(Rect::new(*c, *c)),
            };
            if let Some(r) = r {
                bounds = Some(match bounds {
                    None => r,
                    Some(b) => Rect::new(
                        Coord { x: b.min().x.min(r.min().x), y: b.min().y.min(r.min().y) },
                        Coord { x: b.max().x.max(r.max().x), y: b.max().y.max(r.max().y) },
                    ),
                });
            }
        }
        let center = bounds.map_or(Coord { x: 0.0, y: 0.0 }, |b| b.center());
        let origin = (center.x, center.y);
        let scale = (EARTH_RADIUS_M.to_radians() * center.y.to_radians().cos(), EARTH_RADIUS_M.to_radians());
        let project = |c: Coord<f64>| Coord { x: (c.x - origin.0) * scale.0, y: (c.y - origin.1) * scale.1 };
        let mut boxes = Vec::with_capacity(zones.len());
        for (i, (zone, spec)) in zones.iter_mut().zip(specs).enumerate() {
            let (shape, rect) = match spec {
                ZoneSpec::Area(mp) => {
                    let p = geo::MapCoords::map_coords(&mp, project);
                    let r = p.bounding_rect();
                    (Shape::Area(p), r.map(|r| (r.min(), r.max())))
                }
                ZoneSpec::Corridor(ls, buffer) => {
                    let p = geo::MapCoords::map_coords(&ls, project);
                    let r = p.bounding_rect().map(|r| {
                        (
                            Coord { x: r.min().x - buffer, y: r.min().y - buffer },
                            Coord { x: r.max().x + buffer, y: r.max().y + buffer },
                        )
                    });
                    (Shape::Corridor(p, buffer), r)
                }
                ZoneSpec::Circle(c, radius) => {
                    let p = project(c);
                    (
                        Shape::Circle(p, radius),
                        Some((Coord { x: p.x - radius, y: p.y - radius }, Coord { x: p.x + radius, y: p.y + radius })),
                    )
                }
            };
            zone.shape = shape;
            if let Some((lo, hi)) = rect {
                boxes.push(GeomWithData::new(Rectangle::from_corners([lo.x, lo.y], [hi.x, hi.y]), i as u32));
            }
        }
        let prepared = zones
            .iter()
            .map(|z| match &z.shape {
                Shape::Area(mp) => Some(PreparedArea::new(mp)),
                _ => None,
            })
            .collect();
        let flat: Vec<(u32, [f64; 2], [f64; 2])> =
            boxes.iter().map(|b| (b.data, b.geom().lower(), b.geom().upper())).collect();
        let grid = GridIndex::build(&flat);
        let always_active = zones.iter().map(|z| z.active.is_none()).collect();
        let digest = digest(&zones, origin);
        ZoneSet {
            name: name.into(),
            zones,
            origin,
            scale,
            tree: RTree::bulk_load(boxes),
            prepared,
            grid,
            always_active,
            digest,
        }
    }

    /// Projects lon/lat to the set's plane (metres).
    #[inline]
    pub fn project(&self, lon: f64, lat: f64) -> [f64; 2] {
        [(lon - self.origin.0) * self.scale.0, (lat - self.origin.1) * self.scale.1]
    }

    /// Zones containing the projected point `p` (boundaries count as inside), in index order.
    #[inline]
    pub fn containing(&self, p: [f64; 2], out: &mut ZoneHits) {
        out.clear();
        if let Some(grid) = &self.grid {
            // Candidates come in ascending zone order, so no sort is needed.
            for &z in grid.candidates(p) {
                if self.contains(z, p) {
                    out.push(z);
                }
            }
            return;
        }
        self.containing_via_tree(p, out);
    }

    /// [`ZoneSet::containing`] through the R-tree alone.
    pub(crate) fn containing_via_tree(&self, p: [f64; 2], out: &mut ZoneHits) {
        out.clear();
        for hit in self.tree.locate_all_at_point(&p) {
            if self.contains(hit.data, p) {
                out.push(hit.data);
            }
        }
        out.sort_unstable();
    }

    /// True if a grid index was built for this set.
    pub fn has_grid(&self) -> bool {
        self.grid.is_some()
    }

    /// True if zone `z` contains the projected point.
    #[inline]
    pub fn contains(&self, z: u32, p: [f64; 2]) -> bool {
        let c = Coord { x: p[0], y: p[1] };
        // Areas answer from their compact prepared form without touching the zone record.
        if let Some(prepared) = &self.prepared[z as usize] {
            return prepared.contains(c);
        }
        match &self.zones[z as usize].shape {
            Shape::Area(_) => self.prepared[z as usize].as_ref().is_some_and(|p| p.contains(c)),
            Shape::Corridor(ls, buffer) => Euclidean.distance(&Point(c), ls) <= *buffer,
            Shape::Circle(center, radius) => {
                let (dx, dy) = (c.x - center.x, c.y - center.y);
                dx * dx + dy * dy <= radius * radius
            }
        }
    }

    /// Signed distance in metres from the projected point to the zone's edge: negative
    /// inside, positive outside, zero on the boundary.
    pub fn signed_distance(&self, z: u32, p: [f64; 2]) -> f64 {
        let pt = Point::new(p[0], p[1]);
        match &self.zones[z as usize].shape {
            Shape::Area(mp) => {
                let edge = mp
                    .iter()
                    .flat_map(|poly| std::iter::once(poly.exterior()).chain(poly.interiors()))
                    .map(|ring| Euclidean.distance(&pt, ring))
                    .fold(f64::INFINITY, f64::min);
                if self.contains(z, p) { -edge } else { edge }
            }
            Shape::Corridor(ls, buffer) => Euclidean.distance(&pt, ls) - buffer,
            Shape::Circle(center, radius) => ((p[0] - center.x).hypot(p[1] - center.y)) - radius,
        }
    }

    /// Distance in metres from the projected point to zone `z`'s line (for corridors) or
    /// to its edge (0 inside) for other shapes.
    pub fn distance_to(&self, z: u32, p: [f64; 2]) -> f64 {
        let pt = Point::new(p[0], p[1]);
        match &self.zones[z as usize].shape {
            Shape::Corridor(ls, _) => Euclidean.distance(&pt, ls),
            _ => self.signed_distance(z, p).max(0.0),
        }
    }

    /// True if zone `z` applies at `t` (its active hours, if any).
    #[inline]
    pub fn is_active(&self, z: u32, t: Millis) -> bool {
        self.always_active[z as usize] || self.zones[z as usize].is_active(t)
    }

    /// Index of the zone with this id.
    pub fn index_of(&self, id: &str) -> Option<u32> {
        self.zones.iter().position(|z| z.id == id).map(|i| i as u32)
    }

    /// Bytes of index and geometry held, approximately (for the memory-per-polygon figure).
    pub fn approx_bytes(&self) -> usize {
        let coords: usize = self
            .zones
            .iter()
            .map(|z| match &z.shape {
                Shape::Area(mp) => mp
                    .iter()
                    .map(|p| p.exterior().0.len() + p.interiors().iter().map(|r| r.0.len()).sum::<usize>())
                    .sum(),
                Shape::Corridor(ls, _) => ls.0.len(),
                Shape::Circle(..) => 1,
            })
            .sum();
        coords * std::mem::size_of::<Coord<f64>>() * 2 // geometry and its prepared edges
            + self.grid.as_ref().map_or(0, GridIndex::bytes)
            + self.zones.len()
                * (std::mem::size_of::<Zone>() + std::mem::size_of::<GeomWithData<Rectangle<[f64; 2]>, u32>>() * 2)
    }

    /// Number of zones.
    pub fn len(&self) -> usize {
        self.zones.len()
    }

    /// True if the set has no zones.
    pub fn is_empty(&self) -> bool {
        self.zones.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use geo::{LineString, Polygon, coord, polygon};

    fn zone(id: &str) -> Zone {
        Zone {
            id: id.into(),
            name: id.into(),
            kind: "test".into(),
            properties: Default::default(),
            shape: Shape::Circle(Coord { x: 0.0, y: 0.0 }, 0.0),
            active: None,
            speed_limit_kmh: None,
        }
    }

    /// A ~1.1 km square around (120.0, 36.0) with a ~220 m square hole in the middle, a
    /// multipolygon of two small squares, a corridor and a circle.
    #[test]
    fn the_digest_sees_geometry_and_properties_not_the_debug_text() {
        let (a, b) = (set(), set());
        assert_eq!(a.digest, b.digest, "the same zones hash the same");
        let moved =
            ZoneSet::new("t", vec![zone("circle")], vec![ZoneSpec::Circle(coord! { x: 120.05, y: 36.050001 }, 100.0)]);
        let same =
            ZoneSet::new("t", vec![zone("circle")], vec![ZoneSpec::Circle(coord! { x: 120.05, y: 36.05 }, 100.0)]);
        assert_ne!(moved.digest, same.digest, "a moved centre is another zone");
        let mut renamed = zone("circle");
        renamed.kind = "other".into();
        let renamed = ZoneSet::new("t", vec![renamed], vec![ZoneSpec::Circle(coord! { x: 120.05, y: 36.05 }, 100.0)]);
        assert_ne!(renamed.digest, same.digest, "so is another kind");
        let text = format!("{a:?}");
        assert!(text.len() < 100 && text.contains("zones: 4"), "{text}");
    }

    fn set() -> ZoneSet {
        let square_with_hole = Polygon::new(
            LineString::from(vec![(120.0, 36.0), (120.01, 36.0), (120.01, 36.01), (120.0, 36.01), (120.0, 36.0)]),
            vec![LineString::from(vec![
                (120.004, 36.004),
                (120.006, 36.004),
                (120.006, 36.006),
                (120.004, 36.006),
                (120.004, 36.004),
            ])],
        );
        let a: Polygon<f64> =
            polygon![(x: 120.02, y: 36.0), (x: 120.021, y: 36.0), (x: 120.021, y: 36.001), (x: 120.02, y: 36.001)];
        let b: Polygon<f64> =
            polygon![(x: 120.03, y: 36.0), (x: 120.031, y: 36.0), (x: 120.031, y: 36.001), (x: 120.03, y: 36.001)];
        ZoneSet::new(
            "t",
            vec![zone("holed"), zone("multi"), zone("road"), zone("circle")],
            vec![
                ZoneSpec::Area(MultiPolygon(vec![square_with_hole])),
                ZoneSpec::Area(MultiPolygon(vec![a, b])),
                ZoneSpec::Corridor(LineString::from(vec![(120.0, 36.02), (120.02, 36.02)]), 50.0),
                ZoneSpec::Circle(coord! { x: 120.05, y: 36.05 }, 100.0),
            ],
        )
    }

    fn at(s: &ZoneSet, lon: f64, lat: f64) -> Vec<u32> {
        let mut hits = ZoneHits::new();
        s.containing(s.project(lon, lat), &mut hits);
        hits.to_vec()
    }

    #[test]
    fn polygons_with_holes_and_multipolygons() {
        let s = set();
        assert_eq!(at(&s, 120.002, 36.002), vec![0]);
        assert_eq!(at(&s, 120.005, 36.005), Vec::<u32>::new(), "inside the hole");
        assert_eq!(at(&s, 120.0205, 36.0005), vec![1]);
        assert_eq!(at(&s, 120.0305, 36.0005), vec![1], "second part of the multipolygon");
        assert_eq!(at(&s, 120.025, 36.0005), Vec::<u32>::new(), "between the parts");
    }

    #[test]
    fn boundary_points_count_as_inside() {
        let s = set();
        assert_eq!(at(&s, 120.0, 36.005), vec![0], "on the outer edge");
        assert_eq!(at(&s, 120.004, 36.005), vec![0], "on the hole's edge");
        assert_eq!(at(&s, 120.0, 36.0), vec![0], "a vertex");
    }

    #[test]
    fn grid_and_rtree_find_the_same_zones() {
        // 400 overlapping squares of mixed sizes (a grid is built), plus a long corridor.
        let mut zones = Vec::new();
        let mut specs = Vec::new();
        for i in 0..400 {
            let (x, y) = (120.0 + (i % 20) as f64 * 0.001, 36.0 + (i / 20) as f64 * 0.001);
            let h = 0.0004 + (i % 7) as f64 * 0.0002;
            let sq =
                Polygon::new(LineString::from(vec![(x, y), (x + h, y), (x + h, y + h), (x, y + h), (x, y)]), vec![]);
            zones.push(zone(&format!("z{i}")));
            specs.push(ZoneSpec::Area(MultiPolygon(vec![sq])));
        }
        zones.push(zone("road"));
        specs.push(ZoneSpec::Corridor(LineString::from(vec![(120.0, 36.0), (120.02, 36.02)]), 30.0));
        let s = ZoneSet::new("t", zones, specs);
        assert!(s.has_grid());
        let (mut a, mut b) = (ZoneHits::new(), ZoneHits::new());
        let mut state = 1u64;
        for _ in 0..20_000 {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let (fx, fy) = ((state >> 11) as f64 / (1u64 << 53) as f64, (state >> 3 & 0xffff) as f64 / 65536.0);
            let p = s.project(119.999 + fx * 0.023, 35.999 + fy * 0.023);
            s.containing(p, &mut a);
            s.containing_via_tree(p, &mut b);
            assert_eq!(a, b);
        }
    }

    #[test]
    fn corridor_and_circle_distances_are_in_metres() {
        let s = set();
        // 0.0004° of latitude ≈ 44.5 m: inside a 50 m buffer; 0.0005° ≈ 55.6 m: outside.
        assert_eq!(at(&s, 120.01, 36.0204), vec![2]);
        assert_eq!(at(&s, 120.01, 36.0205), Vec::<u32>::new());
        let d = s.distance_to(2, s.project(120.01, 36.0205));
        assert!((d - 55.6).abs() < 0.5, "{d}");
        // Circle: 100 m radius; 0.001° latitude ≈ 111 m.
        assert_eq!(at(&s, 120.05, 36.0508), vec![3]);
        assert_eq!(at(&s, 120.05, 36.051), Vec::<u32>::new());
        let sd = s.signed_distance(0, s.project(120.001, 36.005));
        assert!((sd + 90.0).abs() < 1.0, "{sd}: 0.001° of longitude at 36° ≈ 90 m inside the edge");
    }
}
