"""The open day from rollups too (docs/read-model.md, "The open day"): a day with a
prefix rollup (storage/rollup_prefix.py) is read as its prefix's rollup rows plus a
*tail* from raw rows, which add up to the day's raw rows exactly.

The prefix of day D holds D's visits with last_seen_at < until, and D's events
received before `until` (in rollup_hours) and before `events_until` (in rollup_events,
which answers breakdowns by page, event and prop and the event totals of days, weeks
and months: events never change once written, so they reach closer to now); the tail
holds D's other visits (last_seen_at >= until, found by the index
sessions_site_last_seen) and the events received from the cut of the rollup they add
to, to the end of D or of the period. Visits, bounces, durations and pageviews
and events add. Visitors do not: a tail visit's visitor counts only if the same
visitor id has no visit in the prefix in the same bucket (local day, or local hour
for an hourly series) and, for a breakdown, with the same value (found by the index
sessions_site_visitor of sql/0016_open_day.sql).

Used for totals, day/week/month and hourly series and breakdowns by a visit
dimension, and (stats/prefix_events.py) by page, event, prop and goal, without
filters; filtered queries read such a day raw. A prefix is used only when the day is
whole in the period up to its cuts (it starts at or after the period's start,
`events_until` is at or before its end), rolled in the query's zone, which is the
site's, and its day is not stale.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import Any, Final

from psycopg import AsyncConnection
from psycopg.rows import tuple_row

from picolytics.dimensions import PARENT_OF, VISIT_COLUMNS, VISIT_DIMENSIONS
from picolytics.stats.prefix_events import event_tail, goal_tail
from picolytics.stats.query import Query
from picolytics.stats.raw import VISIT_SUMS, raw_parts
from picolytics.stats.shape import Shape
from picolytics.stats.sql import Params, Range, local_key, part
from picolytics.storage.goals import Goal

USABLE_PREFIXES: Final = """
SELECT p.site_id, p.day, p.until, p.events_until,
       p.day::timestamp AT TIME ZONE %(tz)s AS day_start,
       (p.day + 1)::timestamp AT TIME ZONE %(tz)s AS day_end
FROM rollup_prefix p
JOIN sites s ON s.site_id = p.site_id AND s.timezone = p.timezone
WHERE p.site_id = ANY(%(sites)s::integer[]) AND p.timezone = %(tz)s
  AND p.day >= (%(start)s::timestamptz AT TIME ZONE %(tz)s)::date
  AND p.day <= (%(end)s::timestamptz AT TIME ZONE %(tz)s)::date
  AND p.day::timestamp AT TIME ZONE %(tz)s >= %(start)s::timestamptz
  AND p.events_until <= %(end)s::timestamptz
  AND NOT EXISTS (SELECT FROM rollup_stale x WHERE x.site_id = p.site_id AND x.day = p.day)
  AND NOT EXISTS (SELECT FROM rollup_days d WHERE d.site_id = p.site_id AND d.day = p.day)
ORDER BY p.site_id, p.day
"""


@dataclass(frozen=True, slots=True)
class Prefix:
    """A day read from its prefix rollup plus its tail: [start, end) is the day within
    the period, `until` where the prefix's visits and hours end, `events_until` where
    its rollup_events rows end."""

    site_id: int
    day: date
    start: datetime
    end: datetime
    until: datetime
    events_until: datetime

    def bounds(self, events: bool) -> tuple[datetime, datetime, datetime]:
        """The day's start, the tail's end and the cut of the rollup rows the tail adds
        to: those of rollup_events (`events`) or of the visits and hours."""
        return (self.start, self.end, self.events_until if events else self.until)


def prefix_shaped(query: Query, shape: Shape) -> bool:
    """May a prefix and its tail answer this query's open day? Unfiltered, where the
    rollups may (a breakdown by goal: where its goals of one row each may,
    stats/engine.py), and never an hourly breakdown (the tails count per local day)."""
    return (
        (shape.rollups or shape.dimension == "goal")
        and query.filters is None
        and shape.segment is None
        and not (shape.hourly and shape.dimension is not None)
    )


async def usable_prefixes(
    connection: AsyncConnection[Any], query: Query, sites: Sequence[int]
) -> tuple[Prefix, ...]:
    """The prefixes that may answer days of the query's period (in its snapshot)."""
    period = query.period
    cursor = connection.cursor(row_factory=tuple_row)
    await cursor.execute(
        USABLE_PREFIXES,
        {
            "tz": period.timezone,
            "sites": list(sites),
            "start": period.start,
            "end": period.end,
        },
    )
    return tuple(
        Prefix(site_id, day, day_start, min(day_end, period.end), until, events_until)
        for site_id, day, until, events_until, day_start, day_end in await cursor.fetchall()
    )


def _on_p(expression: str) -> str:
    """A visit expression of dimensions.py over the prefix's visit `p` instead of `s`."""
    return re.sub(r"\bs\.", "p.", expression)


def _visit_tail(
    shape: Shape, sites: list[int], bounds: tuple[datetime, datetime, datetime], tz: str,
    params: Params,
) -> str:  # fmt: skip
    start, end, until = (params.add(moment) for moment in bounds)
    key = local_key("s.started_at", tz, shape.hourly)
    # The same visitor's visits in the prefix, in the same bucket (and value).
    same = [
        "p.site_id = s.site_id",
        "p.visitor_id = s.visitor_id",
        "p.pageviews > 0",
        f"p.last_seen_at < {until}",
        f"p.started_at >= {start}",
        f"p.started_at < {until}",
        f"{local_key('p.started_at', tz, shape.hourly)} = {key}",
    ]
    columns = {"k": key, "parent": "''", "value": "''"}
    if shape.by_visit_dimension:
        dimension = shape.dimension
        assert dimension in VISIT_DIMENSIONS
        columns["value"] = VISIT_COLUMNS[dimension]
        same.append(f"{_on_p(VISIT_COLUMNS[dimension])} IS NOT DISTINCT FROM {columns['value']}")
        parent = PARENT_OF.get(dimension)
        if parent:
            columns["parent"] = VISIT_COLUMNS[parent]
            same.append(f"{_on_p(VISIT_COLUMNS[parent])} IS NOT DISTINCT FROM {columns['parent']}")
        columns["pageviews"] = "sum(s.pageviews)::bigint"  # those of the visits
    in_prefix = "SELECT FROM sessions p WHERE " + "\n      AND ".join(same)
    columns |= {
        "visitors": f"count(DISTINCT s.visitor_id) FILTER (WHERE NOT EXISTS (\n    {in_prefix}))",
        **VISIT_SUMS,
    }
    where = [
        f"s.site_id = ANY({params.add(sites, cast='::integer[]')})",
        f"s.last_seen_at >= {until}",
        f"s.started_at >= {start}",
        f"s.started_at < {end}",
        "s.pageviews > 0",
    ]
    return part(columns, "FROM sessions s\nWHERE " + "\n  AND ".join(where), "s.site_id")


def open_day_parts(
    query: Query, shape: Shape, prefixes: Sequence[Prefix], params: Params
) -> list[str]:
    """The tails of the prefixed days as parts (stats/sql.py, PART_COLUMNS); the
    prefixes' own rows are rollup parts (stats/rollups.py, rollup_parts)."""
    tz = params.add(query.period.timezone, cast="::text")
    parts = []
    if shape.visit_grain:
        parts += [
            _visit_tail(shape, sites, bounds, tz, params)
            for bounds, sites in _by_bounds(prefixes, events=False)
        ]
    # An hourly series reads rollup_hours, cut at `until`; the rest rollup_events.
    events = not shape.hourly
    if shape.event_grain and shape.by_event_dimension:  # distinct ids over events
        parts += [
            event_tail(shape, sites, bounds, tz, params)
            for bounds, sites in _by_bounds(prefixes, events=events)
        ]
    elif shape.event_grain:
        ranges = [
            Range(tuple(sites), cut, end)
            for (_, end, cut), sites in _by_bounds(prefixes, events=events)
        ]
        if ranges:  # the events received from the cut on: plain raw rows
            parts += raw_parts(query, replace(shape, visit_grain=False), ranges, params)
    return parts


def goal_tails(
    query: Query, prefixes: Sequence[Prefix], params: Params, goals: Sequence[Goal]
) -> list[str]:
    """The tails of the prefixed days of a breakdown by goal, for goals of one rollup
    row each; the prefixes' own rows are goal_parts.goal_rollup_part's (rollup_events)."""
    tz = params.add(query.period.timezone, cast="::text")
    return [
        goal_tail(sites, bounds, tz, params, goals)
        for bounds, sites in _by_bounds(prefixes, events=True)
    ]


def _by_bounds(
    prefixes: Sequence[Prefix], *, events: bool
) -> list[tuple[tuple[datetime, datetime, datetime], list[int]]]:
    """The prefixes' sites grouped by their bounds (Prefix.bounds), each group one tail."""
    grouped: dict[tuple[datetime, datetime, datetime], list[int]] = defaultdict(list)
    for prefix in prefixes:
        grouped[prefix.bounds(events)].append(prefix.site_id)
    return sorted((bounds, sorted(sites)) for bounds, sites in grouped.items())
