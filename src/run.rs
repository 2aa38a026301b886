//! `gridwatch run`: the config's source through the engine to the config's sinks, with a
//! summary at the end. Glue only: the command line and the config decide which source and
//! which sinks; the connectors build them; the runtime runs the output side.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use gridwatch_connectors::file::NdjsonWriter;
use gridwatch_connectors::generator::GeneratorSettings;
use gridwatch_connectors::kafka::{self, KafkaOptions, KafkaStatus};
use gridwatch_connectors::sinks::{self, SinkEnv};
use gridwatch_connectors::sources::file::FileSource;
use gridwatch_connectors::sources::generator::GeneratorSource;
use gridwatch_connectors::sources::http::HttpIngestSource;
use gridwatch_connectors::sources::mqtt::MqttSource;
use gridwatch_engine::pipeline::PipelineReport;
use gridwatch_engine::{Pipeline, PipelineOptions};
use gridwatch_rules::cases::FeedbackSource;
use gridwatch_rules::config::{Config, SourceConfig};
use gridwatch_rules::sinks::{ConsoleFormat, RecordKind, SinkKind, SinkSpec};
use gridwatch_runtime::{
    CaseStageRunner, DriveOptions, FeedbackInput, Outputs, Preloaded, Progress, ReloadStatus, RunMetrics, Source,
    drive, snapshot::SnapshotDir,
};

use crate::admin::{self, AdminState};
use crate::cli::{Format, GeneratorOverrides, RunArgs};
use crate::summary::{print_summary, summarize};

/// Limit the simulated crew assumes for categories without an SLA row.
const SIMULATED_DEFAULT_SLA_MS: gridwatch_engine::time::Millis = 4 * 3_600_000;

/// Builds generator settings from the config and CLI overrides.
pub fn generator_settings(config: &Config, overrides: &GeneratorOverrides) -> Result<GeneratorSettings> {
    let (duration, seed, scale) = (overrides.duration.as_deref(), overrides.seed, overrides.scale);
    let g = match &config.source {
        SourceConfig::Generator(g) => g.clone(),
        _ => gridwatch_rules::config::GeneratorConfig::default(),
    };
    let duration_ms = match duration {
        Some(d) => gridwatch_rules::duration::parse_duration(d).map_err(|e| anyhow!("--duration `{d}`: {e}"))?,
        None => g.duration_ms,
    };
    Ok(GeneratorSettings {
        seed: seed.unwrap_or(g.seed),
        start_ms: g.start_ms,
        duration_ms,
        scale: scale.unwrap_or(g.scale),
    })
}

/// Kafka settings of the config with the command line's overrides, streams resolved.
pub fn kafka_options(
    config: &Config,
    plan: &gridwatch_engine::Plan,
    args: &crate::cli::KafkaConnArgs,
) -> Result<KafkaOptions> {
    let k = config.kafka.as_ref().ok_or_else(|| {
        anyhow!("`{}` has no `kafka:` block (brokers, group_id, topics per stream)", config.path.display())
    })?;
    let mut topics = BTreeMap::new();
    for (topic, stream) in &k.topics {
        let index =
            plan.stream_index(stream).ok_or_else(|| anyhow!("topic `{topic}` names unknown stream `{stream}`"))?;
        topics.insert(topic.clone(), index);
    }
    Ok(KafkaOptions {
        brokers: args.brokers.clone().unwrap_or_else(|| k.brokers.clone()),
        group_id: args.group_id.clone().unwrap_or_else(|| k.group_id.clone()),
        properties: k.properties.clone(),
        topics,
        alerts_topic: k.alerts_topic.clone(),
        dead_letter_topic: k.dead_letter_topic.clone(),
        commit_interval: Duration::from_millis(k.commit_interval_ms.max(10) as u64),
        until_caught_up: false,
        state_dir: Some(k.state_dir.clone().unwrap_or_else(|| std::env::temp_dir().join("gridwatch-state"))),
    })
}

pub fn run(args: RunArgs) -> Result<ExitCode> {
    let loaded = gridwatch_rules::load_config(&args.config);
    let (mut config, plan) = loaded.into_result().map_err(|e| anyhow!("invalid configuration:\n{e}"))?;
    for w in &config.warnings {
        eprintln!("warning: {w}");
    }
    // Every option is checked before anything is opened.
    let until_idle = args.until_idle.as_deref().map(parse_wait).transpose().context("--until-idle")?;
    if args.events.is_some() && args.kafka.kafka {
        bail!("--events and --kafka name two inputs; a run reads one (drop one of them)");
    }
    if let Some(events) = &args.events {
        config.source = SourceConfig::File { path: events.clone() };
    }
    if args.kafka.kafka {
        config.source = SourceConfig::Kafka;
    }
    if args.no_cases {
        config.cases = None;
    }
    if let Some(c) = config.cases.as_mut() {
        if let Some(f) = &args.feedback {
            c.feedback = FeedbackSource::File(f.clone());
        }
        if let Some(t) = &args.feedback_topic {
            c.feedback = FeedbackSource::Kafka(t.clone());
        }
    }
    let kafka_source = config.source == SourceConfig::Kafka;
    let sink_specs = resolve_sinks(&config, &args, kafka_source);
    let workers = args.workers.or(config.engine.workers).unwrap_or_else(|| PipelineOptions::default().workers).max(1);
    let batch_size = args.batch_size.or(config.engine.batch_size).unwrap_or(4096).max(1);

    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let flag = interrupted.clone();
        // The first SIGINT/SIGTERM stops gracefully (bounded); a second one exits at once.
        // (SIGHUP asks for a reload: see crate::reload.)
        let mut signals =
            signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])
                .context("installing the SIGINT/SIGTERM handler")?;
        std::thread::Builder::new().name("gridwatch-signals".into()).spawn(move || {
            for _ in signals.forever() {
                if flag.swap(true, Ordering::SeqCst) {
                    eprintln!("second signal: exiting at once");
                    std::process::exit(130);
                }
                eprintln!("stopping: finishing what was read (a second signal exits at once)");
            }
        })?;
    }

    let plan = Arc::new(plan);
    let mut options = PipelineOptions { workers, batch_size, ..Default::default() };
    if let Some(d) = args.decoders.or(config.engine.decoders) {
        options.decoders = d;
    }
    if let Some(bytes) = config.engine.max_event_bytes {
        options.max_event_bytes = bytes;
    }
    if let Some(ms) = config.engine.linger_ms {
        options.linger = Duration::from_millis(ms.max(0) as u64);
    }
    let kafka_conn = config.kafka.as_ref().map(|_| kafka_options(&config, &plan, &args.kafka.conn)).transpose()?;
    let kafka_opts = match (&config.source, &kafka_conn) {
        (SourceConfig::Kafka, Some(k)) => {
            let mut k = k.clone();
            k.until_caught_up = args.kafka.until_caught_up;
            if let Some(dir) = &args.kafka.state_dir {
                k.state_dir = Some(dir.clone());
            }
            tracing::info!(brokers = %k.brokers, group = %k.group_id, properties = ?config.kafka.as_ref().map(|c| c.redacted_properties()), "Kafka settings");
            Some(k)
        }
        (SourceConfig::Kafka, None) => kafka_options(&config, &plan, &args.kafka.conn).map(Some)?,
        _ => None,
    };

    // The inputs first: a run whose input cannot be read opens (and creates) no output.
    let mut source: Option<Box<dyn Source>> = match &config.source {
        SourceConfig::File { path } => Some(Box::new(FileSource::open(path)?)),
        SourceConfig::Generator(_) => {
            Some(Box::new(GeneratorSource::new(generator_settings(&config, &args.generator)?)))
        }
        SourceConfig::Mqtt(m) => Some(Box::new(MqttSource::start(m)?)),
        SourceConfig::Http(h) => {
            let source = HttpIngestSource::start(h, plan.clone())?;
            eprintln!("HTTP ingest on http://{}/ingest/{{stream}}", source.addr());
            Some(Box::new(source))
        }
        SourceConfig::Kafka => None,
    };
    let live = source.as_ref().is_some_and(|s| !s.bounded());
    // Snapshots: the newest one is read (and the source moved to its position) before any
    // output is opened, so a snapshot that cannot be used costs no output.
    let checkpoint = checkpoint_settings(&config, &args)?;
    let mut snapshot_dir = None;
    let mut restored = None;
    if let Some((dir, interval, keep)) = &checkpoint {
        match source.as_mut() {
            Some(src) if src.position().is_some() => {
                let snapshots = SnapshotDir::create(dir, *keep)?;
                let reading = Instant::now();
                if let Some((path, snapshot)) = snapshots.load_newest()? {
                    if snapshot.meta.source != src.name() {
                        bail!(
                            "the newest snapshot in {} was taken on a `{}` source, this run reads `{}`: move the state directory away (or point checkpoint.state_dir elsewhere) to start without state",
                            dir.display(),
                            snapshot.meta.source,
                            src.name()
                        );
                    }
                    src.resume(&snapshot.meta.position)?;
                    let keys: usize = snapshot.engine.rules.iter().map(|r| r.keys.len()).sum();
                    eprintln!(
                        "resuming from snapshot {} (barrier {}, written {}): {keys} keys of {} rules, {} workers then; read in {} ms",
                        path.display(),
                        snapshot.meta.seq,
                        gridwatch_engine::time::format_timestamp(snapshot.meta.written_at_ms),
                        snapshot.engine.rules.len(),
                        snapshot.meta.workers,
                        reading.elapsed().as_millis()
                    );
                    restored = Some(snapshot);
                }
                tracing::info!(dir = %dir.display(), ?interval, keep, "snapshots on");
                snapshot_dir = Some(snapshots);
            }
            Some(src) => eprintln!(
                "warning: checkpoint: the {} source cannot resume from a snapshot yet; this run takes none",
                src.name()
            ),
            None => eprintln!(
                "warning: checkpoint: the Kafka source does not take snapshots yet (it resumes from its committed offsets, replaying each stream's state horizon)"
            ),
        }
    }
    if until_idle.is_some() && !live {
        eprintln!(
            "warning: --until-idle applies to live sources (MQTT, HTTP ingest, pipes); this run's input ends by itself{}",
            if kafka_source { " (Kafka: use --until-caught-up)" } else { "" }
        );
    }
    if let Some(k) = &kafka_opts
        && !kafka::wait_reachable(k, &interrupted)?
    {
        eprintln!("interrupted while waiting for the Kafka brokers at {}: nothing was written", k.brokers);
        return Ok(ExitCode::from(130));
    }
    let stage = match &config.cases {
        Some(c) => Some(case_stage(c, kafka_conn.as_ref())?),
        None => None,
    };

    // Then the outputs.
    let kafka_status = Arc::new(KafkaStatus::default());
    let env = SinkEnv { kafka: kafka_conn.as_ref(), kafka_status: Some(kafka_status.clone()) };
    let built = sink_specs.iter().map(|spec| sinks::build(spec, &env)).collect::<Result<Vec<_>, _>>()?;
    let progress = Arc::new(Progress::default());
    let metrics = Arc::new(RunMetrics::default());
    let mut outputs = match &restored {
        Some(snapshot) => {
            progress.start_at(snapshot.meta.seq);
            Outputs::restored(built, stage, progress.clone(), metrics.clone(), snapshot.stage.as_deref())?
        }
        None => Outputs::new(built, stage, progress.clone(), metrics.clone())?,
    };
    if let (Some(dir), Some(src)) = (snapshot_dir, source.as_ref()) {
        outputs = outputs.with_snapshots(dir, src.name());
    }
    let started_flag = Arc::new(AtomicBool::new(false));
    // Hot reload (SIGHUP, POST /-/reload): the driver applies it; a Kafka run ignores it.
    let reload_requested = Arc::new(AtomicBool::new(false));
    let reload_status = Arc::new(ReloadStatus::default());
    let mut reloader = crate::reload::ConfigReloader::new(args.config.clone(), reload_requested.clone())?;
    let admin_token = admin_token(&args)?;
    if let Some(addr) = args.admin {
        let kafka = kafka_opts.as_ref().map(|_| kafka_status.clone());
        let source = source.as_ref().and_then(|s| Some((s.name().to_string(), s.connected()?)));
        let reload = (!kafka_source).then(|| (reload_requested.clone(), reload_status.clone()));
        let state = AdminState {
            sink: metrics.clone(),
            kafka,
            started: started_flag.clone(),
            source,
            reload,
            reload_status: reload_status.clone(),
            token: admin_token.clone(),
        };
        let bound = admin::serve(addr, state)?;
        eprintln!("admin HTTP on http://{bound} (/healthz /readyz /metrics)");
    }
    let (out_tx, out_rx) = crossbeam_channel::bounded(Pipeline::output_capacity(&options));
    let output_thread =
        std::thread::Builder::new().name("gridwatch-sink".into()).spawn(move || outputs.run(&out_rx))?;

    let started = Instant::now();
    started_flag.store(true, Ordering::Relaxed);
    let mut kafka_messages = None;
    let drive_options = DriveOptions {
        barrier_every: args.barrier_every,
        until_idle,
        checkpoint_interval: checkpoint.as_ref().map(|c| c.1),
        ..DriveOptions::default()
    };
    let (feed, report) = match (&config.source, kafka_opts) {
        (SourceConfig::Kafka, Some(k)) => {
            match kafka::run_source(plan.clone(), options, &k, out_tx, kafka_status, progress, &interrupted) {
                Ok(r) => {
                    kafka_messages = Some(r.messages);
                    (Ok(()), merge_reports(r.pipelines))
                }
                Err(e) => {
                    let class = e.class();
                    let e = anyhow::Error::from(e).context(format!(
                        "source `kafka` ({} error: {})",
                        class.name(),
                        class.who_can_fix()
                    ));
                    (Err(e), PipelineReport::default())
                }
            }
        }
        _ => {
            let source = source.as_mut().context("a source was built above")?;
            let pipeline = match restored.take() {
                Some(snapshot) => {
                    let restoring = Instant::now();
                    let p = Pipeline::restored(plan.clone(), options, out_tx, &snapshot.engine)
                        .context("restoring the snapshot's state")?;
                    eprintln!("state restored into {workers} workers in {} ms", restoring.elapsed().as_millis());
                    p
                }
                None => Pipeline::start_with_output(plan.clone(), options, out_tx),
            };
            let reload: Option<(&mut dyn gridwatch_runtime::Reloader, &ReloadStatus)> =
                Some((&mut reloader, &reload_status));
            match drive(source.as_mut(), pipeline, &progress, &interrupted, &drive_options, reload) {
                Ok(d) => (Ok(()), d.report),
                Err(e) => (Err(anyhow::Error::from(e)), PipelineReport::default()),
            }
        }
    };
    let unknown_stream = source.as_ref().map_or(0, |s| s.unknown_stream());
    let elapsed = started.elapsed();
    let sink_report = output_thread.join().map_err(|_| anyhow!("the output thread panicked"))??;
    feed?;

    let mut summary = summarize(
        report,
        sink_report,
        unknown_stream,
        elapsed,
        workers,
        batch_size,
        interrupted.load(Ordering::SeqCst),
    );
    if let Some(m) = kafka_messages {
        summary.kafka_messages = Some(m);
        summary.events_per_s = if summary.elapsed_s > 0.0 { m as f64 / summary.elapsed_s } else { 0.0 };
    }
    print_summary(&summary);
    if let Some(path) = &args.summary_json {
        let mut w = NdjsonWriter::replace(path)?;
        w.write(&summary)?;
        w.commit()?;
    }
    if summary.rule_errors > 0 {
        // The run finished, but some rule never evaluated: a config that cannot work must
        // not look like a quiet day.
        eprintln!("error: {} rule evaluation failures (see the summary); exiting with status 3", summary.rule_errors);
        return Ok(ExitCode::from(3));
    }
    Ok(ExitCode::SUCCESS)
}

/// The config's sinks as this run uses them: Kafka-only sinks only with Kafka, no case
/// sinks without the case stage, and the command line's overrides.
fn resolve_sinks(config: &Config, args: &RunArgs, kafka_source: bool) -> Vec<SinkSpec> {
    let cases = config.cases.is_some();
    let mut specs: Vec<SinkSpec> = config
        .sinks
        .iter()
        .filter(|s| kafka_source || !s.only_with_kafka)
        .filter(|s| cases || !(matches!(s.kind, SinkKind::CaseStore { .. }) || s.send == [RecordKind::Cases]))
        .cloned()
        .collect();
    if args.quiet {
        specs.retain(|s| !matches!(s.kind, SinkKind::Stdout { .. }));
    }
    if let Some(f) = args.format {
        for s in &mut specs {
            if let SinkKind::Stdout { format } = &mut s.kind {
                *format = match f {
                    Format::Text => ConsoleFormat::Text,
                    Format::Json => ConsoleFormat::Json,
                };
            }
        }
    }
    // An output file on the command line takes the place of the config's file sinks of
    // that kind of record.
    let mut replace = |kind: RecordKind, path: &std::path::Path, name: &str| {
        specs.retain(|s| !(matches!(s.kind, SinkKind::File { .. }) && s.sends(kind)));
        specs.push(SinkSpec::new(name, SinkKind::File { path: path.to_path_buf() }, &[kind]));
    };
    if let Some(p) = &args.alerts_out {
        replace(RecordKind::Alerts, p, "--alerts-out");
    }
    if let Some(p) = &args.dead_letter_out {
        replace(RecordKind::DeadLetters, p, "--dead-letter-out");
    }
    if cases && let Some(p) = &args.case_events_out {
        replace(RecordKind::Cases, p, "--case-events-out");
    }
    if cases && let Some(location) = &args.cases_store {
        match specs.iter_mut().find(|s| matches!(s.kind, SinkKind::CaseStore { .. })) {
            Some(s) => s.kind = SinkKind::CaseStore { location: location.clone() },
            None => specs.push(SinkSpec::new(
                "--cases-store",
                SinkKind::CaseStore { location: location.clone() },
                &[RecordKind::Cases],
            )),
        }
    }
    specs
}

/// The alert and case stage of the config's `cases:` block, with its feedback input.
fn case_stage(c: &gridwatch_rules::cases::CasesSettings, kafka: Option<&KafkaOptions>) -> Result<CaseStageRunner> {
    let simulator = match &c.feedback {
        FeedbackSource::Simulate { seed, reassign_to } => {
            Some(gridwatch_cases::CrewSimulator::new(*seed, SIMULATED_DEFAULT_SLA_MS, reassign_to.clone()))
        }
        _ => None,
    };
    let stage = CaseStageRunner::new(Arc::new(c.stage.clone()), simulator);
    let input: Option<Box<dyn FeedbackInput>> = match &c.feedback {
        FeedbackSource::File(path) => Some(Box::new(read_feedback_file(path)?)),
        FeedbackSource::Kafka(topic) => {
            let k = kafka.ok_or_else(|| {
                anyhow!("`cases.feedback.topic` needs a `kafka:` block with the brokers to read `{topic}` from")
            })?;
            Some(Box::new(kafka::FeedbackReader::start(k, topic)?))
        }
        _ => None,
    };
    Ok(match input {
        Some(i) => stage.with_feedback(i),
        None => stage,
    })
}

/// A feedback file, read whole: feedback events, and the lines that are not (dead letters).
fn read_feedback_file(path: &std::path::Path) -> Result<Preloaded> {
    let text = std::fs::read(path).with_context(|| format!("reading the feedback file `{}`", path.display()))?;
    let mut items = Vec::new();
    for (i, line) in text.split(|&b| b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        items.push(gridwatch_cases::Feedback::parse(line).map_err(|why| {
            gridwatch_runtime::stage::feedback_dead_letter(
                format!("{}:{}: {why}", path.display(), i + 1),
                String::from_utf8_lossy(line).into_owned(),
                None,
            )
        }));
    }
    Ok(Preloaded(items))
}

/// A duration of the command line (`2s`, `500ms`).
/// The admin token (`--admin-token-file`, else `GRIDWATCH_ADMIN_TOKEN`), if any.
fn admin_token(args: &RunArgs) -> Result<Option<String>> {
    let token = match &args.admin_token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("--admin-token-file {}: cannot read the token", path.display()))?
                .trim()
                .to_string(),
        ),
        None => std::env::var("GRIDWATCH_ADMIN_TOKEN").ok().map(|t| t.trim().to_string()),
    };
    if token.as_deref() == Some("") {
        bail!("the admin token is empty: put a secret in the token file (or GRIDWATCH_ADMIN_TOKEN), or leave it unset");
    }
    Ok(token)
}

/// The run's snapshot settings (directory, interval, snapshots kept), from the config's
/// `checkpoint:` and the command line.
fn checkpoint_settings(config: &Config, args: &RunArgs) -> Result<Option<(std::path::PathBuf, Duration, usize)>> {
    let interval = args.checkpoint_interval.as_deref().map(parse_wait).transpose().context("--checkpoint-interval")?;
    let from_config = config.checkpoint.as_ref();
    let Some(dir) = args.checkpoint_dir.clone().or_else(|| from_config.map(|c| c.state_dir.clone())) else {
        if interval.is_some() {
            bail!(
                "--checkpoint-interval needs a state directory: --checkpoint-dir DIR or `checkpoint.state_dir` in the config"
            );
        }
        return Ok(None);
    };
    let default_ms = from_config.map_or(gridwatch_rules::config::DEFAULT_CHECKPOINT_INTERVAL_MS, |c| c.interval_ms);
    // 0: a snapshot at every barrier.
    let interval = interval.unwrap_or(Duration::from_millis(default_ms.max(0) as u64));
    Ok(Some((dir, interval, from_config.map_or(3, |c| c.keep))))
}

fn parse_wait(text: &str) -> Result<Duration> {
    let ms = gridwatch_rules::duration::parse_duration(text).map_err(|e| anyhow!("`{text}`: {e}"))?;
    Ok(Duration::from_millis(ms.max(0) as u64))
}

/// Reports of successive pipelines (one per Kafka assignment) as one.
fn merge_reports(reports: Vec<PipelineReport>) -> PipelineReport {
    let mut merged = PipelineReport::default();
    for r in reports {
        for s in r.streams {
            match merged.streams.iter_mut().find(|m| m.stream == s.stream) {
                Some(m) => {
                    m.received += s.received;
                    m.accepted += s.accepted;
                    m.invalid += s.invalid;
                    m.late += s.late;
                    m.future += s.future;
                    m.time_warning = m.time_warning.take().or(s.time_warning);
                    m.watermark = m.watermark.max(s.watermark);
                }
                None => merged.streams.push(s),
            }
        }
        merged.keys_per_rule = r.keys_per_rule;
        for (rule, d) in r.partials_dropped {
            match merged.partials_dropped.iter_mut().find(|(m, _)| *m == rule) {
                Some((_, m)) => *m += d,
                None => merged.partials_dropped.push((rule, d)),
            }
        }
        merged.replay_suppressed += r.replay_suppressed;
    }
    merged
}
