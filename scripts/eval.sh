#!/usr/bin/env bash
# make eval: load the labelled cloud-monitoring series into a scratch database, run
# coherence.detect_events in the database, and score it next to the seed's rules localized.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${EVAL_DATA:-eval/cloud-monitoring/data}
DB=coherence_eval
scripts/pg.sh start
if [ -n "${DATABASE_URL:-}" ]; then
    URL=$DATABASE_URL
    psql -X -q "$URL" -v ON_ERROR_STOP=1 -c "SET client_min_messages = warning; CREATE EXTENSION IF NOT EXISTS coherence" >/dev/null
else
    psql -X -q "$(scripts/pg.sh url postgres)" -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
    URL=$(scripts/pg.sh url "$DB")
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
        echo "INSERT INTO coherence_eval.points SELECT '$folder', '$file', (ts || CASE WHEN ts ~ '(Z|[+-]\\d\\d(:?\\d\\d)?)\$' THEN '' ELSE 'Z' END)::timestamptz, value::float8, coalesce(nullif(label, '')::int, 0) FROM raw;"
    done
} | PGTZ=UTC psql -X -q "$URL" -v ON_ERROR_STOP=1 >/dev/null
PGTZ=UTC psql -X -q "$URL" -v ON_ERROR_STOP=1 -f sql/eval.sql
