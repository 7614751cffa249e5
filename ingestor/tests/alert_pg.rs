//! `coherence-ingest alert` end to end: fake Slack and PagerDuty receivers on loopback, the
//! flight simulator's incident, delivery, dedup, resolve, a receiver down then up, and the
//! alerter killed mid-delivery. Enabled with `--features integration`.
#![cfg(feature = "integration")]

mod common;

use common::*;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::process::Command;

/// A webhook receiver: records the JSON bodies it acknowledged.
#[derive(Clone)]
struct Receiver {
    url: String,
    acked: Arc<Mutex<Vec<serde_json::Value>>>,
    /// Answer 500 to this many requests first.
    fail_next: Arc<Mutex<u32>>,
    /// Hold this many requests without answering (a hang), acknowledging nothing.
    hang_next: Arc<Mutex<u32>>,
    in_flight: Arc<Mutex<u32>>,
    /// Raw HTTP responses to send first (e.g. a 400 or a 429 with Retry-After); not acknowledged.
    reply_next: Arc<Mutex<Vec<String>>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let r = Receiver {
            url: format!("http://{}/hook", l.local_addr().unwrap()),
            acked: Arc::default(),
            fail_next: Arc::default(),
            hang_next: Arc::default(),
            in_flight: Arc::default(),
            reply_next: Arc::default(),
        };
        let me = r.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = l.accept().await else {
                    return;
                };
                let me = me.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut tmp = [0u8; 8192];
                    // Read headers, then Content-Length bytes of body.
                    let (head_end, len) = loop {
                        match sock.read(&mut tmp).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&tmp[..n]),
                        }
                        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..p]).to_ascii_lowercase();
                            let len = head
                                .lines()
                                .find_map(|l| {
                                    l.strip_prefix("content-length:")
                                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                                })
                                .unwrap_or(0);
                            break (p + 4, len);
                        }
                    };
                    while buf.len() < head_end + len {
                        match sock.read(&mut tmp).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&tmp[..n]),
                        }
                    }
                    let body: serde_json::Value =
                        serde_json::from_slice(&buf[head_end..head_end + len])
                            .unwrap_or(serde_json::Value::Null);
                    let hang = {
                        let mut h = me.hang_next.lock().unwrap();
                        let x = *h > 0;
                        if x {
                            *h -= 1;
                        }
                        x
                    };
                    if hang {
                        *me.in_flight.lock().unwrap() += 1;
                        // Wait until the client goes away; nothing is acknowledged.
                        let _ = sock.read(&mut tmp).await;
                        *me.in_flight.lock().unwrap() -= 1;
                        return;
                    }
                    let canned = {
                        let mut r = me.reply_next.lock().unwrap();
                        (!r.is_empty()).then(|| r.remove(0))
                    };
                    if let Some(raw) = canned {
                        let _ = sock.write_all(raw.as_bytes()).await;
                        let _ = sock.shutdown().await;
                        return;
                    }
                    let fail = {
                        let mut f = me.fail_next.lock().unwrap();
                        let x = *f > 0;
                        if x {
                            *f -= 1;
                        }
                        x
                    };
                    let resp: &[u8] = if fail {
                        b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 5\r\nConnection: close\r\n\r\nerror"
                    } else {
                        b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: 20\r\nConnection: close\r\n\r\n{\"status\":\"success\"}"
                    };
                    if sock.write_all(resp).await.is_ok() && !fail {
                        me.acked.lock().unwrap().push(body);
                    }
                    let _ = sock.shutdown().await;
                });
            }
        });
        r
    }

    fn acked(&self) -> Vec<serde_json::Value> {
        self.acked.lock().unwrap().clone()
    }
}

fn config(tag: &str, min_risk: f64) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("coherence-alert-{tag}-{}.toml", std::process::id()));
    std::fs::write(
        &p,
        format!(
            "[alert]\nmin_risk = {min_risk}\nlink = \"https://grafana.example/d/coherence?incident={{id}}\"\n\n\
             [[alert.slack]]\nname = \"slack\"\nwebhook_url_env = \"TEST_SLACK_URL\"\n\n\
             [[alert.pagerduty]]\nname = \"pagerduty\"\nrouting_key_env = \"TEST_PD_KEY\"\n"
        ),
    )
    .unwrap();
    p
}

/// In `alert`'s args: start as a destination's first start would (no --since).
const FIRST_START: &str = "<first start>";

fn alert(
    db: &str,
    cfg: &std::path::Path,
    slack: &Receiver,
    pd: &Receiver,
    args: &[&str],
) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_coherence-ingest"));
    c.env("DATABASE_URL", db)
        .env("TEST_SLACK_URL", &slack.url)
        .env("TEST_PD_KEY", "pd-routing-key-SECRET")
        .env("COHERENCE_ALLOW_TEST_BASE_URL", "1")
        .env("COHERENCE_PD_EVENTS_URL", &pd.url)
        .arg("alert")
        .arg("--config")
        .arg(cfg)
        .args(args.iter().filter(|a| **a != FIRST_START))
        .kill_on_drop(true);
    // Test-friendly defaults unless the test sets them.
    for (flag, value) in [
        ("--retry-base", "200ms"),
        ("--poll", "300ms"),
        ("--timeout", "3s"),
        // The scenarios are recorded before the alerter starts: alert on them too.
        ("--since", "all"),
    ] {
        let first_start = flag == "--since" && args.contains(&FIRST_START);
        if !args.contains(&flag) && !first_start {
            c.args([flag, value]);
        }
    }
    c
}

async fn scenario(tag: &str) -> (TestDb, i64) {
    let db = TestDb::new(tag).await;
    ok(ingest(&db.conn, &["simulate"]));
    let c = connect(&db.conn).await;
    c.query_one("SELECT coherence.run_detection()", &[])
        .await
        .unwrap();
    let id: i64 = c
        .query_one(
            "SELECT id FROM coherence.incidents WHERE host = 'host-stressed'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    (db, id)
}

async fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_trigger_then_resolve_once() {
    let (db, id) = scenario("alert_once").await;
    let (slack, pd) = (Receiver::start().await, Receiver::start().await);
    let cfg = config("once", 0.8);
    let o = alert(&db.conn, &cfg, &slack, &pd, &["--once"])
        .output()
        .await
        .unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "{out} {err}");
    assert!(
        !out.contains("SECRET") && !err.contains("SECRET"),
        "a secret was printed"
    );
    // The simulated incident is already resolved in data time: trigger, then resolve.
    let s = slack.acked();
    assert_eq!(s.len(), 2, "{s:?}");
    let text = s[0]["text"].as_str().unwrap();
    assert!(
        text.contains(&format!("incident #{id}"))
            && text.contains("host-stressed")
            && text.contains("risk 1.00"),
        "{text}"
    );
    assert!(
        text.contains("memory leak")
            && text.contains("13 error events")
            && text.contains("CPU spike to 94.98%"),
        "{text}"
    );
    assert!(
        text.contains(&format!("incident={id}|Open incident #{id}")),
        "{text}"
    );
    assert!(s[1]["text"].as_str().unwrap().contains("resolved"));
    let p = pd.acked();
    assert_eq!(p.len(), 2, "{p:?}");
    assert_eq!(p[0]["event_action"], "trigger");
    assert_eq!(p[0]["dedup_key"], id.to_string());
    assert_eq!(p[0]["routing_key"], "pd-routing-key-SECRET");
    assert_eq!(p[0]["payload"]["severity"], "critical");
    assert_eq!(p[1]["event_action"], "resolve");
    assert_eq!(p[1]["dedup_key"], id.to_string());
    println!("slack body: {}\npagerduty body: {}", s[0], p[0]);

    // Dedup: running again delivers nothing; the log has one row per (incident, dest, action).
    let o = alert(&db.conn, &cfg, &slack, &pd, &["--once"])
        .output()
        .await
        .unwrap();
    assert!(o.status.success());
    assert_eq!((slack.acked().len(), pd.acked().len()), (2, 2));
    let c = connect(&db.conn).await;
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM coherence.alert_deliveries WHERE status = 'delivered'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 4);

    // Below the threshold nothing is sent.
    let (db2, _) = scenario("alert_thresh").await;
    let (s2, p2) = (Receiver::start().await, Receiver::start().await);
    let o = alert(
        &db2.conn,
        &config("thresh", 1.0),
        &s2,
        &p2,
        &["--once", "--min-risk", "1.0"],
    )
    .output()
    .await
    .unwrap();
    assert!(o.status.success());
    assert_eq!(s2.acked().len(), 2, "risk 1.0 meets min_risk 1.0");
    let c2 = connect(&db2.conn).await;
    c2.batch_execute(
        "UPDATE coherence.incidents SET risk = 0.5; DELETE FROM coherence.alert_deliveries;",
    )
    .await
    .unwrap();
    let (s3, p3) = (Receiver::start().await, Receiver::start().await);
    let o = alert(&db2.conn, &config("thresh2", 0.8), &s3, &p3, &["--once"])
        .output()
        .await
        .unwrap();
    assert!(o.status.success());
    assert!(s3.acked().is_empty() && p3.acked().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_down_then_up_and_dead_destination_does_not_block() {
    let (db, id) = scenario("alert_down").await;
    let (slack, pd) = (Receiver::start().await, Receiver::start().await);
    *pd.fail_next.lock().unwrap() = 3; // PagerDuty answers 500 three times
    let mut child = alert(&db.conn, &config("down", 0.8), &slack, &pd, &[])
        .spawn()
        .unwrap();
    // Slack is not held back by PagerDuty's failures.
    wait_for("slack deliveries", 20, || slack.acked().len() == 2).await;
    wait_for("pagerduty after recovery", 30, || pd.acked().len() == 2).await;
    tokio::time::sleep(Duration::from_millis(800)).await; // more polls: nothing repeats
    child.kill().await.unwrap();
    let p = pd.acked();
    assert_eq!((p.len(), slack.acked().len()), (2, 2));
    assert_eq!(
        (p[0]["event_action"].as_str(), p[1]["event_action"].as_str()),
        (Some("trigger"), Some("resolve"))
    );
    let c = connect(&db.conn).await;
    let attempts: i32 = c
        .query_one("SELECT attempts FROM coherence.alert_deliveries WHERE destination = 'pagerduty' AND action = 'trigger'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(attempts, 4, "three failures, then delivered");
    let _ = id;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_delivery_then_restarted_delivers_once() {
    let (db, _) = scenario("alert_kill").await;
    let (slack, pd) = (Receiver::start().await, Receiver::start().await);
    *slack.hang_next.lock().unwrap() = 1; // the first Slack request hangs
    let cfg = config("kill", 0.8);
    let mut child = alert(&db.conn, &cfg, &slack, &pd, &["--timeout", "60s"])
        .spawn()
        .unwrap();
    wait_for("a delivery in flight", 20, || {
        *slack.in_flight.lock().unwrap() == 1
    })
    .await;
    std::process::Command::new("kill")
        .args(["-KILL", &child.id().unwrap().to_string()])
        .status()
        .unwrap();
    child.wait().await.unwrap();
    wait_for("the receiver to see the client gone", 10, || {
        *slack.in_flight.lock().unwrap() == 0
    })
    .await;
    assert!(
        slack.acked().is_empty(),
        "nothing was acknowledged before the kill"
    );
    // Restart: the pending row is delivered, once.
    let o = alert(&db.conn, &cfg, &slack, &pd, &["--once"])
        .output()
        .await
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = slack.acked();
    assert_eq!(s.len(), 2, "trigger and resolve once each: {s:?}");
    assert_eq!(pd.acked().len(), 2);
    let o = alert(&db.conn, &cfg, &slack, &pd, &["--once"])
        .output()
        .await
        .unwrap();
    assert!(o.status.success());
    assert_eq!(
        (slack.acked().len(), pd.acked().len()),
        (2, 2),
        "a second restart repeats nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listens_for_new_incidents() {
    let db = TestDb::new("alert_listen").await;
    let (slack, pd) = (Receiver::start().await, Receiver::start().await);
    let mut child = alert(
        &db.conn,
        &config("listen", 0.8),
        &slack,
        &pd,
        &["--poll", "60s"],
    )
    .spawn()
    .unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(slack.acked().is_empty());
    ok(ingest(&db.conn, &["simulate"]));
    connect(&db.conn)
        .await
        .query_one("SELECT coherence.run_detection()", &[])
        .await
        .unwrap();
    // Delivered on the NOTIFY, well before the 60 s poll.
    wait_for("delivery on NOTIFY", 15, || {
        slack.acked().len() == 2 && pd.acked().len() == 2
    })
    .await;
    child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_window_mutes_then_alerts_resume_and_a_failing_job_alerts_once() {
    let db = TestDb::new("alert_mute").await;
    ok(ingest(&db.conn, &["simulate"]));
    let c = connect(&db.conn).await;
    // Planned work over the simulator's incident: anomalies recorded, incident muted, no alert.
    c.batch_execute(
        "INSERT INTO coherence.maintenance_windows (host_pattern, starts_at, ends_at, reason)
         VALUES ('host-stressed', '2025-12-11 00:00+00', '2025-12-13 05:00+00', 'load test CHG-7');
         SELECT coherence.run_detection();",
    )
    .await
    .unwrap();
    let (muted, anomalies): (i64, i64) = {
        let r = c
            .query_one(
                "SELECT (SELECT count(*) FROM coherence.incidents WHERE host = 'host-stressed' AND muted_by IS NOT NULL),
                        (SELECT count(*) FROM coherence.anomalies WHERE host = 'host-stressed')",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(muted, 1, "the incident in the window is muted");
    assert!(anomalies >= 3, "anomalies are still recorded ({anomalies})");
    let (slack, pd) = (Receiver::start().await, Receiver::start().await);
    let cfg = config("mute", 0.8);
    let o = alert(&db.conn, &cfg, &slack, &pd, &["--once"])
        .output()
        .await
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        slack.acked().is_empty() && pd.acked().is_empty(),
        "muted: {:?}",
        slack.acked()
    );

    // After the window (the metrics still flowing): an error burst on the same host pages again.
    c.batch_execute(
        "INSERT INTO coherence.signal_events (ts, host, fingerprint, severity, source, source_id, message)
         SELECT '2025-12-13 06:00+00'::timestamptz + k * interval '20 seconds', 'host-stressed',
                'host-stressed:error', 'error', 'test', 'after' || k, 'HTTP 500'
           FROM generate_series(0, 11) k;
         SELECT coherence.run_detection();",
    )
    .await
    .unwrap();
    let o = alert(&db.conn, &cfg, &slack, &pd, &["--once"])
        .output()
        .await
        .unwrap();
    assert!(o.status.success());
    // (in data time the burst is long over: its trigger, then its resolve)
    let s = slack.acked();
    assert_eq!(s.len(), 2, "{s:?}");
    let text = s[0]["text"].as_str().unwrap();
    assert!(
        text.contains("host-stressed") && text.contains("06:00"),
        "{text}"
    );
    assert!(s[1]["text"].as_str().unwrap().contains("resolved"));
    assert_eq!(pd.acked().len(), 2);

    // The watcher: two failed runs in a row (a constraint the job's write violates) give one
    // alert per destination, however often the alerter passes; a good run resolves it.
    c.batch_execute(
        "ALTER TABLE coherence.series_state ADD CONSTRAINT test_breaks_the_job CHECK (false) NOT VALID;
         INSERT INTO coherence.metrics (host, metric_name, value, \"timestamp\")
         VALUES ('host-stressed', 'cpu', 40, '2025-12-13 07:59:30+00');",
    )
    .await
    .unwrap();
    for _ in 0..2 {
        let r: String = c
            .query_one("SELECT coherence.run_detection()::text", &[])
            .await
            .unwrap()
            .get(0);
        let r: serde_json::Value = serde_json::from_str(&r).unwrap();
        assert_eq!(r["sqlstate"], "23514", "{r}");
    }
    for _ in 0..2 {
        let o = alert(&db.conn, &cfg, &slack, &pd, &["--once"])
            .output()
            .await
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let s = slack.acked();
    assert_eq!(s.len(), 3, "{s:?}");
    let text = s[2]["text"].as_str().unwrap();
    assert!(
        text.contains("Coherence detection is not running")
            && text.contains("2 run(s) failed")
            && text.contains("test_breaks_the_job"),
        "{text}"
    );
    let p = pd.acked();
    assert_eq!(p.len(), 3, "{p:?}");
    let key = p[2]["dedup_key"].as_str().unwrap().to_string();
    assert!(key.starts_with("coherence-detection-"), "{key}");

    c.batch_execute("ALTER TABLE coherence.series_state DROP CONSTRAINT test_breaks_the_job;")
        .await
        .unwrap();
    let r: String = c
        .query_one("SELECT coherence.run_detection()::text", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!r.contains("\"error\""), "{r}");
    let o = alert(&db.conn, &cfg, &slack, &pd, &["--once"])
        .output()
        .await
        .unwrap();
    assert!(o.status.success());
    let s = slack.acked();
    assert_eq!(s.len(), 4, "{s:?}");
    assert!(s[3]["text"].as_str().unwrap().contains("running again"));
    let p = pd.acked();
    assert_eq!(
        (p[3]["event_action"].as_str(), p[3]["dedup_key"].as_str()),
        (Some("resolve"), Some(key.as_str()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_a_line() {
    let (db, id) = scenario("alert_json").await;
    let (slack, pd) = (Receiver::start().await, Receiver::start().await);
    let o = alert(
        &db.conn,
        &config("json", 0.8),
        &slack,
        &pd,
        &["--once", "--log-format", "json"],
    )
    .output()
    .await
    .unwrap();
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<serde_json::Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() >= 5, "{err}");
    assert!(lines
        .iter()
        .all(|l| l["level"].is_string() && l["timestamp"].is_string()));
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "delivered" && l["subject"] == format!("incident {id}")),
        "{err}"
    );
    assert!(!err.contains('\u{1b}'), "no ANSI codes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_start_pages_no_history_and_a_refusal_is_not_retried() {
    let (db, old) = scenario("alert_since").await;
    let (slack, pd) = (Receiver::start().await, Receiver::start().await);
    let cfg = config("since", 0.8);
    // First start, no --since: the incident recorded before it is history, not a page.
    let o = alert(&db.conn, &cfg, &slack, &pd, &["--once", FIRST_START])
        .output()
        .await
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(slack.acked().is_empty() && pd.acked().is_empty());
    let c = connect(&db.conn).await;
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM coherence.alert_destinations WHERE since > now() - interval '1 minute'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2, "both destinations start now");
    // A new incident after the start pages; PagerDuty refuses it (invalid routing key): the
    // refusal is recorded after one attempt, and no resolve follows a trigger never delivered.
    pd.reply_next.lock().unwrap().push(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: 38\r\nConnection: close\r\n\r\n{\"status\":\"invalid event\",\"errors\":[]}"
            .to_string(),
    );
    c.batch_execute(
        "INSERT INTO coherence.signal_events (ts, host, fingerprint, severity, source, source_id, message)
         SELECT '2025-12-13 06:00+00'::timestamptz + k * interval '20 seconds', 'host-stressed',
                'host-stressed:error', 'error', 'test', 'new' || k, 'HTTP 500'
           FROM generate_series(0, 11) k;
         SELECT coherence.run_detection();",
    )
    .await
    .unwrap();
    let o = alert(&db.conn, &cfg, &slack, &pd, &["--once", FIRST_START])
        .output()
        .await
        .unwrap();
    assert!(o.status.success());
    let s = slack.acked();
    assert_eq!(
        s.len(),
        2,
        "trigger and resolve of the new incident only: {s:?}"
    );
    assert!(!s[0]["text"].as_str().unwrap().contains(&format!("#{old}*")));
    assert!(pd.acked().is_empty());
    let rows = c
        .query(
            "SELECT action, status, attempts, last_error FROM coherence.alert_deliveries
              WHERE destination = 'pagerduty' ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "no resolve for a trigger never delivered");
    let (action, status, attempts, err): (String, String, i32, String) = (
        rows[0].get(0),
        rows[0].get(1),
        rows[0].get(2),
        rows[0].get(3),
    );
    assert_eq!(
        (action.as_str(), status.as_str(), attempts),
        ("trigger", "failed", 1)
    );
    assert!(err.contains("HTTP 400"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured() {
    let (db, _) = scenario("alert_retry_after").await;
    let (slack, pd) = (Receiver::start().await, Receiver::start().await);
    slack.reply_next.lock().unwrap().push(
        "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 30\r\nContent-Length: 12\r\nConnection: close\r\n\r\nrate limited"
            .to_string(),
    );
    let o = alert(
        &db.conn,
        &config("retry_after", 0.8),
        &slack,
        &pd,
        &["--once"],
    )
    .output()
    .await
    .unwrap();
    assert!(o.status.success());
    let c = connect(&db.conn).await;
    let r = c
        .query_one(
            "SELECT status, attempts, extract(epoch FROM next_attempt_at - now())::float8
               FROM coherence.alert_deliveries WHERE destination = 'slack' AND action = 'trigger'",
            &[],
        )
        .await
        .unwrap();
    let (status, attempts, wait): (String, i32, f64) = (r.get(0), r.get(1), r.get(2));
    assert_eq!((status.as_str(), attempts), ("pending", 1));
    assert!(
        wait > 25.0 && wait <= 30.5,
        "next attempt in {wait}s, Retry-After said 30"
    );
    assert!(slack.acked().is_empty());
}
