#!/usr/bin/env bash
# Sharded tier: a coordinator and two shard clusters (throwaway PostgreSQL 15 clusters on
# loopback, free ports; scripts/shard.sh), joined with postgres_fdw as in docs/scale.md. Loads
# the simulator's scenario through the coordinator with the unchanged ingestor and checks that
# it lands on both shards, that the three aggregates are computed on the shards (EXPLAIN
# VERBOSE) with results equal to a single node's, that run_detection on each shard finds the
# simulator's incident on the shard holding its host, and that the coordinator's views show it.
# The clusters are always stopped and deleted.
#
#   tests/sharded.sh [--help]
#   env: COHERENCE_INGEST (target/release/coherence-ingest, else target/debug/coherence-ingest),
#        COHERENCE_SHARD_PORT_BASE (56400)
#
# Prints "ok N - ..." per check (the count is read by scripts/test.sh) and exits 1 on a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--help" ] || [ "${1:-}" = "-h" ]; then
    sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi

# The release build (make build); in `make test` without one, the debug build tier 4 made.
INGEST=${COHERENCE_INGEST:-target/release/coherence-ingest}
if [ -z "${COHERENCE_INGEST:-}" ] && ! [ -x "$INGEST" ] && [ -x target/debug/coherence-ingest ]; then
    INGEST=target/debug/coherence-ingest
fi
[ -x "$INGEST" ] || { echo "tests/sharded.sh: no ingestor at $INGEST (make build, or set COHERENCE_INGEST)" >&2; exit 1; }
export COHERENCE_SHARD_ROOT=/tmp/coherence-sharded-test-$$
export COHERENCE_SHARDS=2
# Detection is called directly below; the pg_cron job exists but must not fire mid-test.
export COHERENCE_SHARD_CRON='0 0 1 1 *'

# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() { scripts/shard.sh destroy >/dev/null 2>&1 || true; }
trap cleanup EXIT

t0=$(date +%s.%N)
scripts/shard.sh start 2>/dev/null
scripts/shard.sh setup 2>/dev/null
COORD=$(scripts/shard.sh url coord)
SHARD=("$(scripts/shard.sh url shard0)" "$(scripts/shard.sh url shard1)")
# The single-node reference: a plain database on the coordinator's cluster, same extension.
SINGLE=$(scripts/shard.sh url coord coherence_single)
psql -X -q -v ON_ERROR_STOP=1 "$(scripts/shard.sh url coord postgres)" -c "CREATE DATABASE coherence_single"
psql -X -q -v ON_ERROR_STOP=1 "$SINGLE" -c "CREATE EXTENSION coherence"
t_setup=$(date +%s.%N)

q() { psql -X -q -tA -v ON_ERROR_STOP=1 "$@"; }

n=0
fail=0
# check NAME GOT WANT: string equality, with both shown on a failure.
check() {
    n=$((n + 1))
    if [ "$2" = "$3" ]; then
        echo "ok $n - $1"
    else
        echo "not ok $n - $1"
        echo "    got:  $(head -c 2000 <<<"$2" | sed '2,$s/^/          /')"
        echo "    want: $(head -c 2000 <<<"$3" | sed '2,$s/^/          /')"
        fail=1
    fi
}

# 1. Ingest through the coordinator with the unchanged ingestor (4 hosts: both profiles twice).
HOSTS=4
out=$(DATABASE_URL=$COORD "$INGEST" simulate --hosts $HOSTS 2>&1)
t_ingest=$(date +%s.%N)
DATABASE_URL=$SINGLE "$INGEST" simulate --hosts $HOSTS >/dev/null
rows=$((HOSTS * 3 * 2880))
check "simulate through the coordinator succeeds (unchanged ingestor: INSERT ... ON CONFLICT DO NOTHING)" \
    "$(grep -o "$rows metric rows ($rows new)" <<<"$out")" "$rows metric rows ($rows new)"
s0=$(q "${SHARD[0]}" -c "SELECT count(*) FROM coherence.metrics")
s1=$(q "${SHARD[1]}" -c "SELECT count(*) FROM coherence.metrics")
check "rows land on both shards ($s0 + $s1) and add up to what was sent" \
    "$([ "$s0" -gt 0 ] && [ "$s1" -gt 0 ] && echo $((s0 + s1)))" "$rows"
check "the coordinator keeps no row locally (its coherence.metrics partitions / ONLY signal_events are empty)" \
    "$(q "$COORD" -c "SELECT (SELECT count(*) FROM coherence.metrics) || '/' || (SELECT count(*) FROM ONLY coherence.signal_events)")" "0/0"
check "each host lives on exactly one shard, the one its hash partition names" \
    "$(q "$COORD" -c "SELECT count(*) FROM (SELECT host FROM fleet.metrics GROUP BY host HAVING count(DISTINCT tableoid) = 1) h")" "$HOSTS"
# The shards' own tables agree with the coordinator's routing (not just the foreign view of it).
routed=$(q "$COORD" -c "SELECT string_agg(host || '=' || replace(tableoid::regclass::text, 'fleet.metrics_', ''), ',' ORDER BY host) FROM (SELECT DISTINCT tableoid, host FROM fleet.metrics) x")
direct=$( { q "${SHARD[0]}" -c "SELECT DISTINCT host || '=shard0' FROM coherence.metrics"; q "${SHARD[1]}" -c "SELECT DISTINCT host || '=shard1' FROM coherence.metrics"; } | sort | paste -sd, -)
check "the shards hold the hosts the coordinator routed to them ($routed)" "$direct" "$routed"
check "every signal event reaches a shard (as many as on the single node)" \
    "$(q "$COORD" -c "SELECT count(*) FROM fleet.signal_events")" "$(q "$SINGLE" -c "SELECT count(*) FROM coherence.signal_events")"
check "signal events follow their host's shard" \
    "$(q "$COORD" -c "SELECT count(*) FROM fleet.signal_events e WHERE e.tableoid::regclass::text <> replace((SELECT m.tableoid::regclass::text FROM fleet.metrics m WHERE m.host = e.host LIMIT 1), 'metrics_', 'signal_events_')")" "0"
check "reads of fleet.metrics and coherence.signal_events on the coordinator see every shard" \
    "$(q "$COORD" -c "SELECT (SELECT count(*) FROM fleet.metrics) || '/' || (SELECT count(*) FROM coherence.signal_events)")" \
    "$rows/$(q "$SINGLE" -c "SELECT count(*) FROM coherence.signal_events")"
queued=$(( $(q "${SHARD[0]}" -c "SELECT coalesce(sum(rows), 0) FROM coherence.pending_series WHERE metric IN ('cpu', 'memory', 'disk')") \
         + $(q "${SHARD[1]}" -c "SELECT coalesce(sum(rows), 0) FROM coherence.pending_series WHERE metric IN ('cpu', 'memory', 'disk')") ))
check "inserts arriving through postgres_fdw fire the shards' queue triggers (pending_series)" "$queued" "$rows"
DATABASE_URL=$COORD "$INGEST" simulate --hosts $HOSTS >/dev/null
check "re-running the ingest through the coordinator adds nothing (the shards' unique keys)" \
    "$(q "${SHARD[0]}" -c "SELECT count(*) FROM coherence.metrics")+$(q "${SHARD[1]}" -c "SELECT count(*) FROM coherence.metrics")" "$s0+$s1"

# 2. Pushdown: each shard computes the aggregates (partition-wise aggregate, async append).
AGG='coherence.variance_escalation("timestamp", value ORDER BY "timestamp"), coherence.spikes("timestamp", value ORDER BY "timestamp"), coherence.trend("timestamp", value ORDER BY "timestamp")'
Q="SELECT host, metric_name, $AGG FROM fleet.metrics GROUP BY host, metric_name ORDER BY host, metric_name"
QPLAIN='SELECT host, metric_name, coherence.variance_escalation("timestamp", value), coherence.spikes("timestamp", value), coherence.trend("timestamp", value) FROM fleet.metrics GROUP BY host, metric_name'
plan=$(q "$COORD" -c "SET enable_partitionwise_aggregate = on" -c "EXPLAIN (VERBOSE, COSTS OFF) $QPLAIN")
check "EXPLAIN VERBOSE: two Async Foreign Scans whose Remote SQL runs all three aggregates GROUP BY on the shard" \
    "$(grep -c 'Remote SQL: SELECT host, metric_name, coherence.variance_escalation("timestamp", value), coherence.spikes("timestamp", value), coherence.trend("timestamp", value) FROM coherence.metrics GROUP BY 1, 2' <<<"$plan")/$(grep -c 'Async Foreign Scan' <<<"$plan")/$(grep -c 'Relations: Aggregate on (fleet.metrics_shard' <<<"$plan")" "2/2/2"
check "the coordinator database enables partition-wise aggregation by default (sql/coordinator.sql)" \
    "$(q "$COORD" -c "SHOW enable_partitionwise_aggregate")" "on"
plan=$(q "$COORD" -c "EXPLAIN (VERBOSE, COSTS OFF) $Q")
check "the ordered form (ORDER BY \"timestamp\" inside the aggregates) is pushed down too" \
    "$(grep -c 'Remote SQL: SELECT host, metric_name, coherence.variance_escalation("timestamp", value ORDER BY "timestamp" ASC NULLS LAST)' <<<"$plan")" "2"
sharded=$(q "$COORD" -c "SET extra_float_digits = 3" -c "$Q")
single=$(q "$SINGLE" -c "SET extra_float_digits = 3" -c "${Q/fleet.metrics/coherence.metrics}")
check "aggregate results on the shards equal the single node's exactly ($(wc -l <<<"$single") series, every field as text)" \
    "$sharded" "$single"
# Without ORDER BY the input order of a group depends on the plan (sort, hash, workers), on one
# node as on the shards, and float sums differ in the last bits: verdicts must still be equal.
# The spike count past 128 distinct values is an estimate whose partial states may be merged
# differently by different plans (docs/detection.md): it is compared with the ordered form's
# count within 10% (at least 2 points), not as text.
V='(v).flagged, (v).windows, (v).points, (v).summary, (s).flagged, (s).max, (s).max_at, (t).flagged, (t).first_at, (t).last_at, (t).summary'
REL="abs((v).ratio - (w).ratio) <= 1e-9 * abs((w).ratio) AND abs((s).stddev - (x).stddev) <= 1e-9 * abs((x).stddev) AND abs((t).slope_per_hour - (y).slope_per_hour) <= 1e-8 * abs((y).slope_per_hour) + 1e-12 AND abs((s).count - (x).count) <= greatest(2, 0.1 * (x).count)"
inner="SELECT host, metric_name, coherence.variance_escalation(\"timestamp\", value) v, coherence.spikes(\"timestamp\", value) s, coherence.trend(\"timestamp\", value) t, coherence.variance_escalation(\"timestamp\", value ORDER BY \"timestamp\") w, coherence.spikes(\"timestamp\", value ORDER BY \"timestamp\") x, coherence.trend(\"timestamp\", value ORDER BY \"timestamp\") y FROM TABLE GROUP BY host, metric_name"
check "plain form: verdicts, maxima and summaries equal the single node's; floats within 1e-9 (slopes 1e-8), spike counts within 10% of the ordered form" \
    "$(q "$COORD" -c "SELECT host, metric_name, $V, $REL FROM (${inner/TABLE/fleet.metrics}) a ORDER BY 1, 2")" \
    "$(q "$SINGLE" -c "SELECT host, metric_name, $V, true FROM (${inner/TABLE/coherence.metrics}) a ORDER BY 1, 2")"
check "fleet.peer_series ranks every series across shards with the per-series step pushed down" \
    "$(q "$COORD" -c "SELECT count(*) || '/' || min(hosts) FROM fleet.peer_series")/$(q "$COORD" -c "EXPLAIN (VERBOSE, COSTS OFF) SELECT * FROM fleet.peer_series" | grep -c 'Remote SQL: SELECT host, metric_name, coherence.spikes')" \
    "$((HOSTS * 3))/$HOSTS/2"

# 3. Detection on each shard; the coordinator's views.
stressed_shard=$(q "$COORD" -c "SELECT replace(tableoid::regclass::text, 'fleet.metrics_', '') FROM fleet.metrics WHERE host = 'host-stressed' LIMIT 1")
case "$stressed_shard" in shard0) k=0 ;; shard1) k=1 ;; *) echo "tests/sharded.sh: host-stressed on '$stressed_shard'?" >&2; exit 1 ;; esac
other=$((1 - k))
check "pg_cron schedules coherence.run_detection() on both shards" \
    "$(q "${SHARD[0]}" -c "SELECT command FROM cron.job WHERE jobname = 'coherence-detect'")|$(q "${SHARD[1]}" -c "SELECT command FROM cron.job WHERE jobname = 'coherence-detect'")" \
    "SELECT coherence.run_detection()|SELECT coherence.run_detection()"
t_det0=$(date +%s.%N)
for s in 0 1; do
    r=$(q "${SHARD[$s]}" -c "SELECT coherence.run_detection()")
    grep -q '"incidents_opened"' <<<"$r" || { echo "tests/sharded.sh: run_detection on shard$s: $r" >&2; exit 1; }
done
t_det=$(date +%s.%N)
q "$SINGLE" -c "SELECT coherence.run_detection()" >/dev/null
check "run_detection on $stressed_shard (which holds host-stressed) opens the simulator's incident" \
    "$(q "${SHARD[$k]}" -c "SELECT host || ': ' || hypothesis || ', ' || error_count || ' errors, ' || (narrative LIKE 'At 2025-12-13 04:10 UTC, host-stressed experienced:%') FROM coherence.incidents WHERE host = 'host-stressed' AND status <> 'merged'")" \
    "host-stressed: memory leak, 13 errors, true"
check "shard$other has no row of host-stressed at all" \
    "$(q "${SHARD[$other]}" -c "SELECT (SELECT count(*) FROM coherence.metrics WHERE host = 'host-stressed') + (SELECT count(*) FROM coherence.incidents WHERE host = 'host-stressed') + (SELECT count(*) FROM coherence.anomalies WHERE host = 'host-stressed')")" "0"
check "the coordinator's fleet.incidents shows it, with its shard" \
    "$(q "$COORD" -c "SELECT shard || ' ' || host || ' ' || hypothesis FROM fleet.incidents WHERE host = 'host-stressed' AND status <> 'merged'")" "$stressed_shard host-stressed memory leak"
INC="SELECT host, status, opened_at, first_error_at, last_signal_at, error_count, risk, hypothesis, confidence, narrative FROM TABLE WHERE status <> 'merged' ORDER BY host, opened_at"
check "fleet.incidents over both shards equals the single node's incidents (every host's, all columns but ids)" \
    "$(q "$COORD" -c "${INC/TABLE/fleet.incidents}" | md5sum)" "$(q "$SINGLE" -c "${INC/TABLE/coherence.incidents}" | md5sum)"
AN="SELECT host, metric, detector, kind, started_at, ended_at, peak_at, peak_value, baseline, score, risk, summary FROM TABLE ORDER BY host, metric, detector, started_at"
check "fleet.anomalies equals the single node's anomalies ($(q "$SINGLE" -c "SELECT count(*) FROM coherence.anomalies") rows)" \
    "$(q "$COORD" -c "${AN/TABLE/fleet.anomalies}" | md5sum)" "$(q "$SINGLE" -c "${AN/TABLE/coherence.anomalies}" | md5sum)"
check "fleet.detection_runs shows one finished run per shard" \
    "$(q "$COORD" -c "SELECT string_agg(shard || ':' || (finished_at IS NOT NULL), ',' ORDER BY shard) FROM fleet.detection_runs")" "shard0:true,shard1:true"

t_end=$(date +%s.%N)
awk -v a="$t0" -v b="$t_setup" -v c="$t_ingest" -v d="$t_det0" -v e="$t_det" -v f="$t_end" 'BEGIN {
    printf "timings: start + setup of 3 clusters %.1f s, ingest of the scenario through the coordinator %.2f s, run_detection on both shards %.2f s, total %.1f s\n", b - a, c - b, e - d, f - a }'
if [ "$fail" = 0 ]; then
    echo "All $n sharded checks passed"
fi
exit "$fail"
