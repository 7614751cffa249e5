//! The collective detector alone on SMD (no database): events per machine scored against the
//! labelled segments with strict windows (±3 rows), for quick checks of its settings.
//!
//!   cargo run --release -p coherence-core --example smd_collective -- ../shared/datasets/smd
//!
//! Settings from the environment: COH_CW (window), COH_CT (threshold), COH_CM (member_u),
//! COH_CV (moving), COH_CC (clip). The full protocol with incidents is `make eval-smd`.

use coherence_core::events::collective::{collective_events_with, CollectiveParams};
use coherence_core::events::EventParams;
use std::collections::BTreeSet;

fn env<T: std::str::FromStr>(k: &str, d: T) -> T {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

fn main() {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "../shared/datasets/smd".into());
    let d = CollectiveParams::default();
    let cp = CollectiveParams {
        window: env("COH_CW", d.window),
        threshold: env("COH_CT", d.threshold),
        member_u: env("COH_CM", d.member_u),
        moving: env("COH_CV", d.moving),
        clip: env("COH_CC", d.clip),
        ..d
    };
    const MIN: i64 = 60_000_000;
    let t0: i64 = 1_767_225_600_000_000; // 2026-01-01
    let (mut segs, mut found, mut f1s, mut hrs, mut false_ev, mut days) =
        (0usize, 0usize, 0.0, 0.0, 0usize, 0.0);
    let mut machines: Vec<String> = std::fs::read_dir(format!("{dir}/test"))
        .expect("SMD test dir")
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    machines.sort();
    for m in machines {
        let text = std::fs::read_to_string(format!("{dir}/test/{m}")).unwrap();
        let rows: Vec<Vec<f64>> = text
            .lines()
            .map(|l| l.split(',').map(|v| v.parse().unwrap()).collect())
            .collect();
        let cols = rows[0].len();
        let series: Vec<Vec<(i64, f64)>> = (0..cols)
            .map(|c| {
                rows.iter()
                    .enumerate()
                    .map(|(r, v)| (t0 + r as i64 * MIN, v[c]))
                    .collect()
            })
            .collect();
        let p = EventParams {
            min_risk: 0.0,
            ..EventParams::default()
        };
        let ev = collective_events_with(&series, &p, &cp, &mut || {});
        let labels = std::fs::read_to_string(format!("{dir}/interpretation_label/{m}")).unwrap();
        let segments: Vec<(i64, i64, BTreeSet<usize>)> = labels
            .lines()
            .map(|l| {
                let (range, ms) = l.split_once(':').unwrap();
                let (a, b) = range.split_once('-').unwrap();
                let set = ms
                    .split(',')
                    .map(|x| x.trim().parse::<usize>().unwrap() - 1)
                    .collect();
                (
                    a.parse::<i64>().unwrap() - 3,
                    b.parse::<i64>().unwrap() + 2,
                    set,
                )
            })
            .collect();
        let row = |t: i64| (t - t0) / MIN;
        let min_r: f64 = env("COH_MINR", 0.2);
        let kept: Vec<_> = ev.iter().filter(|e| e.risk >= min_r).collect();
        for e in &kept {
            if !segments
                .iter()
                .any(|(a, b, _)| row(e.started_at) <= *b && row(e.ended_at) >= *a)
            {
                false_ev += 1;
            }
        }
        let (mut mf, mut mseg) = (0, 0);
        for (a, b, set) in &segments {
            segs += 1;
            mseg += 1;
            let over: Vec<_> = kept
                .iter()
                .filter(|e| row(e.started_at) <= *b && row(e.ended_at) >= *a)
                .collect();
            if over.is_empty() {
                continue;
            }
            found += 1;
            mf += 1;
            let mut ranked: Vec<usize> = Vec::new();
            for e in &over {
                for mm in &e.members {
                    if !ranked.contains(&mm.metric) {
                        ranked.push(mm.metric);
                    }
                }
            }
            let got: BTreeSet<usize> = ranked.iter().copied().collect();
            let tp = got.intersection(set).count() as f64;
            let (pr, rc) = (tp / got.len() as f64, tp / set.len() as f64);
            if tp > 0.0 {
                f1s += 2.0 * pr * rc / (pr + rc);
            }
            let k = set.len().min(ranked.len());
            hrs += ranked[..k].iter().filter(|x| set.contains(x)).count() as f64 / set.len() as f64;
        }
        days += rows.len() as f64 / 1440.0;
        eprintln!(
            "{m}: {} events (risk>=0.2: {}), {mf}/{mseg} segments found",
            ev.len(),
            kept.len()
        );
    }
    println!(
        "segments {segs} found {found} recall {:.3} setF1 {:.3} HR {:.3} false events/day {:.2}",
        found as f64 / segs as f64,
        f1s / segs as f64,
        hrs / segs as f64,
        false_ev as f64 / days
    );
}
