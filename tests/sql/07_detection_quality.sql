-- Detection quality regressions (issue: recurring patterns, change points, calibrated risk,
-- any table). Synthetic series with Gaussian noise from a seeded random(): each query states
-- the property it checks.
SET TimeZone = 'UTC';
SELECT setseed(0.42);
CREATE TEMP TABLE noise AS
SELECT i, sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random()) AS z
  FROM generate_series(0, 20159) i;
CREATE FUNCTION pg_temp.events(q text) RETURNS TABLE (kind text, started_at timestamptz, ended_at timestamptz, risk float8)
LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY EXECUTE format(
        'SELECT e.kind, e.started_at, e.ended_at, e.risk FROM (SELECT array_agg(ts) ts, array_agg(v) v FROM (%s) s) a,
                coherence.find_events(a.ts, a.v) e', q);
END $$;

-- 1. An hourly job that spikes (+40σ) at minute 47 of every hour for 7 days: the period is
--    learned and the job is normal; at most 2 events (the first peak is scored: minute 47 is
--    after the 24-point warm-up).
SELECT period, points FROM coherence.series_period(
    (SELECT array_agg('2025-12-01'::timestamptz + i * interval '1 minute') FROM noise WHERE i < 10080),
    (SELECT array_agg(100 + z + CASE WHEN i % 60 = 47 THEN 40 ELSE 0 END) FROM noise WHERE i < 10080));
SELECT count(*) <= 2 AS hourly_job_at_most_two_events FROM pg_temp.events($$
    SELECT '2025-12-01'::timestamptz + i * interval '1 minute' AS ts,
           100 + z + CASE WHEN i % 60 = 47 THEN 40 ELSE 0 END AS v FROM noise WHERE i < 10080$$);

-- 2. A daily two-hour peak (+30σ) on 5-minute data for 10 days: nothing after the first two days.
SELECT count(*) FILTER (WHERE started_at >= '2025-12-03') AS daily_peak_events_after_day_two
  FROM pg_temp.events($$
    SELECT '2025-12-01'::timestamptz + i * interval '5 minutes' AS ts,
           100 + z + CASE WHEN i % 288 BETWEEN 168 AND 191 THEN 30 ELSE 0 END AS v
      FROM noise WHERE i < 2880$$);

-- 3. The level drops by 1.5σ for 6 hours (minute data, 2 days): one level_shift_down event,
--    ending when the level is back; no spike.
SELECT kind, started_at BETWEEN '2025-12-02 05:00' AND '2025-12-02 07:00' AS starts_near_the_drop,
       ended_at BETWEEN '2025-12-02 12:00' AND '2025-12-02 14:00' AS ends_near_the_recovery
  FROM pg_temp.events($$
    SELECT '2025-12-01'::timestamptz + i * interval '1 minute' AS ts,
           100 + 2 * z - CASE WHEN i BETWEEN 1800 AND 2159 THEN 3 ELSE 0 END AS v
      FROM noise WHERE i < 2880$$);

-- 4. The variance halves (σ × 0.71) from day 2 on: a volatility_down event.
SELECT kind FROM pg_temp.events($$
    SELECT '2025-12-01'::timestamptz + i * interval '1 minute' AS ts,
           100 + z * CASE WHEN i >= 1440 THEN sqrt(0.5) ELSE 1 END AS v
      FROM noise WHERE i < 2880$$) WHERE kind LIKE 'volatility%';

-- 5. A linear drift of 3σ a day over 5 days (5-minute data; +15% in all, below the leak rule).
SELECT kind FROM pg_temp.events($$
    SELECT '2025-12-01'::timestamptz + i * interval '5 minutes' AS ts,
           100 + z + 3.0 * i / 288 AS v FROM noise WHERE i < 1440$$) WHERE kind LIKE 'drift%';

-- 6. A single spike is a spike, not a level shift.
SELECT kind, started_at FROM pg_temp.events($$
    SELECT '2025-12-01'::timestamptz + i * interval '1 minute' AS ts,
           100 + z + CASE WHEN i = 2000 THEN 60 ELSE 0 END AS v FROM noise WHERE i < 2880$$);

-- 7. Risk is calibrated, not saturated: a 10σ spike on minute data (1,440 tests a day) is a
--    moderate risk, a 14σ one is near the top, and risk never leaves [0, 1].
SELECT round(z_size) AS size, round(risk::numeric, 2) AS risk FROM (
    SELECT s.size AS z_size, (SELECT max(e.risk) FROM coherence.find_events(
               (SELECT array_agg('2025-12-01'::timestamptz + i * interval '1 minute') FROM noise WHERE i < 2880),
               (SELECT array_agg(100 + z + CASE WHEN i = 2000 THEN s.size ELSE 0 END) FROM noise WHERE i < 2880),
               min_risk => 0) e) AS risk
      FROM (VALUES (10.0), (14.0), (60.0)) s(size)) t ORDER BY 1;

-- 8. Baseline separate from the reporting window: the last hour, judged against 7 days of
--    history, finds the spike in it, without knowing about warm-up windows.
TRUNCATE coherence.metrics, coherence.signal_events;
INSERT INTO coherence.metrics (host, metric_name, value, "timestamp")
SELECT 'api-1', 'latency_ms', 100 + z + CASE WHEN i = 10070 THEN 50 ELSE 0 END,
       '2025-12-01'::timestamptz + i * interval '1 minute'
  FROM noise WHERE i < 10080;
SELECT host, metric, kind, peak_at, risk >= 0.8 AS page_worthy, summary
  FROM coherence.detect_events('2025-12-07 23:00', '2025-12-08 00:00');
-- With no lookback the last hour is too short to judge (and says nothing, not noise).
SELECT count(*) AS events_without_history
  FROM coherence.detect_events('2025-12-07 23:00', '2025-12-08 00:00', lookback => interval '0');
SELECT * FROM coherence.detect_events('2025-12-07', '2025-12-08', lookback => interval '-1 day');

-- 9. Any table: events per key of a user's own table, the documented LATERAL pattern.
CREATE TEMP TABLE my_requests (svc text, ts timestamptz, rps float8);
INSERT INTO my_requests
SELECT svc, '2025-12-01'::timestamptz + i * interval '1 minute',
       500 + 5 * z - CASE WHEN svc = 'checkout' AND i BETWEEN 2000 AND 2100 THEN 300 ELSE 0 END
  FROM noise, (VALUES ('checkout'), ('search')) v(svc) WHERE i < 2880;
SELECT r.svc, e.kind, e.started_at, e.risk >= 0.8 AS page_worthy, e.summary
  FROM (SELECT svc, array_agg(ts) AS ts, array_agg(rps) AS v FROM my_requests GROUP BY svc) r
 CROSS JOIN LATERAL coherence.find_events(r.ts, r.v, host => r.svc, metric => 'rps') e
 ORDER BY r.svc, e.started_at;

-- 10. NULL parameters mean the defaults (not an error); the kinds are one catalogue.
SELECT count(*) AS with_null_parameters FROM coherence.find_events(
    (SELECT array_agg(ts) FROM my_requests WHERE svc = 'checkout'),
    (SELECT array_agg(rps) FROM my_requests WHERE svc = 'checkout'),
    window_points => NULL, threshold => NULL, direction => NULL, min_risk => NULL);
SELECT * FROM coherence.anomaly_kinds();
SELECT coherence.metric_unit('cpu') AS cpu_unit, coherence.metric_capacity('disk_pct') AS disk_capacity,
       coherence.metric_capacity('latency_ms') AS latency_capacity;
SELECT * FROM coherence.find_events(ARRAY[now()], ARRAY[1.0]::float8[], min_risk => 2);
SELECT * FROM coherence.series_period(NULL, NULL);
-- detect_events: NULL times give no rows; min_risk 0 shows every candidate, the default hides
-- the routine ones.
SELECT count(*) AS null_since FROM coherence.detect_events(NULL, now());
SELECT count(*) FILTER (WHERE risk < coherence.default_min_risk()) > 0 AS min_risk_zero_shows_more,
       coherence.default_min_risk() AS default_min_risk
  FROM coherence.detect_events('2025-12-01', '2025-12-08', min_risk => 0);
