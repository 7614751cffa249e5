//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::process::Command;
use tokio_postgres::{Client, NoTls};

/// Admin connection string (URL or key=value), pointing at a maintenance database.
pub fn admin() -> String {
    std::env::var("COHERENCE_TEST_PG").expect(
        "COHERENCE_TEST_PG is not set: run these tests with `make test`, which points it at the \
         local cluster (or set it to an admin connection string)",
    )
}

/// The same connection string with another database name.
pub fn with_db(conn: &str, db: &str) -> String {
    if conn.starts_with("postgres://") || conn.starts_with("postgresql://") {
        let (base, query) = conn
            .split_once('?')
            .map_or((conn, None), |(b, q)| (b, Some(q)));
        let scheme_end = base.find("://").unwrap() + 3;
        let host_end = base[scheme_end..]
            .find('/')
            .map_or(base.len(), |i| scheme_end + i);
        let mut s = format!("{}/{}", &base[..host_end], db);
        if let Some(q) = query {
            s.push('?');
            s.push_str(q);
        }
        s
    } else {
        let kept: Vec<&str> = conn
            .split_whitespace()
            .filter(|kv| !kv.starts_with("dbname="))
            .collect();
        format!("{} dbname={}", kept.join(" "), db)
    }
}

pub async fn connect(conn: &str) -> Client {
    let (client, c) = tokio_postgres::connect(conn, NoTls).await.expect("connect");
    tokio::spawn(async move {
        let _ = c.await;
    });
    client
}

/// A fresh database with the extension, dropped again on drop.
pub struct TestDb {
    pub name: String,
    pub conn: String,
}

impl TestDb {
    /// A fresh database with the coherence extension.
    pub async fn new(tag: &str) -> TestDb {
        let db = TestDb::empty(tag).await;
        connect(&db.conn)
            .await
            .batch_execute("CREATE EXTENSION coherence")
            .await
            .unwrap();
        db
    }

    /// A fresh database without the extension.
    pub async fn empty(tag: &str) -> TestDb {
        let name = format!("coherence_it_{tag}_{}", std::process::id());
        let admin_client = connect(&admin()).await;
        admin_client
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await
            .unwrap();
        admin_client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        TestDb {
            conn: with_db(&admin(), &name),
            name,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let c = connect(&admin()).await;
                let _ = c
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await;
            });
        })
        .join();
    }
}

pub fn ingest(conn: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_coherence-ingest"))
        .env("DATABASE_URL", conn)
        .args(args)
        .output()
        .expect("run coherence-ingest")
}

pub fn ok(out: std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "coherence-ingest failed: {}\n{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
pub mod fake_datadog;
