-- Upgrade: install 0.1.0 with data in every table, ALTER EXTENSION ... UPDATE, and check that
-- the data survives, the new behaviour is there, and the result is the same extension as a
-- fresh install of the current version (functions, signatures, bodies, comments, members).
SET client_min_messages = warning;
DROP DATABASE IF EXISTS coherence_upgrade_test;
CREATE DATABASE coherence_upgrade_test;
\set fingerprint 'SELECT md5(string_agg(format(''%s(%s) -> %s [%s%s%s] %s %s'', p.proname, pg_get_function_arguments(p.oid), pg_get_function_result(p.oid), p.provolatile, p.proparallel, p.proisstrict, md5(p.prosrc), coalesce(obj_description(p.oid, ''pg_proc''), '''')), E''\n'' ORDER BY p.proname, pg_get_function_arguments(p.oid))) AS functions, (SELECT md5(string_agg(pg_describe_object(classid, objid, objsubid), E''\n'' ORDER BY pg_describe_object(classid, objid, objsubid))) FROM pg_depend WHERE refclassid = ''pg_extension''::regclass AND refobjid = (SELECT oid FROM pg_extension WHERE extname = ''coherence'') AND deptype = ''e'') AS members FROM pg_proc p WHERE p.pronamespace = ''coherence''::regnamespace'

-- The fresh install (this database) is the reference.
:fingerprint \gset fresh_

\c coherence_upgrade_test
SET TimeZone = 'UTC';
SET client_min_messages = warning;
CREATE EXTENSION coherence VERSION '0.1.0';
SELECT extversion FROM pg_extension WHERE extname = 'coherence';
SELECT * FROM pg_extension_update_paths('coherence') WHERE source = '0.1.0' AND path IS NOT NULL;

-- Data in 0.1.0: a leaking, spiking host with an error burst, detected by 0.1.0's job.
INSERT INTO coherence.metrics (host, metric_name, value, "timestamp")
SELECT 'web-1', m,
       CASE WHEN m = 'memory' THEN 40.0 + 50.0 * i / 2879.0 + ((i * 31) % 7 - 3) * 0.2
            WHEN i = 2640 THEN 97.5 ELSE 30.0 + ((i * 7919) % 11 - 5) END,
       '2025-12-11 08:00+00'::timestamptz + i * interval '1 minute'
  FROM unnest(ARRAY['cpu', 'memory']) m, generate_series(0, 2879) i;
INSERT INTO coherence.signal_events (ts, host, service, fingerprint, severity, metric, source, source_id, message)
SELECT '2025-12-13 04:03+00'::timestamptz + k * interval '20 seconds', 'web-1', 'api', 'web-1:error',
       'error', 'error', 'test', 'e' || k, 'HTTP 503'
  FROM generate_series(0, 9) k;
SELECT (coherence.run_detection())->'incidents_opened' AS opened_by_0_1_0;
CREATE TEMP TABLE before AS
SELECT (SELECT md5(string_agg(to_jsonb(m)::text, ',' ORDER BY id)) FROM coherence.metrics m) AS metrics,
       (SELECT md5(string_agg(to_jsonb(e)::text, ',' ORDER BY id)) FROM coherence.signal_events e) AS events,
       (SELECT md5(string_agg(to_jsonb(a)::text, ',' ORDER BY id)) FROM coherence.anomalies a) AS anomalies,
       (SELECT md5(string_agg(to_jsonb(i)::text, ',' ORDER BY id)) FROM coherence.incidents i) AS incidents,
       (SELECT md5(string_agg(to_jsonb(r)::text, ',' ORDER BY id)) FROM coherence.detection_runs r) AS runs,
       (SELECT count(*) FROM coherence.metrics) AS metric_rows;

ALTER EXTENSION coherence UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'coherence';

-- Every row survives the update unchanged.
SELECT b.metric_rows,
       b.metrics = (SELECT md5(string_agg(to_jsonb(m)::text, ',' ORDER BY id)) FROM coherence.metrics m) AS metrics_same,
       b.events = (SELECT md5(string_agg(to_jsonb(e)::text, ',' ORDER BY id)) FROM coherence.signal_events e) AS events_same,
       b.anomalies = (SELECT md5(string_agg(to_jsonb(a)::text, ',' ORDER BY id)) FROM coherence.anomalies a) AS anomalies_same,
       b.incidents = (SELECT md5(string_agg(to_jsonb(i)::text, ',' ORDER BY id)) FROM coherence.incidents i) AS incidents_same,
       b.runs = (SELECT md5(string_agg(to_jsonb(r)::text, ',' ORDER BY id)) FROM coherence.detection_runs r) AS runs_same
  FROM before b;

-- The updated extension is the current one: same functions and members as a fresh install.
:fingerprint \gset upgraded_
SELECT :'upgraded_functions' = :'fresh_functions' AS functions_as_fresh,
       :'upgraded_members' = :'fresh_members' AS members_as_fresh;

-- New behaviour on the old data: lookback, the kinds catalogue, and the job still runs.
SELECT kind, detector FROM coherence.detect_events('2025-12-13 03:30', '2025-12-13 04:30', lookback => interval '2 days')
 WHERE host = 'web-1' ORDER BY kind;
SELECT count(*) AS kinds FROM coherence.anomaly_kinds();
SELECT (r ? 'incidents_opened') AS job_runs_after_update FROM coherence.run_detection(full_rescan => true) r;
SELECT count(*) AS incidents FROM coherence.incidents WHERE status <> 'merged';

\c coherence_regress
SET client_min_messages = warning;
DROP DATABASE coherence_upgrade_test;
