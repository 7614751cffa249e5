//! Incident correlation: the seed's Sprint 3 temporal correlator, causal graph, hypotheses and
//! narrative.
//!
//! Input: a host's signals: error events (points in time) and anomaly events (start, peak, end)
//! from the detectors. Output: incidents.
//!
//! **Grouping.** Errors and *short* anomalies (spikes, drops, level-shift onsets: the part of an
//! anomaly within `tolerance` of its start) on the same host are linked when they are at most
//! `tolerance` apart (default ±5 minutes); linked signals form a group (single linkage, so
//! overlapping groups merge). A group is an incident when it has at least one error and either
//! an anomaly or at least `min_errors` errors (default 3) — the seed's error-burst incident —
//! or, with no error at all, when its anomalies are strong enough together: anomalies on at
//! least two metrics whose combined risk `1 − Π(1 − risk)` (strongest anomaly per metric; the
//! members of a collective event count once) is at least [`TOGETHER_RISK`], or one anomaly of
//! risk at least [`ALONE_RISK`]. *Long* anomalies (leak trends,
//! sustained level shifts) do not link groups — a 48-hour leak would otherwise join every error
//! of two days — but are attached as context to each incident they are active during.
//! Incidents of one host at most `join_gap` apart are one incident (`run_detection` passes its
//! `close_after`: an incident stays open until quiet that long, so what forms on its host while
//! it is open belongs to it; a group too weak to form an incident joins nothing).
//!
//! **Root-cause ranking.** Each member metric is represented by its strongest anomaly (ties:
//! the earliest); members are ranked by `score = risk · tolerance / (tolerance + onset lag)`,
//! the onset lag being the time from the incident's first anomaly onset to the member's onset:
//! the metric that moved first and strongest leads; ties go to the larger |detector score|.
//! The ranking is `Incident::ranking`.
//!
//! **Lead evidence** (lagged correlation of onsets). Does A's deviation lead B's? Among the
//! first [`MAX_LEAD_MEMBERS`] members by that score, each member's anomaly onsets on the host in
//! the [`LEAD_HORIZON_US`] *before the incident began* (short anomalies and long shifts' onsets,
//! as in grouping; not silences, which follow the feed) are merged into episodes (an onset within
//! the tolerance of the previous one continues its episode; only onsets inside that day count;
//! at most the latest [`LEAD_HISTORY`]) and paired with each other member's: `before` counts its
//! episodes followed by one of the other member's within `(0, tolerance]`, `after` the reverse,
//! summed over the other members (the cross-correlogram of the two episode sequences at positive
//! and negative lags; simultaneous ones count for neither). With at least [`MIN_LEAD_PAIRS`]
//! such pairs the member carries `lead {before, after}` and its score is multiplied by
//! `1 + LEAD_WEIGHT · (before − after) / (before + after)` (×1.5 for a metric that always moved
//! first, ×0.5 for one that always followed). The incident's own order is the onset lag's
//! business, so a first incident has no lead evidence. The caller passes that day before what
//! its range can open as `history` signals, which only count here (`run_detection` does), so an
//! incident is ranked the same whichever run sees it. Work: at most
//! `MAX_LEAD_MEMBERS² · 2 · LEAD_HISTORY` steps an incident. The narrative's hypothesis line
//! says "it moved first" only of a member no other preceded ("with n others" for a tie; "the
//! strongest early mover" otherwise), and adds the lead evidence when the member usually moved
//! first.
//!
//! **Peers.** Given how many hosts report each metric (the fleet), a member's peers are the
//! other hosts reporting its metric; those with a short anomaly of that metric (or the onset
//! of a long level shift) in the same direction, overlapping the member's representative
//! anomaly (± tolerance), moved with it (leaks, long drifts and volatility changes are
//! background, not "the same time"). With at least [`MIN_PEERS`]
//! peers, the member's score is multiplied by `1 − moving / peers` (a deviation every host
//! shows is load, not this host's fault; one peer in many by chance costs little) and the
//! member carries `peers` as evidence. A member that at least [`FLEET_WIDE`] of its peers
//! share is fleet-wide: its narrative line says so, and the hypothesis `fleet-wide load` has
//! confidence `max(share · risk)` over those members (at equal confidence a cause on the host
//! itself ranks first). Without a fleet, nothing changes; a silence (`no_data`) has no peer
//! evidence (many silent hosts are a feed outage, not load). Work: per member, the indexed
//! anomalies of its metric near its time, stopping once every peer is counted.
//!
//! **Causal graph.** Nodes: the error burst (time of the first error), each member metric's
//! representative anomaly (its start) and the context anomalies. An edge `A → B` ("A precedes
//! B") for `A` earlier, with `lag = t(B) − t(A)` and `strength = risk(A) · tolerance /
//! (tolerance + lag)` for short signals (close in time is stronger), multiplied between two
//! members by their pair's lead evidence, `1 + LEAD_WEIGHT · (n(A→B) − n(B→A)) / (n(A→B) +
//! n(B→A))` with at least [`MIN_LEAD_PAIRS`] episode pairs (the history agrees with the order or
//! contradicts it; a weighed strength is at most 1); a context anomaly's edges have
//! `strength = 0.5 · risk`. Bounded: a node's candidate causes are the [`CAUSE_WINDOW`]
//! nearest earlier nodes and the [`MAX_CONTEXT_NODES`] strongest context anomalies; it keeps
//! its [`MAX_CAUSES`] strongest causes and an incident at most [`MAX_EDGES`] edges, so memory
//! and time are linear in the number of signals however large an incident grows.
//!
//! **Hypotheses** (ranked by confidence; only anomalies that start at or before the first error
//! count as causes, ones within a minute after it (one sample) as concurrent at 0.7× weight,
//! later ones are effects):
//! * `resource exhaustion`: rising anomalies (spike, level shift up, leak) on resource metrics
//!   (cpu, memory, disk, and metrics with a capacity) before the errors:
//!   `1 − Π(1 − w·risk)` over them, where `w` is 1 for short anomalies and 0.8 for context;
//! * `memory leak`: a leak trend on a memory metric active during the incident: `0.8 · risk`;
//! * `disk filling`: a leak trend on a disk metric: `0.8 · risk`;
//! * `traffic surge`: a rising anomaly on a traffic metric (requests, rps, qps, traffic,
//!   connections, throughput) before the errors: its `w·risk`;
//! * `undetermined`: `1 − max(others)`, listed always; it ranks first when nothing else
//!   reaches 0.5, and the narrative then says so instead of guessing.
//!
//! * `correlated metric anomalies` (incidents without errors, two or more metrics): their
//!   combined risk, each member's risk weighted by `1 − moving / peers`, led by the top-ranked
//!   metric; `metric anomaly` with one metric;
//! * `fleet-wide load`: members most of whose peers moved at the same time (see Peers).
//!
//! **Risk** of an incident: `1 − (1 − min(1, errors / 10)) · (1 − max anomaly risk)`.
//! The narrative lists at most [`MAX_NARRATIVE_LINES`] anomaly lines and says how many more.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Signal {
    /// Stable id, e.g. `anomaly:42` or `error:<uuid>`.
    pub id: String,
    pub host: String,
    /// `error` or `anomaly`.
    pub kind: String,
    #[serde(default)]
    pub metric: String,
    /// Detector kind for anomalies (spike, drop, level_shift_up, level_shift_down, leak).
    #[serde(default)]
    pub anomaly_kind: String,
    /// Unix µs.
    pub start: i64,
    pub end: i64,
    #[serde(default)]
    pub peak_at: i64,
    #[serde(default)]
    pub peak_value: f64,
    #[serde(default)]
    pub risk: f64,
    /// Baseline: for leak trends, the fitted value at `start` (with `peak_value` the fitted
    /// value at `end`), used when no sample is at hand for the narrative.
    #[serde(default)]
    pub baseline: Option<f64>,
    /// Display unit ("%" for percent metrics).
    #[serde(default)]
    pub unit: String,
    /// The detector's score (robust z, Mann-Kendall z, ...), shown where a ratio has no base.
    #[serde(default)]
    pub score: Option<f64>,
    /// Lead evidence only: an anomaly from before the caller's range, passed so that every
    /// incident's [`LEAD_HORIZON_US`] is covered however the range falls; it forms, joins and
    /// explains no incident and is nobody's peer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub history: bool,
}

/// A metric sample the SQL side looked up for narratives (the value of a context metric at or
/// before an error).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Sample {
    pub host: String,
    pub metric: String,
    pub ts: i64,
    pub value: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Edge {
    pub cause: String,
    pub effect: String,
    pub lag_secs: f64,
    pub strength: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Hypothesis {
    pub cause: String,
    pub confidence: f64,
    pub evidence: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Incident {
    pub host: String,
    pub opened_at: i64,
    /// First error event; `None` for an incident of anomalies alone.
    pub first_error_at: Option<i64>,
    pub last_signal_at: i64,
    pub error_count: u64,
    pub signal_ids: Vec<String>,
    pub context_ids: Vec<String>,
    pub edges: Vec<Edge>,
    pub hypotheses: Vec<Hypothesis>,
    /// Member metrics, most likely root cause first (see the module docs).
    pub ranking: Vec<Member>,
    pub risk: f64,
    pub narrative: String,
}

/// A member metric of an incident in the root-cause ranking.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Member {
    pub metric: String,
    /// Its representative (strongest) anomaly.
    pub anomaly: String,
    pub kind: String,
    /// Onset of that anomaly (Unix µs).
    pub start: i64,
    pub risk: f64,
    pub score: f64,
    /// |detector score| of that anomaly: the tie-breaker after onset.
    pub evidence: f64,
    /// Its peers (other hosts reporting the metric) and how many moved at the same time;
    /// absent without a fleet or with fewer than [`MIN_PEERS`] peers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peers: Option<Peers>,
    /// Lead evidence: how often this metric's anomalies began shortly before or after the
    /// other members' (see the module docs); absent with fewer than [`MIN_LEAD_PAIRS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lead: Option<Lead>,
}

/// Lead evidence of a member: the lagged co-occurrence of its anomaly onsets with the other
/// members' on the host (see the module docs).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct Lead {
    /// (Episode, other member) pairs: this metric's episodes followed within the tolerance by
    /// an episode of another member, counted per other member.
    pub before: u32,
    /// The other members' episodes followed within the tolerance by one of this metric.
    pub after: u32,
}

impl Lead {
    /// `(before − after) / (before + after)`, in [−1, 1]: 1 when this metric always moves
    /// first, −1 when it always follows.
    pub fn share(&self) -> f64 {
        let n = self.before as f64 + self.after as f64;
        if n == 0.0 {
            0.0
        } else {
            (self.before as f64 - self.after as f64) / n
        }
    }
}

/// Peer evidence of a member (see the module docs).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct Peers {
    /// Other hosts with an anomaly of the metric overlapping the member's (± tolerance).
    pub moving: u32,
    /// Other hosts reporting the metric.
    pub total: u32,
}

impl Peers {
    /// Share of the peers that moved too (0..1).
    pub fn share(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            (self.moving.min(self.total) as f64) / self.total as f64
        }
    }
}

/// How many hosts report each metric (a host's peers for a metric are the others).
pub type Fleet = std::collections::BTreeMap<String, u32>;

/// Peers a member needs before their evidence counts.
pub const MIN_PEERS: u32 = 2;
/// Share of its peers that makes a member's deviation fleet-wide.
pub const FLEET_WIDE: f64 = 0.5;

/// Weight of lead evidence in a member's score: `× (1 + LEAD_WEIGHT · lead share)`.
pub const LEAD_WEIGHT: f64 = 0.5;
/// Episode pairs (either order) a member needs before its lead evidence counts.
pub const MIN_LEAD_PAIRS: u32 = 3;
/// How far before an incident lead evidence looks (µs): a day.
pub const LEAD_HORIZON_US: i64 = 24 * 3_600_000_000;
/// Episodes of a metric that lead evidence looks at: the latest within the horizon.
pub const LEAD_HISTORY: usize = 256;
/// Members whose lead evidence is measured (the first by score before it), among themselves.
pub const MAX_LEAD_MEMBERS: usize = 8;

/// Risk one anomaly needs to open an incident alone (no error, no other metric).
pub const ALONE_RISK: f64 = 0.8;
/// Combined risk anomalies on two or more metrics need to open an incident without errors.
pub const TOGETHER_RISK: f64 = 0.5;
/// Causes kept per causal-graph node (the strongest).
pub const MAX_CAUSES: usize = 3;
/// Earlier short nodes considered as causes of a node (the nearest in time).
pub const CAUSE_WINDOW: usize = 64;
/// Context anomalies in an incident's causal graph (the strongest).
pub const MAX_CONTEXT_NODES: usize = 16;
/// Edges kept per incident (the strongest).
pub const MAX_EDGES: usize = 200;
/// Anomaly lines in a narrative; more are summarised in one line.
pub const MAX_NARRATIVE_LINES: usize = 12;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CorrelateParams {
    pub tolerance_us: i64,
    pub min_errors: u64,
    /// Incidents of one host whose gap is at most this long are one incident (0: never joined).
    /// `run_detection` passes its `close_after`: an incident stays open until it has been quiet
    /// that long, so what forms on its host while it is open belongs to it.
    pub join_gap_us: i64,
}

impl Default for CorrelateParams {
    fn default() -> Self {
        CorrelateParams {
            tolerance_us: 5 * 60 * 1_000_000,
            min_errors: 3,
            join_gap_us: 0,
        }
    }
}

fn is_resource(metric: &str, unit: &str) -> bool {
    let m = metric.to_ascii_lowercase();
    unit == "%"
        || ["cpu", "mem", "disk", "load", "swap", "inode", "fd"]
            .iter()
            .any(|k| m.contains(k))
}

fn is_memory(metric: &str) -> bool {
    let m = metric.to_ascii_lowercase();
    m.contains("mem") || m.contains("heap") || m.contains("rss")
}

fn is_disk(metric: &str) -> bool {
    let m = metric.to_ascii_lowercase();
    m.contains("disk") || m.contains("fs") || m.contains("volume") || m.contains("inode")
}

fn is_traffic(metric: &str) -> bool {
    let m = metric.to_ascii_lowercase();
    [
        "request",
        "rps",
        "qps",
        "traffic",
        "connection",
        "throughput",
        "hits",
    ]
    .iter()
    .any(|k| m.contains(k))
}

fn rising(kind: &str) -> bool {
    matches!(kind, "spike" | "level_shift_up" | "leak")
}

/// Display name of a metric in narratives: CPU, Memory, Disk, else as given.
pub fn metric_label(metric: &str) -> String {
    match metric.to_ascii_lowercase().as_str() {
        "cpu" => "CPU".into(),
        "memory" | "mem" => "Memory".into(),
        "disk" => "Disk".into(),
        _ => metric.to_string(),
    }
}

/// Formats a value with two decimals and the unit.
fn val(v: f64, unit: &str) -> String {
    format!("{v:.2}{unit}")
}

/// Correlates signals (any hosts, any order) into incidents, ordered by host and time.
/// `samples` give context metrics' values for narratives ("Memory at 87.61%").
pub fn correlate(signals: &[Signal], samples: &[Sample], p: &CorrelateParams) -> Vec<Incident> {
    correlate_with(signals, samples, p, &mut || {})
}

/// [`correlate`], calling `tick` regularly (PostgreSQL's interrupt check).
pub fn correlate_with(
    signals: &[Signal],
    samples: &[Sample],
    p: &CorrelateParams,
    tick: &mut dyn FnMut(),
) -> Vec<Incident> {
    correlate_fleet(signals, samples, &Fleet::new(), p, tick)
}

/// [`correlate_with`] with the fleet (hosts reporting each metric), so members carry peer
/// evidence (see the module docs).
pub fn correlate_fleet(
    signals: &[Signal],
    samples: &[Sample],
    fleet: &Fleet,
    p: &CorrelateParams,
    tick: &mut dyn FnMut(),
) -> Vec<Incident> {
    let tol = p.tolerance_us.max(1);
    let peers = PeerIndex::new(signals, fleet, tol, tick);
    // One pass to group by host (not hosts × signals).
    let mut by_host: std::collections::BTreeMap<&str, Vec<&Signal>> = Default::default();
    for s in signals {
        by_host.entry(s.host.as_str()).or_default().push(s);
    }
    let mut out = Vec::new();
    for (host, all) in by_host {
        tick();
        let starts = Onsets::new(&all, tol);
        let mine: Vec<&Signal> = all.into_iter().filter(|s| !s.history).collect();
        // Long anomalies are context. Not a silence: it lasts as long as the outage does, and
        // its incident must stay open (and grow) with it.
        let is_long = |s: &Signal| is_long(s, tol);
        let mut short: Vec<&Signal> = mine.iter().copied().filter(|s| !is_long(s)).collect();
        let long: Vec<&Signal> = mine.iter().copied().filter(|s| is_long(s)).collect();
        // The onset of a long level shift was news when it happened: it
        // takes part in grouping as a point at its start, so a sustained shift opens an
        // incident by itself, in a full rescan as in the run that first saw it begin; after
        // its onset it is context. (Trends have no onset: their start is where the fit began.)
        let onsets: Vec<Signal> = long
            .iter()
            .filter(|s| has_onset(&s.anomaly_kind))
            .map(|s| Signal {
                end: s.start,
                ..(*s).clone()
            })
            .collect();
        short.extend(onsets.iter());
        short.sort_by(|a, b| a.start.cmp(&b.start).then(a.id.cmp(&b.id)));
        // Single-linkage grouping on [start, end] with the tolerance.
        let mut groups: Vec<Vec<&Signal>> = Vec::new();
        let mut group_end = i64::MIN;
        for (i, s) in short.into_iter().enumerate() {
            if i % 1024 == 0 {
                tick();
            }
            match groups.last_mut() {
                Some(g) if s.start <= group_end.saturating_add(tol) => {
                    g.push(s);
                    group_end = group_end.max(s.end);
                }
                _ => {
                    groups.push(vec![s]);
                    group_end = s.end;
                }
            }
        }
        // Groups that form an incident; those of one host at most `join_gap` apart are one.
        let mut joined: Vec<Vec<&Signal>> = Vec::new();
        let mut joined_end = i64::MIN;
        for g in groups {
            tick();
            if !forms_incident(&g, p.min_errors) {
                continue;
            }
            let start = g.iter().map(|s| s.start).min().unwrap_or(i64::MIN);
            let end = g
                .iter()
                .map(|s| s.end.max(s.start))
                .max()
                .unwrap_or(i64::MIN);
            match joined.last_mut() {
                Some(j)
                    if p.join_gap_us > 0 && start <= joined_end.saturating_add(p.join_gap_us) =>
                {
                    j.extend(g);
                    joined_end = joined_end.max(end);
                }
                _ => {
                    joined.push(g);
                    joined_end = end;
                }
            }
        }
        for g in joined {
            let errors: Vec<&Signal> = g.iter().copied().filter(|s| s.kind == "error").collect();
            let anomalies: Vec<&Signal> =
                g.iter().copied().filter(|s| s.kind == "anomaly").collect();
            tick();
            let first = g.iter().map(|s| s.start).min().unwrap();
            let last = g.iter().map(|s| s.end.max(s.start)).max().unwrap();
            let first_err = errors.iter().map(|s| s.start).min();
            // Leaks first (the narrative's "leak progression"), then by start: an order that
            // does not depend on how the caller listed the signals.
            let mut context: Vec<&Signal> = long
                .iter()
                .copied()
                .filter(|s| {
                    s.start <= last.saturating_add(tol)
                        && s.end >= first.saturating_sub(tol)
                        && !g.iter().any(|m| m.id == s.id)
                })
                .collect();
            context.sort_by(|a, b| {
                (a.anomaly_kind != "leak", a.start, &a.metric, &a.id).cmp(&(
                    b.anomaly_kind != "leak",
                    b.start,
                    &b.metric,
                    &b.id,
                ))
            });
            out.push(build(
                host, &errors, &anomalies, &context, samples, &peers, &starts, first, first_err,
                last, tol, tick,
            ));
        }
    }
    out
}

/// Whether an anomaly is long (context, not a member): a leak, or longer than 12 tolerances.
/// Not a silence: it lasts as long as the outage does, and its incident must stay open (and
/// grow) with it.
fn is_long(s: &Signal, tol: i64) -> bool {
    s.kind == "anomaly"
        && s.anomaly_kind != "no_data"
        && (s.anomaly_kind == "leak" || s.end.saturating_sub(s.start) > tol.saturating_mul(12))
}

/// The direction of an anomaly's deviation: 1 up, -1 down, 0 either (volatility, unknown).
fn direction(s: &Signal) -> i8 {
    match s.anomaly_kind.as_str() {
        "spike" | "level_shift_up" | "drift_up" | "leak" => 1,
        "drop" | "level_shift_down" | "drift_down" => -1,
        "collective" => match s.baseline {
            Some(b) if s.peak_value > b => 1,
            Some(b) if s.peak_value < b => -1,
            _ => 0,
        },
        _ => 0,
    }
}

/// Whether a group of linked signals is an incident: an error with an anomaly, `min_errors`
/// errors, or, with no error, anomalies strong enough together ([`strong_together`]).
fn forms_incident(g: &[&Signal], min_errors: u64) -> bool {
    let n_err = g.iter().filter(|s| s.kind == "error").count() as u64;
    let anomalies: Vec<&Signal> = g.iter().copied().filter(|s| s.kind == "anomaly").collect();
    if n_err == 0 {
        strong_together(&anomalies)
    } else {
        !anomalies.is_empty() || n_err >= min_errors
    }
}

/// Whether a long anomaly of this kind has a meaningful start (a change point), as level shifts
/// do; trends and leaks start where their fit began, volatility changes at a window boundary.
/// The span an anomaly moves in, as grouping sees it: a short anomaly's `[start, end]`, a long
/// level shift's onset `[start, start]`; `None` for errors, silences and other long anomalies
/// (background). Peers and lead evidence count only these.
fn moving_span(s: &Signal, tol: i64) -> Option<(i64, i64)> {
    if s.kind != "anomaly" || s.anomaly_kind == "no_data" {
        None
    } else if !is_long(s, tol) {
        Some((s.start, s.end.max(s.start)))
    } else if has_onset(&s.anomaly_kind) {
        Some((s.start, s.start))
    } else {
        None
    }
}

fn has_onset(kind: &str) -> bool {
    matches!(kind, "level_shift_up" | "level_shift_down")
}

/// The strongest anomaly of each metric (ties: the earliest), in metric order.
fn representatives<'a>(anomalies: &[&'a Signal]) -> Vec<&'a Signal> {
    let mut best: std::collections::BTreeMap<&str, &'a Signal> = Default::default();
    for a in anomalies {
        let e = best.entry(a.metric.as_str()).or_insert(a);
        if a.risk > e.risk || (a.risk == e.risk && (a.start, &a.id) < (e.start, &e.id)) {
            *e = a;
        }
    }
    best.into_values().collect()
}

/// `1 − Π(1 − risk)` over the given anomalies, the members of collective events counting
/// once (one event is one piece of evidence, however many metrics it names).
fn combined_risk(reps: &[&Signal]) -> f64 {
    let collective = reps
        .iter()
        .filter(|a| a.anomaly_kind == "collective")
        .map(|a| a.risk.clamp(0.0, 1.0))
        .fold(0.0, f64::max);
    1.0 - (1.0 - collective)
        * reps
            .iter()
            .filter(|a| a.anomaly_kind != "collective")
            .map(|a| 1.0 - a.risk.clamp(0.0, 1.0))
            .product::<f64>()
}

/// Whether anomalies without any error form an incident (see the module docs).
fn strong_together(anomalies: &[&Signal]) -> bool {
    let reps = representatives(anomalies);
    reps.iter().any(|a| a.risk >= ALONE_RISK)
        || (reps.len() >= 2 && combined_risk(&reps) >= TOGETHER_RISK)
}

/// Short anomalies of every host by metric, for peer evidence: per metric, the spans
/// `[start − tol, end + tol]` sorted by start, with the longest span's length, so the spans
/// that can overlap a time range are one binary search away.
struct PeerIndex<'a> {
    fleet: &'a Fleet,
    by_metric: std::collections::BTreeMap<&'a str, MetricSpans>,
    /// Host names, indexed by the spans.
    hosts: Vec<&'a str>,
    /// Per host, the last query that counted it (distinct hosts without a set per query).
    seen: std::cell::RefCell<(u32, Vec<u32>)>,
}

#[derive(Default)]
struct MetricSpans {
    /// (start − tol, end + tol, host index, direction), by start.
    spans: Vec<(i64, i64, u32, i8)>,
    longest: i64,
}

impl<'a> PeerIndex<'a> {
    /// Indexes the anomalies a member could be compared with: short ones (members elsewhere)
    /// and the onsets of long level shifts, as in grouping; not leaks, long drifts or
    /// volatility changes (background for days), not silences.
    fn new(signals: &'a [Signal], fleet: &'a Fleet, tol: i64, tick: &mut dyn FnMut()) -> Self {
        let mut index = PeerIndex {
            fleet,
            by_metric: Default::default(),
            hosts: Vec::new(),
            seen: Default::default(),
        };
        if fleet.is_empty() {
            return index;
        }
        let mut host_ix: std::collections::HashMap<&'a str, u32> = Default::default();
        for (i, s) in signals.iter().enumerate() {
            if i % 4096 == 0 {
                tick();
            }
            if s.history || !fleet.contains_key(&s.metric) {
                continue;
            }
            let Some((_, end)) = moving_span(s, tol) else {
                continue;
            };
            let next = index.hosts.len() as u32;
            let h = *host_ix.entry(s.host.as_str()).or_insert(next);
            if h == next {
                index.hosts.push(s.host.as_str());
            }
            let (from, to) = (s.start.saturating_sub(tol), end.saturating_add(tol));
            let m = index.by_metric.entry(s.metric.as_str()).or_default();
            m.spans.push((from, to, h, direction(s)));
            m.longest = m.longest.max(to.saturating_sub(from));
        }
        for m in index.by_metric.values_mut() {
            tick();
            m.spans.sort_unstable();
        }
        index.seen.borrow_mut().1 = vec![u32::MAX; index.hosts.len()];
        index
    }

    /// The peers of `a`'s host for its metric and how many had an anomaly of it in the same
    /// direction overlapping `a` (None with fewer than MIN_PEERS peers). Work: the indexed
    /// anomalies of the metric near `a`'s time, stopping once every peer is counted.
    fn of(&self, a: &Signal, tick: &mut dyn FnMut()) -> Option<Peers> {
        let total = self.fleet.get(&a.metric)?.saturating_sub(1);
        if total < MIN_PEERS {
            return None;
        }
        let (start, end, dir) = (a.start, a.end.max(a.start), direction(a));
        let mut moving = 0u32;
        if let Some(m) = self.by_metric.get(a.metric.as_str()) {
            let mut seen = self.seen.borrow_mut();
            let (stamp, last) = &mut *seen;
            *stamp = stamp.wrapping_add(1);
            // A span starting before start − longest ends before start.
            let lo = m
                .spans
                .partition_point(|x| x.0 < start.saturating_sub(m.longest));
            let hi = m.spans.partition_point(|x| x.0 <= end);
            for (k, &(_, to, h, d)) in m.spans[lo..hi].iter().enumerate() {
                if k % 4096 == 4095 {
                    tick();
                }
                if to < start
                    || self.hosts[h as usize] == a.host
                    || (dir != 0 && d != 0 && d != dir)
                    || last[h as usize] == *stamp
                {
                    continue;
                }
                last[h as usize] = *stamp;
                moving += 1;
                if moving >= total {
                    break;
                }
            }
        }
        Some(Peers { moving, total })
    }
}

/// A host's anomaly onsets by metric, for lead evidence: the starts of short anomalies and of
/// long level shifts (as in grouping; not silences, which follow the feed, not the host), with
/// history signals, sorted.
struct Onsets<'a> {
    by_metric: std::collections::BTreeMap<&'a str, Vec<i64>>,
}

impl<'a> Onsets<'a> {
    fn new(signals: &[&'a Signal], tol: i64) -> Self {
        let mut by_metric: std::collections::BTreeMap<&'a str, Vec<i64>> = Default::default();
        for s in signals.iter().filter(|s| !s.metric.is_empty()) {
            if let Some((start, _)) = moving_span(s, tol) {
                by_metric.entry(s.metric.as_str()).or_default().push(start);
            }
        }
        for v in by_metric.values_mut() {
            v.sort_unstable();
            v.dedup();
        }
        Onsets { by_metric }
    }

    /// The episodes of `metric` in the [`LEAD_HORIZON_US`] before `until` (at most the latest
    /// [`LEAD_HISTORY`]): its onsets there, an onset within the tolerance of the previous one
    /// continuing its episode (so a flapping metric counts once). Only the onsets inside the
    /// window count, so the answer does not depend on what else the caller passed.
    fn episodes(&self, metric: &str, until: i64, tol: i64) -> Vec<i64> {
        let v = self.by_metric.get(metric).map_or(&[][..], |v| v.as_slice());
        let from = until.saturating_sub(LEAD_HORIZON_US);
        let window = &v[v.partition_point(|t| *t < from)..v.partition_point(|t| *t < until)];
        let mut out: Vec<i64> = Vec::new();
        let mut last = None;
        for &t in window {
            if last.is_none_or(|l: i64| t > l.saturating_add(tol)) {
                out.push(t);
            }
            last = Some(t);
        }
        let drop = out.len().saturating_sub(LEAD_HISTORY);
        out.drain(..drop);
        out
    }
}

/// How many of the onsets `a` have an onset of `b` within `(0, tol]` after them (both sorted):
/// the lagged co-occurrence of `a` before `b` (simultaneous onsets count for neither).
fn followed(a: &[i64], b: &[i64], tol: i64) -> u32 {
    let (mut j, mut n) = (0, 0);
    for &t in a {
        while j < b.len() && b[j] <= t {
            j += 1;
        }
        if j < b.len() && b[j] <= t.saturating_add(tol) {
            n += 1;
        }
    }
    n
}

/// How the top-ranked member's onset compares with the others': `Some(0)` when it began
/// first, `Some(n)` when `n` others began at the same instant, `None` when one began earlier.
fn moved_first(ranking: &[Member]) -> Option<usize> {
    let top = ranking.first()?;
    if ranking.iter().any(|m| m.start < top.start) {
        return None;
    }
    Some(ranking[1..].iter().filter(|m| m.start == top.start).count())
}

/// Why the top-ranked member leads, for the hypothesis line.
fn why_first(ranking: &[Member]) -> String {
    let mut why = match moved_first(ranking) {
        Some(0) => "it moved first".to_string(),
        Some(n) => format!(
            "it moved first, with {n} other{}",
            if n == 1 { "" } else { "s" }
        ),
        None => "the strongest early mover".to_string(),
    };
    if let Some(note) = ranking.first().and_then(lead_note) {
        why.push_str("; ");
        why.push_str(&note);
    }
    why
}

/// "earlier, it moved shortly before another member 7 times and after one 2 times", when a
/// member's lead evidence says it usually moves first.
fn lead_note(m: &Member) -> Option<String> {
    m.lead.filter(|l| l.before > l.after).map(|l| {
        format!(
            "earlier, it moved shortly before another member {} time{} and after one {} time{}",
            l.before,
            if l.before == 1 { "" } else { "s" },
            l.after,
            if l.after == 1 { "" } else { "s" }
        )
    })
}

/// Members ranked by onset-weighted risk, discounted by the share of peers that moved too and
/// weighed by lead evidence (see the module docs).
fn rank(
    reps: &[&Signal],
    peers: &PeerIndex,
    starts: &Onsets,
    opened_at: i64,
    tol: i64,
    tick: &mut dyn FnMut(),
) -> (Vec<Member>, LeadPairs) {
    let onset = reps.iter().map(|a| a.start).min().unwrap_or(0);
    let mut out: Vec<(f64, Member)> = reps
        .iter()
        .map(|a| {
            let lag = a.start.saturating_sub(onset).max(0) as f64;
            // (A silence is the feed's business, whoever else is silent: no peer evidence.)
            let pe = (a.anomaly_kind != "no_data")
                .then(|| peers.of(a, tick))
                .flatten();
            let score = a.risk.clamp(0.0, 1.0) * tol as f64 / (tol as f64 + lag)
                * (1.0 - pe.map_or(0.0, |p| p.share()));
            let member = Member {
                metric: a.metric.clone(),
                anomaly: a.id.clone(),
                kind: a.anomaly_kind.clone(),
                start: a.start,
                risk: a.risk,
                score: (score * 1e4).round() / 1e4,
                evidence: a.score.map_or(0.0, f64::abs),
                peers: pe,
                lead: None,
            };
            (score, member)
        })
        .collect();
    let order = |a: &(f64, Member), b: &(f64, Member)| {
        let (a, b) = (&a.1, &b.1);
        b.score
            .total_cmp(&a.score)
            .then(a.start.cmp(&b.start))
            .then(b.evidence.total_cmp(&a.evidence))
            .then(a.metric.cmp(&b.metric))
    };
    out.sort_by(order);
    // Lead evidence among the first MAX_LEAD_MEMBERS: episodes of each shortly before and
    // after the others' in the day before the incident began (the incident's own order is the
    // onset lag's business).
    let k = out.len().min(MAX_LEAD_MEMBERS);
    let mut pairs = LeadPairs {
        metrics: out[..k].iter().map(|m| m.1.metric.clone()).collect(),
        followed: vec![0; k * k],
    };
    if k >= 2 {
        // (A silent member has no lead evidence, as it has no peer evidence: its silence
        // follows the feed, and its history is not the silence's.)
        let recent: Vec<Vec<i64>> = out[..k]
            .iter()
            .map(|m| match m.1.kind.as_str() {
                "no_data" => Vec::new(),
                _ => starts.episodes(&m.1.metric, opened_at, tol),
            })
            .collect();
        for i in 0..k {
            tick();
            for j in (0..k).filter(|j| *j != i) {
                pairs.followed[i * k + j] = followed(&recent[i], &recent[j], tol);
            }
        }
        for (i, (raw, m)) in out.iter_mut().enumerate().take(k) {
            let (mut before, mut after) = (0u32, 0u32);
            for j in (0..k).filter(|j| *j != i) {
                before = before.saturating_add(pairs.followed[i * k + j]);
                after = after.saturating_add(pairs.followed[j * k + i]);
            }
            if before.saturating_add(after) >= MIN_LEAD_PAIRS {
                let lead = Lead { before, after };
                *raw *= 1.0 + LEAD_WEIGHT * lead.share();
                m.score = (*raw * 1e4).round() / 1e4;
                m.lead = Some(lead);
            }
        }
        out.sort_by(order);
    }
    (out.into_iter().map(|(_, m)| m).collect(), pairs)
}

/// Lagged onset counts between the members whose lead was measured: `followed[i · k + j]` is
/// how many of member i's onsets were followed within the tolerance by one of member j's.
struct LeadPairs {
    metrics: Vec<String>,
    followed: Vec<u32>,
}

impl LeadPairs {
    fn index(&self, metric: &str) -> Option<usize> {
        self.metrics.iter().position(|m| m == metric)
    }
    /// The causal-graph weight of an edge from member `a` to member `b` (indexes):
    /// `1 + LEAD_WEIGHT · (n(a→b) − n(b→a)) / (n(a→b) + n(b→a))` with at least
    /// [`MIN_LEAD_PAIRS`] episode pairs between the two, else 1.
    fn weight(&self, a: usize, b: usize) -> f64 {
        let k = self.metrics.len();
        let (ab, ba) = (self.followed[a * k + b], self.followed[b * k + a]);
        let n = ab.saturating_add(ba);
        if n < MIN_LEAD_PAIRS {
            1.0
        } else {
            1.0 + LEAD_WEIGHT * (ab as f64 - ba as f64) / n as f64
        }
    }
}

/// Causal graph over `(id, time, risk, is_context, lead index)` nodes, bounded (see the module
/// docs); an edge between two members with lead evidence is weighed by it.
fn graph(
    mut nodes: Vec<(String, i64, f64, bool, Option<usize>)>,
    pairs: &LeadPairs,
    tol: i64,
    tick: &mut dyn FnMut(),
) -> Vec<Edge> {
    nodes.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
    let mut kept: Vec<(f64, usize, usize)> = Vec::new();
    for (j, b) in nodes.iter().enumerate() {
        if j % 256 == 0 {
            tick();
        }
        // The strongest MAX_CAUSES among the CAUSE_WINDOW nearest earlier short nodes (a short
        // cause's strength falls with the lag) and every context node (capped in `build`).
        let mut causes: Vec<(f64, usize)> = Vec::with_capacity(MAX_CAUSES + 1);
        let near = j.saturating_sub(CAUSE_WINDOW);
        let candidates = (0..near)
            .filter(|&i| nodes[i].3)
            .chain(near..j)
            .map(|i| (i, &nodes[i]));
        for (i, a) in candidates {
            if a.1 >= b.1 {
                continue; // same time: no precedence
            }
            let lag = (b.1 - a.1) as f64;
            let strength = if a.3 {
                0.5 * a.2
            } else {
                let near = a.2 * tol as f64 / (tol as f64 + lag);
                match (a.4, b.4) {
                    (Some(x), Some(y)) if pairs.weight(x, y) != 1.0 => {
                        (near * pairs.weight(x, y)).min(1.0)
                    }
                    _ => near,
                }
            };
            if causes.len() < MAX_CAUSES || strength > causes[causes.len() - 1].0 {
                causes.push((strength, i));
                causes.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
                causes.truncate(MAX_CAUSES);
            }
        }
        kept.extend(causes.into_iter().map(|(st, i)| (st, i, j)));
    }
    kept.sort_by(|x, y| y.0.total_cmp(&x.0).then((x.1, x.2).cmp(&(y.1, y.2))));
    kept.truncate(MAX_EDGES);
    // In (cause, effect) order: the order coherence.incidents.graph is stored in, so an
    // unchanged graph compares equal and the incident is not rewritten.
    kept.sort_by(|x, y| (&nodes[x.1].0, &nodes[x.2].0).cmp(&(&nodes[y.1].0, &nodes[y.2].0)));
    kept.into_iter()
        .map(|(strength, i, j)| Edge {
            cause: nodes[i].0.clone(),
            effect: nodes[j].0.clone(),
            lag_secs: (nodes[j].1 - nodes[i].1) as f64 / 1e6,
            strength: (strength * 1e6).round() / 1e6,
        })
        .collect()
}

/// What the steps of [`build`] share: one incident's signals, before its ranking.
struct Scope<'a> {
    host: &'a str,
    anomalies: &'a [&'a Signal],
    context: &'a [&'a Signal],
    n_err: u64,
    opened_at: i64,
    first_err: Option<i64>,
    /// Precedence is judged against the first error; without errors, against the end of the
    /// group (every member may be a cause).
    first_err_or_last: i64,
    tol: i64,
}

/// An incident from one group of a host's signals: ranking, causal graph, hypotheses, risk and
/// narrative (see the module docs).
#[allow(clippy::too_many_arguments)]
fn build(
    host: &str,
    errors: &[&Signal],
    anomalies: &[&Signal],
    context: &[&Signal],
    samples: &[Sample],
    peers: &PeerIndex,
    starts: &Onsets,
    opened_at: i64,
    first_err: Option<i64>,
    last: i64,
    tol: i64,
    tick: &mut dyn FnMut(),
) -> Incident {
    let sc = Scope {
        host,
        anomalies,
        context,
        n_err: errors.len() as u64,
        opened_at,
        first_err,
        first_err_or_last: first_err.unwrap_or(last),
        tol,
    };
    let reps = representatives(anomalies);
    let (ranking, pairs) = rank(&reps, peers, starts, opened_at, tol, tick);
    let edges = causal_graph(&sc, &reps, &pairs, tick);
    let mut hyps = error_causes(&sc);
    let peer_map = peer_map(&ranking);
    let fleet_wide = fleet_wide(&ranking);
    hyps.extend(anomaly_causes(&sc, &reps, &ranking, &peer_map, &fleet_wide));
    let hyps = ranked(hyps, sc.n_err);
    let max_anom = anomalies
        .iter()
        .chain(context.iter())
        .map(|s| s.risk)
        .fold(0.0, f64::max);
    let n_err = sc.n_err;
    let risk = 1.0 - (1.0 - (n_err as f64 / 10.0).min(1.0)) * (1.0 - max_anom.clamp(0.0, 1.0));
    let narrative = narrative(&sc, samples, &ranking, &peer_map, &fleet_wide, &hyps[0]);
    let mut signal_ids: Vec<String> = errors
        .iter()
        .chain(anomalies.iter())
        .map(|s| s.id.clone())
        .collect();
    signal_ids.sort();
    let mut context_ids: Vec<String> = context.iter().map(|s| s.id.clone()).collect();
    context_ids.sort();
    Incident {
        host: host.to_string(),
        opened_at,
        first_error_at: first_err,
        last_signal_at: last,
        error_count: n_err,
        signal_ids,
        context_ids,
        edges,
        hypotheses: hyps,
        ranking,
        risk: (risk * 1e4).round() / 1e4,
        narrative,
    }
}

/// Members' peer evidence by metric: (the anomaly it was judged at, the peers).
type PeerMap<'a> = std::collections::HashMap<&'a str, (&'a str, Peers)>;

fn peer_map(ranking: &[Member]) -> PeerMap<'_> {
    ranking
        .iter()
        .filter_map(|m| {
            m.peers
                .map(|p| (m.metric.as_str(), (m.anomaly.as_str(), p)))
        })
        .collect()
}

/// Members most of whose peers moved too: load on the fleet.
fn fleet_wide(ranking: &[Member]) -> Vec<&Member> {
    ranking
        .iter()
        .filter(|m| m.peers.is_some_and(|p| p.share() >= FLEET_WIDE))
        .collect()
}

/// The causal graph: nodes are the error burst, each member's representative anomaly and the
/// strongest context anomalies.
fn causal_graph(
    sc: &Scope,
    reps: &[&Signal],
    pairs: &LeadPairs,
    tick: &mut dyn FnMut(),
) -> Vec<Edge> {
    // (id, time, risk, is_context, index in the lead pairs).
    let mut nodes: Vec<(String, i64, f64, bool, Option<usize>)> = Vec::new();
    if let Some(t) = sc.first_err {
        let id = format!("errors:{}:{t}", sc.host);
        nodes.push((id, t, (sc.n_err as f64 / 10.0).min(1.0), false, None));
    }
    for a in reps {
        nodes.push((a.id.clone(), a.start, a.risk, false, pairs.index(&a.metric)));
    }
    let mut strongest_context: Vec<&&Signal> = sc.context.iter().collect();
    strongest_context.sort_by(|a, b| b.risk.total_cmp(&a.risk).then(a.id.cmp(&b.id)));
    for c in strongest_context.into_iter().take(MAX_CONTEXT_NODES) {
        nodes.push((c.id.clone(), c.start, c.risk, true, None));
    }
    graph(nodes, pairs, sc.tol, tick)
}

/// Causes of an error burst from precedence and evidence: resource exhaustion, a leak on
/// memory or disk, a traffic surge (none without errors).
fn error_causes(sc: &Scope) -> Vec<Hypothesis> {
    let (anomalies, context, n_err) = (sc.anomalies, sc.context, sc.n_err);
    let (first_err_or_last, tol) = (sc.first_err_or_last, sc.tol);
    let weight = |s: &Signal, ctx: bool| -> f64 {
        let w = if ctx { 0.8 } else { 1.0 };
        if s.start <= first_err_or_last {
            w
        } else if s.start <= first_err_or_last.saturating_add(tol.min(60_000_000)) {
            0.7 * w // within a minute (one sample) of the first error: concurrent
        } else {
            0.0 // after the errors began: an effect, not a cause
        }
    };
    let mut resource_miss = 1.0;
    let mut resource_ev = Vec::new();
    let mut traffic = 0.0f64;
    let mut traffic_ev = String::new();
    // Resource and traffic causes explain an error burst; without errors they do not apply.
    for (s, ctx) in anomalies
        .iter()
        .map(|s| (*s, false))
        .chain(context.iter().map(|s| (*s, true)))
        .filter(|_| n_err > 0)
    {
        if !rising(&s.anomaly_kind) {
            continue;
        }
        let w = weight(s, ctx);
        if w == 0.0 {
            continue;
        }
        if is_resource(&s.metric, &s.unit) {
            resource_miss *= 1.0 - (w * s.risk).clamp(0.0, 1.0);
            resource_ev.push(format!(
                "{} {} (risk {:.2})",
                s.metric, s.anomaly_kind, s.risk
            ));
        }
        if is_traffic(&s.metric) && w * s.risk > traffic {
            traffic = w * s.risk;
            traffic_ev = format!(
                "{} {} before the errors (risk {:.2})",
                s.metric, s.anomaly_kind, s.risk
            );
        }
    }
    let mut hyps = Vec::new();
    let resource = 1.0 - resource_miss;
    if resource > 0.0 {
        hyps.push(Hypothesis {
            cause: "resource exhaustion".into(),
            confidence: resource,
            evidence: format!(
                "rising resource anomalies at or before the first error: {}",
                resource_ev.join(", ")
            ),
        });
    }
    for (cause, pred) in [
        ("memory leak", is_memory as fn(&str) -> bool),
        ("disk filling", is_disk),
    ] {
        if let Some(best) = context
            .iter()
            .filter(|c| c.anomaly_kind == "leak" && pred(&c.metric))
            .max_by(|a, b| a.risk.total_cmp(&b.risk))
        {
            hyps.push(Hypothesis {
                cause: cause.into(),
                confidence: 0.8 * best.risk,
                evidence: format!(
                    "{} leak trend active during the incident (risk {:.2})",
                    best.metric, best.risk
                ),
            });
        }
    }
    if traffic > 0.0 {
        hyps.push(Hypothesis {
            cause: "traffic surge".into(),
            confidence: traffic,
            evidence: traffic_ev,
        });
    }
    hyps
}

/// Causes from the anomalies themselves: telemetry stopped, correlated metric anomalies (or
/// one metric's) without errors, fleet-wide load.
fn anomaly_causes(
    sc: &Scope,
    reps: &[&Signal],
    ranking: &[Member],
    peer_map: &PeerMap,
    fleet_wide: &[&Member],
) -> Vec<Hypothesis> {
    let n_err = sc.n_err;
    let peers_of = |metric: &str| peer_map.get(metric).map(|x| x.1);
    let mut hyps = Vec::new();
    // Series that stopped reporting: the host, its agent or the feed is down, whatever else.
    let silent: Vec<&&Signal> = reps
        .iter()
        .filter(|a| a.anomaly_kind == "no_data")
        .collect();
    if !silent.is_empty() {
        let quiet: Vec<&Signal> = silent.iter().map(|a| **a).collect();
        hyps.push(Hypothesis {
            cause: "telemetry stopped".into(),
            confidence: combined_risk(&quiet),
            evidence: format!(
                "{} stopped reporting: the host, its agent or the feed may be down",
                silent
                    .iter()
                    .map(|a| a.metric.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    let lead = ranking.first();
    let only_silent = silent.len() == reps.len();
    if let (0, Some(lead), false) = (n_err, lead, only_silent) {
        let cause = if ranking.len() >= 2 {
            "correlated metric anomalies"
        } else {
            "metric anomaly"
        };
        // Each member's risk weighted by the share of its peers that did not move with it.
        let own: Vec<Signal> = reps
            .iter()
            .map(|a| Signal {
                risk: a.risk * (1.0 - peers_of(&a.metric).map_or(0.0, |p| p.share())),
                ..(*a).clone()
            })
            .collect();
        let own: Vec<&Signal> = own.iter().collect();
        hyps.push(Hypothesis {
            cause: cause.into(),
            confidence: combined_risk(&own),
            evidence: format!(
                "{} metric{} moved together, led by {} ({}{}, risk {:.2}{})",
                ranking.len(),
                if ranking.len() == 1 { "" } else { "s" },
                lead.metric,
                lead.kind,
                if moved_first(ranking).is_some() {
                    " first"
                } else {
                    ""
                },
                lead.risk,
                lead_note(lead).map_or(String::new(), |n| format!("; {n}"))
            ),
        });
    }
    if !fleet_wide.is_empty() {
        let (conf, top) = fleet_wide
            .iter()
            .map(|m| {
                (
                    m.peers.map_or(0.0, |p| p.share()) * m.risk.clamp(0.0, 1.0),
                    *m,
                )
            })
            .fold(
                (0.0f64, fleet_wide[0]),
                |acc, x| if x.0 > acc.0 { x } else { acc },
            );
        let p = top.peers.unwrap_or(Peers {
            moving: 0,
            total: 0,
        });
        hyps.push(Hypothesis {
            cause: "fleet-wide load".into(),
            confidence: conf,
            evidence: format!(
                "{} moved on {} of {} peers at the same time{}: load on the fleet, not a fault of this host",
                top.metric,
                p.moving,
                p.total,
                match fleet_wide.len() {
                    1 => String::new(),
                    n => format!(" (and {} more metric{})", n - 1, if n == 2 { "" } else { "s" }),
                }
            ),
        });
    }
    hyps
}

/// "undetermined" (`1 − max(others)`), confidences rounded, most likely first.
fn ranked(mut hyps: Vec<Hypothesis>, n_err: u64) -> Vec<Hypothesis> {
    let best_other = hyps.iter().map(|h| h.confidence).fold(0.0, f64::max);
    hyps.push(Hypothesis {
        cause: "undetermined".into(),
        confidence: 1.0 - best_other,
        evidence: if best_other >= 0.5 {
            "other hypotheses are supported".into()
        } else if n_err == 0 {
            "the anomalies are weak".into()
        } else {
            "no resource or traffic anomaly preceded the errors".into()
        },
    });
    for h in &mut hyps {
        h.confidence = (h.confidence.clamp(0.0, 1.0) * 1e4).round() / 1e4;
    }
    // Ties: fleet-wide load last (a cause on the host itself explains as much, and is the
    // news), then by name.
    hyps.sort_by(|a, b| {
        b.confidence
            .total_cmp(&a.confidence)
            .then((a.cause == "fleet-wide load").cmp(&(b.cause == "fleet-wide load")))
            .then(a.cause.cmp(&b.cause))
    });

    hyps
}

/// The narrative in the seed's form: when, the error events, one line per anomalous metric and
/// kind (strongest first, at most MAX_NARRATIVE_LINES with context), the top hypothesis.
fn narrative(
    sc: &Scope,
    samples: &[Sample],
    ranking: &[Member],
    peer_map: &PeerMap,
    fleet_wide: &[&Member],
    top: &Hypothesis,
) -> String {
    let (host, anomalies, context, n_err) = (sc.host, sc.anomalies, sc.context, sc.n_err);
    let (first_err, opened_at, first_err_or_last) =
        (sc.first_err, sc.opened_at, sc.first_err_or_last);
    let mut lines = vec![format!(
        "At {}, {host} experienced:",
        crate::format_utc_minute(first_err.unwrap_or(opened_at))
    )];
    if n_err > 0 {
        lines.push(format!(
            "- {n_err} error event{}",
            if n_err == 1 { "" } else { "s" }
        ));
    }
    let mut sorted: Vec<&&Signal> = anomalies.iter().collect();
    sorted.sort_by(|a, b| b.risk.total_cmp(&a.risk).then(a.start.cmp(&b.start)));
    let mut seen = std::collections::HashSet::new();
    let mut listed = 0usize;
    let mut more = 0usize;
    for a in sorted {
        // One line per metric and kind: the strongest.
        if !seen.insert((a.metric.clone(), a.anomaly_kind.clone())) {
            continue;
        }
        if listed == MAX_NARRATIVE_LINES {
            more += 1;
            continue;
        }
        listed += 1;
        let what = match a.anomaly_kind.as_str() {
            "spike" => "spike to",
            "drop" => "drop to",
            "level_shift_up" => "level shift up to",
            "level_shift_down" => "level shift down to",
            "collective" if a.baseline.is_some_and(|b| a.peak_value < b) => {
                "down with other metrics to"
            }
            "collective" => "up with other metrics to",
            "no_data" => "stopped reporting after",
            _ => "anomaly at",
        };
        // (On the line of the member's representative anomaly only: the peers were judged
        // at its time.)
        let shared = match peer_map.get(a.metric.as_str()) {
            Some((id, p)) if *id == a.id && p.share() >= FLEET_WIDE => {
                format!(" (and on {} of {} peers)", p.moving, p.total)
            }
            _ => String::new(),
        };
        lines.push(format!(
            "- {} {what} {}{shared}",
            metric_label(&a.metric),
            val(a.peak_value, &a.unit)
        ));
    }
    for c in context {
        if listed == MAX_NARRATIVE_LINES {
            more += 1;
            continue;
        }
        listed += 1;
        if c.anomaly_kind == "volatility_up" {
            // The ratio to the baseline noise; a zero baseline has none, so the event's own
            // score is shown instead (never "NaNx").
            let ratio = c
                .baseline
                .filter(|b| *b > 0.0 && b.is_finite())
                .map(|b| c.peak_value / b)
                .filter(|r| r.is_finite());
            lines.push(match (ratio, c.score.filter(|z| z.is_finite())) {
                (Some(r), _) => format!(
                    "- {} volatility {r:.1}x its baseline (sustained)",
                    metric_label(&c.metric)
                ),
                (None, Some(z)) => format!(
                    "- {} volatility up from a flat baseline (score {z:.1}, sustained)",
                    metric_label(&c.metric)
                ),
                (None, None) => format!(
                    "- {} volatility up from a flat baseline (sustained)",
                    metric_label(&c.metric)
                ),
            });
            continue;
        }
        if c.anomaly_kind != "leak" {
            let what = match c.anomaly_kind.as_str() {
                "level_shift_down" => "level shift down to",
                "drift_up" => "drifting up to",
                "drift_down" => "drifting down to",
                "volatility_down" => "quieter than usual at",
                _ => "level shift up to",
            };
            lines.push(format!(
                "- {} {what} {} (sustained)",
                metric_label(&c.metric),
                val(c.peak_value, &c.unit)
            ));
            continue;
        }
        // The latest sample at or before the first error; else the fitted line there.
        let v = samples
            .iter()
            .filter(|x| x.host == host && x.metric == c.metric && x.ts <= first_err_or_last)
            .max_by_key(|x| x.ts)
            .map(|x| x.value)
            .unwrap_or_else(|| match c.baseline {
                Some(b) if c.end > c.start => {
                    let f = ((first_err_or_last - c.start) as f64 / (c.end - c.start) as f64)
                        .clamp(0.0, 1.0);
                    b + f * (c.peak_value - b)
                }
                _ => c.peak_value,
            });
        lines.push(format!(
            "- {} at {} (leak progression)",
            metric_label(&c.metric),
            val(v, &c.unit)
        ));
    }
    if more > 0 {
        lines.push(format!(
            "- and {more} more anomal{} (coherence.incident_timeline lists every signal)",
            if more == 1 { "y" } else { "ies" }
        ));
    }
    lines.push(match top.cause.as_str() {
        "correlated metric anomalies" | "metric anomaly" => format!(
            "Hypothesis: {} led by {} ({}).",
            if ranking.len() >= 2 {
                "correlated anomalies on several metrics,"
            } else {
                "an anomaly of one metric,"
            },
            ranking.first().map_or("?", |m| m.metric.as_str()),
            why_first(ranking)
        ),
        "resource exhaustion" => "Hypothesis: Error burst caused by resource exhaustion.".into(),
        "memory leak" => "Hypothesis: Error burst caused by a memory leak.".into(),
        "disk filling" => "Hypothesis: Error burst caused by a filling disk.".into(),
        "traffic surge" => "Hypothesis: Error burst caused by a traffic surge.".into(),
        "fleet-wide load" => format!(
            "Hypothesis: load on the fleet ({} moved on most of its peers too), not a fault of this host.",
            fleet_wide
                .iter()
                .map(|m| m.metric.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        "telemetry stopped" => {
            "Hypothesis: telemetry stopped (the host, its agent or the feed may be down).".into()
        }
        _ if n_err == 0 => "Hypothesis: undetermined (the anomalies are weak).".into(),
        _ => {
            "Hypothesis: undetermined (no resource or traffic anomaly preceded the errors).".into()
        }
    });

    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    const MIN: i64 = 60_000_000;
    /// 2025-12-13 04:10 UTC
    const T: i64 = 1_765_599_000_000_000;

    fn err(id: u32, host: &str, t: i64) -> Signal {
        Signal {
            id: format!("error:{id}"),
            host: host.into(),
            kind: "error".into(),
            metric: "error".into(),
            anomaly_kind: String::new(),
            start: t,
            end: t,
            peak_at: t,
            peak_value: 0.0,
            risk: 0.0,
            baseline: None,
            unit: String::new(),
            score: None,
            history: false,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn anom(
        id: u32,
        host: &str,
        metric: &str,
        kind: &str,
        start: i64,
        end: i64,
        peak: f64,
        risk: f64,
    ) -> Signal {
        Signal {
            id: format!("anomaly:{id}"),
            host: host.into(),
            kind: "anomaly".into(),
            metric: metric.into(),
            anomaly_kind: kind.into(),
            start,
            end,
            peak_at: start,
            peak_value: peak,
            risk,
            baseline: None,
            unit: "%".into(),
            score: None,
            history: false,
        }
    }

    fn scenario() -> Vec<Signal> {
        let mut s: Vec<Signal> = (0..13)
            .map(|i| err(i, "host-stressed", T + i as i64 * 15_000_000))
            .collect();
        s.push(anom(
            100,
            "host-stressed",
            "cpu",
            "spike",
            T - 3 * MIN,
            T - 3 * MIN,
            94.98,
            0.69,
        ));
        let mut leak = anom(
            101,
            "host-stressed",
            "memory",
            "leak",
            T - 44 * 60 * MIN,
            T + 110 * MIN,
            87.95,
            1.0,
        );
        leak.baseline = Some(38.05);
        s.push(leak);
        // An earlier CPU spike far from any error, and a healthy host with no errors.
        s.push(anom(
            102,
            "host-stressed",
            "cpu",
            "spike",
            T - 300 * MIN,
            T - 300 * MIN,
            90.0,
            0.6,
        ));
        s.push(anom(103, "host-healthy", "cpu", "spike", T, T, 50.0, 0.55));
        s
    }

    fn samples() -> Vec<Sample> {
        let m = |ts: i64, value: f64| Sample {
            host: "host-stressed".into(),
            metric: "memory".into(),
            ts,
            value,
        };
        vec![m(T - 2 * MIN, 87.5), m(T - MIN, 87.61), m(T + MIN, 87.7)]
    }

    #[test]
    fn seed_narrative() {
        let inc = correlate(&scenario(), &samples(), &CorrelateParams::default());
        assert_eq!(inc.len(), 1, "{inc:#?}");
        let i = &inc[0];
        assert_eq!(i.host, "host-stressed");
        assert_eq!(i.error_count, 13);
        assert_eq!(i.opened_at, T - 3 * MIN);
        assert_eq!(i.first_error_at, Some(T));
        assert_eq!(
            i.narrative,
            "At 2025-12-13 04:10 UTC, host-stressed experienced:\n- 13 error events\n- CPU spike to 94.98%\n\
             - Memory at 87.61% (leak progression)\nHypothesis: Error burst caused by resource exhaustion."
        );
        assert_eq!(i.hypotheses[0].cause, "resource exhaustion");
        // 1 − (1 − 0.69)(1 − 0.8) = 0.938
        assert!(
            (i.hypotheses[0].confidence - 0.938).abs() < 1e-9,
            "{:?}",
            i.hypotheses
        );
        assert_eq!(i.hypotheses[1].cause, "memory leak");
        assert_eq!(i.risk, 1.0);
        assert!(i.context_ids.contains(&"anomaly:101".to_string()));
        assert!(!i.signal_ids.contains(&"anomaly:102".to_string()));
    }

    #[test]
    fn context_lines_by_kind() {
        let mut s = vec![
            err(1, "h", T),
            err(2, "h", T + MIN),
            err(3, "h", T + 2 * MIN),
        ];
        let mut v = anom(
            7,
            "h",
            "cpu",
            "volatility_up",
            T - 4 * 60 * MIN,
            T + 60 * MIN,
            6.0,
            0.8,
        );
        v.baseline = Some(1.5);
        s.push(v);
        s.push(anom(
            8,
            "h",
            "disk",
            "level_shift_up",
            T - 3 * 60 * MIN,
            T + 60 * MIN,
            91.0,
            0.9,
        ));
        let all = correlate(&s, &[], &CorrelateParams::default());
        // (a long shift's onset, hours earlier, is an incident of its own)
        let i = all
            .iter()
            .find(|i| i.error_count > 0)
            .expect("the error burst");
        assert!(
            i.narrative
                .contains("- CPU volatility 4.0x its baseline (sustained)"),
            "{}",
            i.narrative
        );
        assert!(
            i.narrative
                .contains("- Disk level shift up to 91.00% (sustained)"),
            "{}",
            i.narrative
        );
    }

    #[test]
    fn causal_graph_precedence() {
        let i = &correlate(&scenario(), &samples(), &CorrelateParams::default())[0];
        let e = i
            .edges
            .iter()
            .find(|e| e.cause == "anomaly:100")
            .expect("cpu → errors");
        assert_eq!(e.effect, format!("errors:host-stressed:{T}"));
        assert_eq!(e.lag_secs, 180.0);
        // 0.69 · 5 / (5 + 3)
        assert!((e.strength - 0.69 * 5.0 / 8.0).abs() < 1e-6);
        // The leak started first: it precedes both, with context strength 0.5.
        assert!(i
            .edges
            .iter()
            .any(|e| e.cause == "anomaly:101" && e.effect == "anomaly:100" && e.strength == 0.5));
        // No edge points backwards in time.
        assert!(i.edges.iter().all(|e| e.lag_secs > 0.0));
    }

    #[test]
    fn grouping_rules() {
        let p = CorrelateParams::default();
        // Two errors alone: below min_errors, no incident; three: an undetermined incident.
        let two = vec![err(1, "h", T), err(2, "h", T + MIN)];
        assert!(correlate(&two, &[], &p).is_empty());
        let three = vec![
            err(1, "h", T),
            err(2, "h", T + MIN),
            err(3, "h", T + 2 * MIN),
        ];
        let i = correlate(&three, &[], &p);
        assert_eq!(i.len(), 1);
        assert_eq!(i[0].hypotheses[0].cause, "undetermined");
        assert!(i[0].narrative.ends_with(
            "Hypothesis: undetermined (no resource or traffic anomaly preceded the errors)."
        ));
        // Errors 6 minutes apart are separate groups; a spike between them bridges (merge).
        let apart = vec![err(1, "h", T), err(2, "h", T + 6 * MIN)];
        assert!(correlate(&apart, &[], &p).is_empty());
        let mut bridged = apart.clone();
        bridged.push(anom(
            9,
            "h",
            "cpu",
            "spike",
            T + 3 * MIN,
            T + 3 * MIN,
            99.0,
            0.9,
        ));
        let i = correlate(&bridged, &[], &p);
        assert_eq!(i.len(), 1);
        assert_eq!(i[0].error_count, 2);
        // An anomaly after the errors is an effect, not a cause.
        let after = vec![
            err(1, "h", T),
            anom(9, "h", "cpu", "spike", T + 4 * MIN, T + 4 * MIN, 99.0, 0.9),
        ];
        let i = correlate(&after, &[], &p);
        assert_eq!(i[0].hypotheses[0].cause, "undetermined");
        // Traffic surge before errors.
        let mut t = vec![err(1, "h", T)];
        let mut a = anom(
            9,
            "h",
            "requests",
            "level_shift_up",
            T - 2 * MIN,
            T + 10 * MIN,
            5000.0,
            0.9,
        );
        a.unit = String::new();
        t.push(a);
        assert_eq!(
            correlate(&t, &[], &p)[0].hypotheses[0].cause,
            "traffic surge"
        );
        // Tolerance is configurable.
        let wide = CorrelateParams {
            tolerance_us: 10 * MIN,
            ..p
        };
        assert_eq!(
            correlate(
                &bridged[..2],
                &[],
                &CorrelateParams {
                    min_errors: 2,
                    ..wide
                }
            )
            .len(),
            1
        );
    }

    #[test]
    fn order_independent_and_json_round_trip() {
        let mut s = scenario();
        let a = correlate(&s, &samples(), &CorrelateParams::default());
        s.reverse();
        assert_eq!(a, correlate(&s, &samples(), &CorrelateParams::default()));
        // Without samples the narrative uses the fitted leak line at the first error.
        let fitted = correlate(&s, &[], &CorrelateParams::default());
        assert!(
            fitted[0]
                .narrative
                .contains("- Memory at 85.95% (leak progression)"),
            "{}",
            fitted[0].narrative
        );
        let json = serde_json::to_string(&s).unwrap();
        let back: Vec<Signal> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        assert!(correlate(&[], &[], &CorrelateParams::default()).is_empty());
    }

    fn dip(id: u32, metric: &str, start: i64, risk: f64) -> Signal {
        anom(
            id,
            "db-1",
            metric,
            "drop",
            start,
            start + 10 * MIN,
            1.0,
            risk,
        )
    }

    /// cpu spikes on four hosts at once; only web-1's memory spikes too, a minute later.
    fn fleet_scenario() -> Vec<Signal> {
        let mut s: Vec<Signal> = ["web-1", "web-2", "web-3", "web-4"]
            .iter()
            .enumerate()
            .map(|(k, h)| anom(k as u32 + 1, h, "cpu", "spike", T, T + 2 * MIN, 97.0, 0.9))
            .collect();
        s.push(anom(
            9,
            "web-1",
            "memory",
            "spike",
            T + MIN,
            T + 3 * MIN,
            91.0,
            0.9,
        ));
        s
    }

    fn fleet(n: u32) -> Fleet {
        [("cpu".to_string(), n), ("memory".to_string(), n)]
            .into_iter()
            .collect()
    }

    fn on_host<'a>(i: &'a [Incident], host: &str) -> &'a Incident {
        i.iter()
            .find(|x| x.host == host)
            .expect("an incident on the host")
    }

    #[test]
    fn a_deviation_every_peer_shows_is_load_and_the_hosts_own_leads() {
        let p = CorrelateParams::default();
        let i = correlate_fleet(&fleet_scenario(), &[], &fleet(4), &p, &mut || {});
        let w1 = on_host(&i, "web-1");
        assert_eq!(w1.ranking[0].metric, "memory", "{:?}", w1.ranking);
        assert_eq!(
            w1.ranking[0].peers,
            Some(Peers {
                moving: 0,
                total: 3
            })
        );
        assert_eq!(w1.ranking[1].metric, "cpu");
        assert_eq!(
            w1.ranking[1].peers,
            Some(Peers {
                moving: 3,
                total: 3
            })
        );
        assert_eq!(w1.ranking[1].score, 0.0);
        assert!(
            w1.narrative
                .contains("- CPU spike to 97.00% (and on 3 of 3 peers)"),
            "{}",
            w1.narrative
        );
        assert!(
            w1.narrative.contains("- Memory spike to 91.00%\n"),
            "{}",
            w1.narrative
        );
        // The correlated-anomalies hypothesis rests on memory alone now, still the top one.
        assert_eq!(w1.hypotheses[0].cause, "correlated metric anomalies");
        assert!(
            w1.hypotheses[0].evidence.contains("led by memory"),
            "{:?}",
            w1.hypotheses
        );
        // web-2 has only the fleet-wide cpu spike: load, not its fault.
        let w2 = on_host(&i, "web-2");
        assert_eq!(
            w2.hypotheses[0].cause, "fleet-wide load",
            "{:?}",
            w2.hypotheses
        );
        assert!(
            w2.hypotheses[0]
                .evidence
                .starts_with("cpu moved on 3 of 3 peers"),
            "{:?}",
            w2.hypotheses
        );
        assert!(w2.narrative.ends_with("Hypothesis: load on the fleet (cpu moved on most of its peers too), not a fault of this host."), "{}", w2.narrative);
    }

    #[test]
    fn without_a_fleet_peers_change_nothing() {
        let p = CorrelateParams::default();
        let with_none = correlate(&fleet_scenario(), &[], &p);
        let w1 = on_host(&with_none, "web-1");
        assert_eq!(
            w1.ranking[0].metric, "cpu",
            "the first to move leads: {:?}",
            w1.ranking
        );
        assert!(w1.ranking.iter().all(|m| m.peers.is_none()));
        assert!(!serde_json::to_string(&with_none).unwrap().contains("peers"));
        // Too few peers (one other host) is no evidence either.
        assert_eq!(
            correlate_fleet(&fleet_scenario(), &[], &fleet(2), &p, &mut || {}),
            with_none
        );
    }

    #[test]
    fn one_peer_in_many_costs_little_and_is_not_load() {
        let p = CorrelateParams::default();
        let mut s = fleet_scenario();
        s.retain(|x| x.host == "web-1" || x.host == "web-2");
        let i = correlate_fleet(&s, &[], &fleet(11), &p, &mut || {});
        let w1 = on_host(&i, "web-1");
        let cpu = w1.ranking.iter().find(|m| m.metric == "cpu").unwrap();
        assert_eq!(
            cpu.peers,
            Some(Peers {
                moving: 1,
                total: 10
            })
        );
        assert_eq!(cpu.score, 0.9 * 0.9);
        assert_eq!(w1.ranking[0].metric, "cpu", "{:?}", w1.ranking);
        assert!(w1.hypotheses.iter().all(|h| h.cause != "fleet-wide load"));
        assert!(!w1.narrative.contains("peers"), "{}", w1.narrative);
    }

    #[test]
    fn a_peer_counts_only_within_the_tolerance_of_the_members_anomaly() {
        let p = CorrelateParams::default();
        let mut s = fleet_scenario();
        // web-3's and web-4's cpu spikes an hour later: not at the same time.
        for x in s
            .iter_mut()
            .filter(|x| x.host == "web-3" || x.host == "web-4")
        {
            x.start += 60 * MIN;
            x.end += 60 * MIN;
        }
        let i = correlate_fleet(&s, &[], &fleet(4), &p, &mut || {});
        let cpu = on_host(&i, "web-1")
            .ranking
            .iter()
            .find(|m| m.metric == "cpu")
            .cloned()
            .unwrap();
        assert_eq!(
            cpu.peers,
            Some(Peers {
                moving: 1,
                total: 3
            })
        );
    }

    #[test]
    fn peers_count_short_anomalies_in_the_same_direction_only() {
        let p = CorrelateParams::default();
        let mut s = fleet_scenario();
        // web-2's cpu drops instead, web-3's cpu drifts up for two days (background): neither
        // moved with web-1's spike; web-4's did.
        for x in s.iter_mut() {
            match x.host.as_str() {
                "web-2" => x.anomaly_kind = "drop".into(),
                "web-3" => {
                    x.anomaly_kind = "drift_up".into();
                    x.start -= 24 * 60 * MIN;
                    x.end += 24 * 60 * MIN;
                }
                _ => {}
            }
        }
        let i = correlate_fleet(&s, &[], &fleet(4), &p, &mut || {});
        let cpu = on_host(&i, "web-1")
            .ranking
            .iter()
            .find(|m| m.metric == "cpu")
            .cloned()
            .unwrap();
        assert_eq!(
            cpu.peers,
            Some(Peers {
                moving: 1,
                total: 3
            })
        );
    }

    #[test]
    fn the_peer_note_is_on_the_line_of_the_anomaly_the_peers_were_judged_at() {
        let p = CorrelateParams::default();
        let mut s = fleet_scenario();
        // web-1's own cpu drop 4 minutes later, weaker: a line of its own, without the note.
        s.push(anom(
            20,
            "web-1",
            "cpu",
            "drop",
            T + 4 * MIN,
            T + 5 * MIN,
            3.0,
            0.85,
        ));
        let i = correlate_fleet(&s, &[], &fleet(4), &p, &mut || {});
        let w1 = on_host(&i, "web-1");
        assert!(
            w1.narrative
                .contains("- CPU spike to 97.00% (and on 3 of 3 peers)\n"),
            "{}",
            w1.narrative
        );
        assert!(
            w1.narrative.contains("- CPU drop to 3.00%\n"),
            "{}",
            w1.narrative
        );
    }

    #[test]
    fn an_error_burst_on_the_host_outranks_fleet_wide_load_at_equal_confidence() {
        let p = CorrelateParams::default();
        let mut s = fleet_scenario();
        s.retain(|x| x.metric == "cpu");
        s.extend((0..5).map(|k| err(100 + k, "web-2", T + MIN + k as i64 * 1_000_000)));
        let i = correlate_fleet(&s, &[], &fleet(4), &p, &mut || {});
        let w2 = on_host(&i, "web-2");
        assert_eq!(
            w2.hypotheses[0].cause, "resource exhaustion",
            "{:?}",
            w2.hypotheses
        );
        assert_eq!(
            w2.hypotheses[1].cause, "fleet-wide load",
            "{:?}",
            w2.hypotheses
        );
        assert_eq!(w2.hypotheses[0].confidence, w2.hypotheses[1].confidence);
    }

    #[test]
    fn a_spike_on_two_thousand_hosts_is_load_on_each() {
        let p = CorrelateParams::default();
        let n = 2_000u32;
        let s: Vec<Signal> = (0..n)
            .map(|k| {
                anom(
                    k,
                    &format!("h{k}"),
                    "cpu",
                    "spike",
                    T + (k % 7) as i64 * 1_000_000,
                    T + 2 * MIN,
                    97.0,
                    0.9,
                )
            })
            .collect();
        let f: Fleet = [("cpu".to_string(), n)].into_iter().collect();
        let i = correlate_fleet(&s, &[], &f, &p, &mut || {});
        assert_eq!(i.len(), n as usize);
        assert!(i.iter().all(|x| x.ranking[0].peers
            == Some(Peers {
                moving: n - 1,
                total: n - 1
            })
            && x.hypotheses[0].cause == "fleet-wide load"));
    }

    #[test]
    fn metrics_moving_together_open_an_incident_without_errors() {
        let p = CorrelateParams::default();
        // Six metrics dip within two minutes; m3 moves first.
        let mut s: Vec<Signal> = ["m1", "m2", "m4", "m5", "m6"]
            .iter()
            .enumerate()
            .map(|(k, m)| dip(10 + k as u32, m, T + MIN + k as i64 * 20_000_000, 0.45))
            .collect();
        s.push(dip(9, "m3", T, 0.45));
        let i = correlate(&s, &[], &p);
        assert_eq!(i.len(), 1, "{i:?}");
        let i = &i[0];
        assert_eq!(i.first_error_at, None);
        assert_eq!(i.error_count, 0);
        assert_eq!(i.ranking.len(), 6);
        assert_eq!(i.ranking[0].metric, "m3");
        assert_eq!(i.hypotheses[0].cause, "correlated metric anomalies");
        assert!(
            i.hypotheses[0].evidence.contains("led by m3"),
            "{:?}",
            i.hypotheses
        );
        assert!(!i.narrative.contains("error event"), "{}", i.narrative);
        assert!(
            i.narrative.ends_with("led by m3 (it moved first)."),
            "{}",
            i.narrative
        );
        // Ranking scores fall with onset lag at equal risk.
        assert!(i.ranking.windows(2).all(|w| w[0].score >= w[1].score));
    }

    #[test]
    fn weak_or_lonely_anomalies_open_no_incident_without_errors() {
        let p = CorrelateParams::default();
        // One anomaly below ALONE_RISK: nothing; at it: a one-metric incident.
        assert!(correlate(&[dip(1, "m1", T, ALONE_RISK - 0.01)], &[], &p).is_empty());
        let one = correlate(&[dip(1, "m1", T, ALONE_RISK)], &[], &p);
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].hypotheses[0].cause, "metric anomaly");
        // Two metrics whose combined risk is below TOGETHER_RISK: nothing.
        let weak = vec![dip(1, "m1", T, 0.2), dip(2, "m2", T + MIN, 0.2)];
        const { assert!(1.0 - 0.8 * 0.8 < TOGETHER_RISK) };
        assert!(correlate(&weak, &[], &p).is_empty());
        // Many anomalies of one metric are one metric: not "together".
        let same: Vec<Signal> = (0..5)
            .map(|k| dip(k, "m1", T + k as i64 * MIN, 0.4))
            .collect();
        assert!(correlate(&same, &[], &p).is_empty());
    }

    #[test]
    fn silent_metrics_of_a_host_open_a_telemetry_stopped_incident() {
        let p = CorrelateParams::default();
        let s: Vec<Signal> = ["cpu", "memory", "disk"]
            .iter()
            .enumerate()
            .map(|(k, m)| anom(k as u32, "db-1", m, "no_data", T, T + 2 * MIN, 40.0, 0.5))
            .collect();
        let got = correlate(&s, &[], &p);
        assert_eq!(got.len(), 1);
        let h = &got[0].hypotheses[0];
        assert_eq!(h.cause, "telemetry stopped");
        assert_eq!(
            h.evidence,
            "cpu, disk, memory stopped reporting: the host, its agent or the feed may be down"
        );
        assert!(h.confidence > 0.8, "{h:?}");
        assert!(
            !got[0]
                .hypotheses
                .iter()
                .any(|h| h.cause == "correlated metric anomalies"),
            "{:?}",
            got[0].hypotheses
        );
        assert!(
            got[0]
                .narrative
                .contains("CPU stopped reporting after 40.00%"),
            "{}",
            got[0].narrative
        );
        // One silent metric at 2 missed intervals (risk 0.5) alone is not an incident.
        assert!(correlate(&s[..1], &[], &p).is_empty());
        // A silence of hours is no background context: its incident lasts as long as it does.
        let long: Vec<Signal> = ["cpu", "memory"]
            .iter()
            .enumerate()
            .map(|(k, m)| anom(k as u32, "db-1", m, "no_data", T, T + 180 * MIN, 40.0, 0.99))
            .collect();
        let got = correlate(&long, &[], &p);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].last_signal_at, T + 180 * MIN);
        assert!(got[0].context_ids.is_empty());
    }

    #[test]
    fn a_sustained_shift_opens_an_incident_at_its_onset_and_a_leak_does_not() {
        let p = CorrelateParams::default();
        // A level shift of 5 hours (risk 0.95): one incident from its onset, however long it
        // lasts by the time it is correlated.
        let shift = anom(
            1,
            "db-1",
            "m24",
            "level_shift_down",
            T,
            T + 300 * MIN,
            3.0,
            0.95,
        );
        let got = correlate(std::slice::from_ref(&shift), &[], &p);
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].opened_at, got[0].last_signal_at), (T, T));
        assert_eq!(got[0].signal_ids, vec!["anomaly:1".to_string()]);
        assert!(got[0].context_ids.is_empty());
        // The same shift while still short (the first run to see it) gives the same opening.
        let early = anom(
            1,
            "db-1",
            "m24",
            "level_shift_down",
            T,
            T + 10 * MIN,
            3.0,
            0.95,
        );
        assert_eq!(correlate(&[early], &[], &p)[0].opened_at, T);
        // A long leak alone opens nothing: its start is where the fit began, not a change.
        let leak = anom(
            2,
            "db-1",
            "memory",
            "leak",
            T - 600 * MIN,
            T + 300 * MIN,
            80.0,
            0.99,
        );
        assert!(correlate(&[leak], &[], &p).is_empty());
    }

    #[test]
    fn incidents_of_a_host_closer_than_the_join_gap_are_one_and_farther_ones_stay_apart() {
        // Three bursts of strong anomalies on db-1 (each an incident by itself), 20 and then 50
        // minutes apart, and one on web-1 between them.
        let burst = |id: u32, host: &str, t: i64| {
            vec![
                anom(id, host, "cpu", "spike", t, t, 95.0, 0.9),
                anom(id + 1, host, "memory", "spike", t + MIN, t + MIN, 90.0, 0.9),
            ]
        };
        let mut s = burst(1, "db-1", T);
        s.extend(burst(3, "db-1", T + 20 * MIN));
        s.extend(burst(5, "db-1", T + 70 * MIN));
        s.extend(burst(7, "web-1", T + 10 * MIN));
        let apart = correlate(&s, &[], &CorrelateParams::default());
        assert_eq!(apart.len(), 4, "no join gap: each burst is an incident");
        let p = CorrelateParams {
            join_gap_us: 30 * MIN,
            ..CorrelateParams::default()
        };
        let joined = correlate(&s, &[], &p);
        let db: Vec<&Incident> = joined.iter().filter(|i| i.host == "db-1").collect();
        assert_eq!(db.len(), 2, "{joined:#?}");
        assert_eq!(
            db[0].signal_ids.len(),
            4,
            "the first two bursts are one incident"
        );
        assert_eq!((db[0].opened_at, db[0].last_signal_at), (T, T + 21 * MIN));
        assert_eq!(
            db[1].signal_ids.len(),
            2,
            "50 minutes later is a new incident"
        );
        assert_eq!(
            joined.iter().filter(|i| i.host == "web-1").count(),
            1,
            "hosts never join"
        );
        // A weak anomaly between two incidents forms nothing and joins nothing.
        let mut weak = burst(1, "db-1", T);
        weak.push(anom(
            9,
            "db-1",
            "disk",
            "spike",
            T + 25 * MIN,
            T + 25 * MIN,
            50.0,
            0.1,
        ));
        weak.extend(burst(5, "db-1", T + 50 * MIN));
        assert_eq!(correlate(&weak, &[], &p).len(), 2);
    }

    #[test]
    fn zero_baseline_volatility_never_prints_nan() {
        let mut v = anom(
            5,
            "db-1",
            "cpu",
            "volatility_up",
            T - 120 * MIN,
            T + 60 * MIN,
            3.0,
            0.9,
        );
        v.baseline = Some(0.0);
        v.score = Some(42.0);
        let s = vec![
            err(1, "db-1", T),
            err(2, "db-1", T + MIN),
            err(3, "db-1", T + 2 * MIN),
            v,
        ];
        let all = correlate(&s, &[], &CorrelateParams::default());
        // (a long shift's onset, hours earlier, is an incident of its own)
        let i = all
            .iter()
            .find(|i| i.error_count > 0)
            .expect("the error burst");
        assert!(
            !i.narrative.contains("NaN") && !i.narrative.contains("inf"),
            "{}",
            i.narrative
        );
        assert!(i.narrative.contains("score 42.0"), "{}", i.narrative);
    }

    #[test]
    fn lagged_onsets_count_only_within_the_tolerance_after_and_never_simultaneous() {
        let a = [0, 10, 20, 30];
        // 10 → 12 (within 5), 20 → 25 (at the edge), 0 → 0 (same time: no), 30 → 40 (too late).
        let b = [0, 12, 25, 40];
        assert_eq!(followed(&a, &b, 5), 2);
        assert_eq!(followed(&b, &a, 5), 1); // 25 → 30
        assert_eq!(followed(&a, &[], 5), 0);
        assert_eq!(followed(&[], &b, 5), 0);
        assert_eq!(followed(&[i64::MAX - 1], &[i64::MAX], i64::MAX), 1);
    }

    #[test]
    fn a_metric_whose_anomalies_usually_begin_first_leads_a_tie() {
        // Four earlier episodes, six hours apart: zz_cause spikes, aa_effect two minutes later;
        // now both at the same minute with the same risk: the onset lag cannot tell them apart
        // (by name alone aa_effect would lead); the history can.
        let sigs = episodes(4, "zz_cause", "aa_effect", false);
        let got = correlate(&sigs, &[], &CorrelateParams::default());
        assert_eq!(got.len(), 5, "{got:#?}");
        let now = got.iter().find(|i| i.opened_at == T).unwrap();
        let names: Vec<&str> = now.ranking.iter().map(|m| m.metric.as_str()).collect();
        assert_eq!(names, ["zz_cause", "aa_effect"]);
        assert_eq!(
            now.ranking[0].lead,
            Some(Lead {
                before: 4,
                after: 0
            })
        );
        assert_eq!(
            now.ranking[1].lead,
            Some(Lead {
                before: 0,
                after: 4
            })
        );
        // 0.9 · (1 ± 0.5)
        assert_eq!((now.ranking[0].score, now.ranking[1].score), (1.35, 0.45));
        assert!(
            now.narrative.ends_with(
                "led by zz_cause (it moved first, with 1 other; earlier, it moved shortly \
                 before another member 4 times and after one 0 times)."
            ),
            "{}",
            now.narrative
        );
        assert!(now.hypotheses[0]
            .evidence
            .contains("before another member 4 times and after one 0 times"));
        // The first episodes have too little history: no lead, the score is the onset-weighted
        // risk; the first shows its order by onset alone.
        let first = got.iter().min_by_key(|i| i.opened_at).unwrap();
        assert!(first.ranking.iter().all(|m| m.lead.is_none()), "{first:#?}");
        assert_eq!(first.ranking[0].metric, "zz_cause");
        assert_eq!(first.ranking[0].score, 0.9);
    }

    #[test]
    fn history_that_contradicts_this_incidents_order_weakens_its_edge_and_ranks_the_usual_leader_first(
    ) {
        // Four earlier episodes: queue_depth rises, two minutes later latency; now latency a
        // minute before queue_depth.
        let mut sigs = episodes(4, "queue_depth", "latency", false);
        sigs.truncate(8);
        sigs.push(anom(1, "db-1", "latency", "spike", T, T + MIN, 95.0, 0.9));
        sigs.push(anom(
            2,
            "db-1",
            "queue_depth",
            "spike",
            T + MIN,
            T + 2 * MIN,
            95.0,
            0.9,
        ));
        let got = correlate(&sigs, &[], &CorrelateParams::default());
        let now = got.iter().find(|i| i.opened_at == T).unwrap();
        // latency: 0.9 · 0.5 (always followed); queue_depth: 0.9 · 5/6 · 1.5.
        let ranked: Vec<(&str, f64)> = now
            .ranking
            .iter()
            .map(|m| (m.metric.as_str(), m.score))
            .collect();
        assert_eq!(ranked, [("queue_depth", 1.125), ("latency", 0.45)]);
        assert!(
            now.narrative.ends_with(
                "led by queue_depth (the strongest early mover; earlier, it moved shortly \
                 before another member 4 times and after one 0 times)."
            ),
            "{}",
            now.narrative
        );
        // The edge latency → queue_depth (time order) at half the strength the lag alone gives.
        assert_eq!(now.edges.len(), 1, "{:?}", now.edges);
        let e = &now.edges[0];
        assert_eq!(
            (e.cause.as_str(), e.effect.as_str()),
            ("anomaly:1", "anomaly:2")
        );
        assert!((e.strength - 0.9 * 5.0 / 6.0 * 0.5).abs() < 1e-6, "{e:?}");
        // The episodes before had no history to go by: their edge is the lag's alone.
        let first = got.iter().min_by_key(|i| i.opened_at).unwrap();
        assert!(
            (first.edges[0].strength - 0.9 * 5.0 / 7.0).abs() < 1e-6,
            "{:?}",
            first.edges
        );
    }

    /// `k` earlier episodes, six hours apart, before `T`: `first` spikes, `second` two
    /// minutes later; then both at `T`. Ids from 100.
    fn episodes(k: i64, first: &str, second: &str, history: bool) -> Vec<Signal> {
        let mut sigs = Vec::new();
        for e in 0..k {
            let t = T - (k - e) * 360 * MIN;
            for (n, (metric, at)) in [(first, t), (second, t + 2 * MIN)].into_iter().enumerate() {
                let mut s = anom(
                    100 + 2 * e as u32 + n as u32,
                    "db-1",
                    metric,
                    "spike",
                    at,
                    at + MIN,
                    90.0,
                    0.9,
                );
                s.history = history;
                sigs.push(s);
            }
        }
        sigs.push(anom(1, "db-1", second, "spike", T, T + MIN, 95.0, 0.9));
        sigs.push(anom(2, "db-1", first, "spike", T, T + MIN, 95.0, 0.9));
        sigs
    }

    fn at_t(got: &[Incident]) -> &Incident {
        got.iter()
            .find(|i| i.opened_at == T)
            .expect("the incident at T")
    }

    #[test]
    fn history_signals_give_lead_evidence_and_nothing_else() {
        let p = CorrelateParams::default();
        // The same episodes as signals of the range and as history: one incident instead of
        // five, with the same lead evidence and ranking.
        let in_range = correlate(&episodes(4, "zz_cause", "aa_effect", false), &[], &p);
        let history = correlate(&episodes(4, "zz_cause", "aa_effect", true), &[], &p);
        assert_eq!((in_range.len(), history.len()), (5, 1));
        assert_eq!(at_t(&in_range).ranking, history[0].ranking);
        assert_eq!(
            history[0].ranking[0].lead,
            Some(Lead {
                before: 4,
                after: 0
            })
        );
        // History signals name no member, join no context and open nothing on their own.
        let only_history: Vec<Signal> = episodes(4, "zz_cause", "aa_effect", true)
            .into_iter()
            .filter(|s| s.history)
            .collect();
        assert!(correlate(&only_history, &[], &p).is_empty());
        assert_eq!(history[0].signal_ids, ["anomaly:1", "anomaly:2"]);
        assert!(history[0].context_ids.is_empty());
        // A history signal on a peer is no peer evidence.
        let mut fleet_sigs = episodes(4, "zz_cause", "aa_effect", true);
        let mut peer = anom(50, "db-2", "zz_cause", "spike", T, T + MIN, 95.0, 0.9);
        peer.history = true;
        fleet_sigs.push(peer);
        let fleet: Fleet = [("zz_cause".to_string(), 3), ("aa_effect".to_string(), 3)].into();
        let got = correlate_fleet(&fleet_sigs, &[], &fleet, &p, &mut || {});
        assert!(
            got[0]
                .ranking
                .iter()
                .all(|m| m.peers.is_some_and(|pe| pe.moving == 0)),
            "{got:#?}"
        );
    }

    #[test]
    fn lead_evidence_needs_three_pairs_within_a_day_and_counts_a_flapping_metric_once() {
        let p = CorrelateParams::default();
        // Two episodes: too few pairs.
        assert!(
            correlate(&episodes(2, "zz_cause", "aa_effect", true), &[], &p)[0]
                .ranking
                .iter()
                .all(|m| m.lead.is_none())
        );
        // Three: enough.
        assert_eq!(
            correlate(&episodes(3, "zz_cause", "aa_effect", true), &[], &p)[0].ranking[0].lead,
            Some(Lead {
                before: 3,
                after: 0
            })
        );
        // Five, six hours apart: the oldest is more than a day before the incident.
        assert_eq!(
            correlate(&episodes(5, "zz_cause", "aa_effect", true), &[], &p)[0].ranking[0].lead,
            Some(Lead {
                before: 4,
                after: 0
            })
        );
        // aa_effect flaps every minute for ten minutes before each episode of zz_cause (which
        // follows the flapping's start within the tolerance only the first time): one episode
        // each, not ten onsets each followed by zz_cause.
        let mut sigs = Vec::new();
        for e in 0..3i64 {
            let t = T - (3 - e) * 360 * MIN;
            for m in 0..10 {
                let mut s = anom(
                    200 + 20 * e as u32 + m as u32,
                    "db-1",
                    "aa_effect",
                    "spike",
                    t - (10 - m as i64) * MIN,
                    t - (10 - m as i64) * MIN,
                    90.0,
                    0.9,
                );
                s.history = true;
                sigs.push(s);
            }
            let mut s = anom(
                300 + e as u32,
                "db-1",
                "zz_cause",
                "spike",
                t,
                t + MIN,
                90.0,
                0.9,
            );
            s.history = true;
            sigs.push(s);
        }
        sigs.push(anom(1, "db-1", "aa_effect", "spike", T, T + MIN, 95.0, 0.9));
        sigs.push(anom(2, "db-1", "zz_cause", "spike", T, T + MIN, 95.0, 0.9));
        let got = correlate(&sigs, &[], &p);
        // The flapping episodes began 10 minutes before zz_cause: beyond the tolerance, no pair.
        assert!(
            got[0].ranking.iter().all(|m| m.lead.is_none()),
            "{:#?}",
            got[0].ranking
        );
        // Silences are not onsets.
        let mut quiet = episodes(4, "zz_cause", "aa_effect", true);
        for s in quiet
            .iter_mut()
            .filter(|s| s.history && s.metric == "zz_cause")
        {
            s.anomaly_kind = "no_data".into();
        }
        assert!(correlate(&quiet, &[], &p)[0]
            .ranking
            .iter()
            .all(|m| m.lead.is_none()));
    }

    #[test]
    fn episodes_are_cut_at_the_horizon_so_more_history_changes_nothing() {
        // aa_effect flaps every minute from 20 minutes before the horizon to 2 minutes into
        // it, then the usual episodes. Passing the flapping before the horizon or not gives the
        // same evidence: episodes are formed from the onsets inside the day only.
        let p = CorrelateParams::default();
        let horizon_start = T - 24 * 60 * MIN;
        let flap = |from: i64| -> Vec<Signal> {
            (from..=2)
                .map(|m| {
                    let t = horizon_start + m * MIN;
                    let mut s = anom(
                        500 + (m + 20) as u32,
                        "db-1",
                        "aa_effect",
                        "spike",
                        t,
                        t,
                        90.0,
                        0.9,
                    );
                    s.history = true;
                    s
                })
                .collect()
        };
        let mut all = episodes(4, "zz_cause", "aa_effect", true);
        all.extend(flap(-20));
        let mut inside = episodes(4, "zz_cause", "aa_effect", true);
        inside.extend(flap(0));
        let (a, b) = (correlate(&all, &[], &p), correlate(&inside, &[], &p));
        assert_eq!(a[0].ranking, b[0].ranking);
        // The first usual episode is at the horizon itself: zz_cause there, aa_effect two
        // minutes later, which the flapping (from the horizon on) joins into an episode that
        // begins with zz_cause's, at the same instant: that pair is gone, 3 to 0.
        assert_eq!(
            a[0].ranking[0].lead,
            Some(Lead {
                before: 3,
                after: 0
            })
        );
    }

    #[test]
    fn silent_members_carry_no_lead_evidence() {
        // The usual history, then both metrics fall silent at T.
        let mut sigs = episodes(4, "zz_cause", "aa_effect", true);
        sigs.truncate(8);
        for (id, metric) in [(1, "zz_cause"), (2, "aa_effect")] {
            sigs.push(anom(
                id,
                "db-1",
                metric,
                "no_data",
                T,
                T + 30 * MIN,
                0.0,
                0.9,
            ));
        }
        let got = correlate(&sigs, &[], &CorrelateParams::default());
        assert_eq!(got.len(), 1);
        assert!(
            got[0].ranking.iter().all(|m| m.lead.is_none()),
            "{:#?}",
            got[0].ranking
        );
    }

    #[test]
    fn lead_evidence_is_measured_among_the_first_eight_members_only() {
        // Ten metrics dip at T, m0 a minute before the rest; history: m9 (ranked last) always
        // before m0.
        let mut sigs: Vec<Signal> = (0..10)
            .map(|k| {
                dip(
                    k + 1,
                    &format!("m{k}"),
                    if k == 0 { T - MIN } else { T },
                    0.9,
                )
            })
            .collect();
        for e in 0..4i64 {
            let t = T - (4 - e) * 360 * MIN;
            for (n, (metric, at)) in [("m9", t), ("m0", t + MIN)].into_iter().enumerate() {
                let mut s = dip(100 + 2 * e as u32 + n as u32, metric, at, 0.9);
                s.history = true;
                sigs.push(s);
            }
        }
        let got = correlate(&sigs, &[], &CorrelateParams::default());
        assert_eq!(got.len(), 1);
        let r = &got[0].ranking;
        assert_eq!(r.len(), 10);
        assert_eq!(r[0].metric, "m0");
        // m9 is not among the first eight: no lead evidence for it, and m0's partners in the
        // history are not measured either.
        assert!(r.iter().all(|m| m.lead.is_none()), "{r:#?}");
    }

    #[test]
    fn a_top_member_that_did_not_move_first_is_not_said_to_have() {
        // A weak drop first, a strong one a minute later: the strong one leads on score.
        let sigs = vec![dip(1, "m_weak", T, 0.2), dip(2, "m_strong", T + MIN, 1.0)];
        let got = correlate(&sigs, &[], &CorrelateParams::default());
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].ranking[0].metric, "m_strong");
        assert!(
            got[0]
                .narrative
                .ends_with("led by m_strong (the strongest early mover)."),
            "{}",
            got[0].narrative
        );
        assert!(got[0].hypotheses[0]
            .evidence
            .contains("led by m_strong (drop, risk 1.00)"));
    }

    #[test]
    fn ten_thousand_anomalies_give_bounded_graph_and_narrative() {
        let mut s: Vec<Signal> = (0..10_000u32)
            .map(|k| {
                dip(
                    k,
                    &format!("m{}", k % 2_000),
                    T + (k as i64 % 3_600) * 1_000_000,
                    0.6,
                )
            })
            .collect();
        s.push(err(99_999, "db-1", T + 30 * MIN));
        let mut ticks = 0;
        let i = correlate_with(&s, &[], &CorrelateParams::default(), &mut || ticks += 1);
        assert_eq!(i.len(), 1);
        let i = &i[0];
        assert_eq!(i.signal_ids.len(), 10_001);
        assert_eq!(i.ranking.len(), 2_000);
        assert!(i.edges.len() <= MAX_EDGES && !i.edges.is_empty());
        assert!(
            i.narrative.lines().count() <= MAX_NARRATIVE_LINES + 4,
            "{}",
            i.narrative
        );
        assert!(i.narrative.contains("more anomalies"));
        assert!(ticks > 5, "interrupt checks while correlating: {ticks}");
    }
}
