//! `coherence-ingest datadog` end to end: a fake Datadog on loopback (recorded bodies and
//! injected faults) into the local PostgreSQL. Enabled with `--features integration`.
#![cfg(feature = "integration")]

mod common;

use common::fake_datadog::{synthetic_value, FakeDatadog, Fault, Mode};
use common::*;
use std::time::{Duration, Instant};
use tokio::process::Command;

const API_KEY: &str = "test-api-key-SECRET-1234";
const APP_KEY: &str = "test-app-key-SECRET-5678";

fn config(dir: &str, events: bool) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("coherence-dd-{dir}-{}.toml", std::process::id()));
    let mut text =
        String::from("[[metrics]]\nquery = \"avg:system.cpu.user{*} by {host}\"\nname = \"cpu\"\n");
    if events {
        text.push_str("\n[events]\npriority = \"normal\"\n");
    }
    std::fs::write(&p, text).unwrap();
    p
}

fn cmd(db: &str, fake: &FakeDatadog, cfg: &std::path::Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_coherence-ingest"));
    c.env("DATABASE_URL", db)
        .env("DD_API_KEY", API_KEY)
        .env("DD_APP_KEY", APP_KEY)
        .env_remove("DATADOG_API_KEY")
        .env_remove("DATADOG_APP_KEY")
        .env("COHERENCE_ALLOW_TEST_BASE_URL", "1")
        .env("COHERENCE_DD_BASE_URL", &fake.url)
        .arg("datadog")
        .arg("--config")
        .arg(cfg)
        .args(args)
        .kill_on_drop(true);
    c
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn run(mut c: Command) -> Out {
    let o = c.output().await.unwrap();
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into(),
        stderr: String::from_utf8_lossy(&o.stderr).into(),
    }
}

fn assert_no_secrets(o: &Out) {
    for s in [&o.stdout, &o.stderr] {
        assert!(!s.contains("SECRET"), "a key was printed: {s}");
    }
}

/// Rows in the tables as comparable text.
async fn table_text(conn: &str) -> (i64, i64, String) {
    let c = connect(conn).await;
    let r = c
        .query_one(
            "SELECT (SELECT count(*) FROM coherence.metrics), (SELECT count(*) FROM coherence.signal_events),
                    md5(coalesce((SELECT string_agg(concat_ws('|', host, metric_name, value, extract(epoch FROM \"timestamp\")), ',' ORDER BY host, metric_name, \"timestamp\") FROM coherence.metrics), '')
                     || coalesce((SELECT string_agg(concat_ws('|', source, source_id, host, severity, extract(epoch FROM ts), service, message), ',' ORDER BY source_id) FROM coherence.signal_events), ''))",
            &[],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1), r.get(2))
}

// 2026-01-01T00:00:00Z: a fixed end so every run covers the same range.
const UNTIL: &str = "2026-01-01T00:00:00Z";
const UNTIL_S: i64 = 1_767_225_600;

fn expected_points(hours: i64) -> i64 {
    let mut n = 0;
    for t in (UNTIL_S - hours * 3600..UNTIL_S).step_by(60) {
        for h in ["web-1", "web-2"] {
            n += synthetic_value(h, t).is_some() as i64;
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_bodies_end_to_end() {
    let fake = FakeDatadog::start(Mode::Recorded {
        query_fixture: "v1_query_single_series_288pts.json",
    })
    .await;
    let db = TestDb::new("dd_rec").await;
    let cfg = config("rec", false);
    // The recorded series spans 2022-01-05 00:55 .. 2022-01-06 00:54:59; every hourly chunk
    // gets the whole body and keeps only its own points.
    let o = run(cmd(
        &db.conn,
        &fake,
        &cfg,
        &[
            "--once",
            "--since",
            "25h",
            "--chunk",
            "1h",
            "--until",
            "2022-01-06T00:56:00Z",
        ],
    ))
    .await;
    assert_eq!(o.code, 0, "{} {}", o.stdout, o.stderr);
    assert_no_secrets(&o);
    assert!(o.stdout.contains("25 chunks"), "{}", o.stdout);
    let c = connect(&db.conn).await;
    let r = c
        .query_one("SELECT count(*), count(DISTINCT \"timestamp\"), min(host), min(value), max(value) FROM coherence.metrics", &[])
        .await
        .unwrap();
    assert_eq!((r.get::<_, i64>(0), r.get::<_, i64>(1)), (288, 288));
    assert_eq!(r.get::<_, String>(2), "*");
    // Read-only: only GETs, every one with both keys as headers (never in the URL).
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 25);
    assert!(reqs
        .iter()
        .all(|r| r.method == "GET" && r.has_keys && !r.query.contains("SECRET")));

    // Float timestamps, host from tag_set, and the recorded event with its 64-bit id.
    let fake = FakeDatadog::start(Mode::Recorded {
        query_fixture: "v1_query_group_by_host_float_ts.json",
    })
    .await;
    let db2 = TestDb::new("dd_rec2").await;
    let cfg2 = config("rec2", true);
    let o = run(cmd(
        &db2.conn,
        &fake,
        &cfg2,
        &[
            "--once",
            "--since",
            "10m",
            "--chunk",
            "10m",
            "--until",
            "2021-04-12T09:55:00Z",
        ],
    ))
    .await;
    assert_eq!(o.code, 0, "{} {}", o.stdout, o.stderr);
    let c = connect(&db2.conn).await;
    let rows = c.query("SELECT host, value, extract(epoch FROM \"timestamp\")::float8 FROM coherence.metrics ORDER BY 3", &[]).await.unwrap();
    let got: Vec<(String, f64, f64)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        got,
        vec![
            ("go-client-test-host".into(), 10.5, 1_618_221_135.0),
            ("go-client-test-host".into(), 11.0, 1_618_221_195.0)
        ]
    );
    // The recorded event (2022-07-25) is outside this window: an events run over its time.
    let o = run(cmd(
        &db2.conn,
        &fake,
        &cfg2,
        &[
            "--once",
            "--since",
            "1h",
            "--chunk",
            "1h",
            "--until",
            "2022-07-25T08:00:00Z",
        ],
    ))
    .await;
    assert_eq!(o.code, 0, "{} {}", o.stdout, o.stderr);
    let ev = c
        .query_one(
            "SELECT source_id, severity, host, service, message FROM coherence.signal_events",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(ev.get::<_, String>(0), "6618108885455469409");
    assert_eq!(ev.get::<_, String>(1), "info");
    assert_eq!(ev.get::<_, String>(2), "unknown");
    assert_eq!(ev.get::<_, Option<String>>(3).as_deref(), Some("My Apps"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_and_idempotent() {
    let fake = FakeDatadog::start(Mode::Synthetic).await;
    let db = TestDb::new("dd_incr").await;
    let cfg = config("incr", true);
    let first = run(cmd(
        &db.conn,
        &fake,
        &cfg,
        &["--once", "--since", "6h", "--chunk", "1h", "--until", UNTIL],
    ))
    .await;
    assert_eq!(first.code, 0, "{}", first.stderr);
    let (m, e, _) = table_text(&db.conn).await;
    assert_eq!(m, expected_points(6));
    assert_eq!(e, 36);
    assert!(
        first.stdout.contains("null points skipped"),
        "{}",
        first.stdout
    );
    // Same range again: the cursors say it is done; no request, no row.
    let before = fake.requests().len();
    let again = run(cmd(
        &db.conn,
        &fake,
        &cfg,
        &["--once", "--since", "6h", "--until", UNTIL],
    ))
    .await;
    assert_eq!(again.code, 0);
    assert_eq!(
        fake.requests().len(),
        before,
        "no requests for ingested ranges"
    );
    assert_eq!(table_text(&db.conn).await.0, m);
    // Later data continues from the cursor, not from --since.
    let later = run(cmd(
        &db.conn,
        &fake,
        &cfg,
        &[
            "--once",
            "--since",
            "48h",
            "--until",
            "2026-01-01T01:00:00Z",
        ],
    ))
    .await;
    assert_eq!(later.code, 0);
    let (m2, _, _) = table_text(&db.conn).await;
    assert!(m2 > m && m2 < m + 2 * 61, "{m} -> {m2}");
    let errors: i64 = connect(&db.conn)
        .await
        .query_one("SELECT count(*) FROM coherence.signal_events WHERE severity = 'error' AND source = 'datadog'", &[])
        .await
        .unwrap()
        .get(0);
    assert!(errors > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_are_retried_and_change_nothing() {
    let reference = TestDb::new("dd_ref").await;
    let fake = FakeDatadog::start(Mode::Synthetic).await;
    let cfg = config("faults", false);
    let o = run(cmd(
        &reference.conn,
        &fake,
        &cfg,
        &["--once", "--since", "3h", "--chunk", "1h", "--until", UNTIL],
    ))
    .await;
    assert_eq!(o.code, 0, "{}", o.stderr);

    let db = TestDb::new("dd_faults").await;
    let fake = FakeDatadog::start(Mode::Synthetic).await;
    fake.push_faults([
        Fault::RateLimit {
            header: "X-RateLimit-Reset",
            reset: 1,
        },
        Fault::ServerError,
        Fault::RateLimit {
            header: "x-ratelimit-reset",
            reset: 1,
        },
        Fault::Hang(Duration::from_secs(5)),
    ]);
    let started = Instant::now();
    let o = run(cmd(
        &db.conn,
        &fake,
        &cfg,
        &[
            "--once",
            "--since",
            "3h",
            "--chunk",
            "1h",
            "--until",
            UNTIL,
            "--timeout",
            "1s",
        ],
    ))
    .await;
    assert_eq!(o.code, 0, "{} {}", o.stdout, o.stderr);
    assert_no_secrets(&o);
    assert!(o.stdout.contains("4 retries"), "{}", o.stdout);
    assert!(o.stderr.contains("429"), "{}", o.stderr);
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "waited for X-RateLimit-Reset twice"
    );
    assert_eq!(
        table_text(&db.conn).await,
        table_text(&reference.conn).await
    );
    assert_eq!(fake.requests().len(), 3 + 4);

    // Retries are bounded.
    let db = TestDb::new("dd_bounded").await;
    let fake = FakeDatadog::start(Mode::Synthetic).await;
    fake.push_faults(std::iter::repeat_n(Fault::ServerError, 10));
    let o = run(cmd(
        &db.conn,
        &fake,
        &cfg,
        &[
            "--once",
            "--since",
            "1h",
            "--until",
            UNTIL,
            "--retries",
            "2",
        ],
    ))
    .await;
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("failed 3 times"), "{}", o.stderr);
    assert_eq!(table_text(&db.conn).await.0, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_body_commits_nothing_for_that_chunk() {
    let db = TestDb::new("dd_trunc").await;
    let fake = FakeDatadog::start(Mode::Synthetic).await;
    let cfg = config("trunc", false);
    // The first chunk succeeds, the second comes back cut in half.
    fake.push_faults([]);
    {
        let mut s = fake.state.lock().unwrap();
        s.faults.push_back(Fault::Hang(Duration::ZERO));
        s.faults.push_back(Fault::Truncated);
    }
    let o = run(cmd(
        &db.conn,
        &fake,
        &cfg,
        &["--once", "--since", "3h", "--chunk", "1h", "--until", UNTIL],
    ))
    .await;
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("malformed JSON"), "{}", o.stderr);
    assert!(
        o.stderr.contains("nothing written for this chunk"),
        "{}",
        o.stderr
    );
    let c = connect(&db.conn).await;
    let cur: std::time::SystemTime = c
        .query_one("SELECT cursor_at FROM coherence.ingest_cursors", &[])
        .await
        .unwrap()
        .get(0);
    let cur_s = cur.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert_eq!(
        cur_s,
        UNTIL_S - 2 * 3600,
        "cursor stays after the first chunk"
    );
    let (m, _, _) = table_text(&db.conn).await;
    let first_hour: i64 = (UNTIL_S - 3 * 3600..UNTIL_S - 2 * 3600)
        .step_by(60)
        .map(|t| {
            ["web-1", "web-2"]
                .iter()
                .filter(|h| synthetic_value(h, t).is_some())
                .count() as i64
        })
        .sum();
    assert_eq!(m, first_hour);
    // A re-run completes the range.
    let o = run(cmd(
        &db.conn,
        &fake,
        &cfg,
        &["--once", "--since", "3h", "--chunk", "1h", "--until", UNTIL],
    ))
    .await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(table_text(&db.conn).await.0, expected_points(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_names_the_variables_and_never_prints_keys() {
    let db = TestDb::new("dd_403").await;
    let fake = FakeDatadog::start(Mode::Synthetic).await;
    fake.push_faults([Fault::Forbidden]);
    let cfg = config("403", false);
    let o = run(cmd(
        &db.conn,
        &fake,
        &cfg,
        &[
            "--once", "--since", "1h", "--until", UNTIL, "--log", "debug",
        ],
    ))
    .await;
    assert_ne!(o.code, 0);
    assert!(
        o.stderr.contains("DD_API_KEY") && o.stderr.contains("DD_APP_KEY"),
        "{}",
        o.stderr
    );
    assert!(o.stderr.contains("403"), "{}", o.stderr);
    assert_no_secrets(&o);
    assert_eq!(fake.requests().len(), 1, "403 is not retried");

    // Missing keys and a base URL without the test switch are refused before any request.
    let mut c = cmd(&db.conn, &fake, &cfg, &["--once"]);
    c.env_remove("DD_APP_KEY");
    let o = run(c).await;
    assert!(o.stderr.contains("DD_APP_KEY is not set"), "{}", o.stderr);
    let mut c = cmd(&db.conn, &fake, &cfg, &["--once"]);
    c.env_remove("COHERENCE_ALLOW_TEST_BASE_URL");
    let o = run(c).await;
    assert!(o.stderr.contains("for tests only"), "{}", o.stderr);
    // The seed's variable names work too.
    let mut c = cmd(
        &db.conn,
        &fake,
        &cfg,
        &["--once", "--since", "1h", "--until", UNTIL],
    );
    c.env_remove("DD_API_KEY")
        .env_remove("DD_APP_KEY")
        .env("DATADOG_API_KEY", API_KEY)
        .env("DATADOG_APP_KEY", APP_KEY);
    let o = run(c).await;
    assert_eq!(o.code, 0, "{}", o.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_backfill_resumes_exactly() {
    let cfg = config("kill", true);
    // Uninterrupted reference run.
    let reference = TestDb::new("dd_kill_ref").await;
    let fake = FakeDatadog::start(Mode::Synthetic).await;
    let o = run(cmd(
        &reference.conn,
        &fake,
        &cfg,
        &[
            "--once", "--since", "48h", "--chunk", "1h", "--until", UNTIL,
        ],
    ))
    .await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    let want = table_text(&reference.conn).await;
    assert_eq!(want.0, expected_points(48));

    for signal in ["KILL", "TERM"] {
        let db = TestDb::new(&format!("dd_kill_{}", signal.to_lowercase())).await;
        let fake = FakeDatadog::start(Mode::Synthetic).await;
        fake.set_delay(Duration::from_millis(60));
        let mut child = cmd(
            &db.conn,
            &fake,
            &cfg,
            &[
                "--once", "--since", "48h", "--chunk", "1h", "--until", UNTIL,
            ],
        )
        .spawn()
        .unwrap();
        // Wait until part of the backfill is committed, then kill it.
        let c = connect(&db.conn).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let n: i64 = c
                .query_one("SELECT count(*) FROM coherence.metrics", &[])
                .await
                .unwrap()
                .get(0);
            if n > 0 || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let pid = child.id().unwrap().to_string();
        std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap();
        let status = child.wait().await.unwrap();
        let partial = table_text(&db.conn).await;
        assert!(
            partial.0 > 0 && partial.0 < want.0,
            "{signal}: killed mid-backfill ({} of {})",
            partial.0,
            want.0
        );
        if signal == "TERM" {
            assert_eq!(
                status.code(),
                Some(130),
                "SIGTERM: graceful stop with exit 130 in --once mode"
            );
        }
        // Re-run: finishes the range; nothing lost, nothing doubled.
        fake.set_delay(Duration::ZERO);
        let o = run(cmd(
            &db.conn,
            &fake,
            &cfg,
            &[
                "--once", "--since", "48h", "--chunk", "1h", "--until", UNTIL,
            ],
        ))
        .await;
        assert_eq!(o.code, 0, "{}", o.stderr);
        assert_eq!(
            table_text(&db.conn).await,
            want,
            "{signal}: resumed run equals the uninterrupted one"
        );
    }
}
