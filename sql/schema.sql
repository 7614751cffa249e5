-- Coherence schema: data tables and the result types of the detector aggregates.
-- Every object is schema-qualified; the extension is not relocatable (schema = coherence).

-- Raw metric samples (the seed's `metrics` table). One row per (host, metric_name, "timestamp"):
-- ingest uses ON CONFLICT DO NOTHING on that key, so re-running any ingest inserts nothing twice.
-- Partitioned by time (docs/operations.md "Partitions and retention"): one partition a UTC day,
-- made ahead by coherence.create_partitions() (run_detection calls it), dropped by
-- coherence.drop_old_data(); rows of days without a partition wait in metrics_default.
CREATE TABLE coherence.metrics (
    id          bigserial NOT NULL,
    host        text NOT NULL CONSTRAINT metrics_host_check CHECK (host <> ''),
    metric_name text NOT NULL CONSTRAINT metrics_metric_name_check CHECK (metric_name <> ''),
    value       double precision NOT NULL,
    "timestamp" timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- ±infinity is no time a sample was taken; it would also poison every time range.
    CONSTRAINT metrics_times_finite CHECK (isfinite("timestamp") AND isfinite(created_at))
) PARTITION BY RANGE ("timestamp");
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

-- Signal events (the seed's `signal_events`): error events and other signals. Unique on the
-- source's own id, so re-ingesting the same events is a no-op.
CREATE TABLE coherence.signal_events (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    ts          timestamptz NOT NULL,
    host        text NOT NULL CHECK (host <> ''),
    service     text,
    fingerprint text NOT NULL,
    severity    text NOT NULL CHECK (severity IN ('info', 'warn', 'error')),
    metric      text,
    value       numeric,
    synthetic   boolean NOT NULL DEFAULT false,
    source      text NOT NULL DEFAULT 'manual',
    source_id   text NOT NULL DEFAULT gen_random_uuid()::text,
    message     text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT signal_events_source_key UNIQUE (source, source_id),
    CONSTRAINT signal_events_times_finite CHECK (isfinite(ts) AND isfinite(created_at))
);
CREATE INDEX signal_events_host_ts_idx ON coherence.signal_events (host, ts);
CREATE INDEX signal_events_errors_ts_idx ON coherence.signal_events (ts) WHERE severity = 'error';

COMMENT ON TABLE coherence.signal_events IS
    'Signal events (errors, warnings, deploys, numeric signals); unique on (source, source_id).';
COMMENT ON COLUMN coherence.signal_events.id IS 'Row id.';
COMMENT ON COLUMN coherence.signal_events.ts IS 'When the event happened.';
COMMENT ON COLUMN coherence.signal_events.host IS 'Host the event belongs to.';
COMMENT ON COLUMN coherence.signal_events.service IS 'Service name, when known.';
COMMENT ON COLUMN coherence.signal_events.fingerprint IS 'Grouping key, host:metric as in the seed.';
COMMENT ON COLUMN coherence.signal_events.severity IS 'info, warn or error; error events are what incidents correlate with.';
COMMENT ON COLUMN coherence.signal_events.metric IS 'What the event is about: cpu, memory, disk, error, deploy, ...';
COMMENT ON COLUMN coherence.signal_events.value IS 'Numeric value for numeric signals, else NULL.';
COMMENT ON COLUMN coherence.signal_events.synthetic IS 'True for rows written by the flight simulator.';
COMMENT ON COLUMN coherence.signal_events.source IS 'Where the event came from: datadog, simulator, manual.';
COMMENT ON COLUMN coherence.signal_events.source_id IS 'The source''s own id (exact, as text); with source, the idempotency key.';
COMMENT ON COLUMN coherence.signal_events.message IS 'Event title or message.';
COMMENT ON COLUMN coherence.signal_events.created_at IS 'When the row was inserted.';

-- New data, queued by statement triggers on metrics and signal_events: one row per statement
-- and series with the time range it wrote. coherence.run_detection() deletes what it analyses,
-- in its own transaction, so a row is analysed exactly when its writer has committed, however
-- late (a backfill that commits hours after its rows were stamped is not skipped). Not in
-- pg_dump output (a restore queues signal events through their trigger, and would collide with
-- restored ids). A whole-database restore writes samples into their partitions directly, where
-- the parent's trigger does not fire: samples no run had analysed before the dump need one
-- run_detection(full_rescan => true) after the restore (README "Backup").
CREATE TABLE coherence.pending_series (
    id        bigserial PRIMARY KEY,
    host      text NOT NULL,
    metric    text NOT NULL,
    min_ts    timestamptz NOT NULL,
    max_ts    timestamptz NOT NULL,
    rows      bigint NOT NULL,
    queued_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE coherence.pending_series IS
    'Series with rows written since the last coherence.run_detection(): one row per writing statement and series (host, metric, time range, rows), filled by triggers on coherence.metrics and coherence.signal_events, consumed by run_detection.';
COMMENT ON COLUMN coherence.pending_series.id IS 'Queue order.';
COMMENT ON COLUMN coherence.pending_series.host IS 'Host of the written rows.';
COMMENT ON COLUMN coherence.pending_series.metric IS 'Metric (metric_name; for signal events their metric, or the severity when it has none).';
COMMENT ON COLUMN coherence.pending_series.min_ts IS 'Earliest sample time written.';
COMMENT ON COLUMN coherence.pending_series.max_ts IS 'Latest sample time written.';
COMMENT ON COLUMN coherence.pending_series.rows IS 'Rows written.';
COMMENT ON COLUMN coherence.pending_series.queued_at IS 'Start of the writing transaction.';

CREATE FUNCTION coherence.queue_new_metrics() RETURNS trigger
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    -- SECURITY DEFINER: it must only ever run for its own table, whose column types are known.
    IF TG_RELID OPERATOR(pg_catalog.<>) 'coherence.metrics'::pg_catalog.regclass
       OR TG_LEVEL OPERATOR(pg_catalog.<>) 'STATEMENT' THEN
        RAISE EXCEPTION 'coherence.queue_new_metrics() only queues rows of coherence.metrics'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    INSERT INTO coherence.pending_series (host, metric, min_ts, max_ts, rows)
    SELECT n.host, n.metric_name, min(n."timestamp"), max(n."timestamp"), count(*)
      FROM new_rows n
     GROUP BY n.host, n.metric_name;
    RETURN NULL;
END
$fn$;
COMMENT ON FUNCTION coherence.queue_new_metrics() IS
    'Trigger function (statement level, AFTER INSERT on coherence.metrics): queues the written series in coherence.pending_series. SECURITY DEFINER so writers need no rights on the queue.';
-- Only the extension's triggers may call it (it runs as the extension's owner).
REVOKE EXECUTE ON FUNCTION coherence.queue_new_metrics() FROM PUBLIC;
CREATE TRIGGER metrics_queue_new AFTER INSERT ON coherence.metrics
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION coherence.queue_new_metrics();

CREATE FUNCTION coherence.queue_new_signal_events() RETURNS trigger
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    -- SECURITY DEFINER: it must only ever run for its own table, whose column types are known.
    IF TG_RELID OPERATOR(pg_catalog.<>) 'coherence.signal_events'::pg_catalog.regclass
       OR TG_LEVEL OPERATOR(pg_catalog.<>) 'STATEMENT' THEN
        RAISE EXCEPTION 'coherence.queue_new_signal_events() only queues rows of coherence.signal_events'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    INSERT INTO coherence.pending_series (host, metric, min_ts, max_ts, rows)
    SELECT n.host, coalesce(n.metric, n.severity), min(n.ts), max(n.ts), count(*)
      FROM new_rows n
     GROUP BY n.host, coalesce(n.metric, n.severity);
    RETURN NULL;
END
$fn$;
COMMENT ON FUNCTION coherence.queue_new_signal_events() IS
    'Trigger function (statement level, AFTER INSERT on coherence.signal_events): queues the written hosts and times in coherence.pending_series. SECURITY DEFINER so writers need no rights on the queue.';
REVOKE EXECUTE ON FUNCTION coherence.queue_new_signal_events() FROM PUBLIC;
CREATE TRIGGER signal_events_queue_new AFTER INSERT ON coherence.signal_events
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION coherence.queue_new_signal_events();

-- Ingest cursors: how far each feed of coherence-ingest has been ingested, and whether it is
-- failing. The cursor is advanced in the same transaction as the rows it covers, so a killed
-- ingest resumes exactly where it committed. Feeds are isolated: a failing feed records its
-- failure here and the others go on.
CREATE TABLE coherence.ingest_cursors (
    source        text NOT NULL,
    query         text NOT NULL,
    cursor_at     timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    last_error    text,
    failing_since timestamptz,
    failures      integer NOT NULL DEFAULT 0,
    last_ok_at    timestamptz,
    PRIMARY KEY (source, query)
);
COMMENT ON TABLE coherence.ingest_cursors IS
    'Per-feed ingest cursor and health of coherence-ingest (datadog, prometheus): data before cursor_at is ingested; failures, failing_since and last_error describe the current failing streak (see coherence.ingest_status).';
COMMENT ON COLUMN coherence.ingest_cursors.source IS 'Kind of feed: datadog-metrics, datadog-events or prometheus.';
COMMENT ON COLUMN coherence.ingest_cursors.query IS 'The feed key: the metric query, events filter or Prometheus selector as configured.';
COMMENT ON COLUMN coherence.ingest_cursors.cursor_at IS 'Exclusive end of the ingested time range.';
COMMENT ON COLUMN coherence.ingest_cursors.updated_at IS 'When the cursor last advanced.';
COMMENT ON COLUMN coherence.ingest_cursors.last_error IS 'Error of the last attempt; NULL when it succeeded.';
COMMENT ON COLUMN coherence.ingest_cursors.failing_since IS 'First failure of the current failing streak; NULL when the feed is healthy.';
COMMENT ON COLUMN coherence.ingest_cursors.failures IS 'Consecutive failed attempts (0 when the last attempt succeeded).';
COMMENT ON COLUMN coherence.ingest_cursors.last_ok_at IS 'When the feed last wrote a chunk successfully (NULL: not since this column exists).';

-- Chunks a feed gave up on after a bounded number of tries: recorded, and the cursor moved
-- past them, so one bad chunk does not stop its feed for good.
CREATE TABLE coherence.ingest_skipped (
    id         bigserial PRIMARY KEY,
    source     text NOT NULL,
    query      text NOT NULL,
    from_at    timestamptz NOT NULL,
    until_at   timestamptz NOT NULL,
    tries      integer NOT NULL,
    error      text NOT NULL,
    skipped_at timestamptz NOT NULL DEFAULT now(),
    CHECK (from_at < until_at)
);
CREATE INDEX ingest_skipped_feed_idx ON coherence.ingest_skipped (source, query);
COMMENT ON TABLE coherence.ingest_skipped IS
    'Time ranges a feed of coherence-ingest skipped after repeated failures (its cursor moved past them), so their data is missing. E.g. SELECT source, query, from_at, until_at, error FROM coherence.ingest_skipped ORDER BY id DESC;';
COMMENT ON COLUMN coherence.ingest_skipped.id IS 'Row id.';
COMMENT ON COLUMN coherence.ingest_skipped.source IS 'Kind of feed, as coherence.ingest_cursors.source.';
COMMENT ON COLUMN coherence.ingest_skipped.query IS 'The feed key, as coherence.ingest_cursors.query.';
COMMENT ON COLUMN coherence.ingest_skipped.from_at IS 'Start of the skipped range (inclusive).';
COMMENT ON COLUMN coherence.ingest_skipped.until_at IS 'End of the skipped range (exclusive).';
COMMENT ON COLUMN coherence.ingest_skipped.tries IS 'Attempts made before giving up.';
COMMENT ON COLUMN coherence.ingest_skipped.error IS 'Error of the last attempt.';
COMMENT ON COLUMN coherence.ingest_skipped.skipped_at IS 'When the range was skipped.';

-- One row per feed: how far behind it is, whether it is failing, how much it skipped.
CREATE VIEW coherence.ingest_status AS
SELECT c.source, c.query, c.cursor_at, now() - c.cursor_at AS lag, c.last_ok_at, c.failures,
       c.failing_since, c.last_error,
       (SELECT count(*) FROM coherence.ingest_skipped k
         WHERE k.source = c.source AND k.query = c.query) AS skipped_chunks
  FROM coherence.ingest_cursors c;
COMMENT ON VIEW coherence.ingest_status IS
    'One row per feed of coherence-ingest: cursor, lag (now - cursor_at), last successful chunk, consecutive failures since failing_since with the last error (0 and NULL when healthy), and the number of chunks skipped (coherence.ingest_skipped). E.g. SELECT source, query, lag, failures, last_error FROM coherence.ingest_status WHERE failures > 0 OR lag > interval ''1 hour'';';

-- Keep user data in pg_dump output (extension member tables are otherwise skipped).
SELECT pg_catalog.pg_extension_config_dump('coherence.metrics', '');
SELECT pg_catalog.pg_extension_config_dump('coherence.metrics_default', '');
SELECT pg_catalog.pg_extension_config_dump('coherence.metrics_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('coherence.signal_events', '');
SELECT pg_catalog.pg_extension_config_dump('coherence.ingest_cursors', '');
SELECT pg_catalog.pg_extension_config_dump('coherence.ingest_skipped', '');
SELECT pg_catalog.pg_extension_config_dump('coherence.ingest_skipped_id_seq', '');


-- Result types of the aggregates. `flagged` and `risk` come first in every one.
CREATE TYPE coherence.variance_escalation_result AS (
    flagged            boolean,
    risk               double precision,
    ratio              double precision,
    windows            bigint,
    first_window_start timestamptz,
    first_variance     double precision,
    last_window_start  timestamptz,
    last_variance      double precision,
    points             bigint,
    skipped            bigint,
    summary            text
);
COMMENT ON TYPE coherence.variance_escalation_result IS
    'Result of coherence.variance_escalation: sample variance of the first vs the last window (with 2+ points); flagged when last/first > threshold (default 1.5).';

CREATE TYPE coherence.spikes_result AS (
    flagged   boolean,
    risk      double precision,
    count     bigint,
    max       double precision,
    max_at    timestamptz,
    mean      double precision,
    stddev    double precision,
    threshold double precision,
    points    bigint,
    skipped   bigint,
    summary   text
);
COMMENT ON TYPE coherence.spikes_result IS
    'Result of coherence.spikes: points above mean + k·stddev (default k = 2.5), their count, the max and when.';

CREATE TYPE coherence.trend_result AS (
    flagged        boolean,
    risk           double precision,
    pct_change     double precision,
    slope_per_hour double precision,
    fitted_start   double precision,
    fitted_end     double precision,
    r2             double precision,
    first_at       timestamptz,
    last_at        timestamptz,
    points         bigint,
    skipped        bigint,
    summary        text
);
COMMENT ON TYPE coherence.trend_result IS
    'Result of coherence.trend: least-squares fit of value on time; pct_change from the fitted start to the fitted end; flagged above +30% by default.';
