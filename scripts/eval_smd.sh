#!/usr/bin/env bash
# make eval-smd: multi-metric incidents on SMD (issue 11's development data).
#
# Loads the labelled test half of the SMD machines (host machine-1-6 ..., metrics m01..m38,
# row r at 2026-01-01 00:00:00+00 + r minutes) into coherence.metrics of a dedicated database,
# dropped and recreated each run (never the demo database), runs
# coherence.run_detection(full_rescan => true) with the installed extension, and scores its
# incidents per labelled segment next to a per-metric 2.5-sigma rule and "name all 38 metrics"
# (protocol: eval/smd/smd_eval.py). Table on stdout, details in target/eval-smd.json.
#
# Usage: scripts/eval_smd.sh [--help]
#
# Environment:
#   SMD_DIR       the dataset (test/, test_label/, interpretation_label/, LICENSE); read in
#                 place, never copied; default ../shared/datasets/smd from the repository root
#   SMD_DB        the scratch database (default coherence_eval_smd; dropped and recreated)
#   SMD_OUT       the JSON report (default target/eval-smd.json)
#   DATABASE_URL  use that server instead of the local cluster (the scratch database is
#                 created there; needs CREATEDB and a superuser for CREATE EXTENSION coherence)
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
case "${1:-}" in
    -h | --help) usage; exit 0 ;;
    "") ;;
    *) echo "eval_smd.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
esac

# Paths given in the environment are taken from the caller's directory; the defaults from the
# repository root.
abs() { case $1 in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
[ -z "${SMD_DIR:-}" ] || SMD_DIR=$(abs "$SMD_DIR")
[ -z "${SMD_OUT:-}" ] || SMD_OUT=$(abs "$SMD_OUT")
cd "$(dirname "$0")/.."
die() { echo "eval_smd.sh: $*" >&2; exit 1; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

SMD_DIR=${SMD_DIR:-../shared/datasets/smd}
DB=${SMD_DB:-coherence_eval_smd}
OUT_JSON=${SMD_OUT:-target/eval-smd.json}
WORK=target/eval-smd
PY=target/eval-venv/bin/python

# --- the data
[ -d "$SMD_DIR" ] || die "SMD data not found at '$SMD_DIR' (set SMD_DIR to the folder holding test/, test_label/, interpretation_label/; see its SOURCE.md)"
for sub in test test_label interpretation_label; do
    [ -d "$SMD_DIR/$sub" ] || die "'$SMD_DIR/$sub' is missing: SMD_DIR must hold test/, test_label/ and interpretation_label/"
done
compgen -G "$SMD_DIR/test/*.txt" >/dev/null || die "no machine files in '$SMD_DIR/test'"
[ -f "$SMD_DIR/LICENSE" ] || die "'$SMD_DIR/LICENSE' is missing (the dataset must travel with its MIT licence)"

# --- the database: a dedicated one, never the demo database
[[ $DB =~ ^[a-z_][a-z0-9_]*$ ]] || die "SMD_DB '$DB' must be a plain lower-case identifier"
case $DB in coherence | postgres | template0 | template1) die "SMD_DB must not be '$DB': the eval drops and recreates it" ;; esac
scripts/pg.sh start
eval "$(scripts/pg.sh env)"
export PGTZ=UTC PGOPTIONS="-c client_min_messages=warning"
psql_db() { psql -X -q -v ON_ERROR_STOP=1 -d "$DB" "$@"; }

# --- python: the venv of make eval (numpy is all this needs)
python3 -m venv target/eval-venv >/dev/null 2>&1 || true
[ -x "$PY" ] || die "could not create the python venv target/eval-venv (is python3-venv installed?)"
"$PY" -c 'import numpy' 2>/dev/null || "$PY" -m pip install --quiet numpy \
    || die "numpy is missing in target/eval-venv and could not be installed"

mkdir -p "$WORK" "$(dirname "$OUT_JSON")"
t_start=$(now)
echo "eval_smd: recreating database $DB" >&2
psql -X -q -v ON_ERROR_STOP=1 -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB" \
    || die "could not recreate database $DB"
psql_db -c "CREATE EXTENSION coherence" || die "CREATE EXTENSION coherence failed in $DB (is the extension installed? make install)"
version=$(psql_db -tAc "SELECT extversion FROM pg_extension WHERE extname = 'coherence'")

echo "eval_smd: loading $SMD_DIR into $DB (coherence.metrics)" >&2
t0=$(now)
"$PY" eval/smd/smd_eval.py csv "$SMD_DIR" \
    | psql_db -c "\\copy coherence.metrics (host, metric_name, \"timestamp\", value) FROM pstdin WITH (FORMAT csv)"
psql_db -c "ANALYZE coherence.metrics"
rows=$(psql_db -tAc "SELECT count(*) FROM coherence.metrics")
t1=$(now)
load_s=$(secs "$t0" "$t1")
echo "eval_smd: loaded $rows rows in ${load_s}s; running coherence.run_detection(full_rescan => true)" >&2

# The machines' recordings end at different times: the end of a recording is not an outage, so
# no-data detection is off for this database (a per-series rule, docs/operations.md).
psql_db -c "INSERT INTO coherence.series_rules (detectors, note) VALUES ('{robust,volatility,trend,collective}', 'SMD recordings end at different times')"
psql_db -tAc "SELECT coherence.run_detection(full_rescan => true)" > "$WORK/run_detection.json"
t2=$(now)
detect_s=$(secs "$t1" "$t2")
echo "eval_smd: run_detection took ${detect_s}s: $(cat "$WORK/run_detection.json")" >&2

psql_db -c "\\copy (SELECT id, host, metric, detector, kind, extract(epoch FROM started_at) AS started_at, extract(epoch FROM ended_at) AS ended_at, risk FROM coherence.anomalies ORDER BY id) TO '$WORK/anomalies.csv' WITH (FORMAT csv, HEADER true)"
psql_db -tAc "SELECT (to_jsonb(i) || jsonb_build_object('opened_at_epoch', extract(epoch FROM i.opened_at), 'last_signal_at_epoch', extract(epoch FROM i.last_signal_at)))::text FROM coherence.incidents i ORDER BY i.id" \
    > "$WORK/incidents.jsonl"

cat > "$WORK/timing.json" <<JSON
{"extension_version": "$version", "rows_loaded": $rows, "load_seconds": $load_s,
 "run_detection_seconds": $detect_s, "run_detection": $(cat "$WORK/run_detection.json")}
JSON
"$PY" eval/smd/smd_eval.py score "$SMD_DIR" "$WORK/anomalies.csv" "$WORK/incidents.jsonl" \
    --timing "$WORK/timing.json" --out "$OUT_JSON"
echo "eval_smd: done in $(secs "$t_start" "$(now)")s (database $DB kept for inspection; raw output in $WORK/)" >&2

# --- the floor: the headline may not fall below the last committed figures (eval/smd/floor.txt)
"$PY" - "$OUT_JSON" eval/smd/floor.txt <<'PYEOF' || die "below the floor in eval/smd/floor.txt"
import json, sys
got = json.load(open(sys.argv[1]))["summary"]["strict"]["ALL"]["coherence"]
floor = {}
for line in open(sys.argv[2]):
    line = line.split("#", 1)[0].strip()
    if line:
        k, v = (x.strip() for x in line.split("=", 1))
        floor[k] = float(v)
bad = []
for k, v in floor.items():
    if k.endswith("_max"):
        if got[k[:-4]] > v:
            bad.append(f"{k[:-4]} {got[k[:-4]]:.3f} > {v}")
    elif got[k] < v:
        bad.append(f"{k} {got[k]:.3f} < {v}")
print("eval_smd floor:", "; ".join(f"{k} {got[k[:-4] if k.endswith('_max') else k]:.3f}" for k in floor),
      "->", "BELOW: " + ", ".join(bad) if bad else "ok", file=sys.stderr)
sys.exit(1 if bad else 0)
PYEOF
