//! Collective (multivariate) anomalies of one host: metrics that move *together*, each by an
//! amount its own detector calls normal.
//!
//! 1. **Per-metric scores.** Each metric is scored exactly as the single-series detector does
//!    (learned period, trend removed, robust z against the seasonal level of
//!    [`super::level`], without the CUSUM restart so a shift stays visible), and τ = (1 + ρ)/(1 − ρ) is measured from the lag-1 autocorrelation ρ of
//!    its scores.
//! 2. **Windowed evidence.** On the host's common time grid (the median sampling step), each
//!    metric's evidence at time t is the mean of its scores over the last [`WINDOW`] steps,
//!    standardized by its own wandering: `u = mean · √(count / τ)` (about N(0, 1) for a normal
//!    metric), clipped to ±[`CLIP`] so one metric alone cannot carry the host.
//! 3. **Host statistic.** `A(t) = mean over metrics of u²` (≈ 1 normally; ten of 38 metrics at
//!    1.5σ for ten minutes push it to ≈ 6). It is judged against the host's own history: robust
//!    z of A over the analysed span (median/MAD), flagged at [`THRESHOLD`] when at least
//!    [`MIN_MEMBERS`] metrics have |u| ≥ [`MOVING`] at that time.
//! 4. **Events and members.** Flagged times closer than [`MERGE_GAP`] steps form one event;
//!    its members are the metrics with |u| ≥ [`MEMBER_U`] at its peak, ranked by their share of
//!    Σu²; each member's onset is Page's CUSUM change-point estimate on its own scores within
//!    the event (and the window before it), so the metric that moved first can lead the incident.
//! 5. **Risk** as for every detector ([`super::risk`]): the host statistic's own exponential
//!    tail gives the tail probability of the peak, with [`super::risk::risk`]'s multiple-testing
//!    (one test per window a day) and recurrence (earlier events as strong) adjustments.

use super::{level, risk, window::median_of, EventParams, SeasonReport};

/// Steps in the moving window of a metric's evidence.
pub const WINDOW: usize = 10;
/// A metric's standardized window mean is clipped to ±this.
pub const CLIP: f64 = 6.0;
/// Robust z of the host statistic that flags a time.
pub const THRESHOLD: f64 = 8.0;
/// |u| at an event's peak that makes a metric one of its members (a normal metric gets there
/// by chance about once in 370 events).
pub const MEMBER_U: f64 = 3.0;
/// |u| of a metric that counts as moving at a time, and |z| that marks its onset.
pub const MOVING: f64 = 2.0;
/// Metrics that must move for a collective event (one metric alone is the per-metric
/// detector's business).
pub const MIN_MEMBERS: usize = 2;
/// Metrics with scores a host needs for collective detection.
pub const MIN_METRICS: usize = 3;
/// Grid cells (metric × time) per input point at most; a sparse mix of series coarsens the grid.
pub const MAX_CELLS_PER_POINT: usize = 16;
/// Flagged times at most this many steps apart are one event.
pub const MERGE_GAP: usize = 3;

/// The collective detector's settings; [`Default`] gives the documented constants.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CollectiveParams {
    pub window: usize,
    pub clip: f64,
    pub threshold: f64,
    pub member_u: f64,
    pub moving: f64,
    pub min_members: usize,
    pub merge_gap: usize,
}

impl Default for CollectiveParams {
    fn default() -> Self {
        CollectiveParams {
            window: WINDOW,
            clip: CLIP,
            threshold: THRESHOLD,
            member_u: MEMBER_U,
            moving: MOVING,
            min_members: MIN_MEMBERS,
            merge_gap: MERGE_GAP,
        }
    }
}

/// One metric's part in a collective event.
#[derive(Clone, Debug, PartialEq)]
pub struct Member {
    /// Index of the metric in the caller's list.
    pub metric: usize,
    /// When it started to move: the CUSUM change point of its scores (Unix µs).
    pub onset: i64,
    /// Its standardized evidence u at the event's peak (signed: up or down).
    pub peak_u: f64,
    /// Share of the event's Σu² (0..1).
    pub share: f64,
    /// Its value and expected value at the event's peak.
    pub value: f64,
    pub baseline: f64,
}

/// A collective event of one host.
#[derive(Clone, Debug, PartialEq)]
pub struct CollectiveEvent {
    pub started_at: i64,
    pub ended_at: i64,
    pub peak_at: i64,
    /// Robust z of the host statistic at the peak.
    pub score: f64,
    pub p_value: f64,
    pub tests_per_day: f64,
    pub risk: f64,
    /// Members, largest share first.
    pub members: Vec<Member>,
}

/// One metric's scores as the collective detector takes them ([`score_series`], or
/// [`super::analyze_scored`] beside the metric's own analysis).
pub struct Scored {
    ts: Vec<i64>,
    x: Vec<f64>,
    z: Vec<f64>,
    baseline: Vec<f64>,
    tau: f64,
    step: i64,
}

impl Scored {
    /// From a level scan without a CUSUM of the series' time-sorted points (`ts`, `x`), on
    /// the values less the trend of slope `slope_us` (value units a µs).
    pub(crate) fn new(ts: Vec<i64>, x: Vec<f64>, s: level::Scores, slope_us: f64) -> Scored {
        let tau = level::tau_of(&s.z);
        let t0 = ts[0];
        let baseline = ts
            .iter()
            .zip(&s.baseline)
            .map(|(t, b)| b + slope_us * (*t as f64 - t0 as f64))
            .collect();
        Scored {
            step: super::season::median_step(&ts),
            ts,
            x,
            z: s.z,
            baseline,
            tau,
        }
    }
}

/// A metric's scores for the collective detector (`None` with too little history): prepared
/// as the single-series detector prepares it, and scanned without a CUSUM.
pub fn score_series(
    points: &[(i64, f64)],
    p: &EventParams,
    tick: &mut dyn FnMut(),
) -> Option<Scored> {
    let mut season = SeasonReport::default();
    let prep = super::prepare(points, p, &mut season)?;
    let q = super::window::quantum(&prep.xd);
    let sh = level::shared(&prep.ts, &prep.xd, q, prep.period_us, p, tick);
    let (s, _, _) = level::scan(
        &prep.ts,
        &prep.xd,
        &sh,
        p,
        None, // no CUSUM: a shift must not become the new normal within the event
        prep.per_day,
        tick,
    );
    Some(Scored::new(prep.ts, prep.x, s, prep.slope_us))
}

/// Collective events of one host from its metrics' points (one list per metric, any order).
/// Events are reported when they end at or after `p.report_from` and have risk ≥ `p.min_risk`.
pub fn collective_events(
    series: &[Vec<(i64, f64)>],
    p: &EventParams,
    tick: &mut dyn FnMut(),
) -> Vec<CollectiveEvent> {
    collective_events_with(series, p, &CollectiveParams::default(), tick)
}

/// [`collective_events`] with explicit settings.
pub fn collective_events_with(
    series: &[Vec<(i64, f64)>],
    p: &EventParams,
    cp: &CollectiveParams,
    tick: &mut dyn FnMut(),
) -> Vec<CollectiveEvent> {
    let scored: Vec<Option<Scored>> = series
        .iter()
        .map(|pts| score_series(pts, p, tick))
        .collect();
    collective_events_scored(scored, p, cp, tick)
}

/// [`collective_events_with`] of metrics already scored (one element a metric; `None`: too
/// little history), as [`score_series`] or [`super::analyze_scored`] with parameters that
/// score as `p` does ([`super::scores_as`]) give them.
pub fn collective_events_scored(
    scored: Vec<Option<Scored>>,
    p: &EventParams,
    cp: &CollectiveParams,
    tick: &mut dyn FnMut(),
) -> Vec<CollectiveEvent> {
    let CollectiveParams {
        window,
        clip,
        threshold,
        member_u,
        moving,
        min_members,
        merge_gap,
    } = *cp;
    let scored: Vec<(usize, Scored)> = scored
        .into_iter()
        .enumerate()
        .filter_map(|(i, s)| s.map(|s| (i, s)))
        .collect();
    if scored.len() < MIN_METRICS {
        return Vec::new();
    }
    // The common grid: the median step of the metrics, from the earliest point; never more
    // buckets than 4 × the longest series (a stray far timestamp coarsens the grid instead).
    let mut steps: Vec<f64> = scored.iter().map(|(_, s)| s.step as f64).collect();
    let mut step = median_of(&mut steps).max(1.0) as i64;
    let t0 = scored.iter().map(|(_, s)| s.ts[0]).min().unwrap_or(0);
    let t1 = scored
        .iter()
        .map(|(_, s)| *s.ts.last().unwrap())
        .max()
        .unwrap_or(0);
    let longest = scored.iter().map(|(_, s)| s.ts.len()).max().unwrap_or(1);
    let total: usize = scored.iter().map(|(_, s)| s.ts.len()).sum();
    let span = (t1 as i128 - t0 as i128).max(0);
    // Grid cells (metrics × buckets, three f32 arrays each) stay within MAX_CELLS_PER_POINT
    // cells per input point, so memory follows the input whatever the mix of long and short
    // series (the caller reserves the analysis' memory per point).
    let max_buckets = (4 * longest as i128)
        .min((MAX_CELLS_PER_POINT * total) as i128 / scored.len() as i128)
        .max(1);
    if span / step as i128 + 1 > max_buckets {
        step = (span / max_buckets).max(1).min(i64::MAX as i128) as i64;
    }
    let nb = (span / step as i128) as usize + 1;
    let bucket = |t: i64| ((t as i128 - t0 as i128) / step as i128) as usize;

    // Per metric: raw z on the grid, and its evidence u at two scales: the point itself
    // (u = z, for short events) and the window (u = mean · √(count / τ), for small sustained
    // moves), clipped to ±clip.
    let m = scored.len();
    let mut zb: Vec<Vec<f32>> = Vec::with_capacity(m);
    for (_, s) in &scored {
        tick();
        let mut z = vec![f32::NAN; nb];
        for (t, v) in s.ts.iter().zip(&s.z) {
            if v.is_finite() {
                z[bucket(*t)] = *v as f32;
            }
        }
        zb.push(z);
    }
    let scales = [1usize, window.max(2)];
    let mut ub: Vec<Vec<Vec<f32>>> = Vec::with_capacity(scales.len());
    let mut za: Vec<Vec<f64>> = Vec::with_capacity(scales.len());
    let mut movers: Vec<Vec<usize>> = Vec::with_capacity(scales.len());
    for &w in &scales {
        let mut us: Vec<Vec<f32>> = Vec::with_capacity(m);
        for (j, (_, s)) in scored.iter().enumerate() {
            tick();
            let z = &zb[j];
            let mut u = vec![f32::NAN; nb];
            let (mut sum, mut cnt) = (0.0f64, 0usize);
            for b in 0..nb {
                if z[b].is_finite() {
                    sum += z[b] as f64;
                    cnt += 1;
                }
                if b >= w && z[b - w].is_finite() {
                    sum -= z[b - w] as f64;
                    cnt -= 1;
                }
                if cnt > 0 && cnt * 2 >= w {
                    let mean = sum / cnt as f64;
                    let std = if w == 1 {
                        1.0
                    } else {
                        (cnt as f64 / s.tau).sqrt()
                    };
                    u[b] = (mean * std).clamp(-clip, clip) as f32;
                }
            }
            us.push(u);
        }
        // Host statistic A = mean u² and its robust z over the analysed span.
        let mut a = vec![f64::NAN; nb];
        let mut mv = vec![0usize; nb];
        for b in 0..nb {
            if b % 4096 == 0 {
                tick();
            }
            let (mut s2, mut k) = (0.0, 0usize);
            for u in &us {
                let v = u[b];
                if v.is_finite() {
                    s2 += (v as f64) * (v as f64);
                    k += 1;
                    if v.abs() as f64 >= moving {
                        mv[b] += 1;
                    }
                }
            }
            if k >= MIN_METRICS {
                a[b] = s2 / k as f64;
            }
        }
        let mut finite: Vec<f64> = a.iter().copied().filter(|v| v.is_finite()).collect();
        if finite.len() < 3 * window {
            return Vec::new();
        }
        let med = median_of(&mut finite.clone());
        for v in finite.iter_mut() {
            *v = (*v - med).abs();
        }
        // Floor: half the spread A would have with independent normal metrics (√(2/m)).
        let scale = (1.4826 * median_of(&mut finite)).max(0.5 * (2.0 / m as f64).sqrt());
        za.push(a.iter().map(|v| (v - med) / scale).collect());
        ub.push(us);
        movers.push(mv);
    }
    // At each time, the scale with the stronger evidence (among those where enough metrics
    // move).
    let mut best = vec![0usize; nb];
    let mut zc = vec![f64::NAN; nb];
    for b in 0..nb {
        for k in 0..scales.len() {
            let v = za[k][b];
            if v.is_finite() && movers[k][b] >= min_members && (zc[b].is_nan() || v > zc[b]) {
                zc[b] = v;
                best[b] = k;
            }
        }
    }

    // Flagged runs.
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for (b, z) in zc.iter().enumerate() {
        if z.is_finite() && *z >= threshold {
            match runs.last_mut() {
                Some(r) if b <= r.1 + merge_gap => r.1 = b,
                _ => runs.push((b, b)),
            }
        }
    }
    let per_day = 86_400e6 / step as f64;
    // One test a point at scale 1, one a window at the other.
    let tests_per_day = per_day * (1.0 + 1.0 / window.max(2) as f64);
    let tail = risk::Tail::fit(&zc);
    let days_of = |b: usize| ((b as f64 * step as f64) / 86_400e6).max(1.0);
    let mut out: Vec<CollectiveEvent> = Vec::new();
    let mut peaks: Vec<f64> = Vec::new();
    for (lo, hi) in runs {
        tick();
        let peak = (lo..=hi)
            .max_by(|x, y| zc[*x].total_cmp(&zc[*y]))
            .unwrap_or(lo);
        let ub = &ub[best[peak]];
        let from = lo.saturating_sub(3 * window);
        let mut members: Vec<Member> = Vec::new();
        let mut total = 0.0;
        for (j, (idx, s)) in scored.iter().enumerate() {
            let us: Vec<f64> = (lo..=hi)
                .map(|b| ub[j][b] as f64)
                .filter(|v| v.is_finite())
                .collect();
            if us.is_empty() {
                continue;
            }
            let energy: f64 = us.iter().map(|v| v * v).sum();
            total += energy;
            // Evidence at the event's peak (the mean over the run would dilute it with the
            // window's ramp up and down).
            let peak_u = ub[j][peak] as f64;
            if peak_u.is_nan() || peak_u.abs() < member_u {
                continue;
            }
            // Onset: Page's change-point estimate, the last restart of a one-sided CUSUM of
            // its scores (in the event's direction) before the peak.
            let sign = peak_u.signum();
            // The allowance is half the member's own shift (the classic k = δ/2).
            let zs: Vec<f64> = (lo..=hi)
                .map(|b| zb[j][b] as f64)
                .filter(|v| v.is_finite())
                .collect();
            let delta = (zs.iter().sum::<f64>() / zs.len().max(1) as f64).abs();
            let k = (delta / 2.0).max(moving / 4.0);
            let (mut cusum, mut onset_b) = (0.0f64, from);
            for (b, v) in zb[j].iter().enumerate().take(peak + 1).skip(from) {
                if !v.is_finite() {
                    continue;
                }
                cusum = (cusum + sign * *v as f64 - k).max(0.0);
                if cusum == 0.0 {
                    onset_b = b + 1;
                }
            }
            let onset_b = onset_b.min(peak);
            let peak_t = t0.saturating_add((peak as i64).saturating_mul(step));
            let i = s.ts.partition_point(|t| *t < peak_t).min(s.ts.len() - 1);
            members.push(Member {
                metric: *idx,
                onset: t0.saturating_add((onset_b as i64).saturating_mul(step)),
                peak_u,
                share: energy,
                value: s.x[i],
                baseline: s.baseline[i],
            });
        }
        if members.len() < min_members {
            continue;
        }
        for mb in members.iter_mut() {
            mb.share = if total > 0.0 { mb.share / total } else { 0.0 };
        }
        members.sort_by(|x, y| {
            y.share
                .total_cmp(&x.share)
                .then(x.onset.cmp(&y.onset))
                .then(x.metric.cmp(&y.metric))
        });
        let score = zc[peak];
        let p_value = tail.map_or_else(|| risk::point_tail(score), |t| t.p(score));
        let similar = peaks
            .iter()
            .filter(|s| **s >= risk::SIMILAR * score)
            .count();
        let r = risk::risk(p_value, tests_per_day, similar as f64 / days_of(lo));
        peaks.push(score);
        let started_at = members.iter().map(|m| m.onset).min().unwrap_or(0);
        let ended_at = t0.saturating_add((hi as i64).saturating_mul(step));
        out.push(CollectiveEvent {
            started_at,
            ended_at,
            peak_at: t0.saturating_add((peak as i64).saturating_mul(step)),
            score,
            p_value,
            tests_per_day,
            risk: r,
            members,
        });
    }
    out.retain(|e| e.ended_at >= p.report_from && e.risk >= p.min_risk);
    out
}

impl CollectiveEvent {
    /// The summary line of one member, e.g. `db-1:cpu → moved down with 5 other metrics of
    /// the host from 2025-12-13 04:02 UTC to 2025-12-13 04:14 UTC (31% of the evidence, 3.2 σ
    /// at the peak; event 12.4 σ)`.
    pub fn member_summary(&self, host: &str, metric: &str, m: &Member) -> String {
        let at = crate::format_utc_minute;
        let others = self.members.len() - 1;
        format!(
            "{host}:{metric} → moved {} with {others} other metric{} of the host from {} to {} ({:.0}% of the evidence, {:.1} σ at the peak; event {:.1} σ)",
            if m.peak_u < 0.0 { "down" } else { "up" },
            if others == 1 { "" } else { "s" },
            at(m.onset),
            at(self.ended_at),
            100.0 * m.share,
            m.peak_u.abs(),
            self.score
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    const MIN: i64 = 60_000_000;
    const T0: i64 = 1_764_547_200_000_000;

    /// `metrics` series of `n` minutes of N(0, 1) noise plus `f(metric, i)`.
    fn host(metrics: usize, n: usize, f: impl Fn(usize, usize) -> f64) -> Vec<Vec<(i64, f64)>> {
        let mut r = crate::rng::Rng::new(7);
        (0..metrics)
            .map(|m| {
                (0..n)
                    .map(|i| (T0 + i as i64 * MIN, 50.0 + r.normal() + f(m, i)))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn ten_metrics_moving_together_by_one_and_a_half_sigma_are_one_event() {
        // 20 metrics, 3 days of minutes; metrics 0..10 dip 1.5σ for 10 minutes on day 3,
        // metric 4 first (five minutes earlier).
        let start = 2 * 1440 + 600;
        let s = host(20, 3 * 1440, |m, i| {
            let from = if m == 4 { start - 5 } else { start };
            if m < 10 && (from..start + 10).contains(&i) {
                -1.5
            } else {
                0.0
            }
        });
        let ev = collective_events(&s, &EventParams::default(), &mut || {});
        assert_eq!(ev.len(), 1, "{ev:#?}");
        let e = &ev[0];
        let names: Vec<usize> = e.members.iter().map(|m| m.metric).collect();
        assert!(
            names.len() >= 5 && names.iter().all(|m| *m < 10),
            "{names:?}"
        );
        assert!(e.members.iter().all(|m| m.peak_u < 0.0), "all dipped");
        let first = e
            .members
            .iter()
            .min_by_key(|m| (m.onset, m.metric))
            .unwrap();
        assert_eq!(first.metric, 4, "the metric that moved first: {e:#?}");
        assert_eq!(e.started_at, first.onset);
        // Change points of a 1.5σ shift in unit noise are uncertain by a few steps.
        assert!(
            (e.started_at - (T0 + (start as i64 - 5) * MIN)).abs() <= 5 * MIN,
            "{e:#?}"
        );
        assert!(
            (0.0..=1.0).contains(&e.risk) && e.risk > 0.2,
            "risk {}",
            e.risk
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(16))]
        #[test]
        fn scores_taken_from_each_metrics_own_analysis_give_the_same_events(
            seed in 0u64..1_000_000,
            shifts in proptest::collection::vec((0usize..5, 0usize..4000, -6.0f64..6.0, 1usize..600), 0..4),
            spikes in proptest::collection::vec((0usize..5, 0usize..4000, -30.0f64..30.0), 0..6),
            daily in proptest::bool::ANY,
            ramp in proptest::bool::ANY,
            dip in 0usize..4000,
        ) {
            // Five metrics of 3 days of minutes: noise, maybe a daily wave, maybe a ramp on
            // metric 0, level shifts (CUSUM alarms: the rescan path) and spikes, and four of
            // them dipping 1.5σ together for ten minutes.
            let mut r = crate::rng::Rng::new(seed);
            let n = 3 * 1440;
            let series: Vec<Vec<(i64, f64)>> = (0..5)
                .map(|m| {
                    (0..n)
                        .map(|i| {
                            let mut v = 50.0 + r.normal();
                            if daily {
                                v += 5.0 * (i as f64 * std::f64::consts::TAU / 1440.0).sin();
                            }
                            if ramp && m == 0 {
                                v += i as f64 * 0.01;
                            }
                            for (k, at, size, len) in &shifts {
                                if *k == m && i >= *at && i < at + len {
                                    v += size;
                                }
                            }
                            for (k, at, size) in &spikes {
                                if *k == m && i == *at {
                                    v += size;
                                }
                            }
                            if m < 4 && (dip..dip + 10).contains(&i) {
                                v -= 1.5;
                            }
                            (T0 + i as i64 * MIN, v)
                        })
                        .collect()
                })
                .collect();
            let p = EventParams { min_risk: 0.0, ..EventParams::default() };
            let mut scored = Vec::new();
            for pts in &series {
                let (analysis, s) = crate::events::analyze_scored(pts, &p, &mut || {});
                proptest::prop_assert_eq!(
                    format!("{:?}", analysis),
                    format!("{:?}", crate::events::analyze(pts, &p))
                );
                scored.push(s);
            }
            let shared = collective_events_scored(scored, &p, &CollectiveParams::default(), &mut || {});
            proptest::prop_assert_eq!(
                format!("{shared:?}"),
                format!("{:?}", collective_events(&series, &p, &mut || {}))
            );
        }
    }

    #[test]
    fn scoring_agrees_whatever_the_reporting_settings_but_not_with_another_window() {
        let d = EventParams::default();
        let mut reporting = EventParams {
            min_risk: 0.9,
            report_from: 12345,
            ..d
        };
        reporting.trend.capacity = Some(100.0);
        assert!(crate::events::scores_as(&d, &reporting));
        assert!(!crate::events::scores_as(
            &d,
            &EventParams { window: 100, ..d }
        ));
        assert!(!crate::events::scores_as(
            &d,
            &EventParams {
                threshold: 6.0,
                ..d
            }
        ));
    }

    #[test]
    fn many_short_series_beside_a_long_one_keep_the_grid_small() {
        // One metric of 20,000 points and 2,000 metrics of 30 points spread over the same
        // span: without the cell bound the grid would be 2,001 × 20,000 cells.
        let mut s = host(1, 20_000, |_, _| 0.0);
        for k in 0..2_000 {
            s.push(
                (0..30)
                    .map(|i| (T0 + (i * 600 + k) as i64 * MIN, 50.0))
                    .collect(),
            );
        }
        let ev = collective_events(&s, &EventParams::default(), &mut || {});
        assert!(ev.iter().all(|e| (0.0..=1.0).contains(&e.risk)));
    }

    #[test]
    fn one_metric_alone_or_plain_noise_is_not_collective() {
        let start = 2 * 1440 + 600;
        let alone = host(20, 3 * 1440, |m, i| {
            if m == 3 && (start..start + 10).contains(&i) {
                -1.5
            } else {
                0.0
            }
        });
        assert!(collective_events(&alone, &EventParams::default(), &mut || {}).is_empty());
        let noise = host(20, 3 * 1440, |_, _| 0.0);
        assert!(collective_events(&noise, &EventParams::default(), &mut || {}).is_empty());
        // Too few metrics: nothing to combine.
        let two = host(2, 3 * 1440, |_, i| if i > 4000 { 3.0 } else { 0.0 });
        assert!(collective_events(&two, &EventParams::default(), &mut || {}).is_empty());
    }
}
