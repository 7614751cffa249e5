//! Leak-like trends and slow drifts over a whole series (Mann–Kendall + least squares), with
//! time to exhaustion.

use super::{AnomalyEvent, Kind};

/// A leak-like trend over a whole series: significant, monotone and large.
#[derive(Clone, Debug, PartialEq)]
pub struct TrendEvent {
    pub started_at: i64,
    pub ended_at: i64,
    pub fitted_start: f64,
    pub fitted_end: f64,
    pub pct_change: f64,
    pub slope_per_hour: f64,
    pub r2: f64,
    /// Mann–Kendall z statistic (on at most 2,000 evenly spaced points).
    pub mk_z: f64,
    /// When the fitted line reaches `capacity` (Unix µs), if it rises towards it.
    pub exhaustion_at: Option<i64>,
    pub risk: f64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrendEventParams {
    /// Fitted change (percent) above which a significant trend is an event (seed: 30).
    pub pct_threshold: f64,
    /// Minimum R² of the fit: the trend must explain most of the variation.
    pub min_r2: f64,
    /// Minimum |Mann–Kendall z| (3.29 is p < 0.001 two-sided).
    pub min_mk_z: f64,
    /// Capacity for time-to-exhaustion (e.g. 100 for percent metrics).
    pub capacity: Option<f64>,
    /// A significant fitted change of at least this many noise σ (from first differences) is
    /// a drift, whatever its percentage.
    pub drift_sigmas: f64,
}

impl Default for TrendEventParams {
    fn default() -> Self {
        TrendEventParams {
            pct_threshold: 30.0,
            min_r2: 0.6,
            min_mk_z: 3.29,
            capacity: None,
            drift_sigmas: 10.0,
        }
    }
}

/// Kendall's S = Σ_{i<j} sign(x_j − x_i) in O(n log n): each value's rank among the distinct
/// values (equal values, −0 and +0 included, share a rank), and a Fenwick tree of the ranks seen
/// so far counts the earlier values below and above it. `sorted` is `xs` sorted by `total_cmp`.
fn kendall_s(xs: &[f64], sorted: &[f64]) -> i64 {
    let mut distinct: Vec<f64> = Vec::with_capacity(sorted.len());
    for &v in sorted {
        if distinct.last() != Some(&v) {
            distinct.push(v);
        }
    }
    let rank = |v: f64| distinct.partition_point(|&d| d < v); // 0-based; equal values share it
    let mut tree = vec![0i64; distinct.len() + 1];
    let mut s = 0i64;
    for (seen, &v) in xs.iter().enumerate() {
        let r = rank(v);
        // Earlier values with rank < r, and with rank <= r.
        let prefix = |mut k: usize| {
            let mut c = 0;
            while k > 0 {
                c += tree[k];
                k &= k - 1;
            }
            c
        };
        let below = prefix(r);
        let at_or_below = prefix(r + 1);
        s += below - (seen as i64 - at_or_below);
        let mut k = r + 1;
        while k < tree.len() {
            tree[k] += 1;
            k += k & k.wrapping_neg();
        }
    }
    s
}

/// Mann–Kendall trend statistic z (normal approximation with tie correction).
pub fn mann_kendall_z(xs: &[f64]) -> f64 {
    let n = xs.len();
    if n < 3 {
        return 0.0;
    }
    let mut sorted = xs.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let s = kendall_s(xs, &sorted);
    let mut ties = 0.0;
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && sorted[j + 1] == sorted[i] {
            j += 1;
        }
        let t = (j - i + 1) as f64;
        ties += t * (t - 1.0) * (2.0 * t + 5.0);
        i = j + 1;
    }
    let nf = n as f64;
    let var = (nf * (nf - 1.0) * (2.0 * nf + 5.0) - ties) / 18.0;
    if var <= 0.0 {
        return 0.0;
    }
    let sf = s as f64;
    if s > 0 {
        (sf - 1.0) / var.sqrt()
    } else if s < 0 {
        (sf + 1.0) / var.sqrt()
    } else {
        0.0
    }
}

/// A leak (percent rule, upward) or else a drift (noise-σ rule, either way) over the whole
/// series, as an event; `None` when neither holds.
pub fn trend_events(points: &[(i64, f64)], p: &TrendEventParams) -> Option<AnomalyEvent> {
    let as_event = |t: TrendEvent, kind: Kind| AnomalyEvent {
        kind,
        started_at: t.started_at,
        ended_at: t.ended_at,
        peak_at: t.ended_at,
        peak_value: t.fitted_end,
        baseline: t.fitted_start,
        peak_score: t.mk_z,
        points: points.len(),
        p_value: super::risk::normal_two_sided(t.mk_z),
        tests_per_day: 1.0,
        risk: t.risk,
        trend: Some(t),
    };
    if let Some(t) = trend_event(points, p) {
        return Some(as_event(t, Kind::Leak));
    }
    let t = fit(points)?;
    let xs: Vec<f64> = points
        .iter()
        .map(|x| x.1)
        .filter(|v| v.is_finite())
        .collect();
    let noise = super::window::noise_scale(&xs);
    let change = t.fitted_end - t.fitted_start;
    if noise > 0.0
        && change.abs() >= p.drift_sigmas * noise
        && t.r2 >= p.min_r2
        && t.mk_z.abs() >= p.min_mk_z
        && t.mk_z.signum() == change.signum()
    {
        let kind = if change > 0.0 {
            Kind::DriftUp
        } else {
            Kind::DriftDown
        };
        return Some(as_event(t, kind));
    }
    None
}

/// Least-squares fit and Mann–Kendall statistic of time-sorted points, without thresholds.
fn fit(points: &[(i64, f64)]) -> Option<TrendEvent> {
    use crate::detect::{TrendParams, TrendState};
    let pts: Vec<(i64, f64)> = points
        .iter()
        .copied()
        .filter(|(_, v)| v.is_finite())
        .collect();
    if pts.len() < 10 {
        return None;
    }
    let mut st = TrendState::new(TrendParams {
        pct_threshold: 30.0,
    })
    .ok()?;
    for &(t, v) in &pts {
        st.add(t, v);
    }
    let v = st.verdict();
    let step = pts.len().div_ceil(2000);
    let sample: Vec<f64> = pts.iter().step_by(step).map(|x| x.1).collect();
    Some(TrendEvent {
        started_at: v.first_at?,
        ended_at: v.last_at?,
        fitted_start: v.fitted_start?,
        fitted_end: v.fitted_end?,
        pct_change: v.pct_change.unwrap_or(f64::NAN),
        slope_per_hour: v.slope_per_hour?,
        r2: v.r2?,
        mk_z: mann_kendall_z(&sample),
        exhaustion_at: None,
        risk: 0.0,
    })
}

/// A leak-like upward trend over the whole series (time-sorted points), or `None`.
pub fn trend_event(points: &[(i64, f64)], p: &TrendEventParams) -> Option<TrendEvent> {
    use crate::detect::{TrendParams, TrendState};
    let pts: Vec<(i64, f64)> = points
        .iter()
        .copied()
        .filter(|(_, v)| v.is_finite())
        .collect();
    if pts.len() < 10 {
        return None;
    }
    let mut st = TrendState::new(TrendParams {
        pct_threshold: p.pct_threshold,
    })
    .ok()?;
    for &(t, v) in &pts {
        st.add(t, v);
    }
    let v = st.verdict();
    let (pct, slope_h, r2) = (v.pct_change?, v.slope_per_hour?, v.r2?);
    if !(pct > p.pct_threshold && r2 >= p.min_r2) {
        return None;
    }
    let step = pts.len().div_ceil(2000);
    let sample: Vec<f64> = pts.iter().step_by(step).map(|x| x.1).collect();
    let z = mann_kendall_z(&sample);
    if z < p.min_mk_z {
        return None;
    }
    let (fs, fe) = (v.fitted_start?, v.fitted_end?);
    let last = v.last_at?;
    let exhaustion_at = match p.capacity {
        Some(cap) if slope_h > 0.0 && fe < cap => {
            let hours = (cap - fe) / slope_h;
            (hours.is_finite() && hours < 24.0 * 365.0 * 100.0).then(|| {
                let at = last + (hours * 3_600_000_000.0) as i64;
                at - at.rem_euclid(1_000_000) // whole seconds
            })
        }
        Some(cap) if fe >= cap => Some(last),
        _ => None,
    };
    Some(TrendEvent {
        started_at: v.first_at?,
        ended_at: last,
        fitted_start: fs,
        fitted_end: fe,
        pct_change: pct,
        slope_per_hour: slope_h,
        r2,
        mk_z: z,
        exhaustion_at,
        risk: v.risk,
    })
}

#[cfg(test)]
mod trend_tests {
    use super::*;
    const H: i64 = 3_600_000_000;

    #[test]
    fn mann_kendall_reference() {
        // Strictly increasing n = 10: S = 45, var = 10·9·25/18 = 125, z = 44/√125.
        let xs: Vec<f64> = (0..10).map(|i| i as f64).collect();
        assert!((mann_kendall_z(&xs) - 44.0 / 125f64.sqrt()).abs() < 1e-12);
        let rev: Vec<f64> = xs.iter().rev().copied().collect();
        assert!((mann_kendall_z(&rev) + 44.0 / 125f64.sqrt()).abs() < 1e-12);
        assert_eq!(mann_kendall_z(&[1.0; 20]), 0.0);
    }

    /// The O(n²) definition, as the reference for [`kendall_s`].
    fn kendall_s_naive(xs: &[f64]) -> i64 {
        let mut s = 0;
        for i in 0..xs.len() {
            for j in i + 1..xs.len() {
                s += match xs[j].partial_cmp(&xs[i]) {
                    Some(std::cmp::Ordering::Greater) => 1,
                    Some(std::cmp::Ordering::Less) => -1,
                    _ => 0,
                };
            }
        }
        s
    }

    #[test]
    fn kendall_s_equals_the_pairwise_definition_with_ties_and_signed_zeros() {
        let mut r = crate::rng::Rng::new(7);
        for case in 0..300 {
            let n = 1 + (r.uniform() * 120.0) as usize;
            // Few distinct values (many ties), continuous values, and ±0.
            let xs: Vec<f64> = (0..n)
                .map(|_| match case % 3 {
                    0 => (r.uniform() * 5.0).floor(),
                    1 => r.normal() * 1e6,
                    _ => [0.0, -0.0, 1.0, -1.0][(r.uniform() * 4.0) as usize % 4],
                })
                .collect();
            let mut sorted = xs.clone();
            sorted.sort_by(|a, b| a.total_cmp(b));
            assert_eq!(kendall_s(&xs, &sorted), kendall_s_naive(&xs), "{xs:?}");
        }
    }

    #[test]
    fn leak_with_exhaustion_time() {
        let mut r = crate::rng::Rng::new(1);
        // 40% → 80% over 40 hours: +1 point/hour; 100% is 20 hours after the end.
        let pts: Vec<(i64, f64)> = (0..=400)
            .map(|i| (i * H / 10, 40.0 + i as f64 / 10.0 + 0.5 * r.normal()))
            .collect();
        let p = TrendEventParams {
            capacity: Some(100.0),
            ..Default::default()
        };
        let e = trend_event(&pts, &p).expect("a leak");
        assert!((e.pct_change - 100.0).abs() < 5.0, "{e:?}");
        let hours_left = (e.exhaustion_at.unwrap() - e.ended_at) as f64 / H as f64;
        assert!((hours_left - 20.0).abs() < 1.5, "{hours_left}");
    }

    #[test]
    fn noise_and_flat_series_are_not_leaks() {
        let mut r = crate::rng::Rng::new(2);
        let noise: Vec<(i64, f64)> = (0..500)
            .map(|i| (i * H, 50.0 + 10.0 * r.normal()))
            .collect();
        assert!(trend_event(&noise, &TrendEventParams::default()).is_none());
        // A flat series, and one too short to judge, are not leaks either.
        let flat: Vec<(i64, f64)> = (0..100).map(|i| (i * H, 5.0)).collect();
        assert!(trend_event(&flat, &TrendEventParams::default()).is_none());
        assert!(trend_event(&flat[..5], &TrendEventParams::default()).is_none());
    }
}
