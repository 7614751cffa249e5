#!/usr/bin/env bash
# Manage Coherence's throwaway local PostgreSQL 15 cluster, or pass through to $DATABASE_URL.
#
#   scripts/pg.sh start     init (once) and start the local cluster; no-op with DATABASE_URL
#   scripts/pg.sh stop      stop the local cluster (data is kept until `scripts/pg.sh destroy`)
#   scripts/pg.sh destroy   stop and delete the local cluster
#   scripts/pg.sh status    print what is being used
#   scripts/pg.sh url [DB]  print the connection string for DB (default: coherence)
#   scripts/pg.sh env       print PGHOST/PGPORT/PGUSER/... exports for libpq tools (pg_regress)
#
# The local cluster runs as the `postgres` user on its own port and socket directory, with
# pg_cron preloaded, and never touches the machine's own cluster or its config files.
set -euo pipefail

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PORT=${COHERENCE_PGPORT:-55432}
# Outside the checkout: the postgres user must be able to reach it even when the checkout
# lives in a private (0700) directory.
ROOT=${COHERENCE_PGROOT:-/tmp/coherence-pg-$PORT}
DB_DEFAULT=${COHERENCE_DB:-coherence}

local_url() { echo "host=$ROOT/run port=$PORT user=postgres dbname=${1:-$DB_DEFAULT}"; }

as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

running() { [ -f "$ROOT/data/PG_VERSION" ] && as_pg "$PG_BIN/pg_ctl" -D "$ROOT/data" status >/dev/null 2>&1; }

start() {
    if [ -n "${DATABASE_URL:-}" ]; then
        echo "pg.sh: using DATABASE_URL (no local cluster)" >&2
        return 0
    fi
    if ! [ -f "$ROOT/data/PG_VERSION" ]; then
        echo "pg.sh: creating local cluster in $ROOT (port $PORT)" >&2
        install -d -m 0755 "$ROOT"
        install -d -o postgres -g postgres -m 0700 "$ROOT/data"
        install -d -o postgres -g postgres -m 0755 "$ROOT/run"
        as_pg "$PG_BIN/initdb" -D "$ROOT/data" --auth=trust --username=postgres -E UTF8 --locale=C.UTF-8 >/dev/null
        cat >>"$ROOT/data/postgresql.conf" <<CONF

# --- Coherence local cluster (scripts/pg.sh) ---
port = $PORT
listen_addresses = ''
unix_socket_directories = '$ROOT/run'
shared_preload_libraries = 'pg_cron'
cron.database_name = '$DB_DEFAULT'
cron.use_background_workers = on
max_worker_processes = 16
max_parallel_workers_per_gather = 2
synchronous_commit = off
log_min_messages = warning
CONF
    fi
    if running; then return 0; fi
    # Without the caller's RUST_BACKTRACE: a backtrace must never reach a SQL client in an error.
    as_pg env -u RUST_BACKTRACE -u RUST_LIB_BACKTRACE "$PG_BIN/pg_ctl" -D "$ROOT/data" -l "$ROOT/run/postgresql.log" -w -t 60 start >/dev/null
    echo "pg.sh: local cluster running: psql \"$(local_url)\"" >&2
}

stop() {
    if running; then
        as_pg "$PG_BIN/pg_ctl" -D "$ROOT/data" -m fast -w stop >/dev/null
        echo "pg.sh: local cluster stopped" >&2
    fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    destroy) stop; rm -rf "$ROOT" ;;
    status)
        if [ -n "${DATABASE_URL:-}" ]; then echo "external: DATABASE_URL is set"
        elif running; then echo "local cluster running in $ROOT on port $PORT"
        else echo "local cluster not running ($ROOT)"; fi ;;
    url)
        if [ -n "${DATABASE_URL:-}" ]; then
            if [ -n "${2:-}" ]; then echo "pg.sh: url DB needs the local cluster" >&2; exit 2; fi
            echo "$DATABASE_URL"
        else local_url "${2:-}"; fi ;;
    env)
        if [ -n "${DATABASE_URL:-}" ]; then
            python3 - "$DATABASE_URL" <<'PY'
import sys, shlex
from urllib.parse import urlparse, parse_qs, unquote
u = sys.argv[1]
out = {}
if "://" in u:
    p = urlparse(u)
    if p.hostname: out["PGHOST"] = unquote(p.hostname)
    if p.port: out["PGPORT"] = str(p.port)
    if p.username: out["PGUSER"] = unquote(p.username)
    if p.password: out["PGPASSWORD"] = unquote(p.password)
    for k, v in parse_qs(p.query).items():
        m = {"host": "PGHOST", "port": "PGPORT", "user": "PGUSER", "sslmode": "PGSSLMODE"}
        if k in m: out[m[k]] = v[0]
else:
    for part in shlex.split(u):
        k, _, v = part.partition("=")
        m = {"host": "PGHOST", "port": "PGPORT", "user": "PGUSER", "password": "PGPASSWORD", "sslmode": "PGSSLMODE"}
        if k in m: out[m[k]] = v
for k, v in out.items():
    print(f"export {k}={shlex.quote(v)}")
PY
        else
            echo "export PGHOST=$ROOT/run PGPORT=$PORT PGUSER=postgres"
        fi ;;
    *) sed -n '2,12p' "$0"; exit 2 ;;
esac
