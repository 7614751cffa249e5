//! The seed's three detectors as mergeable streaming states.
//!
//! Every state accepts points in any order, ignores non-finite values (NaN, ±Infinity; counted
//! in `skipped`), merges with another state of the same parameters (`merge`), serializes to bytes
//! (`to_bytes` / `from_bytes`) for parallel aggregation, and finishes into a verdict with a
//! 0..1 risk. A verdict is `flagged` exactly when its risk is at least 0.5, and the risk scales
//! are chosen so the seed's own thresholds sit at 0.5:
//!
//! | detector | flagged when (seed) | risk |
//! |---|---|---|
//! | variance escalation | last/first 4h-window variance > 1.5 | `clamp(0.5 * (ratio - 1) / (1.5 - 1))` |
//! | spikes | points above mean + 2.5σ, more or larger than normal noise gives | `0.5 * freq + 0.5 * mag` |
//! | trend | fitted change start→end > +30% | `clamp(0.5 * pct / 30)` |
//!
//! For spikes, `freq = clamp((count/n - p0) / 0.01)` where `p0 = P(Z > 2.5) = 0.621%` is the
//! share of points a normal series puts above the line anyway, and
//! `mag = clamp((z_max - 2.5) / 2.5)` with `z_max = (max - mean) / σ`.

use std::collections::BTreeMap;

/// 2000-01-01 00:00:00 UTC in Unix microseconds: the origin of `date_bin('4 hours', ts, '2000-01-01')`.
pub const PG_EPOCH_US: i64 = 946_684_800 * crate::USEC_PER_SEC;

fn clamp01(x: f64) -> f64 {
    if x.is_nan() {
        0.0
    } else {
        x.clamp(0.0, 1.0)
    }
}

/// Errors a state can report to its caller (the SQL glue turns them into SQLSTATEs).
#[derive(Debug, Clone, PartialEq)]
pub enum DetectError {
    /// A parameter is out of its domain; the text names it and the allowed range.
    InvalidParameter(String),
    /// Two partial states with different parameters were merged.
    ParameterMismatch,
    /// Serialized bytes are truncated or from another version.
    Corrupt(&'static str),
    /// Memory for the state could not be reserved (the caller reports "out of memory").
    OutOfMemory,
    /// The state would exceed a documented size limit; the text names it.
    TooLarge(String),
}

impl std::fmt::Display for DetectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DetectError::InvalidParameter(s) => write!(f, "{s}"),
            DetectError::ParameterMismatch => {
                write!(f, "cannot merge detector states with different parameters")
            }
            DetectError::Corrupt(what) => write!(f, "corrupt detector state: {what}"),
            DetectError::OutOfMemory => write!(f, "out of memory for the detector state"),
            DetectError::TooLarge(s) => write!(f, "{s}"),
        }
    }
}

impl std::error::Error for DetectError {}

/// Count, mean and sum of squared deviations (Welford), mergeable with Chan et al.'s formula.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Moments {
    pub n: u64,
    pub mean: f64,
    pub m2: f64,
}

impl Moments {
    #[inline]
    pub fn add(&mut self, x: f64) {
        self.n += 1;
        let d = x - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (x - self.mean);
    }

    pub fn merge(&mut self, o: &Moments) {
        if o.n == 0 {
            return;
        }
        if self.n == 0 {
            *self = *o;
            return;
        }
        let n = self.n + o.n;
        let d = o.mean - self.mean;
        let nf = n as f64;
        self.mean += d * o.n as f64 / nf;
        self.m2 += o.m2 + d * d * (self.n as f64) * (o.n as f64) / nf;
        self.n = n;
    }

    /// Sample variance (n - 1 denominator); `None` below two points.
    pub fn var_samp(&self) -> Option<f64> {
        (self.n >= 2).then(|| (self.m2 / (self.n - 1) as f64).max(0.0))
    }
}

// ---------------------------------------------------------------- byte codec helpers

struct Writer(Vec<u8>);
impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v)
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes())
    }
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes())
    }
    fn f64(&mut self, v: f64) {
        self.0.extend_from_slice(&v.to_le_bytes())
    }
    fn moments(&mut self, m: &Moments) {
        self.u64(m.n);
        self.f64(m.mean);
        self.f64(m.m2);
    }
}

struct Reader<'a>(&'a [u8]);
impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], DetectError> {
        if self.0.len() < N {
            return Err(DetectError::Corrupt("truncated"));
        }
        let (a, b) = self.0.split_at(N);
        self.0 = b;
        Ok(a.try_into().unwrap())
    }
    fn u8(&mut self) -> Result<u8, DetectError> {
        Ok(self.take::<1>()?[0])
    }
    fn u64(&mut self) -> Result<u64, DetectError> {
        Ok(u64::from_le_bytes(self.take()?))
    }
    fn i64(&mut self) -> Result<i64, DetectError> {
        Ok(i64::from_le_bytes(self.take()?))
    }
    fn f64(&mut self) -> Result<f64, DetectError> {
        Ok(f64::from_le_bytes(self.take()?))
    }
    fn moments(&mut self) -> Result<Moments, DetectError> {
        Ok(Moments {
            n: self.u64()?,
            mean: self.f64()?,
            m2: self.f64()?,
        })
    }
    fn end(&self) -> Result<(), DetectError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(DetectError::Corrupt("trailing bytes"))
        }
    }
}

const TAG_VAR: u8 = 0xC1;
const TAG_SPIKE: u8 = 0xC2;
const TAG_TREND: u8 = 0xC3;

// ---------------------------------------------------------------- variance escalation

/// Parameters of the variance-escalation detector.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VarianceParams {
    /// Window width in microseconds (seed: 4 hours).
    pub window_us: i64,
    /// Flag when last/first window variance exceeds this (seed: 1.5).
    pub ratio_threshold: f64,
}

impl Default for VarianceParams {
    fn default() -> Self {
        VarianceParams {
            window_us: 4 * crate::USEC_PER_HOUR,
            ratio_threshold: 1.5,
        }
    }
}

impl VarianceParams {
    pub fn validate(&self) -> Result<(), DetectError> {
        if self.window_us <= 0 {
            return Err(DetectError::InvalidParameter(
                "variance escalation window must be a positive interval".into(),
            ));
        }
        if !(self.ratio_threshold.is_finite() && self.ratio_threshold > 1.0) {
            return Err(DetectError::InvalidParameter(
                "variance escalation ratio threshold must be a finite number greater than 1".into(),
            ));
        }
        Ok(())
    }
}

/// Most windows one variance-escalation state holds (about 100 MB): a million 4-hour windows
/// are 456 years; more means the window is far too short for the data.
pub const MAX_WINDOWS: usize = 1_000_000;

fn too_many_windows() -> DetectError {
    DetectError::TooLarge(format!(
        "variance escalation needs more than {MAX_WINDOWS} windows for this input"
    ))
}

/// Streaming state: sample moments per window (memory O(windows)).
#[derive(Clone, Debug, PartialEq)]
pub struct VarianceState {
    pub params: VarianceParams,
    windows: BTreeMap<i64, Moments>,
    cur_key: i64,
    cur: Moments,
    pub skipped: u64,
}

/// Result of variance escalation over a series.
#[derive(Clone, Debug, PartialEq)]
pub struct VarianceVerdict {
    /// Windows holding at least two points (the ones a sample variance exists for).
    pub windows: u64,
    pub first_window_start: Option<i64>,
    pub first_variance: Option<f64>,
    pub last_window_start: Option<i64>,
    pub last_variance: Option<f64>,
    /// last / first; `+inf` when the first window is constant and the last is not; `None` with
    /// fewer than two windows.
    pub ratio: Option<f64>,
    pub flagged: bool,
    pub risk: f64,
    pub points: u64,
    pub skipped: u64,
}

impl VarianceState {
    pub fn new(params: VarianceParams) -> Result<Self, DetectError> {
        params.validate()?;
        Ok(VarianceState {
            params,
            windows: BTreeMap::new(),
            cur_key: i64::MIN,
            cur: Moments::default(),
            skipped: 0,
        })
    }

    /// Window start (Unix µs) of a timestamp, aligned like `date_bin(width, ts, '2000-01-01')`.
    #[inline]
    pub fn window_of(&self, ts_us: i64) -> i64 {
        let off = (ts_us as i128) - PG_EPOCH_US as i128;
        let w = self.params.window_us as i128;
        (PG_EPOCH_US as i128 + off.div_euclid(w) * w) as i64
    }

    /// Adds a point; panics where [`VarianceState::try_add`] fails (tests and bounded inputs).
    #[inline]
    pub fn add(&mut self, ts_us: i64, v: f64) {
        if let Err(e) = self.try_add(ts_us, v) {
            panic!("{e}");
        }
    }

    /// Adds a point. Fails when the state would hold more than [`MAX_WINDOWS`] windows.
    #[inline]
    pub fn try_add(&mut self, ts_us: i64, v: f64) -> Result<(), DetectError> {
        if !crate::usable_value(v) {
            self.skipped += 1;
            return Ok(());
        }
        let k = self.window_of(ts_us);
        if k != self.cur_key {
            self.flush();
            if self.windows.len() >= MAX_WINDOWS && !self.windows.contains_key(&k) {
                return Err(too_many_windows());
            }
            self.cur_key = k;
            self.cur = self.windows.remove(&k).unwrap_or_default();
        }
        self.cur.add(v);
        Ok(())
    }

    fn flush(&mut self) {
        if self.cur.n > 0 {
            self.windows.insert(self.cur_key, self.cur);
        }
        self.cur = Moments::default();
        self.cur_key = i64::MIN;
    }

    pub fn merge(&mut self, other: &VarianceState) -> Result<(), DetectError> {
        if self.params != other.params {
            return Err(DetectError::ParameterMismatch);
        }
        self.flush();
        let mut o = other.clone();
        o.flush();
        for (k, m) in o.windows {
            if self.windows.len() >= MAX_WINDOWS && !self.windows.contains_key(&k) {
                return Err(too_many_windows());
            }
            self.windows.entry(k).or_default().merge(&m);
        }
        self.skipped += other.skipped;
        Ok(())
    }

    pub fn verdict(&self) -> VarianceVerdict {
        let mut s = self.clone();
        s.flush();
        let points = s.windows.values().map(|m| m.n).sum();
        let full: Vec<(i64, f64)> = s
            .windows
            .iter()
            .filter_map(|(k, m)| m.var_samp().map(|v| (*k, v)))
            .collect();
        let mut out = VarianceVerdict {
            windows: full.len() as u64,
            first_window_start: None,
            first_variance: None,
            last_window_start: None,
            last_variance: None,
            ratio: None,
            flagged: false,
            risk: 0.0,
            points,
            skipped: s.skipped,
        };
        if let (Some(f), Some(l)) = (full.first(), full.last()) {
            out.first_window_start = Some(f.0);
            out.first_variance = Some(f.1);
            out.last_window_start = Some(l.0);
            out.last_variance = Some(l.1);
            if full.len() >= 2 {
                let ratio = if f.1 > 0.0 {
                    l.1 / f.1
                } else if l.1 > 0.0 {
                    f64::INFINITY
                } else {
                    1.0
                };
                // Overflowing inputs can make a variance infinite: no defined ratio then.
                if !ratio.is_nan() && f.1.is_finite() && l.1.is_finite() {
                    out.ratio = Some(ratio);
                    out.flagged = ratio > self.params.ratio_threshold;
                    out.risk = if ratio.is_infinite() {
                        1.0
                    } else {
                        clamp01(0.5 * (ratio - 1.0) / (self.params.ratio_threshold - 1.0))
                    };
                }
            }
        }
        out
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut s = self.clone();
        s.flush();
        let mut w = Writer(Vec::with_capacity(32 + 32 * s.windows.len()));
        w.u8(TAG_VAR);
        w.i64(s.params.window_us);
        w.f64(s.params.ratio_threshold);
        w.u64(s.skipped);
        w.u64(s.windows.len() as u64);
        for (k, m) in &s.windows {
            w.i64(*k);
            w.moments(m);
        }
        w.0
    }

    pub fn from_bytes(b: &[u8]) -> Result<Self, DetectError> {
        let mut r = Reader(b);
        if r.u8()? != TAG_VAR {
            return Err(DetectError::Corrupt("not a variance escalation state"));
        }
        let params = VarianceParams {
            window_us: r.i64()?,
            ratio_threshold: r.f64()?,
        };
        let mut s = VarianceState::new(params)?;
        s.skipped = r.u64()?;
        let n = r.u64()?;
        for _ in 0..n {
            let k = r.i64()?;
            let m = r.moments()?;
            s.windows.insert(k, m);
        }
        r.end()?;
        Ok(s)
    }
}

// ---------------------------------------------------------------- spikes

/// Upper tail of the standard normal, `P(Z > z)`, via `erfc` (Numerical Recipes' Chebyshev
/// fit, relative error < 1.2e-7).
pub fn normal_sf(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

pub fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87
                                        + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

/// Parameters of the spike detector.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SpikeParams {
    /// Spikes are values above mean + `sigmas` · σ (seed: 2.5).
    pub sigmas: f64,
}

impl Default for SpikeParams {
    fn default() -> Self {
        SpikeParams { sigmas: 2.5 }
    }
}

impl SpikeParams {
    pub fn validate(&self) -> Result<(), DetectError> {
        if !(self.sigmas.is_finite() && self.sigmas > 0.0) {
            return Err(DetectError::InvalidParameter(
                "spike threshold (sigmas) must be a finite number greater than 0".into(),
            ));
        }
        Ok(())
    }
}

/// Streaming state for spikes. The threshold depends on the whole series' mean and σ, so the
/// values themselves are kept (8 bytes a point); the maximum and its time are tracked as they come.
#[derive(Clone, Debug, PartialEq)]
pub struct SpikeState {
    pub params: SpikeParams,
    values: Vec<f64>,
    moments: Moments,
    max: f64,
    max_at: i64,
    pub skipped: u64,
}

/// Result of the spike detector.
#[derive(Clone, Debug, PartialEq)]
pub struct SpikeVerdict {
    pub points: u64,
    pub mean: Option<f64>,
    pub stddev: Option<f64>,
    pub threshold: Option<f64>,
    pub count: u64,
    pub max: Option<f64>,
    pub max_at: Option<i64>,
    pub flagged: bool,
    pub risk: f64,
    pub skipped: u64,
}

impl SpikeState {
    pub fn new(params: SpikeParams) -> Result<Self, DetectError> {
        params.validate()?;
        Ok(SpikeState {
            params,
            values: Vec::new(),
            moments: Moments::default(),
            max: f64::NEG_INFINITY,
            max_at: i64::MIN,
            skipped: 0,
        })
    }

    /// Adds a point; panics where [`SpikeState::try_add`] fails (tests and bounded inputs).
    #[inline]
    pub fn add(&mut self, ts_us: i64, v: f64) {
        if let Err(e) = self.try_add(ts_us, v) {
            panic!("{e}");
        }
    }

    /// Adds a point. The value list grows by fallible reservation, so running out of memory is
    /// an error for the caller to report, never an abort.
    #[inline]
    pub fn try_add(&mut self, ts_us: i64, v: f64) -> Result<(), DetectError> {
        if !crate::usable_value(v) {
            self.skipped += 1;
            return Ok(());
        }
        if self.values.len() == self.values.capacity() {
            let more = self.values.len().clamp(1024, 1 << 24);
            self.values
                .try_reserve_exact(more)
                .map_err(|_| DetectError::OutOfMemory)?;
        }
        self.values.push(v);
        self.moments.add(v);
        // Ties go to the earliest time so the result does not depend on row order.
        if v > self.max || (v == self.max && ts_us < self.max_at) {
            self.max = v;
            self.max_at = ts_us;
        }
        Ok(())
    }

    /// A copy whose value list is reserved fallibly.
    pub fn try_clone(&self) -> Result<SpikeState, DetectError> {
        let mut c = SpikeState::new(self.params)?;
        c.merge(self)?;
        Ok(c)
    }

    pub fn merge(&mut self, o: &SpikeState) -> Result<(), DetectError> {
        if self.params != o.params {
            return Err(DetectError::ParameterMismatch);
        }
        self.values
            .try_reserve_exact(o.values.len())
            .map_err(|_| DetectError::OutOfMemory)?;
        self.values.extend_from_slice(&o.values);
        self.moments.merge(&o.moments);
        if o.max > self.max || (o.max == self.max && o.max_at < self.max_at) {
            self.max = o.max;
            self.max_at = o.max_at;
        }
        self.skipped += o.skipped;
        Ok(())
    }

    pub fn verdict(&self) -> SpikeVerdict {
        let n = self.moments.n;
        let mut out = SpikeVerdict {
            points: n,
            mean: (n > 0).then_some(self.moments.mean),
            stddev: self.moments.var_samp().map(f64::sqrt),
            threshold: None,
            count: 0,
            max: (n > 0).then_some(self.max),
            max_at: (n > 0).then_some(self.max_at),
            flagged: false,
            risk: 0.0,
            skipped: self.skipped,
        };
        let (Some(mean), Some(sd)) = (out.mean, out.stddev) else {
            return out;
        };
        if !(mean.is_finite() && sd.is_finite()) {
            return out;
        }
        let thr = mean + self.params.sigmas * sd;
        out.threshold = Some(thr);
        if sd == 0.0 {
            return out; // a constant series has no spikes
        }
        out.count = self.values.iter().filter(|&&v| v > thr).count() as u64;
        if out.count > 0 {
            let p0 = normal_sf(self.params.sigmas);
            let freq = clamp01((out.count as f64 / n as f64 - p0) / 0.01);
            let z_max = (self.max - mean) / sd;
            let mag = clamp01((z_max - self.params.sigmas) / self.params.sigmas);
            out.risk = clamp01(0.5 * freq + 0.5 * mag);
            out.flagged = out.risk >= 0.5;
        }
        out
    }

    /// Serializes the state; panics where [`SpikeState::try_to_bytes`] fails.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.try_to_bytes().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Serializes the state into a buffer reserved fallibly (8 bytes a value).
    pub fn try_to_bytes(&self) -> Result<Vec<u8>, DetectError> {
        let mut buf = Vec::new();
        buf.try_reserve_exact(64 + 8 * self.values.len())
            .map_err(|_| DetectError::OutOfMemory)?;
        let mut w = Writer(buf);
        w.u8(TAG_SPIKE);
        w.f64(self.params.sigmas);
        w.u64(self.skipped);
        w.moments(&self.moments);
        w.f64(self.max);
        w.i64(self.max_at);
        w.u64(self.values.len() as u64);
        for v in &self.values {
            w.f64(*v);
        }
        Ok(w.0)
    }

    pub fn from_bytes(b: &[u8]) -> Result<Self, DetectError> {
        let mut r = Reader(b);
        if r.u8()? != TAG_SPIKE {
            return Err(DetectError::Corrupt("not a spike state"));
        }
        let mut s = SpikeState::new(SpikeParams { sigmas: r.f64()? })?;
        s.skipped = r.u64()?;
        s.moments = r.moments()?;
        s.max = r.f64()?;
        s.max_at = r.i64()?;
        let n = r.u64()? as usize;
        if r.0.len() != n.saturating_mul(8) {
            return Err(DetectError::Corrupt("value count does not match length"));
        }
        s.values
            .try_reserve_exact(n)
            .map_err(|_| DetectError::OutOfMemory)?;
        s.values.extend(
            r.0.chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap())),
        );
        r.0 = &[];
        r.end()?;
        Ok(s)
    }
}

// ---------------------------------------------------------------- trend

/// Parameters of the trend detector.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrendParams {
    /// Flag when the fitted change from first to last time exceeds this percentage (seed: 30).
    pub pct_threshold: f64,
}

impl Default for TrendParams {
    fn default() -> Self {
        TrendParams {
            pct_threshold: 30.0,
        }
    }
}

impl TrendParams {
    pub fn validate(&self) -> Result<(), DetectError> {
        if !(self.pct_threshold.is_finite() && self.pct_threshold > 0.0) {
            return Err(DetectError::InvalidParameter(
                "trend threshold (percent) must be a finite number greater than 0".into(),
            ));
        }
        Ok(())
    }
}

/// Streaming least squares of value on time (seconds), with co-moments merged like [`Moments`].
#[derive(Clone, Debug, PartialEq)]
pub struct TrendState {
    pub params: TrendParams,
    n: u64,
    mean_t: f64,
    mean_v: f64,
    m2_t: f64,
    m2_v: f64,
    c_tv: f64,
    t_min: i64,
    t_max: i64,
    pub skipped: u64,
}

/// Result of the trend detector.
#[derive(Clone, Debug, PartialEq)]
pub struct TrendVerdict {
    pub points: u64,
    /// Slope in value units per hour.
    pub slope_per_hour: Option<f64>,
    pub first_at: Option<i64>,
    pub last_at: Option<i64>,
    /// Fitted value at the first and the last timestamp.
    pub fitted_start: Option<f64>,
    pub fitted_end: Option<f64>,
    /// 100 · (end − start) / |start|; `None` when the fitted start is 0.
    pub pct_change: Option<f64>,
    /// Coefficient of determination of the fit.
    pub r2: Option<f64>,
    pub flagged: bool,
    pub risk: f64,
    pub skipped: u64,
}

impl TrendState {
    pub fn new(params: TrendParams) -> Result<Self, DetectError> {
        params.validate()?;
        Ok(TrendState {
            params,
            n: 0,
            mean_t: 0.0,
            mean_v: 0.0,
            m2_t: 0.0,
            m2_v: 0.0,
            c_tv: 0.0,
            t_min: i64::MAX,
            t_max: i64::MIN,
            skipped: 0,
        })
    }

    #[inline]
    pub fn add(&mut self, ts_us: i64, v: f64) {
        if !crate::usable_value(v) {
            self.skipped += 1;
            return;
        }
        // Seconds relative to 2000-01-01 keep magnitudes small.
        let t = (ts_us as i128 - PG_EPOCH_US as i128) as f64 * 1e-6;
        self.n += 1;
        let nf = self.n as f64;
        let dt = t - self.mean_t;
        let dv = v - self.mean_v;
        self.mean_t += dt / nf;
        self.mean_v += dv / nf;
        self.m2_t += dt * (t - self.mean_t);
        self.m2_v += dv * (v - self.mean_v);
        self.c_tv += dt * (v - self.mean_v);
        self.t_min = self.t_min.min(ts_us);
        self.t_max = self.t_max.max(ts_us);
    }

    pub fn merge(&mut self, o: &TrendState) -> Result<(), DetectError> {
        if self.params != o.params {
            return Err(DetectError::ParameterMismatch);
        }
        if o.n > 0 {
            if self.n == 0 {
                let skipped = self.skipped;
                *self = o.clone();
                self.skipped += skipped;
                return Ok(());
            }
            let (na, nb) = (self.n as f64, o.n as f64);
            let n = na + nb;
            let dt = o.mean_t - self.mean_t;
            let dv = o.mean_v - self.mean_v;
            let f = na * nb / n;
            self.m2_t += o.m2_t + dt * dt * f;
            self.m2_v += o.m2_v + dv * dv * f;
            self.c_tv += o.c_tv + dt * dv * f;
            self.mean_t += dt * nb / n;
            self.mean_v += dv * nb / n;
            self.n += o.n;
            self.t_min = self.t_min.min(o.t_min);
            self.t_max = self.t_max.max(o.t_max);
        }
        self.skipped += o.skipped;
        Ok(())
    }

    pub fn verdict(&self) -> TrendVerdict {
        let mut out = TrendVerdict {
            points: self.n,
            slope_per_hour: None,
            first_at: (self.n > 0).then_some(self.t_min),
            last_at: (self.n > 0).then_some(self.t_max),
            fitted_start: None,
            fitted_end: None,
            pct_change: None,
            r2: None,
            flagged: false,
            risk: 0.0,
            skipped: self.skipped,
        };
        if self.n < 2 || self.m2_t <= 0.0 {
            return out;
        }
        let slope = self.c_tv / self.m2_t; // per second
        if !slope.is_finite() {
            return out;
        }
        let at = |us: i64| {
            self.mean_v + slope * ((us as i128 - PG_EPOCH_US as i128) as f64 * 1e-6 - self.mean_t)
        };
        let (s, e) = (at(self.t_min), at(self.t_max));
        out.slope_per_hour = Some(slope * 3600.0);
        out.fitted_start = Some(s);
        out.fitted_end = Some(e);
        out.r2 = if self.m2_v > 0.0 {
            Some(clamp01(self.c_tv * self.c_tv / (self.m2_t * self.m2_v)))
        } else {
            None
        };
        if s != 0.0 && s.is_finite() && e.is_finite() {
            let pct = 100.0 * (e - s) / s.abs();
            if pct.is_finite() {
                out.pct_change = Some(pct);
                out.flagged = pct > self.params.pct_threshold;
                out.risk = clamp01(0.5 * pct / self.params.pct_threshold);
            }
        }
        out
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer(Vec::with_capacity(96));
        w.u8(TAG_TREND);
        w.f64(self.params.pct_threshold);
        w.u64(self.skipped);
        w.u64(self.n);
        for v in [self.mean_t, self.mean_v, self.m2_t, self.m2_v, self.c_tv] {
            w.f64(v);
        }
        w.i64(self.t_min);
        w.i64(self.t_max);
        w.0
    }

    pub fn from_bytes(b: &[u8]) -> Result<Self, DetectError> {
        let mut r = Reader(b);
        if r.u8()? != TAG_TREND {
            return Err(DetectError::Corrupt("not a trend state"));
        }
        let mut s = TrendState::new(TrendParams {
            pct_threshold: r.f64()?,
        })?;
        s.skipped = r.u64()?;
        s.n = r.u64()?;
        s.mean_t = r.f64()?;
        s.mean_v = r.f64()?;
        s.m2_t = r.f64()?;
        s.m2_v = r.f64()?;
        s.c_tv = r.f64()?;
        s.t_min = r.i64()?;
        s.t_max = r.i64()?;
        r.end()?;
        Ok(s)
    }
}

// ---------------------------------------------------------------- verdict lines

/// The seed's verdict line for variance escalation (without the `host:metric → ` prefix).
pub fn variance_summary(v: &VarianceVerdict) -> String {
    match v.ratio {
        None => format!(
            "not enough data: {} of the 2 windows with 2+ points needed",
            v.windows
        ),
        Some(r) if r.is_infinite() => "Variance escalated from a constant first window".into(),
        Some(r) if v.flagged => format!("Variance escalated {r:.2}x (Risk: {:.2})", v.risk),
        Some(r) => format!("Variance stable {r:.2}x (Risk: {:.2})", v.risk),
    }
}

/// The seed's verdict line for spikes; `unit` is appended to the max (e.g. `%`).
pub fn spike_summary(v: &SpikeVerdict, unit: &str) -> String {
    match (v.threshold, v.max) {
        (None, _) | (_, None) => format!("not enough data: {} of the 2 points needed", v.points),
        (Some(_), Some(max)) if v.count > 0 => {
            let word = if v.count == 1 { "spike" } else { "spikes" };
            let tail = if v.flagged { "" } else { ", within noise" };
            format!(
                "{} {word}, max {max:.2}{unit}{tail} (Risk: {:.2})",
                v.count, v.risk
            )
        }
        (Some(_), Some(max)) => format!("no spikes, max {max:.2}{unit} (Risk: 0.00)"),
    }
}

/// The seed's verdict line for trend.
pub fn trend_summary(v: &TrendVerdict) -> String {
    match v.pct_change {
        None if v.slope_per_hour.is_none() => {
            format!(
                "not enough data: {} point(s), 2 at distinct times needed",
                v.points
            )
        }
        None => "no percentage change (fitted start is 0)".into(),
        Some(p) if v.flagged => format!("{p:.0}% increase, leak pattern (Risk: {:.2})", v.risk),
        Some(p) if p >= 0.0 => format!("{p:.0}% increase, no leak (Risk: {:.2})", v.risk),
        Some(p) => format!("{:.0}% decrease (Risk: {:.2})", -p, v.risk),
    }
}

#[cfg(test)]
mod tests;
