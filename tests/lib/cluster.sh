# shellcheck shell=bash
# Throwaway PostgreSQL 15 clusters for test tiers (sourced by tests/memlimit.sh and
# tests/package.sh): set PG_BIN, ROOT and PORT, then call cluster_init; register
# cluster_cleanup with trap. The data lives in $ROOT/data, the socket in $ROOT/run.

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}

# Runs a command as the postgres user when root (from /: that user may not enter the
# caller's private working directory).
as_pg() {
    if [ "$(id -u)" = 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}

# Stops the cluster (immediate) and removes $ROOT.
cluster_cleanup() {
    if [ -f "$ROOT/data/PG_VERSION" ]; then
        as_pg "$PG_BIN/pg_ctl" -D "$ROOT/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$ROOT"
}

# initdb into $ROOT/data (trust auth, socket only in $ROOT/run on $PORT); extra
# postgresql.conf lines come on stdin. Does not start it.
cluster_init() {
    install -d -m 0755 "$ROOT"
    install -d -o postgres -g postgres -m 0700 "$ROOT/data"
    install -d -o postgres -g postgres -m 0755 "$ROOT/run"
    as_pg "$PG_BIN/initdb" -D "$ROOT/data" --auth=trust --username=postgres -E UTF8 --locale=C.UTF-8 >/dev/null
    {
        echo "port = $PORT"
        echo "listen_addresses = ''"
        echo "unix_socket_directories = '$ROOT/run'"
        echo "shared_buffers = 16MB"
        cat
    } >>"$ROOT/data/postgresql.conf"
}
