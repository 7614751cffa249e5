//! `coherence-ingest serve` end to end: the flight simulator's incident, the server connected
//! as a login role that is only a member of coherence_reader, its JSON API and access rules,
//! and the page in headless Chromium (Debian's `chromium`, driven over the DevTools protocol):
//! the incident is listed, its plots have the series, the expected band and the anomaly marks;
//! a new incident made in the database appears on the open page within 5 s without a reload.
//! A screenshot is saved under target/live-view/. Enabled with `--features integration`.
#![cfg(feature = "integration")]

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;

/// The connection string with another user.
fn with_user(conn: &str, user: &str) -> String {
    if conn.starts_with("postgres://") || conn.starts_with("postgresql://") {
        let scheme_end = conn.find("://").unwrap() + 3;
        let rest = &conn[scheme_end..];
        let host_start = rest.find('@').map_or(0, |i| i + 1);
        format!("{}{user}@{}", &conn[..scheme_end], &rest[host_start..])
    } else {
        let kept: Vec<&str> = conn
            .split_whitespace()
            .filter(|kv| !kv.starts_with("user=") && !kv.starts_with("password="))
            .collect();
        format!("{} user={user}", kept.join(" "))
    }
}

/// A login role whose only right is membership in coherence_reader; dropped on drop.
struct Viewer {
    name: String,
}

impl Viewer {
    async fn new(tag: &str) -> Viewer {
        let name = format!("coherence_it_{tag}_{}", std::process::id());
        let c = connect(&admin()).await;
        c.batch_execute(&format!(
            "DROP ROLE IF EXISTS {name}; CREATE ROLE {name} LOGIN IN ROLE coherence_reader"
        ))
        .await
        .unwrap();
        Viewer { name }
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    let _ = connect(&admin())
                        .await
                        .batch_execute(&format!("DROP ROLE IF EXISTS {name}"))
                        .await;
                });
        })
        .join();
    }
}

/// Starts `serve` and returns it with the URL it printed.
async fn serve(conn: &str, args: &[&str], env: &[(&str, &str)]) -> (Child, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_coherence-ingest"));
    cmd.env("DATABASE_URL", conn)
        .env_remove("COHERENCE_SERVE_TOKEN")
        .env_remove("COHERENCE_SERVE_BIND")
        .arg("serve")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start coherence-ingest serve");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("serve printed no URL within 20 s")
        .unwrap()
        .expect("serve exited before printing its URL");
    let url = line
        .strip_prefix("coherence-ingest serve: ")
        .unwrap_or_else(|| panic!("unexpected first line: {line}"))
        .to_string();
    (child, url)
}

async fn get_json(http: &reqwest::Client, url: &str) -> (u16, Value) {
    let r = http.get(url).send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A minimal DevTools-protocol client on one page target.
struct Cdp {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    next: u64,
}

impl Cdp {
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let msg = json!({ "id": id, "method": method, "params": params }).to_string();
        self.ws.send(Message::Text(msg.into())).await.unwrap();
        loop {
            let m = tokio::time::timeout(Duration::from_secs(30), self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no answer to {method} within 30 s"))
                .expect("devtools connection closed")
                .unwrap();
            let Message::Text(t) = m else { continue };
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["id"].as_u64() == Some(id) {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// Evaluates a JavaScript expression in the page; returns its JSON value.
    async fn eval(&mut self, expr: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expr, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        assert!(r.get("exceptionDetails").is_none(), "{expr}: {r}");
        r["result"]["value"].clone()
    }

    /// Polls `expr` until it is true; returns how long that took, or None at the deadline.
    async fn wait_for(&mut self, expr: &str, within: Duration) -> Option<Duration> {
        let t0 = Instant::now();
        while t0.elapsed() < within {
            if self.eval(expr).await == Value::Bool(true) {
                return Some(t0.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }
}

/// Headless Chromium on a free DevTools port, with a throwaway profile.
struct Browser {
    child: Child,
    profile: std::path::PathBuf,
    port: u16,
}

impl Browser {
    async fn start() -> Browser {
        let bin =
            std::env::var("COHERENCE_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        assert!(
            std::path::Path::new(&bin).exists(),
            "{bin} is missing: `make setup` installs Debian's chromium (apt-get install -y chromium), \
             or set COHERENCE_CHROMIUM"
        );
        let profile =
            std::env::temp_dir().join(format!("coherence-chromium-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&profile);
        let mut child = Command::new(bin)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--window-size=1400,1500",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromium");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let port = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(l) = lines.next_line().await.unwrap() {
                if let Some(rest) = l.strip_prefix("DevTools listening on ws://127.0.0.1:") {
                    return rest.split('/').next().unwrap().parse::<u16>().unwrap();
                }
            }
            panic!("chromium exited without a DevTools port");
        })
        .await
        .expect("chromium printed no DevTools port within 30 s");
        // Keep draining its stderr (D-Bus noise) so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Browser {
            child,
            profile,
            port,
        }
    }

    /// The DevTools connection to its first page.
    async fn page(&self) -> Cdp {
        let http = reqwest::Client::new();
        let list: Value = http
            .get(format!("http://127.0.0.1:{}/json/list", self.port))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .map(|t| serde_json::from_str(&t).unwrap())
            .unwrap();
        let ws_url = list
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["type"] == "page")
            .expect("a page target")["webSocketDebuggerUrl"]
            .as_str()
            .unwrap()
            .to_string();
        let (ws, _) = tokio_tungstenite::connect_async(ws_url).await.unwrap();
        Cdp { ws, next: 0 }
    }

    async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

fn b64decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let bytes: Vec<u8> = s
        .bytes()
        .filter(|c| *c != b'=' && !c.is_ascii_whitespace())
        .collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= val(*c) << (18 - 6 * i);
        }
        let k = chunk.len() - 1;
        out.extend_from_slice(&[(n >> 16) as u8, (n >> 8) as u8, n as u8][..k]);
    }
    out
}

#[tokio::test]
async fn serve_refuses_an_open_bind_without_a_token() {
    // No database needed: the check comes first.
    let out = ingest(
        "host=/nonexistent dbname=x",
        &["serve", "--bind", "0.0.0.0:0"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a loopback address") && err.contains("token"),
        "{err}"
    );
    let out = ingest(
        "host=/nonexistent dbname=x",
        &["serve", "--bind", "0.0.0.0:0", "--token", "short"],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 16 characters"));
}

#[tokio::test]
async fn live_view_in_chromium() {
    let t_all = Instant::now();
    let db = TestDb::new("live").await;
    ok(ingest(&db.conn, &["simulate"]));
    let admin_c = connect(&db.conn).await;
    admin_c
        .query_one("SELECT coherence.run_detection()", &[])
        .await
        .unwrap();
    let viewer = Viewer::new("live").await;
    let reader_conn = with_user(&db.conn, &viewer.name);
    let (mut server, url) = serve(&reader_conn, &["--bind", "127.0.0.1:0"], &[]).await;
    let http = reqwest::Client::new();

    // The API, as the reader.
    let (s, list) = get_json(&http, &format!("{url}api/incidents")).await;
    assert_eq!(s, 200, "{list}");
    let sim = list
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["host"] == "host-stressed")
        .unwrap_or_else(|| panic!("the simulator's incident is not listed: {list}"))
        .clone();
    let id = sim["id"].as_i64().unwrap();
    let (s, inc) = get_json(&http, &format!("{url}api/incidents/{id}")).await;
    assert_eq!(s, 200, "{inc}");
    assert!(inc["narrative"].as_str().unwrap().contains("host-stressed"));
    assert!(!inc["timeline"].as_array().unwrap().is_empty());
    assert!(!inc["graph"].as_array().unwrap().is_empty());
    let q = format!(
        "{url}api/series?host=host-stressed&metric=cpu&since={}&until={}",
        inc["plot_since"].as_str().unwrap().replace('+', "%2B"),
        inc["plot_until"].as_str().unwrap().replace('+', "%2B")
    );
    let (s, series) = get_json(&http, &q).await;
    assert_eq!(s, 200, "{series}");
    assert_eq!(series["band"], true, "expected_band is installed");
    let pts = series["points"].as_array().unwrap();
    assert!(pts.len() > 1000, "{} points", pts.len());
    let banded = pts
        .iter()
        .filter(|p| p[3].is_number() && p[4].is_number())
        .count();
    assert!(
        banded > pts.len() / 2,
        "band on {banded} of {} points",
        pts.len()
    );
    assert!(pts
        .iter()
        .all(|p| !p[3].is_number() || p[3].as_f64() <= p[4].as_f64()));
    assert!(!series["anomalies"].as_array().unwrap().is_empty());
    assert!(series["errors"].as_array().unwrap().len() >= 10);
    for bad in [
        "api/series?metric=cpu",
        "api/series?host=h&metric=m&since=yesterday",
        "api/series?host=h&metric=m&since=2025-01-01T00:00:00Z&until=2025-03-01T00:00:00Z",
        "api/incidents/x",
    ] {
        let (s, v) = get_json(&http, &format!("{url}{bad}")).await;
        assert_eq!(s, 400, "{bad}: {v}");
    }
    assert_eq!(
        get_json(&http, &format!("{url}api/incidents/999999"))
            .await
            .0,
        404
    );
    // DNS rebinding: a foreign Host name is refused without a token.
    let r = http
        .get(format!("{url}api/incidents"))
        .header("Host", "attacker.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);

    // The page in Chromium.
    let t_browser = Instant::now();
    let browser = Browser::start().await;
    let mut page = browser.page().await;
    let t_started = t_browser.elapsed();
    page.call("Page.enable", json!({})).await;
    page.call("Page.navigate", json!({ "url": url })).await;
    let listed = format!(
        "document.querySelector('#incidents tbody tr[data-incident-id=\"{id}\"][data-host=\"host-stressed\"]') !== null"
    );
    let t = page.wait_for(&listed, Duration::from_secs(20)).await;
    assert!(
        t.is_some(),
        "the simulator's incident is not listed on the page"
    );
    let drawn = format!(
        "document.body.dataset.selected === '{id}' && Number(document.body.dataset.plots) >= 2 && document.body.dataset.live === 'connected'"
    );
    let Some(t_drawn) = page.wait_for(&drawn, Duration::from_secs(20)).await else {
        let state = page
            .eval("JSON.stringify(document.body.dataset) + ' ' + (document.getElementById('error').textContent)")
            .await;
        panic!("the incident's plots were not drawn within 20 s: {state}");
    };
    let cpu: Value = page
        .eval(
            "(() => { const f = document.querySelector('figure.plot[data-metric=\"cpu\"]');
                 if (!f) return null;
                 const d = (s) => [...f.querySelectorAll(s)].filter((e) => (e.getAttribute('d') || 'x').length > 10).length;
                 return { points: Number(f.dataset.points), band_points: Number(f.dataset.bandPoints),
                          series: d('path.series-line'), band: d('path.band'),
                          marks: f.querySelectorAll('circle.anomaly-mark').length,
                          spans: f.querySelectorAll('rect.anomaly-span').length,
                          errors: f.querySelectorAll('path.error-marker').length }; })()",
        )
        .await;
    assert!(cpu.is_object(), "no cpu plot on the page");
    assert!(cpu["points"].as_i64().unwrap() > 1000, "{cpu}");
    assert_eq!(cpu["series"], 1, "the series line: {cpu}");
    assert!(cpu["band"].as_i64().unwrap() >= 1, "the band: {cpu}");
    assert!(cpu["band_points"].as_i64().unwrap() > 1000, "{cpu}");
    assert!(cpu["marks"].as_i64().unwrap() >= 1, "anomaly marks: {cpu}");
    assert!(cpu["spans"].as_i64().unwrap() >= 1, "anomaly spans: {cpu}");
    assert!(
        cpu["errors"].as_i64().unwrap() >= 10,
        "error markers: {cpu}"
    );
    let memory: Value = page
        .eval(
            "(() => { const f = document.querySelector('figure.plot[data-metric=\"memory\"]');
                 return f ? { tte: f.querySelectorAll('line.tte-line').length,
                              label: (f.querySelector('text.tte-label') || {}).textContent || null } : null; })()",
        )
        .await;
    assert!(
        memory["tte"].as_i64().unwrap_or(0) >= 1,
        "the leak's time-to-exhaustion line: {memory}"
    );
    assert!(
        memory["label"].as_str().unwrap_or("").contains("full at"),
        "{memory}"
    );
    let narrative = page
        .eval("document.querySelector('pre.narrative').textContent")
        .await;
    assert!(
        narrative.as_str().unwrap().contains("Hypothesis"),
        "{narrative}"
    );
    let graph_edges = page
        .eval("document.querySelectorAll('svg.graph path.edge').length")
        .await;
    assert!(graph_edges.as_i64().unwrap() >= 1);
    // Every signal of the incident is on the timeline (repeated errors grouped in one row).
    let timeline_signals = page
        .eval("[...document.querySelectorAll('table.timeline tbody tr')].reduce((n, r) => n + Number(r.dataset.signals), 0)")
        .await;
    assert_eq!(
        timeline_signals.as_u64().unwrap() as usize,
        inc["timeline"].as_array().unwrap().len()
    );

    // Live: a new incident made in the database appears without a reload.
    page.eval("window.__sameDocument = 'yes'").await;
    let before = page.eval("document.body.dataset.incidents").await;
    let t0 = Instant::now();
    admin_c
        .batch_execute(
            "INSERT INTO coherence.metrics (host, metric_name, value, \"timestamp\")
             SELECT 'web-live', 'cpu', CASE WHEN i = 1300 THEN 97.5 ELSE 30.0 + ((i * 7919) % 11 - 5) END,
                    '2025-12-12 00:00+00'::timestamptz + i * interval '1 minute'
               FROM generate_series(0, 1439) i;
             INSERT INTO coherence.signal_events (ts, host, fingerprint, severity, source, source_id, message)
             SELECT '2025-12-12 21:42+00'::timestamptz + k * interval '20 seconds', 'web-live', 'e', 'error', 'live-test', 'e' || k, 'HTTP 500'
               FROM generate_series(0, 5) k;
             SELECT coherence.run_detection();",
        )
        .await
        .unwrap();
    let t_db = t0.elapsed();
    let appeared = page
        .wait_for(
            "document.querySelector('#incidents tbody tr[data-host=\"web-live\"]') !== null",
            Duration::from_secs(5),
        )
        .await;
    let t_live = t0.elapsed();
    assert!(
        appeared.is_some(),
        "the new incident did not appear within 5 s (incidents before: {before}, now: {})",
        page.eval("document.body.dataset.incidents").await
    );
    assert_eq!(
        page.eval("window.__sameDocument").await,
        "yes",
        "the page reloaded"
    );
    let error = page
        .eval("document.getElementById('error').hidden ? null : document.getElementById('error').textContent")
        .await;
    assert!(error.is_null(), "the page shows an error: {error}");
    let updates = page.eval("Number(document.body.dataset.updates)").await;
    assert!(
        updates.as_i64().unwrap() >= 1,
        "no server-sent event counted"
    );

    // The screenshot, a test artifact (the window, 1400 × 1500).
    let shot = page
        .call("Page.captureScreenshot", json!({ "format": "png" }))
        .await;
    let png = b64decode(shot["data"].as_str().unwrap());
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/live-view");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("live-view.png");
    std::fs::write(&path, &png).unwrap();
    println!(
        "live view: incident listed and plotted in {:.2}s after navigation (chromium started in {:.2}s), \
         new incident on the page {:.2}s after the insert ({:.2}s of it detection and commit), \
         {updates} server-sent events; screenshot {} ({} bytes); whole test {:.1}s",
        t_drawn.as_secs_f64(),
        t_started.as_secs_f64(),
        t_live.as_secs_f64(),
        t_db.as_secs_f64(),
        path.display(),
        png.len(),
        t_all.elapsed().as_secs_f64()
    );
    let _ = page.call("Browser.close", json!({})).await;
    browser.stop().await;
    let _ = server.start_kill();
    let _ = server.wait().await;
}

#[tokio::test]
async fn token_guards_every_request() {
    let db = TestDb::new("live_token").await;
    let viewer = Viewer::new("live_token").await;
    let token = "0123456789abcdef0123";
    let (mut server, url) = serve(
        &with_user(&db.conn, &viewer.name),
        &["--bind", "127.0.0.1:0"],
        &[("COHERENCE_SERVE_TOKEN", token)],
    )
    .await;
    let http = reqwest::Client::new();
    for path in ["", "app.js", "api/incidents", "api/events"] {
        let r = http.get(format!("{url}{path}")).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 401, "{path}");
    }
    let r = http
        .get(format!("{url}api/incidents"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.text().await.unwrap(), "[]");
    let wrong = http
        .get(format!("{url}api/incidents"))
        .bearer_auth("0123456789abcdef0124")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    // Opening the page with ?token= sets an HttpOnly cookie the page's requests carry.
    let r = http
        .get(format!("{url}?token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let cookie = r
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap();
    let r = http
        .get(format!("{url}api/incidents"))
        .header("Cookie", pair)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let _ = server.start_kill();
    let _ = server.wait().await;
}

/// Reads server-sent events until one named `name` arrives; returns its data.
async fn next_event(resp: &mut reqwest::Response, buf: &mut String, name: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let mut event = "message";
            let mut data = String::new();
            for l in block.lines() {
                if let Some(e) = l.strip_prefix("event: ") {
                    event = e;
                } else if let Some(d) = l.strip_prefix("data: ") {
                    data.push_str(d);
                }
            }
            if event == name {
                return data;
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, resp.chunk())
            .await
            .unwrap_or_else(|_| panic!("no '{name}' event within 10 s"))
            .unwrap()
            .expect("event stream ended");
        buf.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test]
async fn events_survive_a_dropped_database_connection() {
    let db = TestDb::new("live_drop").await;
    let viewer = Viewer::new("live_drop").await;
    let (mut server, url) = serve(
        &with_user(&db.conn, &viewer.name),
        &["--bind", "127.0.0.1:0"],
        &[],
    )
    .await;
    let http = reqwest::Client::new();
    let mut events = http.get(format!("{url}api/events")).send().await.unwrap();
    assert_eq!(
        events.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let mut buf = String::new();
    next_event(&mut events, &mut buf, "hello").await;
    // The database drops both of serve's sessions (a restart, a failover, an admin). First make
    // sure both exist: an API request opens (or reopens) the query session.
    let admin_c = connect(&db.conn).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let _ = http.get(format!("{url}api/incidents")).send().await;
        let n: i64 = admin_c
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND usename = $1",
                &[&viewer.name],
            )
            .await
            .unwrap()
            .get(0);
        if n == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "serve has {n} sessions, not 2");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let killed: i64 = admin_c
        .query_one(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
              WHERE datname = current_database() AND usename = $1) t",
            &[&viewer.name],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(killed, 2, "serve holds a query and a LISTEN session");
    // The listener comes back and tells the page to refetch ...
    next_event(&mut events, &mut buf, "resync").await;
    // ... notifications flow again, and the API reconnects.
    admin_c
        .batch_execute(
            "INSERT INTO coherence.metrics (host, metric_name, value, \"timestamp\")
             SELECT 'web-drop', 'cpu', CASE WHEN i = 1300 THEN 97.5 ELSE 30.0 + ((i * 7919) % 11 - 5) END,
                    '2025-12-12 00:00+00'::timestamptz + i * interval '1 minute'
               FROM generate_series(0, 1439) i;
             INSERT INTO coherence.signal_events (ts, host, fingerprint, severity, source, source_id)
             SELECT '2025-12-12 21:42+00'::timestamptz + k * interval '20 seconds', 'web-drop', 'e', 'error', 't', 'e' || k
               FROM generate_series(0, 5) k;
             SELECT coherence.run_detection();",
        )
        .await
        .unwrap();
    let data = next_event(&mut events, &mut buf, "incident").await;
    let payload: Value = serde_json::from_str(&data).unwrap();
    assert_eq!(payload["host"], "web-drop", "{payload}");
    assert_eq!(payload["event"], "opened", "{payload}");
    let (s, list) = get_json(&http, &format!("{url}api/incidents")).await;
    assert_eq!(s, 200, "{list}");
    assert!(list
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["host"] == "web-drop"));
    let _ = server.start_kill();
    let _ = server.wait().await;
}
