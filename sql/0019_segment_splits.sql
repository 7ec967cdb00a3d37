-- Exact visitors on days a segment splits a visitor (docs/read-model.md, Filtered
-- queries). The visitors of several segment values add up only where no visitor has
-- two of them; until now such days were read raw, and once their raw rows were pruned
-- (PRUNE_DAYS) a filtered query found nothing there. A split visitor is counted once
-- per matching value in the segment rollups, so a query subtracts, per split visitor,
-- the number of its values the filter keeps, less one. This table holds what that
-- needs and nothing about anyone: per day, segment and (dimension, parent, value) of
-- the rollup row, each *set* of segment values that visitors had there (two or more,
-- sorted), and how many visitors had exactly that set. `grain` says which rollup it
-- corrects: 'visits' (rollup_segment_visits) or 'events' (rollup_segment_events).
CREATE TABLE rollup_segment_splits (
    site_id        integer NOT NULL,
    day            date NOT NULL,
    segment        text NOT NULL,
    grain          text NOT NULL CHECK (grain IN ('visits', 'events')),
    dimension      text NOT NULL,
    parent         text NOT NULL,
    value          text NOT NULL,
    segment_values text[] NOT NULL CHECK (cardinality(segment_values) > 1),
    visitors       bigint NOT NULL,
    PRIMARY KEY (site_id, day, segment, grain, dimension, parent, value, segment_values)
);

-- Days rolled with their split counts: a filtered query may read those from the
-- segment rollups even where the segment splits a visitor. Days rolled before this
-- migration are read raw there, as before, until rolled again.
ALTER TABLE rollup_days ADD COLUMN segment_splits boolean NOT NULL DEFAULT false;

-- Counts of value sets per day: nothing about a visitor.
INSERT INTO reader_grants (object, privilege) VALUES ('rollup_segment_splits', 'SELECT');
SELECT picolytics_grant_reader();
