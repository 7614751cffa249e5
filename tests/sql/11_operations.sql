-- Operator controls (issue 17): per-series rules, maintenance windows, no-data detection, the
-- job's own health. Examples of docs/operations.md.
SET client_min_messages = warning;
SET TimeZone = 'UTC';
TRUNCATE coherence.metrics, coherence.signal_events, coherence.pending_series,
         coherence.anomalies, coherence.incidents, coherence.detection_runs, coherence.series_state,
         coherence.series_rules, coherence.maintenance_windows RESTART IDENTITY CASCADE;

-- Deterministic N(0, 1) noise: Box-Muller on a hash of (series, minute).
CREATE FUNCTION pg_temp.noise(k int, i int) RETURNS float8 LANGUAGE sql IMMUTABLE AS $$
    SELECT sqrt(-2 * ln(greatest(u1, 1e-12))) * cos(2 * pi() * u2)
      FROM (SELECT ((abs(hashint4(k * 100003 + i)) % 1000000) + 0.5) / 1000000.0 AS u1,
                   ((abs(hashint4(k * 7919 + i * 31 + 17)) % 1000000) + 0.5) / 1000000.0 AS u2) s
$$;
CREATE FUNCTION pg_temp.t(i int) RETURNS timestamptz LANGUAGE sql IMMUTABLE AS $$
    SELECT '2025-12-11 00:00+00'::timestamptz + i * interval '1 minute'
$$;
-- web-1: two metrics, three days a minute; "quiet" spikes once, "noisy" four times by less.
INSERT INTO coherence.metrics (host, metric_name, value, "timestamp")
SELECT 'web-1', m.name,
       50 + pg_temp.noise(m.k, i)
          + CASE WHEN m.name = 'quiet' AND i = 3000 THEN 40
                 WHEN m.name = 'noisy' AND i IN (3100, 3400, 3700, 4000) THEN 15 ELSE 0 END,
       pg_temp.t(i)
  FROM (VALUES (1, 'noisy'), (2, 'quiet')) m(k, name), generate_series(0, 4319) i;
-- db-9: cpu stops reporting two minutes before the end of the data; mem goes on.
INSERT INTO coherence.metrics (host, metric_name, value, "timestamp")
SELECT 'db-9', m.name, 30 + pg_temp.noise(m.k, i), pg_temp.t(i)
  FROM (VALUES (3, 'cpu', 4317), (4, 'mem', 4319)) m(k, name, last), generate_series(4100, 4319) i
 WHERE i <= m.last;

-- 1. A rule raises the threshold of the noisy metric: only its events change.
CREATE TEMP TABLE before_rule AS
SELECT metric, kind, started_at, round(risk::numeric, 4) AS risk
  FROM coherence.detect_events(pg_temp.t(2880), pg_temp.t(4320), interval '2 days');
INSERT INTO coherence.series_rules (metric_pattern, threshold, note)
VALUES ('noisy', 30, 'batch job, spikes are normal');
CREATE TEMP TABLE after_rule AS
SELECT metric, kind, started_at, round(risk::numeric, 4) AS risk
  FROM coherence.detect_events(pg_temp.t(2880), pg_temp.t(4320), interval '2 days');
SELECT b.metric, b.n AS events_before, coalesce(a.n, 0) AS events_after
  FROM (SELECT metric, count(*) AS n FROM before_rule GROUP BY metric) b
  LEFT JOIN (SELECT metric, count(*) AS n FROM after_rule GROUP BY metric) a USING (metric)
 ORDER BY metric;
SELECT count(*) AS quiet_rows_changed FROM (
    (SELECT * FROM before_rule WHERE metric = 'quiet' EXCEPT SELECT * FROM after_rule WHERE metric = 'quiet')
    UNION ALL
    (SELECT * FROM after_rule WHERE metric = 'quiet' EXCEPT SELECT * FROM before_rule WHERE metric = 'quiet')) d;

-- 2. The most specific rule wins, setting by setting; explain shows which.
INSERT INTO coherence.series_rules (host_pattern, min_risk, min_duration, note)
VALUES ('web-%', 0.5, '5 minutes', 'web fleet');
INSERT INTO coherence.series_rules (host_pattern, metric_pattern, min_risk)
VALUES ('web-1', 'noisy', 0.9);
SELECT * FROM coherence.explain('web-1', 'noisy');
SELECT setting, value, source FROM coherence.explain('web-2', 'quiet') WHERE source <> 'default';
SELECT rules FROM coherence.series_settings('web-1', 'noisy');
-- Bad rules are refused by the table.
\set VERBOSITY terse
INSERT INTO coherence.series_rules (metric_pattern, detectors) VALUES ('x', '{robust,bogus}');
INSERT INTO coherence.series_rules (metric_pattern, threshold) VALUES ('x', -1);
\set VERBOSITY default
DELETE FROM coherence.series_rules;

-- 3. A maintenance window over an incident: anomalies recorded, incident muted. An error
--    burst on web-1 during the window; the quiet spike joins only without a min_duration rule.
INSERT INTO coherence.signal_events (ts, host, fingerprint, severity, source, source_id, message)
SELECT pg_temp.t(3000) + k * interval '20 seconds', 'web-1', 'web-1:error', 'error', 'test', 'e' || k, 'HTTP 500'
  FROM generate_series(0, 11) k;
INSERT INTO coherence.maintenance_windows (host_pattern, starts_at, ends_at, reason, author)
VALUES ('web-%', pg_temp.t(2990), pg_temp.t(3010), 'kernel upgrade CHG-1', 'ops');
INSERT INTO coherence.series_rules (host_pattern, metric_pattern, min_duration, note)
VALUES ('web-1', 'quiet', '5 minutes', 'only sustained anomalies page');
SELECT (coherence.run_detection()) ?& ARRAY['run', 'incidents_opened'] AS first_run;
SELECT host, opened_at, status, muted_by, error_count,
       EXISTS (SELECT 1 FROM jsonb_array_elements_text(signals) s WHERE s LIKE 'anomaly:%') AS has_anomaly
  FROM coherence.incidents WHERE host = 'web-1' ORDER BY id;
SELECT count(*) > 0 AS spike_recorded FROM coherence.anomalies
 WHERE host = 'web-1' AND metric = 'quiet' AND started_at = pg_temp.t(3000);
-- Deleting the window afterwards does not unmute the resolved incident (no late page for
-- past work); the window is put back for what follows.
DELETE FROM coherence.maintenance_windows;
SELECT id, muted_by FROM coherence.incidents WHERE host = 'web-1' AND error_count > 0;
INSERT INTO coherence.maintenance_windows (host_pattern, starts_at, ends_at, reason, author)
VALUES ('web-%', pg_temp.t(2990), pg_temp.t(3010), 'kernel upgrade CHG-1', 'ops');

-- 4. No data: db-9's cpu missed 2 of its 1-minute intervals at the end of the data.
SELECT host, metric, kind, detector, started_at, ended_at, risk, summary
  FROM coherence.anomalies WHERE kind = 'no_data' ORDER BY host, metric;
SELECT count(*) AS db9_incidents FROM coherence.incidents WHERE host = 'db-9';

-- 5. More data: errors go on past the window's end (the incident is no longer muted), the rule
--    is gone (the spike joins), and db-9's cpu stays silent (risk grows, an incident opens).
DELETE FROM coherence.series_rules;
INSERT INTO coherence.signal_events (ts, host, fingerprint, severity, source, source_id, message)
SELECT pg_temp.t(m), 'web-1', 'web-1:error', 'error', 'test', 'late' || m, 'HTTP 500'
  FROM unnest(ARRAY[3004, 3008, 3012, 3015]) m;
INSERT INTO coherence.metrics (host, metric_name, value, "timestamp")
SELECT h, n, base + pg_temp.noise(k, i), pg_temp.t(i)
  FROM (VALUES ('web-1', 'noisy', 1, 50), ('web-1', 'quiet', 2, 50), ('db-9', 'mem', 4, 30)) s(h, n, k, base),
       generate_series(4320, 4325) i;
SELECT (coherence.run_detection()) ? 'error' AS second_run_failed;
SELECT host, opened_at, last_signal_at, status, muted_by,
       EXISTS (SELECT 1 FROM jsonb_array_elements_text(signals) s WHERE s LIKE 'anomaly:%') AS has_anomaly
  FROM coherence.incidents WHERE host = 'web-1' AND status <> 'merged' ORDER BY id;
SELECT metric, ended_at, risk FROM coherence.anomalies WHERE kind = 'no_data';
SELECT host, hypothesis, narrative FROM coherence.incidents WHERE host = 'db-9';
SELECT host, metric, status, expected_every FROM coherence.series_health ORDER BY host, metric;
-- A silence of over an hour: the incident stays open and grows with it (close_after is 30 minutes).
INSERT INTO coherence.metrics (host, metric_name, value, "timestamp")
SELECT h, n, base + pg_temp.noise(k, i), pg_temp.t(i)
  FROM (VALUES ('web-1', 'noisy', 1, 50), ('web-1', 'quiet', 2, 50), ('db-9', 'mem', 4, 30)) s(h, n, k, base),
       generate_series(4326, 4400) i;
SELECT (coherence.run_detection()) ? 'error' AS long_silence_run_failed;
SELECT status, last_signal_at, risk FROM coherence.incidents WHERE host = 'db-9';
-- Disabled per series: no new no-data events for db-9.
INSERT INTO coherence.series_rules (host_pattern, detectors, note)
VALUES ('db-9', '{robust,volatility,trend,collective}', 'decommissioned');
SELECT (coherence.run_detection(full_rescan => true)) ? 'error' AS rescan_failed;
SELECT metric, ended_at, risk FROM coherence.anomalies WHERE kind = 'no_data';

-- 6. Watch the watcher: a run that fails (its role lost the right to read metrics) is recorded
--    and shown by health(); the next good run clears it.
SELECT status, failures_since_success FROM coherence.health(interval '10000 days');
CREATE ROLE regress_coh_job NOLOGIN;
GRANT USAGE ON SCHEMA coherence TO regress_coh_job;
GRANT EXECUTE ON FUNCTION coherence.run_detection(interval, interval, interval, boolean) TO regress_coh_job;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA coherence TO regress_coh_job;
GRANT USAGE, UPDATE ON ALL SEQUENCES IN SCHEMA coherence TO regress_coh_job;
REVOKE SELECT ON coherence.metrics FROM regress_coh_job;
INSERT INTO coherence.metrics (host, metric_name, value, "timestamp") VALUES ('web-1', 'noisy', 50, pg_temp.t(4401));
SET ROLE regress_coh_job;
SELECT r->>'sqlstate' AS sqlstate, r->>'error' AS error FROM coherence.run_detection() r;
RESET ROLE;
SELECT status, failures_since_success, last_error, detail LIKE '1 run(s) failed since the last success at %' AS detail_says_so
  FROM coherence.health(interval '10000 days');
SELECT count(*) AS queue_kept FROM coherence.pending_series;
SELECT (coherence.run_detection()) ? 'error' AS third_run_failed;
SELECT status, failures_since_success FROM coherence.health(interval '10000 days');
SELECT coherence.health(interval '0');
DROP OWNED BY regress_coh_job;
DROP ROLE regress_coh_job;

-- The expected band (for plots): the quiet metric's spike is the one point outside it, and a
-- rule's threshold widens the band of its series only.
SELECT ts, round(value::numeric) AS value, round(baseline::numeric) AS baseline,
       round(lower::numeric) AS lower, round(upper::numeric) AS upper, anomalous
  FROM coherence.expected_band('web-1', 'quiet', pg_temp.t(2998), pg_temp.t(3002));
SELECT count(*) AS points, count(*) FILTER (WHERE anomalous) AS anomalous,
       count(*) FILTER (WHERE value BETWEEN lower AND upper) AS inside
  FROM coherence.expected_band('web-1', 'quiet', pg_temp.t(2880), pg_temp.t(4320));
CREATE TEMP TABLE width_before AS
SELECT avg(upper - lower) AS w FROM coherence.expected_band('web-1', 'noisy', pg_temp.t(2880), pg_temp.t(4320));
INSERT INTO coherence.series_rules (metric_pattern, threshold) VALUES ('noisy', 16);
SELECT round(((SELECT avg(upper - lower) FROM coherence.expected_band('web-1', 'noisy', pg_temp.t(2880), pg_temp.t(4320)))
             / (SELECT w FROM width_before))::numeric, 1) AS noisy_band_ratio;
DELETE FROM coherence.series_rules;
SELECT count(*) FROM coherence.expected_band('web-1', 'quiet', pg_temp.t(10), pg_temp.t(5));
SELECT count(*) AS unknown_series FROM coherence.expected_band('nobody', 'cpu', pg_temp.t(0), pg_temp.t(10));

-- The core's functions behind it.
SELECT coherence.series_cadence(ARRAY['2025-01-01 00:00Z', '2025-01-01 00:01Z', '2025-01-01 00:02Z',
                                      '2025-01-01 00:10Z']::timestamptz[]) AS cadence;
SELECT risk, summary FROM coherence.no_data_event('web-1', 'cpu', '2025-01-01 00:00Z', 42, '1 minute', '2025-01-01 00:05Z');
SELECT count(*) AS not_silent_yet FROM coherence.no_data_event('web-1', 'cpu', '2025-01-01 00:00Z', 42, '1 minute', '2025-01-01 00:01Z');
SELECT coherence.series_silent(now() - interval '3 minutes', '1 minute', now()) AS silent,
       coherence.series_silent(now() - interval '1 minute', '1 minute', now()) AS reporting;
SELECT coherence.muting_window('db-1', now(), now()) IS NULL AS no_window;
SELECT * FROM coherence.default_settings();
SELECT count(*) FROM coherence.find_events(ARRAY[now()], ARRAY[1.0]::float8[], capacity => -1);

TRUNCATE coherence.metrics, coherence.signal_events, coherence.pending_series,
         coherence.anomalies, coherence.incidents, coherence.detection_runs, coherence.series_state,
         coherence.series_rules, coherence.maintenance_windows CASCADE;
