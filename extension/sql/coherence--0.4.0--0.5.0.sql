-- coherence 0.4.0 -> 0.5.0 (see CHANGELOG.md). Run by ALTER EXTENSION coherence UPDATE TO '0.5.0'.
-- Series dimensions (labels carried in the metric name: coherence.series_name,
-- coherence.series_labels, the view coherence.series) and isolated ingest feeds (failure state
-- on coherence.ingest_cursors, coherence.ingest_skipped, the view coherence.ingest_status).
-- Every row is kept; existing cursors get the healthy defaults (no error, 0 failures).
\echo Use "ALTER EXTENSION coherence UPDATE TO '0.5.0'" to load this file. \quit

CREATE FUNCTION coherence.series_labels(
	"metric" TEXT /* & str */
) RETURNS jsonb /* JsonB */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'series_labels_sql_wrapper';
CREATE FUNCTION coherence.series_name(
	"metric" TEXT /* & str */
) RETURNS TEXT /* & str */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'series_name_sql_wrapper';
COMMENT ON FUNCTION coherence.series_name(text) IS
    'The base name of a series key: metric names carry labels in Prometheus'' canonical form, name{key="value",...} (keys sorted, values quoted with \\, \" and \n escaped); a name without a valid label list is its own base name. E.g. SELECT coherence.series_name(''disk.used{device="sda"}'');';
COMMENT ON FUNCTION coherence.series_labels(text) IS
    'The labels of a series key (name{key="value",...}, Prometheus'' canonical form) as a jsonb object; {} for a name without a valid label list. E.g. SELECT coherence.series_labels(''disk.used{device="sda",mount="/"}'') ->> ''device'';';

-- Feed state for the ingestor.
ALTER TABLE coherence.ingest_cursors
    ADD COLUMN last_error text,
    ADD COLUMN failing_since timestamptz,
    ADD COLUMN failures integer NOT NULL DEFAULT 0,
    ADD COLUMN last_ok_at timestamptz;
COMMENT ON TABLE coherence.ingest_cursors IS
    'Per-feed ingest cursor and health of coherence-ingest (datadog, prometheus): data before cursor_at is ingested; failures, failing_since and last_error describe the current failing streak (see coherence.ingest_status).';
COMMENT ON COLUMN coherence.ingest_cursors.source IS 'Kind of feed: datadog-metrics, datadog-events or prometheus.';
COMMENT ON COLUMN coherence.ingest_cursors.query IS 'The feed key: the metric query, events filter or Prometheus selector as configured.';
COMMENT ON COLUMN coherence.ingest_cursors.last_error IS 'Error of the last attempt; NULL when it succeeded.';
COMMENT ON COLUMN coherence.ingest_cursors.failing_since IS 'First failure of the current failing streak; NULL when the feed is healthy.';
COMMENT ON COLUMN coherence.ingest_cursors.failures IS 'Consecutive failed attempts (0 when the last attempt succeeded).';
COMMENT ON COLUMN coherence.ingest_cursors.last_ok_at IS 'When the feed last wrote a chunk successfully (NULL: not since this column exists).';

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
SELECT pg_catalog.pg_extension_config_dump('coherence.ingest_skipped', '');
SELECT pg_catalog.pg_extension_config_dump('coherence.ingest_skipped_id_seq', '');

CREATE VIEW coherence.ingest_status AS
SELECT c.source, c.query, c.cursor_at, now() - c.cursor_at AS lag, c.last_ok_at, c.failures,
       c.failing_since, c.last_error,
       (SELECT count(*) FROM coherence.ingest_skipped k
         WHERE k.source = c.source AND k.query = c.query) AS skipped_chunks
  FROM coherence.ingest_cursors c;
COMMENT ON VIEW coherence.ingest_status IS
    'One row per feed of coherence-ingest: cursor, lag (now - cursor_at), last successful chunk, consecutive failures since failing_since with the last error (0 and NULL when healthy), and the number of chunks skipped (coherence.ingest_skipped). E.g. SELECT source, query, lag, failures, last_error FROM coherence.ingest_status WHERE failures > 0 OR lag > interval ''1 hour'';';

CREATE VIEW coherence.series AS
SELECT s.host, s.metric, coherence.series_name(s.metric) AS name,
       coherence.series_labels(s.metric) AS labels, s.last_at, s.cadence
  FROM coherence.series_state s;
COMMENT ON VIEW coherence.series IS
    'One row per series seen by coherence.run_detection() (coherence.series_state): host, metric (the series key), its base name and labels (jsonb) as coherence.series_name and coherence.series_labels read them, last sample time and cadence. E.g. SELECT host, name, labels ->> ''device'' AS device FROM coherence.series WHERE name = ''disk.used'';';

-- The readers see the new views; the installing role gets the same rights on the new table
-- and sequence as on the others (as in a fresh install).
GRANT SELECT ON coherence.series, coherence.ingest_status TO coherence_reader;
-- To the extension's owner, not @extowner@: in an update script that is whoever runs ALTER
-- EXTENSION UPDATE (often postgres), and the owner who writes these tables would lack the rights
-- on the new ones.
DO $grant$
DECLARE
    v_owner text := (SELECT e.extowner::pg_catalog.regrole::text FROM pg_catalog.pg_extension e
                      WHERE e.extname OPERATOR(pg_catalog.=) 'coherence');
BEGIN
    EXECUTE pg_catalog.format('GRANT USAGE ON SCHEMA coherence TO %s', v_owner);
    EXECUTE pg_catalog.format('GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA coherence TO %s', v_owner);
    EXECUTE pg_catalog.format('GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA coherence TO %s', v_owner);
END
$grant$;

-- The aggregates declare their state size (SSPACE) as a fresh install does. PostgreSQL has no
-- ALTER AGGREGATE for it, and dropping them would fail on (or drop) users' views that call
-- them, so the size is set in the catalog (the update runs as a superuser).
UPDATE pg_catalog.pg_aggregate SET aggtransspace = 2048
 WHERE aggfnoid IN ('coherence.variance_escalation(timestamptz, double precision)'::pg_catalog.regprocedure,
                    'coherence.variance_escalation(timestamptz, double precision, interval, double precision)'::pg_catalog.regprocedure);
UPDATE pg_catalog.pg_aggregate SET aggtransspace = 2304
 WHERE aggfnoid IN ('coherence.spikes(timestamptz, double precision)'::pg_catalog.regprocedure,
                    'coherence.spikes(timestamptz, double precision, double precision)'::pg_catalog.regprocedure);
UPDATE pg_catalog.pg_aggregate SET aggtransspace = 128
 WHERE aggfnoid IN ('coherence.trend(timestamptz, double precision)'::pg_catalog.regprocedure,
                    'coherence.trend(timestamptz, double precision, double precision)'::pg_catalog.regprocedure);
COMMENT ON AGGREGATE coherence.variance_escalation(timestamptz, double precision) IS
    'Variance escalation (seed defaults): sample variance of the first vs the last 4-hour window (date_bin-aligned); flagged when last/first > 1.5. Returns coherence.variance_escalation_result. Parallel safe.';
COMMENT ON AGGREGATE coherence.variance_escalation(timestamptz, double precision, interval, double precision) IS
    'Variance escalation with a window width and ratio threshold, e.g. coherence.variance_escalation(ts, value, interval ''1 hour'', 2.0).';
COMMENT ON AGGREGATE coherence.spikes(timestamptz, double precision) IS
    'Spike detection (seed defaults): points above mean + 2.5 stddev, with count, max and when; the count is exact up to 128 distinct values in the group, beyond that estimated from a bounded histogram (docs/detection.md). Returns coherence.spikes_result. Parallel safe.';
COMMENT ON AGGREGATE coherence.spikes(timestamptz, double precision, double precision) IS
    'Spike detection with a threshold in standard deviations, e.g. coherence.spikes(ts, value, 3.0).';
COMMENT ON AGGREGATE coherence.trend(timestamptz, double precision) IS
    'Trend detection (seed defaults): least-squares fit of value on time; flagged when the fitted change from first to last time exceeds +30%. Returns coherence.trend_result. Parallel safe.';
COMMENT ON AGGREGATE coherence.trend(timestamptz, double precision, double precision) IS
    'Trend detection with a percentage threshold, e.g. coherence.trend(ts, value, 50.0).';
