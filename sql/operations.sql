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

-- Every series with its base name and labels (metric names carry labels in Prometheus'
-- canonical form, name{key="value",...}).
CREATE VIEW coherence.series AS
SELECT s.host, s.metric, coherence.series_name(s.metric) AS name,
       coherence.series_labels(s.metric) AS labels, s.last_at, s.cadence
  FROM coherence.series_state s;
COMMENT ON VIEW coherence.series IS
    'One row per series seen by coherence.run_detection() (coherence.series_state): host, metric (the series key), its base name and labels (jsonb) as coherence.series_name and coherence.series_labels read them, last sample time and cadence. E.g. SELECT host, name, labels ->> ''device'' AS device FROM coherence.series WHERE name = ''disk.used'';';

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
