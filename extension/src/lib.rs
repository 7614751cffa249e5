//! Coherence: anomaly detection and incident correlation inside PostgreSQL.
//!
//! This crate is thin glue: the algorithms live in `coherence-core` (no pgrx dependency) and
//! are exposed here as SQL functions and aggregates in schema `coherence`. The tables, types
//! and SQL-language functions live in `sql/*.sql` at the repository root.

use pgrx::prelude::*;

::pgrx::pg_module_magic!(name, version);

mod aggregates;
mod correlate;
mod errors;
mod events;
mod points;
mod series;

extension_sql_file!("../../sql/schema.sql", name = "schema", bootstrap);

/// The extension's version (the crate version), e.g. for support tickets and upgrade checks.
#[pg_extern(stable, strict, parallel_safe)]
fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

extension_sql_file!(
    "../../sql/operations.sql",
    name = "operations",
    requires = [
        "schema",
        events::catalogue::default_settings,
        events::catalogue::metric_capacity_sql,
        series::series_name_sql,
        series::series_labels_sql
    ]
);
extension_sql_file!(
    "../../sql/partitions.sql",
    name = "partitions",
    requires = ["schema"]
);
extension_sql_file!(
    "../../sql/functions.sql",
    name = "functions",
    requires = [
        "aggregates",
        "points_aggregate",
        "operations",
        events::nodata::series_cadence,
        events::nodata::no_data_event,
        events::nodata::series_silent,
        events::collective::involved_metrics,
        events::series_band,
        version,
        events::series_events,
        events::find_events_v4,
        events::find_events_points,
        events::collective::find_collective,
        events::collective::find_collective_points,
        events::series_period,
        events::catalogue::anomaly_kinds,
        events::catalogue::default_min_risk,
        events::catalogue::metric_capacity_sql,
        events::catalogue::metric_unit_sql,
        events::series_trend_event,
        events::series_volatility_events,
        series::series_name_sql,
        series::series_labels_sql
    ]
);
extension_sql_file!("../../sql/incidents.sql", name = "incidents", finalize);

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    fn one_f64(q: &str) -> Option<f64> {
        Spi::get_one::<f64>(q).expect("query failed")
    }

    #[pg_test]
    fn version_matches_crate() {
        assert_eq!(crate::version(), env!("CARGO_PKG_VERSION"));
    }

    #[pg_test]
    fn variance_escalation_closed_form() {
        // First window 1,3 (var 2), last window 0,4,8 (var 16): ratio 8.
        let r = one_f64(
            "SELECT (coherence.variance_escalation(ts, v)).ratio FROM (VALUES
               ('2025-01-01 00:00Z'::timestamptz, 1.0::float8), ('2025-01-01 00:01Z', 3.0),
               ('2025-01-01 08:00Z', 0.0), ('2025-01-01 08:01Z', 4.0), ('2025-01-01 08:02Z', 8.0)
             ) t(ts, v)",
        );
        assert_eq!(r, Some(8.0));
    }

    #[pg_test]
    fn trend_closed_form() {
        let pct = one_f64(
            "SELECT (coherence.trend(ts, v)).pct_change FROM (
               SELECT '2025-01-01'::timestamptz + i * interval '1 hour' AS ts, 40.0 + i AS v
               FROM generate_series(0, 50) i) s",
        )
        .unwrap();
        assert!((pct - 125.0).abs() < 1e-9, "{pct}");
    }

    #[pg_test]
    fn spikes_null_and_nan_are_skipped() {
        let skipped = Spi::get_one::<i64>(
            "SELECT (coherence.spikes(ts, v)).skipped FROM (VALUES
               ('2025-01-01'::timestamptz, 'NaN'::float8), ('2025-01-01', NULL),
               (NULL, 1.0), ('2025-01-02', 'Infinity'), ('2025-01-03', 2.0)) t(ts, v)",
        )
        .unwrap();
        assert_eq!(skipped, Some(4));
    }

    #[pg_test]
    fn empty_input_gives_null() {
        let r = Spi::get_one::<bool>(
            "SELECT coherence.trend(now(), 1.0::float8) IS NULL FROM generate_series(1, 0)",
        )
        .unwrap();
        assert_eq!(r, Some(true));
    }

    #[pg_test]
    fn series_name_and_labels_of_a_key() {
        let name = Spi::get_one::<String>(
            r#"SELECT coherence.series_name('disk.used{device="sda",mount="/"}')"#,
        )
        .unwrap();
        assert_eq!(name.as_deref(), Some("disk.used"));
        let labels = Spi::get_one::<String>(
            r#"SELECT coherence.series_labels('disk.used{device="sda",mount="/"}')::text"#,
        )
        .unwrap();
        assert_eq!(
            labels.as_deref(),
            Some(r#"{"mount": "/", "device": "sda"}"#)
        );
        let none = Spi::get_one::<String>("SELECT coherence.series_labels('cpu')::text").unwrap();
        assert_eq!(none.as_deref(), Some("{}"));
    }

    #[pg_test(error = "spike threshold (sigmas) must be a finite number greater than 0")]
    fn bad_parameter_is_an_error() {
        Spi::run("SELECT coherence.spikes(now(), 1.0::float8, -1.0)").unwrap();
    }
}

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
