#!/usr/bin/env bash
# scripts/db_guard.sh CONNINFO OWNER: refuse (exit 3) to let OWNER (make eval, make bench) load,
# truncate or drop a database that holds data which is not its own.
#
# A database is OWNER's when its comment is OWNER's mark (set here on every database OWNER may
# use). Otherwise it may be used only when it is empty: no table outside the system schemas,
# the extensions' own tables and the schemas OWNER names (SCHEMAS: space-separated, e.g.
# coherence_eval), and in coherence.metrics / coherence.signal_events nothing but the flight
# simulator's rows (hosts host-*, events from source 'simulator'), which can be made again.
# On success the database gets OWNER's mark. COHERENCE_OVERWRITE_DB=1 skips the check.
set -euo pipefail
conn=$1 owner=$2
schemas=${SCHEMAS:-}
mark="Scratch database of $owner (Coherence): its data is loaded, truncated and dropped by $owner."
q() { psql -X -q -v ON_ERROR_STOP=1 -tA "$conn" -c "$1"; }
comment=$(q "SELECT coalesce(shobj_description(oid, 'pg_database'), '') FROM pg_database WHERE datname = current_database()")
if [ "$comment" != "$mark" ] && [ "${COHERENCE_OVERWRITE_DB:-}" != 1 ]; then
    own=$(printf "'%s'," $schemas)
    tables=$(q "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE c.relkind IN ('r', 'p', 'm', 'f')
                   AND n.nspname NOT IN ('pg_catalog', 'information_schema', ${own}'')
                   AND n.nspname NOT LIKE 'pg\_%'
                   AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                                      AND d.objid = c.oid AND d.deptype = 'e')")
    rows=0
    if [ "$(q "SELECT to_regclass('coherence.metrics') IS NOT NULL")" = t ]; then
        rows=$(q "SELECT (SELECT count(*) FROM (SELECT 1 FROM coherence.metrics WHERE host !~ '^host-' LIMIT 1000) m)
                       + (SELECT count(*) FROM (SELECT 1 FROM coherence.signal_events WHERE source IS DISTINCT FROM 'simulator' LIMIT 1000) e)")
    fi
    if [ "$tables" != 0 ] || [ "$rows" != 0 ]; then
        db=$(q "SELECT current_database()")
        {
            echo "$owner: refusing to use database '$db': it holds data that is not $owner's"
            echo "  ($tables table(s) of its own, $rows+ rows in coherence.metrics/signal_events that the simulator did not write)."
            echo "  $owner loads, truncates or drops the database it uses. Point it at an empty database, or set"
            echo "  COHERENCE_OVERWRITE_DB=1 to use this one anyway."
        } >&2
        exit 3
    fi
fi
[ "$comment" = "$mark" ] || q "COMMENT ON DATABASE \"$(q "SELECT current_database()")\" IS '$mark'" >/dev/null
