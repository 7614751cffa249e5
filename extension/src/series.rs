//! Series keys with labels: `coherence.series_name(metric)` and `coherence.series_labels(metric)`
//! read the base name and the labels of a metric name in Prometheus' canonical text form
//! (`disk.used{device="sda"}`); the parsing lives in `coherence_core::series`.

use coherence_core::series::{parse_series_key, series_name};
use pgrx::prelude::*;
use pgrx::JsonB;

/// The base name of a series key: `disk.used` for `disk.used{device="sda"}`.
#[pg_extern(name = "series_name", immutable, strict, parallel_safe)]
fn series_name_sql(metric: &str) -> &str {
    series_name(metric)
}

/// The labels of a series key as a jsonb object (`{}` without labels).
#[pg_extern(name = "series_labels", immutable, strict, parallel_safe)]
fn series_labels_sql(metric: &str) -> JsonB {
    let (_, labels) = parse_series_key(metric);
    JsonB(serde_json::Value::Object(
        labels
            .into_iter()
            .map(|(k, v)| (k, serde_json::Value::String(v)))
            .collect(),
    ))
}
