"""Queries answered in parts, merged per row (docs/read-model.md, What the numbers
mean):

- the engagement metrics, `scroll_depth` and `time_on_page`, from raw engagement
  events (stats/engagement.py), beside the query's other metrics;
- by page, the metrics of visits (`bounce_rate`, `visit_duration`, `views_per_visit`,
  `bounces`, `total_duration`) as Plausible counts them: those of the visits that
  entered on the page, that is the same query by entry page, whose row of a path is
  merged into the page's row.

Each part but the engagement one is the query layer's own answer (`answer`: rollups,
the open day, raw rows and imports, as for any query) with every row, unordered and
unpaged. The rows are those of the main part, the query's other metrics (by page, its
pageviews when it asks for none): the other parts fill in their metrics, and a row
one of them lacks has None (0 for a count). Rows are then ordered as
stats/assemble.py's statement orders them (each key in its direction, NULLs last,
values and parents by code point, as COLLATE "C") and paged; total_rows counts them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any

from psycopg import AsyncConnection

from picolytics.dimensions import ENGAGEMENT_METRICS, VISIT_ONLY_METRICS, Metric
from picolytics.stats.assemble import order_keys
from picolytics.stats.engagement import Key, engagement_rows
from picolytics.stats.query import (
    Breakdown,
    Direction,
    ImportsNote,
    MetricValue,
    Path,
    Query,
    Result,
    Row,
)

Answer = Callable[[Query], Awaitable[Result]]
_COUNTS = frozenset({"visitors", "visits", "pageviews", "events", "bounces", "total_duration"})


def _by_page(query: Query) -> bool:
    return query.breakdown is not None and query.breakdown.dimension == "page"


def _of_entries(query: Query) -> tuple[Metric, ...]:
    """The metrics of visits a query by page asks for: answered by entry page."""
    return tuple(m for m in query.metrics if m in VISIT_ONLY_METRICS) if _by_page(query) else ()


def in_parts(query: Query) -> bool:
    """Is the query answered in parts, merged here?"""
    return any(m in ENGAGEMENT_METRICS for m in query.metrics) or bool(_of_entries(query))


def _whole(query: Query, metrics: tuple[Metric, ...], **changes: Any) -> Query:
    """A part of the query: these metrics, every row, in no particular order."""
    return replace(query, metrics=metrics, order_by=(), limit=None, offset=0, **changes)


def _keyed(result: Result) -> dict[Key, dict[Metric, MetricValue]]:
    return {(row.time, row.parent, row.value): dict(row.metrics) for row in result.rows}


async def answer_in_parts(connection: AsyncConnection[Any], query: Query, answer: Answer) -> Result:
    """The answer to a query that in_parts() holds for (and validate() accepted)."""
    engagement = tuple(m for m in query.metrics if m in ENGAGEMENT_METRICS)
    entries = _of_entries(query)
    rest = tuple(m for m in query.metrics if m not in engagement and m not in entries)
    if not rest and _by_page(query):
        rest = ("pageviews",)  # the pages of the period, for the rows (not shown)
    parts: list[Result] = []
    rows: dict[Key, dict[Metric, MetricValue]] | None = None
    if rest:
        parts.append(await answer(_whole(query, rest)))
        rows = _keyed(parts[-1])
    fills: list[dict[Key, dict[Metric, MetricValue]]] = []
    if entries:  # by entry page: a visit's entry path is a page's path
        parts.append(await answer(_whole(query, entries, breakdown=Breakdown("entry_page"))))
        fills.append(_keyed(parts[-1]))
    if engagement:
        found = await engagement_rows(connection, query)
        fills.append(found)
        if rows is None:  # no other metric: the rows with engagement
            rows = {key: {} for key in found}
    assert rows is not None
    if not rows and query.interval is None and query.breakdown is None:
        rows[(None, "", None)] = {}  # totals: always one row
    for fill in fills:
        for key, values in rows.items():
            values.update(fill.get(key, {}))
    merged = [
        Row(time, parent, value, {m: values.get(m, _missing(m)) for m in query.metrics})
        for (time, parent, value), values in rows.items()
    ]
    ordered = _ordered(merged, order_keys(query))
    end = None if query.limit is None else query.offset + query.limit
    return Result(
        rows=tuple(ordered[query.offset : end]),
        total_rows=len(ordered),
        path=_path(parts, raw=bool(engagement)),
        imports=_imports(query, parts),
    )


def _missing(metric: Metric) -> MetricValue:
    """A metric of a row its part does not have: no count, no rate."""
    return 0 if metric in _COUNTS else None


def _ordered(rows: list[Row], keys: Sequence[tuple[str, Direction]]) -> list[Row]:
    """Sorted by each key, the last first: a stable sort keeps the later keys' order
    among equals. NULLs go last in either direction, as in the statement."""
    for name, direction in reversed(keys):
        descending = direction == "desc"
        if name == "value":
            rows.sort(key=lambda row: (row.value or "", row.parent), reverse=descending)
            continue

        def of(row: Row, name: str = name) -> Any:
            return row.time if name == "time" else row.metrics.get(name)  # type: ignore[call-overload]

        present = sorted((row for row in rows if of(row) is not None), key=of, reverse=descending)
        rows = present + [row for row in rows if of(row) is None]
    return rows


def _path(parts: Sequence[Result], raw: bool) -> Path:
    paths: set[Path] = {part.path for part in parts}
    if raw:
        paths.add("raw")
    return paths.pop() if len(paths) == 1 else "mixed"


def _imports(query: Query, parts: Sequence[Result]) -> ImportsNote | None:
    """Imported data is included when every part that could read it did; the
    engagement part never can (the imported tables hold no engagement)."""
    if not query.include_imports:
        return None
    notes = [part.imports for part in parts if part.imports is not None]
    left_out = next((note for note in notes if not note.included), None)
    if left_out is not None:
        return left_out
    return notes[0] if notes else ImportsNote(False, "unsupported_query")
