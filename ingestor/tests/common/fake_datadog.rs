//! A fake Datadog API on loopback for the ingestor's tests: serves the recorded response bodies
//! (tests/fixtures/datadog, copied from Datadog's API clients' cassettes, see SOURCE.md) or
//! synthetic series in the same shape for any time range, and injects faults on request.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[derive(Clone, Debug)]
pub enum Fault {
    /// 429 with this X-RateLimit-Reset (header name spelled as given).
    RateLimit {
        header: &'static str,
        reset: u32,
    },
    ServerError,
    /// Sleep this long before answering (longer than the client timeout: a hang).
    Hang(Duration),
    /// A 200 whose JSON body is cut in half.
    Truncated,
    /// 403 with the recorded body.
    Forbidden,
    /// The body gzip-compressed, with `Content-Encoding: gzip`.
    Gzip,
    /// Headers announce the whole body; half of it is sent, then the connection is reset.
    ResetMidBody,
    /// Headers and half of the body, then silence this long (longer than the client timeout).
    StallMidBody(Duration),
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    /// Recorded bodies verbatim.
    Recorded { query_fixture: &'static str },
    /// Synthetic points every 60 s for web-1 and web-2, in the recorded body's shape.
    Synthetic,
}

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: String,
    pub has_keys: bool,
}

pub struct State {
    pub mode: Mode,
    pub faults: VecDeque<Fault>,
    pub requests: Vec<Request>,
    pub delay: Duration,
}

pub struct FakeDatadog {
    pub url: String,
    pub state: Arc<Mutex<State>>,
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/datadog/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query.split('&').find_map(|kv| {
        kv.split_once('=')
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| v)
    })
}

/// Deterministic synthetic value of a host at a time.
pub fn synthetic_value(host: &str, t: i64) -> Option<f64> {
    if (t / 60) % 17 == 0 {
        return None; // a null point now and then, as Datadog sends for gaps
    }
    let base = if host == "web-1" { 40.0 } else { 60.0 };
    Some(base + ((t / 60) % 23) as f64 * 0.5)
}

/// The minute at which device sdb of db-1 spikes (see [`device_value`]).
pub const DEVICE_SPIKE_AT: i64 = 1_767_225_600 - 30 * 60;

/// Deterministic value of a device of db-1: a gentle sawtooth, and one spike on sdb.
pub fn device_value(device: &str, t: i64) -> f64 {
    if device == "sdb" && t == DEVICE_SPIKE_AT {
        return 95.0;
    }
    let base = if device == "sda" { 50.0 } else { 30.0 };
    base + ((t / 60) % 7) as f64 * 0.25
}

fn series_json(tags: &[&str], scope: &str, pts: &[String]) -> String {
    let tag_set: Vec<String> = tags.iter().map(|t| format!("\"{t}\"")).collect();
    format!(
        r#"{{"metric":"m","interval":60,"tag_set":[{}],"scope":"{scope}","pointlist":[{}],"aggr":"avg","length":{}}}"#,
        tag_set.join(","),
        pts.join(","),
        pts.len()
    )
}

fn synthetic_query(query: &str) -> Vec<u8> {
    let q = param(query, "query").unwrap_or("");
    if q.contains("poison") {
        // Never valid: a feed that must be skipped chunk by chunk.
        return br#"{"status":"ok","series":[{"pointlist":[[1,"#.to_vec();
    }
    let from: i64 = param(query, "from")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let to: i64 = param(query, "to").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut series = Vec::new();
    let minutes = || {
        let start = from - from.rem_euclid(60);
        (start..=to).step_by(60).filter(move |t| *t >= from)
    };
    if q.contains("device") {
        for dev in ["sda", "sdb"] {
            let pts: Vec<String> = minutes()
                .map(|t| format!("[{}.0,{}]", t * 1000, device_value(dev, t)))
                .collect();
            let tag = format!("device:{dev}");
            series.push(series_json(
                &[&tag, "host:db-1"],
                &format!("{tag},host:db-1"),
                &pts,
            ));
        }
    } else if q.contains("odd") {
        // A NUL in a tag and values that are not numbers.
        let pts: Vec<String> = minutes()
            .map(|t| match (t / 60) % 3 {
                0 => format!("[{}.0,\"NaN\"]", t * 1000),
                _ => format!("[{}.0,{}]", t * 1000, (t / 60) % 5),
            })
            .collect();
        series.push(series_json(
            &["host:web-1", "team:a\\u0000b"],
            "host:web-1",
            &pts,
        ));
    }
    for host in ["web-1", "web-2"] {
        if q.contains("device") || q.contains("odd") {
            break;
        }
        let mut pts = Vec::new();
        let mut t = from - from.rem_euclid(60);
        while t <= to {
            if t >= from {
                let v = synthetic_value(host, t).map_or("null".to_string(), |v| v.to_string());
                pts.push(format!("[{}.0,{v}]", t * 1000));
            }
            t += 60;
        }
        series.push(format!(
            r#"{{"end":{},"attributes":{{}},"metric":"system.cpu.user","interval":60,"tag_set":["host:{host}"],"start":{},"length":{},"query_index":0,"aggr":"avg","scope":"host:{host}","pointlist":[{}],"expression":"avg:system.cpu.user{{host:{host}}}","unit":null,"display_name":"system.cpu.user"}}"#,
            to * 1000,
            from * 1000,
            pts.len(),
            pts.join(",")
        ));
    }
    format!(
        r#"{{"status":"ok","res_type":"time_series","from_date":{},"series":[{}],"to_date":{},"resp_version":1,"query":"q","message":"","group_by":["host"]}}"#,
        from * 1000,
        series.join(","),
        to * 1000
    )
    .into_bytes()
}

fn synthetic_events(query: &str) -> Vec<u8> {
    let start: i64 = param(query, "start")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let end: i64 = param(query, "end")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut evs = Vec::new();
    let mut t = start - start.rem_euclid(600);
    while t <= end {
        if t >= start {
            // Ids above 2^53, as real Datadog ids are.
            let id = 6_618_108_885_455_000_000u64 + t as u64;
            let alert = if (t / 600) % 3 == 0 { "error" } else { "info" };
            evs.push(format!(
                r#"{{"date_happened":{t},"alert_type":"{alert}","title":"event {t}","tags":["service:api"],"host":"web-1","id_str":"{id}","id":{id},"priority":"normal","source":"My Apps"}}"#
            ));
        }
        t += 600;
    }
    format!(r#"{{"events":[{}]}}"#, evs.join(",")).into_bytes()
}

fn response(status: u16, reason: &str, extra: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

impl FakeDatadog {
    pub async fn start(mode: Mode) -> FakeDatadog {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State {
            mode,
            faults: VecDeque::new(),
            requests: Vec::new(),
            delay: Duration::ZERO,
        }));
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut tmp = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut tmp).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&tmp[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&buf).to_string();
                    let line = head.lines().next().unwrap_or("").to_string();
                    let mut parts = line.split_whitespace();
                    let method = parts.next().unwrap_or("").to_string();
                    let target = parts.next().unwrap_or("").to_string();
                    let (path, query) = target
                        .split_once('?')
                        .map_or((target.clone(), String::new()), |(p, q)| {
                            (p.to_string(), q.to_string())
                        });
                    let lower = head.to_ascii_lowercase();
                    let has_keys = lower.contains("\r\ndd-api-key: ")
                        && lower.contains("\r\ndd-application-key: ");
                    let (fault, mode, delay) = {
                        let mut s = st.lock().unwrap();
                        s.requests.push(Request {
                            method: method.clone(),
                            path: path.clone(),
                            query: query.clone(),
                            has_keys,
                        });
                        (s.faults.pop_front(), s.mode, s.delay)
                    };
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    let body = match (path.as_str(), mode) {
                        ("/api/v1/query", Mode::Recorded { query_fixture }) => {
                            fixture(query_fixture)
                        }
                        ("/api/v1/query", Mode::Synthetic) if query.contains("refused") => {
                            // Datadog's answer to a query it cannot parse.
                            let _ = sock
                                .write_all(&response(400, "Bad Request", "", br#"{"errors":["Error parsing query: unable to parse refused{: Rule 'scope_expr' didn't match"]}"#))
                                .await;
                            return;
                        }
                        ("/api/v1/query", Mode::Synthetic) => synthetic_query(&query),
                        ("/api/v1/events", Mode::Recorded { .. }) => {
                            fixture("v1_events_list_1_event.json")
                        }
                        ("/api/v1/events", Mode::Synthetic) => synthetic_events(&query),
                        _ => {
                            let _ = sock
                                .write_all(&response(
                                    404,
                                    "Not Found",
                                    "",
                                    &fixture("v1_event_get_404.json"),
                                ))
                                .await;
                            return;
                        }
                    };
                    let out = match fault {
                        None => response(200, "OK", "", &body),
                        Some(Fault::RateLimit { header, reset }) => response(
                            429,
                            "Too Many Requests",
                            &format!("{header}: {reset}\r\nX-RateLimit-Limit: 10\r\nX-RateLimit-Remaining: 0\r\nX-RateLimit-Period: 10\r\n"),
                            br#"{"errors":["Too many requests"]}"#,
                        ),
                        Some(Fault::ServerError) => response(500, "Internal Server Error", "", br#"{"errors":["Internal Server Error"]}"#),
                        Some(Fault::Hang(d)) => {
                            tokio::time::sleep(d).await;
                            response(200, "OK", "", &body)
                        }
                        Some(Fault::Truncated) => response(200, "OK", "", &body[..body.len() / 2]),
                        Some(Fault::Forbidden) => response(403, "Forbidden", "", &fixture("v1_query_403_forbidden.json")),
                        Some(Fault::Gzip) => {
                            use std::io::Write;
                            let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                            z.write_all(&body).unwrap();
                            response(200, "OK", "Content-Encoding: gzip\r\n", &z.finish().unwrap())
                        }
                        Some(Fault::ResetMidBody) => {
                            let full = response(200, "OK", "", &body);
                            let cut = full.len() - body.len() / 2;
                            let _ = sock.write_all(&full[..cut]).await;
                            let _ = sock.flush().await;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            // Linger 0: the close is a reset (RST), and with 0 nothing blocks.
                            #[allow(deprecated)]
                            let _ = sock.set_linger(Some(Duration::ZERO));
                            drop(sock);
                            return;
                        }
                        Some(Fault::StallMidBody(d)) => {
                            let full = response(200, "OK", "", &body);
                            let cut = full.len() - body.len() / 2;
                            let _ = sock.write_all(&full[..cut]).await;
                            let _ = sock.flush().await;
                            tokio::time::sleep(d).await;
                            return;
                        }
                    };
                    let _ = sock.write_all(&out).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        FakeDatadog { url, state }
    }

    pub fn push_faults(&self, f: impl IntoIterator<Item = Fault>) {
        self.state.lock().unwrap().faults.extend(f);
    }

    pub fn requests(&self) -> Vec<Request> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn set_delay(&self, d: Duration) {
        self.state.lock().unwrap().delay = d;
    }
}
