"""Plausible's conversion rates, `conversion_rate` and `group_conversion_rate`: which
filters their denominators drop, the division, and the order of rows by a rate.

As Plausible defines them (its SpecialMetrics): a row's visitors (those who completed
the goals of the query) in percent of the visitors of the same query without its
top-level `event:goal` and `event:props:*` conditions. For `conversion_rate` that
denominator is one number, the period's, without dimensions; for
`group_conversion_rate` it is counted per group, the row's time bucket and dimension
values. Both are 0 where the denominator is 0, with one decimal, rounded half to even
(ClickHouse's `round`) from the exact quotient of the integer counts.

A rate per group cannot be ordered by before it is divided: a query ordered by
`group_conversion_rate` gets every row from the query layer, and `ordered` sorts
them here as the query layer would (ties by time, value and parent ascending, None
last either way) before they are paged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date, datetime
from fractions import Fraction
from typing import Final, cast

from picolytics.api.v2_filters import ApiCondition, ApiFilter
from picolytics.api.v2_names import PROPS_PREFIX
from picolytics.dimensions import Metric
from picolytics.stats.query import Direction, MetricValue, Result, Row

GROUP_RATE: Final = "group_conversion_rate"
CONVERSION_RATES: Final = frozenset({"conversion_rate", GROUP_RATE})
GroupKey = tuple[date | datetime | None, str, str | None]  # Row.time, parent, value
Sortable = MetricValue | date | datetime | str


def counts_conversions(tree: ApiFilter) -> bool:
    """Is this top-level filter one the denominators drop: a condition on event:goal
    or a custom property? (Plausible's rules keep both at the top level with a rate.)"""
    if not isinstance(tree, ApiCondition):
        return False
    name = tree.dimension.name
    return name == "event:goal" or name.startswith(PROPS_PREFIX)


def percent(part: int, whole: int) -> float:
    """100 * part / whole to one decimal, half to even, computed exactly; 0.0 for no whole."""
    if whole <= 0:
        return 0.0
    return float(round(Fraction(100 * part, whole), 1))


def group_key(row: Row) -> GroupKey:
    return (row.time, row.parent, row.value)


def visitors_of(row: Row) -> int:
    return int(row.metrics.get("visitors") or 0)


def total_visitors(result: Result | None) -> int | None:
    """The visitors of a question without dimensions (its one row), None if not asked."""
    if result is None:
        return None
    return visitors_of(result.rows[0]) if result.rows else 0


def group_visitors(result: Result | None) -> dict[GroupKey, int]:
    """Visitors per group of a question with the same dimensions as the main one."""
    if result is None:
        return {}
    return {group_key(row): visitors_of(row) for row in result.rows}


def group_rate(row: Row, groups: dict[GroupKey, int]) -> float:
    return percent(visitors_of(row), groups.get(group_key(row), 0))


def _key(name: str, rate: Callable[[Row], float]) -> Callable[[Row], Sortable]:
    """What a row is ordered by for the order entry `name`."""
    if name == GROUP_RATE:
        return rate
    if name == "time":
        return lambda row: row.time
    if name == "value":
        return lambda row: row.value
    return lambda row: row.metrics.get(cast(Metric, name))


def _sorted(rows: list[Row], key: Callable[[Row], Sortable], direction: Direction) -> list[Row]:
    """Stable sort on one key, None last in either direction."""
    present = [row for row in rows if key(row) is not None]
    missing = [row for row in rows if key(row) is None]
    present.sort(key=key, reverse=direction == "desc")  # type: ignore[arg-type]
    return present + missing


def ordered(
    rows: Sequence[Row],
    order: Sequence[tuple[str, Direction]],
    rate: Callable[[Row], float],
) -> list[Row]:
    """The rows by `order` (the query layer's names: "time", "value", a metric, or
    group_conversion_rate by its value as shown), ties as the query layer breaks them."""
    found = _sorted(list(rows), lambda row: row.parent, "asc")
    found = _sorted(found, lambda row: row.value, "asc")
    found = _sorted(found, lambda row: row.time, "asc")
    for name, direction in reversed(order):
        found = _sorted(found, _key(name, rate), direction)
    return found
