// Coherence live incident view: incident list, one incident's detail with SVG plots, live
// updates from /api/events (server-sent events fed by LISTEN coherence_incidents).
// State for tests and scripts is mirrored on <body data-*>: live, incidents, incident-ids,
// selected, plots, updates, last-event.
"use strict";

const SVGNS = "http://www.w3.org/2000/svg";
const body = document.body;
const state = { incidents: [], selected: null, seen: new Set(), first: true };
const MAX_PLOTS = 12, MAX_TIMELINE_ROWS = 500;

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") e.className = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const k of kids.flat()) if (k !== null && k !== undefined) e.append(k instanceof Node ? k : String(k));
  return e;
}

function svg(tag, attrs, ...kids) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined) e.setAttribute(k, v);
  for (const k of kids) if (k !== null && k !== undefined) e.append(k instanceof Node ? k : String(k));
  return e;
}

function titled(node, text) { node.append(svg("title", {}, text)); return node; }

const pad2 = (n) => String(n).padStart(2, "0");
function fmtTime(t) {
  if (t === null || t === undefined) return "";
  const d = new Date(typeof t === "number" ? t : Date.parse(t));
  if (isNaN(d)) return String(t);
  return `${d.getUTCFullYear()}-${pad2(d.getUTCMonth() + 1)}-${pad2(d.getUTCDate())} ${pad2(d.getUTCHours())}:${pad2(d.getUTCMinutes())}`;
}
const ms = (t) => (t === null || t === undefined ? null : typeof t === "number" ? t : Date.parse(t));
function fmtNum(v) {
  if (v === null || v === undefined) return "";
  const a = Math.abs(v);
  return a >= 1000 ? v.toFixed(0) : a >= 10 ? v.toFixed(1) : v.toFixed(2);
}
const riskClass = (r) => (r >= 0.8 ? "risk-hi" : r >= 0.5 ? "risk-mid" : "");

async function api(path) {
  const r = await fetch(path, { credentials: "same-origin", headers: { Accept: "application/json" } });
  const j = await r.json().catch(() => ({ error: `HTTP ${r.status}` }));
  if (!r.ok) throw new Error(j.error || `HTTP ${r.status}`);
  return j;
}

function showError(e) {
  const p = document.getElementById("error");
  p.hidden = !e;
  p.textContent = e ? `Error: ${e.message || e}` : "";
}

// ---------- incident list ----------

async function loadList() {
  try {
    state.incidents = await api("api/incidents");
    showError(null);
  } catch (e) { showError(e); return; }
  const tbody = document.querySelector("#incidents tbody");
  tbody.replaceChildren(...state.incidents.map((i) => {
    const tr = el("tr", {
      "data-incident-id": i.id, "data-status": i.status, "data-host": i.host,
      class: [state.selected === i.id ? "selected" : "", !state.first && !state.seen.has(i.id) ? "new" : ""].join(" ").trim() || null,
      onclick: () => select(i.id),
    },
      el("td", {}, `#${i.id}`),
      el("td", {}, el("span", { class: `badge ${i.status}` }, i.muted_by ? `${i.status} (muted)` : i.status)),
      el("td", { class: riskClass(i.risk) }, Number(i.risk).toFixed(2)),
      el("td", {}, i.host),
      el("td", {}, i.hypothesis),
      el("td", { class: "nowrap", title: fmtTime(i.last_signal_at) }, fmtTime(i.last_signal_at).slice(5)));
    return tr;
  }));
  for (const i of state.incidents) state.seen.add(i.id);
  state.first = false;
  document.getElementById("empty").hidden = state.incidents.length > 0;
  body.dataset.incidents = String(state.incidents.length);
  body.dataset.incidentIds = state.incidents.map((i) => i.id).join(",");
  if (state.selected === null && state.incidents.length) {
    const fromHash = Number((location.hash.match(/^#incident-(\d+)$/) || [])[1]);
    select(state.incidents.some((i) => i.id === fromHash) ? fromHash : state.incidents[0].id);
  }
}

// ---------- one incident ----------

let loadSeq = 0;
async function select(id) {
  state.selected = id;
  history.replaceState(null, "", `#incident-${id}`);
  for (const tr of document.querySelectorAll("#incidents tbody tr"))
    tr.classList.toggle("selected", Number(tr.dataset.incidentId) === id);
  const seq = ++loadSeq;
  let inc;
  try { inc = await api(`api/incidents/${id}`); } catch (e) { showError(e); return; }
  if (seq !== loadSeq) return;
  const detail = document.getElementById("detail");
  const plots = el("div", { id: "plots" });
  const facts = [`${inc.host}`, `opened ${fmtTime(inc.opened_at)}`, `last signal ${fmtTime(inc.last_signal_at)}`,
    `${inc.error_count} error events`];
  if (inc.resolved_at) facts.push(`resolved ${fmtTime(inc.resolved_at)}`);
  if (inc.muted_by) facts.push(`muted by maintenance window ${inc.muted_by}`);
  detail.replaceChildren(
    el("h2", {}, `Incident #${inc.id} `, el("span", { class: `badge ${inc.status}` }, inc.status), " ",
      el("span", { class: riskClass(inc.risk) }, `risk ${Number(inc.risk).toFixed(2)}`)),
    el("p", { class: "facts" }, facts.join(" · ")),
    el("p", {}, el("b", {}, "Hypothesis: "), `${inc.hypothesis} (confidence ${Number(inc.confidence).toFixed(2)})`),
    hypothesesList(inc.hypotheses),
    el("pre", { class: "narrative" }, inc.narrative),
    el("h3", {}, "Member metrics"), plots,
    el("h3", {}, "Causal graph"), causalGraph(inc),
    el("h3", {}, "Timeline"), timeline(inc.timeline));
  body.dataset.selected = String(id);
  const all = memberMetrics(inc), metrics = all.slice(0, MAX_PLOTS);
  body.dataset.plots = "0";
  const figs = await Promise.all(metrics.map(async (m) => {
    const q = new URLSearchParams({ host: inc.host, metric: m, since: inc.plot_since, until: inc.plot_until });
    try { return plot(await api(`api/series?${q}`), inc); } catch (e) { return el("p", { class: "error" }, `${m}: ${e.message}`); }
  }));
  if (seq !== loadSeq) return;
  if (all.length > metrics.length) figs.push(el("p", { class: "hint" }, `${all.length - metrics.length} more metrics not plotted: ${all.slice(MAX_PLOTS).join(", ")}`));
  plots.replaceChildren(...(figs.length ? figs : [el("p", { class: "hint" }, "No metric anomalies: error events only.")]));
  body.dataset.plots = String(figs.filter((f) => f.tagName === "FIGURE").length);
}

function memberMetrics(inc) {
  const out = [];
  for (const r of inc.ranking || []) if (r.metric && !out.includes(r.metric) && r.metric !== "error") out.push(r.metric);
  for (const a of inc.anomalies || []) if (!out.includes(a.metric)) out.push(a.metric);
  return out;
}

function hypothesesList(hs) {
  if (!hs || hs.length < 2) return null;
  return el("details", {}, el("summary", {}, `${hs.length} hypotheses ranked`),
    el("ol", {}, hs.map((h) => el("li", {}, `${h.cause} (${Number(h.confidence).toFixed(2)})`,
      h.evidence ? el("span", { class: "hint" }, ` — ${Array.isArray(h.evidence) ? h.evidence.join("; ") : h.evidence}`) : null))));
}

// Consecutive error events with the same message are one row ("13 × error", first–last).
function timeline(rows) {
  const groups = [];
  for (const r of rows || []) {
    const g = groups[groups.length - 1];
    if (g && r.signal === "error" && g.r.signal === "error" && g.r.detail === r.detail) { g.n++; g.last = r.at; }
    else groups.push({ r, n: 1, last: r.at });
  }
  const more = groups.length - MAX_TIMELINE_ROWS;
  if (more > 0) groups.length = MAX_TIMELINE_ROWS;
  return el("div", {}, el("table", { class: "timeline" },
    el("thead", {}, el("tr", {}, ["at (UTC)", "signal", "metric", "kind", "value", "risk", "detail"].map((h) => el("th", {}, h)))),
    el("tbody", {}, groups.map(({ r, n, last }) => el("tr", { class: r.is_context ? "context" : null, "data-signals": n },
      el("td", { class: "nowrap" }, n > 1 ? `${fmtTime(r.at)} – ${fmtTime(last).slice(11)}` : fmtTime(r.at)),
      el("td", {}, n > 1 ? `${n} × ${r.signal}` : r.signal), el("td", {}, r.metric), el("td", {}, r.kind),
      el("td", {}, fmtNum(r.value)), el("td", {}, r.risk === null ? "" : Number(r.risk).toFixed(2)), el("td", {}, r.detail))))),
    more > 0 ? el("p", { class: "hint" }, `${more} more rows: SELECT * FROM coherence.incident_timeline WHERE incident_id = ${rows[0].incident_id} ORDER BY at;`) : null);
}

// ---------- causal graph: signals left to right by time, edges "cause precedes effect" ----------

function causalGraph(inc) {
  const edges = inc.graph || [];
  if (!edges.length) return el("p", { class: "hint" }, "No edges.");
  const byId = new Map((inc.anomalies || []).map((a) => [`anomaly:${a.id}`, a]));
  const nodes = new Map();
  const node = (id) => {
    if (nodes.has(id)) return nodes.get(id);
    const a = byId.get(id);
    let label = id, t = 0, cls = "node";
    if (a) { label = `${a.metric} ${a.kind}`; t = ms(a.started_at); }
    else if (id.startsWith("errors:")) { label = "error burst"; t = Number(id.split(":").pop()) / 1000; cls += " errors"; }
    const n = { id, label, t, cls };
    nodes.set(id, n);
    return n;
  };
  for (const e of edges) { node(e.cause); node(e.effect); }
  const list = [...nodes.values()].sort((a, b) => a.t - b.t);
  const W = 860, colW = Math.max(130, Math.min(200, (W - 20) / list.length)), rowH = 46;
  list.forEach((n, i) => { n.x = 10 + i * colW; n.y = 14 + (i % 2) * rowH; });
  const H = 14 + 2 * rowH + 10;
  const g = svg("svg", { viewBox: `0 0 ${Math.max(W, 20 + list.length * colW)} ${H}`, class: "graph", role: "img", "aria-label": "causal graph" });
  g.append(svg("defs", {}, svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
    svg("path", { d: "M0,0 L10,5 L0,10 z" }))));
  const bw = colW - 24, bh = 26;
  for (const e of edges) {
    const a = nodes.get(e.cause), b = nodes.get(e.effect);
    const x1 = a.x + bw, y1 = a.y + bh / 2, x2 = b.x, y2 = b.y + bh / 2;
    const back = x2 <= x1;
    const d = back ? `M${a.x + bw / 2},${a.y + bh} C${a.x + bw / 2},${H} ${b.x + bw / 2},${H} ${b.x + bw / 2},${b.y + bh}`
      : `M${x1},${y1} C${(x1 + x2) / 2},${y1} ${(x1 + x2) / 2},${y2} ${x2},${y2}`;
    g.append(titled(svg("path", { d, class: "edge", "stroke-width": (0.6 + 3 * (e.strength || 0)).toFixed(2), "marker-end": "url(#arrow)" }),
      `${nodes.get(e.cause).label} → ${nodes.get(e.effect).label}: lag ${Math.round((e.lag_secs || 0) / 60)} min, strength ${Number(e.strength || 0).toFixed(2)}`));
  }
  for (const n of list) {
    g.append(titled(svg("g", { class: n.cls, transform: `translate(${n.x},${n.y})` },
      svg("rect", { width: bw, height: bh, rx: 4 }),
      svg("text", { x: 6, y: 17 }, n.label.length > 24 ? n.label.slice(0, 23) + "…" : n.label)), `${n.id} at ${fmtTime(n.t)}`));
  }
  return g;
}

// ---------- plot: series, expected band, anomalies, errors, time to exhaustion ----------

function niceTicks(lo, hi, n) {
  const span = hi - lo || 1, step0 = span / n, mag = Math.pow(10, Math.floor(Math.log10(step0)));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => span / s <= n) || 10 * mag;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9; v += step) out.push(v);
  return out;
}

// "full at YYYY-MM-DD HH:MM" in a leak's summary: when the fitted line reaches capacity.
function fullAt(summary) {
  const m = /full at (\d{4}-\d\d-\d\d)[ T](\d\d:\d\d)/.exec(summary || "");
  return m ? Date.parse(`${m[1]}T${m[2]}:00Z`) : null;
}

function plot(s, inc) {
  const P = s.points; // [ts, value, baseline, lower, upper, anomalous]
  const W = 860, H = 230, L = 54, R = 14, T = 14, B = 30;
  let x0 = s.since, x1 = s.until;
  if (P.length) { x0 = Math.max(x0, P[0][0]); }
  // Leaks: the fitted line to the time of exhaustion (from the anomaly's fitted start and end,
  // as stored in baseline and peak_value), shown when within one more plot width.
  const leaks = s.anomalies.filter((a) => (a.kind === "leak" || a.kind === "drift_up") && a.baseline !== null && a.peak_value !== null)
    .map((a) => ({ a, full: fullAt(a.summary) }));
  for (const l of leaks) if (l.full && l.full > x1 && l.full - x1 <= x1 - x0) x1 = l.full + (x1 - x0) * 0.03;
  let lo = Infinity, hi = -Infinity;
  const see = (v) => { if (v !== null && v !== undefined && isFinite(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); } };
  for (const p of P) { see(p[1]); see(p[3]); see(p[4]); }
  const lineAt = (l, t) => l.a.baseline + (l.a.peak_value - l.a.baseline) * (t - l.a.started_at) / Math.max(1, l.a.ended_at - l.a.started_at);
  for (const l of leaks) if (l.full && l.full <= x1) see(lineAt(l, l.full));
  if (!isFinite(lo)) { lo = 0; hi = 1; }
  const padY = (hi - lo) * 0.06 || 1; lo -= padY; hi += padY;
  const X = (t) => L + (W - L - R) * (t - x0) / Math.max(1, x1 - x0);
  const Y = (v) => T + (H - T - B) * (1 - (v - lo) / (hi - lo));
  const g = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `${s.host} ${s.metric}` });
  const clip = `clip-${s.metric.replace(/[^a-zA-Z0-9_-]/g, "_")}-${Math.random().toString(36).slice(2, 7)}`;
  g.append(svg("defs", {}, svg("clipPath", { id: clip }, svg("rect", { x: L, y: T, width: W - L - R, height: H - T - B }))));
  const grid = svg("g", { class: "grid" }), axis = svg("g", { class: "axis" });
  for (const v of niceTicks(lo, hi, 4)) {
    grid.append(svg("line", { x1: L, x2: W - R, y1: Y(v), y2: Y(v) }));
    axis.append(svg("text", { x: L - 6, y: Y(v) + 4, "text-anchor": "end" }, fmtNum(v)));
  }
  const nx = 6;
  for (let i = 0; i <= nx; i++) {
    const t = x0 + (x1 - x0) * i / nx;
    axis.append(svg("line", { x1: X(t), x2: X(t), y1: H - B, y2: H - B + 4 }));
    axis.append(svg("text", { x: X(t), y: H - B + 16, "text-anchor": i === 0 ? "start" : i === nx ? "end" : "middle" }, fmtTime(t).slice(5)));
  }
  g.append(grid, axis);
  const inner = svg("g", { "clip-path": `url(#${clip})` });
  // Anomaly spans (behind everything).
  let marks = 0;
  const contextIds = new Set((inc.anomalies || []).filter((a) => a.context).map((a) => a.id));
  for (const a of s.anomalies) {
    const xa = X(a.started_at), xb = Math.max(X(a.ended_at), xa + 2);
    inner.append(titled(svg("rect", { class: `anomaly-span${contextIds.has(a.id) ? " context" : ""}`, x: xa, y: T, width: xb - xa, height: H - T - B,
      "data-anomaly-id": a.id, "data-kind": a.kind }), a.summary));
  }
  // Band: one closed path per run of points that have bounds.
  let d = "", run = [];
  const flush = () => {
    if (run.length > 1) d += "M" + run.map((p) => `${X(p[0]).toFixed(1)},${Y(p[4]).toFixed(1)}`).join("L") + "L" +
      run.slice().reverse().map((p) => `${X(p[0]).toFixed(1)},${Y(p[3]).toFixed(1)}`).join("L") + "Z";
    run = [];
  };
  let bandPoints = 0;
  for (const p of P) { if (p[3] !== null && p[4] !== null) { run.push(p); bandPoints++; } else flush(); }
  flush();
  if (d) inner.append(svg("path", { class: "band", d }));
  const line = (col) => {
    let out = "", pen = false;
    for (const p of P) {
      if (p[col] === null) { pen = false; continue; }
      out += `${pen ? "L" : "M"}${X(p[0]).toFixed(1)},${Y(p[col]).toFixed(1)}`; pen = true;
    }
    return out;
  };
  const bl = line(2);
  if (bl) inner.append(svg("path", { class: "baseline", d: bl }));
  inner.append(svg("path", { class: "series-line", d: line(1) }));
  // Samples the detector flagged, and each anomaly's peak.
  for (const p of P) if (p[5] && p[1] !== null) inner.append(svg("circle", { class: "anomalous-point", cx: X(p[0]), cy: Y(p[1]), r: 1.8 }));
  for (const a of s.anomalies) {
    if (a.peak_at === null || a.peak_value === null) continue;
    inner.append(titled(svg("circle", { class: "anomaly-mark", cx: X(a.peak_at), cy: Y(a.peak_value), r: 4, "data-anomaly-id": a.id }),
      `${a.kind} at ${fmtTime(a.peak_at)}: ${a.summary}`));
    marks++;
  }
  // Leaks: fitted line from start to exhaustion, and the time it is full.
  let tte = 0;
  for (const l of leaks) {
    const end = l.full ? Math.min(l.full, x1) : l.a.ended_at;
    inner.append(titled(svg("line", { class: "tte-line", x1: X(l.a.started_at), y1: Y(l.a.baseline), x2: X(end), y2: Y(lineAt(l, end)) }), l.a.summary));
    if (l.full) {
      const xf = X(Math.min(l.full, x1));
      inner.append(svg("line", { class: "tte-full", x1: xf, x2: xf, y1: T, y2: H - B }));
      g.append(svg("text", { class: "tte-label", x: Math.min(xf, W - R) - 4, y: T + 10, "text-anchor": "end" },
        `${l.full > x1 ? "→ " : ""}full at ${fmtTime(l.full)}`));
    }
    tte++;
  }
  // Error events: triangles on the time axis.
  for (const e of s.errors) {
    const x = X(e.ts), y = H - B;
    inner.append(titled(svg("path", { class: "error-marker", d: `M${x.toFixed(1)},${y - 7} l4,7 l-8,0 z` }), `${fmtTime(e.ts)} ${e.severity}: ${e.message || ""}`));
  }
  g.append(inner);
  const legend = [`${P.length} samples`, s.band ? `band on ${bandPoints}` : "no band (extension without expected_band)",
    `${s.anomalies.length} anomalies`, `${s.errors.length} error events`];
  if (tte) legend.push("dashed: leak trend to exhaustion");
  return el("figure", {
    class: "plot", "data-metric": s.metric, "data-points": P.length, "data-band-points": bandPoints,
    "data-anomaly-marks": marks, "data-anomaly-spans": s.anomalies.length, "data-errors": s.errors.length, "data-tte": tte,
  }, el("figcaption", {}, `${s.host} · ${s.metric}`, el("span", { class: "legend" }, legend.join(" · "))), g);
}

// ---------- live updates ----------

function connect() {
  const es = new EventSource("api/events");
  const live = document.getElementById("live");
  const set = (s, text) => { body.dataset.live = s; live.textContent = text; };
  es.addEventListener("hello", () => { set("connected", "live"); loadList(); });
  es.addEventListener("incident", (m) => {
    let p = {};
    try { p = JSON.parse(m.data); } catch (_) { /* keep going */ }
    body.dataset.updates = String(Number(body.dataset.updates) + 1);
    body.dataset.lastEvent = `${p.event || "?"}:${p.id || "?"}`;
    loadList();
    if (state.selected !== null && Number(p.id) === state.selected) select(state.selected);
  });
  es.addEventListener("resync", () => { loadList(); if (state.selected !== null) select(state.selected); });
  es.onerror = () => set("reconnecting", "reconnecting…");
}

// A script error is shown, not swallowed.
window.addEventListener("error", (e) => showError(e.error || e.message));
window.addEventListener("unhandledrejection", (e) => showError(e.reason));

loadList();
connect();
