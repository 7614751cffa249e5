-- coherence.detect: the seed's verdict lines for every series at once.
TRUNCATE coherence.metrics, coherence.signal_events;
-- A small deterministic fleet: a leaking host, a spiky host, a volatile host, a quiet host.
INSERT INTO coherence.metrics (host, metric_name, value, "timestamp")
SELECT h, m, v, ts FROM (
  SELECT h, m, '2025-12-11 08:00+00'::timestamptz + i * interval '1 minute' AS ts,
         CASE
           WHEN h = 'leaky' AND m = 'memory' THEN 40.0 + 50.0 * i / 2879.0 + (i % 5) * 0.2
           WHEN h = 'spiky' AND m = 'cpu' THEN CASE WHEN i % 97 = 0 AND i > 1500 THEN 95.0 ELSE 30.0 + (i % 7) END
           WHEN h = 'volatile' AND m = 'cpu' THEN 50.0 + (CASE WHEN i % 2 = 0 THEN 1 ELSE -1 END) * (1.0 + 3.0 * i / 2879.0)
           ELSE 30.0 + (i % 7)
         END AS v
    FROM unnest(ARRAY['leaky', 'spiky', 'volatile', 'quiet']) h,
         unnest(ARRAY['cpu', 'memory']) m,
         generate_series(0, 2879) i) s;
-- A numeric signal event series is analysed too; error events (no value) are not.
INSERT INTO coherence.signal_events (ts, host, fingerprint, severity, metric, value, source, source_id)
SELECT '2025-12-11 08:00+00'::timestamptz + i * interval '10 minutes', 'quiet', 'quiet:queue', 'info',
       'queue', 100 + i, 'test', 'q' || i
  FROM generate_series(0, 287) i;
INSERT INTO coherence.signal_events (ts, host, fingerprint, severity, metric, source, source_id)
VALUES ('2025-12-13 04:10+00', 'spiky', 'spiky:error', 'error', 'error', 'test', 'e1');

SELECT host, metric, detector, flagged, round(risk::numeric, 2) AS risk, summary, points
  FROM coherence.detect('2025-12-11 00:00+00', '2025-12-14 00:00+00')
 ORDER BY host, metric, detector;

-- The window is half-open [since, until).
SELECT sum(points) FILTER (WHERE detector = 'trend') AS points
  FROM coherence.detect('2025-12-11 08:00+00', '2025-12-11 09:00+00');

-- Bad windows are errors with a hint; NULL arguments give no rows (STRICT).
SELECT * FROM coherence.detect('2025-12-14', '2025-12-11');
SELECT count(*) FROM coherence.detect(NULL, now());
SELECT count(*) AS samples_with_null FROM coherence.samples(NULL, now());
-- coherence.samples is inlined into the caller's plan (no Function Scan materializing rows).
CREATE FUNCTION pg_temp.plan(q text) RETURNS SETOF text LANGUAGE plpgsql AS
$$ BEGIN RETURN QUERY EXECUTE 'EXPLAIN (COSTS OFF) ' || q; END $$;
SELECT count(*) FILTER (WHERE line LIKE '%Function Scan%') AS function_scans,
       count(*) FILTER (WHERE line ~ ' on (metrics\w*|signal_events) ') AS table_scans
  FROM pg_temp.plan($q$SELECT * FROM coherence.samples('2025-12-11', '2025-12-12')$q$) AS line;
