-- The demo's report: the seed's verdict lines for every series in the database.
\pset footer off
\echo
\echo '== Coherence detection report (coherence.detect over all data)'
\echo
SELECT CASE WHEN flagged THEN '!!' ELSE '  ' END AS " ",
       summary AS verdict
  FROM coherence.detect('-infinity', 'infinity')
 WHERE flagged OR risk >= 0.3
 ORDER BY risk DESC, host, metric, detector;
SELECT host, count(*) FILTER (WHERE flagged) AS flagged,
       round(max(risk)::numeric, 2) AS max_risk,
       count(*) AS checks
  FROM coherence.detect('-infinity', 'infinity')
 GROUP BY host
 ORDER BY host;
