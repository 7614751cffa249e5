//! `coherence-ingest alert`: delivers incidents to Slack incoming webhooks and PagerDuty
//! Events API v2.
//!
//! * LISTENs on `coherence_incidents` (sent by `coherence.run_detection()`); on start, and on
//!   every notification or poll tick, it queues what is owed in `coherence.alert_deliveries`:
//!   a `trigger` per destination for each incident with risk >= min_risk, and a `resolve` for
//!   each triggered incident that resolved (or merged into another).
//! * Each (incident, destination, action) row is delivered once: the row is locked, the
//!   request sent, and the row marked delivered in the same transaction. A failure records
//!   the error and schedules a retry with exponential backoff and jitter; a dead destination
//!   only delays its own rows. A kill before the destination acknowledges leaves the row
//!   pending (re-sent on restart); a kill between the acknowledgement and the commit (a few
//!   milliseconds) re-sends once, which PagerDuty dedups by `dedup_key`.
//! * Incidents muted by a maintenance window (`incidents.muted_by`) are not alerted; one whose
//!   signals go on past the window is unmuted by the job and alerted then.
//! * The watcher: when `coherence.health()` says the detection job has not succeeded for
//!   `--watch-after`, or its last `--watch-failures` runs failed, one alert per destination and
//!   outage (keyed by the last success), resolved when a run succeeds again.
//! * Resolves wait for their trigger. Secrets (webhook URLs, routing keys) come from the
//!   environment variables named in the config and are never logged.

use crate::config::{AlertSection, FileConfig};
use crate::ingest::parse_duration;
use anyhow::{anyhow, bail, Context, Result};
use futures_util::StreamExt;
use std::path::PathBuf;
use std::time::Duration;
use tokio_postgres::{AsyncMessage, Client};

#[derive(clap::Args, Debug, Clone)]
pub struct AlertArgs {
    /// TOML file with an [alert] section (see ingestor/coherence.example.toml).
    #[arg(long, short = 'c', env = "COHERENCE_INGEST_CONFIG")]
    pub config: PathBuf,

    /// Deliver incidents with at least this risk (overrides [alert] min_risk; default 0.8).
    #[arg(long)]
    pub min_risk: Option<f64>,

    /// Queue and deliver what is due now, then exit (default: keep listening).
    #[arg(long)]
    pub once: bool,

    /// Re-check the queue for retries at least this often.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub poll: Duration,

    /// First retry delay; doubles per attempt (with jitter), at most 10 minutes.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub retry_base: Duration,

    /// Give up on a delivery (status failed) after this many attempts.
    #[arg(long, default_value_t = 10)]
    pub max_attempts: i32,

    /// Per-request timeout.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Watch the detection job: alert (once per outage) when no coherence.run_detection() has
    /// succeeded for this long (coherence.health()'s stale_after; about twice the schedule).
    /// 0 turns the watcher off.
    #[arg(long, default_value = "30m", value_parser = parse_duration)]
    pub watch_after: Duration,

    /// ... or when this many runs in a row have failed.
    #[arg(long, default_value_t = 2)]
    pub watch_failures: i64,

    /// Alert on incidents recorded (incidents.created_at) since this point: `all` (every
    /// incident in the database), a duration back from now (`24h`) or a time
    /// (`2026-11-29T00:00:00Z`). Recorded per destination in coherence.alert_destinations on its
    /// first start (default: that start, so a new destination does not page for history);
    /// given again, it moves it.
    #[arg(long, value_parser = parse_since)]
    pub since: Option<Since>,
}

/// Where a destination's alerting starts.
#[derive(Debug, Clone, PartialEq)]
pub enum Since {
    All,
    Ago(Duration),
    At(String),
}

fn parse_since(s: &str) -> Result<Since, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("all") {
        return Ok(Since::All);
    }
    if s.chars().next().is_some_and(|c| c.is_ascii_digit()) && !s.contains('-') {
        return parse_duration(s).map(Since::Ago);
    }
    if s.len() >= 10 && s.as_bytes()[4] == b'-' && s.as_bytes()[7] == b'-' {
        return Ok(Since::At(s.to_string()));
    }
    Err(format!(
        "--since takes all, a duration such as 24h, or a time such as 2026-11-29T00:00:00Z, not '{s}'"
    ))
}

/// A failed delivery: the receiver's or the transport's reason, whether retrying can help, and
/// how long the receiver asked us to wait (Retry-After, in seconds).
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub message: String,
    pub permanent: bool,
    pub retry_after: Option<Duration>,
}

pub use crate::ingest::http::permanent_status;

/// A destination with its secret resolved.
#[derive(Clone)]
enum Dest {
    Slack {
        name: String,
        url: String,
    },
    PagerDuty {
        name: String,
        routing_key: String,
        events_url: String,
    },
}

impl Dest {
    fn name(&self) -> &str {
        match self {
            Dest::Slack { name, .. } | Dest::PagerDuty { name, .. } => name,
        }
    }
}

fn destinations(a: &AlertSection) -> Result<Vec<Dest>> {
    let env = |var: &str, what: &str, dest: &str| -> Result<String> {
        std::env::var(var)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| {
                anyhow!("{var} is not set: it holds the {what} of alert destination '{dest}'")
            })
    };
    let pd_url = match std::env::var("COHERENCE_PD_EVENTS_URL") {
        Ok(u) if std::env::var("COHERENCE_ALLOW_TEST_BASE_URL").ok().as_deref() == Some("1") => u,
        Ok(_) => bail!("COHERENCE_PD_EVENTS_URL is for tests only: set COHERENCE_ALLOW_TEST_BASE_URL=1 to allow it"),
        Err(_) => "https://events.pagerduty.com/v2/enqueue".to_string(),
    };
    let mut out = Vec::new();
    for s in &a.slack {
        out.push(Dest::Slack {
            name: s.name.clone(),
            url: env(&s.webhook_url_env, "Slack webhook URL", &s.name)?,
        });
    }
    for p in &a.pagerduty {
        out.push(Dest::PagerDuty {
            name: p.name.clone(),
            routing_key: env(&p.routing_key_env, "PagerDuty routing key", &p.name)?,
            events_url: pd_url.clone(),
        });
    }
    if out.is_empty() {
        bail!("[alert] has no destinations: add [[alert.slack]] or [[alert.pagerduty]] entries");
    }
    Ok(out)
}

/// The incident fields a message needs.
pub struct Incident {
    pub id: i64,
    pub host: String,
    pub status: String,
    pub risk: f64,
    pub hypothesis: String,
    pub confidence: f64,
    pub narrative: String,
    pub first_error_at: String,
}

/// PagerDuty severity from risk.
pub fn pd_severity(risk: f64) -> &'static str {
    if risk >= 0.95 {
        "critical"
    } else if risk >= 0.8 {
        "error"
    } else if risk >= 0.5 {
        "warning"
    } else {
        "info"
    }
}

fn link(template: Option<&str>, id: i64) -> Option<String> {
    template.map(|t| t.replace("{id}", &id.to_string()))
}

/// Slack incoming-webhook body.
pub fn slack_body(i: &Incident, action: &str, link_tpl: Option<&str>) -> serde_json::Value {
    let link = link(link_tpl, i.id)
        .map(|l| format!("\n<{l}|Open incident #{}>", i.id))
        .unwrap_or_default();
    let text = if action == "resolve" {
        format!(
            ":white_check_mark: *Coherence incident #{}* on *{}* resolved (risk {:.2}, {}).{link}",
            i.id, i.host, i.risk, i.hypothesis
        )
    } else {
        format!(
            ":rotating_light: *Coherence incident #{}* on *{}*: risk {:.2}\n*Hypothesis:* {} (confidence {:.2})\n```{}```{link}",
            i.id, i.host, i.risk, i.hypothesis, i.confidence, i.narrative
        )
    };
    serde_json::json!({ "text": text })
}

/// PagerDuty Events API v2 body; `dedup_key` is the incident id.
pub fn pagerduty_body(
    i: &Incident,
    action: &str,
    routing_key: &str,
    link_tpl: Option<&str>,
) -> serde_json::Value {
    if action == "resolve" {
        return serde_json::json!({
            "routing_key": routing_key, "event_action": "resolve", "dedup_key": i.id.to_string(),
        });
    }
    let first_line = i
        .narrative
        .lines()
        .last()
        .unwrap_or("")
        .trim_start_matches("Hypothesis: ");
    let mut body = serde_json::json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": i.id.to_string(),
        "payload": {
            "summary": format!("{}: {} (risk {:.2})", i.host, first_line.trim_end_matches('.'), i.risk),
            "source": i.host,
            "severity": pd_severity(i.risk),
            "timestamp": i.first_error_at,
            "component": "coherence",
            "group": i.host,
            "class": i.hypothesis,
            "custom_details": {
                "incident_id": i.id, "risk": i.risk, "hypothesis": i.hypothesis,
                "confidence": i.confidence, "narrative": i.narrative,
            }
        }
    });
    if let Some(l) = link(link_tpl, i.id) {
        body["links"] =
            serde_json::json!([{ "href": l, "text": format!("Coherence incident #{}", i.id) }]);
    }
    body
}

async fn enqueue(db: &Client, dests: &[Dest], min_risk: f64) -> Result<u64> {
    let names: Vec<String> = dests.iter().map(|d| d.name().to_string()).collect();
    let t = db
        .execute(
            "INSERT INTO coherence.alert_deliveries (incident_id, destination, action)
             SELECT i.id, d.destination, 'trigger'
               FROM coherence.incidents i JOIN coherence.alert_destinations d
                 ON d.destination = ANY ($1::text[]) AND i.created_at >= d.since
              WHERE i.status <> 'merged' AND i.risk >= $2 AND i.muted_by IS NULL
             ON CONFLICT (incident_id, destination, action) DO NOTHING",
            &[&names, &min_risk],
        )
        .await?;
    let r = db
        .execute(
            "INSERT INTO coherence.alert_deliveries (incident_id, destination, action)
             SELECT t.incident_id, t.destination, 'resolve'
               FROM coherence.alert_deliveries t JOIN coherence.incidents i ON i.id = t.incident_id
              WHERE t.action = 'trigger' AND t.status = 'delivered' AND t.destination = ANY ($1::text[])
                AND i.status IN ('resolved', 'merged')
             ON CONFLICT (incident_id, destination, action) DO NOTHING",
            &[&names],
        )
        .await?;
    Ok(t + r)
}

/// The watcher: one trigger per destination and outage of the detection job (keyed by its last
/// success before the outage), and a resolve once it succeeds again.
async fn enqueue_watch(db: &Client, dests: &[Dest], after: Duration, failures: i64) -> Result<u64> {
    if after.is_zero() {
        return Ok(0);
    }
    let names: Vec<String> = dests.iter().map(|d| d.name().to_string()).collect();
    let secs = after.as_secs_f64();
    // One call of coherence.health() a pass: a trigger per destination while the job is down,
    // a resolve for each delivered watcher trigger once it is up.
    let n: i64 = db
        .query_one(
            "WITH h AS (SELECT * FROM coherence.health(make_interval(secs => $2))),
             t AS (
                 INSERT INTO coherence.alert_deliveries (watch_since, destination, action, detail)
                 SELECT coalesce(h.last_success_at, '-infinity'), d.name, 'trigger', h.detail
                   FROM h CROSS JOIN unnest($1::text[]) d(name)
                  WHERE h.status = 'stalled' OR (h.status = 'failing' AND h.failures_since_success >= $3)
                 ON CONFLICT (watch_since, destination, action) WHERE incident_id IS NULL DO NOTHING
                 RETURNING 1),
             r AS (
                 INSERT INTO coherence.alert_deliveries (watch_since, destination, action, detail)
                 SELECT w.watch_since, w.destination, 'resolve', h.detail
                   FROM coherence.alert_deliveries w, h
                  WHERE w.incident_id IS NULL AND w.action = 'trigger'
                    AND w.destination = ANY ($1::text[]) AND h.status IN ('ok', 'lagging')
                 ON CONFLICT (watch_since, destination, action) WHERE incident_id IS NULL DO NOTHING
                 RETURNING 1)
             SELECT (SELECT count(*) FROM t) + (SELECT count(*) FROM r)",
            &[&names, &secs, &failures],
        )
        .await?
        .get(0);
    Ok(n as u64)
}

/// A watcher alert: the detection job has not succeeded since `since` (`None`: never).
#[derive(Debug, Clone)]
pub struct Watch {
    pub since: Option<String>,
    pub detail: String,
}

impl Watch {
    fn dedup_key(&self) -> String {
        format!(
            "coherence-detection-{}",
            self.since.as_deref().unwrap_or("never")
        )
    }
}

/// Slack body of a watcher alert.
pub fn slack_watch_body(w: &Watch, action: &str) -> serde_json::Value {
    let text = if action == "resolve" {
        format!(
            ":white_check_mark: *Coherence detection* is running again ({}).",
            w.detail
        )
    } else {
        format!(
            ":rotating_light: *Coherence detection is not running*: {}\nIncidents are not being detected until coherence.run_detection() succeeds again (SELECT * FROM coherence.health();).",
            w.detail
        )
    };
    serde_json::json!({ "text": text })
}

/// PagerDuty body of a watcher alert (dedup key per outage).
pub fn pagerduty_watch_body(w: &Watch, action: &str, routing_key: &str) -> serde_json::Value {
    if action == "resolve" {
        return serde_json::json!({
            "routing_key": routing_key, "event_action": "resolve", "dedup_key": w.dedup_key(),
        });
    }
    serde_json::json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": w.dedup_key(),
        "payload": {
            "summary": format!("Coherence detection is not running: {}", w.detail),
            "source": "coherence",
            "severity": "error",
            "component": "coherence",
            "class": "detection stalled",
            "custom_details": { "last_success": w.since, "detail": w.detail },
        }
    })
}

/// What a delivery is about.
enum Subject {
    Incident(Incident),
    Watch(Watch),
}

struct Sender {
    http: reqwest::Client,
    dests: Vec<Dest>,
    link: Option<String>,
    retry_base: Duration,
    max_attempts: i32,
    rng: std::sync::Mutex<coherence_core::rng::Rng>,
}

impl Sender {
    async fn post(&self, dest: &Dest, body: &serde_json::Value) -> Result<String, Failure> {
        let url = match dest {
            Dest::Slack { url, .. } => url,
            Dest::PagerDuty { events_url, .. } => events_url,
        };
        let resp = self
            .http
            .post(url)
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| Failure {
                message: crate::ingest::http::describe(&e),
                permanent: false,
                retry_after: None,
            })?;
        let status = resp.status();
        let retry_after = crate::ingest::http::retry_after(
            status.as_u16(),
            resp.headers(),
            std::time::SystemTime::now(),
        );
        let text = resp.text().await.unwrap_or_default();
        if status.is_success() {
            Ok(format!("HTTP {}", status.as_u16()))
        } else {
            Err(Failure {
                message: format!(
                    "HTTP {}: {}",
                    status.as_u16(),
                    text.chars().take(200).collect::<String>()
                ),
                permanent: permanent_status(status.as_u16()),
                retry_after,
            })
        }
    }

    /// Delivers due rows one by one; returns how many were delivered.
    async fn deliver_due(&self, db: &mut Client) -> Result<u64> {
        let mut delivered = 0;
        loop {
            let tx = db.transaction().await?;
            // Due, pending, and for resolves: their trigger already delivered.
            let Some(row) = tx
                .query_opt(
                    "SELECT d.id, d.incident_id, d.destination, d.action, d.attempts,
                            i.host, i.status, i.risk, i.hypothesis, i.confidence, i.narrative,
                            to_char(coalesce(i.first_error_at, i.opened_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
                            CASE WHEN isfinite(d.watch_since)
                                 THEN to_char(d.watch_since AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') END,
                            coalesce(d.detail, '')
                       FROM coherence.alert_deliveries d LEFT JOIN coherence.incidents i ON i.id = d.incident_id
                      WHERE d.status = 'pending' AND d.next_attempt_at <= now()
                        AND d.destination = ANY ($1::text[])
                        AND (d.incident_id IS NOT NULL OR d.watch_since IS NOT NULL)
                        AND (d.action = 'trigger' OR EXISTS (
                              SELECT 1 FROM coherence.alert_deliveries t
                               WHERE t.incident_id IS NOT DISTINCT FROM d.incident_id
                                 AND t.watch_since IS NOT DISTINCT FROM d.watch_since
                                 AND t.destination = d.destination
                                 AND t.action = 'trigger' AND t.status = 'delivered'))
                      ORDER BY d.next_attempt_at, d.id
                      LIMIT 1
                      FOR UPDATE OF d SKIP LOCKED",
                    &[&self.dests.iter().map(|d| d.name().to_string()).collect::<Vec<_>>()],
                )
                .await?
            else {
                tx.commit().await?;
                return Ok(delivered);
            };
            let (id, dest_name, action, attempts): (i64, String, String, i32) =
                (row.get(0), row.get(2), row.get(3), row.get(4));
            // An incident alert, or (no incident) a watcher alert about the detection job.
            let subject = match row.get::<_, Option<i64>>(1) {
                Some(incident) => Subject::Incident(Incident {
                    id: incident,
                    host: row.get(5),
                    status: row.get(6),
                    risk: row.get(7),
                    hypothesis: row.get(8),
                    confidence: row.get(9),
                    narrative: row.get(10),
                    first_error_at: row.get(11),
                }),
                None => Subject::Watch(Watch {
                    since: row.get(12),
                    detail: row.get(13),
                }),
            };
            let dest = self
                .dests
                .iter()
                .find(|d| d.name() == dest_name)
                .expect("selected by name")
                .clone();
            let body = match (&dest, &subject) {
                (Dest::Slack { .. }, Subject::Incident(inc)) => {
                    slack_body(inc, &action, self.link.as_deref())
                }
                (Dest::PagerDuty { routing_key, .. }, Subject::Incident(inc)) => {
                    pagerduty_body(inc, &action, routing_key, self.link.as_deref())
                }
                (Dest::Slack { .. }, Subject::Watch(w)) => slack_watch_body(w, &action),
                (Dest::PagerDuty { routing_key, .. }, Subject::Watch(w)) => {
                    pagerduty_watch_body(w, &action, routing_key)
                }
            };
            let (what, status) = match &subject {
                Subject::Incident(i) => (format!("incident {}", i.id), i.status.clone()),
                Subject::Watch(w) => (
                    format!(
                        "detection watcher (since {})",
                        w.since.as_deref().unwrap_or("never")
                    ),
                    String::new(),
                ),
            };
            match self.post(&dest, &body).await {
                Ok(resp) => {
                    tx.execute(
                        "UPDATE coherence.alert_deliveries SET status = 'delivered', attempts = attempts + 1,
                                delivered_at = now(), response = $2, last_error = NULL WHERE id = $1",
                        &[&id, &resp],
                    )
                    .await?;
                    tx.commit().await?;
                    delivered += 1;
                    tracing::info!(subject = %what, destination = %dest_name, %action, %status, "delivered");
                }
                Err(failure) => {
                    let n = attempts + 1;
                    let base = self.retry_base.as_secs_f64() * 2f64.powi((n - 1).min(16));
                    let jitter = 1.0 + self.rng.lock().unwrap().uniform();
                    // The receiver's Retry-After, when longer than our own backoff.
                    let wait = (base * jitter)
                        .min(600.0)
                        .max(failure.retry_after.map_or(0.0, |d| d.as_secs_f64()));
                    // A permanent refusal (a 4xx but 408/429) is not retried.
                    let give_up = n >= self.max_attempts || failure.permanent;
                    let err = failure.message;
                    tx.execute(
                        "UPDATE coherence.alert_deliveries SET attempts = $2, last_error = $3,
                                status = CASE WHEN $4 THEN 'failed' ELSE 'pending' END,
                                next_attempt_at = now() + make_interval(secs => $5) WHERE id = $1",
                        &[&id, &n, &err, &give_up, &wait],
                    )
                    .await?;
                    tx.commit().await?;
                    if give_up {
                        tracing::error!(subject = %what, destination = %dest_name, %action, attempts = n, permanent = failure.permanent, error = %err, "giving up");
                    } else {
                        tracing::warn!(subject = %what, destination = %dest_name, %action, attempt = n, retry_in_secs = wait, error = %err, "delivery failed");
                    }
                }
            }
        }
    }
}

pub async fn run(url: Option<&str>, args: AlertArgs) -> Result<()> {
    let cfg = FileConfig::load(&args.config)?;
    let section = cfg
        .alert
        .clone()
        .ok_or_else(|| anyhow!("{}: no [alert] section", args.config.display()))?;
    let min_risk = args.min_risk.or(section.min_risk).unwrap_or(0.8);
    if !(0.0..=1.0).contains(&min_risk) {
        bail!("--min-risk must be between 0 and 1");
    }
    if args.watch_failures < 1 {
        bail!("--watch-failures must be at least 1");
    }
    if args.max_attempts < 1 {
        bail!("--max-attempts must be at least 1");
    }
    let dests = destinations(&section)?;
    let mut db = crate::db::connect(url).await?;
    // Where each destination's alerting starts: its first start (a new destination does not
    // page for history), unless --since says otherwise.
    let names: Vec<String> = dests.iter().map(|d| d.name().to_string()).collect();
    let (since_sql, since_arg): (&str, Option<String>) = match &args.since {
        None => ("now()", None),
        Some(Since::All) => ("'-infinity'::timestamptz", None),
        Some(Since::Ago(d)) => (
            "now() - make_interval(secs => $2::text::double precision)",
            Some(d.as_secs_f64().to_string()),
        ),
        Some(Since::At(t)) => ("$2::text::timestamptz", Some(t.clone())),
    };
    let conflict = if args.since.is_some() {
        "DO UPDATE SET since = excluded.since"
    } else {
        "DO NOTHING"
    };
    let sql = format!(
        "INSERT INTO coherence.alert_destinations (destination, since)
         SELECT d, {since_sql} FROM unnest($1::text[]) d
         ON CONFLICT (destination) {conflict}"
    );
    match &since_arg {
        Some(a) => db.execute(&sql, &[&names, a]).await,
        None => db.execute(&sql, &[&names]).await,
    }
    .with_context(|| {
        format!(
            "cannot record where alerting starts (--since {:?})",
            args.since
        )
    })?;
    let url = url.expect("connect checked it");
    // A second connection LISTENs; notifications arrive on a channel.
    let (listener, mut conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .context("cannot connect to PostgreSQL")?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        let mut stream = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(msg) = stream.next().await {
            match msg {
                Ok(AsyncMessage::Notification(n)) => {
                    let _ = tx.send(n.payload().to_string());
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!("listen connection lost: {e}");
                    break;
                }
            }
        }
    });
    listener.batch_execute("LISTEN coherence_incidents").await?;
    let sender = Sender {
        http: crate::ingest::http::client(args.timeout)?,
        dests,
        link: section.link.clone(),
        retry_base: args.retry_base,
        max_attempts: args.max_attempts,
        rng: std::sync::Mutex::new(coherence_core::rng::Rng::new(
            std::process::id() as u64 ^ 0x5eed,
        )),
    };
    tracing::info!(
        min_risk,
        destinations = sender.dests.len(),
        "alert: listening on coherence_incidents"
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut total = 0u64;
    loop {
        // Queue and deliver until nothing more is sent: a delivered trigger makes its resolve
        // due (resolves follow delivered triggers only).
        let (mut queued, mut sent) = (
            enqueue_watch(&db, &sender.dests, args.watch_after, args.watch_failures).await?,
            0,
        );
        loop {
            queued += enqueue(&db, &sender.dests, min_risk).await?;
            let n = sender.deliver_due(&mut db).await?;
            sent += n;
            if n == 0 {
                break;
            }
        }
        total += sent;
        if queued > 0 || sent > 0 {
            tracing::info!(queued, delivered = sent, "alert pass");
        }
        if args.once {
            let pending: i64 = db
                .query_one(
                    "SELECT count(*) FROM coherence.alert_deliveries WHERE status = 'pending'",
                    &[],
                )
                .await?
                .get(0);
            println!("alert: {total} delivered, {pending} pending (retried on the next run)");
            return Ok(());
        }
        tokio::select! {
            Some(payload) = rx.recv() => tracing::debug!(%payload, "notification"),
            _ = tokio::time::sleep(args.poll) => {},
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        }
        // Drain notifications that arrived together.
        while rx.try_recv().is_ok() {}
    }
    println!("alert: {total} delivered; stopped by signal");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inc() -> Incident {
        Incident {
            id: 7,
            host: "host-stressed".into(),
            status: "open".into(),
            risk: 1.0,
            hypothesis: "resource exhaustion".into(),
            confidence: 0.93,
            narrative: "At 2025-12-13 04:10 UTC, host-stressed experienced:\n- 13 error events\nHypothesis: Error burst caused by resource exhaustion.".into(),
            first_error_at: "2025-12-13T04:10:00Z".into(),
        }
    }

    #[test]
    fn pagerduty_trigger_and_resolve() {
        let b = pagerduty_body(&inc(), "trigger", "rk", Some("https://g/{id}"));
        assert_eq!(b["event_action"], "trigger");
        assert_eq!(b["dedup_key"], "7");
        assert_eq!(b["payload"]["severity"], "critical");
        assert_eq!(b["payload"]["source"], "host-stressed");
        assert_eq!(
            b["payload"]["summary"],
            "host-stressed: Error burst caused by resource exhaustion (risk 1.00)"
        );
        assert_eq!(b["links"][0]["href"], "https://g/7");
        let r = pagerduty_body(&inc(), "resolve", "rk", None);
        assert_eq!(
            (r["event_action"].as_str(), r["dedup_key"].as_str()),
            (Some("resolve"), Some("7"))
        );
        assert_eq!(
            [
                pd_severity(0.96),
                pd_severity(0.85),
                pd_severity(0.6),
                pd_severity(0.1)
            ],
            ["critical", "error", "warning", "info"]
        );
    }

    #[test]
    fn slack_message_is_readable() {
        let t = slack_body(&inc(), "trigger", Some("https://g/{id}"))["text"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            t.contains("incident #7") && t.contains("host-stressed") && t.contains("risk 1.00")
        );
        assert!(
            t.contains("resource exhaustion (confidence 0.93)") && t.contains("13 error events")
        );
        assert!(t.contains("<https://g/7|Open incident #7>"));
        let r = slack_body(&inc(), "resolve", None)["text"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(r.contains("resolved"));
    }

    #[test]
    fn watcher_alerts_have_one_dedup_key_per_outage() {
        let w = Watch {
            since: Some("2026-11-29T04:00:00Z".into()),
            detail: "2 run(s) failed since the last success at ...: permission denied".into(),
        };
        let t = pagerduty_watch_body(&w, "trigger", "rk");
        let r = pagerduty_watch_body(&w, "resolve", "rk");
        assert_eq!(t["dedup_key"], "coherence-detection-2026-11-29T04:00:00Z");
        assert_eq!(t["dedup_key"], r["dedup_key"]);
        assert_eq!(r["event_action"], "resolve");
        assert!(t["payload"]["summary"]
            .as_str()
            .unwrap()
            .contains("permission denied"));
        let never = Watch { since: None, ..w };
        assert_eq!(
            pagerduty_watch_body(&never, "trigger", "rk")["dedup_key"],
            "coherence-detection-never"
        );
        let s = slack_watch_body(&never, "trigger")["text"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            s.contains("not running") && s.contains("coherence.health()"),
            "{s}"
        );
        assert!(slack_watch_body(&never, "resolve")["text"]
            .as_str()
            .unwrap()
            .contains("running again"));
    }

    #[test]
    fn since_takes_all_a_duration_or_a_time() {
        assert_eq!(parse_since("all"), Ok(Since::All));
        assert_eq!(
            parse_since("24h"),
            Ok(Since::Ago(Duration::from_secs(86_400)))
        );
        assert_eq!(
            parse_since("2026-11-29T00:00:00Z"),
            Ok(Since::At("2026-11-29T00:00:00Z".into()))
        );
        assert!(parse_since("yesterday")
            .unwrap_err()
            .contains("--since takes all"));
        assert!(parse_since("12x").is_err());
    }

    #[test]
    fn refusals_are_permanent() {
        for code in [400, 401, 403, 404, 410, 422] {
            assert!(permanent_status(code), "{code}");
        }
        for code in [408, 429, 500, 502, 503, 200] {
            assert!(!permanent_status(code), "{code}");
        }
    }
}
