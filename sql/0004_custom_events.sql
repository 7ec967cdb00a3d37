-- Reporting views of custom events (signup, outbound link clicks, downloads, ...), of
-- their properties and conversions, and of Plausible's time on page and scroll depth.
-- Same conventions as 0002_views.sql: `site` is the domain, row views have `time`
-- (UTC, filter it by any range), daily views are grouped by site and UTC `day`.
--
-- Event names: `load`, `nav` and `hashchange` may be pageviews (see the `pageviews`
-- view, whose definition is reused below rather than repeated); `visible`, `hidden`
-- and `ping` are the tracker's housekeeping; `engagement` carries time on page and
-- scroll depth. Every other name is a custom event, `outbound` and `download` (link
-- clicks, with the link in props.url) included.

-- Engagement now also comes from Plausible's engagement events and non-interactive
-- custom events (model.py decides it at ingest).
COMMENT ON VIEW visits IS
    'One row per visit with at least one pageview. time = start of the visit (UTC); '
    'bounce = one pageview and no engagement (no ping, no engagement event of 30 s or '
    'more, no interactive custom event).';

-- One row per custom event.
CREATE VIEW custom_events AS
SELECT e.received_at AS time,
       s.domain AS site,
       e.site_id,
       e.session_id,
       e.visitor_id,
       e.name,
       e.path,
       e.props,
       -- ->> on a non-object is NULL, never an error.
       CASE WHEN e.name IN ('outbound', 'download') THEN e.props ->> 'url' END AS url
FROM events e
JOIN sites s USING (site_id)
WHERE e.name NOT IN ('load', 'nav', 'hashchange', 'visible', 'hidden', 'ping', 'engagement');

COMMENT ON VIEW custom_events IS
    'One row per custom event: any name but load, nav, hashchange, visible, hidden, ping '
    'and engagement (outbound and download included). time = server clock at receipt (UTC), '
    'site = tracked domain, path = page it was sent from.';
COMMENT ON COLUMN custom_events.props IS
    'Custom properties: a flat jsonb object of strings, numbers and booleans, or NULL.';
COMMENT ON COLUMN custom_events.url IS
    'The link of an outbound or download event (props.url, without query or fragment); '
    'NULL for other events.';

CREATE VIEW daily_custom_events AS
SELECT site,
       (time AT TIME ZONE 'UTC')::date AS day,
       name,
       count(*) AS events,
       count(DISTINCT visitor_id) AS visitors,
       count(DISTINCT session_id) AS visits
FROM custom_events
GROUP BY 1, 2, 3;

COMMENT ON VIEW daily_custom_events IS
    'Per site, UTC day and custom event name: events, visitors and visits that sent it.';

-- One row per property value: an event without properties has no row here.
CREATE VIEW custom_event_props AS
SELECT c.site,
       (c.time AT TIME ZONE 'UTC')::date AS day,
       c.name,
       p.property,
       p.value,
       count(*) AS events,
       count(DISTINCT c.visitor_id) AS visitors
FROM custom_events c
CROSS JOIN LATERAL jsonb_each_text(c.props) AS p (property, value)
-- Only objects: jsonb_each_text raises on a scalar, which would break every query.
WHERE jsonb_typeof(c.props) = 'object'
GROUP BY 1, 2, 3, 4, 5;

COMMENT ON VIEW custom_event_props IS
    'Per site, UTC day, custom event name, property and value (as text: 3, true, pro): '
    'events and visitors. Events without properties have no row.';

-- Conversions per page: visits that sent an event from a page, out of the visits on
-- that page. Both are counted in one pass over the page's pageviews and custom events,
-- so a filter on site and day reaches the scan of `events`.
CREATE VIEW conversion_pages AS
SELECT site,
       day,
       name,
       path,
       count(*) AS visits,
       min(page_visits) AS page_visits,
       round(100.0 * count(*) / min(page_visits), 1) AS conversion_rate
FROM (
    SELECT site, day, path, names,
           count(*) OVER (PARTITION BY site, day, path) AS page_visits
    FROM (
        -- One row per visit, UTC day and page: the custom events it sent there. A visit
        -- that sent an event from a page was on it, even without a pageview that day.
        SELECT site,
               (time AT TIME ZONE 'UTC')::date AS day,
               path,
               session_id,
               array_agg(DISTINCT name) FILTER (WHERE name IS NOT NULL) AS names
        FROM (SELECT site, time, path, session_id, NULL::text AS name FROM pageviews
              UNION ALL
              SELECT site, time, path, session_id, name FROM custom_events) page_events
        GROUP BY 1, 2, 3, 4
    ) visit_pages
) counted
CROSS JOIN LATERAL unnest(names) AS name
GROUP BY 1, 2, 3, 4;

COMMENT ON VIEW conversion_pages IS
    'Per site, UTC day, custom event name and page path: visits that sent the event from '
    'that page, page_visits (visits that viewed the page or sent a custom event from it '
    'that day) and conversion_rate = 100 * visits / page_visits (percent).';

-- Plausible's `engagement` events report the engaged time since the previous one and
-- the deepest scroll so far: per visit and page, time adds up and depth is the maximum.
CREATE VIEW page_engagement AS
SELECT site,
       day,
       path,
       count(*) AS visits,
       count(DISTINCT visitor_id) AS visitors,
       round(avg(engaged_ms) / 1000.0, 1) AS avg_engaged_s,
       round(avg(scroll_depth), 1) AS avg_scroll_depth
FROM (
    SELECT s.domain AS site,
           (e.received_at AT TIME ZONE 'UTC')::date AS day,
           e.path,
           e.session_id,
           min(e.visitor_id) AS visitor_id,
           sum(e.engaged_ms) AS engaged_ms,
           max(e.scroll_depth) AS scroll_depth
    FROM events e
    JOIN sites s USING (site_id)
    WHERE e.name = 'engagement'
    GROUP BY 1, 2, 3, 4
) visit_pages
GROUP BY 1, 2, 3;

COMMENT ON VIEW page_engagement IS
    'Per site, UTC day and path, from engagement events (Plausible''s tracker): visits and '
    'visitors that reported any, avg_engaged_s (engaged time per visit of the page, '
    'seconds) and avg_scroll_depth (deepest scroll per visit of the page, percent).';

-- The reader role's grants, with the views above (see 0002_views.sql for why the list
-- is explicit). CREATE OR REPLACE keeps the function's owner, comment and privileges.
CREATE OR REPLACE FUNCTION picolytics_grant_reader() RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF to_regrole('picolytics_reader') IS NULL THEN
        IF NOT EXISTS (SELECT FROM pg_roles
                       WHERE rolname = current_user AND (rolsuper OR rolcreaterole)) THEN
            RAISE NOTICE 'role picolytics_reader does not exist and % may not create roles: '
                         'ask an administrator to run CREATE ROLE picolytics_reader NOLOGIN, '
                         'then run SELECT picolytics_grant_reader() as %', current_user, current_user;
            RETURN false;
        END IF;
        BEGIN
            CREATE ROLE picolytics_reader NOLOGIN;
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN
                NULL;  -- created meanwhile by a migration of another database
            WHEN insufficient_privilege THEN
                RAISE NOTICE 'cannot create role picolytics_reader: %', SQLERRM;
                RETURN false;
        END;
    END IF;
    IF NOT has_schema_privilege('picolytics_reader', current_schema(), 'USAGE') THEN
        BEGIN
            EXECUTE format('GRANT USAGE ON SCHEMA %I TO picolytics_reader', current_schema());
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE NOTICE 'cannot grant USAGE on schema % to picolytics_reader: ask its owner '
                         'to run GRANT USAGE ON SCHEMA % TO picolytics_reader',
                         current_schema(), current_schema();
        END;
    END IF;
    GRANT SELECT ON sites, sessions, events, bot_counts TO picolytics_reader;
    GRANT SELECT ON pageviews, visits, daily_visitors, top_pages, sources, entry_pages,
        exit_pages, countries, browsers, operating_systems, devices, campaigns, bot_traffic
        TO picolytics_reader;
    GRANT SELECT ON custom_events, daily_custom_events, custom_event_props, conversion_pages,
        page_engagement
        TO picolytics_reader;
    RETURN true;
END;
$$;

SELECT picolytics_grant_reader();
