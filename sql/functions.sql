-- SQL-language functions and the documentation (COMMENT ON) of every function in schema
-- coherence. Loaded last (finalize), after the Rust functions and the aggregates exist.

COMMENT ON SCHEMA coherence IS 'Coherence: anomaly detection and incident correlation for SREs.';

COMMENT ON FUNCTION coherence.version() IS
    'Version of the installed coherence library, e.g. SELECT coherence.version();';

-- The aggregates (user-facing).
COMMENT ON AGGREGATE coherence.variance_escalation(timestamptz, double precision) IS
    'Variance escalation (seed defaults): sample variance of the first vs the last 4-hour window (date_bin-aligned); flagged when last/first > 1.5. Returns coherence.variance_escalation_result. Parallel safe.';
COMMENT ON AGGREGATE coherence.variance_escalation(timestamptz, double precision, interval, double precision) IS
    'Variance escalation with a window width and ratio threshold, e.g. coherence.variance_escalation(ts, value, interval ''1 hour'', 2.0).';
COMMENT ON AGGREGATE coherence.spikes(timestamptz, double precision) IS
    'Spike detection (seed defaults): points above mean + 2.5 stddev, with count, max and when. Returns coherence.spikes_result. Parallel safe.';
COMMENT ON AGGREGATE coherence.spikes(timestamptz, double precision, double precision) IS
    'Spike detection with a threshold in standard deviations, e.g. coherence.spikes(ts, value, 3.0).';
COMMENT ON AGGREGATE coherence.trend(timestamptz, double precision) IS
    'Trend detection (seed defaults): least-squares fit of value on time; flagged when the fitted change from first to last time exceeds +30%. Returns coherence.trend_result. Parallel safe.';
COMMENT ON AGGREGATE coherence.trend(timestamptz, double precision, double precision) IS
    'Trend detection with a percentage threshold, e.g. coherence.trend(ts, value, 50.0).';

-- Aggregate support functions (internal; called by the aggregates only).
COMMENT ON FUNCTION coherence.variance_escalation_trans(internal, timestamptz, double precision) IS 'Internal: transition function of coherence.variance_escalation.';
COMMENT ON FUNCTION coherence.variance_escalation_trans_params(internal, timestamptz, double precision, interval, double precision) IS 'Internal: transition function of coherence.variance_escalation with parameters.';
COMMENT ON FUNCTION coherence.variance_escalation_combine(internal, internal) IS 'Internal: combine function of coherence.variance_escalation (parallel aggregation).';
COMMENT ON FUNCTION coherence.variance_escalation_serialize(internal) IS 'Internal: serialize function of coherence.variance_escalation.';
COMMENT ON FUNCTION coherence.variance_escalation_deserialize(bytea, internal) IS 'Internal: deserialize function of coherence.variance_escalation.';
COMMENT ON FUNCTION coherence.variance_escalation_final(internal) IS 'Internal: final function of coherence.variance_escalation.';
COMMENT ON FUNCTION coherence.spikes_trans(internal, timestamptz, double precision) IS 'Internal: transition function of coherence.spikes.';
COMMENT ON FUNCTION coherence.spikes_trans_params(internal, timestamptz, double precision, double precision) IS 'Internal: transition function of coherence.spikes with parameters.';
COMMENT ON FUNCTION coherence.spikes_combine(internal, internal) IS 'Internal: combine function of coherence.spikes (parallel aggregation).';
COMMENT ON FUNCTION coherence.spikes_serialize(internal) IS 'Internal: serialize function of coherence.spikes.';
COMMENT ON FUNCTION coherence.spikes_deserialize(bytea, internal) IS 'Internal: deserialize function of coherence.spikes.';
COMMENT ON FUNCTION coherence.spikes_final(internal) IS 'Internal: final function of coherence.spikes.';
COMMENT ON FUNCTION coherence.trend_trans(internal, timestamptz, double precision) IS 'Internal: transition function of coherence.trend.';
COMMENT ON FUNCTION coherence.trend_trans_params(internal, timestamptz, double precision, double precision) IS 'Internal: transition function of coherence.trend with parameters.';
COMMENT ON FUNCTION coherence.trend_combine(internal, internal) IS 'Internal: combine function of coherence.trend (parallel aggregation).';
COMMENT ON FUNCTION coherence.trend_serialize(internal) IS 'Internal: serialize function of coherence.trend.';
COMMENT ON FUNCTION coherence.trend_deserialize(bytea, internal) IS 'Internal: deserialize function of coherence.trend.';
COMMENT ON FUNCTION coherence.trend_final(internal) IS 'Internal: final function of coherence.trend.';

-- Every numeric sample in a time range: coherence.metrics plus numeric signal_events. An
-- inlinable SQL function (no SET clause, not STRICT: PostgreSQL does not inline strict
-- set-returning functions), so callers get one plan over the tables, no materialized result.
-- NULL arguments give no rows (the comparisons are never true).
CREATE FUNCTION coherence.samples(since timestamptz, until timestamptz)
RETURNS TABLE (host text, metric text, ts timestamptz, value double precision)
LANGUAGE sql STABLE PARALLEL SAFE
AS $fn$
    SELECT m.host, m.metric_name, m."timestamp", m.value
      FROM coherence.metrics m
     WHERE m."timestamp" >= since AND m."timestamp" < until
    UNION ALL
    SELECT e.host, e.metric, e.ts, e.value::double precision
      FROM coherence.signal_events e
     WHERE e.value IS NOT NULL AND e.metric IS NOT NULL
       AND e.ts >= since AND e.ts < until
$fn$;
COMMENT ON FUNCTION coherence.samples(timestamptz, timestamptz) IS
    'The samples the detectors read: coherence.metrics and numeric coherence.signal_events (value and metric set) with since <= ts < until. E.g. SELECT host, metric, count(*) FROM coherence.samples(now() - interval ''1 day'', now()) GROUP BY 1, 2;';

-- coherence.detect: the seed's verdicts for every series at once.
CREATE FUNCTION coherence.detect(since timestamptz, until timestamptz)
RETURNS TABLE (
    host     text,
    metric   text,
    detector text,
    flagged  boolean,
    risk     double precision,
    summary  text,
    points   bigint
)
LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
BEGIN
    IF since >= until THEN
        RAISE EXCEPTION 'since must be earlier than until'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('since = %s, until = %s', since, until),
                  HINT = 'Example: SELECT * FROM coherence.detect(now() - interval ''48 hours'', now());';
    END IF;
    RETURN QUERY
    WITH samples AS (
        SELECT * FROM coherence.samples(since, until)
    ), agg AS (
        SELECT s.host, s.metric,
               coherence.variance_escalation(s.ts, s.value) AS v,
               coherence.spikes(s.ts, s.value) AS sp,
               coherence.trend(s.ts, s.value) AS t,
               CASE WHEN s.metric IN ('cpu', 'memory', 'disk') OR s.metric ~ '(pct|percent)'
                    THEN '%' ELSE '' END AS unit
          FROM samples s
         GROUP BY s.host, s.metric
    )
    SELECT a.host, a.metric, d.detector, d.flagged, d.risk,
           a.host || ':' || a.metric || ' → ' || d.summary, d.points
      FROM agg a
     CROSS JOIN LATERAL (VALUES
        ('variance_escalation', (a.v).flagged, (a.v).risk, (a.v).summary, (a.v).points),
        ('spikes', (a.sp).flagged, (a.sp).risk,
            CASE WHEN (a.sp).count > 0 THEN
                format('%s %s, max %s%s%s (Risk: %s)', (a.sp).count,
                       CASE WHEN (a.sp).count = 1 THEN 'spike' ELSE 'spikes' END,
                       round((a.sp).max::numeric, 2), a.unit,
                       CASE WHEN (a.sp).flagged THEN '' ELSE ', within noise' END,
                       round((a.sp).risk::numeric, 2))
            ELSE (a.sp).summary END,
            (a.sp).points),
        ('trend', (a.t).flagged, (a.t).risk, (a.t).summary, (a.t).points)
     ) AS d(detector, flagged, risk, summary, points)
     ORDER BY d.risk DESC, a.host, a.metric, d.detector;
END
$fn$;

COMMENT ON FUNCTION coherence.detect(timestamptz, timestamptz) IS
    'Seed verdicts for every (host, metric) series in coherence.metrics and numeric coherence.signal_events with since <= ts < until: one row per series and detector, e.g. SELECT summary FROM coherence.detect(now() - interval ''48 hours'', now()) WHERE flagged;';

COMMENT ON FUNCTION coherence.series_events(timestamptz[], double precision[], integer, double precision, text, integer) IS
    'Localized anomaly events of one series (arrays of times and values, any order): robust trailing median/MAD baseline with a seasonal check, both directions; one row per event with start, peak, end, robust score and risk. E.g. SELECT * FROM coherence.series_events(ARRAY[...], ARRAY[...]);';
COMMENT ON FUNCTION coherence.series_volatility_events(timestamptz[], double precision[], interval, double precision) IS
    'Localized variance escalation of one series: 4-hour windows (date_bin-aligned) whose robust noise level (from first differences) is at least ratio times the median of the previous 6 windows; consecutive windows form one event.';
COMMENT ON FUNCTION coherence.series_trend_event(timestamptz[], double precision[], double precision, double precision) IS
    'A significant leak-like trend of one series (fitted change > pct_threshold, R² >= 0.6, Mann-Kendall p < 0.001), with the time the fitted line reaches capacity; zero or one row.';

-- The unit shown after values of a metric: percent for the usual resource metrics.
CREATE FUNCTION coherence.metric_capacity(metric text)
RETURNS double precision
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN CASE WHEN metric IN ('cpu', 'memory', 'disk') OR metric ~ '(pct|percent)' THEN 100.0 END;
COMMENT ON FUNCTION coherence.metric_capacity(text) IS
    'Capacity used for time to exhaustion: 100 for percent metrics (cpu, memory, disk, *pct*, *percent*), else NULL.';

CREATE FUNCTION coherence.detect_events(since timestamptz, until timestamptz)
RETURNS TABLE (
    host       text,
    metric     text,
    detector   text,
    kind       text,
    started_at timestamptz,
    ended_at   timestamptz,
    peak_at    timestamptz,
    peak_value double precision,
    baseline   double precision,
    score      double precision,
    risk       double precision,
    summary    text
)
LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
BEGIN
    IF since >= until THEN
        RAISE EXCEPTION 'since must be earlier than until'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('since = %s, until = %s', since, until),
                  HINT = 'Example: SELECT * FROM coherence.detect_events(now() - interval ''48 hours'', now());';
    END IF;
    RETURN QUERY
    WITH samples AS (
        SELECT * FROM coherence.samples(since, until)
    ), series AS (
        SELECT s.host, s.metric, array_agg(s.ts) AS ts, array_agg(s.value) AS v,
               CASE WHEN coherence.metric_capacity(s.metric) IS NOT NULL THEN '%' ELSE '' END AS unit
          FROM samples s
         GROUP BY s.host, s.metric
    )
    -- One LATERAL per series, so the arrays are built once and never materialized.
    SELECT s.host, s.metric, ev.detector, ev.kind, ev.started_at, ev.ended_at, ev.peak_at,
           ev.peak_value, ev.baseline, ev.score, ev.risk, ev.summary
      FROM series s
     CROSS JOIN LATERAL (
        SELECT 'robust'::text AS detector, e.kind, e.started_at, e.ended_at,
               e.peak_at, e.peak_value, e.baseline, e.score, e.risk,
               format('%s:%s → %s %s%s at %s (baseline %s%s, %s robust σ%s)',
                      s.host, s.metric,
                      CASE e.kind WHEN 'spike' THEN 'spike to' WHEN 'drop' THEN 'drop to'
                                  WHEN 'level_shift_up' THEN 'level shift up to'
                                  ELSE 'level shift down to' END,
                      round(e.peak_value::numeric, 2), s.unit,
                      to_char(e.peak_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI "UTC"'),
                      round(e.baseline::numeric, 2), s.unit, round(abs(e.score)::numeric, 1),
                      CASE WHEN e.points > 1
                           THEN format(', %s points until %s', e.points,
                                       to_char(e.ended_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI "UTC"'))
                           ELSE '' END) AS summary
          FROM coherence.series_events(s.ts, s.v) e
        UNION ALL
        SELECT 'trend', 'leak', t.started_at, t.ended_at, t.ended_at,
               t.fitted_end, t.fitted_start, t.mk_z, t.risk,
               format('%s:%s → leak pattern: %s%s → %s%s (+%s%%, R² %s)%s',
                      s.host, s.metric, round(t.fitted_start::numeric, 2), s.unit,
                      round(t.fitted_end::numeric, 2), s.unit, round(t.pct_change::numeric),
                      round(t.r2::numeric, 2),
                      CASE WHEN t.exhaustion_at IS NOT NULL
                           THEN format(', full at %s', to_char(t.exhaustion_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI "UTC"'))
                           ELSE '' END)
          FROM coherence.series_trend_event(s.ts, s.v, coherence.metric_capacity(s.metric)) t
        UNION ALL
        SELECT 'volatility', vo.kind, vo.started_at, vo.ended_at, vo.peak_at, vo.peak_value,
               vo.baseline, vo.score, vo.risk,
               format('%s:%s → volatility %sx its baseline (noise σ %s vs %s) from %s to %s',
                      s.host, s.metric, round(vo.score::numeric, 1), round(vo.peak_value::numeric, 2),
                      round(vo.baseline::numeric, 2),
                      to_char(vo.started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI "UTC"'),
                      to_char(vo.ended_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI "UTC"'))
          FROM coherence.series_volatility_events(s.ts, s.v) vo
     ) ev
     ORDER BY ev.started_at, s.host, s.metric, ev.detector;
END
$fn$;

COMMENT ON FUNCTION coherence.detect_events(timestamptz, timestamptz) IS
    'Localized anomaly events for every series in coherence.metrics and numeric coherence.signal_events with since <= ts < until: robust spikes, drops and level shifts (both directions), volatility escalations, and significant leak-like trends with time to exhaustion. E.g. SELECT summary FROM coherence.detect_events(now() - interval ''48 hours'', now()) WHERE risk >= 0.8;';
