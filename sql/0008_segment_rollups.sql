-- Segment rollups (docs/read-model.md, Filtered queries): the rollups of 0006 once more,
-- per value of one *segment* dimension (dimensions.SEGMENTS: the dimensions people
-- filter by most), so a query filtered on a segment reads days and distinct values,
-- not raw rows. A day rolled before this migration has none: filtered queries read it
-- raw (the same numbers) until it is rolled again (`picolytics rollup --rebuild`).

-- Visits (sessions with a pageview) of the local day per segment value and dimension
-- value, as rollup_visits; never a dimension with itself (rollup_visits has those).
CREATE TABLE rollup_segment_visits (
    site_id       integer NOT NULL,
    day           date NOT NULL,
    segment       text NOT NULL,
    segment_value text NOT NULL,
    dimension     text NOT NULL,
    parent        text NOT NULL,
    value         text NOT NULL,
    visitors      bigint NOT NULL,
    visits        bigint NOT NULL,
    bounces       bigint NOT NULL,
    duration_s    bigint NOT NULL,
    pageviews     bigint NOT NULL,
    PRIMARY KEY (site_id, day, segment, dimension, segment_value, parent, value)
);

-- Pageviews and custom events of the local day whose visit has the segment value (an
-- event of a session without pageview has no visit, so none), as rollup_events for
-- the dimensions '' (total) and 'page'.
CREATE TABLE rollup_segment_events (
    site_id       integer NOT NULL,
    day           date NOT NULL,
    segment       text NOT NULL,
    segment_value text NOT NULL,
    dimension     text NOT NULL,
    value         text NOT NULL,
    visitors      bigint NOT NULL,
    visits        bigint NOT NULL,
    pageviews     bigint NOT NULL,
    events        bigint NOT NULL,
    PRIMARY KEY (site_id, day, segment, dimension, segment_value, value)
);

-- Which segments a rolled day has rollups of (none for days rolled before), and which
-- of them split a visitor: a visitor id with two values of the segment that day
-- (visits from two sources, say), among the day's visits or the visits of its events.
-- Where a segment splits no visitor, the visitors of several segment values add up.
ALTER TABLE rollup_days
    ADD COLUMN segments       text[] NOT NULL DEFAULT '{}',
    ADD COLUMN split_segments text[] NOT NULL DEFAULT '{}';

INSERT INTO reader_grants (object, privilege) VALUES
    ('rollup_segment_visits', 'SELECT'),
    ('rollup_segment_events', 'SELECT');
SELECT picolytics_grant_reader();
