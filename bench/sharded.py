#!/usr/bin/env python3
"""The sharded row of `make bench`: one node vs a coordinator and two shards (docs/scale.md).

Starts its own throwaway clusters with scripts/shard.sh (a coordinator and two shards on this
machine, loopback), loads the same simulator rows into a plain database on the coordinator's
cluster (the single node) and through the coordinator (the sharded setup, unchanged ingestor),
and times: ingest, the three aggregates GROUP BY series (pushed down to the shards with
partition-wise aggregate), and the first coherence.run_detection() (single node; both shards at
once, as their pg_cron jobs would run). All clusters share this machine's cores, so the sharded
figures show the coordination overhead, not the speed-up of separate machines.

Standalone: python3 bench/sharded.py (BENCH_SHARDED_ROWS, default 1000000; BENCH_SERIES 1000;
BENCH_RUNS 5; COHERENCE_INGEST). Called by bench/bench.py for `make bench`.
"""
import math
import os
import re
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARD = os.path.join(ROOT, "scripts/shard.sh")
ENV = dict(os.environ, COHERENCE_SHARD_ROOT=f"/tmp/coherence-shard-bench-{os.getpid()}", COHERENCE_SHARDS="2",
           COHERENCE_SHARD_CRON="0 0 1 1 *")
Q_OURS = ("SELECT host, metric_name, coherence.variance_escalation(\"timestamp\", value), "
          "coherence.spikes(\"timestamp\", value), coherence.trend(\"timestamp\", value) "
          "FROM {table} GROUP BY host, metric_name;")


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, capture_output=True, env=kw.pop("env", ENV), **kw).stdout


def url(node, db=""):
    return sh([SHARD, "url", node] + ([db] if db else [])).strip()


def psql(conn, script):
    return sh(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", conn], input=script)


def timed(conn, sql, settings=""):
    out = psql(conn, f"SET work_mem = '64MB'; {settings}\n\\timing on\n\\o /dev/null\n{sql}\n")
    return float(re.findall(r"Time: ([0-9.]+) ms", out)[-1])


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def run(rows, series=1000, runs=5, ingest=None):
    """Returns the measurements (ms, rows/s) of one sharded-vs-single run."""
    ingest = ingest or os.environ.get("COHERENCE_INGEST", os.path.join(ROOT, "target/release/coherence-ingest"))
    hosts = math.ceil(series / 3)
    res = {"rows": rows, "series": hosts * 3}
    try:
        log(f"bench (sharded): starting a coordinator and two shards ({ENV['COHERENCE_SHARD_ROOT']})...")
        sh([SHARD, "start"])
        sh([SHARD, "setup"])
        coord, single = url("coord"), url("coord", "coherence_single")
        shards = [url("shard0"), url("shard1")]
        psql(url("coord", "postgres"), "CREATE DATABASE coherence_single;")
        psql(single, "CREATE EXTENSION coherence;")
        for name, conn in (("single", single), ("sharded", coord)):
            log(f"bench (sharded): loading {rows} rows over {hosts * 3} series into the {name} setup...")
            t = time.time()
            sh([ingest, "simulate", "--hosts", str(hosts), "--scale", str(rows)], env=dict(os.environ, DATABASE_URL=conn))
            res[f"ingest_{name}"] = rows / (time.time() - t)
        for conn in [single] + shards:
            psql(conn, "VACUUM ANALYZE coherence.metrics; VACUUM ANALYZE coherence.signal_events;")
        res["shard_rows"] = [int(psql(c, "\\pset tuples_only on\nSELECT count(*) FROM coherence.metrics;").split()[0]) for c in shards]
        serial = "SET max_parallel_workers_per_gather = 0;"
        log("bench (sharded): aggregates...")
        res["agg_single"] = statistics.median(timed(single, Q_OURS.format(table="coherence.metrics"), serial) for _ in range(runs))
        res["agg_single_par"] = statistics.median(timed(single, Q_OURS.format(table="coherence.metrics")) for _ in range(runs))
        res["agg_sharded"] = statistics.median(timed(coord, Q_OURS.format(table="fleet.metrics")) for _ in range(runs))
        plan = psql(coord, "EXPLAIN (VERBOSE, COSTS OFF) " + Q_OURS.format(table="fleet.metrics"))
        res["pushed_down"] = plan.count("Remote SQL: SELECT host, metric_name, coherence.variance_escalation") == 2
        log("bench (sharded): run_detection (single node; both shards at once)...")
        res["rd_single"] = timed(single, "SELECT coherence.run_detection();")
        per = {}

        def one(k, c):
            per[k] = timed(c, "SELECT coherence.run_detection();")
        t = time.time()
        th = [threading.Thread(target=one, args=(k, c)) for k, c in enumerate(shards)]
        for x in th:
            x.start()
        for x in th:
            x.join()
        res["rd_sharded_wall"] = (time.time() - t) * 1000
        res["rd_sharded"] = [per[k] for k in sorted(per)]
        return res
    finally:
        subprocess.run([SHARD, "destroy"], env=ENV, capture_output=True)


def rows_md(r, num="9"):
    s = lambda ms: f"{ms / 1000:.2f} s"
    return [
        f"| {num} | sharded ({r['rows']:,} rows, {r['series']:,} series; coordinator + 2 shards on this machine, "
        f"{r['shard_rows'][0]:,} / {r['shard_rows'][1]:,} rows): (3) one node serial / one node 2 workers / "
        f"coordinator, pushed down{'' if r['pushed_down'] else ' (NOT pushed down)'} | "
        f"{s(r['agg_single'])} / {s(r['agg_single_par'])} / {s(r['agg_sharded'])} |",
        f"| {num}b | sharded: ingest `simulate` one node / through the coordinator | "
        f"{r['ingest_single']:,.0f} / {r['ingest_sharded']:,.0f} rows/s |",
        f"| {num}c | sharded: first `run_detection()` one node / both shards at once (each shard) | "
        f"{s(r['rd_single'])} / {s(r['rd_sharded_wall'])} ({' + '.join(s(x) for x in r['rd_sharded'])}) |",
    ]


if __name__ == "__main__":
    r = run(int(os.environ.get("BENCH_SHARDED_ROWS", "1000000")), int(os.environ.get("BENCH_SERIES", "1000")),
            max(1, int(os.environ.get("BENCH_RUNS", "5"))))
    print(f"Machine: {os.cpu_count()} cores; {time.strftime('%Y-%m-%d')}; median of {os.environ.get('BENCH_RUNS', '5')} runs\n")
    print("| # | what | time |\n|---|---|---|")
    print("\n".join(rows_md(r)))
