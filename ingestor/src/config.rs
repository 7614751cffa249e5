//! Ingest configuration: a TOML file (what to ingest) plus the environment (secrets, site).

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::Path;

/// The TOML file. See `ingestor/coherence.example.toml`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub datadog: DatadogSection,
    #[serde(default)]
    pub metrics: Vec<MetricQuery>,
    #[serde(default)]
    pub events: Option<EventsSection>,
    #[serde(default)]
    pub alert: Option<AlertSection>,
}

/// `[alert]`: where `coherence-ingest alert` delivers incidents. Secrets (webhook URLs,
/// routing keys) are read from the environment variables named here.
#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct AlertSection {
    /// Deliver incidents whose risk is at least this (default 0.8, the seed's rule).
    pub min_risk: Option<f64>,
    /// Link to an incident in messages; `{id}` is replaced by the incident id.
    pub link: Option<String>,
    #[serde(default)]
    pub slack: Vec<SlackDestination>,
    #[serde(default)]
    pub pagerduty: Vec<PagerDutyDestination>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct SlackDestination {
    /// Name in coherence.alert_deliveries.destination.
    pub name: String,
    /// Environment variable holding the incoming-webhook URL.
    pub webhook_url_env: String,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct PagerDutyDestination {
    pub name: String,
    /// Environment variable holding the Events API v2 routing (integration) key.
    pub routing_key_env: String,
}

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

impl FileConfig {
    pub fn load(path: &Path) -> Result<FileConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let cfg: FileConfig = toml::from_str(&text)
            .with_context(|| format!("invalid config file {}", path.display()))?;
        if cfg.metrics.is_empty() && cfg.events.is_none() && cfg.alert.is_none() {
            bail!(
                "{}: nothing to do: add [[metrics]] entries, an [events] section or an [alert] section",
                path.display()
            );
        }
        if let Some(a) = &cfg.alert {
            if let Some(r) = a.min_risk {
                if !(0.0..=1.0).contains(&r) {
                    bail!(
                        "{}: [alert] min_risk must be between 0 and 1",
                        path.display()
                    );
                }
            }
            let mut names: Vec<&str> = a
                .slack
                .iter()
                .map(|d| d.name.as_str())
                .chain(a.pagerduty.iter().map(|d| d.name.as_str()))
                .collect();
            let n = names.len();
            names.sort_unstable();
            names.dedup();
            if names.len() != n || names.iter().any(|s| s.trim().is_empty()) {
                bail!(
                    "{}: [alert] destinations need unique, non-empty names",
                    path.display()
                );
            }
        }
        for m in &cfg.metrics {
            if m.query.trim().is_empty() || m.name.trim().is_empty() {
                bail!(
                    "{}: every [[metrics]] entry needs a non-empty query and name",
                    path.display()
                );
            }
            if !m.scale.is_finite() || m.scale == 0.0 || !m.offset.is_finite() {
                bail!(
                    "{}: scale of {} must be a finite non-zero number, offset finite",
                    path.display(),
                    m.name
                );
            }
        }
        Ok(cfg)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("coherence.example.toml");
        let cfg = FileConfig::load(&p).unwrap();
        let names: Vec<&str> = cfg.metrics.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["cpu", "memory", "disk"]);
        assert!(cfg.events.is_some());
        let a = cfg.alert.unwrap();
        assert_eq!(
            (a.min_risk, a.slack.len(), a.pagerduty.len()),
            (Some(0.8), 1, 1)
        );
    }

    #[test]
    fn bad_configs_are_clear_errors() {
        let dir = std::env::temp_dir().join(format!("coh-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let e = FileConfig::load(&write("empty.toml", ""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("nothing to do"), "{e}");
        let e = format!(
            "{:#}",
            FileConfig::load(&write("typo.toml", "[[metric]]\nquery='x'\nname='y'\n")).unwrap_err()
        );
        assert!(e.contains("unknown field") || e.contains("metric"), "{e}");
        let e = FileConfig::load(&write("blank.toml", "[[metrics]]\nquery=''\nname='cpu'\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("non-empty"), "{e}");
        assert!(FileConfig::load(&dir.join("missing.toml")).is_err());
    }
}
