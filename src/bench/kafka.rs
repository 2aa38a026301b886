//! `gridwatch bench kafka`: throughput and latency through a real broker.
//!
//! 1. Loads the example city into fresh topics.
//! 2. **Baseline**: a bare consumer reads them from the start, touching every payload —
//!    the broker's raw consume rate on this machine.
//! 3. **gridwatch**: the full Kafka source (consumer group, decode, 24 rules, barriers and
//!    commits, a counting sink) reads the same topics; rate from its first to its last
//!    message (the group join is not counted; a slower engine would pause the consumer, so
//!    the span includes evaluation).
//! 4. **Latency**: gridwatch runs as a service writing alerts to Kafka while the city is
//!    produced at a steady rate; for every alert raised by an event (threshold, geofence),
//!    latency = the alert record's Kafka timestamp − the wall time its triggering event was
//!    sent. Percentiles from an HDR histogram.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow};
use gridwatch_connectors::generator::{self, CityGenerator};
use gridwatch_connectors::kafka::{self, KafkaOptions, KafkaStatus};
use gridwatch_connectors::sinks::kafka::KafkaTopicSink;
use gridwatch_engine::{Pipeline, PipelineOptions};
use gridwatch_runtime::{Outputs, Progress, RecordKind, Routes, RunMetrics, Sink};
use hdrhistogram::Histogram;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::Producer;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde::Serialize;

use super::progress;
use crate::cli::BenchKafkaArgs;
use crate::produce::{Targets, create_topics, event_time, input_producer, pace};
use crate::run::{generator_settings, kafka_options};

#[derive(Debug, Serialize)]
struct KafkaBenchReport {
    date: String,
    events: u64,
    baseline_msgs_per_s: f64,
    gridwatch_events_per_s: f64,
    gridwatch_vs_baseline: f64,
    alerts: u64,
    latency_input_rate: u64,
    latency_seconds: f64,
    latency_alerts_matched: u64,
    latency_ms_p50: u64,
    latency_ms_p99: u64,
    latency_ms_p999: u64,
    latency_ms_max: u64,
}

pub fn run(args: BenchKafkaArgs) -> Result<ExitCode> {
    let (config, plan) = gridwatch_rules::load_config(&args.config).into_result().map_err(|e| anyhow!("{e}"))?;
    let plan = Arc::new(plan);
    let base = kafka_options(&config, &plan, &args.kafka)?;
    let run_id = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
    // Fresh topics per phase, named after the config's: nothing left over from other runs.
    let fresh = |phase: &str| -> KafkaOptions {
        let mut o = base.clone();
        o.topics = base.topics.iter().map(|(t, &s)| (format!("bench-{run_id}-{phase}.{t}"), s)).collect();
        o.group_id = format!("bench-{run_id}-{phase}");
        o.alerts_topic = Some(format!("bench-{run_id}-{phase}.alerts"));
        o.dead_letter_topic = None;
        o.state_dir = None;
        o
    };
    let workers = args.workers.unwrap_or_else(|| PipelineOptions::default().workers);
    let options = PipelineOptions { workers, ..Default::default() };

    // 1. Load the city.
    let tput = fresh("throughput");
    let target = Targets::new(&plan, &tput);
    create_topics(&tput, target.topics(), args.partitions)?;
    let producer = input_producer(&tput)?;
    let settings = generator_settings(&config, &args.generator)?;
    let mut generator = CityGenerator::new(settings.clone());
    let bar = progress(generator.estimated_total(), "loading the city into Kafka")?;
    let index: Vec<Option<usize>> = generator::STREAMS.iter().map(|s| plan.stream_index(s)).collect();
    let mut events = 0u64;
    while let Some((s, payload)) = generator.next_event() {
        let Some(i) = index[s] else { continue };
        if target.send(&producer, i, payload)?.is_none() {
            continue;
        }
        events += 1;
        if events.is_multiple_of(16_384) {
            bar.set_position(events);
        }
    }
    while producer.flush(Duration::from_secs(5)).is_err() {}
    bar.finish_and_clear();
    eprintln!("loaded {events} events into {} topics", target.topics().count());

    // 2. Baseline: a bare consumer.
    let baseline = raw_consume(&tput, events)?;
    eprintln!("baseline: a bare consumer reads {baseline:.0} msgs/s");

    // 3. gridwatch end to end (alerts counted, not written, to isolate consume + evaluate).
    let mut opts = tput.clone();
    opts.until_caught_up = true;
    opts.alerts_topic = None;
    let status = Arc::new(KafkaStatus::default());
    let progress = Arc::new(Progress::default());
    let (tx, rx) = crossbeam_channel::bounded(Pipeline::output_capacity(&options));
    let sink = count_and_ack(rx, Vec::new(), progress.clone())?;
    let stop = AtomicBool::new(false);
    let report = kafka::run_source(plan.clone(), options.clone(), &opts, tx, status, progress, &stop)?;
    let alerts = sink.join().map_err(|_| anyhow!("sink thread panicked"))??;
    let rate = report.rate().ok_or_else(|| anyhow!("gridwatch consumed no messages"))?;
    eprintln!(
        "gridwatch: {rate:.0} events/s through the broker ({:.0} % of the baseline), {alerts} alerts",
        100.0 * rate / baseline
    );

    // 4. Latency at a steady input rate.
    let lat = fresh("latency");
    let target = Targets::new(&plan, &lat);
    let mut topics: Vec<&str> = target.topics().collect();
    let alerts_topic = lat.alerts_topic.clone().expect("set above");
    topics.push(&alerts_topic);
    create_topics(&lat, topics.into_iter(), args.partitions)?;
    let status = Arc::new(KafkaStatus::default());
    let (tx, rx) = crossbeam_channel::bounded(Pipeline::output_capacity(&options));
    let progress = Arc::new(Progress::default());
    let kafka_sink =
        KafkaTopicSink::new("bench", Routes::of(&[RecordKind::Alerts]), &alerts_topic, &lat, status.clone())?;
    let sink = count_and_ack(rx, vec![Box::new(kafka_sink)], progress.clone())?;
    let stop = Arc::new(AtomicBool::new(false));
    let service = std::thread::spawn({
        let (plan, lat, status, stop, options) =
            (plan.clone(), lat.clone(), status.clone(), stop.clone(), options.clone());
        move || kafka::run_source(plan, options, &lat, tx, status, progress, &stop)
    });
    // Wait for the group join before sending, so the join is not counted as latency.
    let joined = Instant::now();
    while !status.ready.load(Ordering::Relaxed) {
        if joined.elapsed() > Duration::from_secs(60) {
            return Err(anyhow!("the benchmark consumer did not join its group within 60 s"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Events leave within 5 ms (a gateway batching a little), not in 20 ms batches.
    let producer: rdkafka::producer::BaseProducer =
        kafka::client_config(&lat, kafka::Role::Producer, &[("linger.ms", "5"), ("enable.idempotence", "true")])
            .create()
            .context("creating the latency producer")?;
    let sent_at = produce_paced(&producer, &plan, &target, settings, args.rate, args.latency_seconds)?;
    // Let the tail drain, then stop the service.
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    service.join().map_err(|_| anyhow!("service thread panicked"))??;
    sink.join().map_err(|_| anyhow!("sink thread panicked"))??;
    let (hist, matched) = alert_latencies(&lat, &alerts_topic, &sent_at)?;
    let q = |p: f64| hist.value_at_quantile(p);
    eprintln!(
        "latency at {} events/s: p50 {} ms, p99 {} ms, p99.9 {} ms, max {} ms ({matched} alerts)",
        args.rate,
        q(0.5),
        q(0.99),
        q(0.999),
        hist.max()
    );

    let out = KafkaBenchReport {
        date: chrono::Utc::now().format("%Y-%m-%d").to_string(),
        events,
        baseline_msgs_per_s: baseline,
        gridwatch_events_per_s: rate,
        gridwatch_vs_baseline: rate / baseline,
        alerts,
        latency_input_rate: args.rate,
        latency_seconds: args.latency_seconds,
        latency_alerts_matched: matched,
        latency_ms_p50: q(0.5),
        latency_ms_p99: q(0.99),
        latency_ms_p999: q(0.999),
        latency_ms_max: hist.max(),
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&out)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads `expected` messages from the start of the topics with a plain consumer (no group,
/// no processing beyond touching each payload); messages/s from the first to the last.
fn raw_consume(opts: &KafkaOptions, expected: u64) -> Result<f64> {
    let consumer: BaseConsumer = kafka::client_config(opts, kafka::Role::Consumer, &[("group.id", "bench-baseline")])
        .create()
        .context("creating the baseline consumer")?;
    let mut tpl = TopicPartitionList::new();
    for topic in opts.topics.keys() {
        let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        for t in md.topics() {
            for p in t.partitions() {
                tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
            }
        }
    }
    consumer.assign(&tpl)?;
    let (mut n, mut bytes) = (0u64, 0u64);
    let mut first = None;
    let mut last = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(600);
    while n < expected && Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m?;
            bytes += m.payload().map_or(0, |p| p.len() as u64);
            n += 1;
            last = Instant::now();
            first.get_or_insert(last);
        }
    }
    let first = first.ok_or_else(|| anyhow!("the baseline consumer read nothing"))?;
    if n < expected {
        return Err(anyhow!("the baseline consumer read only {n} of {expected} messages"));
    }
    tracing::info!(bytes, "baseline consumer done");
    Ok(n.saturating_sub(1) as f64 / last.duration_since(first).as_secs_f64().max(1e-9))
}

/// The output thread of a run with these sinks: returns a handle that yields the number of
/// alerts (the same output path as `gridwatch run`, acknowledgements included).
fn count_and_ack(
    rx: crossbeam_channel::Receiver<gridwatch_engine::Output>,
    sinks: Vec<Box<dyn Sink>>,
    progress: Arc<Progress>,
) -> Result<std::thread::JoinHandle<Result<u64>>> {
    let outputs = Outputs::new(sinks, None, progress, Arc::new(RunMetrics::default()))?;
    Ok(std::thread::spawn(move || {
        let report = outputs.run(&rx)?;
        Ok(report.alerts.values().map(|c| c.firing + c.resolved).sum())
    }))
}

/// Sends the city at `rate` events/s for `seconds`; returns the wall time (ms since the
/// epoch) each (key, event time) was sent.
fn produce_paced(
    producer: &rdkafka::producer::BaseProducer,
    plan: &gridwatch_engine::Plan,
    target: &Targets,
    settings: gridwatch_connectors::generator::GeneratorSettings,
    rate: u64,
    seconds: f64,
) -> Result<HashMap<(String, i64), i64>> {
    let mut generator = CityGenerator::new(settings);
    let index: Vec<Option<usize>> = generator::STREAMS.iter().map(|s| plan.stream_index(s)).collect();
    let total = (rate as f64 * seconds) as u64;
    let bar = progress(total, &format!("producing at {rate} events/s"))?;
    let mut sent_at = HashMap::with_capacity(total as usize);
    let start = Instant::now();
    let mut n = 0u64;
    while n < total {
        let Some((s, payload)) = generator.next_event() else { break };
        let Some(i) = index[s] else { continue };
        let def = &plan.streams[i];
        let ts = event_time(payload, &def.fields[def.time_field].name);
        pace(start, n, rate);
        let Some(key) = target.send(producer, i, payload)? else { continue };
        if let (Some(k), Some(ts)) = (&key, ts) {
            let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64;
            sent_at.insert((String::from_utf8_lossy(k).into_owned(), ts), now);
        }
        n += 1;
        if n.is_multiple_of(8_192) {
            bar.set_position(n);
            producer.poll(Duration::ZERO);
        }
    }
    while producer.flush(Duration::from_secs(5)).is_err() {}
    bar.finish_and_clear();
    Ok(sent_at)
}

/// Latency of each alert raised by an event sent in `sent_at`: the alert record's
/// timestamp (when the sink produced it) minus the event's send time.
fn alert_latencies(
    opts: &KafkaOptions,
    topic: &str,
    sent_at: &HashMap<(String, i64), i64>,
) -> Result<(Histogram<u64>, u64)> {
    let consumer: BaseConsumer =
        kafka::client_config(opts, kafka::Role::Consumer, &[("group.id", "bench-latency-reader")])
            .create()
            .context("creating the alerts reader")?;
    let mut tpl = TopicPartitionList::new();
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    for t in md.topics() {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
        }
    }
    consumer.assign(&tpl)?;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 3_600_000, 3)?;
    let mut matched = 0u64;
    let mut idle = Instant::now();
    while idle.elapsed() < Duration::from_secs(3) {
        let Some(m) = consumer.poll(Duration::from_millis(100)) else { continue };
        let m = m?;
        idle = Instant::now();
        let Some(created) = m.timestamp().to_millis() else { continue };
        let Ok(alert) = serde_json::from_slice::<serde_json::Value>(m.payload().unwrap_or_default()) else { continue };
        let key = alert["key"].as_str().unwrap_or_default().to_string();
        let Some(t) = alert["event_time"].as_str().and_then(gridwatch_engine::time::parse_timestamp) else { continue };
        if alert["state"] != "firing" {
            continue;
        }
        if let Some(&sent) = sent_at.get(&(key, t)) {
            hist.record((created - sent).max(1) as u64)?;
            matched += 1;
        }
    }
    if matched == 0 {
        return Err(anyhow!("no alert could be matched to the event that raised it"));
    }
    Ok((hist, matched))
}
