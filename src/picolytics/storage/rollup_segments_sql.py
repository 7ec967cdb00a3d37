"""The statements of `roll_day` for the segment rollups (sql/0008_segment_rollups.sql):
the day's visits and counted events once more per value of each segment dimension
(dimensions.SEGMENTS), which segments split a visitor that day, and the sets of
values the split visitors had (rollup_segment_splits, sql/0019_segment_splits.sql).

As in storage/rollup_sql.py every row is unpivoted (LATERAL) once per dimension, in
one statement per segment. Distinct visitors and visits are counted by grouping on the
id first and counting the groups after, one sort instead of one per count(DISTINCT).
"""

from __future__ import annotations

from typing import Final

from picolytics.dimensions import (
    EVENT_ROWS,
    PARENT_OF,
    SEGMENTS,
    VISIT_COLUMNS,
    VISIT_DIMENSIONS,
    VisitDimension,
)
from picolytics.storage.rollup_sql import COUNTED, EVENTS_OF_DAY, VISITS_OF_DAY

_SEGMENTS_ARRAY: Final = "ARRAY[" + ", ".join(f"'{segment}'" for segment in SEGMENTS) + "]"
_SEGMENT_COLUMNS: Final = ", ".join(f"{VISIT_COLUMNS[s]} AS {s}" for s in SEGMENTS)


def _dimension_values() -> str:
    """(dimension, parent, value) rows of a visit, '' for the day's total."""
    rows = ["('', '', '')"]
    for dimension in VISIT_DIMENSIONS:
        parent = PARENT_OF.get(dimension)
        parent_sql = VISIT_COLUMNS[parent] if parent else "''"
        rows.append(f"('{dimension}', {parent_sql}, {VISIT_COLUMNS[dimension]})")
    return ",\n           ".join(rows)


DELETE_SEGMENT_VISITS: Final = (
    "DELETE FROM rollup_segment_visits WHERE site_id = %(site_id)s AND day = %(day)s"
)
DELETE_SEGMENT_EVENTS: Final = (
    "DELETE FROM rollup_segment_events WHERE site_id = %(site_id)s AND day = %(day)s"
)


def _roll_segment_visits(segment: VisitDimension) -> str:
    """The day's visits per value of `segment` and of every other visit dimension.
    Grouping by (..., visitor) first leaves one row per visitor and values, so
    visitors = count(*) after."""
    return f"""
INSERT INTO rollup_segment_visits (site_id, day, segment, segment_value, dimension, parent,
                                   value, visitors, visits, bounces, duration_s, pageviews)
SELECT %(site_id)s, %(day)s, '{segment}', segment_value, dimension, parent, value,
       count(*), sum(visits), sum(bounces), sum(duration_s), sum(pageviews)
FROM (SELECT {VISIT_COLUMNS[segment]} AS segment_value, d.dimension, d.parent, d.value,
             s.visitor_id, count(*) AS visits, count(*) FILTER (WHERE s.bounce) AS bounces,
             sum(s.duration_s) AS duration_s, sum(s.pageviews) AS pageviews
      FROM sessions s
      CROSS JOIN LATERAL (
          VALUES {_dimension_values()}
      ) AS d (dimension, parent, value)
      WHERE {VISITS_OF_DAY} AND d.dimension <> '{segment}'
      GROUP BY 1, 2, 3, 4, 5) per_visitor
GROUP BY segment_value, dimension, parent, value
"""


# The day's counted events per segment value of their visit, in total, by page and by
# host,
# all segments in one statement (the join of events to visits is the costly part):
# per visitor and visit first, so visits are a count of groups.
_SEGMENT_VALUES: Final = ",\n           ".join(
    f"('{segment}', {VISIT_COLUMNS[segment]})" for segment in SEGMENTS
)
# The event dimensions of the segment event rollups, of an event `e` (name, path,
# hostname): the total, the page of a pageview, the host of a counted event.
_EVENT_VALUES: Final = f"""
          SELECT '', '' WHERE {COUNTED}
          UNION ALL
          SELECT 'page', e.path WHERE {EVENT_ROWS["page"]}
          UNION ALL
          SELECT 'hostname', e.hostname WHERE {COUNTED}"""
ROLL_SEGMENT_EVENTS: Final = f"""
INSERT INTO rollup_segment_events (site_id, day, segment, segment_value, dimension, value,
                                   visitors, visits, pageviews, events)
SELECT %(site_id)s, %(day)s, segment, segment_value, dimension, value,
       count(DISTINCT visitor_id), count(*), sum(pageviews), sum(events)
FROM (SELECT g.segment, g.segment_value, d.dimension, d.value, s.visitor_id, s.session_id,
             count(*) FILTER (WHERE {EVENT_ROWS["page"]}) AS pageviews, count(*) AS events
      FROM events e
      JOIN sessions s
        ON s.site_id = e.site_id AND s.session_id = e.session_id AND s.pageviews > 0
      CROSS JOIN LATERAL (
          VALUES {_SEGMENT_VALUES}
      ) AS g (segment, segment_value)
      CROSS JOIN LATERAL ({_EVENT_VALUES}
      ) AS d (dimension, value)
      WHERE {EVENTS_OF_DAY}
      GROUP BY 1, 2, 3, 4, 5, 6) per_visit
GROUP BY segment, segment_value, dimension, value
"""

DELETE_SEGMENT_SPLITS: Final = (
    "DELETE FROM rollup_segment_splits WHERE site_id = %(site_id)s AND day = %(day)s"
)


def _roll_visit_splits(segment: VisitDimension) -> str:
    """Per (dimension, parent, value) of rollup_segment_visits, each set of two or more
    values of `segment` a visitor had there, and how many visitors had it. Only the
    visitors with two values of it that day can have one: those are found first, in
    one pass over the day's visits, and only their visits are unpivoted."""
    column = VISIT_COLUMNS[segment]
    return f"""
INSERT INTO rollup_segment_splits (site_id, day, segment, grain, dimension, parent, value,
                                   segment_values, visitors)
SELECT %(site_id)s, %(day)s, '{segment}', 'visits', dimension, parent, value, segment_values,
       count(*)
FROM (SELECT d.dimension, d.parent, d.value, s.visitor_id,
             array_agg(DISTINCT {column} ORDER BY {column}) AS segment_values
      FROM sessions s
      CROSS JOIN LATERAL (
          VALUES {_dimension_values()}
      ) AS d (dimension, parent, value)
      WHERE {VISITS_OF_DAY} AND d.dimension <> '{segment}'
        AND s.visitor_id IN (SELECT s.visitor_id FROM sessions s WHERE {VISITS_OF_DAY}
                             GROUP BY s.visitor_id HAVING count(DISTINCT {column}) > 1)
      GROUP BY 1, 2, 3, 4
      HAVING count(DISTINCT {column}) > 1) per_visitor
GROUP BY dimension, parent, value, segment_values
"""


# The same for rollup_segment_events: the sets of segment values of the visits in which
# a visitor had the day's counted events (in total, '', or of a host) or pageviews of a
# page.
ROLL_EVENT_SPLITS: Final = f"""
WITH events_of_day AS (
    SELECT s.visitor_id, e.name, e.path, e.hostname, {_SEGMENT_COLUMNS}
    FROM events e
    JOIN sessions s
      ON s.site_id = e.site_id AND s.session_id = e.session_id AND s.pageviews > 0
    WHERE {EVENTS_OF_DAY} AND {COUNTED}
), split AS (  -- a visitor with two values of some segment among them
    SELECT visitor_id FROM events_of_day
    GROUP BY visitor_id HAVING count(DISTINCT ({", ".join(SEGMENTS)})) > 1
)
INSERT INTO rollup_segment_splits (site_id, day, segment, grain, dimension, parent, value,
                                   segment_values, visitors)
SELECT %(site_id)s, %(day)s, segment, 'events', dimension, '', value, segment_values, count(*)
FROM (SELECT g.segment, d.dimension, d.value, e.visitor_id,
             array_agg(DISTINCT g.segment_value ORDER BY g.segment_value) AS segment_values
      FROM events_of_day e
      CROSS JOIN LATERAL (
          VALUES {", ".join(f"('{s}', e.{s})" for s in SEGMENTS)}
      ) AS g (segment, segment_value)
      CROSS JOIN LATERAL ({_EVENT_VALUES}
      ) AS d (dimension, value)
      WHERE e.visitor_id IN (SELECT visitor_id FROM split)
      GROUP BY 1, 2, 3, 4
      HAVING count(DISTINCT g.segment_value) > 1) per_visitor
GROUP BY segment, dimension, value, segment_values
"""

# The visits, one statement per segment: each sorts a fifth of the unpivot, in memory.
ROLL_SEGMENTS: Final = (
    *(_roll_segment_visits(s) for s in SEGMENTS),
    ROLL_SEGMENT_EVENTS,
    *(_roll_visit_splits(s) for s in SEGMENTS),
    ROLL_EVENT_SPLITS,
)

# After MARK_ROLLED: the segments the day has, and those for which a visitor id has
# two values among the day's visits, or among the visits of the day's counted events.
MARK_SEGMENTS: Final = f"""
WITH visits_of_day AS (
    SELECT s.visitor_id, {_SEGMENT_COLUMNS}
    FROM sessions s
    WHERE {VISITS_OF_DAY}
    UNION ALL
    SELECT s.visitor_id, {_SEGMENT_COLUMNS}
    FROM sessions s
    WHERE s.site_id = %(site_id)s AND s.pageviews > 0 AND s.session_id IN (
        SELECT e.session_id FROM events e WHERE {EVENTS_OF_DAY} AND {COUNTED})
), per_visitor AS (
    SELECT {", ".join(f"count(DISTINCT {s}) > 1 AS {s}" for s in SEGMENTS)}
    FROM visits_of_day
    GROUP BY visitor_id
), split AS (
    SELECT {", ".join(f"coalesce(bool_or({s}), false) AS {s}" for s in SEGMENTS)}
    FROM per_visitor
)
UPDATE rollup_days
SET segments = {_SEGMENTS_ARRAY},
    segment_splits = true,
    split_segments = array_remove(
        ARRAY[{", ".join(f"CASE WHEN split.{s} THEN '{s}' END" for s in SEGMENTS)}]::text[],
        NULL)
FROM split
WHERE site_id = %(site_id)s AND day = %(day)s
"""
