-- Time partitions of coherence.metrics and retention (docs/operations.md "Partitions and
-- retention"). coherence.metrics is range-partitioned on "timestamp": one partition per UTC
-- day, named metrics_pYYYYMMDD, plus the default partition coherence.metrics_default for rows
-- of days that have none yet. Detection reads only the partitions of the range it analyses.

-- Every partition of coherence.metrics with its range (NULL bounds: unbounded or default).
CREATE VIEW coherence.metrics_partitions AS
WITH p AS (
    SELECT c.oid, c.relname, c.reltuples, pg_catalog.pg_get_expr(c.relpartbound, c.oid) AS bound
      FROM pg_catalog.pg_inherits i
      JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) i.inhrelid
     WHERE i.inhparent OPERATOR(pg_catalog.=) 'coherence.metrics'::pg_catalog.regclass
)
SELECT p.relname::text AS partition,
       pg_catalog.substring(p.bound, 'FROM \(''([^'']*)''\)')::timestamptz AS from_at,
       pg_catalog.substring(p.bound, 'TO \(''([^'']*)''\)')::timestamptz AS until_at,
       p.bound OPERATOR(pg_catalog.=) 'DEFAULT' AS is_default,
       greatest(p.reltuples, 0)::bigint AS estimated_rows,
       pg_catalog.pg_total_relation_size(p.oid) AS bytes
  FROM p;
COMMENT ON VIEW coherence.metrics_partitions IS
    'The partitions of coherence.metrics: name, time range [from_at, until_at) (NULL where unbounded; is_default for coherence.metrics_default), estimated rows (from the last ANALYZE) and size with indexes. E.g. SELECT partition, from_at, until_at, bytes FROM coherence.metrics_partitions ORDER BY from_at;';

CREATE FUNCTION coherence.create_partitions(ahead interval DEFAULT interval '3 days',
                                            backfill integer DEFAULT 0)
RETURNS TABLE (partition text, from_at timestamptz, until_at timestamptz, moved_rows bigint)
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- Attaching a partition locks the default partition exclusively: wait at most this long for
-- readers to let go (a later call tries again) rather than queue every reader behind us.
SET lock_timeout = '2s'
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
    IF ahead IS NULL OR backfill IS NULL THEN
        RAISE EXCEPTION 'create_partitions arguments must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'SELECT * FROM coherence.create_partitions(); makes today''s and the next 3 days'' partitions.';
    END IF;
    IF ahead < interval '0' OR ahead > interval '366 days' OR backfill < 0 OR backfill > 3660 THEN
        RAISE EXCEPTION 'ahead must be between 0 and 366 days, backfill between 0 and 3660 days'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('ahead = %s, backfill = %s', ahead, backfill),
                  HINT = 'Defaults: ahead 3 days, backfill 0 (days in the default partition to give their own partition, oldest first).';
    END IF;
    -- Today (UTC) to today + ahead, then up to `backfill` other days waiting in the default
    -- partition, oldest first.
    SELECT array_agg(d ORDER BY d) INTO v_days FROM (
        SELECT gs::date AS d
          FROM generate_series((now() AT TIME ZONE 'UTC')::date::timestamp,
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
        EXECUTE format('ALTER TABLE coherence.metrics ATTACH PARTITION coherence.%I FOR VALUES FROM (%L) TO (%L)',
                       v_name, v_from, v_until);
        EXECUTE format('COMMENT ON TABLE coherence.%I IS %L', v_name,
                       format('Rows of coherence.metrics of %s (UTC); made by coherence.create_partitions(), dropped by coherence.drop_old_data().', v_day));
        -- The parent's grants (TRUNCATE of the parent checks every partition).
        FOR g IN SELECT a.privilege_type, a.grantee FROM pg_class c, aclexplode(c.relacl) a
                  WHERE c.oid = 'coherence.metrics'::regclass AND a.grantee <> c.relowner LOOP
            EXECUTE format('GRANT %s ON coherence.%I TO %s', g.privilege_type, v_name,
                           CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(g.grantee::regrole::text) END);
        END LOOP;
        partition := v_name;
        from_at := v_from;
        until_at := v_until;
        moved_rows := v_moved;
        RETURN NEXT;
    END LOOP;
END
$fn$;
COMMENT ON FUNCTION coherence.create_partitions(interval, integer) IS
    'Makes the day partitions (UTC) of coherence.metrics from today to today + ahead (default 3 days) that do not exist yet, plus up to backfill (default 0) other days whose rows wait in coherence.metrics_default, oldest first; rows of a new partition''s day move out of the default partition. Returns the partitions made. coherence.run_detection() calls it (ahead 3 days) when tomorrow''s partition is missing. Waits at most 2 s for the default partition''s lock. E.g. SELECT * FROM coherence.create_partitions(ahead => interval ''7 days'', backfill => 30);';
REVOKE EXECUTE ON FUNCTION coherence.create_partitions(interval, integer) FROM PUBLIC;

CREATE FUNCTION coherence.drop_old_data(older_than interval)
RETURNS TABLE (partition text, action text, until_at timestamptz, rows bigint)
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER STRICT
SET search_path = pg_catalog, pg_temp
SET lock_timeout = '10s'
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
        IF NOT p.is_default AND p.until_at IS NOT NULL AND p.until_at <= v_cutoff THEN
            -- Whole partition older than the cutoff: dropped (instant, no dead rows).
            EXECUTE format('DROP TABLE coherence.%I', p.partition);
            partition := p.partition;
            action := 'dropped';
            until_at := p.until_at;
            rows := p.estimated_rows;
            RETURN NEXT;
        ELSIF p.is_default OR p.from_at IS NULL THEN
            -- Rows before the cutoff in the default partition, or in a partition that
            -- reaches back without a bound (an upgrade's): deleted.
            EXECUTE format('DELETE FROM coherence.%I m WHERE m."timestamp" < $1', p.partition) USING v_cutoff;
            GET DIAGNOSTICS v_rows = ROW_COUNT;
            IF v_rows > 0 THEN
                partition := p.partition;
                action := 'deleted';
                until_at := v_cutoff;
                rows := v_rows;
                RETURN NEXT;
            END IF;
        END IF;
    END LOOP;
END
$fn$;
COMMENT ON FUNCTION coherence.drop_old_data(interval) IS
    'Retention of coherence.metrics: drops the day partitions that end at least older_than (at least 1 hour) before now, and deletes older rows from the default partition and from a partition without a lower bound (what an upgrade made of the old table). Whole days: a partition that reaches past the cutoff is kept whole. Returns what it dropped (with estimated rows) or deleted (exact rows). signal_events, anomalies and incidents are kept. E.g. SELECT * FROM coherence.drop_old_data(interval ''30 days'');';
REVOKE EXECUTE ON FUNCTION coherence.drop_old_data(interval) FROM PUBLIC;
