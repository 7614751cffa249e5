#!/usr/bin/env python3
"""Multi-metric incident evaluation on SMD (Server Machine Dataset), `make eval-smd`.

Scores the incidents that `coherence.run_detection()` forms on the labelled test half of 4
SMD machines (see the dataset's SOURCE.md), next to two baselines computed here in the same
run. scripts/eval_smd.sh loads the data into a dedicated database, runs the detection and
calls `score`; this file holds the whole protocol.

Data and loading (issue 11, "Development data"):
  * each machine is a host named after its file (machine-1-6, ...); column i (1-based) of the
    test file is the metric `m{i:02}` (m01..m38); test row r is sampled at
    2026-01-01 00:00:00+00 + r minutes (SOURCE.md's convention; the data has no real time);
  * a labelled segment is one line `start-end:i1,i2,...` of interpretation_label: rows
    [start, end) (end-exclusive, checked in SOURCE.md for these 4 machines) and the labelled
    metric set {i1, i2, ...}. Nested lines (machine-3-3 has 2 short ranges inside longer ones,
    each with its own metric list) are segments of their own: 91 segments for 89 label runs.

Windows (the conventions of eval/score.py, the cloud-monitoring protocol):
  * a segment's *window* is its rows widened by tol = max(3, ceil(1% of the machine's rows))
    rows on each side (237-238 rows, about 4 hours, for these machines), clipped to the data.
    That is the headline ("score.py" windows). SMD's segments are short (median 3-26 rows)
    and many, so these windows cover 33-65% of a machine's rows, which makes "found" easy and
    hides false incidents; every table is therefore printed a second time with "strict"
    windows, widened by 3 rows (score.py's minimum) only;
  * spans are inclusive row ranges; two spans overlap when they share a row;
  * events of one method on one machine closer than 3 rows merge (where events are counted).

Methods:
  * coherence: incidents with status <> 'merged'. An incident's span is [opened_at,
    last_signal_at] joined with the spans of the anomalies in `signals` (the correlator's own
    span of its linked signals; the long `context` anomalies attached to it do not stretch it).
    Members = the metrics of the anomalies named in `signals` and `context` ("anomaly:<id>";
    error members are ignored: SMD has none), or the incident's own ranking when it has one
    (below). Member ranking: if the incident's row has a ranked list under
    one of RANKING_KEYS (items "anomaly:<id>", "m07", or objects with "id"/"signal"/"metric"),
    that ranking is the member list (coherence >= 0.3.0: the metrics of its signals; context
    anomalies are background, not members); otherwise (today) the `signals` anomalies by
    risk descending, then earlier start, then column, followed by the `context` anomalies in
    the same order; a metric's rank is its first appearance.
    Segment found = an incident overlaps its window. Its metric set = union of the member
    metrics of every incident overlapping the window; its ranking = those incidents taken by
    incident risk descending, their rankings concatenated, repeated metrics dropped.
    False incidents = incidents overlapping no window.
  * coherence-anomalies (diagnostic, no correlation): every persisted anomaly overlapping the
    window; set = their metrics, ranked by each metric's max risk. False "incidents" = all the
    machine's anomalies (any metric) merged when < 3 rows apart, overlapping no window.
  * sigma2.5 (baseline a): z = (x - mean) / sd per metric over the machine's whole test half
    (sd with ddof=1; constant metrics, sd = 0, are never flagged); a value is flagged when
    |z| > 2.5 (both directions). Set = metrics with a flagged value inside the segment's own
    rows [start, end) (not the widened window); ranking by max |z| inside the segment. Found =
    set not empty. False incidents = runs of rows with any flagged metric, merged when < 3
    rows apart, that overlap no window.
  * all38 (baseline b): names all 38 metrics for every segment (found always); ranking by max
    |z| inside the segment (constant metrics last, ties in column order). No false incidents
    by construction (reported as "-").

Scores per segment (set P/R/F1 against the labelled metrics; HitRate@100% = share of the
labelled metrics among the top k ranked members, k = number of labelled metrics; when fewer
than k members, all of them). Averages per machine and ALL are over *all labelled segments*,
an unfound segment counting 0 for P, R, F1 and HitRate; the found-only averages (over found
segments) are printed beside them. Recall = found / segments. False incidents per
machine-day = false incidents / (rows / 1440).

Usage:
  smd_eval.py csv SMD_DIR            COPY rows host,metric_name,timestamp,value on stdout
  smd_eval.py score SMD_DIR ANOMALIES_CSV INCIDENTS_JSONL [--out FILE] [--timing FILE]
  (ANOMALIES_CSV: id,host,metric,detector,kind,started_at,ended_at,risk with epoch seconds;
   INCIDENTS_JSONL: one to_jsonb(incident) per line; TIMING: a JSON object kept in the output)
"""
import argparse
import csv
import glob
import json
import math
import os
import re
import sys
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone

import numpy as np

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
T0_EPOCH = T0.timestamp()
N_METRICS = 38
SIGMAS = 2.5
MERGE_GAP = 3  # rows: events closer than this merge (eval/score.py: 3 sample intervals)
RANKING_KEYS = ("ranking", "ranked_members", "members", "root_causes", "root_cause_ranking")
METRIC_RE = re.compile(r"^m(\d{2})$")


def metric_name(col):
    return f"m{col:02d}"


def metric_col(name):
    m = METRIC_RE.match(name or "")
    return int(m.group(1)) if m else None


# ---------------------------------------------------------------- data
def machines(smd_dir):
    names = sorted(os.path.basename(f)[:-4] for f in glob.glob(os.path.join(smd_dir, "test", "*.txt")))
    if not names:
        sys.exit(f"smd_eval: no test/*.txt in {smd_dir}")
    for m in names:
        for sub in ("test_label", "interpretation_label"):
            if not os.path.isfile(os.path.join(smd_dir, sub, m + ".txt")):
                sys.exit(f"smd_eval: {sub}/{m}.txt missing in {smd_dir}")
    return names


def load_values(smd_dir, m):
    x = np.loadtxt(os.path.join(smd_dir, "test", m + ".txt"), delimiter=",", dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != N_METRICS:
        sys.exit(f"smd_eval: test/{m}.txt: expected {N_METRICS} columns, got shape {x.shape}")
    return x


def load_segments(smd_dir, m, n):
    """Interpretation lines as dicts: start, end (exclusive), metrics (ordered list), nested."""
    segs = []
    with open(os.path.join(smd_dir, "interpretation_label", m + ".txt")) as fh:
        for ln, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            rng, _, cols = line.partition(":")
            s, _, e = rng.partition("-")
            s, e = int(s), int(e)
            metrics = [int(c) for c in cols.split(",") if c.strip()]
            if not (0 <= s < e <= n) or not metrics or not all(1 <= c <= N_METRICS for c in metrics):
                sys.exit(f"smd_eval: interpretation_label/{m}.txt line {ln}: bad line {line!r}")
            segs.append({"start": s, "end": e, "metrics": metrics})
    for a in segs:
        a["nested"] = any(b is not a and b["start"] <= a["start"] and a["end"] <= b["end"]
                          and (b["end"] - b["start"]) > (a["end"] - a["start"]) for b in segs)
    return segs


def check_labels(smd_dir, m, n, segs):
    """The row labels must be exactly the union of the interpretation ranges (SOURCE.md)."""
    lab = np.loadtxt(os.path.join(smd_dir, "test_label", m + ".txt"), dtype=np.int64)
    if len(lab) != n:
        sys.exit(f"smd_eval: test_label/{m}.txt has {len(lab)} lines for {n} rows")
    cover = np.zeros(n, dtype=bool)
    for s in segs:
        cover[s["start"]:s["end"]] = True
    if not np.array_equal(cover, lab == 1):
        print(f"smd_eval: warning: {m}: labelled rows differ from the interpretation ranges "
              f"({int(np.sum(cover != (lab == 1)))} rows)", file=sys.stderr)
    runs = int(np.sum(np.diff(np.concatenate(([0], (lab == 1).astype(int)))) == 1))
    return int(lab.sum()), runs


def cmd_csv(smd_dir):
    out = sys.stdout
    for m in machines(smd_dir):
        with open(os.path.join(smd_dir, "test", m + ".txt")) as fh:
            rows = [line.rstrip("\n").split(",") for line in fh if line.strip()]
        names = [f"{m},{metric_name(c + 1)}," for c in range(N_METRICS)]
        for r, vals in enumerate(rows):
            if len(vals) != N_METRICS:
                sys.exit(f"smd_eval: test/{m}.txt row {r}: {len(vals)} values")
            ts = (T0 + timedelta(minutes=r)).strftime("%Y-%m-%d %H:%M:%S+00")
            out.write("".join(f"{names[c]}{ts},{v}\n" for c, v in enumerate(vals)))
        print(f"smd_eval: {m}: {len(rows)} rows x {N_METRICS} metrics", file=sys.stderr)


# ---------------------------------------------------------------- helpers
def to_row(epoch):
    return int(round((float(epoch) - T0_EPOCH) / 60.0))


def overlaps(a, b):
    return a[0] <= b[1] and b[0] <= a[1]


def merge_spans(spans, gap=MERGE_GAP):
    out = []
    for s, e in sorted(spans):
        if out and s - out[-1][1] < gap:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def runs(mask):
    """Inclusive (start, end) row spans of the True runs of a boolean array."""
    d = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    return list(zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1) - 1))


def set_scores(ranked, labelled):
    """Set precision, recall, F1 and HitRate@100% of a ranked member list (distinct columns)."""
    lab = set(labelled)
    got = set(ranked)
    if not got:
        return 0.0, 0.0, 0.0, 0.0
    tp = len(got & lab)
    p, r = tp / len(got), tp / len(lab)
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    hit = len(set(ranked[:len(lab)]) & lab) / len(lab)
    return p, r, f1, hit


def dedupe(seq):
    seen, out = set(), []
    for x in seq:
        if x is not None and x not in seen:
            seen.add(x)
            out.append(x)
    return out


# ---------------------------------------------------------------- coherence output
def read_anomalies(path):
    by_host = defaultdict(list)
    by_id = {}
    with open(path) as fh:
        for row in csv.DictReader(fh):
            a = {"id": int(row["id"]), "host": row["host"], "metric": row["metric"],
                 "col": metric_col(row["metric"]), "detector": row["detector"], "kind": row["kind"],
                 "start": to_row(row["started_at"]), "end": to_row(row["ended_at"]),
                 "risk": float(row["risk"])}
            by_host[a["host"]].append(a)
            by_id[a["id"]] = a
    return by_host, by_id


def anomaly_ids(items):
    out = []
    for it in items or []:
        sid = it if isinstance(it, str) else (it.get("id") or it.get("signal") if isinstance(it, dict) else None)
        if isinstance(sid, str) and sid.startswith("anomaly:"):
            out.append(int(sid.split(":", 1)[1]))
    return out


def by_risk(anoms):
    return [a["col"] for a in sorted(anoms, key=lambda a: (-a["risk"], a["start"], a["col"] or 0))]


def incident_ranking(inc, sig, ctx, by_id):
    """(ranked columns, source): the incident's own ranking if it has one, else signals by
    risk, then context by risk."""
    fallback = dedupe(by_risk(sig) + by_risk(ctx))
    for key in RANKING_KEYS:
        val = inc.get(key)
        if isinstance(val, str):
            try:
                val = json.loads(val)
            except ValueError:
                val = None
        if isinstance(val, list) and val:
            cols = []
            for it in val:
                if isinstance(it, dict):
                    it = it.get("metric") or it.get("id") or it.get("signal")
                if isinstance(it, str) and it.startswith("anomaly:"):
                    a = by_id.get(int(it.split(":", 1)[1]))
                    cols.append(a["col"] if a else None)
                elif isinstance(it, str):
                    cols.append(metric_col(it))
            cols = dedupe(cols)
            if cols:
                # The incident's own ranking names its members (its short signals' metrics);
                # context anomalies (long leaks, volatility, sustained shifts active during it)
                # are background, not members.
                return cols, key
    return fallback, "risk"


def read_incidents(path, by_id):
    by_host = defaultdict(list)
    sources = Counter()
    with open(path) as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            inc = json.loads(line)
            if inc.get("status") == "merged":
                continue
            sig = [by_id[i] for i in dedupe(anomaly_ids(inc.get("signals"))) if i in by_id]
            ctx = [by_id[i] for i in dedupe(anomaly_ids(inc.get("context"))) if i in by_id and by_id[i] not in sig]
            members = sig + ctx
            start = to_row(inc["opened_at_epoch"])
            end = to_row(inc["last_signal_at_epoch"])
            for a in sig:
                start, end = min(start, a["start"]), max(end, a["end"])
            ranked, src = incident_ranking(inc, sig, ctx, by_id)
            sources[src] += 1
            by_host[inc["host"]].append({"id": inc["id"], "span": (start, end), "risk": float(inc["risk"]),
                                         "ranked": ranked, "members": len(members), "context": len(ctx),
                                         "hypothesis": inc.get("hypothesis")})
    return by_host, sources


# ---------------------------------------------------------------- methods
def method_coherence(segs, windows, incs):
    per_seg = []
    for w in windows:
        hit = sorted((i for i in incs if overlaps(i["span"], w)), key=lambda i: (-i["risk"], i["id"]))
        per_seg.append({"found": bool(hit), "ranked": dedupe(c for i in hit for c in i["ranked"]),
                        "incidents": [i["id"] for i in hit]})
    false = sum(1 for i in incs if not any(overlaps(i["span"], w) for w in windows))
    return per_seg, false, len(incs)


def method_anomalies(segs, windows, anoms):
    per_seg = []
    for w in windows:
        best = {}
        for a in anoms:
            if a["col"] is not None and overlaps((a["start"], a["end"]), w):
                best[a["col"]] = max(best.get(a["col"], 0.0), a["risk"])
        ranked = sorted(best, key=lambda c: (-best[c], c))
        per_seg.append({"found": bool(ranked), "ranked": ranked})
    events = merge_spans([(a["start"], a["end"]) for a in anoms])
    false = sum(1 for e in events if not any(overlaps(e, w) for w in windows))
    return per_seg, false, len(events)


def zscores(x):
    mean = x.mean(axis=0)
    sd = x.std(axis=0, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(sd > 0, (x - mean) / np.where(sd > 0, sd, 1.0), 0.0)
    return np.abs(z), sd


def method_sigma(segs, windows, absz):
    flagged = absz > SIGMAS
    per_seg = []
    for s in segs:
        zmax = absz[s["start"]:s["end"]].max(axis=0)
        cols = [c + 1 for c in np.flatnonzero(zmax > SIGMAS)]
        ranked = sorted(cols, key=lambda c: (-zmax[c - 1], c))
        per_seg.append({"found": bool(ranked), "ranked": ranked})
    events = merge_spans(runs(flagged.any(axis=1)))
    false = sum(1 for e in events if not any(overlaps(e, w) for w in windows))
    return per_seg, false, len(events)


def method_all(segs, absz):
    per_seg = []
    for s in segs:
        zmax = absz[s["start"]:s["end"]].max(axis=0)
        ranked = sorted(range(1, N_METRICS + 1), key=lambda c: (-zmax[c - 1], c))
        per_seg.append({"found": True, "ranked": ranked})
    return per_seg, None, None


# ---------------------------------------------------------------- aggregation
def aggregate(rows, false, events, days):
    n = len(rows)
    found = [r for r in rows if r["found"]]
    mean = lambda xs, k: sum(x[k] for x in xs) / len(xs) if xs else 0.0  # noqa: E731
    return {
        "segments": n, "found": len(found), "recall": len(found) / n if n else 0.0,
        "set_precision": mean(rows, "p"), "set_recall": mean(rows, "r"), "set_f1": mean(rows, "f1"),
        "hitrate100": mean(rows, "hit"),
        "found_only": {"set_precision": mean(found, "p"), "set_recall": mean(found, "r"),
                       "set_f1": mean(found, "f1"), "hitrate100": mean(found, "hit"),
                       "members": mean(found, "members")},
        "false_incidents": false, "events": events, "machine_days": days,
        "false_per_machine_day": (false / days) if false is not None and days else None,
    }


def fmt(v, w=5, d=2):
    return f"{'-':>{w}s}" if v is None else f"{v:{w}.{d}f}"


WINDOWS = (
    # name, rows added on each side of a segment, description
    ("score.py", lambda n: max(3, math.ceil(0.01 * n)), "widened by max(3, ceil(1% of rows)) rows (eval/score.py)"),
    ("strict", lambda n: 3, "widened by 3 rows (3 minutes)"),
)
METHODS = ("coherence", "coherence-anomalies", "sigma2.5", "all38")


def load_machine(smd_dir, m):
    x = load_values(smd_dir, m)
    n = len(x)
    segs = load_segments(smd_dir, m, n)
    lab_rows, lab_runs = check_labels(smd_dir, m, n, segs)
    absz, sd = zscores(x)
    return {"n": n, "segs": segs, "absz": absz, "sd": sd, "lab_rows": lab_rows, "lab_runs": lab_runs}


def evaluate(names, data, anoms_by_host, incs_by_host, tol_fn):
    """Per-segment scores of every method with the windows of tol_fn; returns
    (summary {machine|ALL: {method: aggregate}}, per-segment details, window info per machine)."""
    seg_rows = defaultdict(list)
    tallies = defaultdict(lambda: [0, 0, 0.0])  # false, events, machine-days
    details, info = [], {}
    for m in names:
        d = data[m]
        n, segs, absz = d["n"], d["segs"], d["absz"]
        tol = tol_fn(n)
        windows = [(max(0, s["start"] - tol), min(n - 1, s["end"] - 1 + tol)) for s in segs]
        covered = np.zeros(n, dtype=bool)
        for a, b in windows:
            covered[a:b + 1] = True
        info[m] = {"tol_rows": tol, "window_coverage": float(covered.mean())}
        days = n / 1440.0
        results = {
            "coherence": method_coherence(segs, windows, incs_by_host.get(m, [])),
            "coherence-anomalies": method_anomalies(segs, windows, anoms_by_host.get(m, [])),
            "sigma2.5": method_sigma(segs, windows, absz),
            "all38": method_all(segs, absz),
        }
        for meth, (per_seg, false, events) in results.items():
            for s, w, res in zip(segs, windows, per_seg):
                p, r, f1, hit = set_scores(res["ranked"], s["metrics"]) if res["found"] else (0.0, 0.0, 0.0, 0.0)
                row = {"found": res["found"], "p": p, "r": r, "f1": f1, "hit": hit, "members": len(res["ranked"])}
                for g in (m, "ALL"):
                    seg_rows[(g, meth)].append(row)
                details.append({"machine": m, "method": meth, "start": s["start"], "end": s["end"],
                                "nested": s["nested"], "labelled": s["metrics"], "window": [int(w[0]), int(w[1])],
                                "found": res["found"], "ranked": [int(c) for c in res["ranked"]],
                                "incidents": res.get("incidents"),
                                "set_precision": round(p, 4), "set_recall": round(r, 4),
                                "set_f1": round(f1, 4), "hitrate100": round(hit, 4)})
            for g in (m, "ALL"):
                t = tallies[(g, meth)]
                if false is None:
                    t[0] = t[1] = None
                else:
                    t[0] += false
                    t[1] += events
                t[2] += days
    summary = {g: {meth: aggregate(seg_rows[(g, meth)], *tallies[(g, meth)]) for meth in METHODS}
               for g in names + ["ALL"]}
    return summary, details, info


def print_table(names, summary):
    hdr = (f"{'machine':12s} {'method':20s} {'segs':>4s} {'found':>5s} {'recall':>6s} {'setP':>5s} {'setR':>5s} "
           f"{'setF1':>5s} {'HR@100':>6s} | {'F1 fo':>5s} {'HR fo':>5s} {'memb':>5s} | {'incid':>6s} {'FI/day':>6s}")
    print(hdr)
    print("-" * len(hdr))
    for g in names + ["ALL"]:
        for meth in METHODS:
            a = summary[g][meth]
            fo = a["found_only"]
            print(f"{g:12s} {meth:20s} {a['segments']:4d} {a['found']:5d} {a['recall']:6.2f} "
                  f"{a['set_precision']:5.2f} {a['set_recall']:5.2f} {a['set_f1']:5.2f} {a['hitrate100']:6.2f} | "
                  f"{fo['set_f1']:5.2f} {fo['hitrate100']:5.2f} {fo['members']:5.1f} | "
                  f"{a['events'] if a['events'] is not None else '-':>6} {fmt(a['false_per_machine_day'], 6)}")
        print()


def diagnostics(names, data, anoms_by_host):
    """How the labels look and how per-metric anomalies relate to them (no windows widened
    beyond the score.py convention)."""
    diag = Counter()
    for m in names:
        d = data[m]
        n, segs, absz = d["n"], d["segs"], d["absz"]
        tol = max(3, math.ceil(0.01 * n))
        anoms = anoms_by_host.get(m, [])
        cover = np.zeros(n, dtype=bool)
        for a in anoms:
            cover[max(0, a["start"]):min(n, a["end"] + 1)] = True
        d["anomaly_row_coverage"] = float(cover.mean())
        for s in segs:
            own = (s["start"], s["end"] - 1)
            w = (max(0, s["start"] - tol), min(n - 1, s["end"] - 1 + tol))
            for c in s["metrics"]:
                diag["labelled_pairs"] += 1
                diag["labelled_pairs_anomaly_in_window"] += any(
                    a["col"] == c and overlaps((a["start"], a["end"]), w) for a in anoms)
                diag["labelled_pairs_anomaly_in_segment"] += any(
                    a["col"] == c and overlaps((a["start"], a["end"]), own) for a in anoms)
                diag["labelled_pairs_sigma_flagged"] += bool(absz[s["start"]:s["end"], c - 1].max() > SIGMAS)
            for a in anoms:
                if overlaps((a["start"], a["end"]), own):
                    diag["anomaly_segment_pairs"] += 1
                    diag["anomaly_segment_pairs_labelled_metric"] += a["col"] in s["metrics"]
        for a in anoms:
            diag["anomalies"] += 1
            diag["anomalies_overlapping_a_segment"] += any(
                overlaps((a["start"], a["end"]), (s["start"], s["end"] - 1)) for s in segs)
    return diag


def cmd_score(args):
    smd_dir = args.smd_dir
    names = machines(smd_dir)
    anoms_by_host, anoms_by_id = read_anomalies(args.anomalies)
    incs_by_host, rank_sources = read_incidents(args.incidents, anoms_by_id)
    timing = {}
    if args.timing and os.path.isfile(args.timing):
        with open(args.timing) as fh:
            timing = json.load(fh)
    data = {m: load_machine(smd_dir, m) for m in names}
    runs_by_window = {name: evaluate(names, data, anoms_by_host, incs_by_host, fn) for name, fn, _ in WINDOWS}
    diag = diagnostics(names, data, anoms_by_host)
    data_info = {}
    for m in names:
        d = data[m]
        anoms = anoms_by_host.get(m, [])
        data_info[m] = {
            "rows": d["n"], "days": d["n"] / 1440.0, "labelled_rows": d["lab_rows"], "label_runs": d["lab_runs"],
            "segments": len(d["segs"]), "nested_segments": sum(s["nested"] for s in d["segs"]),
            "windows": {w: runs_by_window[w][2][m] for w, _, _ in WINDOWS},
            "constant_metrics": [int(c) + 1 for c in np.flatnonzero(d["sd"] == 0)],
            "labelled_metrics_mean": float(np.mean([len(s["metrics"]) for s in d["segs"]])),
            "segment_rows_median": float(np.median([s["end"] - s["start"] for s in d["segs"]])),
            "anomalies": len(anoms), "anomaly_row_coverage": d["anomaly_row_coverage"],
            "incidents": len(incs_by_host.get(m, [])),
            "anomaly_kinds": dict(Counter(a["kind"] for a in anoms)),
        }

    # ------------------------------------------------------------ print
    segs_all = sum(d["segments"] for d in data_info.values())
    nested_all = sum(d["nested_segments"] for d in data_info.values())
    print(f"\n== make eval-smd: {len(names)} SMD machines, {segs_all} labelled segments "
          f"({nested_all} nested inside longer ones, scored as their own)")
    print("Averages over all labelled segments (unfound = 0); 'fo' = found-only averages; memb = mean")
    print("members named per found segment; FI/day = false incidents (overlapping no segment window) per")
    print("machine-day; incid = incidents (coherence), merged anomaly events (coherence-anomalies), merged")
    print("runs of flagged rows (sigma2.5).")
    for name, _, desc in WINDOWS:
        tols = sorted({runs_by_window[name][2][m]["tol_rows"] for m in names})
        cov = ", ".join(f"{100 * runs_by_window[name][2][m]['window_coverage']:.0f}%" for m in names)
        print(f"\n-- windows '{name}': segments {desc} = {'/'.join(map(str, tols))} rows; "
              f"windows cover {cov} of the rows\n")
        print_table(names, runs_by_window[name][0])
    print(f"coherence member ranking used: {dict(rank_sources) or 'no incidents'}")
    print("\nData:")
    for m, d in data_info.items():
        print(f"  {m}: {d['rows']} rows ({d['days']:.2f} days), {d['segments']} segments "
              f"({d['label_runs']} label runs, {d['nested_segments']} nested), labelled metrics/segment "
              f"{d['labelled_metrics_mean']:.1f}, median segment {d['segment_rows_median']:.0f} rows; constant "
              f"metrics {d['constant_metrics']}; {d['anomalies']} anomalies covering "
              f"{100 * d['anomaly_row_coverage']:.0f}% of rows, {d['incidents']} incidents")
    ls = np.array([len(s["metrics"]) for m in names for s in data[m]["segs"]])
    print(f"  labelled metrics per segment: mean {ls.mean():.1f}, median {np.median(ls):.0f}, "
          f"min {ls.min()}, max {ls.max()}")
    pct = lambda a, b: f"{100 * diag[a] / diag[b]:.0f}%" if diag[b] else "-"  # noqa: E731
    print(f"  per-metric anomalies: {diag['anomalies']}, {pct('anomalies_overlapping_a_segment', 'anomalies')} "
          f"overlap a labelled segment's own rows; of (anomaly, segment) overlaps, "
          f"{pct('anomaly_segment_pairs_labelled_metric', 'anomaly_segment_pairs')} are on a labelled metric")
    print(f"  labelled (segment, metric) pairs: {diag['labelled_pairs']}; with an anomaly of that metric "
          f"overlapping the segment: {pct('labelled_pairs_anomaly_in_segment', 'labelled_pairs')}, its score.py "
          f"window: {pct('labelled_pairs_anomaly_in_window', 'labelled_pairs')}; with |z| > {SIGMAS} inside the "
          f"segment: {pct('labelled_pairs_sigma_flagged', 'labelled_pairs')}")
    kinds = Counter()
    for d in data_info.values():
        kinds.update(d["anomaly_kinds"])
    print(f"  anomaly kinds: {dict(sorted(kinds.items()))}")
    if timing:
        print(f"  timing: {', '.join(f'{k} {v}' for k, v in timing.items())}")

    out = {
        "protocol": __doc__.split("Usage:")[0].strip(),
        "headline_windows": WINDOWS[0][0],
        "timing": timing, "ranking_source": dict(rank_sources), "data": data_info,
        "diagnostics": dict(diag),
        "summary": {name: runs_by_window[name][0] for name, _, _ in WINDOWS},
        "segments": {name: runs_by_window[name][1] for name, _, _ in WINDOWS},
    }
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as fh:
            json.dump(out, fh, indent=1)
        print(f"\nwritten: {args.out}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("csv", help="COPY rows for coherence.metrics on stdout")
    c.add_argument("smd_dir")
    s = sub.add_parser("score", help="score run_detection's output against the labels")
    s.add_argument("smd_dir")
    s.add_argument("anomalies")
    s.add_argument("incidents")
    s.add_argument("--out")
    s.add_argument("--timing")
    args = ap.parse_args()
    if args.cmd == "csv":
        cmd_csv(args.smd_dir)
    else:
        cmd_score(args)


if __name__ == "__main__":
    main()
