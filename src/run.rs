//! `gridwatch run`: source → engine → sinks, with a summary at the end.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use crossbeam_channel::Receiver;
use gridwatch_cases::{StageOutput, StageStats, Verdict};
use gridwatch_connectors::file::{NdjsonSource, NdjsonWriter};
use gridwatch_connectors::generator::{self, CityGenerator, GeneratorSettings};
use gridwatch_connectors::kafka::{self, BarrierAcks, KafkaOptions, KafkaSink, KafkaStatus};
use gridwatch_engine::pipeline::PipelineReport;
use gridwatch_engine::{Alert, AlertState, DeadLetter, Output, Pipeline, PipelineOptions};
use gridwatch_rules::config::{Config, SourceConfig};
use serde::Serialize;

use crate::admin::{self, AdminState, SinkMetrics};
use crate::cases::{CaseRuntime, render_case};
use crate::cli::{Format, GeneratorOverrides, RunArgs};

/// Builds generator settings from the config and CLI overrides.
pub fn generator_settings(config: &Config, overrides: &GeneratorOverrides) -> Result<GeneratorSettings> {
    let (duration, seed, scale) = (overrides.duration.as_deref(), overrides.seed, overrides.scale);
    let g = match &config.source {
        SourceConfig::Generator(g) => g.clone(),
        SourceConfig::File { .. } | SourceConfig::Kafka => gridwatch_rules::config::GeneratorConfig::default(),
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

/// Per-rule alert counts.
#[derive(Debug, Default, Clone, Serialize)]
pub struct RuleCounts {
    pub firing: u64,
    pub resolved: u64,
}

/// Where one kind of output went, for the summary.
#[derive(Debug, Clone, Serialize)]
pub struct OutputReport {
    /// What: alerts, dead letters, case events, cases.
    pub what: String,
    /// A file, a store, a topic.
    pub location: String,
    /// Records this run wrote there, where counted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub records: Option<u64>,
}

impl OutputReport {
    /// A file written by `w` (appended to: what earlier runs wrote stays).
    pub fn file(what: &str, w: &NdjsonWriter) -> OutputReport {
        OutputReport {
            what: what.into(),
            location: format!("{} (appended)", w.path().display()),
            records: Some(w.lines()),
        }
    }
}

/// What the sink thread saw.
#[derive(Debug, Default, Serialize)]
struct SinkReport {
    alerts: BTreeMap<String, RuleCounts>,
    cases: Option<StageStats>,
    dead_letters: u64,
    dead_letter_reasons: BTreeMap<String, u64>,
    rule_errors: u64,
    outputs: Vec<OutputReport>,
}

#[derive(Debug, Serialize)]
struct Summary {
    events_in: u64,
    events_accepted: u64,
    dead_lettered: u64,
    invalid: u64,
    late: u64,
    unknown_stream: u64,
    elapsed_s: f64,
    events_per_s: f64,
    workers: usize,
    batch_size: usize,
    alerts_total: u64,
    alerts: BTreeMap<String, RuleCounts>,
    dead_letter_reasons: BTreeMap<String, u64>,
    rule_errors: u64,
    streams: Vec<gridwatch_engine::pipeline::StreamStats>,
    keys_per_rule: Vec<(String, usize)>,
    interrupted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    kafka_messages: Option<u64>,
    replay_suppressed: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    cases: Option<StageStats>,
    outputs: Vec<OutputReport>,
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
        if let Some(s) = &args.cases_store {
            c.store = Some(s.clone());
        }
        if let Some(f) = &args.case_events_out {
            c.events_file = Some(f.clone());
        }
        if let Some(f) = &args.feedback {
            c.feedback = gridwatch_rules::cases::FeedbackSource::File(f.clone());
        }
        if let Some(t) = &args.feedback_topic {
            c.feedback = gridwatch_rules::cases::FeedbackSource::Kafka(t.clone());
        }
    }
    let workers = args.workers.or(config.engine.workers).unwrap_or_else(|| PipelineOptions::default().workers).max(1);
    let batch_size = args.batch_size.or(config.engine.batch_size).unwrap_or(4096).max(1);
    let alerts_path = args.alerts_out.clone().or(config.sinks.alerts_file.clone());
    let dead_path = args.dead_letter_out.clone().or(config.sinks.dead_letter_file.clone());
    let stdout = !args.quiet && config.sinks.stdout;

    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let flag = interrupted.clone();
        // A second Ctrl-C is not caught again by anything: the default handler ends the process.
        let _ = ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst));
    }

    let plan = Arc::new(plan);
    let mut options = PipelineOptions { workers, batch_size, ..Default::default() };
    if let Some(d) = args.decoders.or(config.engine.decoders) {
        options.decoders = d;
    }
    if let Some(ms) = config.engine.linger_ms {
        options.linger = Duration::from_millis(ms.max(0) as u64);
    }
    let (out_tx, outputs) = crossbeam_channel::bounded(Pipeline::output_capacity(&options));
    let kafka_opts = match config.source {
        SourceConfig::Kafka => {
            let mut k = kafka_options(&config, &plan, &args.kafka.conn)?;
            k.until_caught_up = args.kafka.until_caught_up;
            if let Some(dir) = &args.kafka.state_dir {
                k.state_dir = Some(dir.clone());
            }
            tracing::info!(brokers = %k.brokers, group = %k.group_id, properties = ?config.kafka.as_ref().map(|c| c.redacted_properties()), "Kafka settings");
            Some(k)
        }
        _ => None,
    };
    // The input first: a run whose input cannot be read opens (and creates) no output.
    let mut file_source = match &config.source {
        SourceConfig::File { path } => {
            Some(NdjsonSource::open(path).with_context(|| format!("opening the events file `{}`", path.display()))?)
        }
        _ => None,
    };
    if let Some(k) = &kafka_opts
        && !kafka::wait_reachable(k, &interrupted)?
    {
        eprintln!("interrupted while waiting for the Kafka brokers at {}: nothing was written", k.brokers);
        return Ok(ExitCode::from(130));
    }
    let kafka_status = kafka_opts.as_ref().map(|_| Arc::new(KafkaStatus::default()));
    let kafka_sink = match (&kafka_opts, &kafka_status) {
        (Some(k), Some(st))
            if k.alerts_topic.is_some()
                || k.dead_letter_topic.is_some()
                || config.cases.as_ref().is_some_and(|c| c.kafka_topic.is_some()) =>
        {
            Some(KafkaSink::new(k, st.clone())?)
        }
        _ => None,
    };
    let metrics = Arc::new(SinkMetrics::default());
    let started_flag = Arc::new(AtomicBool::new(false));
    if let Some(addr) = args.admin {
        let bound = admin::serve(
            addr,
            AdminState { sink: metrics.clone(), kafka: kafka_status.clone(), started: started_flag.clone() },
        )?;
        eprintln!("admin HTTP on http://{bound} (/healthz /readyz /metrics)");
    }
    let case_kafka = match (&kafka_opts, &config.kafka) {
        (Some(k), _) => Some(k.clone()),
        (None, Some(_)) => Some(kafka_options(&config, &plan, &args.kafka.conn)?),
        (None, None) => None,
    };
    let cases = config.cases.as_ref().map(|c| CaseRuntime::start(c, case_kafka.as_ref())).transpose()?;
    let mut sinks = Sinks {
        cases,
        stdout,
        format: args.format,
        alerts_out: alerts_path.as_deref().map(NdjsonWriter::append).transpose()?,
        dead_out: dead_path.as_deref().map(NdjsonWriter::append).transpose()?,
        kafka: kafka_sink,
        acked: kafka_status.clone(),
        metrics,
    };
    let sink = std::thread::Builder::new().name("gridwatch-sink".into()).spawn(move || -> Result<SinkReport> {
        let mut report = drain(&outputs, &mut sinks)?;
        sinks.flush()?;
        report.outputs = sinks.outputs();
        if let Some(c) = sinks.cases.take() {
            report.outputs.extend(c.outputs());
            report.cases = Some(c.close()?);
        }
        Ok(report)
    })?;

    let started = Instant::now();
    started_flag.store(true, Ordering::Relaxed);
    let mut unknown_stream = 0u64;
    let mut kafka_messages = None;
    let (feed, report) = match (&config.source, kafka_opts, kafka_status) {
        (SourceConfig::Kafka, Some(k), Some(status)) => {
            let r = kafka::run_source(plan.clone(), options, &k, out_tx, status, &interrupted);
            match r {
                Ok(r) => {
                    kafka_messages = Some(r.messages);
                    (Ok(()), merge_reports(r.pipelines))
                }
                Err(e) => (Err(anyhow::Error::from(e)), PipelineReport::default()),
            }
        }
        (source, _, _) => {
            let mut pipeline = Pipeline::start_with_output(plan.clone(), options, out_tx);
            let feed = match source {
                SourceConfig::File { .. } => {
                    let source = file_source.take().context("the events file was opened above")?;
                    feed_file(&mut pipeline, source, &interrupted, &mut unknown_stream, args.barrier_every)
                }
                _ => {
                    let settings = generator_settings(&config, &args.generator)?;
                    feed_generator(&mut pipeline, settings, &interrupted, &mut unknown_stream, args.barrier_every)
                }
            };
            // Always drain and report, even if the source failed part-way. The last barrier
            // releases the case stage up to the end of the input.
            (feed, pipeline.finish_with_barrier(Some(u64::MAX)).context("stopping the engine")?)
        }
    };
    let elapsed = started.elapsed();
    let mut sink_report = sink.join().map_err(|_| anyhow!("the sink thread panicked"))??;
    let case_stats = sink_report.cases.take();
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
    summary.cases = case_stats;
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
    Ok(ExitCode::SUCCESS)
}

fn feed_generator(
    pipeline: &mut Pipeline,
    settings: GeneratorSettings,
    stop: &AtomicBool,
    unknown: &mut u64,
    barrier_every: u64,
) -> Result<()> {
    let index: Vec<Option<usize>> = generator::STREAMS.iter().map(|s| pipeline.plan().stream_index(s)).collect();
    let mut generator = CityGenerator::new(settings);
    let mut n = 0u64;
    while let Some((stream, payload)) = generator.next_event() {
        match index[stream] {
            Some(i) => pipeline.push(i, payload)?,
            None => {
                *unknown += 1;
                pipeline.reject(
                    generator::STREAMS[stream],
                    "unknown stream: not declared in the config".into(),
                    payload,
                )?;
            }
        }
        n += 1;
        if n.is_multiple_of(barrier_every) {
            pipeline.barrier(n / barrier_every)?;
        }
        if n.is_multiple_of(4096) && stop.load(Ordering::Relaxed) {
            break;
        }
    }
    Ok(())
}

fn feed_file(
    pipeline: &mut Pipeline,
    mut source: NdjsonSource,
    stop: &AtomicBool,
    unknown: &mut u64,
    barrier_every: u64,
) -> Result<()> {
    let mut n = 0u64;
    while let Some(line) = source.next_line()? {
        let stream = line.stream.and_then(|s| pipeline.plan().stream_index(s));
        match stream {
            Some(i) => pipeline.push(i, line.payload)?,
            None => {
                *unknown += 1;
                let reason = match line.stream {
                    Some(s) => format!("line {}: unknown stream `{s}`", line.line_no),
                    None => format!("line {}: no `stream` field naming the stream", line.line_no),
                };
                pipeline.reject(line.stream.unwrap_or(""), reason, line.payload)?;
            }
        }
        n += 1;
        if n.is_multiple_of(barrier_every) {
            pipeline.barrier(n / barrier_every)?;
        }
        if n.is_multiple_of(4096) && stop.load(Ordering::Relaxed) {
            break;
        }
    }
    Ok(())
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
        merged.replay_suppressed += r.replay_suppressed;
    }
    merged
}

/// Every sink of a run; the sink thread owns it.
struct Sinks {
    /// The alert and case stage, if configured: alerts then go through it in event-time
    /// order (released at each barrier's watermark) before reaching the alert sinks.
    cases: Option<CaseRuntime>,
    stdout: bool,
    format: Format,
    alerts_out: Option<NdjsonWriter>,
    dead_out: Option<NdjsonWriter>,
    kafka: Option<KafkaSink>,
    /// Where acknowledged barriers are reported (Kafka source).
    acked: Option<Arc<KafkaStatus>>,
    metrics: Arc<SinkMetrics>,
}

impl Sinks {
    /// Where alerts and dead letters went.
    fn outputs(&self) -> Vec<OutputReport> {
        let mut out = Vec::new();
        if self.stdout {
            out.push(OutputReport { what: "alerts".into(), location: "stdout".into(), records: None });
        }
        if let Some(w) = &self.alerts_out {
            out.push(OutputReport::file("alerts", w));
        }
        if let Some(w) = &self.dead_out {
            out.push(OutputReport::file("dead letters", w));
        }
        if let Some(k) = &self.kafka {
            out.extend(k.topics().into_iter().map(|(what, topic)| OutputReport {
                what: what.into(),
                location: format!("Kafka topic {topic}"),
                records: None,
            }));
        }
        out
    }

    fn flush_files(&mut self) -> Result<()> {
        if let Some(w) = self.alerts_out.as_mut() {
            w.flush()?;
        }
        if let Some(w) = self.dead_out.as_mut() {
            w.flush()?;
        }
        Ok(())
    }

    /// Makes everything written so far durable (files flushed, Kafka acknowledged).
    fn flush(&mut self) -> Result<()> {
        self.flush_files()?;
        if let Some(c) = self.cases.as_mut() {
            c.commit()?;
        }
        if let Some(k) = self.kafka.as_mut() {
            k.flush()?;
        }
        Ok(())
    }
}

fn drain(outputs: &Receiver<Output>, sinks: &mut Sinks) -> Result<SinkReport> {
    let mut report = SinkReport::default();
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::new(out.lock());
    let mut last_flush = Instant::now();
    let mut barriers = BarrierAcks::default();
    let bad_feedback = sinks.cases.as_mut().map(|c| std::mem::take(&mut c.bad_feedback)).unwrap_or_default();
    for d in &bad_feedback {
        sinks.write_dead_letter(&mut report, d)?;
    }
    loop {
        let o = match outputs.recv_timeout(Duration::from_millis(10)) {
            Ok(o) => Some(o),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => None,
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        };
        let bad = sinks.cases.as_mut().map(|c| c.poll_feedback(false)).unwrap_or_default();
        for d in &bad {
            sinks.write_dead_letter(&mut report, d)?;
        }
        match o {
            None => {}
            Some(o) => match o {
                Output::Alerts(alerts) => {
                    sinks.metrics.alerts.fetch_add(alerts.len() as u64, Ordering::Relaxed);
                    match sinks.cases.as_mut() {
                        Some(c) => c.push_alerts(alerts),
                        None => {
                            for a in &alerts {
                                sinks.write_alert(&mut report, &mut out, a, a, true)?;
                            }
                        }
                    }
                }
                Output::DeadLetter(d) => sinks.write_dead_letter(&mut report, &d)?,
                Output::Barrier { seq, workers, watermark, .. } => {
                    if barriers.arrived(seq, workers) {
                        // Everything before the watermark has arrived: the case stage may
                        // process it, and its store transaction lands before the ack.
                        let staged = sinks.cases.as_mut().map(|c| c.advance(watermark)).unwrap_or_default();
                        sinks.write_stage(&mut report, &mut out, staged)?;
                        if let Some(c) = sinks.cases.as_mut() {
                            c.commit()?;
                            c.publish(&sinks.metrics);
                        }
                        // Files are durable now; Kafka records of this barrier are counted
                        // as delivered by the producer's callbacks, without waiting here.
                        out.flush()?;
                        sinks.flush_files()?;
                        barriers.passed(seq, sinks.kafka.as_mut());
                        sinks.metrics.barriers_acked.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Output::RuleError { rule, message } => {
                    report.rule_errors += 1;
                    sinks.metrics.rule_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(rule = %rule, error = %message, "rule evaluation failed");
                }
            },
        }
        if let Some(status) = &sinks.acked {
            barriers.publish(sinks.kafka.as_mut(), status)?;
        }
        // Alerts are interactive output: do not sit on them for long.
        if sinks.stdout && last_flush.elapsed() > Duration::from_millis(200) {
            out.flush()?;
            last_flush = Instant::now();
        }
    }
    let bad = sinks.cases.as_mut().map(|c| c.poll_feedback(true)).unwrap_or_default();
    for d in &bad {
        sinks.write_dead_letter(&mut report, d)?;
    }
    let staged = sinks.cases.as_mut().map(|c| c.finish()).unwrap_or_default();
    sinks.write_stage(&mut report, &mut out, staged)?;
    out.flush()?;
    Ok(report)
}

impl Sinks {
    /// Writes one alert: `record` (the alert, or the alert with the alert stage's verdict)
    /// to the alerts file; if `sent`, the alert to Kafka, the console and the webhook.
    fn write_alert(
        &mut self,
        report: &mut SinkReport,
        out: &mut impl Write,
        a: &Alert,
        record: &impl Serialize,
        sent: bool,
    ) -> Result<()> {
        let c = report.alerts.entry(a.rule_id.to_string()).or_default();
        match a.state {
            AlertState::Firing => c.firing += 1,
            AlertState::Resolved => c.resolved += 1,
        }
        if let Some(w) = self.alerts_out.as_mut() {
            w.write(record)?;
        }
        if !sent {
            return Ok(());
        }
        if let Some(k) = self.kafka.as_mut() {
            k.send_alert(a)?;
        }
        if let Some(c) = self.cases.as_mut() {
            c.write_alert(record)?;
        }
        if self.stdout {
            match self.format {
                Format::Json => {
                    serde_json::to_writer(&mut *out, record)?;
                    out.write_all(b"\n")?;
                }
                Format::Text => writeln!(out, "{}", render_alert(a))?,
            }
        }
        Ok(())
    }

    fn write_dead_letter(&mut self, report: &mut SinkReport, d: &DeadLetter) -> Result<()> {
        report.dead_letters += 1;
        self.metrics.dead_letters.fetch_add(1, Ordering::Relaxed);
        *report.dead_letter_reasons.entry(reason_class(&d.reason)).or_default() += 1;
        if let Some(w) = self.dead_out.as_mut() {
            w.write(d)?;
        }
        if let Some(k) = self.kafka.as_mut() {
            k.send_dead_letter(d)?;
        }
        Ok(())
    }

    /// Writes what the case stage emitted, in its order.
    fn write_stage(&mut self, report: &mut SinkReport, out: &mut impl Write, staged: Vec<StageOutput>) -> Result<()> {
        for s in staged {
            match s {
                StageOutput::Alert(g) => {
                    let sent = g.verdict.is_sent();
                    if g.verdict == Verdict::Stable {
                        tracing::info!(rule = %g.alert.rule_id, key = %g.alert.key, "alert stable again after flapping");
                    }
                    self.write_alert(report, out, &g.alert, &g, sent)?;
                }
                StageOutput::Case(u) => {
                    if let Some(c) = self.cases.as_mut() {
                        c.write_case(&u)?;
                        if let (Some(topic), Some(k)) = (c.kafka_topic.as_deref(), self.kafka.as_mut()) {
                            k.send_json(topic, &u.case.case_id, &*u)?;
                        }
                    }
                    if self.stdout && self.format == Format::Text {
                        writeln!(out, "{}", render_case(&u))?;
                    }
                }
                StageOutput::Rejected { feedback, reason } => {
                    let d = crate::cases::feedback_dead_letter(
                        format!("feedback {}: {reason}", feedback.feedback_id),
                        serde_json::to_string(&feedback)?,
                        None,
                    );
                    self.write_dead_letter(report, &d)?;
                }
            }
        }
        Ok(())
    }
}

/// Groups dead-letter reasons for the summary ("invalid JSON", "late", "field `x`").
fn reason_class(reason: &str) -> String {
    if reason.starts_with("late") {
        "late".into()
    } else if reason.starts_with("future") {
        "future".into()
    } else if reason.starts_with("invalid JSON") {
        "invalid JSON".into()
    } else if let Some(rest) = reason.strip_prefix("field `") {
        format!("bad field `{}`", rest.split('`').next().unwrap_or(""))
    } else if reason.starts_with("missing") {
        "missing field".into()
    } else if reason.contains("stream") {
        "unknown stream".into()
    } else {
        "other".into()
    }
}

fn render_alert(a: &Alert) -> String {
    let state = match a.state {
        AlertState::Firing if a.notification > 1 => format!("FIRING#{}", a.notification),
        AlertState::Firing => "FIRING".to_string(),
        AlertState::Resolved => "RESOLVED".to_string(),
    };
    let values: Vec<String> = a
        .values
        .iter()
        .map(|(k, v)| match v {
            serde_json::Value::Number(n) => match n.as_f64() {
                Some(f) if n.is_f64() => format!("{k}={f:.2}"),
                _ => format!("{k}={n}"),
            },
            serde_json::Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect();
    format!(
        "{} {:<9} {:<8} {:<30} key={} {}",
        gridwatch_engine::time::format_timestamp(a.event_time),
        state,
        a.severity.name(),
        a.rule_id,
        a.key,
        values.join(" ")
    )
}

fn summarize(
    report: PipelineReport,
    sink: SinkReport,
    unknown_stream: u64,
    elapsed: Duration,
    workers: usize,
    batch_size: usize,
    interrupted: bool,
) -> Summary {
    let events_in = report.streams.iter().map(|s| s.received).sum::<u64>() + unknown_stream;
    let accepted = report.streams.iter().map(|s| s.accepted).sum();
    let invalid = report.streams.iter().map(|s| s.invalid).sum();
    let late = report.streams.iter().map(|s| s.late).sum();
    let secs = elapsed.as_secs_f64();
    Summary {
        events_in,
        events_accepted: accepted,
        dead_lettered: sink.dead_letters,
        invalid,
        late,
        unknown_stream,
        elapsed_s: secs,
        events_per_s: if secs > 0.0 { events_in as f64 / secs } else { 0.0 },
        workers,
        batch_size,
        alerts_total: sink.alerts.values().map(|c| c.firing + c.resolved).sum(),
        alerts: sink.alerts,
        dead_letter_reasons: sink.dead_letter_reasons,
        rule_errors: sink.rule_errors,
        streams: report.streams,
        keys_per_rule: report.keys_per_rule,
        interrupted,
        kafka_messages: None,
        replay_suppressed: 0,
        cases: None,
        outputs: sink.outputs,
    }
}

fn print_summary(s: &Summary) {
    let mut e = std::io::stderr().lock();
    let _ = writeln!(e, "\n── gridwatch run summary{} ──", if s.interrupted { " (interrupted)" } else { "" });
    let per_stream: Vec<String> = s.streams.iter().map(|st| format!("{} {}", st.stream, st.received)).collect();
    let _ = writeln!(e, "events in      {:>12}   ({})", s.events_in, per_stream.join(", "));
    let _ = writeln!(e, "accepted       {:>12}", s.events_accepted);
    let reasons: Vec<String> = s.dead_letter_reasons.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    let _ = writeln!(e, "dead-lettered  {:>12}   ({})", s.dead_lettered, reasons.join(", "));
    let _ = writeln!(
        e,
        "elapsed        {:>12.3} s → {:.0} events/s ({} workers, batch {})",
        s.elapsed_s, s.events_per_s, s.workers, s.batch_size
    );
    let _ = writeln!(e, "alerts         {:>12}", s.alerts_total);
    let _ = writeln!(e, "  {:<32} {:>8} {:>9}", "rule", "firing", "resolved");
    for (rule, c) in &s.alerts {
        let _ = writeln!(e, "  {:<32} {:>8} {:>9}", rule, c.firing, c.resolved);
    }
    let silent: Vec<&str> =
        s.keys_per_rule.iter().filter(|(r, _)| !s.alerts.contains_key(r)).map(|(r, _)| r.as_str()).collect();
    if !silent.is_empty() {
        let _ = writeln!(e, "  no alerts: {}", silent.join(", "));
    }
    if s.rule_errors > 0 {
        let _ = writeln!(e, "rule errors    {:>12}   (see log)", s.rule_errors);
    }
    for w in s.streams.iter().filter_map(|st| st.time_warning.as_deref()) {
        let _ = writeln!(e, "warning: {w}");
    }
    for o in &s.outputs {
        let records = o.records.map_or_else(String::new, |n| format!("{n} records → "));
        let _ = writeln!(e, "output         {:<13}  {records}{}", o.what, o.location);
    }
    if let Some(c) = &s.cases {
        let a = &c.alerts;
        let _ = writeln!(
            e,
            "alert stage    {:>12}   sent ({} silenced, {} inhibited, {} held as flapping)",
            a.sent, a.silenced, a.inhibited, a.flapping
        );
        let _ = writeln!(
            e,
            "cases          {:>12}   opened ({} still open, {} alerts joined, {} events; {} reminders, {} escalations; feedback {} applied, {} rejected)",
            c.cases_opened,
            c.open_cases,
            c.alerts_joined,
            c.case_events,
            c.reminders,
            c.escalations,
            c.feedback_applied,
            c.feedback_rejected
        );
    }
}
