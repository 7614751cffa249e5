-- Time partitions of coherence.metrics: rows of days without a partition wait in the default
-- partition, coherence.create_partitions() makes day partitions (moving those rows), detection
-- reads only the partitions of its range, and coherence.drop_old_data() drops whole old days.
SET client_min_messages = warning;
SET TimeZone = 'UTC';
CREATE SCHEMA part_t;
CREATE TABLE part_t.saved AS SELECT * FROM coherence.metrics;
TRUNCATE coherence.metrics, coherence.pending_series;
-- (Partitions earlier tests' job runs made are dropped, so this test starts from the default
-- partition alone.)
DO $$ DECLARE r record; BEGIN
  FOR r IN SELECT partition FROM coherence.metrics_partitions WHERE NOT is_default LOOP
    EXECUTE format('DROP TABLE coherence.%I', r.partition);
  END LOOP; END $$;

-- Three days of 1-minute samples, 10 days ago: they land in the default partition.
INSERT INTO coherence.metrics (host, metric_name, value, "timestamp")
SELECT 'db-1', 'cpu', 30 + (i * 7919) % 11, date_trunc('day', now()) - interval '10 days' + i * interval '1 minute'
  FROM generate_series(0, 3 * 1440 - 1) i;
SELECT partition, is_default FROM coherence.metrics_partitions ORDER BY partition;
SELECT count(*) AS rows_in_default FROM coherence.metrics_default;

-- Today and the next 3 days, plus the two oldest days waiting in the default partition,
-- with their rows moved out.
SELECT partition = 'metrics_p' || to_char(from_at, 'YYYYMMDD') AS named_by_day,
       until_at - from_at AS width, moved_rows,
       from_at::date - (now() AT TIME ZONE 'UTC')::date AS days_from_today
  FROM coherence.create_partitions(backfill => 2) ORDER BY from_at;
SELECT count(*) AS rows_in_default FROM coherence.metrics_default;
SELECT count(*) AS rows_total FROM coherence.metrics;
-- The next call gives the next oldest waiting day its partition; then nothing is left to do.
SELECT moved_rows, from_at::date - (now() AT TIME ZONE 'UTC')::date AS days_from_today
  FROM coherence.create_partitions(backfill => 2);
SELECT count(*) AS made_again FROM coherence.create_partitions(backfill => 2);
SELECT count(*) AS rows_in_default FROM coherence.metrics_default;

-- Rows go to their day's partition from now on; the unique key holds across partitions.
INSERT INTO coherence.metrics (host, metric_name, value, "timestamp")
VALUES ('db-1', 'cpu', 42, date_trunc('day', now()) + interval '1 hour');
SELECT tableoid::regclass::text = 'coherence.metrics_p' || to_char(now(), 'YYYYMMDD') AS in_todays_partition
  FROM coherence.metrics WHERE value = 42;
INSERT INTO coherence.metrics (host, metric_name, value, "timestamp")
VALUES ('db-1', 'cpu', 43, date_trunc('day', now()) + interval '1 hour')
ON CONFLICT DO NOTHING;
SELECT count(*) AS still_one FROM coherence.metrics WHERE "timestamp" = date_trunc('day', now()) + interval '1 hour';

-- Detection over one day reads that day's partition only (the default partition may hold any
-- day not covered, and this one is).
CREATE FUNCTION pg_temp.plan(q text) RETURNS SETOF text LANGUAGE plpgsql AS
$$ BEGIN RETURN QUERY EXECUTE 'EXPLAIN (COSTS OFF) ' || q; END $$;
SELECT array_agg(substring(line from ' on (metrics_\w+)')) =
       ARRAY['metrics_p' || to_char(now() - interval '10 days', 'YYYYMMDD')] AS reads_that_day_only
  FROM pg_temp.plan(format($q$SELECT * FROM coherence.samples(%L, %L)$q$,
                           date_trunc('day', now()) - interval '10 days',
                           date_trunc('day', now()) - interval '9 days')) AS line
 WHERE line ~ ' on metrics_';

-- The job makes nothing when tomorrow's partition exists, and its run is unchanged.
SELECT (coherence.run_detection()) ? 'error' AS job_failed;
SELECT count(*) AS day_partitions FROM coherence.metrics_partitions WHERE NOT is_default;

-- Retention: days that ended 9 days ago or earlier are dropped whole; the default partition's
-- rows before the cutoff are deleted; today's data stays.
SELECT action, count(*), sum(rows) AS rows FROM coherence.drop_old_data(interval '9 days') GROUP BY action ORDER BY action;
SELECT count(*) AS rows_left, count(*) FILTER (WHERE "timestamp" >= date_trunc('day', now())) AS today
  FROM coherence.metrics;

-- Before a backfill: every day from `since` on gets its partition (those missing: 10 of the 16).
SELECT count(*) AS made_for_backfill FROM coherence.create_partitions(since => now() - interval '12 days');
SELECT count(*) AS day_partitions FROM coherence.metrics_partitions WHERE NOT is_default;

-- The job refreshes the last sample and cadence of the series written since, from the latest
-- 33 samples: found near the newest (40 rows in a row), or in the whole table after a gap.
CREATE FUNCTION pg_temp.state_as_reference() RETURNS TABLE (metric text, last_at timestamptz, cadence interval, as_reference boolean)
LANGUAGE sql AS $$
SELECT s.metric, s.last_at, s.cadence,
       (s.last_at, s.last_value, s.cadence) IS NOT DISTINCT FROM (r.last_at, r.last_value, r.cadence)
  FROM coherence.series_state s
 CROSS JOIN LATERAL (SELECT max(t.ts) AS last_at, (array_agg(t.value ORDER BY t.ts DESC))[1] AS last_value,
                            coherence.series_cadence(array_agg(t.ts)) AS cadence
                       FROM (SELECT m."timestamp" AS ts, m.value FROM coherence.metrics m
                              WHERE m.host = s.host AND m.metric_name = s.metric
                              ORDER BY m."timestamp" DESC LIMIT 33) t) r
 WHERE s.host = 'db-1' ORDER BY s.metric $$;
INSERT INTO coherence.metrics (host, metric_name, value, "timestamp")
SELECT 'db-1', 'cpu', 50 + i % 3, date_trunc('day', now()) + interval '1 hour' + i * interval '1 minute'
  FROM generate_series(1, 40) i;
SELECT (coherence.run_detection()) ? 'error' AS job_failed;
SELECT metric, last_at - date_trunc('day', now()) AS last_at_today, cadence, as_reference FROM pg_temp.state_as_reference();
INSERT INTO coherence.metrics (host, metric_name, value, "timestamp")
VALUES ('db-1', 'cpu', 60, date_trunc('day', now()) + interval '5 hours');
SELECT (coherence.run_detection()) ? 'error' AS job_failed;
SELECT metric, last_at - date_trunc('day', now()) AS last_at_today, cadence, as_reference FROM pg_temp.state_as_reference();
-- A series sampled millennia apart (hostile timestamps): the refresh of its state does not
-- overflow on the next run.
INSERT INTO coherence.metrics (host, metric_name, value, "timestamp")
VALUES ('db-9', 'x', 1, '2025-01-01 00:00+00'), ('db-9', 'x', 2, '9400-01-01 00:00+00'),
       ('db-9', 'x', 3, '16800-01-01 00:00+00');
SELECT (coherence.run_detection()) ? 'error' AS job_failed;
SELECT cadence > interval '7000 years' AS cadence_of_millennia FROM coherence.series_state WHERE host = 'db-9';
INSERT INTO coherence.metrics (host, metric_name, value, "timestamp") VALUES ('db-9', 'x', 4, '16801-01-01 00:00+00');
SELECT (coherence.run_detection()) ? 'error' AS job_failed;
SELECT last_at FROM coherence.series_state WHERE host = 'db-9';
DELETE FROM coherence.metrics WHERE host = 'db-9';

-- Bad input: a clear error, nothing done.
\set VERBOSITY default
\set SHOW_CONTEXT never
SELECT * FROM coherence.drop_old_data(interval '5 minutes');
SELECT * FROM coherence.create_partitions(ahead => interval '-1 day');
SELECT * FROM coherence.create_partitions(NULL);
SELECT * FROM coherence.create_partitions(since => 'infinity');
SELECT * FROM coherence.create_partitions(since => '2000-01-01 00:00+00');
SELECT count(*) AS strict_null FROM coherence.drop_old_data(NULL);
\set VERBOSITY terse

-- Restore what earlier tests left.
DO $$ DECLARE r record; BEGIN
  FOR r IN SELECT partition FROM coherence.metrics_partitions WHERE NOT is_default LOOP
    EXECUTE format('DROP TABLE coherence.%I', r.partition);
  END LOOP; END $$;
TRUNCATE coherence.metrics;
INSERT INTO coherence.metrics SELECT * FROM part_t.saved;
DROP SCHEMA part_t CASCADE;
