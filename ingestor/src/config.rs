//! Ingest configuration: a TOML file (what to ingest) plus the environment (secrets, site).

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::Path;

pub use crate::sources::datadog::{DatadogSection, EventsSection, MetricQuery};
pub use crate::sources::prometheus::PrometheusSection;

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
    /// `[prometheus]`: `coherence-ingest prometheus`.
    #[serde(default)]
    pub prometheus: Option<PrometheusSection>,
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

impl FileConfig {
    pub fn load(path: &Path) -> Result<FileConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let cfg: FileConfig = toml::from_str(&text)
            .with_context(|| format!("invalid config file {}", path.display()))?;
        if cfg.metrics.is_empty()
            && cfg.events.is_none()
            && cfg.alert.is_none()
            && cfg.prometheus.is_none()
        {
            bail!(
                "{}: nothing to do: add [[metrics]] entries, an [events] section, a [prometheus] section or an [alert] section",
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
        if let Some(p) = &cfg.prometheus {
            p.validate()
                .with_context(|| format!("{}: [prometheus]", path.display()))?;
        }
        Ok(cfg)
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
