//! The ingest runtime every source runs on: the shared flags, the pass loop over feeds, cursors
//! and feed state in PostgreSQL, COPY into `coherence.metrics`, events into
//! `coherence.signal_events`, and shutdown. A source ([`Source`]) only says which feeds it has
//! and how to fetch and parse one time chunk of one feed.
//!
//! Guarantees, for every source:
//! * **Exactly once.** Each chunk is one transaction: its rows (`ON CONFLICT DO NOTHING`) and
//!   its feed's cursor in `coherence.ingest_cursors`. A killed run resumes at the last committed
//!   cursor: nothing lost, nothing doubled.
//! * **Feeds are isolated.** Each feed (one configured query, or the events filter) has its own
//!   cursor and state. A feed whose requests keep failing (server errors past the retries, a
//!   refused query) records `last_error`, `failures` and `failing_since`, backs off, and the
//!   other feeds go on. A chunk whose body cannot be used (malformed, too large, rejected by the
//!   database) is tried `--skip-after` times, then skipped: its range and reason go to
//!   `coherence.ingest_skipped` and the feed moves on. The daemon never exits on a data error;
//!   only bad credentials and a lost database connection end it (systemd restarts it).
//! * **Shutdown.** SIGTERM/Ctrl-C abandons an in-flight request (nothing written) or lets the
//!   current database transaction finish, then exits.

pub mod http;

use anyhow::{bail, Result};
use futures_util::pin_mut;
use http::{Fetcher, HttpError, Stop};
use std::collections::HashMap;
use std::future::Future;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Client;

/// Flags every source takes.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// TOML file with the source's section (see ingestor/coherence.example.toml).
    #[arg(long, short = 'c', env = "COHERENCE_INGEST_CONFIG")]
    pub config: PathBuf,

    /// On the first run of a feed (no cursor yet), backfill this far back, e.g. 48h, 30m, 7d.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub since: Duration,

    /// Time range per request and per transaction, e.g. 1h.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub chunk: Duration,

    /// Run one pass up to now and exit (default: keep running every --interval). Exits 1 if a
    /// feed is failing at the end of the pass (after every other feed has run).
    #[arg(long)]
    pub once: bool,

    /// Pause between passes in daemon mode.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub interval: Duration,

    /// Leave the most recent data this long for the next pass (the source's ingestion delay;
    /// default 2m for Datadog, 30s for Prometheus).
    #[arg(long, value_parser = parse_duration)]
    pub delay: Option<Duration>,

    /// Ingest up to this time (RFC 3339) instead of now minus --delay.
    #[arg(long, value_parser = parse_time)]
    pub until: Option<chrono::DateTime<chrono::Utc>>,

    /// Per-request timeout (covers reading the body).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Retries of a request after 5xx responses, timeouts, connection or body-read errors.
    #[arg(long, default_value_t = 5)]
    pub retries: u32,

    /// Tries of a chunk whose body cannot be used (malformed, too large, refused by the
    /// database) before it is skipped and recorded in coherence.ingest_skipped.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub skip_after: u32,

    /// Largest response body accepted, in MiB (after decompression).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub max_body_mb: u64,
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
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        _ => {
            return Err(format!(
                "unknown unit '{unit}' in '{s}': use ms, s, m, h or d"
            ))
        }
    };
    Ok(Duration::from_secs(secs))
}

fn parse_time(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| format!("expected RFC 3339, e.g. 2025-12-13T00:00:00Z ({e})"))
}

// ------------------------------------------------------------------ what sources produce

/// One metric sample. `metric` is the series name with its labels in canonical form
/// (`coherence_core::series::series_key`).
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub host: String,
    pub metric: String,
    pub ts_us: i64,
    pub value: f64,
}

/// One event for `coherence.signal_events`.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub source_id: String,
    pub ts_us: i64,
    pub host: String,
    pub service: Option<String>,
    pub severity: &'static str,
    pub title: String,
}

#[derive(Debug)]
pub enum Rows {
    Samples(Vec<Sample>),
    Events(Vec<Event>),
}

/// One chunk of one feed, parsed.
#[derive(Debug)]
pub struct Fetched {
    pub rows: Rows,
    /// Series in the answer.
    pub series: usize,
    /// Points without a usable value (null, NaN, ±Inf, not a number), skipped and counted.
    pub skipped_values: u64,
}

/// Why a chunk could not be ingested.
#[derive(Debug)]
pub enum ChunkError {
    /// A stop was requested.
    Interrupted,
    /// The source could not be reached or kept failing: the feed backs off, nothing is skipped.
    Unavailable(anyhow::Error),
    /// The source refused the request (e.g. a bad query): the feed backs off, nothing skipped.
    Refused(anyhow::Error),
    /// The answer cannot be used: tried again, then skipped and recorded.
    Data(anyhow::Error),
    /// The credentials were refused: the command ends if nothing has worked yet (a wrong key);
    /// after a success only this feed fails (e.g. a key without the events scope).
    Auth(anyhow::Error),
    /// Nothing can work (the database connection is gone): the command ends.
    Fatal(anyhow::Error),
}

impl ChunkError {
    /// The usual mapping of an HTTP failure; `what` names the request in messages.
    pub fn from_http(e: HttpError, what: &str) -> ChunkError {
        match e {
            HttpError::Interrupted => ChunkError::Interrupted,
            HttpError::Transient(m) => ChunkError::Unavailable(anyhow::anyhow!("{m}")),
            HttpError::Refused { status, body } => {
                ChunkError::Refused(anyhow::anyhow!("{what}: HTTP {status}: {body}"))
            }
            e @ HttpError::TooLarge { .. } => ChunkError::Data(anyhow::anyhow!("{what}: {e}")),
        }
    }
}

/// One feed: a configured query (or an events filter) with its own cursor.
#[derive(Debug, Clone)]
pub struct Feed {
    /// `coherence.ingest_cursors.source`, e.g. `datadog-metrics`.
    pub cursor_source: &'static str,
    /// `coherence.ingest_cursors.query`: the feed's key.
    pub key: String,
    /// Name in logs (the metric name).
    pub label: String,
    /// Index of the query in the source's configuration.
    pub index: usize,
    /// Chunk boundaries are multiples of this (a Prometheus step), if set.
    pub align: Option<Duration>,
}

/// Cursor keys for queries mapped to names: the query alone (the key of 0.4.0 and before) for
/// its first mapping; `query → name` for each further mapping of the same query, so every
/// mapping has its own cursor. Adding a second mapping leaves the first one's cursor alone and
/// backfills the new one from `--since`.
pub fn feed_keys<'a>(queries: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<String> {
    let mut seen: std::collections::HashSet<&str> = std::collections::HashSet::new();
    queries
        .into_iter()
        .map(|(q, name)| {
            if seen.insert(q) {
                q.to_string()
            } else {
                format!("{q} → {name}")
            }
        })
        .collect()
}

/// A source of samples or events.
pub trait Source {
    /// In logs and the summary line, e.g. `datadog`.
    const NAME: &'static str;
    fn feeds(&self) -> Vec<Feed>;
    fn default_delay(&self) -> Duration;
    /// Fetches and parses [a, b) of `feed`: only rows inside the range.
    fn fetch(
        &self,
        http: &Fetcher,
        feed: &Feed,
        a: SystemTime,
        b: SystemTime,
    ) -> impl Future<Output = Result<Fetched, ChunkError>>;
}

// ------------------------------------------------------------------ time

pub fn systime(us: i64) -> SystemTime {
    if us >= 0 {
        UNIX_EPOCH + Duration::from_micros(us as u64)
    } else {
        UNIX_EPOCH - Duration::from_micros(us.unsigned_abs())
    }
}

pub fn secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub fn micros(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// `t` rounded down to a multiple of `step` since the epoch.
pub fn align_down(t: SystemTime, step: Duration) -> SystemTime {
    let s = step.as_micros().max(1) as i64;
    systime(micros(t).div_euclid(s) * s)
}

/// Chunks [start, until) of `chunk` length.
pub fn chunks(
    start: SystemTime,
    until: SystemTime,
    chunk: Duration,
) -> Vec<(SystemTime, SystemTime)> {
    let mut out = Vec::new();
    let mut t = start;
    while t < until {
        let e = t.checked_add(chunk).map_or(until, |e| e.min(until));
        out.push((t, e));
        t = e;
    }
    out
}

// ------------------------------------------------------------------ database

/// PostgreSQL text cannot hold NUL: replaced by U+FFFD, so one odd tag cannot stop a chunk.
fn pg_text(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains('\0') {
        s.replace('\0', "\u{FFFD}").into()
    } else {
        s.into()
    }
}

async fn cursor(db: &Client, feed: &Feed) -> Result<Option<SystemTime>> {
    Ok(db
        .query_opt(
            "SELECT cursor_at FROM coherence.ingest_cursors WHERE source = $1 AND query = $2",
            &[&feed.cursor_source, &feed.key],
        )
        .await?
        .map(|r| r.get(0)))
}

/// Records a failed attempt; a feed without a cursor gets one at `start` (its backfill start).
async fn record_failure(db: &Client, feed: &Feed, start: SystemTime, error: &str) -> Result<i32> {
    let row = db
        .query_one(
            "INSERT INTO coherence.ingest_cursors AS c
                    (source, query, cursor_at, last_error, failures, failing_since)
             VALUES ($1, $2, $3, $4, 1, now())
             ON CONFLICT (source, query) DO UPDATE
                SET last_error = excluded.last_error, failures = c.failures + 1,
                    failing_since = coalesce(c.failing_since, now())
             RETURNING failures",
            &[
                &feed.cursor_source,
                &feed.key,
                &start,
                &pg_text(error).as_ref(),
            ],
        )
        .await?;
    Ok(row.get(0))
}

/// Skips [a, b) of a feed: recorded in coherence.ingest_skipped, cursor moved past it.
async fn skip_chunk(
    db: &mut Client,
    feed: &Feed,
    (a, b): (SystemTime, SystemTime),
    tries: u32,
    error: &str,
) -> Result<()> {
    let tx = db.transaction().await?;
    tx.execute(
        "INSERT INTO coherence.ingest_skipped (source, query, from_at, until_at, tries, error)
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &feed.cursor_source,
            &feed.key,
            &a,
            &b,
            &(tries as i32),
            &pg_text(error).as_ref(),
        ],
    )
    .await?;
    advance_pg(&tx, feed, b).await?;
    tx.commit().await?;
    Ok(())
}

/// Writes one chunk of samples and advances the feed's cursor, in one transaction.
async fn write_samples(
    db: &mut Client,
    feed: &Feed,
    samples: &[Sample],
    end: SystemTime,
) -> Result<u64, tokio_postgres::Error> {
    let tx = db.transaction().await?;
    tx.batch_execute(
        "CREATE TEMP TABLE IF NOT EXISTS coherence_ingest_samples
            (host text, metric text, value float8, ts timestamptz) ON COMMIT DELETE ROWS",
    )
    .await?;
    let sink = tx
        .copy_in(
            "COPY coherence_ingest_samples (host, metric, value, ts) FROM STDIN (FORMAT binary)",
        )
        .await?;
    let writer = BinaryCopyInWriter::new(
        sink,
        &[Type::TEXT, Type::TEXT, Type::FLOAT8, Type::TIMESTAMPTZ],
    );
    pin_mut!(writer);
    for p in samples {
        let ts = systime(p.ts_us);
        let (host, metric) = (pg_text(&p.host), pg_text(&p.metric));
        let row: [&(dyn ToSql + Sync); 4] = [&host.as_ref(), &metric.as_ref(), &p.value, &ts];
        writer.as_mut().write(&row).await?;
    }
    writer.finish().await?;
    let n = tx
        .execute(
            "INSERT INTO coherence.metrics (host, metric_name, value, \"timestamp\")
             SELECT host, metric, value, ts FROM coherence_ingest_samples
              WHERE host <> '' AND metric <> ''
             ON CONFLICT DO NOTHING",
            &[],
        )
        .await?;
    advance_pg(&tx, feed, end).await?;
    tx.commit().await?;
    Ok(n)
}

async fn advance_pg(
    tx: &tokio_postgres::Transaction<'_>,
    feed: &Feed,
    at: SystemTime,
) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        "INSERT INTO coherence.ingest_cursors AS c (source, query, cursor_at, last_ok_at)
         VALUES ($1, $2, $3, now())
         ON CONFLICT (source, query) DO UPDATE
            SET cursor_at = excluded.cursor_at, updated_at = now(), last_ok_at = now(),
                last_error = NULL, failures = 0, failing_since = NULL",
        &[&feed.cursor_source, &feed.key, &at],
    )
    .await?;
    Ok(())
}

/// Writes one chunk of events and advances the feed's cursor, in one transaction.
async fn write_events(
    db: &mut Client,
    feed: &Feed,
    events: &[Event],
    end: SystemTime,
) -> Result<u64, tokio_postgres::Error> {
    let tx = db.transaction().await?;
    let mut n = 0;
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
            let kind = if e.severity == "error" {
                "error"
            } else {
                "event"
            };
            let host = pg_text(&e.host).into_owned();
            params.push(Box::new(systime(e.ts_us)));
            params.push(Box::new(host.clone()));
            params.push(Box::new(
                e.service.as_deref().map(|s| pg_text(s).into_owned()),
            ));
            params.push(Box::new(format!("{host}:{kind}")));
            params.push(Box::new(e.severity.to_string()));
            params.push(Box::new(kind.to_string()));
            params.push(Box::new(pg_text(&e.source_id).into_owned()));
            params.push(Box::new(pg_text(&e.title).into_owned()));
        }
        sql.push_str(" ON CONFLICT (source, source_id) DO NOTHING");
        let refs: Vec<&(dyn ToSql + Sync)> = params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect();
        n += tx.execute(sql.as_str(), &refs).await?;
    }
    advance_pg(&tx, feed, end).await?;
    tx.commit().await?;
    Ok(n)
}

/// A database error while writing: the chunk's fault (bad data: classes 22 and 23), or the
/// database's (anything else), or the end (the connection is gone).
fn db_error(db: &Client, e: tokio_postgres::Error) -> ChunkError {
    let class = e.code().map(|c| c.code()[..2].to_string());
    let msg = anyhow::anyhow!(
        "database: {e}{}",
        e.as_db_error()
            .map(|d| format!(" ({})", d.message()))
            .unwrap_or_default()
    );
    match class.as_deref() {
        Some("22") | Some("23") => ChunkError::Data(msg),
        _ if db.is_closed() => ChunkError::Fatal(msg.context("the database connection was lost")),
        _ => ChunkError::Unavailable(msg),
    }
}

// ------------------------------------------------------------------ the run loop

#[derive(Default)]
pub struct Stats {
    pub chunks: AtomicU64,
    pub series: AtomicU64,
    pub points: AtomicU64,
    pub new_points: AtomicU64,
    pub skipped_values: AtomicU64,
    pub events: AtomicU64,
    pub new_events: AtomicU64,
    pub skipped_chunks: AtomicU64,
}

struct Progress {
    on: bool,
    last: Instant,
}

impl Progress {
    fn show(&mut self, source: &str, what: &str, done: usize, total: usize) {
        if self.on && self.last.elapsed() > Duration::from_millis(150) {
            self.last = Instant::now();
            eprint!("\r  {source}: {what} chunk {done}/{total}   ");
            let _ = std::io::stderr().flush();
        }
    }
    fn clear(&self) {
        if self.on {
            eprint!("\r{:60}\r", "");
        }
    }
}

/// In-memory state of a failing feed.
#[derive(Default, Clone)]
struct FeedState {
    failures: u32,
    retry_at: Option<Instant>,
}

enum PassEnd {
    Done { failing: Vec<String> },
    Stopped,
}

struct Runner<'a, S: Source> {
    source: &'a S,
    http: Fetcher,
    args: &'a RunArgs,
    stats: Stats,
    progress: Progress,
    state: HashMap<String, FeedState>,
    /// Some chunk has been ingested by this process (bad credentials are then one feed's).
    any_ok: bool,
}

/// Consecutive chunks of one feed skipped in one pass after which the feed is failing instead:
/// a source that answers nothing usable for every range is broken, not its data.
const MAX_SKIPS_IN_A_ROW: u32 = 3;

impl<S: Source> Runner<'_, S> {
    fn until(&self) -> SystemTime {
        let delay = self
            .args
            .delay
            .unwrap_or_else(|| self.source.default_delay());
        let t = match self.args.until {
            Some(t) => systime(t.timestamp_micros()),
            None => SystemTime::now() - delay,
        };
        // Whole seconds: the APIs take epoch seconds.
        UNIX_EPOCH + Duration::from_secs(secs(t).max(0) as u64)
    }

    async fn pass(&mut self, db: &mut Client) -> Result<PassEnd> {
        let until = self.until();
        let mut failing = Vec::new();
        for feed in self.source.feeds() {
            let st = self.state.entry(feed.key.clone()).or_default().clone();
            if st.retry_at.is_some_and(|t| Instant::now() < t) {
                failing.push(feed.label.clone());
                continue;
            }
            match self.feed(db, &feed, until).await {
                Ok(true) => {
                    self.state.remove(&feed.key);
                }
                Ok(false) => return Ok(PassEnd::Stopped),
                Err(FeedFailure::Fatal(e)) => return Err(e),
                Err(FeedFailure::Failing { start, error }) => {
                    let n = record_failure(db, &feed, start, &format!("{error:#}")).await?;
                    let st = self.state.entry(feed.key.clone()).or_default();
                    st.failures += 1;
                    let wait = (self.args.interval.max(Duration::from_secs(1)))
                        .saturating_mul(1 << (st.failures - 1).min(6))
                        .min(Duration::from_secs(900));
                    st.retry_at = Some(Instant::now() + wait);
                    tracing::error!(source = S::NAME, feed = %feed.label, failures = n, retry_in_secs = wait.as_secs(), error = %format!("{error:#}"),
                        "feed failing; the other feeds go on");
                    failing.push(feed.label.clone());
                }
            }
            if self.http.stop().is_set() {
                return Ok(PassEnd::Stopped);
            }
        }
        self.progress.clear();
        Ok(PassEnd::Done { failing })
    }

    /// Ingests one feed up to `until`: Ok(false) when stopped.
    async fn feed(
        &mut self,
        db: &mut Client,
        feed: &Feed,
        until: SystemTime,
    ) -> Result<bool, FeedFailure> {
        let until = match feed.align {
            Some(step) => align_down(until, step),
            None => until,
        };
        let start = match cursor(db, feed).await.map_err(FeedFailure::Fatal)? {
            Some(t) => t,
            None => {
                let s = until.checked_sub(self.args.since).unwrap_or(UNIX_EPOCH);
                feed.align.map_or(s, |step| align_down(s, step))
            }
        };
        let list = chunks(start, until, self.args.chunk);
        let mut skips_in_a_row = 0u32;
        for (i, &(a, b)) in list.iter().enumerate() {
            self.progress.show(S::NAME, &feed.label, i + 1, list.len());
            let mut tries = 0u32;
            loop {
                let result = match self.source.fetch(&self.http, feed, a, b).await {
                    Ok(f) => self.write(db, feed, f, b).await,
                    Err(e) => Err(e),
                };
                match result {
                    Ok(()) => {
                        self.any_ok = true;
                        skips_in_a_row = 0;
                        break;
                    }
                    Err(ChunkError::Interrupted) => return Ok(false),
                    Err(ChunkError::Fatal(e)) => return Err(FeedFailure::Fatal(e)),
                    Err(ChunkError::Auth(e)) if !self.any_ok => return Err(FeedFailure::Fatal(e)),
                    Err(ChunkError::Auth(e)) => {
                        return Err(FeedFailure::Failing { start: a, error: e })
                    }
                    Err(ChunkError::Unavailable(e)) | Err(ChunkError::Refused(e)) => {
                        return Err(FeedFailure::Failing { start: a, error: e })
                    }
                    Err(ChunkError::Data(e)) => {
                        tries += 1;
                        let msg = format!("{e:#}");
                        if tries >= self.args.skip_after && skips_in_a_row + 1 >= MAX_SKIPS_IN_A_ROW
                        {
                            return Err(FeedFailure::Failing {
                                start: a,
                                error: e.context(format!(
                                    "{MAX_SKIPS_IN_A_ROW} chunks in a row unusable: the source seems broken, not its data; not skipping more"
                                )),
                            });
                        }
                        if tries >= self.args.skip_after {
                            skips_in_a_row += 1;
                            skip_chunk(db, feed, (a, b), tries, &msg)
                                .await
                                .map_err(FeedFailure::Fatal)?;
                            self.stats.skipped_chunks.fetch_add(1, Ordering::Relaxed);
                            tracing::error!(source = S::NAME, feed = %feed.label, from = secs(a), to = secs(b), tries, error = %msg,
                                "chunk skipped after repeated failures; recorded in coherence.ingest_skipped");
                            break;
                        }
                        tracing::warn!(source = S::NAME, feed = %feed.label, from = secs(a), to = secs(b), tries, error = %msg,
                            "chunk unusable; trying again");
                        if !self
                            .http
                            .stop()
                            .sleep(Duration::from_millis(250 << tries.min(6)))
                            .await
                        {
                            return Ok(false);
                        }
                    }
                }
            }
            if self.http.stop().is_set() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    async fn write(
        &self,
        db: &mut Client,
        feed: &Feed,
        f: Fetched,
        end: SystemTime,
    ) -> Result<(), ChunkError> {
        let st = &self.stats;
        match &f.rows {
            Rows::Samples(s) => {
                let new = write_samples(db, feed, s, end)
                    .await
                    .map_err(|e| db_error(db, e))?;
                st.points.fetch_add(s.len() as u64, Ordering::Relaxed);
                st.new_points.fetch_add(new, Ordering::Relaxed);
                tracing::info!(source = S::NAME, feed = %feed.label, to = secs(end), series = f.series, points = s.len(), new, skipped_values = f.skipped_values, "chunk");
            }
            Rows::Events(e) => {
                let new = write_events(db, feed, e, end)
                    .await
                    .map_err(|e| db_error(db, e))?;
                st.events.fetch_add(e.len() as u64, Ordering::Relaxed);
                st.new_events.fetch_add(new, Ordering::Relaxed);
                tracing::info!(source = S::NAME, feed = %feed.label, to = secs(end), events = e.len(), new, "events chunk");
            }
        }
        st.series.fetch_add(f.series as u64, Ordering::Relaxed);
        st.skipped_values
            .fetch_add(f.skipped_values, Ordering::Relaxed);
        st.chunks.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn summary(&self, started: Instant) -> String {
        let s = &self.stats;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "{}: {} chunks, {} series, {} points ({} new), {} values skipped (null, NaN or not a number), {} events ({} new), {} retries, {} chunks skipped; {:.1}s",
            S::NAME,
            l(&s.chunks),
            l(&s.series),
            l(&s.points),
            l(&s.new_points),
            l(&s.skipped_values),
            l(&s.events),
            l(&s.new_events),
            l(&self.http.retried),
            l(&s.skipped_chunks),
            started.elapsed().as_secs_f64()
        )
    }
}

enum FeedFailure {
    Failing {
        start: SystemTime,
        error: anyhow::Error,
    },
    Fatal(anyhow::Error),
}

/// Runs a source: one pass (`--once`) or passes every `--interval` until stopped.
pub async fn run<S: Source>(
    url: Option<&str>,
    args: &RunArgs,
    source: &S,
) -> Result<std::process::ExitCode> {
    if args.chunk < Duration::from_secs(1) {
        bail!("--chunk must be at least 1s");
    }
    let mut db = crate::db::connect(url).await?;
    let stop = Stop::on_signals("finishing the current chunk");
    let http = Fetcher::new(
        args.timeout,
        args.retries,
        (args.max_body_mb as usize) << 20,
        stop.clone(),
    )?;
    let mut r = Runner {
        source,
        http,
        args,
        stats: Stats::default(),
        progress: Progress {
            on: std::io::stderr().is_terminal(),
            last: Instant::now(),
        },
        state: HashMap::new(),
        any_ok: false,
    };
    let started = Instant::now();
    let result = loop {
        match r.pass(&mut db).await {
            Ok(PassEnd::Done { failing }) if args.once => break Ok(Some(failing)),
            Ok(PassEnd::Done { .. }) => {
                if !stop.sleep(args.interval).await {
                    break Ok(None);
                }
            }
            Ok(PassEnd::Stopped) => break Ok(None),
            Err(e) => break Err(e),
        }
    };
    r.progress.clear();
    let summary = r.summary(started);
    match result {
        Ok(Some(failing)) if failing.is_empty() => {
            println!("{summary}");
            Ok(std::process::ExitCode::SUCCESS)
        }
        Ok(Some(failing)) => {
            println!(
                "{summary}; failing feeds: {} (see coherence.ingest_status; the others were ingested)",
                failing.join(", ")
            );
            Ok(std::process::ExitCode::FAILURE)
        }
        Ok(None) => {
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

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("48h"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("h").is_err());
    }

    #[test]
    fn chunking_covers_the_range_exactly() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let c = chunks(t0, t0 + Duration::from_secs(3700), Duration::from_secs(600));
        assert_eq!(c.len(), 7);
        assert_eq!(c[0].0, t0);
        assert_eq!(c[6].1, t0 + Duration::from_secs(3700));
        assert!(c.windows(2).all(|w| w[0].1 == w[1].0));
        assert!(chunks(t0, t0, Duration::from_secs(60)).is_empty());
    }

    #[test]
    fn alignment_rounds_down_to_the_step() {
        let t = UNIX_EPOCH + Duration::from_secs(1_000_007);
        assert_eq!(
            align_down(t, Duration::from_secs(15)),
            UNIX_EPOCH + Duration::from_secs(1_000_005)
        );
        assert_eq!(align_down(t, Duration::from_secs(1)), t);
    }

    #[test]
    fn a_query_mapped_twice_gets_a_cursor_per_mapping() {
        let keys = feed_keys([("avg:a{*}", "a"), ("avg:b{*}", "b1"), ("avg:b{*}", "b2")]);
        assert_eq!(keys, ["avg:a{*}", "avg:b{*}", "avg:b{*} → b2"]);
    }

    #[test]
    fn nul_never_reaches_postgres() {
        assert_eq!(pg_text("a\0b"), "a\u{FFFD}b");
        assert_eq!(pg_text("plain"), "plain");
    }
}
