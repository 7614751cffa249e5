-- coherence 0.2.0 -> 0.3.0 (see CHANGELOG.md). Run by ALTER EXTENSION coherence UPDATE TO '0.3.0'.
-- Hardening and incidents without errors: finite times enforced on the input tables, a queue
-- of new data that late commits cannot escape, run_detection's lock and isolation check,
-- search_path-proof samples(), the reader role's rights, anomaly-only incidents with a
-- root-cause ranking. Every row is kept.
\echo Use "ALTER EXTENSION coherence UPDATE TO '0.3.0'" to load this file. \quit

-- Finite times from now on. Rows at ±infinity (0.2.0 let them in) must be fixed first: the
-- update refuses rather than keep rows a restore of the updated database would reject.
DO $do$
DECLARE
    n_metrics bigint;
    n_events  bigint;
BEGIN
    SELECT count(*) INTO n_metrics FROM coherence.metrics
     WHERE NOT (isfinite("timestamp") AND isfinite(created_at));
    SELECT count(*) INTO n_events FROM coherence.signal_events
     WHERE NOT (isfinite(ts) AND isfinite(created_at));
    IF n_metrics > 0 OR n_events > 0 THEN
        RAISE EXCEPTION 'coherence 0.3.0 refuses ±infinity times: % row(s) of coherence.metrics and % of coherence.signal_events have one', n_metrics, n_events
            USING ERRCODE = 'check_violation',
                  HINT = 'Delete or fix them, e.g. DELETE FROM coherence.metrics WHERE NOT isfinite("timestamp"); then ALTER EXTENSION coherence UPDATE again. Nothing has been changed.';
    END IF;
END
$do$;
ALTER TABLE coherence.metrics
    ADD CONSTRAINT metrics_times_finite CHECK (isfinite("timestamp") AND isfinite(created_at));
ALTER TABLE coherence.signal_events
    ADD CONSTRAINT signal_events_times_finite CHECK (isfinite(ts) AND isfinite(created_at));

-- New data, queued by statement triggers on metrics and signal_events: one row per statement
-- and series with the time range it wrote. coherence.run_detection() deletes what it analyses,
-- in its own transaction, so a row is analysed exactly when its writer has committed, however
-- late (a backfill that commits hours after its rows were stamped is not skipped). Not in
-- pg_dump output: a restore refills it through the same triggers (the restored data is then
-- analysed once by the next run).
CREATE TABLE coherence.pending_series (
    id        bigserial PRIMARY KEY,
    host      text NOT NULL,
    metric    text NOT NULL,
    min_ts    timestamptz NOT NULL,
    max_ts    timestamptz NOT NULL,
    rows      bigint NOT NULL,
    queued_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE coherence.pending_series IS
    'Series with rows written since the last coherence.run_detection(): one row per writing statement and series (host, metric, time range, rows), filled by triggers on coherence.metrics and coherence.signal_events, consumed by run_detection.';
COMMENT ON COLUMN coherence.pending_series.id IS 'Queue order.';
COMMENT ON COLUMN coherence.pending_series.host IS 'Host of the written rows.';
COMMENT ON COLUMN coherence.pending_series.metric IS 'Metric (metric_name; for signal events their metric, or the severity when it has none).';
COMMENT ON COLUMN coherence.pending_series.min_ts IS 'Earliest sample time written.';
COMMENT ON COLUMN coherence.pending_series.max_ts IS 'Latest sample time written.';
COMMENT ON COLUMN coherence.pending_series.rows IS 'Rows written.';
COMMENT ON COLUMN coherence.pending_series.queued_at IS 'Start of the writing transaction.';

CREATE FUNCTION coherence.queue_new_metrics() RETURNS trigger
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    -- SECURITY DEFINER: it must only ever run for its own table, whose column types are known.
    IF TG_RELID OPERATOR(pg_catalog.<>) 'coherence.metrics'::pg_catalog.regclass
       OR TG_LEVEL OPERATOR(pg_catalog.<>) 'STATEMENT' THEN
        RAISE EXCEPTION 'coherence.queue_new_metrics() only queues rows of coherence.metrics'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    INSERT INTO coherence.pending_series (host, metric, min_ts, max_ts, rows)
    SELECT n.host, n.metric_name, min(n."timestamp"), max(n."timestamp"), count(*)
      FROM new_rows n
     GROUP BY n.host, n.metric_name;
    RETURN NULL;
END
$fn$;
COMMENT ON FUNCTION coherence.queue_new_metrics() IS
    'Trigger function (statement level, AFTER INSERT on coherence.metrics): queues the written series in coherence.pending_series. SECURITY DEFINER so writers need no rights on the queue.';
-- Only the extension's triggers may call it (it runs as the extension's owner).
REVOKE EXECUTE ON FUNCTION coherence.queue_new_metrics() FROM PUBLIC;
CREATE TRIGGER metrics_queue_new AFTER INSERT ON coherence.metrics
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION coherence.queue_new_metrics();

CREATE FUNCTION coherence.queue_new_signal_events() RETURNS trigger
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    -- SECURITY DEFINER: it must only ever run for its own table, whose column types are known.
    IF TG_RELID OPERATOR(pg_catalog.<>) 'coherence.signal_events'::pg_catalog.regclass
       OR TG_LEVEL OPERATOR(pg_catalog.<>) 'STATEMENT' THEN
        RAISE EXCEPTION 'coherence.queue_new_signal_events() only queues rows of coherence.signal_events'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    INSERT INTO coherence.pending_series (host, metric, min_ts, max_ts, rows)
    SELECT n.host, coalesce(n.metric, n.severity), min(n.ts), max(n.ts), count(*)
      FROM new_rows n
     GROUP BY n.host, coalesce(n.metric, n.severity);
    RETURN NULL;
END
$fn$;
COMMENT ON FUNCTION coherence.queue_new_signal_events() IS
    'Trigger function (statement level, AFTER INSERT on coherence.signal_events): queues the written hosts and times in coherence.pending_series. SECURITY DEFINER so writers need no rights on the queue.';
REVOKE EXECUTE ON FUNCTION coherence.queue_new_signal_events() FROM PUBLIC;
CREATE TRIGGER signal_events_queue_new AFTER INSERT ON coherence.signal_events
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION coherence.queue_new_signal_events();

-- Data time for incremental runs, carried over from the last 0.2.0 run, and what 0.2.0's next
-- run would have read (rows written since its watermark, with its 10 minutes of overlap)
-- queued, so the first 0.3.0 run is incremental, not a rescan of all history.
ALTER TABLE coherence.detection_runs ADD COLUMN data_now timestamptz;
COMMENT ON TABLE coherence.detection_runs IS
    'One row per coherence.run_detection() call: the data range analysed and what changed. New data is found through coherence.pending_series.';
COMMENT ON COLUMN coherence.detection_runs.watermark IS 'Until 0.2.0: newest created_at of the input rows seen by the run. Since 0.3.0 new rows are found through coherence.pending_series and this is NULL.';
COMMENT ON COLUMN coherence.detection_runs.data_now IS 'Newest sample time seen by this or an earlier run (data time; incidents resolve against it).';
UPDATE coherence.detection_runs r
   SET data_now = r.until - interval '1 microsecond'
 WHERE r.id = (SELECT max(id) FROM coherence.detection_runs WHERE until IS NOT NULL);
INSERT INTO coherence.pending_series (host, metric, min_ts, max_ts, rows)
SELECT m.host, m.metric_name, min(m."timestamp"), max(m."timestamp"), count(*)
  FROM coherence.metrics m
 WHERE m.created_at > (SELECT max(watermark) FROM coherence.detection_runs) - interval '10 minutes'
 GROUP BY m.host, m.metric_name
UNION ALL
SELECT e.host, coalesce(e.metric, e.severity), min(e.ts), max(e.ts), count(*)
  FROM coherence.signal_events e
 WHERE e.created_at > (SELECT max(watermark) FROM coherence.detection_runs) - interval '10 minutes'
 GROUP BY e.host, coalesce(e.metric, e.severity);

-- Incidents of anomalies alone (no first error) and the root-cause ranking.
ALTER TABLE coherence.incidents ALTER COLUMN first_error_at DROP NOT NULL;
ALTER TABLE coherence.incidents ADD COLUMN ranking jsonb NOT NULL DEFAULT '[]';
COMMENT ON TABLE coherence.incidents IS
    'Incident history: error events and anomalies on one host within the tolerance (or, without errors, anomalies strong enough together), one row per incident, updated in place as it grows; merged incidents point to the one they joined.';
COMMENT ON COLUMN coherence.incidents.first_error_at IS 'First error event (the narrative''s "At ..."); NULL for an incident of anomalies alone.';
COMMENT ON COLUMN coherence.incidents.ranking IS 'Member metrics, most likely root cause first: [{metric, anomaly, kind, start, risk, score}] (see docs/incidents.md).';
COMMENT ON COLUMN coherence.incidents.hypothesis IS 'Top-ranked root-cause hypothesis: resource exhaustion, memory leak, disk filling, traffic surge, correlated metric anomalies, metric anomaly or undetermined.';
COMMENT ON COLUMN coherence.active_incidents.first_error_at IS 'First error event (NULL for an incident of anomalies alone).';

-- Collective anomalies: metrics of a host moving together.
CREATE FUNCTION coherence.find_collective(
	"metric" TEXT[], /* :: std :: option :: Option < Array < & str > > */
	"ts" timestamp with time zone[], /* :: std :: option :: Option < Array < TimestampWithTimeZone > > */
	"value" double precision[], /* :: std :: option :: Option < Array < f64 > > */
	"report_from" timestamp with time zone DEFAULT NULL, /* Option < TimestampWithTimeZone > */
	"min_risk" double precision DEFAULT NULL, /* Option < f64 > */
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
	"share" double precision,  /* f64 */
	"risk" double precision,  /* f64 */
	"summary" TEXT  /* String */
)
IMMUTABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'find_collective_wrapper';
COMMENT ON FUNCTION coherence.find_collective(text[], timestamptz[], double precision[], timestamptz, double precision, text) IS
    'Collective anomalies of one host given as parallel arrays (metric, ts, value): times when several metrics move together, each perhaps within its own normal range (windowed robust scores standardized per metric and combined; see docs/detection.md). One row per member metric of each event: its onset, value and expected value at the peak, mean evidence (score, signed), share of the evidence, the event''s risk and a summary. E.g. SELECT metric, share, risk FROM coherence.find_collective(ARRAY[...], ARRAY[...], ARRAY[...]);';

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
    WITH hosts AS (
        SELECT s.host, array_agg(s.metric) AS m, array_agg(s.ts) AS ts, array_agg(s.value) AS v
          FROM coherence.samples(since - lookback, until) s
         GROUP BY s.host
        HAVING count(DISTINCT s.metric) >= 3
    )
    SELECT h.host, c.metric, c.detector, c.kind, c.started_at, c.ended_at, c.peak_at,
           c.peak_value, c.baseline, c.score, c.risk, c.summary
      FROM hosts h
     CROSS JOIN LATERAL coherence.find_collective(h.m, h.ts, h.v, report_from => since,
                                                  min_risk => min_risk, host => h.host) c
     ORDER BY c.started_at, h.host, c.metric;
END
$fn$;

COMMENT ON FUNCTION coherence.detect_collective(timestamptz, timestamptz, interval, double precision) IS
    'Collective anomalies of every host with 3+ metrics in coherence.metrics and numeric coherence.signal_events that end in [since, until), judged against lookback (default 7 days) of history: one row per member metric (kind collective, detector collective), in the columns of detect_events. E.g. SELECT host, metric, summary FROM coherence.detect_collective(now() - interval ''1 hour'', now()) WHERE risk >= 0.5;';

COMMENT ON COLUMN coherence.anomalies.detector IS 'robust (spikes, drops, level shifts), volatility, trend (drifts, leaks) or collective; see coherence.anomaly_kinds().';
COMMENT ON COLUMN coherence.anomalies.kind IS 'One of coherence.anomaly_kinds(): spike, drop, level_shift_up/down, volatility_up/down, drift_up/down, leak, collective.';

-- Every numeric sample in a time range: coherence.metrics plus numeric signal_events. An
-- inlinable SQL function (no SET clause, not STRICT: PostgreSQL does not inline strict
-- set-returning functions), so callers get one plan over the tables, no materialized result.
-- NULL arguments give no rows (the comparisons are never true). Operators are written
-- OPERATOR(pg_catalog.x): the body is parsed with the caller's search_path when inlined, and a
-- schema earlier in it must not supply its own ">=".
CREATE OR REPLACE FUNCTION coherence.samples(since timestamptz, until timestamptz)
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

    -- New data: the queue filled by the tables' insert triggers. Deleting it here makes the
    -- run's claim atomic with its results; rows of transactions that commit later are queued
    -- later and analysed by a later run.
    WITH q AS (DELETE FROM coherence.pending_series RETURNING min_ts, max_ts)
    SELECT min(q.min_ts), max(q.max_ts) INTO v_new_min, v_new_max FROM q;
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
             WHERE d.risk >= coherence.default_min_risk()
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

        -- 2. Correlate anomalies and error events of the range.
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
                        inc->'edges', inc->'ranking')
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
                       ranking = inc->'ranking',
                       status = CASE WHEN v_last > v_old.last_signal_at THEN 'open' ELSE i.status END,
                       resolved_at = CASE WHEN v_last > v_old.last_signal_at THEN NULL ELSE i.resolved_at END,
                       updated_at = now()
                 WHERE i.id = v_keep
                   AND (i.opened_at, i.last_signal_at, i.error_count, i.risk, i.hypothesis, i.confidence,
                        i.narrative, i.signals, i.context, i.graph, i.ranking)
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
    'The scheduled job: detects events over the data queued in coherence.pending_series since the last run (plus lookback), persists coherence.anomalies, correlates them with error events into coherence.incidents, resolves quiet incidents, NOTIFY coherence_incidents on open/risk change/resolve. Idempotent; READ COMMITTED only; a call while another runs returns {"skipped": "already running"} at once. Schedule: SELECT cron.schedule(''coherence-detect'', ''*/15 * * * *'', ''SELECT coherence.run_detection()'');';

COMMENT ON ROLE coherence_reader IS 'Read-only access to the coherence views, data and results for BI tools (GRANT coherence_reader TO grafana;).';
GRANT USAGE ON SCHEMA coherence TO coherence_reader;
GRANT SELECT ON coherence.active_incidents, coherence.incident_timeline, coherence.series_health,
    coherence.metrics, coherence.signal_events, coherence.anomalies, coherence.incidents,
    coherence.incident_edges, coherence.detection_runs
    TO coherence_reader;
-- The job writes the result tables: only the extension's owner (and roles it grants) may run it.
-- The correlator is the job's step (its input is whatever jsonb a caller builds, unbounded):
-- the same.
REVOKE EXECUTE ON FUNCTION coherence.run_detection(interval, interval, interval, boolean) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION coherence.correlate(jsonb, jsonb, interval, integer) FROM PUBLIC;

