-- The daily views read the rollups (docs/read-model.md) wherever those give exactly
-- the numbers of the raw definition, so their cost follows days and distinct values,
-- not raw rows.
--
-- A daily view is grouped by site and UTC day. For each site and UTC day its rows come
--   * from the rollups when the day is in rollup_days rolled in 'UTC' (then its local
--     day is the UTC day), the site is in UTC still (late writes mark the days of the
--     site's zone) and the day is not in rollup_stale: every column is a sum the rollup
--     holds for that day (visits, bounces, duration_s, pageviews, events, and the
--     day's distinct visitors and visits), or a ratio of such sums computed with the
--     same operations as the raw definition (same numeric division, same rounding);
--   * from raw rows otherwise, with the aggregates of 0002/0004 over the same row views
--     (visits, pageviews, custom_events), one day at a time: the open day, stale days,
--     days never rolled, and days rolled in another zone (a site whose zone is not UTC
--     has local-day rollups, which cannot give UTC days).
-- The two branches of each view are joined by UNION ALL and are disjoint by day.
--
-- Redefined here, each from one dimension of one rollup:
--   daily_visitors      rollup_visits, the day's total (dimension '')
--   sources             rollup_visits 'source'
--   entry_pages         rollup_visits 'entry_page'
--   exit_pages          rollup_visits 'exit_page'
--   countries           rollup_visits 'country'
--   browsers            rollup_visits 'browser'
--   operating_systems   rollup_visits 'os'
--   devices             rollup_visits 'device'
--   top_pages           rollup_events 'page'  (pageviews by path)
--   daily_custom_events rollup_events 'event' (custom events by name)
-- Left as they are, because the rollups cannot answer them exactly:
--   campaigns           groups by utm_source, utm_medium and utm_campaign at once; the
--                       rollups hold one dimension at a time (distinct visitors of a
--                       combination are not a sum of per-field rows)
--   custom_event_props  groups by event name and property together; rollup 'prop' is
--                       per key and value over all event names
--   conversion_pages    visits per event name and page at once, out of a page's visits
--   page_engagement     engagement events (time on page, scroll depth) are not rolled up
--   bot_traffic         reads bot_counts, a daily table already
--   pageviews, visits, custom_events: row views, filtered by any time range.
--
-- How each view reads, and why it stays fast for a query on a site and a day range
-- (Grafana's, or `WHERE site = ... AND day BETWEEN ...`): PostgreSQL pushes those
-- conditions into both branches of the UNION ALL.
--   * The rollup branch reads the rollup by its primary key (site_id, day, ...), with
--     rollup_days and rollup_stale by theirs.
--   * The raw branch must not read the raw rows of rolled days. It therefore lists the
--     site's candidate UTC days (from its first to its last raw row, found by index),
--     keeps those in the query's range that are not rolled in UTC or are stale, and
--     aggregates each remaining day in a LATERAL subquery whose time range is a
--     parameter: an index range scan of sessions (site_id, started_at), or of the one
--     events partition of that day (pruned at run time). The 0002/0004 definitions
--     could test `day` only on each row read (no index holds the UTC date of `time`),
--     so they read every day of every site; these read only the days needed.
-- The candidate days are a timestamp series, so no session TimeZone setting can shift
-- them; `time` >= day and < day + 1 in UTC is the raw views' `(time AT TIME ZONE
-- 'UTC')::date = day`.
--
-- Columns keep their names, order and types (CREATE OR REPLACE VIEW requires it), and
-- the views their comments and grants. The rollup tables are read with the views'
-- owner's privileges; readers need nothing new.

CREATE OR REPLACE VIEW daily_visitors AS
-- Rolled days. avg(duration_s) over integers is sum / count in numeric, as here. A
-- total row always has visits (roll_day writes none for a day without); `visits > 0`
-- only guards the divisions.
SELECT s.domain AS site,
       r.day,
       r.visitors,
       r.visits,
       r.pageviews,
       r.bounces,
       round(100.0 * r.bounces / r.visits, 1) AS bounce_rate,
       round(r.duration_s::numeric / r.visits, 1) AS avg_duration_s,
       round(r.pageviews::numeric / r.visits, 2) AS pages_per_visit
FROM rollup_visits r
JOIN rollup_days d USING (site_id, day)
JOIN sites s USING (site_id)
WHERE r.dimension = '' AND r.visits > 0
  AND d.timezone = 'UTC' AND s.timezone = 'UTC'
  AND NOT EXISTS (SELECT FROM rollup_stale x WHERE x.site_id = r.site_id AND x.day = r.day)
UNION ALL
-- The other days, from the visits view as in 0002.
SELECT s.domain,
       g.day::date,
       t.visitors,
       t.visits,
       t.pageviews,
       t.bounces,
       t.bounce_rate,
       t.avg_duration_s,
       t.pages_per_visit
FROM sites s
CROSS JOIN LATERAL (SELECT min(started_at) AT TIME ZONE 'UTC', max(started_at) AT TIME ZONE 'UTC'
                    FROM sessions WHERE site_id = s.site_id) AS b (first, last)
CROSS JOIN LATERAL generate_series(date_trunc('day', b.first), b.last, interval '1 day') AS g (day)
CROSS JOIN LATERAL (
    SELECT count(DISTINCT visitor_id) AS visitors,
           count(*) AS visits,
           sum(pageviews) AS pageviews,
           count(*) FILTER (WHERE bounce) AS bounces,
           round(100.0 * count(*) FILTER (WHERE bounce) / count(*), 1) AS bounce_rate,
           round(avg(duration_s), 1) AS avg_duration_s,
           round(sum(pageviews)::numeric / count(*), 2) AS pages_per_visit
    FROM visits v
    WHERE v.site_id = s.site_id
      AND v.time >= g.day AT TIME ZONE 'UTC'
      AND v.time < (g.day + interval '1 day') AT TIME ZONE 'UTC'
    HAVING count(*) > 0  -- without GROUP BY, a day without visits would give a row
) AS t
WHERE NOT EXISTS (SELECT FROM rollup_days d
                  WHERE d.site_id = s.site_id AND d.day = g.day::date AND d.timezone = 'UTC'
                    AND s.timezone = 'UTC'
                    AND NOT EXISTS (SELECT FROM rollup_stale x
                                    WHERE x.site_id = d.site_id AND x.day = d.day));

-- The visit views by one value follow the same pattern: the value is rollup_visits'
-- `value` for one dimension (its parent is '' for these), or the visits view's column.

CREATE OR REPLACE VIEW sources AS
SELECT s.domain AS site,
       r.day,
       r.value AS source,
       r.visits,
       r.visitors,
       r.bounces
FROM rollup_visits r
JOIN rollup_days d USING (site_id, day)
JOIN sites s USING (site_id)
WHERE r.dimension = 'source'
  AND d.timezone = 'UTC' AND s.timezone = 'UTC'
  AND NOT EXISTS (SELECT FROM rollup_stale x WHERE x.site_id = r.site_id AND x.day = r.day)
UNION ALL
SELECT s.domain, g.day::date, t.source, t.visits, t.visitors, t.bounces
FROM sites s
CROSS JOIN LATERAL (SELECT min(started_at) AT TIME ZONE 'UTC', max(started_at) AT TIME ZONE 'UTC'
                    FROM sessions WHERE site_id = s.site_id) AS b (first, last)
CROSS JOIN LATERAL generate_series(date_trunc('day', b.first), b.last, interval '1 day') AS g (day)
CROSS JOIN LATERAL (
    SELECT source,
           count(*) AS visits,
           count(DISTINCT visitor_id) AS visitors,
           count(*) FILTER (WHERE bounce) AS bounces
    FROM visits v
    WHERE v.site_id = s.site_id
      AND v.time >= g.day AT TIME ZONE 'UTC'
      AND v.time < (g.day + interval '1 day') AT TIME ZONE 'UTC'
    GROUP BY source
) AS t
WHERE NOT EXISTS (SELECT FROM rollup_days d
                  WHERE d.site_id = s.site_id AND d.day = g.day::date AND d.timezone = 'UTC'
                    AND s.timezone = 'UTC'
                    AND NOT EXISTS (SELECT FROM rollup_stale x
                                    WHERE x.site_id = d.site_id AND x.day = d.day));

CREATE OR REPLACE VIEW entry_pages AS
SELECT s.domain AS site,
       r.day,
       r.value AS path,
       r.visits,
       r.bounces
FROM rollup_visits r
JOIN rollup_days d USING (site_id, day)
JOIN sites s USING (site_id)
WHERE r.dimension = 'entry_page'
  AND d.timezone = 'UTC' AND s.timezone = 'UTC'
  AND NOT EXISTS (SELECT FROM rollup_stale x WHERE x.site_id = r.site_id AND x.day = r.day)
UNION ALL
SELECT s.domain, g.day::date, t.path, t.visits, t.bounces
FROM sites s
CROSS JOIN LATERAL (SELECT min(started_at) AT TIME ZONE 'UTC', max(started_at) AT TIME ZONE 'UTC'
                    FROM sessions WHERE site_id = s.site_id) AS b (first, last)
CROSS JOIN LATERAL generate_series(date_trunc('day', b.first), b.last, interval '1 day') AS g (day)
CROSS JOIN LATERAL (
    SELECT entry_path AS path,
           count(*) AS visits,
           count(*) FILTER (WHERE bounce) AS bounces
    FROM visits v
    WHERE v.site_id = s.site_id
      AND v.time >= g.day AT TIME ZONE 'UTC'
      AND v.time < (g.day + interval '1 day') AT TIME ZONE 'UTC'
    GROUP BY entry_path
) AS t
WHERE NOT EXISTS (SELECT FROM rollup_days d
                  WHERE d.site_id = s.site_id AND d.day = g.day::date AND d.timezone = 'UTC'
                    AND s.timezone = 'UTC'
                    AND NOT EXISTS (SELECT FROM rollup_stale x
                                    WHERE x.site_id = d.site_id AND x.day = d.day));

CREATE OR REPLACE VIEW exit_pages AS
SELECT s.domain AS site,
       r.day,
       r.value AS path,
       r.visits
FROM rollup_visits r
JOIN rollup_days d USING (site_id, day)
JOIN sites s USING (site_id)
WHERE r.dimension = 'exit_page'
  AND d.timezone = 'UTC' AND s.timezone = 'UTC'
  AND NOT EXISTS (SELECT FROM rollup_stale x WHERE x.site_id = r.site_id AND x.day = r.day)
UNION ALL
SELECT s.domain, g.day::date, t.path, t.visits
FROM sites s
CROSS JOIN LATERAL (SELECT min(started_at) AT TIME ZONE 'UTC', max(started_at) AT TIME ZONE 'UTC'
                    FROM sessions WHERE site_id = s.site_id) AS b (first, last)
CROSS JOIN LATERAL generate_series(date_trunc('day', b.first), b.last, interval '1 day') AS g (day)
CROSS JOIN LATERAL (
    SELECT exit_path AS path,
           count(*) AS visits
    FROM visits v
    WHERE v.site_id = s.site_id
      AND v.time >= g.day AT TIME ZONE 'UTC'
      AND v.time < (g.day + interval '1 day') AT TIME ZONE 'UTC'
    GROUP BY exit_path
) AS t
WHERE NOT EXISTS (SELECT FROM rollup_days d
                  WHERE d.site_id = s.site_id AND d.day = g.day::date AND d.timezone = 'UTC'
                    AND s.timezone = 'UTC'
                    AND NOT EXISTS (SELECT FROM rollup_stale x
                                    WHERE x.site_id = d.site_id AND x.day = d.day));

CREATE OR REPLACE VIEW countries AS
SELECT s.domain AS site,
       r.day,
       r.value AS country,
       r.visits,
       r.visitors
FROM rollup_visits r
JOIN rollup_days d USING (site_id, day)
JOIN sites s USING (site_id)
WHERE r.dimension = 'country'
  AND d.timezone = 'UTC' AND s.timezone = 'UTC'
  AND NOT EXISTS (SELECT FROM rollup_stale x WHERE x.site_id = r.site_id AND x.day = r.day)
UNION ALL
SELECT s.domain, g.day::date, t.country, t.visits, t.visitors
FROM sites s
CROSS JOIN LATERAL (SELECT min(started_at) AT TIME ZONE 'UTC', max(started_at) AT TIME ZONE 'UTC'
                    FROM sessions WHERE site_id = s.site_id) AS b (first, last)
CROSS JOIN LATERAL generate_series(date_trunc('day', b.first), b.last, interval '1 day') AS g (day)
CROSS JOIN LATERAL (
    SELECT country,
           count(*) AS visits,
           count(DISTINCT visitor_id) AS visitors
    FROM visits v
    WHERE v.site_id = s.site_id
      AND v.time >= g.day AT TIME ZONE 'UTC'
      AND v.time < (g.day + interval '1 day') AT TIME ZONE 'UTC'
    GROUP BY country
) AS t
WHERE NOT EXISTS (SELECT FROM rollup_days d
                  WHERE d.site_id = s.site_id AND d.day = g.day::date AND d.timezone = 'UTC'
                    AND s.timezone = 'UTC'
                    AND NOT EXISTS (SELECT FROM rollup_stale x
                                    WHERE x.site_id = d.site_id AND x.day = d.day));

CREATE OR REPLACE VIEW browsers AS
SELECT s.domain AS site,
       r.day,
       r.value AS browser,
       r.visits,
       r.visitors
FROM rollup_visits r
JOIN rollup_days d USING (site_id, day)
JOIN sites s USING (site_id)
WHERE r.dimension = 'browser'
  AND d.timezone = 'UTC' AND s.timezone = 'UTC'
  AND NOT EXISTS (SELECT FROM rollup_stale x WHERE x.site_id = r.site_id AND x.day = r.day)
UNION ALL
SELECT s.domain, g.day::date, t.browser, t.visits, t.visitors
FROM sites s
CROSS JOIN LATERAL (SELECT min(started_at) AT TIME ZONE 'UTC', max(started_at) AT TIME ZONE 'UTC'
                    FROM sessions WHERE site_id = s.site_id) AS b (first, last)
CROSS JOIN LATERAL generate_series(date_trunc('day', b.first), b.last, interval '1 day') AS g (day)
CROSS JOIN LATERAL (
    SELECT browser,
           count(*) AS visits,
           count(DISTINCT visitor_id) AS visitors
    FROM visits v
    WHERE v.site_id = s.site_id
      AND v.time >= g.day AT TIME ZONE 'UTC'
      AND v.time < (g.day + interval '1 day') AT TIME ZONE 'UTC'
    GROUP BY browser
) AS t
WHERE NOT EXISTS (SELECT FROM rollup_days d
                  WHERE d.site_id = s.site_id AND d.day = g.day::date AND d.timezone = 'UTC'
                    AND s.timezone = 'UTC'
                    AND NOT EXISTS (SELECT FROM rollup_stale x
                                    WHERE x.site_id = d.site_id AND x.day = d.day));

CREATE OR REPLACE VIEW operating_systems AS
SELECT s.domain AS site,
       r.day,
       r.value AS os,
       r.visits,
       r.visitors
FROM rollup_visits r
JOIN rollup_days d USING (site_id, day)
JOIN sites s USING (site_id)
WHERE r.dimension = 'os'
  AND d.timezone = 'UTC' AND s.timezone = 'UTC'
  AND NOT EXISTS (SELECT FROM rollup_stale x WHERE x.site_id = r.site_id AND x.day = r.day)
UNION ALL
SELECT s.domain, g.day::date, t.os, t.visits, t.visitors
FROM sites s
CROSS JOIN LATERAL (SELECT min(started_at) AT TIME ZONE 'UTC', max(started_at) AT TIME ZONE 'UTC'
                    FROM sessions WHERE site_id = s.site_id) AS b (first, last)
CROSS JOIN LATERAL generate_series(date_trunc('day', b.first), b.last, interval '1 day') AS g (day)
CROSS JOIN LATERAL (
    SELECT os,
           count(*) AS visits,
           count(DISTINCT visitor_id) AS visitors
    FROM visits v
    WHERE v.site_id = s.site_id
      AND v.time >= g.day AT TIME ZONE 'UTC'
      AND v.time < (g.day + interval '1 day') AT TIME ZONE 'UTC'
    GROUP BY os
) AS t
WHERE NOT EXISTS (SELECT FROM rollup_days d
                  WHERE d.site_id = s.site_id AND d.day = g.day::date AND d.timezone = 'UTC'
                    AND s.timezone = 'UTC'
                    AND NOT EXISTS (SELECT FROM rollup_stale x
                                    WHERE x.site_id = d.site_id AND x.day = d.day));

CREATE OR REPLACE VIEW devices AS
SELECT s.domain AS site,
       r.day,
       r.value AS device_type,
       r.visits,
       r.visitors
FROM rollup_visits r
JOIN rollup_days d USING (site_id, day)
JOIN sites s USING (site_id)
WHERE r.dimension = 'device'
  AND d.timezone = 'UTC' AND s.timezone = 'UTC'
  AND NOT EXISTS (SELECT FROM rollup_stale x WHERE x.site_id = r.site_id AND x.day = r.day)
UNION ALL
SELECT s.domain, g.day::date, t.device_type, t.visits, t.visitors
FROM sites s
CROSS JOIN LATERAL (SELECT min(started_at) AT TIME ZONE 'UTC', max(started_at) AT TIME ZONE 'UTC'
                    FROM sessions WHERE site_id = s.site_id) AS b (first, last)
CROSS JOIN LATERAL generate_series(date_trunc('day', b.first), b.last, interval '1 day') AS g (day)
CROSS JOIN LATERAL (
    SELECT device_type,
           count(*) AS visits,
           count(DISTINCT visitor_id) AS visitors
    FROM visits v
    WHERE v.site_id = s.site_id
      AND v.time >= g.day AT TIME ZONE 'UTC'
      AND v.time < (g.day + interval '1 day') AT TIME ZONE 'UTC'
    GROUP BY device_type
) AS t
WHERE NOT EXISTS (SELECT FROM rollup_days d
                  WHERE d.site_id = s.site_id AND d.day = g.day::date AND d.timezone = 'UTC'
                    AND s.timezone = 'UTC'
                    AND NOT EXISTS (SELECT FROM rollup_stale x
                                    WHERE x.site_id = d.site_id AND x.day = d.day));

-- The event views: rollup_events by the day events were received, the raw branch from
-- the pageviews and custom_events views (their rules said once, in 0005). Candidate
-- days span the site's raw events, found by the primary key (site_id, received_at, ...)
-- of each partition: from events themselves, not from their sessions, so that no event
-- row is missed whatever `sessions` holds, at the cost of one index probe a partition.

CREATE OR REPLACE VIEW top_pages AS
SELECT s.domain AS site,
       r.day,
       r.value AS path,
       r.pageviews,
       r.visitors
FROM rollup_events r
JOIN rollup_days d USING (site_id, day)
JOIN sites s USING (site_id)
WHERE r.dimension = 'page'
  AND d.timezone = 'UTC' AND s.timezone = 'UTC'
  AND NOT EXISTS (SELECT FROM rollup_stale x WHERE x.site_id = r.site_id AND x.day = r.day)
UNION ALL
SELECT s.domain, g.day::date, t.path, t.pageviews, t.visitors
FROM sites s
CROSS JOIN LATERAL (SELECT min(received_at) AT TIME ZONE 'UTC', max(received_at) AT TIME ZONE 'UTC'
                    FROM events WHERE site_id = s.site_id) AS b (first, last)
CROSS JOIN LATERAL generate_series(date_trunc('day', b.first), b.last, interval '1 day') AS g (day)
CROSS JOIN LATERAL (
    SELECT path,
           count(*) AS pageviews,
           count(DISTINCT visitor_id) AS visitors
    FROM pageviews p
    WHERE p.site_id = s.site_id
      AND p.time >= g.day AT TIME ZONE 'UTC'
      AND p.time < (g.day + interval '1 day') AT TIME ZONE 'UTC'
    GROUP BY path
) AS t
WHERE NOT EXISTS (SELECT FROM rollup_days d
                  WHERE d.site_id = s.site_id AND d.day = g.day::date AND d.timezone = 'UTC'
                    AND s.timezone = 'UTC'
                    AND NOT EXISTS (SELECT FROM rollup_stale x
                                    WHERE x.site_id = d.site_id AND x.day = d.day));

-- visits = distinct sessions that sent the event that day, in both branches.
CREATE OR REPLACE VIEW daily_custom_events AS
SELECT s.domain AS site,
       r.day,
       r.value AS name,
       r.events,
       r.visitors,
       r.visits
FROM rollup_events r
JOIN rollup_days d USING (site_id, day)
JOIN sites s USING (site_id)
WHERE r.dimension = 'event'
  AND d.timezone = 'UTC' AND s.timezone = 'UTC'
  AND NOT EXISTS (SELECT FROM rollup_stale x WHERE x.site_id = r.site_id AND x.day = r.day)
UNION ALL
SELECT s.domain, g.day::date, t.name, t.events, t.visitors, t.visits
FROM sites s
CROSS JOIN LATERAL (SELECT min(received_at) AT TIME ZONE 'UTC', max(received_at) AT TIME ZONE 'UTC'
                    FROM events WHERE site_id = s.site_id) AS b (first, last)
CROSS JOIN LATERAL generate_series(date_trunc('day', b.first), b.last, interval '1 day') AS g (day)
CROSS JOIN LATERAL (
    SELECT name,
           count(*) AS events,
           count(DISTINCT visitor_id) AS visitors,
           count(DISTINCT session_id) AS visits
    FROM custom_events c
    WHERE c.site_id = s.site_id
      AND c.time >= g.day AT TIME ZONE 'UTC'
      AND c.time < (g.day + interval '1 day') AT TIME ZONE 'UTC'
    GROUP BY name
) AS t
WHERE NOT EXISTS (SELECT FROM rollup_days d
                  WHERE d.site_id = s.site_id AND d.day = g.day::date AND d.timezone = 'UTC'
                    AND s.timezone = 'UTC'
                    AND NOT EXISTS (SELECT FROM rollup_stale x
                                    WHERE x.site_id = d.site_id AND x.day = d.day));
