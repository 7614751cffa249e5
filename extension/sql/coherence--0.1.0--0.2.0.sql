-- coherence 0.1.0 -> 0.2.0 (see CHANGELOG.md). Run by ALTER EXTENSION coherence UPDATE TO '0.2.0'.
-- Tables and data are untouched: this release changes functions only.
\echo Use "ALTER EXTENSION coherence UPDATE TO '0.2.0'" to load this file. \quit

-- New Rust functions: the event detector with every kind and a summary, the learned period,
-- the catalogue of kinds, and the percent rule (one place, in the core).
CREATE FUNCTION coherence.find_events(
	"ts" timestamp with time zone[], /* :: std :: option :: Option < Array < TimestampWithTimeZone > > */
	"value" double precision[], /* :: std :: option :: Option < Array < f64 > > */
	"window_points" INT DEFAULT NULL, /* Option < i32 > */
	"threshold" double precision DEFAULT NULL, /* Option < f64 > */
	"direction" TEXT DEFAULT NULL, /* Option < & str > */
	"season_points" INT DEFAULT NULL, /* Option < i32 > */
	"report_from" timestamp with time zone DEFAULT NULL, /* Option < TimestampWithTimeZone > */
	"min_risk" double precision DEFAULT NULL, /* Option < f64 > */
	"host" TEXT DEFAULT NULL, /* Option < & str > */
	"metric" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS TABLE (
	"kind" TEXT,  /* String */
	"detector" TEXT,  /* String */
	"started_at" timestamp with time zone,  /* Option < TimestampWithTimeZone > */
	"ended_at" timestamp with time zone,  /* Option < TimestampWithTimeZone > */
	"peak_at" timestamp with time zone,  /* Option < TimestampWithTimeZone > */
	"peak_value" double precision,  /* f64 */
	"baseline" double precision,  /* f64 */
	"score" double precision,  /* f64 */
	"points" bigint,  /* i64 */
	"risk" double precision,  /* f64 */
	"summary" TEXT  /* String */
)
IMMUTABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'find_events_wrapper';
CREATE FUNCTION coherence.series_period(
	"ts" timestamp with time zone[], /* :: std :: option :: Option < Array < TimestampWithTimeZone > > */
	"value" double precision[] /* :: std :: option :: Option < Array < f64 > > */
) RETURNS TABLE (
	"period" TEXT,  /* Option < String > */
	"length" interval,  /* Option < Interval > */
	"points" bigint,  /* Option < i64 > */
	"acf" double precision,  /* Option < f64 > */
	"untested" TEXT[]  /* Vec < String > */
)
IMMUTABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'series_period_wrapper';
CREATE FUNCTION coherence.anomaly_kinds() RETURNS TABLE (
	"kind" TEXT,  /* & '_ str */
	"detector" TEXT,  /* & '_ str */
	"description" TEXT  /* & '_ str */
)
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'anomaly_kinds_wrapper';
CREATE FUNCTION coherence.default_min_risk() RETURNS double precision
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'default_min_risk_wrapper';
CREATE FUNCTION coherence.metric_unit(
	"metric" TEXT /* & str */
) RETURNS TEXT /* & '_ str */
IMMUTABLE STRICT PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'metric_unit_sql_wrapper';

-- The percent rule was SQL in 0.1.0; now the core's (same signature and results).
CREATE OR REPLACE FUNCTION coherence.metric_capacity(
	"metric" TEXT /* & str */
) RETURNS double precision /* Option < f64 > */
IMMUTABLE STRICT PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'metric_capacity_sql_wrapper';

-- series_events, series_trend_event and series_volatility_events keep their signatures; their
-- library code now treats NULL parameters as the defaults instead of failing.

-- coherence.detect: the unit comes from coherence.metric_unit.
CREATE OR REPLACE FUNCTION coherence.detect(since timestamptz, until timestamptz)
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

-- coherence.detect_events gains lookback (history before since that is baseline only) and
-- min_risk.
DROP FUNCTION coherence.detect_events(timestamptz, timestamptz);
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
                  HINT = 'Example: SELECT * FROM coherence.detect_events(now() - interval ''1 hour'', now());';
    END IF;
    IF lookback < interval '0' THEN
        RAISE EXCEPTION 'lookback must not be negative'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('lookback = %s', lookback),
                  HINT = 'The default is interval ''7 days'' of history before since.';
    END IF;
    RETURN QUERY
    WITH series AS (
        SELECT s.host, s.metric, array_agg(s.ts) AS ts, array_agg(s.value) AS v
          FROM coherence.samples(since - lookback, until) s
         GROUP BY s.host, s.metric
    )
    -- One LATERAL per series, so the arrays are built once and never materialized.
    SELECT s.host, s.metric, e.detector, e.kind, e.started_at, e.ended_at, e.peak_at,
           e.peak_value, e.baseline, e.score, e.risk, e.summary
      FROM series s
     CROSS JOIN LATERAL coherence.find_events(s.ts, s.v, report_from => since, min_risk => min_risk,
                                              host => s.host, metric => s.metric) e
     ORDER BY e.started_at, s.host, s.metric, e.detector;
END
$fn$;

COMMENT ON FUNCTION coherence.detect_events(timestamptz, timestamptz, interval, double precision) IS
    'Anomaly events (risk at least min_risk, default coherence.default_min_risk()) of every series in coherence.metrics and numeric coherence.signal_events that end in [since, until), judged against their own history from lookback (default 7 days) before since: spikes, drops and level shifts in both directions, volatility up/down, drifts and leaks with time to exhaustion, each with a calibrated risk. E.g. the last hour: SELECT summary FROM coherence.detect_events(now() - interval ''1 hour'', now()) WHERE risk >= 0.5;';

-- run_detection reports events from the new data on, judged against the lookback before it,
-- and keeps low-risk events that explain an error burst.
CREATE OR REPLACE FUNCTION coherence.run_detection(
    lookback    interval DEFAULT '48 hours',
    tolerance   interval DEFAULT '5 minutes',
    close_after interval DEFAULT '30 minutes',
    full_rescan boolean DEFAULT false
)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_run        bigint;
    v_prev_wm    timestamptz;
    v_wm         timestamptz;
    v_new_min    timestamptz;
    v_since      timestamptz;
    v_until      timestamptz;
    v_data_now   timestamptz;
    v_anoms      integer := 0;
    v_opened     integer := 0;
    v_updated    integer := 0;
    v_resolved   integer := 0;
    v_signals    jsonb;
    v_samples    jsonb;
    v_incidents  jsonb;
    inc          jsonb;
    v_keep       bigint;
    v_old        coherence.incidents;
    v_first      timestamptz;
    v_last       timestamptz;
    v_top        jsonb;
    r            record;
BEGIN
    IF lookback IS NULL OR tolerance IS NULL OR close_after IS NULL OR full_rescan IS NULL THEN
        RAISE EXCEPTION 'run_detection arguments must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Call SELECT coherence.run_detection(); for the defaults.';
    END IF;
    IF lookback < interval '0' OR tolerance <= interval '0' OR close_after <= interval '0' THEN
        RAISE EXCEPTION 'lookback must be >= 0, tolerance and close_after > 0'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('lookback = %s, tolerance = %s, close_after = %s', lookback, tolerance, close_after),
                  HINT = 'Defaults: lookback 48 hours, tolerance 5 minutes, close_after 30 minutes.';
    END IF;
    -- One run at a time; a concurrent call waits for the running one.
    PERFORM pg_advisory_xact_lock(hashtext('coherence.run_detection'));

    SELECT watermark INTO v_prev_wm FROM coherence.detection_runs
     WHERE watermark IS NOT NULL ORDER BY id DESC LIMIT 1;
    INSERT INTO coherence.detection_runs DEFAULT VALUES RETURNING id INTO v_run;

    -- Rows written since the previous run (10 minutes of overlap covers transactions that
    -- committed late; re-reading them is idempotent).
    SELECT greatest((SELECT max(created_at) FROM coherence.metrics),
                    (SELECT max(created_at) FROM coherence.signal_events)) INTO v_wm;
    IF full_rescan OR v_prev_wm IS NULL THEN
        SELECT least((SELECT min("timestamp") FROM coherence.metrics),
                     (SELECT min(ts) FROM coherence.signal_events)) INTO v_new_min;
        v_since := v_new_min;
    ELSE
        SELECT least((SELECT min("timestamp") FROM coherence.metrics WHERE created_at > v_prev_wm - interval '10 minutes'),
                     (SELECT min(ts) FROM coherence.signal_events WHERE created_at > v_prev_wm - interval '10 minutes'))
          INTO v_new_min;
        v_since := v_new_min - lookback;
    END IF;
    SELECT greatest((SELECT max("timestamp") FROM coherence.metrics),
                    (SELECT max(ts) FROM coherence.signal_events)) INTO v_data_now;

    IF v_new_min IS NOT NULL THEN
        v_until := v_data_now + interval '1 microsecond';

        -- 1. Anomalies: insert new, update grown ones, leave unchanged ones untouched.
        WITH ev AS (
            SELECT d.* FROM coherence.detect_events(v_new_min, v_until, v_new_min - v_since, 0) d
             WHERE d.risk >= coherence.default_min_risk()
                -- Context of an error burst: a robust event on the host that ends at most
                -- `tolerance` before an error is kept whatever its risk (routine for the series
                -- alone, it still explains the burst; the burst is the news).
                OR (d.detector = 'robust' AND EXISTS (
                       SELECT 1 FROM coherence.signal_events e
                        WHERE e.host = d.host AND e.severity = 'error'
                          AND e.ts >= d.started_at AND e.ts <= d.ended_at + tolerance))
        ), up AS (
            INSERT INTO coherence.anomalies AS a
                   (host, metric, detector, kind, started_at, ended_at, peak_at, peak_value,
                    baseline, score, risk, summary)
            SELECT host, metric, detector, kind, started_at, ended_at, peak_at, peak_value,
                   baseline, score, risk, summary FROM ev
            ON CONFLICT (host, metric, detector, started_at) DO UPDATE
               SET kind = excluded.kind, ended_at = excluded.ended_at, peak_at = excluded.peak_at,
                   peak_value = excluded.peak_value, baseline = excluded.baseline,
                   score = excluded.score, risk = excluded.risk, summary = excluded.summary,
                   updated_at = now()
             WHERE (a.kind, a.ended_at, a.peak_at, a.peak_value, a.baseline, a.score, a.risk, a.summary)
                   IS DISTINCT FROM
                   (excluded.kind, excluded.ended_at, excluded.peak_at, excluded.peak_value,
                    excluded.baseline, excluded.score, excluded.risk, excluded.summary)
            RETURNING 1
        )
        SELECT count(*) INTO v_anoms FROM up;

        -- 2. Correlate anomalies and error events of the range.
        SELECT coalesce(jsonb_agg(s), '[]'::jsonb) INTO v_signals FROM (
            SELECT 'anomaly:' || a.id AS id, a.host, 'anomaly' AS kind, a.metric,
                   a.kind AS anomaly_kind,
                   (extract(epoch FROM a.started_at) * 1e6)::bigint AS start,
                   (extract(epoch FROM a.ended_at) * 1e6)::bigint AS "end",
                   (extract(epoch FROM a.peak_at) * 1e6)::bigint AS peak_at,
                   a.peak_value, a.risk, a.baseline,
                   coherence.metric_unit(a.metric) AS unit
              FROM coherence.anomalies a
             WHERE a.ended_at >= v_since AND a.started_at < v_until
            UNION ALL
            SELECT 'error:' || e.id, e.host, 'error', coalesce(e.metric, 'error'), '',
                   (extract(epoch FROM e.ts) * 1e6)::bigint, (extract(epoch FROM e.ts) * 1e6)::bigint,
                   (extract(epoch FROM e.ts) * 1e6)::bigint, 0, 0, NULL, ''
              FROM coherence.signal_events e
             WHERE e.severity = 'error' AND e.ts >= v_since AND e.ts < v_until
        ) s;
        -- Values of leaking metrics at each error, for "Memory at 87.61% (leak progression)".
        SELECT coalesce(jsonb_agg(jsonb_build_object('host', x.host, 'metric', x.metric,
                   'ts', (extract(epoch FROM x.ts) * 1e6)::bigint, 'value', x.value)), '[]'::jsonb)
          INTO v_samples
          FROM (SELECT DISTINCT e.host, l.metric, m."timestamp" AS ts, m.value
                  FROM coherence.signal_events e
                  JOIN (SELECT DISTINCT host, metric FROM coherence.anomalies
                         WHERE kind = 'leak' AND ended_at >= v_since AND started_at < v_until) l
                    ON l.host = e.host
                 CROSS JOIN LATERAL (
                       SELECT mm."timestamp", mm.value FROM coherence.metrics mm
                        WHERE mm.host = e.host AND mm.metric_name = l.metric AND mm."timestamp" <= e.ts
                        ORDER BY mm."timestamp" DESC LIMIT 1) m
                 WHERE e.severity = 'error' AND e.ts >= v_since AND e.ts < v_until) x;
        v_incidents := coherence.correlate(v_signals, v_samples, tolerance);

        -- 3. Upsert incidents: a computed incident updates the oldest stored one it overlaps
        --    (the others are marked merged), or opens a new one.
        FOR inc IN SELECT * FROM jsonb_array_elements(v_incidents) LOOP
            v_first := to_timestamp((inc->>'opened_at')::double precision / 1e6);
            v_last := to_timestamp((inc->>'last_signal_at')::double precision / 1e6);
            v_top := inc->'hypotheses'->0;
            SELECT * INTO v_old FROM coherence.incidents i
             WHERE i.host = inc->>'host' AND i.status <> 'merged'
               AND i.opened_at <= v_last + tolerance AND i.last_signal_at >= v_first - tolerance
             ORDER BY i.id LIMIT 1;
            IF NOT FOUND THEN
                INSERT INTO coherence.incidents
                       (host, opened_at, first_error_at, last_signal_at, error_count, risk,
                        hypothesis, confidence, hypotheses, narrative, signals, context, graph)
                VALUES (inc->>'host', v_first,
                        to_timestamp((inc->>'first_error_at')::double precision / 1e6), v_last,
                        (inc->>'error_count')::int, (inc->>'risk')::double precision,
                        v_top->>'cause', (v_top->>'confidence')::double precision,
                        inc->'hypotheses', inc->>'narrative', inc->'signal_ids', inc->'context_ids',
                        inc->'edges')
                RETURNING id INTO v_keep;
                v_opened := v_opened + 1;
                PERFORM pg_notify('coherence_incidents', jsonb_build_object(
                    'event', 'opened', 'id', v_keep, 'host', inc->>'host',
                    'risk', (inc->>'risk')::double precision, 'previous_risk', NULL,
                    'hypothesis', v_top->>'cause', 'opened_at', v_first, 'status', 'open')::text);
            ELSE
                v_keep := v_old.id;
                UPDATE coherence.incidents i
                   SET opened_at = least(v_old.opened_at, v_first),
                       first_error_at = to_timestamp((inc->>'first_error_at')::double precision / 1e6),
                       last_signal_at = greatest(v_old.last_signal_at, v_last),
                       error_count = (inc->>'error_count')::int,
                       risk = (inc->>'risk')::double precision,
                       hypothesis = v_top->>'cause',
                       confidence = (v_top->>'confidence')::double precision,
                       hypotheses = inc->'hypotheses', narrative = inc->>'narrative',
                       signals = inc->'signal_ids', context = inc->'context_ids', graph = inc->'edges',
                       status = CASE WHEN v_last > v_old.last_signal_at THEN 'open' ELSE i.status END,
                       resolved_at = CASE WHEN v_last > v_old.last_signal_at THEN NULL ELSE i.resolved_at END,
                       updated_at = now()
                 WHERE i.id = v_keep
                   AND (i.opened_at, i.last_signal_at, i.error_count, i.risk, i.hypothesis, i.confidence,
                        i.narrative, i.signals, i.context, i.graph)
                       IS DISTINCT FROM
                       (least(v_old.opened_at, v_first), greatest(v_old.last_signal_at, v_last),
                        (inc->>'error_count')::int, (inc->>'risk')::double precision, v_top->>'cause',
                        (v_top->>'confidence')::double precision, inc->>'narrative',
                        inc->'signal_ids', inc->'context_ids', inc->'edges');
                IF FOUND THEN
                    v_updated := v_updated + 1;
                    IF v_old.risk IS DISTINCT FROM (inc->>'risk')::double precision THEN
                        PERFORM pg_notify('coherence_incidents', jsonb_build_object(
                            'event', 'updated', 'id', v_keep, 'host', inc->>'host',
                            'risk', (inc->>'risk')::double precision, 'previous_risk', v_old.risk,
                            'hypothesis', v_top->>'cause', 'opened_at', v_first, 'status', 'open')::text);
                    END IF;
                END IF;
                -- Other stored incidents this one now covers are merged into it.
                UPDATE coherence.incidents i
                   SET status = 'merged', merged_into = v_keep, updated_at = now()
                 WHERE i.host = inc->>'host' AND i.status <> 'merged' AND i.id <> v_keep
                   AND i.opened_at <= v_last + tolerance AND i.last_signal_at >= v_first - tolerance;
            END IF;
            -- The causal graph, rewritten only when it changed.
            IF NOT EXISTS (SELECT 1 FROM coherence.incident_edges WHERE incident_id = v_keep)
               OR (SELECT graph FROM coherence.incidents WHERE id = v_keep) IS DISTINCT FROM
                  (SELECT coalesce(jsonb_agg(jsonb_build_object('cause', cause, 'effect', effect,
                          'lag_secs', extract(epoch FROM lag)::double precision, 'strength', strength)
                          ORDER BY cause, effect), '[]'::jsonb)
                     FROM coherence.incident_edges WHERE incident_id = v_keep) THEN
                DELETE FROM coherence.incident_edges WHERE incident_id = v_keep;
                INSERT INTO coherence.incident_edges (incident_id, cause, effect, lag, strength)
                SELECT v_keep, e->>'cause', e->>'effect',
                       make_interval(secs => (e->>'lag_secs')::double precision),
                       (e->>'strength')::double precision
                  FROM jsonb_array_elements(inc->'edges') e
                ON CONFLICT DO NOTHING;
                UPDATE coherence.incidents SET graph = (
                    SELECT coalesce(jsonb_agg(jsonb_build_object('cause', cause, 'effect', effect,
                           'lag_secs', extract(epoch FROM lag)::double precision, 'strength', strength)
                           ORDER BY cause, effect), '[]'::jsonb)
                      FROM coherence.incident_edges WHERE incident_id = v_keep)
                 WHERE id = v_keep;
            END IF;
        END LOOP;
    END IF;

    -- 4. Resolve incidents with no signal for close_after (in data time).
    FOR r IN
        UPDATE coherence.incidents i
           SET status = 'resolved', resolved_at = now(), updated_at = now()
         WHERE i.status = 'open' AND i.last_signal_at < v_data_now - close_after
        RETURNING i.id, i.host, i.risk, i.hypothesis, i.opened_at
    LOOP
        v_resolved := v_resolved + 1;
        PERFORM pg_notify('coherence_incidents', jsonb_build_object(
            'event', 'resolved', 'id', r.id, 'host', r.host, 'risk', r.risk, 'previous_risk', r.risk,
            'hypothesis', r.hypothesis, 'opened_at', r.opened_at, 'status', 'resolved')::text);
    END LOOP;

    UPDATE coherence.detection_runs
       SET finished_at = clock_timestamp(), watermark = coalesce(v_wm, v_prev_wm),
           since = CASE WHEN v_new_min IS NOT NULL THEN v_since END,
           until = v_until, anomalies_changed = v_anoms, incidents_opened = v_opened,
           incidents_updated = v_updated, incidents_resolved = v_resolved
     WHERE id = v_run;
    RETURN jsonb_build_object('run', v_run, 'since', v_since, 'until', v_until,
        'anomalies_changed', v_anoms, 'incidents_opened', v_opened,
        'incidents_updated', v_updated, 'incidents_resolved', v_resolved);
END
$fn$;

COMMENT ON FUNCTION coherence.find_events(timestamptz[], double precision[], integer, double precision, text, integer, timestamptz, double precision, text, text) IS
    'Anomaly events of one series given as arrays (any order; NULL and non-finite values skipped): spikes, drops, level shifts (robust scores against a trailing or same-phase baseline, and a CUSUM), volatility up/down, drifts and leaks; one row per event with detector, start, peak, end, evidence score, calibrated risk and a summary. NULL parameters take the defaults (window_points 192, threshold 8, direction both, learned period, min_risk 0.2). Points before report_from are baseline only. Any table: SELECT s.svc, e.* FROM (SELECT svc, array_agg(ts) ts, array_agg(v) v FROM my_table GROUP BY svc) s CROSS JOIN LATERAL coherence.find_events(s.ts, s.v, metric => s.svc) e;';
COMMENT ON FUNCTION coherence.series_events(timestamptz[], double precision[], integer, double precision, text, integer) IS
    'The 0.1.0 form of coherence.find_events (same detectors and risk; no detector or summary column, no report_from). E.g. SELECT kind, peak_at, risk FROM coherence.series_events(ARRAY[...], ARRAY[...]);';
COMMENT ON FUNCTION coherence.series_period(timestamptz[], double precision[]) IS
    'The period learned from one series (hourly, daily or weekly, by autocorrelation of the detrended series at that lag), or NULL with the candidates that lacked history. E.g. SELECT * FROM coherence.series_period(ARRAY[...], ARRAY[...]);';
COMMENT ON FUNCTION coherence.default_min_risk() IS
    'The risk below which events are not reported by default (0.2: such an event is expected less than once in about 4 days). E.g. SELECT coherence.default_min_risk();';
COMMENT ON FUNCTION coherence.anomaly_kinds() IS
    'Every anomaly kind with the detector that reports it and what it means. E.g. SELECT * FROM coherence.anomaly_kinds();';
COMMENT ON FUNCTION coherence.metric_capacity(text) IS
    'Capacity used for time to exhaustion: 100 for percent metrics (cpu, memory, disk, *pct*, *percent*), else NULL. E.g. SELECT coherence.metric_capacity(''cpu'');';
COMMENT ON FUNCTION coherence.metric_unit(text) IS
    'Unit shown after values of a metric: % for percent metrics (cpu, memory, disk, *pct*, *percent*), else the empty string. E.g. SELECT coherence.metric_unit(''disk_pct'');';
COMMENT ON FUNCTION coherence.series_volatility_events(timestamptz[], double precision[], interval, double precision) IS
    'Variance changes of one series, both directions: date_bin-aligned windows whose robust noise level (from first differences) is at least ratio times (or at most 1/ratio of) the median of the previous 6 normal windows and significant; consecutive windows form one event. E.g. SELECT * FROM coherence.series_volatility_events(ARRAY[...], ARRAY[...]);';
COMMENT ON FUNCTION coherence.series_trend_event(timestamptz[], double precision[], double precision, double precision) IS
    'A significant leak-like trend of one series (fitted change > pct_threshold, R² >= 0.6, Mann-Kendall p < 0.001), with the time the fitted line reaches capacity; zero or one row.';
