-- Collective anomalies and incidents without error events (issue 11): six metrics of one host
-- dip together by 1.5σ for 10 minutes, each within its own normal range, with no error event:
-- one incident naming at least five of them, led by the metric that moved first (cpu_wait,
-- five minutes earlier). Two more metrics of the host stay normal; a second host has one
-- metric dipping alone, which is no collective event and no incident.
SET client_min_messages = warning;
SET TimeZone = 'UTC';
TRUNCATE coherence.metrics, coherence.signal_events, coherence.pending_series,
         coherence.anomalies, coherence.incidents, coherence.detection_runs, coherence.series_state CASCADE;

-- Deterministic N(0, 1) noise: Box-Muller on a hash of (metric, minute).
CREATE FUNCTION pg_temp.noise(k int, i int) RETURNS float8 LANGUAGE sql IMMUTABLE AS $$
    SELECT sqrt(-2 * ln(greatest(u1, 1e-12))) * cos(2 * pi() * u2)
      FROM (SELECT ((abs(hashint4(k * 100003 + i)) % 1000000) + 0.5) / 1000000.0 AS u1,
                   ((abs(hashint4(k * 7919 + i * 31 + 17)) % 1000000) + 0.5) / 1000000.0 AS u2) s
$$;
INSERT INTO coherence.metrics (host, metric_name, value, "timestamp")
SELECT 'db-1', m.name,
       50 + pg_temp.noise(m.k, i)
          - CASE WHEN m.k <= 6 AND i >= 3480 - CASE WHEN m.name = 'cpu_wait' THEN 5 ELSE 0 END
                               AND i < 3490 THEN 1.5 ELSE 0 END,
       '2025-12-11 00:00+00'::timestamptz + i * interval '1 minute'
  FROM (VALUES (1, 'cpu_wait'), (2, 'disk_busy'), (3, 'net_rx'), (4, 'net_tx'), (5, 'qps'),
               (6, 'threads'), (7, 'memory'), (8, 'swap')) m(k, name),
       generate_series(0, 3 * 1440 - 1) i;
INSERT INTO coherence.metrics (host, metric_name, value, "timestamp")
SELECT 'db-2', 'm' || k,
       50 + pg_temp.noise(k + 20, i) - CASE WHEN k = 1 AND i >= 3480 AND i < 3490 THEN 1.5 ELSE 0 END,
       '2025-12-11 00:00+00'::timestamptz + i * interval '1 minute'
  FROM generate_series(1, 8) k, generate_series(0, 3 * 1440 - 1) i;

-- The detector alone: one event on db-1 whose members are dipping metrics; none on db-2.
SELECT host, count(*) AS members, bool_and(metric NOT IN ('memory', 'swap')) AS only_dipping,
       bool_and(score < 0) AS all_down, min(started_at) AS first_onset
  FROM coherence.detect_collective('2025-12-13 00:00', '2025-12-14 00:00', interval '2 days', 0)
 GROUP BY host ORDER BY host;
SELECT metric FROM coherence.detect_collective('2025-12-13 00:00', '2025-12-14 00:00', interval '2 days', 0)
 ORDER BY started_at, metric LIMIT 1;

-- The job: one incident without errors, led by cpu_wait, naming five or more members.
SELECT (coherence.run_detection())->'incidents_opened' AS opened;
SELECT host, error_count, first_error_at IS NULL AS no_first_error, hypothesis,
       jsonb_array_length(ranking) >= 5 AS five_or_more_members, ranking->0->>'metric' AS lead,
       narrative !~ '(NaN|inf)' AS narrative_has_numbers_only
  FROM coherence.incidents WHERE status <> 'merged' ORDER BY id;
SELECT split_part(narrative, E'\n', 1) AS narrative_head,
       narrative ~ 'led by cpu_wait \(it moved first\)\.$' AS names_the_lead
  FROM coherence.incidents WHERE status <> 'merged';

-- docs/incidents.md: the ranking of the incident (the first mover leads).
SELECT r->>'metric' AS metric, r->>'kind' AS kind, (r->>'score')::float8 > 0 AS scored
  FROM coherence.incidents i, jsonb_array_elements(i.ranking) r
 WHERE i.status <> 'merged' LIMIT 1;

-- One pass for both detectors (coherence.detect_all, what run_detection runs): exactly the rows
-- of detect_events and detect_collective together, at any min_risk, without and with
-- per-series rules (a threshold and detectors on one series, a window and min_risk on another:
-- those series are scored for the collective detector on their own).
CREATE FUNCTION pg_temp.both_ways(min_risk float8) RETURNS TABLE (all_rows bigint, collective_rows bigint, same_rows boolean)
LANGUAGE sql AS $$
    SELECT (SELECT count(*) FROM coherence.detect_all('2025-12-13 00:00', '2025-12-14 00:00', interval '2 days', min_risk)),
           (SELECT count(*) FROM coherence.detect_all('2025-12-13 00:00', '2025-12-14 00:00', interval '2 days', min_risk)
             WHERE detector = 'collective'),
           (SELECT array_agg(a ORDER BY a) FROM coherence.detect_all('2025-12-13 00:00', '2025-12-14 00:00', interval '2 days', min_risk) a)
         = (SELECT array_agg(a ORDER BY a) FROM (
                SELECT * FROM coherence.detect_events('2025-12-13 00:00', '2025-12-14 00:00', interval '2 days', min_risk)
                UNION ALL
                SELECT * FROM coherence.detect_collective('2025-12-13 00:00', '2025-12-14 00:00', interval '2 days', min_risk)) a)
$$;
SELECT * FROM pg_temp.both_ways(0);
SELECT * FROM pg_temp.both_ways(NULL);
INSERT INTO coherence.series_rules (host_pattern, metric_pattern, threshold, detectors)
VALUES ('db-1', 'cpu_wait', 4, '{robust,collective}');
INSERT INTO coherence.series_rules (host_pattern, metric_pattern, window_points, min_risk)
VALUES ('db-2', 'm1', 50, 0.5);
INSERT INTO coherence.series_rules (host_pattern, metric_pattern, direction, capacity)
VALUES ('db-1', 'qps', 'down', 80), ('db-2', 'm2', 'up', NULL);
SELECT * FROM pg_temp.both_ways(0);
SELECT * FROM pg_temp.both_ways(NULL);
DELETE FROM coherence.series_rules;
-- The examples of their comments run.
SELECT substring(obj_description(p.oid, 'pg_proc') FROM 'E\.g\. (SELECT .*);$')
  FROM pg_proc p
 WHERE p.pronamespace = 'coherence'::regnamespace AND p.proname IN ('detect_all', 'find_host_events_points')
 ORDER BY p.proname \gexec
-- A host's metrics analysed together: per-metric settings are parallel to the metrics.
SELECT count(*) FROM coherence.find_host_events_points(ARRAY['a', 'b'], ARRAY[NULL, NULL]::bytea[], threshold => ARRAY[5.0]);
SELECT count(*) FROM coherence.find_host_events_points(ARRAY['a', 'a'], ARRAY['\x'::bytea, '\x'::bytea]);

-- docs/detection.md: collective anomalies of any table.
SELECT c.metric, c.started_at, round(c.share::numeric, 2) > 0 AS has_share, round(c.risk::numeric, 2) > 0 AS has_risk
  FROM (SELECT array_agg(metric_name) AS m, array_agg("timestamp") AS ts, array_agg(value) AS v
          FROM coherence.metrics WHERE host = 'db-1') h
 CROSS JOIN LATERAL coherence.find_collective(h.m, h.ts, h.v, host => 'db-1') c
 ORDER BY c.started_at, c.metric;

-- Packed points (coherence.points, what detect_events and detect_collective group with): 16
-- bytes a point, NULLs and infinite times skipped, NULL for no rows; find_collective_points and
-- find_events_points give exactly the rows of find_collective and find_events, whatever order
-- the metrics come in.
SELECT count(*) AS series, bool_and(length(p) = 16 * n) AS sixteen_bytes_a_point
  FROM (SELECT metric_name, coherence.points("timestamp", value) AS p, count(*) AS n
          FROM coherence.metrics WHERE host = 'db-1' GROUP BY metric_name) x;
SELECT length(coherence.points(t, v)) AS bytes
  FROM (VALUES (now(), 1.0::float8), (NULL, 2.0), (now(), NULL), ('infinity', 3.0)) x(t, v);
SELECT coherence.points(t, v) IS NULL AS no_rows_is_null
  FROM (SELECT now() AS t, 1.0::float8 AS v WHERE false) x;
CREATE TEMP TABLE packed_db1 AS
SELECT metric_name AS metric, coherence.points("timestamp", value) AS p,
       array_agg("timestamp") AS ts, array_agg(value) AS v
  FROM coherence.metrics WHERE host = 'db-1' GROUP BY metric_name;
SELECT (SELECT count(*) FROM coherence.find_collective_points(
            (SELECT array_agg(metric ORDER BY metric) FROM packed_db1),
            (SELECT array_agg(p ORDER BY metric) FROM packed_db1), host => 'db-1')) AS members,
       (SELECT array_agg(c ORDER BY c) FROM coherence.find_collective_points(
            (SELECT array_agg(metric ORDER BY metric) FROM packed_db1),
            (SELECT array_agg(p ORDER BY metric) FROM packed_db1), host => 'db-1') c)
     = (SELECT array_agg(c ORDER BY c) FROM coherence.find_collective_points(
            (SELECT array_agg(metric ORDER BY metric DESC) FROM packed_db1),
            (SELECT array_agg(p ORDER BY metric DESC) FROM packed_db1), host => 'db-1') c)
       AS same_in_any_order,
       (SELECT array_agg(c ORDER BY c) FROM coherence.find_collective_points(
            (SELECT array_agg(metric ORDER BY metric) FROM packed_db1),
            (SELECT array_agg(p ORDER BY metric) FROM packed_db1), host => 'db-1') c)
     = (SELECT array_agg(c ORDER BY c)
          FROM (SELECT array_agg(metric_name) AS m, array_agg("timestamp") AS ts, array_agg(value) AS v
                  FROM coherence.metrics WHERE host = 'db-1') h,
               LATERAL coherence.find_collective(h.m, h.ts, h.v, host => 'db-1') c)
       AS same_as_arrays;
WITH s AS (
    SELECT '2025-01-01 00:00+00'::timestamptz + i * interval '1 hour' AS ts,
           100.0 + ((i * 7919) % 13 - 6)
           + CASE WHEN i = 150 THEN 120 WHEN i = 220 THEN -80 WHEN i >= 300 THEN 150 ELSE 0 END AS v
      FROM generate_series(0, 399) i ORDER BY i DESC)
SELECT (SELECT count(*) FROM coherence.find_events_points((SELECT coherence.points(ts, v) FROM s))) AS events,
       (SELECT array_agg(e ORDER BY e) FROM coherence.find_events_points((SELECT coherence.points(ts, v) FROM s), host => 'h', metric => 'cpu') e)
     = (SELECT array_agg(e ORDER BY e) FROM coherence.find_events((SELECT array_agg(ts) FROM s), (SELECT array_agg(v) FROM s), host => 'h', metric => 'cpu') e)
       AS same_as_arrays;
-- Bad input: a length that is no whole number of points, arrays of different lengths.
SELECT count(*) FROM coherence.find_events_points('\x0102'::bytea);
SELECT count(*) FROM coherence.find_collective_points(ARRAY['a', 'b'], ARRAY['\x'::bytea]);
SELECT count(*) AS null_arrays FROM coherence.find_collective_points(NULL, NULL);

-- Involved metrics: beyond the metrics whose anomalies formed an incident, the host's metrics
-- that deviated during it (5 robust σ against their own previous day). db-3's "load" jumps by
-- 10σ for 5 minutes; "idle" stays normal; "short" has too little history to be judged.
INSERT INTO coherence.metrics (host, metric_name, value, "timestamp")
SELECT 'db-3', m.name,
       50 + pg_temp.noise(m.k + 40, i) + CASE WHEN m.name = 'load' AND i BETWEEN 3000 AND 3004 THEN 10 ELSE 0 END,
       '2025-12-11 00:00+00'::timestamptz + i * interval '1 minute'
  FROM (VALUES (1, 'load', 0), (2, 'idle', 0), (3, 'short', 2990)) m(k, name, first),
       generate_series(0, 3100) i
 WHERE i >= m.first;
SELECT x.metric, round(x.score::numeric) AS score, x.peak_at, round(x.baseline::numeric) AS baseline
  FROM (SELECT array_agg(metric_name) AS m, array_agg("timestamp") AS ts, array_agg(value) AS v
          FROM coherence.metrics WHERE host = 'db-3') h
 CROSS JOIN LATERAL coherence.involved_metrics(h.m, h.ts, h.v, '2025-12-13 02:00+00', '2025-12-13 02:10+00') x;
INSERT INTO coherence.series_state (host, metric, last_at, last_value)
SELECT host, metric_name, max("timestamp"), 0 FROM coherence.metrics WHERE host = 'db-3' GROUP BY 1, 2;
SELECT e->>'metric' AS metric, e->>'kind' AS kind
  FROM jsonb_array_elements(coherence.incident_involved('db-3', '2025-12-13 02:00+00', '2025-12-13 02:10+00')) e;
SELECT coherence.incident_involved('db-3', '2025-12-13 02:00+00', '2025-12-13 02:10+00', ARRAY['load']) AS load_excluded,
       coherence.incident_involved('db-3', '2025-12-13 02:10+00', '2025-12-13 02:00+00') AS backwards,
       coherence.incident_involved('nobody', '2025-12-13 02:00+00', '2025-12-13 02:10+00') AS unknown_host;
SELECT count(*) AS null_arrays FROM coherence.involved_metrics(NULL, NULL, NULL, now(), now());

-- Peers: cpu spikes on four web hosts at once (load), and on web-1 memory spikes too, a minute
-- later (its own). web-1's incident is led by memory, with cpu marked as shown by all 3 peers;
-- the other hosts' incidents are fleet-wide load.
TRUNCATE coherence.metrics, coherence.signal_events, coherence.pending_series,
         coherence.anomalies, coherence.incidents, coherence.detection_runs, coherence.series_state CASCADE;
INSERT INTO coherence.metrics (host, metric_name, value, "timestamp")
SELECT 'web-' || h, m,
       40 + pg_temp.noise(h * 10 + CASE m WHEN 'cpu' THEN 1 ELSE 2 END, i)
          + CASE WHEN m = 'cpu' AND i BETWEEN 2880 AND 2882 THEN 30
                 WHEN m = 'memory' AND h = 1 AND i BETWEEN 2881 AND 2883 THEN 30 ELSE 0 END,
       '2025-12-11 00:00+00'::timestamptz + i * interval '1 minute'
  FROM generate_series(1, 4) h, unnest(ARRAY['cpu', 'memory']) m, generate_series(0, 2 * 1440 + 59) i;
SELECT (coherence.run_detection()) ? 'error' AS job_failed;
SELECT host, hypothesis, narrative FROM coherence.incidents ORDER BY host;
SELECT i.host, r->>'metric' AS metric, (r->>'score')::float8 > 0 AS scored, r->'peers' AS peers
  FROM coherence.incidents i, jsonb_array_elements(i.ranking) WITH ORDINALITY AS x(r, pos)
 WHERE i.host = 'web-1' AND r->>'kind' <> 'involved' ORDER BY pos;
SELECT count(*) AS fleet_wide_load_hypotheses
  FROM coherence.incidents i, jsonb_array_elements(i.hypotheses) h WHERE h->>'cause' = 'fleet-wide load';
-- Without the fleet (coherence.correlate called as before 0.6.0), no peer evidence.
SELECT count(*) AS members_with_peers
  FROM jsonb_array_elements(coherence.correlate(
         (SELECT jsonb_agg(jsonb_build_object('id', 'anomaly:' || a.id, 'host', a.host, 'kind', 'anomaly',
                 'metric', a.metric, 'anomaly_kind', a.kind, 'start', (extract(epoch FROM a.started_at) * 1e6)::bigint,
                 'end', (extract(epoch FROM a.ended_at) * 1e6)::bigint, 'risk', a.risk))
            FROM coherence.anomalies a))) i,
       jsonb_array_elements(i->'ranking') r WHERE r ? 'peers';
SELECT coherence.correlate('[]'::jsonb, fleet => '{"cpu": "many"}'::jsonb);
-- The example of coherence.correlate's comment runs.
SELECT substring(obj_description('coherence.correlate(jsonb, jsonb, interval, integer, interval, jsonb)'::regprocedure, 'pg_proc')
                 FROM 'E\.g\. (SELECT .*);$') \gexec

-- Parameter errors.
SELECT coherence.detect_collective('2025-12-14', '2025-12-13');
SELECT count(*) FROM coherence.find_collective(ARRAY['a'], ARRAY[now(), now()], ARRAY[1.0]::float8[]);
SELECT count(*) AS null_arrays FROM coherence.find_collective(NULL, NULL, NULL);

TRUNCATE coherence.metrics, coherence.signal_events, coherence.pending_series,
         coherence.anomalies, coherence.incidents, coherence.detection_runs, coherence.series_state CASCADE;

-- Lead evidence through the job: on lead-1, queue spikes and latency follows two minutes later,
-- four times at irregular hours (5 to 24), each time worse (a spike as large as an earlier one
-- would be the series' normal, by the risk's calibration); at hour 30 both spike in the same
-- minute. The incident then is led by queue, on the history's word.
INSERT INTO coherence.metrics (host, metric_name, value, "timestamp")
SELECT 'lead-1', m,
       30.0 + (hashint4(i * 2 + length(m)) & 1023) / 102.4
       + coalesce((SELECT e.size FROM (VALUES (300, 50), (710, 75), (1150, 110), (1420, 165), (1800, 250)) e(at, size)
                    WHERE i = e.at + CASE WHEN m = 'latency' AND e.at < 1800 THEN 2 ELSE 0 END), 0),
       '2025-12-10 00:00+00'::timestamptz + i * interval '1 minute'
  FROM unnest(ARRAY['queue', 'latency']) m, generate_series(0, 40 * 60) i;
SELECT (coherence.run_detection()) ? 'error' AS job_failed;
SELECT opened_at, jsonb_path_query_array(ranking, '$[*] ? (@.kind != "involved").metric') AS members,
       jsonb_path_query_array(ranking, '$[*].lead') AS lead
  FROM coherence.incidents WHERE host = 'lead-1' ORDER BY opened_at;
SELECT substring(narrative FROM 'Hypothesis: .*$') AS hypothesis_line
  FROM coherence.incidents WHERE host = 'lead-1' ORDER BY opened_at DESC LIMIT 1;
-- Ten quiet hours later, with a 30-hour lookback, the range starts after the first episode:
-- it comes as history (coherence.lead_horizon() before the range) for the incidents less than
-- a day after it, and no stored incident changes (without it, the one at 23:40 would lose its
-- lead evidence and be rewritten).
INSERT INTO coherence.metrics (host, metric_name, value, "timestamp")
SELECT 'lead-1', m, 30.0 + (hashint4(i * 2 + length(m)) & 1023) / 102.4, '2025-12-10 00:00+00'::timestamptz + i * interval '1 minute'
  FROM unnest(ARRAY['queue', 'latency']) m, generate_series(40 * 60 + 1, 50 * 60) i;
SELECT r->'since' AS since, r->'incidents_updated' AS incidents_updated
  FROM coherence.run_detection(lookback => '30 hours') r;
SELECT opened_at, jsonb_path_query_array(ranking, '$[*].lead') AS lead_after
  FROM coherence.incidents WHERE host = 'lead-1' AND opened_at > '2025-12-10 20:00+00' ORDER BY opened_at;
-- The example of coherence.lead_horizon's comment runs.
SELECT substring(obj_description('coherence.lead_horizon()'::regprocedure, 'pg_proc')
                 FROM 'E\.g\. (SELECT .*);$') \gexec

-- An incident that opens before a run's range keeps its day of history: on lead-2, the same
-- four spike episodes (the first at 05:55), then queue shifts up at 05:49 the next day and
-- latency three minutes later, both for about half an hour. A run whose range starts at 06:00,
-- inside the shifts, recomputes that incident from 05:49: its history must start at 05:49 the
-- day before (the host's first anomaly in the range), not at 06:00, or it loses the 05:55
-- episode.
INSERT INTO coherence.metrics (host, metric_name, value, "timestamp")
SELECT 'lead-2', m,
       30.0 + (hashint4(i * 2 + length(m)) & 1023) / 102.4
       + coalesce((SELECT e.size FROM (VALUES (355, 50), (700, 75), (1100, 110), (1400, 165)) e(at, size)
                    WHERE i = e.at + CASE WHEN m = 'latency' THEN 2 ELSE 0 END), 0)
       + CASE WHEN i >= 1790 + CASE WHEN m = 'latency' THEN 2 ELSE 0 END
               AND i < 1820 + CASE WHEN m = 'latency' THEN 2 ELSE 0 END THEN 10 ELSE 0 END,
       '2025-12-10 00:00+00'::timestamptz + i * interval '1 minute'
  FROM unnest(ARRAY['queue', 'latency']) m, generate_series(0, 40 * 60) i;
SELECT (coherence.run_detection()) ? 'error' AS job_failed;
SELECT opened_at, jsonb_path_query_array(ranking, '$[*] ? (@.kind != "involved").metric') AS members,
       jsonb_path_query_array(ranking, '$[*].lead') AS lead
  FROM coherence.incidents WHERE host = 'lead-2' AND opened_at BETWEEN '2025-12-11 00:00+00' AND '2025-12-11 12:00+00';
INSERT INTO coherence.metrics (host, metric_name, value, "timestamp")
SELECT 'lead-2', m, 30.0 + (hashint4(i * 2 + length(m)) & 1023) / 102.4, '2025-12-10 00:00+00'::timestamptz + i * interval '1 minute'
  FROM unnest(ARRAY['queue', 'latency']) m, generate_series(40 * 60 + 1, 50 * 60) i;
SELECT r->'since' AS since, r->'incidents_updated' AS incidents_updated
  FROM coherence.run_detection(lookback => '10 hours 1 minute') r;
SELECT opened_at, jsonb_path_query_array(ranking, '$[*].lead') AS lead_after
  FROM coherence.incidents WHERE host = 'lead-2' AND opened_at BETWEEN '2025-12-11 00:00+00' AND '2025-12-11 12:00+00';

-- A host too large for the pass over both detectors (out of memory, array limits: simulated
-- here by a detect_all that fails so) costs the collective anomalies, with a WARNING, never
-- the run: run_detection finds each series' own events with detect_events instead. (db-3:
-- six metrics dipping together, and a spike on one.)
INSERT INTO coherence.metrics (host, metric_name, value, "timestamp")
SELECT 'db-3', 'm' || k,
       50 + pg_temp.noise(k + 40, i) - CASE WHEN i >= 3480 AND i < 3490 THEN 1.5 ELSE 0 END
          + CASE WHEN k = 1 AND i = 3000 THEN 12 ELSE 0 END,
       '2025-12-11 00:00+00'::timestamptz + i * interval '1 minute'
  FROM generate_series(1, 6) k, generate_series(0, 3 * 1440 - 1) i;
SELECT pg_get_functiondef('coherence.detect_all(timestamptz, timestamptz, interval, double precision)'::regprocedure) AS detect_all_def \gset
CREATE OR REPLACE FUNCTION coherence.detect_all(since timestamptz, until timestamptz,
                                                lookback interval DEFAULT interval '7 days',
                                                min_risk double precision DEFAULT NULL)
RETURNS TABLE (host text, metric text, detector text, kind text, started_at timestamptz,
               ended_at timestamptz, peak_at timestamptz, peak_value double precision,
               baseline double precision, score double precision, risk double precision, summary text)
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'simulated: array size exceeds the maximum allowed' USING ERRCODE = 'program_limit_exceeded';
END
$$;
TRUNCATE coherence.anomalies, coherence.incidents CASCADE;
SET client_min_messages = warning;
SELECT r ? 'error' AS job_failed FROM coherence.run_detection(full_rescan => true) r;
SELECT count(*) FILTER (WHERE detector = 'collective') AS collective,
       count(*) FILTER (WHERE detector <> 'collective') > 0 AS own_events
  FROM coherence.anomalies;
\set ECHO none
SELECT :'detect_all_def' \gexec
\set ECHO all
SELECT r ? 'error' AS job_failed FROM coherence.run_detection(full_rescan => true) r;
SELECT count(*) FILTER (WHERE detector = 'collective') > 0 AS collective,
       count(*) FILTER (WHERE detector <> 'collective') > 0 AS own_events
  FROM coherence.anomalies;
