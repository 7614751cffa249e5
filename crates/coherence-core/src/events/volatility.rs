//! Variance changes in both directions: windows whose noise level (robust, from first
//! differences, so neither a level shift nor a single spike inflates it) is at least `ratio`
//! times — or at most 1/`ratio` of — the median noise level of the previous
//! [`VolatilityParams::history`] normal windows. Consecutive windows of one direction form one
//! event. A variance that falls matters too: a metric that stops moving is often a stuck
//! exporter or a dead worker.
//!
//! Windows are `window_us` wide, date_bin-aligned (from 2000-01-01), and need `min_points`
//! points. The evidence of a window is the log of its ratio against the sampling error of a
//! MAD-based scale (relative standard error ≈ 1.17/√m for m differences), giving a normal
//! z-statistic for the calibrated risk.

use super::window::{median_of, quantum};
use super::{risk, AnomalyEvent, Kind};

/// Parameters of volatility events.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VolatilityParams {
    /// Window width in microseconds (the seed's 4 hours).
    pub window_us: i64,
    /// Smallest change worth reporting: noise level at least `ratio` × (or at most 1/`ratio`
    /// of) the baseline, and significant ([`WINDOW_Z`] a window, [`MIN_Z`] a run).
    pub ratio: f64,
    /// Previous normal windows whose median noise level is the baseline.
    pub history: usize,
    /// Points a window needs to be judged.
    pub min_points: usize,
    /// A learned period (µs): when set, a window's baseline is the median noise level of the
    /// same window in up to [`super::level::PHASES`] earlier periods (busy hours are noisier
    /// every day), falling back to the trailing windows while fewer than 2 exist.
    pub period_us: Option<i64>,
}

impl Default for VolatilityParams {
    fn default() -> Self {
        VolatilityParams {
            window_us: 4 * crate::USEC_PER_HOUR,
            ratio: 1.3,
            history: 6,
            min_points: 12,
            period_us: None,
        }
    }
}

/// A window joins a volatility run when its |log ratio| is at least this many standard errors.
pub const WINDOW_Z: f64 = 3.0;
/// A run is an event when its combined evidence Σz/√k over its k windows reaches this.
pub const MIN_Z: f64 = 8.0;

/// Standard error of log(window noise / baseline noise) for `m` differences a window and a
/// baseline from `history` windows.
fn se_of(m: usize, history: usize) -> f64 {
    1.17 * (1.0 / m as f64 + 1.0 / (m as f64 * history.max(1) as f64)).sqrt()
}

/// Volatility events (up and down) of time-sorted finite points.
pub fn volatility_events(points: &[(i64, f64)], p: &VolatilityParams) -> Vec<AnomalyEvent> {
    let values: Vec<f64> = points
        .iter()
        .map(|x| x.1)
        .filter(|v| v.is_finite())
        .collect();
    volatility_events_at(points, p, quantum(&values))
}

/// [`volatility_events`] given the resolution ([`quantum`]) of the points' finite values.
pub(crate) fn volatility_events_at(
    points: &[(i64, f64)],
    p: &VolatilityParams,
    q: f64,
) -> Vec<AnomalyEvent> {
    let mut out = Vec::new();
    if p.window_us <= 0 || !(p.ratio.is_finite() && p.ratio > 1.0) {
        return out;
    }
    let origin = crate::detect::PG_EPOCH_US as i128;
    let w = p.window_us as i128;
    let bin = |t: i64| (origin + ((t as i128 - origin).div_euclid(w)) * w) as i64;
    let pts: Vec<(i64, f64)> = points
        .iter()
        .copied()
        .filter(|(_, v)| v.is_finite())
        .collect();
    // (first ts, last ts, noise level, differences), and noise level by window start.
    let mut windows: Vec<(i64, i64, f64, usize)> = Vec::new();
    let mut by_key: std::collections::HashMap<i64, f64> = std::collections::HashMap::new();
    let mut i = 0;
    while i < pts.len() {
        let key = bin(pts[i].0);
        let mut j = i;
        while j < pts.len() && bin(pts[j].0) == key {
            j += 1;
        }
        if j - i >= p.min_points.max(4) {
            let mut d: Vec<f64> = pts[i..j]
                .windows(2)
                .map(|v| (v[1].1 - v[0].1).abs())
                .collect();
            let m = d.len();
            let noise = 1.4826 * median_of(&mut d) / std::f64::consts::SQRT_2;
            windows.push((pts[i].0, pts[j - 1].0, noise, m));
            by_key.insert(key, noise);
        }
        i = j;
    }
    let floor = if q.is_finite() { q / 2.0 } else { 0.0 };
    let per_day = 86_400e6 / p.window_us as f64;
    let mut base_hist: std::collections::VecDeque<f64> = std::collections::VecDeque::new();
    // The open run: (event, sum of window z statistics).
    let mut open: Option<(AnomalyEvent, f64)> = None;
    let close = |o: Option<(AnomalyEvent, f64)>, out: &mut Vec<AnomalyEvent>| {
        if let Some((mut e, zsum)) = o {
            // Evidence accumulates over consecutive windows (Stouffer: Σz / √k).
            let z = zsum / (e.points as f64).sqrt();
            if z.abs() >= MIN_Z {
                e.p_value = risk::normal_two_sided(z);
                out.push(e);
            }
        }
    };
    for &(first, last, noise, m) in &windows {
        let mut dir = 0i8;
        let mut ratio = 1.0;
        let mut base = f64::NAN;
        let mut zlog = 0.0;
        let mut same_phase: Vec<f64> = match p.period_us {
            Some(len) if len > 0 => (1..=super::level::PHASES as i64)
                .filter_map(|k| {
                    by_key
                        .get(&(bin(first).saturating_sub(k.saturating_mul(len))))
                        .copied()
                })
                .collect(),
            _ => Vec::new(),
        };
        if same_phase.len() >= 2 || base_hist.len() >= 3 {
            base = if same_phase.len() >= 2 {
                median_of(&mut same_phase)
            } else {
                let mut b: Vec<f64> = base_hist.iter().copied().collect();
                median_of(&mut b)
            };
            let (num, den) = (noise.max(floor), base.max(floor));
            if den > 0.0 {
                ratio = num / den;
            }
            zlog = ratio.ln() / se_of(m, p.history);
            if ratio >= p.ratio && noise > floor && zlog >= WINDOW_Z {
                dir = 1;
            } else if ratio <= 1.0 / p.ratio && base > floor && -zlog >= WINDOW_Z {
                dir = -1;
            }
        }
        let kind = if dir > 0 {
            Kind::VolatilityUp
        } else {
            Kind::VolatilityDown
        };
        match (dir, open.as_mut()) {
            (0, _) => {}
            (_, Some((e, zsum))) if e.kind == kind => {
                e.ended_at = last;
                e.points += 1;
                *zsum += zlog;
                if ratio.ln().abs() > e.peak_score.ln().abs() {
                    e.peak_at = first;
                    e.peak_value = noise;
                    e.peak_score = ratio;
                }
                if e.points > p.history {
                    // A change that lasts `history` windows is the new normal.
                    base_hist.push_back(noise);
                    if base_hist.len() > p.history {
                        base_hist.pop_front();
                    }
                }
                continue;
            }
            _ => {}
        }
        close(open.take(), &mut out);
        if dir == 0 {
            base_hist.push_back(noise);
            if base_hist.len() > p.history {
                base_hist.pop_front();
            }
            continue;
        }
        open = Some((
            AnomalyEvent {
                kind,
                started_at: first,
                ended_at: last,
                peak_at: first,
                peak_value: noise,
                baseline: base,
                peak_score: ratio,
                points: 1,
                p_value: 1.0,
                tests_per_day: per_day,
                risk: 0.0,
                trend: None,
            },
            zlog,
        ));
    }
    close(open.take(), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    const MIN: i64 = 60_000_000;
    const T0: i64 = 1_765_440_000_000_000; // 2025-12-11 08:00 UTC, window-aligned

    fn series(sd: impl Fn(i64) -> f64, shift: impl Fn(i64) -> f64, seed: u64) -> Vec<(i64, f64)> {
        let mut r = crate::rng::Rng::new(seed);
        (0..2880)
            .map(|i| (T0 + i * MIN, 20.0 + shift(i / 60) + sd(i / 60) * r.normal()))
            .collect()
    }

    #[test]
    fn a_volatile_stretch_is_one_event_and_a_level_shift_is_not_volatility() {
        let pts = series(
            |h| if (24..32).contains(&h) { 5.0 } else { 1.0 },
            |h| if h >= 36 { 50.0 } else { 0.0 },
            3,
        );
        let ev = volatility_events(&pts, &VolatilityParams::default());
        assert_eq!(ev.len(), 1, "{ev:?}");
        assert_eq!(ev[0].kind, Kind::VolatilityUp);
        assert_eq!(ev[0].started_at, T0 + 24 * 60 * MIN);
        assert_eq!(ev[0].ended_at, T0 + (32 * 60 - 1) * MIN);
        assert_eq!(ev[0].points, 2, "two 4-hour windows");
        assert!((ev[0].peak_score - 5.0).abs() < 1.0, "{ev:?}");
    }

    #[test]
    fn a_variance_that_halves_is_found() {
        let pts = series(|h| if h >= 24 { 0.5f64.sqrt() } else { 1.0 }, |_| 0.0, 5);
        let ev = volatility_events(&pts, &VolatilityParams::default());
        assert!(!ev.is_empty(), "{ev:?}");
        assert_eq!(ev[0].kind, Kind::VolatilityDown);
        assert_eq!(ev[0].started_at, T0 + 24 * 60 * MIN);
    }

    #[test]
    fn steady_noise_spikes_and_short_series_give_nothing() {
        let mut pts = series(|_| 1.0, |_| 0.0, 4);
        pts[1500].1 = 500.0; // one spike is not volatility
        assert!(volatility_events(&pts, &VolatilityParams::default()).is_empty());
        assert!(volatility_events(&pts[..100], &VolatilityParams::default()).is_empty());
        assert!(volatility_events(&[], &VolatilityParams::default()).is_empty());
        let c: Vec<(i64, f64)> = (0..2880).map(|i| (T0 + i * MIN, 7.0)).collect();
        assert!(volatility_events(&c, &VolatilityParams::default()).is_empty());
    }
}
