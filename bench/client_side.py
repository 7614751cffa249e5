#!/usr/bin/env python3
"""The seed's design for comparison: pull every row to a client and compute there.

Reads `host<TAB>metric<TAB>epoch_seconds<TAB>value` rows sorted by series and time on stdin
(from `psql -c "COPY (...) TO STDOUT"`), and computes per series, with numpy, the same three
verdicts as the Coherence aggregates: variance of the first vs last 4-hour window (aligned to
2000-01-01), spikes above mean + 2.5 sample sd, and the least-squares trend's fitted change.
Prints the number of series and flagged verdicts (so the work cannot be skipped).
"""
import sys
import numpy as np

ORIGIN = 946684800.0
WINDOW = 4 * 3600.0


def analyse(ts, v):
    flagged = 0
    # variance escalation
    b = np.floor((ts - ORIGIN) / WINDOW)
    keys, idx, counts = np.unique(b, return_index=True, return_counts=True)
    ok = [(i, c) for i, c in zip(idx, counts) if c >= 2]
    if len(ok) >= 2:
        f = np.var(v[ok[0][0]:ok[0][0] + ok[0][1]], ddof=1)
        l = np.var(v[ok[-1][0]:ok[-1][0] + ok[-1][1]], ddof=1)
        if f > 0 and l / f > 1.5:
            flagged += 1
    # spikes
    if len(v) >= 2:
        m, s = v.mean(), v.std(ddof=1)
        if (v > m + 2.5 * s).any():
            flagged += 1
    # trend
    if len(v) >= 2 and ts[-1] > ts[0]:
        slope, icept = np.polyfit(ts - ts[0], v, 1)
        start, end = icept, icept + slope * (ts[-1] - ts[0])
        if start != 0 and 100 * (end - start) / abs(start) > 30:
            flagged += 1
    return flagged


def main():
    series = flagged = 0
    key, ts, vs = None, [], []
    for line in sys.stdin:
        h, m, t, x = line.rstrip("\n").split("\t")
        k = (h, m)
        if k != key:
            if key is not None:
                series += 1
                flagged += analyse(np.array(ts), np.array(vs))
            key, ts, vs = k, [], []
        ts.append(float(t))
        vs.append(float(x))
    if key is not None:
        series += 1
        flagged += analyse(np.array(ts), np.array(vs))
    print(f"client-side: {series} series, {flagged} flagged verdicts")


if __name__ == "__main__":
    main()
