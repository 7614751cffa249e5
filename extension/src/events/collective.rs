//! The collective detector and involved metrics over one host's metrics given as parallel
//! arrays: `coherence.find_collective`, `coherence.involved_metrics`.

use super::*;

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
