#!/usr/bin/env bash
# Install everything Coherence needs on a Debian 12 machine; idempotent and fast when done.
# - Debian packages: postgresql-15, postgresql-server-dev-15, postgresql-15-cron, libclang-dev, sudo,
#   systemd (systemd-analyze verify checks packaging/systemd/ in the docs test tier),
#   chromium (the live view's browser test drives it headless), prometheus and
#   prometheus-node-exporter (the Prometheus source's end-to-end test runs both)
# - cargo-pgrx at the version pinned in Cargo.toml ([workspace.dependencies] pgrx)
# - `cargo pgrx init` against Debian's PostgreSQL 15 (no downloads)
set -euo pipefail
cd "$(dirname "$0")/.."

PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
PGRX_VERSION=$(sed -n 's/^pgrx = "=\(.*\)"/\1/p' Cargo.toml)
[ -n "$PGRX_VERSION" ] || { echo "setup: cannot read the pgrx version from Cargo.toml" >&2; exit 1; }

need=()
for p in postgresql-15 postgresql-server-dev-15 postgresql-15-cron libclang-dev sudo systemd chromium prometheus prometheus-node-exporter; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
    echo "setup: installing Debian packages: ${need[*]}"
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need[@]}"
fi

if ! cargo pgrx --version 2>/dev/null | grep -qx "cargo-pgrx $PGRX_VERSION"; then
    echo "setup: installing cargo-pgrx $PGRX_VERSION (takes ~15 minutes on 2 cores)"
    cargo install cargo-pgrx --version "=$PGRX_VERSION" --locked
fi

if ! grep -qs "^pg15 = \"$PG_CONFIG\"" "${PGRX_HOME:-$HOME/.pgrx}/config.toml"; then
    echo "setup: cargo pgrx init --pg15 $PG_CONFIG"
    cargo pgrx init --pg15 "$PG_CONFIG"
fi
echo "setup: ok (cargo-pgrx $PGRX_VERSION, $("$PG_CONFIG" --version))"
