//! Learned recurring behaviour: does a series repeat every hour, day or week?
//!
//! For each candidate period P (in samples, from the median sampling interval) the series is
//! winsorized (median ± 6 MAD, so a few huge spikes cannot fake or hide a pattern), detrended by
//! a centered moving average of width P (which removes the level and any trend but keeps a
//! pattern of period P), and the autocorrelation of that residual at lag P is computed. A
//! candidate needs at least [`MIN_CYCLES`] full periods of data and an autocorrelation of at
//! least [`MIN_ACF`]. A longer candidate (week over day) wins only when its autocorrelation
//! beats the shorter one's by [`LONGER_MARGIN`], since a daily pattern also repeats weekly.

use super::window::median_of;

/// Full periods of data a candidate needs (a weekly pattern needs three weeks).
pub const MIN_CYCLES: f64 = 3.0;
/// Autocorrelation at the period's lag needed to call the series periodic.
pub const MIN_ACF: f64 = 0.3;
/// A longer period must beat a shorter one's autocorrelation by this much.
pub const LONGER_MARGIN: f64 = 0.1;

const CANDIDATES: [(&str, i64); 3] = [
    ("hourly", 3_600_000_000),
    ("daily", 86_400_000_000),
    ("weekly", 604_800_000_000),
];

/// A learned period.
#[derive(Clone, Debug, PartialEq)]
pub struct Period {
    /// "hourly", "daily" or "weekly".
    pub name: &'static str,
    /// Length in microseconds.
    pub length_us: i64,
    /// Length in samples (at the median sampling interval).
    pub points: usize,
    /// Autocorrelation of the detrended series at this lag.
    pub acf: f64,
}

/// What period detection found, with the candidates that could not be tested.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SeasonReport {
    pub period: Option<Period>,
    /// Candidates skipped for lack of history, e.g. "weekly (needs 21 days, have 9.5)".
    pub untested: Vec<String>,
}

/// Median positive sampling interval in microseconds (0 when undefined).
pub fn median_step(ts: &[i64]) -> i64 {
    let mut d: Vec<f64> = ts
        .windows(2)
        .map(|w| w[1] as f64 - w[0] as f64)
        .filter(|d| *d > 0.0)
        .collect();
    if d.is_empty() {
        return 0;
    }
    median_of(&mut d) as i64
}

fn acf_at(y: &[f64], lag: usize) -> f64 {
    if y.len() <= lag + 2 {
        return 0.0;
    }
    let m = y.iter().sum::<f64>() / y.len() as f64;
    let den: f64 = y.iter().map(|v| (v - m) * (v - m)).sum();
    if den <= 0.0 {
        return 0.0;
    }
    let num: f64 = y[..y.len() - lag]
        .iter()
        .zip(&y[lag..])
        .map(|(a, b)| (a - m) * (b - m))
        .sum();
    num / den
}

/// Finds the series' period, if any (time-sorted timestamps in µs and finite values).
pub fn detect_period(ts: &[i64], x: &[f64]) -> SeasonReport {
    let mut report = SeasonReport::default();
    let n = x.len();
    let step = median_step(ts);
    if n < 8 || step <= 0 {
        return report;
    }
    let span = ts[n - 1] as f64 - ts[0] as f64;
    let mut s = x.to_vec();
    let med = median_of(&mut s);
    for v in s.iter_mut() {
        *v = (*v - med).abs();
    }
    let mad = 1.4826 * median_of(&mut s);
    let (lo, hi) = if mad > 0.0 {
        (med - 6.0 * mad, med + 6.0 * mad)
    } else {
        (f64::NEG_INFINITY, f64::INFINITY)
    };
    let w: Vec<f64> = x.iter().map(|v| v.clamp(lo, hi)).collect();
    let mut prefix = Vec::with_capacity(n + 1);
    prefix.push(0.0);
    for v in &w {
        prefix.push(prefix.last().unwrap() + v);
    }
    let mut best: Option<Period> = None;
    for (name, len) in CANDIDATES {
        let p = (len as f64 / step as f64).round();
        if p < 4.0 {
            continue; // fewer than 4 samples a period: nothing to learn at this resolution
        }
        if span < MIN_CYCLES * len as f64 || (n as f64) < MIN_CYCLES * p {
            report.untested.push(format!(
                "{name} (needs {:.0} days of history, have {:.1})",
                MIN_CYCLES * len as f64 / 86_400e6,
                span / 86_400e6
            ));
            continue;
        }
        let p = p as usize;
        let h = p / 2;
        let y: Vec<f64> = (h..n - (p - h))
            .map(|i| w[i] - (prefix[i - h + p] - prefix[i - h]) / p as f64)
            .collect();
        let acf = acf_at(&y, p);
        if acf < MIN_ACF {
            continue;
        }
        let better = match &best {
            None => true,
            Some(b) => acf >= b.acf + LONGER_MARGIN,
        };
        if better {
            best = Some(Period {
                name,
                length_us: len,
                points: p,
                acf,
            });
        }
    }
    report.period = best;
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    const MIN: i64 = 60_000_000;
    const H: i64 = 3_600_000_000;

    fn noise(n: usize, seed: u64) -> Vec<f64> {
        let mut r = crate::rng::Rng::new(seed);
        (0..n).map(|_| r.normal()).collect()
    }

    #[test]
    fn white_noise_has_no_period() {
        let x = noise(24 * 30, 1);
        let ts: Vec<i64> = (0..x.len() as i64).map(|i| i * H).collect();
        assert_eq!(detect_period(&ts, &x).period, None);
    }

    #[test]
    fn a_daily_wave_is_daily_and_weekly_is_untested_with_ten_days() {
        let mut x = noise(24 * 10, 2);
        for (i, v) in x.iter_mut().enumerate() {
            *v += 5.0 * (i as f64 * std::f64::consts::TAU / 24.0).sin();
        }
        let ts: Vec<i64> = (0..x.len() as i64).map(|i| i * H).collect();
        let r = detect_period(&ts, &x);
        assert_eq!(
            r.period.as_ref().map(|p| (p.name, p.points)),
            Some(("daily", 24))
        );
        assert!(r.untested.iter().any(|u| u.starts_with("weekly")), "{r:?}");
    }

    #[test]
    fn an_hourly_job_spike_is_hourly() {
        let mut x = noise(60 * 24 * 4, 3);
        for i in (17..x.len()).step_by(60) {
            x[i] += 30.0;
        }
        let ts: Vec<i64> = (0..x.len() as i64).map(|i| i * MIN).collect();
        let r = detect_period(&ts, &x);
        assert_eq!(r.period.map(|p| p.name), Some("hourly"));
    }

    #[test]
    fn a_trend_alone_is_not_a_period() {
        let x: Vec<f64> = noise(24 * 20, 4)
            .iter()
            .enumerate()
            .map(|(i, v)| v + i as f64 * 0.5)
            .collect();
        let ts: Vec<i64> = (0..x.len() as i64).map(|i| i * H).collect();
        assert_eq!(detect_period(&ts, &x).period, None);
    }
}
