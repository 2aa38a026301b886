//! Admin HTTP for running as a sidecar: `/healthz` (the process answers), `/readyz` (the
//! source is connected and assigned; 503 otherwise, with the reason) and `/metrics`
//! (Prometheus text format).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::routing::{get, post};
use gridwatch_connectors::kafka::KafkaStatus;
use gridwatch_runtime::ReloadStatus;
use gridwatch_runtime::RunMetrics;

/// What the endpoints report on.
#[derive(Debug, Clone)]
pub struct AdminState {
    /// The output thread's counters and the sinks' health.
    pub sink: Arc<RunMetrics>,
    /// Kafka source and sink state, when running on Kafka.
    pub kafka: Option<Arc<KafkaStatus>>,
    /// Set once the engine runs (for sources without their own readiness).
    pub started: Arc<AtomicBool>,
    /// A broker-connected source (MQTT): its kind and whether it is connected.
    pub source: Option<(String, Arc<AtomicBool>)>,
    /// Hot reload: the request flag the driver reads, if this run can reload.
    pub reload: Option<(Arc<AtomicBool>, Arc<ReloadStatus>)>,
    /// What the reloads did (`/api/rules/status`, the reload metrics).
    pub reload_status: Arc<ReloadStatus>,
    /// The bearer token mutating endpoints require; without one they are refused.
    pub token: Option<String>,
}

/// Serves the admin endpoints on `addr` from a background thread; returns the bound address
/// (port 0 picks a free one).
pub fn serve(addr: SocketAddr, state: AdminState) -> Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(addr).with_context(|| format!("binding the admin address {addr}"))?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    if !bound.ip().is_loopback() {
        // The admin endpoints have no authentication: reachable from the network, they
        // show the engine's state to anyone who can connect.
        eprintln!(
            "warning: admin HTTP listens on {bound}, which is not a loopback address: anyone who can reach it reads /metrics and /readyz; bind 127.0.0.1 (the sidecar's own host) unless a network policy protects it"
        );
    }
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/rules/status", get(rules_status))
        .route("/-/reload", post(reload))
        .with_state(state);
    gridwatch_connectors::net::serve_http("gridwatch-admin", "admin HTTP", listener, app)?;
    tracing::info!(%bound, "admin HTTP listening");
    Ok(bound)
}

/// The last reload's outcome, with every diagnostic of a refused one.
async fn rules_status(State(s): State<AdminState>) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    let body = serde_json::to_string(&s.reload_status.get()).unwrap_or_default() + "\n";
    ([(axum::http::header::CONTENT_TYPE, "application/json")], body)
}

/// `POST /-/reload` with `Authorization: Bearer TOKEN`: asks for a reload and answers once
/// it was applied (200, what changed) or refused (422, the diagnostics; the old rules stay).
async fn reload(State(s): State<AdminState>, headers: HeaderMap) -> (StatusCode, String) {
    let Some(token) = &s.token else {
        return (
            StatusCode::FORBIDDEN,
            "no admin token is configured: mutating endpoints are off (set GRIDWATCH_ADMIN_TOKEN or --admin-token-file; or send SIGHUP)\n".into(),
        );
    };
    let given = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    if given != Some(token.as_str()) {
        return (StatusCode::UNAUTHORIZED, "a valid `Authorization: Bearer TOKEN` header is required\n".into());
    }
    let Some((flag, status)) = &s.reload else {
        return (StatusCode::NOT_IMPLEMENTED, "this run cannot reload its rules (a Kafka source): restart it\n".into());
    };
    let before = status.attempts();
    flag.store(true, Ordering::Release);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while status.attempts() == before {
        if std::time::Instant::now() > deadline {
            return (
                StatusCode::ACCEPTED,
                "reload requested; not applied within 30 s (see /api/rules/status)\n".into(),
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let state = status.get();
    let body = serde_json::to_string(&state).unwrap_or_default() + "\n";
    if state.last_successful { (StatusCode::OK, body) } else { (StatusCode::UNPROCESSABLE_ENTITY, body) }
}

async fn readyz(State(s): State<AdminState>) -> (StatusCode, String) {
    if let Some(k) = &s.kafka {
        if !k.broker_up.load(Ordering::Relaxed) {
            return (StatusCode::SERVICE_UNAVAILABLE, "not ready: Kafka broker unreachable\n".into());
        }
        if k.sink_failing.load(Ordering::Relaxed) {
            return (StatusCode::SERVICE_UNAVAILABLE, "not ready: Kafka sink deliveries failing (retrying)\n".into());
        }
        if !k.ready.load(Ordering::Relaxed) {
            return (StatusCode::SERVICE_UNAVAILABLE, "not ready: no partitions assigned yet\n".into());
        }
        return (StatusCode::OK, "ready\n".into());
    }
    if let Some((kind, connected)) = &s.source
        && !connected.load(Ordering::Relaxed)
    {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready (external): {kind} broker unreachable (retrying)\n"),
        );
    }
    let failing = s.sink.failing_sinks();
    if !failing.is_empty() {
        // An external system: the sinks retry; nothing is dropped meanwhile.
        return (StatusCode::SERVICE_UNAVAILABLE, format!("not ready (external): {} (retrying)\n", failing.join("; ")));
    }
    if s.started.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n".into())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready: starting\n".into())
    }
}

async fn metrics(State(s): State<AdminState>) -> String {
    let mut out = String::new();
    let mut gauges = String::new();
    let mut counter = |name: &str, help: &str, v: u64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
    };
    counter("gridwatch_alerts_total", "Alerts written to the sinks.", s.sink.alerts.load(Ordering::Relaxed));
    counter(
        "gridwatch_dead_letters_total",
        "Records sent to the dead-letter outputs.",
        s.sink.dead_letters.load(Ordering::Relaxed),
    );
    counter("gridwatch_rule_errors_total", "Rule evaluation failures.", s.sink.rule_errors.load(Ordering::Relaxed));
    counter(
        "gridwatch_barriers_acked_total",
        "Delivery barriers acknowledged by every sink.",
        s.sink.barriers_acked.load(Ordering::Relaxed),
    );
    {
        let r = s.reload_status.get();
        let _ = writeln!(
            gauges,
            "# HELP gridwatch_config_last_reload_successful Whether the last rule reload succeeded (1 before any).\n# TYPE gridwatch_config_last_reload_successful gauge\ngridwatch_config_last_reload_successful {}",
            u8::from(r.last_successful)
        );
        let _ = writeln!(
            gauges,
            "# HELP gridwatch_config_last_reload_success_timestamp_seconds When the rules were last loaded.\n# TYPE gridwatch_config_last_reload_success_timestamp_seconds gauge\ngridwatch_config_last_reload_success_timestamp_seconds {}",
            r.last_success_ms / 1000
        );
        counter("gridwatch_config_reloads_total", "Rule reloads applied.", r.reloads);
        counter(
            "gridwatch_config_reload_failures_total",
            "Rule reloads refused (the old rules kept running).",
            r.failures,
        );
    }
    counter(
        "gridwatch_snapshots_written_total",
        "Snapshots of the running state written (checkpoint).",
        s.sink.snapshots_written.load(Ordering::Relaxed),
    );
    counter(
        "gridwatch_snapshot_failures_total",
        "Snapshots that could not be written (a restart resumes from the previous one).",
        s.sink.snapshot_failures.load(Ordering::Relaxed),
    );
    {
        let by_rule = s.sink.rule_errors_by_rule.lock().unwrap_or_else(|p| p.into_inner());
        if !by_rule.is_empty() {
            let _ = writeln!(
                gauges,
                "# HELP gridwatch_rule_evaluation_failures_total Batches a rule could not evaluate, by rule.\n# TYPE gridwatch_rule_evaluation_failures_total counter"
            );
            for (rule, n) in by_rule.iter() {
                let _ = writeln!(
                    gauges,
                    "gridwatch_rule_evaluation_failures_total{{rule=\"{}\"}} {n}",
                    rule.replace(['\\', '"'], "_")
                );
            }
        }
    }
    if s.sink.cases_enabled.load(Ordering::Relaxed) {
        let m = &s.sink;
        counter(
            "gridwatch_alerts_suppressed_total",
            "Alerts recorded but not sent (silenced, inhibited, flapping).",
            m.alerts_suppressed.load(Ordering::Relaxed),
        );
        counter("gridwatch_cases_opened_total", "Cases opened.", m.cases_opened.load(Ordering::Relaxed));
        counter("gridwatch_case_events_total", "Case events emitted.", m.case_events.load(Ordering::Relaxed));
        counter("gridwatch_case_escalations_total", "SLA escalations.", m.case_escalations.load(Ordering::Relaxed));
        counter(
            "gridwatch_case_feedback_rejected_total",
            "Feedback events rejected (illegal transition, unknown case).",
            m.feedback_rejected.load(Ordering::Relaxed),
        );
        counter(
            "gridwatch_webhook_delivered_total",
            "Records the webhook endpoint acknowledged.",
            m.webhook_delivered.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            gauges,
            "# HELP gridwatch_cases_open Cases open now.\n# TYPE gridwatch_cases_open gauge\ngridwatch_cases_open {}",
            m.cases_open.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            gauges,
            "# HELP gridwatch_webhook_failing 1 while webhook deliveries fail and are retried.\n# TYPE gridwatch_webhook_failing gauge\ngridwatch_webhook_failing {}",
            i64::from(m.webhook_failing.load(Ordering::Relaxed))
        );
    }
    if let Some(k) = &s.kafka {
        counter("gridwatch_kafka_messages_in_total", "Kafka messages consumed.", k.messages_in.load(Ordering::Relaxed));
        counter(
            "gridwatch_kafka_alerts_out_total",
            "Alerts acknowledged by Kafka.",
            k.alerts_out.load(Ordering::Relaxed),
        );
        counter(
            "gridwatch_kafka_dead_letters_out_total",
            "Dead letters acknowledged by Kafka.",
            k.dead_letters_out.load(Ordering::Relaxed),
        );
        counter(
            "gridwatch_kafka_delivery_retries_total",
            "Kafka deliveries that failed and were sent again.",
            k.delivery_retries.load(Ordering::Relaxed),
        );
        counter("gridwatch_kafka_commits_total", "Offset commits.", k.commits.load(Ordering::Relaxed));
        counter("gridwatch_kafka_rebalances_total", "Consumer-group rebalances.", k.rebalances.load(Ordering::Relaxed));
        counter(
            "gridwatch_replay_suppressed_alerts_total",
            "Alerts recomputed while replaying after a restart and not sent again.",
            k.replay_suppressed.load(Ordering::Relaxed),
        );
        let mut gauge = |name: &str, help: &str, v: i64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        gauge(
            "gridwatch_kafka_ready",
            "1 when partitions are assigned and the broker answers.",
            i64::from(k.ready.load(Ordering::Relaxed) && k.broker_up.load(Ordering::Relaxed)),
        );
        gauge(
            "gridwatch_kafka_paused",
            "1 while consumption is paused for backpressure.",
            i64::from(k.paused.load(Ordering::Relaxed)),
        );
        gauge(
            "gridwatch_kafka_sink_failing",
            "1 while sink deliveries fail and are retried.",
            i64::from(k.sink_failing.load(Ordering::Relaxed)),
        );
        gauge(
            "gridwatch_kafka_assigned_partitions",
            "Partitions assigned to this instance.",
            k.assigned_partitions.load(Ordering::Relaxed),
        );
    }
    out.push_str(&gauges);
    out
}
