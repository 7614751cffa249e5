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
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes())
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes())
    }
    /// LEB128: 7 bits a byte, low bits first.
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8 & 0x7f) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8)
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
    fn u16(&mut self) -> Result<u16, DetectError> {
        Ok(u16::from_le_bytes(self.take()?))
    }
    fn u64(&mut self) -> Result<u64, DetectError> {
        Ok(u64::from_le_bytes(self.take()?))
    }
    fn varint(&mut self) -> Result<u64, DetectError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            let bits = (b & 0x7f) as u64;
            if shift == 63 && bits > 1 {
                return Err(DetectError::Corrupt("varint overflows"));
            }
            v |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DetectError::Corrupt("varint too long"))
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

/// Distinct values a spike state keeps exactly, each with its multiplicity. Up to this many
/// distinct values (any number of points) the spike count is exact.
pub const SPIKE_EXACT: usize = 128;
/// Histogram buckets on each side of the anchor once a state holds more distinct values.
pub const SPIKE_BUCKETS: usize = 255;
/// Ratio of consecutive bucket edges (level 0): a bucket spans a relative 4% of its distance
/// from the anchor. Level `L` merges `2^L` level-0 buckets (ratio `1.04^(2^L)`).
pub const SPIKE_GAMMA: f64 = 1.04;
/// `ln(SPIKE_GAMMA)`, checked against the constant in the tests.
const LN_GAMMA: f64 = 0.039_220_713_153_281_33;
const INV_LN_GAMMA: f64 = 1.0 / LN_GAMMA;
const NB: usize = 2 * SPIKE_BUCKETS + 1;
/// Buckets whose count may exceed `u32::MAX` (each needs more than 4.3 billion points).
const HI_SLOTS: usize = 8;
/// Highest level: 255 · 2^24 level-0 buckets cover every ratio of finite doubles.
const MAX_LEVEL: u8 = 24;
const I0_CAP: i64 = (SPIKE_BUCKETS as i64) << MAX_LEVEL;

/// Count of values above a threshold, in a fixed-size state (no heap, no pointers), so an
/// aggregate's state can live in PostgreSQL memory and is bounded whatever the input size.
///
/// * `Exact`: the distinct values so far, sorted, with their counts. Counts are exact.
/// * `Sketch` (from the first value beyond [`SPIKE_EXACT`] distinct ones): an anchored
///   log-bucket histogram of `d = v − anchor`. `|d| ≤ δ` is the zero bucket; otherwise bucket
///   `±ceil(ceil(log_γ(|d| / δ)) / 2^level)`. The anchor is the mean at conversion rounded to
///   `g = 2^ceil(log2 σ)` and `δ = g / 64` (σ, mean: of the points so far), so states built
///   from the same distribution usually share anchor and δ and merge bucket by bucket. A value
///   beyond bucket 255 raises the level (merging bucket pairs) instead of being clamped.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Tally {
    Exact {
        len: u16,
        vals: [f64; SPIKE_EXACT],
        counts: [u64; SPIKE_EXACT],
    },
    Sketch(Sketch),
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Sketch {
    anchor: f64,
    delta: f64,
    /// Largest anchor offset absorbed by re-bucketing another state's buckets (0: none).
    shift: f64,
    /// Largest zero-bucket half-width absorbed by re-bucketing (0: none).
    slop: f64,
    level: u8,
    /// Low 32 bits of each bucket's count; index `i + SPIKE_BUCKETS` for bucket `i`.
    counts: [u32; NB],
    /// `(index + 1, high 32 bits)` for buckets above `u32::MAX`; `(0, 0)` is a free slot.
    hi: [(u32, u32); HI_SLOTS],
}

#[inline]
fn slot(i: i64) -> usize {
    (i + SPIKE_BUCKETS as i64) as usize
}

/// Level-`level` bucket of a level-0 bucket index.
#[inline]
fn at_level(i0: i64, level: u8) -> i64 {
    let m = (1i64 << level) - 1;
    if i0 >= 0 {
        (i0 + m) >> level
    } else {
        -((-i0 + m) >> level)
    }
}

fn too_many_points() -> DetectError {
    DetectError::TooLarge(
        "spikes supports at most about 34 billion points in one group".to_string(),
    )
}

impl Sketch {
    /// Anchor and resolution for a state whose points so far have this mean and σ.
    fn for_moments(mean: f64, sd: f64) -> Sketch {
        let sd = if sd > 0.0 && sd.is_finite() {
            sd
        } else {
            (mean.abs() * 1e-12).max(1e-300)
        };
        let g = sd.log2().ceil().exp2();
        let mut anchor = (mean / g).round() * g;
        if !anchor.is_finite() {
            anchor = mean;
        }
        Sketch {
            anchor,
            delta: g / 64.0,
            shift: 0.0,
            slop: 0.0,
            level: 0,
            counts: [0; NB],
            hi: [(0, 0); HI_SLOTS],
        }
    }

    fn empty_like(&self, level: u8) -> Sketch {
        Sketch {
            level,
            counts: [0; NB],
            hi: [(0, 0); HI_SLOTS],
            ..*self
        }
    }

    #[inline]
    fn get(&self, s: usize) -> u64 {
        let lo = self.counts[s] as u64;
        match self.hi.iter().find(|h| h.0 as usize == s + 1) {
            Some(h) => lo | (h.1 as u64) << 32,
            None => lo,
        }
    }

    #[inline]
    fn add_at(&mut self, s: usize, k: u64) -> Result<(), DetectError> {
        let sum = self.counts[s] as u64 + k;
        if sum <= u32::MAX as u64 {
            self.counts[s] = sum as u32;
            return Ok(());
        }
        let total = self.get(s).checked_add(k).ok_or_else(too_many_points)?;
        self.counts[s] = total as u32;
        let high = (total >> 32) as u32;
        let key = s as u32 + 1;
        if let Some(h) = self.hi.iter_mut().find(|h| h.0 == key) {
            h.1 = high;
        } else if let Some(h) = self.hi.iter_mut().find(|h| h.0 == 0) {
            *h = (key, high);
        } else {
            return Err(too_many_points());
        }
        Ok(())
    }

    /// Signed level-0 bucket of a value (0: the zero bucket).
    #[inline]
    fn index0(&self, v: f64) -> i64 {
        let d = v - self.anchor;
        let a = d.abs();
        if a <= self.delta {
            return 0;
        }
        let r = (a / self.delta).ln() * INV_LN_GAMMA;
        let i0 = if r < I0_CAP as f64 {
            (r.ceil() as i64).max(1)
        } else {
            I0_CAP
        };
        if d < 0.0 {
            -i0
        } else {
            i0
        }
    }

    #[inline]
    fn insert(&mut self, v: f64, k: u64) -> Result<(), DetectError> {
        let i0 = self.index0(v);
        let mut i = at_level(i0, self.level);
        while i.unsigned_abs() > SPIKE_BUCKETS as u64 {
            self.collapse_to(self.level + 1)?;
            i = at_level(i0, self.level);
        }
        self.add_at(slot(i), k)
    }

    /// Coarsens to `level`: bucket `j` of level `L + 1` holds buckets `2j − 1` and `2j` of `L`.
    fn collapse_to(&mut self, level: u8) -> Result<(), DetectError> {
        if level <= self.level {
            return Ok(());
        }
        let mut out = self.empty_like(level);
        let by = level - self.level;
        for i in -(SPIKE_BUCKETS as i64)..=SPIKE_BUCKETS as i64 {
            let c = self.get(slot(i));
            if c > 0 {
                out.add_at(slot(at_level(i, by)), c)?;
            }
        }
        *self = out;
        Ok(())
    }

    /// Edges `(lo, hi)` of bucket `i` in `d = v − anchor`: `(lo, hi]` above the anchor,
    /// `[lo, hi)` below, `[−δ, δ]` for the zero bucket.
    fn edges(&self, i: i64) -> (f64, f64) {
        if i == 0 {
            return (-self.delta, self.delta);
        }
        let step = (1u64 << self.level) as f64 * LN_GAMMA;
        let at = |k: u64| self.delta * (k as f64 * step).exp();
        let (inner, outer) = (at(i.unsigned_abs() - 1), at(i.unsigned_abs()));
        if i > 0 {
            (inner, outer)
        } else {
            (-outer, -inner)
        }
    }

    /// Adds another sketch's counts: bucket by bucket when anchor and δ agree, otherwise each
    /// bucket's count at its midpoint (recorded in `shift`/`slop` for the error bound).
    fn absorb(&mut self, o: &Sketch) -> Result<(), DetectError> {
        let level = self.level.max(o.level);
        self.collapse_to(level)?;
        if self.anchor == o.anchor && self.delta == o.delta {
            let mut o = *o;
            o.collapse_to(level)?;
            for s in 0..NB {
                let c = o.get(s);
                if c > 0 {
                    self.add_at(s, c)?;
                }
            }
            self.shift = self.shift.max(o.shift);
            self.slop = self.slop.max(o.slop);
            return Ok(());
        }
        for i in -(SPIKE_BUCKETS as i64)..=SPIKE_BUCKETS as i64 {
            let c = o.get(slot(i));
            if c > 0 {
                let (lo, hi) = o.edges(i);
                let mid = if i == 0 { 0.0 } else { lo + 0.5 * (hi - lo) };
                self.insert(o.anchor + mid, c)?;
            }
        }
        self.shift = self.shift.max(o.shift + (o.anchor - self.anchor).abs());
        self.slop = self.slop.max(o.slop + o.delta);
        Ok(())
    }

    /// `(estimate, bound)` of the number of values above `thr`: buckets wholly above, plus the
    /// threshold's bucket pro rata (linear within the bucket). `bound` is the count of the
    /// buckets a misclassified value can be in: the threshold's bucket, and after re-bucketing
    /// every bucket within `(γ_L − 1)·(|thr − anchor| + shift) + slop` of the threshold.
    fn count_above(&self, thr: f64) -> (u64, u64) {
        let t = thr - self.anchor;
        let gl = (((1u64 << self.level) as f64) * LN_GAMMA).exp_m1();
        let w = if self.shift > 0.0 || self.slop > 0.0 {
            gl * (t.abs() + self.shift) + self.slop
        } else {
            0.0
        };
        let (mut above, mut bound, mut partial) = (0u64, 0u64, 0.0f64);
        for i in -(SPIKE_BUCKETS as i64)..=SPIKE_BUCKETS as i64 {
            let c = self.get(slot(i));
            if c == 0 {
                continue;
            }
            let (lo, hi) = self.edges(i);
            let wholly_above = lo > t || (i > 0 && lo == t);
            let wholly_below = hi <= t;
            if wholly_above {
                above += c;
            } else if !wholly_below {
                partial += c as f64 * ((hi - t) / (hi - lo)).clamp(0.0, 1.0);
                bound += c;
                continue;
            }
            if w > 0.0 && hi >= t - w && lo <= t + w {
                bound += c;
            }
        }
        (above + partial.round() as u64, bound)
    }
}

/// Streaming state for spikes, fixed size (about 2 KB, no heap): exact moments, the maximum
/// and its time, and a [`Tally`] of the values: exact up to [`SPIKE_EXACT`] distinct values,
/// a log-bucket histogram beyond (see [`SpikeVerdict::count_bound`] for the error).
#[derive(Clone, Debug, PartialEq)]
pub struct SpikeState {
    pub params: SpikeParams,
    moments: Moments,
    max: f64,
    max_at: i64,
    pub skipped: u64,
    tally: Tally,
}

/// Result of the spike detector.
#[derive(Clone, Debug, PartialEq)]
pub struct SpikeVerdict {
    pub points: u64,
    pub mean: Option<f64>,
    pub stddev: Option<f64>,
    pub threshold: Option<f64>,
    /// Points above the threshold: exact while the group has at most [`SPIKE_EXACT`] distinct
    /// values, else an estimate with `|count − exact| ≤ count_bound`.
    pub count: u64,
    /// 0 when `count` is exact; else the points whose side of the threshold the histogram
    /// cannot tell: those within a relative `γ_L − 1` (4% at level 0) of their distance from
    /// the anchor around the threshold (after merging states with other anchors, about twice
    /// that, plus the anchors' distance).
    pub count_bound: u64,
    pub max: Option<f64>,
    pub max_at: Option<i64>,
    pub flagged: bool,
    pub risk: f64,
    pub skipped: u64,
}

const TAG_SPIKE_EXACT: u8 = 0;
const TAG_SPIKE_SKETCH: u8 = 1;

impl SpikeState {
    pub fn new(params: SpikeParams) -> Result<Self, DetectError> {
        params.validate()?;
        Ok(SpikeState {
            params,
            moments: Moments::default(),
            max: f64::NEG_INFINITY,
            max_at: i64::MIN,
            skipped: 0,
            tally: Tally::Exact {
                len: 0,
                vals: [0.0; SPIKE_EXACT],
                counts: [0; SPIKE_EXACT],
            },
        })
    }

    /// Adds a point; panics where [`SpikeState::try_add`] fails (tests and bounded inputs).
    #[inline]
    pub fn add(&mut self, ts_us: i64, v: f64) {
        if let Err(e) = self.try_add(ts_us, v) {
            panic!("{e}");
        }
    }

    /// Adds a point. Fails only beyond about 34 billion points in one group.
    #[inline]
    pub fn try_add(&mut self, ts_us: i64, v: f64) -> Result<(), DetectError> {
        if !crate::usable_value(v) {
            self.skipped += 1;
            return Ok(());
        }
        let v = v + 0.0; // -0.0 → 0.0: one distinct value
        self.moments.add(v);
        // Ties go to the earliest time so the result does not depend on row order.
        if v > self.max || (v == self.max && ts_us < self.max_at) {
            self.max = v;
            self.max_at = ts_us;
        }
        self.tally_add(v, 1)
    }

    /// Adds `k` copies of `v` to the tally (the moments are the caller's).
    #[inline]
    fn tally_add(&mut self, v: f64, k: u64) -> Result<(), DetectError> {
        match &mut self.tally {
            Tally::Sketch(s) => s.insert(v, k),
            Tally::Exact { len, vals, counts } => {
                let n = *len as usize;
                match vals[..n].binary_search_by(|x| x.total_cmp(&v)) {
                    Ok(j) => {
                        counts[j] += k;
                        Ok(())
                    }
                    Err(j) if n < SPIKE_EXACT => {
                        vals.copy_within(j..n, j + 1);
                        counts.copy_within(j..n, j + 1);
                        vals[j] = v;
                        counts[j] = k;
                        *len += 1;
                        Ok(())
                    }
                    Err(_) => {
                        self.switch_to_sketch()?;
                        self.tally_add(v, k)
                    }
                }
            }
        }
    }

    /// Switches to the histogram, anchored by the moments (which must include every value
    /// held exactly).
    fn switch_to_sketch(&mut self) -> Result<(), DetectError> {
        if let Tally::Exact { len, vals, counts } = self.tally {
            let sd = self.moments.var_samp().map_or(0.0, f64::sqrt);
            let mut s = Sketch::for_moments(self.moments.mean, sd);
            for j in 0..len as usize {
                s.insert(vals[j], counts[j])?;
            }
            self.tally = Tally::Sketch(s);
        }
        Ok(())
    }

    /// A copy (the state is fixed-size; kept for the callers' symmetry with other states).
    pub fn try_clone(&self) -> Result<SpikeState, DetectError> {
        Ok(self.clone())
    }

    /// Whether the spike count is exact (at most [`SPIKE_EXACT`] distinct values so far).
    pub fn is_exact(&self) -> bool {
        matches!(self.tally, Tally::Exact { .. })
    }

    pub fn merge(&mut self, o: &SpikeState) -> Result<(), DetectError> {
        if self.params != o.params {
            return Err(DetectError::ParameterMismatch);
        }
        // Moments first: a conversion below anchors on the merged mean and σ.
        self.moments.merge(&o.moments);
        match &o.tally {
            Tally::Exact { len, vals, counts } => {
                for j in 0..*len as usize {
                    self.tally_add(vals[j], counts[j])?;
                }
            }
            Tally::Sketch(os) => match &mut self.tally {
                Tally::Sketch(s) => s.absorb(os)?,
                Tally::Exact { len, vals, counts } => {
                    let mut s = *os;
                    for j in 0..*len as usize {
                        s.insert(vals[j], counts[j])?;
                    }
                    self.tally = Tally::Sketch(s);
                }
            },
        }
        if o.max > self.max || (o.max == self.max && o.max_at < self.max_at) {
            self.max = o.max;
            self.max_at = o.max_at;
        }
        self.skipped += o.skipped;
        Ok(())
    }

    /// `(count, bound)` of values above `thr`.
    fn count_above(&self, thr: f64) -> (u64, u64) {
        match &self.tally {
            Tally::Exact { len, vals, counts } => {
                let n = *len as usize;
                let from = vals[..n].partition_point(|&x| x <= thr);
                (counts[from..n].iter().sum(), 0)
            }
            Tally::Sketch(s) => s.count_above(thr),
        }
    }

    pub fn verdict(&self) -> SpikeVerdict {
        let n = self.moments.n;
        let mut out = SpikeVerdict {
            points: n,
            mean: (n > 0).then_some(self.moments.mean),
            stddev: self.moments.var_samp().map(f64::sqrt),
            threshold: None,
            count: 0,
            count_bound: 0,
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
        let (count, bound) = self.count_above(thr);
        // Only values up to the maximum exist: nothing above it, and at least the maximum
        // itself when it is above the threshold.
        out.count = if self.max > thr { count.max(1) } else { 0 };
        out.count_bound = if self.max > thr { bound } else { 0 };
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

    /// Serializes the state: the exact values with their counts, or the histogram's used
    /// bucket range with varint counts (at most about 6 KB; typically a few hundred bytes).
    pub fn try_to_bytes(&self) -> Result<Vec<u8>, DetectError> {
        let mut w = Writer(Vec::with_capacity(128));
        w.u8(TAG_SPIKE);
        w.f64(self.params.sigmas);
        w.u64(self.skipped);
        w.moments(&self.moments);
        w.f64(self.max);
        w.i64(self.max_at);
        match &self.tally {
            Tally::Exact { len, vals, counts } => {
                w.u8(TAG_SPIKE_EXACT);
                w.u16(*len);
                for j in 0..*len as usize {
                    w.f64(vals[j]);
                    w.varint(counts[j]);
                }
            }
            Tally::Sketch(s) => {
                w.u8(TAG_SPIKE_SKETCH);
                w.f64(s.anchor);
                w.f64(s.delta);
                w.f64(s.shift);
                w.f64(s.slop);
                w.u8(s.level);
                let used: Vec<usize> = (0..NB).filter(|&i| s.get(i) > 0).collect();
                let (first, last) = match (used.first(), used.last()) {
                    (Some(&f), Some(&l)) => (f, l),
                    _ => (0, 0),
                };
                w.u16(first as u16);
                w.u16(last as u16);
                for i in first..=last {
                    w.varint(s.get(i));
                }
            }
        }
        Ok(w.0)
    }

    /// Reads [`SpikeState::to_bytes`]' output; anything inconsistent is `Corrupt`.
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
        let mut total = 0u64;
        let bad = DetectError::Corrupt("inconsistent spike state");
        match r.u8()? {
            TAG_SPIKE_EXACT => {
                let len = r.u16()?;
                if len as usize > SPIKE_EXACT {
                    return Err(DetectError::Corrupt("too many exact values"));
                }
                let mut prev: Option<f64> = None;
                for _ in 0..len {
                    let (v, c) = (r.f64()?, r.varint()?);
                    let increasing = prev.is_none_or(|p| p.total_cmp(&v).is_lt());
                    if !crate::usable_value(v) || c == 0 || !increasing {
                        return Err(bad);
                    }
                    prev = Some(v);
                    total = total.checked_add(c).ok_or(bad.clone())?;
                    s.tally_add(v, c)?;
                }
            }
            TAG_SPIKE_SKETCH => {
                let (anchor, delta, shift, slop) = (r.f64()?, r.f64()?, r.f64()?, r.f64()?);
                let level = r.u8()?;
                let fine = |x: f64| x.is_finite() && x >= 0.0;
                if !(anchor.is_finite() && fine(delta) && delta > 0.0 && fine(shift) && fine(slop))
                    || level > MAX_LEVEL
                {
                    return Err(bad);
                }
                let mut sk = Sketch::for_moments(0.0, 1.0);
                (sk.anchor, sk.delta, sk.shift, sk.slop, sk.level) =
                    (anchor, delta, shift, slop, level);
                let (first, last) = (r.u16()? as usize, r.u16()? as usize);
                if first > last || last >= NB {
                    return Err(bad);
                }
                for i in first..=last {
                    let c = r.varint()?;
                    total = total.checked_add(c).ok_or(bad.clone())?;
                    sk.add_at(i, c)?;
                }
                s.tally = Tally::Sketch(sk);
            }
            _ => return Err(DetectError::Corrupt("unknown spike tally")),
        }
        r.end()?;
        let max_ok = if s.moments.n == 0 {
            s.max == f64::NEG_INFINITY
        } else {
            crate::usable_value(s.max)
        };
        if total != s.moments.n || !max_ok {
            return Err(bad);
        }
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
