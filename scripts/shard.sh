#!/usr/bin/env bash
# A sharded Coherence on one machine: a coordinator and N shard clusters (throwaway PostgreSQL 15
# clusters on loopback, free ports), joined with postgres_fdw (docs/scale.md).
#
#   scripts/shard.sh start      init (once) and start coord, shard0 .. shardN-1
#   scripts/shard.sh setup      CREATE EXTENSION coherence everywhere, pg_cron job on every shard,
#                               foreign servers + sql/coordinator.sql on the coordinator
#   scripts/shard.sh url NODE   connection string of NODE (coord, shard0, ...)
#   scripts/shard.sh status     nodes and ports
#   scripts/shard.sh stop       stop the clusters (data kept); destroy: stop and delete them
#
#   env: COHERENCE_SHARD_ROOT (/tmp/coherence-shard), COHERENCE_SHARDS (2),
#        COHERENCE_SHARD_PORT_BASE (56400: first port tried), COHERENCE_SHARD_CRON ('*/15 * * * *')
# Every cluster runs as the `postgres` user, listens on 127.0.0.1 and its own socket directory,
# and has pg_cron preloaded (cron.database_name = coherence); the database is `coherence`.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
ROOT=${COHERENCE_SHARD_ROOT:-/tmp/coherence-shard}
NSHARDS=${COHERENCE_SHARDS:-2}
PORT_BASE=${COHERENCE_SHARD_PORT_BASE:-56400}
CRON=${COHERENCE_SHARD_CRON:-*/15 * * * *}
DB=coherence

nodes() { echo coord; for ((k = 0; k < NSHARDS; k++)); do echo "shard$k"; done; }

as_pg() {
    # From /: the postgres user may not enter the caller's (private) working directory.
    if [ "$(id -u)" = 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}

port_of() {
    [ -f "$ROOT/$1/port" ] || { echo "shard.sh: no node $1 in $ROOT (run: scripts/shard.sh start)" >&2; exit 1; }
    cat "$ROOT/$1/port"
}
url() { echo "host=$ROOT/$1/run port=$(port_of "$1") user=postgres dbname=${2:-$DB}"; }
psql_on() { local node=$1; shift; psql -X -q -v ON_ERROR_STOP=1 "$(url "$node")" "$@"; }

# A port no process listens on (TCP loopback) and no other node of ours uses.
free_port() {
    local p=$PORT_BASE used
    used=$(cat "$ROOT"/*/port 2>/dev/null || true)
    while :; do
        if ! grep -qx "$p" <<<"$used" && python3 -c "import socket,sys; s=socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1])))" "$p" 2>/dev/null; then
            echo "$p"; return 0
        fi
        p=$((p + 1))
        [ "$p" -lt $((PORT_BASE + 500)) ] || { echo "shard.sh: no free port from $PORT_BASE" >&2; exit 1; }
    done
}

running() { [ -f "$ROOT/$1/data/PG_VERSION" ] && as_pg "$PG_BIN/pg_ctl" -D "$ROOT/$1/data" status >/dev/null 2>&1; }

start() {
    install -d -m 0755 "$ROOT"
    local node port
    for node in $(nodes); do
        if ! [ -f "$ROOT/$node/data/PG_VERSION" ]; then
            port=$(free_port)
            install -d -m 0755 "$ROOT/$node"
            echo "$port" >"$ROOT/$node/port"
            install -d -o postgres -g postgres -m 0700 "$ROOT/$node/data"
            install -d -o postgres -g postgres -m 0755 "$ROOT/$node/run"
            as_pg "$PG_BIN/initdb" -D "$ROOT/$node/data" --auth=trust --username=postgres -E UTF8 --locale=C.UTF-8 >/dev/null
            cat >>"$ROOT/$node/data/postgresql.conf" <<CONF

# --- Coherence sharded setup (scripts/shard.sh): node $node ---
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$ROOT/$node/run'
shared_preload_libraries = 'pg_cron'
cron.database_name = '$DB'
cron.use_background_workers = on
max_worker_processes = 16
max_connections = 40
shared_buffers = 64MB
synchronous_commit = off
log_min_messages = warning
CONF
        fi
        if ! running "$node"; then
            # Without the caller's RUST_BACKTRACE: a backtrace must never reach a SQL client.
            as_pg env -u RUST_BACKTRACE -u RUST_LIB_BACKTRACE "$PG_BIN/pg_ctl" -D "$ROOT/$node/data" \
                -l "$ROOT/$node/run/postgresql.log" -w -t 60 start >/dev/null
        fi
    done
    echo "shard.sh: running in $ROOT: $(for n in $(nodes); do printf '%s:%s ' "$n" "$(port_of "$n")"; done)" >&2
}

setup() {
    local node k
    for node in $(nodes); do
        psql -X -q -v ON_ERROR_STOP=1 "$(url "$node" postgres)" -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB'" | grep -q 1 \
            || psql -X -q -v ON_ERROR_STOP=1 "$(url "$node" postgres)" -c "CREATE DATABASE $DB"
        psql_on "$node" -c "SET client_min_messages = warning" -c "CREATE EXTENSION IF NOT EXISTS coherence"
    done
    # Shards: detection runs here, on the hosts each shard holds.
    for ((k = 0; k < NSHARDS; k++)); do
        psql_on "shard$k" -c "SET client_min_messages = warning" -c "CREATE EXTENSION IF NOT EXISTS pg_cron" \
            -c "SELECT cron.schedule('coherence-detect', '$CRON', 'SELECT coherence.run_detection()')" >/dev/null
    done
    # Coordinator: one foreign server per shard over loopback TCP, then the fleet schema.
    psql_on coord -c "SET client_min_messages = warning" -c "CREATE EXTENSION IF NOT EXISTS postgres_fdw"
    for ((k = 0; k < NSHARDS; k++)); do
        psql_on coord <<SQL
SET client_min_messages = warning;
DROP SERVER IF EXISTS shard$k CASCADE;
CREATE SERVER shard$k FOREIGN DATA WRAPPER postgres_fdw
    OPTIONS (host '127.0.0.1', port '$(port_of "shard$k")', dbname '$DB',
             extensions 'coherence', async_capable 'true', batch_size '1000', fetch_size '10000');
CREATE USER MAPPING FOR postgres SERVER shard$k OPTIONS (user 'postgres');
SQL
    done
    psql_on coord -f "$REPO/sql/coordinator.sql"
    echo "shard.sh: coordinator $(url coord) over $NSHARDS shards" >&2
}

stop() {
    local node
    for node in $(nodes); do
        if running "$node"; then as_pg "$PG_BIN/pg_ctl" -D "$ROOT/$node/data" -m fast -w stop >/dev/null; fi
    done
}

case "${1:-}" in
    start) start ;;
    setup) setup ;;
    url) url "${2:?usage: scripts/shard.sh url NODE [DB]}" "${3:-}" ;;
    status)
        for n in $(nodes); do
            if running "$n"; then echo "$n running on port $(port_of "$n") ($ROOT/$n)"; else echo "$n not running ($ROOT/$n)"; fi
        done ;;
    stop) stop ;;
    destroy) stop; rm -rf "$ROOT" ;;
    *) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
