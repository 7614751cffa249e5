#!/usr/bin/env bash
# Hostile-input tier: the inputs that used to abort the server, run against a throwaway
# PostgreSQL 15 cluster whose postmaster has a virtual-memory limit (ulimit -v), as under
# vm.overcommit_memory=2 or a container limit. Each must end in a clean ERROR (SQLSTATE 53200,
# 54000 or 22023) in a session that stays usable, and the cluster must never restart.
#
#   tests/memlimit.sh [--help]
#   env: COHERENCE_MEMLIMIT_PORT (default 55499), COHERENCE_MEMLIMIT_KB (default 700000)
#
# Prints "ok N - ..." per check (the count is read by scripts/test.sh) and exits 1 on a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--help" ] || [ "${1:-}" = "-h" ]; then
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi

PORT=${COHERENCE_MEMLIMIT_PORT:-55499}
LIMIT_KB=${COHERENCE_MEMLIMIT_KB:-700000}
ROOT=/tmp/coherence-memlimit-$PORT
. tests/lib/cluster.sh
trap cluster_cleanup EXIT
cluster_cleanup

cluster_init <<CONF
max_parallel_workers_per_gather = 0
log_min_messages = warning
CONF
# The limit applies to the postmaster and every backend it forks.
as_pg env -u RUST_BACKTRACE -u RUST_LIB_BACKTRACE bash -c \
    "ulimit -v $LIMIT_KB && exec '$PG_BIN/pg_ctl' -D '$ROOT/data' -l '$ROOT/run/postgresql.log' -w -t 60 start" >/dev/null

PSQL=(psql -X -q -v ON_ERROR_STOP=0 "host=$ROOT/run port=$PORT user=postgres dbname=postgres")
"${PSQL[@]}" -v ON_ERROR_STOP=1 -c "CREATE EXTENSION coherence" >/dev/null
started=$("${PSQL[@]}" -tA -c "SELECT pg_postmaster_start_time()")

n=0
fail=0
# check NAME EXPECTED_SQLSTATE SQL: runs SQL, then a query in the same session; "none" expects
# the SQL to complete without an error.
check() {
    local name=$1 want=$2 sql=$3 out
    n=$((n + 1))
    out=$("${PSQL[@]}" -c '\set VERBOSITY verbose' -c "$sql" -c "SELECT 'session alive'" 2>&1 || true)
    local got="ERROR:  $want"
    [ "$want" = none ] && got="[0-9] rows\?)"
    if grep -q "$got" <<<"$out" && grep -q "session alive" <<<"$out" && ! grep -q "ERROR" <<<"${out/ERROR:  $want/}" \
        && ! grep -qi "backtrace\|panicked\|stack backtrace" <<<"$out"; then
        echo "ok $n - $name: $( [ "$want" = none ] && echo "completes" || echo "ERROR $want"), session alive"
    else
        echo "not ok $n - $name (wanted ERROR $want and a live session):"
        sed 's/^/    /' <<<"$out" | head -20
        fail=1
    fi
}

check "series_events with window_points 2^31-1" 22023 \
    "SELECT count(*) FROM coherence.series_events(ARRAY[now(), now() + interval '1 minute'], ARRAY[1.0, 2.0]::float8[], 2147483647)"
# spikes' state is fixed-size (issue 13): 80M points (640 MB of values before) now complete.
check "spikes over 80M points under a ${LIMIT_KB} kB limit completes" none \
    "SELECT (coherence.spikes('2025-01-01'::timestamptz, i::float8)).count FROM generate_series(1, 80000000) i"
check "find_events over 4M points under the limit" 53200 \
    "SELECT count(*) FROM coherence.find_events(array_fill('2025-01-01'::timestamptz, ARRAY[4000000]), array_fill(1.0::float8, ARRAY[4000000]))"
check "find_events over 1M points that fit completes" none \
    "SELECT count(*) FROM coherence.find_events(ARRAY(SELECT '2025-01-01'::timestamptz + i * interval '1 minute' FROM generate_series(1, 1000000) i), ARRAY(SELECT (i % 97)::float8 FROM generate_series(1, 1000000) i))"
check "find_collective over 2M points under the limit" 53200 \
    "SELECT count(*) FROM coherence.find_collective(array_fill('m'::text, ARRAY[2000000]), array_fill('2025-01-01'::timestamptz, ARRAY[2000000]), array_fill(1.0::float8, ARRAY[2000000]))"
check "variance escalation with a 1-microsecond window over 2M points" 54000 \
    "SELECT (coherence.variance_escalation('2025-01-01'::timestamptz + i * interval '1 microsecond', i::float8, interval '1 microsecond', 1.5)).ratio FROM generate_series(1, 2000000) i"

n=$((n + 1))
now_started=$("${PSQL[@]}" -tA -c "SELECT pg_postmaster_start_time()")
if [ "$now_started" = "$started" ] && ! grep -q "terminated by signal\|server process .* was terminated" "$ROOT/run/postgresql.log"; then
    echo "ok $n - the cluster never restarted (postmaster start time $started)"
else
    echo "not ok $n - the cluster restarted ($started -> $now_started):"
    grep -i "terminated\|abort" "$ROOT/run/postgresql.log" | head -5 | sed 's/^/    /'
    fail=1
fi
if [ "$fail" = 0 ]; then
    echo "All $n memory-limit checks passed"
fi
exit "$fail"
