//! The HTTP transport of the webhook sink: one blocking POST per attempt, its outcome
//! classified as delivered, retry or permanent failure.

#[allow(clippy::wildcard_imports)]
use super::*;

/// The URL for messages and logs, with any password masked.
pub(super) fn display_url(raw: &str) -> String {
    match reqwest::Url::parse(raw) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => raw.to_string(),
    }
}

pub(super) struct HttpTransport {
    client: reqwest::blocking::Client,
    target: reqwest::Url,
    /// `target` with its password masked, for messages.
    url: String,
    timeout: Duration,
    retry_after_cap: Duration,
}

impl HttpTransport {
    pub(super) fn new(
        checked: Checked,
        url: String,
        timeout: Duration,
        retry_after_cap: Duration,
    ) -> Result<Self, String> {
        let client = reqwest::blocking::Client::builder()
            .timeout(timeout)
            .default_headers(checked.headers)
            // A redirected POST becomes a GET and loses its body; see the module docs.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("gridwatch/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {}", error_chain(&e)))?;
        Ok(HttpTransport { client, target: checked.url, url, timeout, retry_after_cap })
    }
}

impl Transport for HttpTransport {
    fn post(&mut self, body: &[u8]) -> Attempt {
        let sent = self
            .client
            .post(self.target.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec())
            .send();
        let resp = match sent {
            Ok(r) => r,
            Err(e) if e.is_timeout() => {
                return Attempt::Retry {
                    after: None,
                    error: format!("POST {} timed out after {:?}", self.url, self.timeout),
                };
            }
            Err(e) => {
                let e = e.without_url();
                return Attempt::Retry { after: None, error: format!("POST {} failed: {}", self.url, error_chain(&e)) };
            }
        };
        let status = resp.status().as_u16();
        let retry_after =
            resp.headers().get(reqwest::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let verdict = classify(status, retry_after.as_deref(), self.retry_after_cap, chrono::Utc::now());
        if verdict == Verdict::Delivered {
            // Reading the (small) body lets the connection be reused.
            let _ = std::io::copy(&mut resp.take(64 * 1024), &mut std::io::sink());
            return Attempt::Delivered;
        }
        let mut bytes = Vec::new();
        let _ = resp.take(RESPONSE_LIMIT as u64).read_to_end(&mut bytes);
        let response = utf8_prefix(&bytes);
        match verdict {
            Verdict::Retry(after) => {
                let mut error = format!("HTTP {status} from {}", self.url);
                if !response.is_empty() {
                    let mut snippet = response;
                    truncate(&mut snippet, 200);
                    error.push_str(": ");
                    error.push_str(snippet.trim());
                }
                Attempt::Retry { after, error }
            }
            _ => Attempt::Rejected { status, response },
        }
    }
}

/// An error and its causes, `: `-separated (reqwest's own message omits the cause).
pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// Bytes as text; a character cut in half at the end is dropped, other bad bytes replaced.
pub(super) fn utf8_prefix(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(e) if e.error_len().is_none() => String::from_utf8_lossy(&bytes[..e.valid_up_to()]).into_owned(),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    }
}

pub(super) fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}
