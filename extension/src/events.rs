//! Localized events: `coherence.series_events` (robust level/spike detector) and
//! `coherence.series_trend_event` (significant leak-like trend with time to exhaustion), both
//! over one series given as arrays. `coherence.detect_events` (sql/functions.sql) runs them
//! over every series in the tables.

use crate::errors::invalid_parameter;
use coherence_core::detect::PG_EPOCH_US;
use coherence_core::events::{
    daily_season, detect_events, trend_event, volatility_events, Direction, EventParams,
    TrendEventParams, VolatilityParams,
};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

fn ts_of(unix_us: i64) -> Option<TimestampWithTimeZone> {
    TimestampWithTimeZone::try_from(unix_us - PG_EPOCH_US).ok()
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
    let mut pts: Vec<(i64, f64)> = ts
        .iter()
        .zip(values.iter())
        .filter_map(|(t, v)| match (t, v) {
            (Some(t), Some(v)) if t.is_finite() => {
                Some((t.into_inner().saturating_add(PG_EPOCH_US), v))
            }
            _ => None,
        })
        .collect();
    pts.sort_by_key(|p| p.0);
    pts
}

/// One row of `series_events` / `series_volatility_events`.
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

fn event_row(e: coherence_core::events::AnomalyEvent) -> EventRow {
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

#[allow(clippy::type_complexity)]
#[pg_extern(immutable, parallel_safe)]
fn series_events(
    ts: Option<Array<TimestampWithTimeZone>>,
    value: Option<Array<f64>>,
    window_points: default!(i32, 192),
    threshold: default!(f64, 8.0),
    direction: default!(&str, "'both'"),
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
    let dir: Direction = direction.parse().unwrap_or_else(|e: String| {
        invalid_parameter(
            &e,
            "Use 'both' (default), 'up' (rises only) or 'down' (drops only).",
        )
    });
    if window_points < 3 {
        invalid_parameter(
            "window_points must be at least 3",
            "The default is 192 points.",
        );
    }
    let pts = points(ts, value);
    let season = match season_points {
        Some(s) if s < 0 => invalid_parameter(
            "season_points must be 0 (no seasonal check) or positive",
            "Leave it NULL to use one day of samples when the series spans 3+ days.",
        ),
        Some(s) => s as usize,
        None => daily_season(&pts.iter().map(|p| p.0).collect::<Vec<_>>()),
    };
    let params = EventParams {
        window: window_points as usize,
        threshold,
        direction: dir,
        season,
        ..EventParams::default()
    };
    if let Err(e) = params.validate() {
        invalid_parameter(
            &e,
            "Defaults: window_points 192, threshold 8 (robust z-score).",
        );
    }
    let rows: Vec<_> = detect_events(&pts, &params)
        .into_iter()
        .map(event_row)
        .collect();
    TableIterator::new(rows)
}

#[allow(clippy::type_complexity)]
#[pg_extern(immutable, parallel_safe)]
fn series_trend_event(
    ts: Option<Array<TimestampWithTimeZone>>,
    value: Option<Array<f64>>,
    capacity: default!(Option<f64>, "NULL"),
    pct_threshold: default!(f64, 30.0),
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
    window: default!(Interval, "'4 hours'"),
    ratio: default!(f64, 3.0),
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
        .map(event_row)
        .collect();
    TableIterator::new(rows)
}
