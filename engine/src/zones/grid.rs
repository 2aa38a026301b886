//! A uniform grid over zone bounding boxes: the first-stage filter for dense zone sets.
//!
//! City zone sets are mostly many similar-sized zones (grid cells, parcels, parking fences);
//! for those a grid whose cell is about one zone across finds a point's candidates with one
//! cell lookup, where an R-tree walks several nodes scattered in memory. The grid is
//! compressed (one offsets array, one ids array). Sets with a few huge zones among small
//! ones would register the huge zones in very many cells; for those the grid is not built
//! and the R-tree serves alone.

/// Candidate zones per cell, in CSR form.
#[derive(Debug, Clone)]
pub struct GridIndex {
    min: [f64; 2],
    cell: f64,
    nx: usize,
    ny: usize,
    offsets: Vec<u32>,
    ids: Vec<u32>,
}

/// At most this many (zone, cell) registrations per zone on average, else no grid.
const MAX_REGISTRATIONS_PER_ZONE: usize = 16;
const MAX_CELLS: usize = 1 << 24;

impl GridIndex {
    /// Builds a grid over `boxes` (zone index, min, max), or None when a grid would be
    /// too large or too uneven to pay off.
    pub fn build(boxes: &[(u32, [f64; 2], [f64; 2])]) -> Option<GridIndex> {
        if boxes.len() < 64 {
            return None;
        }
        let mut min = [f64::INFINITY; 2];
        let mut max = [f64::NEG_INFINITY; 2];
        let mut sizes: Vec<f64> = Vec::with_capacity(boxes.len());
        for (_, lo, hi) in boxes {
            for d in 0..2 {
                min[d] = min[d].min(lo[d]);
                max[d] = max[d].max(hi[d]);
            }
            sizes.push((hi[0] - lo[0]).max(hi[1] - lo[1]));
        }
        sizes.sort_by(f64::total_cmp);
        let cell = sizes[sizes.len() / 2].max(1.0);
        let nx = (((max[0] - min[0]) / cell) as usize + 1).max(1);
        let ny = (((max[1] - min[1]) / cell) as usize + 1).max(1);
        if nx.checked_mul(ny)? > MAX_CELLS {
            return None;
        }
        let span = |lo: f64, hi: f64, base: f64, n: usize| {
            let a = (((lo - base) / cell) as usize).min(n - 1);
            let b = (((hi - base) / cell) as usize).min(n - 1);
            (a, b)
        };
        let mut counts = vec![0u32; nx * ny + 1];
        let mut registrations = 0usize;
        for (_, lo, hi) in boxes {
            let (x0, x1) = span(lo[0], hi[0], min[0], nx);
            let (y0, y1) = span(lo[1], hi[1], min[1], ny);
            registrations += (x1 - x0 + 1) * (y1 - y0 + 1);
            if registrations > MAX_REGISTRATIONS_PER_ZONE * boxes.len() {
                return None;
            }
            for y in y0..=y1 {
                for x in x0..=x1 {
                    counts[y * nx + x + 1] += 1;
                }
            }
        }
        for i in 1..counts.len() {
            counts[i] += counts[i - 1];
        }
        let offsets = counts;
        let mut fill = offsets.clone();
        let mut ids = vec![0u32; registrations];
        for (z, lo, hi) in boxes {
            let (x0, x1) = span(lo[0], hi[0], min[0], nx);
            let (y0, y1) = span(lo[1], hi[1], min[1], ny);
            for y in y0..=y1 {
                for x in x0..=x1 {
                    let c = y * nx + x;
                    ids[fill[c] as usize] = *z;
                    fill[c] += 1;
                }
            }
        }
        Some(GridIndex { min, cell, nx, ny, offsets, ids })
    }

    /// Zones whose box may contain `p`, in ascending order of zone index.
    #[inline]
    pub fn candidates(&self, p: [f64; 2]) -> &[u32] {
        let fx = (p[0] - self.min[0]) / self.cell;
        let fy = (p[1] - self.min[1]) / self.cell;
        if !(fx >= 0.0 && fy >= 0.0) || fx >= self.nx as f64 || fy >= self.ny as f64 {
            return &[];
        }
        let c = fy as usize * self.nx + fx as usize;
        &self.ids[self.offsets[c] as usize..self.offsets[c + 1] as usize]
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        (self.offsets.len() + self.ids.len()) * 4
    }
}
