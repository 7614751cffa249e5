-- Time partitions of coherence.metrics and retention (docs/operations.md "Partitions and
-- retention"). coherence.metrics is range-partitioned on "timestamp": one partition per UTC
-- day, named metrics_pYYYYMMDD, plus the default partition coherence.metrics_default for rows
-- of days that have none yet. Detection reads only the partitions of the range it analyses.

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
