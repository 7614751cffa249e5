//! `coherence-ingest prometheus` end to end against Debian's real Prometheus (2.42) scraping a
//! real node exporter (1.5), both started here on free loopback ports with throwaway data
//! directories: this machine's CPU and memory flow into coherence.metrics, per-core series stay
//! apart by their labels, a re-run adds nothing, and a CPU burn started by the test is an event.
//! Enabled with `--features integration`; needs `prometheus` and `prometheus-node-exporter`
//! (`make setup` installs them).
#![cfg(feature = "integration")]

mod common;

use common::*;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// A child process killed (and reaped) when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn(program: &str, args: &[String], log: &std::path::Path) -> Proc {
    let log = std::fs::File::create(log).unwrap();
    Proc(
        Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {program} ({e}): apt-get install -y prometheus prometheus-node-exporter (make setup does)")
            }),
    )
}

async fn get_json(url: &str) -> Option<serde_json::Value> {
    let r = reqwest::get(url).await.ok()?;
    if !r.status().is_success() {
        return None;
    }
    serde_json::from_slice(&r.bytes().await.ok()?).ok()
}

fn ingest(db: &str, cfg: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_coherence-ingest"))
        .env("DATABASE_URL", db)
        .arg("prometheus")
        .arg("--config")
        .arg(cfg)
        .args(args)
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_exporter_through_prometheus_into_coherence_and_a_cpu_burn_is_an_event() {
    let dir = std::env::temp_dir().join(format!("coherence-prom-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let (np, pp) = (free_port(), free_port());
    let _exporter = spawn(
        "prometheus-node-exporter",
        &[
            format!("--web.listen-address=127.0.0.1:{np}"),
            "--collector.disable-defaults".into(),
            "--collector.cpu".into(),
            "--collector.meminfo".into(),
        ],
        &dir.join("node-exporter.log"),
    );
    std::fs::write(
        dir.join("prom.yml"),
        format!(
            "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\nscrape_configs:\n  - job_name: node\n    static_configs: [ {{ targets: ['127.0.0.1:{np}'] }} ]\n"
        ),
    )
    .unwrap();
    let _prometheus = spawn(
        "prometheus",
        &[
            format!("--config.file={}", dir.join("prom.yml").display()),
            format!("--storage.tsdb.path={}", dir.join("data").display()),
            format!("--web.listen-address=127.0.0.1:{pp}"),
        ],
        &dir.join("prometheus.log"),
    );
    let base = format!("http://127.0.0.1:{pp}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while get_json(&format!("{base}/api/v1/query?query=up"))
        .await
        .is_none_or(|v| {
            v["data"]["result"]
                .as_array()
                .is_none_or(|r| r.is_empty() || r[0]["value"][1] != "1")
        })
    {
        assert!(
            Instant::now() < deadline,
            "prometheus did not scrape the exporter: {}",
            std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let scraping_since = SystemTime::now();

    let cfg = dir.join("coherence.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[prometheus]
url = "{base}"
step = "1s"

[[prometheus.queries]]
name = "cpu"
query = '100 - avg by (instance) (rate(node_cpu_seconds_total{{mode="idle"}}[5s])) * 100'

[[prometheus.queries]]
name = "cpu_idle"
query = 'rate(node_cpu_seconds_total{{mode="idle"}}[5s])'

[[prometheus.queries]]
name = "memory_available"
query = 'node_memory_MemAvailable_bytes'
"#
        ),
    )
    .unwrap();
    let db = TestDb::new("prometheus").await;
    let c = connect(&db.conn).await;

    // A quiet baseline, then both cores busy for 25 s.
    tokio::time::sleep(Duration::from_secs(75)).await;
    let burn_from = SystemTime::now();
    let burners: Vec<Proc> = (0..2)
        .map(|_| {
            Proc(
                Command::new("timeout")
                    .args(["25", "sh", "-c", "while :; do :; done"])
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(27)).await;
    drop(burners);
    tokio::time::sleep(Duration::from_secs(3)).await;

    let (code, out, err) = ingest(
        &db.conn,
        &cfg,
        &["--once", "--since", "3m", "--delay", "0s", "--chunk", "60s"],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let host = format!("127.0.0.1:{np}");
    let rows = c
        .query(
            "SELECT metric_name, count(*), min(value), max(value) FROM coherence.metrics
              WHERE host = $1 GROUP BY 1 ORDER BY 1",
            &[&host],
        )
        .await
        .unwrap();
    let series: Vec<(String, i64, f64, f64)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let names: Vec<&str> = series.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "cpu",
            r#"cpu_idle{cpu="0",job="node",mode="idle"}"#,
            r#"cpu_idle{cpu="1",job="node",mode="idle"}"#,
            r#"memory_available{job="node"}"#,
        ],
        "{series:?}"
    );
    let seconds = SystemTime::now()
        .duration_since(scraping_since)
        .unwrap()
        .as_secs() as i64;
    for (name, n, lo, hi) in &series {
        assert!(
            *n >= 90 && *n <= seconds + 5,
            "{name}: {n} points in {seconds} s"
        );
        assert!(lo.is_finite() && hi.is_finite());
    }
    let (_, _, _, cpu_max) = series[0];
    assert!(cpu_max > 80.0, "the burn shows in cpu: max {cpu_max}");
    let mem = &series[3];
    assert!(mem.2 > 1e6, "memory available is in bytes: {mem:?}");

    // Exactly once: a second run over the same range adds nothing.
    let before: i64 = c
        .query_one("SELECT count(*) FROM coherence.metrics", &[])
        .await
        .unwrap()
        .get(0);
    let (code, out, err) = ingest(
        &db.conn,
        &cfg,
        &["--once", "--since", "3m", "--delay", "0s", "--chunk", "60s"],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let after: i64 = c
        .query_one("SELECT count(*) FROM coherence.metrics", &[])
        .await
        .unwrap()
        .get(0);
    assert!(after >= before);
    let dup: i64 = c
        .query_one(
            "SELECT count(*) FROM (SELECT 1 FROM coherence.metrics GROUP BY host, metric_name, \"timestamp\" HAVING count(*) > 1) d",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(dup, 0);
    let cursors: Vec<(String, Option<String>)> = c
        .query(
            "SELECT source, last_error FROM coherence.ingest_status ORDER BY query",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(cursors.len(), 3);
    assert!(
        cursors
            .iter()
            .all(|(s, e)| s == "prometheus" && e.is_none()),
        "{cursors:?}"
    );

    // The burn is an event of this host's cpu, found by the product's own detection. Its risk
    // is low by design: risk is the return period of such evidence on a day of 1-second data
    // (86,400 tests), which two minutes of history cannot establish; so min_risk 0 here.
    let ev = c
        .query(
            "SELECT kind, risk, summary FROM coherence.detect_events($1::timestamptz - interval '5 seconds', now(), interval '5 minutes', 0::float8)
              WHERE host = $2 AND metric = 'cpu'",
            &[&burn_from, &host],
        )
        .await
        .unwrap();
    let ev: Vec<(String, f64, String)> =
        ev.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
    assert!(
        ev.iter()
            .any(|(k, _, _)| k.contains("shift") || k == "spike"),
        "the CPU burn is an event: {ev:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
