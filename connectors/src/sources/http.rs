//! The HTTP ingest source: `POST /ingest/{stream}` with NDJSON lines or a JSON array.
//!
//! - Every line is checked with the stream's decoder before the response: the response
//!   lists the rejected ones (line number — element number for an array — and reason) while
//!   the good ones go in; rejected lines also go to the dead-letter sinks.
//! - `202 Accepted` with `{"accepted": N, "rejected": [{"line": L, "reason": "…"}]}` once the
//!   lines are queued for the engine; `400` if a body had lines and none was accepted.
//! - `401` without the configured bearer token, `404` for an undeclared stream, `413`
//!   above the body limit, `429` with `Retry-After` while the engine's queue is full
//!   (backpressure: nothing is dropped; the client sends again).
//!
//! A graceful stop (SIGTERM) answers new requests `503` with `Retry-After` and processes
//! and delivers every request already answered `202` before it exits.
//!
//! A `202` means the lines are in gridwatch's queue, not yet delivered: a crash before the
//! next acknowledged barrier loses them. Clients that need more keep their data until a
//! later acknowledgement of their own (e.g. a Kafka topic in front).

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use gridwatch_engine::decode::Decoder;
use gridwatch_engine::{Plan, Reject};
use gridwatch_rules::sources::HttpIngestConfig;
use gridwatch_runtime::{ErrorClass, Ingest, Polled, Source, SourceError};

/// One request's lines, on their way to the engine.
struct Batch {
    stream: usize,
    good: Vec<Vec<u8>>,
    /// (reason, payload) of rejected lines, for the dead-letter sinks.
    rejected: Vec<(Reject, Vec<u8>)>,
}

struct Shared {
    plan: Arc<Plan>,
    token: Option<String>,
    tx: Sender<Batch>,
    /// Decoders per stream, reused across requests.
    decoders: Vec<Mutex<Vec<Decoder>>>,
    /// A graceful stop began: requests are answered 503 and take nothing.
    closing: AtomicBool,
    /// Requests between their check of `closing` and their send: the stop waits for them
    /// (together with `closing`, no request can be answered 202 and then not drained).
    sending: AtomicUsize,
}

/// See the module docs.
pub struct HttpIngestSource {
    rx: Receiver<Batch>,
    shared: Arc<Shared>,
    addr: SocketAddr,
    received: u64,
    _server: std::thread::JoinHandle<()>,
}

impl HttpIngestSource {
    /// Binds `config.listen` (failing here, before any output is opened) and serves.
    pub fn start(config: &HttpIngestConfig, plan: Arc<Plan>) -> Result<HttpIngestSource, SourceError> {
        let listener = std::net::TcpListener::bind(config.listen).map_err(|e| {
            SourceError::new("http", ErrorClass::Config, format!("cannot listen on {}: {e}", config.listen))
        })?;
        listener.set_nonblocking(true).map_err(|e| SourceError::new("http", ErrorClass::Internal, e.to_string()))?;
        let addr = listener.local_addr().map_err(|e| SourceError::new("http", ErrorClass::Internal, e.to_string()))?;
        let (tx, rx) = crossbeam_channel::bounded(config.queue);
        let decoders = (0..plan.streams.len()).map(|_| Mutex::new(Vec::new())).collect();
        let shared = Arc::new(Shared {
            plan,
            token: config.token.clone(),
            tx,
            decoders,
            closing: AtomicBool::new(false),
            sending: AtomicUsize::new(0),
        });
        let max_body = config.max_body_bytes;
        let app = Router::new()
            .route("/ingest/{stream}", post(ingest))
            .layer(DefaultBodyLimit::max(max_body))
            .with_state(shared.clone());
        let server = crate::net::serve_http("gridwatch-http-ingest", "HTTP ingest", listener, app)
            .map_err(|e| SourceError::new("http", ErrorClass::Internal, e.to_string()))?;
        tracing::info!(%addr, "HTTP ingest listening (POST /ingest/{{stream}})");
        Ok(HttpIngestSource { rx, shared, addr, received: 0, _server: server })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string() + "\n").into_response()
}

/// Constant-time comparison of the bearer token.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn ingest(State(s): State<Arc<Shared>>, Path(stream): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(token) = &s.token {
        let given =
            headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| same(g.as_bytes(), token.as_bytes())) {
            let mut r = answer(
                StatusCode::UNAUTHORIZED,
                serde_json::json!({"error": "a bearer token is required: `Authorization: Bearer <token>`"}),
            );
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
    }
    let Some(index) = s.plan.stream_index(&stream) else {
        let names: Vec<&str> = s.plan.streams.iter().map(|d| d.name.as_str()).collect();
        return answer(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": format!("unknown stream `{stream}`"), "streams": names}),
        );
    };
    let lines = match split_body(&body) {
        Ok(lines) => lines,
        Err(why) => return answer(StatusCode::BAD_REQUEST, serde_json::json!({"error": why})),
    };
    let mut decoder = s.decoders[index].lock().ok().and_then(|mut d| d.pop()).unwrap_or_else(|| {
        let def = s.plan.streams[index].clone();
        Decoder::with_fields(def, 1, s.plan.needed_fields(index))
    });
    let mut batch = Batch { stream: index, good: Vec::with_capacity(lines.len()), rejected: Vec::new() };
    let mut report = Vec::new();
    for (line, payload) in &lines {
        match decoder.parse(payload) {
            Ok(_) => batch.good.push(payload.to_vec()),
            Err(reason) => {
                report.push(serde_json::json!({"line": line, "kind": reason.kind, "reason": reason.message}));
                let reason = Reject { message: format!("HTTP ingest line {line}: {}", reason.message), ..reason };
                batch.rejected.push((reason, payload.to_vec()));
            }
        }
    }
    if let Ok(mut pool) = s.decoders[index].lock() {
        pool.push(decoder);
    }
    let accepted = batch.good.len();
    if lines.is_empty() {
        return answer(StatusCode::BAD_REQUEST, serde_json::json!({"error": "the body holds no line"}));
    }
    // SeqCst pairs with `stop_intake`: a request either sees `closing`, or the stop sees
    // it in `sending` and waits until its batch is in the queue.
    s.sending.fetch_add(1, Ordering::SeqCst);
    let sent = if s.closing.load(Ordering::SeqCst) { None } else { Some(s.tx.try_send(batch)) };
    s.sending.fetch_sub(1, Ordering::SeqCst);
    match sent {
        None => {
            let mut r = answer(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({"error": "gridwatch is stopping: nothing of this request was taken; send it again later"}),
            );
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            return r;
        }
        Some(Ok(())) => {}
        Some(Err(TrySendError::Full(_))) => {
            let mut r = answer(
                StatusCode::TOO_MANY_REQUESTS,
                serde_json::json!({"error": "the engine is busy: nothing of this request was taken; send it again"}),
            );
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return r;
        }
        Some(Err(TrySendError::Disconnected(_))) => {
            return answer(StatusCode::SERVICE_UNAVAILABLE, serde_json::json!({"error": "gridwatch is stopping"}));
        }
    }
    let status = if accepted == 0 { StatusCode::BAD_REQUEST } else { StatusCode::ACCEPTED };
    answer(status, serde_json::json!({"accepted": accepted, "rejected": report}))
}

/// The lines of a body: NDJSON (blank lines skipped), or the elements of a JSON array.
/// A line of a body: its number (element number for an array) and its bytes.
type Line<'a> = (usize, Cow<'a, [u8]>);

fn split_body(body: &[u8]) -> Result<Vec<Line<'_>>, String> {
    let trimmed = body.trim_ascii_start();
    if trimmed.first() == Some(&b'[') {
        let mut out = Vec::new();
        for (i, item) in sonic_rs::to_array_iter(trimmed).enumerate() {
            let item = item
                .map_err(|e| format!("the body is not a JSON array: {}", e.to_string().lines().next().unwrap_or("")))?;
            out.push((i + 1, Cow::Owned(item.as_raw_str().as_bytes().to_vec())));
        }
        return Ok(out);
    }
    Ok(body
        .split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l.strip_suffix(b"\r").unwrap_or(l)))
        .filter(|(_, l)| !l.iter().all(u8::is_ascii_whitespace))
        .map(|(i, l)| (i, Cow::Borrowed(l)))
        .collect())
}

impl Source for HttpIngestSource {
    fn name(&self) -> &str {
        "http"
    }

    fn bounded(&self) -> bool {
        false
    }

    fn poll(&mut self, ingest: &mut Ingest<'_>, wait: Duration) -> Result<Polled, SourceError> {
        let first = match self.rx.recv_timeout(wait) {
            Ok(b) => b,
            Err(RecvTimeoutError::Timeout) => return Ok(Polled::Idle),
            Err(RecvTimeoutError::Disconnected) => {
                return Err(SourceError::new("http", ErrorClass::Internal, "the HTTP ingest server stopped"));
            }
        };
        let now = crate::net::wall_clock_ms();
        let rx = self.rx.clone();
        for batch in std::iter::once(first).chain(rx.try_iter().take(64)) {
            let name = ingest.plan().streams[batch.stream].name.clone();
            for payload in &batch.good {
                self.received += 1;
                ingest.push_arrived(batch.stream, 0, payload, self.received as i64, now)?;
            }
            for (reason, payload) in batch.rejected {
                self.received += 1;
                ingest.reject(&name, reason, &payload)?;
            }
        }
        Ok(Polled::Data)
    }

    fn stop_intake(&mut self) {
        self.shared.closing.store(true, Ordering::SeqCst);
    }

    fn drained(&self) -> bool {
        self.shared.sending.load(Ordering::SeqCst) == 0 && self.rx.is_empty()
    }

    fn received(&self) -> u64 {
        self.received
    }
}
