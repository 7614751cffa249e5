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
       (coherence.spikes(ts, value)).threshold AS spike_threshold,
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
                          OR s.max_at <> (p.sp).max_at
                          OR s.flagged <> (p.v).flagged
                          OR abs(s.ratio - (p.v).ratio) > 1e-9 * abs(s.ratio)
                          OR abs(s.slope_per_hour - (p.t).slope_per_hour) > 1e-9 * abs(s.slope_per_hour)
                          OR abs(s.spike_threshold - (p.sp).threshold) > 1e-9 * abs(s.spike_threshold)
                   ) AS mismatches,
       -- Every series has more than 128 distinct values, so spike counts come from the
       -- histogram: within its bound of the exact count (docs/detection.md), checked here
       -- generously as the points within 0.1 · (|threshold − mean| + stddev) of the threshold
       -- (the histogram's own bound is a relative 4–8% of the distance from its anchor).
       count(*) FILTER (WHERE abs(s.spikes - r.exact) > r.near
                           OR abs((p.sp).count - r.exact) > r.near) AS spike_counts_off
  FROM serial_result s JOIN p USING (host)
  JOIN LATERAL (
    SELECT count(*) FILTER (WHERE x.value > (p.sp).threshold) AS exact,
           count(*) FILTER (WHERE abs(x.value - (p.sp).threshold)
                                  <= 0.1 * (abs((p.sp).threshold - (p.sp).mean) + (p.sp).stddev)) AS near
      FROM par x WHERE x.host = s.host) r ON true;
-- coherence.points in parallel: workers pack their rows, the leader appends the parts. The
-- packed points are the same set as a serial plan's (in another order: readers sort, and of
-- values given at one time keep the lowest), so the events found on them are the same, also
-- for a series with values given twice at some times (h3: a second, higher value every 1,000
-- minutes).
INSERT INTO par SELECT host, ts, value + 100 FROM par WHERE host = 'h3' AND extract(epoch FROM ts)::bigint % 60000 = 0;
EXPLAIN (COSTS OFF)
SELECT host, coherence.points(ts, value) AS p FROM par GROUP BY host;
CREATE TEMP TABLE parallel_points AS
SELECT host, coherence.points(ts, value) AS p FROM par GROUP BY host;
SET max_parallel_workers_per_gather = 0;
CREATE TEMP TABLE serial_points AS
SELECT host, coherence.points(ts, value) AS p FROM par GROUP BY host;
RESET max_parallel_workers_per_gather;
SELECT count(*) AS series,
       count(*) FILTER (WHERE length(s.p) <> length(x.p)) AS lengths_differ,
       count(*) FILTER (WHERE (SELECT array_agg(e ORDER BY e) FROM coherence.find_events_points(s.p, min_risk => 0) e)
                              IS DISTINCT FROM
                              (SELECT array_agg(e ORDER BY e) FROM coherence.find_events_points(x.p, min_risk => 0) e)) AS events_differ,
       sum((SELECT count(*) FROM coherence.find_events_points(s.p, min_risk => 0))) AS events
  FROM serial_points s JOIN parallel_points x USING (host);
RESET ALL;
DROP TABLE par;

-- A 10-million-row group of 101 distinct values: the count is exact (the spike state keeps
-- up to 128 distinct values with their counts, in about 2 KB whatever the number of points).
SELECT (r).points, (r).count, (r).max
  FROM (SELECT coherence.spikes('2025-01-01'::timestamptz + i * interval '1 second',
                                CASE WHEN i % 1000000 = 0 THEN 1e6 ELSE (i % 100)::float8 END) AS r
          FROM generate_series(1, 10000000) i) s;

-- A 1-million-row group of distinct values: the histogram's count is within the points near
-- the threshold (as above) of a brute-force count.
CREATE TEMP TABLE big AS
SELECT '2025-01-01'::timestamptz + i * interval '1 second' AS ts,
       (50 + 5 * sin(i / 7000.0) + ((i::bigint * 7919) % 100003) / 10000.0
         + CASE WHEN i % 99991 = 0 THEN 60 ELSE 0 END)::float8 AS v
  FROM generate_series(1, 1000000) i;
SELECT (r).points, (r).count > 0 AS has_spikes, abs((r).count - exact) <= near AS within_bound,
       round((r).max::numeric, 6) AS max, (r).flagged
  FROM (SELECT coherence.spikes(ts, v) AS r FROM big) s,
  LATERAL (SELECT count(*) FILTER (WHERE v > (r).threshold) AS exact,
                  count(*) FILTER (WHERE abs(v - (r).threshold)
                                         <= 0.1 * (abs((r).threshold - (r).mean) + (r).stddev)) AS near
             FROM big) b;
DROP TABLE big;
