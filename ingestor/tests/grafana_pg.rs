//! The Grafana dashboard (dashboards/coherence.json): it parses, its structure is importable
//! (a data-source variable every query uses), and every SQL it holds (panels, annotations,
//! template variables) runs, with Grafana's macros and variables substituted as Grafana does,
//! against the flight simulator's data after `coherence.run_detection()`, as a login role that
//! is only a member of coherence_reader. Enabled with `--features integration`.
#![cfg(feature = "integration")]

mod common;

use common::*;
use serde_json::Value;

const FROM: &str = "2025-12-11T00:00:00Z";
const TO: &str = "2025-12-14T00:00:00Z";
const INTERVAL_MS: u64 = 300_000;

fn dashboard() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../dashboards/coherence.json");
    let text = std::fs::read_to_string(path).expect("dashboards/coherence.json");
    serde_json::from_str(&text).expect("dashboards/coherence.json is not valid JSON")
}

/// Replaces `$__name(arg)` with f(arg) everywhere.
fn macro_call(sql: &str, name: &str, f: impl Fn(&str) -> String) -> String {
    let pat = format!("$__{name}(");
    let mut out = String::new();
    let mut rest = sql;
    while let Some(i) = rest.find(&pat) {
        out.push_str(&rest[..i]);
        let after = &rest[i + pat.len()..];
        let mut depth = 1;
        let end = after
            .char_indices()
            .find(|&(_, c)| {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                depth == 0
            })
            .map(|(j, _)| j)
            .unwrap_or_else(|| panic!("unbalanced $__{name}( in {sql}"));
        out.push_str(&f(after[..end].trim()));
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// Grafana's PostgreSQL macros and template variables, as Grafana expands them.
fn expand(sql: &str, vars: &[(&str, &str)]) -> String {
    let mut s = macro_call(sql, "timeFilter", |c| {
        format!("{c} BETWEEN '{FROM}' AND '{TO}'")
    });
    s = macro_call(&s, "timeFrom", |_| format!("'{FROM}'"));
    s = macro_call(&s, "timeTo", |_| format!("'{TO}'"));
    s = s.replace("$__interval_ms", &INTERVAL_MS.to_string());
    s = s.replace("$__interval", &format!("{}s", INTERVAL_MS / 1000));
    for (name, value) in vars {
        let quoted = format!("'{}'", value.replace('\'', "''"));
        s = s.replace(&format!("${{{name}:sqlstring}}"), &quoted);
        s = s.replace(&format!("${{{name}}}"), value);
        s = s.replace(&format!("${name}"), value);
    }
    assert!(
        !s.contains('$'),
        "a macro or variable is left unexpanded: {s}"
    );
    s
}

/// Every SQL text in the dashboard: (where, sql, format).
fn queries(d: &Value) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().expect("panel targets") {
            out.push((
                format!("panel '{}' {}", p["title"].as_str().unwrap(), t["refId"]),
                t["rawSql"].as_str().expect("rawSql").to_string(),
                t["format"].as_str().unwrap_or("table").to_string(),
            ));
        }
    }
    for a in d["annotations"]["list"].as_array().unwrap() {
        if let Some(sql) = a["target"]["rawSql"].as_str() {
            out.push((
                format!("annotation '{}'", a["name"].as_str().unwrap()),
                sql.to_string(),
                "annotation".into(),
            ));
        }
    }
    for v in d["templating"]["list"].as_array().unwrap() {
        if v["type"] == "query" {
            out.push((
                format!("variable {}", v["name"].as_str().unwrap()),
                v["query"].as_str().expect("variable query").to_string(),
                "variable".into(),
            ));
        }
    }
    out
}

#[test]
fn dashboard_is_importable() {
    let d = dashboard();
    assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(d["uid"].as_str().is_some_and(|u| !u.is_empty()));
    let vars = d["templating"]["list"].as_array().unwrap();
    let ds = vars
        .iter()
        .find(|v| v["type"] == "datasource")
        .expect("a data-source variable");
    assert_eq!(ds["query"], "grafana-postgresql-datasource");
    let ds_ref = format!("${{{}}}", ds["name"].as_str().unwrap());
    let mut ids = std::collections::HashSet::new();
    for p in d["panels"].as_array().unwrap() {
        assert!(ids.insert(p["id"].as_i64().unwrap()), "duplicate panel id");
        assert!(p["gridPos"]["w"].as_i64().unwrap() > 0);
        for t in p["targets"].as_array().unwrap() {
            assert_eq!(t["datasource"]["uid"], ds_ref.as_str(), "{}", p["title"]);
        }
    }
    let kinds: Vec<&str> = d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["type"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"table") && kinds.contains(&"timeseries"));
    // The provisioning files next to it.
    for f in ["dashboards.yaml", "datasources.yaml"] {
        let p = concat!(env!("CARGO_MANIFEST_DIR"), "/../dashboards/provisioning/").to_string() + f;
        let t = std::fs::read_to_string(&p).unwrap_or_else(|_| panic!("{p} is missing"));
        assert!(t.contains("apiVersion: 1"), "{p}");
    }
    assert!(queries(&d).len() >= 7);
}

#[tokio::test]
async fn every_dashboard_query_runs_as_the_reader() {
    let db = TestDb::new("grafana").await;
    ok(ingest(&db.conn, &["simulate"]));
    let admin_c = connect(&db.conn).await;
    admin_c
        .query_one("SELECT coherence.run_detection()", &[])
        .await
        .unwrap();
    let role = format!("coherence_it_grafana_{}", std::process::id());
    connect(&admin())
        .await
        .batch_execute(&format!(
            "DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN IN ROLE coherence_reader"
        ))
        .await
        .unwrap();
    let reader_conn = if db.conn.contains("://") {
        let (scheme, rest) = db.conn.split_once("://").unwrap();
        let rest = rest.split_once('@').map_or(rest, |(_, r)| r);
        format!("{scheme}://{role}@{rest}")
    } else {
        let kept: Vec<&str> = db
            .conn
            .split_whitespace()
            .filter(|kv| !kv.starts_with("user=") && !kv.starts_with("password="))
            .collect();
        format!("{} user={role}", kept.join(" "))
    };
    let c = connect(&reader_conn).await;
    let d = dashboard();
    let vars = [
        ("host", "host-stressed"),
        ("metric", "cpu"),
        ("DS", "coherence"),
    ];
    let mut report = Vec::new();
    for (what, sql, format) in queries(&d) {
        let sql = expand(&sql, &vars);
        let stmt = c
            .prepare(&sql)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e:?}\n{sql}"));
        let cols: Vec<&str> = stmt.columns().iter().map(|c| c.name()).collect();
        let rows = c
            .query(&stmt, &[])
            .await
            .unwrap_or_else(|e| panic!("{what}: {e:?}\n{sql}"));
        assert!(
            !rows.is_empty(),
            "{what} returned no rows on the demo data:\n{sql}"
        );
        match format.as_str() {
            "time_series" => assert_eq!(cols[0], "time", "{what}: the first column is time"),
            "annotation" => {
                for c in ["time", "timeend", "text", "tags"] {
                    assert!(cols.contains(&c), "{what}: no {c} column ({cols:?})");
                }
            }
            _ => {}
        }
        report.push(format!("{what}: {} rows", rows.len()));
    }
    // What the panels show on the demo data.
    let band = expand(
        "SELECT count(*) FILTER (WHERE lower IS NOT NULL AND upper IS NOT NULL), count(*) FILTER (WHERE anomalous)
           FROM coherence.expected_band(${host:sqlstring}, ${metric:sqlstring}, $__timeFrom(), $__timeTo())",
        &vars,
    );
    let r = c.query_one(&band, &[]).await.unwrap();
    assert!(
        r.get::<_, i64>(0) > 1000,
        "band points: {}",
        r.get::<_, i64>(0)
    );
    let incidents = expand(&queries(&d)[0].1, &vars);
    let hosts: Vec<String> = c
        .query(&incidents, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get("host"))
        .collect();
    assert!(hosts.iter().any(|h| h == "host-stressed"), "{hosts:?}");
    println!("grafana: {}", report.join("; "));
    drop(c);
    connect(&admin())
        .await
        .batch_execute(&format!("DROP ROLE IF EXISTS {role}"))
        .await
        .unwrap();
}

#[test]
fn macros_expand_like_grafana() {
    let s = expand(
        "SELECT 1 WHERE $__timeFilter(a.ts) AND b < $__timeTo() AND c = ${host:sqlstring} AND d = $metric AND $__interval_ms > 0",
        &[("host", "o'k"), ("metric", "cpu")],
    );
    assert_eq!(
        s,
        "SELECT 1 WHERE a.ts BETWEEN '2025-12-11T00:00:00Z' AND '2025-12-14T00:00:00Z' AND b < '2025-12-14T00:00:00Z' AND c = 'o''k' AND d = cpu AND 300000 > 0"
    );
}
