-- Reporting views: the stable interface for dashboards and ad-hoc SQL, and the
-- read-only role `picolytics_reader` that may read them.
--
-- Two kinds of views:
--   * row views, one row per pageview (`pageviews`) or per visit (`visits`), with the
--     site's domain in `site` and the time in `time`: filter them by any time range;
--   * daily views (`daily_visitors`, `top_pages`, `sources`, ...), grouped by site and
--     UTC `day`: sum them over days. Visitor ids change every UTC day (daily salt), so
--     a visitor counted on two days is two visitors, as in the row views.
-- Their names and columns only ever grow; a later migration never renames or drops
-- one without a deprecation period.

-- One row per pageview: `load`, `nav` (single-page-app navigation) and `hashchange`
-- to a `#/route` (the stored path then contains '#'). `visible`, `hidden`, `ping` and
-- in-page anchors are events, not pageviews.
CREATE VIEW pageviews AS
SELECT e.received_at AS time,
       s.domain AS site,
       e.site_id,
       e.session_id,
       e.visitor_id,
       e.name,
       e.path,
       e.referrer_host,
       e.load_time_ms,
       e.ttfb_ms
FROM events e
JOIN sites s USING (site_id)
WHERE e.name IN ('load', 'nav')
   OR (e.name = 'hashchange' AND strpos(e.path, '#') > 0);

COMMENT ON VIEW pageviews IS
    'One row per pageview (load, nav, hashchange to a #/route; not visible/hidden/ping). '
    'time = server clock at receipt (UTC), site = tracked domain.';
COMMENT ON COLUMN pageviews.time IS 'When the pageview was received (server clock).';
COMMENT ON COLUMN pageviews.site IS 'Tracked domain: lowercase, IDNA, without www.';
COMMENT ON COLUMN pageviews.visitor_id IS
    'Daily visitor hash: the same visitor on this site on this UTC day, nothing more.';

-- One row per visit that saw at least one pageview. A session made only of visibility
-- events or pings (a tab shown again after the timeout) is not a visit.
CREATE VIEW visits AS
SELECT v.started_at AS time,
       s.domain AS site,
       v.site_id,
       v.session_id,
       v.visitor_id,
       v.started_at,
       v.last_seen_at,
       v.duration_s,
       v.pageviews,
       v.events,
       v.engaged,
       v.bounce,
       v.entry_path,
       v.exit_path,
       v.referrer_host,
       CASE WHEN v.utm_source <> '' THEN v.utm_source
            WHEN v.referrer_host <> '' THEN v.referrer_host
            ELSE '(direct)' END AS source,
       v.utm_source,
       v.utm_medium,
       v.utm_campaign,
       v.utm_content,
       v.utm_term,
       v.country,
       v.region,
       v.city,
       v.browser,
       v.browser_version,
       v.os,
       v.os_version,
       v.device_type,
       v.screen_width,
       v.screen_height,
       v.timezone
FROM sessions v
JOIN sites s USING (site_id)
WHERE v.pageviews > 0;

COMMENT ON VIEW visits IS
    'One row per visit with at least one pageview. time = start of the visit (UTC); '
    'bounce = one pageview and no engagement (no ping, no custom event).';
COMMENT ON COLUMN visits.time IS 'Start of the visit (server clock, UTC).';
COMMENT ON COLUMN visits.source IS
    'utm_source if set, else the referrer host, else ''(direct)''.';
COMMENT ON COLUMN visits.duration_s IS 'Seconds from the first to the last event of the visit.';

CREATE VIEW daily_visitors AS
SELECT site,
       (time AT TIME ZONE 'UTC')::date AS day,
       count(DISTINCT visitor_id) AS visitors,
       count(*) AS visits,
       sum(pageviews) AS pageviews,
       count(*) FILTER (WHERE bounce) AS bounces,
       round(100.0 * count(*) FILTER (WHERE bounce) / count(*), 1) AS bounce_rate,
       round(avg(duration_s), 1) AS avg_duration_s,
       round(sum(pageviews)::numeric / count(*), 2) AS pages_per_visit
FROM visits
GROUP BY 1, 2;

COMMENT ON VIEW daily_visitors IS
    'Per site and UTC day (of the visit start): visitors, visits, pageviews of those '
    'visits, bounces, bounce_rate (percent), avg_duration_s, pages_per_visit.';

CREATE VIEW top_pages AS
SELECT site,
       (time AT TIME ZONE 'UTC')::date AS day,
       path,
       count(*) AS pageviews,
       count(DISTINCT visitor_id) AS visitors
FROM pageviews
GROUP BY 1, 2, 3;

COMMENT ON VIEW top_pages IS 'Per site, UTC day and path: pageviews and visitors.';

CREATE VIEW sources AS
SELECT site,
       (time AT TIME ZONE 'UTC')::date AS day,
       source,
       count(*) AS visits,
       count(DISTINCT visitor_id) AS visitors,
       count(*) FILTER (WHERE bounce) AS bounces
FROM visits
GROUP BY 1, 2, 3;

COMMENT ON VIEW sources IS
    'Per site, UTC day and source (utm_source, else referrer host, else (direct)): '
    'visits, visitors, bounces.';

CREATE VIEW entry_pages AS
SELECT site,
       (time AT TIME ZONE 'UTC')::date AS day,
       entry_path AS path,
       count(*) AS visits,
       count(*) FILTER (WHERE bounce) AS bounces
FROM visits
GROUP BY 1, 2, 3;

COMMENT ON VIEW entry_pages IS 'Per site, UTC day and first page of a visit: visits, bounces.';

CREATE VIEW exit_pages AS
SELECT site,
       (time AT TIME ZONE 'UTC')::date AS day,
       exit_path AS path,
       count(*) AS visits
FROM visits
GROUP BY 1, 2, 3;

COMMENT ON VIEW exit_pages IS 'Per site, UTC day and last page of a visit: visits.';

CREATE VIEW countries AS
SELECT site,
       (time AT TIME ZONE 'UTC')::date AS day,
       country,
       count(*) AS visits,
       count(DISTINCT visitor_id) AS visitors
FROM visits
GROUP BY 1, 2, 3;

COMMENT ON VIEW countries IS
    'Per site, UTC day and country (ISO 3166-1 alpha-2, '''' if unknown): visits, visitors.';

CREATE VIEW browsers AS
SELECT site,
       (time AT TIME ZONE 'UTC')::date AS day,
       browser,
       count(*) AS visits,
       count(DISTINCT visitor_id) AS visitors
FROM visits
GROUP BY 1, 2, 3;

COMMENT ON VIEW browsers IS 'Per site, UTC day and browser family: visits, visitors.';

CREATE VIEW operating_systems AS
SELECT site,
       (time AT TIME ZONE 'UTC')::date AS day,
       os,
       count(*) AS visits,
       count(DISTINCT visitor_id) AS visitors
FROM visits
GROUP BY 1, 2, 3;

COMMENT ON VIEW operating_systems IS 'Per site, UTC day and operating system: visits, visitors.';

CREATE VIEW devices AS
SELECT site,
       (time AT TIME ZONE 'UTC')::date AS day,
       device_type,
       count(*) AS visits,
       count(DISTINCT visitor_id) AS visitors
FROM visits
GROUP BY 1, 2, 3;

COMMENT ON VIEW devices IS
    'Per site, UTC day and device type (desktop, mobile, tablet, other): visits, visitors.';

CREATE VIEW campaigns AS
SELECT site,
       (time AT TIME ZONE 'UTC')::date AS day,
       utm_source,
       utm_medium,
       utm_campaign,
       count(*) AS visits,
       count(DISTINCT visitor_id) AS visitors,
       sum(pageviews) AS pageviews
FROM visits
WHERE utm_campaign <> ''
GROUP BY 1, 2, 3, 4, 5;

COMMENT ON VIEW campaigns IS
    'Per site, UTC day and UTM source/medium/campaign of visits with a utm_campaign: '
    'visits, visitors, pageviews.';

CREATE VIEW bot_traffic AS
SELECT s.domain AS site,
       b.day,
       b.reason,
       b.hits
FROM bot_counts b
JOIN sites s USING (site_id);

COMMENT ON VIEW bot_traffic IS
    'Requests recognised as bots and not stored as visits, per site, UTC day and reason '
    '(empty_ua, crawler_list, parser_spider).';

-- The read-only reporting role. A NOLOGIN group role: give a login role (Grafana's)
-- membership in it. It reads the analytics tables and the views above, by explicit
-- grants only (never ALL TABLES or default privileges, so a later table, such as TLS
-- material, is unreadable unless a migration grants it). Not granted: daily_salts
-- (the visitor-hash key), visitor_sessions (the writer's working state, keyed by
-- visitor hash; `sessions` holds everything a report needs), schema_migrations.
-- Queries on `events` through the parent table read every partition, including
-- partitions created later: PostgreSQL checks privileges on the table named in the
-- query only. The partitions themselves are not granted (read them through `events`).
--
-- Roles belong to the whole server, and managed databases often don't give the
-- application CREATEROLE. Then the role is not created here: this function raises a
-- NOTICE and returns false, and the README explains how an administrator creates the
-- role; running `SELECT picolytics_grant_reader()` afterwards (as the owner of the
-- tables) grants it everything. It is safe to run any number of times. A migration
-- that adds a view for readers replaces this function with the longer list and runs it.
CREATE FUNCTION picolytics_grant_reader() RETURNS boolean
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
    RETURN true;
END;
$$;

COMMENT ON FUNCTION picolytics_grant_reader() IS
    'Creates (if allowed) the read-only role picolytics_reader and grants it the '
    'reporting views and analytics tables. Idempotent; run as the owner of the tables.';

REVOKE EXECUTE ON FUNCTION picolytics_grant_reader() FROM PUBLIC;

SELECT picolytics_grant_reader();
