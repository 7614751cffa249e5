#!/usr/bin/env bash
# The live incident view (`coherence-ingest serve`) in the background, for `make demo`.
#
#   scripts/serve.sh start   (re)start it; prints the URL (never fails the demo: says why instead)
#   scripts/serve.sh stop    stop the one this script started (its pid in target/serve.pid)
#   scripts/serve.sh run     run it in the foreground (`make serve`)
#
# On the local cluster it connects as the login role coherence_viewer, a member of
# coherence_reader only (created here when missing). With DATABASE_URL it uses
# COHERENCE_SERVE_DATABASE_URL when set (a role granted coherence_reader), else DATABASE_URL,
# and creates no role. Binds COHERENCE_SERVE_BIND (127.0.0.1:8080).
set -euo pipefail
cd "$(dirname "$0")/.."

BIND=${COHERENCE_SERVE_BIND:-127.0.0.1:8080}
PIDFILE=target/serve.pid
LOG=target/serve.log
BIN=target/release/coherence-ingest

ours() { # pid: alive and our serve
    [ -n "${1:-}" ] && [ -r "/proc/$1/cmdline" ] && tr '\0' ' ' <"/proc/$1/cmdline" | grep -q "coherence-ingest serve"
}

stop() {
    local pid
    pid=$(cat "$PIDFILE" 2>/dev/null || true)
    if ours "$pid"; then
        kill "$pid"
        for _ in $(seq 50); do ours "$pid" || break; sleep 0.1; done
        echo "serve.sh: stopped the live view (pid $pid)" >&2
    fi
    rm -f "$PIDFILE"
}

# The connection string serve uses (creating the local cluster's viewer role when missing).
db_url() {
    if [ -z "${DATABASE_URL:-}" ]; then
        psql -X -q "$(scripts/pg.sh url)" -v ON_ERROR_STOP=1 -c "SET client_min_messages = warning" -c \
            "DO \$\$BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'coherence_viewer') THEN
                 CREATE ROLE coherence_viewer LOGIN IN ROLE coherence_reader; END IF; END\$\$" >&2
        scripts/pg.sh url | sed 's/\buser=[^ ]*/user=coherence_viewer/'
    else
        echo "${COHERENCE_SERVE_DATABASE_URL:-$DATABASE_URL}"
    fi
}

start() {
    stop
    local url
    url=$(db_url)
    mkdir -p target
    DATABASE_URL="$url" setsid "$BIN" serve --bind "$BIND" >"$LOG" 2>&1 </dev/null &
    echo $! >"$PIDFILE"
    local line=""
    for _ in $(seq 50); do
        line=$(grep -m1 '^coherence-ingest serve: ' "$LOG" || true)
        [ -n "$line" ] && break
        ours "$(cat "$PIDFILE")" || break
        sleep 0.1
    done
    if [ -n "$line" ]; then
        echo "Live incident view: ${line#coherence-ingest serve: }  (coherence-ingest serve, pid $(cat "$PIDFILE"), log $LOG; 'make stop' stops it)"
    else
        echo "Live incident view: not started ($(tail -n 1 "$LOG" 2>/dev/null)); start it by hand:" >&2
        echo "  DATABASE_URL=\"$url\" $BIN serve --bind $BIND" >&2
        rm -f "$PIDFILE"
    fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    run) url=$(db_url); DATABASE_URL="$url" exec "$BIN" serve --bind "$BIND" ;;
    *) echo "usage: scripts/serve.sh start|stop|run" >&2; exit 2 ;;
esac
