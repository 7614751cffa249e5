-- make eval: every labelled series through coherence.find_events with its defaults, using the
-- any-table pattern (arrays per series, one LATERAL call each). Prints the events as CSV for
-- eval/score.py: folder, file, start and end (Unix seconds), risk, kind.
\pset footer off
SET client_min_messages = warning;
COPY (
    SELECT s.folder, s.file,
           extract(epoch FROM e.started_at)::bigint AS start,
           extract(epoch FROM e.ended_at)::bigint AS "end",
           round(e.risk::numeric, 4) AS risk, e.kind
      FROM (SELECT folder, file, array_agg(ts ORDER BY ts) AS ts, array_agg(value ORDER BY ts) AS v
              FROM coherence_eval.points
             GROUP BY folder, file) s
     CROSS JOIN LATERAL coherence.find_events(s.ts, s.v, host => s.file, metric => s.folder) e
     ORDER BY s.folder, s.file, e.started_at
) TO STDOUT WITH (FORMAT csv, HEADER true);
