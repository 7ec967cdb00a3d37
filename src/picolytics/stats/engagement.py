"""The engagement metrics, `scroll_depth` and `time_on_page`, from raw `engagement`
events (docs/read-model.md, What the numbers mean), as Plausible defines them:

- `scroll_depth`: per visit (and page, in a breakdown by page) the deepest scroll any
  of its engagement events reports (0 to 100 percent; events without one are left
  out), averaged over those visits, to one decimal;
- `time_on_page`: per visit (and page) the engaged time its engagement events add up
  to, averaged over the visits that reported any, in seconds to one decimal.

Both are None where no visit reported one. No rollup holds engagement events, so
these are read raw for the whole period, in one statement per query, which
stats/engagement_merge.py merges per time bucket and value with the answer to the
query's other metrics.

Filters hold for an engagement event as for the pageview of its page: a page
condition is on its path, a visit condition on its visit, a custom event's never.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from typing import Any, Final

from psycopg import AsyncConnection
from psycopg.rows import tuple_row

from picolytics.dimensions import Metric
from picolytics.stats.filters import event_condition, needs_visit, patterns
from picolytics.stats.goal_parts import resolve, uses_goals
from picolytics.stats.goals import load_goals
from picolytics.stats.query import MetricValue, Query
from picolytics.stats.raw import VISIT_OF_EVENT
from picolytics.stats.sql import Params, Range, in_ranges

Key = tuple[Any, str, str | None]  # a row's time bucket, parent and value

_BUCKETS: Final[dict[str | None, str]] = {
    None: "NULL::date",
    "hour": "date_trunc('hour', {local})",
    "day": "({local})::date",
    "week": "date_trunc('week', {local})::date",  # ISO weeks start on Monday
    "month": "date_trunc('month', {local})::date",
}
# An engagement event, seen by the filters as a pageview of its page: the row with
# the name 'load', every other column as it is (whatever columns `events` has).
_ENGAGEMENT_ROWS: Final = """(SELECT v.* FROM events ev
      CROSS JOIN LATERAL jsonb_populate_record(ev, '{{"name": "load"}}'::jsonb) v
      WHERE ev.name = 'engagement' AND {ranges}) e"""
_COMPILE_PATTERNS: Final = "SELECT bool_or('' ~ pattern) FROM unnest(%s::text[]) AS pattern"
_STATEMENT: Final = """
WITH per_visit AS (
    SELECT {bucket} AS time, ''::text AS parent, {value} AS value,
           max(e.scroll_depth) FILTER (WHERE e.scroll_depth BETWEEN 0 AND 100) AS depth,
           sum(e.engaged_ms) FILTER (WHERE e.engaged_ms >= 0) AS engaged_ms
    FROM {rows}{joins}
    WHERE {where}
    GROUP BY e.site_id, e.session_id, 1, 2, 3
)
SELECT time, parent, value,
       round(avg(depth), 1) AS scroll_depth,
       round(avg(engaged_ms) / 1000.0, 1) AS time_on_page
FROM per_visit
GROUP BY 1, 2, 3
"""


def engagement_statement(query: Query, params: Params) -> str:
    """The engagement metrics per time bucket and value (a query validate() accepted:
    no breakdown, or by page)."""
    tz = params.add(query.period.timezone, cast="::text")
    local = f"(e.received_at AT TIME ZONE {tz})"
    whole = Range(tuple(sorted(set(query.site_ids))), query.period.start, query.period.end)
    ranges = in_ranges("ev.site_id", "ev.received_at", (whole,), params)
    by_page = query.breakdown is not None
    where = "true" if query.filters is None else event_condition(query.filters, params)
    return _STATEMENT.format(
        bucket=_BUCKETS[query.interval].format(local=local),
        value="e.path" if by_page else "NULL::text",
        rows=_ENGAGEMENT_ROWS.format(ranges=ranges),
        joins=VISIT_OF_EVENT if needs_visit(query.filters) else "",
        where=where,
    )


async def engagement_rows(
    connection: AsyncConnection[Any], query: Query
) -> dict[Key, dict[Metric, MetricValue]]:
    """The engagement metrics of the query, per row key."""
    if uses_goals(query):  # goals as conditions, from the query's snapshot
        goals = await load_goals(connection, query.site_ids)
        query = replace(query, filters=resolve(query.filters, goals))
    params = Params()
    cursor = connection.cursor(row_factory=tuple_row)
    found_patterns = patterns(query.filters)
    if found_patterns:  # a bad one fails even when no row reaches it (as stats/engine.py)
        await cursor.execute(_COMPILE_PATTERNS, (found_patterns,))
    await cursor.execute(engagement_statement(query, params), params.values)
    found: dict[Key, dict[Metric, MetricValue]] = {}
    for time, parent, value, depth, seconds in await cursor.fetchall():
        found[(time, parent, value)] = {
            "scroll_depth": _number(depth),
            "time_on_page": _number(seconds),
        }
    return found


def _number(value: Decimal | None) -> float | None:
    return None if value is None else float(value)
