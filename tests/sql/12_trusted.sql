-- Trusted extension (the packaging issue): a database owner without superuser installs the
-- extension, feeds it, runs the job, updates it from 0.3.0 and drops it. The objects belong to
-- the bootstrap superuser; the installing role gets the rights it needs, nothing more.
SET client_min_messages = warning;
DROP DATABASE IF EXISTS coherence_trusted_test;
DROP ROLE IF EXISTS regress_coh_owner;
CREATE ROLE regress_coh_owner LOGIN;
CREATE DATABASE coherence_trusted_test OWNER regress_coh_owner;
\c coherence_trusted_test regress_coh_owner
SET client_min_messages = warning;
SET TimeZone = 'UTC';
SELECT current_user, rolsuper, rolcreaterole FROM pg_roles WHERE rolname = current_user;
CREATE EXTENSION coherence;
SELECT extname, extversion, extowner::regrole FROM pg_extension WHERE extname = 'coherence';
SELECT tableowner <> current_user AS tables_owned_by_the_superuser
  FROM pg_tables WHERE schemaname = 'coherence' AND tablename = 'metrics';

-- A host with a spike and an error burst: the job opens an incident, as the owner.
INSERT INTO coherence.metrics (host, metric_name, value, "timestamp")
SELECT 'web-1', 'cpu', CASE WHEN g = 2600 THEN 99 ELSE 30 + (g * 7919) % 11 - 5 END,
       '2025-12-11 00:00+00'::timestamptz + g * interval '1 minute'
  FROM generate_series(0, 2879) g;
INSERT INTO coherence.signal_events (ts, host, fingerprint, severity, source, source_id)
SELECT '2025-12-12 19:21+00'::timestamptz + k * interval '20 seconds', 'web-1', 'web-1:error', 'error', 'test', 'e' || k
  FROM generate_series(0, 9) k;
SELECT (coherence.run_detection()) ? 'error' AS job_failed;
SELECT host, status, error_count FROM coherence.incidents;
SELECT status FROM coherence.health(interval '10000 days');
INSERT INTO coherence.series_rules (metric_pattern, threshold, note) VALUES ('cpu', 12, 'owner can tune');
INSERT INTO coherence.maintenance_windows (starts_at, ends_at, reason) VALUES (now(), now() + interval '1 hour', 'owner can mute');
-- The ingestor's feed state, as the owner: a cursor, a skipped chunk, the status view.
INSERT INTO coherence.ingest_cursors (source, query, cursor_at) VALUES ('prometheus', 'up', '2025-12-12 00:00+00');
INSERT INTO coherence.ingest_skipped (source, query, from_at, until_at, tries, error)
VALUES ('prometheus', 'up', '2025-12-11 23:00+00', '2025-12-12 00:00+00', 5, 'HTTP 500');
SELECT source, query, failures, skipped_chunks FROM coherence.ingest_status;

-- What it may not do: run the trigger functions that run as the superuser, or become one.
SELECT has_function_privilege('coherence.queue_new_metrics()', 'EXECUTE') AS may_run_queue_trigger,
       has_function_privilege('coherence.queue_new_signal_events()', 'EXECUTE') AS may_run_event_trigger;
SELECT rolsuper FROM pg_roles WHERE rolname = current_user;

-- The update path, by the owner: 0.3.0, then ALTER EXTENSION UPDATE (the rights come with it).
DROP EXTENSION coherence;
CREATE EXTENSION coherence VERSION '0.3.0';
ALTER EXTENSION coherence UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'coherence';
INSERT INTO coherence.metrics (host, metric_name, value, "timestamp") VALUES ('web-1', 'cpu', 1, '2025-12-11 00:00+00');
SELECT (coherence.run_detection()) ? 'error' AS job_failed_after_update;
INSERT INTO coherence.ingest_cursors (source, query, cursor_at) VALUES ('prometheus', 'up', '2025-12-12 00:00+00');
INSERT INTO coherence.ingest_skipped (source, query, from_at, until_at, tries, error)
VALUES ('prometheus', 'up', '2025-12-11 23:00+00', '2025-12-12 00:00+00', 5, 'HTTP 500');
SELECT source, query, failures, skipped_chunks AS skipped_after_update FROM coherence.ingest_status;
DROP EXTENSION coherence;

\c coherence_regress postgres
SET client_min_messages = warning;
DROP DATABASE coherence_trusted_test;
DROP ROLE regress_coh_owner;
