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

fn synthetic_query(query: &str) -> Vec<u8> {
    let from: i64 = param(query, "from")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let to: i64 = param(query, "to").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut series = Vec::new();
    for host in ["web-1", "web-2"] {
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
