-- Goals, as Plausible defines them (docs/goals.md): per site, either a custom event
-- by its name, or pageviews of a page path that may hold the wildcard `*`. A goal is
-- shown, filtered and broken down by its display name ("Visit /pricing" for a page
-- goal, the event's name for an event goal, unless the operator names it otherwise).
-- The rule that matches an event to a goal is in src/picolytics/stats/goals.py.
CREATE TABLE goals (
    goal_id      integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site_id      integer NOT NULL REFERENCES sites (site_id),
    kind         text NOT NULL CHECK (kind IN ('event', 'page')),
    event_name   text,  -- kind 'event': the custom event's whole name
    page_path    text,  -- kind 'page': the stored path, or a pattern with `*`
    display_name text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    -- Exactly the column of its kind is set. storage/goals.py checks the same rules
    -- first, with a message that says which one was broken.
    CONSTRAINT goals_one_definition CHECK (
        CASE kind WHEN 'event' THEN event_name IS NOT NULL AND page_path IS NULL
                  ELSE page_path IS NOT NULL AND event_name IS NULL END),
    CONSTRAINT goals_event_name_length CHECK (length(event_name) BETWEEN 1 AND 120),
    CONSTRAINT goals_page_path_form CHECK (
        length(page_path) <= 2000 AND left(page_path, 1) = '/'),
    CONSTRAINT goals_display_name_length CHECK (length(display_name) BETWEEN 1 AND 2000),
    -- One goal per definition and per name in a site (a NULL column never conflicts,
    -- so event and page goals only meet in the name): as in Plausible, a goal is asked
    -- for by its display name.
    CONSTRAINT goals_event_unique UNIQUE (site_id, event_name),
    CONSTRAINT goals_page_unique UNIQUE (site_id, page_path),
    CONSTRAINT goals_name_unique UNIQUE (site_id, display_name)
);

COMMENT ON TABLE goals IS
    'Per site: a custom event name (kind event) or a page path pattern (kind page, '
    '`*` matches any characters) counted as a conversion, and the name it is shown by.';

-- The query layer reads the goals as the reader does (Grafana, the Stats API): they
-- hold names and paths the operator chose, nothing about visitors.
INSERT INTO reader_grants (object, privilege) VALUES ('goals', 'SELECT');

SELECT picolytics_grant_reader();
