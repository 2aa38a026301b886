//! The example city's devices and records for its sequence rules (README "Sequence
//! rules"): rain gauges beside the ponding points, heating-network pressure sensors, site
//! cameras on gas-pipeline buffers with the excavation-permit check-ins, the nightly
//! summaries of acoustic leak loggers and the archive of closed enforcement cases.
//!
//! Everything here draws from its own random stream, so adding it left every event of the
//! original city byte for byte as it was. Leak loggers upload the summaries of the last
//! three nights' 02–04 h listening and the case archive its closed cases when the run
//! starts: both are emitted, in event-time order, in the first tick.

use std::io::Write;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{GeneratorSettings, MINUTE, SECOND, people_count_payload, sensor_payload};
use crate::city_map::{self, CENTER};

/// Stream indexes in [`super::STREAMS`].
const SENSOR: usize = 0;
const DETECTION: usize = 2;
const PERMITS: usize = 3;
const LEAK: usize = 4;
const CLOSED_CASES: usize = 5;

const DAY: i64 = 24 * 60 * MINUTE;

/// A device that reports on a fixed period from a fixed place.
#[derive(Debug)]
struct Device {
    id: String,
    lat: f64,
    lon: f64,
    phase: i64,
}

#[derive(Debug)]
struct PressureSensor {
    device: Device,
    base: f64,
    /// Start of a pressure collapse (a burst main): down 30 % in 2 min, held for 15 min,
    /// back over 5 min.
    collapse: Option<i64>,
}

#[derive(Debug)]
struct SiteCamera {
    device: Device,
    zone: String,
    /// First sighting of an excavator; it is seen every 30 s for 3.5 minutes.
    dig: i64,
}

/// The extra devices and records; see the module docs.
#[derive(Debug)]
pub(super) struct Extras {
    rng: ChaCha8Rng,
    start: i64,
    storm: i64,
    rain_gauges: Vec<Device>,
    pressure: Vec<PressureSensor>,
    site_cameras: Vec<SiteCamera>,
    /// (event time, payload), in time order; emitted in their tick.
    permits: Vec<(i64, Vec<u8>)>,
    next_permit: usize,
    /// The leak loggers' and case archive's uploads, emitted in the first tick.
    backlog: Vec<(usize, Vec<u8>)>,
}

const EXCAVATOR_SIGHTINGS: i64 = 8;

impl Extras {
    /// `ponding` are the ponding points' (lat, lon); the storm starts at `storm`.
    pub(super) fn new(settings: &GeneratorSettings, ponding: &[(f64, f64)], storm: i64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(settings.seed ^ 0x0005_e90e_4ce5);
        let s = settings.scale.max(1) as usize;
        let start = settings.start_ms;
        let span = settings.duration_ms.max(MINUTE);
        let at = |frac: f64| start + (span as f64 * frac) as i64;

        // One gauge beside every fourth ponding point (every point that ponds has one).
        let rain_gauges = (0..20 * s)
            .filter_map(|j| ponding.get(4 * j).map(|&(lat, lon)| (j, lat, lon)))
            .map(|(j, lat, lon)| Device {
                id: format!("rg-{j:04}"),
                lat: lat + 0.00005,
                lon,
                phase: rng.random_range(0..300) * SECOND,
            })
            .collect();
        let pressure = (0..40 * s)
            .map(|i| PressureSensor {
                device: Device {
                    id: format!("hp-{i:04}"),
                    lat: CENTER.0 + rng.random_range(-0.08..0.08),
                    lon: CENTER.1 + rng.random_range(-0.1..0.1),
                    phase: rng.random_range(0..30) * SECOND,
                },
                base: rng.random_range(580.0..620.0),
                collapse: match i {
                    5 => Some(at(0.15)),
                    18 => Some(at(0.35)),
                    31 => Some(at(0.6)),
                    _ => None,
                },
            })
            .collect();
        let mut site_cameras = Vec::new();
        let mut permits = Vec::new();
        for (i, zone) in city_map::gas_buffers().iter().enumerate() {
            let dig = at(0.05 + 0.04 * i as f64) + rng.random_range(0..60) * SECOND;
            let zone_id = format!("gas-buffer-{i}");
            // Sites 2 and 5 dig without a permit: 2's comes too late, 5's never.
            let permit_after = match i {
                2 => Some(150 * MINUTE),
                5 => None,
                _ => Some(rng.random_range(20..90) * MINUTE),
            };
            if let Some(after) = permit_after {
                let ts = dig + after;
                let mut p = Vec::with_capacity(120);
                let _ = write!(
                    p,
                    r#"{{"stream":"permits","ts":{ts},"permit_id":"EXC-2026-{:04}","zone_id":"{zone_id}","contractor":"contractor-{}"}}"#,
                    311 + i,
                    i % 3
                );
                permits.push((ts, p));
            }
            site_cameras.push(SiteCamera {
                device: Device {
                    id: format!("cam-gas-{i}"),
                    lat: zone.lat,
                    lon: zone.lon,
                    phase: rng.random_range(0..60) * SECOND,
                },
                zone: zone_id,
                dig,
            });
        }
        permits.sort_by_key(|(ts, _)| *ts);
        let backlog = backlog(&mut rng, start, s);
        Extras { rng, start, storm, rain_gauges, pressure, site_cameras, permits, next_permit: 0, backlog }
    }

    /// Rough number of events over `duration_ms` (for progress bars).
    pub(super) fn estimated_total(&self, duration_ms: i64) -> u64 {
        let secs = (duration_ms / SECOND) as u64;
        self.backlog.len() as u64
            + self.rain_gauges.len() as u64 * secs / 300
            + self.pressure.len() as u64 * secs / 30
            + self.site_cameras.len() as u64 * secs / 60
    }

    /// Appends the events of tick `t` to `pending`.
    pub(super) fn fill_tick(&mut self, t: i64, pending: &mut Vec<(usize, Vec<u8>)>) {
        if t == self.start {
            pending.append(&mut self.backlog);
        }
        let elapsed = t - self.start;
        for i in 0..self.rain_gauges.len() {
            let d = &self.rain_gauges[i];
            if (elapsed - d.phase).rem_euclid(5 * MINUTE) != 0 {
                continue;
            }
            let raining = t >= self.storm - 20 * MINUTE && t < self.storm + 5 * MINUTE;
            let value = if raining { self.rng.random_range(35.0..60.0) } else { self.rng.random_range(0.0..3.0) };
            let ts = self.stamp(t);
            let d = &self.rain_gauges[i];
            pending.push((SENSOR, sensor_payload(ts, &d.id, "rain_gauge", "rain_mm_h", value, (d.lat, d.lon))));
        }
        for i in 0..self.pressure.len() {
            let p = &self.pressure[i];
            if (elapsed - p.device.phase).rem_euclid(30 * SECOND) != 0 {
                continue;
            }
            let fraction = p.collapse.map_or(1.0, |c| collapse_fraction(t - c));
            let base = p.base;
            let noise = self.rng.random_range(-0.003..0.003);
            let ts = self.stamp(t);
            let value = base * (fraction + noise);
            let d = &self.pressure[i].device;
            pending.push((SENSOR, sensor_payload(ts, &d.id, "heating", "pressure_kpa", value, (d.lat, d.lon))));
        }
        for i in 0..self.site_cameras.len() {
            let c = &self.site_cameras[i];
            if (elapsed - c.device.phase).rem_euclid(MINUTE) == 0 {
                // i32, as the draw has always been (a wider type draws differently).
                let count = i64::from(self.rng.random_range(0..6_i32));
                let ts = self.stamp(t);
                let c = &self.site_cameras[i];
                let at = (c.device.lat, c.device.lon);
                pending.push((DETECTION, people_count_payload(ts, &c.device.id, count, 40, &c.zone, at)));
            }
            let c = &self.site_cameras[i];
            let since = t - c.dig;
            if since >= 0 && since % (30 * SECOND) == 0 && since / (30 * SECOND) < EXCAVATOR_SIGHTINGS {
                let confidence = self.rng.random_range(0.88..0.97);
                let ts = self.stamp(t);
                let c = &self.site_cameras[i];
                let mut p = Vec::with_capacity(200);
                let _ = write!(
                    p,
                    r#"{{"stream":"detection","ts":{ts},"camera_id":"{}","class":"excavator","confidence":{confidence:.2},"count":1,"zone_id":"{}","lat":{:.6},"lon":{:.6}}}"#,
                    c.device.id, c.zone, c.device.lat, c.device.lon
                );
                pending.push((DETECTION, p));
            }
        }
        while let Some((ts, _)) = self.permits.get(self.next_permit)
            && *ts <= t
        {
            pending.push((PERMITS, std::mem::take(&mut self.permits[self.next_permit].1)));
            self.next_permit += 1;
        }
    }

    /// Up to 3 s backwards (inside the streams' out-of-orderness bound) for 20 % of readings.
    fn stamp(&mut self, t: i64) -> i64 {
        if self.rng.random_bool(0.2) { t - self.rng.random_range(0..3000) } else { t }
    }
}

/// Share of the normal pressure `dt` after a collapse started.
fn collapse_fraction(dt: i64) -> f64 {
    let fall = 2 * MINUTE;
    let hold = fall + 15 * MINUTE;
    let back = hold + 5 * MINUTE;
    match dt {
        dt if dt < 0 || dt >= back => 1.0,
        dt if dt < fall => 1.0 - 0.3 * dt as f64 / fall as f64,
        dt if dt < hold => 0.7,
        dt => 0.7 + 0.3 * (dt - hold) as f64 / (back - hold) as f64,
    }
}

/// The first tick's uploads: three nights of leak-logger summaries and the closed cases of
/// the case archive, each in event-time order.
///
/// Leak loggers `lk-0004` (high three nights in a row) and `lk-0016`/`lk-0017` (two
/// neighbours on main 05, high within an hour on the last night) should raise alerts;
/// `lk-0010` (high on the first and last night only) should not. Of the closed cases, the
/// one 400 days old is outside the repeat-offence rule's 12 months.
fn backlog(rng: &mut ChaCha8Rng, start: i64, scale: usize) -> Vec<(usize, Vec<u8>)> {
    let midnight = start - start.rem_euclid(DAY);
    let loggers: Vec<(String, String, f64, f64)> = (0..30 * scale)
        .map(|i| {
            let (lat, lon) = (CENTER.0 + rng.random_range(-0.06..0.06), CENTER.1 + rng.random_range(-0.08..0.08));
            (format!("lk-{i:04}"), format!("main-{:02}", i / 3), lat, lon)
        })
        .collect();
    let mut leak = Vec::new();
    for night in (1..=3).rev() {
        let two_am = midnight - night * DAY + 2 * 60 * MINUTE;
        for (i, (id, main, lat, lon)) in loggers.iter().enumerate() {
            let high = match i {
                4 => true,
                10 => night != 2,
                16 | 17 => night == 1,
                _ => false,
            };
            let score = if high { rng.random_range(65.0..85.0) } else { rng.random_range(10.0..45.0) };
            let ts = match (i, night) {
                (16, 1) => two_am + 40 * MINUTE,
                (17, 1) => two_am + 70 * MINUTE,
                _ => two_am + rng.random_range(0..120) * MINUTE,
            };
            let mut p = Vec::with_capacity(150);
            let _ = write!(
                p,
                r#"{{"stream":"leak","ts":{ts},"monitor_id":"{id}","main_id":"{main}","leak_score":{score:.1},"lat":{lat:.6},"lon":{lon:.6}}}"#
            );
            leak.push((ts, LEAK, p));
        }
    }
    leak.sort_by_key(|(ts, _, _)| *ts);
    let closed = [
        ("cc-2025-1102", "cam-0047", "illegal_stall", 400),
        ("cc-2026-0413", "cam-0007", "illegal_stall", 90),
        ("cc-2026-0815", "cam-0021", "exposed_garbage", 30),
        ("cc-2026-1020", "cam-0100", "smoke", 10),
    ];
    let archive = closed.iter().map(|&(case, camera, class, days_ago)| {
        let ts = midnight - days_ago * DAY + 10 * 60 * MINUTE;
        let mut p = Vec::with_capacity(120);
        let _ = write!(
            p,
            r#"{{"stream":"closed_cases","ts":{ts},"case_id":"{case}","camera_id":"{camera}","class":"{class}"}}"#
        );
        (ts, CLOSED_CASES, p)
    });
    leak.into_iter().chain(archive).map(|(_, stream, p)| (stream, p)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_collapse_falls_thirty_percent_in_two_minutes_and_recovers() {
        assert_eq!(collapse_fraction(-1), 1.0);
        assert!((collapse_fraction(MINUTE) - 0.85).abs() < 1e-9);
        assert_eq!(collapse_fraction(10 * MINUTE), 0.7);
        assert!((collapse_fraction(19 * MINUTE + 30 * SECOND) - 0.85).abs() < 1e-9);
        assert_eq!(collapse_fraction(22 * MINUTE), 1.0);
    }
}
