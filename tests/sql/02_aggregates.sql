-- The three detector aggregates: closed-form cases, edge cases and errors.

-- Variance escalation: first window {1,3} (var 2), last window {0,4,8} (var 16): ratio 8.
SELECT (r).flagged, (r).risk, (r).ratio, (r).windows, (r).first_variance, (r).last_variance,
       (r).first_window_start AT TIME ZONE 'UTC' AS first_window, (r).summary
  FROM (SELECT coherence.variance_escalation(ts, v) AS r FROM (VALUES
        ('2025-01-01 00:00+00'::timestamptz, 1.0::float8), ('2025-01-01 00:01+00', 3.0),
        ('2025-01-01 04:30+00', 100.0), ('2025-01-01 04:31+00', -100.0),
        ('2025-01-01 08:00+00', 0.0), ('2025-01-01 08:01+00', 4.0), ('2025-01-01 08:02+00', 8.0)
       ) t(ts, v)) s;

-- Windows align like date_bin('4 hours', ts, '2000-01-01'), also for unsorted input.
SELECT (coherence.variance_escalation(ts, v)).first_window_start
       = date_bin('4 hours', min(ts), '2000-01-01') AS aligned_like_date_bin
  FROM (VALUES ('2025-01-01 07:59+00'::timestamptz, 1.0::float8), ('2025-01-01 05:00+00', 2.0),
               ('2025-01-01 13:00+00', 5.0), ('2025-01-01 12:30+00', 1.0)) t(ts, v);

-- Spikes: 99 zeros and one 10 (mean 0.1, stddev 1): one spike.
SELECT (r).flagged, round((r).risk::numeric, 4) AS risk, (r).count, (r).max,
       (r).max_at AT TIME ZONE 'UTC' AS max_at, round((r).mean::numeric, 6) AS mean,
       round((r).stddev::numeric, 6) AS stddev, (r).points, (r).summary
  FROM (SELECT coherence.spikes(ts, v) AS r FROM (
          SELECT '2025-01-01 00:00+00'::timestamptz + i * interval '1 minute' AS ts,
                 CASE WHEN i = 99 THEN 10.0 ELSE 0.0 END::float8 AS v
            FROM generate_series(0, 99) i) t) s;

-- Trend: 40 + 1/hour over 50 hours: +125%.
SELECT (r).flagged, (r).risk, round((r).pct_change::numeric, 6) AS pct,
       round((r).slope_per_hour::numeric, 6) AS slope_per_hour,
       round((r).fitted_start::numeric, 6) AS fitted_start, round((r).fitted_end::numeric, 6) AS fitted_end,
       round((r).r2::numeric, 6) AS r2, (r).summary
  FROM (SELECT coherence.trend(ts, v) AS r FROM (
          SELECT '2025-01-01'::timestamptz + i * interval '1 hour' AS ts, 40.0::float8 + i AS v
            FROM generate_series(0, 50) i) t) s;

-- Usable with GROUP BY on any table.
CREATE TEMP TABLE samples AS
SELECT g AS series, '2025-01-01 00:00+00'::timestamptz + i * interval '1 minute' AS ts,
       CASE g WHEN 'flat' THEN 5.0 WHEN 'rising' THEN 10.0 + i / 60.0 ELSE (i % 7)::float8 END AS value
  FROM unnest(ARRAY['flat', 'rising', 'sawtooth']) g, generate_series(0, 1439) i;
SELECT series, (coherence.trend(ts, value)).flagged AS trend_flagged,
       round((coherence.trend(ts, value)).pct_change::numeric, 1) AS pct,
       (coherence.variance_escalation(ts, value)).ratio AS var_ratio,
       (coherence.spikes(ts, value)).count AS spikes
  FROM samples GROUP BY series ORDER BY series;

-- Parameters.
SELECT (coherence.variance_escalation(ts, value, interval '1 hour', 2.0)).windows AS hourly_windows,
       (coherence.spikes(ts, value, 1.0)).count AS spikes_at_1_sigma,
       (coherence.trend(ts, value, 500.0)).flagged AS trend_at_500pct
  FROM samples WHERE series = 'rising';

-- Edge cases. Empty input: NULL, like the built-in aggregates.
SELECT coherence.trend(now(), 1.0::float8) IS NULL AS empty_is_null,
       coherence.spikes(now(), 1.0::float8) IS NULL AS empty_spikes_is_null
  FROM generate_series(1, 0);
-- NULL, NaN and ±Infinity are skipped and counted; NULL and infinite timestamps too.
SELECT (r).points, (r).skipped, (r).count, (r).max
  FROM (SELECT coherence.spikes(ts, v) AS r FROM (VALUES
        ('2025-01-01'::timestamptz, 'NaN'::float8), ('2025-01-01', NULL), (NULL, 1.0),
        ('infinity', 1.0), ('2025-01-02', 'Infinity'), ('2025-01-02', '-Infinity'),
        ('2025-01-03', 2.0), ('2025-01-04', 3.0)) t(ts, v)) s;
-- One and two points.
SELECT (coherence.trend(ts, v)).summary AS one_point_trend,
       (coherence.spikes(ts, v)).summary AS one_point_spikes,
       (coherence.variance_escalation(ts, v)).summary AS one_point_variance
  FROM (VALUES ('2025-01-01'::timestamptz, 1.0::float8)) t(ts, v);
SELECT (coherence.trend(ts, v)).pct_change AS two_point_pct
  FROM (VALUES ('2025-01-01'::timestamptz, 1.0::float8), ('2025-01-02', 2.0)) t(ts, v);
-- Constant series: nothing flagged.
SELECT (coherence.variance_escalation(ts, value)).ratio, (coherence.spikes(ts, value)).count,
       (coherence.trend(ts, value)).pct_change
  FROM samples WHERE series = 'flat';
-- Duplicate timestamps only: no slope.
SELECT (coherence.trend(ts, v)).slope_per_hour IS NULL AS no_slope
  FROM (VALUES ('2025-01-01'::timestamptz, 1.0::float8), ('2025-01-01', 5.0)) t(ts, v);
-- Huge values do not crash and give no garbage.
SELECT (r).ratio IS NULL OR (r).ratio = (r).ratio AS ratio_not_nan
  FROM (SELECT coherence.variance_escalation(ts, v) AS r FROM (VALUES
        ('2025-01-01 00:00+00'::timestamptz, 1e308::float8), ('2025-01-01 00:01+00', -1e308),
        ('2025-01-01 08:00+00', 1.0), ('2025-01-01 08:01+00', 2.0)) t(ts, v)) s;

-- Bad parameters are clear errors.
SELECT coherence.spikes(now(), 1.0::float8, -1.0);
SELECT coherence.trend(now(), 1.0::float8, 'NaN');
SELECT coherence.variance_escalation(now(), 1.0::float8, interval '1 month', 1.5);
SELECT coherence.variance_escalation(now(), 1.0::float8, interval '-1 hour', 1.5);
SELECT coherence.variance_escalation(now(), 1.0::float8, interval '1 hour', 0.5);
