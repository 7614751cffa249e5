//! The collective detector and involved metrics over one host's metrics given as parallel
//! arrays: `coherence.find_collective`, `coherence.involved_metrics`.

use super::*;

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
