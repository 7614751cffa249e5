//! `coherence-ingest simulate`: the flight simulator, written with COPY, idempotent.

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use coherence_core::sim::{SimConfig, DEFAULT_START_US, METRICS};
use futures_util::pin_mut;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

#[derive(clap::Args, Debug, Clone)]
pub struct SimulateArgs {
    /// Random seed; the same seed gives the same rows.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,

    /// Number of hosts: host-healthy, host-stressed, then host-0003... alternating profiles.
    #[arg(long, default_value_t = 2)]
    pub hosts: u32,

    /// Hours of data per series.
    #[arg(long, default_value_t = 48.0)]
    pub hours: f64,

    /// Seconds between samples (timestamps get a little jitter).
    #[arg(long, default_value_t = 60)]
    pub interval: u32,

    /// Start time (RFC 3339). The default puts the error burst at 2025-12-13 04:10 UTC, as in
    /// the seed's narrative.
    #[arg(long, value_parser = parse_time)]
    pub start: Option<DateTime<Utc>>,

    /// Approximate total number of metric rows to generate (for benchmarks); sets --hours from
    /// --hosts and --interval. E.g. --hosts 334 --scale 10000000 is ~10M rows over 1,002 series.
    #[arg(long)]
    pub scale: Option<u64>,

    /// Print what would be generated and exit without connecting.
    #[arg(long)]
    pub dry_run: bool,
}

fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("expected RFC 3339, e.g. 2025-12-11T08:00:00Z ({e})"))
}

pub fn config(args: &SimulateArgs) -> Result<SimConfig> {
    let mut cfg = SimConfig {
        seed: args.seed,
        hosts: args.hosts,
        start_us: args
            .start
            .map(|t| t.timestamp_micros())
            .unwrap_or(DEFAULT_START_US),
        hours: args.hours,
        interval_secs: args.interval,
    };
    if let Some(rows) = args.scale {
        if rows == 0 {
            bail!("--scale must be at least 1 row");
        }
        if cfg.hosts == 0 || cfg.interval_secs == 0 {
            bail!("--hosts and --interval must be at least 1");
        }
        let series = cfg.hosts as f64 * METRICS.len() as f64;
        cfg.hours = (rows as f64 / series).ceil() * cfg.interval_secs as f64 / 3600.0;
    }
    cfg.validate().map_err(anyhow::Error::msg)?;
    Ok(cfg)
}

fn systime(us: i64) -> SystemTime {
    if us >= 0 {
        UNIX_EPOCH + Duration::from_micros(us as u64)
    } else {
        UNIX_EPOCH - Duration::from_micros(us.unsigned_abs())
    }
}

struct Progress {
    enabled: bool,
    total: u64,
    done: u64,
    last: Instant,
    started: Instant,
}

impl Progress {
    fn new(total: u64) -> Self {
        let now = Instant::now();
        Progress {
            enabled: std::io::stderr().is_terminal(),
            total,
            done: 0,
            last: now,
            started: now,
        }
    }
    fn add(&mut self, n: u64) {
        self.done += n;
        if self.enabled && self.last.elapsed() > Duration::from_millis(200) {
            self.last = Instant::now();
            let secs = self.started.elapsed().as_secs_f64().max(1e-9);
            eprint!(
                "\r  simulate: {}/{} rows ({:.0}%), {:.0} rows/s   ",
                self.done,
                self.total,
                100.0 * self.done as f64 / self.total.max(1) as f64,
                self.done as f64 / secs
            );
            let _ = std::io::stderr().flush();
        }
    }
    fn finish(&self) {
        if self.enabled {
            eprint!("\r{:70}\r", "");
        }
    }
}

pub async fn run(url: Option<&str>, args: SimulateArgs) -> Result<()> {
    let cfg = config(&args)?;
    let total = cfg.total_metric_rows();
    let span = format!(
        "{} hosts, {:.1}h from {} every {}s, seed {}",
        cfg.hosts,
        cfg.hours,
        coherence_core::format_utc_minute(cfg.start_us),
        cfg.interval_secs,
        cfg.seed
    );
    if args.dry_run {
        println!(
            "simulate (dry run): {total} metric rows over {} series; {span}",
            cfg.hosts * 3
        );
        return Ok(());
    }
    let mut client = crate::db::connect(url).await?;
    let started = Instant::now();
    let tx = client.transaction().await?;
    tx.batch_execute(
        "CREATE TEMP TABLE coherence_sim_metrics (host text, metric_name text, value float8, ts timestamptz) ON COMMIT DROP;
         CREATE TEMP TABLE coherence_sim_events (ts timestamptz, host text, service text, severity text,
             metric text, value float8, source_id text, message text) ON COMMIT DROP;",
    )
    .await?;

    // Metrics: binary COPY into a staging table, then one INSERT ... ON CONFLICT DO NOTHING.
    let sink = tx
        .copy_in(
            "COPY coherence_sim_metrics (host, metric_name, value, ts) FROM STDIN (FORMAT binary)",
        )
        .await?;
    let writer = BinaryCopyInWriter::new(
        sink,
        &[Type::TEXT, Type::TEXT, Type::FLOAT8, Type::TIMESTAMPTZ],
    );
    pin_mut!(writer);
    let mut progress = Progress::new(total);
    for h in 0..cfg.hosts {
        let host = cfg.host_name(h);
        for metric in METRICS {
            let series = cfg.series(h, metric);
            for p in &series {
                let ts = systime(p.ts_us);
                let row: [&(dyn ToSql + Sync); 4] = [&host, &metric, &p.value, &ts];
                writer
                    .as_mut()
                    .write(&row)
                    .await
                    .context("COPY of metrics failed")?;
            }
            progress.add(series.len() as u64);
        }
    }
    writer.finish().await.context("COPY of metrics failed")?;
    progress.finish();
    let new_metrics = tx
        .execute(
            "INSERT INTO coherence.metrics (host, metric_name, value, \"timestamp\")
             SELECT host, metric_name, value, ts FROM coherence_sim_metrics
             ON CONFLICT DO NOTHING",
            &[],
        )
        .await?;

    // Events.
    let sink = tx
        .copy_in(
            "COPY coherence_sim_events (ts, host, service, severity, metric, value, source_id, message)
             FROM STDIN (FORMAT binary)",
        )
        .await?;
    let writer = BinaryCopyInWriter::new(
        sink,
        &[
            Type::TIMESTAMPTZ,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::FLOAT8,
            Type::TEXT,
            Type::TEXT,
        ],
    );
    pin_mut!(writer);
    let mut events = 0u64;
    for h in 0..cfg.hosts {
        for e in cfg.events(h) {
            let ts = systime(e.ts_us);
            let row: [&(dyn ToSql + Sync); 8] = [
                &ts,
                &e.host,
                &e.service,
                &e.severity,
                &e.metric,
                &e.value,
                &e.source_id,
                &e.message,
            ];
            writer
                .as_mut()
                .write(&row)
                .await
                .context("COPY of events failed")?;
            events += 1;
        }
    }
    writer.finish().await.context("COPY of events failed")?;
    let new_events = tx
        .execute(
            "INSERT INTO coherence.signal_events
                 (ts, host, service, fingerprint, severity, metric, value, synthetic, source, source_id, message)
             SELECT ts, host, service, host || ':' || metric, severity, metric, value, true,
                    'simulator', source_id, message
               FROM coherence_sim_events
             ON CONFLICT (source, source_id) DO NOTHING",
            &[],
        )
        .await?;
    tx.commit().await.context("commit failed")?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "simulate: {total} metric rows ({new_metrics} new), {events} events ({new_events} new); {span}; {secs:.1}s"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: SimulateArgs,
    }

    fn args(v: &[&str]) -> SimulateArgs {
        T::try_parse_from(std::iter::once("x").chain(v.iter().copied()))
            .unwrap()
            .a
    }

    #[test]
    fn defaults_are_the_seed_scenario() {
        let c = config(&args(&[])).unwrap();
        assert_eq!(
            (c.hosts, c.hours, c.interval_secs, c.seed),
            (2, 48.0, 60, 42)
        );
        assert_eq!(c.total_metric_rows(), 2 * 3 * 2880);
    }

    #[test]
    fn scale_sets_hours() {
        let c = config(&args(&["--hosts", "334", "--scale", "10000000"])).unwrap();
        let rows = c.total_metric_rows();
        assert!((10_000_000..10_010_000).contains(&rows), "{rows}");
    }

    #[test]
    fn bad_values_are_clear_errors() {
        assert!(config(&args(&["--hosts", "0"])).is_err());
        assert!(config(&args(&["--hours=-1"])).is_err());
        assert!(config(&args(&["--scale", "0"])).is_err());
        let e = T::try_parse_from(["x", "--start", "yesterday"])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("RFC 3339"), "{e}");
    }

    #[test]
    fn start_is_honoured() {
        let c = config(&args(&["--start", "2026-01-01T00:00:00Z"])).unwrap();
        assert_eq!(c.start_us, 1_767_225_600_000_000);
    }
}
