-- Coherence coordinator over postgres_fdw shards (docs/scale.md). Run with psql on the
-- coordinator database after:
--   CREATE EXTENSION coherence; CREATE EXTENSION postgres_fdw;
--   one foreign server per shard, named shard0, shard1, ... (consecutive), each with
--     OPTIONS (host ..., port ..., dbname ..., extensions 'coherence', async_capable 'true',
--              batch_size '1000', fetch_size '10000')
--   and a user mapping for the roles that query or ingest.
-- Every shard runs CREATE EXTENSION coherence (and pg_cron with coherence.run_detection()).
--
-- What it builds (schema fleet; re-running it rebuilds the schema, never touching shard data):
--   fleet.metrics, fleet.signal_events    PARTITION BY HASH (host), partition k = foreign table
--                                         on shard k (MODULUS = number of shards, REMAINDER k):
--                                         the read path with partition-wise aggregate pushdown,
--                                         and a write path (plain INSERT/COPY route by host).
--   coherence.metrics, coherence.signal_events (the extension's own tables, kept intact):
--                                         the ingest entry point. The unchanged ingestor writes
--                                         INSERT ... ON CONFLICT DO NOTHING (and ON CONFLICT
--                                         (source, source_id) for events), which needs unique
--                                         indexes on the target;
--                                         a partitioned table with foreign partitions can have
--                                         none. A statement trigger forwards each statement's
--                                         rows to fleet.* (routed to the host's shard, where the
--                                         shard's unique key drops duplicates) and deletes them
--                                         locally. Foreign inheritance children make SELECTs on
--                                         coherence.signal_events read every shard (no pushdown:
--                                         use fleet.*); coherence.metrics is partitioned by time
--                                         and can have none, so samples are read in fleet.metrics.
--   fleet.anomalies, fleet.incidents, fleet.incident_edges, fleet.active_incidents,
--   fleet.detection_runs                  views: UNION ALL of the shards' tables, with a shard
--                                         column ((shard, id) is the key: ids are per shard).
--   fleet.peer_series                     cross-shard step done here: per (host, metric) summary
--                                         pushed down to the shards, ranked across all hosts.
\set ON_ERROR_STOP on
SET client_min_messages = warning;

BEGIN;
DROP SCHEMA IF EXISTS fleet CASCADE;
CREATE SCHEMA fleet;
COMMENT ON SCHEMA fleet IS
    'Coherence coordinator: sharded tables (foreign partitions) and union views over the shards (sql/coordinator.sql, docs/scale.md).';

DO $do$
DECLARE
    v_servers text[];
    v_n       int;
    v_s       text;
    k         int;
    v_cols    text;
BEGIN
    SELECT array_agg(srvname ORDER BY substr(srvname, 6)::int) INTO v_servers
      FROM pg_catalog.pg_foreign_server WHERE srvname ~ '^shard[0-9]+$';
    v_n := coalesce(array_length(v_servers, 1), 0);
    IF v_n = 0 THEN
        RAISE EXCEPTION 'no foreign servers named shard0, shard1, ...'
            USING HINT = 'CREATE SERVER shard0 FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host ..., port ..., dbname ..., extensions ''coherence''); see docs/scale.md';
    END IF;
    FOR k IN 0 .. v_n - 1 LOOP
        IF v_servers[k + 1] <> 'shard' || k THEN
            RAISE EXCEPTION 'shard servers must be numbered shard0 .. shard%, found %', v_n - 1, v_servers;
        END IF;
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_foreign_server s, pg_catalog.pg_options_to_table(s.srvoptions) o
                        WHERE s.srvname = v_servers[k + 1] AND o.option_name = 'extensions'
                          AND 'coherence' = ANY (string_to_array(replace(o.option_value, ' ', ''), ','))) THEN
            RAISE EXCEPTION 'server % does not declare extensions ''coherence''', v_servers[k + 1]
                USING HINT = 'Without it postgres_fdw ships no coherence function or aggregate: ALTER SERVER ' || v_servers[k + 1] || ' OPTIONS (ADD extensions ''coherence'');';
        END IF;
    END LOOP;

    -- Aggregates GROUP BY host (the partition key) then run on the shards; async append
    -- (the servers' async_capable) scans the shards concurrently.
    EXECUTE format('ALTER DATABASE %I SET enable_partitionwise_aggregate = on', current_database());

    -- Sharded tables: hash of the host, one foreign partition per shard. Only the columns a
    -- writer supplies; id and the defaults are filled by the shard's own table.
    CREATE TABLE fleet.metrics (
        host        text NOT NULL,
        metric_name text NOT NULL,
        value       double precision NOT NULL,
        "timestamp" timestamptz NOT NULL,
        created_at  timestamptz NOT NULL DEFAULT now()
    ) PARTITION BY HASH (host);
    CREATE TABLE fleet.signal_events (
        id          uuid NOT NULL DEFAULT gen_random_uuid(),
        ts          timestamptz NOT NULL,
        host        text NOT NULL,
        service     text,
        fingerprint text NOT NULL,
        severity    text NOT NULL,
        metric      text,
        value       numeric,
        synthetic   boolean NOT NULL DEFAULT false,
        source      text NOT NULL DEFAULT 'manual',
        source_id   text NOT NULL DEFAULT gen_random_uuid()::text,
        message     text,
        created_at  timestamptz NOT NULL DEFAULT now()
    ) PARTITION BY HASH (host);

    FOREACH v_s IN ARRAY v_servers LOOP
        k := substr(v_s, 6)::int;
        EXECUTE format('CREATE FOREIGN TABLE fleet.%I PARTITION OF fleet.metrics FOR VALUES WITH (MODULUS %s, REMAINDER %s) '
                       'SERVER %I OPTIONS (schema_name %L, table_name %L)', 'metrics_' || v_s, v_n, k, v_s, 'coherence', 'metrics');
        EXECUTE format('CREATE FOREIGN TABLE fleet.%I PARTITION OF fleet.signal_events FOR VALUES WITH (MODULUS %s, REMAINDER %s) '
                       'SERVER %I OPTIONS (schema_name %L, table_name %L)', 'signal_events_' || v_s, v_n, k, v_s, 'coherence', 'signal_events');
        -- Read-through: SELECTs on the coordinator's coherence.signal_events see every shard
        -- (the local parent rows are only ever in flight). coherence.metrics is partitioned by
        -- time, which allows no inheritance children: read fleet.metrics for samples.
        EXECUTE format('CREATE FOREIGN TABLE fleet.%I () INHERITS (coherence.signal_events) SERVER %I OPTIONS (schema_name %L, table_name %L)',
                       'coherence_signal_events_' || v_s, v_s, 'coherence', 'signal_events');
        -- The shards' results (read-only here; run_detection writes them on the shard).
        EXECUTE format('IMPORT FOREIGN SCHEMA coherence LIMIT TO (anomalies, incidents, incident_edges, active_incidents, detection_runs) '
                       'FROM SERVER %I INTO fleet', v_s);
        FOREACH v_cols IN ARRAY ARRAY['anomalies', 'incidents', 'incident_edges', 'active_incidents', 'detection_runs'] LOOP
            EXECUTE format('ALTER FOREIGN TABLE fleet.%I RENAME TO %I', v_cols, v_cols || '_' || v_s);
        END LOOP;
    END LOOP;

    -- Union views with the shard's name.
    FOREACH v_cols IN ARRAY ARRAY['anomalies', 'incidents', 'incident_edges', 'active_incidents', 'detection_runs'] LOOP
        EXECUTE format('CREATE VIEW fleet.%I AS %s', v_cols,
            (SELECT string_agg(format('SELECT %L::text AS shard, t.* FROM fleet.%I t', s, v_cols || '_' || s), ' UNION ALL ')
               FROM unnest(v_servers) s));
        EXECUTE format('COMMENT ON VIEW fleet.%I IS %L', v_cols,
            format('coherence.%s of every shard (UNION ALL of foreign tables); (shard, id) identifies a row, ids are per shard.', v_cols));
    END LOOP;
END
$do$;

COMMENT ON TABLE fleet.metrics IS
    'coherence.metrics of every shard, hash-partitioned by host (partition k = foreign table on shard k). Aggregates GROUP BY host run on the shards with enable_partitionwise_aggregate.';
COMMENT ON TABLE fleet.signal_events IS
    'coherence.signal_events of every shard, hash-partitioned by host like fleet.metrics.';

-- Ingest entry point: forward each statement's rows to the shards, keep nothing locally.
CREATE FUNCTION fleet.forward_metrics() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    -- ON CONFLICT DO NOTHING (no target): postgres_fdw ships it; the shard's unique key
    -- (host, metric_name, "timestamp") drops rows it already has.
    INSERT INTO fleet.metrics (host, metric_name, value, "timestamp", created_at)
    SELECT n.host, n.metric_name, n.value, n."timestamp", n.created_at FROM new_rows n
    ON CONFLICT DO NOTHING;
    -- Every partition (the local rows live in time partitions until this delete).
    DELETE FROM coherence.metrics m USING new_rows n
     WHERE m.host OPERATOR(pg_catalog.=) n.host AND m.metric_name OPERATOR(pg_catalog.=) n.metric_name
       AND m."timestamp" OPERATOR(pg_catalog.=) n."timestamp";
    RETURN NULL;
END
$fn$;
CREATE FUNCTION fleet.forward_signal_events() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    INSERT INTO fleet.signal_events (id, ts, host, service, fingerprint, severity, metric, value,
                                     synthetic, source, source_id, message, created_at)
    SELECT n.id, n.ts, n.host, n.service, n.fingerprint, n.severity, n.metric, n.value,
           n.synthetic, n.source, n.source_id, n.message, n.created_at FROM new_rows n
    ON CONFLICT DO NOTHING;
    DELETE FROM ONLY coherence.signal_events e USING new_rows n WHERE e.id OPERATOR(pg_catalog.=) n.id;
    RETURN NULL;
END
$fn$;
REVOKE EXECUTE ON FUNCTION fleet.forward_metrics(), fleet.forward_signal_events() FROM PUBLIC;
CREATE TRIGGER metrics_forward_to_shards AFTER INSERT ON coherence.metrics
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION fleet.forward_metrics();
CREATE TRIGGER signal_events_forward_to_shards AFTER INSERT ON coherence.signal_events
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION fleet.forward_signal_events();
-- Detection runs on the shards, not here: the coordinator queues nothing.
ALTER TABLE coherence.metrics DISABLE TRIGGER metrics_queue_new;
ALTER TABLE coherence.signal_events DISABLE TRIGGER signal_events_queue_new;

-- The cross-shard step, done here from per-shard summaries: each host's series summary is
-- computed on its shard (pushed down), then ranked across every host of the fleet.
CREATE VIEW fleet.peer_series AS
WITH agg AS (
    -- Whole results, computed on the shards; their fields are taken on the coordinator.
    SELECT m.host, m.metric_name AS metric,
           coherence.spikes(m."timestamp", m.value) AS sp,
           coherence.trend(m."timestamp", m.value) AS tr
      FROM fleet.metrics m
     GROUP BY m.host, m.metric_name
), per_series AS (
    SELECT a.host, a.metric, (a.sp).mean AS mean, (a.sp).stddev AS stddev,
           (a.tr).pct_change AS trend_pct
      FROM agg a
)
SELECT p.host, p.metric, p.mean, p.stddev, p.trend_pct,
       percent_rank() OVER (PARTITION BY p.metric ORDER BY p.mean) AS mean_rank,
       (p.mean - avg(p.mean) OVER w) / nullif(stddev_samp(p.mean) OVER w, 0) AS mean_z_across_hosts,
       count(*) OVER w AS hosts
  FROM per_series p
WINDOW w AS (PARTITION BY p.metric);
COMMENT ON VIEW fleet.peer_series IS
    'Peer comparison across hosts on different shards: per-series mean, stddev and trend computed on each shard (partition-wise aggregate), ranked across the fleet here. E.g. SELECT * FROM fleet.peer_series WHERE abs(mean_z_across_hosts) > 3;';

GRANT USAGE ON SCHEMA fleet TO coherence_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA fleet TO coherence_reader;
COMMIT;
