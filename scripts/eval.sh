#!/usr/bin/env bash
# make eval: score coherence.find_events (in the database, on the labelled cloud-monitoring
# series) next to the seed's rules, generalized ESD and IQR, with the event-level protocol of
# eval/score.py. The series are loaded into a table of their own (schema coherence_eval) and
# read with the any-table pattern; coherence.metrics and the other extension tables are never
# touched. Without DATABASE_URL a scratch database (coherence_eval) on the local cluster is used.
# It refuses a database holding data that is not its own (scripts/db_guard.sh: tables outside
# schema coherence_eval, metrics or events the simulator did not write) unless
# COHERENCE_OVERWRITE_DB=1: the local coherence_eval is dropped and recreated on every run.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${EVAL_DATA:-eval/cloud-monitoring/data}
OUT=target/eval
mkdir -p "$OUT"
scripts/pg.sh start
guard() { SCHEMAS=coherence_eval scripts/db_guard.sh "$1" "make eval"; }
if [ -n "${DATABASE_URL:-}" ]; then
    URL=$DATABASE_URL
    guard "$URL"
    psql -X -q "$URL" -v ON_ERROR_STOP=1 -c "SET client_min_messages = warning; CREATE EXTENSION IF NOT EXISTS coherence" >/dev/null
else
    if psql -X -q "$(scripts/pg.sh url postgres)" -tAc "SELECT 1 FROM pg_database WHERE datname = 'coherence_eval'" | grep -q 1; then
        guard "$(scripts/pg.sh url coherence_eval)"
    fi
    psql -X -q "$(scripts/pg.sh url postgres)" -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS coherence_eval WITH (FORCE)" -c "CREATE DATABASE coherence_eval"
    URL=$(scripts/pg.sh url coherence_eval)
    guard "$URL"
    psql -X -q "$URL" -c "CREATE EXTENSION coherence"
fi
{
    echo "SET client_min_messages = warning;"
    echo "CREATE SCHEMA IF NOT EXISTS coherence_eval;"
    echo "DROP TABLE IF EXISTS coherence_eval.points;"
    echo "CREATE TABLE coherence_eval.points (folder text, file text, ts timestamptz, value float8, label int);"
    echo "CREATE TEMP TABLE raw (ts text, value text, label text);"
    for f in "$DATA"/*/*.csv; do
        folder=$(basename "$(dirname "$f")"); file=$(basename "$f" .csv)
        echo "TRUNCATE raw;"
        echo "\\copy raw FROM '$f' WITH (FORMAT csv, HEADER true)"
        echo "INSERT INTO coherence_eval.points SELECT '$folder', '$file', (ts || CASE WHEN ts ~ '(Z|[+-]\\d\\d(:?\\d\\d)?)\$' THEN '' ELSE 'Z' END)::timestamptz, nullif(value, '')::float8, coalesce(nullif(label, '')::int, 0) FROM raw;"
    done
} | PGTZ=UTC psql -X -q "$URL" -v ON_ERROR_STOP=1 >/dev/null
PGTZ=UTC psql -X -q "$URL" -v ON_ERROR_STOP=1 -f sql/eval.sql > "$OUT/coherence.csv"
python3 -m venv target/eval-venv >/dev/null 2>&1 || true
target/eval-venv/bin/python -c 'import numpy, scipy' 2>/dev/null \
    || target/eval-venv/bin/pip install --quiet numpy scipy
EVAL_SUMMARY="$OUT/summary.txt" target/eval-venv/bin/python eval/score.py "$DATA" "$OUT/coherence.csv"
echo
echo "events: $OUT/coherence.csv; headline: $OUT/summary.txt (floor in eval/floor.txt, checked by make test)"
