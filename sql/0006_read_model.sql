-- The read model (docs/read-model.md): per-site time zones, and rollups of closed
-- days in the site's zone, so a query's cost follows days and distinct values, not
-- raw events. Raw rows answer for the days that are not rolled up (the open day, a
-- day whose rollup a late write made stale, a zone other than the site's).

-- Each site's IANA zone; its days, weeks and months are the site's local ones.
ALTER TABLE sites ADD COLUMN timezone text NOT NULL DEFAULT 'UTC';

-- One row per site and local day that has been rolled up, in the zone it was rolled
-- in. A query uses a day's rollup only when the day is here, in the query's zone, and
-- not in rollup_stale.
CREATE TABLE rollup_days (
    site_id   integer NOT NULL REFERENCES sites (site_id),
    day       date NOT NULL,
    timezone  text NOT NULL,
    rolled_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site_id, day)
);

-- Days whose raw rows changed after they may have been rolled up (a late write): the
-- writer marks them in the same transaction as the rows, the roller clears the mark
-- in the same transaction as the new rollup.
CREATE TABLE rollup_stale (
    site_id integer NOT NULL,
    day     date NOT NULL,
    PRIMARY KEY (site_id, day)
);

-- Visits (sessions with a pageview) by the local day they started, per dimension
-- value. dimension '' is the day's total (parent = value = ''). parent qualifies a
-- value that needs it: the browser of a browser_version, the OS of an os_version,
-- the country of a region or a city. visitors = distinct visitor ids that day.
CREATE TABLE rollup_visits (
    site_id    integer NOT NULL,
    day        date NOT NULL,
    dimension  text NOT NULL,
    parent     text NOT NULL,
    value      text NOT NULL,
    visitors   bigint NOT NULL,
    visits     bigint NOT NULL,
    bounces    bigint NOT NULL,
    duration_s bigint NOT NULL,
    pageviews  bigint NOT NULL,  -- of these visits (views per visit), not by event time
    PRIMARY KEY (site_id, day, dimension, parent, value)
);

-- Pageviews and custom events by the local day they were received, per event
-- dimension value: '' total, 'page' (pageviews by path), 'event' (custom events by
-- name), 'prop' (custom events by property: parent = key). visitors and visits are
-- distinct visitor and session ids among those events that day.
CREATE TABLE rollup_events (
    site_id   integer NOT NULL,
    day       date NOT NULL,
    dimension text NOT NULL,
    parent    text NOT NULL,
    value     text NOT NULL,
    visitors  bigint NOT NULL,
    visits    bigint NOT NULL,
    pageviews bigint NOT NULL,
    events    bigint NOT NULL,
    PRIMARY KEY (site_id, day, dimension, parent, value)
);

-- Totals per local hour (hourly time series): visits by their start hour, events by
-- their hour. visitors = distinct visitor ids of the visits started that hour.
CREATE TABLE rollup_hours (
    site_id    integer NOT NULL,
    hour       timestamp NOT NULL,  -- local wall-clock hour, in the day's zone
    visitors   bigint NOT NULL,
    visits     bigint NOT NULL,
    bounces    bigint NOT NULL,
    duration_s bigint NOT NULL,
    session_pageviews bigint NOT NULL,
    pageviews  bigint NOT NULL,
    events     bigint NOT NULL,
    PRIMARY KEY (site_id, hour)
);

-- The query layer reads rollup_stale too (a reader runs the same queries); it holds
-- sites and days only, nothing about visitors.
INSERT INTO reader_grants (object, privilege) VALUES
    ('rollup_days', 'SELECT'),
    ('rollup_stale', 'SELECT'),
    ('rollup_visits', 'SELECT'),
    ('rollup_events', 'SELECT'),
    ('rollup_hours', 'SELECT');
SELECT picolytics_grant_reader();
