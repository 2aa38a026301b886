//! `gridwatch bench pipeline`: the full engine on an in-memory dataset.
//!
//! 1. **Dataset**: the example city's generator (seeded; sensor 60 %, GPS 30 %, detection
//!    10 %) until N events, held in memory as raw JSON payloads.
//! 2. **Parse-only baseline**: sonic-rs (the fastest JSON parser available to the project)
//!    parses the same payloads into typed structs on the same number of threads.
//! 3. **Max rate**: decode → partition → rules → alerts → a counting sink, as fast as it
//!    goes; events/s, alerts, per-stage time, and event → alert latency.
//! 4. **Fixed rate**: the same at a paced input rate (batches linger at most 5 ms), where
//!    latency is meaningful.
//!
//! Latency is measured for alerts raised by an event (threshold, geofence — the alert's key
//! and event time identify the event): from the moment the event was pushed to the moment
//! the sink received the alert.

use std::borrow::Cow;
use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use gridwatch_connectors::generator::{self, CityGenerator, GeneratorSettings};
use gridwatch_engine::pipeline::PipelineReport;
use gridwatch_engine::{Output, Pipeline, PipelineOptions, Plan};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

use super::{cpu_seconds, progress, reset_peak_rss, rss};
use crate::cli::BenchPipelineArgs;
use crate::produce::{entity_key, event_time};
use crate::run::generator_settings;

/// Events of the 6 h city at scale 1, to size the generator's run.
const CITY_EVENTS_PER_6H: u64 = 957_118;

struct Dataset {
    bytes: Vec<u8>,
    /// (stream index in the plan, index in the generator's STREAMS, start, end) of each payload.
    events: Vec<(usize, usize, usize, usize)>,
    /// Entity key hash and event time of each payload, to find the event behind an alert.
    index: HashMap<(u64, i64), u32>,
}

impl Dataset {
    fn payload(&self, i: usize) -> (usize, &[u8]) {
        let (s, _, a, b) = self.events[i];
        (s, &self.bytes[a..b])
    }
}

#[derive(Debug, Default, Serialize)]
struct RunResult {
    events_per_s: f64,
    seconds: f64,
    alerts: u64,
    latency_alerts: u64,
    latency_us_p50: u64,
    latency_us_p99: u64,
    latency_us_p999: u64,
    latency_us_max: u64,
    /// Ingest thread: everything but sequencing and waiting for workers — handing payloads
    /// over, and waiting for the decoders (or decoding, with `--decoders 0`), s.
    ingest_decode_s: f64,
    /// Ingest thread: sequencing decoded batches (watermarks, lateness) and sending them, s.
    ingest_route_s: f64,
    /// Ingest thread: waiting for full worker queues, s.
    ingest_wait_s: f64,
    /// Decoding and splitting rows by partition, s: on the ingest thread, then per decoder
    /// thread.
    decoder_busy_s: Vec<f64>,
    /// Per worker: evaluating rules, s.
    worker_busy_s: Vec<f64>,
    /// CPU time of the whole process during the run (every thread) per event, µs.
    cpu_us_per_event: f64,
    keys_with_state: usize,
}

#[derive(Debug, Serialize)]
struct Report {
    date: String,
    events: u64,
    rules: usize,
    workers: usize,
    decoders: usize,
    batch_size: usize,
    linger_ms: u64,
    parse_baseline_events_per_s: f64,
    parse_baseline_threads: usize,
    /// CPU time of the baseline (all threads) per event, µs.
    parse_baseline_cpu_us_per_event: f64,
    max_rate: RunResult,
    fraction_of_parse_baseline: f64,
    fixed_rate: Option<RunResult>,
    fixed_rate_input: Option<u64>,
    rss_dataset_mb: f64,
    /// Peak resident memory of the process, including the dataset's generation.
    rss_peak_mb: f64,
    /// Peak resident memory while the pipeline ran, above what was resident when it
    /// started (the dataset, held throughout): the engine's own memory. `None` where the
    /// peak cannot be reset.
    rss_engine_mb: Option<f64>,
}

pub fn run(args: BenchPipelineArgs) -> Result<ExitCode> {
    let synthetic_dir = match args.synthetic_rules {
        Some(n) => Some(synthetic_pack(n)?),
        None => None,
    };
    let rule_paths: Vec<std::path::PathBuf> = match &synthetic_dir {
        Some(dir) => vec![dir.path().to_path_buf()],
        None => args.rules.clone(),
    };
    let loaded = if rule_paths.is_empty() {
        gridwatch_rules::load_config(&args.config)
    } else {
        gridwatch_rules::load_rules_only(&args.config, &rule_paths)
    };
    let (config, plan) = loaded.into_result().map_err(|e| anyhow!("{e}"))?;
    let plan = Arc::new(plan);
    let workers = args.workers.unwrap_or_else(|| PipelineOptions::default().workers).max(1);
    let mut options = PipelineOptions { workers, batch_size: args.batch_size, ..Default::default() };
    if let Some(d) = args.decoders.or(config.engine.decoders) {
        options.decoders = d;
    }
    if let Some(ms) = args.linger_ms.or(config.engine.linger_ms) {
        options.linger = Duration::from_millis(ms.max(0) as u64);
    }

    let (rss_before, _) = rss();
    let mut settings = generator_settings(&config, &args.generator)?;
    let per_6h = CITY_EVENTS_PER_6H * u64::from(settings.scale.max(1));
    settings.duration_ms = ((args.events as f64 / per_6h as f64) * 6.0 * 3_600_000.0 * 1.02) as i64 + 60_000;
    let data = build_dataset(&plan, settings, args.events)?;
    let (rss_data, _) = rss();
    eprintln!("dataset: {} events, {:.0} MB of JSON", data.events.len(), data.bytes.len() as f64 / 1e6);

    // As many parser threads as the pipeline has threads doing the same kind of work.
    let baseline_threads = workers.max(options.decoders).max(1);
    let cpu_before = cpu_seconds();
    let baseline = parse_baseline(&data, baseline_threads)?;
    let baseline_cpu_us = (cpu_seconds() - cpu_before) * 1e6 / data.events.len() as f64;
    eprintln!("parse-only baseline (sonic-rs, {baseline_threads} threads): {baseline:.0} events/s");

    // The generator's working memory (large at high --scale) must not count as the engine's.
    let (_, peak_before_runs) = rss();
    let peak_reset = reset_peak_rss();
    let (rss_run_start, _) = rss();
    let max = run_pipeline(&plan, &options, &data, None)?;
    eprintln!(
        "full pipeline, max rate: {:.0} events/s ({:.0} % of the parse baseline), {} alerts",
        max.events_per_s,
        100.0 * max.events_per_s / baseline,
        max.alerts
    );
    let fixed = match args.rate {
        Some(rate) => {
            let r = run_pipeline(&plan, &options, &data, Some(rate))?;
            eprintln!(
                "fixed rate {rate}/s: latency p50 {} µs, p99 {} µs, p99.9 {} µs ({} alerts)",
                r.latency_us_p50, r.latency_us_p99, r.latency_us_p999, r.latency_alerts
            );
            Some(r)
        }
        None => None,
    };
    let (_, run_peak) = rss();
    let peak = run_peak.max(peak_before_runs);
    let report = Report {
        date: chrono::Utc::now().format("%Y-%m-%d").to_string(),
        events: data.events.len() as u64,
        rules: plan.rules.len(),
        workers,
        decoders: options.decoders,
        batch_size: args.batch_size,
        linger_ms: options.linger.as_millis() as u64,
        parse_baseline_events_per_s: baseline,
        parse_baseline_threads: baseline_threads,
        parse_baseline_cpu_us_per_event: baseline_cpu_us,
        fraction_of_parse_baseline: max.events_per_s / baseline,
        max_rate: max,
        fixed_rate: fixed,
        fixed_rate_input: args.rate,
        rss_dataset_mb: rss_data.saturating_sub(rss_before) as f64 / 1e6,
        rss_peak_mb: peak as f64 / 1e6,
        rss_engine_mb: peak_reset.then(|| run_peak.saturating_sub(rss_run_start) as f64 / 1e6),
    };
    print_table(&report);
    let json = serde_json::to_string(&report)?;
    if let Some(path) = &args.json {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        writeln!(f, "{json}")?;
    } else {
        println!("{json}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes `n` threshold rules on the sensor stream: each watches one metric for a high
/// value (a different bound per rule), like a city with a rule per asset class and zone.
fn synthetic_pack(n: usize) -> Result<tempfile::TempDir> {
    const METRICS: [(&str, f64); 5] =
        [("ch4_lel", 60.0), ("level_cm", 150.0), ("ponding_cm", 40.0), ("supply_temp_c", 120.0), ("tilt_deg", 45.0)];
    let dir = tempfile::tempdir()?;
    let mut text = String::from("rules:\n");
    for i in 0..n {
        let (metric, base) = METRICS[i % METRICS.len()];
        let bound = base + (i / METRICS.len()) as f64 * 0.5;
        text.push_str(&format!(
            "  - id: synthetic-{i}\n    kind: threshold\n    source: sensor\n    where: metric = '{metric}'\n    condition: value > {bound}\n    severity: info\n    category: bench/synthetic\n"
        ));
    }
    std::fs::write(dir.path().join("synthetic.yaml"), text)?;
    Ok(dir)
}

fn build_dataset(plan: &Plan, settings: GeneratorSettings, n: u64) -> Result<Dataset> {
    let index_of: Vec<Option<usize>> = generator::STREAMS.iter().map(|s| plan.stream_index(s)).collect();
    let key_fields: Vec<(String, String)> = plan
        .streams
        .iter()
        .map(|d| {
            let key = d.key_fields.first().map(|&k| d.fields[k].name.clone()).unwrap_or_default();
            (key, d.fields[d.time_field].name.clone())
        })
        .collect();
    let mut generator = CityGenerator::new(settings);
    let bar = progress(n, "generating the dataset")?;
    let mut data = Dataset { bytes: Vec::with_capacity(n as usize * 150), events: Vec::new(), index: HashMap::new() };
    while (data.events.len() as u64) < n {
        let Some((s, payload)) = generator.next_event() else { break };
        let Some(stream) = index_of[s] else { continue };
        let start = data.bytes.len();
        data.bytes.extend_from_slice(payload);
        let i = data.events.len() as u32;
        data.events.push((stream, s, start, data.bytes.len()));
        let (key, ts) = &key_fields[stream];
        let k = entity_key(payload, key).map(|k| xxh3_64(&k));
        if let (Some(k), Some(t)) = (k, event_time(payload, ts)) {
            data.index.insert((k, t), i);
        }
        if i.is_multiple_of(65_536) {
            bar.set_position(u64::from(i));
        }
    }
    bar.finish_and_clear();
    if (data.events.len() as u64) < n {
        return Err(anyhow!("the generator produced only {} events", data.events.len()));
    }
    Ok(data)
}

// Typed events of the example city, as a hand-written consumer would declare them.
#[derive(Deserialize)]
#[allow(dead_code)]
struct Sensor<'a> {
    ts: i64,
    #[serde(borrow)]
    device_id: Cow<'a, str>,
    #[serde(borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    metric: Cow<'a, str>,
    value: f64,
    lat: Option<f64>,
    lon: Option<f64>,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct Gps<'a> {
    ts: i64,
    #[serde(borrow)]
    vehicle_id: Cow<'a, str>,
    #[serde(borrow)]
    kind: Cow<'a, str>,
    lat: f64,
    lon: f64,
    speed_kmh: f64,
    heading: Option<f64>,
    #[serde(borrow)]
    route_id: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct Detection<'a> {
    ts: i64,
    #[serde(borrow)]
    camera_id: Cow<'a, str>,
    #[serde(borrow)]
    class: Cow<'a, str>,
    confidence: f64,
    count: Option<i64>,
    capacity: Option<i64>,
    #[serde(borrow)]
    zone_id: Option<Cow<'a, str>>,
    lat: Option<f64>,
    lon: Option<f64>,
}

/// Parses every payload into its typed struct on `threads` threads; events/s. Rows that
/// do not parse (the city's injected bad rows) count as parsed: the work was done.
fn parse_baseline(data: &Dataset, threads: usize) -> Result<f64> {
    let names: Vec<&str> = generator::STREAMS.to_vec();
    let chunk = data.events.len().div_ceil(threads);
    let started = Instant::now();
    let checksum: u64 = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let names = &names;
                scope.spawn(move || {
                    let mut sum = 0u64;
                    let end = ((t + 1) * chunk).min(data.events.len());
                    for i in t * chunk..end {
                        let (_, payload) = data.payload(i);
                        let generator_stream = data.events[i].1;
                        let ts = match names.get(generator_stream).copied() {
                            Some("sensor") => {
                                sonic_rs::from_slice::<Sensor<'_>>(payload).map(|e| e.ts + e.value as i64)
                            }
                            Some("gps") => sonic_rs::from_slice::<Gps<'_>>(payload).map(|e| e.ts + e.speed_kmh as i64),
                            _ => sonic_rs::from_slice::<Detection<'_>>(payload).map(|e| e.ts + e.confidence as i64),
                        };
                        sum = sum.wrapping_add(ts.unwrap_or(1) as u64);
                    }
                    sum
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0)).fold(0, u64::wrapping_add)
    });
    let secs = started.elapsed().as_secs_f64();
    std::hint::black_box(checksum);
    Ok(data.events.len() as f64 / secs)
}

fn run_pipeline(plan: &Arc<Plan>, options: &PipelineOptions, data: &Dataset, rate: Option<u64>) -> Result<RunResult> {
    let cpu_before = cpu_seconds();
    let (mut p, rx) = Pipeline::start(plan.clone(), options.clone());
    let epoch = Instant::now();
    let pushed_at: Arc<Vec<AtomicU64>> = Arc::new((0..data.events.len()).map(|_| AtomicU64::new(0)).collect());
    let sink = std::thread::scope(|scope| -> Result<(u64, Histogram<u64>, u64, PipelineReport, f64, f64)> {
        let pushed = pushed_at.clone();
        let index = &data.index;
        let sink = scope.spawn(move || -> Result<(u64, Histogram<u64>, u64)> {
            let mut alerts = 0u64;
            let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
            let mut matched = 0u64;
            for o in rx {
                if let Output::Alerts(list) = o {
                    let now = epoch.elapsed().as_nanos() as u64;
                    alerts += list.len() as u64;
                    for a in &list {
                        if a.notification != 1 || a.state != gridwatch_engine::AlertState::Firing {
                            continue;
                        }
                        if let Some(&i) = index.get(&(xxh3_64(a.key.as_bytes()), a.event_time)) {
                            let at = pushed[i as usize].load(Ordering::Relaxed);
                            if at > 0 && now > at {
                                hist.record(((now - at) / 1_000).max(1))?;
                                matched += 1;
                            }
                        }
                    }
                }
            }
            Ok((alerts, hist, matched))
        });
        let started = Instant::now();
        let mut now_ns = 0;
        for i in 0..data.events.len() {
            let (s, payload) = data.payload(i);
            // At max rate the clock is read every 64 events (a read per event would cost the
            // ingest thread ~5 % of its time); events of one block share its push time.
            if rate.is_some() || i % 64 == 0 {
                now_ns = epoch.elapsed().as_nanos() as u64;
            }
            if let Some(rate) = rate {
                let due = Duration::from_secs_f64(i as f64 / rate as f64);
                while started.elapsed() < due {
                    std::hint::spin_loop();
                }
                if i % 64 == 0 {
                    p.flush_lingering(Instant::now())?;
                }
            }
            pushed_at[i].store(now_ns, Ordering::Relaxed);
            p.push(s, payload)?;
        }
        let ingest = started.elapsed().as_secs_f64();
        let report = p.finish()?;
        let (alerts, hist, matched) = sink.join().map_err(|_| anyhow!("sink panicked"))??;
        Ok((alerts, hist, matched, report, ingest, started.elapsed().as_secs_f64()))
    })?;
    let (alerts, hist, matched, report, ingest, secs) = sink;
    let q = |p: f64| if matched > 0 { hist.value_at_quantile(p) } else { 0 };
    let route = report.route_ns as f64 / 1e9;
    let wait = report.send_wait_ns as f64 / 1e9;
    Ok(RunResult {
        events_per_s: data.events.len() as f64 / secs,
        seconds: secs,
        alerts,
        latency_alerts: matched,
        latency_us_p50: q(0.5),
        latency_us_p99: q(0.99),
        latency_us_p999: q(0.999),
        latency_us_max: if matched > 0 { hist.max() } else { 0 },
        ingest_decode_s: (ingest - route - wait).max(0.0),
        ingest_route_s: route,
        ingest_wait_s: wait,
        worker_busy_s: report.worker_busy_ns.iter().map(|&n| n as f64 / 1e9).collect(),
        decoder_busy_s: report.decoder_busy_ns.iter().map(|&n| n as f64 / 1e9).collect(),
        cpu_us_per_event: (cpu_seconds() - cpu_before) * 1e6 / data.events.len() as f64,
        keys_with_state: report.keys_per_rule.iter().map(|(_, k)| k).sum(),
    })
}

fn print_table(r: &Report) {
    let m = &r.max_rate;
    eprintln!(
        "\n── gridwatch bench pipeline ({} events, {} rules, {} workers, {} decoders, batch {}) ──",
        r.events, r.rules, r.workers, r.decoders, r.batch_size
    );
    eprintln!(
        "parse-only baseline     {:>12.0} events/s  ({} threads, {:.2} µs of CPU per event)",
        r.parse_baseline_events_per_s, r.parse_baseline_threads, r.parse_baseline_cpu_us_per_event
    );
    eprintln!(
        "full pipeline (max)     {:>12.0} events/s  = {:.0} % of the baseline, {} alerts",
        m.events_per_s,
        100.0 * r.fraction_of_parse_baseline,
        m.alerts
    );
    eprintln!(
        "  ingest thread         hand-over/decode {:.2} s, sequence {:.2} s, waiting for workers {:.2} s (of {:.2} s)",
        m.ingest_decode_s, m.ingest_route_s, m.ingest_wait_s, m.seconds
    );
    let decoders: Vec<String> = m.decoder_busy_s.iter().skip(1).map(|b| format!("{b:.2} s")).collect();
    eprintln!(
        "  decoding              {:.2} s on the ingest thread; decoder threads busy {}",
        m.decoder_busy_s.first().copied().unwrap_or(0.0),
        if decoders.is_empty() { "-".to_string() } else { decoders.join(", ") }
    );
    eprintln!("  CPU per event         {:.2} µs (all threads)", m.cpu_us_per_event);
    let busy: Vec<String> = m.worker_busy_s.iter().map(|b| format!("{b:.2} s")).collect();
    eprintln!("  workers busy          {}", busy.join(", "));
    eprintln!(
        "  latency at max rate   p50 {} µs, p99 {} µs, p99.9 {} µs ({} alerts)",
        m.latency_us_p50, m.latency_us_p99, m.latency_us_p999, m.latency_alerts
    );
    if let (Some(f), Some(rate)) = (&r.fixed_rate, r.fixed_rate_input) {
        eprintln!(
            "fixed rate {rate:>9}/s     p50 {} µs, p99 {} µs, p99.9 {} µs, max {} µs ({} alerts)",
            f.latency_us_p50, f.latency_us_p99, f.latency_us_p999, f.latency_us_max, f.latency_alerts
        );
    }
    eprintln!("memory                  dataset {:.0} MB, peak RSS {:.0} MB", r.rss_dataset_mb, r.rss_peak_mb);
    if let Some(engine) = r.rss_engine_mb {
        eprintln!("                        engine {engine:.0} MB (peak while running, above the resident dataset)");
    }
}
