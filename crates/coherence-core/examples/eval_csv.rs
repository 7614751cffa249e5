//! Development aid: score `detect_events` and the seed's localized rules on a folder tree of
//! labelled CSVs (TimeStamp,Value,Label) without PostgreSQL. `make eval` is the official,
//! in-database evaluation; this runs the same definitions in-process for quick iteration.
//!
//!   cargo run --release -p coherence-core --example eval_csv -- ../shared/datasets/cloud-monitoring/data

use coherence_core::events::{
    daily_season, detect_events, volatility_events, EventParams, VolatilityParams,
};
use std::collections::BTreeMap;
use std::path::Path;

fn parse_ts(s: &str) -> i64 {
    let s = s.trim().trim_matches('"');
    let b = s.as_bytes();
    let num = |a: usize, l: usize| s[a..a + l].parse::<i64>().unwrap();
    let (y, mo, d, h, mi, se) = (
        num(0, 4),
        num(5, 2),
        num(8, 2),
        num(11, 2),
        num(14, 2),
        num(17, 2),
    );
    let _ = b;
    let days = coherence_core::days_from_civil(y, mo as u32, d as u32);
    ((days * 86400) + h * 3600 + mi * 60 + se) * 1_000_000
}

#[derive(Default, Clone, Copy)]
struct Score {
    events: u64,
    matched_events: u64,
    segments: u64,
    found_segments: u64,
    points: u64,
    false_events_unlabelled: u64,
    points_unlabelled: u64,
}

impl Score {
    fn add(&mut self, o: &Score) {
        self.events += o.events;
        self.matched_events += o.matched_events;
        self.segments += o.segments;
        self.found_segments += o.found_segments;
        self.points += o.points;
        self.false_events_unlabelled += o.false_events_unlabelled;
        self.points_unlabelled += o.points_unlabelled;
    }
    fn prf(&self) -> (f64, f64, f64, f64) {
        let p = if self.events > 0 {
            self.matched_events as f64 / self.events as f64
        } else {
            0.0
        };
        let r = if self.segments > 0 {
            self.found_segments as f64 / self.segments as f64
        } else {
            0.0
        };
        let f = if p + r > 0.0 {
            2.0 * p * r / (p + r)
        } else {
            0.0
        };
        let fa = 1000.0 * (self.events - self.matched_events) as f64 / self.points.max(1) as f64;
        (p, r, f, fa)
    }
}

fn score(ts: &[i64], labels: &[u8], events: &[(i64, i64)]) -> Score {
    let mut segs = Vec::new();
    let mut i = 0;
    while i < labels.len() {
        if labels[i] == 1 {
            let s = i;
            while i + 1 < labels.len() && labels[i + 1] == 1 {
                i += 1;
            }
            segs.push((ts[s], ts[i]));
        }
        i += 1;
    }
    let overlaps = |e: &(i64, i64), g: &(i64, i64)| e.0 <= g.1 && e.1 >= g.0;
    let matched = events
        .iter()
        .filter(|e| segs.iter().any(|g| overlaps(e, g)))
        .count() as u64;
    let found = segs
        .iter()
        .filter(|g| events.iter().any(|e| overlaps(e, g)))
        .count() as u64;
    Score {
        events: events.len() as u64,
        matched_events: matched,
        segments: segs.len() as u64,
        found_segments: found,
        points: ts.len() as u64,
        false_events_unlabelled: if segs.is_empty() {
            events.len() as u64
        } else {
            0
        },
        points_unlabelled: if segs.is_empty() { ts.len() as u64 } else { 0 },
    }
}

fn seed_rules(ts: &[i64], v: &[f64]) -> Vec<(i64, i64)> {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let sd = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    let mut ev: Vec<(i64, i64)> = ts
        .iter()
        .zip(v)
        .filter(|(_, x)| **x > mean + 2.5 * sd)
        .map(|(t, _)| (*t, *t))
        .collect();
    // 4h windows, variance > 1.5x the previous window's.
    let w = 4 * 3_600_000_000i64;
    let origin = 946_684_800_000_000i64;
    let mut wins: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
    for (t, x) in ts.iter().zip(v) {
        wins.entry(origin + (t - origin).div_euclid(w) * w)
            .or_default()
            .push(*x);
    }
    let var = |xs: &Vec<f64>| {
        if xs.len() < 2 {
            return None;
        }
        let m = xs.iter().sum::<f64>() / xs.len() as f64;
        Some(xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (xs.len() - 1) as f64)
    };
    let ws: Vec<(i64, Option<f64>)> = wins.iter().map(|(k, xs)| (*k, var(xs))).collect();
    for pair in ws.windows(2) {
        if let (Some(a), Some(b)) = (pair[0].1, pair[1].1) {
            if b > 1.5 * a {
                ev.push((pair[1].0, pair[1].0 + w - 1));
            }
        }
    }
    ev
}

fn main() {
    let root = std::env::args().nth(1).expect("usage: eval_csv DATA_DIR");
    let mut folders: BTreeMap<String, (Score, Score)> = BTreeMap::new();
    let mut dirs: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    dirs.sort();
    for dir in dirs.iter().filter(|d| d.is_dir()) {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "csv"))
            .collect();
        files.sort();
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            let mut rows: Vec<(i64, f64, u8)> = text
                .lines()
                .skip(1)
                .filter(|l| !l.trim().is_empty())
                .map(|l| {
                    let mut it = l.split(',');
                    let t = parse_ts(it.next().unwrap());
                    let v: f64 = it
                        .next()
                        .unwrap()
                        .trim()
                        .trim_matches('"')
                        .parse()
                        .unwrap_or(f64::NAN);
                    let lab: u8 = it
                        .next()
                        .unwrap_or("0")
                        .trim()
                        .trim_matches('"')
                        .parse()
                        .unwrap_or(0);
                    (t, v, lab)
                })
                .collect();
            rows.sort_by_key(|r| r.0);
            let ts: Vec<i64> = rows.iter().map(|r| r.0).collect();
            let v: Vec<f64> = rows.iter().map(|r| r.1).collect();
            let lab: Vec<u8> = rows.iter().map(|r| r.2).collect();
            let pts: Vec<(i64, f64)> = rows.iter().map(|r| (r.0, r.1)).collect();
            let envf = |k: &str, d: f64| {
                std::env::var(k)
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(d)
            };
            let dp = EventParams::default();
            let params = EventParams {
                season: if std::env::var("NOSEASON").is_ok() {
                    0
                } else {
                    daily_season(&ts)
                },
                threshold: envf("THR", dp.threshold),
                window: envf("WIN", dp.window as f64) as usize,
                merge_gap: envf("GAP", dp.merge_gap as f64) as usize,
                min_scale_frac: envf("FRAC", dp.min_scale_frac),
                ..dp
            };
            let mut ours: Vec<(i64, i64)> = detect_events(&pts, &params)
                .iter()
                .map(|e| (e.started_at, e.ended_at))
                .collect();
            if std::env::var("NOVOL").is_err() {
                let vp = VolatilityParams {
                    ratio: envf("VOLR", 3.0),
                    ..VolatilityParams::default()
                };
                ours.extend(
                    volatility_events(&pts, &vp)
                        .iter()
                        .map(|e| (e.started_at, e.ended_at)),
                );
            }
            let seed = seed_rules(&ts, &v);
            let folder = dir.file_name().unwrap().to_string_lossy().to_string();
            let e = folders.entry(folder).or_default();
            e.0.add(&score(&ts, &lab, &seed));
            e.1.add(&score(&ts, &lab, &ours));
            if std::env::var("VERBOSE").is_ok() {
                let s = score(&ts, &lab, &ours);
                let (p, r, f1, fa) = s.prf();
                println!(
                    "  {:<40} ev {:>4} seg {:>4} P {:.2} R {:.2} F1 {:.2} FA {:.2}",
                    Path::new(&f).file_name().unwrap().to_string_lossy(),
                    s.events,
                    s.segments,
                    p,
                    r,
                    f1,
                    fa
                );
            }
        }
    }
    println!(
        "{:<36} | {:>5} {:>5} {:>5} {:>6} {:>5} | {:>5} {:>5} {:>5} {:>6} {:>5}",
        "folder", "P", "R", "F1", "FA/1k", "unl", "P", "R", "F1", "FA/1k", "unl"
    );
    let (mut ts, mut to) = (Score::default(), Score::default());
    for (k, (s, o)) in &folders {
        ts.add(s);
        to.add(o);
        let (a, b, c, d) = s.prf();
        let (e, f, g, h) = o.prf();
        println!("{k:<36} | {a:5.2} {b:5.2} {c:5.2} {d:6.2} {:>5} | {e:5.2} {f:5.2} {g:5.2} {h:6.2} {:>5}", s.false_events_unlabelled, o.false_events_unlabelled);
    }
    let (a, b, c, d) = ts.prf();
    let (e, f, g, h) = to.prf();
    println!(
        "{:<36} | {a:5.2} {b:5.2} {c:5.2} {d:6.2} {:>5} | {e:5.2} {f:5.2} {g:5.2} {h:6.2} {:>5}",
        "ALL", ts.false_events_unlabelled, to.false_events_unlabelled
    );
}
