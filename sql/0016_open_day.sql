-- The open day from rollups too (docs/read-model.md, "The open day"): a *prefix
-- rollup* of a local day that is not closed yet holds the same sums as a day's rollup,
-- in the same tables (rollup_visits, rollup_events, rollup_hours under the day), over
-- the visits of the day that ended before `until` (last_seen_at < until) and the
-- events received before `until`. A query adds the rest (the *tail*) from raw rows.
-- A day is in rollup_prefix or in rollup_days, never both: rolling the whole day
-- drops its prefix in the same transaction.
CREATE TABLE rollup_prefix (
    site_id   integer NOT NULL REFERENCES sites (site_id),
    day       date NOT NULL,
    timezone  text NOT NULL,
    until     timestamptz NOT NULL,  -- an hour boundary, ROLL_DELAY old when rolled
    rolled_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site_id, day)
);

-- The tail's visitors: a tail visit's visitor counts only if the same visitor id has
-- no visit in the prefix; this finds a visitor's few visits (ids change every UTC day).
CREATE INDEX sessions_site_visitor ON sessions (site_id, visitor_id);

-- Late writes are marked in the site's current zone (storage/writer.py). After a zone
-- change and back, a prefix of the old zone could have changed without a mark in its
-- own days: a zone change drops the site's prefixes (the roller rolls them again).
-- storage/sites_admin.py does so in the change's transaction, not a trigger on sites:
-- on Citus sites is a reference table, and a trigger there cannot delete from the
-- distributed rollup_prefix.

-- Sites, days and instants only, nothing about visitors.
INSERT INTO reader_grants (object, privilege) VALUES ('rollup_prefix', 'SELECT');
SELECT picolytics_grant_reader();
