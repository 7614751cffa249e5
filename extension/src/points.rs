//! A series' points in one value: the aggregate `coherence.points(ts, value)` packs a group's
//! (time, value) pairs into a `bytea` (16 bytes a point: Unix µs as int8, then the value as
//! float8, in the server's byte order), which `coherence.find_events_points` and
//! `coherence.find_collective_points` read back without unpacking arrays.
//!
//! Why one aggregate and not `array_agg(ts), array_agg(value)`: a hash aggregate sizes its table
//! by transition states (8 kB assumed for each `internal` one), so two array states a series
//! sent twice as many series to disk at the default work_mem to be read back; a packed point
//! takes 16 bytes where the two arrays take 18, and it is read back with no array to unpack.
//!
//! The buffer is palloc'd in the aggregate's memory context (PostgreSQL accounts for it and
//! frees it with the query; a failed allocation is an ERROR, never an abort) and grows by a
//! quarter at a time up to the 1 GB a `bytea` can hold.

use crate::events::unix_us;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::{Internal, PgSqlErrorCode};

/// Bytes a point takes in the packed form.
pub(crate) const POINT_BYTES: usize = 16;
/// Most points one `bytea` holds (MaxAllocSize, 1 GB - 1, less its header).
const MAX_POINTS: usize = (0x3fff_ffff - pg_sys::VARHDRSZ) / POINT_BYTES;

/// The aggregate's state: a growing buffer of packed points in the aggregate's context.
struct Packed {
    buf: *mut u8,
    len: usize,
    cap: usize,
}

fn too_many_points() -> ! {
    ErrorReport::new(
        PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
        format!("a series has more than {MAX_POINTS} points in the range"),
        "coherence",
    )
    .set_detail("coherence.points packs a series into one bytea of 16 bytes a point, at most 1 GB.")
    .set_hint("Analyse a shorter time range (detect_events' lookback) or downsample the series.")
    .report(PgLogLevel::ERROR);
    unreachable!("ERROR does not return")
}

/// Makes room for `need` points: grows the buffer (palloc, in the context `ctx`) by a quarter,
/// or to `need` when that is more; more than [`MAX_POINTS`] is an error.
///
/// # Safety
/// `s.buf` is null or a chunk of `s.cap` points allocated in `ctx` (or in the context of an
/// earlier chunk: repalloc keeps it).
unsafe fn reserve(s: &mut Packed, ctx: pg_sys::MemoryContext, need: usize) {
    if need > MAX_POINTS {
        too_many_points();
    }
    if need <= s.cap {
        return;
    }
    // By a quarter: a series' buffer is then at most 25% larger than its points (doubling
    // would leave up to half of it unused, over every series held at once).
    let cap = need.max(s.cap + s.cap / 4).clamp(64, MAX_POINTS);
    // SAFETY: see the function's contract; both calls raise an ERROR on failure.
    s.buf = unsafe {
        if s.buf.is_null() {
            pg_sys::MemoryContextAllocHuge(ctx, cap * POINT_BYTES).cast()
        } else {
            pg_sys::repalloc_huge(s.buf.cast(), cap * POINT_BYTES).cast()
        }
    };
    s.cap = cap;
}

/// Appends one point.
///
/// # Safety
/// As for [`reserve`].
unsafe fn push(s: &mut Packed, ctx: pg_sys::MemoryContext, t: i64, v: f64) {
    // SAFETY: the function's contract.
    unsafe { reserve(s, ctx, s.len + 1) };
    let mut p = [0u8; POINT_BYTES];
    p[..8].copy_from_slice(&t.to_ne_bytes());
    p[8..].copy_from_slice(&v.to_ne_bytes());
    // SAFETY: len < cap, so the point's 16 bytes are inside the buffer.
    unsafe {
        std::ptr::copy_nonoverlapping(p.as_ptr(), s.buf.add(s.len * POINT_BYTES), POINT_BYTES)
    };
    s.len += 1;
}

/// Transition of `coherence.points`: adds the point; NULLs and infinite times are skipped.
#[pg_extern(immutable, parallel_safe)]
fn points_trans(
    mut state: Internal,
    ts: Option<TimestampWithTimeZone>,
    value: Option<f64>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    let ctx = crate::aggregates::agg_context(fcinfo);
    if !state.initialized() {
        // SAFETY: ctx is the live aggregate context.
        state = unsafe { new_packed(ctx) };
    }
    if let (Some(t), Some(v)) = (ts.and_then(unix_us), value) {
        // SAFETY: this aggregate's state is always a Packed, created above in ctx.
        unsafe {
            push(
                state.get_mut::<Packed>().expect("initialized state"),
                ctx,
                t,
                v,
            )
        };
    }
    state
}

/// Appends `n` packed points at `src` to `s`.
///
/// # Safety
/// As for [`reserve`]; `src` holds `n` points and does not overlap `s`'s buffer.
unsafe fn append(s: &mut Packed, ctx: pg_sys::MemoryContext, src: *const u8, n: usize) {
    if n == 0 {
        return;
    }
    let need = s.len.saturating_add(n);
    // SAFETY: the function's contract.
    unsafe { reserve(s, ctx, need) };
    // SAFETY: the buffer has room for `need` points; src holds n and does not overlap it.
    unsafe { std::ptr::copy_nonoverlapping(src, s.buf.add(s.len * POINT_BYTES), n * POINT_BYTES) };
    s.len = need;
}

/// A new, empty state in `ctx`.
///
/// # Safety
/// `ctx` is a live memory context that outlives every use of the state.
unsafe fn new_packed(ctx: pg_sys::MemoryContext) -> Internal {
    // SAFETY: sized and aligned for a Packed (palloc is MAXALIGNed), written before use.
    unsafe {
        let p = pg_sys::MemoryContextAlloc(ctx, std::mem::size_of::<Packed>()).cast::<Packed>();
        p.write(Packed {
            buf: std::ptr::null_mut(),
            len: 0,
            cap: 0,
        });
        Internal::from(Some(pg_sys::Datum::from(p)))
    }
}

/// Combine function of `coherence.points` (parallel aggregation): `b`'s points after `a`'s, in
/// the aggregate's context (the order of the points does not matter: readers sort them).
#[pg_extern(immutable, parallel_safe)]
fn points_combine(a: Internal, b: Internal, fcinfo: pg_sys::FunctionCallInfo) -> Option<Internal> {
    let ctx = crate::aggregates::agg_context(fcinfo);
    // SAFETY: both states of this aggregate are Packed; a and b are distinct states.
    let (src, n) = match unsafe { b.get::<Packed>() } {
        Some(y) => (y.buf.cast_const(), y.len),
        None => (std::ptr::null(), 0),
    };
    // NULL only when both are: a group whose rows were all skipped packs to an empty value,
    // as in a serial plan.
    let b_state = b.initialized();
    let mut a = if a.initialized() {
        a
    } else if b_state {
        // SAFETY: ctx is the live aggregate context.
        unsafe { new_packed(ctx) }
    } else {
        return None;
    };
    // SAFETY: a is a Packed of this aggregate (in ctx); b's n points are its own buffer.
    unsafe {
        append(
            a.get_mut::<Packed>().expect("initialized state"),
            ctx,
            src,
            n,
        )
    };
    Some(a)
}

/// Serial function of `coherence.points`: the packed points, as the final function gives them.
#[pg_extern(immutable, strict, parallel_safe)]
fn points_serialize(state: Internal) -> &'static [u8] {
    points_final(state).unwrap_or(&[])
}

/// Deserial function of `coherence.points`: a state over the bytes themselves, read once by
/// the combine function in the same call context (which copies them into its own state).
#[pg_extern(immutable, strict, parallel_safe)]
fn points_deserialize(
    bytes: &[u8],
    _unused: Internal,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    crate::aggregates::agg_context(fcinfo); // only ever called by an aggregate
    if !bytes.len().is_multiple_of(POINT_BYTES) {
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_INVALID_BINARY_REPRESENTATION,
            "a partial coherence.points state is not a whole number of points",
            "coherence",
        )
        .set_hint(
            "points_deserialize reads only what points_serialize wrote; do not call it directly.",
        )
        .report(PgLogLevel::ERROR);
    }
    // SAFETY: CurrentMemoryContext is live for this call and the combine call that reads the
    // state; the bytes (the detoasted argument) live as long.
    unsafe {
        let mut st = new_packed(pg_sys::CurrentMemoryContext);
        let p = st.get_mut::<Packed>().expect("initialized state");
        p.buf = bytes.as_ptr().cast_mut();
        p.len = bytes.len() / POINT_BYTES;
        p.cap = p.len;
        st
    }
}

/// Final function of `coherence.points`: the packed points (NULL for no rows). pgrx copies the
/// returned bytes into the result `bytea` (one palloc'd copy; the state is only read, so the
/// function may run more than once on one state, as in a window).
#[pg_extern(immutable, parallel_safe)]
fn points_final(state: Internal) -> Option<&'static [u8]> {
    // SAFETY: the state of this aggregate is a Packed whose buffer holds len points; it lives
    // in the aggregate's context, which outlasts this call, and pgrx copies the slice into the
    // result datum before the call returns (the 'static is only that long).
    let s = unsafe { state.get::<Packed>() }?;
    if s.len == 0 {
        return Some(&[]);
    }
    Some(unsafe { std::slice::from_raw_parts(s.buf, s.len * POINT_BYTES) })
}

/// Appends the points written by `coherence.points` to `out` as (Unix µs, value) pairs, in
/// their packed order (callers sort), skipping unusable values; the analysis' working memory
/// (`per_point` bytes a point) is reserved first. A length that is not a whole number of
/// points is an error.
pub(crate) fn unpack(bytes: &[u8], per_point: usize, out: &mut Vec<(i64, f64)>) {
    if !bytes.len().is_multiple_of(POINT_BYTES) {
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_INVALID_BINARY_REPRESENTATION,
            format!(
                "packed points must be a multiple of {POINT_BYTES} bytes, not {}",
                bytes.len()
            ),
            "coherence",
        )
        .set_hint("Pass the result of coherence.points(ts, value).")
        .report(PgLogLevel::ERROR);
    }
    let n = bytes.len() / POINT_BYTES;
    crate::events::reserve_memory(n, per_point);
    if out.try_reserve_exact(n).is_err() {
        crate::events::out_of_memory(n, per_point);
    }
    out.extend(bytes.chunks_exact(POINT_BYTES).filter_map(|c| {
        let t = i64::from_ne_bytes(c[..8].try_into().expect("8 bytes"));
        let v = f64::from_ne_bytes(c[8..].try_into().expect("8 bytes"));
        coherence_core::usable_value(v).then_some((t, v))
    }));
}

extension_sql!(
    r#"
-- SSPACE left at PostgreSQL's default for internal states (8 kB, as for array_agg): the state
-- grows with the series, and the planner should plan for that, not for its empty size.
-- Parallel: workers pack their rows of a group, the leader appends the partial states.
CREATE AGGREGATE coherence.points(ts timestamptz, value double precision) (
    SFUNC = coherence.points_trans, STYPE = internal,
    FINALFUNC = coherence.points_final,
    COMBINEFUNC = coherence.points_combine,
    SERIALFUNC = coherence.points_serialize, DESERIALFUNC = coherence.points_deserialize,
    PARALLEL = SAFE
);
"#,
    name = "points_aggregate",
    requires = [
        points_trans,
        points_final,
        points_combine,
        points_serialize,
        points_deserialize
    ]
);
