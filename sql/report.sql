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
\echo
\echo '== Incidents (coherence.incidents, from coherence.run_detection())'
\echo
\pset tuples_only on
\pset format unaligned
SELECT format(E'#%s [%s] risk %s, hypothesis: %s (confidence %s)\n%s\n',
              id, status, round(risk::numeric, 2), hypothesis, round(confidence::numeric, 2), narrative)
  FROM coherence.incidents
 WHERE status <> 'merged'
 ORDER BY opened_at, id;
SELECT '(no incidents: run SELECT coherence.run_detection(); first)'
 WHERE NOT EXISTS (SELECT 1 FROM coherence.incidents);
SELECT 'Hosts without incidents: ' || string_agg(DISTINCT m.host, ', ')
  FROM coherence.metrics m
 WHERE NOT EXISTS (SELECT 1 FROM coherence.incidents i WHERE i.host = m.host)
HAVING count(*) > 0;
