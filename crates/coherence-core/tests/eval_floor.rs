//! Guards the detection quality won so far: runs `analyze` with its defaults on the labelled
//! cloud-monitoring series (eval/cloud-monitoring) and fails when the headline figures of
//! `make eval`'s protocol fall below the floor recorded in eval/floor.txt.
//!
//! The protocol (a second implementation of eval/score.py's, which `make eval` runs in the
//! database): segments = maximal runs of label-1 points widened by max(3, ceil(1% of the
//! samples)) samples each side; events of one series closer than 3 sample intervals merge; a
//! segment is found when an event overlaps its widened span; precision = events overlapping a
//! widened segment / events on labelled series; false alarms = events per 1000 samples on the
//! series without labels.

use coherence_core::events::{analyze, EventParams};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../eval")
}

fn parse_ts(s: &str) -> Option<i64> {
    let num = |a: usize, l: usize| s.get(a..a + l)?.parse::<i64>().ok();
    let days = coherence_core::days_from_civil(num(0, 4)?, num(5, 2)? as u32, num(8, 2)? as u32);
    Some(((days * 86400) + num(11, 2)? * 3600 + num(14, 2)? * 60 + num(17, 2)?) * 1_000_000)
}

/// (timestamps of all rows, labels, finite points) of one CSV.
fn load(f: &Path) -> (Vec<i64>, Vec<u8>, Vec<(i64, f64)>) {
    let text = std::fs::read_to_string(f).unwrap();
    let (mut ts, mut labels, mut pts) = (Vec::new(), Vec::new(), Vec::new());
    for line in text.lines().skip(1) {
        let mut it = line.split(',').map(|x| x.trim().trim_matches('"'));
        let t = parse_ts(it.next().unwrap()).expect("timestamp");
        let v = it.next().unwrap_or("");
        let l = it.next().unwrap_or("0");
        ts.push(t);
        labels.push(u8::from(l == "1"));
        if let Ok(v) = v.parse::<f64>() {
            pts.push((t, v));
        }
    }
    (ts, labels, pts)
}

#[derive(Default, Debug)]
struct Tally {
    events: f64,
    matched: f64,
    segs: f64,
    found: f64,
    unl_events: f64,
    unl_points: f64,
}

fn floor() -> Vec<(String, f64)> {
    std::fs::read_to_string(root().join("floor.txt"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && l.contains('='))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.trim().to_string(), v.trim().parse().unwrap())
        })
        .collect()
}

#[test]
fn headline_figures_stay_at_or_above_the_recorded_floor() {
    let data = root().join("cloud-monitoring/data");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&data)
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .map(|f| f.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "csv"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 60, "the development set has 60 series");
    let mut t = Tally::default();
    let mut deciles = std::collections::BTreeSet::new();
    for f in &files {
        let (ts, labels, pts) = load(f);
        let n = ts.len();
        let tol = 3usize.max((0.01 * n as f64).ceil() as usize);
        let mut segs = Vec::new();
        let mut i = 0;
        while i < n {
            if labels[i] == 1 {
                let s = i;
                while i + 1 < n && labels[i + 1] == 1 {
                    i += 1;
                }
                segs.push((ts[s.saturating_sub(tol)], ts[(i + tol).min(n - 1)]));
            }
            i += 1;
        }
        let mut steps: Vec<i64> = ts.windows(2).map(|w| w[1] - w[0]).collect();
        steps.sort_unstable();
        let step = if steps.is_empty() {
            0.0
        } else if steps.len() % 2 == 1 {
            steps[steps.len() / 2] as f64
        } else {
            (steps[steps.len() / 2 - 1] + steps[steps.len() / 2]) as f64 / 2.0
        };
        let found = analyze(&pts, &EventParams::default()).events;
        deciles.extend(found.iter().map(|e| ((e.risk * 10.0) as u32).min(9)));
        let mut ev: Vec<(i64, i64)> = found.iter().map(|e| (e.started_at, e.ended_at)).collect();
        ev.sort();
        let mut merged: Vec<(i64, i64)> = Vec::new();
        for (s, e) in ev {
            match merged.last_mut() {
                Some(last) if ((s - last.1) as f64) < 3.0 * step => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        if segs.is_empty() {
            t.unl_events += merged.len() as f64;
            t.unl_points += n as f64;
        } else {
            let hit = |e: &(i64, i64), g: &(i64, i64)| e.0 <= g.1 && e.1 >= g.0;
            t.events += merged.len() as f64;
            t.matched += merged
                .iter()
                .filter(|e| segs.iter().any(|g| hit(e, g)))
                .count() as f64;
            t.segs += segs.len() as f64;
            t.found += segs
                .iter()
                .filter(|g| merged.iter().any(|e| hit(e, g)))
                .count() as f64;
        }
    }
    let p = t.matched / t.events;
    let r = t.found / t.segs;
    let f1 = 2.0 * p * r / (p + r);
    let fa = 1000.0 * t.unl_events / t.unl_points;
    eprintln!("eval: precision {p:.4} recall {r:.4} f1 {f1:.4} fa_per_1k {fa:.4} ({t:?})");
    // Risk ranks: it is spread over the deciles, not saturated at 1.
    assert!(deciles.len() >= 5, "risk uses only the deciles {deciles:?}");
    for (k, v) in floor() {
        match k.as_str() {
            "f1" => assert!(f1 >= v, "F1 {f1:.4} fell below the floor {v}"),
            "precision" => assert!(p >= v, "precision {p:.4} fell below the floor {v}"),
            "recall" => assert!(r >= v, "recall {r:.4} fell below the floor {v}"),
            "fa_per_1k_max" => assert!(fa <= v, "false alarms {fa:.4}/1k rose above {v}"),
            other => panic!("unknown floor key {other}"),
        }
    }
}
