//! `coherence-ingest serve`: the live incident view.
//!
//! * One page (`/`, with `/app.js` and `/app.css` compiled into the binary; no CDN, nothing
//!   fetched from outside): the incident list, and for a selected incident its timeline,
//!   narrative, hypotheses, causal graph and a plot per member metric (series, the detector's
//!   expected band from `coherence.expected_band`, anomaly spans and peaks, error events,
//!   the time-to-exhaustion line of leaks), drawn as inline SVG.
//! * A JSON API the page uses: `/api/incidents`, `/api/incidents/{id}`,
//!   `/api/series?host=&metric=&since=&until=`.
//! * Live updates: one connection LISTENs on `coherence_incidents` (NOTIFY sent by
//!   `coherence.run_detection()`); each notification is broadcast to the open pages as a
//!   server-sent event on `/api/events`. No polling.
//! * Read-only: meant for a login role granted `coherence_reader`; the sessions are also
//!   `default_transaction_read_only`. Binds 127.0.0.1 by default; any non-loopback address
//!   needs `--token` (a bearer token, or a cookie set by opening `/?token=...`). Without a
//!   token, requests whose Host header is not a loopback name are refused (DNS rebinding).

use anyhow::{bail, Context, Result};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use futures_util::StreamExt;
use serde::Deserialize;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, Mutex};
use tokio_postgres::{AsyncMessage, Client};

const INDEX_HTML: &str = include_str!("serve/index.html");
const APP_JS: &str = include_str!("serve/app.js");
const APP_CSS: &str = include_str!("serve/app.css");

/// Longest time range `/api/series` returns.
const MAX_RANGE_DAYS: i64 = 14;

#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address and port to listen on (port 0: any free port; the URL is printed on stdout).
    /// Any address but a loopback one requires --token.
    #[arg(long, env = "COHERENCE_SERVE_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,

    /// Access token: every request must carry `Authorization: Bearer <token>` or the cookie
    /// set by opening `/?token=<token>` once. At least 16 characters of letters, digits and
    /// `-._~` (e.g. `openssl rand -hex 16`). Prefer the environment variable (a command line is
    /// visible to other local users).
    #[arg(long, env = "COHERENCE_SERVE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Most incidents listed.
    #[arg(long, default_value_t = 200)]
    pub limit: i64,
}

struct AppState {
    url: String,
    db: Mutex<Option<Arc<Client>>>,
    events: broadcast::Sender<String>,
    listening: AtomicBool,
    token: Option<String>,
    limit: i64,
}

type Shared = Arc<AppState>;

/// An API error: status and message, answered as JSON.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.0.is_server_error() {
            tracing::error!(status = self.0.as_u16(), error = %self.1, "request failed");
        }
        json_response(self.0, serde_json::json!({ "error": self.1 }).to_string())
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"))
    }
}

impl From<tokio_postgres::Error> for ApiError {
    fn from(e: tokio_postgres::Error) -> Self {
        let msg = match e.as_db_error() {
            Some(d) => format!("database: {} ({})", d.message(), d.code().code()),
            None => format!("database: {e}"),
        };
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, msg)
    }
}

fn json_response(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

/// A session for the API: read-only, UTC, bounded statements.
async fn open_session(url: &str) -> Result<Client> {
    let c = crate::db::connect(Some(url)).await?;
    c.batch_execute(
        "SET default_transaction_read_only = on; SET TimeZone = 'UTC';
         SET statement_timeout = '20s'; SET application_name = 'coherence-ingest serve'",
    )
    .await
    .context("cannot configure the session")?;
    Ok(c)
}

impl AppState {
    /// The API connection, reopened when it was lost.
    async fn client(&self) -> Result<Arc<Client>> {
        let mut g = self.db.lock().await;
        if let Some(c) = g.as_ref() {
            if !c.is_closed() {
                return Ok(c.clone());
            }
            tracing::warn!("database connection lost: reconnecting");
        }
        let c = Arc::new(open_session(&self.url).await?);
        *g = Some(c.clone());
        Ok(c)
    }
}

/// Whether the address is loopback (127.0.0.0/8, ::1).
pub fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

/// Checks the bind address and token; returns the token to require (if any).
pub fn check_access(bind: &SocketAddr, token: Option<&str>) -> Result<Option<String>> {
    let token = token.map(str::trim).filter(|t| !t.is_empty());
    match token {
        Some(t) if t.len() < 16 => bail!("--token must be at least 16 characters"),
        Some(t)
            if !t
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b)) =>
        {
            bail!("--token may hold only letters, digits and - . _ ~ (it travels in a URL and a cookie)")
        }
        Some(t) => Ok(Some(t.to_string())),
        None if !is_loopback(bind) => bail!(
            "--bind {bind} is not a loopback address: set a token (--token or \
             COHERENCE_SERVE_TOKEN, e.g. $(openssl rand -hex 16)) so that only holders of it \
             can read the incidents"
        ),
        None => Ok(None),
    }
}

/// Equal in time independent of where the strings differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A Host header naming this machine's loopback (localhost, 127.x, [::1]), with any port.
fn loopback_host(headers: &HeaderMap) -> bool {
    let Some(h) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let name = if let Some(rest) = h.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        h.rsplit_once(':').map_or(h, |(n, _)| n)
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

const COOKIE: &str = "coherence_token";

/// Access control and security headers for every response.
async fn guard(State(st): State<Shared>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    let mut set_cookie = None;
    match &st.token {
        Some(token) => {
            let bearer = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            let by_query = query_param(req.uri().query(), "token");
            let ok = bearer.is_some_and(|b| same(b.trim(), token))
                || cookie(headers, COOKIE).is_some_and(|c| same(c, token))
                || by_query.is_some_and(|q| same(q, token));
            if !ok {
                return ApiError(
                    StatusCode::UNAUTHORIZED,
                    "a token is required: Authorization: Bearer <token>, or open /?token=<token>"
                        .into(),
                )
                .into_response();
            }
            if by_query.is_some() {
                set_cookie = Some(format!(
                    "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict"
                ));
            }
        }
        None => {
            if !loopback_host(headers) {
                return ApiError(
                    StatusCode::FORBIDDEN,
                    "without a token only loopback Host names are served (localhost, 127.0.0.1, [::1])"
                        .into(),
                )
                .into_response();
            }
        }
    }
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; object-src 'none'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if let Some(c) = set_cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        h.insert(header::SET_COOKIE, c);
    }
    resp
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn app_css() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

async fn healthz(State(st): State<Shared>) -> Response {
    let db = match st.client().await {
        Ok(c) => c.query_one("SELECT 1", &[]).await.is_ok(),
        Err(_) => false,
    };
    let listening = st.listening.load(Ordering::Relaxed);
    let status = if db && listening {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(
        status,
        serde_json::json!({ "database": db, "listening": listening }).to_string(),
    )
}

/// Incidents (not merged ones), open first, then the most recent.
async fn incidents(State(st): State<Shared>) -> Result<Response, ApiError> {
    let c = st.client().await?;
    let row = c
        .query_one(
            "SELECT coalesce(jsonb_agg(to_jsonb(q) ORDER BY q.open DESC, q.last_signal_at DESC, q.id DESC), '[]')::text
               FROM (SELECT i.id, i.host, i.status, i.status = 'open' AS open, i.opened_at,
                            i.first_error_at, i.last_signal_at, i.resolved_at, i.error_count,
                            round(i.risk::numeric, 2) AS risk, i.hypothesis,
                            round(i.confidence::numeric, 2) AS confidence, i.muted_by, i.updated_at
                       FROM coherence.incidents i
                      WHERE i.status <> 'merged'
                      ORDER BY (i.status = 'open') DESC, i.last_signal_at DESC, i.id DESC
                      LIMIT $1) q",
            &[&st.limit],
        )
        .await?;
    Ok(json_response(StatusCode::OK, row.get(0)))
}

/// One incident with what the page draws: timeline, hypotheses, graph, ranking, member
/// anomalies, error events, and the time range to plot.
async fn incident(State(st): State<Shared>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id: i64 = id.parse().map_err(|_| {
        ApiError(
            StatusCode::BAD_REQUEST,
            "incident id must be an integer".into(),
        )
    })?;
    let c = st.client().await?;
    let row = c
        .query_opt(
            "WITH i AS (SELECT * FROM coherence.incidents WHERE id = $1),
                  a AS (SELECT a.* FROM i, coherence.anomalies a
                         WHERE 'anomaly:' || a.id IN (SELECT jsonb_array_elements_text(i.signals || i.context))),
                  w AS (SELECT least(i.opened_at - interval '6 hours', (SELECT min(started_at) FROM a)) AS s,
                               greatest(i.last_signal_at, (SELECT max(ended_at) FROM a)) AS e
                          FROM i),
                  r AS (SELECT greatest(w.s - greatest(interval '1 hour', (w.e - w.s) / 10),
                                        w.e - interval '7 days') AS since,
                               w.e + greatest(interval '1 hour', (w.e - w.s) / 10) AS until
                          FROM w)
             SELECT jsonb_build_object(
                 'id', i.id, 'host', i.host, 'status', i.status, 'opened_at', i.opened_at,
                 'first_error_at', i.first_error_at, 'last_signal_at', i.last_signal_at,
                 'resolved_at', i.resolved_at, 'merged_into', i.merged_into,
                 'error_count', i.error_count, 'risk', round(i.risk::numeric, 2),
                 'hypothesis', i.hypothesis, 'confidence', round(i.confidence::numeric, 2),
                 'hypotheses', i.hypotheses, 'narrative', i.narrative, 'graph', i.graph,
                 'ranking', i.ranking, 'signals', i.signals, 'context', i.context,
                 'muted_by', i.muted_by, 'updated_at', i.updated_at,
                 'plot_since', r.since, 'plot_until', r.until,
                 'timeline', (SELECT coalesce(jsonb_agg(to_jsonb(t) ORDER BY t.at, t.signal, t.metric), '[]')
                                FROM coherence.incident_timeline t WHERE t.incident_id = i.id),
                 'anomalies', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                                   'id', a.id, 'metric', a.metric, 'kind', a.kind, 'risk', round(a.risk::numeric, 2),
                                   'started_at', a.started_at, 'ended_at', a.ended_at, 'summary', a.summary,
                                   'context', ('anomaly:' || a.id) IN (SELECT jsonb_array_elements_text(i.context)))
                                   ORDER BY a.started_at), '[]') FROM a))::text
               FROM i, r",
            &[&id],
        )
        .await?;
    match row {
        Some(r) => Ok(json_response(StatusCode::OK, r.get(0))),
        None => Err(ApiError(StatusCode::NOT_FOUND, format!("no incident {id}"))),
    }
}

#[derive(Deserialize)]
struct SeriesQuery {
    host: Option<String>,
    metric: Option<String>,
    since: Option<String>,
    until: Option<String>,
}

fn parse_time(name: &str, s: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!("{name} must be an RFC 3339 time, e.g. 2025-12-13T04:10:00Z ({e})"),
            )
        })
}

fn ms(t: Option<DateTime<Utc>>) -> serde_json::Value {
    t.map_or(serde_json::Value::Null, |t| t.timestamp_millis().into())
}

/// A series in [since, until) with the detector's expected band, its anomalies overlapping the
/// range and the host's error events in it. Times are epoch milliseconds.
async fn series(
    State(st): State<Shared>,
    Query(q): Query<SeriesQuery>,
) -> Result<Response, ApiError> {
    let (Some(host), Some(metric)) = (
        q.host.filter(|h| !h.is_empty()),
        q.metric.filter(|m| !m.is_empty()),
    ) else {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "host and metric are required: /api/series?host=...&metric=...[&since=...&until=...]"
                .into(),
        ));
    };
    let c = st.client().await?;
    let until = match q.until.as_deref() {
        Some(u) => parse_time("until", u)?,
        None => {
            let last: Option<DateTime<Utc>> = c
                .query_one(
                    "SELECT max(\"timestamp\") FROM coherence.metrics WHERE host = $1 AND metric_name = $2",
                    &[&host, &metric],
                )
                .await?
                .get(0);
            last.map_or_else(Utc::now, |t| t + ChronoDuration::microseconds(1))
        }
    };
    let since = match q.since.as_deref() {
        Some(s) => parse_time("since", s)?,
        None => until - ChronoDuration::hours(24),
    };
    if since >= until {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "since must be before until".into(),
        ));
    }
    if until - since > ChronoDuration::days(MAX_RANGE_DAYS) {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("the range may be at most {MAX_RANGE_DAYS} days"),
        ));
    }
    // The band as the detector saw it; an extension without expected_band gives the series alone.
    let mut band = true;
    let rows = match c
        .query(
            "SELECT ts, value, baseline, lower, upper, anomalous
               FROM coherence.expected_band($1, $2, $3, $4) ORDER BY ts",
            &[&host, &metric, &since, &until],
        )
        .await
    {
        Ok(rows) => rows,
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_FUNCTION) => {
            band = false;
            c.query(
                "SELECT \"timestamp\", value, NULL::float8, NULL::float8, NULL::float8, NULL::bool
                   FROM coherence.metrics
                  WHERE host = $1 AND metric_name = $2 AND \"timestamp\" >= $3 AND \"timestamp\" < $4
                  ORDER BY 1",
                &[&host, &metric, &since, &until],
            )
            .await?
        }
        Err(e) => return Err(e.into()),
    };
    let f = |v: Option<f64>| {
        v.filter(|x| x.is_finite())
            .map_or(serde_json::Value::Null, Into::into)
    };
    let points: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            serde_json::json!([
                r.get::<_, DateTime<Utc>>(0).timestamp_millis(),
                f(r.get(1)),
                f(r.get(2)),
                f(r.get(3)),
                f(r.get(4)),
                r.get::<_, Option<bool>>(5),
            ])
        })
        .collect();
    let anomalies: Vec<serde_json::Value> = c
        .query(
            "SELECT id, kind, started_at, ended_at, peak_at, peak_value, baseline, risk, summary
               FROM coherence.anomalies
              WHERE host = $1 AND metric = $2 AND started_at < $4 AND ended_at >= $3
              ORDER BY started_at, id",
            &[&host, &metric, &since, &until],
        )
        .await?
        .iter()
        .map(|r| {
            serde_json::json!({
                "id": r.get::<_, i64>(0), "kind": r.get::<_, String>(1),
                "started_at": ms(r.get(2)), "ended_at": ms(r.get(3)), "peak_at": ms(r.get(4)),
                "peak_value": f(r.get(5)), "baseline": f(r.get(6)),
                "risk": f(r.get(7)), "summary": r.get::<_, String>(8),
            })
        })
        .collect();
    let events: Vec<serde_json::Value> = c
        .query(
            "SELECT ts, severity, coalesce(message, service, fingerprint)
               FROM coherence.signal_events
              WHERE host = $1 AND severity = 'error' AND ts >= $2 AND ts < $3
              ORDER BY ts LIMIT 1000",
            &[&host, &since, &until],
        )
        .await?
        .iter()
        .map(|r| {
            serde_json::json!({
                "ts": ms(r.get(0)), "severity": r.get::<_, String>(1),
                "message": r.get::<_, Option<String>>(2),
            })
        })
        .collect();
    let body = serde_json::json!({
        "host": host, "metric": metric,
        "since": since.timestamp_millis(), "until": until.timestamp_millis(),
        "band": band,
        "columns": ["ts", "value", "baseline", "lower", "upper", "anomalous"],
        "points": points, "anomalies": anomalies, "errors": events,
    });
    Ok(json_response(StatusCode::OK, body.to_string()))
}

/// Server-sent events: `hello` on connect, `incident` per NOTIFY payload, `resync` when
/// notifications may have been missed (the listener reconnected, or this client lagged).
async fn events(
    State(st): State<Shared>,
) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    let rx = st.events.subscribe();
    let hello = Event::default()
        .event("hello")
        .data(serde_json::json!({ "listening": st.listening.load(Ordering::Relaxed) }).to_string());
    let first = futures_util::stream::once(async move { Ok(hello) });
    let rest = futures_util::stream::unfold(rx, |mut rx| async move {
        let ev = match rx.recv().await {
            Ok(msg) if msg == RESYNC => Event::default().event("resync").data("{}"),
            Ok(payload) => Event::default().event("incident").data(payload),
            Err(broadcast::error::RecvError::Lagged(_)) => {
                Event::default().event("resync").data("{}")
            }
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok(ev), rx))
    });
    Sse::new(first.chain(rest)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

const RESYNC: &str = "\u{0}resync";

/// LISTENs on coherence_incidents and broadcasts each payload; reconnects with backoff.
async fn listen_loop(st: Shared) {
    let mut delay = Duration::from_millis(500);
    let mut first = true;
    loop {
        match listen_once(&st, first).await {
            Ok(()) => delay = Duration::from_millis(500),
            Err(e) => tracing::warn!("listen connection: {e:#}; retrying in {delay:?}"),
        }
        st.listening.store(false, Ordering::Relaxed);
        first = false;
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

async fn listen_once(st: &Shared, first: bool) -> Result<()> {
    let mut config: tokio_postgres::Config = st.url.parse()?;
    config.application_name("coherence-ingest serve (listen)");
    let (client, mut conn) = config
        .connect(tokio_postgres::NoTls)
        .await
        .context("cannot connect to PostgreSQL")?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Result<String, String>>();
    let pump = tokio::spawn(async move {
        let mut stream = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(msg) = stream.next().await {
            match msg {
                Ok(AsyncMessage::Notification(n)) => {
                    let _ = tx.send(Ok(n.payload().to_string()));
                }
                Ok(_) => {}
                Err(e) => {
                    let msg = e.as_db_error().map_or_else(
                        || e.to_string(),
                        |d| format!("{} ({})", d.message(), d.code().code()),
                    );
                    let _ = tx.send(Err(msg));
                    return;
                }
            }
        }
        let _ = tx.send(Err("connection closed".into()));
    });
    client
        .batch_execute("LISTEN coherence_incidents")
        .await
        .context("LISTEN coherence_incidents")?;
    st.listening.store(true, Ordering::Relaxed);
    tracing::info!("listening on coherence_incidents");
    if !first {
        // Notifications sent while we were away are lost: pages refetch.
        let _ = st.events.send(RESYNC.to_string());
    }
    let result = loop {
        match rx.recv().await {
            Some(Ok(payload)) => {
                tracing::debug!(%payload, "notification");
                let _ = st.events.send(payload);
            }
            Some(Err(e)) => break Err(anyhow::anyhow!(e)),
            None => break Err(anyhow::anyhow!("listener stopped")),
        }
    };
    pump.abort();
    result
}

fn router(st: Shared) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/app.js", get(app_js))
        .route("/app.css", get(app_css))
        .route("/healthz", get(healthz))
        .route("/api/incidents", get(incidents))
        .route("/api/incidents/{id}", get(incident))
        .route("/api/series", get(series))
        .route("/api/events", get(events))
        .layer(middleware::from_fn_with_state(st.clone(), guard))
        .with_state(st)
}

pub async fn run(url: Option<&str>, args: ServeArgs) -> Result<()> {
    let token = check_access(&args.bind, args.token.as_deref())?;
    if args.limit < 1 {
        bail!("--limit must be at least 1");
    }
    let api =
        open_session(url.context("no database given: set DATABASE_URL or pass --database-url")?)
            .await?;
    let url = url.expect("checked above").to_string();
    // Read-only by design: say so when the role could write the results.
    let writer: bool = api
        .query_one(
            "SELECT has_table_privilege('coherence.incidents', 'INSERT, UPDATE, DELETE')",
            &[],
        )
        .await?
        .get(0);
    if writer {
        tracing::warn!(
            "the database role can write coherence.incidents: serve needs only read access \
             (a login role granted coherence_reader; see docs/live-view.md)"
        );
    }
    let (events, _) = broadcast::channel(256);
    let st = Arc::new(AppState {
        url,
        db: Mutex::new(Some(Arc::new(api))),
        events,
        listening: AtomicBool::new(false),
        token,
        limit: args.limit,
    });
    tokio::spawn(listen_loop(st.clone()));
    let listener = tokio::net::TcpListener::bind(args.bind)
        .await
        .with_context(|| format!("cannot listen on {}", args.bind))?;
    let addr = listener.local_addr()?;
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        match addr {
            SocketAddr::V6(a) => format!("[{}]", a.ip()),
            SocketAddr::V4(a) => a.ip().to_string(),
        }
    };
    let port = addr.port();
    // The one line on stdout: scripts read the URL from it.
    println!("coherence-ingest serve: http://{host}:{port}/");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    tracing::info!(%addr, token = st.token.is_some(), "serving the live incident view");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = axum::serve(listener, router(st)) => r.context("server failed")?,
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    tracing::info!("serve: stopped by signal");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_loopback_bind_needs_a_token() {
        let lo: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let lo6: SocketAddr = "[::1]:8080".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert_eq!(check_access(&lo, None).unwrap(), None);
        assert_eq!(check_access(&lo6, Some("  ")).unwrap(), None);
        assert!(check_access(&any, None)
            .unwrap_err()
            .to_string()
            .contains("not a loopback address"));
        assert!(check_access(&any, Some("short")).is_err());
        assert!(check_access(&any, Some("0123456789abcdef;x")).is_err());
        assert_eq!(
            check_access(&any, Some("0123456789abcdef"))
                .unwrap()
                .as_deref(),
            Some("0123456789abcdef")
        );
    }

    #[test]
    fn host_header_and_token_helpers() {
        let mut h = HeaderMap::new();
        for (host, ok) in [
            ("localhost:8080", true),
            ("127.0.0.1:1", true),
            ("[::1]:8080", true),
            ("127.0.0.1", true),
            ("evil.example:8080", false),
            ("10.0.0.1:8080", false),
        ] {
            h.insert(header::HOST, HeaderValue::from_static(host));
            assert_eq!(loopback_host(&h), ok, "{host}");
        }
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; coherence_token=xyz"),
        );
        assert_eq!(cookie(&h, COOKIE), Some("xyz"));
        assert_eq!(query_param(Some("a=1&token=t0k"), "token"), Some("t0k"));
        assert_eq!(query_param(None, "token"), None);
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
    }
}
