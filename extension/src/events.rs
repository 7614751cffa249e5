//! Localized events over one series given as arrays: `coherence.series_events` (every
//! detector, calibrated risk, summary), `coherence.series_period` (the learned period),
//! `coherence.series_trend_event` and `coherence.series_volatility_events` (one detector each),
//! plus the kind catalogue and the percent rule. `coherence.detect_events`
//! (sql/functions.sql) runs `series_events` over every series in the tables.

use crate::errors::invalid_parameter;
use coherence_core::detect::PG_EPOCH_US;
use coherence_core::events::collective::collective_events;
use coherence_core::events::{
    analyze_with, detect_period, metric_capacity, metric_unit, trend_event, volatility_events,
    AnomalyEvent, Direction, EventParams, Kind, TrendEventParams, VolatilityParams,
};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

/// Unix µs of a PostgreSQL timestamp; `None` for ±infinity and for the last ~30 years of
/// PostgreSQL's range (after year 294246), which Unix µs in an i64 cannot hold: such points
/// are skipped, never clamped to a wrong time.
pub(crate) fn unix_us(t: TimestampWithTimeZone) -> Option<i64> {
    if !t.is_finite() {
        return None;
    }
    t.into_inner().checked_add(PG_EPOCH_US)
}

fn ts_of(unix_us: i64) -> Option<TimestampWithTimeZone> {
    TimestampWithTimeZone::try_from(unix_us.checked_sub(PG_EPOCH_US)?).ok()
}

/// Zips the arrays into time-sorted (Unix µs, value) points, skipping NULLs and infinite times.
fn points(ts: Option<Array<TimestampWithTimeZone>>, values: Option<Array<f64>>) -> Vec<(i64, f64)> {
    let (Some(ts), Some(values)) = (ts, values) else {
        return Vec::new();
    };
    if ts.len() != values.len() {
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_ARRAY_ELEMENT_ERROR,
            format!("ts and value arrays differ in length ({} and {})", ts.len(), values.len()),
            "coherence",
        )
        .set_hint("Build both with array_agg over the same rows, e.g. array_agg(ts ORDER BY ts), array_agg(value ORDER BY ts).")
        .report(PgLogLevel::ERROR);
    }
    // The arrays come from PostgreSQL (at most 1 GB each); the analysis' working memory is
    // reserved here first, so a series too large for this backend is an "out of memory" ERROR
    // and not an abort of the server.
    reserve_analysis_memory(ts.len());
    let mut pts: Vec<(i64, f64)> = Vec::new();
    if pts.try_reserve_exact(ts.len()).is_err() {
        out_of_memory(ts.len(), ANALYSIS_BYTES_PER_POINT);
    }
    pts.extend(
        ts.iter()
            .zip(values.iter())
            .filter_map(|(t, v)| match (t.and_then(unix_us), v) {
                (Some(t), Some(v)) if coherence_core::usable_value(v) => Some((t, v)),
                _ => None,
            }),
    );
    pts.sort_by_key(|p| p.0);
    pts
}

/// Upper bound of the analysis' working memory per point (the points, the detrended and
/// scored copies, per-window buffers), in bytes.
const ANALYSIS_BYTES_PER_POINT: usize = 256;
/// The same for the collective detector: the per-metric scored copies plus its time grid
/// (at most 16 cells a point, three 4-byte arrays each).
const COLLECTIVE_BYTES_PER_POINT: usize = 512;

/// Reserves (and frees) the analysis' working memory for `n` points, or raises 53200.
fn reserve_analysis_memory(n: usize) {
    reserve_memory(n, ANALYSIS_BYTES_PER_POINT)
}

fn reserve_memory(n: usize, per_point: usize) {
    let mut probe: Vec<u8> = Vec::new();
    if probe
        .try_reserve_exact(n.saturating_mul(per_point))
        .is_err()
    {
        out_of_memory(n, per_point);
    }
}

fn out_of_memory(n: usize, per_point: usize) -> ! {
    ErrorReport::new(
        PgSqlErrorCode::ERRCODE_OUT_OF_MEMORY,
        format!("out of memory analysing a series of {n} points"),
        "coherence",
    )
    .set_detail(format!(
        "The analysis needs up to {per_point} bytes a point."
    ))
    .set_hint("Analyse a shorter time range (detect_events' lookback) or downsample the series.")
    .report(PgLogLevel::ERROR);
    unreachable!("ERROR does not return")
}

/// One row of `series_volatility_events`.
type EventRow = (
    String,
    Option<TimestampWithTimeZone>,
    Option<TimestampWithTimeZone>,
    Option<TimestampWithTimeZone>,
    f64,
    f64,
    f64,
    i64,
    f64,
);

fn event_row(e: AnomalyEvent) -> EventRow {
    (
        e.kind.to_string(),
        ts_of(e.started_at),
        ts_of(e.ended_at),
        ts_of(e.peak_at),
        e.peak_value,
        e.baseline,
        e.peak_score,
        e.points as i64,
        e.risk,
    )
}

/// PostgreSQL's interrupt check (statement_timeout, pg_cancel_backend), for long analyses.
fn interrupt_check() {
    pgrx::check_for_interrupts!();
}

/// Parameters of `series_events`; NULL means the core's default ([`EventParams::default`]).
#[allow(clippy::too_many_arguments)]
fn event_params(
    window_points: Option<i32>,
    threshold: Option<f64>,
    direction: Option<&str>,
    season_points: Option<i32>,
    report_from: Option<TimestampWithTimeZone>,
    min_risk: Option<f64>,
) -> EventParams {
    let d = EventParams::default();
    let direction = match direction {
        None => d.direction,
        Some(s) => s.parse::<Direction>().unwrap_or_else(|e: String| {
            invalid_parameter(
                &e,
                "Use 'both' (default), 'up' (rises only) or 'down' (drops only).",
            )
        }),
    };
    let window = match window_points {
        None => d.window,
        Some(w) if (3..=1_000_000).contains(&w) => w as usize,
        Some(_) => invalid_parameter(
            "window_points must be between 3 and 1000000",
            "The default (NULL) is 192 points.",
        ),
    };
    let season = match season_points {
        None => None,
        Some(s) if (0..=10_000_000).contains(&s) => Some(s as usize),
        Some(_) => invalid_parameter(
            "season_points must be 0 (no seasonal check) or a positive number of points",
            "Leave it NULL to learn the period (hourly, daily or weekly) from the data.",
        ),
    };
    let report_from = match report_from {
        Some(t) if t.is_finite() => t.into_inner().saturating_add(PG_EPOCH_US),
        Some(t) if t.is_infinity() => i64::MAX,
        _ => i64::MIN,
    };
    let p = EventParams {
        window,
        threshold: threshold.unwrap_or(d.threshold),
        direction,
        season,
        min_risk: min_risk.unwrap_or(d.min_risk),
        report_from,
        ..d
    };
    if let Err(e) = p.validate() {
        invalid_parameter(
            &e,
            "NULL means the default: threshold 8 (robust z), min_risk 0.2; see docs/detection.md.",
        );
    }
    p
}

/// Anomaly events of one series given as arrays (any order): every detector of
/// `coherence_core::events::analyze`, with calibrated risk and the summary line.
#[allow(clippy::type_complexity, clippy::too_many_arguments)]
#[pg_extern(immutable, parallel_safe, name = "find_events")]
fn find_events_v4(
    ts: Option<Array<TimestampWithTimeZone>>,
    value: Option<Array<f64>>,
    window_points: default!(Option<i32>, "NULL"),
    threshold: default!(Option<f64>, "NULL"),
    direction: default!(Option<&str>, "NULL"),
    season_points: default!(Option<i32>, "NULL"),
    report_from: default!(Option<TimestampWithTimeZone>, "NULL"),
    min_risk: default!(Option<f64>, "NULL"),
    host: default!(Option<&str>, "NULL"),
    metric: default!(Option<&str>, "NULL"),
    capacity: default!(Option<f64>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(kind, String),
        name!(detector, String),
        name!(started_at, Option<TimestampWithTimeZone>),
        name!(ended_at, Option<TimestampWithTimeZone>),
        name!(peak_at, Option<TimestampWithTimeZone>),
        name!(peak_value, f64),
        name!(baseline, f64),
        name!(score, f64),
        name!(points, i64),
        name!(risk, f64),
        name!(summary, String),
    ),
> {
    let params = event_params(
        window_points,
        threshold,
        direction,
        season_points,
        report_from,
        min_risk,
    );
    let pts = points(ts, value);
    let (host, metric) = (host.unwrap_or("series"), metric.unwrap_or("value"));
    if capacity.is_some_and(|c| !(c.is_finite() && c > 0.0)) {
        invalid_parameter(
            "capacity must be a positive finite number",
            "It is the value at which a leaking series is exhausted, e.g. 100 for a percentage; NULL takes coherence.metric_capacity(metric).",
        );
    }
    let mut metric_params = params;
    metric_params.trend.capacity = capacity.or_else(|| metric_capacity(metric));
    let rows: Vec<_> = analyze_with(&pts, &metric_params, &mut interrupt_check)
        .events
        .into_iter()
        .map(|e| {
            let summary = e.summary(host, metric);
            (
                e.kind.to_string(),
                e.kind.detector().to_string(),
                ts_of(e.started_at),
                ts_of(e.ended_at),
                ts_of(e.peak_at),
                e.peak_value,
                e.baseline,
                e.peak_score,
                e.points as i64,
                e.risk,
                summary,
            )
        })
        .collect();
    TableIterator::new(rows)
}

/// The 0.3.0 entry point of `coherence.find_events` (10 arguments, no capacity): not in the
/// install script, but its C symbol stays in the library so a database still at 0.3.0 keeps
/// working between the new library's install and `ALTER EXTENSION coherence UPDATE`.
#[allow(clippy::type_complexity, clippy::too_many_arguments)]
#[pg_extern(immutable, parallel_safe, sql = false)]
fn find_events(
    ts: Option<Array<TimestampWithTimeZone>>,
    value: Option<Array<f64>>,
    window_points: Option<i32>,
    threshold: Option<f64>,
    direction: Option<&str>,
    season_points: Option<i32>,
    report_from: Option<TimestampWithTimeZone>,
    min_risk: Option<f64>,
    host: Option<&str>,
    metric: Option<&str>,
) -> TableIterator<
    'static,
    (
        name!(kind, String),
        name!(detector, String),
        name!(started_at, Option<TimestampWithTimeZone>),
        name!(ended_at, Option<TimestampWithTimeZone>),
        name!(peak_at, Option<TimestampWithTimeZone>),
        name!(peak_value, f64),
        name!(baseline, f64),
        name!(score, f64),
        name!(points, i64),
        name!(risk, f64),
        name!(summary, String),
    ),
> {
    find_events_v4(
        ts,
        value,
        window_points,
        threshold,
        direction,
        season_points,
        report_from,
        min_risk,
        host,
        metric,
        None,
    )
}

/// Collective anomalies of one host (`coherence_core::events::collective`): its metrics given
/// as three parallel arrays (metric name, time, value; any order). One row per member metric
/// of each event, with the event's risk and the member's own onset, value and share.
#[allow(clippy::type_complexity)]
#[pg_extern(immutable, parallel_safe)]
fn find_collective(
    metric: Option<Array<&str>>,
    ts: Option<Array<TimestampWithTimeZone>>,
    value: Option<Array<f64>>,
    report_from: default!(Option<TimestampWithTimeZone>, "NULL"),
    min_risk: default!(Option<f64>, "NULL"),
    host: default!(Option<&str>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(metric, String),
        name!(kind, String),
        name!(detector, String),
        name!(started_at, Option<TimestampWithTimeZone>),
        name!(ended_at, Option<TimestampWithTimeZone>),
        name!(peak_at, Option<TimestampWithTimeZone>),
        name!(peak_value, f64),
        name!(baseline, f64),
        name!(score, f64),
        name!(share, f64),
        name!(risk, f64),
        name!(summary, String),
    ),
> {
    let params = event_params(None, None, None, None, report_from, min_risk);
    let (Some(metric), Some(ts), Some(value)) = (metric, ts, value) else {
        return TableIterator::new(Vec::new());
    };
    let (names, series) = host_series(metric, ts, value);
    let host = host.unwrap_or("host");
    let events = collective_events(&series, &params, &mut interrupt_check);
    let mut rows = Vec::new();
    for e in &events {
        for m in &e.members {
            let name = &names[m.metric];
            rows.push((
                name.clone(),
                Kind::Collective.as_str().to_string(),
                Kind::Collective.detector().to_string(),
                ts_of(m.onset),
                ts_of(e.ended_at),
                ts_of(e.peak_at),
                m.value,
                m.baseline,
                m.peak_u,
                m.share,
                e.risk,
                e.member_summary(host, name, m),
            ));
        }
    }
    TableIterator::new(rows)
}

/// The 0.1.0 signature and columns, kept for existing callers: the same detectors as
/// `find_events` (every kind, calibrated risk), without the summary.
#[allow(clippy::type_complexity)]
#[pg_extern(immutable, parallel_safe)]
fn series_events(
    ts: Option<Array<TimestampWithTimeZone>>,
    value: Option<Array<f64>>,
    window_points: default!(Option<i32>, 192),
    threshold: default!(Option<f64>, 8.0),
    direction: default!(Option<&str>, "'both'"),
    season_points: default!(Option<i32>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(kind, String),
        name!(started_at, Option<TimestampWithTimeZone>),
        name!(ended_at, Option<TimestampWithTimeZone>),
        name!(peak_at, Option<TimestampWithTimeZone>),
        name!(peak_value, f64),
        name!(baseline, f64),
        name!(score, f64),
        name!(points, i64),
        name!(risk, f64),
    ),
> {
    let params = event_params(
        window_points,
        threshold,
        direction,
        season_points,
        None,
        None,
    );
    let pts = points(ts, value);
    let rows: Vec<_> = analyze_with(&pts, &params, &mut interrupt_check)
        .events
        .into_iter()
        .map(event_row)
        .collect();
    TableIterator::new(rows)
}

/// The period learned from one series: name, length and autocorrelation, or the reason none
/// could be tested.
#[allow(clippy::type_complexity)]
#[pg_extern(immutable, parallel_safe)]
fn series_period(
    ts: Option<Array<TimestampWithTimeZone>>,
    value: Option<Array<f64>>,
) -> TableIterator<
    'static,
    (
        name!(period, Option<String>),
        name!(length, Option<Interval>),
        name!(points, Option<i64>),
        name!(acf, Option<f64>),
        name!(untested, Vec<String>),
    ),
> {
    let pts = points(ts, value);
    let t: Vec<i64> = pts.iter().map(|p| p.0).collect();
    let x: Vec<f64> = pts.iter().map(|p| p.1).collect();
    let r = detect_period(&t, &x);
    let row = match r.period {
        Some(p) => (
            Some(p.name.to_string()),
            Interval::new(0, 0, p.length_us).ok(),
            Some(p.points as i64),
            Some(p.acf),
            r.untested,
        ),
        None => (None, None, None, None, r.untested),
    };
    TableIterator::new(vec![row])
}

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

#[allow(clippy::type_complexity)]
#[pg_extern(immutable, parallel_safe)]
fn series_trend_event(
    ts: Option<Array<TimestampWithTimeZone>>,
    value: Option<Array<f64>>,
    capacity: default!(Option<f64>, "NULL"),
    pct_threshold: default!(Option<f64>, 30.0),
) -> TableIterator<
    'static,
    (
        name!(started_at, Option<TimestampWithTimeZone>),
        name!(ended_at, Option<TimestampWithTimeZone>),
        name!(fitted_start, f64),
        name!(fitted_end, f64),
        name!(pct_change, f64),
        name!(slope_per_hour, f64),
        name!(r2, f64),
        name!(mk_z, f64),
        name!(exhaustion_at, Option<TimestampWithTimeZone>),
        name!(risk, f64),
    ),
> {
    let pct_threshold = pct_threshold.unwrap_or(30.0);
    if !(pct_threshold.is_finite() && pct_threshold > 0.0) {
        invalid_parameter(
            "pct_threshold must be a finite number greater than 0",
            "The seed's threshold is 30 (percent).",
        );
    }
    let pts = points(ts, value);
    let p = TrendEventParams {
        capacity,
        pct_threshold,
        ..TrendEventParams::default()
    };
    let rows: Vec<_> = trend_event(&pts, &p)
        .into_iter()
        .map(|e| {
            (
                ts_of(e.started_at),
                ts_of(e.ended_at),
                e.fitted_start,
                e.fitted_end,
                e.pct_change,
                e.slope_per_hour,
                e.r2,
                e.mk_z,
                e.exhaustion_at.and_then(ts_of),
                e.risk,
            )
        })
        .collect();
    TableIterator::new(rows)
}

#[allow(clippy::type_complexity)]
#[pg_extern(immutable, parallel_safe)]
fn series_volatility_events(
    ts: Option<Array<TimestampWithTimeZone>>,
    value: Option<Array<f64>>,
    window: default!(Option<Interval>, "'4 hours'"),
    ratio: default!(Option<f64>, 3.0),
) -> TableIterator<
    'static,
    (
        name!(kind, String),
        name!(started_at, Option<TimestampWithTimeZone>),
        name!(ended_at, Option<TimestampWithTimeZone>),
        name!(peak_at, Option<TimestampWithTimeZone>),
        name!(peak_value, f64),
        name!(baseline, f64),
        name!(score, f64),
        name!(points, i64),
        name!(risk, f64),
    ),
> {
    let window = window.unwrap_or_else(|| Interval::new(0, 0, 4 * 3_600_000_000).unwrap());
    let ratio = ratio.unwrap_or(3.0);
    let us = window.as_micros();
    if window.months() != 0 || us <= 0 || us > i64::MAX as i128 {
        invalid_parameter(
            "window must be a positive interval without months",
            "The seed's window is interval '4 hours'.",
        );
    }
    if !(ratio.is_finite() && ratio > 1.0) {
        invalid_parameter(
            "ratio must be a finite number greater than 1",
            "The default is 3 (noise level 3x the baseline).",
        );
    }
    let pts = points(ts, value);
    let p = VolatilityParams {
        window_us: us as i64,
        ratio,
        ..VolatilityParams::default()
    };
    let rows: Vec<_> = volatility_events(&pts, &p)
        .into_iter()
        .map(|mut e| {
            e.risk = coherence_core::events::risk::risk(e.p_value, e.tests_per_day, 0.0);
            event_row(e)
        })
        .collect();
    TableIterator::new(rows)
}

/// Splits parallel (metric, ts, value) arrays into one time series per metric (first-seen
/// order), skipping NULLs, infinite times and unusable values; the analysis' working memory
/// (COLLECTIVE_BYTES_PER_POINT) is reserved first.
fn host_series(
    metric: Array<&str>,
    ts: Array<TimestampWithTimeZone>,
    value: Array<f64>,
) -> (Vec<String>, Vec<Vec<(i64, f64)>>) {
    if metric.len() != ts.len() || ts.len() != value.len() {
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_ARRAY_ELEMENT_ERROR,
            format!(
                "metric, ts and value arrays differ in length ({}, {} and {})",
                metric.len(),
                ts.len(),
                value.len()
            ),
            "coherence",
        )
        .set_hint("Build all three with array_agg over the same rows.")
        .report(PgLogLevel::ERROR);
    }
    reserve_memory(ts.len(), COLLECTIVE_BYTES_PER_POINT);
    let mut names: Vec<String> = Vec::new();
    let mut index: std::collections::HashMap<String, usize> = Default::default();
    let mut series: Vec<Vec<(i64, f64)>> = Vec::new();
    for (i, ((m, t), v)) in metric.iter().zip(ts.iter()).zip(value.iter()).enumerate() {
        if i % 65_536 == 0 {
            pgrx::check_for_interrupts!();
        }
        let (Some(m), Some(t), Some(v)) = (m, t, v) else {
            continue;
        };
        let Some(t) = unix_us(t).filter(|_| coherence_core::usable_value(v)) else {
            continue;
        };
        let k = *index.entry(m.to_string()).or_insert_with(|| {
            names.push(m.to_string());
            series.push(Vec::new());
            names.len() - 1
        });
        series[k].push((t, v));
    }
    (names, series)
}

/// The metrics of one host (parallel arrays) that deviated during [from, until] against their
/// own samples before `from` (the core's `involved`): strongest first.
#[allow(clippy::type_complexity)]
#[pg_extern(immutable, parallel_safe)]
fn involved_metrics(
    metric: Option<Array<&str>>,
    ts: Option<Array<TimestampWithTimeZone>>,
    value: Option<Array<f64>>,
    from: Option<TimestampWithTimeZone>,
    until: Option<TimestampWithTimeZone>,
) -> TableIterator<
    'static,
    (
        name!(metric, String),
        name!(score, f64),
        name!(peak_at, Option<TimestampWithTimeZone>),
        name!(peak_value, f64),
        name!(baseline, f64),
    ),
> {
    let (Some(metric), Some(ts), Some(value), Some(from), Some(until)) = (
        metric,
        ts,
        value,
        from.and_then(unix_us),
        until.and_then(unix_us),
    ) else {
        return TableIterator::new(Vec::new());
    };
    let (names, series) = host_series(metric, ts, value);
    let rows: Vec<_> =
        coherence_core::events::involved::involved(&series, from, until, &mut interrupt_check)
            .into_iter()
            .map(|g| {
                (
                    names[g.metric].clone(),
                    g.score,
                    ts_of(g.peak_at),
                    g.value,
                    g.baseline,
                )
            })
            .collect();
    TableIterator::new(rows)
}

/// The cadence of a series: the median gap between its latest distinct sample times (the
/// core's `nodata::cadence`), or NULL with fewer than 3 distinct finite times.
#[pg_extern(immutable, strict, parallel_safe)]
fn series_cadence(ts: Array<TimestampWithTimeZone>) -> Option<Interval> {
    let mut t: Vec<i64> = Vec::new();
    if t.try_reserve_exact(ts.len()).is_err() {
        out_of_memory(ts.len(), 8);
    }
    t.extend(ts.iter().flatten().filter_map(unix_us));
    let c = coherence_core::events::nodata::cadence(&t)?;
    Interval::new(0, 0, c).ok()
}

/// The no-data event of a series whose last sample is (last_at, last_value) and whose cadence
/// is `cadence`, at data time `data_now`: one row while it is silent (the core's
/// `nodata::event`), none otherwise.
#[allow(clippy::type_complexity)]
#[pg_extern(immutable, strict, parallel_safe)]
fn no_data_event(
    host: &str,
    metric: &str,
    last_at: TimestampWithTimeZone,
    last_value: f64,
    cadence: Interval,
    data_now: TimestampWithTimeZone,
) -> TableIterator<
    'static,
    (
        name!(kind, String),
        name!(detector, String),
        name!(started_at, Option<TimestampWithTimeZone>),
        name!(ended_at, Option<TimestampWithTimeZone>),
        name!(peak_at, Option<TimestampWithTimeZone>),
        name!(peak_value, f64),
        name!(baseline, f64),
        name!(score, f64),
        name!(risk, f64),
        name!(summary, String),
    ),
> {
    let c = cadence.as_micros();
    if cadence.months() != 0 || c <= 0 {
        invalid_parameter(
            "cadence must be a positive interval without months",
            "Use coherence.series_cadence(array_agg(ts)) of the series' latest samples.",
        );
    }
    let ev = match (unix_us(last_at), unix_us(data_now), i64::try_from(c)) {
        (Some(l), Some(n), Ok(c)) => coherence_core::events::nodata::event((l, last_value), c, n),
        _ => None,
    };
    let rows: Vec<_> = ev
        .into_iter()
        .map(|e| {
            (
                e.kind.to_string(),
                e.kind.detector().to_string(),
                ts_of(e.started_at),
                ts_of(e.ended_at),
                ts_of(e.peak_at),
                e.peak_value,
                e.baseline,
                e.peak_score,
                e.risk,
                e.summary(host, metric),
            )
        })
        .collect();
    TableIterator::new(rows)
}

/// Whether a series whose last sample is at `last_at`, with `cadence`, has no data at `at` (2 or
/// more of its intervals without a sample; the core's `nodata::silent`).
#[pg_extern(immutable, strict, parallel_safe)]
fn series_silent(
    last_at: TimestampWithTimeZone,
    cadence: Interval,
    at: TimestampWithTimeZone,
) -> bool {
    match (
        unix_us(last_at),
        unix_us(at),
        i64::try_from(cadence.as_micros()),
    ) {
        (Some(l), Some(n), Ok(c)) if cadence.months() == 0 => {
            coherence_core::events::nodata::silent(l, c, n)
        }
        _ => false,
    }
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

/// The expected band of one series given as arrays: per usable point, the baseline and the
/// bounds the level detector judged it against (the core's `band_with`); NULL bounds while the
/// detector warms up.
#[allow(clippy::type_complexity)]
#[pg_extern(immutable, parallel_safe)]
fn series_band(
    ts: Option<Array<TimestampWithTimeZone>>,
    value: Option<Array<f64>>,
    window_points: default!(Option<i32>, "NULL"),
    threshold: default!(Option<f64>, "NULL"),
    direction: default!(Option<&str>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(ts, Option<TimestampWithTimeZone>),
        name!(value, f64),
        name!(baseline, Option<f64>),
        name!(lower, Option<f64>),
        name!(upper, Option<f64>),
        name!(anomalous, bool),
    ),
> {
    let params = event_params(window_points, threshold, direction, None, None, None);
    let pts = points(ts, value);
    let finite = |v: f64| v.is_finite().then_some(v);
    let rows: Vec<_> = coherence_core::events::band_with(&pts, &params, &mut interrupt_check)
        .into_iter()
        .map(|b| {
            (
                ts_of(b.ts),
                b.value,
                finite(b.baseline),
                finite(b.lower),
                finite(b.upper),
                b.anomalous,
            )
        })
        .collect();
    TableIterator::new(rows)
}
