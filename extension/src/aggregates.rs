//! The three detector aggregates: `coherence.variance_escalation`, `coherence.spikes` and
//! `coherence.trend`, each `(ts timestamptz, value float8 [, parameters])`.
//!
//! State is a Rust value (`internal`) palloc'd in the aggregate's memory context (so
//! PostgreSQL accounts for it and HashAggregate spills) and dropped with it, so an error
//! mid-query frees it. `spikes` and `trend` states are fixed-size; `variance_escalation` keeps a
//! map of windows on the Rust heap (it grows with the time span, not the points). Each aggregate has combine/serialize/deserialize
//! functions and is `PARALLEL SAFE`. The aggregates are created by hand in SQL below because
//! `#[pg_aggregate]` cannot make parallel `internal`-state aggregates in pgrx 0.18.1.

use crate::errors::{invalid_parameter, raise};
use coherence_core::detect::{
    self, DetectError, SpikeParams, SpikeState, TrendParams, TrendState, VarianceParams,
    VarianceState, PG_EPOCH_US,
};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::{Internal, PgSqlErrorCode};

/// What the generic glue needs from a detector state.
trait Detector: Clone + 'static {
    fn add(&mut self, ts_us: i64, v: f64) -> Result<(), DetectError>;
    fn skip(&mut self);
    fn merge(&mut self, o: &Self) -> Result<(), DetectError>;
    fn to_bytes(&self) -> Result<Vec<u8>, DetectError>;
    fn from_bytes(b: &[u8]) -> Result<Self, DetectError>;
    /// A copy whose memory is reserved fallibly where the state grows with the input.
    fn try_clone(&self) -> Result<Self, DetectError>;
}

/// `$add`, `$bytes`, `$clone`: the state's methods, fallible where memory grows with the input.
macro_rules! impl_detector {
    ($t:ty, $add:expr, $bytes:expr, $clone:expr) => {
        impl Detector for $t {
            #[inline]
            fn add(&mut self, ts_us: i64, v: f64) -> Result<(), DetectError> {
                $add(self, ts_us, v)
            }
            #[inline]
            fn skip(&mut self) {
                self.skipped += 1;
            }
            fn merge(&mut self, o: &Self) -> Result<(), DetectError> {
                <$t>::merge(self, o)
            }
            fn to_bytes(&self) -> Result<Vec<u8>, DetectError> {
                $bytes(self)
            }
            fn from_bytes(b: &[u8]) -> Result<Self, DetectError> {
                <$t>::from_bytes(b)
            }
            fn try_clone(&self) -> Result<Self, DetectError> {
                $clone(self)
            }
        }
    };
}
impl_detector!(
    VarianceState,
    VarianceState::try_add,
    |s: &VarianceState| Ok(s.to_bytes()),
    |s: &VarianceState| Ok(s.clone())
);
impl_detector!(
    SpikeState,
    SpikeState::try_add,
    SpikeState::try_to_bytes,
    SpikeState::try_clone
);
impl_detector!(
    TrendState,
    |s: &mut TrendState, t, v| {
        s.add(t, v);
        Ok(())
    },
    |s: &TrendState| Ok(s.to_bytes()),
    |s: &TrendState| Ok(s.clone())
);

/// The aggregate's memory context; errors when called outside an aggregate.
pub(crate) fn agg_context(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::MemoryContext {
    let mut ctx: pg_sys::MemoryContext = std::ptr::null_mut();
    // SAFETY: fcinfo comes from PostgreSQL's function manager for this call.
    let is_agg = !fcinfo.is_null() && unsafe { pg_sys::AggCheckCallContext(fcinfo, &mut ctx) } != 0;
    if !is_agg {
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            "coherence aggregate support functions can only be called by an aggregate",
            "coherence",
        )
        .report(PgLogLevel::ERROR);
    }
    ctx
}

/// Runs the state's destructor when the aggregate context is reset or deleted.
#[pg_guard]
unsafe extern "C-unwind" fn drop_state<D>(arg: *mut std::ffi::c_void) {
    // SAFETY: arg is the state `new_state` wrote, dropped exactly once (by this callback).
    unsafe { std::ptr::drop_in_place(arg.cast::<D>()) }
}

/// Puts a state into the aggregate's memory context (palloc), so PostgreSQL accounts for it
/// (HashAggregate sees it against work_mem and spills) and frees it with the context. A state
/// that owns heap memory (only `VarianceState`'s window map) is dropped by a reset callback.
fn new_state<D: Detector>(fcinfo: pg_sys::FunctionCallInfo, d: D) -> Internal {
    let ctx = agg_context(fcinfo);
    // SAFETY: ctx is the live aggregate context, which outlives every call that reads the state.
    unsafe { place_state(ctx, d) }
}

/// Writes `d` into memory of `ctx`; a state that owns heap memory gets a reset callback that
/// drops it.
///
/// # Safety
/// `ctx` must be a live memory context that outlives every use of the returned state.
unsafe fn place_state<D: Detector>(ctx: pg_sys::MemoryContext, d: D) -> Internal {
    // palloc returns MAXALIGN (8-byte) aligned memory.
    const { assert!(std::mem::align_of::<D>() <= 8) };
    // SAFETY: the memory is sized and aligned for a `D` and written before use. The callback
    // is allocated first, so an out-of-memory error there cannot leak a written state.
    unsafe {
        let cb = if std::mem::needs_drop::<D>() {
            pg_sys::MemoryContextAlloc(ctx, std::mem::size_of::<pg_sys::MemoryContextCallback>())
                .cast::<pg_sys::MemoryContextCallback>()
        } else {
            std::ptr::null_mut()
        };
        let p = pg_sys::MemoryContextAlloc(ctx, std::mem::size_of::<D>()).cast::<D>();
        p.write(d);
        if !cb.is_null() {
            cb.write(pg_sys::MemoryContextCallback {
                func: Some(drop_state::<D>),
                arg: p.cast(),
                next: std::ptr::null_mut(),
            });
            pg_sys::MemoryContextRegisterResetCallback(ctx, cb);
        }
        Internal::from(Some(pg_sys::Datum::from(p)))
    }
}

#[inline]
fn trans<D: Detector>(
    mut state: Internal,
    ts: Option<TimestampWithTimeZone>,
    value: Option<f64>,
    fcinfo: pg_sys::FunctionCallInfo,
    make: impl FnOnce() -> Result<D, DetectError>,
) -> Internal {
    if !state.initialized() {
        state = new_state(fcinfo, make().unwrap_or_else(|e| raise(e)));
    }
    // SAFETY: this aggregate's state is always a `D`, created just above.
    let s = unsafe { state.get_mut::<D>() }.expect("initialized state");
    match (ts.and_then(crate::events::unix_us), value) {
        (Some(t), Some(v)) => {
            if let Err(e) = s.add(t, v) {
                raise(e)
            }
        }
        _ => s.skip(),
    }
    state
}

fn combine<D: Detector>(
    a: Internal,
    b: Internal,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Option<Internal> {
    // SAFETY: both states of this aggregate are `D`; a and b are distinct states.
    let (has_a, has_b) = unsafe { (a.get::<D>().is_some(), b.get::<D>().is_some()) };
    match (has_a, has_b) {
        (false, false) => None,
        (true, false) => Some(a),
        (false, true) => {
            let y = unsafe { b.get::<D>() }.expect("initialized state");
            Some(new_state(
                fcinfo,
                y.try_clone().unwrap_or_else(|e| raise(e)),
            ))
        }
        (true, true) => {
            let mut a = a;
            let y = unsafe { b.get::<D>() }.expect("initialized state");
            let x = unsafe { a.get_mut::<D>() }.expect("initialized state");
            x.merge(y).unwrap_or_else(|e| raise(e));
            Some(a)
        }
    }
}

fn serialize<D: Detector>(state: Internal) -> Vec<u8> {
    // SAFETY: the state of this aggregate is a `D`; serialfunc is strict so it is non-null.
    unsafe { state.get::<D>() }
        .expect("initialized state")
        .to_bytes()
        .unwrap_or_else(|e| raise(e))
}

/// A deserialized partial state is read once, by the combine function (which merges it or
/// clones it into the aggregate context), so it lives in the short-lived current context, as
/// PostgreSQL's own deserialize functions do, not in the aggregate's memory for the whole query.
fn deserialize<D: Detector>(bytes: &[u8], fcinfo: pg_sys::FunctionCallInfo) -> Internal {
    agg_context(fcinfo); // only ever called by an aggregate
    let d = D::from_bytes(bytes).unwrap_or_else(|e| raise(e));
    // SAFETY: CurrentMemoryContext is live for this call and the combine call that reads it.
    unsafe { place_state(pg_sys::CurrentMemoryContext, d) }
}

/// The parallel-aggregation support functions of a detector state, the same for every
/// detector: combine, serialize and deserialize (`CREATE AGGREGATE` below names them).
macro_rules! parallel_support {
    ($state:ty, $combine:ident, $serialize:ident, $deserialize:ident) => {
        #[pg_extern(immutable, parallel_safe)]
        fn $combine(
            a: Internal,
            b: Internal,
            fcinfo: pg_sys::FunctionCallInfo,
        ) -> Option<Internal> {
            combine::<$state>(a, b, fcinfo)
        }

        #[pg_extern(immutable, strict, parallel_safe)]
        fn $serialize(state: Internal) -> Vec<u8> {
            serialize::<$state>(state)
        }

        #[pg_extern(immutable, strict, parallel_safe)]
        fn $deserialize(
            bytes: &[u8],
            _unused: Internal,
            fcinfo: pg_sys::FunctionCallInfo,
        ) -> Internal {
            deserialize::<$state>(bytes, fcinfo)
        }
    };
}

fn ts_of(unix_us: Option<i64>) -> Option<TimestampWithTimeZone> {
    unix_us.and_then(|us| TimestampWithTimeZone::try_from(us.checked_sub(PG_EPOCH_US)?).ok())
}

fn interval_us(window: Interval) -> i64 {
    if window.months() != 0 {
        invalid_parameter(
            "variance escalation window must not contain months or years",
            "Months have no fixed length; use days or hours, e.g. interval '4 hours'.",
        );
    }
    let us = window.as_micros();
    if us <= 0 || us > i64::MAX as i128 {
        invalid_parameter(
            "variance escalation window must be a positive interval",
            "The seed's window is interval '4 hours'.",
        );
    }
    us as i64
}

// ------------------------------------------------------------------ variance escalation

#[pg_extern(immutable, parallel_safe)]
fn variance_escalation_trans(
    state: Internal,
    ts: Option<TimestampWithTimeZone>,
    value: Option<f64>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    trans(state, ts, value, fcinfo, || {
        VarianceState::new(VarianceParams::default())
    })
}

#[pg_extern(immutable, parallel_safe)]
fn variance_escalation_trans_params(
    state: Internal,
    ts: Option<TimestampWithTimeZone>,
    value: Option<f64>,
    window: Option<Interval>,
    ratio_threshold: Option<f64>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    trans(state, ts, value, fcinfo, || {
        let d = VarianceParams::default();
        VarianceState::new(VarianceParams {
            window_us: window.map(interval_us).unwrap_or(d.window_us),
            ratio_threshold: ratio_threshold.unwrap_or(d.ratio_threshold),
        })
    })
}

parallel_support!(
    VarianceState,
    variance_escalation_combine,
    variance_escalation_serialize,
    variance_escalation_deserialize
);

#[pg_extern(immutable, parallel_safe, requires = ["schema"])]
fn variance_escalation_final(
    state: Internal,
) -> Option<pgrx::composite_type!('static, "coherence.variance_escalation_result")> {
    // SAFETY: the state of this aggregate is a VarianceState.
    let s = unsafe { state.get::<VarianceState>() }?;
    let v = s.verdict();
    let mut t = PgHeapTuple::new_composite_type("coherence.variance_escalation_result").ok()?;
    t.set_by_name("flagged", v.flagged).ok()?;
    t.set_by_name("risk", v.risk).ok()?;
    t.set_by_name("ratio", v.ratio).ok()?;
    t.set_by_name("windows", v.windows as i64).ok()?;
    t.set_by_name("first_window_start", ts_of(v.first_window_start))
        .ok()?;
    t.set_by_name("first_variance", v.first_variance).ok()?;
    t.set_by_name("last_window_start", ts_of(v.last_window_start))
        .ok()?;
    t.set_by_name("last_variance", v.last_variance).ok()?;
    t.set_by_name("points", v.points as i64).ok()?;
    t.set_by_name("skipped", v.skipped as i64).ok()?;
    t.set_by_name("summary", detect::variance_summary(&v))
        .ok()?;
    Some(t)
}

// ------------------------------------------------------------------ spikes

#[pg_extern(immutable, parallel_safe)]
fn spikes_trans(
    state: Internal,
    ts: Option<TimestampWithTimeZone>,
    value: Option<f64>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    trans(state, ts, value, fcinfo, || {
        SpikeState::new(SpikeParams::default())
    })
}

#[pg_extern(immutable, parallel_safe)]
fn spikes_trans_params(
    state: Internal,
    ts: Option<TimestampWithTimeZone>,
    value: Option<f64>,
    sigmas: Option<f64>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    trans(state, ts, value, fcinfo, || {
        SpikeState::new(SpikeParams {
            sigmas: sigmas.unwrap_or(SpikeParams::default().sigmas),
        })
    })
}

parallel_support!(
    SpikeState,
    spikes_combine,
    spikes_serialize,
    spikes_deserialize
);

#[pg_extern(immutable, parallel_safe, requires = ["schema"])]
fn spikes_final(
    state: Internal,
) -> Option<pgrx::composite_type!('static, "coherence.spikes_result")> {
    // SAFETY: the state of this aggregate is a SpikeState.
    let s = unsafe { state.get::<SpikeState>() }?;
    let v = s.verdict();
    let mut t = PgHeapTuple::new_composite_type("coherence.spikes_result").ok()?;
    t.set_by_name("flagged", v.flagged).ok()?;
    t.set_by_name("risk", v.risk).ok()?;
    t.set_by_name("count", v.count as i64).ok()?;
    t.set_by_name("max", v.max).ok()?;
    t.set_by_name("max_at", ts_of(v.max_at)).ok()?;
    t.set_by_name("mean", v.mean).ok()?;
    t.set_by_name("stddev", v.stddev).ok()?;
    t.set_by_name("threshold", v.threshold).ok()?;
    t.set_by_name("points", v.points as i64).ok()?;
    t.set_by_name("skipped", v.skipped as i64).ok()?;
    t.set_by_name("summary", detect::spike_summary(&v, ""))
        .ok()?;
    Some(t)
}

// ------------------------------------------------------------------ trend

#[pg_extern(immutable, parallel_safe)]
fn trend_trans(
    state: Internal,
    ts: Option<TimestampWithTimeZone>,
    value: Option<f64>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    trans(state, ts, value, fcinfo, || {
        TrendState::new(TrendParams::default())
    })
}

#[pg_extern(immutable, parallel_safe)]
fn trend_trans_params(
    state: Internal,
    ts: Option<TimestampWithTimeZone>,
    value: Option<f64>,
    pct_threshold: Option<f64>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    trans(state, ts, value, fcinfo, || {
        TrendState::new(TrendParams {
            pct_threshold: pct_threshold.unwrap_or(TrendParams::default().pct_threshold),
        })
    })
}

parallel_support!(
    TrendState,
    trend_combine,
    trend_serialize,
    trend_deserialize
);

#[pg_extern(immutable, parallel_safe, requires = ["schema"])]
fn trend_final(
    state: Internal,
) -> Option<pgrx::composite_type!('static, "coherence.trend_result")> {
    // SAFETY: the state of this aggregate is a TrendState.
    let s = unsafe { state.get::<TrendState>() }?;
    let v = s.verdict();
    let mut t = PgHeapTuple::new_composite_type("coherence.trend_result").ok()?;
    t.set_by_name("flagged", v.flagged).ok()?;
    t.set_by_name("risk", v.risk).ok()?;
    t.set_by_name("pct_change", v.pct_change).ok()?;
    t.set_by_name("slope_per_hour", v.slope_per_hour).ok()?;
    t.set_by_name("fitted_start", v.fitted_start).ok()?;
    t.set_by_name("fitted_end", v.fitted_end).ok()?;
    t.set_by_name("r2", v.r2).ok()?;
    t.set_by_name("first_at", ts_of(v.first_at)).ok()?;
    t.set_by_name("last_at", ts_of(v.last_at)).ok()?;
    t.set_by_name("points", v.points as i64).ok()?;
    t.set_by_name("skipped", v.skipped as i64).ok()?;
    t.set_by_name("summary", detect::trend_summary(&v)).ok()?;
    Some(t)
}

extension_sql!(
    r#"
-- SSPACE: the state's size in bytes (palloc'd in the aggregate context), so the planner knows
-- a thousand groups fit a hash table within work_mem (without it, PostgreSQL assumes 8 kB a
-- state and picks a sorted index scan or a spilling hash). spikes: the fixed SpikeState (at most
-- 2,304 bytes, asserted in coherence-core); trend: a plain struct; variance_escalation: the
-- struct plus room for its window map, which lives on the Rust heap where PostgreSQL cannot
-- see it and grows with the time span (about 40 bytes a window): 2 kB keeps the planner from
-- hashing far more groups than work_mem can hold.
CREATE AGGREGATE coherence.variance_escalation(ts timestamptz, value double precision) (
    SFUNC = coherence.variance_escalation_trans, STYPE = internal,
    SSPACE = 2048,
    COMBINEFUNC = coherence.variance_escalation_combine,
    SERIALFUNC = coherence.variance_escalation_serialize,
    DESERIALFUNC = coherence.variance_escalation_deserialize,
    FINALFUNC = coherence.variance_escalation_final,
    PARALLEL = SAFE
);
CREATE AGGREGATE coherence.variance_escalation(ts timestamptz, value double precision,
        "window" interval, ratio_threshold double precision) (
    SFUNC = coherence.variance_escalation_trans_params, STYPE = internal,
    SSPACE = 2048,
    COMBINEFUNC = coherence.variance_escalation_combine,
    SERIALFUNC = coherence.variance_escalation_serialize,
    DESERIALFUNC = coherence.variance_escalation_deserialize,
    FINALFUNC = coherence.variance_escalation_final,
    PARALLEL = SAFE
);
CREATE AGGREGATE coherence.spikes(ts timestamptz, value double precision) (
    SFUNC = coherence.spikes_trans, STYPE = internal,
    SSPACE = 2304,
    COMBINEFUNC = coherence.spikes_combine,
    SERIALFUNC = coherence.spikes_serialize,
    DESERIALFUNC = coherence.spikes_deserialize,
    FINALFUNC = coherence.spikes_final,
    PARALLEL = SAFE
);
CREATE AGGREGATE coherence.spikes(ts timestamptz, value double precision, sigmas double precision) (
    SFUNC = coherence.spikes_trans_params, STYPE = internal,
    SSPACE = 2304,
    COMBINEFUNC = coherence.spikes_combine,
    SERIALFUNC = coherence.spikes_serialize,
    DESERIALFUNC = coherence.spikes_deserialize,
    FINALFUNC = coherence.spikes_final,
    PARALLEL = SAFE
);
CREATE AGGREGATE coherence.trend(ts timestamptz, value double precision) (
    SFUNC = coherence.trend_trans, STYPE = internal,
    SSPACE = 128,
    COMBINEFUNC = coherence.trend_combine,
    SERIALFUNC = coherence.trend_serialize,
    DESERIALFUNC = coherence.trend_deserialize,
    FINALFUNC = coherence.trend_final,
    PARALLEL = SAFE
);
CREATE AGGREGATE coherence.trend(ts timestamptz, value double precision, pct_threshold double precision) (
    SFUNC = coherence.trend_trans_params, STYPE = internal,
    SSPACE = 128,
    COMBINEFUNC = coherence.trend_combine,
    SERIALFUNC = coherence.trend_serialize,
    DESERIALFUNC = coherence.trend_deserialize,
    FINALFUNC = coherence.trend_final,
    PARALLEL = SAFE
);
"#,
    name = "aggregates",
    requires = [
        variance_escalation_trans,
        variance_escalation_trans_params,
        variance_escalation_combine,
        variance_escalation_serialize,
        variance_escalation_deserialize,
        variance_escalation_final,
        spikes_trans,
        spikes_trans_params,
        spikes_combine,
        spikes_serialize,
        spikes_deserialize,
        spikes_final,
        trend_trans,
        trend_trans_params,
        trend_combine,
        trend_serialize,
        trend_deserialize,
        trend_final,
    ]
);
