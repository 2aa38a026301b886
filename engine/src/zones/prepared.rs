//! Point-in-polygon for repeated queries against the same polygon.
//!
//! `geo`'s `Intersects` walks every edge of a polygon per query. City polygons have tens
//! to hundreds of vertices and are queried millions of times, so each polygon is prepared
//! once: its edges (shell and holes) are bucketed into horizontal bands, and a query
//! casts its ray only against the edges of the band its `y` falls in. The crossing count
//! is even-odd over all rings, which is exact for valid polygons (holes inside the shell).
//! Points on an edge count as inside, decided with an exact orientation predicate
//! (`robust::orient2d`, the one `geo` uses), so the boundary rule matches `geo`.

use geo::{Coord, MultiPolygon, Polygon};

#[derive(Debug, Clone, Copy)]
struct Edge {
    a: Coord<f64>,
    b: Coord<f64>,
}

#[derive(Debug, Clone)]
struct PreparedPolygon {
    min: Coord<f64>,
    max: Coord<f64>,
    band_height: f64,
    n_bands: u32,
    edges: Box<[Edge]>,
    /// CSR: the first `n_bands + 1` entries are offsets into the rest, which lists for
    /// each band the indexes of the edges whose y-range overlaps it. One allocation keeps
    /// a query to few cache misses.
    bands: Box<[u32]>,
}

/// A multipolygon prepared for fast containment tests.
#[derive(Debug, Clone)]
pub struct PreparedArea {
    parts: smallvec::SmallVec<[PreparedPolygon; 1]>,
}

impl PreparedArea {
    /// Prepares `mp`.
    pub fn new(mp: &MultiPolygon<f64>) -> Self {
        PreparedArea { parts: mp.iter().map(PreparedPolygon::new).collect() }
    }

    /// True if `c` is inside or on the boundary of any part.
    #[inline]
    pub fn contains(&self, c: Coord<f64>) -> bool {
        self.parts.iter().any(|p| p.contains(c))
    }
}

impl PreparedPolygon {
    fn new(p: &Polygon<f64>) -> Self {
        let mut edges = Vec::new();
        for ring in std::iter::once(p.exterior()).chain(p.interiors()) {
            for w in ring.0.windows(2) {
                if w[0] != w[1] {
                    edges.push(Edge { a: w[0], b: w[1] });
                }
            }
        }
        let (mut min, mut max) =
            (Coord { x: f64::INFINITY, y: f64::INFINITY }, Coord { x: f64::NEG_INFINITY, y: f64::NEG_INFINITY });
        for e in &edges {
            for c in [e.a, e.b] {
                min = Coord { x: min.x.min(c.x), y: min.y.min(c.y) };
                max = Coord { x: max.x.max(c.x), y: max.y.max(c.y) };
            }
        }
        // About four edges per band: a query then tests a handful of edges.
        let n_bands = (edges.len() / 4).clamp(1, 256);
        let band_height = ((max.y - min.y) / n_bands as f64).max(f64::MIN_POSITIVE);
        let band_range = |e: &Edge| {
            let (lo, hi) = (e.a.y.min(e.b.y), e.a.y.max(e.b.y));
            let first = (((lo - min.y) / band_height) as usize).min(n_bands - 1);
            let last = (((hi - min.y) / band_height) as usize).min(n_bands - 1);
            first..=last
        };
        let mut counts = vec![0u32; n_bands + 1];
        for e in &edges {
            for b in band_range(e) {
                counts[b + 1] += 1;
            }
        }
        for i in 1..counts.len() {
            counts[i] += counts[i - 1];
        }
        let base = counts.len() as u32;
        let total = counts[n_bands] as usize;
        let mut bands: Vec<u32> = counts.iter().map(|c| c + base).collect();
        bands.resize(bands.len() + total, 0);
        let mut fill: Vec<u32> = counts[..n_bands].to_vec();
        for (i, e) in edges.iter().enumerate() {
            for b in band_range(e) {
                bands[(base + fill[b]) as usize] = i as u32;
                fill[b] += 1;
            }
        }
        PreparedPolygon {
            min,
            max,
            band_height,
            n_bands: n_bands as u32,
            edges: edges.into_boxed_slice(),
            bands: bands.into_boxed_slice(),
        }
    }

    #[inline]
    fn contains(&self, c: Coord<f64>) -> bool {
        if c.x < self.min.x || c.x > self.max.x || c.y < self.min.y || c.y > self.max.y || self.edges.is_empty() {
            return false;
        }
        let band = (((c.y - self.min.y) / self.band_height) as usize).min(self.n_bands as usize - 1);
        let (from, to) = (self.bands[band] as usize, self.bands[band + 1] as usize);
        let mut inside = false;
        for &i in &self.bands[from..to] {
            let Edge { a, b } = self.edges[i as usize];
            // On the edge: collinear (exactly) and within its box.
            if c.x >= a.x.min(b.x) && c.x <= a.x.max(b.x) && c.y >= a.y.min(b.y) && c.y <= a.y.max(b.y) {
                let o = robust::orient2d(
                    robust::Coord { x: a.x, y: a.y },
                    robust::Coord { x: b.x, y: b.y },
                    robust::Coord { x: c.x, y: c.y },
                );
                if o == 0.0 {
                    return true;
                }
            }
            // Half-open rule on y so a vertex is counted once.
            if (a.y > c.y) != (b.y > c.y) {
                let o = robust::orient2d(
                    robust::Coord { x: a.x, y: a.y },
                    robust::Coord { x: b.x, y: b.y },
                    robust::Coord { x: c.x, y: c.y },
                );
                // The ray to +x crosses the edge iff c is left of an upward edge or right
                // of a downward one.
                if (b.y > a.y) == (o > 0.0) {
                    inside = !inside;
                }
            }
        }
        inside
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use geo::{Intersects, LineString};
    use proptest::prelude::*;

    fn star(cx: f64, cy: f64, radii: &[f64]) -> Polygon<f64> {
        let n = radii.len();
        let mut ring: Vec<(f64, f64)> = radii
            .iter()
            .enumerate()
            .map(|(k, r)| {
                let a = std::f64::consts::TAU * k as f64 / n as f64;
                (cx + r * a.cos(), cy + r * a.sin())
            })
            .collect();
        ring.push(ring[0]);
        Polygon::new(LineString::from(ring), vec![])
    }

    proptest! {
        /// Agrees with geo's `Intersects` on random star polygons (with a square hole) and
        /// on random points, vertices and edge midpoints.
        #[test]
        fn agrees_with_geo(radii in prop::collection::vec(20.0f64..100.0, 3..120), px in -120.0f64..120.0, py in -120.0f64..120.0, pick in 0usize..1000) {
            let mut poly = star(0.0, 0.0, &radii);
            let hole = LineString::from(vec![(-5.0, -5.0), (5.0, -5.0), (5.0, 5.0), (-5.0, 5.0), (-5.0, -5.0)]);
            poly.interiors_push(hole);
            let mp = MultiPolygon(vec![poly.clone()]);
            let prepared = PreparedArea::new(&mp);
            let ext = &poly.exterior().0;
            let v = ext[pick % (ext.len() - 1)];
            let w = ext[pick % (ext.len() - 1) + 1];
            for c in [Coord { x: px, y: py }, v, Coord { x: (v.x + w.x) / 2.0, y: (v.y + w.y) / 2.0 }, Coord { x: 5.0, y: 0.0 }, Coord { x: 0.0, y: 0.0 }] {
                prop_assert_eq!(prepared.contains(c), mp.intersects(&c), "at {:?}", c);
            }
        }
    }
}
