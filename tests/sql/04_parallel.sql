-- Parallel aggregation gives the same results as a serial plan.
CREATE TABLE par AS
SELECT 'h' || (i % 20) AS host,
       '2025-01-01 00:00+00'::timestamptz + (i / 20) * interval '1 minute' AS ts,
       (i % 20) + 10.0 * sin(i / 500.0) + ((i * 7919) % 101) / 10.0
         + CASE WHEN i % 4999 = 0 THEN 80 ELSE 0 END AS value
  FROM generate_series(0, 199999) i;
ANALYZE par;

SET max_parallel_workers_per_gather = 0;
EXPLAIN (COSTS OFF)
SELECT host, coherence.variance_escalation(ts, value) FROM par GROUP BY host;
CREATE TEMP TABLE serial_result AS
SELECT host, (coherence.variance_escalation(ts, value)).*, NULL::int AS sep,
       (coherence.spikes(ts, value)).count AS spikes, (coherence.spikes(ts, value)).max_at,
       (coherence.trend(ts, value)).slope_per_hour
  FROM par GROUP BY host;
RESET max_parallel_workers_per_gather;

SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
SET max_parallel_workers_per_gather = 2;
SET parallel_leader_participation = off;
-- The comparison query itself runs with a parallel plan (Partial Aggregate under Gather).
EXPLAIN (COSTS OFF)
WITH p AS (
  SELECT host, coherence.variance_escalation(ts, value) AS v, coherence.spikes(ts, value) AS sp,
         coherence.trend(ts, value) AS t
    FROM par GROUP BY host)
SELECT count(*) FROM p;

WITH p AS (
  SELECT host, coherence.variance_escalation(ts, value) AS v, coherence.spikes(ts, value) AS sp,
         coherence.trend(ts, value) AS t
    FROM par GROUP BY host)
SELECT count(*) AS series,
       -- Exact equality for counts, windows and times; floats within 1e-9 relative.
       count(*) FILTER (WHERE s.windows <> (p.v).windows OR s.points <> (p.v).points
                          OR s.spikes <> (p.sp).count OR s.max_at <> (p.sp).max_at
                          OR s.flagged <> (p.v).flagged
                          OR abs(s.ratio - (p.v).ratio) > 1e-9 * abs(s.ratio)
                          OR abs(s.slope_per_hour - (p.t).slope_per_hour) > 1e-9 * abs(s.slope_per_hour)
                   ) AS mismatches
  FROM serial_result s JOIN p USING (host);
RESET ALL;
DROP TABLE par;

-- A 10-million-row group: no crash, exact counts (the spike state keeps 80 MB of values).
SELECT (r).points, (r).count, (r).max
  FROM (SELECT coherence.spikes('2025-01-01'::timestamptz + i * interval '1 second',
                                CASE WHEN i % 1000000 = 0 THEN 1e6 ELSE (i % 100)::float8 END) AS r
          FROM generate_series(1, 10000000) i) s;
