-- SQL-language functions and the documentation (COMMENT ON) of every function in schema
-- coherence. Loaded last (finalize), after the Rust functions and the aggregates exist.
-- The PL/pgSQL functions that scan coherence.metrics run with jit = off: over a year of day
-- partitions, compiling every partition's scan expressions took longer than the scans.

COMMENT ON SCHEMA coherence IS 'Coherence: anomaly detection and incident correlation for SREs.';

COMMENT ON FUNCTION coherence.version() IS
    'Version of the installed coherence library, e.g. SELECT coherence.version();';

-- The aggregates (user-facing).
COMMENT ON AGGREGATE coherence.variance_escalation(timestamptz, double precision) IS
    'Variance escalation (seed defaults): sample variance of the first vs the last 4-hour window (date_bin-aligned); flagged when last/first > 1.5. Returns coherence.variance_escalation_result. Parallel safe.';
COMMENT ON AGGREGATE coherence.variance_escalation(timestamptz, double precision, interval, double precision) IS
    'Variance escalation with a window width and ratio threshold, e.g. coherence.variance_escalation(ts, value, interval ''1 hour'', 2.0).';
COMMENT ON AGGREGATE coherence.spikes(timestamptz, double precision) IS
    'Spike detection (seed defaults): points above mean + 2.5 stddev, with count, max and when; the count is exact up to 128 distinct values in the group, beyond that estimated from a bounded histogram (docs/detection.md). Returns coherence.spikes_result. Parallel safe.';
COMMENT ON AGGREGATE coherence.spikes(timestamptz, double precision, double precision) IS
    'Spike detection with a threshold in standard deviations, e.g. coherence.spikes(ts, value, 3.0).';
COMMENT ON AGGREGATE coherence.trend(timestamptz, double precision) IS
    'Trend detection (seed defaults): least-squares fit of value on time; flagged when the fitted change from first to last time exceeds +30%. Returns coherence.trend_result. Parallel safe.';
COMMENT ON AGGREGATE coherence.trend(timestamptz, double precision, double precision) IS
    'Trend detection with a percentage threshold, e.g. coherence.trend(ts, value, 50.0).';

COMMENT ON AGGREGATE coherence.points(timestamptz, double precision) IS
    'A series'' (ts, value) rows packed into one bytea (16 bytes a point: Unix microseconds as int8, then the value as float8, in the server''s byte order; NULLs and infinite times skipped; NULL for no rows), for coherence.find_events_points and coherence.find_collective_points: one aggregate state a series where array_agg(ts), array_agg(value) keep two. E.g. SELECT host, metric_name, length(coherence.points("timestamp", value)) / 16 AS points FROM coherence.metrics GROUP BY 1, 2;';

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
COMMENT ON FUNCTION coherence.points_trans(internal, timestamptz, double precision) IS 'Internal: transition function of coherence.points.';
COMMENT ON FUNCTION coherence.points_final(internal) IS 'Internal: final function of coherence.points.';
COMMENT ON FUNCTION coherence.points_combine(internal, internal) IS 'Internal: combine function of coherence.points (parallel aggregation).';
COMMENT ON FUNCTION coherence.points_serialize(internal) IS 'Internal: serial function of coherence.points (parallel aggregation).';
COMMENT ON FUNCTION coherence.points_deserialize(bytea, internal) IS 'Internal: deserial function of coherence.points (parallel aggregation).';

-- Every numeric sample in a time range: coherence.metrics plus numeric signal_events. An
-- inlinable SQL function (no SET clause, not STRICT: PostgreSQL does not inline strict
-- set-returning functions), so callers get one plan over the tables, no materialized result.
-- NULL arguments give no rows (the comparisons are never true). Operators are written
-- OPERATOR(pg_catalog.x): the body is parsed with the caller's search_path when inlined, and a
-- schema earlier in it must not supply its own ">=".
CREATE FUNCTION coherence.samples(since timestamptz, until timestamptz)
RETURNS TABLE (host text, metric text, ts timestamptz, value double precision)
LANGUAGE sql STABLE PARALLEL SAFE
AS $fn$
    SELECT m.host, m.metric_name, m."timestamp", m.value
      FROM coherence.metrics m
     WHERE m."timestamp" OPERATOR(pg_catalog.>=) since
       AND m."timestamp" OPERATOR(pg_catalog.<) until
    UNION ALL
    SELECT e.host, e.metric, e.ts, e.value::double precision
      FROM coherence.signal_events e
     WHERE e.value IS NOT NULL AND e.metric IS NOT NULL
       AND e.ts OPERATOR(pg_catalog.>=) since AND e.ts OPERATOR(pg_catalog.<) until
       -- numeric holds values no double precision can: skipped, not an error that stops the job
       AND e.value OPERATOR(pg_catalog.<) 1e300 AND e.value OPERATOR(pg_catalog.>) -1e300
$fn$;
COMMENT ON FUNCTION coherence.samples(timestamptz, timestamptz) IS
    'The samples the detectors read: coherence.metrics and numeric coherence.signal_events (value and metric set, |value| < 1e300) with since <= ts < until. E.g. SELECT host, metric, count(*) FROM coherence.samples(now() - interval ''1 day'', now()) GROUP BY 1, 2;';

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
SET jit = off
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
               coherence.metric_unit(s.metric) AS unit
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

COMMENT ON FUNCTION coherence.find_events(timestamptz[], double precision[], integer, double precision, text, integer, timestamptz, double precision, text, text, double precision) IS
    'Anomaly events of one series given as arrays (any order; NULL and non-finite values skipped): spikes, drops, level shifts (robust scores against a trailing or same-phase baseline, and a CUSUM), volatility up/down, drifts and leaks; one row per event with detector, start, peak, end, evidence score, calibrated risk and a summary. NULL parameters take the defaults (window_points 192, threshold 8, direction both, learned period, min_risk 0.2, capacity coherence.metric_capacity(metric)). Points before report_from are baseline only. Any table: SELECT s.svc, e.* FROM (SELECT svc, array_agg(ts) ts, array_agg(v) v FROM my_table GROUP BY svc) s CROSS JOIN LATERAL coherence.find_events(s.ts, s.v, metric => s.svc) e;';
COMMENT ON FUNCTION coherence.find_collective(text[], timestamptz[], double precision[], timestamptz, double precision, text) IS
    'Collective anomalies of one host given as parallel arrays (metric, ts, value): times when several metrics move together, each perhaps within its own normal range (windowed robust scores standardized per metric and combined; see docs/detection.md). One row per member metric of each event: its onset, value and expected value at the peak, mean evidence (score, signed), share of the evidence, the event''s risk and a summary. E.g. SELECT metric, share, risk FROM coherence.find_collective(ARRAY[...], ARRAY[...], ARRAY[...]);';
COMMENT ON FUNCTION coherence.find_events_points(bytea, integer, double precision, text, integer, timestamptz, double precision, text, text, double precision) IS
    'coherence.find_events for one series packed by the aggregate coherence.points(ts, value): the same detectors, parameters and rows; what coherence.detect_events runs on every series. E.g. SELECT e.kind, e.risk FROM (SELECT coherence.points("timestamp", value) AS p FROM coherence.metrics WHERE host = ''host-stressed'' AND metric_name = ''cpu'') s CROSS JOIN LATERAL coherence.find_events_points(s.p, host => ''host-stressed'', metric => ''cpu'') e;';
COMMENT ON FUNCTION coherence.find_host_events_points(text[], bytea[], integer[], double precision[], text[], double precision[], double precision[], timestamptz, double precision, text) IS
    'Every detector over one host''s metrics in one pass: parallel arrays of metric names, their points packed by coherence.points(ts, value), and optional per-metric settings (window_points, threshold, direction, capacity, min_risk; a NULL array or element takes the default); each metric''s own rows as coherence.find_events_points gives them and the host''s collective rows as coherence.find_collective_points gives them (one a member, detector collective, risk at least collective_min_risk), each metric analysed once for both. What coherence.detect_all runs on every host. E.g. SELECT e.metric, e.detector, e.risk FROM (SELECT array_agg(metric_name) AS m, array_agg(p) AS p FROM (SELECT metric_name, coherence.points("timestamp", value) AS p FROM coherence.metrics WHERE host = ''host-stressed'' GROUP BY metric_name) x) h CROSS JOIN LATERAL coherence.find_host_events_points(h.m, h.p, host => ''host-stressed'') e;';
COMMENT ON FUNCTION coherence.find_collective_points(text[], bytea[], timestamptz, double precision, text) IS
    'coherence.find_collective for one host whose metrics come as parallel arrays of names and their points packed by coherence.points(ts, value) (a name given twice joins its points; metrics are taken in name order): the same rows; what coherence.detect_collective runs on every host. E.g. SELECT c.metric, c.risk FROM (SELECT array_agg(metric_name) AS m, array_agg(p) AS p FROM (SELECT metric_name, coherence.points("timestamp", value) AS p FROM coherence.metrics WHERE host = ''host-stressed'' GROUP BY metric_name) x) h CROSS JOIN LATERAL coherence.find_collective_points(h.m, h.p, host => ''host-stressed'') c;';
COMMENT ON FUNCTION coherence.series_events(timestamptz[], double precision[], integer, double precision, text, integer) IS
    'The 0.1.0 form of coherence.find_events (same detectors and risk; no detector or summary column, no report_from). E.g. SELECT kind, peak_at, risk FROM coherence.series_events(ARRAY[...], ARRAY[...]);';
COMMENT ON FUNCTION coherence.series_period(timestamptz[], double precision[]) IS
    'The period learned from one series (hourly, daily or weekly, by autocorrelation of the detrended series at that lag), or NULL with the candidates that lacked history. E.g. SELECT * FROM coherence.series_period(ARRAY[...], ARRAY[...]);';
COMMENT ON FUNCTION coherence.series_cadence(timestamptz[]) IS
    'The cadence of a series: the median gap between its latest 33 distinct sample times, or NULL with fewer than 3. E.g. SELECT coherence.series_cadence(ARRAY[''2025-01-01 00:00Z'', ''2025-01-01 00:01Z'', ''2025-01-01 00:02Z'']::timestamptz[]);';
COMMENT ON FUNCTION coherence.no_data_event(text, text, timestamptz, double precision, interval, timestamptz) IS
    'The no-data event of a series whose last sample is (last_at, last_value) with the given cadence, at data time data_now: one row while it is silent (2 or more intervals without a sample, risk 1 - 2^(-missed/2); none after 7 days of silence), none otherwise. E.g. SELECT risk, summary FROM coherence.no_data_event(''web-1'', ''cpu'', ''2025-01-01 00:00Z'', 42, ''1 minute'', ''2025-01-01 00:05Z'');';
COMMENT ON FUNCTION coherence.series_silent(timestamptz, interval, timestamptz) IS
    'Whether a series with its last sample at last_at and the given cadence has no data at time at (2 or more of its intervals without a sample; false for a cadence with months or not positive). E.g. SELECT coherence.series_silent(now() - interval ''3 minutes'', ''1 minute'', now());';
COMMENT ON FUNCTION coherence.involved_metrics(text[], timestamptz[], double precision[], timestamptz, timestamptz) IS
    'The metrics of one host (parallel arrays metric, ts, value) that deviated during [from, until]: largest robust z (median and MAD of the metric''s own samples before from, scale floored at a quarter of their standard deviation) of at least 5, strongest first; metrics with fewer than 30 earlier samples are not judged. E.g. SELECT metric, score FROM coherence.involved_metrics(ARRAY[...], ARRAY[...], ARRAY[...], ''2025-12-13 04:00Z'', ''2025-12-13 04:30Z'');';
COMMENT ON FUNCTION coherence.default_settings() IS
    'The detector settings a series gets where no rule of coherence.series_rules sets them. E.g. SELECT * FROM coherence.default_settings();';
COMMENT ON FUNCTION coherence.default_min_risk() IS
    'The risk below which events are not reported by default (0.2: such an event is expected less than once in about 4 days). E.g. SELECT coherence.default_min_risk();';
COMMENT ON FUNCTION coherence.anomaly_kinds() IS
    'Every anomaly kind with the detector that reports it and what it means. E.g. SELECT * FROM coherence.anomaly_kinds();';
COMMENT ON FUNCTION coherence.metric_capacity(text) IS
    'Capacity used for time to exhaustion: 100 for percent metrics (cpu, memory, disk, *pct*, *percent*), else NULL. E.g. SELECT coherence.metric_capacity(''cpu'');';
COMMENT ON FUNCTION coherence.metric_unit(text) IS
    'Unit shown after values of a metric: % for percent metrics (cpu, memory, disk, *pct*, *percent*), else the empty string. E.g. SELECT coherence.metric_unit(''disk_pct'');';
COMMENT ON FUNCTION coherence.series_name(text) IS
    'The base name of a series key: metric names carry labels in Prometheus'' canonical form, name{key="value",...} (keys sorted, values quoted with \\, \" and \n escaped); a name without a valid label list is its own base name. E.g. SELECT coherence.series_name(''disk.used{device="sda"}'');';
COMMENT ON FUNCTION coherence.series_labels(text) IS
    'The labels of a series key (name{key="value",...}, Prometheus'' canonical form) as a jsonb object; {} for a name without a valid label list. E.g. SELECT coherence.series_labels(''disk.used{device="sda",mount="/"}'') ->> ''device'';';
COMMENT ON FUNCTION coherence.series_volatility_events(timestamptz[], double precision[], interval, double precision) IS
    'Variance changes of one series, both directions: date_bin-aligned windows whose robust noise level (from first differences) is at least ratio times (or at most 1/ratio of) the median of the previous 6 normal windows and significant; consecutive windows form one event. E.g. SELECT * FROM coherence.series_volatility_events(ARRAY[...], ARRAY[...]);';
COMMENT ON FUNCTION coherence.series_trend_event(timestamptz[], double precision[], double precision, double precision) IS
    'A significant leak-like trend of one series (fitted change > pct_threshold, R² >= 0.6, Mann-Kendall p < 0.001), with the time the fitted line reaches capacity; zero or one row.';

CREATE FUNCTION coherence.detect_events(since timestamptz, until timestamptz,
                                        lookback interval DEFAULT interval '7 days',
                                        min_risk double precision DEFAULT NULL)
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
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $fn$
#variable_conflict use_column
DECLARE
    v_rules boolean;
BEGIN
    -- Not STRICT, so that min_risk may be NULL (the default); NULL times give no rows.
    IF since IS NULL OR until IS NULL OR lookback IS NULL THEN
        RETURN;
    END IF;
    IF since >= until THEN
        RAISE EXCEPTION 'since must be earlier than until'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('since = %s, until = %s', since, until),
                  HINT = 'Example: SELECT * FROM coherence.detect_events(now() - interval ''1 hour'', now());';
    END IF;
    IF lookback < interval '0' THEN
        RAISE EXCEPTION 'lookback must not be negative'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('lookback = %s', lookback),
                  HINT = 'The default is interval ''7 days'' of history before since.';
    END IF;
    v_rules := EXISTS (SELECT 1 FROM coherence.series_rules);
    RETURN QUERY
    WITH series AS (
        -- One packed value a series (coherence.points: one aggregate state a series where two
        -- array_agg states sent twice as many series to disk at the default work_mem).
        SELECT s.host, s.metric, coherence.points(s.ts, s.value) AS p
          FROM coherence.samples(since - lookback, until) s
         GROUP BY s.host, s.metric
    )
    -- One LATERAL per series, so the points are packed once and never materialized.
    -- Per-series settings (coherence.series_rules): NULL takes the default; an explicit
    -- min_risk argument wins over the rules'.
    SELECT s.host, s.metric, e.detector, e.kind, e.started_at, e.ended_at, e.peak_at,
           e.peak_value, e.baseline, e.score, e.risk, e.summary
      FROM series s
      LEFT JOIN LATERAL (SELECT * FROM coherence.series_settings(s.host, s.metric) WHERE v_rules) st ON true
     CROSS JOIN LATERAL coherence.find_events_points(s.p, window_points => st.window_points,
                                              threshold => st.threshold, direction => st.direction,
                                              report_from => since,
                                              min_risk => coalesce(detect_events.min_risk, st.min_risk),
                                              host => s.host, metric => s.metric,
                                              capacity => st.capacity) e
     WHERE st.detectors IS NULL OR e.detector = ANY (st.detectors)
     ORDER BY e.started_at, s.host, s.metric, e.detector;
END
$fn$;

COMMENT ON FUNCTION coherence.detect_events(timestamptz, timestamptz, interval, double precision) IS
    'Anomaly events (risk at least min_risk, default coherence.default_min_risk()) of every series in coherence.metrics and numeric coherence.signal_events that end in [since, until), judged against their own history from lookback (default 7 days) before since: spikes, drops and level shifts in both directions, volatility up/down, drifts and leaks with time to exhaustion, each with a calibrated risk; per-series settings from coherence.series_rules apply. E.g. the last hour: SELECT summary FROM coherence.detect_events(now() - interval ''1 hour'', now()) WHERE risk >= 0.5;';

CREATE FUNCTION coherence.detect_collective(since timestamptz, until timestamptz,
                                            lookback interval DEFAULT interval '7 days',
                                            min_risk double precision DEFAULT NULL)
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
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
SET jit = off
-- Sorted grouping: one host's packed series in memory at a time. A hash aggregate would hold
-- every series of the range at once (its groups all start within the first minutes of the
-- range and then grow, and PostgreSQL spills only groups that start later).
SET enable_hashagg = off
AS $fn$
#variable_conflict use_column
BEGIN
    -- Not STRICT, so that min_risk may be NULL (the default); NULL times give no rows.
    IF since IS NULL OR until IS NULL OR lookback IS NULL THEN
        RETURN;
    END IF;
    IF since >= until THEN
        RAISE EXCEPTION 'since must be earlier than until'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('since = %s, until = %s', since, until),
                  HINT = 'Example: SELECT * FROM coherence.detect_collective(now() - interval ''1 hour'', now());';
    END IF;
    IF lookback < interval '0' THEN
        RAISE EXCEPTION 'lookback must not be negative'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('lookback = %s', lookback),
                  HINT = 'The default is interval ''7 days'' of history before since.';
    END IF;
    RETURN QUERY
    WITH series AS (
        -- Each series packed (coherence.points), then a host's packed series together (no
        -- metric name copied into an array for every point).
        SELECT s.host, s.metric, coherence.points(s.ts, s.value) AS p
          FROM coherence.samples(since - lookback, until) s
         GROUP BY s.host, s.metric
    ), hosts AS (
        SELECT se.host, array_agg(se.metric) AS m, array_agg(se.p) AS p
          FROM series se
         GROUP BY se.host
        HAVING count(*) >= 3
    )
    SELECT h.host, c.metric, c.detector, c.kind, c.started_at, c.ended_at, c.peak_at,
           c.peak_value, c.baseline, c.score, c.risk, c.summary
      FROM hosts h
     CROSS JOIN LATERAL coherence.find_collective_points(h.m, h.p, report_from => since,
                                                  min_risk => min_risk, host => h.host) c
     ORDER BY c.started_at, h.host, c.metric;
END
$fn$;

COMMENT ON FUNCTION coherence.detect_collective(timestamptz, timestamptz, interval, double precision) IS
    'Collective anomalies of every host with 3+ metrics in coherence.metrics and numeric coherence.signal_events that end in [since, until), judged against lookback (default 7 days) of history: one row per member metric (kind collective, detector collective), in the columns of detect_events. E.g. SELECT host, metric, summary FROM coherence.detect_collective(now() - interval ''1 hour'', now()) WHERE risk >= 0.5;';

-- Both detectors in one pass: each series packed once, each host's series analysed once for
-- their own events and for the host's collective events (coherence.find_host_events_points).
-- The rows are those of detect_events and detect_collective together.
CREATE FUNCTION coherence.detect_all(since timestamptz, until timestamptz,
                                     lookback interval DEFAULT interval '7 days',
                                     min_risk double precision DEFAULT NULL)
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
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $fn$
#variable_conflict use_column
DECLARE
    v_rules boolean;
BEGIN
    -- Not STRICT, so that min_risk may be NULL (the default); NULL times give no rows.
    IF since IS NULL OR until IS NULL OR lookback IS NULL THEN
        RETURN;
    END IF;
    IF since >= until THEN
        RAISE EXCEPTION 'since must be earlier than until'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('since = %s, until = %s', since, until),
                  HINT = 'Example: SELECT * FROM coherence.detect_all(now() - interval ''1 hour'', now());';
    END IF;
    IF lookback < interval '0' THEN
        RAISE EXCEPTION 'lookback must not be negative'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('lookback = %s', lookback),
                  HINT = 'The default is interval ''7 days'' of history before since.';
    END IF;
    v_rules := EXISTS (SELECT 1 FROM coherence.series_rules);
    RETURN QUERY
    WITH series AS (
        -- One packed value a series, grouped as detect_events groups them.
        SELECT s.host, s.metric, coherence.points(s.ts, s.value) AS p
          FROM coherence.samples(since - lookback, until) s
         GROUP BY s.host, s.metric
    ), hosts AS (
        -- A host's series with their settings (coherence.series_rules; NULL takes the
        -- default, an explicit min_risk argument wins over the rules').
        SELECT se.host, array_agg(se.metric) AS m, array_agg(se.p) AS p,
               array_agg(st.window_points) AS window_points, array_agg(st.threshold) AS threshold,
               array_agg(st.direction) AS direction, array_agg(st.capacity) AS capacity,
               array_agg(coalesce(detect_all.min_risk, st.min_risk)) AS min_risk
          FROM series se
          LEFT JOIN LATERAL (SELECT * FROM coherence.series_settings(se.host, se.metric) WHERE v_rules) st ON true
         GROUP BY se.host
    )
    SELECT h.host, e.metric, e.detector, e.kind, e.started_at, e.ended_at, e.peak_at,
           e.peak_value, e.baseline, e.score, e.risk, e.summary
      FROM hosts h
     CROSS JOIN LATERAL coherence.find_host_events_points(h.m, h.p, h.window_points, h.threshold,
                                                   h.direction, h.capacity, h.min_risk,
                                                   report_from => since,
                                                   collective_min_risk => detect_all.min_risk,
                                                   host => h.host) e
      -- A series' own detectors as its rules say (detect_events); collective rows as
      -- detect_collective gives them.
      LEFT JOIN LATERAL (SELECT st.detectors FROM coherence.series_settings(h.host, e.metric) st
                          WHERE v_rules AND e.detector <> 'collective') d ON true
     WHERE d.detectors IS NULL OR e.detector = ANY (d.detectors)
     ORDER BY e.started_at, h.host, e.metric, e.detector;
END
$fn$;

COMMENT ON FUNCTION coherence.detect_all(timestamptz, timestamptz, interval, double precision) IS
    'The rows of coherence.detect_events and coherence.detect_collective together (same arguments and columns; collective rows have detector collective), in one pass: each series is read and analysed once for both detectors. What coherence.run_detection runs. E.g. SELECT detector, count(*) FROM coherence.detect_all(now() - interval ''1 hour'', now()) GROUP BY 1;';

-- The metrics of a host involved in an incident beyond those whose anomalies formed it: the
-- ranking's tail (see docs/incidents.md). The host's metrics are those of
-- coherence.series_state (kept by run_detection); a day of their samples before the incident is
-- the baseline; the incident is judged over at most its first 6 hours. A host too large for
-- this backend costs its involved metrics (a WARNING), never the job.
CREATE FUNCTION coherence.incident_involved(host text, first_signal timestamptz,
                                            last_signal timestamptz, exclude text[] DEFAULT '{}')
RETURNS jsonb
LANGUAGE plpgsql STABLE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $fn$
DECLARE
    v_until timestamptz;
    v_out   jsonb;
BEGIN
    IF host IS NULL OR first_signal IS NULL OR last_signal IS NULL
       OR NOT isfinite(first_signal) OR NOT isfinite(last_signal) OR last_signal < first_signal THEN
        RETURN '[]'::jsonb;
    END IF;
    v_until := least(last_signal, first_signal + interval '6 hours');
    BEGIN
        SELECT coalesce(jsonb_agg(jsonb_build_object(
                   'metric', x.metric, 'kind', 'involved', 'score', round(x.score::numeric, 2),
                   'peak_at', (extract(epoch FROM x.peak_at) * 1e6)::bigint,
                   'value', x.peak_value, 'baseline', x.baseline)
                 ORDER BY abs(x.score) DESC, x.metric), '[]'::jsonb)
          INTO v_out
          FROM (SELECT array_agg(st.metric) AS m, array_agg(x.ts) AS ts, array_agg(x.value) AS v
                  FROM coherence.series_state st
                 CROSS JOIN LATERAL (
                       -- one range scan of the series key per metric of the host
                       SELECT m."timestamp" AS ts, m.value FROM coherence.metrics m
                        WHERE m.host = st.host AND m.metric_name = st.metric
                          AND m."timestamp" >= first_signal - interval '1 day'
                          AND m."timestamp" <= v_until) x
                 WHERE st.host = incident_involved.host) h
         CROSS JOIN LATERAL coherence.involved_metrics(h.m, h.ts, h.v, first_signal, v_until) x
         WHERE x.metric <> ALL (coalesce(exclude, '{}'));
    EXCEPTION WHEN out_of_memory OR program_limit_exceeded OR array_subscript_error THEN
        RAISE WARNING 'coherence.incident_involved(): involved metrics of % skipped: %', host, SQLERRM
            USING HINT = 'The host has more samples in a day than this backend can analyse together.';
        v_out := '[]'::jsonb;
    END;
    RETURN v_out;
END
$fn$;
COMMENT ON FUNCTION coherence.incident_involved(text, timestamptz, timestamptz, text[]) IS
    'The metrics of a host (those in coherence.series_state) that deviated during an incident (coherence.involved_metrics over a day of baseline and at most the first 6 hours of the incident), except those in exclude, as ranking entries [{metric, kind: involved, score, peak_at, value, baseline}], strongest first. run_detection appends them to incidents.ranking. E.g. SELECT coherence.incident_involved(''web-1'', ''2025-12-13 04:00Z'', ''2025-12-13 04:20Z'');';

COMMENT ON FUNCTION coherence.series_band(timestamptz[], double precision[], integer, double precision, text) IS
    'The expected band of one series given as arrays (any order; NULL and non-finite values skipped): per point its value, the baseline and the lower/upper bounds the level detector of find_events judged it against (learned period, trend, robust scale; bounds = baseline -/+ threshold x scale), and whether it was anomalous; NULL bounds while the detector warms up. E.g. SELECT * FROM coherence.series_band(ARRAY[...], ARRAY[...]);';

-- The expected band of a stored series, with its per-series settings, for plotting.
CREATE FUNCTION coherence.expected_band(host text, metric text, since timestamptz, until timestamptz,
                                        lookback interval DEFAULT interval '7 days')
RETURNS TABLE (ts timestamptz, value double precision, baseline double precision,
               lower double precision, upper double precision, anomalous boolean)
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $fn$
#variable_conflict use_variable
BEGIN
    IF host IS NULL OR metric IS NULL OR since IS NULL OR until IS NULL OR lookback IS NULL THEN
        RETURN;
    END IF;
    IF since >= until OR lookback < interval '0' THEN
        RAISE EXCEPTION 'since must be earlier than until and lookback not negative'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('since = %s, until = %s, lookback = %s', since, until, lookback),
                  HINT = 'Example: SELECT * FROM coherence.expected_band(''web-1'', ''cpu'', now() - interval ''6 hours'', now());';
    END IF;
    RETURN QUERY
    SELECT b.ts, b.value, b.baseline, b.lower, b.upper, b.anomalous
      FROM (SELECT array_agg(s.ts) AS t, array_agg(s.value) AS v
              FROM coherence.samples(since - lookback, until) s
             WHERE s.host = expected_band.host AND s.metric = expected_band.metric) a
     CROSS JOIN coherence.series_settings(expected_band.host, expected_band.metric) st
     CROSS JOIN LATERAL coherence.series_band(a.t, a.v, st.window_points, st.threshold, st.direction) b
     WHERE b.ts >= since
     ORDER BY b.ts;
END
$fn$;
COMMENT ON FUNCTION coherence.expected_band(text, text, timestamptz, timestamptz, interval) IS
    'For one stored series (host, metric) and [since, until): each sample with the baseline and the lower/upper bounds the detector considered normal there (judged with lookback of history before since and the series'' coherence.series_rules settings), and whether it was anomalous; NULL bounds while warming up. For drawing the band: SELECT ts, value, lower, upper FROM coherence.expected_band(''host-stressed'', ''cpu'', ''2025-12-13 00:00Z'', ''2025-12-13 08:00Z'');';

