-- The daily views gain the imported days (docs/imports.md, How imported data is
-- counted): each view of 0007 that has an imported counterpart keeps its definition
-- as it is and adds, by UNION ALL, the rows of the imported table for the days before
-- the site's first native day, so a day never counts native and imported rows both.
--
-- An imported day is a date of the zone the export was made in; the views group by
-- UTC day and show it as that day. Only the rows of the import that owns the day
-- (imported_days) count, so a day imported twice counts once. The first native day of
-- a site is storage/imported_days.py's: the local day, in the site's zone, of its
-- oldest raw event (the primary key finds it), or its first rolled-up day when older
-- (raw rows may have been pruned since).
--
-- Each imported row is a sum over a value of its table; a view that groups coarser
-- sums them (countries over regions and cities, browsers over versions, top_pages
-- over hostnames, sources over referrers and UTM fields): visitors of several rows of
-- one day are then added up, as Plausible's imported data does too.
--   daily_visitors      imported_visitors (rates from the sums, as the rollups do)
--   sources             imported_sources ('' and 'Direct / None' are '(direct)')
--   entry_pages         imported_entry_pages (visits = entrances)
--   exit_pages          imported_exit_pages (visits = exits)
--   countries           imported_locations
--   browsers            imported_browsers
--   operating_systems   imported_operating_systems
--   devices             imported_devices (lower case, as picolytics' device types)
--   top_pages           imported_pages
--   daily_custom_events imported_custom_events (visits NULL: the format has none)
--
-- Columns keep their names, order and types (CREATE OR REPLACE VIEW requires it; the
-- imported branch casts to the view's types), and the views their comments and grants.
-- The native definition is the view's current one (pg_get_viewdef), not a copy.

DO $$
DECLARE
    -- Per site: the days of its imported rows that count (`o`), joined to each row `i`.
    sites CONSTANT text := $q$
        sites s
        CROSS JOIN LATERAL (
            SELECT least(
                (SELECT (e.received_at AT TIME ZONE s.timezone)::date FROM events e
                 WHERE e.site_id = s.site_id ORDER BY e.received_at LIMIT 1),
                (SELECT min(r.day) FROM rollup_days r WHERE r.site_id = s.site_id)) AS first_day
        ) AS f
        JOIN imported_days o ON o.site_id = s.site_id
                            AND (f.first_day IS NULL OR o.day < f.first_day)$q$;
    own CONSTANT text := 'i.site_id = o.site_id AND i.day = o.day AND i.import_id = o.import_id';
    item record;
    casts text;
    names text;
BEGIN
    FOR item IN SELECT * FROM (VALUES
        ('daily_visitors', format($q$
            SELECT s.domain, o.day, i.visitors, i.visits, i.pageviews, i.bounces,
                   round(100.0 * i.bounces / i.visits, 1),
                   round(i.visit_duration::numeric / i.visits, 1),
                   round(i.pageviews::numeric / i.visits, 2)
            FROM %s JOIN imported_visitors i ON %s
            WHERE i.visits > 0$q$, sites, own)),
        ('sources', format($q$
            SELECT s.domain, o.day,
                   CASE WHEN i.source IN ('', 'Direct / None') THEN '(direct)' ELSE i.source END,
                   sum(i.visits), sum(i.visitors), sum(i.bounces)
            FROM %s JOIN imported_sources i ON %s
            GROUP BY 1, 2, 3$q$, sites, own)),
        ('entry_pages', format($q$
            SELECT s.domain, o.day, i.entry_page, sum(i.entrances), sum(i.bounces)
            FROM %s JOIN imported_entry_pages i ON %s
            GROUP BY 1, 2, 3$q$, sites, own)),
        ('exit_pages', format($q$
            SELECT s.domain, o.day, i.exit_page, sum(i.exits)
            FROM %s JOIN imported_exit_pages i ON %s
            GROUP BY 1, 2, 3$q$, sites, own)),
        ('countries', format($q$
            SELECT s.domain, o.day, i.country, sum(i.visits), sum(i.visitors)
            FROM %s JOIN imported_locations i ON %s
            GROUP BY 1, 2, 3$q$, sites, own)),
        ('browsers', format($q$
            SELECT s.domain, o.day, i.browser, sum(i.visits), sum(i.visitors)
            FROM %s JOIN imported_browsers i ON %s
            GROUP BY 1, 2, 3$q$, sites, own)),
        ('operating_systems', format($q$
            SELECT s.domain, o.day, i.operating_system, sum(i.visits), sum(i.visitors)
            FROM %s JOIN imported_operating_systems i ON %s
            GROUP BY 1, 2, 3$q$, sites, own)),
        ('devices', format($q$
            SELECT s.domain, o.day, lower(i.device), sum(i.visits), sum(i.visitors)
            FROM %s JOIN imported_devices i ON %s
            GROUP BY 1, 2, 3$q$, sites, own)),
        ('top_pages', format($q$
            SELECT s.domain, o.day, i.page, sum(i.pageviews), sum(i.visitors)
            FROM %s JOIN imported_pages i ON %s
            GROUP BY 1, 2, 3$q$, sites, own)),
        ('daily_custom_events', format($q$
            SELECT s.domain, o.day, i.name, sum(i.events), sum(i.visitors), NULL
            FROM %s JOIN imported_custom_events i ON %s
            GROUP BY 1, 2, 3$q$, sites, own))
    ) AS v (name, imported) LOOP
        SELECT string_agg(format('b.c%s::%s', a.attnum, format_type(a.atttypid, a.atttypmod)),
                          ', ' ORDER BY a.attnum),
               string_agg('c' || a.attnum, ', ' ORDER BY a.attnum)
        INTO casts, names
        FROM pg_attribute a
        WHERE a.attrelid = item.name::regclass AND a.attnum > 0 AND NOT a.attisdropped;
        -- The imported branch's columns, cast in order to the view's own types.
        EXECUTE format('CREATE OR REPLACE VIEW %I AS (%s) UNION ALL (SELECT %s FROM (%s) AS b (%s))',
                       item.name, rtrim(pg_get_viewdef(item.name::regclass), E'; \n'),
                       casts, item.imported, names);
    END LOOP;
END $$;
