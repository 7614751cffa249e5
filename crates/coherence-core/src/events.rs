//! Localized anomaly events: the detector behind `coherence.detect_events`.
//!
//! The seed's rules look at a whole series at once (one mean and σ, first vs last window), so
//! the anomaly itself inflates the baseline and nothing says *when*. This detector instead
//! scores every point against a robust baseline built only from the points before it:
//!
//! * **level**: the median of the trailing `window` points, and their spread as
//!   1.4826 · MAD (the normal-consistent scale), floored by the series' noise level
//!   (from first differences) and by its resolution, so near-constant or integer-valued
//!   series do not divide by ~0 (see [`EventParams::min_scale_frac`]);
//! * **seasonal check** (when `season` points of history exist): the same point is also
//!   compared with the median of the values one, two and three seasons earlier; a point must
//!   be unusual against *both* baselines, so daily peaks that recur are not alarms;
//! * **score** `z = (x − level) / scale`, in both directions (a drop in request rate is an
//!   outage) unless `direction` restricts it;
//! * points with `|z| ≥ threshold` are anomalous; anomalous points closer than `merge_gap`
//!   points join one event with a start, a peak (largest |z|) and an end;
//! * anomalous points do not update the baseline window (robust to the anomaly itself: a long
//!   incident does not become the new normal within the window).
//!
//! Risk of an event: `clamp(0.5 + 0.5 · (|z_peak| − threshold) / threshold)`: 0.5 at the
//! threshold, 1.0 at twice the threshold. Events need `min_history` points of history first.
//! Non-finite values are ignored.

/// Which deviations count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Both,
    Up,
    Down,
}

impl std::str::FromStr for Direction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "both" => Ok(Direction::Both),
            "up" => Ok(Direction::Up),
            "down" => Ok(Direction::Down),
            _ => Err(format!(
                "direction must be 'both', 'up' or 'down', not '{s}'"
            )),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EventParams {
    /// Trailing points in the baseline.
    pub window: usize,
    /// Points per season (e.g. 24 for hourly data with a daily cycle); 0 disables the check.
    pub season: usize,
    /// |z| at or above this is anomalous.
    pub threshold: f64,
    pub direction: Direction,
    /// Anomalous points at most this many points apart form one event.
    pub merge_gap: usize,
    /// Points of history needed before anything is scored.
    pub min_history: usize,
    /// Scale floor as a fraction of the series' noise level (robust first-difference
    /// estimate); the floor is also at least the series' resolution (1 for counts).
    pub min_scale_frac: f64,
}

impl Default for EventParams {
    fn default() -> Self {
        EventParams {
            window: 192,
            season: 0,
            threshold: 8.0,
            direction: Direction::Both,
            merge_gap: 6,
            min_history: 24,
            min_scale_frac: 1.0,
        }
    }
}

impl EventParams {
    pub fn validate(&self) -> Result<(), String> {
        if self.window < 3 {
            return Err("window must be at least 3 points".into());
        }
        if !(self.threshold.is_finite() && self.threshold > 0.0) {
            return Err("threshold must be a finite number greater than 0".into());
        }
        if !(self.min_scale_frac.is_finite() && self.min_scale_frac >= 0.0) {
            return Err("min_scale_frac must be a finite number at least 0".into());
        }
        Ok(())
    }
}

/// One localized anomaly.
#[derive(Clone, Debug, PartialEq)]
pub struct AnomalyEvent {
    pub started_at: i64,
    pub ended_at: i64,
    pub peak_at: i64,
    pub peak_value: f64,
    /// Baseline level at the peak.
    pub baseline: f64,
    /// Signed robust z-score at the peak.
    pub peak_score: f64,
    pub points: usize,
    pub risk: f64,
    /// "spike" / "drop" (spanning < 10 points), "level_shift_up" / "level_shift_down" (longer).
    pub kind: &'static str,
}

fn median_of(buf: &mut [f64]) -> f64 {
    let n = buf.len();
    let mid = n / 2;
    let (_, m, _) = buf.select_nth_unstable_by(mid, |a, b| a.total_cmp(b));
    let m = *m;
    if n % 2 == 1 {
        m
    } else {
        let lo = buf[..mid].iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (lo + m) / 2.0
    }
}

/// Median and 1.4826·MAD of a slice (copies into `scratch`); the reference for SortedWindow.
#[cfg(test)]
fn median_mad(xs: &[f64], scratch: &mut Vec<f64>) -> (f64, f64) {
    scratch.clear();
    scratch.extend_from_slice(xs);
    let med = median_of(scratch);
    for v in scratch.iter_mut() {
        *v = (*v - med).abs();
    }
    (med, 1.4826 * median_of(scratch))
}

/// The trailing baseline window kept sorted: insert/remove by binary search (a memmove of at
/// most `window` values), median in O(1) and MAD in O(log window) by selecting the k-th
/// smallest deviation from the two sorted runs below and above the median. Gives exactly
/// [`median_mad`]'s values.
#[derive(Default)]
struct SortedWindow {
    sorted: Vec<f64>,
}

impl SortedWindow {
    fn pos(&self, x: f64) -> usize {
        self.sorted
            .partition_point(|v| v.total_cmp(&x) == std::cmp::Ordering::Less)
    }
    fn insert(&mut self, x: f64) {
        let i = self.pos(x);
        self.sorted.insert(i, x);
    }
    fn remove(&mut self, x: f64) {
        let i = self.pos(x);
        if i < self.sorted.len() && self.sorted[i].total_cmp(&x).is_eq() {
            self.sorted.remove(i);
        }
    }
    fn clear(&mut self) {
        self.sorted.clear();
    }
    fn len(&self) -> usize {
        self.sorted.len()
    }
    fn median_mad(&self) -> (f64, f64) {
        let s = &self.sorted;
        let n = s.len();
        let med = if n % 2 == 1 {
            s[n / 2]
        } else {
            (s[n / 2 - 1] + s[n / 2]) / 2.0
        };
        // Deviations: below the median (descending values → ascending deviations) and above.
        let p = s.partition_point(|v| *v < med);
        let a = |j: usize| med - s[p - 1 - j];
        let b = |j: usize| s[p + j] - med;
        let (na, nb) = (p, n - p);
        // k-th smallest (0-based) of the union of the two ascending runs.
        let kth = |k: usize| -> f64 {
            let (mut lo, mut hi) = ((k + 1).saturating_sub(nb), (k + 1).min(na));
            while lo < hi {
                let i = (lo + hi) / 2;
                let j = k + 1 - i;
                if j > 0 && i < na && b(j - 1) > a(i) {
                    lo = i + 1;
                } else {
                    hi = i;
                }
            }
            let (i, j) = (lo, k + 1 - lo);
            let x = if i > 0 { a(i - 1) } else { f64::NEG_INFINITY };
            let y = if j > 0 { b(j - 1) } else { f64::NEG_INFINITY };
            x.max(y)
        };
        let mad = if n % 2 == 1 {
            kth(n / 2)
        } else {
            (kth(n / 2 - 1) + kth(n / 2)) / 2.0
        };
        (med, 1.4826 * mad)
    }
}

/// Noise level of a series, robust to level shifts, trends and the anomalies themselves:
/// 1.4826 · median(|x[t] − x[t−1]|) / √2; when that is 0 (mostly-constant series), the mean
/// absolute first difference / √2.
fn noise_scale(xs: &[f64]) -> f64 {
    if xs.len() < 2 {
        return 0.0;
    }
    let mut d: Vec<f64> = xs.windows(2).map(|w| (w[1] - w[0]).abs()).collect();
    let mean_abs = d.iter().sum::<f64>() / d.len() as f64;
    let med = median_of(&mut d);
    if med > 0.0 {
        1.4826 * med / std::f64::consts::SQRT_2
    } else {
        mean_abs / std::f64::consts::SQRT_2
    }
}

/// The series' resolution: the smallest positive gap between distinct values (1 for counts).
fn quantum(xs: &[f64]) -> f64 {
    let mut s = xs.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s.windows(2)
        .map(|w| w[1] - w[0])
        .filter(|d| *d > 0.0)
        .fold(f64::INFINITY, f64::min)
}

/// Detects events in one series given as (Unix µs, value) sorted by time.
pub fn detect_events(points: &[(i64, f64)], p: &EventParams) -> Vec<AnomalyEvent> {
    let pts: Vec<(i64, f64)> = points
        .iter()
        .copied()
        .filter(|(_, v)| v.is_finite())
        .collect();
    let n = pts.len();
    let mut out = Vec::new();
    if n <= p.min_history {
        return out;
    }
    let values: Vec<f64> = pts.iter().map(|p| p.1).collect();
    let q = quantum(&values);
    let floor = (p.min_scale_frac * noise_scale(&values)).max(if q.is_finite() { q } else { 0.0 });
    // Baseline history: the last `window` non-anomalous values.
    let mut hist: std::collections::VecDeque<f64> =
        std::collections::VecDeque::with_capacity(p.window);
    let mut sorted = SortedWindow::default();
    let mut buf = Vec::with_capacity(4);
    // Seasonal baseline reads the raw series (clean values where known).
    let mut clean = values.clone();

    struct Open {
        start: usize,
        last: usize,
        peak: usize,
        peak_z: f64,
        base: f64,
        count: usize,
    }
    let mut open: Option<Open> = None;
    let close = |o: Open, out: &mut Vec<AnomalyEvent>| {
        // Short events are spikes/drops; events spanning 10+ points are level shifts.
        let len = o.last - o.start + 1;
        let kind = match (len < 10, o.peak_z >= 0.0) {
            (true, true) => "spike",
            (true, false) => "drop",
            (false, true) => "level_shift_up",
            (false, false) => "level_shift_down",
        };
        let risk = (0.5 + 0.5 * (o.peak_z.abs() - p.threshold) / p.threshold).clamp(0.0, 1.0);
        out.push(AnomalyEvent {
            started_at: pts[o.start].0,
            ended_at: pts[o.last].0,
            peak_at: pts[o.peak].0,
            peak_value: pts[o.peak].1,
            baseline: o.base,
            peak_score: o.peak_z,
            points: o.count,
            risk,
            kind,
        });
    };

    for i in 0..n {
        let x = values[i];
        let mut anomalous = false;
        let mut z = 0.0;
        let mut level = f64::NAN;
        if i >= p.min_history && sorted.len() >= 3 {
            let (med, mad) = sorted.median_mad();
            let scale = mad.max(floor).max(f64::MIN_POSITIVE);
            level = med;
            z = (x - med) / scale;
            let passes = |z: f64| match p.direction {
                Direction::Both => z.abs() >= p.threshold,
                Direction::Up => z >= p.threshold,
                Direction::Down => -z >= p.threshold,
            };
            anomalous = passes(z);
            if anomalous && p.season > 0 && i >= p.season {
                // Same phase in up to three earlier seasons.
                buf.clear();
                for k in 1..=3 {
                    if i >= k * p.season {
                        buf.push(clean[i - k * p.season]);
                    }
                }
                let seasonal = median_of(&mut buf);
                let zs = (x - seasonal) / scale;
                if !passes(zs) {
                    anomalous = false;
                } else if zs.abs() < z.abs() {
                    z = zs;
                    level = seasonal;
                }
            }
        }
        if anomalous {
            // Keep the seasonal history clean: replace with the baseline level.
            if level.is_finite() {
                clean[i] = level;
            }
            match open.as_mut() {
                Some(o) if i - o.last <= p.merge_gap => {
                    o.last = i;
                    o.count += 1;
                    if z.abs() > o.peak_z.abs() {
                        o.peak = i;
                        o.peak_z = z;
                        o.base = level;
                    }
                }
                _ => {
                    if let Some(o) = open.take() {
                        close(o, &mut out);
                    }
                    open = Some(Open {
                        start: i,
                        last: i,
                        peak: i,
                        peak_z: z,
                        base: level,
                        count: 1,
                    });
                }
            }
        } else {
            if hist.len() == p.window {
                if let Some(old) = hist.pop_front() {
                    sorted.remove(old);
                }
            }
            hist.push_back(x);
            sorted.insert(x);
        }
        // A long event whose window would otherwise never recover: after `window` anomalous
        // points in a row, accept the new level (a persistent level shift is the new normal).
        if let Some(o) = open.as_ref() {
            if anomalous && o.count >= p.window {
                hist.clear();
                sorted.clear();
                for &v in &values[i + 1 - p.window.min(i + 1)..=i] {
                    hist.push_back(v);
                    sorted.insert(v);
                }
                let o = open.take().unwrap();
                close(o, &mut out);
            }
        }
    }
    if let Some(o) = open.take() {
        close(o, &mut out);
    }
    out
}

/// Estimates a season length in points from the median sampling interval: one day, if the
/// series is regular and covers at least three days; else 0 (no seasonal check).
pub fn daily_season(ts: &[i64]) -> usize {
    if ts.len() < 4 {
        return 0;
    }
    let mut d: Vec<f64> = ts
        .windows(2)
        .map(|w| (w[1] - w[0]) as f64)
        .filter(|d| *d > 0.0)
        .collect();
    if d.is_empty() {
        return 0;
    }
    let step = median_of(&mut d);
    let day = 86_400.0 * 1e6;
    let per_day = (day / step).round();
    let span = (ts[ts.len() - 1] - ts[0]) as f64;
    if per_day < 2.0 || span < 3.0 * day {
        return 0;
    }
    per_day as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    const H: i64 = 3_600_000_000;

    fn series(vals: &[f64]) -> Vec<(i64, f64)> {
        vals.iter()
            .enumerate()
            .map(|(i, v)| (i as i64 * H, *v))
            .collect()
    }

    fn noisy(n: usize, seed: u64) -> Vec<f64> {
        let mut r = crate::rng::Rng::new(seed);
        (0..n).map(|_| 100.0 + 5.0 * r.normal()).collect()
    }

    #[test]
    fn finds_a_spike_and_a_drop_with_times() {
        let mut v = noisy(300, 1);
        v[150] = 200.0;
        v[220] = 20.0;
        let ev = detect_events(&series(&v), &EventParams::default());
        assert_eq!(ev.len(), 2, "{ev:?}");
        assert_eq!(
            (ev[0].peak_at, ev[0].kind, ev[0].peak_value),
            (150 * H, "spike", 200.0)
        );
        assert_eq!((ev[1].peak_at, ev[1].kind), (220 * H, "drop"));
        assert!(ev.iter().all(|e| e.risk >= 0.5 && e.risk <= 1.0));
        let up = detect_events(
            &series(&v),
            &EventParams {
                direction: Direction::Up,
                ..Default::default()
            },
        );
        assert_eq!(up.len(), 1);
    }

    #[test]
    fn noise_alone_gives_nothing() {
        for seed in 0..20 {
            let ev = detect_events(&series(&noisy(2000, seed)), &EventParams::default());
            assert!(ev.is_empty(), "seed {seed}: {ev:?}");
        }
    }

    #[test]
    fn level_shift_is_one_event_then_the_new_normal() {
        let mut v = noisy(400, 3);
        for x in v.iter_mut().skip(200) {
            *x += 100.0;
        }
        let ev = detect_events(&series(&v), &EventParams::default());
        assert_eq!(ev.len(), 1, "{ev:?}");
        assert_eq!(ev[0].started_at, 200 * H);
        assert_eq!(ev[0].kind, "level_shift_up");
    }

    #[test]
    fn anomaly_does_not_mask_the_next() {
        // Two spikes close together: a mean/σ baseline would be inflated by the first.
        let mut v = noisy(300, 4);
        v[100] = 1000.0;
        v[110] = 160.0;
        let ev = detect_events(&series(&v), &EventParams::default());
        assert_eq!(ev.len(), 2, "{ev:?}");
    }

    #[test]
    fn recurring_daily_peak_is_not_an_alarm_with_season() {
        let mut v = noisy(24 * 10, 5);
        for d in 0..10 {
            v[d * 24 + 12] += 80.0;
        }
        let p = EventParams {
            season: 24,
            ..Default::default()
        };
        let ev = detect_events(&series(&v), &p);
        // The first days' peaks lack seasonal history; later ones are recognised as normal.
        assert!(ev.iter().all(|e| e.started_at < 3 * 24 * H), "{ev:?}");
    }

    #[test]
    fn edge_cases() {
        let p = EventParams::default();
        assert!(detect_events(&[], &p).is_empty());
        assert!(detect_events(&series(&[1.0, 2.0]), &p).is_empty());
        let c = series(&vec![5.0; 200]);
        assert!(detect_events(&c, &p).is_empty());
        let mut with_nan = noisy(200, 9);
        with_nan[50] = f64::NAN;
        with_nan[60] = f64::INFINITY;
        assert!(detect_events(&series(&with_nan), &p).is_empty());
        // Integer-valued, mostly zero (crash counts): one burst is found, zeros are not alarms.
        let mut z = vec![0.0; 300];
        for i in (0..300).step_by(37) {
            z[i] = 1.0;
        }
        z[200] = 9.0;
        let ev = detect_events(&series(&z), &p);
        assert_eq!(ev.len(), 1, "{ev:?}");
        assert_eq!(ev[0].peak_at, 200 * H);
        assert!(EventParams { window: 1, ..p }.validate().is_err());
        assert!(EventParams {
            threshold: f64::NAN,
            ..p
        }
        .validate()
        .is_err());
    }

    #[test]
    fn sorted_window_matches_direct_median_mad() {
        let mut r = crate::rng::Rng::new(11);
        let mut w = SortedWindow::default();
        let mut plain: Vec<f64> = Vec::new();
        let mut scratch = Vec::new();
        for step in 0..5000 {
            // Ties and repeated values included (rounded values).
            let x = (r.normal() * 4.0).round() / 2.0 + if step % 7 == 0 { 10.0 } else { 0.0 };
            w.insert(x);
            plain.push(x);
            if plain.len() > 37 {
                let old = plain.remove(0);
                w.remove(old);
            }
            let (m1, d1) = w.median_mad();
            let (m2, d2) = median_mad(&plain, &mut scratch);
            assert_eq!((m1, d1), (m2, d2), "step {step}: {plain:?}");
        }
    }

    #[test]
    fn daily_season_from_sampling() {
        let hourly: Vec<i64> = (0..24 * 5).map(|i| i * H).collect();
        assert_eq!(daily_season(&hourly), 24);
        assert_eq!(daily_season(&hourly[..24]), 0);
        let minutes: Vec<i64> = (0..1440 * 4).map(|i| i * 60_000_000).collect();
        assert_eq!(daily_season(&minutes), 1440);
    }
}

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
}

impl Default for TrendEventParams {
    fn default() -> Self {
        TrendEventParams {
            pct_threshold: 30.0,
            min_r2: 0.6,
            min_mk_z: 3.29,
            capacity: None,
        }
    }
}

/// Mann–Kendall trend statistic z (normal approximation with tie correction).
pub fn mann_kendall_z(xs: &[f64]) -> f64 {
    let n = xs.len();
    if n < 3 {
        return 0.0;
    }
    let mut s: i64 = 0;
    for i in 0..n - 1 {
        for j in i + 1..n {
            s += match xs[j].partial_cmp(&xs[i]) {
                Some(std::cmp::Ordering::Greater) => 1,
                Some(std::cmp::Ordering::Less) => -1,
                _ => 0,
            };
        }
    }
    let mut sorted = xs.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
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

/// Parameters of localized volatility events.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VolatilityParams {
    /// Window width in microseconds (the seed's 4 hours), aligned like `date_bin(..., '2000-01-01')`.
    pub window_us: i64,
    /// A window is volatile when its noise level is at least this multiple of the baseline's.
    pub ratio: f64,
    /// Previous windows whose median noise level is the baseline.
    pub history: usize,
    /// Points a window needs to be judged.
    pub min_points: usize,
}

impl Default for VolatilityParams {
    fn default() -> Self {
        VolatilityParams {
            window_us: 4 * crate::USEC_PER_HOUR,
            ratio: 3.0,
            history: 6,
            min_points: 8,
        }
    }
}

/// Localized variance escalation: windows whose noise level (robust, from first differences,
/// so neither a level shift nor a single spike inflates it) is at least `ratio` times the
/// median noise level of the previous `history` non-volatile windows. Consecutive volatile
/// windows form one event; `peak_value` is the peak window's noise level (σ units of the
/// metric), `baseline` the baseline's, `peak_score` their ratio.
pub fn volatility_events(points: &[(i64, f64)], p: &VolatilityParams) -> Vec<AnomalyEvent> {
    let mut out = Vec::new();
    if p.window_us <= 0 || !(p.ratio.is_finite() && p.ratio > 1.0) {
        return out;
    }
    let origin = crate::detect::PG_EPOCH_US as i128;
    let w = p.window_us as i128;
    // (window start, first ts, last ts, noise level) for windows with enough points.
    let mut windows: Vec<(i64, i64, i64, f64)> = Vec::new();
    let mut i = 0;
    let pts: Vec<(i64, f64)> = points
        .iter()
        .copied()
        .filter(|(_, v)| v.is_finite())
        .collect();
    while i < pts.len() {
        let key = (origin + ((pts[i].0 as i128 - origin).div_euclid(w)) * w) as i64;
        let mut j = i;
        while j < pts.len()
            && (origin + ((pts[j].0 as i128 - origin).div_euclid(w)) * w) as i64 == key
        {
            j += 1;
        }
        if j - i >= p.min_points.max(3) {
            let xs: Vec<f64> = pts[i..j].iter().map(|x| x.1).collect();
            let mut d: Vec<f64> = xs.windows(2).map(|v| (v[1] - v[0]).abs()).collect();
            let noise = 1.4826 * median_of(&mut d) / std::f64::consts::SQRT_2;
            windows.push((key, pts[i].0, pts[j - 1].0, noise));
        }
        i = j;
    }
    let q = quantum(&pts.iter().map(|x| x.1).collect::<Vec<_>>());
    let floor = if q.is_finite() { q / 2.0 } else { 0.0 };
    let mut base_hist: std::collections::VecDeque<f64> = std::collections::VecDeque::new();
    let mut open: Option<AnomalyEvent> = None;
    for &(_, first, last, noise) in &windows {
        let mut volatile = false;
        let mut ratio = 0.0;
        let mut base = f64::NAN;
        if base_hist.len() >= 3 {
            let mut b: Vec<f64> = base_hist.iter().copied().collect();
            base = median_of(&mut b);
            let denom = base.max(floor).max(f64::MIN_POSITIVE);
            ratio = noise / denom;
            volatile = ratio >= p.ratio && noise > floor;
        }
        if volatile {
            let risk = (0.5 + 0.5 * (ratio - p.ratio) / p.ratio).clamp(0.0, 1.0);
            match open.as_mut() {
                Some(e) => {
                    e.ended_at = last;
                    e.points += 1;
                    if ratio > e.peak_score {
                        e.peak_at = first;
                        e.peak_value = noise;
                        e.peak_score = ratio;
                        e.risk = risk;
                    }
                }
                None => {
                    open = Some(AnomalyEvent {
                        started_at: first,
                        ended_at: last,
                        peak_at: first,
                        peak_value: noise,
                        baseline: base,
                        peak_score: ratio,
                        points: 1,
                        risk,
                        kind: "volatility_up",
                    })
                }
            }
        } else {
            if let Some(e) = open.take() {
                out.push(e);
            }
            base_hist.push_back(noise);
            if base_hist.len() > p.history {
                base_hist.pop_front();
            }
        }
    }
    if let Some(e) = open.take() {
        out.push(e);
    }
    out
}

#[cfg(test)]
mod volatility_tests {
    use super::*;
    const MIN: i64 = 60_000_000;
    const T0: i64 = 1_765_440_000_000_000; // 2025-12-11 08:00 UTC, window-aligned

    #[test]
    fn a_volatile_stretch_is_one_event() {
        let mut r = crate::rng::Rng::new(3);
        // 48 h a minute; hours 24..32 have 5x the noise, plus a level shift at hour 36.
        let pts: Vec<(i64, f64)> = (0..2880)
            .map(|i| {
                let h = i / 60;
                let sd = if (24..32).contains(&h) { 5.0 } else { 1.0 };
                let shift = if h >= 36 { 50.0 } else { 0.0 };
                (T0 + i * MIN, 20.0 + shift + sd * r.normal())
            })
            .collect();
        let ev = volatility_events(&pts, &VolatilityParams::default());
        assert_eq!(ev.len(), 1, "{ev:?}");
        assert_eq!(ev[0].started_at, T0 + 24 * 60 * MIN);
        assert_eq!(ev[0].ended_at, T0 + (32 * 60 - 1) * MIN);
        assert_eq!(ev[0].points, 2, "two 4-hour windows");
        assert!((ev[0].peak_score - 5.0).abs() < 1.0, "{ev:?}");
        assert!(ev[0].risk >= 0.5);
    }

    #[test]
    fn steady_noise_spikes_and_short_series_give_nothing() {
        let mut r = crate::rng::Rng::new(4);
        let mut pts: Vec<(i64, f64)> = (0..2880)
            .map(|i| (T0 + i * MIN, 20.0 + r.normal()))
            .collect();
        pts[1500].1 = 500.0; // one spike is not volatility
        assert!(volatility_events(&pts, &VolatilityParams::default()).is_empty());
        assert!(volatility_events(&pts[..100], &VolatilityParams::default()).is_empty());
        assert!(volatility_events(&[], &VolatilityParams::default()).is_empty());
        let c: Vec<(i64, f64)> = (0..2880).map(|i| (T0 + i * MIN, 7.0)).collect();
        assert!(volatility_events(&c, &VolatilityParams::default()).is_empty());
    }
}
