"""A `Filter` as a parameterised SQL condition, on each grain (docs/read-model.md,
Filters):

- on the visit grain (`sessions s`): a visit dimension is the visit's value; an event
  dimension holds when at least one pageview or custom event of the visit matches;
- on the event grain (`events e`, with its visit LEFT JOINed as `s`): an event
  dimension is the event's own match; a visit dimension is the value of the event's
  visit, and holds for no event whose session is not a visit;
- on rollup rows (`value_condition`): a filter on the breakdown's own dimension is a
  condition on the row's value.

An event matches a condition on an event dimension only if it is one of that
dimension's rows (dimensions.EVENT_ROWS): `page is_not /a` holds for the pageviews of
other paths, never for a custom event. Every condition is true or false, never NULL
(coalesce), so `Not` is plain negation.

A behavioral filter (`HasDone`) is the same on both grains, over the visit `s`: some
pageview or custom event of the visit matches its inner filter as a whole (EXISTS);
`has_not_done` is its negation, so on the event grain it holds for the events whose
session is not a visit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from picolytics.dimensions import (
    EVENT_COLUMNS,
    EVENT_DIMENSIONS,
    EVENT_ROWS,
    VISIT_COLUMNS,
    VISIT_DIMENSIONS,
)
from picolytics.stats.query import And, Condition, Filter, HasDone, Not, Or
from picolytics.stats.sql import COUNTED_EVENT, Params, with_prop_key


def conditions(filter_: Filter) -> Iterator[Condition]:
    """Every condition of a filter, depth first (those inside has_done too)."""
    if isinstance(filter_, Condition):
        yield filter_
    elif isinstance(filter_, Not | HasDone):
        yield from conditions(filter_.filter)
    else:
        for inner in filter_.filters:
            yield from conditions(inner)


def behavioral(filter_: Filter | None) -> bool:
    """Does the filter hold a has_done or has_not_done?"""
    if filter_ is None or isinstance(filter_, Condition):
        return False
    if isinstance(filter_, HasDone):
        return True
    if isinstance(filter_, Not):
        return behavioral(filter_.filter)
    return any(behavioral(inner) for inner in filter_.filters)


def is_event_dimension(condition: Condition) -> bool:
    return condition.dimension in EVENT_DIMENSIONS


def _like_escape(value: str) -> str:
    """A value as a LIKE pattern that matches only itself (backslash is LIKE's escape)."""
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def operator_sql(condition: Condition, target: str, params: Params) -> str:
    """`target operator values`, true or false. is/contains/matches any of the values,
    the _not forms none of them; case-insensitive forms compare as ILIKE and ~* do."""
    values = list(condition.values)
    sensitive = condition.case_sensitive
    if condition.operator in ("is", "is_not"):
        if sensitive:
            positive = f"{target} = ANY({params.add(values, cast='::text[]')})"
        else:
            patterns = [_like_escape(value) for value in values]
            positive = f"{target} ILIKE ANY({params.add(patterns, cast='::text[]')})"
    elif condition.operator in ("contains", "contains_not"):
        patterns = [f"%{_like_escape(value)}%" for value in values]
        like = "LIKE" if sensitive else "ILIKE"
        positive = f"{target} {like} ANY({params.add(patterns, cast='::text[]')})"
    else:
        regex = "~" if sensitive else "~*"
        positive = f"{target} {regex} ANY({params.add(values, cast='::text[]')})"
    negative = condition.operator.endswith("_not")
    return f"coalesce({'NOT ' if negative else ''}({positive}), false)"


def _combine(filter_: Filter, leaf: Callable[[Condition], str], params: Params) -> str:
    if isinstance(filter_, Condition):
        return leaf(filter_)
    if isinstance(filter_, HasDone):
        return _has_done(filter_, params)
    if isinstance(filter_, Not):
        return f"(NOT {_combine(filter_.filter, leaf, params)})"
    assert isinstance(filter_, And | Or)
    if not filter_.filters:  # only from resolving goals (stats/goal_parts.py): no goal
        return "true" if isinstance(filter_, And) else "false"
    joiner = " AND " if isinstance(filter_, And) else " OR "
    return "(" + joiner.join(_combine(inner, leaf, params) for inner in filter_.filters) + ")"


# The counted events of visit `s`, whenever received: a visit's events lie within
# [started_at, last_seen_at] (the writer sets both from its events' times), and the
# bound lets PostgreSQL skip other partitions. The subquery's `e` is the visit's event
# (on the event grain it hides the outer `e`, which only `s` links it to).
_EVENT_OF_VISIT = """SELECT FROM events e
        WHERE e.site_id = s.site_id AND e.session_id = s.session_id
          AND e.received_at >= s.started_at AND e.received_at <= s.last_seen_at"""


def _has_done(filter_: HasDone, params: Params) -> str:
    """Did visit `s` (none on the event grain: its session is no visit) have a counted
    event that matches the inner filter, which stats/validate.py holds to event
    dimensions? has_not_done is the negation, true for an event without a visit."""
    inner = event_condition(filter_.filter, params)
    done = f"""(s.session_id IS NOT NULL AND EXISTS ({_EVENT_OF_VISIT}
          AND {COUNTED_EVENT} AND {inner}))"""
    return f"(NOT {done})" if filter_.negated else done


def _event_match(condition: Condition, params: Params) -> str:
    """Does event `e` match a condition on an event dimension?"""
    dimension = condition.dimension
    assert dimension in EVENT_DIMENSIONS
    key = condition.prop_key
    rows = with_prop_key(EVENT_ROWS[dimension], key, params)
    column = with_prop_key(EVENT_COLUMNS[dimension], key, params)
    return f"({rows} AND {operator_sql(condition, column, params)})"


def _visit_column(condition: Condition) -> str:
    dimension = condition.dimension
    assert dimension in VISIT_DIMENSIONS
    return VISIT_COLUMNS[dimension]


def visit_condition(filter_: Filter, params: Params) -> str:
    """The filter on the visit grain, over `sessions s`."""

    def leaf(condition: Condition) -> str:
        if not is_event_dimension(condition):
            return operator_sql(condition, _visit_column(condition), params)
        return f"""EXISTS ({_EVENT_OF_VISIT}
          AND {_event_match(condition, params)})"""

    return _combine(filter_, leaf, params)


def event_condition(filter_: Filter, params: Params) -> str:
    """The filter on the event grain, over `events e` LEFT JOIN its visit `s`."""

    def leaf(condition: Condition) -> str:
        if is_event_dimension(condition):
            return _event_match(condition, params)
        column = _visit_column(condition)
        return f"(s.session_id IS NOT NULL AND {operator_sql(condition, column, params)})"

    return _combine(filter_, leaf, params)


def value_condition(filter_: Filter, column: str, params: Params) -> str:
    """The filter on rollup rows whose `column` is the value of the filter's one
    dimension (the breakdown's: shape.py checks that)."""
    return _combine(filter_, lambda condition: operator_sql(condition, column, params), params)


def needs_visit(filter_: Filter | None) -> bool:
    """Does the event grain need the events' visits for this filter?"""
    if filter_ is None:
        return False
    return behavioral(filter_) or any(not is_event_dimension(c) for c in conditions(filter_))


def patterns(filter_: Filter | None) -> list[str]:
    """The regular expressions of a filter, to compile before the query runs."""
    if filter_ is None:
        return []
    found: list[str] = []
    for condition in conditions(filter_):
        if condition.operator in ("matches", "matches_not"):
            found += condition.values
    return found
