"""Adding up the parts of a query: sums per time bucket and breakdown value, the
derived metrics, the order, and the page of rows asked for, with the number of rows
before paging. Written once for both paths, so an answer from rollups and one from raw
rows go through the same arithmetic and the same rounding.

Rates (docs/read-model.md, What the numbers mean) are rounded half away from zero, as
PostgreSQL's round(numeric) does and the report and daily_visitors view always have:
bounce_rate (percent) and visit_duration (seconds) to one decimal, views_per_visit to
two. A rate is None where there are no visits.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any, Final

from picolytics.dimensions import Metric
from picolytics.stats.query import Direction, Query, Row
from picolytics.stats.sql import COMPONENTS, PART_COLUMNS, Params

_BUCKETS: Final[dict[str | None, str]] = {
    None: "NULL::date",
    "hour": "k",  # the part's local wall-clock hour already
    "day": "k",
    "week": "date_trunc('week', k::timestamp)::date",  # ISO weeks start on Monday
    "month": "date_trunc('month', k::timestamp)::date",
}
_METRIC_SQL: Final[dict[Metric, str]] = {
    "visitors": "visitors",
    "visits": "visits",
    "pageviews": "pageviews",
    "events": "events",
    "bounces": "bounces",
    "total_duration": "duration_s",
    "bounce_rate": "round(100.0 * bounces / nullif(visits, 0), 1)",
    "visit_duration": "round(duration_s::numeric / nullif(visits, 0), 1)",
    "views_per_visit": "round(session_pageviews::numeric / nullif(visits, 0), 2)",
}
_METRICS: Final = tuple(_METRIC_SQL)


def order_keys(query: Query) -> list[tuple[str, Direction]]:
    """order_by, else time, the first metric descending and the value; then ties
    broken by time and value (with its parent) ascending, and by two dimensions
    (Breakdown.then) the value, then the second dimension's ("then") ascending."""
    keys: list[tuple[str, Direction]] = list(query.order_by) or [
        ("time", "asc"),
        (query.metrics[0], "desc"),
    ]
    keys += [("time", "asc"), ("value", "asc"), ("then", "asc")]
    breakdown = query.breakdown
    present = {
        "time": query.interval is not None,
        "value": breakdown is not None,
        "then": breakdown is not None and breakdown.then is not None,
    }
    unique: dict[str, Direction] = {}
    for name, direction in keys:
        if present.get(name, True):
            unique.setdefault(name, direction)  # the first mention of a key decides
    return list(unique.items())


def _order_sql(keys: Sequence[tuple[str, Direction]], prefix: str, pair: bool) -> str:
    # Names are validated (metrics, "time", "value", "then"); text sorts by code point.
    # A value sorts with its parent; by two dimensions, the second ("then", the
    # parent column) is a key of its own.
    terms = []
    for name, direction in keys:
        if name == "value":
            terms.append(f'{prefix}value COLLATE "C" {direction}')
            if not pair:
                terms.append(f'{prefix}parent COLLATE "C" {direction}')
        elif name == "then":
            terms.append(f'{prefix}parent COLLATE "C" {direction}')
        else:
            terms.append(f"{prefix}{name} {direction}")
    return ", ".join(f"{term} NULLS LAST" for term in terms)


def statement(query: Query, parts: Sequence[str], params: Params) -> str:
    """The whole query over its parts (each a SELECT of stats/sql.py's PART_COLUMNS)."""
    keys = []
    if query.interval is not None:
        keys.append("1")
    parent, value = "''", "NULL::text"
    if query.breakdown is not None:
        parent, value = "parent", "value"
        keys += ["2", "3"]
    group_by = f"GROUP BY {', '.join(keys)}" if keys else ""
    sums = ",\n       ".join(f"coalesce(sum({c}), 0)::bigint AS {c}" for c in COMPONENTS)
    union = "\nUNION ALL\n".join(f"({p})" for p in parts)
    derived = ",\n       ".join(f"{sql} AS {name}" for name, sql in _METRIC_SQL.items())
    order = order_keys(query)
    pair = query.breakdown is not None and query.breakdown.then is not None
    limit = params.add(query.limit, cast="::bigint")
    offset = params.add(query.offset, cast="::bigint")
    return f"""
WITH parts ({", ".join(PART_COLUMNS)}) AS (
{union}
), grouped AS (
SELECT {_BUCKETS[query.interval]} AS time, {parent} AS parent, {value} AS value,
       {sums}
FROM parts
{group_by}
), metrics AS (
SELECT time, parent, value,
       {derived}
FROM grouped
)
SELECT t.total, o.present, o.time, o.parent, o.value, {", ".join(f"o.{m}" for m in _METRICS)}
FROM (SELECT count(*) AS total FROM metrics) t
LEFT JOIN LATERAL (
    SELECT true AS present, * FROM metrics
    ORDER BY {_order_sql(order, "", pair)}
    LIMIT {limit} OFFSET {offset}
) o ON true
ORDER BY {_order_sql(order, "o.", pair)}
"""


def decode(query: Query, rows: Sequence[Sequence[Any]]) -> tuple[tuple[Row, ...], int]:
    """The result rows (only the metrics asked for) and the number of rows before paging.
    The statement always returns one row at least, with the count."""
    total = int(rows[0][0]) if rows else 0
    decoded = []
    for _, present, time, parent, value, *values in rows:
        if not present:
            continue  # no row on this page: the count came alone
        found = dict(zip(_METRICS, values, strict=True))
        metrics = {
            metric: float(found[metric]) if isinstance(found[metric], Decimal) else found[metric]
            for metric in query.metrics
        }
        decoded.append(Row(time=time, parent=parent, value=value, metrics=metrics))
    return tuple(decoded), total
