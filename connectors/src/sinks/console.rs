//! The console sink: alerts (and, as text, case events) on stdout.
//!
//! Output is buffered and flushed at each barrier and at least every 200 ms, so alerts
//! show up promptly without a write per alert. If stdout goes away (`gridwatch run | head`)
//! the console stops printing — with one warning — and every other sink goes on.

use std::io::{BufWriter, ErrorKind, Stdout, Write};
use std::time::{Duration, Instant};

use gridwatch_cases::CaseUpdate;
use gridwatch_engine::time::format_timestamp;
use gridwatch_engine::{Alert, AlertState};
use gridwatch_rules::sinks::ConsoleFormat;
use gridwatch_runtime::{ErrorClass, OutputReport, Record, Routes, Sink, SinkError};

/// See the module docs.
pub struct ConsoleSink {
    name: String,
    routes: Routes,
    format: ConsoleFormat,
    out: BufWriter<Stdout>,
    last_flush: Instant,
    barrier: u64,
    written: u64,
    /// Stdout was closed by the reader: nothing more is printed.
    closed: bool,
}

/// How often buffered console output is flushed at the latest.
const FLUSH_EVERY: Duration = Duration::from_millis(200);

impl ConsoleSink {
    /// A console sink.
    pub fn new(name: &str, routes: Routes, format: ConsoleFormat) -> ConsoleSink {
        ConsoleSink {
            name: name.to_string(),
            routes,
            format,
            out: BufWriter::with_capacity(1 << 16, std::io::stdout()),
            last_flush: Instant::now(),
            barrier: 0,
            written: 0,
            closed: false,
        }
    }

    fn io(&mut self, result: std::io::Result<()>) -> Result<(), SinkError> {
        match result {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::BrokenPipe => {
                tracing::warn!(sink = %self.name, "stdout was closed: the console prints nothing more; the other sinks go on");
                self.closed = true;
                Ok(())
            }
            Err(e) => Err(SinkError::caused(&self.name, ErrorClass::External, "cannot write to stdout", e)),
        }
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        if self.closed {
            return Ok(());
        }
        self.last_flush = Instant::now();
        let r = self.out.flush();
        self.io(r)
    }
}

impl Sink for ConsoleSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "stdout"
    }

    fn routes(&self) -> &Routes {
        &self.routes
    }

    fn write(&mut self, record: &Record<'_>) -> Result<(), SinkError> {
        if self.closed {
            return Ok(());
        }
        let r = match (record, self.format) {
            (Record::Alert { alert, .. }, ConsoleFormat::Text) => writeln!(self.out, "{}", render_alert(alert)),
            (Record::Alert { alert, gated, .. }, ConsoleFormat::Json) => {
                let line = match gated {
                    Some(g) => serde_json::to_string(g),
                    None => serde_json::to_string(alert),
                };
                writeln!(self.out, "{}", line.unwrap_or_default())
            }
            (Record::Case(u), ConsoleFormat::Text) => writeln!(self.out, "{}", render_case(u)),
            // JSON on stdout is the alert stream; case events go to their own sinks.
            (Record::Case(_), ConsoleFormat::Json) => return Ok(()),
            (Record::DeadLetter(d), ConsoleFormat::Text) => {
                writeln!(self.out, "DEAD {} {}: {}", d.stream, d.reason, d.payload)
            }
            (Record::DeadLetter(d), ConsoleFormat::Json) => {
                writeln!(self.out, "{}", serde_json::to_string(d).unwrap_or_default())
            }
        };
        self.written += 1;
        self.io(r)
    }

    fn barrier(&mut self, seq: u64) -> Result<(), SinkError> {
        self.barrier = seq;
        self.flush()
    }

    fn delivered(&mut self) -> Result<u64, SinkError> {
        Ok(self.barrier)
    }

    fn tick(&mut self) -> Result<(), SinkError> {
        if self.last_flush.elapsed() >= FLUSH_EVERY { self.flush() } else { Ok(()) }
    }

    fn close(&mut self) -> Result<(), SinkError> {
        self.flush()
    }

    fn report(&self) -> OutputReport {
        OutputReport {
            sink: self.name.clone(),
            what: what(&self.routes),
            location: if self.closed { "stdout (closed by the reader)".into() } else { "stdout".into() },
            records: Some(self.written),
        }
    }
}

/// What a sink receives, for the summary: `alerts, cases`.
pub(crate) fn what(routes: &Routes) -> String {
    routes.send.iter().map(|k| k.name().replace('_', " ")).collect::<Vec<_>>().join(", ")
}

/// One line for an alert on the console.
pub fn render_alert(a: &Alert) -> String {
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
        format_timestamp(a.event_time),
        state,
        a.severity.name(),
        a.rule_id,
        a.key,
        values.join(" ")
    )
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
