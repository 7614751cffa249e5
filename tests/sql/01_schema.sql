-- Schema: tables, idempotent ingest keys, constraints, pg_dump registration.
SELECT coherence.version() ~ '^\d+\.\d+\.\d+$' AS version_ok;

SELECT extrelocatable, n.nspname AS schema
  FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
 WHERE extname = 'coherence';

-- Data tables and the sequence are registered with pg_extension_config_dump.
SELECT c.relname
  FROM pg_extension e, unnest(e.extconfig) AS cfg(oid)
  JOIN pg_class c ON c.oid = cfg.oid
 WHERE e.extname = 'coherence'
 ORDER BY 1;

-- Re-inserting the same sample is a no-op under the ingest key (ON CONFLICT DO NOTHING: each
-- partition's key is the arbiter; the partitioned parent has no index to name as a target).
INSERT INTO coherence.metrics (host, metric_name, value, "timestamp")
VALUES ('h1', 'cpu', 1.5, '2025-12-13 04:10:00+00'),
       ('h1', 'cpu', 2.5, '2025-12-13 04:11:00+00');
INSERT INTO coherence.metrics (host, metric_name, value, "timestamp")
VALUES ('h1', 'cpu', 9.9, '2025-12-13 04:10:00+00')
ON CONFLICT DO NOTHING;
SELECT host, metric_name, value FROM coherence.metrics ORDER BY "timestamp";

-- Without ON CONFLICT a duplicate is a unique violation, not a silent second row.
INSERT INTO coherence.metrics (host, metric_name, value, "timestamp")
VALUES ('h1', 'cpu', 9.9, '2025-12-13 04:10:00+00');

-- Constraints give clear errors.
\set VERBOSITY terse
INSERT INTO coherence.metrics (host, metric_name, value, "timestamp") VALUES ('', 'cpu', 1, now());
INSERT INTO coherence.metrics (host, metric_name, value, "timestamp") VALUES ('h1', 'cpu', NULL, now());
INSERT INTO coherence.signal_events (ts, host, fingerprint, severity) VALUES (now(), 'h1', 'h1:x', 'fatal');
\set VERBOSITY default

-- Events are unique on (source, source_id).
INSERT INTO coherence.signal_events (ts, host, fingerprint, severity, metric, source, source_id)
VALUES ('2025-12-13 04:10:00+00', 'h1', 'h1:error', 'error', 'error', 'datadog', '6618108885455469409');
INSERT INTO coherence.signal_events (ts, host, fingerprint, severity, metric, source, source_id)
VALUES ('2025-12-13 04:10:00+00', 'h1', 'h1:error', 'error', 'error', 'datadog', '6618108885455469409')
ON CONFLICT (source, source_id) DO NOTHING;
SELECT source, source_id, severity, synthetic FROM coherence.signal_events;

-- Every function, aggregate and table in the schema has a comment.
SELECT p.oid::regprocedure AS undocumented
  FROM pg_proc p
 WHERE p.pronamespace = 'coherence'::regnamespace
   AND obj_description(p.oid, 'pg_proc') IS NULL;
SELECT c.relname AS undocumented
  FROM pg_class c
 WHERE c.relnamespace = 'coherence'::regnamespace AND c.relkind IN ('r', 'v')
   AND obj_description(c.oid, 'pg_class') IS NULL;

-- Every function declares its volatility and parallel safety deliberately.
SELECT p.proname, p.provolatile, p.proparallel, p.proisstrict, p.prokind
  FROM pg_proc p
 WHERE p.pronamespace = 'coherence'::regnamespace
 ORDER BY p.proname, pg_get_function_identity_arguments(p.oid);
