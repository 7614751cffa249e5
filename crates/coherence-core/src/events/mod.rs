//! Localized anomaly events: the detectors behind `coherence.series_events` and
//! `coherence.detect_events`, and the one place where anomaly kinds, their wording and their
//! defaults live.
//!
//! [`analyze`] runs every detector on one series and returns its events with a calibrated risk:
//! * [`season`]: learns whether the series repeats hourly, daily or weekly;
//! * [`level`]: robust point scores against a trailing (or same-phase) baseline give spikes,
//!   drops and short excursions; a two-sided CUSUM on the same scores gives persistent level
//!   shifts up and down;
//! * [`volatility`]: variance that rises or falls, window by window;
//! * [`trend`]: leak-like growth (percent rule, with time to exhaustion) and slow drifts
//!   (measured in noise σ), over the whole analysed span;
//! * [`risk`]: every event's tail probability becomes one risk in [0, 1] (see there), and a
//!   series that has had similar events recently is less surprised by another.
//!
//! Only events with risk ≥ [`EventParams::min_risk`] are reported, and only those that end at or
//! after [`EventParams::report_from`]: points before it are history (the baseline), not news.

pub mod collective;
pub mod involved;
pub mod level;
pub mod nodata;
pub mod risk;
pub mod season;
pub mod trend;
pub mod volatility;
mod window;

pub use season::{detect_period, Period, SeasonReport};
pub use trend::{mann_kendall_z, trend_event, TrendEvent, TrendEventParams};
pub use volatility::{volatility_events, VolatilityParams};

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

impl std::fmt::Display for Direction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Direction::Both => "both",
            Direction::Up => "up",
            Direction::Down => "down",
        })
    }
}

/// Every kind of anomaly event, with its SQL name, detector and wording.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Spike,
    Drop,
    LevelShiftUp,
    LevelShiftDown,
    VolatilityUp,
    VolatilityDown,
    DriftUp,
    DriftDown,
    Leak,
    Collective,
    NoData,
}

impl Kind {
    pub const ALL: [Kind; 11] = [
        Kind::Spike,
        Kind::Drop,
        Kind::LevelShiftUp,
        Kind::LevelShiftDown,
        Kind::VolatilityUp,
        Kind::VolatilityDown,
        Kind::DriftUp,
        Kind::DriftDown,
        Kind::Leak,
        Kind::Collective,
        Kind::NoData,
    ];

    /// The name stored in `coherence.anomalies.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Spike => "spike",
            Kind::Drop => "drop",
            Kind::LevelShiftUp => "level_shift_up",
            Kind::LevelShiftDown => "level_shift_down",
            Kind::VolatilityUp => "volatility_up",
            Kind::VolatilityDown => "volatility_down",
            Kind::DriftUp => "drift_up",
            Kind::DriftDown => "drift_down",
            Kind::Leak => "leak",
            Kind::Collective => "collective",
            Kind::NoData => "no_data",
        }
    }

    /// The detector that reports it (`coherence.anomalies.detector`).
    pub fn detector(self) -> &'static str {
        match self {
            Kind::Spike | Kind::Drop | Kind::LevelShiftUp | Kind::LevelShiftDown => "robust",
            Kind::VolatilityUp | Kind::VolatilityDown => "volatility",
            Kind::DriftUp | Kind::DriftDown | Kind::Leak => "trend",
            Kind::Collective => "collective",
            Kind::NoData => "no_data",
        }
    }

    /// What it means, for documentation (`coherence.anomaly_kinds`).
    pub fn description(self) -> &'static str {
        match self {
            Kind::Spike => "short rise above the expected range (fewer than 10 points)",
            Kind::Drop => "short fall below the expected range (fewer than 10 points)",
            Kind::LevelShiftUp => "the level rose and stayed up (CUSUM or 10+ anomalous points)",
            Kind::LevelShiftDown => {
                "the level fell and stayed down (CUSUM or 10+ anomalous points)"
            }
            Kind::VolatilityUp => "noise level rose against its recent baseline",
            Kind::VolatilityDown => "noise level fell against its recent baseline (stuck or idle?)",
            Kind::DriftUp => "slow significant rise over the analysed span, in noise σ",
            Kind::DriftDown => "slow significant fall over the analysed span, in noise σ",
            Kind::Leak => "leak-like growth above the percent threshold, with time to exhaustion",
            Kind::Collective => {
                "moved together with other metrics of the host, each perhaps within its own normal range"
            }
            Kind::NoData => {
                "the series stopped reporting: no sample for 2 or more of its own intervals"
            }
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Unit suffix shown after values of a metric: percent for the usual resource metrics.
pub fn metric_unit(metric: &str) -> &'static str {
    if metric_capacity(metric).is_some() {
        "%"
    } else {
        ""
    }
}

/// Capacity for time to exhaustion: 100 for percent metrics (cpu, memory, disk, *pct*,
/// *percent*), else none. Judged on the base name of a series key with labels, so
/// `cpu{core="0"}` is a percent metric like `cpu` (and a label value never makes one).
pub fn metric_capacity(metric: &str) -> Option<f64> {
    let m = crate::series::series_name(metric).to_ascii_lowercase();
    (matches!(m.as_str(), "cpu" | "memory" | "disk") || m.contains("pct") || m.contains("percent"))
        .then_some(100.0)
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EventParams {
    /// Trailing points in the level baseline.
    pub window: usize,
    /// Trailing points of residuals in the robust scale (longer than `window`: what is normal
    /// noise is learned over days, where the level is learned over hours).
    pub scale_window: usize,
    /// Period in points: `None` learns it ([`detect_period`]), `Some(0)` disables it.
    pub season: Option<usize>,
    /// |z| at or above this makes a point anomalous.
    pub threshold: f64,
    pub direction: Direction,
    /// Anomalous points at most this many points apart form one event.
    pub merge_gap: usize,
    /// Points of history needed before anything is scored.
    pub min_history: usize,
    /// Scale floor as a fraction of the series' noise level (robust first-difference
    /// estimate); the floor is also at least the series' resolution (1 for counts).
    pub min_scale_frac: f64,
    /// CUSUM allowance k (σ): half the smallest persistent shift worth finding.
    pub cusum_k: f64,
    /// CUSUM decision interval h (σ).
    pub cusum_h: f64,
    /// Only events with at least this risk are reported.
    pub min_risk: f64,
    /// Events ending before this time (Unix µs) are history, not reported.
    pub report_from: i64,
    pub volatility: VolatilityParams,
    pub trend: TrendEventParams,
}

impl Default for EventParams {
    fn default() -> Self {
        EventParams {
            window: 192,
            scale_window: 1008,
            season: None,
            threshold: 8.0,
            direction: Direction::Both,
            merge_gap: 6,
            min_history: 24,
            min_scale_frac: 1.0,
            cusum_k: 0.5,
            cusum_h: 12.0,
            min_risk: 0.2,
            report_from: i64::MIN,
            volatility: VolatilityParams::default(),
            trend: TrendEventParams::default(),
        }
    }
}

impl EventParams {
    pub fn validate(&self) -> Result<(), String> {
        if self.window < 3 || self.window > 1_000_000 {
            return Err("window must be between 3 and 1000000 points".into());
        }
        if self.scale_window < 3 || self.scale_window > 1_000_000 {
            return Err("scale_window must be between 3 and 1000000 points".into());
        }
        if !(self.threshold.is_finite() && self.threshold > 0.0) {
            return Err("threshold must be a finite number greater than 0".into());
        }
        if !(self.min_scale_frac.is_finite() && self.min_scale_frac >= 0.0) {
            return Err("min_scale_frac must be a finite number at least 0".into());
        }
        if !(self.min_risk.is_finite() && (0.0..=1.0).contains(&self.min_risk)) {
            return Err("min_risk must be between 0 and 1".into());
        }
        if !(self.cusum_h.is_finite() && self.cusum_h > 0.0 && self.cusum_k.is_finite()) {
            return Err("cusum_h must be a finite number greater than 0".into());
        }
        Ok(())
    }
}

/// One localized anomaly.
#[derive(Clone, Debug, PartialEq)]
pub struct AnomalyEvent {
    pub kind: Kind,
    pub started_at: i64,
    pub ended_at: i64,
    pub peak_at: i64,
    pub peak_value: f64,
    /// Expected value at the peak (for volatility: the baseline noise level).
    pub baseline: f64,
    /// Signed evidence: robust z at the peak (spikes), the run's mean-shift z (CUSUM shifts),
    /// the noise ratio (volatility), the Mann–Kendall z (trends).
    pub peak_score: f64,
    pub points: usize,
    /// Tail probability of one such test under the series' own behaviour.
    pub p_value: f64,
    /// Tests of this kind a day on this series (for the multiple-testing adjustment).
    pub tests_per_day: f64,
    pub risk: f64,
    /// Fit details of trend events.
    pub trend: Option<TrendEvent>,
}

fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    let r = (v * 100.0).round() / 100.0;
    let s = format!("{r:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.into()
    }
}

impl AnomalyEvent {
    /// The one-line summary shown to users, e.g.
    /// `web-1:latency → spike to 950 at 2025-12-13 04:10 UTC (expected 120, 14.2 robust σ)`.
    pub fn summary(&self, host: &str, metric: &str) -> String {
        let u = metric_unit(metric);
        let at = crate::format_utc_minute;
        let hm = format!("{host}:{metric}");
        let span = if self.points > 1 {
            format!(", {} points until {}", self.points, at(self.ended_at))
        } else {
            String::new()
        };
        match self.kind {
            Kind::Spike | Kind::Drop => format!(
                "{hm} → {} to {}{u} at {} (expected {}{u}, {:.1} robust σ{span})",
                if self.kind == Kind::Spike { "spike" } else { "drop" },
                fmt_num(self.peak_value),
                at(self.peak_at),
                fmt_num(self.baseline),
                self.peak_score.abs()
            ),
            Kind::LevelShiftUp | Kind::LevelShiftDown => format!(
                "{hm} → level shift {} from {} (expected {}{u}, reached {}{u}, {:.1} σ evidence{span})",
                if self.kind == Kind::LevelShiftUp { "up" } else { "down" },
                at(self.started_at),
                fmt_num(self.baseline),
                fmt_num(self.peak_value),
                self.peak_score.abs()
            ),
            Kind::VolatilityUp | Kind::VolatilityDown => format!(
                "{hm} → volatility {} to {}x its baseline (noise σ {} vs {}) from {} to {}",
                if self.kind == Kind::VolatilityUp { "up" } else { "down" },
                fmt_num(self.peak_score),
                fmt_num(self.peak_value),
                fmt_num(self.baseline),
                at(self.started_at),
                at(self.ended_at)
            ),
            Kind::NoData => nodata::summary(
                host,
                metric,
                self.started_at,
                self.ended_at,
                self.baseline,
                self.peak_score,
            ),
            Kind::Collective => format!(
                "{hm} → moved with other metrics of the host from {} to {} ({:.1} σ evidence)",
                at(self.started_at),
                at(self.ended_at),
                self.peak_score.abs()
            ),
            Kind::DriftUp | Kind::DriftDown | Kind::Leak => {
                let t = self.trend.as_ref();
                let (fs, fe, pct, r2) = t
                    .map(|t| (t.fitted_start, t.fitted_end, t.pct_change, t.r2))
                    .unwrap_or((self.baseline, self.peak_value, f64::NAN, f64::NAN));
                let full = t
                    .and_then(|t| t.exhaustion_at)
                    .map(|x| format!(", full at {}", at(x)))
                    .unwrap_or_default();
                let what = match self.kind {
                    Kind::Leak => "leak pattern",
                    Kind::DriftUp => "drifting up",
                    _ => "drifting down",
                };
                format!(
                    "{hm} → {what}: {}{u} → {}{u} ({}{:.0}%, R² {}) from {} to {}{full}",
                    fmt_num(fs),
                    fmt_num(fe),
                    if pct >= 0.0 { "+" } else { "" },
                    pct,
                    fmt_num(r2),
                    at(self.started_at),
                    at(self.ended_at)
                )
            }
        }
    }
}

/// What [`analyze`] found in one series.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Analysis {
    pub events: Vec<AnomalyEvent>,
    pub season: SeasonReport,
}

/// A series made ready for scoring: usable points sorted by time (one per timestamp: the
/// lowest value given at that time), the
/// learned period, and the values with a significant trend taken out.
pub(crate) struct Prepared {
    pub pts: Vec<(i64, f64)>,
    pub ts: Vec<i64>,
    pub x: Vec<f64>,
    /// `x` minus the trend line (equal to `x` without a significant trend).
    pub xd: Vec<f64>,
    pub per_day: f64,
    pub period_us: Option<i64>,
    pub trend: Option<AnomalyEvent>,
    /// Slope of the removed trend, value units per µs.
    pub slope_us: f64,
}

/// Prepares a series ([`Prepared`]); `None` with too little history. `season` receives the
/// period report when the period is learned.
pub(crate) fn prepare(
    points: &[(i64, f64)],
    p: &EventParams,
    season_out: &mut SeasonReport,
) -> Option<Prepared> {
    let mut pts: Vec<(i64, f64)> = points
        .iter()
        .copied()
        .filter(|(_, v)| crate::usable_value(*v))
        .collect();
    // One point a timestamp: of values given at one time, the lowest, so the result does not
    // depend on the order the points came in (a parallel aggregate packs them in any order).
    pts.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
    pts.dedup_by_key(|x| x.0);
    if pts.len() <= p.min_history.max(3) {
        return None;
    }
    let ts: Vec<i64> = pts.iter().map(|x| x.0).collect();
    let x: Vec<f64> = pts.iter().map(|x| x.1).collect();
    let step = season::median_step(&ts);
    let per_day = if step > 0 {
        86_400e6 / step as f64
    } else {
        1.0
    };
    let period_us = match p.season {
        Some(0) => None,
        Some(k) => Some((k as i64).saturating_mul(step)),
        None => {
            *season_out = detect_period(&ts, &x);
            season_out.period.as_ref().map(|q| q.length_us)
        }
    };
    // A significant trend (leak or drift) is one event; the level detectors then judge the
    // detrended series, so a ramp is not also reported as a string of level shifts.
    let trend = trend::trend_events(&pts, &p.trend);
    let slope_us = trend
        .as_ref()
        .and_then(|t| t.trend.as_ref())
        .map_or(0.0, |t| t.slope_per_hour / crate::USEC_PER_HOUR as f64);
    let xd: Vec<f64> = ts
        .iter()
        .zip(&x)
        .map(|(t, v)| v - slope_us * (*t as f64 - ts[0] as f64))
        .collect();
    Some(Prepared {
        pts,
        ts,
        x,
        xd,
        per_day,
        period_us,
        trend,
        slope_us,
    })
}

/// The level detector's two passes: pass 1 measures how much the scores wander (τ) and their
/// tail; pass 2 scores again with the CUSUM at that τ. (Pass 1 runs the CUSUM as if the scores
/// were white, so a level shift restarts the baseline there too and its points do not pass for
/// the series' normal tail.) Pass 2 gives pass 1's scores until either CUSUM alarms
/// ([`level::rescan`] starts there); when scores do not wander (τ = 1, ρ ≤ 0: white noise) or
/// neither CUSUM alarms, pass 1 stands (`second` is None).
struct LevelPasses {
    first: level::Scores,
    second: Option<level::Scores>,
    /// The level shifts of the final pass.
    shifts: Vec<AnomalyEvent>,
    /// What the passes shared, and pass 1's first alarm (for [`collective_scores`]).
    shared: level::Shared,
    first_restart: Option<usize>,
}

fn level_passes(
    ts: &[i64],
    xd: &[f64],
    q: f64,
    period_us: Option<i64>,
    p: &EventParams,
    per_day: f64,
    tick: &mut dyn FnMut(),
) -> LevelPasses {
    let sh = level::shared(ts, xd, q, period_us, p, tick);
    let (first, first_shifts, first_restart) =
        level::scan(ts, xd, &sh, p, Some(1.0), per_day, tick);
    let tau = level::tau_of(&first.z);
    let second = (tau != 1.0)
        .then(|| {
            level::rescan(
                ts,
                xd,
                &sh,
                p,
                Some(tau),
                per_day,
                &first,
                first_restart,
                tick,
            )
        })
        .flatten();
    let (second, shifts) = match second {
        None => (None, first_shifts),
        Some((second, shifts)) => (Some(second), shifts),
    };
    LevelPasses {
        first,
        second,
        shifts,
        shared: sh,
        first_restart,
    }
}

/// Runs every detector on one series of (Unix µs, value) points (any order; non-finite values
/// are skipped) and returns the reportable events, oldest first.
pub fn analyze(points: &[(i64, f64)], p: &EventParams) -> Analysis {
    analyze_with(points, p, &mut || {})
}

/// [`analyze`], calling `tick` every few thousand points of work (PostgreSQL passes its
/// interrupt check, so a long series can be cancelled; `tick` may not return).
pub fn analyze_with(points: &[(i64, f64)], p: &EventParams, tick: &mut dyn FnMut()) -> Analysis {
    analyze_inner(points, p, tick, false).0
}

/// [`analyze_with`], and the series' scores as the collective detector takes them
/// ([`collective::score_series`]: the level scan without a CUSUM), made from this analysis'
/// preparation and pass 1 (exactly, see [`level::rescan`]) instead of preparing and scanning
/// the series again. The scores are `None` with too little history. They are the collective
/// detector's only when `p` scores as its parameters do ([`scores_as`]).
pub fn analyze_scored(
    points: &[(i64, f64)],
    p: &EventParams,
    tick: &mut dyn FnMut(),
) -> (Analysis, Option<collective::Scored>) {
    analyze_inner(points, p, tick, true)
}

/// Whether series analysed with `a` and `b` get the same level scores: every setting but the
/// reporting ones (risk floor, report start) and the capacity (which only dates exhaustion).
pub fn scores_as(a: &EventParams, b: &EventParams) -> bool {
    let plain = |p: &EventParams| EventParams {
        min_risk: 0.0,
        report_from: 0,
        trend: TrendEventParams {
            capacity: None,
            ..p.trend
        },
        ..*p
    };
    plain(a) == plain(b)
}

fn analyze_inner(
    points: &[(i64, f64)],
    p: &EventParams,
    tick: &mut dyn FnMut(),
    want_scores: bool,
) -> (Analysis, Option<collective::Scored>) {
    let mut out = Analysis::default();
    let Some(prep) = prepare(points, p, &mut out.season) else {
        return (out, None);
    };
    let Prepared {
        pts,
        ts,
        x,
        xd,
        per_day,
        period_us,
        trend,
        slope_us,
    } = prep;
    let step = season::median_step(&ts);
    let along = |t: i64| slope_us * (t as f64 - ts[0] as f64);
    // The level detector's two passes (level_passes); the tail is pass 1's.
    tick();
    // The resolution of the detrended values; without a trend they are the values themselves
    // (x − 0 is x), so the volatility detector takes it too.
    let q = window::quantum(&xd);
    let LevelPasses {
        first,
        second,
        shifts,
        shared,
        first_restart,
    } = level_passes(&ts, &xd, q, period_us, p, per_day, tick);
    let scores = second.as_ref().unwrap_or(&first);
    tick();
    let tail = risk::Tail::fit(&first.z);
    let mut robust = level::point_events(&ts, &xd, scores, p, per_day, tail);
    robust.extend(shifts);
    for e in robust.iter_mut() {
        // Back to the metric's own units: the value at the peak, the baseline on the trend.
        let i = ts.partition_point(|t| *t < e.peak_at).min(ts.len() - 1);
        e.peak_value = x[i];
        e.baseline += along(e.peak_at);
    }

    let mut events = merge_excursions(
        merge_overlapping(robust, (p.merge_gap as i64).saturating_mul(step)),
        &ts,
        &x,
    );
    if p.direction == Direction::Both {
        let vp = VolatilityParams {
            period_us: period_us.filter(|len| *len >= p.volatility.window_us),
            ..p.volatility
        };
        events.extend(if slope_us == 0.0 {
            volatility::volatility_events_at(&pts, &vp, q)
        } else {
            volatility_events(&pts, &vp)
        });
    }
    if let Some(t) = trend {
        if p.direction == Direction::Both
            || (p.direction == Direction::Up) == (t.kind != Kind::DriftDown)
        {
            events.push(t);
        }
    }
    let t0 = ts[0];
    calibrate(&mut events, t0);
    events.retain(|e| e.risk >= p.min_risk && e.ended_at >= p.report_from);
    events.sort_by(|a, b| {
        a.started_at
            .cmp(&b.started_at)
            .then(a.kind.as_str().cmp(b.kind.as_str()))
    });
    out.events = events;
    if !want_scores {
        return (out, None);
    }
    // Without a CUSUM the scores are pass 1's up to its first alarm.
    let free = level::rescan(
        &ts,
        &xd,
        &shared,
        p,
        None,
        per_day,
        &first,
        first_restart,
        tick,
    )
    .map_or(first, |(s, _)| s);
    (out, Some(collective::Scored::new(ts, x, free, slope_us)))
}

/// One point of a series with the range the level detector considered normal there.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BandPoint {
    pub ts: i64,
    pub value: f64,
    /// Expected value (the seasonal level plus the trend), NaN while warming up.
    pub baseline: f64,
    /// `baseline ∓ threshold · scale`: outside this range (in the allowed direction) a point is
    /// anomalous. NaN while the detector warms up (its first `min_history` points).
    pub lower: f64,
    pub upper: f64,
    /// `|z| ≥ threshold` in the allowed direction.
    pub anomalous: bool,
}

/// The expected band of a series: for every usable point, the baseline and the bounds that
/// [`analyze_with`]'s level detector used (same preparation, learned period, trend and the
/// second, CUSUM-aware pass), so a client draws exactly what was judged.
pub fn band_with(points: &[(i64, f64)], p: &EventParams, tick: &mut dyn FnMut()) -> Vec<BandPoint> {
    let mut season = SeasonReport::default();
    let Some(prep) = prepare(points, p, &mut season) else {
        return Vec::new();
    };
    let Prepared {
        ts,
        x,
        xd,
        per_day,
        period_us,
        slope_us,
        ..
    } = prep;
    let passes = level_passes(&ts, &xd, window::quantum(&xd), period_us, p, per_day, tick);
    let scores = passes.second.as_ref().unwrap_or(&passes.first);
    let t0 = ts[0];
    (0..ts.len())
        .map(|i| {
            let trend = slope_us * (ts[i] as f64 - t0 as f64);
            let base = scores.baseline[i] + trend;
            let half = p.threshold * scores.scale[i];
            let z = scores.z[i];
            let anomalous = z.is_finite()
                && match p.direction {
                    Direction::Both => z.abs() >= p.threshold,
                    Direction::Up => z >= p.threshold,
                    Direction::Down => -z >= p.threshold,
                };
            BandPoint {
                ts: ts[i],
                value: x[i],
                baseline: base,
                lower: base - half,
                upper: base + half,
                anomalous,
            }
        })
        .collect()
}

/// Point and CUSUM events of one series that overlap (or lie within `gap` µs) are one event:
/// the union of their spans, with the peak and evidence of the stronger, and the kind of the
/// level shift when one of them is a CUSUM shift.
fn merge_overlapping(mut ev: Vec<AnomalyEvent>, gap: i64) -> Vec<AnomalyEvent> {
    ev.sort_by_key(|e| e.started_at);
    let mut out: Vec<AnomalyEvent> = Vec::with_capacity(ev.len());
    for e in ev {
        if let Some(last) = out.last_mut() {
            if e.started_at <= last.ended_at.saturating_add(gap) {
                let (s, end) = (last.started_at, last.ended_at.max(e.ended_at));
                let pts = last.points.max(e.points);
                // A persistent shift (CUSUM) names the merged event; the strongest evidence
                // gives its peak and tail probability.
                let shift = [last.kind, e.kind]
                    .into_iter()
                    .find(|k| matches!(k, Kind::LevelShiftUp | Kind::LevelShiftDown));
                if e.p_value * e.tests_per_day < last.p_value * last.tests_per_day {
                    *last = e;
                }
                if let Some(k) = shift {
                    last.kind = k;
                }
                last.started_at = s;
                last.ended_at = end;
                last.points = pts;
                continue;
            }
        }
        out.push(e);
    }
    out
}

/// A level shift followed by the opposite shift back to (about) the level before it is one
/// excursion: a drop that lasts six hours and recovers is one `level_shift_down` event spanning
/// the drop, not a drop and a rise. "About": the median of the values during the second shift's
/// run is within half the first shift's size (level during − level before) of the level before.
fn merge_excursions(ev: Vec<AnomalyEvent>, ts: &[i64], x: &[f64]) -> Vec<AnomalyEvent> {
    let median_between = |a: i64, b: i64| {
        let (i, j) = (
            ts.partition_point(|t| *t < a),
            ts.partition_point(|t| *t <= b),
        );
        let mut v = x[i..j.max(i)].to_vec();
        (!v.is_empty()).then(|| window::median_of(&mut v))
    };
    let mut out: Vec<AnomalyEvent> = Vec::with_capacity(ev.len());
    for e in ev {
        if let Some(last) = out.last_mut() {
            let opposite = matches!(
                (last.kind, e.kind),
                (Kind::LevelShiftDown, Kind::LevelShiftUp)
                    | (Kind::LevelShiftUp, Kind::LevelShiftDown)
            );
            let (before, during) = (last.baseline, e.baseline);
            let back = median_between(e.started_at, e.ended_at)
                .is_some_and(|after| (after - before).abs() <= 0.5 * (during - before).abs());
            if opposite && back {
                last.ended_at = e.ended_at;
                last.points += e.points;
                continue;
            }
        }
        out.push(e);
    }
    out
}

/// Sets each event's risk ([`risk::risk`]), counting earlier similar events of the series.
fn calibrate(events: &mut [AnomalyEvent], t0: i64) {
    events.sort_by_key(|e| e.started_at);
    for i in 0..events.len() {
        let e = &events[i];
        let mag = e.peak_score.abs();
        let similar = events[..i]
            .iter()
            .filter(|o| o.kind == e.kind && o.peak_score.abs() >= risk::SIMILAR * mag)
            .count();
        let days = ((e.started_at as f64 - t0 as f64) / 86_400e6).max(1.0);
        let r = risk::risk(e.p_value, e.tests_per_day, similar as f64 / days);
        events[i].risk = r;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    const MIN: i64 = 60_000_000;
    const H: i64 = 60 * MIN;
    const DAY: i64 = 24 * H;
    /// 2025-12-01 00:00 UTC.
    const T0: i64 = 1_764_547_200_000_000;

    /// `n` points every `step` µs: 100 + sd·N(0, 1) + f(i).
    fn series(
        n: usize,
        step: i64,
        sd: f64,
        seed: u64,
        f: impl Fn(usize) -> f64,
    ) -> Vec<(i64, f64)> {
        let mut r = crate::rng::Rng::new(seed);
        (0..n)
            .map(|i| (T0 + i as i64 * step, 100.0 + sd * r.normal() + f(i)))
            .collect()
    }

    fn kinds(a: &Analysis) -> Vec<Kind> {
        a.events.iter().map(|e| e.kind).collect()
    }

    #[test]
    fn band_holds_the_normal_points_and_excludes_the_spike_that_analyze_reports() {
        let pts = series(2000, MIN, 1.0, 7, |i| if i == 1500 { 25.0 } else { 0.0 });
        let p = EventParams::default();
        let band = band_with(&pts, &p, &mut || {});
        assert_eq!(band.len(), 2000);
        // Warming up: no bounds yet; then every point has them.
        assert!(band[0].lower.is_nan() && band[1999].lower.is_finite());
        let spike = &band[1500];
        assert!(spike.anomalous && spike.value > spike.upper, "{spike:?}");
        let normal = band
            .iter()
            .filter(|b| b.lower.is_finite() && !b.anomalous)
            .count();
        let inside = band
            .iter()
            .filter(|b| b.lower.is_finite() && b.value >= b.lower && b.value <= b.upper)
            .count();
        assert_eq!(
            inside, normal,
            "a point is anomalous exactly when it leaves the band"
        );
        // The detector's spike event peaks at the same point.
        let a = analyze(&pts, &p);
        assert!(a
            .events
            .iter()
            .any(|e| e.kind == Kind::Spike && e.peak_at == spike.ts));
        // The band is about threshold σ wide around the level (σ 1, threshold 8).
        let w = (spike.upper - spike.lower) / 2.0;
        assert!((w / p.threshold - 1.0).abs() < 0.3, "half-width {w}");
        assert!((spike.baseline - 100.0).abs() < 0.5);
    }

    #[test]
    fn band_follows_a_learned_daily_pattern() {
        // Ten days a minute; +20 between 09:00 and 17:00 every day.
        let pts = series(10 * 1440, MIN, 1.0, 8, |i| {
            if (540..1020).contains(&(i % 1440)) {
                20.0
            } else {
                0.0
            }
        });
        let band = band_with(&pts, &EventParams::default(), &mut || {});
        let day9 = 9 * 1440;
        let (noon, night) = (&band[day9 + 720], &band[day9 + 120]);
        assert!(noon.baseline > night.baseline + 15.0, "{noon:?} {night:?}");
        assert!(!noon.anomalous && !night.anomalous);
        assert!(band_with(&pts[..10], &EventParams::default(), &mut || {}).is_empty());
    }

    #[test]
    fn an_hourly_job_spike_at_a_fixed_minute_for_seven_days_gives_at_most_two_events() {
        // Minute data; the job adds 40σ at minute 17 of every hour.
        let pts = series(
            7 * 1440,
            MIN,
            1.0,
            1,
            |i| if i % 60 == 47 { 40.0 } else { 0.0 },
        );
        let a = analyze(&pts, &EventParams::default());
        assert!(a.events.len() <= 2, "{:?}", a.events);
        assert_eq!(a.season.period.as_ref().map(|p| p.name), Some("hourly"));
        // The first peak is scored too (it is after the warm-up), so this is not luck.
        assert!(47 > EventParams::default().min_history);
    }

    #[test]
    fn the_same_job_without_period_learning_is_still_quieted_by_its_own_history() {
        let pts = series(
            7 * 1440,
            MIN,
            1.0,
            1,
            |i| if i % 60 == 47 { 40.0 } else { 0.0 },
        );
        let p = EventParams {
            season: Some(0),
            ..Default::default()
        };
        // Each repetition is as extreme as the last: the series' own rate takes the risk down.
        let a = analyze(&pts, &p);
        assert!(a.events.len() <= 3, "{:?}", a.events);
    }

    #[test]
    fn a_daily_peak_gives_no_event_after_the_first_two_days() {
        // 5-minute data, 10 days; a 2-hour peak of +30σ every afternoon.
        let per_day = 288;
        let pts = series(10 * per_day, 5 * MIN, 1.0, 2, |i| {
            let m = i % per_day;
            if (168..192).contains(&m) {
                30.0
            } else {
                0.0
            }
        });
        let a = analyze(&pts, &EventParams::default());
        assert_eq!(a.season.period.as_ref().map(|p| p.name), Some("daily"));
        assert!(
            a.events.iter().all(|e| e.started_at < T0 + 2 * DAY),
            "{:?}",
            a.events
        );
    }

    #[test]
    fn a_level_drop_of_one_and_a_half_noise_for_six_hours_is_one_level_shift_down() {
        // Minute data, 2 days; from hour 30 to 36 the level is 1.5σ lower.
        let pts = series(2 * 1440, MIN, 2.0, 3, |i| {
            if (30 * 60..36 * 60).contains(&i) {
                -3.0
            } else {
                0.0
            }
        });
        let a = analyze(&pts, &EventParams::default());
        let shifts: Vec<_> = a
            .events
            .iter()
            .filter(|e| e.kind == Kind::LevelShiftDown)
            .collect();
        assert_eq!(shifts.len(), 1, "{:?}", a.events);
        let s = shifts[0];
        assert!(
            s.started_at >= T0 + 29 * H && s.started_at <= T0 + 31 * H,
            "{s:?}"
        );
        assert!(
            a.events.iter().all(|e| e.kind != Kind::Spike),
            "{:?}",
            a.events
        );
    }

    #[test]
    fn a_variance_that_halves_is_found() {
        let pts = series(2 * 1440, MIN, 1.0, 4, |_| 0.0);
        let mut r = crate::rng::Rng::new(40);
        let pts: Vec<(i64, f64)> = pts
            .into_iter()
            .enumerate()
            .map(|(i, (t, v))| {
                if i >= 1440 {
                    (t, 100.0 + 0.5f64.sqrt() * r.normal())
                } else {
                    (t, v)
                }
            })
            .collect();
        let a = analyze(&pts, &EventParams::default());
        assert!(kinds(&a).contains(&Kind::VolatilityDown), "{:?}", a.events);
    }

    #[test]
    fn a_drift_of_three_noise_sigma_a_day_over_five_days_is_found() {
        // 5-minute data, 5 days, +3σ a day (15σ in all, only +15% of the level: no leak).
        let per_day = 288.0;
        let pts = series(5 * 288, 5 * MIN, 1.0, 5, |i| 3.0 * i as f64 / per_day);
        let a = analyze(&pts, &EventParams::default());
        assert!(
            kinds(&a).contains(&Kind::DriftUp) || kinds(&a).contains(&Kind::LevelShiftUp),
            "{:?}",
            a.events
        );
        let d = a
            .events
            .iter()
            .find(|e| e.kind == Kind::DriftUp)
            .expect("a drift");
        assert!(
            d.summary("h", "m").contains("drifting up"),
            "{}",
            d.summary("h", "m")
        );
    }

    #[test]
    fn a_single_spike_is_a_spike_not_a_level_shift() {
        let pts = series(
            2 * 1440,
            MIN,
            1.0,
            6,
            |i| if i == 2000 { 60.0 } else { 0.0 },
        );
        let a = analyze(&pts, &EventParams::default());
        assert_eq!(kinds(&a), vec![Kind::Spike], "{:?}", a.events);
        assert_eq!(a.events[0].peak_at, T0 + 2000 * MIN);
    }

    #[test]
    fn noise_alone_gives_nothing() {
        for seed in 0..10 {
            let pts = series(3 * 1440, MIN, 1.0, 100 + seed, |_| 0.0);
            let a = analyze(&pts, &EventParams::default());
            assert!(a.events.is_empty(), "seed {seed}: {:?}", a.events);
        }
    }

    #[test]
    fn bigger_anomalies_get_higher_risk() {
        let pts = series(3 * 1440, MIN, 1.0, 7, |i| match i {
            1500 => 15.0,
            2500 => 80.0,
            _ => 0.0,
        });
        let p = EventParams {
            min_risk: 0.0,
            ..Default::default()
        };
        let a = analyze(&pts, &p);
        let r = |at: usize| {
            a.events
                .iter()
                .find(|e| e.peak_at == T0 + at as i64 * MIN)
                .map(|e| e.risk)
                .unwrap_or(-1.0)
        };
        assert!(r(2500) > r(1500) && r(1500) >= 0.0, "{:?}", a.events);
    }

    #[test]
    fn report_from_keeps_history_as_baseline_only() {
        // The later spike is the bigger one (an equal one would be "seen before").
        let pts = series(2 * 1440, MIN, 1.0, 8, |i| match i {
            300 => 40.0,
            2000 => 80.0,
            _ => 0.0,
        });
        let all = analyze(&pts, &EventParams::default());
        assert_eq!(all.events.len(), 2, "{:?}", all.events);
        let p = EventParams {
            report_from: T0 + 1440 * MIN,
            ..Default::default()
        };
        let recent = analyze(&pts, &p);
        assert_eq!(recent.events.len(), 1);
        assert_eq!(recent.events[0].peak_at, T0 + 2000 * MIN);
    }

    #[test]
    fn values_given_twice_at_one_time_give_the_same_events_in_any_order() {
        // A spike given at the same time as a normal value, before or after it: the lowest
        // value of the time is kept either way (here the normal one: no spike).
        let base = series(2000, MIN, 1.0, 5, |_| 0.0);
        let p = EventParams::default();
        let mut first = base.clone();
        first.insert(1500, (base[1500].0, 500.0));
        let mut last = base.clone();
        last.insert(1501, (base[1500].0, 500.0));
        assert_eq!(
            format!("{:?}", analyze(&first, &p)),
            format!("{:?}", analyze(&last, &p))
        );
        assert_eq!(
            format!("{:?}", analyze(&first, &p)),
            format!("{:?}", analyze(&base, &p))
        );
    }

    #[test]
    fn edge_cases_give_no_events_and_bad_parameters_are_rejected() {
        let p = EventParams::default();
        assert!(analyze(&[], &p).events.is_empty());
        assert!(analyze(&[(T0, 1.0), (T0 + MIN, 2.0)], &p).events.is_empty());
        let flat: Vec<(i64, f64)> = (0..500).map(|i| (T0 + i * MIN, 5.0)).collect();
        assert!(analyze(&flat, &p).events.is_empty());
        let mut odd = series(500, MIN, 1.0, 9, |_| 0.0);
        odd[50].1 = f64::NAN;
        odd[60].1 = f64::INFINITY;
        odd[70].0 = odd[69].0; // duplicate timestamp
        assert!(analyze(&odd, &p).events.is_empty());
        // Timestamps at PostgreSQL's extremes (4713 BC .. 294276 AD) and explicit long seasons:
        // no overflow, no panic.
        let far: Vec<(i64, f64)> = (0..100)
            .map(|i| {
                let t = if i < 50 {
                    -211_000_000_000_000_000 + i
                } else {
                    9_223_000_000_000_000_000 + i
                };
                (t, (i % 7) as f64)
            })
            .collect();
        let _ = analyze(&far, &p);
        let _ = analyze(
            &far,
            &EventParams {
                season: Some(10_000_000),
                ..p
            },
        );
        // Integer-valued, mostly zero (crash counts): one burst is found, zeros are not alarms.
        let z: Vec<(i64, f64)> = (0..1000)
            .map(|i| {
                (
                    T0 + i * H,
                    if i == 700 {
                        9.0
                    } else if i % 37 == 0 {
                        1.0
                    } else {
                        0.0
                    },
                )
            })
            .collect();
        let a = analyze(&z, &p);
        assert_eq!(a.events.len(), 1, "{:?}", a.events);
        assert_eq!(a.events[0].peak_at, T0 + 700 * H);
        assert!(EventParams { window: 1, ..p }.validate().is_err());
        assert!(EventParams {
            threshold: f64::NAN,
            ..p
        }
        .validate()
        .is_err());
        assert!(EventParams { min_risk: 2.0, ..p }.validate().is_err());
    }

    #[test]
    fn every_kind_has_a_name_detector_and_description() {
        let mut names: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Kind::ALL.len());
        for k in Kind::ALL {
            assert!(
                ["robust", "volatility", "trend", "collective", "no_data"].contains(&k.detector())
            );
            assert!(!k.description().is_empty());
        }
        assert_eq!(metric_unit("cpu"), "%");
        assert_eq!(metric_unit("disk_pct"), "%");
        assert_eq!(metric_unit("latency_ms"), "");
    }

    #[test]
    fn percent_rule_judges_the_base_name_of_labelled_series() {
        assert_eq!(metric_capacity(r#"cpu{core="0"}"#), Some(100.0));
        assert_eq!(metric_unit(r#"disk{device="sda",mount="/"}"#), "%");
        assert_eq!(metric_unit(r#"mem_pct{host_group="a"}"#), "%");
        // A label value (or key) never makes a metric a percent metric.
        assert_eq!(metric_capacity(r#"latency_ms{route="/percent"}"#), None);
        assert_eq!(metric_capacity(r#"requests{pct="1"}"#), None);
        // Not a valid label list: judged as the plain name it is.
        assert_eq!(metric_capacity("cpu{"), None);
    }
}
