"""Checking a `Query` before any SQL runs, and reading its names from text.

Every mistake is a QueryError whose `field` names the part of the query that is wrong
(`site_ids`, `period.start`, `period.end`, `period.timezone`, `period`, `metrics`,
`interval`, `breakdown`, `breakdown.prop_key`, `breakdown.then`,
`breakdown.then.prop_key`, `include_imports`, `filters`, `order_by`, `limit`,
`offset`), so the CLI and the Stats API can say which input to fix. A regular
expression that PostgreSQL cannot compile is found when the query runs
(stats/engine.py), with the same field.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Final, TypeVar

from picolytics.dimensions import (
    ALL_METRICS,
    DIMENSIONS,
    ENGAGEMENT_METRICS,
    EVENT_DIMENSIONS,
    PARENT_OF,
    VISIT_ONLY_METRICS,
    Dimension,
    Metric,
)
from picolytics.errors import QueryError
from picolytics.stats.filters import conditions
from picolytics.stats.goal_parts import GOAL_OPERATORS
from picolytics.stats.patterns import check_pattern
from picolytics.stats.periods import zone
from picolytics.stats.query import (
    INTERVALS,
    MAX_LIMIT,
    MAX_PERIOD_DAYS,
    OPERATORS,
    And,
    Breakdown,
    Condition,
    Filter,
    HasDone,
    Interval,
    Not,
    Operator,
    Or,
    Query,
)

MAX_SITES: Final = 1000
MAX_CONDITIONS: Final = 20  # conditions in one filter, however nested
MAX_DEPTH: Final = 8  # nesting of And / Or / Not
MAX_VALUES: Final = 100  # values of one condition
MAX_VALUE_LENGTH: Final = 2000

T = TypeVar("T", bound=str)


def _one_of(name: str, allowed: tuple[T, ...], field: str, what: str) -> T:
    for candidate in allowed:
        if name == candidate:
            return candidate
    raise QueryError(field, f"unknown {what} {name!r}; one of: {', '.join(allowed)}")


def parse_metrics(names: Iterable[str], field: str = "metrics") -> tuple[Metric, ...]:
    return tuple(_one_of(name, ALL_METRICS, field, "metric") for name in names)


def parse_dimension(name: str, field: str = "breakdown") -> Dimension:
    return _one_of(name, DIMENSIONS, field, "dimension")


def parse_interval(name: str, field: str = "interval") -> Interval:
    return _one_of(name, INTERVALS, field, "interval")


def parse_operator(name: str, field: str = "filters") -> Operator:
    return _one_of(name, OPERATORS, field, "operator")


def validate(query: Query) -> None:
    """Raise QueryError for the first thing wrong with `query`."""
    _check_sites(query.site_ids)
    _check_period(query)
    if not query.metrics:
        raise QueryError("metrics", "ask for at least one metric")
    for metric in query.metrics:
        _one_of(metric, ALL_METRICS, "metrics", "metric")
    if len(set(query.metrics)) < len(query.metrics):
        raise QueryError("metrics", "a metric is listed twice")
    if query.interval is not None:
        _one_of(query.interval, INTERVALS, "interval", "interval")
    _check_breakdown(query)
    _check_engagement(query)
    if query.filters is not None:
        count = _check_filter(query.filters, 1)
        if count > MAX_CONDITIONS:
            raise QueryError("filters", f"at most {MAX_CONDITIONS} conditions, not {count}")
    _check_goals(query)
    _check_order(query)
    if query.limit is not None and not 0 <= query.limit <= MAX_LIMIT:
        raise QueryError("limit", f"must be between 0 and {MAX_LIMIT}")
    if query.offset < 0:
        raise QueryError("offset", "must not be negative")


def _check_breakdown(query: Query) -> None:
    breakdown = query.breakdown
    if breakdown is None:
        return
    _check_dimension(breakdown.dimension, breakdown.prop_key, "breakdown")
    if breakdown.then is not None:
        _check_pair(query, breakdown, breakdown.then)
    named = [breakdown.dimension] + ([breakdown.then.dimension] if breakdown.then else [])
    # By page alone, they are the visits' that entered on it (stats/engagement_merge.py);
    # by page and another dimension, not answered.
    by_events = [d for d in named if d in (*EVENT_DIMENSIONS, "goal")]
    if by_events and named != ["page"]:
        for metric in query.metrics:
            if metric in VISIT_ONLY_METRICS:
                raise QueryError(
                    "metrics",
                    f"{metric} is a metric of visits; a breakdown by {by_events[0]} counts events",
                )


def _check_engagement(query: Query) -> None:
    """Engagement metrics are of pages (stats/engagement.py): by page or by nothing."""
    breakdown = query.breakdown
    for metric in query.metrics:
        if metric not in ENGAGEMENT_METRICS or breakdown is None:
            continue
        other = breakdown.then.dimension if breakdown.then else None
        if breakdown.dimension != "page" or other is not None:
            raise QueryError(
                "metrics",
                f"{metric} is a metric of pages; a breakdown by page or none, not by "
                f"{' and '.join(d for d in (breakdown.dimension, other) if d)}",
            )


# No event is one of both dimensions' rows (dimensions.EVENT_ROWS): page holds
# pageviews, event and prop custom events.
_DISJOINT: Final = frozenset({frozenset({"page", "event"}), frozenset({"page", "prop"})})


def _check_pair(query: Query, first: Breakdown, then: Breakdown) -> None:
    """A breakdown by two dimensions, answered from raw rows (stats/raw.py)."""
    _check_dimension(then.dimension, then.prop_key, "breakdown.then")
    if then.then is not None:
        raise QueryError("breakdown.then", "two dimensions at most: `then` has no `then`")
    pair = (first.dimension, then.dimension)
    if "goal" in pair:
        raise QueryError("breakdown.then", "a breakdown by goal takes no second dimension")
    if first.dimension == then.dimension and first.prop_key == then.prop_key:
        raise QueryError("breakdown.then", f"{then.dimension} is the breakdown already")
    with_parent = next((d for d in pair if d in PARENT_OF), None)
    if with_parent is not None:  # its rows carry the parent's value (Row.parent)
        raise QueryError(
            "breakdown.then",
            f"{with_parent} is shown with its {PARENT_OF[with_parent]} and takes no "
            "second dimension",
        )
    if frozenset(pair) in _DISJOINT:
        raise QueryError(
            "breakdown.then", f"no event is both a {first.dimension} and a {then.dimension} row"
        )
    if query.include_imports:  # the imported tables hold one dimension each
        raise QueryError("include_imports", "imported data has no breakdown by two dimensions")


def _check_sites(site_ids: tuple[int, ...]) -> None:
    if not site_ids:
        raise QueryError("site_ids", "name at least one site")
    if len(site_ids) > MAX_SITES:
        raise QueryError("site_ids", f"at most {MAX_SITES} sites")
    if any(isinstance(s, bool) or not isinstance(s, int) for s in site_ids):
        raise QueryError("site_ids", "site ids are integers")


def _aware(value: object, field: str) -> datetime:
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise QueryError(field, "must be an aware datetime (with a time zone)")
    return value


def _check_period(query: Query) -> None:
    start = _aware(query.period.start, "period.start")
    end = _aware(query.period.end, "period.end")
    if end <= start:
        raise QueryError("period.end", "must be after period.start")
    if end - start > timedelta(days=MAX_PERIOD_DAYS):
        raise QueryError("period", f"may span at most {MAX_PERIOD_DAYS} days")
    zone(query.period.timezone, "period.timezone")


def _check_text(value: object, field: str, what: str) -> None:
    if not isinstance(value, str):
        raise QueryError(field, f"{what} must be text")
    if len(value) > MAX_VALUE_LENGTH:
        raise QueryError(field, f"{what} may be {MAX_VALUE_LENGTH} characters long")
    if "\x00" in value:
        raise QueryError(field, f"{what} must not contain NUL characters")


def _check_dimension(dimension: str, prop_key: str | None, field: str) -> None:
    _one_of(dimension, DIMENSIONS, field, "dimension")
    if dimension == "prop":
        if not prop_key:
            raise QueryError(f"{field}.prop_key", "a prop dimension needs the property's key")
        _check_text(prop_key, f"{field}.prop_key", "a property key")
    elif prop_key is not None:
        raise QueryError(f"{field}.prop_key", f"only a prop dimension has a key, not {dimension}")


def _check_filter(filter_: Filter, depth: int, behavior: bool = False) -> int:
    """The filter's number of conditions, once it is checked (`behavior`: inside a
    has_done or has_not_done)."""
    if depth > MAX_DEPTH:
        raise QueryError("filters", f"And, Or, Not and HasDone may nest {MAX_DEPTH} deep")
    if isinstance(filter_, HasDone):
        if behavior:
            raise QueryError("filters", "has_done and has_not_done cannot be nested")
        if not isinstance(filter_.negated, bool):
            raise QueryError("filters", "HasDone.negated is True or False")
        return _check_filter(filter_.filter, depth + 1, True)
    if isinstance(filter_, Not):
        return _check_filter(filter_.filter, depth + 1, behavior)
    if isinstance(filter_, And | Or):
        if not filter_.filters:
            raise QueryError("filters", f"{type(filter_).__name__} of no filters")
        return sum(_check_filter(inner, depth + 1, behavior) for inner in filter_.filters)
    if not isinstance(filter_, Condition):
        raise QueryError("filters", f"not a filter: {type(filter_).__name__}")
    _check_dimension(filter_.dimension, filter_.prop_key, "filters")
    if behavior and filter_.dimension not in (*EVENT_DIMENSIONS, "goal"):
        raise QueryError(
            "filters",
            "has_done and has_not_done take conditions on events (page, event, prop, "
            f"hostname, goal), not on {filter_.dimension}",
        )
    _one_of(filter_.operator, OPERATORS, "filters", "operator")
    if not filter_.values or len(filter_.values) > MAX_VALUES:
        raise QueryError("filters", f"a condition has 1 to {MAX_VALUES} values")
    for value in filter_.values:
        _check_text(value, "filters", "a value")
        if filter_.operator in ("matches", "matches_not"):
            check_pattern(value, "filters")
    return 1


def _check_goals(query: Query) -> None:
    """Goals are a site's own (stats/goal_parts.py); their names are matched as text."""
    found = list(conditions(query.filters)) if query.filters is not None else []
    goal_conditions = [c for c in found if c.dimension == "goal"]
    by_goal = query.breakdown is not None and query.breakdown.dimension == "goal"
    if (goal_conditions or by_goal) and len(set(query.site_ids)) != 1:
        raise QueryError("site_ids", "goals are a site's own: ask one site for them")
    for condition in goal_conditions:
        if condition.operator not in GOAL_OPERATORS:
            raise QueryError(
                "filters", f"a goal takes {', '.join(GOAL_OPERATORS)}, not {condition.operator}"
            )


def _check_order(query: Query) -> None:
    for name, direction in query.order_by:
        if direction not in ("asc", "desc"):
            raise QueryError("order_by", f"direction is asc or desc, not {direction!r}")
        if name == "time" and query.interval is None:
            raise QueryError("order_by", "order by time needs an interval")
        if name == "value" and query.breakdown is None:
            raise QueryError("order_by", "order by value needs a breakdown")
        if name == "then" and (query.breakdown is None or query.breakdown.then is None):
            raise QueryError("order_by", "order by then needs a breakdown by two dimensions")
        if name not in ("time", "value", "then") and name not in query.metrics:
            raise QueryError(
                "order_by", f"{name!r} is none of the query's metrics, time, value, then"
            )
