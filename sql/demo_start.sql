-- The --start of the demo's `coherence-ingest simulate` run (make demo, scripts/doctest.py).
--
-- The scenario is 48 hours long and should end when it is loaded, so that "the last 48 hours"
-- examples find it. It starts on a 4-hour boundary (UTC), 48 hours before the last boundary:
-- the data ends at most 4 hours before now. The alignment keeps the scenario's place in the
-- 4-hour windows of coherence.variance_escalation and the volatility detector (date_bin on
-- 2000-01-01), so every day's demo gives the same verdicts and incident as the simulator's
-- fixed default dates (2025-12-11 08:00 .. 2025-12-13 08:00 UTC); only the dates differ.
--
-- When the database already holds the scenario (a re-run with DATABASE_URL, which never drops
-- anything), its own start is reused, so the re-run inserts nothing: the error burst is at
-- start + 44 h 10 min.
SELECT to_char(coalesce(
         (SELECT min(ts) - interval '44 hours 10 minutes'
            FROM coherence.signal_events
           WHERE source = 'simulator' AND source_id LIKE 'sim:42:host-stressed:error:%'),
         date_bin('4 hours', now(), '2000-01-01 00:00:00+00') - interval '48 hours')
       AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"');
