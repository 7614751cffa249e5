//! Involved metrics: which metrics of a host deviated while an incident lasted, whether or not
//! they crossed a detector's threshold on their own.
//!
//! An incident names the metrics whose anomalies formed it; an SRE also wants the other
//! metrics of the host that moved at the same time (the "related metrics" of a monitoring
//! tool). For each metric: its baseline is its samples before the incident (the caller passes
//! a day of them), summarized by the median and a robust scale; its score is the largest
//! `|value − median| / scale` during the incident. The scale is the MAD (×1.4826, the normal
//! σ), floored at a quarter of the baseline's standard deviation (a metric idle at one value
//! most of the time has MAD 0) and at 1/1000 of the median's magnitude. A metric is involved
//! when its score is at least [`Z_INVOLVED`]: five robust σ, rare for one metric in the
//! minutes of an incident, however noisy it is, because the scale is its own.

use crate::usable_value;

/// Robust σ during the incident for a metric to count as involved.
pub const Z_INVOLVED: f64 = 5.0;
/// Baseline samples needed before a metric is judged.
pub const MIN_BASELINE: usize = 30;
/// The scale floor as a fraction of the baseline's standard deviation.
pub const SD_FLOOR_FRAC: f64 = 0.25;
/// The scale floor as a fraction of the baseline median's magnitude.
pub const MEDIAN_FLOOR_FRAC: f64 = 1e-3;

/// One involved metric.
#[derive(Clone, Debug, PartialEq)]
pub struct Involved {
    /// Index of the series in the caller's slice.
    pub metric: usize,
    /// Largest robust z during the incident (signed: negative for a fall).
    pub score: f64,
    /// When it was reached (Unix µs) and the value there.
    pub peak_at: i64,
    pub value: f64,
    /// Baseline median.
    pub baseline: f64,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_unstable_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The involved metrics among `series` (each a list of (Unix µs, value), any order) during
/// `[from, until]`, judged against their samples before `from`; strongest first (ties by
/// index). Series with fewer than [`MIN_BASELINE`] baseline samples or none in the window are
/// not judged. `tick` is called once per series (interrupt checks).
pub fn involved(
    series: &[Vec<(i64, f64)>],
    from: i64,
    until: i64,
    tick: &mut dyn FnMut(),
) -> Vec<Involved> {
    let mut out = Vec::new();
    for (k, s) in series.iter().enumerate() {
        tick();
        let mut base: Vec<f64> = s
            .iter()
            .filter(|p| p.0 < from && usable_value(p.1))
            .map(|p| p.1)
            .collect();
        if base.len() < MIN_BASELINE {
            continue;
        }
        let n = base.len() as f64;
        let mean = base.iter().sum::<f64>() / n;
        let sd = (base.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n).sqrt();
        let med = median(&mut base);
        let mut dev: Vec<f64> = base.iter().map(|x| (x - med).abs()).collect();
        let mad = 1.4826 * median(&mut dev);
        let scale = mad
            .max(SD_FLOOR_FRAC * sd)
            .max(MEDIAN_FLOOR_FRAC * med.abs())
            .max(f64::MIN_POSITIVE);
        let peak = s
            .iter()
            .filter(|p| p.0 >= from && p.0 <= until && usable_value(p.1))
            .map(|p| ((p.1 - med) / scale, p))
            .max_by(|a, b| a.0.abs().total_cmp(&b.0.abs()).then(b.1 .0.cmp(&a.1 .0)));
        if let Some((z, p)) = peak {
            if z.is_finite() && z.abs() >= Z_INVOLVED {
                out.push(Involved {
                    metric: k,
                    score: z,
                    peak_at: p.0,
                    value: p.1,
                    baseline: med,
                });
            }
        }
    }
    out.sort_by(|a, b| {
        b.score
            .abs()
            .total_cmp(&a.score.abs())
            .then(a.metric.cmp(&b.metric))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    const MIN: i64 = 60_000_000;

    fn noisy(k: u64, n: i64) -> Vec<(i64, f64)> {
        let mut r = crate::rng::Rng::new(k);
        (0..n).map(|i| (i * MIN, 10.0 + r.normal())).collect()
    }

    #[test]
    fn names_the_metrics_that_moved_during_the_incident_strongest_first() {
        let mut a = noisy(1, 200);
        let mut b = noisy(2, 200);
        let c = noisy(3, 200);
        // The incident: minutes 150-159. a rises 12 σ, b falls 7 σ; c stays normal.
        for p in a.iter_mut().filter(|p| (150..160).contains(&(p.0 / MIN))) {
            p.1 += 12.0;
        }
        for p in b.iter_mut().filter(|p| p.0 / MIN == 155) {
            p.1 -= 7.0;
        }
        let got = involved(&[a, b, c], 150 * MIN, 159 * MIN, &mut || {});
        assert_eq!(got.iter().map(|g| g.metric).collect::<Vec<_>>(), vec![0, 1]);
        assert!(got[0].score > 8.0 && got[1].score < -5.0, "{got:?}");
        assert_eq!(got[1].peak_at, 155 * MIN);
        assert!((got[0].baseline - 10.0).abs() < 0.5);
    }

    #[test]
    fn idle_metrics_count_when_they_move_and_short_histories_are_not_judged() {
        // Idle at 0 (MAD 0, sd 0): a move to 1 during the incident is involved, no move is not.
        let mut idle: Vec<(i64, f64)> = (0..100).map(|i| (i * MIN, 0.0)).collect();
        let still = idle.clone();
        idle[95].1 = 1.0;
        let short: Vec<(i64, f64)> = (70..100)
            .map(|i| (i * MIN, if i == 95 { 50.0 } else { 1.0 }))
            .collect();
        let got = involved(&[idle, still, short], 90 * MIN, 99 * MIN, &mut || {});
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].metric, 0);
        // Nothing in the window, NaN and infinities: not involved, no panic.
        let odd = vec![(0, f64::NAN), (MIN, f64::INFINITY)];
        assert!(involved(&[odd, vec![]], 0, MIN, &mut || {}).is_empty());
    }

    #[test]
    fn scale_is_each_metrics_own() {
        // The same 6-unit move is involved on a quiet metric (σ 1) and not on a noisy one (σ 3).
        let quiet = noisy(4, 300);
        let mut r = crate::rng::Rng::new(5);
        let loud: Vec<(i64, f64)> = (0..300)
            .map(|i| (i * MIN, 10.0 + 3.0 * r.normal()))
            .collect();
        let bump = |mut s: Vec<(i64, f64)>| {
            s[290].1 = 10.0 + 6.0;
            s
        };
        let got = involved(&[bump(quiet), bump(loud)], 285 * MIN, 299 * MIN, &mut || {});
        assert_eq!(got.iter().map(|g| g.metric).collect::<Vec<_>>(), vec![0]);
    }
}
