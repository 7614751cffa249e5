//! No-data: a series that stopped reporting, judged against its own cadence.
//!
//! A series' cadence is the median gap between its latest samples. It is silent when the data
//! time (the newest sample of any series) is at least [`MISSED_INTERVALS`] cadences past its last
//! sample; the event starts where the first missing sample was due and lasts while the silence
//! does. Risk grows with the intervals missed: `1 − 2^(−missed/2)`, so 0.5 at 2 missed
//! intervals, 0.75 at 4, 0.94 at 8 — each further missed interval makes a late delivery less
//! likely. After [`RETIRE_AFTER_US`] (7 days) of silence a series is retired and reports no
//! more events. (A stopped agent usually silences every metric of the host, and those together open
//! an incident at once.)

use super::{AnomalyEvent, Kind};
use crate::{format_duration, format_utc_minute};

/// Intervals without a sample before a series counts as silent.
pub const MISSED_INTERVALS: f64 = 2.0;
/// Latest samples whose gaps give the cadence.
pub const CADENCE_SAMPLES: usize = 33;
/// Samples needed before a cadence is known.
pub const MIN_SAMPLES: usize = 3;
/// A series silent for longer than this is retired: no event any more (its last event stops
/// growing and its incident resolves), so a decommissioned host does not page forever and a
/// long-dead series does not page when first seen.
pub const RETIRE_AFTER_US: i64 = 7 * 86_400 * 1_000_000;

/// Median positive gap between consecutive distinct sample times (µs, any order), or `None`
/// with fewer than [`MIN_SAMPLES`] distinct times. Uses the latest [`CADENCE_SAMPLES`].
pub fn cadence(ts: &[i64]) -> Option<i64> {
    let mut t: Vec<i64> = ts.to_vec();
    t.sort_unstable();
    t.dedup();
    if t.len() < MIN_SAMPLES {
        return None;
    }
    let t = &t[t.len().saturating_sub(CADENCE_SAMPLES)..];
    let mut gaps: Vec<i64> = t.windows(2).map(|w| w[1] - w[0]).collect();
    gaps.sort_unstable();
    Some(gaps[(gaps.len() - 1) / 2])
}

/// Whether a series whose last sample is at `last_us`, with cadence `cadence_us`, is silent at
/// `now_us` ([`MISSED_INTERVALS`] or more intervals without a sample; retired series too).
pub fn silent(last_us: i64, cadence_us: i64, now_us: i64) -> bool {
    cadence_us > 0
        && now_us > last_us
        && (now_us - last_us) as f64 / cadence_us as f64 >= MISSED_INTERVALS
}

/// Risk of a silence of `missed` cadences (see the module docs).
pub fn risk(missed: f64) -> f64 {
    if missed.is_nan() || missed < MISSED_INTERVALS {
        return 0.0;
    }
    let r = 1.0 - (-missed / 2.0).exp2();
    (r * 1e4).round() / 1e4
}

/// The no-data event of a series whose last sample (time µs, value) is `last`, with cadence
/// `cadence_us`, at data time `now_us`; `None` while it is not silent.
pub fn event(last: (i64, f64), cadence_us: i64, now_us: i64) -> Option<AnomalyEvent> {
    if cadence_us <= 0 || now_us <= last.0 || now_us - last.0 > RETIRE_AFTER_US {
        return None;
    }
    let missed = (now_us - last.0) as f64 / cadence_us as f64;
    if missed < MISSED_INTERVALS {
        return None;
    }
    let started = last.0.saturating_add(cadence_us);
    Some(AnomalyEvent {
        kind: Kind::NoData,
        started_at: started,
        ended_at: now_us,
        peak_at: started,
        peak_value: last.1,
        baseline: cadence_us as f64 / 1e6,
        peak_score: missed.floor(),
        points: 0,
        p_value: (-missed / 2.0).exp2(),
        tests_per_day: 0.0,
        risk: risk(missed),
        trend: None,
    })
}

/// `web-1:cpu → no data since 2025-12-13 04:10 UTC (expected every 1m; 5 intervals missed by
/// 2025-12-13 04:16 UTC)`.
pub fn summary(
    host: &str,
    metric: &str,
    started_at: i64,
    ended_at: i64,
    cadence_secs: f64,
    missed: f64,
) -> String {
    let cadence_us = (cadence_secs * 1e6) as i64;
    format!(
        "{host}:{metric} → no data since {} (expected every {}; {} intervals missed by {})",
        format_utc_minute(started_at.saturating_sub(cadence_us)),
        format_duration(cadence_us),
        missed,
        format_utc_minute(ended_at)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    const MIN: i64 = 60_000_000;

    #[test]
    fn cadence_is_the_median_gap_of_the_latest_samples() {
        assert_eq!(cadence(&[0, MIN]), None);
        assert_eq!(cadence(&[2 * MIN, 0, MIN, MIN]), Some(MIN));
        // One long gap among regular ones does not move it.
        assert_eq!(cadence(&[0, MIN, 2 * MIN, 30 * MIN, 31 * MIN]), Some(MIN));
        // Only the latest samples count: an old 10-minute cadence, then 40 one-minute samples.
        let mut ts: Vec<i64> = (0..10).map(|i| i * 10 * MIN).collect();
        ts.extend((1..=40).map(|i| 100 * MIN + i * MIN));
        assert_eq!(cadence(&ts), Some(MIN));
    }

    #[test]
    fn silent_after_two_intervals_with_risk_growing() {
        let last = (100 * MIN, 42.0);
        assert!(event(last, MIN, 101 * MIN).is_none());
        assert!(event(last, MIN, 100 * MIN + MIN * 19 / 10).is_none());
        let e = event(last, MIN, 102 * MIN).expect("two intervals missed");
        assert_eq!(e.kind, Kind::NoData);
        assert_eq!(
            (e.started_at, e.ended_at, e.peak_value),
            (101 * MIN, 102 * MIN, 42.0)
        );
        assert_eq!(e.risk, 0.5);
        assert_eq!(event(last, MIN, 104 * MIN).unwrap().risk, 0.75);
        let mut prev = 0.0;
        for k in 2..200 {
            let r = event(last, MIN, 100 * MIN + k * MIN).unwrap().risk;
            assert!(r >= prev && r <= 1.0, "risk {r} at {k} intervals");
            assert!(k > 12 || r > prev, "risk {r} at {k} intervals must grow");
            prev = r;
        }
        assert!(event(last, 0, 200 * MIN).is_none());
        assert!(!silent(last.0, MIN, 101 * MIN) && silent(last.0, MIN, 102 * MIN));
        assert!(silent(last.0, MIN, last.0 + 2 * RETIRE_AFTER_US) && !silent(last.0, 0, 200 * MIN));
        // Retired after a week of silence.
        assert!(event(last, MIN, 100 * MIN + RETIRE_AFTER_US).is_some());
        assert!(event(last, MIN, 100 * MIN + RETIRE_AFTER_US + 1).is_none());
        assert!(event(last, MIN, 50 * MIN).is_none());
    }

    #[test]
    fn summary_names_last_sample_and_cadence() {
        let e = event((0, 1.0), MIN, 5 * MIN).unwrap();
        assert_eq!(
            e.summary("web-1", "cpu"),
            "web-1:cpu → no data since 1970-01-01 00:00 UTC (expected every 1m; 5 intervals missed by 1970-01-01 00:05 UTC)"
        );
    }
}
