-- Incident correlation: coherence.correlate, coherence.run_detection, views, reader role.
SET TimeZone = 'UTC';

-- The correlator on its own (times in Unix microseconds): a CPU spike 3 minutes before three
-- errors, and a memory leak active throughout.
SELECT jsonb_pretty(coherence.correlate(
  '[{"id": "anomaly:1", "host": "web-1", "kind": "anomaly", "metric": "cpu", "anomaly_kind": "spike",
     "start": 1765598820000000, "end": 1765598820000000, "peak_value": 97.5, "risk": 0.9, "unit": "%"},
    {"id": "anomaly:2", "host": "web-1", "kind": "anomaly", "metric": "memory", "anomaly_kind": "leak",
     "start": 1765440000000000, "end": 1765612800000000, "peak_value": 90, "baseline": 40, "risk": 1.0, "unit": "%"},
    {"id": "error:a", "host": "web-1", "kind": "error", "start": 1765599000000000, "end": 1765599000000000},
    {"id": "error:b", "host": "web-1", "kind": "error", "start": 1765599060000000, "end": 1765599060000000},
    {"id": "error:c", "host": "web-1", "kind": "error", "start": 1765599120000000, "end": 1765599120000000}]',
  '[{"host": "web-1", "metric": "memory", "ts": 1765598990000000, "value": 86.25}]')) AS incidents;

-- Errors alone, fewer than min_errors: no incident; with min_errors => 1: an undetermined one.
SELECT coherence.correlate('[{"id": "error:x", "host": "h", "kind": "error", "start": 0, "end": 0}]') AS none;
SELECT i->'hypotheses'->0->>'cause' AS cause, i->>'narrative' AS narrative
  FROM jsonb_array_elements(coherence.correlate(
         '[{"id": "error:x", "host": "h", "kind": "error", "start": 0, "end": 0}]', min_errors => 1)) i;

-- Bad input is a clear error.
SELECT coherence.correlate('{"not": "an array"}');
SELECT coherence.correlate('[]', tolerance => '-5 minutes');

-- run_detection over a small fleet: web-1 leaks memory, spikes CPU, then errors; web-2 is quiet.
TRUNCATE coherence.metrics, coherence.signal_events, coherence.series_state;
INSERT INTO coherence.metrics (host, metric_name, value, "timestamp")
SELECT h, m,
       CASE WHEN m = 'memory' AND h = 'web-1' THEN 40.0 + 50.0 * i / 2879.0 + ((i * 31) % 7 - 3) * 0.2
            WHEN m = 'cpu' AND h = 'web-1' AND i = 2640 THEN 97.5
            ELSE 30.0 + ((i * 7919) % 11 - 5) END,
       '2025-12-11 08:00+00'::timestamptz + i * interval '1 minute'
  FROM unnest(ARRAY['web-1', 'web-2']) h, unnest(ARRAY['cpu', 'memory']) m, generate_series(0, 2879) i;
INSERT INTO coherence.signal_events (ts, host, service, fingerprint, severity, metric, source, source_id, message)
SELECT '2025-12-13 04:03+00'::timestamptz + k * interval '20 seconds', 'web-1', 'api', 'web-1:error',
       'error', 'error', 'test', 'e' || k, 'HTTP 503'
  FROM generate_series(0, 9) k;

SELECT r - 'run' - 'since' - 'until' AS first_run FROM coherence.run_detection() r;
SELECT host, metric, detector, kind, peak_at, round(risk::numeric, 2) AS risk FROM coherence.anomalies ORDER BY id;
SELECT id, host, status, opened_at, first_error_at, error_count, round(risk::numeric, 2) AS risk,
       hypothesis, round(confidence::numeric, 4) AS confidence, narrative
  FROM coherence.incidents ORDER BY id;
SELECT cause, effect, lag, round(strength::numeric, 4) AS strength
  FROM coherence.incident_edges ORDER BY cause, effect;

-- Idempotent: a second run, and a full rescan of the same data, change nothing.
CREATE TEMP VIEW snapshot AS
SELECT (SELECT jsonb_agg(to_jsonb(an) ORDER BY an.id) FROM coherence.anomalies an) AS anomalies,
       (SELECT jsonb_agg(to_jsonb(inc) ORDER BY inc.id) FROM coherence.incidents inc) AS incidents,
       (SELECT jsonb_agg(to_jsonb(ed) ORDER BY ed.incident_id, ed.cause, ed.effect)
          FROM coherence.incident_edges ed) AS edges;
CREATE TEMP TABLE before AS SELECT * FROM snapshot;
SELECT r - 'run' - 'since' - 'until' AS second_run FROM coherence.run_detection() r;
SELECT r - 'run' - 'since' - 'until' AS full_rescan FROM coherence.run_detection(full_rescan => true) r;
SELECT b.anomalies = s.anomalies AS anomalies_same, b.incidents = s.incidents AS incidents_same,
       b.edges = s.edges AS edges_same
  FROM before b, snapshot s;

-- The incident grows: more errors arrive later; it is updated in place, not duplicated.
INSERT INTO coherence.signal_events (ts, host, service, fingerprint, severity, metric, source, source_id)
SELECT '2025-12-13 04:07+00'::timestamptz + k * interval '30 seconds', 'web-1', 'api', 'web-1:error',
       'error', 'error', 'test', 'late' || k
  FROM generate_series(0, 5) k;
SELECT r - 'run' - 'since' - 'until' AS after_more_errors FROM coherence.run_detection() r;
SELECT id, status, error_count, last_signal_at FROM coherence.incidents ORDER BY id;

-- Views.
SELECT id, host, error_count, risk, hypothesis FROM coherence.active_incidents;
SELECT incident_id, signal, metric, kind, count(*) AS n, min(at) AS first_at
  FROM coherence.incident_timeline GROUP BY 1, 2, 3, 4 ORDER BY 1, 6;
SELECT host, metric, anomalies_24h, max_risk_24h, status FROM coherence.series_health ORDER BY host, metric;

-- The read-only role reads the views and nothing else.
SET ROLE coherence_reader;
SELECT count(*) AS visible_incidents FROM coherence.active_incidents;
SELECT count(*) FROM coherence.series_health;
SELECT count(*) FROM coherence.metrics;
SELECT count(*) FROM coherence.incidents;
DELETE FROM coherence.active_incidents;
SELECT coherence.run_detection();
RESET ROLE;

-- Bad arguments.
SELECT coherence.run_detection(tolerance => '0 minutes');
SELECT coherence.run_detection(lookback => NULL);
