-- Each rule said once. 0002 and 0004 spelt out which events are pageviews and custom
-- events inside their views, and each copied the whole grant function to add its
-- views to the reader's list. From here on:
--   * picolytics_is_pageview() and picolytics_is_custom_event() are the SQL side of
--     the event rules; every view uses them. Their Python twins are in
--     src/picolytics/events.py, and tests/test_sql_rules.py checks that both agree.
--   * reader_grants lists what picolytics_reader may read, as data. A migration that
--     adds a view for readers inserts one row and runs SELECT picolytics_grant_reader();
--     one that drops such a view deletes its row.
-- Applied migrations are not edited: an edit would never reach a database that ran
-- the file already (migrate.py only warns that its checksum changed). So this one
-- replaces the two views and the function in place; owners, comments and grants stay.

-- Pageviews: load, nav (a single-page-app navigation) and hashchange to a #/route. The
-- stored path holds '#' only for a route, never for an in-page anchor (the ingest
-- keeps no other fragment). LANGUAGE sql, IMMUTABLE and not STRICT, so the planner
-- inlines the expression into the views: same plans and index use as a literal WHERE.
CREATE FUNCTION picolytics_is_pageview(event_name text, event_path text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT event_name IN ('load', 'nav')
        OR (event_name = 'hashchange' AND strpos(event_path, '#') > 0)
$$;

COMMENT ON FUNCTION picolytics_is_pageview(text, text) IS
    'Is an event of this name and stored path a pageview? load, nav, and hashchange to '
    'a #/route. The rule of the pageviews view; events.py has the same one in Python.';

-- Custom events: every name but the tracker's own (pageviews, visibility, ping) and
-- Plausible's time on page. outbound and download (link clicks) are custom events.
CREATE FUNCTION picolytics_is_custom_event(event_name text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT event_name NOT IN ('load', 'nav', 'hashchange', 'visible', 'hidden', 'ping',
                              'engagement')
$$;

COMMENT ON FUNCTION picolytics_is_custom_event(text) IS
    'Is an event of this name a custom event? Any name but load, nav, hashchange, '
    'visible, hidden, ping and engagement. The rule of the custom_events view; '
    'events.py has the same one in Python.';

-- Same columns in the same order as in 0002 and 0004 (CREATE OR REPLACE VIEW requires
-- it); only the WHERE clause now names the rule instead of restating it.
CREATE OR REPLACE VIEW pageviews AS
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
WHERE picolytics_is_pageview(e.name, e.path);

CREATE OR REPLACE VIEW custom_events AS
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
WHERE picolytics_is_custom_event(e.name);

-- What picolytics_reader may read: relations (SELECT) and the functions the views call
-- (EXECUTE: a view's functions run with the querying role's privileges, and an
-- administrator's default privileges may have taken EXECUTE away from PUBLIC).
-- Grants stay explicit, never ALL TABLES or default privileges: a table added later,
-- such as TLS material, is unreadable unless a migration registers it here.
CREATE TABLE reader_grants (
    object    text PRIMARY KEY,  -- a relation, or a function with its argument types
    privilege text NOT NULL CHECK (privilege IN ('SELECT', 'EXECUTE')),
    -- Belt and braces: the visitor-hash key, the writer's state keyed by visitor hash,
    -- the migration bookkeeping, this list and TLS keys are never for readers.
    CONSTRAINT reader_grants_no_secrets CHECK (object NOT IN (
        'daily_salts', 'visitor_sessions', 'schema_migrations', 'reader_grants',
        'tls_accounts', 'tls_certificates', 'tls_challenges'))
);

COMMENT ON TABLE reader_grants IS
    'What picolytics_reader may read (SELECT on a relation, EXECUTE on a function); '
    'picolytics_grant_reader() grants exactly these. Not readable by picolytics_reader.';

REVOKE ALL ON reader_grants FROM PUBLIC;

-- The analytics tables (events through the parent only: PostgreSQL checks privileges
-- on the table a query names, so every partition, also a later one, is covered) and
-- the views of 0002 and 0004.
INSERT INTO reader_grants (object, privilege) VALUES
    ('sites', 'SELECT'),
    ('sessions', 'SELECT'),
    ('events', 'SELECT'),
    ('bot_counts', 'SELECT'),
    ('pageviews', 'SELECT'),
    ('visits', 'SELECT'),
    ('daily_visitors', 'SELECT'),
    ('top_pages', 'SELECT'),
    ('sources', 'SELECT'),
    ('entry_pages', 'SELECT'),
    ('exit_pages', 'SELECT'),
    ('countries', 'SELECT'),
    ('browsers', 'SELECT'),
    ('operating_systems', 'SELECT'),
    ('devices', 'SELECT'),
    ('campaigns', 'SELECT'),
    ('bot_traffic', 'SELECT'),
    ('custom_events', 'SELECT'),
    ('daily_custom_events', 'SELECT'),
    ('custom_event_props', 'SELECT'),
    ('conversion_pages', 'SELECT'),
    ('page_engagement', 'SELECT'),
    ('picolytics_is_pageview(text, text)', 'EXECUTE'),
    ('picolytics_is_custom_event(text)', 'EXECUTE');

-- Creating the role and the schema USAGE are as in 0002 (see there why the role may be
-- missing). The list is resolved before anything else, so a misspelt or dropped name
-- fails the migration that caused it, even where the role does not exist yet.
-- CREATE OR REPLACE keeps the function's owner and its REVOKE from PUBLIC.
CREATE OR REPLACE FUNCTION picolytics_grant_reader() RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    entry record;
    grants text[] := '{}';
    target text;
BEGIN
    FOR entry IN SELECT object, privilege FROM reader_grants ORDER BY object LOOP
        -- The casts raise if the object does not exist, and quote its name.
        IF entry.privilege = 'SELECT' THEN
            grants := grants || format('SELECT ON TABLE %s', entry.object::regclass);
        ELSE
            grants := grants || format('EXECUTE ON FUNCTION %s', entry.object::regprocedure);
        END IF;
    END LOOP;
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
    FOREACH target IN ARRAY grants LOOP
        EXECUTE 'GRANT ' || target || ' TO picolytics_reader';
    END LOOP;
    RETURN true;
END;
$$;

COMMENT ON FUNCTION picolytics_grant_reader() IS
    'Creates (if allowed) the read-only role picolytics_reader and grants it what '
    'reader_grants lists: the reporting views, the analytics tables and the functions '
    'the views call. Idempotent; run as the owner of the tables.';

SELECT picolytics_grant_reader();
