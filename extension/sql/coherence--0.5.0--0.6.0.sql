-- coherence 0.5.0 -> 0.6.0 (see CHANGELOG.md). Run by ALTER EXTENSION coherence UPDATE TO '0.6.0'.
-- coherence.metrics becomes a table partitioned by time (one partition a UTC day, a default
-- partition for the rest), with coherence.create_partitions(), coherence.drop_old_data() and
-- the view coherence.metrics_partitions. PostgreSQL cannot turn a table into a partitioned one,
-- so the existing table keeps every row, index and grant and becomes the partition of all time
-- up to the end of tomorrow, UTC (coherence.metrics_upgraded); no row is copied (rows stamped
-- later move to the default partition). The update scans it once, for the attach check, under
-- an exclusive lock: ingest waits for it. Also: incidents of one host closer than close_after
-- are one (coherence.correlate gains join_gap), incident members carry peer evidence
-- (coherence.correlate gains fleet), and run_detection refreshes a written series' last
-- sample and cadence from the partitions around its newest samples.
\echo Use "ALTER EXTENSION coherence UPDATE TO '0.6.0'" to load this file. \quit

-- What would silently read the old table after the rename: refuse, with what to do.
DO $check$
DECLARE
    v_deps text;
BEGIN
    SELECT pg_catalog.string_agg(DISTINCT r.ev_class::pg_catalog.regclass::text, ', ') INTO v_deps
      FROM pg_catalog.pg_depend d
      JOIN pg_catalog.pg_rewrite r ON r.oid OPERATOR(pg_catalog.=) d.objid
     WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_rewrite'::pg_catalog.regclass
       AND d.refobjid OPERATOR(pg_catalog.=) 'coherence.metrics'::pg_catalog.regclass
       AND r.ev_class OPERATOR(pg_catalog.<>) 'coherence.metrics'::pg_catalog.regclass;
    IF v_deps IS NOT NULL THEN
        RAISE EXCEPTION 'views read coherence.metrics directly: %', v_deps
            USING ERRCODE = 'dependent_objects_still_exist',
                  DETAIL = '0.6.0 replaces coherence.metrics with a table partitioned by time; these views would go on reading the old table only.',
                  HINT = 'Save their definitions (pg_get_viewdef), drop them, run ALTER EXTENSION coherence UPDATE, then create them again.';
    END IF;
    SELECT pg_catalog.string_agg(k.conname || ' on ' || k.conrelid::pg_catalog.regclass::text, ', ') INTO v_deps
      FROM pg_catalog.pg_constraint k
     WHERE k.confrelid OPERATOR(pg_catalog.=) 'coherence.metrics'::pg_catalog.regclass;
    IF v_deps IS NOT NULL THEN
        RAISE EXCEPTION 'foreign keys reference coherence.metrics: %', v_deps
            USING ERRCODE = 'dependent_objects_still_exist',
                  DETAIL = '0.6.0 partitions coherence.metrics by time; its primary key on id, which they reference, goes.',
                  HINT = 'Drop them (ALTER TABLE ... DROP CONSTRAINT ...), then run ALTER EXTENSION coherence UPDATE.';
    END IF;
    SELECT pg_catalog.string_agg(pg_catalog.quote_ident(a.attname), ', ') INTO v_deps
      FROM pg_catalog.pg_attribute a
     WHERE a.attrelid OPERATOR(pg_catalog.=) 'coherence.metrics'::pg_catalog.regclass
       AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped
       AND a.attname OPERATOR(pg_catalog.<>) ALL (ARRAY['id', 'host', 'metric_name', 'value', 'timestamp', 'created_at']::name[]);
    IF v_deps IS NOT NULL THEN
        RAISE EXCEPTION 'coherence.metrics has columns the extension did not make: %', v_deps
            USING ERRCODE = 'dependent_objects_still_exist',
                  DETAIL = 'A partition must have exactly its partitioned table''s columns.',
                  HINT = 'Copy them elsewhere if you need them, drop them (ALTER TABLE coherence.metrics DROP COLUMN ...), then run ALTER EXTENSION coherence UPDATE.';
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_inherits i
                WHERE i.inhparent OPERATOR(pg_catalog.=) 'coherence.metrics'::pg_catalog.regclass) THEN
        RAISE EXCEPTION 'coherence.metrics has inheritance children (a coordinator''s read-through?)'
            USING ERRCODE = 'dependent_objects_still_exist',
                  DETAIL = 'A partitioned table can have no inheritance children.',
                  HINT = 'On a coordinator: DROP SCHEMA fleet CASCADE; ALTER EXTENSION coherence UPDATE; then run sql/coordinator.sql again (shard data is not touched).';
    END IF;
END
$check$;

-- The old table, out of the way and out of the extension (it becomes a partition like the
-- ones coherence.create_partitions() makes, so pg_dump keeps it with its rows).
ALTER TABLE coherence.metrics RENAME TO metrics_upgraded;
ALTER TABLE coherence.metrics_upgraded RENAME CONSTRAINT metrics_series_time_key TO metrics_upgraded_series_time_key;
ALTER INDEX coherence.metrics_timestamp_brin RENAME TO metrics_upgraded_timestamp_brin;
-- A partitioned table's primary key must contain the partition key; the row key is
-- (host, metric_name, "timestamp"), and id stays a NOT NULL insertion number.
ALTER TABLE coherence.metrics_upgraded DROP CONSTRAINT metrics_pkey;
DROP TRIGGER metrics_queue_new ON coherence.metrics_upgraded;
ALTER EXTENSION coherence DROP TABLE coherence.metrics_upgraded;

CREATE TABLE coherence.metrics (
    id          bigint NOT NULL DEFAULT pg_catalog.nextval('coherence.metrics_id_seq'::pg_catalog.regclass),
    host        text NOT NULL CONSTRAINT metrics_host_check CHECK (host <> ''),
    metric_name text NOT NULL CONSTRAINT metrics_metric_name_check CHECK (metric_name <> ''),
    value       double precision NOT NULL,
    "timestamp" timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- ±infinity is no time a sample was taken; it would also poison every time range.
    CONSTRAINT metrics_times_finite CHECK (isfinite("timestamp") AND isfinite(created_at))
) PARTITION BY RANGE ("timestamp");
ALTER SEQUENCE coherence.metrics_id_seq OWNED BY coherence.metrics.id;
CREATE TABLE coherence.metrics_default PARTITION OF coherence.metrics DEFAULT;
-- Keys and indexes live on each partition, not on the parent: pg_dump cannot restore the
-- partitions of an extension's partitioned table whose own indexes reach down to them (restoring
-- the partition creates the index a second time). One row per (host, metric_name, "timestamp")
-- (ingest writes ON CONFLICT DO NOTHING: every partition's key is the arbiter; a timestamp
-- belongs to exactly one partition). The unique key serves per-series time-range scans; BRIN
-- serves "all series since T" scans of append-mostly data at a tiny size.
ALTER TABLE coherence.metrics_default
    ADD CONSTRAINT metrics_default_series_time_key UNIQUE (host, metric_name, "timestamp");
CREATE INDEX metrics_default_timestamp_brin ON coherence.metrics_default USING brin ("timestamp");
COMMENT ON TABLE coherence.metrics_default IS
    'Rows of coherence.metrics on days without a partition of their own (backfills, clocks far ahead); coherence.create_partitions() moves them into day partitions.';
COMMENT ON TABLE coherence.metrics IS
    'Metric samples, one row per (host, metric_name, timestamp); written by coherence-ingest (datadog, prometheus, simulate) or by you. Partitioned by UTC day (coherence.metrics_partitions, coherence.create_partitions, coherence.drop_old_data).';
COMMENT ON COLUMN coherence.metrics.id IS 'Insertion number (unique in practice; the row key is (host, metric_name, timestamp)).';
COMMENT ON COLUMN coherence.metrics.host IS 'Host the sample belongs to (Datadog host tag).';
COMMENT ON COLUMN coherence.metrics.metric_name IS 'Metric name as mapped in the ingest config, e.g. cpu, memory, disk.';
COMMENT ON COLUMN coherence.metrics.value IS 'Sample value; NaN and ±Infinity are stored but ignored by the detectors.';
COMMENT ON COLUMN coherence.metrics."timestamp" IS 'Time of the sample.';
COMMENT ON COLUMN coherence.metrics.created_at IS 'When the row was inserted.';
CREATE TRIGGER metrics_queue_new AFTER INSERT ON coherence.metrics
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION coherence.queue_new_metrics();
SELECT pg_catalog.pg_extension_config_dump('coherence.metrics', '');
SELECT pg_catalog.pg_extension_config_dump('coherence.metrics_default', '');

-- The old table's grants (to readers, writers, your own roles) carry over to the new one. Made
-- by this script, they count as the extension's own (initial) privileges, which pg_dump does
-- not write out; the extension's own roles get them in a fresh install too, yours are named in
-- a WARNING with the statements that make them yours again.
DO $grants$
DECLARE
    g       record;
    v_owner oid := (SELECT e.extowner FROM pg_catalog.pg_extension e WHERE e.extname OPERATOR(pg_catalog.=) 'coherence');
    v_redo  text := '';
BEGIN
    FOR g IN SELECT a.privilege_type, a.grantee,
                    CASE WHEN a.grantee OPERATOR(pg_catalog.=) 0 THEN 'PUBLIC'
                         ELSE a.grantee::pg_catalog.regrole::text END AS who
               FROM pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a
              WHERE c.oid OPERATOR(pg_catalog.=) 'coherence.metrics_upgraded'::pg_catalog.regclass
                AND a.grantee OPERATOR(pg_catalog.<>) c.relowner LOOP
        EXECUTE pg_catalog.format('GRANT %s ON coherence.metrics, coherence.metrics_default TO %s', g.privilege_type, g.who);
        IF g.grantee OPERATOR(pg_catalog.<>) v_owner AND g.who OPERATOR(pg_catalog.<>) 'coherence_reader' THEN
            v_redo := v_redo || pg_catalog.format(' REVOKE %1$s ON coherence.metrics FROM %2$s; GRANT %1$s ON coherence.metrics TO %2$s;',
                                                  g.privilege_type, g.who);
        END IF;
    END LOOP;
    IF v_redo OPERATOR(pg_catalog.<>) '' THEN
        RAISE WARNING 'your grants on coherence.metrics were carried over, but pg_dump will not keep them'
            USING DETAIL = 'Grants made by an extension''s update count as the extension''s own, which pg_dump leaves out.',
                  HINT = 'After the update, run:' || v_redo;
    END IF;
END
$grants$;

-- The old rows: the partition of all time up to the end of tomorrow (UTC); rows stamped later
-- (found through the old BRIN index) move to the default partition. An empty table is dropped.
DO $attach$
DECLARE
    v_bound timestamptz := (((now() AT TIME ZONE 'UTC')::date + 2)::timestamp AT TIME ZONE 'UTC');
    v_text  text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM coherence.metrics_upgraded) THEN
        DROP TABLE coherence.metrics_upgraded;
        RETURN;
    END IF;
    WITH later AS (DELETE FROM coherence.metrics_upgraded m WHERE m."timestamp" OPERATOR(pg_catalog.>=) v_bound RETURNING m.*)
    INSERT INTO coherence.metrics_default SELECT * FROM later;
    -- The bound as ISO text in UTC, whatever the session's DateStyle and TimeZone.
    v_text := pg_catalog.to_char(v_bound AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || '+00';
    EXECUTE pg_catalog.format('ALTER TABLE coherence.metrics ATTACH PARTITION coherence.metrics_upgraded FOR VALUES FROM (MINVALUE) TO (%L)', v_text);
    EXECUTE pg_catalog.format('COMMENT ON TABLE coherence.metrics_upgraded IS %L',
        pg_catalog.format('Rows of coherence.metrics before %s UTC, written before 0.6.0 (the old table, now a partition); coherence.drop_old_data() drops it once that is older than its cutoff.', v_text));
END
$attach$;


-- The range of one partition of coherence.metrics. PostgreSQL keeps partition bounds only as
-- an expression; its text is read back under fixed settings (ISO dates, UTC), so the session's
-- DateStyle and TimeZone (an ambiguous zone abbreviation) cannot shift or break it.
CREATE FUNCTION coherence.partition_bounds(part regclass,
                                           OUT from_at timestamptz, OUT until_at timestamptz,
                                           OUT is_default boolean)
LANGUAGE sql STABLE STRICT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
SET DateStyle = 'ISO, YMD'
SET TimeZone = 'UTC'
AS $fn$
    SELECT pg_catalog.substring(b.bound, 'FROM \(''([^'']*)''\)')::timestamptz,
           pg_catalog.substring(b.bound, 'TO \(''([^'']*)''\)')::timestamptz,
           b.bound OPERATOR(pg_catalog.=) 'DEFAULT'
      FROM (SELECT pg_catalog.pg_get_expr(c.relpartbound, c.oid) AS bound
              FROM pg_catalog.pg_class c
             WHERE c.oid OPERATOR(pg_catalog.=) part AND c.relispartition) b
$fn$;
COMMENT ON FUNCTION coherence.partition_bounds(regclass) IS
    'The range [from_at, until_at) of a partition (NULL where unbounded: MINVALUE, MAXVALUE) and whether it is the default partition; no row for a table that is not a partition. Read under ISO dates and UTC whatever the session''s settings. E.g. SELECT * FROM coherence.partition_bounds(''coherence.metrics_default'');';

-- Every partition of coherence.metrics with its range (NULL bounds: unbounded or default).
CREATE VIEW coherence.metrics_partitions AS
SELECT c.relname::text AS partition, c.oid::regclass AS relation,
       b.from_at, b.until_at, b.is_default,
       greatest(c.reltuples, 0)::bigint AS estimated_rows,
       pg_catalog.pg_total_relation_size(c.oid) AS bytes
  FROM pg_catalog.pg_inherits i
  JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) i.inhrelid
 CROSS JOIN LATERAL coherence.partition_bounds(c.oid::regclass) b
 WHERE i.inhparent OPERATOR(pg_catalog.=) 'coherence.metrics'::pg_catalog.regclass;
COMMENT ON VIEW coherence.metrics_partitions IS
    'The partitions of coherence.metrics: name, relation (schema-qualified), time range [from_at, until_at) (NULL where unbounded; is_default for coherence.metrics_default), estimated rows (from the last ANALYZE or index build) and size with indexes. E.g. SELECT partition, from_at, until_at, pg_size_pretty(bytes) FROM coherence.metrics_partitions ORDER BY from_at;';

CREATE FUNCTION coherence.create_partitions(ahead interval DEFAULT interval '3 days',
                                            backfill integer DEFAULT 0,
                                            since timestamptz DEFAULT NULL)
RETURNS TABLE (partition text, from_at timestamptz, until_at timestamptz, moved_rows bigint)
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- Attaching a partition locks the default partition exclusively: wait at most this long for
-- readers to let go (a later call tries again) rather than queue every reader behind us.
SET lock_timeout = '2s'
SET DateStyle = 'ISO, YMD'
SET TimeZone = 'UTC'
AS $fn$
DECLARE
    v_days  date[];
    v_day   date;
    v_from  timestamptz;
    v_until timestamptz;
    v_name  text;
    v_moved bigint;
    g       record;
BEGIN
    IF ahead IS NULL OR backfill IS NULL OR NOT isfinite(coalesce(since, now())) THEN
        RAISE EXCEPTION 'create_partitions: ahead and backfill must not be NULL, since must be a finite time'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'SELECT * FROM coherence.create_partitions(); makes today''s and the next 3 days'' partitions.';
    END IF;
    IF ahead < interval '0' OR ahead > interval '366 days' OR backfill < 0 OR backfill > 3660
       OR since < now() - interval '3660 days' THEN
        RAISE EXCEPTION 'ahead must be between 0 and 366 days, backfill between 0 and 3660 days, since at most 3660 days ago'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('ahead = %s, backfill = %s, since = %s', ahead, backfill, since),
                  HINT = 'Defaults: ahead 3 days, backfill 0 (days in the default partition to give their own partition, oldest first).';
    END IF;
    -- Today (UTC) (or the day of `since`, when earlier) to today + ahead, then up to
    -- `backfill` other days waiting in the default partition, oldest first.
    SELECT array_agg(d ORDER BY d) INTO v_days FROM (
        SELECT gs::date AS d
          FROM generate_series((least(coalesce(since, now()), now()) AT TIME ZONE 'UTC')::date::timestamp,
                               ((now() + ahead) AT TIME ZONE 'UTC')::date::timestamp,
                               interval '1 day') gs
        UNION
        SELECT w.d FROM (
            SELECT DISTINCT (m."timestamp" AT TIME ZONE 'UTC')::date AS d
              FROM coherence.metrics_default m
             ORDER BY 1 LIMIT backfill) w
    ) days;
    FOREACH v_day IN ARRAY v_days LOOP
        v_name := 'metrics_p' || to_char(v_day, 'YYYYMMDD');
        v_from := v_day::timestamp AT TIME ZONE 'UTC';
        v_until := (v_day + 1)::timestamp AT TIME ZONE 'UTC';
        CONTINUE WHEN to_regclass('coherence.' || quote_ident(v_name)) IS NOT NULL;
        -- A partition of another shape (the one an upgrade made of the old table, or your
        -- own) may cover the day already.
        CONTINUE WHEN EXISTS (
            SELECT 1 FROM coherence.metrics_partitions p
             WHERE NOT p.is_default
               AND coalesce(p.from_at, '-infinity') < v_until AND coalesce(p.until_at, 'infinity') > v_from);
        -- Readers and writers of the default partition wait from here to commit: keep the
        -- transaction short (the job calls this last).
        LOCK TABLE coherence.metrics_default IN ACCESS EXCLUSIVE MODE;
        -- A concurrent call may have made it while this one waited.
        CONTINUE WHEN to_regclass('coherence.' || quote_ident(v_name)) IS NOT NULL;
        EXECUTE format('CREATE TABLE coherence.%I (LIKE coherence.metrics INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', v_name);
        EXECUTE format('WITH moved AS (DELETE FROM coherence.metrics_default m
                                        WHERE m."timestamp" >= $1 AND m."timestamp" < $2 RETURNING m.*)
                        INSERT INTO coherence.%I SELECT * FROM moved', v_name)
            USING v_from, v_until;
        GET DIAGNOSTICS v_moved = ROW_COUNT;
        -- The partition's key and BRIN (the parent has none: see sql/schema.sql).
        EXECUTE format('ALTER TABLE coherence.%I ADD CONSTRAINT %I UNIQUE (host, metric_name, "timestamp")',
                       v_name, v_name || '_series_time_key');
        EXECUTE format('CREATE INDEX %I ON coherence.%I USING brin ("timestamp")', v_name || '_timestamp_brin', v_name);
        -- Bounds as ISO text in UTC (the settings above), not the caller's DateStyle.
        EXECUTE format('ALTER TABLE coherence.metrics ATTACH PARTITION coherence.%I FOR VALUES FROM (%L) TO (%L)',
                       v_name, to_char(v_from, 'YYYY-MM-DD HH24:MI:SS') || '+00', to_char(v_until, 'YYYY-MM-DD HH24:MI:SS') || '+00');
        EXECUTE format('COMMENT ON TABLE coherence.%I IS %L', v_name,
                       format('Rows of coherence.metrics of %s (UTC); made by coherence.create_partitions(), dropped by coherence.drop_old_data().', v_day));
        -- The parent's grants (TRUNCATE of the parent checks every partition).
        FOR g IN SELECT a.privilege_type, a.grantee FROM pg_class c, aclexplode(c.relacl) a
                  WHERE c.oid = 'coherence.metrics'::regclass AND a.grantee <> c.relowner LOOP
            EXECUTE format('GRANT %s ON coherence.%I TO %s', g.privilege_type, v_name,
                           CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE g.grantee::regrole::text END);
        END LOOP;
        partition := v_name;
        from_at := v_from;
        until_at := v_until;
        moved_rows := v_moved;
        RETURN NEXT;
    END LOOP;
END
$fn$;
COMMENT ON FUNCTION coherence.create_partitions(interval, integer, timestamptz) IS
    'Makes the day partitions (UTC) of coherence.metrics from today (or the day of since, when given: before a backfill) to today + ahead (default 3 days) that do not exist yet, plus up to backfill (default 0) other days whose rows wait in coherence.metrics_default, oldest first; rows of a new partition''s day move out of the default partition. Returns the partitions made. coherence.run_detection() calls it (ahead 3 days) when tomorrow''s partition is missing. Waits at most 2 s for the default partition''s lock. E.g. SELECT * FROM coherence.create_partitions(ahead => interval ''7 days'', backfill => 30); before loading 30 days of history: SELECT * FROM coherence.create_partitions(since => now() - interval ''30 days'');';
REVOKE EXECUTE ON FUNCTION coherence.create_partitions(interval, integer, timestamptz) FROM PUBLIC;

CREATE FUNCTION coherence.drop_old_data(older_than interval)
RETURNS TABLE (partition text, action text, until_at timestamptz, rows bigint)
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER STRICT
SET search_path = pg_catalog, pg_temp
-- Dropping a partition locks the parent exclusively: readers and writers queue behind the wait.
SET lock_timeout = '2s'
SET DateStyle = 'ISO, YMD'
SET TimeZone = 'UTC'
AS $fn$
DECLARE
    v_cutoff timestamptz;
    p        record;
    v_rows   bigint;
BEGIN
    IF older_than < interval '1 hour' THEN
        RAISE EXCEPTION 'older_than must be at least 1 hour'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('older_than = %s', older_than),
                  HINT = 'E.g. SELECT * FROM coherence.drop_old_data(interval ''30 days''); keeps the last 30 days of samples.';
    END IF;
    v_cutoff := now() - older_than;
    FOR p IN SELECT mp.* FROM coherence.metrics_partitions mp ORDER BY mp.from_at NULLS FIRST, mp.partition LOOP
        IF p.is_default THEN
            -- Rows of days without a partition: the old ones are deleted (the default
            -- partition is small when partitions are made ahead and before backfills).
            DELETE FROM coherence.metrics_default m WHERE m."timestamp" < v_cutoff;
            GET DIAGNOSTICS v_rows = ROW_COUNT;
            IF v_rows > 0 THEN
                partition := p.partition;
                action := 'deleted';
                until_at := v_cutoff;
                rows := v_rows;
                RETURN NEXT;
            END IF;
        ELSIF p.until_at <= v_cutoff
              AND p.relation::oid IN (SELECT c.oid FROM pg_class c
                                       WHERE c.relnamespace = 'coherence'::regnamespace
                                         AND (c.relname ~ '^metrics_p[0-9]{8}$' OR c.relname = 'metrics_upgraded')) THEN
            -- A whole day (or the old table of an update) older than the cutoff: dropped,
            -- with no DELETE and no dead rows. Partitions of other names are yours: kept.
            EXECUTE format('DROP TABLE %s', p.relation);
            partition := p.partition;
            action := 'dropped';
            until_at := p.until_at;
            rows := p.estimated_rows;
            RETURN NEXT;
        END IF;
    END LOOP;
END
$fn$;
COMMENT ON FUNCTION coherence.drop_old_data(interval) IS
    'Retention of coherence.metrics: drops the day partitions made by coherence.create_partitions (and the partition an update to 0.6.0 made of the old table) that end at least older_than (at least 1 hour) before now, and deletes older rows from the default partition. Whole days: a partition that reaches past the cutoff is kept whole; partitions of other names are left alone. Returns what it dropped (with estimated rows) or deleted (exact rows). signal_events, anomalies and incidents are kept. Takes the table''s exclusive lock for the drops (waits at most 2 s). E.g. SELECT * FROM coherence.drop_old_data(interval ''30 days'');';
REVOKE EXECUTE ON FUNCTION coherence.drop_old_data(interval) FROM PUBLIC;

-- The correlator joins incidents of one host closer than join_gap (run_detection passes its
-- close_after): a new argument, so the function is made again.
-- Members carry peer evidence; a new hypothesis.
COMMENT ON COLUMN coherence.incidents.ranking IS 'Member metrics, most likely root cause first: the metrics whose anomalies formed it [{metric, anomaly, kind, start, risk, score, evidence, peers: {moving, total} when the metric has peers}], then the host''s other metrics that deviated during it [{metric, kind: involved, score, peak_at, value, baseline}] (see docs/incidents.md).';
COMMENT ON COLUMN coherence.incidents.hypothesis IS 'Top-ranked root-cause hypothesis: resource exhaustion, memory leak, disk filling, traffic surge, telemetry stopped, correlated metric anomalies, metric anomaly, fleet-wide load or undetermined.';
DROP FUNCTION coherence.correlate(jsonb, jsonb, interval, integer);
CREATE FUNCTION coherence.correlate(
	"signals" jsonb, /* JsonB */
	"samples" jsonb DEFAULT '[]'::jsonb, /* JsonB */
	"tolerance" interval DEFAULT '5 minutes', /* Interval */
	"min_errors" INT DEFAULT 3, /* i32 */
	"join_gap" interval DEFAULT '0', /* Interval */
	"fleet" jsonb DEFAULT '{}'::jsonb /* JsonB */
) RETURNS jsonb /* JsonB */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'correlate_v6_wrapper';
COMMENT ON FUNCTION coherence.correlate(jsonb, jsonb, interval, integer, interval, jsonb) IS
    'Temporal correlator: signals (errors and anomalies, jsonb array) to incidents with causal graph, ranked hypotheses and narrative (jsonb); signals within tolerance are linked, and incidents of one host at most join_gap apart (default 0: none) are one. With fleet (how many hosts report each metric, e.g. {"cpu": 12}), members carry peer evidence: a deviation most peers show at the same time ranks lower and is called fleet-wide load. Used by run_detection (join_gap => close_after, fleet from coherence.series_state); see docs/incidents.md. E.g. SELECT jsonb_array_length(coherence.correlate(''[]''::jsonb));';
REVOKE EXECUTE ON FUNCTION coherence.correlate(jsonb, jsonb, interval, integer, interval, jsonb) FROM PUBLIC;

CREATE OR REPLACE FUNCTION coherence.run_detection(
    lookback    interval DEFAULT '48 hours',
    tolerance   interval DEFAULT '5 minutes',
    close_after interval DEFAULT '30 minutes',
    full_rescan boolean DEFAULT false
)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
-- No JIT: over a year of day partitions, compiling every partition's scan expressions took
-- longer than the scans (5 s of LLVM for a 10M-row detect), and the work is in the detectors.
SET jit = off
AS $fn$
DECLARE
    v_run        bigint;
    v_prev_now   timestamptz;
    v_new_min    timestamptz;
    v_new_max    timestamptz;
    v_since      timestamptz;
    v_until      timestamptz;
    v_data_now   timestamptz;
    v_anoms      integer := 0;
    v_opened     integer := 0;
    v_updated    integer := 0;
    v_resolved   integer := 0;
    v_signals    jsonb;
    v_coll       jsonb;
    v_samples    jsonb;
    v_incidents  jsonb;
    inc          jsonb;
    v_keep       bigint;
    v_old        coherence.incidents;
    v_first      timestamptz;
    v_last       timestamptz;
    v_top        jsonb;
    v_hosts      text[];
    v_metrics    text[];
    v_maxes      timestamptz[];
    v_fleet      jsonb;
    v_durations  boolean;
    v_rules      boolean;
    v_err        text;
    v_state      text;
    r            record;
BEGIN
    IF lookback IS NULL OR tolerance IS NULL OR close_after IS NULL OR full_rescan IS NULL THEN
        RAISE EXCEPTION 'run_detection arguments must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Call SELECT coherence.run_detection(); for the defaults.';
    END IF;
    IF lookback < interval '0' OR tolerance <= interval '0' OR close_after <= interval '0' THEN
        RAISE EXCEPTION 'lookback must be >= 0, tolerance and close_after > 0'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('lookback = %s, tolerance = %s, close_after = %s', lookback, tolerance, close_after),
                  HINT = 'Defaults: lookback 48 hours, tolerance 5 minutes, close_after 30 minutes.';
    END IF;
    -- Each statement below must see what committed before it (a REPEATABLE READ snapshot
    -- taken before the lock would miss a concurrent run's incidents and duplicate them).
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'coherence.run_detection() must run in a READ COMMITTED transaction'
            USING ERRCODE = 'invalid_transaction_state',
                  DETAIL = format('transaction_isolation is %s', current_setting('transaction_isolation')),
                  HINT = 'Call it in its own transaction at the default isolation level (pg_cron does).';
    END IF;
    -- One run at a time. A concurrent call returns at once. The lock is a table lock on
    -- coherence.detection_runs in a mode only roles that may write that table can take, so no
    -- other login can block the job.
    BEGIN
        LOCK TABLE coherence.detection_runs IN SHARE ROW EXCLUSIVE MODE NOWAIT;
    EXCEPTION WHEN lock_not_available THEN
        RAISE NOTICE 'coherence.run_detection() is already running; this call does nothing';
        RETURN jsonb_build_object('skipped', 'already running');
    END;

    SELECT data_now INTO v_prev_now FROM coherence.detection_runs
     WHERE data_now IS NOT NULL ORDER BY id DESC LIMIT 1;
    INSERT INTO coherence.detection_runs DEFAULT VALUES RETURNING id INTO v_run;

    -- Per-series settings are looked up only when there are rules.
    v_rules := EXISTS (SELECT 1 FROM coherence.series_rules);
    -- The work, in a subtransaction: a failure (a revoked privilege, a full disk, ...) rolls
    -- the work back, keeps the queue for the next run and is recorded in detection_runs, where
    -- coherence.health() finds it. A cancel or statement_timeout is not caught.
    BEGIN
    -- New data: the queue filled by the tables' insert triggers. Deleting it here makes the
    -- run's claim atomic with its results; rows of transactions that commit later are queued
    -- later and analysed by a later run.
    WITH q AS (DELETE FROM coherence.pending_series RETURNING host, metric, min_ts, max_ts),
         k AS (SELECT q.host, q.metric, max(q.max_ts) AS max_ts FROM q GROUP BY q.host, q.metric)
    SELECT (SELECT min(q.min_ts) FROM q), (SELECT max(q.max_ts) FROM q),
           (SELECT array_agg(k.host ORDER BY k.host, k.metric) FROM k),
           (SELECT array_agg(k.metric ORDER BY k.host, k.metric) FROM k),
           (SELECT array_agg(k.max_ts ORDER BY k.host, k.metric) FROM k)
      INTO v_new_min, v_new_max, v_hosts, v_metrics, v_maxes;
    IF full_rescan OR v_prev_now IS NULL THEN
        SELECT array_agg(k.host), array_agg(k.metric_name), NULL INTO v_hosts, v_metrics, v_maxes
          FROM (SELECT DISTINCT m.host, m.metric_name FROM coherence.metrics m) k;
    END IF;
    -- The written series' last sample and cadence (for no-data detection and series_health):
    -- the latest 33 samples, looked for first between 40 of its intervals (1 hour to 2 days)
    -- before the newest queued one and the newest seen (the other partitions are pruned), and
    -- in the whole table only for series with fewer there (new series, gaps, the first run).
    -- Rows committed after the queue was claimed are the next run's.
    INSERT INTO coherence.series_state AS s (host, metric, last_at, last_value, cadence, updated_at)
    WITH k AS (
        SELECT u.host, u.metric, u.max_ts, st.last_at AS prev_last, st.cadence
          FROM unnest(v_hosts, v_metrics, v_maxes) AS u(host, metric, max_ts)
          LEFT JOIN coherence.series_state st ON st.host = u.host AND st.metric = u.metric
    ), recent AS (
        SELECT k.host, k.metric, l.*
          FROM k CROSS JOIN LATERAL (
               SELECT max(t.ts) AS last_at, (array_agg(t.value ORDER BY t.ts DESC))[1] AS last_value,
                      array_agg(t.ts) AS ts, count(*) AS n
                 FROM (SELECT m."timestamp" AS ts, m.value FROM coherence.metrics m
                        WHERE m.host = k.host AND m.metric_name = k.metric
                          -- (no bound near the lowest timestamp: the arithmetic would fail)
                          AND m."timestamp" >= CASE WHEN k.max_ts >= '1000-01-01 00:00+00'::timestamptz
                                                    THEN k.max_ts - least(greatest(40 * least(k.cadence, interval '2 days'), interval '1 hour'),
                                                                          interval '2 days') END
                          AND m."timestamp" <= greatest(k.max_ts, k.prev_last)
                        ORDER BY m."timestamp" DESC LIMIT 33) t) l
    ), latest AS (
        SELECT rc.host, rc.metric, rc.last_at, rc.last_value, rc.ts FROM recent rc WHERE rc.n = 33
        UNION ALL
        SELECT rc.host, rc.metric, l.last_at, l.last_value, l.ts
          FROM recent rc CROSS JOIN LATERAL (
               SELECT max(t.ts) AS last_at, (array_agg(t.value ORDER BY t.ts DESC))[1] AS last_value,
                      array_agg(t.ts) AS ts
                 FROM (SELECT m."timestamp" AS ts, m.value FROM coherence.metrics m
                        WHERE m.host = rc.host AND m.metric_name = rc.metric
                        ORDER BY m."timestamp" DESC LIMIT 33) t) l
         WHERE rc.n < 33
    )
    SELECT l.host, l.metric, l.last_at, l.last_value, coherence.series_cadence(l.ts), now()
      FROM latest l
     WHERE l.last_at IS NOT NULL
    ON CONFLICT (host, metric) DO UPDATE
       SET last_at = excluded.last_at, last_value = excluded.last_value, cadence = excluded.cadence,
           updated_at = excluded.updated_at
     WHERE (s.last_at, s.last_value, s.cadence) IS DISTINCT FROM
           (excluded.last_at, excluded.last_value, excluded.cadence);
    IF full_rescan OR v_prev_now IS NULL THEN
        -- Everything (first run, or asked): one pass over the tables' finite times.
        SELECT least((SELECT min("timestamp") FROM coherence.metrics WHERE isfinite("timestamp")),
                     (SELECT min(ts) FROM coherence.signal_events WHERE isfinite(ts))),
               greatest((SELECT max("timestamp") FROM coherence.metrics WHERE isfinite("timestamp")),
                        (SELECT max(ts) FROM coherence.signal_events WHERE isfinite(ts)))
          INTO v_new_min, v_new_max;
        v_since := v_new_min;
    ELSE
        v_since := v_new_min - lookback;
    END IF;
    -- Data time: the newest sample any run has seen (incidents resolve against it). Samples
    -- stamped more than a day ahead of the database clock do not advance it: one skewed clock
    -- must not resolve every open incident.
    -- (least() ignores NULLs: with nothing new the cap must not become the data time.)
    v_data_now := greatest(v_prev_now,
                           CASE WHEN v_new_max IS NOT NULL THEN least(v_new_max, now() + interval '1 day') END);

    -- Analysable range: samples before year 1000 (lookback arithmetic near PostgreSQL's
    -- lower limit would fail every run) and after data time (far-future stamps) are not
    -- analysed; a queue holding only such rows analyses nothing.
    -- (greatest() ignores NULLs too: nothing new must stay nothing.)
    IF v_new_min IS NOT NULL THEN
        v_new_min := greatest(v_new_min, '1000-01-01 00:00+00'::timestamptz);
        v_since := greatest(v_since, '1000-01-01 00:00+00'::timestamptz - lookback);
        IF v_data_now IS NULL OR v_new_min > v_data_now THEN
            v_new_min := NULL;
            v_since := NULL;
        END IF;
    END IF;
    IF v_new_min IS NOT NULL THEN
        v_until := v_data_now + interval '1 microsecond';

        -- Collective anomalies first, on their own: a host too large for them (out of
        -- memory, array limits) costs its collective events, with a WARNING, not the run.
        BEGIN
            SELECT coalesce(jsonb_agg(to_jsonb(c)), '[]'::jsonb) INTO v_coll
              FROM coherence.detect_collective(v_new_min, v_until, v_new_min - v_since) c;
        EXCEPTION WHEN out_of_memory OR program_limit_exceeded OR array_subscript_error THEN
            RAISE WARNING 'coherence.run_detection(): collective anomalies skipped: %', SQLERRM
                USING HINT = 'A host has more samples in the lookback than this backend can analyse together; shorten lookback or raise the memory limit.';
            v_coll := '[]'::jsonb;
        END;

        -- 1. Anomalies: insert new, update grown ones, leave unchanged ones untouched.
        WITH ev AS (
            SELECT d.* FROM coherence.detect_events(v_new_min, v_until, v_new_min - v_since, 0) d
              LEFT JOIN LATERAL (SELECT * FROM coherence.series_settings(d.host, d.metric) WHERE v_rules) st ON true
             WHERE d.risk >= coalesce(st.min_risk, coherence.default_min_risk())
                -- Context of an error burst: a robust event on the host that ends at most
                -- `tolerance` before an error is kept whatever its risk (routine for the series
                -- alone, it still explains the burst; the burst is the news).
                OR (d.detector = 'robust' AND EXISTS (
                       SELECT 1 FROM coherence.signal_events e
                        WHERE e.host = d.host AND e.severity = 'error'
                          AND e.ts >= d.started_at AND e.ts <= d.ended_at + tolerance))
            UNION ALL
            -- Metrics of a host moving together (one row per member metric).
            SELECT c.host, c.metric, c.detector, c.kind, c.started_at, c.ended_at, c.peak_at,
                   c.peak_value, c.baseline, c.score, c.risk, c.summary
              FROM jsonb_to_recordset(v_coll) AS c(host text, metric text, detector text, kind text,
                   started_at timestamptz, ended_at timestamptz, peak_at timestamptz,
                   peak_value double precision, baseline double precision, score double precision,
                   risk double precision, summary text)
              LEFT JOIN LATERAL (SELECT * FROM coherence.series_settings(c.host, c.metric) WHERE v_rules) st ON true
             WHERE (st.detectors IS NULL OR 'collective' = ANY (st.detectors))
               AND c.risk >= coalesce(st.min_risk, 0)
            UNION ALL
            -- Series that stopped reporting, against their own cadence, at data time (never
            -- ahead of the clock: a host whose clock runs fast must not silence the others).
            SELECT s.host, s.metric, n.detector, n.kind, n.started_at, n.ended_at, n.peak_at,
                   n.peak_value, n.baseline, n.score, n.risk, n.summary
              FROM coherence.series_state s
             CROSS JOIN LATERAL coherence.no_data_event(s.host, s.metric, s.last_at, s.last_value,
                                                        s.cadence, least(v_data_now, now())) n
              LEFT JOIN LATERAL (SELECT * FROM coherence.series_settings(s.host, s.metric) WHERE v_rules) st ON true
             WHERE s.cadence IS NOT NULL
               AND (st.detectors IS NULL OR 'no_data' = ANY (st.detectors))
               AND n.risk >= coalesce(st.min_risk, coherence.default_min_risk())
        ), one AS (
            -- One row per key (an upsert may touch a row once): the strongest.
            SELECT DISTINCT ON (host, metric, detector, started_at) * FROM ev
             ORDER BY host, metric, detector, started_at, risk DESC, ended_at DESC
        ), up AS (
            INSERT INTO coherence.anomalies AS a
                   (host, metric, detector, kind, started_at, ended_at, peak_at, peak_value,
                    baseline, score, risk, summary)
            SELECT host, metric, detector, kind, started_at, ended_at, peak_at, peak_value,
                   baseline, score, risk, summary FROM one
             ORDER BY started_at, host, metric, detector
            ON CONFLICT (host, metric, detector, started_at) DO UPDATE
               SET kind = excluded.kind, ended_at = excluded.ended_at, peak_at = excluded.peak_at,
                   peak_value = excluded.peak_value, baseline = excluded.baseline,
                   score = excluded.score, risk = excluded.risk, summary = excluded.summary,
                   updated_at = now()
             WHERE (a.kind, a.ended_at, a.peak_at, a.peak_value, a.baseline, a.score, a.risk, a.summary)
                   IS DISTINCT FROM
                   (excluded.kind, excluded.ended_at, excluded.peak_at, excluded.peak_value,
                    excluded.baseline, excluded.score, excluded.risk, excluded.summary)
            RETURNING 1
        )
        SELECT count(*) INTO v_anoms FROM up;

        -- 2. Correlate anomalies and error events of the range. Anomalies shorter than their
        --    series' min_duration (coherence.series_rules) are recorded but join no incident.
        v_durations := EXISTS (SELECT 1 FROM coherence.series_rules WHERE min_duration > interval '0');
        SELECT coalesce(jsonb_agg(s), '[]'::jsonb) INTO v_signals FROM (
            SELECT 'anomaly:' || a.id AS id, a.host, 'anomaly' AS kind, a.metric,
                   a.kind AS anomaly_kind,
                   (extract(epoch FROM a.started_at) * 1e6)::bigint AS start,
                   (extract(epoch FROM a.ended_at) * 1e6)::bigint AS "end",
                   (extract(epoch FROM a.peak_at) * 1e6)::bigint AS peak_at,
                   a.peak_value, a.risk, a.baseline,
                   coherence.metric_unit(a.metric) AS unit, a.score
              FROM coherence.anomalies a
             WHERE a.ended_at >= v_since AND a.started_at < v_until
               AND (NOT v_durations OR NOT EXISTS (
                       SELECT 1 FROM coherence.series_settings(a.host, a.metric) st
                        WHERE a.ended_at - a.started_at < st.min_duration))
            UNION ALL
            SELECT 'error:' || e.id, e.host, 'error', coalesce(e.metric, 'error'), '',
                   (extract(epoch FROM e.ts) * 1e6)::bigint, (extract(epoch FROM e.ts) * 1e6)::bigint,
                   (extract(epoch FROM e.ts) * 1e6)::bigint, 0, 0, NULL, '', NULL
              FROM coherence.signal_events e
             WHERE e.severity = 'error' AND e.ts >= v_since AND e.ts < v_until
        ) s;
        -- Values of leaking metrics at each error, for "Memory at 87.61% (leak progression)".
        SELECT coalesce(jsonb_agg(jsonb_build_object('host', x.host, 'metric', x.metric,
                   'ts', (extract(epoch FROM x.ts) * 1e6)::bigint, 'value', x.value)), '[]'::jsonb)
          INTO v_samples
          FROM (SELECT DISTINCT e.host, l.metric, m."timestamp" AS ts, m.value
                  FROM coherence.signal_events e
                  JOIN (SELECT DISTINCT host, metric FROM coherence.anomalies
                         WHERE kind = 'leak' AND ended_at >= v_since AND started_at < v_until) l
                    ON l.host = e.host
                 CROSS JOIN LATERAL (
                       SELECT mm."timestamp", mm.value FROM coherence.metrics mm
                        WHERE mm.host = e.host AND mm.metric_name = l.metric AND mm."timestamp" <= e.ts
                        ORDER BY mm."timestamp" DESC LIMIT 1) m
                 WHERE e.severity = 'error' AND e.ts >= v_since AND e.ts < v_until) x;
        -- Incidents of a host closer than close_after are one: an incident is open until quiet
        -- that long, and what forms on its host meanwhile belongs to it.
        -- The fleet: how many hosts reported each metric in the range (peers for ranking).
        SELECT coalesce(jsonb_object_agg(f.metric, f.hosts), '{}'::jsonb) INTO v_fleet
          FROM (SELECT s.metric, count(*) AS hosts FROM coherence.series_state s
                 WHERE s.last_at >= v_since GROUP BY s.metric) f;
        v_incidents := coherence.correlate(v_signals, v_samples, tolerance, join_gap => close_after,
                                           fleet => v_fleet);

        -- 3. Upsert incidents: a computed incident updates the oldest stored one it overlaps
        --    (the others are marked merged), or opens a new one.
        FOR inc IN SELECT * FROM jsonb_array_elements(v_incidents) LOOP
            v_first := to_timestamp((inc->>'opened_at')::double precision / 1e6);
            v_last := to_timestamp((inc->>'last_signal_at')::double precision / 1e6);
            v_top := inc->'hypotheses'->0;
            SELECT * INTO v_old FROM coherence.incidents i
             WHERE i.host = inc->>'host' AND i.status <> 'merged'
               AND i.opened_at <= v_last + tolerance AND i.last_signal_at >= v_first - tolerance
             ORDER BY i.id LIMIT 1;
            IF NOT FOUND THEN
                INSERT INTO coherence.incidents
                       (host, opened_at, first_error_at, last_signal_at, error_count, risk,
                        hypothesis, confidence, hypotheses, narrative, signals, context, graph,
                        ranking)
                VALUES (inc->>'host', v_first,
                        to_timestamp((inc->>'first_error_at')::double precision / 1e6), v_last,
                        (inc->>'error_count')::int, (inc->>'risk')::double precision,
                        v_top->>'cause', (v_top->>'confidence')::double precision,
                        inc->'hypotheses', inc->>'narrative', inc->'signal_ids', inc->'context_ids',
                        inc->'edges',
                        -- The correlator's ranking, then the host's other involved metrics.
                        (inc->'ranking') || coherence.incident_involved(inc->>'host', v_first, v_last,
                            ARRAY(SELECT e->>'metric' FROM jsonb_array_elements(inc->'ranking') e)))
                RETURNING id INTO v_keep;
                v_opened := v_opened + 1;
                PERFORM pg_notify('coherence_incidents', jsonb_build_object(
                    'event', 'opened', 'id', v_keep, 'host', inc->>'host',
                    'risk', (inc->>'risk')::double precision, 'previous_risk', NULL,
                    'hypothesis', v_top->>'cause', 'opened_at', v_first, 'status', 'open')::text);
            ELSE
                v_keep := v_old.id;
                UPDATE coherence.incidents i
                   SET opened_at = least(v_old.opened_at, v_first),
                       first_error_at = least(i.first_error_at,
                                              to_timestamp((inc->>'first_error_at')::double precision / 1e6)),
                       last_signal_at = greatest(v_old.last_signal_at, v_last),
                       error_count = (inc->>'error_count')::int,
                       risk = (inc->>'risk')::double precision,
                       hypothesis = v_top->>'cause',
                       confidence = (v_top->>'confidence')::double precision,
                       hypotheses = inc->'hypotheses', narrative = inc->>'narrative',
                       signals = inc->'signal_ids', context = inc->'context_ids', graph = inc->'edges',
                       ranking = (inc->'ranking') || coherence.incident_involved(inc->>'host',
                           least(v_old.opened_at, v_first), greatest(v_old.last_signal_at, v_last),
                           ARRAY(SELECT e->>'metric' FROM jsonb_array_elements(inc->'ranking') e)),
                       status = CASE WHEN v_last > v_old.last_signal_at THEN 'open' ELSE i.status END,
                       resolved_at = CASE WHEN v_last > v_old.last_signal_at THEN NULL ELSE i.resolved_at END,
                       updated_at = now()
                 WHERE i.id = v_keep
                   AND (i.opened_at, i.last_signal_at, i.error_count, i.risk, i.hypothesis, i.confidence,
                        i.narrative, i.signals, i.context, i.graph,
                        -- (the involved metrics appended to the stored ranking are not compared:
                        -- they are recomputed only when the incident changes)
                        (SELECT coalesce(jsonb_agg(rk.entry ORDER BY rk.pos), '[]'::jsonb)
                           FROM jsonb_array_elements(i.ranking) WITH ORDINALITY rk(entry, pos)
                          WHERE rk.entry->>'kind' IS DISTINCT FROM 'involved'))
                       IS DISTINCT FROM
                       (least(v_old.opened_at, v_first), greatest(v_old.last_signal_at, v_last),
                        (inc->>'error_count')::int, (inc->>'risk')::double precision, v_top->>'cause',
                        (v_top->>'confidence')::double precision, inc->>'narrative',
                        inc->'signal_ids', inc->'context_ids', inc->'edges', inc->'ranking');
                IF FOUND THEN
                    v_updated := v_updated + 1;
                    IF v_old.risk IS DISTINCT FROM (inc->>'risk')::double precision THEN
                        PERFORM pg_notify('coherence_incidents', jsonb_build_object(
                            'event', 'updated', 'id', v_keep, 'host', inc->>'host',
                            'risk', (inc->>'risk')::double precision, 'previous_risk', v_old.risk,
                            'hypothesis', v_top->>'cause', 'opened_at', v_first, 'status', 'open')::text);
                    END IF;
                END IF;
                -- Other stored incidents this one now covers are merged into it.
                UPDATE coherence.incidents i
                   SET status = 'merged', merged_into = v_keep, updated_at = now()
                 WHERE i.host = inc->>'host' AND i.status <> 'merged' AND i.id <> v_keep
                   AND i.opened_at <= v_last + tolerance AND i.last_signal_at >= v_first - tolerance;
            END IF;
            -- The causal graph, rewritten only when it changed.
            IF NOT EXISTS (SELECT 1 FROM coherence.incident_edges WHERE incident_id = v_keep)
               OR (SELECT graph FROM coherence.incidents WHERE id = v_keep) IS DISTINCT FROM
                  (SELECT coalesce(jsonb_agg(jsonb_build_object('cause', cause, 'effect', effect,
                          'lag_secs', extract(epoch FROM lag)::double precision, 'strength', strength)
                          ORDER BY cause, effect), '[]'::jsonb)
                     FROM coherence.incident_edges WHERE incident_id = v_keep) THEN
                DELETE FROM coherence.incident_edges WHERE incident_id = v_keep;
                INSERT INTO coherence.incident_edges (incident_id, cause, effect, lag, strength)
                SELECT v_keep, e->>'cause', e->>'effect',
                       make_interval(secs => (e->>'lag_secs')::double precision),
                       (e->>'strength')::double precision
                  FROM jsonb_array_elements(inc->'edges') e
                ON CONFLICT DO NOTHING;
                UPDATE coherence.incidents SET graph = (
                    SELECT coalesce(jsonb_agg(jsonb_build_object('cause', cause, 'effect', effect,
                           'lag_secs', extract(epoch FROM lag)::double precision, 'strength', strength)
                           ORDER BY cause, effect), '[]'::jsonb)
                      FROM coherence.incident_edges WHERE incident_id = v_keep)
                 WHERE id = v_keep;
            END IF;
        END LOOP;
    END IF;

    -- 4. Mutes: an open incident whose signals all fall in a maintenance window is muted (before
    --    resolving, so one opened and resolved by this run is muted too); windows added or
    --    changed since the last run take effect here.
    UPDATE coherence.incidents i
       SET muted_by = m.window_id, updated_at = now()
      FROM (SELECT o.id, coherence.muting_window(o.host, o.opened_at, o.last_signal_at) AS window_id
              FROM coherence.incidents o WHERE o.status = 'open') m
     WHERE i.id = m.id AND i.muted_by IS DISTINCT FROM m.window_id;

    -- 5. Resolve incidents with no signal for close_after (in data time).
    FOR r IN
        UPDATE coherence.incidents i
           SET status = 'resolved', resolved_at = now(), updated_at = now()
         WHERE i.status = 'open' AND i.last_signal_at < v_data_now - close_after
        RETURNING i.id, i.host, i.risk, i.hypothesis, i.opened_at
    LOOP
        v_resolved := v_resolved + 1;
        PERFORM pg_notify('coherence_incidents', jsonb_build_object(
            'event', 'resolved', 'id', r.id, 'host', r.host, 'risk', r.risk, 'previous_risk', r.risk,
            'hypothesis', r.hypothesis, 'opened_at', r.opened_at, 'status', 'resolved')::text);
    END LOOP;
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS v_err = MESSAGE_TEXT, v_state = RETURNED_SQLSTATE;
        UPDATE coherence.detection_runs
           SET finished_at = clock_timestamp(), error = v_err, error_sqlstate = v_state
         WHERE id = v_run;
        RAISE WARNING 'coherence.run_detection() failed: %', v_err
            USING DETAIL = format('SQLSTATE %s; run %s recorded the error, its work was rolled back and the queued data is kept for the next run.', v_state, v_run),
                  HINT = 'SELECT * FROM coherence.health(); shows it until a run succeeds.';
        RETURN jsonb_build_object('run', v_run, 'error', v_err, 'sqlstate', v_state);
    END;

    UPDATE coherence.detection_runs
       SET finished_at = clock_timestamp(), data_now = v_data_now,
           since = CASE WHEN v_new_min IS NOT NULL THEN v_since END,
           until = v_until, anomalies_changed = v_anoms, incidents_opened = v_opened,
           incidents_updated = v_updated, incidents_resolved = v_resolved
     WHERE id = v_run;

    -- Partitions of the days ahead, last: attaching one locks the default partition until
    -- this transaction commits. Nothing to do (a catalog lookup) on most runs.
    BEGIN
        -- Tomorrow's partition by its name first (a lookup), then by range.
        IF to_regclass('coherence.metrics_p' || to_char((now() + interval '1 day') AT TIME ZONE 'UTC', 'YYYYMMDD')) IS NULL THEN
            IF NOT EXISTS (SELECT 1 FROM coherence.metrics_partitions p
                            WHERE NOT p.is_default AND coalesce(p.from_at, '-infinity') <= now() + interval '1 day'
                              AND coalesce(p.until_at, 'infinity') > now() + interval '1 day') THEN
                PERFORM coherence.create_partitions();
            END IF;
        END IF;
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS v_err = MESSAGE_TEXT, v_state = RETURNED_SQLSTATE;
        RAISE WARNING 'coherence.run_detection(): partitions ahead not made: %', v_err
            USING DETAIL = format('SQLSTATE %s; the detection run itself succeeded, the next run tries again.', v_state),
                  HINT = 'Rows of days without a partition wait in coherence.metrics_default; SELECT * FROM coherence.create_partitions(); makes them.';
    END;
    RETURN jsonb_build_object('run', v_run, 'since', v_since, 'until', v_until,
        'anomalies_changed', v_anoms, 'incidents_opened', v_opened,
        'incidents_updated', v_updated, 'incidents_resolved', v_resolved);
END
$fn$;
COMMENT ON FUNCTION coherence.run_detection(interval, interval, interval, boolean) IS
    'The scheduled job: detects events over the data queued in coherence.pending_series since the last run (plus lookback) with per-series settings (coherence.series_rules), persists coherence.anomalies (including no_data for series that stopped reporting), correlates them with error events into coherence.incidents, mutes incidents in maintenance windows, resolves quiet incidents, NOTIFY coherence_incidents on open/risk change/resolve. Idempotent; READ COMMITTED only; a call while another runs returns {"skipped": "already running"} at once; a failure is recorded (coherence.health()) and returned as {"error": ...} with a WARNING. Schedule: SELECT cron.schedule(''coherence-detect'', ''*/15 * * * *'', ''SELECT coherence.run_detection()'');';

-- No JIT in the functions that scan coherence.metrics: over many day partitions, compiling
-- every partition's scan expressions took longer than the scans.
ALTER FUNCTION coherence.detect(timestamptz, timestamptz) SET jit = off;
ALTER FUNCTION coherence.detect_events(timestamptz, timestamptz, interval, double precision) SET jit = off;
ALTER FUNCTION coherence.detect_collective(timestamptz, timestamptz, interval, double precision) SET jit = off;
ALTER FUNCTION coherence.incident_involved(text, timestamptz, timestamptz, text[]) SET jit = off;
ALTER FUNCTION coherence.expected_band(text, text, timestamptz, timestamptz, interval) SET jit = off;

GRANT SELECT ON coherence.metrics_partitions TO coherence_reader;
-- As in a fresh install: the extension's owner runs the job, which makes the partitions.
DO $grant$
DECLARE
    v_owner text := (SELECT e.extowner::pg_catalog.regrole::text FROM pg_catalog.pg_extension e
                      WHERE e.extname OPERATOR(pg_catalog.=) 'coherence');
BEGIN
    EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION coherence.create_partitions(interval, integer, timestamptz), coherence.drop_old_data(interval), coherence.correlate(jsonb, jsonb, interval, integer, interval, jsonb) TO %s', v_owner);
    EXECUTE pg_catalog.format('GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA coherence TO %s', v_owner);
END
$grant$;
