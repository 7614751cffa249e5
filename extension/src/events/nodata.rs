//! Silence of a series: `coherence.series_cadence`, `coherence.no_data_event`,
//! `coherence.series_silent` (the core's `nodata`).

use super::*;

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
