-- Upgrade: install each released version with data in every table, walk ALTER EXTENSION ...
-- UPDATE to the current version (pg_cron's update walk), and check that the data survives, the
-- new behaviour is there, and the result is the same extension as a fresh install of the
-- current version: functions (signatures, bodies, comments, volatility, privileges), members,
-- and tables (columns, defaults, constraints, triggers, comments, privileges; a NULL ACL is
-- compared as the default it stands for).
SET client_min_messages = warning;
DROP DATABASE IF EXISTS coherence_upgrade_test;
DROP DATABASE IF EXISTS coherence_upgrade_test2;
CREATE DATABASE coherence_upgrade_test;
CREATE DATABASE coherence_upgrade_test2;
\set fingerprint 'SELECT (SELECT md5(string_agg(format(''%s(%s) -> %s [%s%s%s%s] {%s} %s %s %s'', p.proname, pg_get_function_arguments(p.oid), pg_get_function_result(p.oid), p.provolatile, p.proparallel, p.proisstrict, p.prosecdef, array_to_string(p.proconfig, '',''), md5(p.prosrc), coalesce(obj_description(p.oid, ''pg_proc''), ''''), (SELECT string_agg(format(''%s>%s:%s'', x.grantor, x.grantee, x.privilege_type), '','' ORDER BY 1) FROM aclexplode(coalesce(p.proacl, acldefault(''f'', p.proowner))) x)), E''\n'' ORDER BY p.proname, pg_get_function_arguments(p.oid))) FROM pg_proc p WHERE p.pronamespace = ''coherence''::regnamespace) AS functions, (SELECT md5(string_agg(pg_describe_object(classid, objid, objsubid), E''\n'' ORDER BY pg_describe_object(classid, objid, objsubid))) FROM pg_depend WHERE refclassid = ''pg_extension''::regclass AND refobjid = (SELECT oid FROM pg_extension WHERE extname = ''coherence'') AND deptype = ''e'') AS members, (SELECT md5(string_agg(format(''%s.%s %s %s %s %s'', c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(d.adbin, d.adrelid), col_description(c.oid, a.attnum)), E''\n'' ORDER BY c.relname, a.attname)) FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum WHERE c.relnamespace = ''coherence''::regnamespace AND c.relkind IN (''r'', ''p'', ''v'') AND NOT EXISTS (SELECT 1 FROM pg_class t WHERE t.oid = coalesce((SELECT i.indrelid FROM pg_index i WHERE i.indexrelid = c.oid), c.oid) AND t.relispartition AND NOT EXISTS (SELECT 1 FROM pg_depend x WHERE x.classid = ''pg_class''::regclass AND x.objid = t.oid AND x.deptype = ''e''))) AS columns, (SELECT md5(string_agg(format(''%s %s %s %s'', c.relname, c.relkind, obj_description(c.oid, ''pg_class''), (SELECT string_agg(format(''%s>%s:%s'', x.grantor, x.grantee, x.privilege_type), '','' ORDER BY 1) FROM aclexplode(coalesce(c.relacl, acldefault(''r'', c.relowner))) x)), E''\n'' ORDER BY c.relname)) FROM pg_class c WHERE c.relnamespace = ''coherence''::regnamespace AND NOT EXISTS (SELECT 1 FROM pg_class t WHERE t.oid = coalesce((SELECT i.indrelid FROM pg_index i WHERE i.indexrelid = c.oid), c.oid) AND t.relispartition AND NOT EXISTS (SELECT 1 FROM pg_depend x WHERE x.classid = ''pg_class''::regclass AND x.objid = t.oid AND x.deptype = ''e''))) AS relations, (SELECT md5(string_agg(format(''%s %s %s'', conname, pg_get_constraintdef(oid), convalidated), E''\n'' ORDER BY conname)) FROM pg_constraint k WHERE connamespace = ''coherence''::regnamespace AND NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = k.conrelid AND c.relispartition AND NOT EXISTS (SELECT 1 FROM pg_depend x WHERE x.classid = ''pg_class''::regclass AND x.objid = c.oid AND x.deptype = ''e''))) AS constraints, (SELECT md5(string_agg(pg_get_triggerdef(t.oid), E''\n'' ORDER BY t.tgname)) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid WHERE c.relnamespace = ''coherence''::regnamespace AND NOT t.tgisinternal) AS triggers'
\set rows_md5 'SELECT (SELECT md5(string_agg(to_jsonb(m)::text, '','' ORDER BY id)) FROM coherence.metrics m) AS metrics, (SELECT md5(string_agg(to_jsonb(e)::text, '','' ORDER BY id)) FROM coherence.signal_events e) AS events, (SELECT md5(string_agg(to_jsonb(a)::text, '','' ORDER BY id)) FROM coherence.anomalies a) AS anomalies, (SELECT md5(string_agg((to_jsonb(i) - ''ranking'' - ''muted_by'')::text, '','' ORDER BY id)) FROM coherence.incidents i) AS incidents, (SELECT md5(string_agg((to_jsonb(r) - ''data_now'' - ''error'' - ''error_sqlstate'')::text, '','' ORDER BY id)) FROM coherence.detection_runs r) AS runs, (SELECT count(*) FROM coherence.metrics) AS metric_rows'

-- A fresh install of the current version is the reference.
\c coherence_upgrade_test2
CREATE EXTENSION coherence;
:fingerprint \gset fresh_
DROP EXTENSION coherence;

-- Path 1: 0.1.0 with data, updated step by step.
\c coherence_upgrade_test
SET TimeZone = 'UTC';
SET client_min_messages = warning;
CREATE EXTENSION coherence VERSION '0.1.0';
SELECT extversion FROM pg_extension WHERE extname = 'coherence';
SELECT source, target, path FROM pg_extension_update_paths('coherence')
 WHERE path IS NOT NULL ORDER BY source, target;

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
-- An ingest cursor of 0.1.0 (0.5.0 adds the feed's failure state to it).
INSERT INTO coherence.ingest_cursors (source, query, cursor_at, updated_at)
VALUES ('datadog-metrics', 'avg:system.cpu.user{*} by {host}', '2025-12-13 04:00+00', '2025-12-13 04:05+00');
CREATE TEMP TABLE before AS :rows_md5;

ALTER EXTENSION coherence UPDATE TO '0.2.0';
SELECT extversion FROM pg_extension WHERE extname = 'coherence';
SELECT (coherence.run_detection())->'anomalies_changed' IS NOT NULL AS job_runs_in_0_2_0;
CREATE TEMP TABLE before_0_3_0 AS :rows_md5;
-- 0.2.0 let a row at -infinity in; 0.3.0 refuses such rows, and so does its update (with the
-- fix in the hint), changing nothing, until the row is fixed.
INSERT INTO coherence.metrics (host, metric_name, value, "timestamp") VALUES ('web-1', 'cpu', 1, '-infinity');
\set VERBOSITY terse
ALTER EXTENSION coherence UPDATE;
\set VERBOSITY default
SELECT extversion AS still FROM pg_extension WHERE extname = 'coherence';
DELETE FROM coherence.metrics WHERE "timestamp" = '-infinity';
ALTER EXTENSION coherence UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'coherence';

-- Every row survives both updates unchanged (the new columns aside).
CREATE TEMP TABLE after AS :rows_md5;
SELECT b.metric_rows, b.metrics = a.metrics AS metrics_same, b.events = a.events AS events_same,
       b.anomalies = a.anomalies AS anomalies_same, b.incidents = a.incidents AS incidents_same,
       b.runs = a.runs AS runs_same
  FROM before_0_3_0 b, after a;
SELECT b.metrics = a.metrics AS metrics_same_as_0_1_0, b.events = a.events AS events_same_as_0_1_0
  FROM before b, after a;
SELECT count(*) FILTER (WHERE ranking = '[]') AS incidents_with_default_ranking,
       count(*) FILTER (WHERE first_error_at IS NOT NULL) AS with_first_error
  FROM coherence.incidents;
-- The cursor keeps its values and gets the new columns' defaults: a healthy feed.
SELECT source, query, cursor_at, updated_at, last_error, failing_since, failures, last_ok_at
  FROM coherence.ingest_cursors;
SELECT source, cursor_at, failures, skipped_chunks FROM coherence.ingest_status;

-- The updated extension is the current one.
:fingerprint \gset upgraded_
SELECT :'upgraded_functions' = :'fresh_functions' AS functions_as_fresh,
       :'upgraded_members' = :'fresh_members' AS members_as_fresh,
       :'upgraded_columns' = :'fresh_columns' AS columns_as_fresh,
       :'upgraded_relations' = :'fresh_relations' AS relations_as_fresh,
       :'upgraded_constraints' = :'fresh_constraints' AS constraints_as_fresh,
       :'upgraded_triggers' = :'fresh_triggers' AS triggers_as_fresh;

-- New behaviour on the old data: lookback, the kinds catalogue, and the job: the first run
-- after the update carries on from 0.2.0's last run (data time kept, rows 0.2.0 would have
-- re-read queued: here all of them, written seconds before), the next finds nothing new, new
-- rows are queued.
SELECT data_now FROM coherence.detection_runs WHERE data_now IS NOT NULL ORDER BY id DESC LIMIT 1;
SELECT kind, detector FROM coherence.detect_events('2025-12-13 03:30', '2025-12-13 04:30', lookback => interval '2 days')
 WHERE host = 'web-1' ORDER BY kind;
SELECT count(*) AS kinds FROM coherence.anomaly_kinds();
SELECT r->>'since' AS first_run_since FROM coherence.run_detection() r;
SELECT r->>'since' IS NULL AS nothing_new FROM coherence.run_detection() r;
INSERT INTO coherence.metrics (host, metric_name, value, "timestamp")
VALUES ('web-1', 'cpu', 30, '2025-12-13 08:00+00');
SELECT host, metric, min_ts, rows FROM coherence.pending_series;
SELECT r->>'since' AS queued_run_since FROM coherence.run_detection() r;
SELECT count(*) AS incidents FROM coherence.incidents WHERE status <> 'merged';

-- Path 2: 0.2.0 with data, updated directly.
\c coherence_upgrade_test2
SET TimeZone = 'UTC';
SET client_min_messages = warning;
CREATE EXTENSION coherence VERSION '0.2.0';
INSERT INTO coherence.metrics (host, metric_name, value, "timestamp")
SELECT 'db-1', 'cpu', 30.0 + ((i * 7919) % 11 - 5), '2025-12-11 08:00+00'::timestamptz + i * interval '1 minute'
  FROM generate_series(0, 1439) i;
SELECT (coherence.run_detection())->'since' AS since_0_2_0;
CREATE TEMP TABLE before AS :rows_md5;
ALTER EXTENSION coherence UPDATE;
CREATE TEMP TABLE after AS :rows_md5;
SELECT extversion, b.metric_rows, b.metrics = a.metrics AS metrics_same,
       b.anomalies IS NOT DISTINCT FROM a.anomalies AS anomalies_same, b.runs = a.runs AS runs_same
  FROM pg_extension, before b, after a WHERE extname = 'coherence';
:fingerprint \gset upgraded2_
SELECT :'upgraded2_functions' = :'fresh_functions' AS functions_as_fresh,
       :'upgraded2_columns' = :'fresh_columns' AS columns_as_fresh,
       :'upgraded2_constraints' = :'fresh_constraints' AS constraints_as_fresh,
       :'upgraded2_triggers' = :'fresh_triggers' AS triggers_as_fresh;

-- Path 3: 0.3.0 with data (incidents, an alert delivery), updated to the current version: rows
-- kept, series state filled from the data, the job and the new controls work on them.
DROP EXTENSION coherence CASCADE;
CREATE EXTENSION coherence VERSION '0.3.0';
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
SELECT (coherence.run_detection())->'incidents_opened' AS opened_by_0_3_0;
INSERT INTO coherence.alert_deliveries (incident_id, destination, action, status)
SELECT id, 'slack', 'trigger', 'delivered' FROM coherence.incidents;
CREATE TEMP TABLE before3 AS :rows_md5;
CREATE TEMP TABLE before_deliveries AS SELECT md5(string_agg(to_jsonb(d)::text, ',' ORDER BY id)) AS h FROM coherence.alert_deliveries d;
ALTER EXTENSION coherence UPDATE;
CREATE TEMP TABLE after3 AS :rows_md5;
SELECT extversion, b.metric_rows, b.metrics = a.metrics AS metrics_same, b.events = a.events AS events_same,
       b.anomalies = a.anomalies AS anomalies_same, b.incidents = a.incidents AS incidents_same,
       b.runs = a.runs AS runs_same
  FROM pg_extension, before3 b, after3 a WHERE extname = 'coherence';
SELECT (SELECT h FROM before_deliveries) =
       (SELECT md5(string_agg((to_jsonb(d) - 'watch_since' - 'detail')::text, ',' ORDER BY id)) FROM coherence.alert_deliveries d)
       AS deliveries_same;
SELECT host, metric, last_at, cadence FROM coherence.series_state ORDER BY host, metric;
:fingerprint \gset upgraded3_
SELECT :'upgraded3_functions' = :'fresh_functions' AS functions_as_fresh,
       :'upgraded3_members' = :'fresh_members' AS members_as_fresh,
       :'upgraded3_columns' = :'fresh_columns' AS columns_as_fresh,
       :'upgraded3_relations' = :'fresh_relations' AS relations_as_fresh,
       :'upgraded3_constraints' = :'fresh_constraints' AS constraints_as_fresh,
       :'upgraded3_triggers' = :'fresh_triggers' AS triggers_as_fresh;
INSERT INTO coherence.metrics (host, metric_name, value, "timestamp")
VALUES ('web-1', 'cpu', 30, '2025-12-13 08:00+00');
SELECT (coherence.run_detection()) ? 'error' AS job_failed;
SELECT status, muted_by FROM coherence.incidents ORDER BY id;
SELECT host, metric, kind FROM coherence.anomalies WHERE kind = 'no_data';
SELECT status FROM coherence.health(interval '10000 days');

-- Path 4: 0.4.0 with data (a labelled series, a cursor, a rule), updated to the current
-- version: rows kept, the cursor gets the healthy defaults, the new functions and views work.
DROP EXTENSION coherence CASCADE;
CREATE EXTENSION coherence VERSION '0.4.0';
INSERT INTO coherence.metrics (host, metric_name, value, "timestamp")
SELECT 'db-1', m, 30.0 + ((i * 7919) % 11 - 5), '2025-12-11 08:00+00'::timestamptz + i * interval '1 minute'
  FROM unnest(ARRAY['cpu', 'disk.used{device="sda"}']) m, generate_series(0, 1439) i;
INSERT INTO coherence.ingest_cursors (source, query, cursor_at, updated_at)
VALUES ('datadog-events', 'sources:nagios', '2025-12-12 08:00+00', '2025-12-12 08:01+00');
INSERT INTO coherence.series_rules (metric_pattern, threshold, note) VALUES ('disk.used%', 12, 'disks are noisy');
SELECT (coherence.run_detection())->'since' AS since_0_4_0;
CREATE TEMP TABLE before4 AS :rows_md5;
CREATE TEMP TABLE before4_other AS
SELECT (SELECT md5(string_agg(to_jsonb(r)::text, ',' ORDER BY id)) FROM coherence.series_rules r) AS rules,
       (SELECT md5(string_agg(to_jsonb(s)::text, ',' ORDER BY host, metric)) FROM coherence.series_state s) AS state;
-- A user's view over coherence.metrics: 0.6.0 replaces the table with a partitioned one, and
-- the view would go on reading the old table only, so the update refuses (changing nothing)
-- and says what to do; saved, dropped and made again, the view reads the new table.
CREATE VIEW public.user_spikes AS
SELECT host, (coherence.spikes("timestamp", value)).count AS spikes FROM coherence.metrics GROUP BY host;
\set VERBOSITY default
\set SHOW_CONTEXT never
ALTER EXTENSION coherence UPDATE;
SELECT extversion AS still FROM pg_extension WHERE extname = 'coherence';
SELECT pg_get_viewdef('public.user_spikes') AS user_view_def \gset
DROP VIEW public.user_spikes;
-- A grant of yours on the old table carries over, with a WARNING on how to make pg_dump keep it.
GRANT SELECT ON coherence.metrics TO PUBLIC;
ALTER EXTENSION coherence UPDATE;
SELECT has_table_privilege('public', 'coherence.metrics', 'SELECT') AS public_grant_kept;
REVOKE SELECT ON coherence.metrics, coherence.metrics_default FROM PUBLIC;
CREATE VIEW public.user_spikes AS :user_view_def
SELECT count(*) > 0 AS user_view_works_again FROM public.user_spikes;
-- The old table is now the partition of the time before the day after its newest row,
-- with every row; the default partition is empty; the id sequence goes on.
SELECT partition, from_at,
       until_at = ((now() AT TIME ZONE 'UTC')::date + 2)::timestamp AT TIME ZONE 'UTC' AS until_end_of_tomorrow,
       is_default
  FROM coherence.metrics_partitions ORDER BY partition;
SELECT count(*) AS rows_in_upgraded_partition FROM coherence.metrics_upgraded;
SELECT (SELECT max(id) FROM coherence.metrics) < nextval('coherence.metrics_id_seq') AS sequence_goes_on;
CREATE TEMP TABLE after4 AS :rows_md5;
SELECT extversion, b.metric_rows, b.metrics = a.metrics AS metrics_same, b.events IS NOT DISTINCT FROM a.events AS events_same,
       b.anomalies IS NOT DISTINCT FROM a.anomalies AS anomalies_same,
       b.incidents IS NOT DISTINCT FROM a.incidents AS incidents_same, b.runs = a.runs AS runs_same
  FROM pg_extension, before4 b, after4 a WHERE extname = 'coherence';
SELECT o.rules = (SELECT md5(string_agg(to_jsonb(r)::text, ',' ORDER BY id)) FROM coherence.series_rules r) AS rules_same,
       o.state = (SELECT md5(string_agg(to_jsonb(s)::text, ',' ORDER BY host, metric)) FROM coherence.series_state s) AS state_same
  FROM before4_other o;
SELECT source, query, cursor_at, updated_at, last_error, failing_since, failures, last_ok_at
  FROM coherence.ingest_cursors;
:fingerprint \gset upgraded4_
SELECT :'upgraded4_functions' = :'fresh_functions' AS functions_as_fresh,
       :'upgraded4_members' = :'fresh_members' AS members_as_fresh,
       :'upgraded4_columns' = :'fresh_columns' AS columns_as_fresh,
       :'upgraded4_relations' = :'fresh_relations' AS relations_as_fresh,
       :'upgraded4_constraints' = :'fresh_constraints' AS constraints_as_fresh,
       :'upgraded4_triggers' = :'fresh_triggers' AS triggers_as_fresh;
SELECT host, metric, name, labels FROM coherence.series ORDER BY host, metric;
SELECT source, query, failures, skipped_chunks FROM coherence.ingest_status;
-- Today and tomorrow are the upgraded table's, so the job (which makes partitions when
-- tomorrow has none) makes none yet; by hand, the next two days get theirs. A row of today
-- lands in the upgraded table, one of the day after tomorrow in its day's partition.
INSERT INTO coherence.metrics (host, metric_name, value, "timestamp") VALUES ('db-1', 'cpu', 31, now());
SELECT (coherence.run_detection()) ? 'error' AS job_failed;
SELECT count(*) AS day_partitions FROM coherence.metrics_partitions WHERE partition LIKE 'metrics\_p%';
SELECT count(*) AS made_by_hand FROM coherence.create_partitions();
INSERT INTO coherence.metrics (host, metric_name, value, "timestamp") VALUES ('db-1', 'cpu', 32, now() + interval '2 days');
SELECT value, tableoid::regclass::text IN ('coherence.metrics_upgraded',
                                           'coherence.metrics_p' || to_char((now() + interval '2 days') AT TIME ZONE 'UTC', 'YYYYMMDD'))
       AS in_expected_partition, tableoid::regclass::text LIKE '%upgraded' AS in_upgraded
  FROM coherence.metrics WHERE "timestamp" > '2026-01-01' ORDER BY value;
-- The aggregates were dropped and created again with their state sizes (SSPACE), as fresh.
SELECT aggfnoid::regprocedure AS aggregate, aggtransspace, aggcombinefn <> 0 AS parallel
  FROM pg_aggregate WHERE aggfnoid::regproc::text LIKE 'coherence.%' ORDER BY aggfnoid::regprocedure::text;

-- Path 5: 0.6.0 with data (two hosts, a spike on both metrics of one, the job's incident),
-- updated to the current version: every row kept, the same extension as a fresh install, the
-- job goes on, and the columns say what lead evidence is.
DROP VIEW public.user_spikes;
DROP EXTENSION coherence CASCADE;
CREATE EXTENSION coherence VERSION '0.6.0';
SELECT count(*) > 0 AS partitions_made FROM coherence.create_partitions(since => '2025-12-11');
INSERT INTO coherence.metrics (host, metric_name, value, "timestamp")
SELECT h, m, CASE WHEN h = 'api-1' AND i BETWEEN 1300 AND 1302 THEN 95.0 ELSE 30.0 + ((i * 7919) % 11 - 5) END,
       '2025-12-11 08:00+00'::timestamptz + i * interval '1 minute'
  FROM unnest(ARRAY['api-1', 'api-2']) h, unnest(ARRAY['cpu', 'memory']) m, generate_series(0, 1439) i;
SELECT (coherence.run_detection())->'incidents_opened' AS opened_by_0_6_0;
CREATE TEMP TABLE before5 AS :rows_md5;
CREATE TEMP TABLE before5_ranking AS SELECT id, ranking, graph FROM coherence.incidents;
ALTER EXTENSION coherence UPDATE;
CREATE TEMP TABLE after5 AS :rows_md5;
SELECT extversion, b.metric_rows, b.metrics = a.metrics AS metrics_same, b.events IS NOT DISTINCT FROM a.events AS events_same,
       b.anomalies = a.anomalies AS anomalies_same, b.incidents = a.incidents AS incidents_same, b.runs = a.runs AS runs_same
  FROM pg_extension, before5 b, after5 a WHERE extname = 'coherence';
SELECT count(*) AS incidents, bool_and(b.ranking = i.ranking AND b.graph = i.graph) AS rankings_kept
  FROM before5_ranking b JOIN coherence.incidents i USING (id);
:fingerprint \gset upgraded5_
SELECT :'upgraded5_functions' = :'fresh_functions' AS functions_as_fresh,
       :'upgraded5_members' = :'fresh_members' AS members_as_fresh,
       :'upgraded5_columns' = :'fresh_columns' AS columns_as_fresh,
       :'upgraded5_relations' = :'fresh_relations' AS relations_as_fresh,
       :'upgraded5_constraints' = :'fresh_constraints' AS constraints_as_fresh,
       :'upgraded5_triggers' = :'fresh_triggers' AS triggers_as_fresh;
SELECT a.attrelid::regclass AS "table", a.attname AS "column", col_description(a.attrelid, a.attnum) LIKE '%lead%' AS says_lead
  FROM pg_attribute a
 WHERE (a.attrelid, a.attname) IN (('coherence.incidents'::regclass, 'ranking'), ('coherence.incident_edges'::regclass, 'strength'))
 ORDER BY 1, 2;
SELECT (coherence.run_detection()) ? 'error' AS job_failed;

-- Path 6: 0.7.0 with data (path 5's series, run by 0.7.0's job), updated to the current
-- version: every row kept, the same extension as a fresh install, and a full rescan (whose
-- first pass now finds the series and their time range at once) analyses the same range and
-- finds the same incident.
DROP EXTENSION coherence CASCADE;
CREATE EXTENSION coherence VERSION '0.7.0';
SELECT count(*) > 0 AS partitions_made FROM coherence.create_partitions(since => '2025-12-11');
INSERT INTO coherence.metrics (host, metric_name, value, "timestamp")
SELECT h, m, CASE WHEN h = 'api-1' AND i BETWEEN 1300 AND 1302 THEN 95.0 ELSE 30.0 + ((i * 7919) % 11 - 5) END,
       '2025-12-11 08:00+00'::timestamptz + i * interval '1 minute'
  FROM unnest(ARRAY['api-1', 'api-2']) h, unnest(ARRAY['cpu', 'memory']) m, generate_series(0, 1439) i;
INSERT INTO coherence.signal_events (ts, host, service, fingerprint, severity, metric, source, source_id, message, value)
VALUES ('2025-12-11 07:59+00', 'api-2', 'api', 'gc', 'info', 'gc_pause_ms', 'test', 'p6-1', 'gc pause', 12);
SELECT coherence.run_detection() - 'run' AS run_by_0_7_0 \gset
SELECT :'run_by_0_7_0'::jsonb - 'run' AS first_run_by_0_7_0;
CREATE TEMP TABLE before6 AS :rows_md5;
ALTER EXTENSION coherence UPDATE;
CREATE TEMP TABLE after6 AS :rows_md5;
SELECT extversion, b.metric_rows, b.metrics = a.metrics AS metrics_same, b.events IS NOT DISTINCT FROM a.events AS events_same,
       b.anomalies = a.anomalies AS anomalies_same, b.incidents = a.incidents AS incidents_same, b.runs = a.runs AS runs_same
  FROM pg_extension, before6 b, after6 a WHERE extname = 'coherence';
:fingerprint \gset upgraded6_
SELECT :'upgraded6_functions' = :'fresh_functions' AS functions_as_fresh,
       :'upgraded6_members' = :'fresh_members' AS members_as_fresh,
       :'upgraded6_columns' = :'fresh_columns' AS columns_as_fresh,
       :'upgraded6_relations' = :'fresh_relations' AS relations_as_fresh,
       :'upgraded6_constraints' = :'fresh_constraints' AS constraints_as_fresh,
       :'upgraded6_triggers' = :'fresh_triggers' AS triggers_as_fresh;
SELECT r->'since' = (:'run_by_0_7_0'::jsonb)->'since' AS same_since,
       r->'until' = (:'run_by_0_7_0'::jsonb)->'until' AS same_until,
       r->'since' AS since, r->'until' AS until, r->'incidents_opened' AS opened, r ? 'error' AS job_failed
  FROM coherence.run_detection(full_rescan => true) r;
SELECT count(*) AS incidents, count(DISTINCT host) AS hosts FROM coherence.incidents WHERE status <> 'merged';

-- Path 7: 0.8.0 with data (two hosts of six metrics with N(0, 1) noise; on api-1 a spike on
-- cpu and the six metrics dipping 1.5σ together for ten minutes), run by 0.8.0's job, updated
-- to the current version: every row kept, the same extension as a fresh install, and a full
-- rescan by the new job (one detect_all pass instead of detect_collective and detect_events)
-- finds every anomaly 0.8.0's job wrote, the collective ones too, and changes none.
DROP EXTENSION coherence CASCADE;
CREATE EXTENSION coherence VERSION '0.8.0';
SELECT count(*) > 0 AS partitions_made FROM coherence.create_partitions(since => '2025-12-11');
CREATE FUNCTION pg_temp.noise(k int, i int) RETURNS float8 LANGUAGE sql IMMUTABLE AS $$
    SELECT sqrt(-2 * ln(greatest(u1, 1e-12))) * cos(2 * pi() * u2)
      FROM (SELECT ((abs(hashint4(k * 100003 + i)) % 1000000) + 0.5) / 1000000.0 AS u1,
                   ((abs(hashint4(k * 7919 + i * 31 + 17)) % 1000000) + 0.5) / 1000000.0 AS u2) s
$$;
INSERT INTO coherence.metrics (host, metric_name, value, "timestamp")
SELECT h.name, m.name, 50 + pg_temp.noise(h.k * 10 + m.k, i)
             + CASE WHEN h.k = 1 AND m.k = 1 AND i BETWEEN 3000 AND 3002 THEN 12.0
                    WHEN h.k = 1 AND i >= 3480 AND i < 3490 THEN -1.5 ELSE 0 END,
       '2025-12-11 00:00+00'::timestamptz + i * interval '1 minute'
  FROM (VALUES (1, 'api-1'), (2, 'api-2')) h(k, name),
       (VALUES (1, 'cpu'), (2, 'memory'), (3, 'disk_io'), (4, 'net_rx'), (5, 'net_tx'), (6, 'qps')) m(k, name),
       generate_series(0, 3 * 1440 - 1) i;
SELECT coherence.run_detection() - 'run' AS run_by_0_8_0 \gset
SELECT :'run_by_0_8_0'::jsonb - 'run' AS first_run_by_0_8_0;
SELECT detector, count(*) AS anomalies FROM coherence.anomalies GROUP BY 1 ORDER BY 1;
CREATE TEMP TABLE before7 AS :rows_md5;
ALTER EXTENSION coherence UPDATE;
CREATE TEMP TABLE after7 AS :rows_md5;
SELECT extversion, b.metric_rows, b.metrics = a.metrics AS metrics_same, b.events IS NOT DISTINCT FROM a.events AS events_same,
       b.anomalies = a.anomalies AS anomalies_same, b.incidents = a.incidents AS incidents_same, b.runs = a.runs AS runs_same
  FROM pg_extension, before7 b, after7 a WHERE extname = 'coherence';
:fingerprint \gset upgraded7_
SELECT :'upgraded7_functions' = :'fresh_functions' AS functions_as_fresh,
       :'upgraded7_members' = :'fresh_members' AS members_as_fresh,
       :'upgraded7_columns' = :'fresh_columns' AS columns_as_fresh,
       :'upgraded7_relations' = :'fresh_relations' AS relations_as_fresh,
       :'upgraded7_constraints' = :'fresh_constraints' AS constraints_as_fresh,
       :'upgraded7_triggers' = :'fresh_triggers' AS triggers_as_fresh;
SELECT r->'since' = (:'run_by_0_8_0'::jsonb)->'since' AS same_since,
       r->'until' = (:'run_by_0_8_0'::jsonb)->'until' AS same_until,
       r->'anomalies_changed' AS anomalies_changed, r ? 'error' AS job_failed
  FROM coherence.run_detection(full_rescan => true) r;
CREATE TEMP TABLE rescanned7 AS :rows_md5;
SELECT b.anomalies = a.anomalies AS anomalies_same FROM before7 b, rescanned7 a;

\c coherence_regress
SET client_min_messages = warning;
DROP DATABASE coherence_upgrade_test;
DROP DATABASE coherence_upgrade_test2;
