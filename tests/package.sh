#!/usr/bin/env bash
# Package tier: builds the Debian package (scripts/deb.sh), installs it with dpkg, and uses it
# in a clean, throwaway PostgreSQL 15 cluster: CREATE EXTENSION (as a superuser and as a
# database owner without superuser), a detection run, and the update walk from 0.1.0 with the
# package's own scripts. The package stays installed (it holds the same files as make install).
#
#   tests/package.sh [--help]
#   env: COHERENCE_PACKAGE_PORT (default 55497)
#
# Prints "ok N - ..." per check (the count is read by scripts/test.sh) and exits 1 on a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--help" ] || [ "${1:-}" = "-h" ]; then
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi
PORT=${COHERENCE_PACKAGE_PORT:-55497}
ROOT=/tmp/coherence-package-$PORT
SUDO=$([ "$(id -u)" = 0 ] && echo || echo sudo)
. tests/lib/cluster.sh
trap cluster_cleanup EXIT
cluster_cleanup

n=0
ok() { n=$((n + 1)); echo "ok $n - $*"; }
fail() { echo "not ok - $*" >&2; exit 1; }

# The release being packaged (as scripts/deb.sh reads it) and its upgrade script.
VERSION=$(sed -nE 's/^version = "([^"]+)"/\1/p' Cargo.toml | head -1)
UPGRADE=$(cd extension/sql && ls coherence--*--"$VERSION".sql)
DEB=$(scripts/deb.sh | tail -1)
[ -f "$DEB" ] || fail "scripts/deb.sh made no package"
ok "built $DEB ($(du -h "$DEB" | cut -f1))"
contents=$(dpkg-deb -c "$DEB")
for f in lib/coherence.so extension/coherence.control "extension/coherence--$VERSION.sql" \
         extension/coherence--0.1.0.sql "extension/$UPGRADE"; do
    grep -q "/postgresql/15/$f\$" <<<"$contents" || fail "package lacks $f"
done
ok "the package holds the library, the control file, install and upgrade scripts"

$SUDO dpkg -i "$DEB" >"$ROOT.dpkg.log" 2>&1 || { cat "$ROOT.dpkg.log" >&2; fail "dpkg -i $DEB failed"; }
rm -f "$ROOT.dpkg.log"
status=$(dpkg-query -W -f '${Status} ${Version}' postgresql-15-coherence)
[ "$status" = "install ok installed $VERSION" ] || fail "dpkg-query says '$status'"
ok "dpkg -i installs it: $status"
$SUDO dpkg --verify postgresql-15-coherence || fail "dpkg --verify reports changed files"
ok "dpkg --verify: the installed files are the package's"

cluster_init </dev/null
as_pg "$PG_BIN/pg_ctl" -D "$ROOT/data" -l "$ROOT/run/postgresql.log" -w -t 60 start >/dev/null
q() { psql -X -q -v ON_ERROR_STOP=1 -tA "host=$ROOT/run port=$PORT user=${2:-postgres} dbname=${3:-postgres}" -c "$1"; }

[ "$(q "CREATE EXTENSION coherence; SELECT coherence.version()")" = "$VERSION" ] || fail "CREATE EXTENSION"
ok "a clean cluster: CREATE EXTENSION coherence, version $VERSION"
got=$(q "INSERT INTO coherence.metrics (host, metric_name, value, \"timestamp\")
         SELECT 'web-1', 'cpu', CASE WHEN g = 2600 THEN 99 ELSE 30 + (g * 7919) % 11 - 5 END,
                '2025-12-11 00:00+00'::timestamptz + g * interval '1 minute' FROM generate_series(0, 2879) g;
         INSERT INTO coherence.signal_events (ts, host, fingerprint, severity, source, source_id)
         SELECT '2025-12-12 19:21+00'::timestamptz + k * interval '20 seconds', 'web-1', 'web-1:error',
                'error', 'test', 'e' || k FROM generate_series(0, 9) k;
         SELECT (coherence.run_detection())->>'incidents_opened'")
[ "$got" = "1" ] || fail "run_detection opened '$got' incidents"
ok "run_detection opens the incident"
q "DROP EXTENSION coherence; CREATE EXTENSION coherence VERSION '0.1.0'; ALTER EXTENSION coherence UPDATE" >/dev/null
[ "$(q "SELECT extversion FROM pg_extension WHERE extname = 'coherence'")" = "$VERSION" ] || fail "update walk"
ok "0.1.0 -> $VERSION with the package's scripts"
q "CREATE ROLE owner1 LOGIN" >/dev/null
q "CREATE DATABASE owned OWNER owner1" >/dev/null
[ "$(q "CREATE EXTENSION coherence; SELECT count(*) FROM coherence.anomaly_kinds()" owner1 owned)" -gt 0 ] \
    || fail "CREATE EXTENSION as a database owner"
ok "a database owner without superuser installs it (trusted)"
echo "All $n package checks passed"
