//! The Prometheus source of `coherence-ingest prometheus`: its config section, its parser, and
//! how one chunk of one query is fetched (`GET /api/v1/query_range`). Works with any server that
//! speaks Prometheus' HTTP API (Prometheus, Thanos, Mimir, VictoriaMetrics).
//!
//! * Each `[[prometheus.queries]]` entry is a feed: a PromQL expression and the metric name it is
//!   stored under. Every series of the answer is its own series in `coherence.metrics`: its host
//!   is the value of `host_label` (default `instance`), its other labels (except `__name__`)
//!   are kept in the canonical form `name{cpu="0",job="node"}`.
//! * Evaluation times are multiples of `step` since the epoch, so chunks meet exactly and a
//!   re-run asks for the same timestamps (exactly once, with the runtime's cursors).
//! * `NaN` and `±Inf` samples (stale or undefined series) are skipped and counted.

use crate::ingest::http::{Fetcher, HttpError};
use crate::ingest::{
    feed_keys, micros, parse_duration, secs, ChunkError, Feed, Fetched, Rows, RunArgs, Sample,
    Source,
};
use anyhow::{anyhow, bail, Result};
use serde::Deserialize;
use std::time::{Duration, SystemTime};

#[derive(clap::Args, Debug, Clone)]
pub struct PrometheusArgs {
    #[command(flatten)]
    pub run: RunArgs,
}

/// Prometheus answers at most 11,000 points per series and query.
const MAX_POINTS: u64 = 11_000;

/// `[prometheus]` of the config file.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct PrometheusSection {
    /// Base URL of the server, e.g. http://127.0.0.1:9090.
    pub url: String,
    /// Resolution of the range queries, whole seconds (default 15s, Prometheus' usual scrape
    /// interval).
    #[serde(default = "default_step")]
    pub step: String,
    /// The label whose value is a series' host (default `instance`).
    #[serde(default = "default_host_label")]
    pub host_label: String,
    /// Environment variable holding a bearer token, if the server needs one.
    pub bearer_token_env: Option<String>,
    #[serde(default)]
    pub queries: Vec<PromQuery>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct PromQuery {
    /// PromQL, e.g. `100 - avg by (instance) (rate(node_cpu_seconds_total{mode="idle"}[1m])) * 100`.
    pub query: String,
    /// Metric name in coherence.metrics, e.g. `cpu`.
    pub name: String,
    /// Host of series that lack the host label (default `prometheus`).
    pub host: Option<String>,
    /// Stored value = offset + scale · value.
    #[serde(default = "one")]
    pub scale: f64,
    #[serde(default)]
    pub offset: f64,
}

fn default_step() -> String {
    "15s".into()
}
fn default_host_label() -> String {
    "instance".into()
}
fn one() -> f64 {
    1.0
}

impl PrometheusSection {
    pub fn step(&self) -> Result<Duration> {
        let d = parse_duration(&self.step).map_err(|e| anyhow!("step: {e}"))?;
        if d < Duration::from_secs(1) || d.subsec_nanos() != 0 {
            bail!(
                "step must be whole seconds, at least 1s (not {})",
                self.step
            );
        }
        Ok(d)
    }

    pub fn validate(&self) -> Result<()> {
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            bail!(
                "url must start with http:// or https:// (not '{}')",
                self.url
            );
        }
        self.step()?;
        if self.host_label.trim().is_empty() {
            bail!("host_label must not be empty");
        }
        if self.queries.is_empty() {
            bail!("add at least one [[prometheus.queries]] entry (query and name)");
        }
        for q in &self.queries {
            if q.query.trim().is_empty() || q.name.trim().is_empty() {
                bail!("every [[prometheus.queries]] entry needs a non-empty query and name");
            }
            if !q.scale.is_finite() || q.scale == 0.0 || !q.offset.is_finite() {
                bail!(
                    "scale of {} must be a finite non-zero number, offset finite",
                    q.name
                );
            }
        }
        Ok(())
    }
}

// ------------------------------------------------------------------ parsing

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    error: Option<String>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    data: Option<Data>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: Vec<Series>,
}

#[derive(Deserialize)]
struct Series {
    metric: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    values: Vec<(f64, String)>,
}

/// A parsed `query_range` answer.
#[derive(Debug, Default, PartialEq)]
pub struct Matrix {
    pub series: usize,
    pub points: Vec<Sample>,
    pub skipped: u64,
}

pub fn parse_matrix(body: &[u8], q: &PromQuery, host_label: &str) -> Result<Matrix> {
    let a: Answer =
        serde_json::from_slice(body).map_err(|e| anyhow!("malformed JSON from Prometheus: {e}"))?;
    if a.status != "success" {
        bail!(
            "Prometheus query failed: {} {}",
            a.error_type.unwrap_or_default(),
            a.error.unwrap_or_default()
        );
    }
    let data = a
        .data
        .ok_or_else(|| anyhow!("unexpected Prometheus answer: no data"))?;
    if data.result_type != "matrix" {
        bail!(
            "unexpected Prometheus answer: resultType {} (a range query answers a matrix)",
            data.result_type
        );
    }
    let mut out = Matrix {
        series: data.result.len(),
        ..Default::default()
    };
    // `__name__` is the configured name's business, unless the answer's series differ by it
    // (e.g. {__name__=~"a|b"}): then it stays a label, so they do not collapse into one.
    let names: std::collections::BTreeSet<&String> = data
        .result
        .iter()
        .filter_map(|s| s.metric.get("__name__"))
        .collect();
    let keep_name = names.len() > 1;
    for s in &data.result {
        let host = s
            .metric
            .get(host_label)
            .filter(|h| !h.is_empty())
            .cloned()
            .or_else(|| q.host.clone())
            .unwrap_or_else(|| "prometheus".into());
        let labels: Vec<(&str, &str)> = s
            .metric
            .iter()
            .filter(|(k, _)| (keep_name || k.as_str() != "__name__") && k.as_str() != host_label)
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let metric = coherence_core::series::series_key(&q.name, &labels);
        for (t, v) in &s.values {
            let ts_us = (*t * 1e6).round();
            if !ts_us.is_finite() || ts_us.abs() > 9.0e18 {
                bail!("unexpected Prometheus answer: sample time {t} out of range");
            }
            match v.trim().parse::<f64>() {
                Ok(x) if x.is_finite() => out.points.push(Sample {
                    host: host.clone(),
                    metric: metric.clone(),
                    ts_us: ts_us as i64,
                    value: q.offset + q.scale * x,
                }),
                _ => out.skipped += 1,
            }
        }
    }
    Ok(out)
}

/// The `error` of a refused query's JSON body, else the body.
fn refusal(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
        .unwrap_or_else(|| body.to_string())
}

// ------------------------------------------------------------------ the source

pub struct Prometheus {
    pub section: PrometheusSection,
    pub step: Duration,
    pub token: Option<String>,
}

impl Source for Prometheus {
    const NAME: &'static str = "prometheus";

    fn feeds(&self) -> Vec<Feed> {
        let qs = &self.section.queries;
        let keys = feed_keys(qs.iter().map(|q| (q.query.as_str(), q.name.as_str())));
        qs.iter()
            .zip(keys)
            .enumerate()
            .map(|(index, (q, key))| Feed {
                cursor_source: "prometheus",
                key,
                label: q.name.clone(),
                index,
                align: Some(self.step),
            })
            .collect()
    }

    fn default_delay(&self) -> Duration {
        Duration::from_secs(30)
    }

    async fn fetch(
        &self,
        http: &Fetcher,
        feed: &Feed,
        a: SystemTime,
        b: SystemTime,
    ) -> Result<Fetched, ChunkError> {
        let q = &self.section.queries[feed.index];
        let step = self.step.as_secs() as i64;
        // Evaluation times a, a + step, ... < b (a and b are multiples of step).
        let end = (secs(b) - step).max(secs(a));
        let params = [
            ("query", q.query.clone()),
            ("start", secs(a).to_string()),
            ("end", end.to_string()),
            ("step", step.to_string()),
        ];
        let url = format!(
            "{}/api/v1/query_range",
            self.section.url.trim_end_matches('/')
        );
        let what = format!("query {} ({})", q.name, q.query);
        let body = http
            .get(&what, |c| {
                let r = c
                    .get(&url)
                    .query(&params)
                    .header("Accept", "application/json");
                match &self.token {
                    Some(t) => r.bearer_auth(t),
                    None => r,
                }
            })
            .await
            .map_err(|e| match e {
                HttpError::Refused {
                    status: s @ (401 | 403),
                    ..
                } => ChunkError::Auth(anyhow!(
                    "Prometheus refused the request ({s}): check bearer_token_env in [prometheus]"
                )),
                // 422: the query failed on this range (too many samples, duplicate label sets):
                // the chunk's trouble, tried again and then skipped like unusable data.
                HttpError::Refused { status: 422, body } => ChunkError::Data(anyhow!(
                    "{what}: Prometheus could not evaluate the query on this range (HTTP 422): {}",
                    refusal(&body)
                )),
                HttpError::Refused { status, body } => ChunkError::Refused(anyhow!(
                    "{what}: Prometheus refused the query (HTTP {status}): {}",
                    refusal(&body)
                )),
                e => ChunkError::from_http(e, &what),
            })?;
        let m = parse_matrix(&body, q, &self.section.host_label)
            .map_err(|e| ChunkError::Data(e.context(what)))?;
        let (lo, hi) = (micros(a), micros(b));
        let points = m
            .points
            .into_iter()
            .filter(|p| p.ts_us >= lo && p.ts_us < hi)
            .collect();
        Ok(Fetched {
            rows: Rows::Samples(points),
            series: m.series,
            skipped_values: m.skipped,
        })
    }
}

pub async fn run(url: Option<&str>, args: PrometheusArgs) -> Result<std::process::ExitCode> {
    let cfg = crate::config::FileConfig::load(&args.run.config)?;
    let Some(section) = cfg.prometheus else {
        bail!(
            "{}: no [prometheus] section (url and [[prometheus.queries]])",
            args.run.config.display()
        );
    };
    let step = section.step()?;
    let chunk = args.run.chunk;
    #[allow(clippy::manual_is_multiple_of)] // is_multiple_of is newer than our rust-version 1.85
    let misaligned = chunk.as_secs() % step.as_secs() != 0 || chunk.subsec_nanos() != 0;
    if misaligned {
        bail!(
            "--chunk ({}s) must be a multiple of the step ({}s)",
            chunk.as_secs_f64(),
            step.as_secs()
        );
    }
    if chunk.as_secs() / step.as_secs() > MAX_POINTS {
        bail!(
            "--chunk holds more than {MAX_POINTS} steps of {}s (Prometheus' limit per query): use a shorter --chunk",
            step.as_secs()
        );
    }
    let token = match &section.bearer_token_env {
        Some(var) => Some(
            std::env::var(var)
                .ok()
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| anyhow!("{var} is not set (bearer_token_env of [prometheus])"))?,
        ),
        None => None,
    };
    let source = Prometheus {
        section,
        step,
        token,
    };
    crate::ingest::run(url, &args.run, &source).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(name: &str) -> PromQuery {
        PromQuery {
            query: "up".into(),
            name: name.into(),
            host: None,
            scale: 1.0,
            offset: 0.0,
        }
    }

    #[test]
    fn a_matrix_keeps_every_series_apart_with_its_labels() {
        let body = br#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{"__name__":"node_cpu_seconds_total","cpu":"0","instance":"127.0.0.1:9100","job":"node","mode":"idle"},"values":[[1700000000,"0.5"],[1700000015.5,"0.25"]]},
            {"metric":{"cpu":"1","instance":"127.0.0.1:9100","job":"node","mode":"idle"},"values":[[1700000000,"0.75"]]}]}}"#;
        let m = parse_matrix(body, &q("cpu_idle"), "instance").unwrap();
        assert_eq!((m.series, m.points.len(), m.skipped), (2, 3, 0));
        assert_eq!(m.points[0].host, "127.0.0.1:9100");
        assert_eq!(
            m.points[0].metric,
            r#"cpu_idle{cpu="0",job="node",mode="idle"}"#
        );
        assert_eq!(
            m.points[2].metric,
            r#"cpu_idle{cpu="1",job="node",mode="idle"}"#
        );
        assert_eq!(m.points[1].ts_us, 1_700_000_015_500_000);
        assert_eq!(m.points[1].value, 0.25);
    }

    #[test]
    fn series_that_differ_only_by_name_keep_it_as_a_label() {
        let body = br#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{"__name__":"node_memory_Cached_bytes","instance":"h"},"values":[[1,"1"]]},
            {"metric":{"__name__":"node_memory_MemFree_bytes","instance":"h"},"values":[[1,"2"]]}]}}"#;
        let m = parse_matrix(body, &q("mem"), "instance").unwrap();
        assert_eq!(
            m.points[0].metric,
            r#"mem{__name__="node_memory_Cached_bytes"}"#
        );
        assert_eq!(
            m.points[1].metric,
            r#"mem{__name__="node_memory_MemFree_bytes"}"#
        );
    }

    #[test]
    fn stale_and_undefined_samples_are_skipped_and_counted() {
        let body = br#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{},"values":[[1,"NaN"],[2,"+Inf"],[3,"-Inf"],[4,"1e3"],[5,"x"]]}]}}"#;
        let m = parse_matrix(body, &q("x"), "instance").unwrap();
        assert_eq!(m.skipped, 4);
        assert_eq!(m.points.len(), 1);
        assert_eq!(
            (m.points[0].host.as_str(), m.points[0].metric.as_str()),
            ("prometheus", "x")
        );
        let mut with_host = q("x");
        with_host.host = Some("db-1".into());
        let m = parse_matrix(body, &with_host, "instance").unwrap();
        assert_eq!(m.points[0].host, "db-1");
    }

    #[test]
    fn errors_and_other_shapes_are_clear() {
        let e = parse_matrix(
            br#"{"status":"error","errorType":"bad_data","error":"parse error at char 3"}"#,
            &q("x"),
            "instance",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("bad_data") && e.contains("parse error"), "{e}");
        let e = parse_matrix(
            br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#,
            &q("x"),
            "instance",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("matrix"), "{e}");
        assert!(parse_matrix(br#"{"status":"succ"#, &q("x"), "instance").is_err());
        assert_eq!(
            refusal(r#"{"status":"error","error":"unknown function"}"#),
            "unknown function"
        );
        assert_eq!(refusal("plain"), "plain");
    }

    #[test]
    fn the_section_is_validated() {
        let mut s = PrometheusSection {
            url: "http://127.0.0.1:9090".into(),
            step: "15s".into(),
            host_label: "instance".into(),
            bearer_token_env: None,
            queries: vec![q("up")],
        };
        assert!(s.validate().is_ok());
        assert_eq!(s.step().unwrap(), Duration::from_secs(15));
        s.step = "500ms".into();
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("whole seconds"));
        s.step = "15s".into();
        s.url = "127.0.0.1:9090".into();
        assert!(s.validate().unwrap_err().to_string().contains("http://"));
        s.url = "http://x".into();
        s.queries.clear();
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("[[prometheus.queries]]"));
    }
}
