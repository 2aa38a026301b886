//! The webhook sink against a real local HTTP server (axum on its own runtime thread): an
//! endpoint that refuses, fails and stalls before it recovers (every record arrives, in order
//! per case, duplicated only by the request that timed out), a slow one (backpressure, nothing
//! dropped) and one that rejects (dead-letter file).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use gridwatch_connectors::webhook::{WebhookOptions, WebhookSink, WebhookStats};
use serde_json::{Value, json};

/// The server's answer to one request.
struct Answer {
    status: StatusCode,
    retry_after: Option<&'static str>,
    /// Delay before answering; the batch is recorded first, as if committed, then the
    /// answer is slow.
    delay: Duration,
    body: String,
}

impl Answer {
    fn status(status: StatusCode) -> Self {
        Answer { status, retry_after: None, delay: Duration::ZERO, body: String::new() }
    }
}

/// What the server answers to request `n` (0-based) carrying `batch`.
type Script = Box<dyn Fn(usize, &[Value]) -> Answer + Send + Sync>;

/// One request as the server saw it.
struct Request {
    at: Instant,
    content_type: Option<String>,
    token: Option<String>,
    batch: Vec<Value>,
}

struct Log {
    requests: Mutex<Vec<Request>>,
    script: Script,
}

/// Records that came with a 2xx answer, in arrival order, with the index of their request.
fn accepted(log: &Log) -> Vec<(usize, Value)> {
    let requests = log.requests.lock().unwrap();
    let mut out = Vec::new();
    for (n, r) in requests.iter().enumerate() {
        if (log.script)(n, &r.batch).status.is_success() {
            out.extend(r.batch.iter().map(|v| (n, v.clone())));
        }
    }
    out
}

struct Server {
    log: Arc<Log>,
    _runtime: tokio::runtime::Runtime,
}

async fn hook(State(log): State<Arc<Log>>, headers: HeaderMap, body: Bytes) -> (StatusCode, HeaderMap, String) {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let batch: Vec<Value> = serde_json::from_slice(&body).unwrap_or_default();
    let answer = {
        let mut requests = log.requests.lock().unwrap();
        let answer = (log.script)(requests.len(), &batch);
        let (content_type, token) = (header("content-type"), header("x-token"));
        requests.push(Request { at: Instant::now(), content_type, token, batch });
        answer
    };
    tokio::time::sleep(answer.delay).await;
    let mut out = HeaderMap::new();
    if let Some(ra) = answer.retry_after {
        out.insert("retry-after", ra.parse().unwrap());
    }
    (answer.status, out, answer.body)
}

/// Serves `script` on `addr` (port 0: any free port) from a runtime thread of its own.
fn serve(listener: std::net::TcpListener, script: Script) -> (Server, String) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let log = Arc::new(Log { requests: Mutex::default(), script });
    let app = Router::new().route("/hook", post(hook)).with_state(log.clone());
    listener.set_nonblocking(true).unwrap();
    let listener = runtime.block_on(async { tokio::net::TcpListener::from_std(listener) }).unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    runtime.spawn(async move { axum::serve(listener, app).await.unwrap() });
    (Server { log, _runtime: runtime }, url)
}

fn options(url: &str) -> WebhookOptions {
    WebhookOptions {
        url: url.into(),
        max_batch: 50,
        linger: Duration::from_millis(20),
        timeout: Duration::from_secs(1),
        initial_backoff: Duration::from_millis(20),
        // Retry-After is capped at 4 × this: 1.2 s lets the tests' `Retry-After: 1` through.
        max_backoff: Duration::from_millis(300),
        headers: vec![("x-token".into(), "secret".into())],
        ..Default::default()
    }
}

/// Polls the sink until `done` holds; panics with the stats after 10 s.
fn wait_for(sink: &WebhookSink, what: &str, done: impl Fn(&WebhookStats) -> bool) -> WebhookStats {
    let started = Instant::now();
    loop {
        let stats = sink.stats();
        if done(&stats) {
            return stats;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "waiting for {what}: {stats:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_failing_endpoint_that_recovers_gets_every_record_in_order_per_case() {
    // Nothing listens at first (connection refused); then 503 + Retry-After: 1 twice, 500
    // twice, one answer slower than the client's 1 s timeout, then 200.
    const SLOW: usize = 4;
    // Bound but not listening: connections are refused, and no other test can take the port
    // before the server below listens on it.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into()).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    let url = format!("http://{addr}/hook");
    let sink = WebhookSink::start(options(&url)).unwrap();
    let mut next_seq: BTreeMap<String, u64> = BTreeMap::new();
    let mut sent = Vec::new();
    for i in 0..3000 {
        let case = format!("c{}", i % 50);
        let seq = next_seq.entry(case.clone()).or_default();
        let id = format!("{case}:{seq}");
        sink.send(json!({"event_id": id, "case_id": case, "seq": *seq})).unwrap();
        sent.push(id);
        *seq += 1;
    }

    let refused = wait_for(&sink, "a refused connection", |s| s.failing && s.retries > 0);
    let error = refused.last_error.unwrap();
    assert!(error.contains(&url) && error.contains("onnect"), "{error}");

    socket.listen(128).unwrap();
    let (server, _) = serve(
        socket.into(),
        Box::new(|n, _| match n {
            0 | 1 => Answer { retry_after: Some("1"), ..Answer::status(StatusCode::SERVICE_UNAVAILABLE) },
            2 | 3 => Answer::status(StatusCode::INTERNAL_SERVER_ERROR),
            SLOW => Answer { delay: Duration::from_millis(2500), ..Answer::status(StatusCode::OK) },
            _ => Answer::status(StatusCode::OK),
        }),
    );
    let unavailable = wait_for(&sink, "a 503", |s| s.last_error.as_deref().is_some_and(|e| e.contains("503")));
    assert!(unavailable.failing && unavailable.last_error.unwrap().contains(&format!("HTTP 503 from {url}")));

    sink.flush(Duration::from_secs(30)).unwrap();
    let stats = sink.close(Duration::from_secs(5)).unwrap();

    let requests = server.log.requests.lock().unwrap();
    assert!(requests.len() > 3000 / 50 + SLOW, "{} requests", requests.len());
    for r in requests.iter() {
        assert_eq!(r.content_type.as_deref(), Some("application/json"));
        assert_eq!(r.token.as_deref(), Some("secret"), "the configured header is sent");
    }
    // Retry-After: 1 was honoured (the computed backoff is at most 300 ms) and the 500s were
    // retried on the backoff, not after a second.
    let gap = |n: usize| requests[n + 1].at - requests[n].at;
    assert!(gap(0) >= Duration::from_millis(990) && gap(1) >= Duration::from_millis(990), "{:?}", [gap(0), gap(1)]);
    assert!(gap(2) < Duration::from_millis(900) && gap(3) < Duration::from_millis(900), "{:?}", [gap(2), gap(3)]);
    // A failed batch is retried as the same batch before anything after it.
    for n in 1..=SLOW + 1 {
        assert_eq!(requests[n].batch, requests[0].batch, "request {n} is not a retry of the first batch");
    }
    drop(requests);

    // The server kept the batch of the request that timed out on the client, so that batch
    // (and only it) arrives twice: at least once delivery. Dedup by event_id, keep the first.
    let mut copies: HashMap<String, Vec<usize>> = HashMap::new();
    let mut arrived = Vec::new();
    let mut last_seq: HashMap<String, i64> = HashMap::new();
    for (n, r) in accepted(&server.log) {
        let id = r["event_id"].as_str().unwrap().to_string();
        let first = !copies.contains_key(&id);
        copies.entry(id.clone()).or_default().push(n);
        if !first {
            continue;
        }
        let case = r["case_id"].as_str().unwrap().to_string();
        let seq = r["seq"].as_i64().unwrap();
        let prev = last_seq.insert(case.clone(), seq).unwrap_or(-1);
        assert_eq!(seq, prev + 1, "case {case}: seq {seq} arrived after {prev}");
        arrived.push(id);
    }
    assert_eq!(arrived, sent, "every record arrived, in the order sent");
    let duplicated: Vec<&Vec<usize>> = copies.values().filter(|c| c.len() > 1).collect();
    assert!(!duplicated.is_empty(), "the timed-out batch should have been delivered twice");
    assert!(duplicated.iter().all(|c| *c == &vec![SLOW, SLOW + 1]), "unexpected duplicates: {duplicated:?}");

    // Refused (at least once), 503 twice, 500 twice, one timeout.
    assert!(stats.retries >= 6, "{stats:?}");
    assert_eq!((stats.queued, stats.delivered, stats.rejected, stats.abandoned), (3000, 3000, 0, 0), "{stats:?}");
    assert!(!stats.failing, "{stats:?}");
    let error = stats.last_error.unwrap();
    assert!(error.contains("timed out") && error.contains(&url), "the last failure was the timeout: {error}");
}

#[test]
fn a_slow_endpoint_holds_the_sender_back_and_nothing_is_dropped() {
    let (server, url) = serve(
        std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
        Box::new(|_, _| Answer { delay: Duration::from_millis(50), ..Answer::status(StatusCode::OK) }),
    );
    let (capacity, batch) = (10, 5);
    let sink =
        WebhookSink::start(WebhookOptions { queue_capacity: capacity, max_batch: batch, ..options(&url) }).unwrap();
    let started = Instant::now();
    let mut most_pending = 0;
    for i in 0..200 {
        sink.send(json!({"n": i})).unwrap();
        most_pending = most_pending.max(sink.stats().pending());
    }
    let send_time = started.elapsed();
    // 200 records at 5 per 50 ms request take 2 s to deliver, and at most 10 + 5 can wait,
    // so `send` must have blocked for most of that time.
    assert!(send_time >= Duration::from_millis(1200), "send did not block: {send_time:?}");
    // Queue, the batch being sent, and the record whose `send` is blocked.
    assert!(most_pending <= (capacity + batch + 1) as u64, "the queue grew to {most_pending}");
    let stats = sink.close(Duration::from_secs(10)).unwrap();
    assert_eq!((stats.delivered, stats.retries, stats.pending()), (200, 0, 0), "{stats:?}");
    let got: Vec<i64> = accepted(&server.log).iter().map(|(_, r)| r["n"].as_i64().unwrap()).collect();
    assert_eq!(got, (0..200).collect::<Vec<_>>());
}

#[test]
fn permanent_rejections_go_to_the_dead_letter_file_and_later_records_still_flow() {
    let long_body = "x".repeat(3000);
    let reply = long_body.clone();
    let (server, url) = serve(
        std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
        Box::new(move |_, batch| {
            if batch.iter().any(|r| r["bad"] == true) {
                Answer { body: reply.clone(), ..Answer::status(StatusCode::BAD_REQUEST) }
            } else {
                Answer::status(StatusCode::OK)
            }
        }),
    );
    let dir = tempfile::tempdir().unwrap();
    let dl = dir.path().join("webhook-dead.ndjson");
    let sink = WebhookSink::start(WebhookOptions { dead_letter: Some(dl.clone()), ..options(&url) }).unwrap();
    // Flushes cut the batches: 10 good, 10 with one bad record, 10 good.
    for group in 0..3 {
        for i in 0..10 {
            sink.send(json!({"n": group * 10 + i, "bad": group == 1 && i == 4})).unwrap();
        }
        sink.flush(Duration::from_secs(5)).unwrap();
        if group == 1 {
            let s = sink.stats();
            assert!(s.failing && s.last_error == Some(format!("HTTP 400 from {url}")), "{s:?}");
        }
    }
    let stats = sink.close(Duration::from_secs(5)).unwrap();
    assert_eq!((stats.delivered, stats.rejected, stats.retries, stats.batches), (20, 10, 0, 2), "{stats:?}");
    assert!(!stats.failing, "a later batch was accepted");
    assert_eq!(server.log.requests.lock().unwrap().len(), 3, "a rejected batch is not retried");

    let got: Vec<i64> = accepted(&server.log).iter().map(|(_, r)| r["n"].as_i64().unwrap()).collect();
    assert_eq!(got, (0..10).chain(20..30).collect::<Vec<_>>());
    let text = std::fs::read_to_string(&dl).unwrap();
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 1, "{text}");
    let line = &lines[0];
    assert_eq!(line["status"], 400);
    assert_eq!(line["url"], url.as_str());
    assert_eq!(line["response"].as_str().unwrap(), &long_body[..1024], "the response, cut to 1 KiB");
    let dead: Vec<i64> = line["records"].as_array().unwrap().iter().map(|r| r["n"].as_i64().unwrap()).collect();
    assert_eq!(dead, (10..20).collect::<Vec<_>>());
}
