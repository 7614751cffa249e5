-- Hostile input: every reproduction of the robustness audit (issue 12) gets a clean answer.
-- Errors carry a specific SQLSTATE and no Rust internals; overflowing values are skipped;
-- tables refuse infinite times; an attacker's search_path runs nothing; the reader role reads
-- and nothing else; and 10,000 random calls of every function never panic (SQLSTATE XX000)
-- nor return a risk outside [0, 1].
SET client_min_messages = warning;
SET TimeZone = 'UTC';

-- try(sql): 'ok' or '<SQLSTATE>: <message>'; the hint and detail go to hint().
CREATE FUNCTION pg_temp.try(q text) RETURNS text LANGUAGE plpgsql AS $fn$
BEGIN
    EXECUTE q;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END
$fn$;

-- 1. Bad arguments: specific SQLSTATEs, one-line messages, never XX000.
SELECT q AS call, pg_temp.try(q) AS result FROM (VALUES
    ($$SELECT * FROM coherence.series_events(ARRAY[now()], ARRAY[1.0]::float8[], 2147483647)$$),
    ($$SELECT * FROM coherence.series_events(ARRAY[now()], ARRAY[1.0]::float8[], direction => 'sideways')$$),
    ($$SELECT * FROM coherence.find_events(ARRAY[now()], ARRAY[1.0]::float8[], threshold => -1)$$),
    ($$SELECT * FROM coherence.find_events(ARRAY[now()], ARRAY[1.0]::float8[], min_risk => 2)$$),
    ($$SELECT * FROM coherence.find_events(ARRAY[now()], ARRAY[1.0, 2.0]::float8[])$$),
    ($$SELECT * FROM coherence.series_trend_event(ARRAY[now()], ARRAY[1.0]::float8[], pct_threshold => 0)$$),
    ($$SELECT * FROM coherence.series_volatility_events(ARRAY[now()], ARRAY[1.0]::float8[], ratio => 1)$$),
    ($$SELECT coherence.spikes(now(), 1.0::float8, 'NaN')$$),
    ($$SELECT coherence.variance_escalation(now(), 1.0::float8, interval '1 month', 1.5)$$),
    ($$SELECT coherence.trend(now(), 1.0::float8, -5)$$),
    ($$SELECT coherence.correlate('[{"id": 1}]')$$),
    ($$SELECT coherence.correlate('[]', tolerance => interval '0')$$),
    ($$SELECT coherence.correlate('[]', join_gap => interval '-1 minute')$$),
    ($$SELECT coherence.detect('2025-01-02', '2025-01-01')$$),
    ($$SELECT coherence.detect_events('2025-01-01', '2025-01-02', lookback => interval '-1 day')$$),
    ($$SELECT coherence.run_detection(lookback => NULL)$$),
    ($$SELECT coherence.run_detection(tolerance => interval '0')$$)
) t(q);

-- NULL parameters are the documented defaults (or no rows), not errors.
SELECT count(*) AS rows_with_null_params
  FROM coherence.find_events(ARRAY['2025-01-01'::timestamptz], ARRAY[1.0]::float8[], NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
SELECT count(*) AS rows_with_null_arrays FROM coherence.series_events(NULL, NULL);
SELECT (coherence.spikes(now(), 1.0::float8, NULL)).points AS spikes_null_sigmas,
       (coherence.trend(now(), 1.0::float8, NULL)).points AS trend_null_pct,
       (SELECT count(*) FROM coherence.detect_events(NULL, now())) AS detect_events_null_since;

-- 2. Values whose squares overflow are skipped and counted, never NaN verdicts.
SELECT (v).points, (v).skipped, (v).ratio, (v).summary
  FROM (SELECT coherence.variance_escalation(ts, x) AS v FROM (VALUES
        ('2025-01-01 00:00+00'::timestamptz, 1e308::float8), ('2025-01-01 00:01+00', -1e308),
        ('2025-01-01 08:00+00', 1e308), ('2025-01-01 08:01+00', -1e308),
        ('2025-01-01 08:02+00', 1.0), ('2025-01-01 08:03+00', 2.0)) t(ts, x)) s;
SELECT (s).points, (s).skipped, (s).mean, (s).stddev
  FROM (SELECT coherence.spikes(ts, x) AS s FROM (VALUES
        ('2025-01-01 00:00+00'::timestamptz, 1e308::float8), ('2025-01-01 00:01+00', -1e101),
        ('2025-01-01 00:02+00', 1.0), ('2025-01-01 00:03+00', 3.0)) t(ts, x)) s;
SELECT count(*) AS events_on_overflowing_values
  FROM coherence.find_events(ARRAY(SELECT '2025-01-01'::timestamptz + i * interval '1 minute' FROM generate_series(1, 300) i),
                             ARRAY(SELECT CASE WHEN i % 2 = 0 THEN 1e308 ELSE -1e308 END FROM generate_series(1, 300) i));

-- 3. Infinite times are refused by the tables, so no row can break the job.
SELECT pg_temp.try($$INSERT INTO coherence.metrics (host, metric_name, value, "timestamp") VALUES ('h', 'm', 1, '-infinity')$$) AS metric_at_minus_infinity,
       pg_temp.try($$INSERT INTO coherence.metrics (host, metric_name, value, "timestamp") VALUES ('h', 'm', 1, 'infinity')$$) AS metric_at_infinity,
       pg_temp.try($$INSERT INTO coherence.signal_events (ts, host, fingerprint, severity) VALUES ('-infinity', 'h', 'f', 'error')$$) AS error_at_minus_infinity;

-- Rows the tables accept but no double precision or Unix microsecond can hold (a numeric
-- event value of 1e400, a sample in year 294270) are skipped and counted, and the job runs.
SELECT (coherence.spikes(ts, 1.0::float8)).skipped AS skipped_beyond_unix_range
  FROM (VALUES ('294270-01-01 00:00+00'::timestamptz), ('2025-01-01 00:00+00')) t(ts);
INSERT INTO coherence.signal_events (ts, host, fingerprint, severity, metric, value, source, source_id)
VALUES ('2025-02-01 00:00+00', 'odd-host', 'f', 'info', 'queue_depth', 1e400, 'hostile', 'huge');
INSERT INTO coherence.metrics (host, metric_name, value, "timestamp")
VALUES ('odd-host', 'cpu', 1, '294270-01-01 00:00+00'), ('odd-host', 'cpu', 2, '2025-02-01 00:01+00');
SELECT pg_temp.try('SELECT coherence.run_detection()') AS job_with_odd_rows,
       pg_temp.try($$SELECT coherence.detect('2025-01-01', '2025-03-01')$$) AS detect_with_odd_rows;
-- The far-future sample does not move data time (which would resolve every open incident),
-- and a run with nothing new leaves data time where it was.
SELECT data_now < now() + interval '2 days' AS data_time_not_in_year_294270
  FROM coherence.detection_runs ORDER BY id DESC LIMIT 1;
CREATE TEMP TABLE last_now AS SELECT data_now FROM coherence.detection_runs ORDER BY id DESC LIMIT 1;
SELECT (coherence.run_detection())->>'since' IS NULL AS nothing_new;
SELECT r.data_now = l.data_now AS data_time_unchanged_when_nothing_is_new
  FROM last_now l, (SELECT data_now FROM coherence.detection_runs ORDER BY id DESC LIMIT 1) r;
-- A sample near PostgreSQL's lower time limit (lookback arithmetic would overflow) and one far
-- in the future alone in the queue: the job runs and analyses nothing from them.
INSERT INTO coherence.metrics (host, metric_name, value, "timestamp")
VALUES ('odd-host', 'cpu', 3, '4713-01-02 00:00+00 BC');
SELECT pg_temp.try('SELECT coherence.run_detection()') AS job_with_a_sample_in_4713_bc;
INSERT INTO coherence.metrics (host, metric_name, value, "timestamp")
VALUES ('odd-host', 'cpu', 4, '9999-01-01 00:00+00');
SELECT (coherence.run_detection())->>'since' IS NULL AS future_alone_analyses_nothing;
DELETE FROM coherence.signal_events WHERE host = 'odd-host';
DELETE FROM coherence.metrics WHERE host = 'odd-host';

-- 4. search_path: an attacker's ">=" earlier in the path is never called by coherence.samples
--    (inlined into the caller's query) nor by the functions built on it.
CREATE SCHEMA evil;
CREATE SEQUENCE evil.calls;
CREATE FUNCTION evil.ge(timestamptz, timestamptz) RETURNS boolean LANGUAGE sql
    AS $$ SELECT nextval('evil.calls') > 0 $$;
CREATE FUNCTION evil.lt(timestamptz, timestamptz) RETURNS boolean LANGUAGE sql
    AS $$ SELECT nextval('evil.calls') > 0 $$;
CREATE OPERATOR evil.>= (LEFTARG = timestamptz, RIGHTARG = timestamptz, FUNCTION = evil.ge);
CREATE OPERATOR evil.< (LEFTARG = timestamptz, RIGHTARG = timestamptz, FUNCTION = evil.lt);
INSERT INTO coherence.metrics (host, metric_name, value, "timestamp")
SELECT 'hijack-host', 'cpu', i % 7, '2025-03-01'::timestamptz + i * interval '1 minute'
  FROM generate_series(1, 300) i;
SET search_path = evil, pg_catalog, public;
SELECT count(*) AS samples_seen FROM coherence.samples('2025-03-01', '2025-03-02');
SELECT count(*) AS detect_rows FROM coherence.detect('2025-03-01', '2025-03-02');
SELECT count(*) >= 0 AS detect_events_runs FROM coherence.detect_events('2025-03-01', '2025-03-02');
RESET search_path;
SELECT is_called AS attacker_operator_ever_called FROM evil.calls;
DROP SCHEMA evil CASCADE;
DELETE FROM coherence.metrics WHERE host = 'hijack-host';

-- 5. The reader role reads the views and tables and nothing else.
SET ROLE coherence_reader;
SELECT pg_temp.try('SELECT count(*) FROM coherence.active_incidents') AS read_view,
       pg_temp.try('SELECT count(*) FROM coherence.anomalies') AS read_anomalies,
       pg_temp.try($$INSERT INTO coherence.metrics (host, metric_name, value, "timestamp") VALUES ('h', 'm', 1, now())$$) AS write_metrics,
       pg_temp.try('SELECT coherence.run_detection()') AS run_job,
       pg_temp.try('LOCK TABLE coherence.detection_runs IN SHARE ROW EXCLUSIVE MODE') AS block_job;
-- The queue's SECURITY DEFINER trigger functions cannot be borrowed for another table.
SELECT pg_temp.try($$CREATE TEMP TABLE borrowed (host text, metric_name text, "timestamp" timestamptz);
                    CREATE TRIGGER t AFTER INSERT ON borrowed REFERENCING NEW TABLE AS new_rows
                    FOR EACH STATEMENT EXECUTE FUNCTION coherence.queue_new_metrics()$$) AS reader_borrows_queue_trigger;
RESET ROLE;
CREATE TEMP TABLE borrowed (host text, metric_name text, "timestamp" timestamptz);
CREATE TRIGGER t AFTER INSERT ON borrowed REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION coherence.queue_new_metrics();
SELECT pg_temp.try($$INSERT INTO borrowed VALUES ('h', 'm', now())$$) AS queue_trigger_on_another_table;
DROP TABLE borrowed;
SELECT has_function_privilege('coherence_reader', 'coherence.find_events(timestamptz[], double precision[], integer, double precision, text, integer, timestamptz, double precision, text, text, double precision)', 'EXECUTE') AS reader_runs_pure_functions,
       has_function_privilege('coherence_reader', 'coherence.run_detection(interval, interval, interval, boolean)', 'EXECUTE') AS reader_runs_job;

-- A pre-existing coherence_reader with more rights is refused, not adopted (rolled back).
BEGIN;
ALTER ROLE coherence_reader CREATEDB;
DROP EXTENSION coherence CASCADE;
SELECT pg_temp.try('CREATE EXTENSION coherence') AS create_with_powerful_reader;
ROLLBACK;

-- 6. The job only runs where each statement sees what committed before it.
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT pg_temp.try('SELECT coherence.run_detection()') AS in_repeatable_read;
ROLLBACK;
BEGIN ISOLATION LEVEL SERIALIZABLE;
SELECT pg_temp.try('SELECT coherence.run_detection()') AS in_serializable;
ROLLBACK;

-- 7. Fuzz: 10,000 random calls of each of the 10 array/aggregate functions (random lengths, NULLs, NaN, ±Infinity,
--    huge values, duplicate and infinite times, random and NULL parameters). No call may
--    panic (XX000) or return a risk outside [0, 1]; errors must be documented SQLSTATEs.
SELECT setseed(0.12);
CREATE TEMP TABLE fuzz (fn text, outcome text, bad_risk boolean, nrows bigint);
DO $fuzz$
DECLARE
    n int;
    ts timestamptz[];
    vs float8[];
    t0 timestamptz;
    p_int int;
    p_f float8;
    p_txt text;
    fn text;
    bad boolean;
    nrows bigint;
    k int;
BEGIN
    FOR i IN 1..100000 LOOP
        n := floor(random() * 80)::int;
        t0 := '2025-01-01'::timestamptz + floor(random() * 1000) * interval '1 hour';
        SELECT array_agg(CASE WHEN r < 0.03 THEN NULL
                              WHEN r < 0.04 THEN 'infinity'::timestamptz
                              WHEN r < 0.05 THEN '-infinity'::timestamptz
                              WHEN r < 0.15 THEN t0
                              ELSE t0 + j * interval '1 minute' END),
               array_agg(CASE WHEN q < 0.03 THEN NULL
                              WHEN q < 0.05 THEN 'NaN'::float8
                              WHEN q < 0.06 THEN 'Infinity'::float8
                              WHEN q < 0.07 THEN -1e308
                              WHEN q < 0.10 THEN 1e12 * q
                              WHEN q < 0.20 THEN 0
                              ELSE sin(j / 7.0) * 10 + q END)
          INTO ts, vs
          FROM (SELECT j, random() AS r, random() AS q FROM generate_series(1, n) j) g;
        IF random() < 0.05 THEN vs := vs[1:greatest(n - 1, 0)]; END IF;  -- length mismatch
        -- Parameters: half NULL (the defaults), the rest valid or not.
        p_int := CASE WHEN random() < 0.5 THEN NULL
                      ELSE (ARRAY[-1, 0, 3, 5, 24, 192, 1000001, 2147483647])[1 + floor(random() * 8)::int] END;
        p_f := CASE WHEN random() < 0.5 THEN NULL
                    ELSE (ARRAY['NaN', '-Infinity', -1, 0, 0.5, 1, 1.5, 3, 8, 1e308])[1 + floor(random() * 10)::int]::float8 END;
        p_txt := (ARRAY[NULL, 'both', 'up', 'down', '', 'cpu', 'memory', E'\\x'])[1 + floor(random() * 8)::int];
        k := i % 11;
        bad := false;
        nrows := 0;
        BEGIN
            CASE k
            WHEN 0 THEN
                fn := 'find_events';
                SELECT bool_or(NOT (risk BETWEEN 0 AND 1)) INTO bad
                  FROM coherence.find_events(ts, vs, p_int, p_f, p_txt, p_int, t0, CASE WHEN random() < 0.5 THEN NULL ELSE random() END, p_txt, p_txt, CASE WHEN random() < 0.7 THEN NULL ELSE p_f END);
            WHEN 1 THEN
                fn := 'series_events';
                SELECT bool_or(NOT (risk BETWEEN 0 AND 1)) INTO bad
                  FROM coherence.series_events(ts, vs, p_int, p_f, p_txt, p_int);
            WHEN 2 THEN
                fn := 'series_period';
                PERFORM * FROM coherence.series_period(ts, vs);
            WHEN 3 THEN
                fn := 'series_trend_event';
                SELECT bool_or(NOT (risk BETWEEN 0 AND 1)) INTO bad
                  FROM coherence.series_trend_event(ts, vs, p_f, p_f);
            WHEN 4 THEN
                fn := 'series_volatility_events';
                SELECT bool_or(NOT (risk BETWEEN 0 AND 1)) INTO bad
                  FROM coherence.series_volatility_events(ts, vs, CASE WHEN random() < 0.2 THEN NULL ELSE (floor(random() * 6) * interval '1 hour') END, p_f);
            WHEN 5 THEN
                fn := 'spikes';
                SELECT NOT ((s).risk BETWEEN 0 AND 1) INTO bad
                  FROM (SELECT coherence.spikes(t, v, p_f) AS s FROM unnest(ts, vs) u(t, v)) x;
            WHEN 6 THEN
                fn := 'variance_escalation';
                SELECT NOT ((s).risk BETWEEN 0 AND 1) INTO bad
                  FROM (SELECT coherence.variance_escalation(t, v, CASE WHEN random() < 0.2 THEN NULL ELSE (floor(random() * 6) * interval '1 hour') END, p_f) AS s
                          FROM unnest(ts, vs) u(t, v)) x;
            WHEN 7 THEN
                fn := 'trend';
                SELECT NOT ((s).risk BETWEEN 0 AND 1) INTO bad
                  FROM (SELECT coherence.trend(t, v, p_f) AS s FROM unnest(ts, vs) u(t, v)) x;
            WHEN 8 THEN
                -- Long enough (4 metrics of 70-85 points, 3 of them jumping together near the
                -- end) for the grid, members and risk to run.
                fn := 'find_collective';
                SELECT bool_or(NOT (risk BETWEEN 0 AND 1 AND share BETWEEN 0 AND 1)), count(*) INTO bad, nrows
                  FROM (SELECT array_agg(CASE WHEN r < 0.02 THEN NULL ELSE 'm' || (j % 4) END) AS m,
                               array_agg(CASE WHEN r < 0.01 THEN 'infinity'::timestamptz
                                              ELSE t0 + (j / 4) * interval '1 minute' END) AS t,
                               array_agg(CASE WHEN q < 0.02 THEN 'NaN'::float8 WHEN q < 0.03 THEN 1e308
                                              WHEN j / 4 BETWEEN 58 AND 61 AND j % 4 < 3 THEN 10 + q
                                              ELSE q END) AS v
                          FROM (SELECT j, random() AS r, random() AS q
                                  FROM generate_series(0, 279 + floor(random() * 60)::int) j) g) a,
                       coherence.find_collective(a.m, a.t, a.v, NULL, CASE WHEN random() < 0.5 THEN 0 ELSE random() END, p_txt);
            WHEN 10 THEN
                -- No-data: the cadence of odd times, then the event at the last time given.
                fn := 'no_data_event';
                SELECT bool_or(NOT (risk BETWEEN 0 AND 1)), count(*) INTO bad, nrows
                  FROM coherence.no_data_event(coalesce(p_txt, 'h'), 'm', ts[1], coalesce(vs[1], 0),
                                               coalesce(coherence.series_cadence(ts), interval '1 minute'),
                                               coalesce(ts[n], t0) + floor(random() * 10) * interval '1 minute');
                PERFORM coherence.series_silent(ts[1], coherence.series_cadence(ts), ts[n]);
            ELSE
                fn := 'correlate';
                SELECT bool_or(NOT ((x->>'risk')::float8 BETWEEN 0 AND 1)) INTO bad
                  FROM jsonb_array_elements(coherence.correlate(
                        (SELECT coalesce(jsonb_agg(jsonb_build_object(
                                'id', 'a' || j, 'host', 'h' || (j % 2),
                                'kind', CASE WHEN j % 3 = 0 THEN 'error' ELSE 'anomaly' END,
                                'metric', coalesce(p_txt, 'cpu'), 'anomaly_kind', 'spike',
                                'start', 1e12::bigint + j * 60000000, 'end', 1e12::bigint + j * 60000000,
                                'risk', coalesce(vs[j], 0.5), 'peak_value', 1.0)), '[]')
                           FROM generate_series(1, least(n, 40)) j),
                        '[]', interval '5 minutes', greatest(coalesce(p_int, 3), 1))) x;
            END CASE;
            INSERT INTO fuzz VALUES (fn, 'ok', coalesce(bad, false), nrows);
        EXCEPTION WHEN OTHERS THEN
            INSERT INTO fuzz VALUES (fn, SQLSTATE, false, 0);
        END;
    END LOOP;
END
$fuzz$;
SELECT count(*) AS calls, count(DISTINCT fn) AS functions,
       count(*) FILTER (WHERE outcome = 'XX000') AS panics,
       count(*) FILTER (WHERE bad_risk) AS risks_outside_0_1,
       count(*) FILTER (WHERE outcome = 'ok') > 40000 AS mostly_answered,
       min(calls_per_fn) AS fewest_calls_of_a_function,
       array_agg(DISTINCT outcome ORDER BY outcome) AS outcomes
  FROM fuzz, (SELECT min(c) AS calls_per_fn FROM (SELECT count(*) AS c FROM fuzz GROUP BY fn) x) m;
-- Every function answered some calls and refused others with documented SQLSTATEs.
SELECT count(*) FILTER (WHERE outcome = 'ok') > 9000 AS collective_ran,
       count(*) FILTER (WHERE nrows > 0) > 1000 AS collective_found_events
  FROM fuzz WHERE fn = 'find_collective';
SELECT fn, count(*) FILTER (WHERE outcome = 'ok') > 0 AS answered,
       array_agg(DISTINCT outcome ORDER BY outcome) FILTER (WHERE outcome <> 'ok') AS refusals
  FROM fuzz GROUP BY fn ORDER BY fn;
