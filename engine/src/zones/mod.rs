//! Zones for geofences and grid enrichment.
//!
//! A [`ZoneSet`] is a named collection of zones — polygons and multipolygons (with holes),
//! corridors (a line with a buffer in metres) and circles (a point with a radius) — with
//! an R-tree over their bounding boxes. Lookups find the candidate boxes in the tree and
//! test them exactly.
//!
//! ## Coordinates and the error bound
//!
//! Zones and points are WGS84 longitude/latitude. Each set projects them once onto a local
//! equirectangular plane centred on the set (x = R·Δlon·cos φ₀, y = R·Δlat, in metres).
//! This map is affine, so *membership* (point in polygon, with boundaries counting as
//! inside) is exactly the planar lon/lat answer. *Distances* (corridor deviation, margins)
//! are in metres with a relative error of about `tan φ₀ · Δφ` — under 1 % within ±50 km
//! of the set's centre at latitudes up to 45°, i.e. under 2 m on a 200 m corridor. City
//! zone sets are far smaller than that; a country-wide set should be split by city.

mod active;
mod grid;
mod prepared;
mod zone_set;

pub use active::ActiveWindow;
pub use grid::GridIndex;
pub use prepared::PreparedArea;
pub use zone_set::{Shape, Zone, ZoneHits, ZoneSet, ZoneSpec};
