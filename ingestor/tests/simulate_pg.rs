//! Integration tests of `coherence-ingest simulate` against a real PostgreSQL with the
//! coherence extension installed. Enabled with `--features integration`; `make test` runs them
//! against the local cluster with COHERENCE_TEST_PG set to an admin connection string.
#![cfg(feature = "integration")]

use std::process::Command;
use tokio_postgres::Client;

mod common;

use common::*;

/// An order-independent fingerprint of the data rows (not ids or insert times).
async fn fingerprint(c: &Client) -> (i64, i64, String) {
    let m: i64 = c
        .query_one("SELECT count(*) FROM coherence.metrics", &[])
        .await
        .unwrap()
        .get(0);
    let e: i64 = c
        .query_one("SELECT count(*) FROM coherence.signal_events", &[])
        .await
        .unwrap()
        .get(0);
    let h: String = c
        .query_one(
            "SELECT md5(coalesce((SELECT string_agg(concat_ws('|', host, metric_name, value::text,
                        extract(epoch FROM \"timestamp\")::text), ',' ORDER BY host, metric_name, \"timestamp\")
                      FROM coherence.metrics), '') ||
                    coalesce((SELECT string_agg(concat_ws('|', source, source_id, host, severity,
                        extract(epoch FROM ts)::text), ',' ORDER BY source, source_id)
                      FROM coherence.signal_events), ''))",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    (m, e, h)
}

/// Detection results: (anomalies, incidents, edges, md5 of their content).
async fn results(c: &Client) -> (i64, i64, i64, String) {
    let r = c
        .query_one(
            "SELECT (SELECT count(*) FROM coherence.anomalies), (SELECT count(*) FROM coherence.incidents),
                    (SELECT count(*) FROM coherence.incident_edges),
                    md5(coalesce((SELECT string_agg(to_jsonb(a)::text, ',' ORDER BY id) FROM coherence.anomalies a), '')
                     || coalesce((SELECT string_agg(to_jsonb(i)::text, ',' ORDER BY id) FROM coherence.incidents i), '')
                     || coalesce((SELECT string_agg(to_jsonb(e)::text, ',' ORDER BY incident_id, cause, effect)
                                    FROM coherence.incident_edges e), ''))",
            &[],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1), r.get(2), r.get(3))
}

#[tokio::test]
async fn simulate_loads_the_scenario_and_is_idempotent() {
    let db = TestDb::new("idem").await;
    let first = ok(ingest(&db.conn, &["simulate"]));
    assert!(first.contains("17280 metric rows (17280 new)"), "{first}");
    let c = connect(&db.conn).await;
    let before = fingerprint(&c).await;
    assert_eq!(before.0, 17_280);
    let errors: i64 = c
        .query_one(
            "SELECT count(*) FROM coherence.signal_events WHERE host = 'host-stressed' AND severity = 'error'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(errors, 13);
    let second = ok(ingest(&db.conn, &["simulate"]));
    assert!(second.contains("(0 new)"), "{second}");
    assert_eq!(
        fingerprint(&c).await,
        before,
        "a second run changes nothing"
    );
}

#[tokio::test]
async fn same_seed_same_rows_other_seed_other_rows() {
    let a = TestDb::new("seed_a").await;
    let b = TestDb::new("seed_b").await;
    ok(ingest(
        &a.conn,
        &["simulate", "--seed", "7", "--hosts", "3", "--hours", "6"],
    ));
    ok(ingest(
        &b.conn,
        &["simulate", "--seed", "7", "--hosts", "3", "--hours", "6"],
    ));
    let (ca, cb) = (connect(&a.conn).await, connect(&b.conn).await);
    let fa = fingerprint(&ca).await;
    assert_eq!(fa.0, 3 * 3 * 360);
    assert_eq!(fa, fingerprint(&cb).await);
    ok(ingest(
        &b.conn,
        &["simulate", "--seed", "8", "--hosts", "3", "--hours", "6"],
    ));
    assert_ne!(
        fingerprint(&cb).await.2,
        fa.2,
        "another seed adds other rows"
    );
}

#[tokio::test]
async fn detection_contract_on_the_simulated_scenario() {
    let db = TestDb::new("detect").await;
    ok(ingest(&db.conn, &["simulate"]));
    let c = connect(&db.conn).await;
    let rows = c
        .query(
            "SELECT host, metric, detector, flagged, risk, summary
               FROM coherence.detect('-infinity', 'infinity')",
            &[],
        )
        .await
        .unwrap();
    let find = |h: &str, m: &str, d: &str| {
        rows.iter()
            .find(|r| {
                r.get::<_, String>(0) == h
                    && r.get::<_, String>(1) == m
                    && r.get::<_, String>(2) == d
            })
            .unwrap_or_else(|| panic!("no row for {h}:{m} {d}"))
    };
    for (m, d, text) in [
        ("cpu", "variance_escalation", "Variance escalated"),
        ("memory", "trend", "increase, leak pattern"),
        ("cpu", "spikes", "spikes, max 94.98%"),
    ] {
        let r = find("host-stressed", m, d);
        let (flagged, risk, summary): (bool, f64, String) = (r.get(3), r.get(4), r.get(5));
        assert!(flagged && risk >= 0.9, "{summary} risk {risk}");
        assert!(summary.contains(text), "{summary}");
    }
    for r in rows
        .iter()
        .filter(|r| r.get::<_, String>(0) == "host-healthy")
    {
        let risk: f64 = r.get(4);
        assert!(
            risk < 0.5,
            "healthy host: {} risk {risk}",
            r.get::<_, String>(5)
        );
    }
}

#[tokio::test]
async fn pg_dump_and_restore_keep_every_row() {
    let src = TestDb::new("dump_src").await;
    ok(ingest(&src.conn, &["simulate", "--hours", "12"]));
    let csrc = connect(&src.conn).await;
    csrc.batch_execute(
        "INSERT INTO coherence.signal_events (ts, host, fingerprint, severity, metric, value, source, source_id)
         VALUES ('2025-12-13 04:10+00', 'h', 'h:x', 'warn', 'x', 1.25, 'manual', 'dump-test')",
    )
    .await
    .unwrap();
    csrc.query_one("SELECT coherence.run_detection()", &[])
        .await
        .unwrap();
    // Rows in day partitions (not only the default one): they are dumped as tables of their
    // own, attached to the extension's partitioned table on restore.
    let moved: i64 = csrc
        .query_one(
            "SELECT coalesce(sum(moved_rows), 0)::bigint FROM coherence.create_partitions(backfill => 3)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(moved > 0, "some rows moved to day partitions");
    let want = fingerprint(&csrc).await;
    let want_results = results(&csrc).await;
    assert!(
        want_results.0 > 0 && want_results.1 > 0,
        "the dump includes detection results"
    );
    let dump = Command::new("pg_dump")
        .args(["--no-owner", "-d", &src.conn])
        .output()
        .unwrap();
    assert!(
        dump.status.success(),
        "pg_dump: {}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let dst = TestDb::empty("dump_dst").await;
    let path = std::env::temp_dir().join(format!("coherence-dump-{}.sql", std::process::id()));
    std::fs::write(&path, &dump.stdout).unwrap();
    let restore = Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &dst.conn, "-f"])
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(
        restore.status.success(),
        "restore: {}",
        String::from_utf8_lossy(&restore.stderr)
    );
    let cdst = connect(&dst.conn).await;
    assert_eq!(
        fingerprint(&cdst).await,
        want,
        "restored rows equal the dumped rows"
    );
    assert_eq!(
        results(&cdst).await,
        want_results,
        "anomalies, incidents and edges restored"
    );
    // The id sequence was restored too: a new row does not collide with restored ids.
    cdst.batch_execute(
        "INSERT INTO coherence.metrics (host, metric_name, value, \"timestamp\") VALUES ('new', 'cpu', 1, now())",
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn clear_errors_for_bad_setup() {
    let db = TestDb::empty("noext").await;
    let out = ingest(&db.conn, &["simulate"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("CREATE EXTENSION coherence"), "{err}");

    let out = Command::new(env!("CARGO_BIN_EXE_coherence-ingest"))
        .env_remove("DATABASE_URL")
        .arg("simulate")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("DATABASE_URL"));

    let out = ingest("host=/nonexistent port=1 user=x dbname=y", &["simulate"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect"));
}

#[tokio::test]
async fn the_last_hour_finds_the_cpu_spikes_when_they_start_and_calls_them_routine_later() {
    // "The last hour" as a user asks it: detect_events over one hour with its default 7 days
    // of lookback as the baseline, no warm-up knowledge needed.
    let db = TestDb::new("lasthour").await;
    ok(ingest(&db.conn, &["simulate"]));
    let c = connect(&db.conn).await;
    let cpu_events = |since: &'static str, min_risk: f64| {
        let c = &c;
        async move {
            c.query(
                "SELECT e.kind, e.risk, e.summary
                   FROM coherence.detect_events($1::text::timestamptz,
                                                $1::text::timestamptz + interval '1 hour',
                                                min_risk => $2) e
                  WHERE e.host = 'host-stressed' AND e.metric = 'cpu' AND e.detector = 'robust'",
                &[&since, &min_risk],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r.get::<_, String>(0),
                    r.get::<_, f64>(1),
                    r.get::<_, String>(2),
                )
            })
            .collect::<Vec<_>>()
        }
    };
    // The hour the injected spikes begin (after a quiet day): found, with a real risk.
    let first = cpu_events("2025-12-12 07:45+00", 0.2).await;
    assert!(
        first.iter().any(|(k, r, s)| k == "spike"
            && *r >= 0.5
            && s.contains("host-stressed:cpu → spike to 77.05% at 2025-12-12 08:14 UTC")),
        "{first:?}"
    );
    // The hour of the largest spike (94.98%, 3 minutes before the error burst): by then ~30
    // spikes like it are in the lookback, so it is routine for this series (risk < 0.2, not
    // reported by default) but still there as a candidate; run_detection keeps it as the
    // burst's context (tests/incidents_pg.rs).
    let routine = cpu_events("2025-12-13 03:40+00", 0.2).await;
    assert!(routine.is_empty(), "{routine:?}");
    let candidates = cpu_events("2025-12-13 03:40+00", 0.0).await;
    assert!(
        candidates
            .iter()
            .any(|(k, r, s)| k == "spike" && *r < 0.2 && s.contains("spike to 94.98%")),
        "{candidates:?}"
    );
}
