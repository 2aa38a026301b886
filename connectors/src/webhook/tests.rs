use std::collections::VecDeque;

use serde_json::json;

use super::http::{truncate, utf8_prefix};
use super::*;

fn at(rfc3339: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(rfc3339).unwrap().with_timezone(&chrono::Utc)
}

#[test]
fn retry_after_reads_seconds_and_all_three_date_forms() {
    let now = at("1994-11-06T08:49:30Z");
    assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
    assert_eq!(parse_retry_after(" 120 ", now), Some(Duration::from_secs(120)));
    assert_eq!(parse_retry_after("0", now), Some(Duration::ZERO));
    assert_eq!(parse_retry_after("99999999999999999999999", now), Some(Duration::from_secs(u64::MAX)));
    assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now), Some(Duration::from_secs(7)));
    assert_eq!(parse_retry_after("Sunday, 06-Nov-94 08:49:37 GMT", now), Some(Duration::from_secs(7)));
    assert_eq!(parse_retry_after("Sun Nov  6 08:49:37 1994", now), Some(Duration::from_secs(7)));
    assert_eq!(parse_retry_after("Sun, 06 Nov 1994 07:00:00 GMT", now), Some(Duration::ZERO), "past date");
}

#[test]
fn retry_after_garbage_is_ignored() {
    let now = at("2026-11-23T08:00:00Z");
    for v in ["", "soon", "-1", "1.5", "3s", "+3", "Mon, 99 Nov 2026 08:00:00 GMT", "2026-11-23T08:00:05Z"] {
        assert_eq!(parse_retry_after(v, now), None, "{v:?}");
    }
}

#[test]
fn statuses_are_classified_and_retry_after_capped() {
    let now = at("2026-11-23T08:00:00Z");
    let cap = Duration::from_secs(120);
    for s in [200, 201, 202, 204, 299] {
        assert_eq!(classify(s, None, cap, now), Verdict::Delivered, "{s}");
    }
    for s in [408, 500, 502, 504, 599] {
        assert_eq!(classify(s, None, cap, now), Verdict::Retry(None), "{s}");
        // Retry-After only counts on 429 and 503.
        assert_eq!(classify(s, Some("5"), cap, now), Verdict::Retry(None), "{s}");
    }
    assert_eq!(classify(503, Some("5"), cap, now), Verdict::Retry(Some(Duration::from_secs(5))));
    assert_eq!(
        classify(429, Some("Mon, 23 Nov 2026 08:00:09 GMT"), cap, now),
        Verdict::Retry(Some(Duration::from_secs(9)))
    );
    assert_eq!(classify(429, Some("86400"), cap, now), Verdict::Retry(Some(cap)));
    assert_eq!(classify(503, Some("garbage"), cap, now), Verdict::Retry(None));
    for s in [301, 302, 307, 400, 401, 403, 404, 409, 413, 422] {
        assert_eq!(classify(s, Some("1"), cap, now), Verdict::Reject, "{s}");
    }
}

#[test]
fn backoff_grows_with_full_jitter_up_to_the_cap() {
    let (initial, max) = (Duration::from_millis(100), Duration::from_secs(2));
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let mut draw = |attempt| -> Vec<u64> {
        (0..400).map(|_| backoff(attempt, initial, max, &mut rng).as_millis() as u64).collect()
    };
    for (attempt, cap) in [(0, 100), (1, 200), (2, 400), (3, 800), (4, 1600), (5, 2000), (30, 2000), (u32::MAX, 2000)] {
        let d = draw(attempt);
        let top = *d.iter().max().unwrap();
        // Never above the cap, and the draws fill the range instead of sitting at the cap.
        assert!(top <= cap, "attempt {attempt}: {top} > {cap}");
        assert!(top >= cap * 9 / 10, "attempt {attempt}: the delay does not grow to {cap} (max {top})");
        assert!(d.iter().any(|&x| x < cap / 4), "attempt {attempt}: no small delays: no jitter");
    }
}

#[test]
fn text_is_cut_on_character_boundaries() {
    let mut s = "ab€".to_string();
    truncate(&mut s, 3);
    assert_eq!(s, "ab");
    assert_eq!(utf8_prefix("ab€".as_bytes()[..3].as_ref()), "ab", "half a character is dropped");
    assert_eq!(utf8_prefix(b"a\xffb"), "a\u{fffd}b");
}

#[test]
fn every_problem_is_reported_with_the_url() {
    let e = WebhookSink::start(WebhookOptions {
        url: "ftp://x/y".into(),
        max_batch: 0,
        initial_backoff: Duration::ZERO,
        headers: vec![("bad header".into(), "v".into()), ("Authorization".into(), "Bearer s3cret\n".into())],
        dead_letter: Some("/nonexistent-dir/dl.ndjson".into()),
        ..Default::default()
    })
    .unwrap_err()
    .to_string();
    for part in [
        "`ftp://x/y`",
        "scheme `ftp`",
        "batch must be at least 1",
        "initial_backoff",
        "bad header name `bad header`",
        "header `Authorization`",
        "/nonexistent-dir/dl.ndjson",
    ] {
        assert!(e.contains(part), "{part:?} missing in: {e}");
    }
    assert!(!e.contains("s3cret"), "a header value leaked: {e}");

    let e = WebhookSink::start(WebhookOptions { url: "https://h/x".into(), ..Default::default() }).unwrap_err();
    assert!(e.to_string().contains("no TLS"), "{e}");
    let e = WebhookSink::start(WebhookOptions { url: "localhost:8080".into(), ..Default::default() }).unwrap_err();
    assert!(e.to_string().contains("`localhost:8080`"), "{e}");
    let e = WebhookSink::start(WebhookOptions::default()).unwrap_err();
    assert!(e.to_string().contains("not a URL"), "{e}");
}

#[test]
fn secrets_stay_out_of_debug_and_errors() {
    let o = WebhookOptions {
        url: "http://user:hunter2@h/x".into(),
        headers: vec![("Authorization".into(), "Bearer s3cret".into())],
        ..Default::default()
    };
    let d = format!("{o:?}");
    assert!(d.contains("Authorization: ***") && d.contains("user:***@h"), "{d}");
    assert!(!d.contains("s3cret") && !d.contains("hunter2"), "{d}");
    let e = WebhookSink::start(WebhookOptions { max_batch: 0, ..o }).unwrap_err().to_string();
    assert!(e.contains("http://user:***@h/x") && !e.contains("hunter2"), "{e}");
}

/// A POST the fake saw: when, and the records.
type Post = (Instant, Vec<Value>);

/// A transport that records every POST and answers from a script, then `otherwise`.
#[derive(Clone)]
struct Fake {
    script: Arc<Mutex<VecDeque<Attempt>>>,
    otherwise: Attempt,
    posts: Arc<Mutex<Vec<Post>>>,
}

impl Fake {
    fn new(script: Vec<Attempt>, otherwise: Attempt) -> Self {
        Fake { script: Arc::new(Mutex::new(script.into())), otherwise, posts: Arc::default() }
    }

    fn batches(&self) -> Vec<Vec<i64>> {
        let posts = self.posts.lock().unwrap();
        posts.iter().map(|(_, b)| b.iter().map(|r| r["n"].as_i64().unwrap()).collect()).collect()
    }

    fn sink(&self, options: WebhookOptions) -> WebhookSink {
        let f = self.clone();
        WebhookSink::spawn(options, "fake://hook".into(), move || Ok(f)).unwrap()
    }
}

impl Transport for Fake {
    fn post(&mut self, body: &[u8]) -> Attempt {
        self.posts.lock().unwrap().push((Instant::now(), serde_json::from_slice(body).unwrap()));
        self.script.lock().unwrap().pop_front().unwrap_or_else(|| self.otherwise.clone())
    }
}

fn retry(after: Option<Duration>) -> Attempt {
    Attempt::Retry { after, error: "HTTP 503 from fake://hook".into() }
}

fn fast() -> WebhookOptions {
    WebhookOptions {
        url: "fake://hook".into(),
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        ..Default::default()
    }
}

#[test]
fn batches_are_cut_at_max_batch() {
    let fake = Fake::new(vec![], Attempt::Delivered);
    let sink = fake.sink(WebhookOptions { max_batch: 3, linger: Duration::from_secs(3600), ..fast() });
    for n in 0..7 {
        sink.send(json!({ "n": n })).unwrap();
    }
    // Two full batches go out without waiting for the (hour-long) linger.
    let started = Instant::now();
    while fake.batches().len() < 2 {
        assert!(started.elapsed() < Duration::from_secs(5), "full batches were not sent");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(fake.batches(), vec![vec![0, 1, 2], vec![3, 4, 5]]);
    sink.flush(Duration::from_secs(5)).unwrap();
    assert_eq!(fake.batches(), vec![vec![0, 1, 2], vec![3, 4, 5], vec![6]]);
    let stats = sink.close(Duration::from_secs(5)).unwrap();
    assert_eq!((stats.queued, stats.delivered, stats.batches, stats.pending()), (7, 7, 3, 0));
}

#[test]
fn a_partial_batch_goes_out_after_linger() {
    let fake = Fake::new(vec![], Attempt::Delivered);
    let linger = Duration::from_millis(150);
    let sink = fake.sink(WebhookOptions { linger, ..fast() });
    let sent = Instant::now();
    sink.send(json!({"n": 0})).unwrap();
    sink.send(json!({"n": 1})).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert!(fake.batches().is_empty(), "sent before the linger ran out");
    while fake.batches().is_empty() {
        assert!(sent.elapsed() < Duration::from_secs(5), "the partial batch was never sent");
        std::thread::sleep(Duration::from_millis(5));
    }
    let posted_at = fake.posts.lock().unwrap()[0].0;
    assert!(posted_at - sent >= linger, "sent after {:?}", posted_at - sent);
    assert_eq!(fake.batches(), vec![vec![0, 1]]);
    drop(sink);
}

#[test]
fn an_endless_linger_waits_for_flush() {
    let fake = Fake::new(vec![], Attempt::Delivered);
    let sink = fake.sink(WebhookOptions { linger: Duration::MAX, ..fast() });
    sink.send(json!({"n": 0})).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert!(fake.batches().is_empty());
    sink.flush(Duration::from_secs(5)).unwrap();
    assert_eq!(fake.batches(), vec![vec![0]]);
}

#[test]
fn a_failed_batch_is_retried_whole_before_the_next_and_rejections_do_not_block() {
    let dir = tempfile::tempdir().unwrap();
    let dl = dir.path().join("dead.ndjson");
    let wait = Duration::from_millis(300);
    let fake = Fake::new(
        vec![
            retry(None),
            retry(Some(wait)),
            Attempt::Delivered,
            Attempt::Rejected { status: 422, response: "no such case".into() },
        ],
        Attempt::Delivered,
    );
    let sink = fake.sink(WebhookOptions { max_batch: 2, dead_letter: Some(dl.clone()), ..fast() });
    for n in 0..6 {
        sink.send(json!({ "n": n })).unwrap();
    }
    sink.flush(Duration::from_secs(5)).unwrap();
    let stats = sink.stats();
    assert_eq!(fake.batches(), vec![vec![0, 1], vec![0, 1], vec![0, 1], vec![2, 3], vec![4, 5]]);
    // The second retry waited for the server's Retry-After, not the 1–5 ms backoff.
    let posts = fake.posts.lock().unwrap().iter().map(|p| p.0).collect::<Vec<_>>();
    assert!(posts[2] - posts[1] >= wait, "Retry-After ignored: {:?}", posts[2] - posts[1]);
    assert!(posts[1] - posts[0] < wait);
    assert_eq!((stats.delivered, stats.rejected, stats.retries, stats.batches), (4, 2, 2, 2));
    assert!(!stats.failing, "the last batch succeeded");
    assert_eq!(stats.last_error.as_deref(), Some("HTTP 422 from fake://hook"));
    let line: Value = serde_json::from_str(std::fs::read_to_string(&dl).unwrap().trim()).unwrap();
    assert_eq!(
        line,
        json!({"url": "fake://hook", "status": 422, "response": "no such case",
               "error": "HTTP 422 from fake://hook", "records": [{"n": 2}, {"n": 3}]})
    );
}

#[test]
fn failing_is_reported_while_retrying() {
    let fake = Fake::new(vec![], retry(None));
    let sink = fake.sink(WebhookOptions { linger: Duration::ZERO, ..fast() });
    sink.send(json!({"n": 0})).unwrap();
    let started = Instant::now();
    while sink.stats().retries < 3 {
        assert!(started.elapsed() < Duration::from_secs(5), "no retries");
        std::thread::sleep(Duration::from_millis(2));
    }
    let stats = sink.stats();
    assert!(stats.failing && stats.last_error.as_deref() == Some("HTTP 503 from fake://hook"), "{stats:?}");
    let e = sink.flush(Duration::from_millis(30)).unwrap_err();
    assert!(matches!(&e, WebhookError::Timeout { pending: 1, .. }), "{e}");
    assert!(e.to_string().contains("HTTP 503 from fake://hook"), "{e}");
    // Still retrying after a failed flush: nothing is given up until close.
    *fake.script.lock().unwrap() = vec![Attempt::Delivered].into();
    sink.flush(Duration::from_secs(5)).unwrap();
    assert!(!sink.stats().failing);
    assert_eq!(sink.close(Duration::from_secs(1)).unwrap().delivered, 1);
}

#[test]
fn close_is_bounded_and_dead_letters_what_is_left() {
    let dir = tempfile::tempdir().unwrap();
    let dl = dir.path().join("dead.ndjson");
    let fake = Fake::new(vec![], retry(None));
    let sink = fake.sink(WebhookOptions {
        max_batch: 10,
        initial_backoff: Duration::from_secs(60),
        max_backoff: Duration::from_secs(60),
        dead_letter: Some(dl.clone()),
        ..fast()
    });
    for n in 0..25 {
        sink.send(json!({ "n": n })).unwrap();
    }
    let started = Instant::now();
    let e = sink.close(Duration::from_millis(100)).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "close waited out the backoff");
    assert!(matches!(&e, WebhookError::Abandoned { abandoned: 25, .. }), "{e}");
    let lines: Vec<Value> =
        std::fs::read_to_string(&dl).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let records: Vec<i64> =
        lines.iter().flat_map(|l| l["records"].as_array().unwrap().clone()).map(|r| r["n"].as_i64().unwrap()).collect();
    assert_eq!(records, (0..25).collect::<Vec<_>>(), "every record dead-lettered once, in order");
    for l in &lines {
        assert!(l["status"].is_null(), "{l}");
        assert!(l["error"].as_str().unwrap().contains("closed (last error: HTTP 503 from fake://hook)"), "{l}");
    }
    // Only the first batch was attempted; the rest went straight to the file.
    assert!(fake.batches().iter().all(|b| b == &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]));
}

#[test]
fn dropping_the_sink_delivers_what_is_queued() {
    let fake = Fake::new(vec![], Attempt::Delivered);
    let sink = fake.sink(WebhookOptions { linger: Duration::from_secs(3600), ..fast() });
    for n in 0..3 {
        sink.send(json!({ "n": n })).unwrap();
    }
    drop(sink);
    assert_eq!(fake.batches(), vec![vec![0, 1, 2]]);
}

#[test]
fn a_transport_that_cannot_start_is_reported() {
    let e = WebhookSink::spawn::<Fake>(fast(), "fake://hook".into(), || Err("no client".into())).unwrap_err();
    assert_eq!(e.to_string(), "webhook `fake://hook`: no client");
}

#[test]
fn the_sink_can_be_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<WebhookSink>();
}
