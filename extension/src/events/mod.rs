//! Localized events over one series given as arrays: `coherence.find_events` (every detector,
//! calibrated risk, summary; `series_events` is its 0.1.0 form), `coherence.series_period` (the
//! learned period), `coherence.series_trend_event` and `coherence.series_volatility_events`
//! (one detector each), `coherence.series_band`; the collective detector, silences and the
//! facts SQL reads from the core are in the submodules. `coherence.detect_events`
//! (sql/functions.sql) runs `find_events` over every series in the tables.

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

mod catalogue;
mod collective;
mod nodata;

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
pub(crate) const ANALYSIS_BYTES_PER_POINT: usize = 256;
/// The same for the collective detector: the per-metric scored copies plus its time grid
/// (at most 16 cells a point, three 4-byte arrays each).
pub(crate) const COLLECTIVE_BYTES_PER_POINT: usize = 512;

/// Reserves (and frees) the analysis' working memory for `n` points, or raises 53200.
fn reserve_analysis_memory(n: usize) {
    reserve_memory(n, ANALYSIS_BYTES_PER_POINT)
}

pub(crate) fn reserve_memory(n: usize, per_point: usize) {
    let mut probe: Vec<u8> = Vec::new();
    if probe
        .try_reserve_exact(n.saturating_mul(per_point))
        .is_err()
    {
        out_of_memory(n, per_point);
    }
}

pub(crate) fn out_of_memory(n: usize, per_point: usize) -> ! {
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

/// One row of `find_events`.
type FoundRow = (
    String,
    String,
    Option<TimestampWithTimeZone>,
    Option<TimestampWithTimeZone>,
    Option<TimestampWithTimeZone>,
    f64,
    f64,
    f64,
    i64,
    f64,
    String,
);

/// The rows of `find_events` for time-sorted points.
fn found_rows(
    pts: &[(i64, f64)],
    params: EventParams,
    host: Option<&str>,
    metric: Option<&str>,
    capacity: Option<f64>,
) -> Vec<FoundRow> {
    let (host, metric) = (host.unwrap_or("series"), metric.unwrap_or("value"));
    let metric_params = with_capacity(params, metric, capacity);
    analyze_with(pts, &metric_params, &mut interrupt_check)
        .events
        .into_iter()
        .map(|e| found_row(e, host, metric))
        .collect()
}

/// `params` with the metric's capacity for time to exhaustion: `capacity`, or by default
/// `coherence.metric_capacity(metric)`; a capacity that is not positive and finite is an error.
fn with_capacity(params: EventParams, metric: &str, capacity: Option<f64>) -> EventParams {
    if capacity.is_some_and(|c| !(c.is_finite() && c > 0.0)) {
        invalid_parameter(
            "capacity must be a positive finite number",
            "It is the value at which a leaking series is exhausted, e.g. 100 for a percentage; NULL takes coherence.metric_capacity(metric).",
        );
    }
    let mut p = params;
    p.trend.capacity = capacity.or_else(|| metric_capacity(metric));
    p
}

/// One event of `host:metric` as a row of `find_events`.
fn found_row(e: AnomalyEvent, host: &str, metric: &str) -> FoundRow {
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
    TableIterator::new(found_rows(&pts, params, host, metric, capacity))
}

/// `find_events` of one series packed by the aggregate `coherence.points(ts, value)` (any
/// order): what `coherence.detect_events` runs on every series.
#[allow(clippy::type_complexity, clippy::too_many_arguments)]
#[pg_extern(immutable, parallel_safe)]
fn find_events_points(
    packed: Option<&[u8]>,
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
    let mut pts = Vec::new();
    if let Some(b) = packed {
        crate::points::unpack(b, ANALYSIS_BYTES_PER_POINT, &mut pts);
    }
    pts.sort_by_key(|p| p.0);
    TableIterator::new(found_rows(&pts, params, host, metric, capacity))
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
