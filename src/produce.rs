//! `gridwatch produce`: load the example city's events (or an NDJSON file) into the
//! config's Kafka topics, keyed by entity id, creating the topics if needed.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use gridwatch_connectors::file::NdjsonSource;
use gridwatch_connectors::generator::{self, CityGenerator};
use gridwatch_connectors::kafka::{KafkaOptions, Role, client_config};
use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use crate::cli::ProduceArgs;
use crate::run::{generator_settings, kafka_options};

pub fn produce(args: ProduceArgs) -> Result<ExitCode> {
    let (config, plan) = gridwatch_rules::load_config(&args.config).into_result().map_err(|e| anyhow!("{e}"))?;
    let opts = kafka_options(&config, &plan, &args.kafka)?;
    let target = Targets::new(&plan, &opts);
    create_topics(&opts, target.topics(), args.partitions)?;
    let producer = input_producer(&opts)?;
    let settings = generator_settings(&config, &args.generator)?;
    let mut generator = CityGenerator::new(settings);
    let mut file = args.events.as_deref().map(NdjsonSource::open).transpose()?;
    let total = if file.is_some() { 0 } else { generator.estimated_total() };
    let bar = ProgressBar::new(total);
    bar.set_style(ProgressStyle::with_template(
        "{spinner} {wide_bar} {human_pos}/{human_len} events → Kafka ({per_sec}, {eta})",
    )?);
    let stream_index: Vec<Option<usize>> = generator::STREAMS.iter().map(|s| plan.stream_index(s)).collect();
    let started = Instant::now();
    let (mut n, mut skipped) = (0u64, 0u64);
    loop {
        let (stream, payload): (Option<usize>, Vec<u8>) = match file.as_mut() {
            Some(f) => match f.next_line()? {
                Some(line) => (line.stream.and_then(|s| plan.stream_index(s)), line.payload.to_vec()),
                None => break,
            },
            None => match generator.next_event() {
                Some((s, p)) => (stream_index[s], p.to_vec()),
                None => break,
            },
        };
        if stream.map(|s| target.send(&producer, s, &payload)).transpose()?.flatten().is_none() {
            skipped += 1;
            continue;
        }
        n += 1;
        if n.is_multiple_of(16_384) {
            bar.set_position(n);
            producer.poll(Duration::ZERO);
        }
        if let Some(rate) = args.rate {
            pace(started, n, rate);
        }
    }
    while producer.flush(Duration::from_secs(5)).is_err() {
        eprintln!("waiting for Kafka to acknowledge {} messages…", producer.in_flight_count());
    }
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "produced {n} events to {} in {secs:.2} s ({:.0} events/s){}",
        target.topics().collect::<Vec<_>>().join(", "),
        n as f64 / secs.max(1e-9),
        if skipped > 0 { format!("; skipped {skipped} events of streams without a topic") } else { String::new() }
    );
    Ok(ExitCode::SUCCESS)
}

/// Where each stream's events go: its topic, keyed by the stream's entity key field.
#[derive(Debug)]
pub struct Targets(BTreeMap<usize, (String, Option<String>)>);

/// The key an event was sent under (its entity id), if it had one.
pub type SentKey = Option<Vec<u8>>;

impl Targets {
    /// The first topic of each stream of `plan` that `opts` names.
    pub fn new(plan: &gridwatch_engine::Plan, opts: &KafkaOptions) -> Targets {
        let mut target = BTreeMap::new();
        for (topic, &s) in &opts.topics {
            let def = &plan.streams[s];
            let key = def.key_fields.first().map(|&k| def.fields[k].name.clone());
            target.entry(s).or_insert((topic.clone(), key));
        }
        Targets(target)
    }

    /// The topics events go to.
    pub fn topics(&self) -> impl Iterator<Item = &str> {
        self.0.values().map(|(t, _)| t.as_str())
    }

    /// Sends one event of plan stream `stream` to its topic, keyed by entity id (so a
    /// device's events stay in one partition, in order). None if the stream has no topic.
    pub fn send(&self, producer: &BaseProducer, stream: usize, payload: &[u8]) -> Result<Option<SentKey>> {
        let Some((topic, key_field)) = self.0.get(&stream) else { return Ok(None) };
        let key = key_field.as_deref().and_then(|k| entity_key(payload, k));
        send(producer, topic, key.as_deref(), payload)?;
        Ok(Some(key))
    }
}

/// Sleeps until event `n` is due at `rate` events/s from `started`.
pub fn pace(started: Instant, n: u64, rate: u64) {
    let due = Duration::from_secs_f64(n as f64 / rate.max(1) as f64);
    let elapsed = started.elapsed();
    if due > elapsed {
        std::thread::sleep(due - elapsed);
    }
}

/// The event time in field `field` of a JSON event (epoch milliseconds or RFC 3339).
pub fn event_time(payload: &[u8], field: &str) -> Option<i64> {
    let v = sonic_rs::get(payload, [field]).ok()?;
    let raw = v.as_raw_str();
    raw.parse::<i64>().ok().or_else(|| gridwatch_engine::time::parse_timestamp(raw.trim_matches('"')))
}

/// A producer tuned for loading input: large batches, idempotent.
pub fn input_producer(opts: &KafkaOptions) -> Result<BaseProducer> {
    client_config(
        opts,
        Role::Producer,
        &[("enable.idempotence", "true"), ("linger.ms", "20"), ("batch.size", "1000000"), ("compression.type", "lz4")],
    )
    .create()
    .context("creating the Kafka producer")
}

/// The entity id (`key_field`'s string value) of a JSON event, used as the Kafka key so a
/// device's events stay in one partition, in order.
pub fn entity_key(payload: &[u8], key_field: &str) -> Option<Vec<u8>> {
    let v = sonic_rs::get(payload, [key_field]).ok()?;
    let raw = v.as_raw_str();
    Some(raw.trim_matches('"').as_bytes().to_vec())
}

fn send(producer: &BaseProducer, topic: &str, key: Option<&[u8]>, payload: &[u8]) -> Result<()> {
    let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).payload(payload);
    if let Some(k) = key {
        record = record.key(k);
    }
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                producer.poll(Duration::from_millis(5));
            }
            Err((e, _)) => return Err(anyhow!("producing to `{topic}`: {e}")),
        }
    }
}

/// Creates the topics that do not exist yet with `partitions` partitions each.
pub fn create_topics<'a>(opts: &KafkaOptions, topics: impl Iterator<Item = &'a str>, partitions: i32) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> =
        client_config(opts, Role::Producer, &[]).create().context("creating a Kafka admin client")?;
    let new: Vec<NewTopic<'_>> =
        topics.map(|t| NewTopic::new(t, partitions.max(1), TopicReplication::Fixed(1))).collect();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let results = rt
        .block_on(admin.create_topics(&new, &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)))))
        .context("creating topics")?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(anyhow!("creating topic `{topic}`: {code}")),
        }
    }
    Ok(())
}
