use super::*;
use crate::USEC_PER_HOUR;
use proptest::prelude::*;

const MIN: i64 = 60 * crate::USEC_PER_SEC;
/// 2025-12-11 08:00 UTC, aligned to a 4-hour window.
const T0: i64 = 1_765_440_000 * crate::USEC_PER_SEC;

fn var_samp(xs: &[f64]) -> f64 {
    let m = xs.iter().sum::<f64>() / xs.len() as f64;
    xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (xs.len() - 1) as f64
}

#[test]
fn window_alignment_matches_date_bin() {
    let s = VarianceState::new(VarianceParams::default()).unwrap();
    assert_eq!(T0 % (4 * USEC_PER_HOUR), 0);
    assert_eq!(s.window_of(T0), T0);
    assert_eq!(s.window_of(T0 + 4 * USEC_PER_HOUR - 1), T0);
    assert_eq!(s.window_of(T0 - 1), T0 - 4 * USEC_PER_HOUR);
    // Before 2000-01-01 too (div_euclid, not truncation).
    assert_eq!(
        s.window_of(PG_EPOCH_US - 1),
        PG_EPOCH_US - 4 * USEC_PER_HOUR
    );
}

#[test]
fn variance_closed_form_ratio() {
    // First window: 1,3 (var 2). Middle window ignored. Last window: 0,4,8 (var 16). Ratio 8.
    let mut s = VarianceState::new(VarianceParams::default()).unwrap();
    for (i, v) in [1.0, 3.0].iter().enumerate() {
        s.add(T0 + i as i64 * MIN, *v);
    }
    s.add(T0 + 4 * USEC_PER_HOUR, 100.0);
    s.add(T0 + 4 * USEC_PER_HOUR + MIN, -100.0);
    for (i, v) in [0.0, 4.0, 8.0].iter().enumerate() {
        s.add(T0 + 8 * USEC_PER_HOUR + i as i64 * MIN, *v);
    }
    let v = s.verdict();
    assert_eq!(v.windows, 3);
    assert_eq!(v.first_variance, Some(2.0));
    assert_eq!(v.last_variance, Some(16.0));
    assert_eq!(v.ratio, Some(8.0));
    assert!(v.flagged);
    assert_eq!(v.risk, 1.0);
    assert_eq!(
        variance_summary(&v),
        "Variance escalated 8.00x (Risk: 1.00)"
    );
}

#[test]
fn variance_threshold_sits_at_half_risk() {
    let v = |ratio: f64| {
        let mut s = VarianceState::new(VarianceParams::default()).unwrap();
        s.add(T0, -1.0);
        s.add(T0 + MIN, 1.0); // var 2
        let d = (ratio * 2.0 / 2.0).sqrt(); // two points ±d have var 2d²
        s.add(T0 + 4 * USEC_PER_HOUR, -d);
        s.add(T0 + 4 * USEC_PER_HOUR + MIN, d);
        s.verdict()
    };
    assert!((v(1.5).risk - 0.5).abs() < 1e-12);
    assert!(!v(1.4).flagged && v(1.6).flagged);
    assert_eq!(v(0.5).risk, 0.0);
}

#[test]
fn variance_edge_cases() {
    let p = VarianceParams::default();
    let empty = VarianceState::new(p).unwrap().verdict();
    assert_eq!(
        (empty.ratio, empty.flagged, empty.risk, empty.windows),
        (None, false, 0.0, 0)
    );
    // One window only.
    let mut one = VarianceState::new(p).unwrap();
    one.add(T0, 1.0);
    one.add(T0 + MIN, 2.0);
    assert_eq!(one.verdict().ratio, None);
    // Constant series: ratio 1, nothing flagged.
    let mut c = VarianceState::new(p).unwrap();
    for i in 0..600 {
        c.add(T0 + i * MIN, 5.0);
    }
    let cv = c.verdict();
    assert_eq!((cv.ratio, cv.flagged), (Some(1.0), false));
    // Constant first window, noisy last: infinite ratio, risk 1.
    c.add(T0 + 20 * USEC_PER_HOUR, 0.0);
    c.add(T0 + 20 * USEC_PER_HOUR + MIN, 10.0);
    let cv = c.verdict();
    assert_eq!(cv.ratio, Some(f64::INFINITY));
    assert!(cv.flagged && cv.risk == 1.0);
    // Non-finite values are skipped and counted.
    let mut n = VarianceState::new(p).unwrap();
    n.add(T0, f64::NAN);
    n.add(T0, f64::INFINITY);
    n.add(T0, f64::NEG_INFINITY);
    assert_eq!(n.verdict().skipped, 3);
    assert_eq!(n.verdict().points, 0);
    // Huge values: no panic, no NaN ratio.
    let mut h = VarianceState::new(p).unwrap();
    for i in 0..10 {
        h.add(T0 + i * MIN, if i % 2 == 0 { 1e300 } else { -1e300 });
        h.add(T0 + 8 * USEC_PER_HOUR + i * MIN, 1.0 + i as f64);
    }
    let hv = h.verdict();
    assert!(hv.ratio.is_none() || !hv.ratio.unwrap().is_nan());
    assert!(VarianceState::new(VarianceParams {
        window_us: 0,
        ratio_threshold: 1.5
    })
    .is_err());
    assert!(VarianceState::new(VarianceParams {
        window_us: 1,
        ratio_threshold: 1.0
    })
    .is_err());
    assert!(VarianceState::new(VarianceParams {
        window_us: 1,
        ratio_threshold: f64::NAN
    })
    .is_err());
}

#[test]
fn spikes_closed_form() {
    // 99 zeros and one 10: mean 0.1, sd = sqrt((99·0.01 + 9.9²)/99) = 1.
    let mut s = SpikeState::new(SpikeParams::default()).unwrap();
    for i in 0..99 {
        s.add(T0 + i * MIN, 0.0);
    }
    s.add(T0 + 99 * MIN, 10.0);
    let v = s.verdict();
    assert!((v.mean.unwrap() - 0.1).abs() < 1e-12);
    assert!((v.stddev.unwrap() - 1.0).abs() < 1e-12);
    assert_eq!(v.count, 1);
    assert_eq!(v.max, Some(10.0));
    assert_eq!(v.max_at, Some(T0 + 99 * MIN));
    // freq = (0.01 - 0.00621) / 0.01 = 0.379; z_max = 9.9 → mag 1.
    let expected = 0.5 * (0.01 - normal_sf(2.5)) / 0.01 + 0.5;
    assert!((v.risk - expected).abs() < 1e-9, "{}", v.risk);
    assert!(v.flagged);
    assert_eq!(
        spike_summary(&v, "%"),
        format!("1 spike, max 10.00% (Risk: {:.2})", v.risk)
    );
}

#[test]
fn normal_tail_reference_values() {
    // Reference values of 1 - Φ(z) (Abramowitz & Stegun table 26.1).
    assert!((normal_sf(0.0) - 0.5).abs() < 1e-7);
    assert!((normal_sf(1.0) - 0.158_655_25).abs() < 1e-7);
    assert!((normal_sf(2.5) - 0.006_209_665).abs() < 1e-8);
    assert!((normal_sf(-1.0) - 0.841_344_75).abs() < 1e-7);
}

#[test]
fn spikes_gaussian_noise_is_low_risk() {
    let mut r = crate::rng::Rng::new(99);
    let mut s = SpikeState::new(SpikeParams::default()).unwrap();
    for i in 0..5000 {
        s.add(T0 + i * MIN, 40.0 + 3.0 * r.normal());
    }
    let v = s.verdict();
    assert!(v.count > 0, "a normal sample has tail points above 2.5σ");
    assert!(v.risk < 0.5 && !v.flagged, "risk {}", v.risk);
}

#[test]
fn spikes_edge_cases() {
    let p = SpikeParams::default();
    let e = SpikeState::new(p).unwrap().verdict();
    assert_eq!((e.points, e.count, e.max, e.threshold), (0, 0, None, None));
    let mut one = SpikeState::new(p).unwrap();
    one.add(T0, 3.0);
    let o = one.verdict();
    assert_eq!(
        (o.points, o.count, o.stddev, o.max),
        (1, 0, None, Some(3.0))
    );
    let mut c = SpikeState::new(p).unwrap();
    for i in 0..10 {
        c.add(T0 + i, 7.0);
    }
    let cv = c.verdict();
    assert_eq!((cv.count, cv.stddev, cv.risk), (0, Some(0.0), 0.0));
    assert!(SpikeState::new(SpikeParams { sigmas: -1.0 }).is_err());
    // Huge values: overflowing moments give no threshold rather than garbage.
    let mut h = SpikeState::new(p).unwrap();
    h.add(T0, 1e308);
    h.add(T0 + 1, -1e308);
    h.add(T0 + 2, 1e308);
    let hv = h.verdict();
    assert!(hv.threshold.is_none_or(f64::is_finite));
}

#[test]
fn trend_closed_form_line() {
    // v = 40 + 1/hour over 50 hours: start 40, end 90, +125%.
    let mut s = TrendState::new(TrendParams::default()).unwrap();
    for i in 0..=50 {
        s.add(T0 + i * USEC_PER_HOUR, 40.0 + i as f64);
    }
    let v = s.verdict();
    assert!((v.slope_per_hour.unwrap() - 1.0).abs() < 1e-9);
    assert!((v.fitted_start.unwrap() - 40.0).abs() < 1e-9);
    assert!((v.fitted_end.unwrap() - 90.0).abs() < 1e-9);
    assert!((v.pct_change.unwrap() - 125.0).abs() < 1e-9);
    assert!((v.r2.unwrap() - 1.0).abs() < 1e-12);
    assert!(v.flagged && v.risk == 1.0);
    assert_eq!(
        trend_summary(&v),
        "125% increase, leak pattern (Risk: 1.00)"
    );
}

#[test]
fn trend_threshold_and_edges() {
    let line = |pct: f64| {
        let mut s = TrendState::new(TrendParams::default()).unwrap();
        s.add(T0, 100.0);
        s.add(T0 + USEC_PER_HOUR, 100.0 + pct);
        s.verdict()
    };
    assert!((line(30.0).risk - 0.5).abs() < 1e-12);
    assert!(!line(30.0).flagged && line(30.1).flagged);
    assert_eq!(line(-50.0).risk, 0.0);
    assert_eq!(trend_summary(&line(-50.0)), "50% decrease (Risk: 0.00)");
    let e = TrendState::new(TrendParams::default()).unwrap().verdict();
    assert_eq!((e.points, e.slope_per_hour, e.first_at), (0, None, None));
    // Same timestamp twice: no slope.
    let mut d = TrendState::new(TrendParams::default()).unwrap();
    d.add(T0, 1.0);
    d.add(T0, 2.0);
    assert_eq!(d.verdict().slope_per_hour, None);
    // Fitted start 0: no percentage.
    let mut z = TrendState::new(TrendParams::default()).unwrap();
    z.add(T0, 0.0);
    z.add(T0 + MIN, 1.0);
    assert_eq!(z.verdict().pct_change, None);
    assert!(z.verdict().slope_per_hour.is_some());
}

#[test]
fn serialization_round_trips_and_rejects_garbage() {
    let mut v = VarianceState::new(VarianceParams::default()).unwrap();
    let mut s = SpikeState::new(SpikeParams::default()).unwrap();
    let mut t = TrendState::new(TrendParams::default()).unwrap();
    for i in 0..1000 {
        let x = (i as f64 * 0.37).sin() * 10.0;
        v.add(T0 + i * MIN, x);
        s.add(T0 + i * MIN, x);
        t.add(T0 + i * MIN, x);
    }
    assert_eq!(
        VarianceState::from_bytes(&v.to_bytes()).unwrap().verdict(),
        v.verdict()
    );
    assert!(!s.is_exact(), "1000 distinct values make a histogram");
    assert_eq!(SpikeState::from_bytes(&s.to_bytes()).unwrap(), s);
    assert_eq!(TrendState::from_bytes(&t.to_bytes()).unwrap(), t);
    let b = v.to_bytes();
    assert!(VarianceState::from_bytes(&b[..b.len() - 1]).is_err());
    assert!(SpikeState::from_bytes(&b).is_err());
    assert!(TrendState::from_bytes(&[]).is_err());
    let sb = s.to_bytes();
    assert!(SpikeState::from_bytes(&sb[..sb.len() - 3]).is_err());
}

#[test]
fn merge_rejects_different_parameters() {
    let mut a = SpikeState::new(SpikeParams { sigmas: 2.5 }).unwrap();
    let b = SpikeState::new(SpikeParams { sigmas: 3.0 }).unwrap();
    assert_eq!(a.merge(&b), Err(DetectError::ParameterMismatch));
}

/// Values above `thr`, by brute force; 0 for a constant series (like the detector).
fn reference_count(xs: &[f64], thr: f64, sd: f64) -> u64 {
    if sd == 0.0 {
        return 0;
    }
    xs.iter().filter(|&&v| v > thr).count() as u64
}

fn valid_distinct(xs: &[f64]) -> usize {
    let mut v: Vec<f64> = xs.iter().map(|x| x + 0.0).collect();
    v.sort_by(f64::total_cmp);
    v.dedup();
    v.len()
}

fn spikes_of(xs: &[f64]) -> SpikeState {
    let mut s = SpikeState::new(SpikeParams::default()).unwrap();
    for (i, x) in xs.iter().enumerate() {
        s.add(T0 + i as i64 * MIN, *x);
    }
    s
}

#[test]
fn spike_state_is_small_and_constants_agree() {
    assert!((LN_GAMMA - SPIKE_GAMMA.ln()).abs() < 1e-15);
    // The aggregates' SSPACE (extension/src/aggregates.rs) promises these sizes to the planner.
    let size = std::mem::size_of::<SpikeState>();
    assert!(size <= 2304, "SpikeState is {size} bytes");
    assert!(std::mem::size_of::<TrendState>() <= 128);
    assert!(std::mem::size_of::<VarianceState>() <= 512);
    assert!(std::mem::align_of::<SpikeState>() <= 8);
    // Level 0 spans 1.04^255 ≈ 22,000 times δ.
    assert!((SPIKE_GAMMA.powi(SPIKE_BUCKETS as i32) - 22_054.7).abs() < 1.0);
}

#[test]
fn spike_count_exact_with_few_distinct_values() {
    // 10 million points like tests/sql/02_aggregates.sql's last query would be slow here;
    // 200,000 points of 101 distinct values: exact, whatever the number of points.
    let mut s = SpikeState::new(SpikeParams::default()).unwrap();
    let mut xs = Vec::new();
    for i in 1..=200_000i64 {
        let v = if i % 20_000 == 0 {
            1e6
        } else {
            (i % 100) as f64
        };
        s.add(T0 + i, v);
        xs.push(v);
    }
    assert!(s.is_exact());
    let v = s.verdict();
    assert_eq!(v.count, reference_count(&xs, v.threshold.unwrap(), 1.0));
    assert_eq!((v.count, v.count_bound), (10, 0));
    // Any 128 points are exact too.
    let mut r = crate::rng::Rng::new(5);
    let ys: Vec<f64> = (0..SPIKE_EXACT).map(|_| r.normal() * 1e3).collect();
    let v = spikes_of(&ys).verdict();
    assert_eq!(v.count, reference_count(&ys, v.threshold.unwrap(), 1.0));
    assert_eq!(v.count_bound, 0);
}

/// Test inputs of one shape: `kind` picks normal, heavy-tailed, offset, constant-ish, outliers
/// or drifting data.
fn sample(kind: u32, n: usize, seed: u64) -> Vec<f64> {
    let mut r = crate::rng::Rng::new(seed);
    (0..n)
        .map(|i| match kind {
            0 => 40.0 + 3.0 * r.normal(),
            // Student-t-like: normal over the root of a chi-square with 2 degrees of freedom.
            1 => r.normal() / ((r.normal().powi(2) + r.normal().powi(2)) / 2.0).sqrt(),
            2 => 8e9 + 1e7 * r.normal(),
            3 => {
                if r.below(1000) == 0 {
                    5.0 + r.uniform()
                } else {
                    5.0
                }
            }
            4 => {
                if r.below(2000) == 0 {
                    1e9 * r.uniform()
                } else {
                    r.normal()
                }
            }
            _ => i as f64 * 0.01 + r.normal(),
        })
        .collect()
}

#[test]
fn spike_count_within_bound_on_many_shapes() {
    let mut flagged_differs = 0;
    let mut cases = 0;
    for kind in 0..6 {
        for (k, n) in [1_000usize, 20_000, 100_000].into_iter().enumerate() {
            for seed in 0..4u64 {
                let xs = sample(kind, n, seed * 31 + k as u64);
                let s = spikes_of(&xs);
                let v = s.verdict();
                let Some(thr) = v.threshold else { continue };
                let exact = reference_count(&xs, thr, v.stddev.unwrap());
                assert!(
                    v.count.abs_diff(exact) <= v.count_bound,
                    "kind {kind} n {n}: {} vs exact {exact}, bound {}",
                    v.count,
                    v.count_bound
                );
                // The bound is a small share of the points.
                assert!(v.count_bound as f64 <= 0.01 * n as f64 + 2.0, "{v:?}");
                // The risk the exact count gives.
                let risk = if exact > 0 {
                    let freq = clamp01((exact as f64 / n as f64 - normal_sf(2.5)) / 0.01);
                    let mag = clamp01(
                        ((v.max.unwrap() - v.mean.unwrap()) / v.stddev.unwrap() - 2.5) / 2.5,
                    );
                    clamp01(0.5 * freq + 0.5 * mag)
                } else {
                    0.0
                };
                cases += 1;
                if (risk >= 0.5) != v.flagged {
                    flagged_differs += 1;
                }
                assert!(
                    (risk - v.risk).abs() <= 0.5 * v.count_bound as f64 / n as f64 / 0.01 + 1e-9
                );
                if std::env::var_os("SPIKE_STATS").is_some() {
                    eprintln!(
                        "kind {kind} n {n}: count {} exact {exact} bound {}",
                        v.count, v.count_bound
                    );
                }

                // Partial states merged through bytes, as parallel workers do: within the
                // merged state's own bound.
                let parts = 2 + (seed as usize % 3);
                let mut merged = SpikeState::new(SpikeParams::default()).unwrap();
                for p in 0..parts {
                    let chunk = &xs[p * n / parts..(p + 1) * n / parts];
                    let b = spikes_of(chunk).to_bytes();
                    assert!(b.len() <= 6 * 1024, "{} bytes", b.len());
                    merged.merge(&SpikeState::from_bytes(&b).unwrap()).unwrap();
                }
                let m = merged.verdict();
                let exact = reference_count(&xs, m.threshold.unwrap(), m.stddev.unwrap());
                assert!(
                    m.count.abs_diff(exact) <= m.count_bound,
                    "merged kind {kind} n {n}: {} vs exact {exact}, bound {}",
                    m.count,
                    m.count_bound
                );
                assert!(m.count_bound as f64 <= 0.03 * n as f64 + 2.0, "{m:?}");
                if std::env::var_os("SPIKE_STATS").is_some() {
                    eprintln!(
                        "  merged {parts}: count {} exact {exact} bound {}",
                        m.count, m.count_bound
                    );
                }
            }
        }
    }
    assert!(
        flagged_differs * 20 <= cases,
        "{flagged_differs} of {cases}"
    );
}

#[test]
fn spike_sketch_counts_overflow_into_high_words() {
    let mut s = Sketch::for_moments(0.0, 1.0);
    s.add_at(3, u32::MAX as u64).unwrap();
    s.add_at(3, 5).unwrap();
    assert_eq!(s.get(3), u32::MAX as u64 + 5);
    s.add_at(3, 1 << 40).unwrap();
    assert_eq!(s.get(3), u32::MAX as u64 + 5 + (1 << 40));
    for i in 10..10 + HI_SLOTS - 1 {
        s.add_at(i, 1 << 33).unwrap();
    }
    assert!(matches!(
        s.add_at(100, 1 << 33),
        Err(DetectError::TooLarge(_))
    ));
    // A collapse keeps the totals.
    let before: u64 = (0..NB).map(|i| s.get(i)).sum();
    s.collapse_to(2).unwrap();
    assert_eq!((0..NB).map(|i| s.get(i)).sum::<u64>(), before);
}

#[test]
fn spike_sketch_level_grows_instead_of_clamping() {
    let mut xs = sample(0, 1000, 3);
    xs.push(1e90);
    xs.push(-1e90);
    let s = spikes_of(&xs);
    let Tally::Sketch(sk) = s.tally else {
        panic!("histogram expected")
    };
    assert!(sk.level > 0);
    let total: u64 = (0..NB).map(|i| sk.get(i)).sum();
    assert_eq!(total, xs.len() as u64);
}

#[test]
fn spike_bytes_reject_corruption() {
    let s = spikes_of(&sample(0, 5000, 1));
    let b = s.to_bytes();
    assert_eq!(SpikeState::from_bytes(&b).unwrap(), s);
    let e = spikes_of(&[1.0, 2.0, 2.0, 5.0]);
    let eb = e.to_bytes();
    assert_eq!(SpikeState::from_bytes(&eb).unwrap(), e);
    let empty = SpikeState::new(SpikeParams::default()).unwrap();
    assert_eq!(SpikeState::from_bytes(&empty.to_bytes()).unwrap(), empty);
    // Truncated anywhere, or one more byte.
    for cut in 0..b.len() {
        assert!(SpikeState::from_bytes(&b[..cut]).is_err());
    }
    let mut long = b.clone();
    long.push(0);
    assert!(SpikeState::from_bytes(&long).is_err());
    // Counts that do not add up to the points.
    let head = 1 + 8 + 8; // tag, sigmas, skipped
    let mut wrong_n = eb.clone();
    wrong_n[head] ^= 1;
    assert!(SpikeState::from_bytes(&wrong_n).is_err());
    // Exact values out of order, an unknown tally, a length over the limit.
    let mode = head + 24 + 16;
    let mut bad_mode = eb.clone();
    bad_mode[mode] = 7;
    assert!(SpikeState::from_bytes(&bad_mode).is_err());
    let mut too_many = eb.clone();
    too_many[mode + 1..mode + 3].copy_from_slice(&u16::MAX.to_le_bytes());
    assert!(SpikeState::from_bytes(&too_many).is_err());
    let mut swapped = eb.clone();
    let first = mode + 3;
    swapped[first..first + 8].copy_from_slice(&9.0f64.to_le_bytes());
    assert!(SpikeState::from_bytes(&swapped).is_err());
}

proptest! {
    /// Arbitrary bytes and flipped bytes of a valid state never panic.
    #[test]
    fn spike_from_bytes_never_panics(noise in prop::collection::vec(any::<u8>(), 0..300), at in any::<usize>(), x in any::<u8>()) {
        let _ = SpikeState::from_bytes(&noise);
        let mut b = spikes_of(&sample(4, 2000, 9)).to_bytes();
        let i = at % b.len();
        b[i] ^= x | 1;
        if let Ok(s) = SpikeState::from_bytes(&b) {
            let _ = s.verdict();
        }
    }
}

fn close(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(x), Some(y)) => x == y || (x - y).abs() <= 1e-9 * (1.0 + x.abs().max(y.abs())),
        _ => false,
    }
}

fn points() -> impl Strategy<Value = Vec<(i64, f64)>> {
    prop::collection::vec(
        (
            0i64..(60 * USEC_PER_HOUR),
            prop_oneof![
                8 => -1000.0f64..1000.0,
                1 => Just(f64::NAN),
                1 => Just(f64::INFINITY),
            ],
        ),
        0..400,
    )
}

proptest! {
    /// Merging partial states equals one pass, and row order does not matter.
    #[test]
    fn merge_equals_single_pass(pts in points(), split in 0usize..400, seed in any::<u64>()) {
        let split = split.min(pts.len());
        let mut shuffled = pts.clone();
        let mut r = crate::rng::Rng::new(seed);
        for i in (1..shuffled.len()).rev() {
            let j = r.below(i as u64 + 1) as usize;
            shuffled.swap(i, j);
        }
        let run = |ps: &[(i64, f64)]| {
            let mut v = VarianceState::new(VarianceParams::default()).unwrap();
            let mut s = SpikeState::new(SpikeParams::default()).unwrap();
            let mut t = TrendState::new(TrendParams::default()).unwrap();
            for &(ts, x) in ps {
                v.add(T0 + ts, x);
                s.add(T0 + ts, x);
                t.add(T0 + ts, x);
            }
            (v, s, t)
        };
        let (v1, s1, t1) = run(&pts);
        let (mut va, mut sa, mut ta) = run(&shuffled[..split]);
        let (vb, sb, tb) = run(&shuffled[split..]);
        // Through the byte codec, as parallel workers do.
        let vb = VarianceState::from_bytes(&vb.to_bytes()).unwrap();
        let sb = SpikeState::from_bytes(&sb.to_bytes()).unwrap();
        let tb = TrendState::from_bytes(&tb.to_bytes()).unwrap();
        va.merge(&vb).unwrap();
        sa.merge(&sb).unwrap();
        ta.merge(&tb).unwrap();

        let (x, y) = (v1.verdict(), va.verdict());
        prop_assert_eq!(x.windows, y.windows);
        prop_assert_eq!((x.points, x.skipped), (y.points, y.skipped));
        prop_assert!(close(x.first_variance, y.first_variance));
        prop_assert!(close(x.last_variance, y.last_variance));
        prop_assert!(close(x.ratio, y.ratio));

        let (x, y) = (s1.verdict(), sa.verdict());
        prop_assert_eq!((x.points, x.max, x.max_at, x.skipped), (y.points, y.max, y.max_at, y.skipped));
        prop_assert!(close(x.mean, y.mean) && close(x.stddev, y.stddev));
        // Each count is within its bound of the exact count (at its own threshold, which may
        // differ in the last bits); a value within rounding of the threshold can differ too.
        let valid: Vec<f64> = pts.iter().map(|p| p.1).filter(|v| crate::usable_value(*v)).collect();
        for v in [&x, &y] {
            if let Some(thr) = v.threshold {
                let exact = reference_count(&valid, thr, v.stddev.unwrap());
                prop_assert!(v.count.abs_diff(exact) <= v.count_bound + 1, "{:?} exact {}", v, exact);
                if valid_distinct(&valid) <= SPIKE_EXACT {
                    prop_assert_eq!(v.count_bound, 0);
                }
            }
        }

        let (x, y) = (t1.verdict(), ta.verdict());
        prop_assert_eq!((x.points, x.first_at, x.last_at), (y.points, y.first_at, y.last_at));
        // The slope is ill-conditioned when times nearly coincide; the fitted values at the
        // first and last time are the well-conditioned quantities (values are within ±1000).
        let near = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => (a - b).abs() <= 1e-6,
            (None, None) => true,
            _ => false,
        };
        prop_assert_eq!(x.slope_per_hour.is_some(), y.slope_per_hour.is_some());
        prop_assert!(near(x.fitted_start, y.fitted_start), "{:?} {:?}", x, y);
        prop_assert!(near(x.fitted_end, y.fitted_end), "{:?} {:?}", x, y);
    }

    /// Trend slope agrees with a two-pass textbook least squares.
    #[test]
    fn trend_matches_two_pass(pts in prop::collection::vec((0i64..(48 * USEC_PER_HOUR), -100.0f64..100.0), 3..200)) {
        let mut t = TrendState::new(TrendParams::default()).unwrap();
        for &(ts, x) in &pts { t.add(T0 + ts, x); }
        let xs: Vec<f64> = pts.iter().map(|p| p.0 as f64 * 1e-6).collect();
        let ys: Vec<f64> = pts.iter().map(|p| p.1).collect();
        let n = xs.len() as f64;
        let mx = xs.iter().sum::<f64>() / n;
        let my = ys.iter().sum::<f64>() / n;
        let sxx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
        let sxy: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - mx) * (y - my)).sum();
        let v = t.verdict();
        if sxx > 1e-6 {
            let slope = sxy / sxx * 3600.0;
            let got = v.slope_per_hour.unwrap();
            prop_assert!((got - slope).abs() <= 1e-7 * (1.0 + slope.abs()), "{} vs {}", got, slope);
        }
    }

    /// Window variances agree with a two-pass sample variance.
    #[test]
    fn window_variance_matches_two_pass(xs in prop::collection::vec(-1e6f64..1e6, 2..300)) {
        let mut v = VarianceState::new(VarianceParams::default()).unwrap();
        for (i, x) in xs.iter().enumerate() { v.add(T0 + i as i64 * 1000, *x); }
        let got = v.verdict().first_variance.unwrap();
        let want = var_samp(&xs);
        prop_assert!((got - want).abs() <= 1e-9 * (1.0 + want));
    }

    /// No input panics, and risks stay in [0, 1].
    #[test]
    fn never_panics_and_risk_in_range(pts in prop::collection::vec((any::<i64>(), any::<f64>()), 0..100)) {
        let mut v = VarianceState::new(VarianceParams::default()).unwrap();
        let mut s = SpikeState::new(SpikeParams::default()).unwrap();
        let mut t = TrendState::new(TrendParams::default()).unwrap();
        for &(ts, x) in &pts {
            v.add(ts, x);
            s.add(ts, x);
            t.add(ts, x);
        }
        for r in [v.verdict().risk, s.verdict().risk, t.verdict().risk] {
            prop_assert!((0.0..=1.0).contains(&r));
        }
        let _ = (variance_summary(&v.verdict()), spike_summary(&s.verdict(), ""), trend_summary(&t.verdict()));
    }
}
