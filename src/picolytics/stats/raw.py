"""The raw path: plain SQL over `sessions` and `events`, the definition every answer
must equal (docs/read-model.md, What the numbers mean).

Each grain is one SELECT over the rows of some time ranges, grouped per site and
local day (or local hour for an hourly series) and breakdown value (and parent: the
value's own parent, or a second dimension's value): visitors and visits are distinct
ids per site and day, so they add up over days exactly as the rollups' daily counts
do. By two dimensions of which one is a visit dimension, each event is grouped by
its visit's value, and events of sessions that are no visit are left out. The query
layer runs it for a whole period, or for the parts of a period the rollups do not
hold (stats/rollups.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from picolytics.dimensions import (
    EVENT_COLUMNS,
    EVENT_DIMENSIONS,
    EVENT_ROWS,
    PARENT_OF,
    VISIT_COLUMNS,
    VISIT_DIMENSIONS,
    Dimension,
)
from picolytics.stats.filters import event_condition, needs_visit, visit_condition
from picolytics.stats.query import Query
from picolytics.stats.shape import Shape
from picolytics.stats.sql import (
    COUNTED_EVENT,
    Params,
    Range,
    in_ranges,
    local_key,
    part,
    with_prop_key,
)

# The sums of the visit grain over visits `s` (sessions with a pageview), but visitors.
VISIT_SUMS: Final = {
    "visits": "count(*)",
    "bounces": "count(*) FILTER (WHERE s.bounce)",
    "duration_s": "sum(s.duration_s)::bigint",
    "session_pageviews": "sum(s.pageviews)::bigint",
}
# A visit breakdown's `events`: the pageviews and custom events of each visit, whenever
# received (within [started_at, last_seen_at], which bounds the partitions read).
_EVENTS_OF_VISIT = f"""
LEFT JOIN LATERAL (
    SELECT count(*) AS events FROM events e
    WHERE e.site_id = s.site_id AND e.session_id = s.session_id
      AND e.received_at >= s.started_at AND e.received_at <= s.last_seen_at
      AND {COUNTED_EVENT}
) AS ev ON true"""
# An event's visit, for a filter on a visit dimension: none when the session has no
# pageview (then it is not a visit).
VISIT_OF_EVENT = """
LEFT JOIN sessions s
       ON s.site_id = e.site_id AND s.session_id = e.session_id AND s.pageviews > 0"""


def raw_parts(query: Query, shape: Shape, ranges: Sequence[Range], params: Params) -> list[str]:
    """The parts (stats/sql.py, PART_COLUMNS) of the query over the raw rows of `ranges`."""
    tz = params.add(query.period.timezone, cast="::text")
    parts = []
    if shape.visit_grain:
        parts.append(_visit_part(query, shape, ranges, tz, params))
    if shape.event_grain:
        parts.append(_event_part(query, shape, ranges, tz, params))
    return parts


def _visit_part(
    query: Query, shape: Shape, ranges: Sequence[Range], tz: str, params: Params
) -> str:
    columns = {
        "k": local_key("s.started_at", tz, shape.hourly),
        "parent": "''",
        "value": "''",
        "visitors": "count(DISTINCT s.visitor_id)",
        **VISIT_SUMS,
    }
    joins = ""
    if shape.by_visit_dimension:
        dimension = shape.dimension
        assert dimension in VISIT_DIMENSIONS
        columns["value"] = VISIT_COLUMNS[dimension]
        parent = PARENT_OF.get(dimension)
        if parent:
            columns["parent"] = VISIT_COLUMNS[parent]
        if shape.then is not None:  # a visit dimension too (shape.py)
            then = shape.then.dimension
            assert then in VISIT_DIMENSIONS
            columns["parent"] = VISIT_COLUMNS[then]
        # By a visit dimension, pageviews are those of the visits (docs/read-model.md).
        columns["pageviews"] = "sum(s.pageviews)::bigint"
        if shape.visit_events:
            columns["events"] = "sum(ev.events)::bigint"
            joins = _EVENTS_OF_VISIT
    where = [in_ranges("s.site_id", "s.started_at", ranges, params), "s.pageviews > 0"]
    if query.filters is not None:
        where.append(visit_condition(query.filters, params))
    from_where = "FROM sessions s" + joins + "\nWHERE " + "\n  AND ".join(where)
    return part(columns, from_where, "s.site_id")


def _event_part(
    query: Query, shape: Shape, ranges: Sequence[Range], tz: str, params: Params
) -> str:
    columns = {
        "k": local_key("e.received_at", tz, shape.hourly),
        "parent": "''",
        "value": "''",
        "pageviews": f"count(*) FILTER (WHERE {EVENT_ROWS['page']})",
        "events": "count(*)",
    }
    rows = [COUNTED_EVENT]
    joins = VISIT_OF_EVENT if needs_visit(query.filters) else ""
    grouped: list[tuple[str, Dimension | None, str | None]] = [
        ("value", shape.dimension, shape.prop_key)
    ]
    if shape.then is not None:
        grouped.append(("parent", shape.then.dimension, shape.then.prop_key))
    if shape.by_event_dimension or shape.then is not None:
        rows = []
        for column, dimension, key in grouped:
            if dimension in VISIT_DIMENSIONS:  # the value of the event's visit
                columns[column] = VISIT_COLUMNS[dimension]
                rows.append("s.session_id IS NOT NULL")
                joins = VISIT_OF_EVENT
                continue
            assert dimension in EVENT_DIMENSIONS
            value = with_prop_key(EVENT_COLUMNS[dimension], key, params)
            # A property whose value is JSON null has no text, and no rollup row either.
            rows.append(
                f"({with_prop_key(EVENT_ROWS[dimension], key, params)} AND {value} IS NOT NULL)"
            )
            columns[column] = value
        columns["visitors"] = "count(DISTINCT e.visitor_id)"
        columns["visits"] = "count(DISTINCT e.session_id)"
    where = [in_ranges("e.site_id", "e.received_at", ranges, params), *rows]
    if query.filters is not None:
        where.append(event_condition(query.filters, params))
    from_where = "FROM events e" + joins + "\nWHERE " + "\n  AND ".join(where)
    return part(columns, from_where, "e.site_id")
