-- Channels (docs/channels.md): each visit's acquisition channel as Plausible names it
-- ("Organic Search", "Direct", ...), decided in Python when the visit's first event is
-- enriched (enrich/channels.py) and stored with the visit's other first-event fields.
-- Visits stored before this migration keep '' (shown as "(not set)"): the rules and
-- the list of sites live in Python only, so no SQL copy of them can drift.
ALTER TABLE sessions ADD COLUMN channel text NOT NULL DEFAULT '';

-- The roller now writes rollup_visits and rollup_segment_visits rows of the dimension
-- 'channel'. Every visit of a day rolled before this migration has channel '', so the
-- rows it would write for such a day are the day's totals (dimension '') under the
-- value '': added here, so rolled days answer a channel breakdown exactly as their raw
-- rows do, and no day needs rolling again.
INSERT INTO rollup_visits (site_id, day, dimension, parent, value,
                           visitors, visits, bounces, duration_s, pageviews)
SELECT site_id, day, 'channel', '', '', visitors, visits, bounces, duration_s, pageviews
FROM rollup_visits
WHERE dimension = '';

INSERT INTO rollup_segment_visits (site_id, day, segment, segment_value, dimension, parent,
                                   value, visitors, visits, bounces, duration_s, pageviews)
SELECT site_id, day, segment, segment_value, 'channel', '', '',
       visitors, visits, bounces, duration_s, pageviews
FROM rollup_segment_visits
WHERE dimension = '';
