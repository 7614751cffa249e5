#!/usr/bin/env python3
"""make bench: Coherence against PostgreSQL's own aggregates and the client-side approach.

Every figure is the median of BENCH_RUNS (>= 5) runs in the same run, on the same table, in the
local cluster (scripts/pg.sh), each query in a fresh backend, timed by psql's \\timing, at
PostgreSQL's DEFAULT settings (work_mem 4MB, default parallel costs; "2 workers" only sets
max_parallel_workers_per_gather = 2, its default, and the planner decides). A tuned run
(work_mem 64MB, parallel plans forced) is one extra, labelled row.
Settings (environment): BENCH_ROWS (10000000), BENCH_SERIES (1000), BENCH_RUNS (5),
BENCH_DATA (gs: a generate_series table, 1-minute samples of BENCH_SERIES series over 3 metrics a
host; sim: the flight simulator's --scale data),
BENCH_SCALING ("1000000 10000000 30000000"; "" skips), BENCH_WORK_MEM ("" = the server's default;
set e.g. 64MB to run every query with it),
BENCH_INGEST_QUERIES (50), BENCH_INGEST_HOURS (48), BENCH_SHARDED_ROWS (1000000; 0 skips the
sharded row: a coordinator and two shards on this machine, bench/sharded.py, docs/scale.md),
BENCH_GROUP_POINTS (100000000: the one group the 3 aggregates' peak memory is measured on).

It loads and truncates coherence_bench and drops and recreates coherence_bench_ingest, so it
refuses either when it holds data that is not the bench's (scripts/db_guard.sh: tables of its
own, metrics or events the simulator did not write) unless COHERENCE_OVERWRITE_DB=1.
"""
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROWS = int(os.environ.get("BENCH_ROWS", "10000000"))
SERIES = int(os.environ.get("BENCH_SERIES", "1000"))
RUNS = max(5, int(os.environ.get("BENCH_RUNS", "5")))
GROUP_POINTS = int(os.environ.get("BENCH_GROUP_POINTS", "100000000"))
SCALING = [int(x) for x in os.environ.get("BENCH_SCALING", "1000000 10000000 30000000").split()]
WORK_MEM = os.environ.get("BENCH_WORK_MEM", "")
DATA = os.environ.get("BENCH_DATA", "gs")
INGEST_QUERIES = int(os.environ.get("BENCH_INGEST_QUERIES", "50"))
INGEST_HOURS = int(os.environ.get("BENCH_INGEST_HOURS", "48"))
INGEST = os.path.join(ROOT, "target/release/coherence-ingest")
SHARDED_ROWS = int(os.environ.get("BENCH_SHARDED_ROWS", "1000000"))
DB = "coherence_bench"

SERIAL = "SET max_parallel_workers_per_gather = 0;"
# PostgreSQL's defaults: 2 workers allowed, the planner decides with its default costs.
PARALLEL = "SET max_parallel_workers_per_gather = 2;"
# The extra, labelled tuned row: more memory and parallel plans forced.
TUNED = ("SET work_mem = '64MB'; SET max_parallel_workers_per_gather = 2; SET parallel_setup_cost = 0; "
         "SET parallel_tuple_cost = 0; SET min_parallel_table_scan_size = 0;")

Q_COUNT = "SELECT count(*) FROM coherence.metrics;"
Q_BUILTIN = ("SELECT host, metric_name, var_samp(value), regr_slope(value, date_part('epoch', \"timestamp\")) "
             "FROM coherence.metrics GROUP BY host, metric_name;")
Q_OURS = ("SELECT host, metric_name, coherence.variance_escalation(\"timestamp\", value), "
          "coherence.spikes(\"timestamp\", value), coherence.trend(\"timestamp\", value) "
          "FROM coherence.metrics GROUP BY host, metric_name;")
Q_DETECT = "SELECT * FROM coherence.detect('-infinity', 'infinity');"
Q_EVENTS = "SELECT * FROM coherence.detect_events('-infinity', 'infinity');"


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw).stdout


def url(db):
    return sh([os.path.join(ROOT, "scripts/pg.sh"), "url", db]).strip()


def psql(db, script):
    return sh(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", url(db)], input=script)


def timed(db, sql, settings=""):
    """Milliseconds of one query in a fresh backend (result rows discarded by psql)."""
    out = psql(db, f"{set_work_mem()} {settings}\n\\timing on\n\\o /dev/null\n{sql}\n")
    return float(re.findall(r"Time: ([0-9.]+) ms", out)[-1])


def set_work_mem():
    return f"SET work_mem = '{WORK_MEM}';" if WORK_MEM else ""


def median(f, runs=RUNS):
    return statistics.median(f() for _ in range(runs))


def peak_rss_kb(db, sql, settings=""):
    """VmHWM of the backend that ran the query (includes shared buffers it touched)."""
    out = psql(db, f"{set_work_mem()} {settings}\nSELECT pg_backend_pid() AS pid \\gset\n"
                   f"\\setenv BPID :pid\n\\o /dev/null\n{sql}\n\\o\n\\! grep VmHWM /proc/$BPID/status\n")
    return int(re.search(r"VmHWM:\s+(\d+) kB", out).group(1))


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def guard(db):
    """Refuse a database that holds someone else's data (scripts/db_guard.sh), then mark it as ours."""
    r = subprocess.run([os.path.join(ROOT, "scripts/db_guard.sh"), url(db), "make bench"], text=True)
    if r.returncode != 0:
        sys.exit(r.returncode)


def exists(db):
    return db in psql("postgres", "\\pset tuples_only on\nSELECT datname FROM pg_database;").split()


def load(rows):
    hosts = math.ceil(SERIES / 3)
    have = int(psql(DB, "\\pset tuples_only on\nSELECT count(*) FROM coherence.metrics;").split()[0])
    if abs(have - rows) < rows * 0.01:
        return
    psql(DB, "TRUNCATE coherence.metrics, coherence.signal_events, coherence.anomalies, "
             "coherence.incidents, coherence.incident_edges, coherence.detection_runs, coherence.ingest_cursors, "
             "coherence.pending_series, coherence.series_state, coherence.alert_deliveries;")
    # Day partitions for the data's days first (as before a backfill), so nothing lands in the
    # default partition: the table is partitioned as a user's would be.
    psql(DB, "SELECT count(*) FROM coherence.create_partitions(since => '2026-01-01 00:00Z');")
    if DATA == "gs":
        log(f"bench: loading {rows} rows over {hosts * 3} series (generate_series)...")
        psql(DB, gs_insert(0, rows // (hosts * 3), hosts))
    else:
        log(f"bench: loading {rows} rows over {hosts * 3} series (simulate --scale)...")
        env = dict(os.environ, DATABASE_URL=url(DB))
        sh([INGEST, "simulate", "--hosts", str(hosts), "--scale", str(rows)], env=env)
    psql(DB, "VACUUM ANALYZE coherence.metrics; VACUUM ANALYZE coherence.signal_events;")


def gs_insert(first_minute, minutes, hosts):
    """generate_series data: minute i of host h's metrics m0..m2, noise around a level of the series."""
    return (f"INSERT INTO coherence.metrics (host, metric_name, value, \"timestamp\") "
            f"SELECT 'host-' || h, 'm' || m, 50 + 10 * ((h * 3 + m) % 7) + 5 * random(), "
            f"timestamptz '2026-01-01 00:00Z' + i * interval '1 minute' "
            f"FROM generate_series({first_minute}, {first_minute + minutes - 1}) i, generate_series(0, {hosts - 1}) h, "
            f"generate_series(0, 2) m;")


def fmt_s(ms):
    return f"{ms / 1000:.2f} s"


def main():
    if os.environ.get("DATABASE_URL"):
        sys.exit("make bench uses the local cluster (it loads and truncates its own database): unset DATABASE_URL")
    t0 = time.time()
    sh([os.path.join(ROOT, "scripts/pg.sh"), "start"])
    if not exists(DB):
        psql("postgres", f"CREATE DATABASE {DB};")
    guard(DB)
    if exists("coherence_bench_ingest"):
        guard("coherence_bench_ingest")
    # The installed version (an older bench database is updated: its data is kept).
    psql(DB, "SET client_min_messages = warning; CREATE EXTENSION IF NOT EXISTS coherence; ALTER EXTENSION coherence UPDATE;")
    cpu = sh(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"]).strip()
    mem_gb = int(re.search(r"MemTotal:\s+(\d+)", open("/proc/meminfo").read()).group(1)) / 1024 / 1024
    machine = f"{os.cpu_count()} cores ({cpu}), {mem_gb:.0f} GiB RAM, PostgreSQL {psql('postgres', 'SHOW server_version;').split()[2]}"
    res = {}

    load(ROWS)
    n = int(psql(DB, "\\pset tuples_only on\nSELECT count(*) FROM coherence.metrics;").split()[0])
    s = int(psql(DB, "\\pset tuples_only on\nSELECT count(*) FROM (SELECT DISTINCT host, metric_name FROM coherence.metrics) s;").split()[0])
    log(f"bench: {n} rows, {s} series; {RUNS} runs each")
    res["count"] = median(lambda: timed(DB, Q_COUNT, SERIAL))
    res["count_par"] = median(lambda: timed(DB, Q_COUNT, PARALLEL))
    res["builtin"] = median(lambda: timed(DB, Q_BUILTIN, SERIAL))
    res["builtin_par"] = median(lambda: timed(DB, Q_BUILTIN, PARALLEL))
    res["ours"] = median(lambda: timed(DB, Q_OURS, SERIAL))
    res["ours_par"] = median(lambda: timed(DB, Q_OURS, PARALLEL))
    res["ours_tuned"] = median(lambda: timed(DB, Q_OURS, TUNED))
    res["builtin_tuned"] = median(lambda: timed(DB, Q_BUILTIN, TUNED))
    log("bench: detect, detect_events...")
    res["detect"] = median(lambda: timed(DB, Q_DETECT))
    res["events"] = median(lambda: timed(DB, Q_EVENTS))

    log("bench: client-side (COPY to a client, numpy)...")
    def client():
        t = time.time()
        cmd = (f"psql -X -q '{url(DB)}' -c \"COPY (SELECT host, metric_name, extract(epoch FROM \\\"timestamp\\\")::float8, value "
               f"FROM coherence.metrics ORDER BY host, metric_name, \\\"timestamp\\\") TO STDOUT\" | python3 {ROOT}/bench/client_side.py")
        sh(["sh", "-c", cmd])
        return (time.time() - t) * 1000
    res["client"] = median(client)

    log("bench: run_detection (initial, then +1% rows per run)...")
    psql(DB, "TRUNCATE coherence.anomalies, coherence.incidents, coherence.incident_edges, coherence.detection_runs, coherence.alert_deliveries, coherence.pending_series;")
    res["rd_initial"] = timed(DB, "SELECT coherence.run_detection();")
    res["rd_nothing"] = median(lambda: timed(DB, "SELECT coherence.run_detection();"))
    hosts = math.ceil(SERIES / 3)
    env = dict(os.environ, DATABASE_URL=url(DB))
    inc = []
    if DATA == "gs":
        minutes = int(psql(DB, "\\pset tuples_only on\nSELECT (extract(epoch FROM max(\"timestamp\") - timestamptz '2026-01-01 00:00Z') / 60)::int + 1 FROM coherence.metrics;").split()[0])
        step = max(1, n // 100 // (hosts * 3))
        for i in range(RUNS):
            psql(DB, gs_insert(minutes + i * step, step, hosts))
            inc.append(timed(DB, "SELECT coherence.run_detection();"))
    end = psql(DB, "\\pset tuples_only on\nSELECT to_char(max(\"timestamp\") AT TIME ZONE 'UTC' + interval '1 minute', 'YYYY-MM-DD\"T\"HH24:MI:00\"Z\"') FROM coherence.metrics;").split()[0]
    for i in range(RUNS if DATA != "gs" else 0):
        one_pct = max(1, n // 100)
        hours = one_pct / (hosts * 3) / 60
        start = psql(DB, f"\\pset tuples_only on\nSELECT to_char('{end}'::timestamptz AT TIME ZONE 'UTC' + {i} * interval '{hours * 3600} seconds', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"');").split()[0]
        sh([INGEST, "simulate", "--hosts", str(hosts), "--hours", f"{hours}", "--start", start, "--seed", str(1000 + i)], env=env)
        inc.append(timed(DB, "SELECT coherence.run_detection();"))
    res["rd_incremental"] = statistics.median(inc)

    log("bench: peak backend memory...")
    res["rss_count"] = peak_rss_kb(DB, Q_COUNT, SERIAL)
    res["rss_detect"] = peak_rss_kb(DB, Q_DETECT)
    res["rss_events"] = peak_rss_kb(DB, Q_EVENTS)
    big = ("SELECT coherence.variance_escalation(ts, v), coherence.spikes(ts, v), coherence.trend(ts, v) FROM "
           "(SELECT '2020-01-01'::timestamptz + i * interval '1 second' AS ts, (i % 1000)::float8 AS v "
           f"FROM generate_series(1, {GROUP_POINTS}) i) s;")
    res["rss_series"] = peak_rss_kb(DB, big, SERIAL)
    res["t_series"] = median(lambda: timed(DB, big, SERIAL))

    log("bench: ingest (coherence-ingest datadog from the fake Datadog vs COPY)...")
    res.update(ingest_bench())

    scaling = []
    for size in SCALING:
        load(size)
        rows = int(psql(DB, "\\pset tuples_only on\nSELECT count(*) FROM coherence.metrics;").split()[0])
        log(f"bench: scaling at {rows} rows...")
        scaling.append((rows, median(lambda: timed(DB, Q_COUNT, SERIAL)), median(lambda: timed(DB, Q_BUILTIN, SERIAL)),
                        median(lambda: timed(DB, Q_OURS, SERIAL)), median(lambda: timed(DB, Q_OURS, PARALLEL)),
                        median(lambda: timed(DB, Q_DETECT))))

    sharded_res = None
    if SHARDED_ROWS > 0:
        sys.path.insert(0, os.path.join(ROOT, "bench"))
        import sharded
        sharded_res = sharded.run(SHARDED_ROWS, SERIES, RUNS, INGEST)

    out = []
    p = out.append
    source = "generate_series, 1-minute samples" if DATA == "gs" else "`coherence-ingest simulate --scale`"
    settings = (f"work_mem = {WORK_MEM} for every query" if WORK_MEM
                else "PostgreSQL's default settings (work_mem 4MB, default parallel costs) for every query but the row marked tuned")
    p(f"Machine: {machine}. Table: {n:,} rows over {s:,} series ({source}). "
      f"Median of {RUNS} runs each; {settings}; {time.strftime('%Y-%m-%d')}.")
    p("")
    p("| # | what | time |")
    p("|---|---|---|")
    p(f"| 1 | scan floor: `count(*)` serial / 2 workers | {fmt_s(res['count'])} / {fmt_s(res['count_par'])} |")
    p(f"| 2 | built-ins `var_samp` + `regr_slope` GROUP BY series, serial / 2 workers | {fmt_s(res['builtin'])} / {fmt_s(res['builtin_par'])} |")
    p(f"| 3 | `variance_escalation` + `spikes` + `trend` GROUP BY series, serial / 2 workers | {fmt_s(res['ours'])} / {fmt_s(res['ours_par'])} |")
    p(f"| 4 | `coherence.detect` / `coherence.detect_events` over the table | {fmt_s(res['detect'])} / {fmt_s(res['events'])} |")
    p(f"| 3t | tuned (work_mem 64MB, parallel forced): built-ins / ours | {fmt_s(res['builtin_tuned'])} / {fmt_s(res['ours_tuned'])} |")
    p(f"| 5 | `coherence.run_detection()`: first run / nothing new / incremental after +1% rows | {fmt_s(res['rd_initial'])} / {res['rd_nothing']:.0f} ms / {fmt_s(res['rd_incremental'])} |")
    p(f"| 6 | seed's design: COPY all rows to a client, numpy per series | {fmt_s(res['client'])} |")
    p(f"| 7 | ingest: `coherence-ingest datadog` from a fake Datadog / plain `COPY` of the same {res['ingest_points']:,} rows | "
      f"{res['ingest_pps']:,.0f} / {res['copy_pps']:,.0f} points/s |")
    p(f"| 8 | peak backend RSS: count(*) / detect / detect_events / 3 aggregates on one {GROUP_POINTS / 1e6:g}M-point series ({fmt_s(res['t_series'])}) | "
      f"{res['rss_count'] / 1024:.0f} / {res['rss_detect'] / 1024:.0f} / {res['rss_events'] / 1024:.0f} / {res['rss_series'] / 1024:.0f} MiB |")
    if sharded_res:
        for line in sharded.rows_md(sharded_res):
            p(line)
    p("")
    p("| ratio | value | target |")
    p("|---|---|---|")
    p(f"| (3)/(2) serial | {res['ours'] / res['builtin']:.2f} | <= 1.1 |")
    p(f"| (3)/(2) 2 workers | {res['ours_par'] / res['builtin_par']:.2f} | <= 1.1 |")
    p(f"| (3t)/(2t) tuned | {res['ours_tuned'] / res['builtin_tuned']:.2f} | (extra) |")
    p(f"| (4) detect / (1) scan | {res['detect'] / res['count']:.1f} | <= 3 |")
    p(f"| (4) detect_events / (1) scan | {res['events'] / res['count']:.1f} | <= 4 |")
    p(f"| (5) run_detection, nothing new | {res['rd_nothing']:.0f} ms | <= 100 ms |")
    p(f"| (5) run_detection after +1% / first run | {res['rd_incremental'] / res['rd_initial']:.2f} | <= 0.10 |")
    p(f"| (8) peak RSS, 3 aggregates on one {GROUP_POINTS / 1e6:g}M-point series | {res['rss_series'] / 1024:.0f} MiB | <= 256 MiB (at 100M points) |")
    p(f"| parallel speed-up of (3), 2 workers | {res['ours'] / res['ours_par']:.2f} (built-ins: {res['builtin'] / res['builtin_par']:.2f}) | >= 1.6 |")
    p(f"| (6) client-side / (4) detect | {res['client'] / res['detect']:.1f} | >= 20 |")
    p(f"| (7) ingest / COPY | {res['ingest_pps'] / res['copy_pps']:.2f} | >= 0.5 |")
    if sharded_res:
        p(f"| (9) coordinator + 2 shards / one node serial, same machine | {sharded_res['agg_sharded'] / sharded_res['agg_single']:.2f} | "
          f"overhead on one machine (shards share its {os.cpu_count()} cores); see docs/scale.md |")
    if scaling:
        p("")
        p("| rows | count(*) | built-ins (2) | ours (3) serial | ours (3) 2 workers | detect | (3) ns/row |")
        p("|---|---|---|---|---|---|---|")
        for rows, c, b, o, op, d in scaling:
            p(f"| {rows:,} | {fmt_s(c)} | {fmt_s(b)} | {fmt_s(o)} | {fmt_s(op)} | {fmt_s(d)} | {o * 1e6 / rows:.0f} |")
    p("")
    p(f"(bench wall time {time.time() - t0:.0f} s)")
    text = "\n".join(out)
    print(text)
    with open(os.path.join(ROOT, "target/bench-results.md"), "w") as f:
        f.write(text + "\n")


def ingest_bench():
    """Points/s of coherence-ingest datadog vs a plain COPY of the same rows (5 runs each)."""
    db = "coherence_bench_ingest"
    psql("postgres", f"DROP DATABASE IF EXISTS {db} WITH (FORCE);")
    psql("postgres", f"CREATE DATABASE {db};")
    guard(db)
    psql(db, "CREATE EXTENSION coherence;")
    fake = subprocess.Popen([os.path.join(ROOT, "target/release/examples/fake_datadog")], stdout=subprocess.PIPE, text=True)
    try:
        base = fake.stdout.readline().strip()
        cfg = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
        for i in range(INGEST_QUERIES):
            cfg.write(f"[[metrics]]\nquery = \"avg:bench.m{i}{{*}} by {{host}}\"\nname = \"m{i}\"\n\n")
        cfg.close()
        env = dict(os.environ, DATABASE_URL=url(db), DD_API_KEY="bench", DD_APP_KEY="bench",
                   COHERENCE_ALLOW_TEST_BASE_URL="1", COHERENCE_DD_BASE_URL=base, COHERENCE_LOG="warn")
        ing, cp = [], []
        dump = tempfile.NamedTemporaryFile(suffix=".copy", delete=False).name
        points = 0
        for _ in range(RUNS):
            psql(db, "TRUNCATE coherence.metrics, coherence.ingest_cursors;")
            t = time.time()
            sh([INGEST, "datadog", "--config", cfg.name, "--once", "--since", f"{INGEST_HOURS}h", "--chunk", f"{INGEST_HOURS}h",
                "--until", "2026-01-01T00:00:00Z"], env=env)
            el = time.time() - t
            points = int(psql(db, "\\pset tuples_only on\nSELECT count(*) FROM coherence.metrics;").split()[0])
            ing.append(points / el)
            psql(db, f"\\copy (SELECT host, metric_name, value, \"timestamp\" FROM coherence.metrics) TO '{dump}'")
            psql(db, "TRUNCATE coherence.metrics;")
            t = time.time()
            psql(db, f"\\copy coherence.metrics (host, metric_name, value, \"timestamp\") FROM '{dump}'")
            cp.append(points / (time.time() - t))
        os.unlink(dump)
        os.unlink(cfg.name)
        return {"ingest_pps": statistics.median(ing), "copy_pps": statistics.median(cp), "ingest_points": points}
    finally:
        fake.kill()


if __name__ == "__main__":
    main()
