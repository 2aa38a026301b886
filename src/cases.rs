//! The case stage inside `gridwatch run` (store, case-event sinks, feedback) and the
//! `gridwatch cases list|show` commands that read the store.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use gridwatch_cases::model::{Case, CaseUpdate, Feedback};
use gridwatch_cases::{CaseStage, CrewSimulator, StageOutput, StageStats};
use gridwatch_connectors::file::NdjsonWriter;
use gridwatch_connectors::kafka::{FeedbackReader, KafkaOptions};
use gridwatch_connectors::store::{self, CaseFilter, CaseStore};
use gridwatch_connectors::webhook::{WebhookOptions, WebhookSink};
use gridwatch_engine::time::{Millis, format_timestamp};
use gridwatch_engine::{Alert, DeadLetter};
use gridwatch_rules::cases::{CasesSettings, FeedbackSource};
use gridwatch_rules::config::Config;

use crate::admin::SinkMetrics;
use crate::cli::{CasesArgs, CasesCommand};

/// Limit the simulated crew assumes for categories without an SLA row.
const SIMULATED_DEFAULT_SLA_MS: Millis = 4 * 3_600_000;

/// The case stage and the sinks only it writes to.
pub struct CaseRuntime {
    stage: CaseStage,
    store: Option<Box<dyn CaseStore>>,
    store_location: Option<String>,
    events_out: Option<NdjsonWriter>,
    webhook: Option<WebhookSink>,
    webhook_alerts: bool,
    webhook_cases: bool,
    /// Kafka topic of case events (the run's Kafka sink sends them).
    pub kafka_topic: Option<String>,
    /// Updates not yet written to the store (written once per acknowledged barrier).
    unstored: Vec<CaseUpdate>,
    /// Feedback lines that did not parse, for the dead-letter output.
    pub bad_feedback: Vec<DeadLetter>,
    /// The Kafka feedback topic's reader, if feedback comes from Kafka.
    feedback_reader: Option<FeedbackReader>,
}

/// Stream name dead letters of the feedback stream carry.
pub const FEEDBACK_STREAM: &str = "case_feedback";

/// A feedback record that could not be used, for the dead-letter output.
pub fn feedback_dead_letter(reason: String, payload: String, origin: Option<gridwatch_engine::Origin>) -> DeadLetter {
    DeadLetter { stream: FEEDBACK_STREAM.into(), reason, payload, origin }
}

impl CaseRuntime {
    /// Opens the store (resuming its open cases), the case-event sinks and the feedback
    /// source of `settings`.
    pub fn start(settings: &CasesSettings, kafka: Option<&KafkaOptions>) -> Result<CaseRuntime> {
        let simulator = match &settings.feedback {
            FeedbackSource::Simulate { seed, reassign_to } => {
                Some(CrewSimulator::new(*seed, SIMULATED_DEFAULT_SLA_MS, reassign_to.clone()))
            }
            _ => None,
        };
        // Inputs before outputs: an unreadable feedback file must not leave a new store behind.
        let mut bad_feedback = Vec::new();
        let mut feedback = Vec::new();
        if let FeedbackSource::File(path) = &settings.feedback {
            let text =
                std::fs::read(path).with_context(|| format!("reading the feedback file `{}`", path.display()))?;
            for (i, line) in text.split(|&b| b == b'\n').enumerate() {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                match Feedback::parse(line) {
                    Ok(f) => feedback.push(f),
                    Err(why) => bad_feedback.push(feedback_dead_letter(
                        format!("{}:{}: {why}", path.display(), i + 1),
                        String::from_utf8_lossy(line).into_owned(),
                        None,
                    )),
                }
            }
        }
        let mut stage = CaseStage::new(Arc::new(settings.stage.clone()), simulator);
        let mut store = match &settings.store {
            Some(loc) => {
                Some(store::open(loc).with_context(|| format!("opening the case store `{}`", store::redact(loc)))?)
            }
            None => None,
        };
        if let Some(s) = store.as_mut() {
            let open = s.load_open().context("loading open cases from the case store")?;
            let frontier = s.frontier().context("reading the case stage's checkpoint from the store")?;
            if let Some(f) = frontier {
                // Say it on the console: a re-run of the same input opens no case again.
                eprintln!(
                    "case store {}: resuming with {} open cases; input before {} was handled by an earlier run (delete the store to start over)",
                    settings.store.as_deref().map(store::redact).unwrap_or_default(),
                    open.len(),
                    format_timestamp(f)
                );
            }
            stage.restore(open, frontier);
        }
        for f in feedback {
            stage.push_feedback(f);
        }
        let feedback_reader = match &settings.feedback {
            FeedbackSource::Kafka(topic) => {
                let k = kafka.ok_or_else(|| {
                    anyhow!("`cases.feedback.topic` needs a `kafka:` block with the brokers to read `{topic}` from")
                })?;
                Some(FeedbackReader::start(k, topic)?)
            }
            _ => None,
        };
        let webhook = match &settings.webhook {
            Some(w) => Some(WebhookSink::start(WebhookOptions {
                url: w.url.clone(),
                max_batch: w.batch,
                linger: Duration::from_millis(w.linger_ms.max(0) as u64),
                queue_capacity: w.queue,
                headers: w.headers.clone(),
                dead_letter: w.dead_letter.clone(),
                ..WebhookOptions::default()
            })?),
            None => None,
        };
        Ok(CaseRuntime {
            stage,
            store,
            store_location: settings.store.clone(),
            events_out: settings.events_file.as_deref().map(NdjsonWriter::append).transpose()?,
            webhook_alerts: settings.webhook.as_ref().is_some_and(|w| w.alerts),
            webhook_cases: settings.webhook.as_ref().is_some_and(|w| w.cases),
            webhook,
            kafka_topic: settings.kafka_topic.clone(),
            unstored: Vec::new(),
            bad_feedback,
            feedback_reader,
        })
    }

    /// Queues the feedback the Kafka reader has delivered; returns the records that are not
    /// feedback events, for the dead-letter output. With `settle`, first waits (bounded)
    /// for the topic to go quiet: the end of a bounded run.
    pub fn poll_feedback(&mut self, settle: bool) -> Vec<DeadLetter> {
        let Some(reader) = &self.feedback_reader else { return Vec::new() };
        if settle {
            reader.wait_quiet(Duration::from_secs(1), Duration::from_secs(10));
        }
        let mut bad = Vec::new();
        for (payload, origin) in reader.try_iter() {
            match Feedback::parse(&payload) {
                Ok(f) => self.stage.push_feedback(f),
                Err(why) => {
                    bad.push(feedback_dead_letter(why, String::from_utf8_lossy(&payload).into_owned(), Some(origin)))
                }
            }
        }
        bad
    }

    /// Queues alerts from the workers.
    pub fn push_alerts(&mut self, alerts: Vec<Alert>) {
        self.stage.push_alerts(alerts);
    }

    /// Processes everything before the frontier; returns what the stage emitted.
    pub fn advance(&mut self, frontier: Millis) -> Vec<StageOutput> {
        self.stage.advance(frontier);
        self.stage.drain()
    }

    /// End of input: processes everything left.
    pub fn finish(&mut self) -> Vec<StageOutput> {
        self.stage.finish();
        self.stage.drain()
    }

    /// Writes one case update to the case sinks this runtime owns (events file, webhook) and
    /// queues it for the store.
    pub fn write_case(&mut self, u: &CaseUpdate) -> Result<()> {
        if let Some(w) = self.events_out.as_mut() {
            w.write(u)?;
        }
        if self.webhook_cases
            && let Some(h) = &self.webhook
        {
            h.send(serde_json::to_value(u)?)?;
        }
        self.unstored.push(u.clone());
        Ok(())
    }

    /// Sends a (sent) alert to the webhook if it takes alerts.
    pub fn write_alert(&mut self, a: &impl serde::Serialize) -> Result<()> {
        if self.webhook_alerts
            && let Some(h) = &self.webhook
        {
            h.send(serde_json::to_value(a)?)?;
        }
        Ok(())
    }

    /// Makes everything so far durable: store transaction, events file flushed. Called
    /// before a barrier is acknowledged, so offsets are committed only after the store.
    ///
    /// The events file is flushed first: once the store's frontier moves past an event, a
    /// restart does not emit it again, so it must be in the file by then (a crash between
    /// the two only writes some events twice).
    pub fn commit(&mut self) -> Result<()> {
        if let Some(w) = self.events_out.as_mut() {
            w.flush()?;
        }
        let checkpoint = self.stage.checkpoint();
        if let Some(s) = self.store.as_mut()
            && (!self.unstored.is_empty() || checkpoint.is_some())
        {
            s.write(&self.unstored, checkpoint).with_context(|| {
                format!("writing {} case events to the store `{}`", self.unstored.len(), self.store_display())
            })?;
        }
        self.unstored.clear();
        Ok(())
    }

    /// Commits and waits (bounded) for the webhook to deliver what it holds.
    pub fn close(mut self) -> Result<StageStats> {
        self.commit()?;
        if let Some(h) = self.webhook.take() {
            let stats = h.close(Duration::from_secs(30))?;
            tracing::info!(?stats, "webhook closed");
        }
        Ok(self.stage.stats())
    }

    /// Publishes the stage's and the webhook's counters for `/metrics` and `/readyz`.
    pub fn publish(&self, m: &SinkMetrics) {
        let s = self.stage.stats();
        m.cases_enabled.store(true, Ordering::Relaxed);
        m.alerts_suppressed.store(s.alerts.silenced + s.alerts.inhibited + s.alerts.flapping, Ordering::Relaxed);
        m.cases_opened.store(s.cases_opened, Ordering::Relaxed);
        m.case_events.store(s.case_events, Ordering::Relaxed);
        m.cases_open.store(s.open_cases, Ordering::Relaxed);
        m.case_escalations.store(s.escalations, Ordering::Relaxed);
        m.feedback_rejected.store(s.feedback_rejected, Ordering::Relaxed);
        if let Some(h) = &self.webhook {
            let w = h.stats();
            m.webhook_delivered.store(w.delivered, Ordering::Relaxed);
            m.webhook_failing.store(w.failing, Ordering::Relaxed);
        }
    }

    fn store_display(&self) -> String {
        self.store_location.as_deref().map(store::redact).unwrap_or_default()
    }

    /// Where the stage's outputs went, for the run summary.
    pub fn outputs(&self) -> Vec<crate::run::OutputReport> {
        let mut out = Vec::new();
        if let Some(w) = &self.events_out {
            out.push(crate::run::OutputReport::file("case events", w));
        }
        if self.store.is_some() {
            out.push(crate::run::OutputReport {
                what: "cases".into(),
                location: format!("{} (store)", self.store_display()),
                records: None,
            });
        }
        out
    }
}

/// One line for a case event on the console.
pub fn render_case(u: &CaseUpdate) -> String {
    let c = &u.case;
    let e = &u.event;
    let mut extra = String::new();
    for key in ["by", "fraction", "level", "alert_id", "note", "into"] {
        if let Some(v) = e.detail.get(key) {
            let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
            extra.push_str(&format!(" {key}={v}"));
        }
    }
    format!(
        "{} CASE {:<14} {} [{}] {} → {}{}{}",
        format_timestamp(e.at),
        e.kind.name(),
        c.case_id,
        c.category,
        c.title,
        c.unit.as_deref().unwrap_or("-"),
        c.deadline.map(|d| format!(" due {}", format_timestamp(d))).unwrap_or_default(),
        extra
    )
}

/// `gridwatch cases list|show`.
pub fn command(args: CasesArgs) -> Result<std::process::ExitCode> {
    let location = match (&args.store, &args.config) {
        (Some(s), _) => s.clone(),
        (None, config) => store_of(config)?,
    };
    let mut store = store::open_existing(&location)
        .with_context(|| format!("opening the case store `{}`", store::redact(&location)))?;
    let mut out = std::io::stdout().lock();
    match args.command {
        CasesCommand::List(l) => {
            let filter = CaseFilter {
                status: match &l.status {
                    Some(s) => Some(gridwatch_cases::CaseStatus::parse(s).ok_or_else(|| {
                        let names: Vec<&str> = gridwatch_cases::CaseStatus::ALL.iter().map(|s| s.name()).collect();
                        anyhow!("unknown status `{s}` (one of: {})", names.join(", "))
                    })?),
                    None => None,
                },
                open_only: l.open,
                overdue: l.overdue,
                key: l.key,
                difficult: l.difficult,
                unit: l.unit.clone(),
                category_prefix: l.category.clone(),
                limit: Some(l.limit),
            };
            let cases = store.list(&filter)?;
            if l.json {
                for c in &cases {
                    serde_json::to_writer(&mut out, c)?;
                    writeln!(out)?;
                }
            } else {
                writeln!(
                    out,
                    "{:<21} {:<11} {:<8} {:<24} {:<40} {:<26} {:<20} flags",
                    "case", "status", "severity", "first seen", "category", "unit", "deadline"
                )?;
                for c in &cases {
                    writeln!(out, "{}", list_line(c))?;
                }
                let (n, events) = store.counts()?;
                writeln!(out, "{} shown; {n} cases, {events} events in the store", cases.len())?;
            }
        }
        CasesCommand::Show(s) => {
            let case = store.get(&s.id)?.ok_or_else(|| anyhow!("no case `{}` in the store", s.id))?;
            if s.json {
                serde_json::to_writer_pretty(&mut out, &case)?;
                writeln!(out)?;
            } else {
                show(&mut out, &case)?;
            }
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

fn store_of(config: &Path) -> Result<String> {
    let loaded = gridwatch_rules::load_config(config);
    let (config, _): (Config, _) = loaded.into_result().map_err(|e| anyhow!("invalid configuration:\n{e}"))?;
    config
        .cases
        .and_then(|c| c.store)
        .ok_or_else(|| anyhow!("`{}` has no `cases: {{store: …}}`; pass --store PATH|URL", config.path.display()))
}

fn flags(c: &Case) -> String {
    let mut f = Vec::new();
    if c.flags.overdue {
        f.push("overdue");
    }
    if c.flags.key {
        f.push("key");
    }
    if c.flags.difficult {
        f.push("difficult");
    }
    f.join(",")
}

fn list_line(c: &Case) -> String {
    format!(
        "{:<21} {:<11} {:<8} {:<24} {:<40} {:<26} {:<20} {}",
        c.case_id,
        c.status.name(),
        c.severity.name(),
        format_timestamp(c.first_seen),
        c.category,
        c.unit.as_deref().unwrap_or("-"),
        c.deadline.map(format_timestamp).unwrap_or_default(),
        flags(c)
    )
}

fn show(out: &mut impl Write, c: &Case) -> Result<()> {
    writeln!(out, "case        {}", c.case_id)?;
    writeln!(out, "title       {}", c.title)?;
    writeln!(out, "category    {}   severity {}   status {}", c.category, c.severity.name(), c.status.name())?;
    writeln!(out, "case key    {}", c.case_key)?;
    if let Some(p) = c.location {
        writeln!(out, "location    {:.6}, {:.6}   grid {}", p.lat, p.lon, c.grid_id.as_deref().unwrap_or("-"))?;
    }
    if let Some(comp) = &c.component_id {
        writeln!(out, "component   {comp}")?;
    }
    let by = c.dispatch_by.and_then(|b| serde_json::to_value(b).ok()).and_then(|v| v.as_str().map(str::to_string));
    writeln!(out, "unit        {} (by {})", c.unit.as_deref().unwrap_or("-"), by.unwrap_or_else(|| "-".into()))?;
    if let Some(d) = c.deadline {
        writeln!(out, "deadline    {}", format_timestamp(d))?;
    }
    writeln!(out, "flags       {}", flags(c))?;
    writeln!(out, "seen        {} → {}", format_timestamp(c.first_seen), format_timestamp(c.last_seen))?;
    writeln!(out, "alerts      {} ({} firing): {}", c.alert_ids.len(), c.firing.len(), c.rules.join(", "))?;
    writeln!(out, "history")?;
    for e in &c.history {
        let detail =
            if e.detail.is_empty() { String::new() } else { serde_json::Value::Object(e.detail.clone()).to_string() };
        writeln!(
            out,
            "  {:>3} {} {:<14} → {:<11} {:<26} {}",
            e.seq,
            format_timestamp(e.at),
            e.kind.name(),
            e.status.name(),
            e.unit.as_deref().unwrap_or("-"),
            detail
        )?;
    }
    Ok(())
}
