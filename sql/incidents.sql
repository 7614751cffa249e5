-- Incident correlation: persisted anomalies, incidents with causal graph, hypotheses and
-- narrative, the pg_cron job coherence.run_detection(), views for BI tools, a read-only role.

CREATE TABLE coherence.anomalies (
    id          bigserial PRIMARY KEY,
    host        text NOT NULL,
    metric      text NOT NULL,
    detector    text NOT NULL,
    kind        text NOT NULL,
    started_at  timestamptz NOT NULL,
    ended_at    timestamptz NOT NULL,
    peak_at     timestamptz NOT NULL,
    peak_value  double precision,
    baseline    double precision,
    score       double precision,
    risk        double precision NOT NULL CHECK (risk BETWEEN 0 AND 1),
    summary     text NOT NULL,
    detected_at timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT anomalies_event_key UNIQUE (host, metric, detector, started_at)
);
CREATE INDEX anomalies_host_time_idx ON coherence.anomalies (host, started_at, ended_at);
COMMENT ON TABLE coherence.anomalies IS
    'Anomaly events persisted by coherence.run_detection() from coherence.detect_events(); one row per (host, metric, detector, started_at), updated in place when the event grows.';
COMMENT ON COLUMN coherence.anomalies.id IS 'Anomaly id (referenced as anomaly:<id> in incident signals and edges).';
COMMENT ON COLUMN coherence.anomalies.host IS 'Host of the series.';
COMMENT ON COLUMN coherence.anomalies.metric IS 'Metric of the series.';
COMMENT ON COLUMN coherence.anomalies.detector IS 'robust (spikes, drops, level shifts), volatility, trend (drifts, leaks), collective or no_data; see coherence.anomaly_kinds().';
COMMENT ON COLUMN coherence.anomalies.kind IS 'One of coherence.anomaly_kinds(): spike, drop, level_shift_up/down, volatility_up/down, drift_up/down, leak, collective, no_data.';
COMMENT ON COLUMN coherence.anomalies.started_at IS 'First anomalous sample.';
COMMENT ON COLUMN coherence.anomalies.ended_at IS 'Last anomalous sample.';
COMMENT ON COLUMN coherence.anomalies.peak_at IS 'Most anomalous sample (for leaks: the last).';
COMMENT ON COLUMN coherence.anomalies.peak_value IS 'Value at the peak (for leaks: the fitted end; for no_data: the last value reported).';
COMMENT ON COLUMN coherence.anomalies.baseline IS 'Baseline at the peak (for leaks: the fitted start; for no_data: the cadence in seconds).';
COMMENT ON COLUMN coherence.anomalies.score IS 'Robust z-score at the peak (for leaks: Mann-Kendall z; for no_data: intervals missed).';
COMMENT ON COLUMN coherence.anomalies.risk IS 'Risk in [0, 1].';
COMMENT ON COLUMN coherence.anomalies.summary IS 'One-line verdict.';
COMMENT ON COLUMN coherence.anomalies.detected_at IS 'When the event was first persisted.';
COMMENT ON COLUMN coherence.anomalies.updated_at IS 'When the event last changed.';

CREATE TABLE coherence.incidents (
    id             bigserial PRIMARY KEY,
    host           text NOT NULL,
    status         text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'resolved', 'merged')),
    opened_at      timestamptz NOT NULL,
    first_error_at timestamptz,
    last_signal_at timestamptz NOT NULL,
    resolved_at    timestamptz,
    merged_into    bigint REFERENCES coherence.incidents (id),
    error_count    integer NOT NULL,
    risk           double precision NOT NULL CHECK (risk BETWEEN 0 AND 1),
    hypothesis     text NOT NULL,
    confidence     double precision NOT NULL,
    hypotheses     jsonb NOT NULL,
    narrative      text NOT NULL,
    signals        jsonb NOT NULL,
    context        jsonb NOT NULL,
    graph          jsonb NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    ranking        jsonb NOT NULL DEFAULT '[]',
    muted_by       bigint
);
CREATE INDEX incidents_host_time_idx ON coherence.incidents (host, opened_at, last_signal_at);
CREATE INDEX incidents_open_idx ON coherence.incidents (risk DESC) WHERE status = 'open';
COMMENT ON TABLE coherence.incidents IS
    'Incident history: error events and anomalies on one host within the tolerance (or, without errors, anomalies strong enough together), one row per incident, updated in place as it grows; merged incidents point to the one they joined.';
COMMENT ON COLUMN coherence.incidents.id IS 'Incident id (the PagerDuty dedup key).';
COMMENT ON COLUMN coherence.incidents.host IS 'Host.';
COMMENT ON COLUMN coherence.incidents.status IS 'open; resolved (no new signal for close_after of data time); merged (joined another incident, see merged_into).';
COMMENT ON COLUMN coherence.incidents.opened_at IS 'Earliest member signal.';
COMMENT ON COLUMN coherence.incidents.first_error_at IS 'First error event (the narrative''s "At ..."); NULL for an incident of anomalies alone.';
COMMENT ON COLUMN coherence.incidents.ranking IS 'Member metrics, most likely root cause first: the metrics whose anomalies formed it [{metric, anomaly, kind, start, risk, score, evidence, peers: {moving, total} when the metric has peers, lead: {before, after} with lead evidence}], then the host''s other metrics that deviated during it [{metric, kind: involved, score, peak_at, value, baseline}] (see docs/incidents.md).';
COMMENT ON COLUMN coherence.incidents.last_signal_at IS 'Latest member signal.';
COMMENT ON COLUMN coherence.incidents.muted_by IS 'The maintenance window (coherence.maintenance_windows.id) that mutes it (its signals all fall inside the window; no alert is sent), else NULL. Kept current for open incidents by run_detection; a resolved incident keeps it even if the window is deleted later (no late page for past work).';
COMMENT ON COLUMN coherence.incidents.resolved_at IS 'When run_detection resolved it.';
COMMENT ON COLUMN coherence.incidents.merged_into IS 'For merged incidents, the incident that absorbed it.';
COMMENT ON COLUMN coherence.incidents.error_count IS 'Error events in the burst.';
COMMENT ON COLUMN coherence.incidents.risk IS 'Risk in [0, 1] (see docs/incidents.md).';
COMMENT ON COLUMN coherence.incidents.hypothesis IS 'Top-ranked root-cause hypothesis: resource exhaustion, memory leak, disk filling, traffic surge, telemetry stopped, correlated metric anomalies, metric anomaly, fleet-wide load or undetermined.';
COMMENT ON COLUMN coherence.incidents.confidence IS 'Confidence of the top hypothesis in [0, 1].';
COMMENT ON COLUMN coherence.incidents.hypotheses IS 'All hypotheses, ranked: [{cause, confidence, evidence}].';
COMMENT ON COLUMN coherence.incidents.narrative IS 'Narrative in the seed''s form.';
COMMENT ON COLUMN coherence.incidents.signals IS 'Member signal ids: anomaly:<id>, error:<signal_events.id>.';
COMMENT ON COLUMN coherence.incidents.context IS 'Context anomalies (leaks, sustained shifts) active during the incident.';
COMMENT ON COLUMN coherence.incidents.graph IS 'Causal graph edges as jsonb; also in coherence.incident_edges.';
COMMENT ON COLUMN coherence.incidents.created_at IS 'When the incident was first recorded.';
COMMENT ON COLUMN coherence.incidents.updated_at IS 'When it last changed.';

CREATE TABLE coherence.incident_edges (
    incident_id bigint NOT NULL REFERENCES coherence.incidents (id) ON DELETE CASCADE,
    cause       text NOT NULL,
    effect      text NOT NULL,
    lag         interval NOT NULL,
    strength    double precision NOT NULL,
    PRIMARY KEY (incident_id, cause, effect)
);
COMMENT ON TABLE coherence.incident_edges IS
    'Causal graph: "cause precedes effect" edges between an incident''s signals with the lag and a strength in [0, 1].';
COMMENT ON COLUMN coherence.incident_edges.incident_id IS 'Incident.';
COMMENT ON COLUMN coherence.incident_edges.cause IS 'Earlier signal: anomaly:<id> or errors:<host>:<first error µs>.';
COMMENT ON COLUMN coherence.incident_edges.effect IS 'Later signal.';
COMMENT ON COLUMN coherence.incident_edges.lag IS 'Time from cause to effect.';
COMMENT ON COLUMN coherence.incident_edges.strength IS 'risk(cause) · tolerance / (tolerance + lag), between two member metrics times their lead evidence (1 ± 0.5, at most 1 in all); 0.5 · risk for context anomalies.';

CREATE TABLE coherence.detection_runs (
    id                 bigserial PRIMARY KEY,
    started_at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at        timestamptz,
    watermark          timestamptz,
    since              timestamptz,
    until              timestamptz,
    anomalies_changed  integer NOT NULL DEFAULT 0,
    incidents_opened   integer NOT NULL DEFAULT 0,
    incidents_updated  integer NOT NULL DEFAULT 0,
    incidents_resolved integer NOT NULL DEFAULT 0,
    data_now           timestamptz,
    error              text,
    error_sqlstate     text
);
COMMENT ON TABLE coherence.detection_runs IS
    'One row per coherence.run_detection() call: the data range analysed and what changed. New data is found through coherence.pending_series.';
COMMENT ON COLUMN coherence.detection_runs.id IS 'Run id.';
COMMENT ON COLUMN coherence.detection_runs.started_at IS 'Wall-clock start.';
COMMENT ON COLUMN coherence.detection_runs.finished_at IS 'Wall-clock end.';
COMMENT ON COLUMN coherence.detection_runs.watermark IS 'Until 0.2.0: newest created_at of the input rows seen by the run. Since 0.3.0 new rows are found through coherence.pending_series and this is NULL.';
COMMENT ON COLUMN coherence.detection_runs.data_now IS 'Newest sample time seen by this or an earlier run (data time; incidents resolve against it).';
COMMENT ON COLUMN coherence.detection_runs.since IS 'Start of the analysed data range (NULL: nothing new).';
COMMENT ON COLUMN coherence.detection_runs.until IS 'End of the analysed data range (exclusive).';
COMMENT ON COLUMN coherence.detection_runs.anomalies_changed IS 'Anomalies inserted or updated.';
COMMENT ON COLUMN coherence.detection_runs.incidents_opened IS 'Incidents opened.';
COMMENT ON COLUMN coherence.detection_runs.incidents_updated IS 'Incidents whose content changed.';
COMMENT ON COLUMN coherence.detection_runs.incidents_resolved IS 'Incidents resolved.';
COMMENT ON COLUMN coherence.detection_runs.error IS 'Why the run failed (its changes were rolled back and its queue kept), else NULL.';
COMMENT ON COLUMN coherence.detection_runs.error_sqlstate IS 'SQLSTATE of that error.';

SELECT pg_catalog.pg_extension_config_dump('coherence.anomalies', '');
SELECT pg_catalog.pg_extension_config_dump('coherence.anomalies_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('coherence.incidents', '');
SELECT pg_catalog.pg_extension_config_dump('coherence.incidents_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('coherence.incident_edges', '');
SELECT pg_catalog.pg_extension_config_dump('coherence.detection_runs', '');
SELECT pg_catalog.pg_extension_config_dump('coherence.detection_runs_id_seq', '');

-- The job pg_cron runs. See docs/incidents.md.
CREATE FUNCTION coherence.run_detection(
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
COMMENT ON FUNCTION coherence.run_detection(interval, interval, interval, boolean) IS
    'The scheduled job: detects events over the data queued in coherence.pending_series since the last run (plus lookback) with per-series settings (coherence.series_rules), persists coherence.anomalies (including no_data for series that stopped reporting), correlates them with error events into coherence.incidents, mutes incidents in maintenance windows, resolves quiet incidents, NOTIFY coherence_incidents on open/risk change/resolve. Idempotent; READ COMMITTED only; a call while another runs returns {"skipped": "already running"} at once; a failure is recorded (coherence.health()) and returned as {"error": ...} with a WARNING. Schedule: SELECT cron.schedule(''coherence-detect'', ''*/15 * * * *'', ''SELECT coherence.run_detection()'');';
COMMENT ON FUNCTION coherence.lead_horizon() IS
    'How far before an incident coherence.correlate looks for lead evidence (how often a member''s anomalies began shortly before or after the other members''); run_detection passes each host''s anomalies from that long before its first anomaly in the range up to the range as history signals. E.g. SELECT coherence.lead_horizon();';
COMMENT ON FUNCTION coherence.correlate(jsonb, jsonb, interval, integer, interval, jsonb) IS
    'Temporal correlator: signals (errors and anomalies, jsonb array) to incidents with causal graph, ranked hypotheses and narrative (jsonb); signals within tolerance are linked, and incidents of one host at most join_gap apart (default 0: none) are one. With fleet (how many hosts report each metric, e.g. {"cpu": 12}), members carry peer evidence: a deviation most peers show at the same time ranks lower and is called fleet-wide load. Lead evidence (how often a member''s anomalies began shortly before or after the other members'' in the day before the incident) weighs the ranking and the graph''s edges; signals with "history": true count only as such evidence. Used by run_detection (join_gap => close_after, fleet from coherence.series_state); see docs/incidents.md. E.g. SELECT jsonb_array_length(coherence.correlate(''[]''::jsonb));';

-- Views for BI tools.
CREATE VIEW coherence.active_incidents AS
SELECT i.id, i.host, i.opened_at, i.first_error_at, i.last_signal_at, i.error_count,
       round(i.risk::numeric, 2) AS risk, i.hypothesis, round(i.confidence::numeric, 2) AS confidence,
       i.narrative, i.muted_by
  FROM coherence.incidents i
 WHERE i.status = 'open';
COMMENT ON VIEW coherence.active_incidents IS 'Open incidents, for dashboards: SELECT * FROM coherence.active_incidents ORDER BY risk DESC;';
COMMENT ON COLUMN coherence.active_incidents.id IS 'Incident id.';
COMMENT ON COLUMN coherence.active_incidents.host IS 'Host.';
COMMENT ON COLUMN coherence.active_incidents.opened_at IS 'Earliest member signal.';
COMMENT ON COLUMN coherence.active_incidents.first_error_at IS 'First error event (NULL for an incident of anomalies alone).';
COMMENT ON COLUMN coherence.active_incidents.last_signal_at IS 'Latest member signal.';
COMMENT ON COLUMN coherence.active_incidents.error_count IS 'Error events.';
COMMENT ON COLUMN coherence.active_incidents.risk IS 'Risk in [0, 1], two decimals.';
COMMENT ON COLUMN coherence.active_incidents.hypothesis IS 'Top hypothesis.';
COMMENT ON COLUMN coherence.active_incidents.confidence IS 'Its confidence, two decimals.';
COMMENT ON COLUMN coherence.active_incidents.narrative IS 'Narrative.';
COMMENT ON COLUMN coherence.active_incidents.muted_by IS 'Maintenance window muting it (no alert), else NULL.';

CREATE VIEW coherence.incident_timeline AS
SELECT i.id AS incident_id, i.host, i.status, a.started_at AS at, 'anomaly'::text AS signal,
       a.metric, a.kind, a.peak_value AS value, round(a.risk::numeric, 2) AS risk, a.summary AS detail,
       (sid.value = ANY (SELECT jsonb_array_elements_text(i.context))) AS is_context
  FROM coherence.incidents i
 CROSS JOIN LATERAL jsonb_array_elements_text(i.signals || i.context) sid
  JOIN coherence.anomalies a ON sid.value = 'anomaly:' || a.id
UNION ALL
SELECT i.id, i.host, i.status, e.ts, 'error', coalesce(e.metric, 'error'), e.severity,
       e.value::double precision, NULL, coalesce(e.message, e.service, e.fingerprint), false
  FROM coherence.incidents i
 CROSS JOIN LATERAL jsonb_array_elements_text(i.signals) sid
  JOIN coherence.signal_events e ON sid.value = 'error:' || e.id::text;
COMMENT ON VIEW coherence.incident_timeline IS 'Every signal of every incident in time order: SELECT * FROM coherence.incident_timeline WHERE incident_id = 1 ORDER BY at;';
COMMENT ON COLUMN coherence.incident_timeline.incident_id IS 'Incident id.';
COMMENT ON COLUMN coherence.incident_timeline.host IS 'Host.';
COMMENT ON COLUMN coherence.incident_timeline.status IS 'Incident status.';
COMMENT ON COLUMN coherence.incident_timeline.at IS 'When the signal started.';
COMMENT ON COLUMN coherence.incident_timeline.signal IS 'anomaly or error.';
COMMENT ON COLUMN coherence.incident_timeline.metric IS 'Metric (error for error events).';
COMMENT ON COLUMN coherence.incident_timeline.kind IS 'Anomaly kind or event severity.';
COMMENT ON COLUMN coherence.incident_timeline.value IS 'Peak value (anomalies) or event value.';
COMMENT ON COLUMN coherence.incident_timeline.risk IS 'Anomaly risk.';
COMMENT ON COLUMN coherence.incident_timeline.detail IS 'Anomaly summary or event message.';
COMMENT ON COLUMN coherence.incident_timeline.is_context IS 'True for context anomalies (leaks) active during the incident.';

CREATE VIEW coherence.series_health AS
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

-- Read-only role for BI tools: reads the views and the data and result tables; runs the
-- read-only functions (executable by everyone, as in PostgreSQL itself); cannot run the job
-- or write anything. Roles are cluster-wide, so a coherence_reader made by this extension in
-- another database is reused; one with more rights than that is refused, not adopted.
DO $do$
DECLARE
    r pg_catalog.pg_roles;
BEGIN
    SELECT * INTO r FROM pg_catalog.pg_roles WHERE rolname = 'coherence_reader';
    IF NOT FOUND THEN
        CREATE ROLE coherence_reader NOLOGIN;
    ELSIF r.rolsuper OR r.rolcreaterole OR r.rolcreatedb OR r.rolreplication OR r.rolbypassrls
          OR r.rolcanlogin OR EXISTS (SELECT 1 FROM pg_catalog.pg_auth_members m WHERE m.member = r.oid) THEN
        RAISE EXCEPTION 'role coherence_reader already exists with more rights than read-only access'
            USING ERRCODE = 'duplicate_object',
                  DETAIL = 'It is a superuser, may log in, create roles or databases, replicate, bypass row security, or is a member of another role (grant coherence_reader to a login role instead).',
                  HINT = 'Drop or rename that role (ALTER ROLE coherence_reader RENAME TO ...), then CREATE EXTENSION coherence again.';
    END IF;
END
$do$;
COMMENT ON ROLE coherence_reader IS 'Read-only access to the coherence views, data and results for BI tools (GRANT coherence_reader TO grafana;).';
GRANT USAGE ON SCHEMA coherence TO coherence_reader;
GRANT SELECT ON coherence.active_incidents, coherence.incident_timeline, coherence.series_health,
    coherence.metrics, coherence.signal_events, coherence.anomalies, coherence.incidents,
    coherence.incident_edges, coherence.detection_runs, coherence.series_rules,
    coherence.maintenance_windows, coherence.series_state, coherence.pending_series,
    coherence.series, coherence.ingest_status, coherence.metrics_default, coherence.metrics_partitions
    TO coherence_reader;
-- The job writes the result tables: only the extension's owner (and roles it grants) may run it.
-- The correlator is the job's step (its input is whatever jsonb a caller builds, unbounded):
-- the same.
REVOKE EXECUTE ON FUNCTION coherence.run_detection(interval, interval, interval, boolean) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION coherence.correlate(jsonb, jsonb, interval, integer, interval, jsonb) FROM PUBLIC;

-- Alert delivery log of `coherence-ingest alert`: one row per (incident, destination, action),
-- so each is delivered once; retries with backoff live here too.
CREATE TABLE coherence.alert_deliveries (
    id              bigserial PRIMARY KEY,
    incident_id     bigint REFERENCES coherence.incidents (id) ON DELETE CASCADE,
    destination     text NOT NULL,
    action          text NOT NULL CHECK (action IN ('trigger', 'resolve')),
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    response        text,
    delivered_at    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    watch_since     timestamptz,
    detail          text,
    CONSTRAINT alert_deliveries_once_key UNIQUE (incident_id, destination, action),
    CONSTRAINT alert_deliveries_subject CHECK ((incident_id IS NULL) <> (watch_since IS NULL))
);
CREATE UNIQUE INDEX alert_deliveries_watch_once_idx ON coherence.alert_deliveries (watch_since, destination, action)
    WHERE incident_id IS NULL;
CREATE INDEX alert_deliveries_due_idx ON coherence.alert_deliveries (next_attempt_at) WHERE status = 'pending';
COMMENT ON TABLE coherence.alert_deliveries IS
    'Alert delivery log of coherence-ingest alert: each (incident, destination, action) once; pending rows are retried with backoff.';
COMMENT ON COLUMN coherence.alert_deliveries.id IS 'Delivery id.';
COMMENT ON COLUMN coherence.alert_deliveries.incident_id IS 'Incident alerted on (NULL for a watcher alert about the detection job).';
COMMENT ON COLUMN coherence.alert_deliveries.watch_since IS 'Watcher alerts: the last success of the detection job before it stopped succeeding (-infinity if it never did); one alert per outage.';
COMMENT ON COLUMN coherence.alert_deliveries.detail IS 'Watcher alerts: coherence.health() detail at the time.';
COMMENT ON COLUMN coherence.alert_deliveries.destination IS 'Destination name from the [alert] config (a Slack webhook or PagerDuty service).';
COMMENT ON COLUMN coherence.alert_deliveries.action IS 'trigger (incident at or above the risk threshold) or resolve (incident resolved or merged).';
COMMENT ON COLUMN coherence.alert_deliveries.status IS 'pending, delivered, or failed (gave up: the maximum attempts, or a permanent refusal such as HTTP 400/403/404; a resolve is sent only after a delivered trigger). Re-queue with UPDATE coherence.alert_deliveries SET status = ''pending'', attempts = 0, next_attempt_at = now() WHERE status = ''failed'';';
COMMENT ON COLUMN coherence.alert_deliveries.attempts IS 'Delivery attempts so far.';
COMMENT ON COLUMN coherence.alert_deliveries.next_attempt_at IS 'Earliest time of the next attempt (backoff).';
COMMENT ON COLUMN coherence.alert_deliveries.last_error IS 'Error of the last failed attempt (no secrets).';
COMMENT ON COLUMN coherence.alert_deliveries.response IS 'Response status of the delivered attempt.';
COMMENT ON COLUMN coherence.alert_deliveries.delivered_at IS 'When the destination acknowledged it.';
COMMENT ON COLUMN coherence.alert_deliveries.created_at IS 'When it was queued.';
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
SELECT pg_catalog.pg_extension_config_dump('coherence.alert_deliveries', '');
SELECT pg_catalog.pg_extension_config_dump('coherence.alert_deliveries_id_seq', '');

-- A trusted extension: a non-superuser with CREATE on the database (e.g. its owner) may
-- CREATE EXTENSION coherence. Its objects are then owned by the bootstrap superuser, so the
-- installing role (@extowner@) gets the rights to use them: write the data and result tables,
-- run the job and the correlator. (Installed by a superuser, these grants are to that
-- superuser and change nothing.)
GRANT USAGE ON SCHEMA coherence TO @extowner@;
GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA coherence TO @extowner@;
GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA coherence TO @extowner@;
GRANT EXECUTE ON FUNCTION coherence.run_detection(interval, interval, interval, boolean),
    coherence.correlate(jsonb, jsonb, interval, integer, interval, jsonb),
    coherence.create_partitions(interval, integer, timestamptz), coherence.drop_old_data(interval) TO @extowner@;

