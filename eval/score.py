#!/usr/bin/env python3
"""Score anomaly events against the labelled cloud-monitoring series (make eval's protocol).

Protocol (issue "Detection quality on real telemetry", the headline of `make eval`):
  * per labelled series, anomaly segments = maximal runs of label-1 points, each widened by
    tol = max(3, ceil(1% of the series' samples)) samples on each side;
  * detections of one method on one series closer than 3 sample intervals merge into one event;
  * a segment is found when an event overlaps its widened span;
  * event precision = events overlapping some widened segment / all events on labelled series;
  * F1 from segment recall and event precision;
  * false alarms = events per 1000 samples on the series with no labelled point.
One set of defaults for every series; baselines are computed here, in the same run:
  * seed: the seed's rules localized (points above mean + 2.5 sd of the series; 4-hour
    windows whose variance is > 1.5x the previous window's, as events spanning the window);
  * gesd: generalized ESD (Rosner 1983) on the values, alpha 0.05, at most 1% of the points
    (at least 10) tested as outliers;
  * iqr: points outside [Q1 - 3 IQR, Q3 + 3 IQR] (ADTK's InterQuartileRangeAD default c = 3).

Usage: score.py DATA_DIR ours.csv [ours2.csv ...]
  DATA_DIR: folders of TimeStamp,Value,Label CSVs; each ours*.csv has a header and rows
  folder,file,start,end,risk[,kind] with start/end as Unix seconds (risk may be empty).
  The method's name is the file name without .csv.
"""
import csv
import glob
import math
import os
import sys
from collections import defaultdict
from datetime import datetime, timezone

import numpy as np
from scipy import stats  # noqa: F401  (t quantiles for GESD)


def parse_ts(s):
    s = s.strip().strip('"').replace("T", " ").rstrip("Z")
    return datetime.strptime(s[:19], "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc).timestamp()


def load(data_dir):
    series = {}
    for f in sorted(glob.glob(os.path.join(data_dir, "*", "*.csv"))):
        folder = os.path.basename(os.path.dirname(f))
        name = os.path.basename(f)[:-4]
        ts, vs, ls = [], [], []
        with open(f) as fh:
            r = csv.reader(fh)
            next(r)
            for row in r:
                ts.append(parse_ts(row[0]))
                vs.append(float(row[1]) if row[1].strip() != "" else math.nan)
                ls.append(int(row[2] or 0) if len(row) > 2 else 0)
        series[(folder, name)] = (np.array(ts), np.array(vs), np.array(ls))
    return series


def segments(ts, labels):
    n = len(ts)
    tol = max(3, math.ceil(0.01 * n))
    segs = []
    i = 0
    while i < n:
        if labels[i] == 1:
            s = i
            while i + 1 < n and labels[i + 1] == 1:
                i += 1
            segs.append((ts[max(0, s - tol)], ts[min(n - 1, i + tol)]))
        i += 1
    return segs


def merge(events, step):
    """Events (start, end, risk) closer than 3 sample intervals merge (max risk kept)."""
    out = []
    for s, e, r in sorted(events):
        if out and s - out[-1][1] < 3 * step:
            ps, pe, pr = out[-1]
            out[-1] = (ps, max(pe, e), max(pr, r))
        else:
            out.append((s, e, r))
    return out


# ---------------------------------------------------------------- baselines
def seed_rules(ts, v):
    ok = ~np.isnan(v)
    x, t = v[ok], ts[ok]
    ev = []
    if len(x) < 2:
        return ev
    m, sd = x.mean(), x.std(ddof=1)
    ev += [(tt, tt, math.nan) for tt in t[x > m + 2.5 * sd]]
    w = 4 * 3600
    bins = np.floor((t - 946684800) / w).astype(np.int64)
    prev = None
    for b in np.unique(bins):
        xs = x[bins == b]
        var = xs.var(ddof=1) if len(xs) >= 2 else None
        if var is not None and prev is not None and var > 1.5 * prev:
            start = 946684800 + b * w
            ev.append((start, start + w - 1e-6, math.nan))
        prev = var
    return ev


def gesd(ts, v, alpha=0.05):
    ok = ~np.isnan(v)
    x, t = v[ok].astype(float), ts[ok]
    n = len(x)
    k = max(10, int(0.01 * n))
    if n < 15:
        return []
    idx = np.arange(n)
    removed, count = [], 0
    xs, ids = x.copy(), idx.copy()
    for i in range(1, k + 1):
        m, sd = xs.mean(), xs.std(ddof=1)
        if sd == 0:
            break
        j = np.argmax(np.abs(xs - m))
        r = abs(xs[j] - m) / sd
        nn = n - i + 1
        p = 1 - alpha / (2 * nn)
        tq = stats.t.ppf(p, nn - 2)
        lam = (nn - 1) * tq / math.sqrt((nn - 2 + tq * tq) * nn)
        removed.append(ids[j])
        if r > lam:
            count = i
        xs, ids = np.delete(xs, j), np.delete(ids, j)
    return [(t[j], t[j], math.nan) for j in removed[:count]]


def iqr(ts, v, c=3.0):
    ok = ~np.isnan(v)
    x, t = v[ok], ts[ok]
    if len(x) < 4:
        return []
    q1, q3 = np.percentile(x, [25, 75])
    lo, hi = q1 - c * (q3 - q1), q3 + c * (q3 - q1)
    return [(tt, tt, math.nan) for tt in t[(x < lo) | (x > hi)]]


# ---------------------------------------------------------------- scoring
def score(series, events_by_series):
    """Returns per-folder and ALL tallies: events, matched, segs, found, unl_events, unl_points."""
    tally = defaultdict(lambda: defaultdict(float))
    risks = []  # (risk, matched) of events on labelled series
    for key, (ts, v, lab) in series.items():
        folder = key[0]
        step = float(np.median(np.diff(ts)))
        segs = segments(ts, lab)
        evs = merge(events_by_series.get(key, []), step)
        for g in (folder, "ALL"):
            t = tally[g]
            if segs:
                matched = [any(s <= ge and e >= gs for gs, ge in segs) for s, e, _ in evs]
                t["events"] += len(evs)
                t["matched"] += sum(matched)
                t["segs"] += len(segs)
                t["found"] += sum(1 for gs, ge in segs if any(s <= ge and e >= gs for s, e, _ in evs))
                if g == "ALL":
                    risks += [(r, m) for (_, _, r), m in zip(evs, matched)]
            else:
                t["unl_events"] += len(evs)
                t["unl_points"] += len(ts)
    return tally, risks


def prf(t):
    p = t["matched"] / t["events"] if t["events"] else 0.0
    r = t["found"] / t["segs"] if t["segs"] else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    fa = 1000 * t["unl_events"] / t["unl_points"] if t["unl_points"] else 0.0
    return p, r, f, fa


def per_kind(series, path):
    """Per kind (unmerged events): events on labelled series, share overlapping a widened
    segment, and events on unlabelled series."""
    out = defaultdict(lambda: [0, 0, 0])
    segs = {k: segments(ts, lab) for k, (ts, _, lab) in series.items()}
    with open(path) as fh:
        for row in csv.DictReader(fh):
            g = segs.get((row["folder"], row["file"]), [])
            t = out[row.get("kind") or "?"]
            if not g:
                t[2] += 1
                continue
            s, e = float(row["start"]), float(row["end"])
            t[0] += 1
            t[1] += any(s <= ge and e >= gs for gs, ge in g)
    return out


def read_events(path):
    ev = defaultdict(list)
    with open(path) as fh:
        for row in csv.DictReader(fh):
            r = float(row["risk"]) if row.get("risk") not in (None, "") else math.nan
            ev[(row["folder"], row["file"])].append((float(row["start"]), float(row["end"]), r))
    return ev


def main():
    data_dir, ours = sys.argv[1], sys.argv[2:]
    series = load(data_dir)
    methods = {}
    for name, fn in (("seed", seed_rules), ("gesd", gesd), ("iqr", iqr)):
        methods[name] = {k: fn(ts, v) for k, (ts, v, _) in series.items()}
    for path in ours:
        methods[os.path.basename(path)[:-4]] = read_events(path)
    results = {m: score(series, ev) for m, ev in methods.items()}
    folders = sorted({k[0] for k in series}) + ["ALL"]
    print(f"\n== make eval: event-level protocol on {len(series)} labelled series "
          f"(segments widened by max(3, 1% of samples); events < 3 intervals apart merged)\n")
    hdr = f"{'folder':36s} {'method':10s} {'segs':>5s} {'events':>6s} {'P':>5s} {'R':>5s} {'F1':>5s} {'FA/1k':>6s}"
    print(hdr)
    print("-" * len(hdr))
    for f in folders:
        for m in methods:
            t = results[m][0][f]
            p, r, f1, fa = prf(t)
            fa_s = f"{fa:6.2f}" if t["unl_points"] else f"{'-':>6s}"
            print(f"{f:36s} {m:10s} {int(t['segs']):5d} {int(t['events'] + t['unl_events']):6d} "
                  f"{p:5.2f} {r:5.2f} {f1:5.2f} {fa_s}")
        print()
    for m in ours:
        m = os.path.basename(m)[:-4]
        risks = results[m][1]
        print(f"{m}: precision by risk band (events on labelled series)")
        for lo in (0.8, 0.5, 0.0):
            sel = [mt for r, mt in risks if not math.isnan(r) and r >= lo]
            prec = sum(sel) / len(sel) if sel else float("nan")
            print(f"  risk >= {lo:.1f}: {len(sel):4d} events, precision {prec:.2f}")
        dec = sorted({min(9, int(r * 10)) for r, _ in risks if not math.isnan(r)})
        print(f"  risk deciles used: {len(dec)} {dec}")
        print(f"{m}: per kind (before merging): events on labelled series, precision, events on unlabelled")
        path = [p for p in ours if os.path.basename(p)[:-4] == m][0]
        for kind, (n, hit, unl) in sorted(per_kind(series, path).items()):
            print(f"  {kind:18s} {n:4d}  {hit / n if n else float('nan'):4.2f}  {unl:3d}")
    # Machine-readable headline for the regression floor (make test).
    with open(os.environ.get("EVAL_SUMMARY", "/dev/null"), "w") as fh:
        for m in methods:
            p, r, f1, fa = prf(results[m][0]["ALL"])
            fh.write(f"{m} precision={p:.4f} recall={r:.4f} f1={f1:.4f} fa_per_1k={fa:.4f}\n")


if __name__ == "__main__":
    main()
