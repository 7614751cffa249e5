//! The flight simulator: the seed's demo scenario, seeded and reproducible.
//!
//! Default scenario (48 hours, one point a minute with a little jitter, `cpu`, `memory`, `disk`
//! in percent):
//! * `host-healthy`: steady CPU (~30%, daily wave, constant noise), flat memory and disk.
//! * `host-stressed`: CPU noise whose σ doubles over the run (variance ~4×), ~45 CPU spikes
//!   (75–95%) in the second half with the largest (94.98%) three minutes before the error burst, a
//!   memory leak from ~38% to ~88% (+130%), disk creeping up ~10%, and a burst of 13 error
//!   events three minutes after the CPU peak.
//!
//! With more than two hosts, hosts alternate between the two profiles (`host-0003`, ...).
//! Every series has its own random stream derived from (seed, host, metric), so rows do not
//! depend on how many hosts are generated or in which order.

use crate::rng::{fnv1a, Rng};
use crate::{USEC_PER_HOUR, USEC_PER_SEC};

/// 2025-12-11 08:00:00 UTC: the default start, so the burst lands at 2025-12-13 04:10 UTC.
pub const DEFAULT_START_US: i64 = 1_765_440_000 * USEC_PER_SEC;

/// Metrics every simulated host reports.
pub const METRICS: [&str; 3] = ["cpu", "memory", "disk"];

#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    pub hosts: u32,
    pub start_us: i64,
    pub hours: f64,
    pub interval_secs: u32,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 42,
            hosts: 2,
            start_us: DEFAULT_START_US,
            hours: 48.0,
            interval_secs: 60,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    Healthy,
    Stressed,
}

/// One metric sample.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    pub ts_us: i64,
    pub value: f64,
}

/// One signal event (error burst members and routine info events).
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub ts_us: i64,
    pub host: String,
    pub service: String,
    pub severity: &'static str,
    pub metric: &'static str,
    pub value: Option<f64>,
    /// Stable id so re-running the simulator inserts nothing new.
    pub source_id: String,
    pub message: String,
}

impl SimConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.hosts == 0 {
            return Err("--hosts must be at least 1".into());
        }
        if !(self.hours.is_finite() && self.hours > 0.0 && self.hours <= 24.0 * 366.0 * 10.0) {
            return Err("--hours must be greater than 0 and at most 10 years".into());
        }
        if self.interval_secs == 0 {
            return Err("--interval must be at least 1 second".into());
        }
        Ok(())
    }

    pub fn points_per_series(&self) -> u64 {
        ((self.hours * 3600.0) / self.interval_secs as f64).floor() as u64
    }

    pub fn total_metric_rows(&self) -> u64 {
        self.points_per_series() * self.hosts as u64 * METRICS.len() as u64
    }

    pub fn end_us(&self) -> i64 {
        self.start_us + (self.hours * USEC_PER_HOUR as f64) as i64
    }

    /// Host names: `host-healthy`, `host-stressed`, then `host-0003`, `host-0004`, ...
    pub fn host_name(&self, i: u32) -> String {
        match i {
            0 => "host-healthy".into(),
            1 => "host-stressed".into(),
            _ => format!("host-{:04}", i + 1),
        }
    }

    pub fn profile(&self, i: u32) -> Profile {
        if i.is_multiple_of(2) {
            Profile::Healthy
        } else {
            Profile::Stressed
        }
    }

    /// Start of the error burst: hour 44h10m of 48 (scaled for other lengths), on a whole
    /// minute; 2025-12-13 04:10 UTC on the default dates.
    pub fn burst_us(&self) -> i64 {
        let at = self.start_us + (self.hours * (265.0 / 288.0) * USEC_PER_HOUR as f64) as i64;
        at - at.rem_euclid(60 * USEC_PER_SEC)
    }

    /// Peak resource pressure (the largest CPU spike): three minutes before the error burst.
    pub fn peak_us(&self) -> i64 {
        self.burst_us() - 3 * 60 * USEC_PER_SEC
    }

    fn stream(&self, host: &str, what: &str) -> Rng {
        let mut key = Vec::with_capacity(host.len() + what.len() + 9);
        key.extend_from_slice(&self.seed.to_le_bytes());
        key.extend_from_slice(host.as_bytes());
        key.push(0);
        key.extend_from_slice(what.as_bytes());
        Rng::new(fnv1a(&key))
    }

    /// The series of one host and metric, in time order.
    pub fn series(&self, host_idx: u32, metric: &str) -> Vec<Point> {
        let host = self.host_name(host_idx);
        let profile = self.profile(host_idx);
        let mut rng = self.stream(&host, metric);
        let n = self.points_per_series();
        let step = self.interval_secs as i64 * USEC_PER_SEC;
        // Jitter of up to ±20% of the interval (capped at ±5 s) keeps timestamps "minute-ish".
        let jitter = (step / 5).min(5 * USEC_PER_SEC);
        let span = (n.max(2) - 1) as f64;
        let peak = self.peak_us();
        // Host-specific offsets so hosts differ a little.
        let base_shift = rng.range(-3.0, 3.0);
        let phase = rng.range(0.0, std::f64::consts::TAU);

        // Spike plan for the stressed CPU: ~45 indices in the second half, the largest just
        // before the peak.
        let mut spikes: Vec<(u64, f64)> = Vec::new();
        if profile == Profile::Stressed && metric == "cpu" && n >= 20 {
            let half = n / 2;
            let peak_idx = ((peak - self.start_us) / step).clamp(0, n as i64 - 1) as u64;
            let count = (45.0 * (n as f64 / 2880.0).sqrt())
                .round()
                .clamp(1.0, 45.0 * 50.0) as u64;
            for _ in 0..count.saturating_sub(1) {
                let i = half + rng.below((peak_idx.saturating_sub(half)).max(1));
                spikes.push((i, rng.range(75.0, 93.0)));
            }
            spikes.push((peak_idx, 94.98));
            spikes.sort_by_key(|s| s.0);
        }

        let mut out = Vec::with_capacity(n as usize);
        let mut next_spike = 0usize;
        for i in 0..n {
            let frac = i as f64 / span; // 0 → 1 over the run
            let ts =
                self.start_us + i as i64 * step + (rng.range(-1.0, 1.0) * jitter as f64) as i64;
            let hours = (ts - self.start_us) as f64 / USEC_PER_HOUR as f64;
            let daily = (std::f64::consts::TAU * hours / 24.0 + phase).sin();
            let z = rng.normal();
            let v = match (profile, metric) {
                (Profile::Healthy, "cpu") => 30.0 + base_shift + 2.0 * daily + 3.0 * z,
                (Profile::Stressed, "cpu") => {
                    let sigma = 3.0 * (1.0 + frac); // σ doubles: variance ×4
                    let mut v = 35.0 + base_shift + 2.0 * daily + sigma * z;
                    while next_spike < spikes.len() && spikes[next_spike].0 <= i {
                        if spikes[next_spike].0 == i {
                            v = spikes[next_spike].1;
                        }
                        next_spike += 1;
                    }
                    v
                }
                (Profile::Healthy, "memory") => 45.0 + base_shift + 1.5 * z,
                // Leak: 38% → 88% linearly, a little sawtooth from GC, plus noise.
                (Profile::Stressed, "memory") => {
                    38.0 + 50.0 * frac + 1.2 * ((i % 97) as f64 / 97.0 - 0.5) + 1.0 * z
                }
                (Profile::Healthy, "disk") => 55.0 + base_shift + 1.0 * frac + 0.3 * z,
                (Profile::Stressed, "disk") => 60.0 + base_shift + 6.0 * frac + 0.3 * z,
                (_, _) => 50.0 + 5.0 * z,
            };
            out.push(Point {
                ts_us: ts,
                value: v.clamp(0.0, 100.0),
            });
        }
        out
    }

    /// Signal events of one host: a few routine info/warn events for every host, and for a
    /// stressed host a burst of 13 errors starting three minutes after peak CPU.
    pub fn events(&self, host_idx: u32) -> Vec<Event> {
        let host = self.host_name(host_idx);
        let mut rng = self.stream(&host, "events");
        let mut out = Vec::new();
        let total_us = (self.hours * USEC_PER_HOUR as f64) as i64;
        let routine = ((self.hours / 12.0).ceil() as i64).max(1);
        for k in 0..routine {
            let ts = self.start_us + (rng.uniform() * total_us as f64) as i64;
            out.push(Event {
                ts_us: ts,
                host: host.clone(),
                service: "deploy".into(),
                severity: "info",
                metric: "deploy",
                value: None,
                source_id: format!("sim:{}:{}:info:{}", self.seed, host, k),
                message: "routine deploy".into(),
            });
        }
        if self.profile(host_idx) == Profile::Stressed {
            let burst = self.burst_us();
            let mut ts = burst;
            for k in 0..13 {
                out.push(Event {
                    ts_us: ts,
                    host: host.clone(),
                    service: "api".into(),
                    severity: "error",
                    metric: "error",
                    value: None,
                    source_id: format!("sim:{}:{}:error:{}", self.seed, host, k),
                    message: "upstream request failed: 503".into(),
                });
                ts += (rng.range(5.0, 25.0) * USEC_PER_SEC as f64) as i64;
            }
        }
        out.sort_by_key(|e| e.ts_us);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::*;

    fn verdicts(cfg: &SimConfig, h: u32, m: &str) -> (VarianceVerdict, SpikeVerdict, TrendVerdict) {
        let mut v = VarianceState::new(VarianceParams::default()).unwrap();
        let mut s = SpikeState::new(SpikeParams::default()).unwrap();
        let mut t = TrendState::new(TrendParams::default()).unwrap();
        for p in cfg.series(h, m) {
            v.add(p.ts_us, p.value);
            s.add(p.ts_us, p.value);
            t.add(p.ts_us, p.value);
        }
        (v.verdict(), s.verdict(), t.verdict())
    }

    #[test]
    fn reproducible_and_seed_sensitive() {
        let a = SimConfig::default();
        let b = SimConfig {
            seed: 43,
            ..SimConfig::default()
        };
        assert_eq!(a.series(1, "cpu"), a.series(1, "cpu"));
        assert_eq!(a.events(1), a.events(1));
        assert_ne!(a.series(1, "cpu"), b.series(1, "cpu"));
        // A host's rows do not depend on how many hosts are generated.
        let many = SimConfig {
            hosts: 10,
            ..SimConfig::default()
        };
        assert_eq!(a.series(1, "memory"), many.series(1, "memory"));
    }

    #[test]
    fn default_scenario_shape() {
        let cfg = SimConfig::default();
        assert_eq!(cfg.points_per_series(), 2880);
        let cpu = cfg.series(1, "cpu");
        assert!(
            cpu.windows(2).all(|w| w[0].ts_us < w[1].ts_us),
            "strictly increasing times"
        );
        assert!(cpu.iter().all(|p| (0.0..=100.0).contains(&p.value)));
        let max = cpu.iter().map(|p| p.value).fold(f64::MIN, f64::max);
        assert_eq!(max, 94.98);
        let errors: Vec<_> = cfg
            .events(1)
            .into_iter()
            .filter(|e| e.severity == "error")
            .collect();
        assert_eq!(errors.len(), 13);
        assert_eq!(
            crate::format_utc_minute(errors[0].ts_us),
            "2025-12-13 04:10 UTC"
        );
        assert!(cfg.events(0).iter().all(|e| e.severity != "error"));
    }

    #[test]
    fn seed_verdicts_on_the_scenario() {
        let cfg = SimConfig::default();
        let (var, spk, _) = verdicts(&cfg, 1, "cpu");
        assert!(var.flagged && var.risk >= 0.9, "{var:?}");
        let r = var.ratio.unwrap();
        assert!((2.8..8.0).contains(&r), "variance ratio {r}");
        assert!(spk.flagged && spk.risk >= 0.9, "{spk:?}");
        assert!((40..=60).contains(&spk.count), "spikes {}", spk.count);
        let (_, _, tr) = verdicts(&cfg, 1, "memory");
        assert!(tr.flagged && tr.risk >= 0.9, "{tr:?}");
        let pct = tr.pct_change.unwrap();
        assert!((115.0..150.0).contains(&pct), "leak {pct}");
        for m in METRICS {
            let (v, s, t) = verdicts(&cfg, 0, m);
            assert!(
                v.risk < 0.5 && s.risk < 0.5 && t.risk < 0.5,
                "healthy {m}: {v:?} {s:?} {t:?}"
            );
            let (_, _, t) = verdicts(&cfg, 1, m);
            if m == "disk" {
                assert!(!t.flagged, "stressed disk creeps but is not a leak");
            }
        }
    }
}
