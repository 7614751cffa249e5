//! Calibrated risk: one formula for every detector.
//!
//! Each detector turns its evidence into a tail probability `p` of one test (one point, one
//! CUSUM run, one window) under the series' own recent behaviour, and says how many such tests
//! it makes a day (`tests_per_day`). The chance of something at least as extreme on one day of
//! normal data is `p_day = min(1, p · tests_per_day)` (Bonferroni: the adjustment for how many
//! points were tested). A series that has already had `k` similar events (same kind, at least
//! [`SIMILAR`] × this one's |score|, i.e. at least as extreme) in `d` days of history is evidence of its own normality: its
//! empirical rate `k / d` replaces `p_day` when larger. Then
//!
//! `risk = clamp(log10(1 / p_day) / RETURN_DECADES, 0, 1)`
//!
//! i.e. the base-10 logarithm of the expected waiting time in days between such events, over
//! three decades: risk 0 = happens daily, 0.5 ≈ once a month, 0.8 ≈ once in 8 months, 1 = once
//! in 1,000 days or rarer.

/// Decades of return period that span risk 0..1 (10^3 days ≈ 2.7 years).
pub const RETURN_DECADES: f64 = 3.0;
/// An earlier event counts as similar when its |score| is at least this fraction of this one's.
pub const SIMILAR: f64 = 1.0;

/// Two-sided tail probability of Student's t with 4 degrees of freedom: the reference for a
/// robust z-score of real telemetry, whose tails are heavier than the normal's.
pub fn t4_two_sided(z: f64) -> f64 {
    let t = z.abs();
    if !t.is_finite() {
        return 0.0;
    }
    // CDF of t4 with s = t/√(4 + t²): F(t) = 1/2 + (3/4)·s·(1 − s²/3).
    let s = t / (4.0 + t * t).sqrt();
    let upper = 0.5 - 0.75 * s * (1.0 - s * s / 3.0);
    (2.0 * upper).clamp(0.0, 1.0)
}

/// Tail probability of one point's robust z-score: a Laplace (double exponential) law with
/// the same MAD, `exp(−|z| · 1.4826 · ln 2)`. Real telemetry's residuals have tails heavier
/// than the normal's (which would call a 6σ point a once-in-500-million event) and lighter than
/// t4's (under which nothing on minute data is ever rare).
pub fn point_tail(z: f64) -> f64 {
    (-z.abs() * 1.4826 * std::f64::consts::LN_2).exp()
}

/// The series' own tail of |z|: peaks over threshold with an exponential excess (a generalized
/// Pareto tail of shape 0), fitted to the scores of the analysed span (history and report
/// window: in live use, mostly the lookback history). Above [`TAIL_U`],
/// `P(|Z| ≥ z) = rate_u · exp(−(z − u) / β)` with `rate_u` the fraction of scores above u and β
/// the median excess / ln 2 (robust to the anomalies among them). With fewer than
/// [`TAIL_MIN_EXCESS`] exceedances the Laplace reference [`point_tail`] is used.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tail {
    pub rate_u: f64,
    pub beta: f64,
}

/// Threshold of the peaks-over-threshold fit (robust σ).
pub const TAIL_U: f64 = 3.0;
/// Exceedances needed to fit the series' own tail.
pub const TAIL_MIN_EXCESS: usize = 10;

impl Tail {
    pub fn fit(z: &[f64]) -> Option<Tail> {
        let finite = z.iter().filter(|v| v.is_finite()).count();
        let ex: Vec<f64> = z
            .iter()
            .filter(|v| v.is_finite() && v.abs() > TAIL_U)
            .map(|v| v.abs() - TAIL_U)
            .collect();
        Self::from_excesses(&ex, finite)
    }

    /// The tail from the excesses over [`TAIL_U`] among `finite` scores.
    pub fn from_excesses(ex: &[f64], finite: usize) -> Option<Tail> {
        if ex.len() < TAIL_MIN_EXCESS || finite == 0 {
            return None;
        }
        let mut ex = ex.to_vec();
        let beta = super::window::median_of(&mut ex) / std::f64::consts::LN_2;
        // Never lighter than the Laplace reference: a quiet history does not make small
        // excursions rare.
        let lap = point_tail(TAIL_U);
        let rate_u = ex.len() as f64 / finite as f64;
        Some(Tail {
            rate_u: rate_u.max(lap),
            beta: beta.max(1.0 / (1.4826 * std::f64::consts::LN_2)),
        })
    }

    pub fn p(&self, z: f64) -> f64 {
        let a = z.abs();
        if a <= TAIL_U {
            return 1.0;
        }
        (self.rate_u * (-(a - TAIL_U) / self.beta).exp()).min(1.0)
    }
}

/// Two-sided normal tail probability.
pub fn normal_two_sided(z: f64) -> f64 {
    (2.0 * crate::detect::normal_sf(z.abs())).clamp(0.0, 1.0)
}

/// Risk from a one-test tail probability, tests a day, and the series' own rate (events a day)
/// of similar earlier events.
pub fn risk(p: f64, tests_per_day: f64, similar_per_day: f64) -> f64 {
    let p_day = (p * tests_per_day.max(1.0)).max(similar_per_day).min(1.0);
    if p_day <= 0.0 {
        return 1.0;
    }
    ((1.0 / p_day).log10() / RETURN_DECADES).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t4_tail_matches_the_t_table_and_its_density() {
        // Textbook critical values of t with 4 degrees of freedom (two-sided).
        for (t, p) in [(2.776, 0.05), (4.604, 0.01), (8.610, 0.001), (2.132, 0.10)] {
            let got = t4_two_sided(t);
            assert!((got - p).abs() < 2e-3 * p.max(0.01), "t {t}: {got} vs {p}");
        }
        // The derivative of the tail is twice the density (3/8)(1 + t²/4)^(-5/2).
        for z in [0.3, 1.0, 3.0, 10.0] {
            let h = 1e-5;
            let d = (t4_two_sided(z - h) - t4_two_sided(z + h)) / (2.0 * h);
            let f = 0.75 * (1.0 + z * z / 4.0).powf(-2.5);
            assert!((d - f).abs() < 1e-6, "z {z}: {d} vs {f}");
        }
        assert_eq!(t4_two_sided(f64::INFINITY), 0.0);
        assert!((t4_two_sided(0.0) - 1.0).abs() < 1e-15);
    }

    #[test]
    fn risk_is_monotone_and_spread() {
        // Rarer is riskier; more tests a day or a frequent history is less risky.
        let r: Vec<f64> = [0.5, 1e-1, 1e-2, 1e-3]
            .iter()
            .map(|p| risk(*p, 1.0, 0.0))
            .collect();
        assert!(r.windows(2).all(|w| w[0] < w[1]), "{r:?}");
        assert!(risk(1e-6, 1440.0, 0.0) < risk(1e-6, 24.0, 0.0));
        assert!(risk(1e-9, 24.0, 0.5) < 0.11);
        assert_eq!(risk(0.5, 24.0, 0.0), 0.0);
        assert_eq!(risk(0.0, 24.0, 0.0), 1.0);
        // Once a month ≈ 0.5.
        assert!((risk(1.0 / 31.6, 1.0, 0.0) - 0.5).abs() < 0.01);
    }
}
