-- Hostnames (issue #18): the host of each event's page URL, and of each visit's entry
-- and exit pages, for Plausible's event:hostname, visit:entry_page_hostname and
-- visit:exit_page_hostname. A site may receive pages of several hosts (subdomains, a
-- staging host: Plausible's `d` names the site, `u` the page). Stored as ingest
-- normalises a host (ingest/urls.py: lowercase ASCII, no port, no "www."); nothing
-- else of the URL is kept that was not kept before. The entry and exit hosts follow
-- the entry and exit paths (storage/writer.py). Rows stored before this migration
-- keep '' (unknown): adding a column with a constant default rewrites no table.
ALTER TABLE events ADD COLUMN hostname text NOT NULL DEFAULT '';
ALTER TABLE sessions ADD COLUMN entry_hostname text NOT NULL DEFAULT '';
ALTER TABLE sessions ADD COLUMN exit_hostname text NOT NULL DEFAULT '';

-- The roller now writes rollup_events rows of the dimension 'hostname' (pageviews and
-- custom events, the rows of the total '') and rollup_visits and rollup_segment_visits
-- rows of 'entry_page_hostname' and 'exit_page_hostname'. Every event and visit of a
-- day rolled (or of an open day's prefix rolled) before this migration has the host
-- '', so the rows the roller would write for it are its totals (dimension '') under
-- the value '': added here, as sql/0013_channels.sql did for channels, so rolled days
-- and prefixes answer exactly as their raw rows do and no day needs rolling again.
INSERT INTO rollup_events (site_id, day, dimension, parent, value,
                           visitors, visits, pageviews, events)
SELECT site_id, day, 'hostname', '', '', visitors, visits, pageviews, events
FROM rollup_events
WHERE dimension = '';

INSERT INTO rollup_visits (site_id, day, dimension, parent, value,
                           visitors, visits, bounces, duration_s, pageviews)
SELECT r.site_id, r.day, d.dimension, '', '',
       r.visitors, r.visits, r.bounces, r.duration_s, r.pageviews
FROM rollup_visits r
CROSS JOIN (VALUES ('entry_page_hostname'), ('exit_page_hostname')) AS d (dimension)
WHERE r.dimension = '';

INSERT INTO rollup_segment_events (site_id, day, segment, segment_value, dimension, value,
                                   visitors, visits, pageviews, events)
SELECT site_id, day, segment, segment_value, 'hostname', '', visitors, visits, pageviews, events
FROM rollup_segment_events
WHERE dimension = '';

INSERT INTO rollup_segment_visits (site_id, day, segment, segment_value, dimension, parent,
                                   value, visitors, visits, bounces, duration_s, pageviews)
SELECT r.site_id, r.day, r.segment, r.segment_value, d.dimension, '', '',
       r.visitors, r.visits, r.bounces, r.duration_s, r.pageviews
FROM rollup_segment_visits r
CROSS JOIN (VALUES ('entry_page_hostname'), ('exit_page_hostname')) AS d (dimension)
WHERE r.dimension = '';

-- And the split counts of sql/0019_segment_splits.sql under those totals rows.
INSERT INTO rollup_segment_splits (site_id, day, segment, grain, dimension, parent, value,
                                   segment_values, visitors)
SELECT s.site_id, s.day, s.segment, s.grain, d.dimension, '', '', s.segment_values, s.visitors
FROM rollup_segment_splits s
JOIN (VALUES ('visits', 'entry_page_hostname'), ('visits', 'exit_page_hostname'),
             ('events', 'hostname')) AS d (grain, dimension) ON d.grain = s.grain
WHERE s.dimension = '';
