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
        first
            .stdout
            .contains("44 values skipped (null, NaN or not a number)"),
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
async fn a_truncated_body_is_tried_again_and_the_chunk_lands_whole() {
    let db = TestDb::new("dd_trunc").await;
    let fake = FakeDatadog::start(Mode::Synthetic).await;
    let cfg = config("trunc", false);
    // The first chunk succeeds, the second comes back cut in half once.
    fake.push_faults([Fault::Hang(Duration::ZERO), Fault::Truncated]);
    let o = run(cmd(
        &db.conn,
        &fake,
        &cfg,
        &["--once", "--since", "3h", "--chunk", "1h", "--until", UNTIL],
    ))
    .await;
    assert_eq!(o.code, 0, "{} {}", o.stdout, o.stderr);
    assert!(o.stderr.contains("malformed JSON"), "{}", o.stderr);
    assert!(o.stderr.contains("trying again"), "{}", o.stderr);
    assert!(o.stdout.contains("0 chunks skipped"), "{}", o.stdout);
    assert_eq!(table_text(&db.conn).await.0, expected_points(3));
    assert_eq!(fake.requests().len(), 4, "3 chunks, one of them twice");
}

fn config_text(name: &str, text: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("coherence-dd-{name}-{}.toml", std::process::id()));
    std::fs::write(&p, text).unwrap();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_of_one_host_stay_two_series_end_to_end() {
    let db = TestDb::new("dd_devices").await;
    let fake = FakeDatadog::start(Mode::Synthetic).await;
    let cfg = config_text(
        "devices",
        "[[metrics]]\nquery = \"avg:system.disk.in_use{*} by {host,device}\"\nname = \"disk\"\nscale = 100\n",
    );
    let o = run(cmd(
        &db.conn,
        &fake,
        &cfg,
        &["--once", "--since", "6h", "--until", UNTIL],
    ))
    .await;
    assert_eq!(o.code, 0, "{} {}", o.stdout, o.stderr);
    let c = connect(&db.conn).await;
    let rows = c
        .query(
            "SELECT host, metric_name, count(*), coherence.series_labels(metric_name)::text
               FROM coherence.metrics GROUP BY 1, 2 ORDER BY 1, 2",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(String, String, i64, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(
        got,
        [
            (
                "db-1".into(),
                r#"disk{device="sda"}"#.into(),
                360,
                r#"{"device": "sda"}"#.into()
            ),
            (
                "db-1".into(),
                r#"disk{device="sdb"}"#.into(),
                360,
                r#"{"device": "sdb"}"#.into()
            ),
        ]
    );
    // Detection sees two series: the spike of sdb is an event of sdb alone.
    let ev = c
        .query(
            "SELECT DISTINCT metric, kind, extract(epoch FROM peak_at)::bigint
               FROM coherence.detect_events(timestamptz '2025-12-31 23:00Z', timestamptz '2026-01-01 00:00Z', interval '6 hours')",
            &[],
        )
        .await
        .unwrap();
    let ev: Vec<(String, String, i64)> =
        ev.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
    assert!(!ev.is_empty(), "the spike is found");
    assert!(
        ev.iter().all(|(m, _, _)| m == r#"disk{device="sdb"}"#),
        "events only on sdb: {ev:?}"
    );
    assert!(
        ev.iter()
            .any(|(_, k, at)| k == "spike" && *at == common::fake_datadog::DEVICE_SPIKE_AT),
        "{ev:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_bodies_and_resets_or_stalls_mid_body_are_handled() {
    let reference = TestDb::new("dd_ref2").await;
    let fake = FakeDatadog::start(Mode::Synthetic).await;
    let cfg = config("midbody", false);
    let args = [
        "--once",
        "--since",
        "3h",
        "--chunk",
        "1h",
        "--until",
        UNTIL,
        "--timeout",
        "1s",
    ];
    let o = run(cmd(&reference.conn, &fake, &cfg, &args)).await;
    assert_eq!(o.code, 0, "{}", o.stderr);

    let db = TestDb::new("dd_midbody").await;
    let fake = FakeDatadog::start(Mode::Synthetic).await;
    fake.push_faults([
        Fault::Gzip,
        Fault::ResetMidBody,
        Fault::StallMidBody(Duration::from_secs(3)),
    ]);
    let o = run(cmd(&db.conn, &fake, &cfg, &args)).await;
    assert_eq!(o.code, 0, "{} {}", o.stdout, o.stderr);
    assert!(o.stdout.contains("2 retries"), "{}", o.stdout);
    assert!(
        o.stderr.contains("body read failed") || o.stderr.contains("timeout"),
        "{}",
        o.stderr
    );
    assert_eq!(
        table_text(&db.conn).await,
        table_text(&reference.conn).await
    );
    assert_eq!(fake.requests().len(), 5, "3 chunks, 2 retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured() {
    let db = TestDb::new("dd_retry_after").await;
    let fake = FakeDatadog::start(Mode::Synthetic).await;
    fake.push_faults([Fault::RateLimit {
        header: "Retry-After",
        reset: 2,
    }]);
    let cfg = config("retry_after", false);
    let started = Instant::now();
    let o = run(cmd(
        &db.conn,
        &fake,
        &cfg,
        &["--once", "--since", "1h", "--until", UNTIL],
    ))
    .await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "waited the 2 s the server asked"
    );
    assert_eq!(table_text(&db.conn).await.0, expected_points(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_chunk_is_skipped_and_a_refused_query_fails_alone_while_the_daemon_runs_on() {
    let db = TestDb::new("dd_isolated").await;
    let fake = FakeDatadog::start(Mode::Synthetic).await;
    let cfg = config_text(
        "isolated",
        "[[metrics]]\nquery = \"avg:poison{*} by {host}\"\nname = \"bad\"\n\n\
         [[metrics]]\nquery = \"avg:refused{\"\nname = \"typo\"\n\n\
         [[metrics]]\nquery = \"avg:system.cpu.user{*} by {host}\"\nname = \"cpu\"\n\n\
         [[metrics]]\nquery = \"avg:odd{*} by {host,team}\"\nname = \"odd\"\n",
    );
    let mut daemon = cmd(
        &db.conn,
        &fake,
        &cfg,
        &[
            "--since",
            "2h",
            "--chunk",
            "1h",
            "--interval",
            "1s",
            "--skip-after",
            "2",
            "--retries",
            "1",
        ],
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let c = connect(&db.conn).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = c
            .query_one(
                "SELECT (SELECT count(*) FROM coherence.ingest_skipped WHERE query = 'avg:poison{*} by {host}'),
                        (SELECT count(*) FROM coherence.metrics WHERE metric_name = 'cpu'),
                        (SELECT count(*) FROM coherence.metrics WHERE metric_name LIKE 'odd%'),
                        (SELECT failures FROM coherence.ingest_status WHERE query = 'avg:refused{')",
                &[],
            )
            .await
            .unwrap();
        let (skipped, cpu, odd, fails): (i64, i64, i64, Option<i32>) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        if skipped >= 2 && cpu > 0 && odd > 0 && fails.unwrap_or(0) >= 2 {
            break;
        }
        assert!(daemon.try_wait().unwrap().is_none(), "the daemon exited");
        assert!(
            Instant::now() < deadline,
            "feeds did not settle: {skipped} {cpu} {odd} {fails:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Still running after more passes.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        daemon.try_wait().unwrap().is_none(),
        "the daemon keeps running"
    );
    let st = std::process::Command::new("kill")
        .args(["-TERM", &daemon.id().unwrap().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let out = daemon.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("chunk skipped"), "{stderr}");
    assert!(stderr.contains("feed failing"), "{stderr}");

    // What a user sees: the refused query's reason, the skipped ranges, the healthy feeds.
    let r = c
        .query_one(
            "SELECT last_error, failing_since IS NOT NULL FROM coherence.ingest_status WHERE query = 'avg:refused{'",
            &[],
        )
        .await
        .unwrap();
    let (err, failing): (String, bool) = (r.get(0), r.get(1));
    assert!(
        err.contains("HTTP 400") && err.contains("Error parsing query"),
        "{err}"
    );
    assert!(failing);
    let r = c
        .query_one(
            "SELECT min(tries), bool_and(error LIKE '%malformed JSON%'), bool_and(until_at - from_at <= interval '1 hour')
               FROM coherence.ingest_skipped",
            &[],
        )
        .await
        .unwrap();
    let (tries, malformed, ranged): (i32, bool, bool) = (r.get(0), r.get(1), r.get(2));
    assert_eq!((tries, malformed, ranged), (2, true, true));
    let r = c
        .query_one(
            "SELECT failures, last_error IS NULL FROM coherence.ingest_status WHERE query = 'avg:system.cpu.user{*} by {host}'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!((r.get::<_, i32>(0), r.get::<_, bool>(1)), (0, true));
    // The odd feed: a NUL in a tag is stored as U+FFFD, NaN and non-numbers are skipped.
    let r = c
        .query_one(
            "SELECT min(metric_name), count(*) FILTER (WHERE value <> value) FROM coherence.metrics WHERE metric_name LIKE 'odd%'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, String>(0), "odd{team=\"a\u{FFFD}b\"}");
    assert_eq!(r.get::<_, i64>(1), 0);

    // --once reports the failing feed with exit code 1, after ingesting the others.
    let o = run(cmd(&db.conn, &fake, &cfg, &["--once", "--retries", "0"])).await;
    assert_eq!(o.code, 1, "{} {}", o.stdout, o.stderr);
    assert!(o.stdout.contains("failing feeds: typo"), "{}", o.stdout);
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
