-- Scores coherence.detect_events against labelled points, next to the seed's rules localized.
-- Input: coherence_eval.points(folder, file, ts, value, label), loaded by scripts/eval.sh.
--
-- Definitions (the same for every method):
--  * a labelled segment is a maximal run of consecutive label-1 points of one series;
--  * an event [started_at, ended_at] matches a segment when the two time ranges overlap;
--  * precision = matched events / events; recall = segments matched by any event / segments;
--  * FA/1k = unmatched events per 1,000 samples; "unlabelled" = events on series without labels.
-- Seed rules, localized: every point above mean + 2.5σ of its series is an event, and every
-- 4-hour window (date_bin from 2000-01-01) whose variance is > 1.5× the previous window's is an
-- event spanning that window.
\pset footer off
SET client_min_messages = warning;

-- The series go into coherence.metrics: host = file, metric_name = folder.
TRUNCATE coherence.metrics;
INSERT INTO coherence.metrics (host, metric_name, value, "timestamp")
SELECT file, folder, value, ts FROM coherence_eval.points WHERE value IS NOT NULL
ON CONFLICT DO NOTHING;

CREATE TEMP TABLE segments AS
WITH l AS (
    SELECT folder, file, ts, label,
           row_number() OVER (PARTITION BY folder, file ORDER BY ts)
         - row_number() OVER (PARTITION BY folder, file, label ORDER BY ts) AS grp
      FROM coherence_eval.points)
SELECT folder, file, min(ts) AS s, max(ts) AS e FROM l WHERE label = 1 GROUP BY folder, file, grp;

CREATE TEMP TABLE events_coherence AS
SELECT metric AS folder, host AS file, started_at AS s, ended_at AS e
  FROM coherence.detect_events('-infinity', 'infinity');

CREATE TEMP TABLE events_seed AS
WITH st AS (
    SELECT folder, file, avg(value) AS m, stddev_samp(value) AS sd
      FROM coherence_eval.points GROUP BY folder, file),
w AS (
    SELECT folder, file, date_bin('4 hours', ts, '2000-01-01') AS b, var_samp(value) AS v
      FROM coherence_eval.points GROUP BY 1, 2, 3),
wl AS (
    SELECT folder, file, b, v, lag(v) OVER (PARTITION BY folder, file ORDER BY b) AS pv FROM w)
SELECT p.folder, p.file, p.ts AS s, p.ts AS e
  FROM coherence_eval.points p JOIN st USING (folder, file)
 WHERE p.value > st.m + 2.5 * st.sd
UNION ALL
SELECT folder, file, b, b + interval '4 hours' - interval '1 microsecond'
  FROM wl WHERE v > 1.5 * pv;

CREATE TEMP TABLE series AS
SELECT folder, file, count(*) AS points, bool_or(label = 1) AS labelled
  FROM coherence_eval.points GROUP BY folder, file;

CREATE TEMP TABLE scored AS
SELECT method, ev.folder, ev.file,
       EXISTS (SELECT 1 FROM segments g WHERE g.folder = ev.folder AND g.file = ev.file
                  AND ev.s <= g.e AND ev.e >= g.s) AS matched
  FROM (SELECT 'seed' AS method, * FROM events_seed
        UNION ALL SELECT 'coherence', * FROM events_coherence) ev;

CREATE TEMP TABLE found AS
SELECT m.method, g.folder,
       count(*) AS segments,
       count(*) FILTER (WHERE EXISTS (
           SELECT 1 FROM (SELECT * FROM events_seed WHERE m.method = 'seed'
                          UNION ALL SELECT * FROM events_coherence WHERE m.method = 'coherence') ev
            WHERE ev.folder = g.folder AND ev.file = g.file AND ev.s <= g.e AND ev.e >= g.s)) AS found
  FROM segments g CROSS JOIN (VALUES ('seed'), ('coherence')) m(method)
 GROUP BY m.method, g.folder;

CREATE TEMP TABLE per_folder AS
SELECT m.method, s.folder,
       sum(s.points)::bigint AS points,
       (SELECT count(*) FROM scored x WHERE x.method = m.method AND x.folder = s.folder) AS events,
       (SELECT count(*) FROM scored x WHERE x.method = m.method AND x.folder = s.folder AND x.matched) AS matched,
       (SELECT count(*) FROM scored x JOIN series y USING (folder, file)
         WHERE x.method = m.method AND x.folder = s.folder AND NOT y.labelled) AS unlabelled_events,
       coalesce((SELECT f.segments FROM found f WHERE f.method = m.method AND f.folder = s.folder), 0) AS segments,
       coalesce((SELECT f.found FROM found f WHERE f.method = m.method AND f.folder = s.folder), 0) AS found
  FROM series s CROSS JOIN (VALUES ('seed'), ('coherence')) m(method)
 GROUP BY m.method, s.folder;

CREATE TEMP VIEW metrics_v AS
SELECT method, folder, points, events, segments,
       round(matched::numeric / nullif(events, 0), 2) AS p,
       round(found::numeric / nullif(segments, 0), 2) AS r,
       round(2.0 * matched * found / nullif(matched::numeric * segments + found::numeric * events, 0), 2) AS f1,
       round(1000.0 * (events - matched) / points, 2) AS fa_per_1k,
       unlabelled_events
  FROM (SELECT * FROM per_folder
        UNION ALL
        SELECT method, 'ALL', sum(points), sum(events), sum(matched), sum(unlabelled_events),
               sum(segments), sum(found)
          FROM per_folder GROUP BY method) t;

\echo
\echo '== make eval: coherence.detect_events vs the seed''s rules localized (cloud-monitoring, 60 series)'
\echo
SELECT s.folder, s.segments AS segs,
       s.p AS seed_p, s.r AS seed_r, s.f1 AS seed_f1, s.fa_per_1k AS seed_fa1k, s.unlabelled_events AS seed_unl,
       c.p AS coh_p, c.r AS coh_r, c.f1 AS coh_f1, c.fa_per_1k AS coh_fa1k, c.unlabelled_events AS coh_unl
  FROM metrics_v s JOIN metrics_v c USING (folder)
 WHERE s.method = 'seed' AND c.method = 'coherence'
 ORDER BY s.folder = 'ALL', s.folder;
