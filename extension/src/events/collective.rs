//! The collective detector and involved metrics over one host's metrics given as parallel
//! arrays: `coherence.find_collective`, `coherence.involved_metrics`.

use super::*;
use coherence_core::events::collective::{
    collective_events_scored, score_series, CollectiveEvent, CollectiveParams,
};
use coherence_core::events::{analyze_scored, scores_as};

/// A host's series by metric name, in first-seen order (a name given twice is one series).
#[derive(Default)]
struct ByName {
    names: Vec<String>,
    index: std::collections::HashMap<String, usize>,
    series: Vec<Vec<(i64, f64)>>,
}

impl ByName {
    /// The series of metric `m`, new and empty the first time.
    fn series(&mut self, m: &str) -> &mut Vec<(i64, f64)> {
        let k = match self.index.get(m) {
            Some(k) => *k,
            None => {
                self.names.push(m.to_string());
                self.series.push(Vec::new());
                self.index.insert(m.to_string(), self.names.len() - 1);
                self.names.len() - 1
            }
        };
        &mut self.series[k]
    }
}

/// One row of `find_collective`.
type CollectiveRow = (
    String,
    String,
    String,
    Option<TimestampWithTimeZone>,
    Option<TimestampWithTimeZone>,
    Option<TimestampWithTimeZone>,
    f64,
    f64,
    f64,
    f64,
    f64,
    String,
);

/// The rows of `find_collective` for one host's metrics (names and their points). The metrics
/// are taken in name order, so the result does not depend on the order they came in (the
/// host statistic sums over them in floating point).
fn collective_rows(
    names: Vec<String>,
    series: Vec<Vec<(i64, f64)>>,
    params: &EventParams,
    host: Option<&str>,
) -> Vec<CollectiveRow> {
    let host = host.unwrap_or("host");
    let mut named: Vec<(String, Vec<(i64, f64)>)> = names.into_iter().zip(series).collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let (names, series): (Vec<String>, Vec<Vec<(i64, f64)>>) = named.into_iter().unzip();
    let events = collective_events(&series, params, &mut interrupt_check);
    member_rows(&events, &names, host)
}

/// One row per member of each event; `names` names the metrics the members index.
fn member_rows(events: &[CollectiveEvent], names: &[String], host: &str) -> Vec<CollectiveRow> {
    let mut rows = Vec::new();
    for e in events {
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
    rows
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
    // The parameters are checked first, as before the data.
    let params = event_params(None, None, None, None, report_from, min_risk);
    let (Some(metric), Some(ts), Some(value)) = (metric, ts, value) else {
        return TableIterator::new(Vec::new());
    };
    let (names, series) = host_series(metric, ts, value);
    TableIterator::new(collective_rows(names, series, &params, host))
}

/// `find_collective` of one host whose metrics come as names and their points packed by the
/// aggregate `coherence.points(ts, value)` (parallel arrays, one element a metric; a name given
/// twice joins its points): what `coherence.detect_collective` runs on every host.
#[allow(clippy::type_complexity)]
#[pg_extern(immutable, parallel_safe)]
fn find_collective_points(
    metric: Option<Array<&str>>,
    packed: Option<Array<&[u8]>>,
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
    let (Some(metric), Some(points)) = (metric, packed) else {
        return TableIterator::new(Vec::new());
    };
    if metric.len() != points.len() {
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_ARRAY_ELEMENT_ERROR,
            format!(
                "metric and packed arrays differ in length ({} and {})",
                metric.len(),
                points.len()
            ),
            "coherence",
        )
        .set_hint("Build both with array_agg over the same rows of (metric, coherence.points(ts, value)).")
        .report(PgLogLevel::ERROR);
    }
    let total: usize = points
        .iter()
        .map(|b| b.map_or(0, |b| b.len() / crate::points::POINT_BYTES))
        .sum();
    reserve_memory(total, COLLECTIVE_BYTES_PER_POINT);
    let mut by_name = ByName::default();
    for (m, b) in metric.iter().zip(points.iter()) {
        pgrx::check_for_interrupts!();
        let (Some(m), Some(b)) = (m, b) else {
            continue;
        };
        // The memory was reserved for all of them above.
        crate::points::unpack(b, 0, by_name.series(m));
    }
    let ByName { names, series, .. } = by_name;
    TableIterator::new(collective_rows(names, series, &params, host))
}

/// One row of `find_host_events_points`.
type HostRow = (
    String,
    String,
    String,
    Option<TimestampWithTimeZone>,
    Option<TimestampWithTimeZone>,
    Option<TimestampWithTimeZone>,
    f64,
    f64,
    f64,
    f64,
    String,
);

/// Element `i` of optional per-metric settings (NULL array or element: the default).
fn setting<T: Clone>(values: &Option<Vec<Option<T>>>, i: usize) -> Option<T> {
    values.as_ref().and_then(|v| v[i].clone())
}

/// Per-metric numbers from an optional array parallel to the `n` metrics.
fn numbers(name: &str, values: Option<Array<'_, f64>>, n: usize) -> Option<Vec<Option<f64>>> {
    let values = values?;
    check_parallel(name, values.len(), n);
    Some(values.iter().collect())
}

/// Raises 2202E when a per-metric setting's array is not parallel to the `n` metrics.
fn check_parallel(name: &str, len: usize, n: usize) {
    if len != n {
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_ARRAY_ELEMENT_ERROR,
            format!("{name} array length {len} differs from the number of metrics, {n}"),
            "coherence",
        )
        .set_hint("Give per-metric settings as arrays parallel to metric (NULL elements take the defaults), or NULL for the defaults of every metric.")
        .report(PgLogLevel::ERROR);
    }
}

/// Every detector over one host's metrics in one pass: each metric's own events (as
/// `find_events_points` gives them, with its settings from the parallel arrays) and the host's
/// collective events (as `find_collective_points` gives them, one row per member), the
/// collective detector taking each metric's scores from the metric's own analysis where the
/// settings score alike (the default settings do), instead of preparing and scanning every
/// series twice. What `coherence.detect_all` runs on every host.
#[allow(clippy::type_complexity, clippy::too_many_arguments)]
#[pg_extern(immutable, parallel_safe)]
fn find_host_events_points(
    metric: Option<Array<&str>>,
    packed: Option<Array<&[u8]>>,
    window_points: default!(Option<Array<i32>>, "NULL"),
    threshold: default!(Option<Array<f64>>, "NULL"),
    direction: default!(Option<Array<&str>>, "NULL"),
    capacity: default!(Option<Array<f64>>, "NULL"),
    min_risk: default!(Option<Array<f64>>, "NULL"),
    report_from: default!(Option<TimestampWithTimeZone>, "NULL"),
    collective_min_risk: default!(Option<f64>, "NULL"),
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
        name!(risk, f64),
        name!(summary, String),
    ),
> {
    // The parameters are checked first, as before the data.
    let coll = event_params(None, None, None, None, report_from, collective_min_risk);
    let host = host.unwrap_or("host");
    let (Some(metric), Some(packed)) = (metric, packed) else {
        return TableIterator::new(Vec::new());
    };
    let n = metric.len();
    if packed.len() != n {
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_ARRAY_ELEMENT_ERROR,
            format!("metric and packed arrays differ in length ({n} and {})", packed.len()),
            "coherence",
        )
        .set_hint("Build both with array_agg over the same rows of (metric, coherence.points(ts, value)).")
        .report(PgLogLevel::ERROR);
    }
    let window_points: Option<Vec<Option<i32>>> = window_points.map(|w| {
        check_parallel("window_points", w.len(), n);
        w.iter().collect()
    });
    let threshold = numbers("threshold", threshold, n);
    let capacity = numbers("capacity", capacity, n);
    let min_risk = numbers("min_risk", min_risk, n);
    let direction: Option<Vec<Option<String>>> = direction.map(|d| {
        check_parallel("direction", d.len(), n);
        d.iter().map(|v| v.map(str::to_string)).collect()
    });
    // Each metric's settings, in name order (the host statistic sums over the metrics in
    // floating point: the result must not depend on the order they came in).
    let mut metrics: Vec<(String, EventParams, usize)> = Vec::with_capacity(n);
    for (i, m) in metric.iter().enumerate() {
        let (Some(m), Some(_)) = (m, packed.get(i).flatten()) else {
            continue;
        };
        let p = event_params(
            setting(&window_points, i),
            setting(&threshold, i),
            setting(&direction, i).as_deref(),
            None,
            report_from,
            setting(&min_risk, i),
        );
        metrics.push((m.to_string(), with_capacity(p, m, setting(&capacity, i)), i));
    }
    metrics.sort_by(|a, b| a.0.cmp(&b.0));
    if let Some(w) = metrics.windows(2).find(|w| w[0].0 == w[1].0) {
        invalid_parameter(
            &format!("metric \"{}\" is given twice", w[0].0),
            "Give each metric of the host once, with all its points packed by coherence.points(ts, value).",
        );
    }
    let collective = metrics.len() >= coherence_core::events::collective::MIN_METRICS;
    let total: usize = metrics
        .iter()
        .map(|(_, _, i)| {
            packed
                .get(*i)
                .flatten()
                .map_or(0, |b| b.len() / crate::points::POINT_BYTES)
        })
        .sum();
    reserve_memory(
        total,
        if collective {
            COLLECTIVE_BYTES_PER_POINT
        } else {
            ANALYSIS_BYTES_PER_POINT
        },
    );
    let mut rows: Vec<HostRow> = Vec::new();
    let mut scored = Vec::with_capacity(metrics.len());
    let mut pts = Vec::new();
    for (name, p, i) in &metrics {
        pgrx::check_for_interrupts!();
        pts.clear();
        if let Some(b) = packed.get(*i).flatten() {
            // The memory was reserved for all of them above.
            crate::points::unpack(b, 0, &mut pts);
        }
        pts.sort_by_key(|p| p.0);
        let analysis = if !collective {
            analyze_with(&pts, p, &mut interrupt_check)
        } else if scores_as(p, &coll) {
            let (analysis, s) = analyze_scored(&pts, p, &mut interrupt_check);
            scored.push(s);
            analysis
        } else {
            scored.push(score_series(&pts, &coll, &mut interrupt_check));
            analyze_with(&pts, p, &mut interrupt_check)
        };
        for e in analysis.events {
            let (kind, detector, s, e_, at, v, b, z, _, r, summary) = found_row(e, host, name);
            rows.push((name.clone(), kind, detector, s, e_, at, v, b, z, r, summary));
        }
    }
    if collective {
        let names: Vec<String> = metrics.into_iter().map(|m| m.0).collect();
        let events = collective_events_scored(
            scored,
            &coll,
            &CollectiveParams::default(),
            &mut interrupt_check,
        );
        for (m, kind, detector, s, e, at, v, b, z, _share, r, summary) in
            member_rows(&events, &names, host)
        {
            rows.push((m, kind, detector, s, e, at, v, b, z, r, summary));
        }
    }
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
    let mut by_name = ByName::default();
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
        by_name.series(m).push((t, v));
    }
    (by_name.names, by_name.series)
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
