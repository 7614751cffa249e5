#!/usr/bin/env bash
# Run every test tier; fail if any tier fails or runs zero tests.
#   1. unit:    pure crate + ingestor unit tests (cargo test, no PostgreSQL)
#   2. pgrx:    #[pg_test] functions inside a pgrx-managed PostgreSQL 15
#   3. regress: pg_regress golden SQL tests (tests/sql, tests/expected) on the cluster
#   4. docs:    the SQL and shell examples of README.md and docs/*.md (scripts/doctest.py) in
#               scratch databases with the demo data, and packaging/systemd/*.service checked by
#               systemd-analyze verify (tests/systemd_units.sh)
#   5. ingest:  integration tests against the cluster (COPY, pg_dump/restore, NOTIFY, pg_cron,
#               cancellation, concurrent runs, late commits, the live view in headless chromium,
#               every Grafana panel's SQL as the reader role)
#   6. hostile: inputs that used to abort the server, on a cluster under ulimit -v (tests/memlimit.sh)
#   7. sharded: a coordinator and two shard clusters over postgres_fdw (tests/sharded.sh, docs/scale.md)
#   8. package: scripts/deb.sh's .deb installed with dpkg, then used in a clean throwaway cluster
#   9. smd:     make eval-smd's headline figures against eval/smd/floor.txt (when the data is here)
# Tiers 3, 4 and 5 use the local cluster, or $DATABASE_URL when set.
set -euo pipefail
cd "$(dirname "$0")/.."

PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
PGXS=$(dirname "$("$PG_CONFIG" --pgxs)")/..
PG_REGRESS=$PGXS/test/regress/pg_regress
LOGDIR=target/test-logs
mkdir -p "$LOGDIR"
declare -A COUNTS

# run_tier NAME COUNT_REGEX CMD...: runs CMD, tees its output, sums the counts matched.
run_tier() {
    local name=$1 regex=$2; shift 2
    local log="$LOGDIR/$name.log"
    echo "==> tier $name: $*"
    if ! "$@" 2>&1 | tee "$log"; then
        echo "FAILED: tier $name (log: $log)" >&2
        exit 1
    fi
    local n
    n=$(grep -oE "$regex" "$log" | grep -oE '[0-9]+' | awk '{s+=$1} END {print s+0}')
    if [ "$n" -eq 0 ]; then
        echo "FAILED: tier $name ran zero tests (log: $log)" >&2
        exit 1
    fi
    COUNTS[$name]=$n
    echo "==> tier $name: $n passed"
}

# 1. unit
run_tier unit 'test result: ok\. [0-9]+ passed' \
    cargo test --locked --workspace --exclude coherence

# 2. pgrx (fresh initdb each run; needs the postgres user when run as root)
PGRX_DATA=${COHERENCE_PGRX_DATA:-/tmp/coherence-pgrx-test}
pgrx_test() {
    cd extension
    if [ "$(id -u)" = 0 ]; then
        rm -rf "$PGRX_DATA"
        install -d -o postgres -g postgres "$PGRX_DATA"
        cargo pgrx test pg15 --runas postgres --pgdata "$PGRX_DATA"
    else
        cargo pgrx test pg15
    fi
}
run_tier pgrx 'test result: ok\. [0-9]+ passed' pgrx_test

# `cargo pgrx test` installed its debug build into PostgreSQL: put the release build back
# (and build and install the ingestor, which the docs tier runs), start the cluster and make
# sure the demo database has pg_cron (the cron test schedules there).
make --no-print-directory db >/dev/null

# 3. pg_regress golden tests
regress() {
    eval "$(scripts/pg.sh env)"
    rm -rf tests/results
    local tests
    tests=$(cd tests/sql && ls *.sql | sed 's/\.sql$//' | sort)
    "$PG_REGRESS" --bindir="$("$PG_CONFIG" --bindir)" --inputdir=tests --outputdir=tests \
        --dbname=coherence_regress --load-extension=coherence $tests
}
run_tier regress '(All|all) [0-9]+ tests passed' regress

# 4. docs: every example of README.md and docs/*.md marked runnable (skips are listed with
#    their reasons), then the systemd units
docs() {
    python3 scripts/doctest.py
    tests/systemd_units.sh
}
run_tier docs 'All [0-9]+ doc examples passed' docs

# 5. ingestor integration tests
ingest() {
    COHERENCE_TEST_PG="$(scripts/pg.sh url postgres 2>/dev/null || scripts/pg.sh url)" \
        cargo test --locked -p coherence-ingest --features integration --test '*' -- --test-threads=2
}
run_tier ingest 'test result: ok\. [0-9]+ passed' ingest

# 6. hostile input under a memory limit (a throwaway cluster started with ulimit -v)
run_tier hostile 'All [0-9]+ memory-limit checks passed' tests/memlimit.sh

# 7. sharded: coordinator + two shards (throwaway clusters), ingest through the coordinator,
#    pushdown, single-node equality, run_detection per shard, the coordinator's views
run_tier sharded 'All [0-9]+ sharded checks passed' tests/sharded.sh

# 8. package: the Debian package built, installed with dpkg and used in a clean cluster
run_tier package 'All [0-9]+ package checks passed' tests/package.sh

# 9. smd: the multi-metric evaluation's headline figures may not fall below eval/smd/floor.txt
#    (make eval-smd; needs the SMD data, ../shared/datasets/smd or SMD_DIR: skipped, and said
#    so, where it is absent)
SMD_DATA=${SMD_DIR:-../shared/datasets/smd}
if [ -d "$SMD_DATA/test" ]; then
    run_tier smd 'All [0-9]+ SMD floor figures passed' \
        bash -c 'scripts/eval_smd.sh && echo "All 4 SMD floor figures passed"'
else
    echo "==> tier smd: skipped (no SMD data at $SMD_DATA; set SMD_DIR)"
    COUNTS[smd]=skipped
fi

echo
echo "All tiers passed: unit ${COUNTS[unit]}, pgrx ${COUNTS[pgrx]}, regress ${COUNTS[regress]}, docs ${COUNTS[docs]}, ingest ${COUNTS[ingest]}, hostile ${COUNTS[hostile]}, sharded ${COUNTS[sharded]}, package ${COUNTS[package]}, smd ${COUNTS[smd]}"
