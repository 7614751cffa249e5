//! Integration tests of incident detection in a real PostgreSQL: NOTIFY payloads of
//! coherence.run_detection() and the pg_cron job. Enabled with `--features integration`.
#![cfg(feature = "integration")]

mod common;

use common::*;
use futures_util::StreamExt;
use std::time::{Duration, Instant};
use tokio_postgres::{AsyncMessage, NoTls};

/// Connects a listener and returns the client and a channel of notification payloads.
async fn listen(
    conn: &str,
) -> (
    tokio_postgres::Client,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let (client, mut connection) = tokio_postgres::connect(conn, NoTls).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut stream = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(msg)) = stream.next().await {
            if let AsyncMessage::Notification(n) = msg {
                if n.channel() == "coherence_incidents" {
                    let _ = tx.send(n.payload().to_string());
                }
            }
        }
    });
    client
        .batch_execute("LISTEN coherence_incidents")
        .await
        .unwrap();
    (client, rx)
}

async fn drain(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    wait: Duration,
) -> Vec<serde_like::Obj> {
    let mut out = Vec::new();
    let deadline = Instant::now() + wait;
    while let Ok(Some(p)) = tokio::time::timeout(
        deadline.saturating_duration_since(Instant::now()),
        rx.recv(),
    )
    .await
    {
        out.push(serde_like::parse(&p));
    }
    out
}

/// Tiny JSON-object reader for flat payloads (keeps the test free of extra dependencies).
mod serde_like {
    pub type Obj = std::collections::BTreeMap<String, String>;
    pub fn parse(s: &str) -> Obj {
        let body = s.trim().trim_start_matches('{').trim_end_matches('}');
        let mut out = Obj::new();
        let mut rest = body;
        while let Some(kq) = rest.find('"') {
            rest = &rest[kq + 1..];
            let ke = rest.find('"').unwrap();
            let key = rest[..ke].to_string();
            rest = rest[ke + 1..]
                .trim_start()
                .trim_start_matches(':')
                .trim_start();
            let (val, next) = if let Some(r) = rest.strip_prefix('"') {
                let e = r.find('"').unwrap();
                (r[..e].to_string(), &r[e + 1..])
            } else {
                let e = rest.find(',').unwrap_or(rest.len());
                (rest[..e].trim().to_string(), &rest[e..])
            };
            out.insert(key, val);
            rest = next.trim_start().trim_start_matches(',');
        }
        out
    }
}

#[tokio::test]
async fn run_detection_notifies_open_and_resolve_once() {
    let db = TestDb::new("notify").await;
    ok(ingest(&db.conn, &["simulate"]));
    let (_listener, mut rx) = listen(&db.conn).await;
    let c = connect(&db.conn).await;
    c.query_one("SELECT coherence.run_detection()", &[])
        .await
        .unwrap();
    let got = drain(&mut rx, Duration::from_secs(2)).await;
    assert_eq!(got.len(), 2, "one opened and one resolved: {got:?}");
    let opened = &got[0];
    assert_eq!(opened["event"], "opened");
    assert_eq!(opened["host"], "host-stressed");
    // The CPU spikes are routine for this series by the time of the burst (about 40 of them
    // in the day before): the leak is the stronger explanation.
    assert_eq!(opened["hypothesis"], "memory leak");
    assert_eq!(opened["risk"].parse::<f64>().unwrap(), 1.0);
    assert_eq!(opened["previous_risk"], "null");
    let id: i64 = opened["id"].parse().unwrap();
    assert_eq!(got[1]["event"], "resolved");
    assert_eq!(got[1]["id"], id.to_string());

    // The stored incident has the seed's narrative (with the leak as the hypothesis).
    let narrative: String = c
        .query_one(
            "SELECT narrative FROM coherence.incidents WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert!(narrative.starts_with("At 2025-12-13 04:10 UTC, host-stressed experienced:\n- 13 error events\n- CPU spike to 94.98%\n- Memory at "), "{narrative}");
    assert!(
        narrative.contains("% (leak progression)\n")
            && narrative.ends_with("Hypothesis: Error burst caused by a memory leak."),
        "{narrative}"
    );
    let healthy: i64 = c
        .query_one(
            "SELECT count(*) FROM coherence.incidents WHERE host = 'host-healthy'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(healthy, 0);

    // Idempotent: re-running (and a full rescan) notifies nothing and changes nothing.
    c.query_one("SELECT coherence.run_detection()", &[])
        .await
        .unwrap();
    c.query_one("SELECT coherence.run_detection(full_rescan => true)", &[])
        .await
        .unwrap();
    assert!(drain(&mut rx, Duration::from_millis(700)).await.is_empty());
    let n: i64 = c
        .query_one("SELECT count(*) FROM coherence.incidents", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}

#[tokio::test]
async fn risk_change_notifies_updated() {
    let db = TestDb::new("notify_upd").await;
    let c = connect(&db.conn).await;
    // Three errors alone: an undetermined incident with risk 0.3.
    c.batch_execute(
        "INSERT INTO coherence.metrics (host, metric_name, value, \"timestamp\")
         SELECT 'h', 'cpu', 30 + (i % 5), '2025-12-13 00:00+00'::timestamptz + i * interval '1 minute'
           FROM generate_series(0, 560) i;
         INSERT INTO coherence.signal_events (ts, host, fingerprint, severity, source, source_id)
         SELECT '2025-12-13 09:00+00'::timestamptz + k * interval '1 minute', 'h', 'h:error', 'error', 't', 'a' || k
           FROM generate_series(0, 2) k;",
    )
    .await
    .unwrap();
    let (_l, mut rx) = listen(&db.conn).await;
    c.query_one("SELECT coherence.run_detection()", &[])
        .await
        .unwrap();
    let first = drain(&mut rx, Duration::from_secs(1)).await;
    assert_eq!(first[0]["event"], "opened", "{first:?}");
    assert_eq!(first[0]["risk"].parse::<f64>().unwrap(), 0.3);
    // Five more errors in the same burst: risk 0.8, updated in place.
    c.batch_execute(
        "INSERT INTO coherence.signal_events (ts, host, fingerprint, severity, source, source_id)
         SELECT '2025-12-13 09:03+00'::timestamptz + k * interval '1 minute', 'h', 'h:error', 'error', 't', 'b' || k
           FROM generate_series(0, 4) k;",
    )
    .await
    .unwrap();
    c.query_one("SELECT coherence.run_detection()", &[])
        .await
        .unwrap();
    let second = drain(&mut rx, Duration::from_secs(1)).await;
    assert_eq!(second.len(), 1, "{second:?}");
    assert_eq!(second[0]["event"], "updated");
    assert_eq!(second[0]["risk"].parse::<f64>().unwrap(), 0.8);
    assert_eq!(second[0]["previous_risk"].parse::<f64>().unwrap(), 0.3);
    assert_eq!(second[0]["id"], first[0]["id"]);
}

#[tokio::test]
async fn pg_cron_job_produces_incidents() {
    let db = TestDb::new("cron").await;
    ok(ingest(&db.conn, &["simulate"]));
    let cron_db = std::env::var("COHERENCE_TEST_CRON_DB").unwrap_or_else(|_| "coherence".into());
    let cron = connect(&with_db(&admin(), &cron_db)).await;
    let job = format!("coherence-it-{}", std::process::id());
    // pg_cron 1.4: one-minute resolution, so this waits up to ~2 minutes.
    let jobid: i64 = cron
        .query_one(
            "SELECT cron.schedule_in_database($1, '* * * * *', 'SELECT coherence.run_detection()', $2)",
            &[&job, &db.name],
        )
        .await
        .expect("pg_cron must be installed in the cron database (make db does it)")
        .get(0);
    let c = connect(&db.conn).await;
    let deadline = Instant::now() + Duration::from_secs(150);
    let mut incidents = 0i64;
    while Instant::now() < deadline {
        incidents = c
            .query_one("SELECT count(*) FROM coherence.incidents", &[])
            .await
            .unwrap()
            .get(0);
        if incidents > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let runs: Vec<(String, Option<String>)> = cron
        .query(
            "SELECT status, return_message FROM cron.job_run_details WHERE jobid = $1",
            &[&jobid],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    cron.execute("SELECT cron.unschedule($1::bigint)", &[&jobid])
        .await
        .unwrap();
    assert!(
        incidents >= 1,
        "the job produced no incident within 150 s; runs: {runs:?}"
    );
    assert!(runs.iter().any(|(s, _)| s == "succeeded"), "runs: {runs:?}");
    let by_job: i64 = c
        .query_one(
            "SELECT count(*) FROM coherence.detection_runs WHERE finished_at IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(by_job >= 1);
}
