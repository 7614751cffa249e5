#!/usr/bin/env bash
# Check the systemd units in packaging/systemd/ (run by the `docs` tier of scripts/test.sh):
#   - `systemd-analyze verify` passes with no output at all (it exits 0 on unknown keys and
#     only warns, so any message fails here);
#   - no inline comments (systemd reads `KEY=value  # note` as part of the value);
#   - ExecStart is /usr/local/bin/coherence-ingest, where `make install` puts the ingestor.
# verify needs the ExecStart binary to exist: when /usr/local/bin/coherence-ingest is not
# installed (a test machine), a copy of the unit pointing at the built binary is verified.
# verify works without systemd running as PID 1 (as in a container).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${COHERENCE_DOCTEST_BIN:-target/release}/coherence-ingest
command -v systemd-analyze >/dev/null || { echo "systemd_units: systemd-analyze is missing (Debian package systemd; make setup installs it)" >&2; exit 1; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
n=0
for unit in packaging/systemd/*.service; do
    name=$(basename "$unit")
    if grep -nE '^[[:space:]]*[^#;[:space:]].*[[:space:]][#;]' "$unit"; then
        echo "systemd_units: $unit: inline comment (systemd has none: put comments on their own line)" >&2; exit 1
    fi
    grep -qx 'ExecStart=/usr/local/bin/coherence-ingest .*' "$unit" \
        || { echo "systemd_units: $unit: ExecStart must be /usr/local/bin/coherence-ingest ..." >&2; exit 1; }
    check=$unit
    if ! [ -x /usr/local/bin/coherence-ingest ]; then
        [ -x "$BIN" ] || { echo "systemd_units: neither /usr/local/bin/coherence-ingest nor $BIN exists (make build)" >&2; exit 1; }
        sed "s#^ExecStart=/usr/local/bin/coherence-ingest#ExecStart=$(realpath "$BIN")#" "$unit" > "$tmp/$name"
        check=$tmp/$name
    fi
    out=$(systemd-analyze verify "$check" 2>&1) || { echo "$out" >&2; echo "systemd_units: $unit: systemd-analyze verify failed" >&2; exit 1; }
    if [ -n "$out" ]; then echo "$out" >&2; echo "systemd_units: $unit: systemd-analyze verify warned" >&2; exit 1; fi
    echo "ok   $unit (systemd-analyze verify)"
    n=$((n + 1))
done
[ "$n" -gt 0 ] || { echo "systemd_units: no units in packaging/systemd" >&2; exit 1; }
echo "All $n systemd units verified"
