#!/usr/bin/env bash
# Builds the extension's Debian package, target/postgresql-15-coherence_<version>_<arch>.deb,
# from `cargo pgrx package`: the library, the control file, the current install script, every
# upgrade script and the earlier releases' install scripts (so CREATE EXTENSION ... VERSION
# '0.1.0' and ALTER EXTENSION ... UPDATE work from the package alone).
#
#   scripts/deb.sh [--help]        (make deb)
#   env: PG_CONFIG (default /usr/lib/postgresql/15/bin/pg_config)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--help" ] || [ "${1:-}" = "-h" ]; then
    sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi
die() { echo "deb.sh: $*" >&2; exit 1; }
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
command -v dpkg-deb >/dev/null || die "dpkg-deb is missing (Debian's dpkg)"
PGMAJOR=$("$PG_CONFIG" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')
VERSION=$(sed -nE 's/^version = "([^"]+)"/\1/p' Cargo.toml | head -1)
[ -n "$VERSION" ] || die "no version in Cargo.toml"
ARCH=$(dpkg --print-architecture)
NAME=postgresql-$PGMAJOR-coherence

echo "deb.sh: cargo pgrx package (log: target/pgrx-package.log)" >&2
mkdir -p target
(cd extension && cargo pgrx package --pg-config "$PG_CONFIG" >../target/pgrx-package.log 2>&1) \
    || { cat target/pgrx-package.log >&2; die "cargo pgrx package failed"; }
TREE=target/release/coherence-pg$PGMAJOR
[ -f "$TREE$("$PG_CONFIG" --pkglibdir)/coherence.so" ] || die "no coherence.so in $TREE"

STAGE=target/deb/$NAME
rm -rf "$STAGE"
mkdir -p "$STAGE/DEBIAN"
cp -a "$TREE"/. "$STAGE"/
EXTDIR="$STAGE$("$PG_CONFIG" --sharedir)/extension"
install -m 0644 extension/sql/archive/coherence--*.sql "$EXTDIR"/
install -d "$STAGE/usr/share/doc/$NAME"
install -m 0644 LICENSE "$STAGE/usr/share/doc/$NAME/copyright"
install -m 0644 CHANGELOG.md "$STAGE/usr/share/doc/$NAME/CHANGELOG.md"
SIZE=$(du -sk "$STAGE" | cut -f1)
cat >"$STAGE/DEBIAN/control" <<CONTROL
Package: $NAME
Version: $VERSION
Architecture: $ARCH
Maintainer: Coherence developers <coherence@example.invalid>
Depends: postgresql-$PGMAJOR, libc6
Section: database
Priority: optional
Installed-Size: $SIZE
Homepage: https://github.com/coherence-sre/coherence
Description: Coherence: anomaly detection and incident correlation inside PostgreSQL $PGMAJOR
 Detectors (robust spikes and level shifts, volatility, leaks with time to exhaustion,
 collective anomalies, no-data), incident correlation with a causal graph, hypotheses and
 narratives, and the run_detection() job for pg_cron, as the PostgreSQL extension
 "coherence" (CREATE EXTENSION coherence; trusted: a database owner may install it).
CONTROL
OUT=target/${NAME}_${VERSION}_${ARCH}.deb
dpkg-deb --root-owner-group --build "$STAGE" "$OUT" >/dev/null
echo "$OUT"
