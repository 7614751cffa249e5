//! The level detectors: robust point scores (spikes, drops, short level excursions) and a
//! two-sided CUSUM on the same scores (persistent level shifts up and down, small ones too).
//!
//! **Baseline.** Without a period, the median of the trailing `window` raw values (all of
//! them: a single spike does not move a median, while a persistent shift becomes the new normal
//! after half a window). With a learned period, the median of the same phase in the
//! [`PHASES`] nearest earlier periods (later ones while fewer earlier exist), by timestamp, raw
//! values included: a pattern that recurs is normal by definition.
//!
//! **Scale.** 1.4826 · MAD of the trailing `scale_window` residuals of non-anomalous points, floored
//! by the series' noise level (first differences) and its resolution.
//!
//! **Score** `z = (x − baseline) / scale`. Points with `|z| ≥ threshold` (in the allowed
//! direction) are anomalous; anomalous points at most `merge_gap` apart form one event.
//!
//! **CUSUM** (Page 1954), chosen over Bayesian online change points because it is O(1) a point,
//! has two parameters with a textbook meaning (k = half the smallest shift worth finding, in σ;
//! h = the decision interval) and needs no prior on run lengths. It runs on the scores clipped
//! to ±[`CUSUM_CLIP`] (so one spike adds at most a few units and is never a level shift),
//! divided by √τ where τ = (1 + ρ)/(1 − ρ) from the lag-1 autocorrelation ρ of the scores
//! (an AR(1) series wanders; its sums vary τ times more than white noise's).

use super::risk;
use super::window::{noise_scale, quantum, SortedWindow};
use super::{AnomalyEvent, Direction, EventParams, Kind};
use std::collections::VecDeque;

/// Work (window elements moved) between two calls of the caller's interrupt check: a point
/// costs O(window), so the check comes every TICK_WORK / window points (4096 at the default
/// window, every few points at a window of 100,000), a fraction of a millisecond apart.
pub const TICK_WORK: usize = 1 << 20;
/// Earlier periods whose same phase forms the seasonal baseline.
pub const PHASES: usize = 4;
/// Scores are clipped to ±this before entering the CUSUM.
pub const CUSUM_CLIP: f64 = 3.0;
/// Events spanning at least this many points are level shifts, shorter ones spikes or drops.
pub const SHIFT_MIN_POINTS: usize = 10;

/// Per-point scores of a series.
pub(crate) struct Scores {
    /// Robust z-score (NaN while warming up).
    pub z: Vec<f64>,
    pub baseline: Vec<f64>,
    /// The robust scale each score was divided by (NaN while warming up).
    pub scale: Vec<f64>,
}

/// Index of the point at time `t` (± half a step), if any.
#[cfg(test)]
fn at_time(ts: &[i64], t: i64, half: i64) -> Option<usize> {
    let i = ts.partition_point(|x| *x < t.saturating_sub(half));
    (i < ts.len() && ts[i] <= t.saturating_add(half)).then_some(i)
}

/// [`at_time`] from a cursor: `cur` is at most the first index at or after `t - half`, and is
/// left there. Over times `t` that never decrease it moves through `ts` once (the scan asks
/// for the same phase offset at every point, so the lookups cost O(1) a point amortized, where
/// a binary search each cost O(log n)); the answer is [`at_time`]'s.
fn at_time_from(ts: &[i64], t: i64, half: i64, cur: &mut usize) -> Option<usize> {
    let lo = t.saturating_sub(half);
    while *cur < ts.len() && ts[*cur] < lo {
        *cur += 1;
    }
    (*cur < ts.len() && ts[*cur] <= t.saturating_add(half)).then_some(*cur)
}

/// The same phase in other periods, for the seasonal baseline: one cursor per period offset
/// (earlier and later), each moving forward only as the scan does.
#[derive(Default)]
struct PhaseCursors {
    at: [[usize; 4 * PHASES]; 2],
}

impl PhaseCursors {
    /// Calls `found` with the index of the point at `ts[i]`'s phase in up to [`PHASES`] other
    /// periods: earlier periods first (nearest first), then later ones while fewer than
    /// [`PHASES`] exist, looking at most `4 · PHASES` periods out each way. `i` must not
    /// decrease between calls.
    fn next(&mut self, ts: &[i64], i: usize, len: i64, half: i64, mut found: impl FnMut(usize)) {
        let (first, last) = (ts[0], ts[ts.len() - 1]);
        let mut got = 0;
        for (d, dir) in [-1i64, 1].into_iter().enumerate() {
            for k in 1..=(4 * PHASES) as i64 {
                if got == PHASES {
                    return;
                }
                let t = ts[i].saturating_add(dir.saturating_mul(k).saturating_mul(len));
                // Before the first point (earlier periods) or after the last (later ones):
                // further periods are further out.
                if (dir < 0 && t.saturating_add(half) < first)
                    || (dir > 0 && t.saturating_sub(half) > last)
                {
                    break;
                }
                if let Some(j) = at_time_from(ts, t, half, &mut self.at[d][k as usize - 1]) {
                    found(j);
                    got += 1;
                }
            }
        }
    }
}

/// The CUSUM's state during the scan.
struct Cusum {
    norm: f64,
    tau: f64,
    k: f64,
    h: f64,
    /// (sum, start index, sum of scores, count, peak index) for up and down.
    side: [(f64, usize, f64, usize, usize); 2],
}

/// Scores every point and, when `cusum` is given (τ of the scores), runs the two-sided CUSUM in
/// the same pass: at an alarm the shift becomes an event spanning from the CUSUM's last zero to
/// the alarm, and the level baseline restarts from the points since the change (the new level
/// is the new normal from then on).
pub(crate) fn scan(
    ts: &[i64],
    x: &[f64],
    period_us: Option<i64>,
    p: &EventParams,
    tau: Option<f64>,
    per_day: f64,
    tick: &mut dyn FnMut(),
) -> (Scores, Vec<AnomalyEvent>) {
    let n = x.len();
    let q = quantum(x);
    let floor = (p.min_scale_frac * noise_scale(x)).max(if q.is_finite() { q } else { 0.0 });
    let half = (super::season::median_step(ts) / 2).max(1);
    let sw = p.scale_window;
    // Level: trailing values of x minus the seasonal part.
    let mut level = SortedWindow::default();
    let mut level_q: VecDeque<f64> = VecDeque::with_capacity(p.window + 1);
    let mut resid = SortedWindow::default();
    let mut resid_q: VecDeque<f64> = VecDeque::with_capacity(sw + 1);
    let mut z = vec![f64::NAN; n];
    let mut baseline = vec![f64::NAN; n];
    let mut scales = vec![f64::NAN; n];
    let mut seasonal = vec![0.0; n];
    let mut phase = Vec::with_capacity(PHASES);
    let mut phases = PhaseCursors::default();
    let mut shifts = Vec::new();
    let mut cusum = tau.map(|tau| Cusum {
        norm: tau.sqrt(),
        tau,
        k: p.cusum_k,
        h: p.cusum_h,
        side: [(0.0, 0, 0.0, 0, 0); 2],
    });
    let tick_every = (TICK_WORK / (p.window.max(sw) + 64)).max(1);
    for i in 0..n {
        if i % tick_every == 0 {
            tick();
        }
        if let Some(len) = period_us {
            phase.clear();
            phases.next(ts, i, len, half, |j| phase.push(x[j]));
            if !phase.is_empty() {
                seasonal[i] = super::window::median_of(&mut phase);
            }
        }
        let base = if level.len() >= 3 {
            seasonal[i] + level.median()
        } else {
            f64::NAN
        };
        baseline[i] = base;
        let r = x[i] - base;
        let mut anomalous = false;
        if base.is_finite() && i >= p.min_history && resid.len() >= 3 {
            let scale = resid.median_mad().1.max(floor).max(f64::MIN_POSITIVE);
            z[i] = r / scale;
            scales[i] = scale;
            anomalous = z[i].abs() >= p.threshold;
        }
        if base.is_finite() && !anomalous {
            push(&mut resid, &mut resid_q, r, sw);
        }
        push(&mut level, &mut level_q, x[i] - seasonal[i], p.window);
        let Some(c) = cusum.as_mut() else { continue };
        if !z[i].is_finite() {
            continue;
        }
        let mut restart_from = None;
        for (s, sign) in [(0usize, 1.0f64), (1, -1.0)] {
            let allowed = match p.direction {
                Direction::Both => true,
                Direction::Up => sign > 0.0,
                Direction::Down => sign < 0.0,
            };
            let zc = sign * z[i].clamp(-CUSUM_CLIP, CUSUM_CLIP) / c.norm;
            let st = &mut c.side[s];
            if st.0 == 0.0 {
                *st = (0.0, i, 0.0, 0, i);
            }
            st.0 = (st.0 + zc - c.k).max(0.0);
            if st.0 == 0.0 {
                continue;
            }
            st.2 += zc;
            st.3 += 1;
            if sign * z[i] > sign * z[st.4] {
                st.4 = i;
            }
            if st.0 >= c.h && restart_from.is_none() {
                let (start, sum, count, peak) = (st.1, st.2, st.3, st.4);
                // The run's mean score as a z statistic of a mean of `count` correlated scores.
                let zrun = sum / count as f64 * (count as f64 / c.tau).sqrt();
                if allowed {
                    shifts.push(AnomalyEvent {
                        kind: if sign > 0.0 {
                            Kind::LevelShiftUp
                        } else {
                            Kind::LevelShiftDown
                        },
                        started_at: ts[start],
                        ended_at: ts[i],
                        peak_at: ts[peak],
                        peak_value: x[peak],
                        baseline: baseline[start],
                        peak_score: sign * zrun,
                        points: count,
                        p_value: risk::normal_two_sided(zrun),
                        tests_per_day: per_day,
                        risk: 0.0,
                        trend: None,
                    });
                }
                restart_from = Some(start);
            }
        }
        if let Some(start) = restart_from {
            c.side = [(0.0, 0, 0.0, 0, 0); 2];
            level.clear();
            level_q.clear();
            for j in start..=i {
                push(&mut level, &mut level_q, x[j] - seasonal[j], p.window);
            }
        }
    }
    (
        Scores {
            z,
            baseline,
            scale: scales,
        },
        shifts,
    )
}

fn push(w: &mut SortedWindow, q: &mut VecDeque<f64>, v: f64, cap: usize) {
    q.push_back(v);
    if q.len() > cap {
        if let Some(old) = q.pop_front() {
            w.replace(old, v);
            return;
        }
    }
    w.insert(v);
}

/// τ = (1 + ρ)/(1 − ρ) from the lag-1 autocorrelation ρ of the clipped scores (ρ in [0, 0.95]).
pub(crate) fn tau_of(z: &[f64]) -> f64 {
    let rho = lag1(z).clamp(0.0, 0.95);
    (1.0 + rho) / (1.0 - rho)
}

fn passes(dir: Direction, z: f64, t: f64) -> bool {
    match dir {
        Direction::Both => z.abs() >= t,
        Direction::Up => z >= t,
        Direction::Down => -z >= t,
    }
}

/// Point events: runs of anomalous points.
pub(crate) fn point_events(
    ts: &[i64],
    x: &[f64],
    s: &Scores,
    p: &EventParams,
    per_day: f64,
    tail: Option<risk::Tail>,
) -> Vec<AnomalyEvent> {
    let mut out = Vec::new();
    let mut open: Option<(usize, usize, usize, usize)> = None; // start, last, peak, count
    let close = |(start, last, peak, count): (usize, usize, usize, usize),
                 out: &mut Vec<AnomalyEvent>| {
        let zp = s.z[peak];
        let long = last - start + 1 >= SHIFT_MIN_POINTS;
        let kind = match (long, zp >= 0.0) {
            (false, true) => Kind::Spike,
            (false, false) => Kind::Drop,
            (true, true) => Kind::LevelShiftUp,
            (true, false) => Kind::LevelShiftDown,
        };
        out.push(AnomalyEvent {
            kind,
            started_at: ts[start],
            ended_at: ts[last],
            peak_at: ts[peak],
            peak_value: x[peak],
            baseline: s.baseline[peak],
            peak_score: zp,
            points: count,
            p_value: tail.map_or_else(|| risk::point_tail(zp), |t| t.p(zp)),
            tests_per_day: per_day,
            risk: 0.0,
            trend: None,
        });
    };
    for i in 0..x.len() {
        let zi = s.z[i];
        if !(zi.is_finite() && passes(p.direction, zi, p.threshold)) {
            continue;
        }
        match open.as_mut() {
            Some(o) if i - o.1 <= p.merge_gap => {
                o.1 = i;
                o.3 += 1;
                if zi.abs() > s.z[o.2].abs() {
                    o.2 = i;
                }
            }
            _ => {
                if let Some(o) = open.take() {
                    close(o, &mut out);
                }
                open = Some((i, i, i, 1));
            }
        }
    }
    if let Some(o) = open.take() {
        close(o, &mut out);
    }
    out
}

/// Lag-1 autocorrelation of the finite scores, clipped to ±CUSUM_CLIP.
fn lag1(z: &[f64]) -> f64 {
    let v: Vec<f64> = z
        .iter()
        .filter(|v| v.is_finite())
        .map(|v| v.clamp(-CUSUM_CLIP, CUSUM_CLIP))
        .collect();
    if v.len() < 10 {
        return 0.0;
    }
    let m = v.iter().sum::<f64>() / v.len() as f64;
    let den: f64 = v.iter().map(|a| (a - m) * (a - m)).sum();
    if den <= 0.0 {
        return 0.0;
    }
    v.windows(2).map(|w| (w[0] - m) * (w[1] - m)).sum::<f64>() / den
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The seasonal lookup as it was: a binary search per period offset.
    fn phases_by_search(ts: &[i64], i: usize, len: i64, half: i64) -> Vec<usize> {
        let mut out = Vec::new();
        for dir in [-1i64, 1] {
            for k in 1..=(4 * PHASES) as i64 {
                if out.len() == PHASES {
                    break;
                }
                if let Some(j) = at_time(
                    ts,
                    ts[i].saturating_add(dir.saturating_mul(k).saturating_mul(len)),
                    half,
                ) {
                    out.push(j);
                }
            }
        }
        out
    }

    proptest! {
        #[test]
        fn phase_cursors_find_what_a_binary_search_finds(
            gaps in proptest::collection::vec(1i64..50, 2..400),
            start in prop_oneof![Just(i64::MIN + 5), -1_000i64..1_000, Just(i64::MAX - 30_000)],
            len in prop_oneof![1i64..200, Just(i64::MAX / 3), Just(i64::MAX)],
            half in 0i64..30,
        ) {
            let mut ts = Vec::with_capacity(gaps.len());
            let mut t = start;
            for g in &gaps {
                t = t.saturating_add(*g);
                if ts.last() != Some(&t) {
                    ts.push(t);
                }
            }
            let mut cur = PhaseCursors::default();
            for i in 0..ts.len() {
                let mut got = Vec::new();
                cur.next(&ts, i, len, half, |j| got.push(j));
                prop_assert_eq!(got, phases_by_search(&ts, i, len, half), "point {}", i);
            }
        }

        #[test]
        fn a_cursor_over_rising_times_finds_what_a_binary_search_finds(
            gaps in proptest::collection::vec(1i64..20, 1..200),
            steps in proptest::collection::vec(0i64..15, 1..300),
            half in 0i64..10,
        ) {
            let ts: Vec<i64> = gaps.iter().scan(0i64, |t, g| { *t += g; Some(*t) }).collect();
            let mut cur = 0;
            let mut t = -20;
            for s in steps {
                t += s;
                prop_assert_eq!(at_time_from(&ts, t, half, &mut cur), at_time(&ts, t, half));
            }
        }
    }
}
