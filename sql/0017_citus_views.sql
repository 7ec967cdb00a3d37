-- The daily views of 0007 and 0015 on Citus. Citus refuses a subquery correlated to
-- its reference table sites, and both the raw branch of 0007 (a LATERAL per site and
-- candidate day) and the imported branch of 0015 (a LATERAL per site for its first
-- native day) are such subqueries: on Citus every query of these views fails.
--
-- picolytics_citus_views() redefines the ten views for Citus, keeping each one's
-- columns, comments and grants (CREATE OR REPLACE VIEW):
--   * the rollup branch of 0007 as it is (the first branch of the current definition);
--   * the raw branch as a GROUP BY of the raw view (visits, pageviews, custom_events)
--     by site and UTC day (the raw views' day), for the days not rolled up in UTC or
--     stale: Citus runs it in every shard at once, where 0007 read only the days
--     asked for (no index holds the UTC date of `time`; on plain PostgreSQL 0007's
--     definitions stay, for that reason);
--   * the imported branch of 0015 driven by imported_days, each row's first native
--     day found by its own site_id (the same two index lookups, per imported day).
-- It runs here when the database has Citus; storage/citus.py runs it again after
-- distributing a database that had no Citus when it was migrated. On plain
-- PostgreSQL the views are left as they are. Running it again changes nothing.

CREATE FUNCTION picolytics_citus_views() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    raw CONSTANT text := $q$
        SELECT s.domain, t.day, %s
        FROM (SELECT r.site_id, (r.time AT TIME ZONE 'UTC')::date AS day, %s
              FROM %s r GROUP BY 1, 2%s) AS t
        JOIN sites s USING (site_id)
        WHERE NOT EXISTS (SELECT FROM rollup_days d
                          WHERE d.site_id = t.site_id AND d.day = t.day AND d.timezone = 'UTC'
                            AND s.timezone = 'UTC'
                            AND NOT EXISTS (SELECT FROM rollup_stale x
                                            WHERE x.site_id = d.site_id AND x.day = d.day))$q$;
    visits CONSTANT text := 'count(*) AS visits, count(DISTINCT visitor_id) AS visitors';
    -- The imported days that count (`o`: before the site's first native day, as in
    -- 0015), with their site `s`, joined to each imported row `i`.
    days CONSTANT text := $q$
        imported_days o
        JOIN sites s ON s.site_id = o.site_id AND o.day < coalesce(least(
            (SELECT (min(e.received_at) AT TIME ZONE s.timezone)::date FROM events e
             WHERE e.site_id = o.site_id),
            (SELECT min(r.day) FROM rollup_days r WHERE r.site_id = o.site_id)), 'infinity')$q$;
    own CONSTANT text := 'i.site_id = o.site_id AND i.day = o.day AND i.import_id = o.import_id';
    item record;
    rolled text;
    casts text;
    names text;
BEGIN
    FOR item IN SELECT * FROM (VALUES
        ('daily_visitors',
         format(raw, 't.visitors, t.visits, t.pageviews, t.bounces, t.bounce_rate, '
                     't.avg_duration_s, t.pages_per_visit',
                'count(DISTINCT visitor_id) AS visitors, count(*) AS visits, '
                'sum(pageviews) AS pageviews, count(*) FILTER (WHERE bounce) AS bounces, '
                'round(100.0 * count(*) FILTER (WHERE bounce) / count(*), 1) AS bounce_rate, '
                'round(avg(duration_s), 1) AS avg_duration_s, '
                'round(sum(pageviews)::numeric / count(*), 2) AS pages_per_visit',
                'visits', ''),
         format($q$
            SELECT s.domain, o.day, i.visitors, i.visits, i.pageviews, i.bounces,
                   round(100.0 * i.bounces / i.visits, 1),
                   round(i.visit_duration::numeric / i.visits, 1),
                   round(i.pageviews::numeric / i.visits, 2)
            FROM %s JOIN imported_visitors i ON %s
            WHERE i.visits > 0$q$, days, own)),
        ('sources',
         format(raw, 't.source, t.visits, t.visitors, t.bounces',
                'source, ' || visits || ', count(*) FILTER (WHERE bounce) AS bounces',
                'visits', ', 3'),
         format($q$
            SELECT s.domain, o.day,
                   CASE WHEN i.source IN ('', 'Direct / None') THEN '(direct)' ELSE i.source END,
                   sum(i.visits), sum(i.visitors), sum(i.bounces)
            FROM %s JOIN imported_sources i ON %s
            GROUP BY 1, 2, 3$q$, days, own)),
        ('entry_pages',
         format(raw, 't.path, t.visits, t.bounces',
                'entry_path AS path, count(*) AS visits, '
                'count(*) FILTER (WHERE bounce) AS bounces', 'visits', ', 3'),
         format($q$
            SELECT s.domain, o.day, i.entry_page, sum(i.entrances), sum(i.bounces)
            FROM %s JOIN imported_entry_pages i ON %s
            GROUP BY 1, 2, 3$q$, days, own)),
        ('exit_pages',
         format(raw, 't.path, t.visits', 'exit_path AS path, count(*) AS visits',
                'visits', ', 3'),
         format($q$
            SELECT s.domain, o.day, i.exit_page, sum(i.exits)
            FROM %s JOIN imported_exit_pages i ON %s
            GROUP BY 1, 2, 3$q$, days, own)),
        ('countries',
         format(raw, 't.country, t.visits, t.visitors', 'country, ' || visits, 'visits', ', 3'),
         format($q$
            SELECT s.domain, o.day, i.country, sum(i.visits), sum(i.visitors)
            FROM %s JOIN imported_locations i ON %s
            GROUP BY 1, 2, 3$q$, days, own)),
        ('browsers',
         format(raw, 't.browser, t.visits, t.visitors', 'browser, ' || visits, 'visits', ', 3'),
         format($q$
            SELECT s.domain, o.day, i.browser, sum(i.visits), sum(i.visitors)
            FROM %s JOIN imported_browsers i ON %s
            GROUP BY 1, 2, 3$q$, days, own)),
        ('operating_systems',
         format(raw, 't.os, t.visits, t.visitors', 'os, ' || visits, 'visits', ', 3'),
         format($q$
            SELECT s.domain, o.day, i.operating_system, sum(i.visits), sum(i.visitors)
            FROM %s JOIN imported_operating_systems i ON %s
            GROUP BY 1, 2, 3$q$, days, own)),
        ('devices',
         format(raw, 't.device_type, t.visits, t.visitors', 'device_type, ' || visits,
                'visits', ', 3'),
         format($q$
            SELECT s.domain, o.day, lower(i.device), sum(i.visits), sum(i.visitors)
            FROM %s JOIN imported_devices i ON %s
            GROUP BY 1, 2, 3$q$, days, own)),
        ('top_pages',
         format(raw, 't.path, t.pageviews, t.visitors',
                'path, count(*) AS pageviews, count(DISTINCT visitor_id) AS visitors',
                'pageviews', ', 3'),
         format($q$
            SELECT s.domain, o.day, i.page, sum(i.pageviews), sum(i.visitors)
            FROM %s JOIN imported_pages i ON %s
            GROUP BY 1, 2, 3$q$, days, own)),
        ('daily_custom_events',
         format(raw, 't.name, t.events, t.visitors, t.visits',
                'name, count(*) AS events, count(DISTINCT visitor_id) AS visitors, '
                'count(DISTINCT session_id) AS visits', 'custom_events', ', 3'),
         format($q$
            SELECT s.domain, o.day, i.name, sum(i.events), sum(i.visitors), NULL
            FROM %s JOIN imported_custom_events i ON %s
            GROUP BY 1, 2, 3$q$, days, own))
    ) AS v (name, grouped, imported) LOOP
        -- 0007's rollup branch: the first of the current definition's branches.
        rolled := split_part(pg_get_viewdef(item.name::regclass), E'\nUNION ALL\n', 1);
        SELECT string_agg(format('b.c%s::%s', a.attnum, format_type(a.atttypid, a.atttypmod)),
                          ', ' ORDER BY a.attnum),
               string_agg('c' || a.attnum, ', ' ORDER BY a.attnum)
        INTO casts, names
        FROM pg_attribute a
        WHERE a.attrelid = item.name::regclass AND a.attnum > 0 AND NOT a.attisdropped;
        EXECUTE format('CREATE OR REPLACE VIEW %I AS %s UNION ALL %s UNION ALL '
                       '(SELECT %s FROM (%s) AS b (%s))',
                       item.name, rolled, item.grouped, casts, item.imported, names);
    END LOOP;
END
$$;

SELECT picolytics_citus_views() WHERE EXISTS (SELECT FROM pg_extension WHERE extname = 'citus');
