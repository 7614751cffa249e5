//! The Datadog source of `coherence-ingest datadog`: its config section, its parsers, and
//! how one chunk of one feed is fetched. The runtime (`crate::ingest`) does the rest.
//!
//! * Metrics: `GET /api/v1/query?from&to&query` per configured query and time chunk. A series'
//!   host is its `host:` tag (or the `host:` part of its scope, or the scope); its other
//!   group-by tags (`tag_set`, e.g. `device:sda` of a query `by {host,device}`) become labels of
//!   the series, so `system.disk.in_use{device="sda"}` and `{device="sdb"}` stay two series.
//!   Null, NaN and non-numeric points are skipped and counted; timestamps may be JSON floats.
//! * Events: `GET /api/v1/events?start&end` per chunk (a chunk with 1,000 events, the API's
//!   page size, is split in halves); severity from `alert_type`, the exact 64-bit id
//!   (`id_str`) as `source_id`.
//! * 401/403 end the command with a message naming the variables to fix; a refused query (any
//!   other 4xx) makes only its feed fail. Read-only towards Datadog: only GET requests.

use crate::ingest::http::{Fetcher, HttpError};
use crate::ingest::{
    feed_keys, secs, ChunkError, Event, Feed, Fetched, Rows, RunArgs, Sample, Source,
};
use anyhow::{anyhow, bail, Result};
use serde::Deserialize;
use serde_json::Value;
use std::time::{Duration, SystemTime};

#[derive(clap::Args, Debug, Clone)]
pub struct DatadogArgs {
    #[command(flatten)]
    pub run: RunArgs,

    /// Tests only: Datadog base URL (refused unless COHERENCE_ALLOW_TEST_BASE_URL=1).
    #[arg(long, hide = true, env = "COHERENCE_DD_BASE_URL")]
    pub base_url: Option<String>,
}

// ------------------------------------------------------------------ config

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DatadogSection {
    /// Datadog site, e.g. datadoghq.com, us5.datadoghq.com, datadoghq.eu (DD_SITE wins).
    pub site: Option<String>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct MetricQuery {
    /// Datadog metric query, e.g. `avg:system.cpu.user{*} by {host}`.
    pub query: String,
    /// Metric name in coherence.metrics, e.g. `cpu`.
    pub name: String,
    /// Stored value = offset + scale · Datadog value (e.g. scale 100 turns a 0..1 ratio into
    /// percent; scale -100, offset 100 turns "usable ratio" into "used percent").
    #[serde(default = "one")]
    pub scale: f64,
    #[serde(default)]
    pub offset: f64,
}

fn one() -> f64 {
    1.0
}

#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct EventsSection {
    /// Comma-separated tags filter (`tags=` of GET /api/v1/events), e.g. `env:prod`.
    pub tags: Option<String>,
    /// Comma-separated sources filter (`sources=`).
    pub sources: Option<String>,
    /// Datadog priority filter: normal or low.
    pub priority: Option<String>,
}

impl EventsSection {
    /// The cursor key of the events feed.
    pub fn key(&self) -> String {
        format!(
            "events tags={} sources={} priority={}",
            self.tags.as_deref().unwrap_or(""),
            self.sources.as_deref().unwrap_or(""),
            self.priority.as_deref().unwrap_or("")
        )
    }
}

/// Datadog credentials and endpoint. Keys are never printed (no Debug derive).
pub struct Credentials {
    pub api_key: String,
    pub app_key: String,
    pub base_url: String,
}

/// First set variable among `names`, with its name.
fn env_any(names: &[&str]) -> Option<(String, String)> {
    names.iter().find_map(|n| {
        std::env::var(n)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .map(|v| (n.to_string(), v))
    })
}

impl Credentials {
    /// From DD_API_KEY / DD_APP_KEY / DD_SITE (or the seed's DATADOG_* names), the config file's
    /// site, and a test-only base URL override.
    pub fn from_env(
        file_site: Option<&str>,
        base_url_override: Option<&str>,
    ) -> Result<Credentials> {
        let Some((_, api_key)) = env_any(&["DD_API_KEY", "DATADOG_API_KEY"]) else {
            bail!("DD_API_KEY is not set (the Datadog API key; DATADOG_API_KEY is accepted too)");
        };
        let Some((_, app_key)) = env_any(&["DD_APP_KEY", "DATADOG_APP_KEY"]) else {
            bail!("DD_APP_KEY is not set (the Datadog application key; DATADOG_APP_KEY is accepted too)");
        };
        let site = env_any(&["DD_SITE", "DATADOG_SITE"])
            .map(|(_, v)| v)
            .or_else(|| file_site.map(str::to_string))
            .unwrap_or_else(|| "datadoghq.com".into());
        let site = site
            .trim()
            .trim_start_matches("https://")
            .trim_start_matches("api.")
            .trim_end_matches('/');
        if site.is_empty()
            || !site
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        {
            bail!("DD_SITE must be a Datadog site such as datadoghq.com or us5.datadoghq.com");
        }
        let base_url = match base_url_override {
            Some(url) => {
                if std::env::var("COHERENCE_ALLOW_TEST_BASE_URL")
                    .ok()
                    .as_deref()
                    != Some("1")
                {
                    bail!(
                        "--base-url is for tests only: set COHERENCE_ALLOW_TEST_BASE_URL=1 to allow it \
                         (production uses https://api.<DD_SITE>)"
                    );
                }
                url.trim_end_matches('/').to_string()
            }
            None => format!("https://api.{site}"),
        };
        Ok(Credentials {
            api_key,
            app_key,
            base_url,
        })
    }
}

// ------------------------------------------------------------------ parsing

/// Parsed `/api/v1/query` body.
#[derive(Debug, Default, PartialEq)]
pub struct MetricsBody {
    pub series: usize,
    pub points: Vec<Sample>,
    /// Null, NaN, infinite or non-numeric values, skipped.
    pub skipped: u64,
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

/// Labels of a series: its group-by tags (`tag_set`) other than `host:`; `key:value` or a bare
/// `key` (empty value).
fn series_labels(s: &Value) -> Vec<(&str, &str)> {
    s.get("tag_set")
        .and_then(Value::as_array)
        .map(|tags| {
            tags.iter()
                .filter_map(Value::as_str)
                .filter(|t| !t.starts_with("host:"))
                .map(|t| t.split_once(':').unwrap_or((t, "")))
                .collect()
        })
        .unwrap_or_default()
}

/// A point value: a JSON number, or a string holding one (as some proxies re-encode them).
fn point_value(v: &Value) -> Option<f64> {
    let x = match v {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    x.is_finite().then_some(x)
}

pub fn parse_metrics(body: &[u8], q: &MetricQuery) -> Result<MetricsBody> {
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
        let metric = coherence_core::series::series_key(&q.name, &series_labels(s));
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
            let ts_us = (ms * 1000.0).round();
            if !ts_us.is_finite() || ts_us.abs() > 9.0e18 {
                return Err(shape("point time out of range"));
            }
            match point_value(&pair[1]) {
                Some(x) => out.points.push(Sample {
                    host: host.clone(),
                    metric: metric.clone(),
                    ts_us: ts_us as i64,
                    value: q.offset + q.scale * x,
                }),
                None => out.skipped += 1,
            }
        }
    }
    Ok(out)
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

// ------------------------------------------------------------------ the source

pub struct Datadog {
    pub creds: Credentials,
    pub metrics: Vec<MetricQuery>,
    pub events: Option<EventsSection>,
}

impl Datadog {
    async fn get(
        &self,
        http: &Fetcher,
        path: &str,
        params: &[(&str, String)],
        what: &str,
    ) -> Result<Vec<u8>, ChunkError> {
        let url = format!("{}{}", self.creds.base_url, path);
        http.get(what, |c| {
            c.get(&url)
                .query(params)
                .header("DD-API-KEY", &self.creds.api_key)
                .header("DD-APPLICATION-KEY", &self.creds.app_key)
                .header("Accept", "application/json")
        })
        .await
        .map_err(|e| match e {
            HttpError::Refused {
                status: s @ (401 | 403),
                ..
            } => ChunkError::Auth(anyhow!(
                "Datadog refused the credentials ({s}): check DD_API_KEY and DD_APP_KEY \
                 (or DATADOG_API_KEY/DATADOG_APP_KEY) and that DD_SITE ({}) is your account's site",
                self.creds.base_url.trim_start_matches("https://api.")
            )),
            e => ChunkError::from_http(e, what),
        })
    }

    async fn fetch_metrics(
        &self,
        http: &Fetcher,
        q: &MetricQuery,
        a: SystemTime,
        b: SystemTime,
    ) -> Result<Fetched, ChunkError> {
        // `to` is inclusive in the API: ask up to the second before the chunk's end.
        let params = [
            ("from", secs(a).to_string()),
            ("to", (secs(b) - 1).max(secs(a)).to_string()),
            ("query", q.query.clone()),
        ];
        let what = format!("metric {} ({})", q.name, q.query);
        let body = self.get(http, "/api/v1/query", &params, &what).await?;
        let parsed = parse_metrics(&body, q).map_err(|e| ChunkError::Data(e.context(what)))?;
        // Only points inside the chunk (the API may round the range outwards).
        let (lo, hi) = (secs(a) * 1_000_000, secs(b) * 1_000_000);
        let points = parsed
            .points
            .into_iter()
            .filter(|p| p.ts_us >= lo && p.ts_us < hi)
            .collect();
        Ok(Fetched {
            rows: Rows::Samples(points),
            series: parsed.series,
            skipped_values: parsed.skipped,
        })
    }

    /// Events of [a, b); splits the range while a page is full (1,000 events).
    async fn fetch_events(
        &self,
        http: &Fetcher,
        ev: &EventsSection,
        a: SystemTime,
        b: SystemTime,
    ) -> Result<Fetched, ChunkError> {
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
            let body = self.get(http, "/api/v1/events", &params, "events").await?;
            let events = parse_events(&body).map_err(|e| ChunkError::Data(e.context("events")))?;
            let span = secs(y) - secs(x);
            if events.len() >= 1000 && span > 1 {
                let mid = x + Duration::from_secs((span / 2) as u64);
                stack.push((mid, y));
                stack.push((x, mid));
                continue;
            }
            if events.len() >= 1000 {
                // A full page for one second cannot be split further: the API's page is all
                // there is to get for it.
                tracing::warn!(
                    second = secs(x),
                    events = events.len(),
                    "a full page of events within one second: events beyond Datadog's page of 1,000 are not retrievable and are missing"
                );
            }
            let (lo, hi) = (secs(x) * 1_000_000, secs(y) * 1_000_000);
            out.extend(events.into_iter().filter(|e| e.ts_us >= lo && e.ts_us < hi));
        }
        Ok(Fetched {
            rows: Rows::Events(out),
            series: 0,
            skipped_values: 0,
        })
    }
}

impl Source for Datadog {
    const NAME: &'static str = "datadog";

    fn feeds(&self) -> Vec<Feed> {
        let keys = feed_keys(
            self.metrics
                .iter()
                .map(|q| (q.query.as_str(), q.name.as_str())),
        );
        let mut feeds: Vec<Feed> = self
            .metrics
            .iter()
            .zip(keys)
            .enumerate()
            .map(|(index, (q, key))| Feed {
                cursor_source: "datadog-metrics",
                key,
                label: q.name.clone(),
                index,
                align: None,
            })
            .collect();
        if let Some(ev) = &self.events {
            feeds.push(Feed {
                cursor_source: "datadog-events",
                key: ev.key(),
                label: "events".into(),
                index: usize::MAX,
                align: None,
            });
        }
        feeds
    }

    fn default_delay(&self) -> Duration {
        Duration::from_secs(120)
    }

    async fn fetch(
        &self,
        http: &Fetcher,
        feed: &Feed,
        a: SystemTime,
        b: SystemTime,
    ) -> Result<Fetched, ChunkError> {
        match self.metrics.get(feed.index) {
            Some(q) => self.fetch_metrics(http, q, a, b).await,
            None => match &self.events {
                Some(ev) => self.fetch_events(http, ev, a, b).await,
                None => Err(ChunkError::Fatal(anyhow!("no such feed: {}", feed.key))),
            },
        }
    }
}

pub async fn run(url: Option<&str>, args: DatadogArgs) -> Result<std::process::ExitCode> {
    let cfg = crate::config::FileConfig::load(&args.run.config)?;
    if cfg.metrics.is_empty() && cfg.events.is_none() {
        bail!(
            "{}: no Datadog feeds: add [[metrics]] entries or an [events] section",
            args.run.config.display()
        );
    }
    let creds = Credentials::from_env(cfg.datadog.site.as_deref(), args.base_url.as_deref())?;
    let source = Datadog {
        creds,
        metrics: cfg.metrics,
        events: cfg.events,
    };
    crate::ingest::run(url, &args.run, &source).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(name: &str, scale: f64, offset: f64) -> MetricQuery {
        MetricQuery {
            query: "avg:x{*}".into(),
            name: name.into(),
            scale,
            offset,
        }
    }

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/tests/fixtures/datadog/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    #[test]
    fn parses_recorded_single_series() {
        let m = parse_metrics(
            &fixture("v1_query_single_series_288pts.json"),
            &q("cpu", 1.0, 0.0),
        )
        .unwrap();
        assert_eq!((m.series, m.points.len(), m.skipped), (1, 288, 0));
        assert_eq!(
            m.points[0],
            Sample {
                host: "*".into(),
                metric: "cpu".into(),
                ts_us: 1_641_344_100_000_000,
                value: 91.4583840476142
            }
        );
    }

    #[test]
    fn parses_float_timestamps_and_host_tags() {
        let m = parse_metrics(
            &fixture("v1_query_group_by_host_float_ts.json"),
            &q("cpu", 1.0, 0.0),
        )
        .unwrap();
        assert_eq!(m.points.len(), 2);
        assert_eq!(m.points[0].host, "go-client-test-host");
        assert_eq!(m.points[0].ts_us, 1_618_221_135_000_000);
        assert_eq!(m.points[1].value, 11.0);
    }

    #[test]
    fn nulls_skipped_and_scale_applied() {
        let body = br#"{"status":"ok","series":[{"scope":"env:prod,host:web-1","tag_set":[],"pointlist":[[1000,0.5],[2000,null],[3000.0,0.25]]}]}"#;
        let m = parse_metrics(body, &q("memory", -100.0, 100.0)).unwrap();
        assert_eq!(m.skipped, 1);
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
        let e = parse_metrics(&full[..full.len() / 2], &q("x", 1.0, 0.0))
            .unwrap_err()
            .to_string();
        assert!(e.contains("malformed JSON"), "{e}");
        let e = parse_metrics(br#"{"status":"ok"}"#, &q("x", 1.0, 0.0))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unexpected Datadog response shape"), "{e}");
        assert!(parse_metrics(br#"{"series":[{"pointlist":[[1]]}]}"#, &q("x", 1.0, 0.0)).is_err());
        assert!(parse_metrics(
            br#"{"status":"error","error":"bad query"}"#,
            &q("x", 1.0, 0.0)
        )
        .is_err());
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
    fn non_numeric_values_are_skipped_and_counted_not_fatal() {
        let body = br#"{"status":"ok","series":[{"scope":"host:web-1","tag_set":["host:web-1"],"pointlist":[[1000,"NaN"],[2000,"x"],[3000,"2.5"],[4000,7],[5000,{}]]}]}"#;
        let m = parse_metrics(body, &q("cpu", 1.0, 0.0)).unwrap();
        assert_eq!(m.skipped, 3);
        assert_eq!(
            m.points.iter().map(|p| p.value).collect::<Vec<_>>(),
            [2.5, 7.0]
        );
    }

    #[test]
    fn group_by_tags_become_labels_so_devices_stay_apart() {
        let body = br#"{"status":"ok","series":[
            {"scope":"device:sda,host:db-1","tag_set":["device:sda","host:db-1"],"pointlist":[[1000,1]]},
            {"scope":"device:sdb,host:db-1","tag_set":["host:db-1","device:sdb"],"pointlist":[[1000,2]]}]}"#;
        let m = parse_metrics(body, &q("disk", 1.0, 0.0)).unwrap();
        let got: Vec<(&str, &str)> = m
            .points
            .iter()
            .map(|p| (p.host.as_str(), p.metric.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("db-1", "disk{device=\"sda\"}"),
                ("db-1", "disk{device=\"sdb\"}")
            ]
        );
        // A query grouped by host only keeps the bare name, as before labels existed.
        let m = parse_metrics(
            &fixture("v1_query_group_by_host_float_ts.json"),
            &q("cpu", 1.0, 0.0),
        )
        .unwrap();
        assert!(m.points.iter().all(|p| p.metric == "cpu"));
    }
}
