//! Development aid: time `coherence_core::events::analyze` (default parameters) on synthetic
//! series shaped like `make bench`'s generate_series table (uniform noise around a level),
//! in-process, for profiling the detector without PostgreSQL:
//!
//!   cargo run --release -p coherence-core --example prof_analyze -- 10000 200
//!   perf record -g target/release/examples/prof_analyze 10000 200
//!
//! Arguments: points a series (10000), series (100). Prints the time a point.
use coherence_core::events::{analyze, EventParams};
fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().unwrap())
        .unwrap_or(10000);
    let reps: usize = std::env::args()
        .nth(2)
        .map(|s| s.parse().unwrap())
        .unwrap_or(100);
    let mut seed = 12345u64;
    let mut rnd = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 11) as f64 / (1u64 << 53) as f64
    };
    let p = EventParams::default();
    let t = std::time::Instant::now();
    let mut ev = 0;
    for r in 0..reps {
        let pts: Vec<(i64, f64)> = (0..n)
            .map(|i| {
                (
                    1_767_225_600_000_000 + i as i64 * 60_000_000,
                    50.0 + 10.0 * (r % 7) as f64 + 5.0 * rnd(),
                )
            })
            .collect();
        ev += analyze(&pts, &p).events.len();
    }
    let el = t.elapsed().as_secs_f64();
    println!(
        "{reps} series x {n}: {:.3} s, {:.1} ns/pt, events {ev}",
        el,
        el * 1e9 / (n * reps) as f64
    );
}
