-- coherence 0.8.0 -> 0.9.0 (see CHANGELOG.md). Run by ALTER EXTENSION coherence UPDATE TO '0.9.0'.
-- One detection pass: coherence.find_host_events_points analyses each of a host's metrics once
-- for its own events and for the host's collective events; coherence.detect_all runs it on
-- every host (the rows of detect_events and detect_collective together); run_detection calls
-- detect_all instead of detect_collective and detect_events (same rows, each series read and
-- analysed once). coherence.points aggregates in parallel. No data changes.
\echo Use "ALTER EXTENSION coherence UPDATE TO '0.9.0'" to load this file. \quit

-- coherence.points gets parallel support: workers pack their rows of a group, the leader
-- appends the partial states (same result; readers sort the points).
CREATE FUNCTION coherence.points_combine(
	"a" internal, /* Internal */
	"b" internal /* Internal */
) RETURNS internal /* Option < Internal > */
IMMUTABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'points_combine_wrapper';

CREATE FUNCTION coherence.points_serialize(
	"state" internal /* Internal */
) RETURNS bytea /* & '_ [u8] */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'points_serialize_wrapper';

CREATE FUNCTION coherence.points_deserialize(
	"bytes" bytea, /* & [u8] */
	"_unused" internal /* Internal */
) RETURNS internal /* Internal */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'points_deserialize_wrapper';

CREATE OR REPLACE AGGREGATE coherence.points(ts timestamptz, value double precision) (
    SFUNC = coherence.points_trans, STYPE = internal,
    FINALFUNC = coherence.points_final,
    COMBINEFUNC = coherence.points_combine,
    SERIALFUNC = coherence.points_serialize, DESERIALFUNC = coherence.points_deserialize,
    PARALLEL = SAFE
);

COMMENT ON FUNCTION coherence.points_combine(internal, internal) IS 'Internal: combine function of coherence.points (parallel aggregation).';
COMMENT ON FUNCTION coherence.points_serialize(internal) IS 'Internal: serial function of coherence.points (parallel aggregation).';
COMMENT ON FUNCTION coherence.points_deserialize(bytea, internal) IS 'Internal: deserial function of coherence.points (parallel aggregation).';

CREATE FUNCTION coherence.find_host_events_points(
	"metric" TEXT[], /* :: std :: option :: Option < Array < & str > > */
	"packed" bytea[], /* :: std :: option :: Option < Array < & [u8] > > */
	"window_points" INT[] DEFAULT NULL, /* :: std :: option :: Option < Array < i32 > > */
	"threshold" double precision[] DEFAULT NULL, /* :: std :: option :: Option < Array < f64 > > */
	"direction" TEXT[] DEFAULT NULL, /* :: std :: option :: Option < Array < & str > > */
	"capacity" double precision[] DEFAULT NULL, /* :: std :: option :: Option < Array < f64 > > */
	"min_risk" double precision[] DEFAULT NULL, /* :: std :: option :: Option < Array < f64 > > */
	"report_from" timestamp with time zone DEFAULT NULL, /* Option < TimestampWithTimeZone > */
	"collective_min_risk" double precision DEFAULT NULL, /* Option < f64 > */
	"host" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS TABLE (
	"metric" TEXT,  /* String */
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
IMMUTABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'find_host_events_points_wrapper';

COMMENT ON FUNCTION coherence.find_host_events_points(text[], bytea[], integer[], double precision[], text[], double precision[], double precision[], timestamptz, double precision, text) IS
    'Every detector over one host''s metrics in one pass: parallel arrays of metric names, their points packed by coherence.points(ts, value), and optional per-metric settings (window_points, threshold, direction, capacity, min_risk; a NULL array or element takes the default); each metric''s own rows as coherence.find_events_points gives them and the host''s collective rows as coherence.find_collective_points gives them (one a member, detector collective, risk at least collective_min_risk), each metric analysed once for both. What coherence.detect_all runs on every host. E.g. SELECT e.metric, e.detector, e.risk FROM (SELECT array_agg(metric_name) AS m, array_agg(p) AS p FROM (SELECT metric_name, coherence.points("timestamp", value) AS p FROM coherence.metrics WHERE host = ''host-stressed'' GROUP BY metric_name) x) h CROSS JOIN LATERAL coherence.find_host_events_points(h.m, h.p, host => ''host-stressed'') e;';

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

CREATE OR REPLACE FUNCTION coherence.run_detection(
    lookback    interval DEFAULT '48 hours',
    tolerance   interval DEFAULT '5 minutes',
    close_after interval DEFAULT '30 minutes',
    full_rescan boolean DEFAULT false
)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
-- No JIT: over a year of day partitions, compiling every partition's scan expressions took
-- longer than the scans (5 s of LLVM for a 10M-row detect), and the work is in the detectors.
SET jit = off
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
    v_collective boolean;
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
    v_maxes      timestamptz[];
    v_fleet      jsonb;
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
    WITH q AS (DELETE FROM coherence.pending_series RETURNING host, metric, min_ts, max_ts),
         k AS (SELECT q.host, q.metric, max(q.max_ts) AS max_ts FROM q GROUP BY q.host, q.metric)
    SELECT (SELECT min(q.min_ts) FROM q), (SELECT max(q.max_ts) FROM q),
           (SELECT array_agg(k.host ORDER BY k.host, k.metric) FROM k),
           (SELECT array_agg(k.metric ORDER BY k.host, k.metric) FROM k),
           (SELECT array_agg(k.max_ts ORDER BY k.host, k.metric) FROM k)
      INTO v_new_min, v_new_max, v_hosts, v_metrics, v_maxes;
    IF full_rescan OR v_prev_now IS NULL THEN
        -- Everything (first run, or asked): every series and the metrics' time range, in one
        -- pass (the table's CHECK keeps its times finite).
        SELECT array_agg(k.host), array_agg(k.metric_name), NULL, min(k.first_at), max(k.last_at)
          INTO v_hosts, v_metrics, v_maxes, v_new_min, v_new_max
          FROM (SELECT m.host, m.metric_name, min(m."timestamp") AS first_at,
                       max(m."timestamp") AS last_at
                  FROM coherence.metrics m GROUP BY m.host, m.metric_name) k;
    END IF;
    -- The written series' last sample and cadence (for no-data detection and series_health):
    -- the latest 33 samples, looked for first between 40 of its intervals (1 hour to 2 days)
    -- before the newest queued one and the newest seen (the other partitions are pruned), and
    -- in the whole table only for series with fewer there (new series, gaps, the first run).
    -- Rows committed after the queue was claimed are the next run's.
    INSERT INTO coherence.series_state AS s (host, metric, last_at, last_value, cadence, updated_at)
    WITH k AS (
        SELECT u.host, u.metric, u.max_ts, st.last_at AS prev_last, st.cadence
          FROM unnest(v_hosts, v_metrics, v_maxes) AS u(host, metric, max_ts)
          LEFT JOIN coherence.series_state st ON st.host = u.host AND st.metric = u.metric
    ), recent AS (
        SELECT k.host, k.metric, l.*
          FROM k CROSS JOIN LATERAL (
               SELECT max(t.ts) AS last_at, (array_agg(t.value ORDER BY t.ts DESC))[1] AS last_value,
                      array_agg(t.ts) AS ts, count(*) AS n
                 FROM (SELECT m."timestamp" AS ts, m.value FROM coherence.metrics m
                        WHERE m.host = k.host AND m.metric_name = k.metric
                          -- (no bound near the lowest timestamp: the arithmetic would fail)
                          AND m."timestamp" >= CASE WHEN k.max_ts >= '1000-01-01 00:00+00'::timestamptz
                                                    THEN k.max_ts - least(greatest(40 * least(k.cadence, interval '2 days'), interval '1 hour'),
                                                                          interval '2 days') END
                          AND m."timestamp" <= greatest(k.max_ts, k.prev_last)
                        ORDER BY m."timestamp" DESC LIMIT 33) t) l
    ), latest AS (
        SELECT rc.host, rc.metric, rc.last_at, rc.last_value, rc.ts FROM recent rc WHERE rc.n = 33
        UNION ALL
        SELECT rc.host, rc.metric, l.last_at, l.last_value, l.ts
          FROM recent rc CROSS JOIN LATERAL (
               SELECT max(t.ts) AS last_at, (array_agg(t.value ORDER BY t.ts DESC))[1] AS last_value,
                      array_agg(t.ts) AS ts
                 FROM (SELECT m."timestamp" AS ts, m.value FROM coherence.metrics m
                        WHERE m.host = rc.host AND m.metric_name = rc.metric
                        ORDER BY m."timestamp" DESC LIMIT 33) t) l
         WHERE rc.n < 33
    )
    SELECT l.host, l.metric, l.last_at, l.last_value, coherence.series_cadence(l.ts), now()
      FROM latest l
     WHERE l.last_at IS NOT NULL
    ON CONFLICT (host, metric) DO UPDATE
       SET last_at = excluded.last_at, last_value = excluded.last_value, cadence = excluded.cadence,
           updated_at = excluded.updated_at
     WHERE (s.last_at, s.last_value, s.cadence) IS DISTINCT FROM
           (excluded.last_at, excluded.last_value, excluded.cadence);
    IF full_rescan OR v_prev_now IS NULL THEN
        -- Everything: the metrics' range (above) and the events' finite times.
        SELECT least(v_new_min, (SELECT min(ts) FROM coherence.signal_events WHERE isfinite(ts))),
               greatest(v_new_max, (SELECT max(ts) FROM coherence.signal_events WHERE isfinite(ts)))
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

        -- 1. Anomalies: insert new, update grown ones, leave unchanged ones untouched.
        --    Every series' own events and every host's collective events come from one pass
        --    (coherence.detect_all). A host too large for the collective detector (out of
        --    memory, array limits) costs the collective events, with a WARNING, not the run:
        --    the statement runs again with the series' own events alone (detect_events).
        v_collective := true;
        LOOP
        BEGIN
        WITH found AS (
            SELECT f.* FROM coherence.detect_all(v_new_min, v_until, v_new_min - v_since, 0) f
             WHERE v_collective
            UNION ALL
            SELECT f.* FROM coherence.detect_events(v_new_min, v_until, v_new_min - v_since, 0) f
             WHERE NOT v_collective
        ), ev AS (
            SELECT d.* FROM found d
              LEFT JOIN LATERAL (SELECT * FROM coherence.series_settings(d.host, d.metric) WHERE v_rules) st ON true
             WHERE d.detector <> 'collective'
               AND (d.risk >= coalesce(st.min_risk, coherence.default_min_risk())
                -- Context of an error burst: a robust event on the host that ends at most
                -- `tolerance` before an error is kept whatever its risk (routine for the series
                -- alone, it still explains the burst; the burst is the news).
                OR (d.detector = 'robust' AND EXISTS (
                       SELECT 1 FROM coherence.signal_events e
                        WHERE e.host = d.host AND e.severity = 'error'
                          AND e.ts >= d.started_at AND e.ts <= d.ended_at + tolerance)))
            UNION ALL
            -- Metrics of a host moving together (one row per member metric), at the default
            -- risk floor and the series' own.
            SELECT c.* FROM found c
              LEFT JOIN LATERAL (SELECT * FROM coherence.series_settings(c.host, c.metric) WHERE v_rules) st ON true
             WHERE c.detector = 'collective'
               AND (st.detectors IS NULL OR 'collective' = ANY (st.detectors))
               AND c.risk >= greatest(coherence.default_min_risk(), coalesce(st.min_risk, 0))
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
        EXIT;
        EXCEPTION WHEN out_of_memory OR program_limit_exceeded OR array_subscript_error THEN
            IF NOT v_collective THEN
                RAISE;
            END IF;
            RAISE WARNING 'coherence.run_detection(): the pass over both detectors failed (%); collective anomalies skipped, each series analysed on its own', SQLERRM
                USING HINT = 'A host has more samples in the lookback than this backend can analyse together; shorten lookback or raise the memory limit.';
            v_collective := false;
        END;
        END LOOP;

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
                   coherence.metric_unit(a.metric) AS unit, a.score, false AS history
              FROM coherence.anomalies a
             WHERE a.ended_at >= v_since AND a.started_at < v_until
               AND (NOT v_durations OR NOT EXISTS (
                       SELECT 1 FROM coherence.series_settings(a.host, a.metric) st
                        WHERE a.ended_at - a.started_at < st.min_duration))
            UNION ALL
            SELECT 'error:' || e.id, e.host, 'error', coalesce(e.metric, 'error'), '',
                   (extract(epoch FROM e.ts) * 1e6)::bigint, (extract(epoch FROM e.ts) * 1e6)::bigint,
                   (extract(epoch FROM e.ts) * 1e6)::bigint, 0, 0, NULL, '', NULL, false
              FROM coherence.signal_events e
             WHERE e.severity = 'error' AND e.ts >= v_since AND e.ts < v_until
            UNION ALL
            -- Lead evidence only (history): on each host with anomalies in the range, the
            -- anomalies that ended before it and began at most coherence.lead_horizon() before
            -- its first anomaly there (or the range), so that the day before every incident
            -- the range can form is covered however the range falls, and a later run ranks it
            -- the same. (Trends and silences give no onsets and are not sent.)
            SELECT 'anomaly:' || a.id, a.host, 'anomaly', a.metric, a.kind,
                   (extract(epoch FROM a.started_at) * 1e6)::bigint,
                   (extract(epoch FROM a.ended_at) * 1e6)::bigint,
                   (extract(epoch FROM a.peak_at) * 1e6)::bigint,
                   a.peak_value, a.risk, a.baseline, coherence.metric_unit(a.metric), a.score, true
              FROM (SELECT ra.host, least(min(ra.started_at), v_since) AS first_at
                      FROM coherence.anomalies ra
                     WHERE ra.ended_at >= v_since AND ra.started_at < v_until
                       AND ra.kind NOT IN ('leak', 'drift_up', 'drift_down', 'no_data')
                     GROUP BY ra.host) h
              JOIN coherence.anomalies a ON a.host = h.host
             WHERE a.ended_at < v_since AND a.started_at >= h.first_at - coherence.lead_horizon()
               AND a.kind NOT IN ('leak', 'drift_up', 'drift_down', 'no_data')
               AND (NOT v_durations OR NOT EXISTS (
                       SELECT 1 FROM coherence.series_settings(a.host, a.metric) st
                        WHERE a.ended_at - a.started_at < st.min_duration))
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
        -- Incidents of a host closer than close_after are one: an incident is open until quiet
        -- that long, and what forms on its host meanwhile belongs to it.
        -- The fleet: how many hosts reported each metric in the range (peers for ranking).
        SELECT coalesce(jsonb_object_agg(f.metric, f.hosts), '{}'::jsonb) INTO v_fleet
          FROM (SELECT s.metric, count(*) AS hosts FROM coherence.series_state s
                 WHERE s.last_at >= v_since GROUP BY s.metric) f;
        v_incidents := coherence.correlate(v_signals, v_samples, tolerance, join_gap => close_after,
                                           fleet => v_fleet);

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

    -- Partitions of the days ahead, last: attaching one locks the default partition until
    -- this transaction commits. Nothing to do (a catalog lookup) on most runs.
    BEGIN
        -- Tomorrow's partition by its name first (a lookup), then by range.
        IF to_regclass('coherence.metrics_p' || to_char((now() + interval '1 day') AT TIME ZONE 'UTC', 'YYYYMMDD')) IS NULL THEN
            IF NOT EXISTS (SELECT 1 FROM coherence.metrics_partitions p
                            WHERE NOT p.is_default AND coalesce(p.from_at, '-infinity') <= now() + interval '1 day'
                              AND coalesce(p.until_at, 'infinity') > now() + interval '1 day') THEN
                PERFORM coherence.create_partitions();
            END IF;
        END IF;
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS v_err = MESSAGE_TEXT, v_state = RETURNED_SQLSTATE;
        RAISE WARNING 'coherence.run_detection(): partitions ahead not made: %', v_err
            USING DETAIL = format('SQLSTATE %s; the detection run itself succeeded, the next run tries again.', v_state),
                  HINT = 'Rows of days without a partition wait in coherence.metrics_default; SELECT * FROM coherence.create_partitions(); makes them.';
    END;
    RETURN jsonb_build_object('run', v_run, 'since', v_since, 'until', v_until,
        'anomalies_changed', v_anoms, 'incidents_opened', v_opened,
        'incidents_updated', v_updated, 'incidents_resolved', v_resolved);
END
$fn$;
