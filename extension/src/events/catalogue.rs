//! The facts SQL reads from the core: anomaly kinds, the default risk floor, the percent rule
//! (capacity and unit) and the detectors' default settings.

use super::*;

/// Every anomaly kind with its detector and meaning (one place: the core's `Kind`).
#[allow(clippy::type_complexity)]
#[pg_extern(immutable, parallel_safe)]
fn anomaly_kinds() -> TableIterator<
    'static,
    (
        name!(kind, &'static str),
        name!(detector, &'static str),
        name!(description, &'static str),
    ),
> {
    TableIterator::new(
        Kind::ALL
            .iter()
            .map(|k| (k.as_str(), k.detector(), k.description())),
    )
}

/// The risk below which events are not reported by default (the core's `min_risk`).
#[pg_extern(immutable, parallel_safe)]
fn default_min_risk() -> f64 {
    EventParams::default().min_risk
}

/// Capacity for time to exhaustion: 100 for percent metrics, else NULL.
#[pg_extern(name = "metric_capacity", immutable, strict, parallel_safe)]
fn metric_capacity_sql(metric: &str) -> Option<f64> {
    metric_capacity(metric)
}

/// Unit suffix of a metric's values: '%' for percent metrics, else ''.
#[pg_extern(name = "metric_unit", immutable, strict, parallel_safe)]
fn metric_unit_sql(metric: &str) -> &'static str {
    metric_unit(metric)
}

/// The settings a series gets where no rule of `coherence.series_rules` sets them: the core's
/// defaults, so `coherence.explain` shows the numbers the detectors use.
#[pg_extern(immutable, parallel_safe)]
fn default_settings() -> TableIterator<'static, (name!(setting, &'static str), name!(value, String))>
{
    let d = EventParams::default();
    let mut detectors: Vec<&str> = Kind::ALL.iter().map(|k| k.detector()).collect();
    detectors.dedup();
    TableIterator::new(vec![
        ("threshold", d.threshold.to_string()),
        ("window_points", d.window.to_string()),
        ("direction", d.direction.to_string()),
        ("min_risk", d.min_risk.to_string()),
        ("capacity", "coherence.metric_capacity(metric)".to_string()),
        ("detectors", format!("{{{}}}", detectors.join(","))),
        ("min_duration", "00:00:00".to_string()),
    ])
}
