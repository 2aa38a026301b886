//! The example city: a seeded generator of sensor, GPS and video-AI detection events.
//!
//! The same seed and settings always give the same events, byte for byte. Devices report
//! on fixed periods with a per-device phase; event times get a little jitter backwards
//! (within the streams' allowed out-of-orderness), and a seeded set of anomalies is
//! injected so that every rule of the example pack fires in a default run:
//!
//! | scenario (domain.md §2)            | injected as                                        |
//! |------------------------------------|----------------------------------------------------|
//! | #1 methane build-up                | CH₄ ramps to 25–60 % LEL for 4–12 min              |
//! | #1 a single spike (must not fire)  | one reading at 30 % LEL                            |
//! | #4 rain-pipe level rising          | a storm raises pipe levels 30–60 cm in 10 min      |
//! | #5 road ponding                    | ponding points reach 18–40 cm                      |
//! | #7 heating supply low / silent     | supply drops to 70–78 °C for 45 min; one station stops for 25 min |
//! | #9 manhole cover tilt              | covers tilt 18–35°                                 |
//! | #10 crowd over capacity            | people count ≥ 85 % of zone capacity for 6 min     |
//! | #14 illegal stall                  | a camera sees a stall every minute for 12 min      |
//! | device offline                     | sensors, one camera and one vehicle stop for good  |
//! | #12 sweeping too fast              | sanitation vehicles at 20–30 km/h for 3 min        |
//! | bad input                          | ~0.05 % malformed rows, some late rows             |
//!
//! and, for the sequence rules, from a random stream of their own ([`extras`]):
//!
//! | scenario (domain.md §2)            | injected as                                        |
//! |------------------------------------|----------------------------------------------------|
//! | #4/#5 rain then ponding            | rain gauges beside the ponding points: 35–60 mm/h before the storm |
//! | #2 digging without a permit        | six site cameras see an excavator on a gas-pipeline buffer; four permits check in, one too late, one never |
//! | #3 hidden leak                     | leak-logger nights: one logger high three nights in a row, two neighbours the same night |
//! | #7 heating pressure collapse       | three of 40 pressure sensors fall 30 % in 2 min    |
//! | #11 no disposal site               | two muck trucks leave their site and drive 1.1 km north of their route for 150 min |
//! | #16 repeat offence                 | the case archive's closed cases (one older than 12 months) |
//!
//! Sizes (scale 1): 800 sensors every 30 s, 133 vehicles every 10 s, 133 cameras with a
//! people count and a detection a minute each — 60 % sensor, 30 % GPS and 10 % detection
//! events, about 44 events per second of event time.

use std::io::Write;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::city_map::{self, CENTER};

mod extras;

/// Streams the generator produces, in this order of indexes.
pub const STREAMS: [&str; 6] = ["sensor", "gps", "detection", "permits", "leak", "closed_cases"];

const SECOND: i64 = 1000;
const MINUTE: i64 = 60 * SECOND;

/// Generator settings (see the config's `source.generator`).
#[derive(Debug, Clone)]
pub struct GeneratorSettings {
    /// Seed.
    pub seed: u64,
    /// Event time of the first tick (ms).
    pub start_ms: i64,
    /// Span of event time to simulate (ms).
    pub duration_ms: i64,
    /// Multiplies device counts.
    pub scale: u32,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum SensorKind {
    Gas,
    RainPipe,
    Ponding,
    Heating,
    Manhole,
}

impl SensorKind {
    fn name(self) -> &'static str {
        match self {
            SensorKind::Gas => "gas",
            SensorKind::RainPipe => "rain_pipe",
            SensorKind::Ponding => "ponding",
            SensorKind::Heating => "heating",
            SensorKind::Manhole => "manhole",
        }
    }
    fn metric(self) -> &'static str {
        match self {
            SensorKind::Gas => "ch4_lel",
            SensorKind::RainPipe => "level_cm",
            SensorKind::Ponding => "ponding_cm",
            SensorKind::Heating => "supply_temp_c",
            SensorKind::Manhole => "tilt_deg",
        }
    }
    fn prefix(self) -> &'static str {
        match self {
            SensorKind::Gas => "gas",
            SensorKind::RainPipe => "rp",
            SensorKind::Ponding => "pd",
            SensorKind::Heating => "hs",
            SensorKind::Manhole => "mh",
        }
    }
}

/// A time-bounded deviation of one device.
#[derive(Debug, Clone, Copy)]
struct Episode {
    start: i64,
    end: i64,
    /// Target value (sensor) or speed (vehicle) or occupancy fraction (camera).
    level: f64,
}

impl Episode {
    fn active(&self, t: i64) -> bool {
        t >= self.start && t < self.end
    }
}

#[derive(Debug)]
struct Sensor {
    id: String,
    kind: SensorKind,
    period: i64,
    phase: i64,
    lat: f64,
    lon: f64,
    episodes: Vec<Episode>,
    /// Silent in [from, to).
    silent: Option<(i64, i64)>,
    spike_at: Option<i64>,
}

#[derive(Debug)]
struct Vehicle {
    id: String,
    kind: &'static str,
    lat: f64,
    lon: f64,
    heading: f64,
    phase: i64,
    episodes: Vec<Episode>,
    silent_from: Option<i64>,
    /// Muck trucks drive an approved route back and forth.
    route: Option<(usize, f64)>,
    /// Time-bounded departures from normal motion (violations).
    overrides: Vec<Override>,
}

/// Where a vehicle is during an override.
#[derive(Debug, Clone, Copy)]
enum Place {
    /// Parked or stopped at a fixed point.
    Fixed([f64; 2]),
    /// On its route, shifted north by this many degrees of latitude.
    OffRoute(f64),
}

#[derive(Debug, Clone, Copy)]
struct Override {
    start: i64,
    end: i64,
    place: Place,
    speed: f64,
}

#[derive(Debug)]
struct Camera {
    id: String,
    zone: String,
    capacity: i64,
    lat: f64,
    lon: f64,
    phase: i64,
    crowd: Vec<Episode>,
    /// Periods in which the camera sees an illegal stall every minute.
    stall: Vec<Episode>,
    silent_from: Option<i64>,
}

/// The example-city event generator. Call [`CityGenerator::next_event`] until it returns
/// `None`.
#[derive(Debug)]
pub struct CityGenerator {
    rng: ChaCha8Rng,
    settings: GeneratorSettings,
    sensors: Vec<Sensor>,
    vehicles: Vec<Vehicle>,
    cameras: Vec<Camera>,
    /// Current tick (event time, ms) and the events due in it.
    tick: i64,
    pending: Vec<(usize, Vec<u8>)>,
    cursor: usize,
    buf: Vec<u8>,
    generated: u64,
    routes: Vec<(String, Vec<[f64; 2]>)>,
    route_len: Vec<f64>,
    extras: extras::Extras,
}

const DETECTION_CLASSES: [&str; 5] =
    ["illegal_stall", "exposed_garbage", "road_blocking_parking", "muck_spill", "smoke"];

impl CityGenerator {
    /// Builds the city for `settings`.
    pub fn new(settings: GeneratorSettings) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(settings.seed);
        let s = settings.scale.max(1) as usize;
        let start = settings.start_ms;
        let end = start + settings.duration_ms;
        let span = settings.duration_ms.max(MINUTE);
        let at = |frac: f64| start + (span as f64 * frac) as i64;
        let mut sensors = Vec::new();
        let counts = [
            (SensorKind::Gas, 240 * s),
            (SensorKind::RainPipe, 80 * s),
            (SensorKind::Ponding, 80 * s),
            (SensorKind::Heating, 160 * s),
            (SensorKind::Manhole, 240 * s),
        ];
        for (kind, n) in counts {
            for i in 0..n {
                sensors.push(Sensor {
                    id: format!("{}-{:04}", kind.prefix(), i),
                    kind,
                    period: 30 * SECOND,
                    phase: rng.random_range(0..30) * SECOND,
                    lat: CENTER.0 + rng.random_range(-0.08..0.08),
                    lon: CENTER.1 + rng.random_range(-0.1..0.1),
                    episodes: Vec::new(),
                    silent: None,
                    spike_at: None,
                });
            }
        }
        // Anomalies, chosen by index so they are spread over kinds and time.
        let of_kind = |sensors: &[Sensor], k: SensorKind| -> Vec<usize> {
            sensors.iter().enumerate().filter(|(_, d)| d.kind == k).map(|(i, _)| i).collect()
        };
        let gas = of_kind(&sensors, SensorKind::Gas);
        for (n, &i) in gas.iter().step_by(40).enumerate() {
            let st = at(0.1 + 0.12 * (n % 7) as f64) + rng.random_range(0..10) * MINUTE;
            let len = rng.random_range(4..12) * MINUTE;
            let level = if n % 2 == 0 { rng.random_range(25.0..45.0) } else { rng.random_range(52.0..60.0) };
            sensors[i].episodes.push(Episode { start: st, end: st + len, level });
        }
        sensors[gas[7]].spike_at = Some(at(0.33));
        let rp = of_kind(&sensors, SensorKind::RainPipe);
        let storm = at(0.4);
        for (n, &i) in rp.iter().step_by(10).enumerate() {
            let rise = if n % 2 == 0 { rng.random_range(30.0..45.0) } else { rng.random_range(50.0..60.0) };
            sensors[i].episodes.push(Episode {
                start: storm + (n as i64) * MINUTE,
                end: storm + 60 * MINUTE,
                level: rise,
            });
        }
        let pd = of_kind(&sensors, SensorKind::Ponding);
        for (n, &i) in pd.iter().step_by(12).enumerate() {
            let depth = if n % 2 == 0 { rng.random_range(18.0..25.0) } else { rng.random_range(32.0..40.0) };
            sensors[i].episodes.push(Episode { start: storm + 10 * MINUTE, end: storm + 70 * MINUTE, level: depth });
        }
        let hs = of_kind(&sensors, SensorKind::Heating);
        for (n, &i) in hs.iter().step_by(50).enumerate() {
            let st = at(0.2 + 0.2 * n as f64);
            sensors[i].episodes.push(Episode { start: st, end: st + 45 * MINUTE, level: rng.random_range(70.0..78.0) });
        }
        let silent_hs = hs[hs.len() / 2 + 1];
        sensors[silent_hs].silent = Some((at(0.55), at(0.55) + 25 * MINUTE));
        let mh = of_kind(&sensors, SensorKind::Manhole);
        for (n, &i) in mh.iter().step_by(60).enumerate() {
            let st = at(0.15 + 0.2 * n as f64);
            sensors[i].episodes.push(Episode { start: st, end: st + 20 * MINUTE, level: rng.random_range(18.0..35.0) });
        }
        // Devices that go offline for good (device-offline rules).
        for &i in [gas[3], mh[5], rp[2]].iter() {
            sensors[i].silent = Some((at(0.6), end + MINUTE));
        }

        let routes: Vec<(String, Vec<[f64; 2]>)> = city_map::routes();
        let route_len: Vec<f64> = routes.iter().map(|(_, l)| city_map::length_m(l)).collect();
        let mut vehicles = Vec::new();
        for (kind, n) in [("muck_truck", 70 * s), ("sanitation", 40 * s), ("bike", 23 * s)] {
            for i in 0..n {
                vehicles.push(Vehicle {
                    id: format!("{}-{:04}", &kind[..3], i),
                    kind,
                    lat: CENTER.0 + rng.random_range(-0.05..0.05),
                    lon: CENTER.1 + rng.random_range(-0.06..0.06),
                    heading: rng.random_range(0.0..std::f64::consts::TAU),
                    phase: rng.random_range(0..10) * SECOND,
                    episodes: Vec::new(),
                    silent_from: None,
                    route: (kind == "muck_truck").then(|| (i % routes.len(), rng.random_range(0.0..20_000.0))),
                    overrides: Vec::new(),
                });
            }
        }
        // Muck-truck violations: off the approved route, stopped away from any site
        // (suspected dumping), a detour through the restricted old town.
        for (n, v) in vehicles.iter_mut().filter(|v| v.kind == "muck_truck").enumerate() {
            let st = at(0.2 + 0.07 * (n / 10) as f64);
            match n % 10 {
                3 => v.overrides.push(Override {
                    start: st,
                    end: st + 4 * MINUTE,
                    place: Place::OffRoute(0.003),
                    speed: 35.0,
                }),
                5 => v.overrides.push(Override {
                    start: st,
                    end: st + 7 * MINUTE,
                    place: Place::OffRoute(0.0025),
                    speed: 0.5,
                }),
                7 => v.overrides.push(Override {
                    start: st,
                    end: st + 3 * MINUTE,
                    place: Place::Fixed(city_map::OLD_TOWN),
                    speed: 38.0,
                }),
                _ => {}
            }
        }
        // Two trucks load at their construction site until `leave`, then drive 1.1 km north
        // of their route for 150 minutes: they never reach a disposal site ("two points one
        // line", #11). Their route is phased so that they leave from its start, the site.
        for (n, v) in vehicles.iter_mut().filter(|v| v.kind == "muck_truck").enumerate() {
            let leave = match n {
                1 => at(0.03),
                41 => at(0.08),
                _ => continue,
            };
            let Some((r, offset)) = &mut v.route else { continue };
            *offset = (-35.0 / 3.6 * ((leave - start) as f64 / 1000.0)).rem_euclid(2.0 * route_len[*r]);
            let site = routes[*r].1[0];
            v.overrides.push(Override { start, end: leave, place: Place::Fixed(site), speed: 0.0 });
            v.overrides.push(Override {
                start: leave,
                end: leave + 150 * MINUTE,
                place: Place::OffRoute(0.01),
                speed: 35.0,
            });
        }
        // Shared bikes: some left in no-parking zones, and a crowd in one parking fence.
        let no_parking = city_map::no_parking();
        let fence = city_map::parking_fences()[0].0;
        let crowd_start = at(0.5);
        for (n, v) in vehicles.iter_mut().filter(|v| v.kind == "bike").enumerate() {
            if n % 8 == 1 {
                let z = no_parking[(n / 8) % no_parking.len()];
                let st = at(0.15 + 0.1 * (n / 8) as f64);
                v.overrides.push(Override {
                    start: st,
                    end: st + 15 * MINUTE,
                    place: Place::Fixed([z.lon, z.lat]),
                    speed: 0.0,
                });
            }
            if n < 18 {
                let spot = [fence.lon + (n as f64 - 9.0) * 0.00003, fence.lat + ((n % 3) as f64 - 1.0) * 0.00005];
                v.overrides.push(Override {
                    start: crowd_start,
                    end: crowd_start + 25 * MINUTE,
                    place: Place::Fixed(spot),
                    speed: 0.0,
                });
            }
        }
        for (n, v) in vehicles.iter_mut().filter(|v| v.kind == "sanitation").step_by(15).enumerate() {
            let st = at(0.25 + 0.15 * n as f64);
            v.episodes.push(Episode { start: st, end: st + 3 * MINUTE, level: rng.random_range(20.0..30.0) });
        }
        for (n, v) in vehicles.iter_mut().filter(|v| v.kind == "muck_truck").step_by(25).enumerate() {
            let st = at(0.3 + 0.1 * n as f64);
            v.episodes.push(Episode { start: st, end: st + 2 * MINUTE, level: rng.random_range(72.0..85.0) });
        }
        if let Some(v) = vehicles.iter_mut().find(|v| v.kind == "muck_truck") {
            v.silent_from = Some(at(0.7));
        }

        let mut cameras = Vec::new();
        for i in 0..(133 * s) {
            cameras.push(Camera {
                id: format!("cam-{i:04}"),
                zone: format!("park-{:02}", i % 30),
                capacity: rng.random_range(200..2000),
                lat: CENTER.0 + rng.random_range(-0.08..0.08),
                lon: CENTER.1 + rng.random_range(-0.1..0.1),
                phase: rng.random_range(0..60) * SECOND,
                crowd: Vec::new(),
                stall: Vec::new(),
                silent_from: None,
            });
        }
        for (n, c) in cameras.iter_mut().step_by(30).enumerate() {
            let st = at(0.3 + 0.15 * n as f64);
            c.crowd.push(Episode { start: st, end: st + 6 * MINUTE, level: rng.random_range(0.86..0.98) });
        }
        for (n, c) in cameras.iter_mut().skip(7).step_by(40).enumerate() {
            let st = at(0.2 + 0.2 * n as f64);
            c.stall.push(Episode { start: st, end: st + 12 * MINUTE, level: 0.92 });
        }
        if let Some(c) = cameras.last_mut() {
            c.silent_from = Some(at(0.5));
        }

        let ponding: Vec<(f64, f64)> =
            sensors.iter().filter(|d| d.kind == SensorKind::Ponding).map(|d| (d.lat, d.lon)).collect();
        let extras = extras::Extras::new(&settings, &ponding, storm);
        CityGenerator {
            rng,
            settings,
            sensors,
            vehicles,
            cameras,
            tick: start,
            pending: Vec::new(),
            cursor: 0,
            buf: Vec::new(),
            generated: 0,
            routes,
            route_len,
            extras,
        }
    }

    /// Events produced so far.
    pub fn generated(&self) -> u64 {
        self.generated
    }

    /// Rough number of events the whole run produces (for progress bars).
    pub fn estimated_total(&self) -> u64 {
        let secs = (self.settings.duration_ms / SECOND) as u64;
        (self.sensors.len() as u64 * secs / 30)
            + (self.vehicles.len() as u64 * secs / 10)
            + (self.cameras.len() as u64 * secs * 2 / 60)
            + self.extras.estimated_total(self.settings.duration_ms)
    }

    /// The next event as (stream index into [`STREAMS`], JSON payload), or None at the end.
    pub fn next_event(&mut self) -> Option<(usize, &[u8])> {
        let end = self.settings.start_ms + self.settings.duration_ms;
        while self.cursor >= self.pending.len() {
            if self.tick >= end {
                return None;
            }
            self.pending.clear();
            self.cursor = 0;
            self.fill_tick();
            self.tick += SECOND;
        }
        let (stream, _) = &self.pending[self.cursor];
        let stream = *stream;
        self.buf.clear();
        std::mem::swap(&mut self.buf, &mut self.pending[self.cursor].1);
        self.cursor += 1;
        self.generated += 1;
        Some((stream, &self.buf))
    }

    /// The event time to write for a reading taken at tick `t`, and whether to damage it.
    fn stamp(&mut self, t: i64) -> (i64, Fault) {
        let roll: f64 = self.rng.random_range(0.0..1.0);
        if roll < 0.0002 {
            return (t, Fault::Truncated);
        }
        if roll < 0.0004 {
            return (t, Fault::BadTime);
        }
        if roll < 0.0005 {
            // Ten minutes behind: far outside the out-of-orderness bound, so late.
            return (t - 10 * MINUTE, Fault::None);
        }
        // Up to 3 s backwards: inside every stream's out-of-orderness bound.
        let jitter = if self.rng.random_bool(0.2) { self.rng.random_range(0..3000) } else { 0 };
        (t - jitter, Fault::None)
    }

    fn fill_tick(&mut self) {
        let t = self.tick;
        let elapsed = t - self.settings.start_ms;
        for i in 0..self.sensors.len() {
            let d = &self.sensors[i];
            if (elapsed - d.phase).rem_euclid(d.period) != 0 || d.silent.is_some_and(|(a, b)| t >= a && t < b) {
                continue;
            }
            let value = self.sensor_value(i, t);
            let (ts, fault) = self.stamp(t);
            let d = &self.sensors[i];
            let p = sensor_payload(ts, &d.id, d.kind.name(), d.kind.metric(), value, (d.lat, d.lon));
            self.push(0, p, fault);
        }
        for i in 0..self.vehicles.len() {
            let v = &self.vehicles[i];
            if (elapsed - v.phase).rem_euclid(10 * SECOND) != 0 || v.silent_from.is_some_and(|s| t >= s) {
                continue;
            }
            let base = match v.kind {
                "muck_truck" => 35.0,
                "sanitation" => 8.0,
                _ => 12.0,
            };
            let speed = match v.episodes.iter().find(|e| e.active(t)) {
                Some(e) => e.level + self.rng.random_range(-1.0..1.0),
                None => (base + self.rng.random_range(-5.0..5.0_f64)).max(0.0),
            };
            let turn = self.rng.random_range(-0.3..0.3);
            let v = &mut self.vehicles[i];
            let on_route = v.route.map(|(r, offset)| {
                // Back and forth along the route at the base speed.
                let line = &self.routes[r].1;
                let len = self.route_len[r];
                let s = (offset + base / 3.6 * ((t - self.settings.start_ms) as f64 / 1000.0)).rem_euclid(2.0 * len);
                city_map::along(line, if s <= len { s } else { 2.0 * len - s })
            });
            let (mut lon, mut lat, mut speed) = match on_route {
                Some([lon, lat]) => (lon, lat, speed),
                None => {
                    v.heading += turn;
                    let step = speed / 3.6 * 10.0 / 111_000.0;
                    v.lat += step * v.heading.cos();
                    v.lon += step * v.heading.sin();
                    (v.lon, v.lat, speed)
                }
            };
            if let Some(o) = v.overrides.iter().find(|o| t >= o.start && t < o.end) {
                match o.place {
                    Place::Fixed([x, y]) => (lon, lat) = (x, y),
                    Place::OffRoute(dlat) => {
                        // Stopped vehicles stay where they stopped.
                        if o.speed < 2.0
                            && let Some((r, offset)) = v.route
                        {
                            let len = self.route_len[r];
                            let s = (offset + base / 3.6 * ((o.start - self.settings.start_ms) as f64 / 1000.0))
                                .rem_euclid(2.0 * len);
                            [lon, lat] = city_map::along(&self.routes[r].1, if s <= len { s } else { 2.0 * len - s });
                        }
                        lat += dlat;
                    }
                }
                speed = o.speed;
            }
            let route_id = v.route.map(|(r, _)| r);
            let (ts, fault) = self.stamp(t);
            let v = &self.vehicles[i];
            let mut p = Vec::with_capacity(180);
            let _ = write!(
                p,
                r#"{{"stream":"gps","ts":{},"vehicle_id":"{}","kind":"{}","lat":{:.6},"lon":{:.6},"speed_kmh":{:.1},"heading":{:.0}"#,
                ts,
                v.id,
                v.kind,
                lat,
                lon,
                speed,
                v.heading.to_degrees().rem_euclid(360.0)
            );
            match route_id {
                Some(r) => {
                    let _ = write!(p, r#","route_id":"{}"}}"#, self.routes[r].0);
                }
                None => p.push(b'}'),
            }
            self.push(1, p, fault);
        }
        for i in 0..self.cameras.len() {
            let c = &self.cameras[i];
            if c.silent_from.is_some_and(|s| t >= s) {
                continue;
            }
            let phase = c.phase;
            if (elapsed - phase).rem_euclid(MINUTE) == 0 {
                let crowd = c.crowd.iter().find(|e| e.active(t)).map(|e| e.level);
                let frac = match crowd {
                    Some(level) => level,
                    None => self.rng.random_range(0.1..0.6),
                };
                let c = &self.cameras[i];
                let count = (c.capacity as f64 * frac) as i64;
                let (ts, fault) = self.stamp(t);
                let c = &self.cameras[i];
                let p = people_count_payload(ts, &c.id, count, c.capacity, &c.zone, (c.lat, c.lon));
                self.push(2, p, fault);
            }
            if (elapsed - phase - 30 * SECOND).rem_euclid(MINUTE) == 0 {
                let stall = self.cameras[i].stall.iter().find(|e| e.active(t)).map(|e| e.level);
                let (class, confidence) = match stall {
                    Some(conf) => ("illegal_stall", conf),
                    None => (
                        DETECTION_CLASSES[self.rng.random_range(0..DETECTION_CLASSES.len())],
                        self.rng.random_range(0.5..0.85),
                    ),
                };
                let (ts, fault) = self.stamp(t);
                let c = &self.cameras[i];
                let mut p = Vec::with_capacity(200);
                let _ = write!(
                    p,
                    r#"{{"stream":"detection","ts":{},"camera_id":"{}","class":"{}","confidence":{:.2},"zone_id":"{}","lat":{:.6},"lon":{:.6}}}"#,
                    ts, c.id, class, confidence, c.zone, c.lat, c.lon
                );
                self.push(2, p, fault);
            }
        }
        self.extras.fill_tick(t, &mut self.pending);
    }

    fn sensor_value(&mut self, i: usize, t: i64) -> f64 {
        let noise: f64 = self.rng.random_range(-1.0..1.0);
        let d = &self.sensors[i];
        let ep = d.episodes.iter().find(|e| e.active(t)).copied();
        if d.spike_at.is_some_and(|s| t >= s && t < s + d.period) {
            return 30.0;
        }
        match d.kind {
            SensorKind::Gas => ep.map_or(2.0 + noise * 1.5, |e| e.level + noise),
            SensorKind::RainPipe => {
                let base = 25.0 + noise * 2.0;
                match ep {
                    // Rises linearly over 10 minutes, then holds.
                    Some(e) => base + e.level * ((t - e.start) as f64 / (10 * MINUTE) as f64).min(1.0),
                    None => base,
                }
            }
            SensorKind::Ponding => ep.map_or((noise * 0.5).max(0.0), |e| e.level + noise),
            SensorKind::Heating => ep.map_or(85.0 + noise, |e| e.level + noise),
            SensorKind::Manhole => ep.map_or(1.0 + noise * 0.5, |e| e.level + noise),
        }
    }

    fn push(&mut self, stream: usize, mut payload: Vec<u8>, fault: Fault) {
        match fault {
            Fault::None => {}
            Fault::Truncated => payload.truncate(payload.len() / 2),
            Fault::BadTime => {
                payload = String::from_utf8_lossy(&payload)
                    .replacen(r#""ts":"#, r#""ts":"yesterday","was":"#, 1)
                    .into_bytes();
            }
        }
        self.pending.push((stream, payload));
    }
}

/// A sensor reading's JSON line.
fn sensor_payload(ts: i64, id: &str, kind: &str, metric: &str, value: f64, (lat, lon): (f64, f64)) -> Vec<u8> {
    let mut p = Vec::with_capacity(160);
    let _ = write!(
        p,
        r#"{{"stream":"sensor","ts":{ts},"device_id":"{id}","kind":"{kind}","metric":"{metric}","value":{value:.2},"lat":{lat:.6},"lon":{lon:.6}}}"#
    );
    p
}

/// A camera's people-count detection as a JSON line.
fn people_count_payload(ts: i64, id: &str, count: i64, capacity: i64, zone: &str, (lat, lon): (f64, f64)) -> Vec<u8> {
    let mut p = Vec::with_capacity(200);
    let _ = write!(
        p,
        r#"{{"stream":"detection","ts":{ts},"camera_id":"{id}","class":"people_count","confidence":0.99,"count":{count},"capacity":{capacity},"zone_id":"{zone}","lat":{lat:.6},"lon":{lon:.6}}}"#
    );
    p
}

/// Damage injected into a small share of payloads so the dead-letter path is exercised.
#[derive(Debug, Clone, Copy)]
enum Fault {
    None,
    Truncated,
    BadTime,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(seed: u64) -> GeneratorSettings {
        GeneratorSettings { seed, start_ms: 1_800_000_000_000, duration_ms: 10 * MINUTE, scale: 1 }
    }

    fn collect(seed: u64) -> Vec<(usize, Vec<u8>)> {
        let mut g = CityGenerator::new(settings(seed));
        let mut out = Vec::new();
        while let Some((s, p)) = g.next_event() {
            out.push((s, p.to_vec()));
        }
        out
    }

    #[test]
    fn same_seed_same_events_and_realistic_mix() {
        let a = collect(7);
        assert_eq!(a, collect(7));
        assert_ne!(a, collect(8));
        let n = a.len() as f64;
        let share = |s: usize| a.iter().filter(|(x, _)| *x == s).count() as f64 / n;
        assert!((0.5..0.7).contains(&share(0)), "sensor share {}", share(0));
        assert!((0.2..0.4).contains(&share(1)), "gps share {}", share(1));
        assert!((0.05..0.15).contains(&share(2)), "detection share {}", share(2));
        let g = CityGenerator::new(settings(7));
        let est = g.estimated_total() as f64;
        assert!((est - n).abs() / n < 0.1, "estimate {est} vs {n}");
    }
}
