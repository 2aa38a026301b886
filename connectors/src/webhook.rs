//! Webhook sink: batched JSON POSTs with retries, in order, never dropping a record.
//!
//! # Batching and order
//!
//! [`WebhookSink::send`] queues one record in a bounded channel. One background thread takes
//! records off it and POSTs them as a JSON array (`Content-Type: application/json`) of up to
//! [`WebhookOptions::max_batch`] records; a partial batch goes out once its first record has
//! waited [`WebhookOptions::linger`], or at [`WebhookSink::flush`]. Only one batch is in
//! flight and a failed batch is retried, unchanged, before anything after it, so records
//! arrive in the order they were sent: the events of one case stay in order.
//!
//! # Retries
//!
//! Connection errors, timeouts, 408, 429 and 5xx are retried indefinitely with exponential
//! backoff and full jitter (a delay drawn uniformly from zero to
//! `min(max_backoff, initial_backoff × 2^attempt)`). A `Retry-After` header on 429 or 503
//! (delta-seconds or an HTTP date) replaces that delay, capped at four times `max_backoff` so a
//! misconfigured server cannot park the sink for hours. Redirects are not followed: a client
//! would replay a POST as a GET, so 3xx counts as a wrong URL. Delivery is at least once: if a
//! request times out after the server processed it, the retry delivers the batch again, so
//! receivers should deduplicate by an event id.
//!
//! # Backpressure
//!
//! When the queue is full, `send` blocks until the endpoint catches up. That holds the engine
//! back rather than losing records or growing memory without bound.
//!
//! # Dead letters
//!
//! Any other status (400, 401, 404, 413, 422, 3xx…) is permanent: the batch is appended as one
//! NDJSON line `{"url", "status", "response", "error", "records"}` to
//! [`WebhookOptions::dead_letter`], counted in [`WebhookStats::rejected`] and logged at error
//! level. Records that are still undelivered when the sink is closed are dead-lettered the same
//! way (with `status: null` and the last error) and counted in [`WebhookStats::abandoned`].
//! Without a dead-letter file, the error log names the URL, the status and the record count.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use gridwatch_connectors::webhook::{WebhookOptions, WebhookSink};
//!
//! let sink = WebhookSink::start(WebhookOptions { url: "http://127.0.0.1:8080/hook".into(), ..Default::default() })?;
//! sink.send(serde_json::json!({"event_id": "c7:3", "case_id": "c7", "seq": 3}))?;
//! let stats = sink.close(Duration::from_secs(30))?;
//! assert_eq!(stats.pending(), 0);
//! # Ok::<(), gridwatch_connectors::webhook::WebhookError>(())
//! ```

use std::fs::OpenOptions;
use std::hash::{BuildHasher, RandomState};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, SendTimeoutError, Sender, TryRecvError, bounded};
use rand::{Rng, SeedableRng};
use serde_json::Value;
use thiserror::Error;

mod http;
use http::{HttpTransport, display_url};

/// Longest error-response body kept for the dead-letter file.
const RESPONSE_LIMIT: usize = 1024;

/// Webhook settings. `Debug` hides header values and URL passwords.
#[derive(Clone)]
pub struct WebhookOptions {
    /// Endpoint; must be `http://` (this build's HTTP client has no TLS).
    pub url: String,
    /// Most records per POST (at least 1). Default 100.
    pub max_batch: usize,
    /// How long the first record of a partial batch waits for more. Default 200 ms.
    pub linger: Duration,
    /// Records queued before `send` blocks (at least 1). Default 10 000.
    pub queue_capacity: usize,
    /// Per-request timeout, connecting included. Default 10 s.
    pub timeout: Duration,
    /// Upper bound of the first retry delay; doubles per attempt. Default 200 ms.
    pub initial_backoff: Duration,
    /// Largest computed retry delay. Default 30 s.
    pub max_backoff: Duration,
    /// Extra headers sent with every request, e.g. `Authorization`.
    pub headers: Vec<(String, String)>,
    /// NDJSON file for batches that cannot be delivered; opened (created) at start.
    pub dead_letter: Option<PathBuf>,
}

impl Default for WebhookOptions {
    fn default() -> Self {
        WebhookOptions {
            url: String::new(),
            max_batch: 100,
            linger: Duration::from_millis(200),
            queue_capacity: 10_000,
            timeout: Duration::from_secs(10),
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
            headers: Vec::new(),
            dead_letter: None,
        }
    }
}

impl std::fmt::Debug for WebhookOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Headers usually carry credentials; only their names are shown.
        let headers: Vec<String> = self.headers.iter().map(|(k, _)| format!("{k}: ***")).collect();
        f.debug_struct("WebhookOptions")
            .field("url", &display_url(&self.url))
            .field("max_batch", &self.max_batch)
            .field("linger", &self.linger)
            .field("queue_capacity", &self.queue_capacity)
            .field("timeout", &self.timeout)
            .field("initial_backoff", &self.initial_backoff)
            .field("max_backoff", &self.max_backoff)
            .field("headers", &headers)
            .field("dead_letter", &self.dead_letter)
            .finish()
    }
}

/// Webhook errors; each names the URL (its password, if any, masked).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// The options are unusable; `reason` lists every problem found.
    #[error("webhook `{url}`: {reason}")]
    Invalid {
        /// The URL.
        url: String,
        /// What is wrong, all problems joined by `; `.
        reason: String,
    },
    /// The sender thread has stopped, so nothing more can be queued.
    #[error("webhook `{url}`: the sender thread has stopped")]
    Stopped {
        /// The URL.
        url: String,
    },
    /// A flush did not complete in time; the records stay queued.
    #[error("webhook `{url}`: {pending} records still undelivered after {waited:?} (last error: {})", .last_error.as_deref().unwrap_or("none"))]
    Timeout {
        /// The URL.
        url: String,
        /// Records queued but neither delivered nor dead-lettered.
        pending: u64,
        /// How long the flush waited.
        waited: Duration,
        /// What the endpoint last answered, if it failed.
        last_error: Option<String>,
    },
    /// The sink was closed before everything was delivered; the rest went to the dead-letter
    /// file (or the error log).
    #[error("webhook `{url}`: closed with {abandoned} records undelivered, dead-lettered (last error: {})", .last_error.as_deref().unwrap_or("none"))]
    Abandoned {
        /// The URL.
        url: String,
        /// Records given up at close.
        abandoned: u64,
        /// What the endpoint last answered, if it failed.
        last_error: Option<String>,
    },
}

/// A snapshot of a sink's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct WebhookStats {
    /// Records accepted by `send`.
    pub queued: u64,
    /// Records the endpoint acknowledged with 2xx.
    pub delivered: u64,
    /// Successful POSTs.
    pub batches: u64,
    /// Failed attempts (connection error, timeout, 408, 429, 5xx) that were or will be retried.
    pub retries: u64,
    /// Records the endpoint refused permanently (dead-lettered).
    pub rejected: u64,
    /// Records still undelivered at close (dead-lettered).
    pub abandoned: u64,
    /// True from a failed attempt until the next 2xx: the endpoint is unhealthy.
    pub failing: bool,
    /// The latest failure (status and URL, or the connection error); kept after recovery.
    pub last_error: Option<String>,
}

impl WebhookStats {
    /// Records queued but not yet delivered or dead-lettered.
    pub fn pending(&self) -> u64 {
        self.queued.saturating_sub(self.delivered + self.rejected + self.abandoned)
    }
}

#[derive(Default)]
struct Shared {
    queued: AtomicU64,
    delivered: AtomicU64,
    batches: AtomicU64,
    retries: AtomicU64,
    rejected: AtomicU64,
    abandoned: AtomicU64,
    failing: AtomicBool,
    last_error: Mutex<Option<String>>,
}

impl Shared {
    fn stats(&self) -> WebhookStats {
        WebhookStats {
            queued: self.queued.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            abandoned: self.abandoned.load(Ordering::Relaxed),
            failing: self.failing.load(Ordering::Relaxed),
            last_error: self.last_error.lock().map(|e| e.clone()).unwrap_or_else(|p| p.into_inner().clone()),
        }
    }

    /// Records a failure; returns whether the endpoint was already failing.
    fn fail(&self, error: &str) -> bool {
        match self.last_error.lock() {
            Ok(mut e) => *e = Some(error.to_string()),
            Err(p) => *p.into_inner() = Some(error.to_string()),
        }
        self.failing.swap(true, Ordering::Relaxed)
    }
}

enum Msg {
    Record(Value),
    /// Answered once everything queued before it is delivered or dead-lettered.
    Flush(Sender<()>),
}

/// A running webhook sink: a bounded queue and one sender thread. See the module docs.
///
/// `Send + Sync`, so several threads can share it behind an `Arc`. Call [`close`] at the end;
/// dropping the sink does the same with [`WebhookOptions::timeout`] as the bound.
///
/// [`close`]: WebhookSink::close
pub struct WebhookSink {
    url: String,
    tx: Option<Sender<Msg>>,
    /// Dropped to stop the thread: it gives up retrying and dead-letters what is left.
    stop: Option<Sender<()>>,
    shared: Arc<Shared>,
    worker: Option<JoinHandle<()>>,
    drop_timeout: Duration,
}

impl std::fmt::Debug for WebhookSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSink").field("url", &self.url).field("stats", &self.stats()).finish()
    }
}

impl WebhookSink {
    /// Validates the options (reporting every problem, with the URL), opens the dead-letter
    /// file and starts the sender thread.
    pub fn start(options: WebhookOptions) -> Result<WebhookSink, WebhookError> {
        let shown = display_url(&options.url);
        let checked = validate(&options)
            .map_err(|problems| WebhookError::Invalid { url: shown.clone(), reason: problems.join("; ") })?;
        let (url, timeout) = (shown.clone(), options.timeout);
        let retry_after_cap = options.max_backoff.saturating_mul(4);
        // The blocking client runs its own runtime and must not be built or dropped inside
        // an async context, so it lives entirely on the sender thread.
        Self::spawn(options, shown, move || HttpTransport::new(checked, url, timeout, retry_after_cap))
    }

    /// Starts the sender thread with the transport `make` builds on it.
    fn spawn<T: Transport>(
        options: WebhookOptions,
        url: String,
        make: impl FnOnce() -> Result<T, String> + Send + 'static,
    ) -> Result<WebhookSink, WebhookError> {
        let invalid = |reason: String| WebhookError::Invalid { url: url.clone(), reason };
        let (tx, rx) = bounded(options.queue_capacity.max(1));
        let (stop_tx, stop_rx) = bounded(0);
        let (ready_tx, ready_rx) = bounded(1);
        let shared = Arc::new(Shared::default());
        let drop_timeout = options.timeout;
        let worker_shared = shared.clone();
        let worker_url = url.clone();
        let handle = std::thread::Builder::new()
            .name("gridwatch-webhook".into())
            .spawn(move || {
                let transport = match make() {
                    Ok(t) => t,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                Worker::new(transport, options, worker_url, worker_shared, stop_rx).run(&rx);
            })
            .map_err(|e| invalid(format!("cannot start the sender thread: {e}")))?;
        let ready = ready_rx.recv().unwrap_or_else(|_| Err("the sender thread died while starting".into()));
        if let Err(reason) = ready {
            let _ = handle.join();
            return Err(invalid(reason));
        }
        Ok(WebhookSink { url, tx: Some(tx), stop: Some(stop_tx), shared, worker: Some(handle), drop_timeout })
    }

    /// Queues one record. Blocks while the queue is full (backpressure); never drops.
    /// Fails only if the sender thread has stopped.
    pub fn send(&self, record: Value) -> Result<(), WebhookError> {
        let tx = self.tx.as_ref().ok_or_else(|| self.stopped())?;
        // Counted first so `pending` never dips below zero while the thread races ahead.
        self.shared.queued.fetch_add(1, Ordering::Relaxed);
        tx.send(Msg::Record(record)).map_err(|_| {
            self.shared.queued.fetch_sub(1, Ordering::Relaxed);
            self.stopped()
        })
    }

    /// Waits until everything queued so far is delivered or dead-lettered, at most `timeout`.
    /// A partial batch is sent at once instead of lingering. On timeout, the error tells how
    /// many records are pending; they stay queued.
    pub fn flush(&self, timeout: Duration) -> Result<(), WebhookError> {
        let started = Instant::now();
        let tx = self.tx.as_ref().ok_or_else(|| self.stopped())?;
        let (done_tx, done_rx) = bounded(1);
        // The marker queues behind the records, so its answer means they were all handled.
        match tx.send_timeout(Msg::Flush(done_tx), timeout) {
            Ok(()) => {}
            Err(SendTimeoutError::Timeout(_)) => return Err(self.timed_out(started.elapsed())),
            Err(SendTimeoutError::Disconnected(_)) => return Err(self.stopped()),
        }
        match done_rx.recv_timeout(timeout.saturating_sub(started.elapsed())) {
            Ok(()) => Ok(()),
            Err(RecvTimeoutError::Timeout) => Err(self.timed_out(started.elapsed())),
            Err(RecvTimeoutError::Disconnected) => Err(self.stopped()),
        }
    }

    /// The endpoint (credentials removed).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> WebhookStats {
        self.shared.stats()
    }

    /// Flushes (waiting at most `timeout`), then stops the thread. Records still undelivered
    /// are dead-lettered and reported as [`WebhookError::Abandoned`]. Takes at most `timeout`
    /// plus one request timeout (a request in flight cannot be interrupted).
    pub fn close(mut self, timeout: Duration) -> Result<WebhookStats, WebhookError> {
        self.shutdown(timeout)?;
        Ok(self.shared.stats())
    }

    fn shutdown(&mut self, timeout: Duration) -> Result<(), WebhookError> {
        let Some(worker) = self.worker.take() else { return Ok(()) };
        let flushed = self.flush(timeout);
        // Closing `stop` ends any retry loop; closing `tx` lets the thread drain the queue
        // into the dead-letter file and exit.
        self.stop.take();
        self.tx.take();
        if worker.join().is_err() {
            tracing::error!(url = %self.url, "the webhook sender thread panicked");
        }
        let stats = self.shared.stats();
        match flushed {
            Err(e @ WebhookError::Stopped { .. }) => Err(e),
            // A flush that timed out may still have finished before the stop.
            _ if stats.abandoned == 0 => Ok(()),
            _ => Err(WebhookError::Abandoned {
                url: self.url.clone(),
                abandoned: stats.abandoned,
                last_error: stats.last_error,
            }),
        }
    }

    fn stopped(&self) -> WebhookError {
        WebhookError::Stopped { url: self.url.clone() }
    }

    fn timed_out(&self, waited: Duration) -> WebhookError {
        let s = self.shared.stats();
        WebhookError::Timeout { url: self.url.clone(), pending: s.pending(), waited, last_error: s.last_error }
    }
}

impl Drop for WebhookSink {
    fn drop(&mut self) {
        if let Err(error) = self.shutdown(self.drop_timeout) {
            tracing::error!(%error, "webhook sink dropped without close");
        }
    }
}

/// One POST of one batch. The seam between the batching/retry logic and HTTP, so the former
/// is tested without sockets.
trait Transport: Send + 'static {
    fn post(&mut self, body: &[u8]) -> Attempt;
}

/// The result of one POST.
#[derive(Debug, Clone, PartialEq)]
enum Attempt {
    Delivered,
    /// Permanent: retrying cannot help.
    Rejected {
        status: u16,
        response: String,
    },
    /// Transient; `after` is the server's `Retry-After`, if any.
    Retry {
        after: Option<Duration>,
        error: String,
    },
}

/// What a non-network answer means, by status.
#[derive(Debug, PartialEq)]
enum Verdict {
    Delivered,
    Retry(Option<Duration>),
    Reject,
}

fn classify(status: u16, retry_after: Option<&str>, cap: Duration, now: chrono::DateTime<chrono::Utc>) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered,
        // Only these two define `Retry-After` as a delay for the same request.
        429 | 503 => Verdict::Retry(retry_after.and_then(|v| parse_retry_after(v, now)).map(|d| d.min(cap))),
        408 | 500..=599 => Verdict::Retry(None),
        _ => Verdict::Reject,
    }
}

/// What [`validate`] checked, ready for the client.
struct Checked {
    url: reqwest::Url,
    headers: reqwest::header::HeaderMap,
}

/// Checks everything and reports every problem, so one edit fixes the config.
fn validate(o: &WebhookOptions) -> Result<Checked, Vec<String>> {
    let mut problems = Vec::new();
    let url = match reqwest::Url::parse(&o.url) {
        Ok(u) if u.scheme() == "http" => Some(u),
        // Without TLS the client would send the request, headers included, in clear text.
        Ok(u) if u.scheme() == "https" => {
            problems.push(
                "https:// is not supported: this build's HTTP client has no TLS; \
                 use http:// (e.g. a local TLS-terminating proxy)"
                    .into(),
            );
            None
        }
        Ok(u) => {
            problems.push(format!("scheme `{}` is not supported; use http://", u.scheme()));
            None
        }
        Err(e) => {
            problems.push(format!("not a URL: {e}"));
            None
        }
    };
    if o.max_batch == 0 {
        problems.push("batch must be at least 1".into());
    }
    if o.queue_capacity == 0 {
        problems.push("queue must be at least 1".into());
    }
    if o.timeout.is_zero() {
        problems.push("timeout must be above zero".into());
    }
    // A zero backoff would retry a failing endpoint in a tight loop.
    if o.initial_backoff.is_zero() {
        problems.push("initial_backoff must be above zero".into());
    }
    if o.max_backoff < o.initial_backoff {
        problems.push(format!("max_backoff ({:?}) is below initial_backoff ({:?})", o.max_backoff, o.initial_backoff));
    }
    let mut headers = reqwest::header::HeaderMap::new();
    for (k, v) in &o.headers {
        match reqwest::header::HeaderName::from_bytes(k.as_bytes()) {
            // The value is not echoed: it is likely a secret.
            Ok(name) => match reqwest::header::HeaderValue::from_str(v) {
                Ok(mut value) => {
                    value.set_sensitive(true);
                    headers.append(name, value);
                }
                Err(_) => problems.push(format!("the value of header `{k}` has characters HTTP does not allow")),
            },
            Err(e) => problems.push(format!("bad header name `{k}`: {e}")),
        }
    }
    // Opened now so a wrong path fails at start, not at the first rejection.
    if let Some(path) = &o.dead_letter
        && let Err(e) = OpenOptions::new().create(true).append(true).open(path)
    {
        problems.push(format!("cannot open the dead-letter file `{}`: {e}", path.display()));
    }
    match url {
        Some(url) if problems.is_empty() => Ok(Checked { url, headers }),
        _ => Err(problems),
    }
}

/// The sender thread.
struct Worker<T> {
    transport: T,
    options: WebhookOptions,
    url: String,
    shared: Arc<Shared>,
    /// Disconnected when the sink closes.
    stop: Receiver<()>,
    rng: rand_chacha::ChaCha8Rng,
}

impl<T: Transport> Worker<T> {
    fn new(transport: T, options: WebhookOptions, url: String, shared: Arc<Shared>, stop: Receiver<()>) -> Self {
        // Jitter only needs to differ between processes; RandomState is seeded by the OS.
        let rng = rand_chacha::ChaCha8Rng::seed_from_u64(RandomState::new().hash_one(&url));
        Worker { transport, options, url, shared, stop, rng }
    }

    fn run(mut self, rx: &Receiver<Msg>) {
        let mut batch: Vec<Value> = Vec::new();
        let mut first_at = Instant::now();
        loop {
            // An empty batch waits for a record; a partial one until its linger runs out
            // (forever if the deadline is beyond what `Instant` can hold).
            let msg = match first_at.checked_add(self.options.linger).filter(|_| !batch.is_empty()) {
                Some(deadline) => rx.recv_deadline(deadline),
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match msg {
                Ok(Msg::Record(r)) => {
                    if batch.is_empty() {
                        first_at = Instant::now();
                    }
                    batch.push(r);
                    if batch.len() >= self.options.max_batch {
                        self.deliver(std::mem::take(&mut batch));
                    }
                }
                Ok(Msg::Flush(done)) => {
                    self.deliver(std::mem::take(&mut batch));
                    let _ = done.send(());
                }
                Err(RecvTimeoutError::Timeout) => self.deliver(std::mem::take(&mut batch)),
                Err(RecvTimeoutError::Disconnected) => {
                    self.deliver(std::mem::take(&mut batch));
                    return;
                }
            }
        }
    }

    fn stopping(&self) -> bool {
        matches!(self.stop.try_recv(), Err(TryRecvError::Disconnected))
    }

    /// Sleeps `delay`; false if the sink closed meanwhile.
    fn sleep(&self, delay: Duration) -> bool {
        matches!(self.stop.recv_timeout(delay), Err(RecvTimeoutError::Timeout))
    }

    /// Sends one batch, retrying until it is delivered, rejected, or the sink closes.
    fn deliver(&mut self, records: Vec<Value>) {
        if records.is_empty() {
            return;
        }
        let n = records.len() as u64;
        if self.stopping() {
            let error = self.shared.stats().last_error.unwrap_or_else(|| "none".into());
            self.abandon(&records, &format!("not delivered before the sink closed (last error: {error})"));
            return;
        }
        let body = match serde_json::to_vec(&records) {
            Ok(b) => b,
            Err(e) => {
                // Unreachable for `Value`s; still, never lose the records silently.
                self.shared.rejected.fetch_add(n, Ordering::Relaxed);
                self.dead_letter(&records, None, None, &format!("cannot encode the batch: {e}"));
                return;
            }
        };
        let mut attempt: u32 = 0;
        let started = Instant::now();
        loop {
            match self.transport.post(&body) {
                Attempt::Delivered => {
                    self.shared.delivered.fetch_add(n, Ordering::Relaxed);
                    self.shared.batches.fetch_add(1, Ordering::Relaxed);
                    if self.shared.failing.swap(false, Ordering::Relaxed) {
                        tracing::info!(url = %self.url, attempts = attempt + 1, after = ?started.elapsed(), "webhook endpoint recovered");
                    }
                    return;
                }
                Attempt::Rejected { status, response } => {
                    let error = format!("HTTP {status} from {}", self.url);
                    self.shared.fail(&error);
                    self.shared.rejected.fetch_add(n, Ordering::Relaxed);
                    tracing::error!(
                        url = %self.url, status, records = n, %response, dead_letter = ?self.options.dead_letter,
                        "webhook endpoint rejected a batch permanently; not retrying",
                    );
                    self.dead_letter(&records, Some(status), Some(&response), &error);
                    return;
                }
                Attempt::Retry { after, error } => {
                    self.shared.retries.fetch_add(1, Ordering::Relaxed);
                    let was_failing = self.shared.fail(&error);
                    let delay = after.unwrap_or_else(|| {
                        backoff(attempt, self.options.initial_backoff, self.options.max_backoff, &mut self.rng)
                    });
                    // One warning when an outage starts and one every ten attempts; the
                    // rest at debug, so a long outage does not flood the log.
                    if !was_failing || attempt % 10 == 9 {
                        tracing::warn!(url = %self.url, %error, attempt = attempt + 1, ?delay, records = n, "webhook POST failed; retrying");
                    } else {
                        tracing::debug!(url = %self.url, %error, attempt = attempt + 1, ?delay, "webhook POST failed; retrying");
                    }
                    attempt = attempt.saturating_add(1);
                    if !self.sleep(delay) {
                        self.abandon(&records, &format!("not delivered before the sink closed (last error: {error})"));
                        return;
                    }
                }
            }
        }
    }

    fn abandon(&self, records: &[Value], error: &str) {
        self.shared.abandoned.fetch_add(records.len() as u64, Ordering::Relaxed);
        tracing::error!(url = %self.url, records = records.len(), error, dead_letter = ?self.options.dead_letter, "webhook sink closed with undelivered records");
        self.dead_letter(records, None, None, error);
    }

    /// Appends one NDJSON line for `records`; without a file, logs them (count at error,
    /// content at debug) so they are never lost silently.
    fn dead_letter(&self, records: &[Value], status: Option<u16>, response: Option<&str>, error: &str) {
        let Some(path) = &self.options.dead_letter else {
            tracing::error!(url = %self.url, records = records.len(), error, "webhook records not delivered and no dead_letter file configured");
            tracing::debug!(url = %self.url, ?records, "undelivered webhook records");
            return;
        };
        let line = DeadLetterLine { url: &self.url, status, response, error, records };
        let written = serde_json::to_vec(&line).map_err(std::io::Error::from).and_then(|mut bytes| {
            bytes.push(b'\n');
            // One write per line: appends from one thread never interleave.
            OpenOptions::new().create(true).append(true).open(path)?.write_all(&bytes)
        });
        if let Err(e) = written {
            tracing::error!(path = %path.display(), error = %e, records = records.len(), ?records, "cannot write the webhook dead-letter file");
        }
    }
}

/// One line of the dead-letter file.
#[derive(serde::Serialize)]
struct DeadLetterLine<'a> {
    url: &'a str,
    status: Option<u16>,
    response: Option<&'a str>,
    error: &'a str,
    records: &'a [Value],
}

/// Exponential backoff with full jitter: uniform in `[0, min(max, initial × 2^attempt)]`.
fn backoff(attempt: u32, initial: Duration, max: Duration, rng: &mut impl Rng) -> Duration {
    let cap = initial.saturating_mul(1u32 << attempt.min(20)).min(max);
    let ms = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rng.random_range(0..=ms))
}

/// `Retry-After` (RFC 9110 §10.2.3): delta-seconds or an HTTP date, in any of the three
/// formats recipients must accept; a date in the past means now. `None` if unreadable.
fn parse_retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let v = value.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        // Overflowing values saturate; the caller caps the delay anyway.
        return Some(Duration::from_secs(v.parse().unwrap_or(u64::MAX)));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).map(|t| t.with_timezone(&chrono::Utc)).ok().or_else(|| {
        // The obsolete RFC 850 and asctime forms.
        ["%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"]
            .iter()
            .find_map(|f| chrono::NaiveDateTime::parse_from_str(v, f).ok())
            .map(|t| t.and_utc())
    })?;
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests;
