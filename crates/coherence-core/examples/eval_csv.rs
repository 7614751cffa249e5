//! Development aid: run `coherence_core::events::analyze` (the detector behind
//! `coherence.detect_events`, default parameters) on a folder tree of labelled CSVs
//! (TimeStamp,Value,Label) without PostgreSQL, and print the events as CSV for
//! `eval/score.py`. `make eval` is the official, in-database evaluation; this is the same
//! detector in-process for quick iteration:
//!
//!   cargo run --release -p coherence-core --example eval_csv -- eval/cloud-monitoring/data > /tmp/dev.csv
//!   target/eval-venv/bin/python eval/score.py eval/cloud-monitoring/data /tmp/dev.csv

use coherence_core::events::{analyze, EventParams};

fn parse_ts(s: &str) -> Option<i64> {
    let s = s.trim().trim_matches('"');
    let num = |a: usize, l: usize| s.get(a..a + l)?.parse::<i64>().ok();
    let days = coherence_core::days_from_civil(num(0, 4)?, num(5, 2)? as u32, num(8, 2)? as u32);
    Some(((days * 86400) + num(11, 2)? * 3600 + num(14, 2)? * 60 + num(17, 2)?) * 1_000_000)
}

/// Defaults, with development overrides from the environment (COH_MIN_RISK, COH_THRESHOLD,
/// COH_CUSUM_K, COH_CUSUM_H, COH_WINDOW) for sensitivity checks; `make eval` uses none.
fn params() -> EventParams {
    let mut p = EventParams::default();
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<f64>().ok());
    if let Some(v) = env("COH_MIN_RISK") {
        p.min_risk = v;
    }
    if let Some(v) = env("COH_THRESHOLD") {
        p.threshold = v;
    }
    if let Some(v) = env("COH_CUSUM_K") {
        p.cusum_k = v;
    }
    if let Some(v) = env("COH_CUSUM_H") {
        p.cusum_h = v;
    }
    if let Some(v) = env("COH_WINDOW") {
        p.window = v as usize;
    }
    p
}

fn main() {
    let root = std::env::args().nth(1).expect("usage: eval_csv DATA_DIR");
    let mut files = Vec::new();
    for d in std::fs::read_dir(&root).expect("data dir") {
        let d = d.unwrap().path();
        if d.is_dir() {
            for f in std::fs::read_dir(&d).unwrap() {
                let f = f.unwrap().path();
                if f.extension().is_some_and(|e| e == "csv") {
                    files.push(f);
                }
            }
        }
    }
    files.sort();
    println!("folder,file,start,end,risk,kind");
    for f in files {
        let folder = f
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .to_string();
        let name = f.file_stem().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(&f).unwrap();
        let pts: Vec<(i64, f64)> = text
            .lines()
            .skip(1)
            .filter_map(|l| {
                let mut it = l.split(',').map(|f| f.trim().trim_matches('"'));
                let t = parse_ts(it.next()?)?;
                Some((t, it.next()?.parse::<f64>().ok()?))
            })
            .collect();
        let a = analyze(&pts, &params());
        if let Some(p) = &a.season.period {
            eprintln!("{folder}/{name}: {} period (acf {:.2})", p.name, p.acf);
        }
        for e in a.events {
            println!(
                "{folder},{name},{},{},{:.4},{}",
                e.started_at / 1_000_000,
                e.ended_at / 1_000_000,
                e.risk,
                e.kind
            );
        }
    }
}
