-- Series dimensions (issue 14): labels travel in the metric name in Prometheus' canonical form,
-- name{key="value",...}; every detector keeps labelled series apart with no change. And the
-- ingestor's feed state: coherence.ingest_status, coherence.ingest_skipped.
SET client_min_messages = warning;
SET TimeZone = 'UTC';
TRUNCATE coherence.metrics, coherence.signal_events, coherence.pending_series,
         coherence.anomalies, coherence.incidents, coherence.detection_runs, coherence.series_state,
         coherence.series_rules, coherence.maintenance_windows, coherence.ingest_cursors,
         coherence.ingest_skipped RESTART IDENTITY CASCADE;

-- 1. Base name and labels of a series key.
SELECT k AS metric, coherence.series_name(k) AS name, coherence.series_labels(k) AS labels
  FROM unnest(ARRAY[
       'cpu',
       'disk.used{device="sda"}',
       'disk.used{device="sda",mount="/"}',
       'http_requests{code="200,500",path="/a\"b\\c\nd"}',
       'cpu{}',                      -- no label list: a plain name
       'cpu{core=0}',                -- unquoted value: a plain name
       'cpu{core="0"} ',             -- trailing text: a plain name
       '{core="0"}'                  -- no base name: a plain name
  ]) WITH ORDINALITY AS t(k, n)
 ORDER BY n;
SELECT coherence.series_labels('http_requests{code="200,500",path="/a\"b\\c\nd"}') ->> 'path' AS unescaped_path;
SELECT coherence.series_name(NULL) IS NULL AS strict_name, coherence.series_labels(NULL) IS NULL AS strict_labels;
-- The examples of the functions' and views' comments run.
SELECT substring(obj_description(p.oid, 'pg_proc') FROM 'E\.g\. (SELECT .*);$')
  FROM pg_proc p
 WHERE p.pronamespace = 'coherence'::regnamespace AND p.proname IN ('series_name', 'series_labels')
 ORDER BY p.proname \gexec

-- 2. The percent rule judges the base name: a labelled cpu series is a percent metric, a
--    label value never makes one.
SELECT k AS metric, coherence.metric_capacity(k) AS capacity, coherence.metric_unit(k) AS unit
  FROM unnest(ARRAY['cpu{core="0"}', 'disk{device="sda"}', 'latency_ms{route="/percent"}', 'disk.used{device="sda"}']) k;
SELECT setting, value, source FROM coherence.explain('stor-1', 'cpu{core="0"}') WHERE setting = 'capacity';

-- 3. Two devices of one host are two series: a spike on sda is an event of sda only.
INSERT INTO coherence.metrics (host, metric_name, value, "timestamp")
SELECT 'stor-1', m, 60.0 + ((i * 7919 + length(m)) % 11 - 5) * 0.5
                    + CASE WHEN m = 'disk.used{device="sda"}' AND i = 1300 THEN 30 ELSE 0 END,
       '2025-12-11 08:00+00'::timestamptz + i * interval '1 minute'
  FROM unnest(ARRAY['disk.used{device="sda"}', 'disk.used{device="sdb"}']) m, generate_series(0, 1439) i;
-- A labelled cpu series with a spike: its summary shows percent.
INSERT INTO coherence.metrics (host, metric_name, value, "timestamp")
SELECT 'stor-1', 'cpu{core="0"}', 30.0 + ((i * 7919) % 11 - 5) + CASE WHEN i = 1310 THEN 60 ELSE 0 END,
       '2025-12-11 08:00+00'::timestamptz + i * interval '1 minute'
  FROM generate_series(0, 1439) i;
SELECT metric_name, count(*) AS points FROM coherence.metrics WHERE host = 'stor-1' GROUP BY 1 ORDER BY 1;

SELECT host, metric, kind, detector, peak_at, round(peak_value::numeric, 1) AS peak_value, risk >= 0.5 AS high_risk
  FROM coherence.detect_events('2025-12-12 05:00+00', '2025-12-12 08:00+00')
 ORDER BY metric, peak_at, kind;
SELECT metric, flagged, summary
  FROM coherence.detect('2025-12-11 08:00+00', '2025-12-12 08:00+00')
 WHERE detector = 'spikes'
 ORDER BY metric;
-- A rule on one device's full key (a literal LIKE pattern) applies to that device only.
INSERT INTO coherence.series_rules (metric_pattern, threshold, note)
VALUES ('disk.used{device="sda"}', 100, 'sda spikes are expected');
SELECT metric, kind FROM coherence.detect_events('2025-12-12 05:00+00', '2025-12-12 08:00+00')
 ORDER BY metric, kind;
DELETE FROM coherence.series_rules;

-- The job records the anomalies per series; coherence.series lists the series with labels.
SELECT (coherence.run_detection()) ? 'error' AS job_failed;
SELECT host, metric, kind FROM coherence.anomalies ORDER BY metric, kind;
SELECT host, metric, name, labels, last_at, cadence FROM coherence.series ORDER BY host, metric;
SELECT labels ->> 'device' AS device, last_at FROM coherence.series WHERE name = 'disk.used' ORDER BY 1;

-- 4. Feed state: a healthy cursor, a failing one, skipped chunks.
INSERT INTO coherence.ingest_cursors (source, query, cursor_at, last_ok_at)
VALUES ('prometheus', 'node_filesystem_avail_bytes', now() - interval '2 minutes', now());
INSERT INTO coherence.ingest_cursors (source, query, cursor_at)
VALUES ('datadog-metrics', 'avg:system.disk.used{*} by {host,device}', now() - interval '3 hours');
SELECT source, failures, last_error IS NULL AS no_error, failing_since IS NULL AS healthy, updated_at IS NOT NULL AS stamped
  FROM coherence.ingest_cursors ORDER BY source;
-- A failed attempt, as the ingestor records it; then a second one.
UPDATE coherence.ingest_cursors
   SET last_error = 'HTTP 503 from api.datadoghq.com', failures = failures + 1,
       failing_since = coalesce(failing_since, now() - interval '10 minutes')
 WHERE source = 'datadog-metrics';
UPDATE coherence.ingest_cursors
   SET last_error = 'HTTP 429 rate limited', failures = failures + 1,
       failing_since = coalesce(failing_since, now())
 WHERE source = 'datadog-metrics';
INSERT INTO coherence.ingest_skipped (source, query, from_at, until_at, tries, error)
VALUES ('datadog-metrics', 'avg:system.disk.used{*} by {host,device}', '2025-12-12 00:00+00', '2025-12-12 01:00+00', 5, 'invalid JSON at line 1'),
       ('datadog-metrics', 'avg:system.disk.used{*} by {host,device}', '2025-12-12 01:00+00', '2025-12-12 02:00+00', 5, 'invalid JSON at line 1');
SELECT source, query, lag >= interval '2 minutes' AND lag < interval '1 hour' AS lag_minutes,
       lag >= interval '3 hours' AS lag_hours, last_ok_at IS NOT NULL AS has_ok, failures,
       failing_since <= now() - interval '10 minutes' AS failing_10_min, last_error, skipped_chunks
  FROM coherence.ingest_status ORDER BY source;
SELECT id, source, from_at, until_at, tries, error, skipped_at IS NOT NULL AS stamped FROM coherence.ingest_skipped ORDER BY id;
-- A skipped range is a real range.
\set VERBOSITY terse
INSERT INTO coherence.ingest_skipped (source, query, from_at, until_at, tries, error)
VALUES ('prometheus', 'up', '2025-12-12 01:00+00', '2025-12-12 01:00+00', 1, 'x');
INSERT INTO coherence.ingest_skipped (source, query, from_at, until_at, tries) VALUES ('prometheus', 'up', '2025-12-12 01:00+00', '2025-12-12 02:00+00', 1);
\set VERBOSITY default
-- Recovery: the cursor advances and the failure state clears.
UPDATE coherence.ingest_cursors
   SET cursor_at = now(), updated_at = now(), last_ok_at = now(), last_error = NULL, failures = 0, failing_since = NULL
 WHERE source = 'datadog-metrics';
SELECT source, failures, failing_since, last_error, skipped_chunks, lag < interval '1 minute' AS caught_up
  FROM coherence.ingest_status ORDER BY source;

-- The new tables are kept by pg_dump; the readers see the views, not the tables.
SELECT c.relname
  FROM pg_extension e, unnest(e.extconfig) AS cfg(oid) JOIN pg_class c ON c.oid = cfg.oid
 WHERE e.extname = 'coherence' AND c.relname LIKE 'ingest%' ORDER BY 1;
SELECT r AS relation, has_table_privilege('coherence_reader', r, 'SELECT') AS reader_selects
  FROM unnest(ARRAY['coherence.series', 'coherence.ingest_status', 'coherence.ingest_cursors', 'coherence.ingest_skipped']) r;

TRUNCATE coherence.metrics, coherence.signal_events, coherence.pending_series,
         coherence.anomalies, coherence.incidents, coherence.detection_runs, coherence.series_state,
         coherence.ingest_cursors, coherence.ingest_skipped RESTART IDENTITY CASCADE;
