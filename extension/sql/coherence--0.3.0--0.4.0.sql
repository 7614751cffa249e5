-- coherence 0.3.0 -> 0.4.0 (see CHANGELOG.md). Run by ALTER EXTENSION coherence UPDATE TO '0.4.0'.
-- Operator controls: per-series rules, maintenance windows, no-data detection, the job's
-- health and failure record, watcher alerts. Every row is kept.
\echo Use "ALTER EXTENSION coherence UPDATE TO '0.4.0'" to load this file. \quit

-- find_events gains a capacity argument (a new signature: the old one is replaced).
DROP FUNCTION coherence.find_events(timestamptz[], double precision[], integer, double precision, text, integer, timestamptz, double precision, text, text);
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
	"metric" TEXT DEFAULT NULL, /* Option < & str > */
	"capacity" double precision DEFAULT NULL /* Option < f64 > */
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
AS 'MODULE_PATHNAME', 'find_events_v4_wrapper';
CREATE FUNCTION coherence.series_cadence(
	"ts" timestamp with time zone[] /* Array < TimestampWithTimeZone > */
) RETURNS interval /* Option < Interval > */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'series_cadence_wrapper';
CREATE FUNCTION coherence.no_data_event(
	"host" TEXT, /* & str */
	"metric" TEXT, /* & str */
	"last_at" timestamp with time zone, /* TimestampWithTimeZone */
	"last_value" double precision, /* f64 */
	"cadence" interval, /* Interval */
	"data_now" timestamp with time zone /* TimestampWithTimeZone */
) RETURNS TABLE (
	"kind" TEXT,  /* String */
	"detector" TEXT,  /* String */
	"started_at" timestamp with time zone,  /* Option < TimestampWithTimeZone > */
	"ended_at" timestamp with time zone,  /* Option < TimestampWithTimeZone > */
	"peak_at" timestamp with time zone,  /* Option < TimestampWithTimeZone > */
	"peak_value" double precision,  /* f64 */
	"baseline" double precision,  /* f64 */
	"score" double precision,  /* f64 */
	"risk" double precision,  /* f64 */
	"summary" TEXT  /* String */
)
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'no_data_event_wrapper';
CREATE FUNCTION coherence.series_silent(
	"last_at" timestamp with time zone, /* TimestampWithTimeZone */
	"cadence" interval, /* Interval */
	"at" timestamp with time zone /* TimestampWithTimeZone */
) RETURNS bool /* bool */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'series_silent_wrapper';
CREATE FUNCTION coherence.default_settings() RETURNS TABLE (
	"setting" TEXT,  /* & '_ str */
	"value" TEXT  /* String */
)
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'default_settings_wrapper';
CREATE FUNCTION coherence.involved_metrics(
	"metric" TEXT[], /* :: std :: option :: Option < Array < & str > > */
	"ts" timestamp with time zone[], /* :: std :: option :: Option < Array < TimestampWithTimeZone > > */
	"value" double precision[], /* :: std :: option :: Option < Array < f64 > > */
	"from" timestamp with time zone, /* Option < TimestampWithTimeZone > */
	"until" timestamp with time zone /* Option < TimestampWithTimeZone > */
) RETURNS TABLE (
	"metric" TEXT,  /* String */
	"score" double precision,  /* f64 */
	"peak_at" timestamp with time zone,  /* Option < TimestampWithTimeZone > */
	"peak_value" double precision,  /* f64 */
	"baseline" double precision  /* f64 */
)
IMMUTABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'involved_metrics_wrapper';
CREATE FUNCTION coherence.series_band(
	"ts" timestamp with time zone[], /* :: std :: option :: Option < Array < TimestampWithTimeZone > > */
	"value" double precision[], /* :: std :: option :: Option < Array < f64 > > */
	"window_points" INT DEFAULT NULL, /* Option < i32 > */
	"threshold" double precision DEFAULT NULL, /* Option < f64 > */
	"direction" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS TABLE (
	"ts" timestamp with time zone,  /* Option < TimestampWithTimeZone > */
	"value" double precision,  /* f64 */
	"baseline" double precision,  /* Option < f64 > */
	"lower" double precision,  /* Option < f64 > */
	"upper" double precision,  /* Option < f64 > */
	"anomalous" bool  /* bool */
)
IMMUTABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'series_band_wrapper';

COMMENT ON FUNCTION coherence.find_events(timestamptz[], double precision[], integer, double precision, text, integer, timestamptz, double precision, text, text, double precision) IS
    'Anomaly events of one series given as arrays (any order; NULL and non-finite values skipped): spikes, drops, level shifts (robust scores against a trailing or same-phase baseline, and a CUSUM), volatility up/down, drifts and leaks; one row per event with detector, start, peak, end, evidence score, calibrated risk and a summary. NULL parameters take the defaults (window_points 192, threshold 8, direction both, learned period, min_risk 0.2, capacity coherence.metric_capacity(metric)). Points before report_from are baseline only. Any table: SELECT s.svc, e.* FROM (SELECT svc, array_agg(ts) ts, array_agg(v) v FROM my_table GROUP BY svc) s CROSS JOIN LATERAL coherence.find_events(s.ts, s.v, metric => s.svc) e;';
COMMENT ON FUNCTION coherence.series_cadence(timestamptz[]) IS
    'The cadence of a series: the median gap between its latest 33 distinct sample times, or NULL with fewer than 3. E.g. SELECT coherence.series_cadence(ARRAY[''2025-01-01 00:00Z'', ''2025-01-01 00:01Z'', ''2025-01-01 00:02Z'']::timestamptz[]);';
COMMENT ON FUNCTION coherence.no_data_event(text, text, timestamptz, double precision, interval, timestamptz) IS
    'The no-data event of a series whose last sample is (last_at, last_value) with the given cadence, at data time data_now: one row while it is silent (2 or more intervals without a sample, risk 1 - 2^(-missed/2); none after 7 days of silence), none otherwise. E.g. SELECT risk, summary FROM coherence.no_data_event(''web-1'', ''cpu'', ''2025-01-01 00:00Z'', 42, ''1 minute'', ''2025-01-01 00:05Z'');';
COMMENT ON FUNCTION coherence.series_silent(timestamptz, interval, timestamptz) IS
    'Whether a series with its last sample at last_at and the given cadence has no data at time at (2 or more of its intervals without a sample; false for a cadence with months or not positive). E.g. SELECT coherence.series_silent(now() - interval ''3 minutes'', ''1 minute'', now());';
COMMENT ON FUNCTION coherence.default_settings() IS
    'The detector settings a series gets where no rule of coherence.series_rules sets them. E.g. SELECT * FROM coherence.default_settings();';
COMMENT ON FUNCTION coherence.involved_metrics(text[], timestamptz[], double precision[], timestamptz, timestamptz) IS
    'The metrics of one host (parallel arrays metric, ts, value) that deviated during [from, until]: largest robust z (median and MAD of the metric''s own samples before from, scale floored at a quarter of their standard deviation) of at least 5, strongest first; metrics with fewer than 30 earlier samples are not judged. E.g. SELECT metric, score FROM coherence.involved_metrics(ARRAY[...], ARRAY[...], ARRAY[...], ''2025-12-13 04:00Z'', ''2025-12-13 04:30Z'');';

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


-- Operator controls: per-series settings (rules), maintenance windows, per-series state for
-- no-data detection. See docs/operations.md.

-- Per-series settings. A rule matches series by LIKE patterns on host and metric (NULL: any);
-- for each setting the most specific matching rule that sets it (not NULL) wins: a literal
-- pattern (no % or _) is more specific than a wildcard pattern, which is more specific than
-- NULL; host and metric specificities add up, ties go to the metric's, then to the newest rule.
CREATE TABLE coherence.series_rules (
    id             bigserial PRIMARY KEY,
    host_pattern   text,
    metric_pattern text,
    threshold      double precision CHECK (threshold > 0 AND threshold < 1e6),
    window_points  integer CHECK (window_points BETWEEN 3 AND 1000000),
    direction      text CHECK (direction IN ('both', 'up', 'down')),
    min_risk       double precision CHECK (min_risk BETWEEN 0 AND 1),
    capacity       double precision CHECK (capacity > 0 AND capacity < 1e300),
    detectors      text[] CHECK (detectors <@ ARRAY['robust', 'volatility', 'trend', 'collective', 'no_data']::text[]
                                 AND array_position(detectors, NULL) IS NULL),
    min_duration   interval CHECK (min_duration >= interval '0'),
    note           text,
    created_by     text NOT NULL DEFAULT current_user,
    created_at     timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE coherence.series_rules IS
    'Per-series detector settings: rules matching series by host and metric LIKE patterns; for each setting the most specific matching rule that sets it wins (see coherence.explain and docs/operations.md). Used by coherence.detect_events and coherence.run_detection.';
COMMENT ON COLUMN coherence.series_rules.id IS 'Rule id (newer rules win ties).';
COMMENT ON COLUMN coherence.series_rules.host_pattern IS 'LIKE pattern on the host, e.g. web-% or db-1; NULL matches every host.';
COMMENT ON COLUMN coherence.series_rules.metric_pattern IS 'LIKE pattern on the metric, e.g. cpu or disk%; NULL matches every metric.';
COMMENT ON COLUMN coherence.series_rules.threshold IS 'Robust z at which a point is anomalous (default 8); higher is less sensitive.';
COMMENT ON COLUMN coherence.series_rules.window_points IS 'Trailing points in the level baseline (default 192).';
COMMENT ON COLUMN coherence.series_rules.direction IS 'both (default), up (rises only) or down (drops only).';
COMMENT ON COLUMN coherence.series_rules.min_risk IS 'Anomalies below this risk are not recorded (default coherence.default_min_risk()).';
COMMENT ON COLUMN coherence.series_rules.capacity IS 'Value at which a leaking series is exhausted, for time to exhaustion (default 100 for percent metrics, else none).';
COMMENT ON COLUMN coherence.series_rules.detectors IS 'Detectors enabled for the series, a subset of {robust,volatility,trend,collective,no_data} (default all).';
COMMENT ON COLUMN coherence.series_rules.min_duration IS 'Anomalies shorter than this are recorded but open or join no incident (default 0): "anomalous for N minutes".';
COMMENT ON COLUMN coherence.series_rules.note IS 'Why the rule exists.';
COMMENT ON COLUMN coherence.series_rules.created_by IS 'Who added it.';
COMMENT ON COLUMN coherence.series_rules.created_at IS 'When it was added.';

-- Maintenance windows: planned work on matching hosts. Anomalies are still recorded; an
-- incident whose signals all fall inside a window is muted (no alert); one that goes on past
-- the window's end is not.
CREATE TABLE coherence.maintenance_windows (
    id           bigserial PRIMARY KEY,
    host_pattern text NOT NULL DEFAULT '%',
    starts_at    timestamptz NOT NULL,
    ends_at      timestamptz NOT NULL,
    reason       text NOT NULL CHECK (reason <> ''),
    author       text NOT NULL DEFAULT current_user,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT maintenance_windows_bounded CHECK (isfinite(starts_at) AND isfinite(ends_at) AND ends_at > starts_at)
);
CREATE INDEX maintenance_windows_time_idx ON coherence.maintenance_windows (starts_at, ends_at);
COMMENT ON TABLE coherence.maintenance_windows IS
    'Maintenance windows (mutes): incidents on matching hosts whose signals all fall in [starts_at, ends_at) are muted (incidents.muted_by): recorded, not alerted. Anomalies are recorded as always. E.g. INSERT INTO coherence.maintenance_windows (host_pattern, starts_at, ends_at, reason) VALUES (''db-%'', now(), now() + interval ''1 hour'', ''kernel upgrade'');';
COMMENT ON COLUMN coherence.maintenance_windows.id IS 'Window id (incidents.muted_by).';
COMMENT ON COLUMN coherence.maintenance_windows.host_pattern IS 'LIKE pattern on the host (default %: every host).';
COMMENT ON COLUMN coherence.maintenance_windows.starts_at IS 'Start (inclusive), in the time of the data.';
COMMENT ON COLUMN coherence.maintenance_windows.ends_at IS 'End (exclusive); after it the window mutes nothing new.';
COMMENT ON COLUMN coherence.maintenance_windows.reason IS 'Why (required), e.g. the change ticket.';
COMMENT ON COLUMN coherence.maintenance_windows.author IS 'Who planned it (default the current user).';
COMMENT ON COLUMN coherence.maintenance_windows.created_at IS 'When it was added.';

-- Per-series state kept by run_detection for no-data detection and series_health: the last
-- sample and the series' cadence, refreshed for the series that get new rows.
CREATE TABLE coherence.series_state (
    host       text NOT NULL,
    metric     text NOT NULL,
    last_at    timestamptz NOT NULL,
    last_value double precision NOT NULL,
    cadence    interval,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (host, metric)
);
COMMENT ON TABLE coherence.series_state IS
    'One row per series of coherence.metrics seen by coherence.run_detection(): its last sample and cadence (median gap of its latest 33 samples), refreshed when the series gets new rows. No-data detection and coherence.series_health read it.';
COMMENT ON COLUMN coherence.series_state.host IS 'Host.';
COMMENT ON COLUMN coherence.series_state.metric IS 'Metric.';
COMMENT ON COLUMN coherence.series_state.last_at IS 'Time of the newest sample.';
COMMENT ON COLUMN coherence.series_state.last_value IS 'Its value.';
COMMENT ON COLUMN coherence.series_state.cadence IS 'Median gap between the latest samples (NULL with fewer than 3).';
COMMENT ON COLUMN coherence.series_state.updated_at IS 'When run_detection last refreshed it.';

SELECT pg_catalog.pg_extension_config_dump('coherence.series_rules', '');
SELECT pg_catalog.pg_extension_config_dump('coherence.series_rules_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('coherence.maintenance_windows', '');
SELECT pg_catalog.pg_extension_config_dump('coherence.maintenance_windows_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('coherence.series_state', '');

-- The effective settings of one series (NULL: the default applies), with the rule behind
-- each (sources) and every matching rule, most specific first (rules).
CREATE FUNCTION coherence.series_settings(host text, metric text)
RETURNS TABLE (
    threshold     double precision,
    window_points integer,
    direction     text,
    min_risk      double precision,
    capacity      double precision,
    detectors     text[],
    min_duration  interval,
    sources       jsonb,
    rules         bigint[]
)
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
    WITH r AS (
        SELECT r.*,
               (CASE WHEN r.host_pattern IS NULL THEN 0 WHEN r.host_pattern ~ '[%_\\]' THEN 1 ELSE 2 END)
             + (CASE WHEN r.metric_pattern IS NULL THEN 0 WHEN r.metric_pattern ~ '[%_\\]' THEN 1 ELSE 2 END) AS spec,
               (CASE WHEN r.metric_pattern IS NULL THEN 0 WHEN r.metric_pattern ~ '[%_\\]' THEN 1 ELSE 2 END) AS mspec
          FROM coherence.series_rules r
         WHERE (r.host_pattern IS NULL OR $1 LIKE r.host_pattern)
           AND (r.metric_pattern IS NULL OR $2 LIKE r.metric_pattern)
    )
    SELECT (array_agg(threshold ORDER BY spec DESC, mspec DESC, id DESC) FILTER (WHERE threshold IS NOT NULL))[1],
           (array_agg(window_points ORDER BY spec DESC, mspec DESC, id DESC) FILTER (WHERE window_points IS NOT NULL))[1],
           (array_agg(direction ORDER BY spec DESC, mspec DESC, id DESC) FILTER (WHERE direction IS NOT NULL))[1],
           (array_agg(min_risk ORDER BY spec DESC, mspec DESC, id DESC) FILTER (WHERE min_risk IS NOT NULL))[1],
           (array_agg(capacity ORDER BY spec DESC, mspec DESC, id DESC) FILTER (WHERE capacity IS NOT NULL))[1],
           (SELECT d.detectors FROM r d WHERE d.detectors IS NOT NULL
             ORDER BY d.spec DESC, d.mspec DESC, d.id DESC LIMIT 1),
           (array_agg(min_duration ORDER BY spec DESC, mspec DESC, id DESC) FILTER (WHERE min_duration IS NOT NULL))[1],
           jsonb_strip_nulls(jsonb_build_object(
               'threshold', (array_agg(id ORDER BY spec DESC, mspec DESC, id DESC) FILTER (WHERE threshold IS NOT NULL))[1],
               'window_points', (array_agg(id ORDER BY spec DESC, mspec DESC, id DESC) FILTER (WHERE window_points IS NOT NULL))[1],
               'direction', (array_agg(id ORDER BY spec DESC, mspec DESC, id DESC) FILTER (WHERE direction IS NOT NULL))[1],
               'min_risk', (array_agg(id ORDER BY spec DESC, mspec DESC, id DESC) FILTER (WHERE min_risk IS NOT NULL))[1],
               'capacity', (array_agg(id ORDER BY spec DESC, mspec DESC, id DESC) FILTER (WHERE capacity IS NOT NULL))[1],
               'detectors', (array_agg(id ORDER BY spec DESC, mspec DESC, id DESC) FILTER (WHERE detectors IS NOT NULL))[1],
               'min_duration', (array_agg(id ORDER BY spec DESC, mspec DESC, id DESC) FILTER (WHERE min_duration IS NOT NULL))[1])),
           coalesce(array_agg(id ORDER BY spec DESC, mspec DESC, id DESC) FILTER (WHERE id IS NOT NULL), '{}')
      FROM r
$fn$;
COMMENT ON FUNCTION coherence.series_settings(text, text) IS
    'The effective settings of one series from coherence.series_rules (NULL: the default applies), the rule behind each (sources) and the matching rules, most specific first. E.g. SELECT * FROM coherence.series_settings(''web-1'', ''cpu'');';

-- Which rule applied, setting by setting, with the defaults filled in.
CREATE FUNCTION coherence.explain(host text, metric text)
RETURNS TABLE (setting text, value text, source text)
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT d.setting,
           coalesce(CASE d.setting
                        WHEN 'threshold' THEN s.threshold::text
                        WHEN 'window_points' THEN s.window_points::text
                        WHEN 'direction' THEN s.direction
                        WHEN 'min_risk' THEN s.min_risk::text
                        WHEN 'capacity' THEN s.capacity::text
                        WHEN 'detectors' THEN s.detectors::text
                        WHEN 'min_duration' THEN s.min_duration::text
                    END,
                    CASE WHEN d.setting = 'capacity'
                         THEN coalesce(coherence.metric_capacity($2)::text, 'none')
                         ELSE d.value END),
           coalesce('rule ' || (s.sources ->> d.setting) || coalesce(' (' ||
                        (SELECT r.note FROM coherence.series_rules r
                          WHERE r.id = (s.sources ->> d.setting)::bigint) || ')', ''),
                    'default')
      FROM coherence.default_settings() d
     CROSS JOIN coherence.series_settings($1, $2) s
$fn$;
COMMENT ON FUNCTION coherence.explain(text, text) IS
    'Setting by setting, the value the detectors use for one series and where it comes from (a rule of coherence.series_rules, or the default). E.g. SELECT * FROM coherence.explain(''web-1'', ''cpu'');';

-- The maintenance window that mutes an incident of host whose signals span [first, last].
CREATE FUNCTION coherence.muting_window(host text, first_signal timestamptz, last_signal timestamptz)
RETURNS bigint
LANGUAGE sql STABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT w.id FROM coherence.maintenance_windows w
     WHERE $1 LIKE w.host_pattern AND w.starts_at <= $2 AND $3 < w.ends_at
     ORDER BY w.id
     LIMIT 1
$fn$;
COMMENT ON FUNCTION coherence.muting_window(text, timestamptz, timestamptz) IS
    'The maintenance window (coherence.maintenance_windows.id) that covers signals of a host from first_signal to last_signal, or NULL: an incident with such a window is muted. E.g. SELECT coherence.muting_window(''db-1'', now(), now());';

-- Incidents muted by maintenance windows; failed runs recorded; watcher alerts.
ALTER TABLE coherence.incidents ADD COLUMN muted_by bigint;
ALTER TABLE coherence.detection_runs ADD COLUMN error text, ADD COLUMN error_sqlstate text;
ALTER TABLE coherence.alert_deliveries
    ALTER COLUMN incident_id DROP NOT NULL,
    ADD COLUMN watch_since timestamptz,
    ADD COLUMN detail text,
    ADD CONSTRAINT alert_deliveries_subject CHECK ((incident_id IS NULL) <> (watch_since IS NULL));
CREATE UNIQUE INDEX alert_deliveries_watch_once_idx ON coherence.alert_deliveries (watch_since, destination, action)
    WHERE incident_id IS NULL;
COMMENT ON COLUMN coherence.alert_deliveries.status IS 'pending, delivered, or failed (gave up: the maximum attempts, or a permanent refusal such as HTTP 400/403/404; a resolve is sent only after a delivered trigger). Re-queue with UPDATE coherence.alert_deliveries SET status = ''pending'', attempts = 0, next_attempt_at = now() WHERE status = ''failed'';';
-- Where each destination's alerting starts (coherence-ingest alert --since): its first start by
-- default, so a new destination is not paged for every incident in the database.
CREATE TABLE coherence.alert_destinations (
    destination text PRIMARY KEY,
    since       timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE coherence.alert_destinations IS
    'Destinations of coherence-ingest alert and where their alerting starts: incidents recorded (created_at) before since are not alerted (set on the first start, or by --since).';
COMMENT ON COLUMN coherence.alert_destinations.destination IS 'Destination name from the [alert] config.';
COMMENT ON COLUMN coherence.alert_destinations.since IS 'Incidents recorded (created_at) at or after this are alerted; -infinity for all.';
COMMENT ON COLUMN coherence.alert_destinations.created_at IS 'When the destination first started.';
SELECT pg_catalog.pg_extension_config_dump('coherence.alert_destinations', '');

CREATE OR REPLACE FUNCTION coherence.detect_events(since timestamptz, until timestamptz,
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
        SELECT s.host, s.metric, array_agg(s.ts) AS ts, array_agg(s.value) AS v
          FROM coherence.samples(since - lookback, until) s
         GROUP BY s.host, s.metric
    )
    -- One LATERAL per series, so the arrays are built once and never materialized.
    -- Per-series settings (coherence.series_rules): NULL takes the default; an explicit
    -- min_risk argument wins over the rules'.
    SELECT s.host, s.metric, e.detector, e.kind, e.started_at, e.ended_at, e.peak_at,
           e.peak_value, e.baseline, e.score, e.risk, e.summary
      FROM series s
      LEFT JOIN LATERAL (SELECT * FROM coherence.series_settings(s.host, s.metric) WHERE v_rules) st ON true
     CROSS JOIN LATERAL coherence.find_events(s.ts, s.v, window_points => st.window_points,
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

COMMENT ON FUNCTION coherence.detect_events(timestamptz, timestamptz, interval, double precision) IS
    'Anomaly events (risk at least min_risk, default coherence.default_min_risk()) of every series in coherence.metrics and numeric coherence.signal_events that end in [since, until), judged against their own history from lookback (default 7 days) before since: spikes, drops and level shifts in both directions, volatility up/down, drifts and leaks with time to exhaustion, each with a calibrated risk; per-series settings from coherence.series_rules apply. E.g. the last hour: SELECT summary FROM coherence.detect_events(now() - interval ''1 hour'', now()) WHERE risk >= 0.5;';

-- The job pg_cron runs. See docs/incidents.md.
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
    v_prev_now   timestamptz;
    v_new_min    timestamptz;
    v_new_max    timestamptz;
    v_since      timestamptz;
    v_until      timestamptz;
    v_data_now   timestamptz;
    v_anoms      integer := 0;
    v_opened     integer := 0;
    v_updated    integer := 0;
    v_resolved   integer := 0;
    v_signals    jsonb;
    v_coll       jsonb;
    v_samples    jsonb;
    v_incidents  jsonb;
    inc          jsonb;
    v_keep       bigint;
    v_old        coherence.incidents;
    v_first      timestamptz;
    v_last       timestamptz;
    v_top        jsonb;
    v_hosts      text[];
    v_metrics    text[];
    v_durations  boolean;
    v_rules      boolean;
    v_err        text;
    v_state      text;
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
    -- Each statement below must see what committed before it (a REPEATABLE READ snapshot
    -- taken before the lock would miss a concurrent run's incidents and duplicate them).
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'coherence.run_detection() must run in a READ COMMITTED transaction'
            USING ERRCODE = 'invalid_transaction_state',
                  DETAIL = format('transaction_isolation is %s', current_setting('transaction_isolation')),
                  HINT = 'Call it in its own transaction at the default isolation level (pg_cron does).';
    END IF;
    -- One run at a time. A concurrent call returns at once. The lock is a table lock on
    -- coherence.detection_runs in a mode only roles that may write that table can take, so no
    -- other login can block the job.
    BEGIN
        LOCK TABLE coherence.detection_runs IN SHARE ROW EXCLUSIVE MODE NOWAIT;
    EXCEPTION WHEN lock_not_available THEN
        RAISE NOTICE 'coherence.run_detection() is already running; this call does nothing';
        RETURN jsonb_build_object('skipped', 'already running');
    END;

    SELECT data_now INTO v_prev_now FROM coherence.detection_runs
     WHERE data_now IS NOT NULL ORDER BY id DESC LIMIT 1;
    INSERT INTO coherence.detection_runs DEFAULT VALUES RETURNING id INTO v_run;

    -- Per-series settings are looked up only when there are rules.
    v_rules := EXISTS (SELECT 1 FROM coherence.series_rules);
    -- The work, in a subtransaction: a failure (a revoked privilege, a full disk, ...) rolls
    -- the work back, keeps the queue for the next run and is recorded in detection_runs, where
    -- coherence.health() finds it. A cancel or statement_timeout is not caught.
    BEGIN
    -- New data: the queue filled by the tables' insert triggers. Deleting it here makes the
    -- run's claim atomic with its results; rows of transactions that commit later are queued
    -- later and analysed by a later run.
    WITH q AS (DELETE FROM coherence.pending_series RETURNING host, metric, min_ts, max_ts)
    SELECT (SELECT min(q.min_ts) FROM q), (SELECT max(q.max_ts) FROM q),
           (SELECT array_agg(k.host) FROM (SELECT DISTINCT q.host, q.metric FROM q) k),
           (SELECT array_agg(k.metric) FROM (SELECT DISTINCT q.host, q.metric FROM q) k)
      INTO v_new_min, v_new_max, v_hosts, v_metrics;
    IF full_rescan OR v_prev_now IS NULL THEN
        SELECT array_agg(k.host), array_agg(k.metric_name) INTO v_hosts, v_metrics
          FROM (SELECT DISTINCT m.host, m.metric_name FROM coherence.metrics m) k;
    END IF;
    -- The written series' last sample and cadence (for no-data detection and series_health).
    INSERT INTO coherence.series_state AS s (host, metric, last_at, last_value, cadence, updated_at)
    SELECT k.host, k.metric, l.last_at, l.last_value, coherence.series_cadence(l.ts), now()
      FROM unnest(v_hosts, v_metrics) AS k(host, metric)
     CROSS JOIN LATERAL (
           SELECT max(t.ts) AS last_at, (array_agg(t.value ORDER BY t.ts DESC))[1] AS last_value,
                  array_agg(t.ts) AS ts
             FROM (SELECT m."timestamp" AS ts, m.value FROM coherence.metrics m
                    WHERE m.host = k.host AND m.metric_name = k.metric
                    ORDER BY m."timestamp" DESC LIMIT 33) t) l
     WHERE l.last_at IS NOT NULL
    ON CONFLICT (host, metric) DO UPDATE
       SET last_at = excluded.last_at, last_value = excluded.last_value, cadence = excluded.cadence,
           updated_at = excluded.updated_at
     WHERE (s.last_at, s.last_value, s.cadence) IS DISTINCT FROM
           (excluded.last_at, excluded.last_value, excluded.cadence);
    IF full_rescan OR v_prev_now IS NULL THEN
        -- Everything (first run, or asked): one pass over the tables' finite times.
        SELECT least((SELECT min("timestamp") FROM coherence.metrics WHERE isfinite("timestamp")),
                     (SELECT min(ts) FROM coherence.signal_events WHERE isfinite(ts))),
               greatest((SELECT max("timestamp") FROM coherence.metrics WHERE isfinite("timestamp")),
                        (SELECT max(ts) FROM coherence.signal_events WHERE isfinite(ts)))
          INTO v_new_min, v_new_max;
        v_since := v_new_min;
    ELSE
        v_since := v_new_min - lookback;
    END IF;
    -- Data time: the newest sample any run has seen (incidents resolve against it). Samples
    -- stamped more than a day ahead of the database clock do not advance it: one skewed clock
    -- must not resolve every open incident.
    -- (least() ignores NULLs: with nothing new the cap must not become the data time.)
    v_data_now := greatest(v_prev_now,
                           CASE WHEN v_new_max IS NOT NULL THEN least(v_new_max, now() + interval '1 day') END);

    -- Analysable range: samples before year 1000 (lookback arithmetic near PostgreSQL's
    -- lower limit would fail every run) and after data time (far-future stamps) are not
    -- analysed; a queue holding only such rows analyses nothing.
    -- (greatest() ignores NULLs too: nothing new must stay nothing.)
    IF v_new_min IS NOT NULL THEN
        v_new_min := greatest(v_new_min, '1000-01-01 00:00+00'::timestamptz);
        v_since := greatest(v_since, '1000-01-01 00:00+00'::timestamptz - lookback);
        IF v_data_now IS NULL OR v_new_min > v_data_now THEN
            v_new_min := NULL;
            v_since := NULL;
        END IF;
    END IF;
    IF v_new_min IS NOT NULL THEN
        v_until := v_data_now + interval '1 microsecond';

        -- Collective anomalies first, on their own: a host too large for them (out of
        -- memory, array limits) costs its collective events, with a WARNING, not the run.
        BEGIN
            SELECT coalesce(jsonb_agg(to_jsonb(c)), '[]'::jsonb) INTO v_coll
              FROM coherence.detect_collective(v_new_min, v_until, v_new_min - v_since) c;
        EXCEPTION WHEN out_of_memory OR program_limit_exceeded OR array_subscript_error THEN
            RAISE WARNING 'coherence.run_detection(): collective anomalies skipped: %', SQLERRM
                USING HINT = 'A host has more samples in the lookback than this backend can analyse together; shorten lookback or raise the memory limit.';
            v_coll := '[]'::jsonb;
        END;

        -- 1. Anomalies: insert new, update grown ones, leave unchanged ones untouched.
        WITH ev AS (
            SELECT d.* FROM coherence.detect_events(v_new_min, v_until, v_new_min - v_since, 0) d
              LEFT JOIN LATERAL (SELECT * FROM coherence.series_settings(d.host, d.metric) WHERE v_rules) st ON true
             WHERE d.risk >= coalesce(st.min_risk, coherence.default_min_risk())
                -- Context of an error burst: a robust event on the host that ends at most
                -- `tolerance` before an error is kept whatever its risk (routine for the series
                -- alone, it still explains the burst; the burst is the news).
                OR (d.detector = 'robust' AND EXISTS (
                       SELECT 1 FROM coherence.signal_events e
                        WHERE e.host = d.host AND e.severity = 'error'
                          AND e.ts >= d.started_at AND e.ts <= d.ended_at + tolerance))
            UNION ALL
            -- Metrics of a host moving together (one row per member metric).
            SELECT c.host, c.metric, c.detector, c.kind, c.started_at, c.ended_at, c.peak_at,
                   c.peak_value, c.baseline, c.score, c.risk, c.summary
              FROM jsonb_to_recordset(v_coll) AS c(host text, metric text, detector text, kind text,
                   started_at timestamptz, ended_at timestamptz, peak_at timestamptz,
                   peak_value double precision, baseline double precision, score double precision,
                   risk double precision, summary text)
              LEFT JOIN LATERAL (SELECT * FROM coherence.series_settings(c.host, c.metric) WHERE v_rules) st ON true
             WHERE (st.detectors IS NULL OR 'collective' = ANY (st.detectors))
               AND c.risk >= coalesce(st.min_risk, 0)
            UNION ALL
            -- Series that stopped reporting, against their own cadence, at data time (never
            -- ahead of the clock: a host whose clock runs fast must not silence the others).
            SELECT s.host, s.metric, n.detector, n.kind, n.started_at, n.ended_at, n.peak_at,
                   n.peak_value, n.baseline, n.score, n.risk, n.summary
              FROM coherence.series_state s
             CROSS JOIN LATERAL coherence.no_data_event(s.host, s.metric, s.last_at, s.last_value,
                                                        s.cadence, least(v_data_now, now())) n
              LEFT JOIN LATERAL (SELECT * FROM coherence.series_settings(s.host, s.metric) WHERE v_rules) st ON true
             WHERE s.cadence IS NOT NULL
               AND (st.detectors IS NULL OR 'no_data' = ANY (st.detectors))
               AND n.risk >= coalesce(st.min_risk, coherence.default_min_risk())
        ), one AS (
            -- One row per key (an upsert may touch a row once): the strongest.
            SELECT DISTINCT ON (host, metric, detector, started_at) * FROM ev
             ORDER BY host, metric, detector, started_at, risk DESC, ended_at DESC
        ), up AS (
            INSERT INTO coherence.anomalies AS a
                   (host, metric, detector, kind, started_at, ended_at, peak_at, peak_value,
                    baseline, score, risk, summary)
            SELECT host, metric, detector, kind, started_at, ended_at, peak_at, peak_value,
                   baseline, score, risk, summary FROM one
             ORDER BY started_at, host, metric, detector
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

        -- 2. Correlate anomalies and error events of the range. Anomalies shorter than their
        --    series' min_duration (coherence.series_rules) are recorded but join no incident.
        v_durations := EXISTS (SELECT 1 FROM coherence.series_rules WHERE min_duration > interval '0');
        SELECT coalesce(jsonb_agg(s), '[]'::jsonb) INTO v_signals FROM (
            SELECT 'anomaly:' || a.id AS id, a.host, 'anomaly' AS kind, a.metric,
                   a.kind AS anomaly_kind,
                   (extract(epoch FROM a.started_at) * 1e6)::bigint AS start,
                   (extract(epoch FROM a.ended_at) * 1e6)::bigint AS "end",
                   (extract(epoch FROM a.peak_at) * 1e6)::bigint AS peak_at,
                   a.peak_value, a.risk, a.baseline,
                   coherence.metric_unit(a.metric) AS unit, a.score
              FROM coherence.anomalies a
             WHERE a.ended_at >= v_since AND a.started_at < v_until
               AND (NOT v_durations OR NOT EXISTS (
                       SELECT 1 FROM coherence.series_settings(a.host, a.metric) st
                        WHERE a.ended_at - a.started_at < st.min_duration))
            UNION ALL
            SELECT 'error:' || e.id, e.host, 'error', coalesce(e.metric, 'error'), '',
                   (extract(epoch FROM e.ts) * 1e6)::bigint, (extract(epoch FROM e.ts) * 1e6)::bigint,
                   (extract(epoch FROM e.ts) * 1e6)::bigint, 0, 0, NULL, '', NULL
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
                        hypothesis, confidence, hypotheses, narrative, signals, context, graph,
                        ranking)
                VALUES (inc->>'host', v_first,
                        to_timestamp((inc->>'first_error_at')::double precision / 1e6), v_last,
                        (inc->>'error_count')::int, (inc->>'risk')::double precision,
                        v_top->>'cause', (v_top->>'confidence')::double precision,
                        inc->'hypotheses', inc->>'narrative', inc->'signal_ids', inc->'context_ids',
                        inc->'edges',
                        -- The correlator's ranking, then the host's other involved metrics.
                        (inc->'ranking') || coherence.incident_involved(inc->>'host', v_first, v_last,
                            ARRAY(SELECT e->>'metric' FROM jsonb_array_elements(inc->'ranking') e)))
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
                       first_error_at = least(i.first_error_at,
                                              to_timestamp((inc->>'first_error_at')::double precision / 1e6)),
                       last_signal_at = greatest(v_old.last_signal_at, v_last),
                       error_count = (inc->>'error_count')::int,
                       risk = (inc->>'risk')::double precision,
                       hypothesis = v_top->>'cause',
                       confidence = (v_top->>'confidence')::double precision,
                       hypotheses = inc->'hypotheses', narrative = inc->>'narrative',
                       signals = inc->'signal_ids', context = inc->'context_ids', graph = inc->'edges',
                       ranking = (inc->'ranking') || coherence.incident_involved(inc->>'host',
                           least(v_old.opened_at, v_first), greatest(v_old.last_signal_at, v_last),
                           ARRAY(SELECT e->>'metric' FROM jsonb_array_elements(inc->'ranking') e)),
                       status = CASE WHEN v_last > v_old.last_signal_at THEN 'open' ELSE i.status END,
                       resolved_at = CASE WHEN v_last > v_old.last_signal_at THEN NULL ELSE i.resolved_at END,
                       updated_at = now()
                 WHERE i.id = v_keep
                   AND (i.opened_at, i.last_signal_at, i.error_count, i.risk, i.hypothesis, i.confidence,
                        i.narrative, i.signals, i.context, i.graph,
                        -- (the involved metrics appended to the stored ranking are not compared:
                        -- they are recomputed only when the incident changes)
                        (SELECT coalesce(jsonb_agg(rk.entry ORDER BY rk.pos), '[]'::jsonb)
                           FROM jsonb_array_elements(i.ranking) WITH ORDINALITY rk(entry, pos)
                          WHERE rk.entry->>'kind' IS DISTINCT FROM 'involved'))
                       IS DISTINCT FROM
                       (least(v_old.opened_at, v_first), greatest(v_old.last_signal_at, v_last),
                        (inc->>'error_count')::int, (inc->>'risk')::double precision, v_top->>'cause',
                        (v_top->>'confidence')::double precision, inc->>'narrative',
                        inc->'signal_ids', inc->'context_ids', inc->'edges', inc->'ranking');
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

    -- 4. Mutes: an open incident whose signals all fall in a maintenance window is muted (before
    --    resolving, so one opened and resolved by this run is muted too); windows added or
    --    changed since the last run take effect here.
    UPDATE coherence.incidents i
       SET muted_by = m.window_id, updated_at = now()
      FROM (SELECT o.id, coherence.muting_window(o.host, o.opened_at, o.last_signal_at) AS window_id
              FROM coherence.incidents o WHERE o.status = 'open') m
     WHERE i.id = m.id AND i.muted_by IS DISTINCT FROM m.window_id;

    -- 5. Resolve incidents with no signal for close_after (in data time).
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
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS v_err = MESSAGE_TEXT, v_state = RETURNED_SQLSTATE;
        UPDATE coherence.detection_runs
           SET finished_at = clock_timestamp(), error = v_err, error_sqlstate = v_state
         WHERE id = v_run;
        RAISE WARNING 'coherence.run_detection() failed: %', v_err
            USING DETAIL = format('SQLSTATE %s; run %s recorded the error, its work was rolled back and the queued data is kept for the next run.', v_state, v_run),
                  HINT = 'SELECT * FROM coherence.health(); shows it until a run succeeds.';
        RETURN jsonb_build_object('run', v_run, 'error', v_err, 'sqlstate', v_state);
    END;

    UPDATE coherence.detection_runs
       SET finished_at = clock_timestamp(), data_now = v_data_now,
           since = CASE WHEN v_new_min IS NOT NULL THEN v_since END,
           until = v_until, anomalies_changed = v_anoms, incidents_opened = v_opened,
           incidents_updated = v_updated, incidents_resolved = v_resolved
     WHERE id = v_run;
    RETURN jsonb_build_object('run', v_run, 'since', v_since, 'until', v_until,
        'anomalies_changed', v_anoms, 'incidents_opened', v_opened,
        'incidents_updated', v_updated, 'incidents_resolved', v_resolved);
END
$fn$;
COMMENT ON FUNCTION coherence.run_detection(interval, interval, interval, boolean) IS
    'The scheduled job: detects events over the data queued in coherence.pending_series since the last run (plus lookback) with per-series settings (coherence.series_rules), persists coherence.anomalies (including no_data for series that stopped reporting), correlates them with error events into coherence.incidents, mutes incidents in maintenance windows, resolves quiet incidents, NOTIFY coherence_incidents on open/risk change/resolve. Idempotent; READ COMMITTED only; a call while another runs returns {"skipped": "already running"} at once; a failure is recorded (coherence.health()) and returned as {"error": ...} with a WARNING. Schedule: SELECT cron.schedule(''coherence-detect'', ''*/15 * * * *'', ''SELECT coherence.run_detection()'');';

CREATE OR REPLACE VIEW coherence.active_incidents AS
SELECT i.id, i.host, i.opened_at, i.first_error_at, i.last_signal_at, i.error_count,
       round(i.risk::numeric, 2) AS risk, i.hypothesis, round(i.confidence::numeric, 2) AS confidence,
       i.narrative, i.muted_by
  FROM coherence.incidents i
 WHERE i.status = 'open';

CREATE OR REPLACE VIEW coherence.series_health AS
SELECT l.host, l.metric, l.last_at, l.last_value,
       count(a.id) AS anomalies_24h,
       round(coalesce(max(a.risk), 0)::numeric, 2) AS max_risk_24h,
       CASE WHEN coherence.series_silent(l.last_at, l.cadence, now()) THEN 'no_data'
            WHEN coalesce(max(a.risk), 0) >= 0.8 THEN 'critical'
            WHEN coalesce(max(a.risk), 0) >= 0.5 THEN 'warning'
            ELSE 'ok' END AS status,
       l.cadence AS expected_every,
       greatest(now() - l.last_at, interval '0') AS silent_for
  FROM coherence.series_state l
  LEFT JOIN coherence.anomalies a
    ON a.host = l.host AND a.metric = l.metric AND a.ended_at >= l.last_at - interval '24 hours'
 GROUP BY l.host, l.metric, l.last_at, l.last_value, l.cadence;
COMMENT ON VIEW coherence.series_health IS 'One row per series seen by coherence.run_detection(): last sample, whether it still reports (judged against now and its own cadence) and the anomalies of its last 24 hours of data: SELECT * FROM coherence.series_health WHERE status <> ''ok'';';
COMMENT ON COLUMN coherence.series_health.host IS 'Host.';
COMMENT ON COLUMN coherence.series_health.metric IS 'Metric.';
COMMENT ON COLUMN coherence.series_health.last_at IS 'Time of the last sample.';
COMMENT ON COLUMN coherence.series_health.last_value IS 'Last value.';
COMMENT ON COLUMN coherence.series_health.anomalies_24h IS 'Anomalies ending within 24 hours of the last sample.';
COMMENT ON COLUMN coherence.series_health.max_risk_24h IS 'Highest anomaly risk in that time.';
COMMENT ON COLUMN coherence.series_health.status IS 'no_data (no sample for 2 or more of its intervals, judged against now), critical (risk >= 0.8), warning (>= 0.5) or ok.';
COMMENT ON COLUMN coherence.series_health.expected_every IS 'Its cadence (median gap of the latest samples).';
COMMENT ON COLUMN coherence.series_health.silent_for IS 'Time since the last sample (now - last_at).';

-- Watch the watcher: the job's own health, for monitoring systems, dashboards and the alerter.
CREATE FUNCTION coherence.health(stale_after interval DEFAULT interval '30 minutes')
RETURNS TABLE (
    status                 text,
    detail                 text,
    last_run_at            timestamptz,
    last_success_at        timestamptz,
    last_error             text,
    last_error_at          timestamptz,
    failures_since_success bigint,
    data_now               timestamptz,
    lag                    interval,
    pending_series         bigint,
    open_incidents         bigint,
    muted_incidents        bigint
)
LANGUAGE plpgsql STABLE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_variable
DECLARE
    v_cron_msg   text;
    v_cron_at    timestamptz;
    v_cron_fails bigint := 0;
    v_first_run  timestamptz;
BEGIN
    IF stale_after IS NULL OR stale_after <= interval '0' THEN
        RAISE EXCEPTION 'stale_after must be a positive interval'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Twice the job''s schedule, e.g. SELECT * FROM coherence.health(interval ''30 minutes'');';
    END IF;
    SELECT min(r.started_at), max(r.started_at), max(r.finished_at) FILTER (WHERE r.error IS NULL)
      INTO v_first_run, last_run_at, last_success_at
      FROM coherence.detection_runs r;
    SELECT r.error, r.finished_at INTO last_error, last_error_at
      FROM coherence.detection_runs r WHERE r.error IS NOT NULL ORDER BY r.id DESC LIMIT 1;
    SELECT count(*) INTO failures_since_success FROM coherence.detection_runs r
     WHERE r.error IS NOT NULL AND r.finished_at > coalesce(last_success_at, '-infinity');
    -- A run that failed before it could record anything (no right to write detection_runs,
    -- a statement_timeout) is only in pg_cron's log, when pg_cron runs the job for this
    -- database. (pg_cron shows each role its own jobs' runs only.)
    IF to_regclass('cron.job_run_details') IS NOT NULL THEN
        BEGIN
            EXECUTE $q$SELECT (array_agg(d.return_message ORDER BY d.end_time DESC))[1], max(d.end_time), count(*)
                         FROM cron.job_run_details d
                        WHERE d.status = 'failed' AND d.command ILIKE '%run_detection%'
                          AND d.database = current_database() AND d.end_time > $1$q$
               INTO v_cron_msg, v_cron_at, v_cron_fails
              USING coalesce(last_success_at, '-infinity');
        EXCEPTION WHEN insufficient_privilege OR undefined_table OR undefined_column THEN
            v_cron_at := NULL;
            v_cron_fails := 0;
        END;
        -- Runs that recorded their failure are in pg_cron's log too: the larger count holds.
        failures_since_success := greatest(failures_since_success, coalesce(v_cron_fails, 0));
        IF v_cron_at > coalesce(last_error_at, '-infinity') + interval '1 second' THEN
            last_error := v_cron_msg;
            last_error_at := v_cron_at;
            last_run_at := greatest(last_run_at, v_cron_at);
            v_first_run := least(v_first_run, v_cron_at);
        END IF;
    END IF;
    SELECT r.data_now INTO data_now FROM coherence.detection_runs r
     WHERE r.data_now IS NOT NULL ORDER BY r.id DESC LIMIT 1;
    lag := now() - data_now;
    SELECT count(*) INTO pending_series
      FROM (SELECT DISTINCT p.host, p.metric FROM coherence.pending_series p) q;
    SELECT count(*), count(*) FILTER (WHERE i.muted_by IS NOT NULL)
      INTO open_incidents, muted_incidents
      FROM coherence.incidents i WHERE i.status = 'open';
    -- Staleness first: a job that fails and then stops running is stalled, not merely failing.
    IF last_run_at IS NULL THEN
        status := 'never_run';
        detail := 'coherence.run_detection() has never run here; schedule it with pg_cron (see docs/operations.md)';
    ELSIF coalesce(last_success_at, v_first_run) < now() - stale_after THEN
        status := 'stalled';
        detail := format('no run has succeeded for %s (last success %s)%s', stale_after,
                         coalesce(last_success_at::text, 'never'),
                         CASE WHEN last_error_at > coalesce(last_success_at, '-infinity')
                              THEN format('; %s run(s) failed since, last: %s', failures_since_success, last_error)
                              ELSE '' END);
    ELSIF last_error_at > coalesce(last_success_at, '-infinity') THEN
        status := 'failing';
        detail := format('%s run(s) failed since %s: %s', failures_since_success,
                         coalesce('the last success at ' || last_success_at::text, 'the first run'), last_error);
    ELSIF lag > stale_after THEN
        status := 'lagging';
        detail := format('the newest analysed sample is %s old: is ingestion running?', date_trunc('second', lag));
    ELSE
        status := 'ok';
        detail := format('last run succeeded at %s', last_success_at);
    END IF;
    RETURN NEXT;
END
$fn$;
COMMENT ON FUNCTION coherence.health(interval) IS
    'Health of the detection job, one row: status (never_run; stalled: no success within stale_after; failing: the last run failed; lagging: newest analysed sample older than stale_after; ok), detail, last run and success, last error (from coherence.detection_runs, or pg_cron''s log of this database for runs that could not record it), failures since the last success, data time and lag (now - newest analysed sample), queued series, open and muted incidents. E.g. SELECT status, detail FROM coherence.health();';


COMMENT ON COLUMN coherence.anomalies.detector IS 'robust (spikes, drops, level shifts), volatility, trend (drifts, leaks), collective or no_data; see coherence.anomaly_kinds().';
COMMENT ON COLUMN coherence.anomalies.kind IS 'One of coherence.anomaly_kinds(): spike, drop, level_shift_up/down, volatility_up/down, drift_up/down, leak, collective, no_data.';
COMMENT ON COLUMN coherence.anomalies.peak_value IS 'Value at the peak (for leaks: the fitted end; for no_data: the last value reported).';
COMMENT ON COLUMN coherence.anomalies.baseline IS 'Baseline at the peak (for leaks: the fitted start; for no_data: the cadence in seconds).';
COMMENT ON COLUMN coherence.anomalies.score IS 'Robust z-score at the peak (for leaks: Mann-Kendall z; for no_data: intervals missed).';
COMMENT ON COLUMN coherence.incidents.ranking IS 'Member metrics, most likely root cause first: the metrics whose anomalies formed it [{metric, anomaly, kind, start, risk, score, evidence}], then the host''s other metrics that deviated during it [{metric, kind: involved, score, peak_at, value, baseline}] (see docs/incidents.md).';
COMMENT ON COLUMN coherence.incidents.muted_by IS 'The maintenance window (coherence.maintenance_windows.id) that mutes it (its signals all fall inside the window; no alert is sent), else NULL. Kept current for open incidents by run_detection; a resolved incident keeps it even if the window is deleted later (no late page for past work).';
COMMENT ON COLUMN coherence.incidents.hypothesis IS 'Top-ranked root-cause hypothesis: resource exhaustion, memory leak, disk filling, traffic surge, telemetry stopped, correlated metric anomalies, metric anomaly or undetermined.';
COMMENT ON COLUMN coherence.detection_runs.error IS 'Why the run failed (its changes were rolled back and its queue kept), else NULL.';
COMMENT ON COLUMN coherence.detection_runs.error_sqlstate IS 'SQLSTATE of that error.';
COMMENT ON COLUMN coherence.active_incidents.muted_by IS 'Maintenance window muting it (no alert), else NULL.';
COMMENT ON COLUMN coherence.alert_deliveries.incident_id IS 'Incident alerted on (NULL for a watcher alert about the detection job).';
COMMENT ON COLUMN coherence.alert_deliveries.watch_since IS 'Watcher alerts: the last success of the detection job before it stopped succeeding (-infinity if it never did); one alert per outage.';
COMMENT ON COLUMN coherence.alert_deliveries.detail IS 'Watcher alerts: coherence.health() detail at the time.';

GRANT SELECT ON coherence.active_incidents, coherence.incident_timeline, coherence.series_health,
    coherence.metrics, coherence.signal_events, coherence.anomalies, coherence.incidents,
    coherence.incident_edges, coherence.detection_runs, coherence.series_rules,
    coherence.maintenance_windows, coherence.series_state, coherence.pending_series
    TO coherence_reader;

-- A trusted extension: a non-superuser with CREATE on the database (e.g. its owner) may
-- CREATE EXTENSION coherence. Its objects are then owned by the bootstrap superuser, so the
-- installing role (@extowner@) gets the rights to use them: write the data and result tables,
-- run the job and the correlator. (Installed by a superuser, these grants are to that
-- superuser and change nothing.)
GRANT USAGE ON SCHEMA coherence TO @extowner@;
GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA coherence TO @extowner@;
GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA coherence TO @extowner@;
GRANT EXECUTE ON FUNCTION coherence.run_detection(interval, interval, interval, boolean),
    coherence.correlate(jsonb, jsonb, interval, integer) TO @extowner@;


-- The series already in coherence.metrics that still report: their last sample and cadence,
-- so no-data detection and series_health know them before their next rows arrive. Series
-- already silent (last sample more than 10 of their intervals before the newest sample of
-- any series) are left out: the update must not page for hosts long gone; each joins when it
-- reports again.
INSERT INTO coherence.series_state (host, metric, last_at, last_value, cadence)
WITH s AS (
    SELECT k.host, k.metric_name, l.last_at, l.last_value, coherence.series_cadence(l.ts) AS cadence
      FROM (SELECT DISTINCT m.host, m.metric_name FROM coherence.metrics m) k
     CROSS JOIN LATERAL (
           SELECT max(t.ts) AS last_at, (array_agg(t.value ORDER BY t.ts DESC))[1] AS last_value,
                  array_agg(t.ts) AS ts
             FROM (SELECT m."timestamp" AS ts, m.value FROM coherence.metrics m
                    WHERE m.host = k.host AND m.metric_name = k.metric_name
                    ORDER BY m."timestamp" DESC LIMIT 33) t) l
     WHERE l.last_at IS NOT NULL
)
SELECT s.host, s.metric_name, s.last_at, s.last_value, s.cadence
  FROM s
 WHERE s.cadence IS NULL
    OR s.last_at >= least((SELECT max(x.last_at) FROM s x), now()) - 10 * s.cadence;
