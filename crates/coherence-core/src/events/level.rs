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
use super::window::{noise_scale, SortedWindow};
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

/// What the level passes of one series share, computed once: the seasonal part of every
/// point (0 without a period) and the scale floor.
pub(crate) struct Shared {
    pub seasonal: Vec<f64>,
    pub floor: f64,
}

/// The seasonal part of each point (the median of its phase in up to [`PHASES`] other periods,
/// 0 without a period or such points) and the scale floor (the series' noise level times
/// `min_scale_frac`, at least its resolution `q`: `window::quantum` of `x`).
pub(crate) fn shared(
    ts: &[i64],
    x: &[f64],
    q: f64,
    period_us: Option<i64>,
    p: &EventParams,
    tick: &mut dyn FnMut(),
) -> Shared {
    let n = x.len();
    let floor = (p.min_scale_frac * noise_scale(x)).max(if q.is_finite() { q } else { 0.0 });
    let mut seasonal = vec![0.0; n];
    if let Some(len) = period_us {
        let half = (super::season::median_step(ts) / 2).max(1);
        let mut phase = Vec::with_capacity(PHASES);
        let mut phases = PhaseCursors::default();
        for (i, s) in seasonal.iter_mut().enumerate() {
            if i % 4096 == 0 {
                tick();
            }
            phase.clear();
            phases.next(ts, i, len, half, |j| phase.push(x[j]));
            if !phase.is_empty() {
                *s = super::window::median_of(&mut phase);
            }
        }
    }
    Shared { seasonal, floor }
}

/// The CUSUM's state during the scan.
#[derive(Clone)]
struct Cusum {
    norm: f64,
    tau: f64,
    k: f64,
    h: f64,
    /// (sum, start index, sum of scores, count, peak index) for up and down.
    side: [(f64, usize, f64, usize, usize); 2],
}

/// One level pass over a series: the trailing windows, the scores so far, and the CUSUM.
struct Scanner<'a> {
    ts: &'a [i64],
    x: &'a [f64],
    sh: &'a Shared,
    p: &'a EventParams,
    per_day: f64,
    level: SortedWindow,
    level_q: VecDeque<f64>,
    resid: SortedWindow,
    resid_q: VecDeque<f64>,
    out: Scores,
    cusum: Option<Cusum>,
    shifts: Vec<AnomalyEvent>,
    /// The first point at which the CUSUM alarmed (and the level restarted).
    first_restart: Option<usize>,
}

impl<'a> Scanner<'a> {
    fn new(
        ts: &'a [i64],
        x: &'a [f64],
        sh: &'a Shared,
        p: &'a EventParams,
        tau: Option<f64>,
        per_day: f64,
    ) -> Self {
        let n = x.len();
        Scanner {
            ts,
            x,
            sh,
            p,
            per_day,
            level: SortedWindow::default(),
            level_q: VecDeque::with_capacity(p.window + 1),
            resid: SortedWindow::default(),
            resid_q: VecDeque::with_capacity(p.scale_window + 1),
            out: Scores {
                z: vec![f64::NAN; n],
                baseline: vec![f64::NAN; n],
                scale: vec![f64::NAN; n],
            },
            cusum: tau.map(|tau| Cusum {
                norm: tau.sqrt(),
                tau,
                k: p.cusum_k,
                h: p.cusum_h,
                side: [(0.0, 0, 0.0, 0, 0); 2],
            }),
            shifts: Vec::new(),
            first_restart: None,
        }
    }

    /// Scores point `i` against the windows, then slides them: its residual joins the scale
    /// window unless it is anomalous, its deseasonalized value joins the level window.
    fn score(&mut self, i: usize) {
        let (x, p) = (self.x, self.p);
        let seasonal = self.sh.seasonal[i];
        let base = if self.level.len() >= 3 {
            seasonal + self.level.median()
        } else {
            f64::NAN
        };
        self.out.baseline[i] = base;
        let r = x[i] - base;
        let mut anomalous = false;
        if base.is_finite() && i >= p.min_history && self.resid.len() >= 3 {
            let scale = self
                .resid
                .median_mad()
                .1
                .max(self.sh.floor)
                .max(f64::MIN_POSITIVE);
            let z = r / scale;
            self.out.z[i] = z;
            self.out.scale[i] = scale;
            anomalous = z.abs() >= p.threshold;
        }
        if base.is_finite() && !anomalous {
            push(&mut self.resid, &mut self.resid_q, r, p.scale_window);
        }
        push(
            &mut self.level,
            &mut self.level_q,
            x[i] - seasonal,
            p.window,
        );
    }

    /// The CUSUM's step at point `i` (after [`Scanner::score`]): at an alarm, the shift
    /// becomes an event (in the allowed direction) spanning from the CUSUM's last zero to `i`,
    /// and the start of that run is returned.
    fn cusum(&mut self, i: usize) -> Option<usize> {
        let (ts, x, p) = (self.ts, self.x, self.p);
        let z = &self.out.z;
        let c = self.cusum.as_mut()?;
        if !z[i].is_finite() {
            return None;
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
                    self.shifts.push(AnomalyEvent {
                        kind: if sign > 0.0 {
                            Kind::LevelShiftUp
                        } else {
                            Kind::LevelShiftDown
                        },
                        started_at: ts[start],
                        ended_at: ts[i],
                        peak_at: ts[peak],
                        peak_value: x[peak],
                        baseline: self.out.baseline[start],
                        peak_score: sign * zrun,
                        points: count,
                        p_value: risk::normal_two_sided(zrun),
                        tests_per_day: self.per_day,
                        risk: 0.0,
                        trend: None,
                    });
                }
                restart_from = Some(start);
            }
        }
        restart_from
    }

    /// After an alarm at `i` for a run from `start`: the CUSUM starts over and the level
    /// window holds only the points since the change (the new level is the new normal).
    fn restart(&mut self, start: usize, i: usize) {
        if let Some(c) = self.cusum.as_mut() {
            c.side = [(0.0, 0, 0.0, 0, 0); 2];
        }
        self.first_restart.get_or_insert(i);
        self.fill_level(start, i);
    }

    /// The level window as pushes of points `from..=i` leave it.
    fn fill_level(&mut self, from: usize, i: usize) {
        self.level.clear();
        self.level_q.clear();
        for j in from.max((i + 1).saturating_sub(self.p.window))..=i {
            push(
                &mut self.level,
                &mut self.level_q,
                self.x[j] - self.sh.seasonal[j],
                self.p.window,
            );
        }
    }

    /// Scores points `from..`, with the CUSUM when there is one.
    fn run(&mut self, from: usize, tick: &mut dyn FnMut()) {
        let tick_every = (TICK_WORK / (self.p.window.max(self.p.scale_window) + 64)).max(1);
        for i in from..self.x.len() {
            if i % tick_every == 0 {
                tick();
            }
            self.score(i);
            if let Some(start) = self.cusum(i) {
                self.restart(start, i);
            }
        }
    }
}

/// Scores every point and, when `tau` is given (τ of the scores), runs the two-sided CUSUM in
/// the same pass: at an alarm the shift becomes an event spanning from the CUSUM's last zero to
/// the alarm, and the level baseline restarts from the points since the change (the new level
/// is the new normal from then on). Also returns the first alarm's point.
pub(crate) fn scan(
    ts: &[i64],
    x: &[f64],
    sh: &Shared,
    p: &EventParams,
    tau: Option<f64>,
    per_day: f64,
    tick: &mut dyn FnMut(),
) -> (Scores, Vec<AnomalyEvent>, Option<usize>) {
    let mut s = Scanner::new(ts, x, sh, p, tau, per_day);
    s.run(0, tick);
    (s.out, s.shifts, s.first_restart)
}

/// [`scan`] at `tau` (`Some`: with the CUSUM at that τ; `None`: without a CUSUM), given the
/// same series' scan `first` at another τ whose first alarm was at `first_restart`. Until
/// either pass alarms, the two passes see the same windows and so give the same scores (the
/// CUSUM only acts through its restarts): this replays the new CUSUM over `first`'s scores up
/// to the first alarm of either, rebuilds the windows there from the scores, and scans on.
/// `None` when neither alarms: the pass would be `first` again.
/// Gives exactly what [`scan`] gives, for parameters that pass [`EventParams::validate`] (a
/// window of 0 points, say, would fill differently).
#[allow(clippy::too_many_arguments)]
pub(crate) fn rescan(
    ts: &[i64],
    x: &[f64],
    sh: &Shared,
    p: &EventParams,
    tau: Option<f64>,
    per_day: f64,
    first: &Scores,
    first_restart: Option<usize>,
    tick: &mut dyn FnMut(),
) -> Option<(Scores, Vec<AnomalyEvent>)> {
    let n = x.len();
    if n == 0 {
        return None;
    }
    let mut s = Scanner::new(ts, x, sh, p, tau, per_day);
    let last = first_restart.unwrap_or(n - 1);
    let mut alarm = None;
    let mut at = last;
    for i in 0..=last {
        s.out.z[i] = first.z[i];
        s.out.baseline[i] = first.baseline[i];
        s.out.scale[i] = first.scale[i];
        if let Some(start) = s.cusum(i) {
            alarm = Some(start);
            at = i;
            break;
        }
    }
    if alarm.is_none() && first_restart.is_none() {
        return None;
    }
    // The scale window as the scan leaves it after point `at`: the latest residuals of points
    // with a baseline that were not anomalous, oldest first.
    let mut tail: Vec<f64> = Vec::with_capacity(p.scale_window);
    for j in (0..=at).rev() {
        if tail.len() == p.scale_window {
            break;
        }
        let (b, z) = (first.baseline[j], first.z[j]);
        if b.is_finite() && (z.is_nan() || z.abs() < p.threshold) {
            tail.push(x[j] - b);
        }
    }
    tail.reverse();
    s.resid.fill(&tail);
    s.resid_q.extend(tail);
    match alarm {
        Some(start) => s.restart(start, at),
        None => s.fill_level(0, at),
    }
    s.run(at + 1, tick);
    Some((s.out, s.shifts))
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

    /// Bit patterns of a pass's scores, for exact comparison (NaN included).
    fn bits(s: &Scores) -> Vec<(u64, u64, u64)> {
        (0..s.z.len())
            .map(|i| {
                (
                    s.z[i].to_bits(),
                    s.baseline[i].to_bits(),
                    s.scale[i].to_bits(),
                )
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn a_rescan_from_the_first_alarm_gives_exactly_what_a_full_scan_gives_with_or_without_a_cusum(
            seed in 0u64..1_000_000,
            n in 30usize..900,
            shifts in proptest::collection::vec((0usize..900, -12.0f64..12.0, 1usize..200), 0..4),
            spikes in proptest::collection::vec((0usize..900, -40.0f64..40.0), 0..6),
            // None: no CUSUM at all (the collective detector's scores).
            tau in prop_oneof![Just(Some(1.0f64)), (1.0f64..40.0).prop_map(Some), Just(None)],
            period in prop_oneof![Just(None), Just(Some(48i64))],
            direction in prop_oneof![Just(Direction::Both), Just(Direction::Up), Just(Direction::Down)],
            rounded in any::<bool>(),
        ) {
            let mut r = crate::rng::Rng::new(seed);
            let ts: Vec<i64> = (0..n as i64).map(|i| i * 60).collect();
            let x: Vec<f64> = (0..n)
                .map(|i| {
                    let mut v = 10.0 + r.normal() + (i % 48) as f64 / 12.0;
                    for (at, size, len) in &shifts {
                        if i >= *at && i < at + len {
                            v += size;
                        }
                    }
                    for (at, size) in &spikes {
                        if i == *at {
                            v += size;
                        }
                    }
                    if rounded { v.round() } else { v }
                })
                .collect();
            let p = EventParams {
                window: 24,
                scale_window: 60,
                min_history: 12,
                cusum_h: 4.0,
                direction,
                ..EventParams::default()
            };
            let sh = shared(&ts, &x, crate::events::window::quantum(&x), period.map(|k| k * 60), &p, &mut || {});
            let (first, first_shifts, first_restart) = scan(&ts, &x, &sh, &p, Some(1.0), 1440.0, &mut || {});
            let (full, full_shifts, _) = scan(&ts, &x, &sh, &p, tau, 1440.0, &mut || {});
            match rescan(&ts, &x, &sh, &p, tau, 1440.0, &first, first_restart, &mut || {}) {
                Some((again, again_shifts)) => {
                    prop_assert_eq!(bits(&again), bits(&full));
                    prop_assert_eq!(again_shifts, full_shifts);
                }
                None => {
                    prop_assert!(first_restart.is_none());
                    prop_assert_eq!(bits(&first), bits(&full));
                    prop_assert!(full_shifts.is_empty() && first_shifts.is_empty());
                }
            }
        }
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
