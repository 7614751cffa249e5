//! The HTTP layer every source and the alerter share: one client (gzip, user agent, timeout),
//! GET with bounded retries, rate-limit waits, a body-size cap, and the rules for which
//! failures are worth retrying.
//!
//! * Retried with exponential backoff and jitter: 5xx, 408, timeouts, connection errors, and
//!   errors while reading the body (a reset or a stall mid-body), up to `retries` times.
//! * 429 (and 503 with `Retry-After`): wait `Retry-After` (seconds or an HTTP date) or
//!   `X-RateLimit-Reset` (seconds), at most an hour, up to 20 times; not counted as failures.
//! * Any other 4xx is [`HttpError::Refused`]: the same request will fail again.
//! * Bodies are read in pieces and refused past `max_body` bytes (after decompression), so a
//!   huge or endless answer cannot exhaust memory.
//! * A stop request ends a wait or an in-flight request at once.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Shutdown flag shared by a command's tasks (SIGTERM, Ctrl-C).
#[derive(Clone, Default)]
pub struct Stop {
    flag: Arc<AtomicBool>,
    notify: Arc<tokio::sync::Notify>,
}

impl Stop {
    /// A stop that SIGTERM and Ctrl-C trigger.
    pub fn on_signals(what: &'static str) -> Stop {
        let stop = Stop::default();
        let s = stop.clone();
        tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            }
            tracing::warn!("stop requested: {what} (a second signal exits at once)");
            s.set();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            }
            tracing::warn!(
                "second stop request: exiting now (the open transaction is rolled back)"
            );
            std::process::exit(130);
        });
        stop
    }

    pub fn set(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    pub fn is_set(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Sleeps `d`; false when a stop came first.
    pub async fn sleep(&self, d: Duration) -> bool {
        if self.is_set() {
            return false;
        }
        tokio::select! {
            _ = tokio::time::sleep(d) => !self.is_set(),
            _ = self.wait() => false,
        }
    }

    /// Resolves when a stop is requested.
    pub async fn wait(&self) {
        loop {
            // Registered before the flag is read, so a stop between the two is not missed.
            let n = self.notify.notified();
            tokio::pin!(n);
            n.as_mut().enable();
            if self.is_set() {
                return;
            }
            n.await;
        }
    }
}

/// The client every command uses: gzip accepted and decoded, our user agent, a per-request
/// timeout that covers reading the body.
pub fn client(timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .gzip(true)
        // An API does not redirect; a redirect is a login page or a misconfigured proxy, and
        // is retried and reported as such rather than parsed as data.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("coherence-ingest/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// A 4xx other than 408 (timeout) and 429 (rate limit) will fail again: a bad query, an invalid
/// routing key, a revoked webhook. Everything else (5xx, timeouts, connection errors) may pass
/// later.
pub fn permanent_status(status: u16) -> bool {
    (400..500).contains(&status) && status != 408 && status != 429
}

/// How long the server asked us to wait before the next attempt, at most an hour: for a 429,
/// `Retry-After` (delay-seconds or an HTTP date), else `X-RateLimit-Reset` (Datadog: seconds
/// until the window resets); for a 503, `Retry-After`. Other statuses: none (Datadog sends
/// `X-RateLimit-Reset` on every answer; it is no reason to wait after a 500).
pub fn retry_after(
    status: u16,
    headers: &reqwest::header::HeaderMap,
    now: SystemTime,
) -> Option<Duration> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let asked = get("retry-after").and_then(|v| retry_after_value(v, now));
    match status {
        429 => asked.or_else(|| {
            let s: f64 = get("x-ratelimit-reset")?.trim().parse().ok()?;
            (s.is_finite() && s >= 0.0).then(|| Duration::from_secs_f64(s.min(3600.0)))
        }),
        503 => asked,
        _ => None,
    }
}

/// One `Retry-After` value: delay-seconds or an IMF-fixdate (RFC 9110), at most an hour; a date
/// in the past is no wait.
pub fn retry_after_value(v: &str, now: SystemTime) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs.min(3600)));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let at_us = at.timestamp_micros();
    let now_us = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0);
    Some(Duration::from_micros(
        (at_us - now_us).clamp(0, 3_600_000_000) as u64,
    ))
}

/// A reqwest error in a few words, without the URL (which may carry a query or a secret path).
pub fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "body read failed"
    } else {
        "request failed"
    };
    // The innermost cause says what happened (e.g. "operation timed out").
    let mut msg = String::new();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&s.to_string());
        src = s.source();
    }
    if msg.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {msg}")
    }
}

/// Why a GET gave no body.
#[derive(Debug)]
pub enum HttpError {
    /// A stop was requested.
    Interrupted,
    /// Still failing after the retries (5xx, timeouts, connection or body-read errors), or
    /// rate-limited too often.
    Transient(String),
    /// Refused (a 4xx other than 408/429): the same request will fail again.
    Refused { status: u16, body: String },
    /// The body exceeded the cap.
    TooLarge { limit: usize },
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpError::Interrupted => write!(f, "interrupted by a stop request"),
            HttpError::Transient(m) => write!(f, "{m}"),
            HttpError::Refused { status, body } => write!(f, "HTTP {status}: {body}"),
            HttpError::TooLarge { limit } => {
                write!(f, "response body larger than {limit} bytes (raise --max-body-mb or shorten --chunk)")
            }
        }
    }
}

/// GET with retries; see the module documentation.
pub struct Fetcher {
    http: reqwest::Client,
    retries: u32,
    max_body: usize,
    stop: Stop,
    jitter: Mutex<coherence_core::rng::Rng>,
    /// Retries and rate-limit waits so far.
    pub retried: AtomicU64,
}

enum Attempt {
    Body(Vec<u8>),
    Status(u16, reqwest::header::HeaderMap, String),
    Failed(String),
    TooLarge,
}

impl Fetcher {
    pub fn new(
        timeout: Duration,
        retries: u32,
        max_body: usize,
        stop: Stop,
    ) -> reqwest::Result<Self> {
        Ok(Fetcher {
            http: client(timeout)?,
            retries,
            max_body,
            stop,
            jitter: Mutex::new(coherence_core::rng::Rng::new(
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1),
            )),
            retried: AtomicU64::new(0),
        })
    }

    pub fn stop(&self) -> &Stop {
        &self.stop
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let base = 0.25 * 2f64.powi(attempt.min(16) as i32);
        let j = self.jitter.lock().unwrap().uniform();
        Duration::from_secs_f64((base * (1.0 + j)).min(30.0))
    }

    async fn attempt(&self, req: reqwest::RequestBuilder) -> Attempt {
        let mut resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return Attempt::Failed(describe(&e)),
        };
        let status = resp.status();
        if !status.is_success() {
            let headers = resp.headers().clone();
            // An error body is only for the message: read a little of it, never fail on it.
            let mut text = Vec::new();
            while text.len() < 4096 {
                match resp.chunk().await {
                    Ok(Some(c)) => text.extend_from_slice(&c),
                    _ => break,
                }
            }
            let text = String::from_utf8_lossy(&text[..text.len().min(300)]).into_owned();
            return Attempt::Status(status.as_u16(), headers, text);
        }
        if resp
            .content_length()
            .is_some_and(|n| n > self.max_body as u64)
        {
            return Attempt::TooLarge;
        }
        let mut body = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(c)) => {
                    if body.len() + c.len() > self.max_body {
                        return Attempt::TooLarge;
                    }
                    body.extend_from_slice(&c);
                }
                Ok(None) => return Attempt::Body(body),
                Err(e) => return Attempt::Failed(describe(&e)),
            }
        }
    }

    /// GET: `make` builds the request afresh for every attempt. Returns the body of a 2xx.
    pub async fn get(
        &self,
        what: &str,
        make: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<Vec<u8>, HttpError> {
        let mut failures = 0u32;
        let mut rate_limited = 0u32;
        loop {
            if self.stop.is_set() {
                return Err(HttpError::Interrupted);
            }
            let result = tokio::select! {
                r = self.attempt(make(&self.http)) => r,
                _ = self.stop.wait() => return Err(HttpError::Interrupted),
            };
            let (error, wait_at_least) = match result {
                Attempt::Body(b) => return Ok(b),
                Attempt::TooLarge => {
                    return Err(HttpError::TooLarge {
                        limit: self.max_body,
                    })
                }
                Attempt::Status(status @ (429 | 503), headers, _)
                    if retry_after(status, &headers, SystemTime::now()).is_some()
                        || status == 429 =>
                {
                    rate_limited += 1;
                    if rate_limited > 20 {
                        return Err(HttpError::Transient(format!(
                            "{what}: still told to wait ({status}) after 20 waits"
                        )));
                    }
                    let wait = retry_after(status, &headers, SystemTime::now())
                        .unwrap_or(Duration::from_secs(1))
                        .max(Duration::from_millis(50));
                    tracing::warn!(
                        what,
                        wait_secs = wait.as_secs_f64(),
                        status,
                        "told to wait (429 or 503 with Retry-After); waiting as the server asked"
                    );
                    self.retried.fetch_add(1, Ordering::Relaxed);
                    if !self.stop.sleep(wait).await {
                        return Err(HttpError::Interrupted);
                    }
                    continue;
                }
                Attempt::Status(status, _, body) if permanent_status(status) => {
                    return Err(HttpError::Refused { status, body })
                }
                Attempt::Status(status, _, body) => (format!("HTTP {status} {body}"), None),
                Attempt::Failed(e) => (e, None),
            };
            failures += 1;
            if failures > self.retries {
                return Err(HttpError::Transient(format!(
                    "{what} failed {failures} times; last: {error}"
                )));
            }
            let wait = self
                .backoff(failures - 1)
                .max(wait_at_least.unwrap_or_default());
            tracing::warn!(what, attempt = failures, wait_ms = wait.as_millis() as u64, error = %error, "retrying");
            self.retried.fetch_add(1, Ordering::Relaxed);
            if !self.stop.sleep(wait).await {
                return Err(HttpError::Interrupted);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    #[test]
    fn refusals_are_permanent_timeouts_and_rate_limits_are_not() {
        assert!(permanent_status(400));
        assert!(permanent_status(404));
        assert!(!permanent_status(408));
        assert!(!permanent_status(429));
        assert!(!permanent_status(500));
        assert!(!permanent_status(200));
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date_and_is_capped_at_an_hour() {
        let now = UNIX_EPOCH + Duration::from_secs(1_445_412_480); // 2015-10-21 07:28:00 UTC
        assert_eq!(
            retry_after_value(" 30 ", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            retry_after_value("999999", now),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(
            retry_after_value("Wed, 21 Oct 2015 07:28:45 GMT", now),
            Some(Duration::from_secs(45))
        );
        assert_eq!(
            retry_after_value("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after_value("soon", now), None);
    }

    #[test]
    fn retry_after_wins_over_the_rate_limit_reset() {
        let now = SystemTime::now();
        let mut h = HeaderMap::new();
        h.insert("X-RateLimit-Reset", HeaderValue::from_static("7"));
        assert_eq!(retry_after(429, &h, now), Some(Duration::from_secs(7)));
        // Datadog sends the reset on every answer: no reason to wait after a 500 or a 503.
        assert_eq!(retry_after(500, &h, now), None);
        assert_eq!(retry_after(503, &h, now), None);
        h.insert("Retry-After", HeaderValue::from_static("2"));
        assert_eq!(retry_after(429, &h, now), Some(Duration::from_secs(2)));
        assert_eq!(retry_after(503, &h, now), Some(Duration::from_secs(2)));
        assert_eq!(retry_after(500, &h, now), None);
        assert_eq!(retry_after(429, &HeaderMap::new(), now), None);
    }
}
