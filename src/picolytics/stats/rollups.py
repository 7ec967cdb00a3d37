"""The rollup path: which days of a period the rollups may answer, the time ranges
left to the raw path, and the rollup rows as parts of a query (docs/read-model.md,
How it is kept fast).

A day is read from rollups when it is a whole local day of the period, rolled in the
query's zone, and not stale; the open day, from its prefix rollup and a raw tail,
when it has one and the query may (stats/prefix.py). The days and their instants
come from PostgreSQL (`day::timestamp AT TIME ZONE zone`, as storage/rollup_sql.py
rolls them), so the rolled days and the raw ranges tile the period exactly, whatever
the zone database of this process says. Both come from one snapshot (stats/engine.py
runs every statement of a query in one REPEATABLE READ transaction).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import tuple_row

from picolytics.stats.filters import value_condition
from picolytics.stats.prefix import Prefix, prefix_shaped, usable_prefixes
from picolytics.stats.query import Query
from picolytics.stats.shape import Shape
from picolytics.stats.sql import COMPONENTS, Params, Range, part

USABLE_DAYS = """
SELECT d.site_id, d.day,
       d.day::timestamp AT TIME ZONE %(tz)s AS day_start,
       (d.day + 1)::timestamp AT TIME ZONE %(tz)s AS day_end
FROM rollup_days d
-- Only days rolled in the site's own zone: late writes mark the days of that zone
-- (storage/writer.py), so a day rolled in a zone the site has left could be stale
-- without a mark.
JOIN sites s ON s.site_id = d.site_id AND s.timezone = d.timezone
WHERE d.site_id = ANY(%(sites)s::integer[]) AND d.timezone = %(tz)s
  AND d.day >= (%(start)s::timestamptz AT TIME ZONE %(tz)s)::date
  AND d.day <= (%(end)s::timestamptz AT TIME ZONE %(tz)s)::date
  AND d.day::timestamp AT TIME ZONE %(tz)s >= %(start)s::timestamptz
  AND (d.day + 1)::timestamp AT TIME ZONE %(tz)s <= %(end)s::timestamptz
  AND NOT EXISTS (SELECT FROM rollup_stale x WHERE x.site_id = d.site_id AND x.day = d.day)
  -- A filtered query on a segment: days that have its rollups, and where it splits no
  -- visitor unless the query may add the visitors of several values anyway or the
  -- day has the split counts that correct them (rollup_segment_splits).
  AND (%(campaigns)s IS NOT TRUE OR d.campaigns)
  AND (%(segment)s::text IS NULL
       OR (%(segment)s::text = ANY(d.segments)
           AND (%(any_day)s OR d.segment_splits
                OR NOT %(segment)s::text = ANY(d.split_segments))))
ORDER BY d.site_id, d.day
"""


@dataclass(frozen=True, slots=True)
class Split:
    """A period cut into rolled (site, day) pairs, prefixed days and raw time ranges."""

    rolled: tuple[tuple[int, date], ...]
    raw: tuple[Range, ...]
    prefixes: tuple[Prefix, ...] = ()


async def split_period(
    connection: AsyncConnection[Any], query: Query, shape: Shape, *, campaigns: bool = False
) -> Split:
    """The rolled days and raw ranges of the query's period (`campaigns`: only days
    rolled with their campaign rows, stats/extras.py)."""
    period = query.period
    sites = sorted(set(query.site_ids))
    cursor = connection.cursor(row_factory=tuple_row)
    await cursor.execute(
        USABLE_DAYS,
        {
            "tz": period.timezone,
            "sites": sites,
            "start": period.start,
            "end": period.end,
            "segment": shape.segment,
            "any_day": shape.segment_any_day,
            "campaigns": campaigns,
        },
    )
    rolled: list[tuple[int, date]] = []
    covered: dict[int, list[tuple[datetime, datetime]]] = defaultdict(list)
    for site_id, day, day_start, day_end in await cursor.fetchall():
        rolled.append((site_id, day))
        covered[site_id].append((day_start, day_end))
    prefixes: tuple[Prefix, ...] = ()
    if prefix_shaped(query, shape) and not campaigns:
        prefixes = await usable_prefixes(connection, query, sites)
        for prefix in prefixes:
            covered[prefix.site_id].append((prefix.start, prefix.end))
            covered[prefix.site_id].sort()
    # Sites with the same gaps share one condition of the raw path.
    gaps: dict[tuple[datetime, datetime], list[int]] = defaultdict(list)
    for site_id in sites:
        for gap in _gaps(period.start, period.end, covered[site_id]):
            gaps[gap].append(site_id)
    raw = tuple(Range(tuple(ids), start, end) for (start, end), ids in sorted(gaps.items()))
    return Split(tuple(rolled), raw, prefixes)


def _gaps(
    start: datetime, end: datetime, covered: list[tuple[datetime, datetime]]
) -> list[tuple[datetime, datetime]]:
    """[start, end) less the covered intervals (sorted, disjoint, within it), in UTC."""
    found = []
    cursor = start.astimezone(UTC)
    for covered_start, covered_end in covered:
        if covered_start > cursor:
            found.append((cursor, covered_start.astimezone(UTC)))
        cursor = max(cursor, covered_end.astimezone(UTC))
    if cursor < end:
        found.append((cursor, end.astimezone(UTC)))
    return found


def rollup_parts(
    query: Query, shape: Shape, rolled: tuple[tuple[int, date], ...], params: Params
) -> list[str]:
    """The parts (stats/sql.py, PART_COLUMNS) of the query from the rolled days."""
    days = rolled_days(rolled, params)
    if shape.hourly:
        return [_hours_part(days, shape)]
    parts = []
    if shape.visit_grain:
        parts.append(_dimension_part("rollup_visits", query, shape, days, params))
    if shape.event_grain:
        parts.append(_dimension_part("rollup_events", query, shape, days, params))
    if shape.segment is not None and not shape.segment_any_day:
        parts.append(_split_correction(query, shape, days, params))
    return parts


def rolled_days(rolled: tuple[tuple[int, date], ...], params: Params) -> str:
    """The rolled (site, day) pairs as a relation `u (site_id, day)` to join on."""
    sites = params.add([site for site, _ in rolled], cast="::integer[]")
    days = params.add([day for _, day in rolled], cast="::date[]")
    return f"unnest({sites}, {days}) AS u (site_id, day)"


def _dimension_part(
    table: str, query: Query, shape: Shape, rolled_days: str, params: Params
) -> str:
    visits = table == "rollup_visits"
    if shape.segment is not None:  # the same sums, per value of the filter's segment
        table = "rollup_segment_visits" if visits else "rollup_segment_events"
    columns = {"k": "r.day", "parent": "r.parent", "value": "r.value"}
    if visits:
        columns |= {
            "visitors": "r.visitors",
            "visits": "r.visits",
            "bounces": "r.bounces",
            "duration_s": "r.duration_s",
            "session_pageviews": "r.pageviews",
        }
        if shape.dimension is not None:
            columns["pageviews"] = "r.pageviews"  # the pageviews of those visits
    else:
        columns |= {"pageviews": "r.pageviews", "events": "r.events"}
        if shape.dimension is not None:
            columns |= {"visitors": "r.visitors", "visits": "r.visits"}
    where = [f"r.dimension = {params.add(shape.dimension or '', cast='::text')}"]
    if shape.dimension == "prop":
        columns["parent"] = "''"  # the key is the query's, not a parent value
        where.append(f"r.parent = {params.add(shape.prop_key, cast='::text')}")
    if shape.segment is not None:
        assert query.filters is not None
        if not visits:
            columns["parent"] = "''"  # rollup_segment_events: pages have no parent
        where.append(f"r.segment = {params.add(shape.segment, cast='::text')}")
        where.append(value_condition(query.filters, "r.segment_value", params))
    elif query.filters is not None:
        where.append(value_condition(query.filters, "r.value", params))
    from_where = (
        f"FROM {table} r JOIN {rolled_days} ON r.site_id = u.site_id AND r.day = u.day\n"
        "WHERE " + "\n  AND ".join(where)
    )
    return part(columns, from_where)


def _split_correction(query: Query, shape: Shape, rolled_days: str, params: Params) -> str:
    """The visitors the segment rollup rows count twice (sql/0019_segment_splits.sql):
    a visitor whose set of segment values at a row has k values the filter keeps is
    in k of those rows, so k - 1 are taken off. Days the segment splits no visitor have
    no rows here; a day with split visitors is used only when rolled with its counts
    (USABLE_DAYS). The visitors come from the visit grain's rows, or for a breakdown by
    page or host from the event grain's (as in _dimension_part)."""
    assert query.filters is not None and shape.segment is not None
    by_event = shape.by_event_dimension  # page or host: the event grain's visitors
    kept = value_condition(query.filters, "v.segment_value", params)
    columns = {
        "k": "r.day",
        "parent": "r.parent",
        "value": "r.value",
        "visitors": f"""-(r.visitors * greatest((
           SELECT count(*) FROM unnest(r.segment_values) AS v (segment_value)
           WHERE {kept}) - 1, 0))""",
    }
    where = [
        f"r.segment = {params.add(shape.segment, cast='::text')}",
        f"r.grain = {params.add('events' if by_event else 'visits', cast='::text')}",
        f"r.dimension = {params.add(shape.dimension or '', cast='::text')}",
    ]
    from_where = (
        f"FROM rollup_segment_splits r JOIN {rolled_days}"
        " ON r.site_id = u.site_id AND r.day = u.day\nWHERE " + "\n  AND ".join(where)
    )
    return part(columns, from_where)


def _hours_part(rolled_days: str, shape: Shape) -> str:
    columns = {"k": "h.hour", "parent": "''", "value": "''"}
    columns |= {name: f"h.{name}" for name in COMPONENTS}  # rollup_hours has them all
    # An hour row holds both grains; it is a bucket only where a grain asked for has
    # rows, as on the raw path (an hour with events but no visit start has no visits).
    has_rows = [
        *(["h.visits > 0"] if shape.visit_grain else []),
        *(["h.events > 0"] if shape.event_grain else []),
    ]
    from_where = (
        f"FROM rollup_hours h JOIN {rolled_days}\n"
        "  ON h.site_id = u.site_id AND h.hour >= u.day AND h.hour < u.day + 1\n"
        f"WHERE {' OR '.join(has_rows) or 'true'}"
    )
    return part(columns, from_where)
