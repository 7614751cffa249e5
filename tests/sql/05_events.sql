-- Localized events: coherence.series_events, coherence.series_trend_event, coherence.detect_events.
SET TimeZone = 'UTC';

-- A deterministic noisy series (hourly, 400 points) with a spike, a drop and a level shift.
CREATE TEMP TABLE s AS
SELECT '2025-01-01 00:00+00'::timestamptz + i * interval '1 hour' AS ts,
       100.0 + ((i * 7919) % 13 - 6)
       + CASE WHEN i = 150 THEN 120 WHEN i = 220 THEN -80 WHEN i >= 300 THEN 150 ELSE 0 END AS v
  FROM generate_series(0, 399) i;

SELECT kind, started_at, ended_at, peak_at, peak_value, baseline, round(score::numeric, 1) AS score,
       points, round(risk::numeric, 2) AS risk
  FROM coherence.series_events((SELECT array_agg(ts) FROM s), (SELECT array_agg(v) FROM s));

-- Order of the input arrays does not matter.
SELECT count(*) AS events_from_reversed_input
  FROM coherence.series_events((SELECT array_agg(ts ORDER BY ts DESC) FROM s),
                               (SELECT array_agg(v ORDER BY ts DESC) FROM s));

-- Only rises.
SELECT kind, peak_at FROM coherence.series_events(
    (SELECT array_agg(ts) FROM s), (SELECT array_agg(v) FROM s), direction => 'up');

-- Edge cases: NULL arrays, empty arrays, NULL elements, too short, constant.
SELECT count(*) AS null_arrays FROM coherence.series_events(NULL, NULL);
SELECT count(*) AS empty_arrays FROM coherence.series_events('{}'::timestamptz[], '{}'::float8[]);
SELECT count(*) AS with_nulls FROM coherence.series_events(
    ARRAY['2025-01-01', NULL, '2025-01-03']::timestamptz[], ARRAY[1, 2, NULL]::float8[]);
SELECT count(*) AS constant FROM coherence.series_events(
    (SELECT array_agg(ts) FROM s), (SELECT array_agg(5.0::float8) FROM s));

-- Errors.
SELECT * FROM coherence.series_events(ARRAY[now()], ARRAY[1.0, 2.0]::float8[]);
SELECT * FROM coherence.series_events(ARRAY[now()], ARRAY[1.0]::float8[], direction => 'sideways');
SELECT * FROM coherence.series_events(ARRAY[now()], ARRAY[1.0]::float8[], window_points => 1);
SELECT * FROM coherence.series_events(ARRAY[now()], ARRAY[1.0]::float8[], threshold => 'NaN');
SELECT * FROM coherence.series_events(ARRAY[now()], ARRAY[1.0]::float8[], season_points => -1);

-- Trend events: a leak from 40% to 80% over 40 hours; 100% is reached 20 hours later.
SELECT started_at, ended_at, round(pct_change::numeric, 1) AS pct, round(r2::numeric, 3) AS r2,
       exhaustion_at, risk
  FROM coherence.series_trend_event(
        (SELECT array_agg('2025-01-01'::timestamptz + i * interval '6 minutes') FROM generate_series(0, 400) i),
        (SELECT array_agg(40.0 + i / 10.0 + ((i * 31) % 7 - 3) * 0.1) FROM generate_series(0, 400) i),
        capacity => 100);
-- Noise is not a leak.
SELECT count(*) AS noise_trend_events FROM coherence.series_trend_event(
    (SELECT array_agg(ts) FROM s WHERE ts < '2025-01-06'), (SELECT array_agg(v) FROM s WHERE ts < '2025-01-06'));

-- detect_events over the tables.
TRUNCATE coherence.metrics, coherence.signal_events;
INSERT INTO coherence.metrics (host, metric_name, value, "timestamp")
SELECT 'db-1', 'cpu', v, ts FROM s;
INSERT INTO coherence.metrics (host, metric_name, value, "timestamp")
SELECT 'db-1', 'memory', 40.0 + i / 10.0 + ((i * 31) % 7 - 3) * 0.1,
       '2025-01-01'::timestamptz + i * interval '6 minutes'
  FROM generate_series(0, 400) i;
SELECT host, metric, detector, kind, peak_at, round(risk::numeric, 2) AS risk, summary
  FROM coherence.detect_events('-infinity', 'infinity');
SELECT * FROM coherence.detect_events('2025-02-01', '2025-01-01');

-- Volatility: the noise is 5x higher from hour 24 to hour 32 of a 48-hour minute series.
SELECT kind, started_at, ended_at, round(peak_value::numeric, 2) AS noise,
       round(baseline::numeric, 2) AS baseline, round(score::numeric, 1) AS ratio, points,
       round(risk::numeric, 2) AS risk
  FROM coherence.series_volatility_events(
        (SELECT array_agg('2025-12-11 08:00+00'::timestamptz + i * interval '1 minute') FROM generate_series(0, 2879) i),
        (SELECT array_agg(20.0 + ((i * 7919) % 13 - 6) * CASE WHEN i / 60 BETWEEN 24 AND 31 THEN 5 ELSE 1 END)
           FROM generate_series(0, 2879) i));
SELECT * FROM coherence.series_volatility_events(ARRAY[now()], ARRAY[1.0]::float8[], ratio => 1.0);
SELECT * FROM coherence.series_volatility_events(ARRAY[now()], ARRAY[1.0]::float8[], "window" => '1 month');
