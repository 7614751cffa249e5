//! `coherence-ingest datadog`: Datadog metrics and events into PostgreSQL, incrementally and
//! exactly once.
//!
//! * Metrics: `GET /api/v1/query?from&to&query` per configured query and time chunk; points
//!   go to `coherence.metrics` (host from the series' `host:` tag or scope; null points are
//!   skipped and counted; timestamps may be JSON floats).
//! * Events: `GET /api/v1/events?start&end` per chunk (a chunk with 1,000 events, the API's
//!   page size, is split in halves); events go to `coherence.signal_events` with severity
//!   from `alert_type` and the exact 64-bit id (`id_str`) as `source_id`.
//! * Each chunk is one transaction: staged rows, `INSERT ... ON CONFLICT DO NOTHING`, and the
//!   query's cursor in `coherence.ingest_cursors` advanced to the chunk's end. A killed run
//!   resumes at the last committed cursor: nothing lost, nothing doubled.
//! * Faults: 429 waits for `X-RateLimit-Reset` seconds; 5xx, timeouts and connection errors are
//!   retried with exponential backoff and jitter (bounded); 401/403 stop with a message naming
//!   the variables to fix; malformed or unexpected bodies stop the chunk before anything is
//!   written. SIGTERM/Ctrl-C abandons an in-flight request (nothing written) or lets the
//!   current database transaction finish, then exits.
//! * Read-only towards Datadog: only GET requests.

use crate::config::{Credentials, EventsSection, FileConfig, MetricQuery};
use anyhow::{anyhow, bail, Context, Result};
use chrono::{DateTime, Utc};
use futures_util::pin_mut;
use serde_json::Value;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Client;

#[derive(clap::Args, Debug, Clone)]
pub struct DatadogArgs {
    /// TOML file mapping Datadog queries to metric names (see ingestor/coherence.example.toml).
    #[arg(long, short = 'c', env = "COHERENCE_INGEST_CONFIG")]
    pub config: PathBuf,

    /// On the first run of a query (no cursor yet), backfill this far back, e.g. 48h, 30m, 7d.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub since: Duration,

    /// Time range per request and per transaction, e.g. 1h.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub chunk: Duration,

    /// Run one pass up to now and exit (default: keep running every --interval).
    #[arg(long)]
    pub once: bool,

    /// Pause between passes in daemon mode.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub interval: Duration,

    /// Leave the most recent data this long for the next pass (Datadog's own ingestion delay).
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    pub delay: Duration,

    /// Ingest up to this time (RFC 3339) instead of now minus --delay.
    #[arg(long, value_parser = parse_time)]
    pub until: Option<DateTime<Utc>>,

    /// Per-request timeout.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Retries of a request after 5xx responses, timeouts or connection errors.
    #[arg(long, default_value_t = 5)]
    pub retries: u32,

    /// Tests only: Datadog base URL (refused unless COHERENCE_ALLOW_TEST_BASE_URL=1).
    #[arg(long, hide = true, env = "COHERENCE_DD_BASE_URL")]
    pub base_url: Option<String>,
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("expected a duration such as 90s, 15m, 48h or 7d, not '{s}'"))?;
    let secs = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "s" | "" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => {
            return Err(format!(
                "unknown unit '{unit}' in '{s}': use ms, s, m, h or d"
            ))
        }
    };
    Ok(Duration::from_secs(secs))
}

fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("expected RFC 3339, e.g. 2025-12-13T00:00:00Z ({e})"))
}

// ------------------------------------------------------------------ parsing

/// One metric sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub host: String,
    pub ts_us: i64,
    pub value: f64,
}

/// Parsed `/api/v1/query` body.
#[derive(Debug, Default, PartialEq)]
pub struct MetricsBody {
    pub series: usize,
    pub points: Vec<Point>,
    pub nulls: u64,
}

fn shape(what: &str) -> anyhow::Error {
    anyhow!("unexpected Datadog response shape: {what}")
}

/// Host of a series: its `host:` tag, else the `host:` part of its scope, else the scope.
fn series_host(s: &Value) -> String {
    let from_tags = s.get("tag_set").and_then(Value::as_array).and_then(|tags| {
        tags.iter()
            .filter_map(Value::as_str)
            .find_map(|t| t.strip_prefix("host:").map(str::to_string))
    });
    let scope = s.get("scope").and_then(Value::as_str).unwrap_or("*");
    from_tags
        .or_else(|| {
            scope
                .split(',')
                .find_map(|p| p.trim().strip_prefix("host:").map(str::to_string))
        })
        .unwrap_or_else(|| scope.to_string())
}

pub fn parse_metrics(body: &[u8], scale: f64, offset: f64) -> Result<MetricsBody> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| anyhow!("malformed JSON from Datadog: {e}"))?;
    if let Some(status) = v.get("status").and_then(Value::as_str) {
        if status != "ok" {
            let err = v.get("error").map(|e| e.to_string()).unwrap_or_default();
            bail!("Datadog query failed: status {status} {err}");
        }
    }
    let series = v
        .get("series")
        .and_then(Value::as_array)
        .ok_or_else(|| shape("no \"series\" array"))?;
    let mut out = MetricsBody {
        series: series.len(),
        ..Default::default()
    };
    for s in series {
        let host = series_host(s);
        let pl = s
            .get("pointlist")
            .and_then(Value::as_array)
            .ok_or_else(|| shape("series without \"pointlist\""))?;
        for p in pl {
            let pair = p
                .as_array()
                .filter(|a| a.len() == 2)
                .ok_or_else(|| shape("point is not [time, value]"))?;
            let ms = pair[0]
                .as_f64()
                .ok_or_else(|| shape("point time is not a number"))?;
            match &pair[1] {
                Value::Null => out.nulls += 1,
                Value::Number(n) => {
                    let x = n
                        .as_f64()
                        .ok_or_else(|| shape("point value is not a number"))?;
                    let ts_us = (ms * 1000.0).round();
                    if !ts_us.is_finite() || ts_us.abs() > 9.0e18 {
                        return Err(shape("point time out of range"));
                    }
                    out.points.push(Point {
                        host: host.clone(),
                        ts_us: ts_us as i64,
                        value: offset + scale * x,
                    });
                }
                _ => return Err(shape("point value is neither a number nor null")),
            }
        }
    }
    Ok(out)
}

/// One Datadog event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub source_id: String,
    pub ts_us: i64,
    pub host: String,
    pub service: Option<String>,
    pub severity: &'static str,
    pub title: String,
}

/// Datadog `alert_type` to our severity.
pub fn severity(alert_type: &str) -> &'static str {
    match alert_type {
        "error" => "error",
        "warning" => "warn",
        _ => "info", // info, success, user_update, recommendation, snapshot
    }
}

pub fn parse_events(body: &[u8]) -> Result<Vec<Event>> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| anyhow!("malformed JSON from Datadog: {e}"))?;
    let events = v
        .get("events")
        .and_then(Value::as_array)
        .ok_or_else(|| shape("no \"events\" array"))?;
    let mut out = Vec::with_capacity(events.len());
    for e in events {
        // id_str keeps 64-bit ids exact; "id" is a JSON integer that may exceed 2^53.
        let id = match (e.get("id_str").and_then(Value::as_str), e.get("id")) {
            (Some(s), _) => s.to_string(),
            (None, Some(Value::Number(n))) if n.is_u64() || n.is_i64() => n.to_string(),
            _ => return Err(shape("event without id")),
        };
        let secs = e
            .get("date_happened")
            .and_then(Value::as_i64)
            .ok_or_else(|| shape("event without date_happened"))?;
        let tags: Vec<&str> = e
            .get("tags")
            .and_then(Value::as_array)
            .map(|t| t.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let host = e
            .get("host")
            .and_then(Value::as_str)
            .filter(|h| !h.is_empty())
            .map(str::to_string)
            .or_else(|| {
                tags.iter()
                    .find_map(|t| t.strip_prefix("host:").map(str::to_string))
            })
            .unwrap_or_else(|| "unknown".into());
        let service = tags
            .iter()
            .find_map(|t| t.strip_prefix("service:").map(str::to_string))
            .or_else(|| e.get("source").and_then(Value::as_str).map(str::to_string));
        out.push(Event {
            source_id: id,
            ts_us: secs.saturating_mul(1_000_000),
            host,
            service,
            severity: severity(
                e.get("alert_type")
                    .and_then(Value::as_str)
                    .unwrap_or("info"),
            ),
            title: e
                .get("title")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        });
    }
    Ok(out)
}

// ------------------------------------------------------------------ HTTP with retries

#[derive(Default)]
pub struct Stats {
    pub series: AtomicU64,
    pub points: AtomicU64,
    pub new_points: AtomicU64,
    pub nulls: AtomicU64,
    pub events: AtomicU64,
    pub new_events: AtomicU64,
    pub retries: AtomicU64,
    pub chunks: AtomicU64,
}

pub struct Api {
    http: reqwest::Client,
    creds: Credentials,
    retries: u32,
    stop: Arc<AtomicBool>,
    stop_notify: Arc<tokio::sync::Notify>,
    stats: Arc<Stats>,
    jitter: std::sync::Mutex<coherence_core::rng::Rng>,
}

/// Why a fetch ended without a body.
#[derive(Debug)]
pub enum FetchError {
    Interrupted,
    Fatal(anyhow::Error),
}

impl From<anyhow::Error> for FetchError {
    fn from(e: anyhow::Error) -> Self {
        FetchError::Fatal(e)
    }
}

impl Api {
    async fn sleep_or_stop(&self, d: Duration) -> Result<(), FetchError> {
        tokio::select! {
            _ = tokio::time::sleep(d) => Ok(()),
            _ = self.stop_notify.notified() => Err(FetchError::Interrupted),
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let base = 0.25 * 2f64.powi(attempt as i32);
        let j = self.jitter.lock().unwrap().uniform();
        Duration::from_secs_f64((base * (1.0 + j)).min(30.0))
    }

    /// GET `path` with `params`; returns the body of a 200 response.
    pub async fn get(&self, path: &str, params: &[(&str, String)]) -> Result<Vec<u8>, FetchError> {
        let url = format!("{}{}", self.creds.base_url, path);
        let mut failures = 0u32;
        let mut rate_limited = 0u32;
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return Err(FetchError::Interrupted);
            }
            let req = self
                .http
                .get(&url)
                .query(params)
                .header("DD-API-KEY", &self.creds.api_key)
                .header("DD-APPLICATION-KEY", &self.creds.app_key)
                .header("Accept", "application/json");
            let attempt = async {
                let resp = req.send().await?;
                let status = resp.status();
                let headers = resp.headers().clone();
                let body = resp.bytes().await?;
                Ok::<_, reqwest::Error>((status, headers, body))
            };
            let result = tokio::select! {
                r = attempt => r,
                _ = self.stop_notify.notified() => return Err(FetchError::Interrupted),
            };
            let transient = match result {
                Ok((status, _, body)) if status.is_success() => return Ok(body.to_vec()),
                Ok((status, headers, _)) if status.as_u16() == 429 => {
                    rate_limited += 1;
                    if rate_limited > 20 {
                        return Err(anyhow!(
                            "Datadog kept answering 429 (rate limited) for {path}; giving up"
                        )
                        .into());
                    }
                    // Header names are case-insensitive (HeaderMap); Reset is seconds to wait.
                    let reset = headers
                        .get("x-ratelimit-reset")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<f64>().ok())
                        .filter(|s| s.is_finite() && *s >= 0.0)
                        .unwrap_or(1.0)
                        .min(3600.0);
                    tracing::warn!(
                        path,
                        wait_secs = reset,
                        "rate limited by Datadog (429); waiting for X-RateLimit-Reset"
                    );
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    self.sleep_or_stop(Duration::from_secs_f64(reset.max(0.05)))
                        .await?;
                    continue;
                }
                Ok((status, _, _)) if status.as_u16() == 401 || status.as_u16() == 403 => {
                    return Err(anyhow!(
                        "Datadog refused the credentials ({}): check DD_API_KEY and DD_APP_KEY \
                         (or DATADOG_API_KEY/DATADOG_APP_KEY) and that DD_SITE ({}) is your account's site",
                        status.as_u16(),
                        self.creds.base_url.trim_start_matches("https://api.")
                    )
                    .into());
                }
                Ok((status, _, body)) if status.is_server_error() => {
                    format!(
                        "HTTP {} {}",
                        status.as_u16(),
                        String::from_utf8_lossy(&body[..body.len().min(200)])
                    )
                }
                Ok((status, _, body)) => {
                    return Err(anyhow!(
                        "Datadog answered HTTP {} for {path}: {}",
                        status.as_u16(),
                        String::from_utf8_lossy(&body[..body.len().min(300)])
                    )
                    .into());
                }
                Err(e) if e.is_decode() => {
                    return Err(anyhow!("malformed response body from Datadog: {e}").into())
                }
                Err(e) => without_url(e),
            };
            failures += 1;
            if failures > self.retries {
                return Err(anyhow!(
                    "Datadog request {path} failed {failures} times; last: {transient}"
                )
                .into());
            }
            let wait = self.backoff(failures - 1);
            tracing::warn!(path, attempt = failures, wait_ms = wait.as_millis() as u64, error = %transient, "retrying");
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            self.sleep_or_stop(wait).await?;
        }
    }
}

/// reqwest errors print the URL; ours carry no secrets (keys are headers), but keep it short.
fn without_url(e: reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() {
        "body read failed"
    } else {
        "request failed"
    };
    let e = e.without_url();
    // The innermost cause says what happened (e.g. "operation timed out").
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg = format!("{msg}: {s}");
        src = s.source();
    }
    format!("{kind}: {msg}")
}

// ------------------------------------------------------------------ database

fn systime(us: i64) -> SystemTime {
    if us >= 0 {
        UNIX_EPOCH + Duration::from_micros(us as u64)
    } else {
        UNIX_EPOCH - Duration::from_micros(us.unsigned_abs())
    }
}

async fn cursor(db: &Client, source: &str, query: &str) -> Result<Option<SystemTime>> {
    Ok(db
        .query_opt(
            "SELECT cursor_at FROM coherence.ingest_cursors WHERE source = $1 AND query = $2",
            &[&source, &query],
        )
        .await?
        .map(|r| r.get(0)))
}

async fn set_cursor(
    tx: &tokio_postgres::Transaction<'_>,
    source: &str,
    query: &str,
    at: SystemTime,
) -> Result<()> {
    tx.execute(
        "INSERT INTO coherence.ingest_cursors (source, query, cursor_at) VALUES ($1, $2, $3)
         ON CONFLICT (source, query) DO UPDATE SET cursor_at = excluded.cursor_at, updated_at = now()",
        &[&source, &query, &at],
    )
    .await?;
    Ok(())
}

/// Writes one chunk of metric points and advances the cursor, in one transaction.
async fn write_metrics(
    db: &mut Client,
    q: &MetricQuery,
    points: &[Point],
    chunk_end: SystemTime,
) -> Result<u64> {
    let tx = db.transaction().await?;
    tx.batch_execute(
        "CREATE TEMP TABLE IF NOT EXISTS coherence_dd_metrics (host text, value float8, ts timestamptz) ON COMMIT DELETE ROWS",
    )
    .await?;
    let sink = tx
        .copy_in("COPY coherence_dd_metrics (host, value, ts) FROM STDIN (FORMAT binary)")
        .await?;
    let writer = BinaryCopyInWriter::new(sink, &[Type::TEXT, Type::FLOAT8, Type::TIMESTAMPTZ]);
    pin_mut!(writer);
    for p in points {
        let ts = systime(p.ts_us);
        let row: [&(dyn ToSql + Sync); 3] = [&p.host, &p.value, &ts];
        writer.as_mut().write(&row).await?;
    }
    writer.finish().await?;
    let n = tx
        .execute(
            "INSERT INTO coherence.metrics (host, metric_name, value, \"timestamp\")
             SELECT host, $1, value, ts FROM coherence_dd_metrics WHERE host <> ''
             ON CONFLICT (host, metric_name, \"timestamp\") DO NOTHING",
            &[&q.name],
        )
        .await?;
    set_cursor(&tx, "datadog-metrics", &q.query, chunk_end).await?;
    tx.commit().await?;
    Ok(n)
}

async fn write_events(
    db: &mut Client,
    key: &str,
    events: &[Event],
    chunk_end: SystemTime,
) -> Result<u64> {
    let tx = db.transaction().await?;
    let mut n = 0;
    // Multi-row insert in batches (events are few).
    for batch in events.chunks(500) {
        let mut sql = String::from(
            "INSERT INTO coherence.signal_events (ts, host, service, fingerprint, severity, metric, source, source_id, message) VALUES ",
        );
        let mut params: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
        for (i, e) in batch.iter().enumerate() {
            if i > 0 {
                sql.push(',');
            }
            let b = params.len();
            sql.push_str(&format!(
                "(${}, ${}, ${}, ${}, ${}, ${}, 'datadog', ${}, ${})",
                b + 1,
                b + 2,
                b + 3,
                b + 4,
                b + 5,
                b + 6,
                b + 7,
                b + 8
            ));
            params.push(Box::new(systime(e.ts_us)));
            params.push(Box::new(e.host.clone()));
            params.push(Box::new(e.service.clone()));
            params.push(Box::new(format!(
                "{}:{}",
                e.host,
                if e.severity == "error" {
                    "error"
                } else {
                    "event"
                }
            )));
            params.push(Box::new(e.severity.to_string()));
            params.push(Box::new(
                if e.severity == "error" {
                    "error"
                } else {
                    "event"
                }
                .to_string(),
            ));
            params.push(Box::new(e.source_id.clone()));
            params.push(Box::new(e.title.clone()));
        }
        sql.push_str(" ON CONFLICT (source, source_id) DO NOTHING");
        let refs: Vec<&(dyn ToSql + Sync)> = params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect();
        n += tx.execute(sql.as_str(), &refs).await?;
    }
    set_cursor(&tx, "datadog-events", key, chunk_end).await?;
    tx.commit().await?;
    Ok(n)
}

// ------------------------------------------------------------------ the run loop

fn secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

struct Progress {
    on: bool,
    last: Instant,
}

impl Progress {
    fn show(&mut self, what: &str, done: u64, total: u64) {
        if self.on && self.last.elapsed() > Duration::from_millis(150) {
            self.last = Instant::now();
            eprint!("\r  datadog: {what} chunk {done}/{total}   ");
            let _ = std::io::stderr().flush();
        }
    }
    fn clear(&self) {
        if self.on {
            eprint!("\r{:60}\r", "");
        }
    }
}

/// Chunks [start, until) of `chunk` length.
fn chunks(start: SystemTime, until: SystemTime, chunk: Duration) -> Vec<(SystemTime, SystemTime)> {
    let mut out = Vec::new();
    let mut t = start;
    while t < until {
        let e = (t + chunk).min(until);
        out.push((t, e));
        t = e;
    }
    out
}

async fn pass(
    api: &Api,
    db: &mut Client,
    cfg: &FileConfig,
    args: &DatadogArgs,
    progress: &mut Progress,
) -> Result<bool> {
    let until: SystemTime = match args.until {
        Some(t) => systime(t.timestamp_micros()),
        None => SystemTime::now() - args.delay,
    };
    // Whole seconds: the API takes epoch seconds.
    let until = UNIX_EPOCH + Duration::from_secs(secs(until).max(0) as u64);
    for q in &cfg.metrics {
        let start = cursor(db, "datadog-metrics", &q.query)
            .await?
            .unwrap_or(until - args.since);
        let list = chunks(start, until, args.chunk);
        for (i, (a, b)) in list.iter().enumerate() {
            progress.show(&q.name, i as u64 + 1, list.len() as u64);
            // `to` is inclusive in the API: ask up to the second before the chunk's end.
            let params = [
                ("from", secs(*a).to_string()),
                ("to", (secs(*b) - 1).max(secs(*a)).to_string()),
                ("query", q.query.clone()),
            ];
            let body = match api.get("/api/v1/query", &params).await {
                Ok(b) => b,
                Err(FetchError::Interrupted) => return Ok(false),
                Err(FetchError::Fatal(e)) => {
                    return Err(e.context(format!("metric {} ({})", q.name, q.query)))
                }
            };
            let parsed = parse_metrics(&body, q.scale, q.offset).with_context(|| {
                format!(
                    "metric {} chunk {}..{}: nothing written for this chunk",
                    q.name,
                    secs(*a),
                    secs(*b)
                )
            })?;
            // Only points inside the chunk (the API may round the range outwards).
            let (lo, hi) = (secs(*a) * 1_000_000, secs(*b) * 1_000_000);
            let pts: Vec<Point> = parsed
                .points
                .into_iter()
                .filter(|p| p.ts_us >= lo && p.ts_us < hi)
                .collect();
            let new = write_metrics(db, q, &pts, *b).await?;
            let st = &api.stats;
            st.series.fetch_add(parsed.series as u64, Ordering::Relaxed);
            st.points.fetch_add(pts.len() as u64, Ordering::Relaxed);
            st.new_points.fetch_add(new, Ordering::Relaxed);
            st.nulls.fetch_add(parsed.nulls, Ordering::Relaxed);
            st.chunks.fetch_add(1, Ordering::Relaxed);
            tracing::info!(metric = %q.name, from = secs(*a), to = secs(*b), series = parsed.series, points = pts.len(), new, nulls = parsed.nulls, "chunk");
            if api.stop.load(Ordering::SeqCst) {
                return Ok(false);
            }
        }
    }
    if let Some(ev) = &cfg.events {
        let key = ev.key();
        let start = cursor(db, "datadog-events", &key)
            .await?
            .unwrap_or(until - args.since);
        for (a, b) in chunks(start, until, args.chunk) {
            let Some(events) = fetch_events(api, ev, a, b).await? else {
                return Ok(false);
            };
            let new = write_events(db, &key, &events, b).await?;
            api.stats
                .events
                .fetch_add(events.len() as u64, Ordering::Relaxed);
            api.stats.new_events.fetch_add(new, Ordering::Relaxed);
            api.stats.chunks.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                from = secs(a),
                to = secs(b),
                events = events.len(),
                new,
                "events chunk"
            );
            if api.stop.load(Ordering::SeqCst) {
                return Ok(false);
            }
        }
    }
    progress.clear();
    Ok(true)
}

/// Events of [a, b); splits the range while a page is full (1,000 events). `None`: interrupted.
async fn fetch_events(
    api: &Api,
    ev: &EventsSection,
    a: SystemTime,
    b: SystemTime,
) -> Result<Option<Vec<Event>>> {
    let mut stack = vec![(a, b)];
    let mut out = Vec::new();
    while let Some((x, y)) = stack.pop() {
        let mut params = vec![
            ("start", secs(x).to_string()),
            ("end", (secs(y) - 1).max(secs(x)).to_string()),
            ("unaggregated", "true".to_string()),
        ];
        if let Some(t) = &ev.tags {
            params.push(("tags", t.clone()));
        }
        if let Some(s) = &ev.sources {
            params.push(("sources", s.clone()));
        }
        if let Some(p) = &ev.priority {
            params.push(("priority", p.clone()));
        }
        let body = match api.get("/api/v1/events", &params).await {
            Ok(b) => b,
            Err(FetchError::Interrupted) => return Ok(None),
            Err(FetchError::Fatal(e)) => return Err(e.context("events")),
        };
        let events = parse_events(&body).with_context(|| {
            format!(
                "events chunk {}..{}: nothing written for this chunk",
                secs(x),
                secs(y)
            )
        })?;
        let span = secs(y) - secs(x);
        if events.len() >= 1000 && span > 1 {
            let mid = x + Duration::from_secs((span / 2) as u64);
            stack.push((mid, y));
            stack.push((x, mid));
            continue;
        }
        let (lo, hi) = (secs(x) * 1_000_000, secs(y) * 1_000_000);
        out.extend(events.into_iter().filter(|e| e.ts_us >= lo && e.ts_us < hi));
    }
    Ok(Some(out))
}

pub async fn run(url: Option<&str>, args: DatadogArgs) -> Result<std::process::ExitCode> {
    let cfg = FileConfig::load(&args.config)?;
    if args.chunk < Duration::from_secs(1) {
        bail!("--chunk must be at least 1s");
    }
    let creds = Credentials::from_env(cfg.datadog.site.as_deref(), args.base_url.as_deref())?;
    let mut db = crate::db::connect(url).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let stop_notify = Arc::new(tokio::sync::Notify::new());
    {
        let (stop, n) = (stop.clone(), stop_notify.clone());
        tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            }
            tracing::warn!("stop requested: finishing the current chunk");
            stop.store(true, Ordering::SeqCst);
            n.notify_waiters();
        });
    }
    let api = Api {
        http: reqwest::Client::builder()
            .timeout(args.timeout)
            .user_agent(concat!("coherence-ingest/", env!("CARGO_PKG_VERSION")))
            .build()?,
        creds,
        retries: args.retries,
        stop: stop.clone(),
        stop_notify: stop_notify.clone(),
        stats: Arc::new(Stats::default()),
        jitter: std::sync::Mutex::new(coherence_core::rng::Rng::new(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1),
        )),
    };
    let mut progress = Progress {
        on: std::io::stderr().is_terminal(),
        last: Instant::now(),
    };
    let started = Instant::now();
    let result = loop {
        match pass(&api, &mut db, &cfg, &args, &mut progress).await {
            Ok(true) if args.once => break Ok(true),
            Ok(true) => {
                tokio::select! {
                    _ = tokio::time::sleep(args.interval) => {},
                    _ = stop_notify.notified() => break Ok(false),
                }
                if stop.load(Ordering::SeqCst) {
                    break Ok(false);
                }
            }
            Ok(false) => break Ok(false),
            Err(e) => break Err(e),
        }
    };
    progress.clear();
    let s = &api.stats;
    let summary = format!(
        "datadog: {} chunks, {} series, {} points ({} new), {} null points skipped, {} events ({} new), {} retries; {:.1}s",
        s.chunks.load(Ordering::Relaxed),
        s.series.load(Ordering::Relaxed),
        s.points.load(Ordering::Relaxed),
        s.new_points.load(Ordering::Relaxed),
        s.nulls.load(Ordering::Relaxed),
        s.events.load(Ordering::Relaxed),
        s.new_events.load(Ordering::Relaxed),
        s.retries.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );
    match result {
        Ok(true) => {
            println!("{summary}");
            Ok(std::process::ExitCode::SUCCESS)
        }
        Ok(false) => {
            println!(
                "{summary}; stopped by signal (committed chunks are kept; re-run to continue)"
            );
            Ok(if args.once {
                std::process::ExitCode::from(130)
            } else {
                std::process::ExitCode::SUCCESS
            })
        }
        Err(e) => {
            println!("{summary}; stopped by an error");
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/tests/fixtures/datadog/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    #[test]
    fn parses_recorded_single_series() {
        let m = parse_metrics(&fixture("v1_query_single_series_288pts.json"), 1.0, 0.0).unwrap();
        assert_eq!((m.series, m.points.len(), m.nulls), (1, 288, 0));
        assert_eq!(
            m.points[0],
            Point {
                host: "*".into(),
                ts_us: 1_641_344_100_000_000,
                value: 91.4583840476142
            }
        );
    }

    #[test]
    fn parses_float_timestamps_and_host_tags() {
        let m = parse_metrics(&fixture("v1_query_group_by_host_float_ts.json"), 1.0, 0.0).unwrap();
        assert_eq!(m.points.len(), 2);
        assert_eq!(m.points[0].host, "go-client-test-host");
        assert_eq!(m.points[0].ts_us, 1_618_221_135_000_000);
        assert_eq!(m.points[1].value, 11.0);
    }

    #[test]
    fn nulls_skipped_and_scale_applied() {
        let body = br#"{"status":"ok","series":[{"scope":"env:prod,host:web-1","tag_set":[],"pointlist":[[1000,0.5],[2000,null],[3000.0,0.25]]}]}"#;
        let m = parse_metrics(body, -100.0, 100.0).unwrap();
        assert_eq!(m.nulls, 1);
        assert_eq!(
            m.points.iter().map(|p| p.value).collect::<Vec<_>>(),
            [50.0, 75.0]
        );
        assert_eq!(m.points[0].host, "web-1");
        assert_eq!(m.points[1].ts_us, 3_000_000);
    }

    #[test]
    fn malformed_and_unexpected_bodies_are_errors() {
        let full = fixture("v1_query_single_series_288pts.json");
        let e = parse_metrics(&full[..full.len() / 2], 1.0, 0.0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("malformed JSON"), "{e}");
        let e = parse_metrics(br#"{"status":"ok"}"#, 1.0, 0.0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unexpected Datadog response shape"), "{e}");
        assert!(parse_metrics(br#"{"series":[{"pointlist":[[1,"x"]]}]}"#, 1.0, 0.0).is_err());
        assert!(parse_metrics(br#"{"status":"error","error":"bad query"}"#, 1.0, 0.0).is_err());
        assert!(parse_events(br#"{"data":[]}"#).is_err());
        let empty = parse_events(&fixture("v1_events_list_empty.json")).unwrap();
        assert!(empty.is_empty());
    }

    #[test]
    fn events_keep_64_bit_ids_exact() {
        let ev = parse_events(&fixture("v1_events_list_1_event.json")).unwrap();
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].source_id, "6618108885455469409");
        assert_eq!(ev[0].severity, "info");
        assert_eq!(ev[0].ts_us, 1_658_732_895_000_000);
        assert_eq!(ev[0].host, "unknown");
        // Without id_str the integer id is kept exact as well (not rounded through f64).
        let body = br#"{"events":[{"id":9007199254740993,"date_happened":1,"alert_type":"error","host":"db-1","tags":["service:api"]}]}"#;
        let ev = parse_events(body).unwrap();
        assert_eq!(ev[0].source_id, "9007199254740993");
        assert_eq!(
            (ev[0].severity, ev[0].service.as_deref()),
            ("error", Some("api"))
        );
        assert_eq!(severity("warning"), "warn");
        assert_eq!(severity("success"), "info");
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("48h").unwrap(),
            Duration::from_secs(48 * 3600)
        );
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5y").is_err());
    }

    #[test]
    fn chunking_covers_the_range_exactly() {
        let a = UNIX_EPOCH + Duration::from_secs(1000);
        let b = a + Duration::from_secs(3700);
        let c = chunks(a, b, Duration::from_secs(1800));
        assert_eq!(c.len(), 3);
        assert_eq!(c[0].0, a);
        assert_eq!(c[2].1, b);
        assert!(c.windows(2).all(|w| w[0].1 == w[1].0));
        assert!(chunks(b, a, Duration::from_secs(1)).is_empty());
    }
}
