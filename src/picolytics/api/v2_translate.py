"""A valid v2 query (ApiQuery) as the query layer's questions: `translate` makes a Plan.

- metrics: each of ours by its name; `bounce_rate` also asks for `bounces` and
  `visits`, which api/v2_response.py divides as Plausible does (to a whole percent),
  but by `event:page` (the visits that entered on each page, whose `visits` are not
  the page's) its tenth of a percent;
  `percentage` asks for `visitors`, and a second Query, `totals`, for the visitors of
  the same filters and period without dimensions (Plausible's denominator);
  `conversion_rate` and `group_conversion_rate` ask for `visitors`, and for the
  visitors without the top-level goal and custom-property filters
  (api/v2_conversions.py): `conversion_totals` without dimensions, `group_totals`
  with the main question's (every group, unpaged);
- the time dimension is the Query's `interval`; one other dimension its `Breakdown`
  (`event:props:KEY` is `Breakdown("prop", KEY)`, `event:goal` is `Breakdown("goal")`),
  and two that are a value and its parent (`visit:country` with `visit:city_name`)
  one breakdown by the value, whose rows carry the parent (Row.parent); two others,
  in the order given, the Breakdown of the first and its `then`, the second, whose
  value the rows carry as their parent; `columns` says which part of a Row each
  requested dimension reads;
- filters: `is` with several clauses is our `is` with several values, every operator
  and its case sensitivity as it is, and/or/not as And/Or/Not, has_done and
  has_not_done as HasDone (negated for has_not_done), the top level and-ed;
  `is`/`is_not` clauses in Plausible's spelling of empty values (`(not set)`,
  `Direct / None`) and devices are spelt as stored (api/v2_names.py); `event:goal`
  clauses are goal display names, which the query layer resolves;
- order_by: metrics by name (`percentage` and `conversion_rate` as `visitors`: one
  total divides every row), the time dimension as "time", the breakdown's dimensions
  as "value", a second unrelated one as "then"; an order by `group_conversion_rate`
  is `order_after`: the main question then has every row, ordered and paged after
  the division;
- pagination: `limit` and `offset`;
- `event:name`: a condition on it holds for pageviews too where the name "pageview"
  passes it, and a breakdown by it is the custom events' and a second question,
  `pageviews`, for its `pageview` row (api/event_names.py), merged, ordered and paged
  in api/v2_response.py (`order_after`).

A query that asks what the query layer cannot answer yet (`ApiQuery.unsupported`) is
an ApiRequestError naming the first such part and saying it is not supported yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from picolytics.api.event_names import NEGATED, any_passes, name_filter, pageview_question
from picolytics.api.v2_conversions import GROUP_RATE, counts_conversions
from picolytics.api.v2_filters import ApiAnd, ApiCondition, ApiFilter, ApiHasDone, ApiNot, ApiOr
from picolytics.api.v2_names import ApiDimension, stored
from picolytics.api.v2_query import ApiQuery
from picolytics.api.v2_rules import child_and_parent, unrelated_pair
from picolytics.dimensions import Dimension, Metric
from picolytics.errors import ApiRequestError
from picolytics.stats.query import (
    And,
    Breakdown,
    Condition,
    Direction,
    Filter,
    HasDone,
    Not,
    Or,
    Query,
    Result,
)

Part = Literal["time", "value", "parent"]
# What each API metric needs the query layer for; percentage is divided afterwards.
# The first is what the metric is ordered by.
_NEEDS: Final[dict[str, tuple[Metric, ...]]] = {
    "visitors": ("visitors",),
    "visits": ("visits",),
    "pageviews": ("pageviews",),
    "events": ("events",),
    "views_per_visit": ("views_per_visit",),
    "visit_duration": ("visit_duration",),
    "bounce_rate": ("bounce_rate", "bounces", "visits"),
    "percentage": ("visitors",),
    "conversion_rate": ("visitors",),
    "group_conversion_rate": ("visitors",),
    "scroll_depth": ("scroll_depth",),
    "time_on_page": ("time_on_page",),
}


@dataclass(frozen=True, slots=True)
class Plan:
    """The questions for one ApiQuery, and how to read their answers."""

    query: ApiQuery
    main: Query
    totals: Query | None  # percentage's denominator: visitors, same filters, no dimension
    columns: tuple[Part, ...]  # per requested dimension: which part of a Row it reads
    # conversion_rate's denominator: visitors without goal and property filters, and
    # group_conversion_rate's: the same per group of the main question.
    conversion_totals: Query | None = None
    group_totals: Query | None = None
    # Set when ordered by group_conversion_rate, or by event:name: `main` has every
    # row, in no order; api/v2_response.py orders them by this (api/v2_conversions.py)
    # and pages them.
    order_after: tuple[tuple[str, Direction], ...] = ()
    # By event:name: the question of its pageview row (api/event_names.py).
    pageviews: Query | None = None


@dataclass(frozen=True, slots=True)
class Answers:
    """The query layer's answers to the questions of a Plan."""

    main: Result
    totals: Result | None = None
    conversion_totals: Result | None = None
    group_totals: Result | None = None
    pageviews: Result | None = None


def refuse_unsupported(query: ApiQuery) -> None:
    """An ApiRequestError for the first part of the query picolytics cannot answer yet."""
    if not query.unsupported:
        return
    first, *rest = query.unsupported
    more = f" (and {len(rest)} more: {', '.join(u.field for u in rest)})" if rest else ""
    raise ApiRequestError(first.field, f"Not supported yet by picolytics: {first.reason}.{more}")


def _metrics(query: ApiQuery) -> tuple[Metric, ...]:
    needed: list[Metric] = []
    by_page = any(d.name == "event:page" for d in query.breakdowns)
    for metric in query.metrics:
        # By page, the rate of the visits that entered on it: the query layer's own.
        needs = ("bounce_rate",) if by_page and metric == "bounce_rate" else _NEEDS[metric]
        needed += [m for m in needs if m not in needed]
    return tuple(needed)


def _breakdown(query: ApiQuery) -> tuple[Breakdown | None, dict[str, Part]]:
    """The breakdown, and the part of a row each dimension name reads."""
    parts: dict[str, Part] = {d.name: "time" for d in query.dimensions if d.grain == "time"}
    found = query.breakdowns
    if not found:
        return None, parts
    unrelated = unrelated_pair(query)
    if unrelated is not None:
        first, second = unrelated
        parts |= {first.name: "value", second.name: "parent"}
        then = Breakdown(_ours(second), second.prop_key)
        return Breakdown(_ours(first), first.prop_key, then), parts
    pair = child_and_parent(*found)
    value = pair[0] if pair else found[0]
    if pair:
        parts[pair[1].name] = "parent"
    parts[value.name] = "value"
    return Breakdown(_ours(value), value.prop_key), parts


def _ours(dimension: ApiDimension) -> Dimension:
    if dimension.ours is None:  # ApiQuery.unsupported has it: refused before this
        raise ApiRequestError("#/dimensions", f"{dimension.name} has no dimension in picolytics")
    return dimension.ours


_ORDER_OF: Final[dict[Part, str]] = {"time": "time", "value": "value", "parent": "then"}


def _order(query: ApiQuery, parts: dict[str, Part]) -> tuple[tuple[str, Direction], ...]:
    order: list[tuple[str, Direction]] = []
    names = {d.resolved_name: d.name for d in query.dimensions}
    for name, direction in query.resolved_order:
        part = parts.get(names.get(name, name))
        if part is not None:  # a parent of its value is refused (ApiQuery.unsupported)
            order.append((_ORDER_OF[part], direction))
        elif name == GROUP_RATE:  # divided per group: ordered after (Plan.order_after)
            order.append((GROUP_RATE, direction))
        elif name in _NEEDS:
            order.append((_NEEDS[name][0], direction))
        else:  # a metric ApiQuery.unsupported has: refused before this
            raise ApiRequestError("#/order_by", f"cannot order by {name} in picolytics yet")
    return tuple(order)


def _condition(condition: ApiCondition) -> Filter:
    ours = _ours(condition.dimension)
    values = condition.clauses
    if condition.operator in ("is", "is_not"):
        values = tuple(stored(ours, clause) for clause in values)
    found = Condition(
        ours, condition.operator, values, condition.dimension.prop_key, condition.case_sensitive
    )
    if condition.dimension.name != "event:name":
        return found
    # With the pageviews where the name "pageview" passes it (api/event_names.py).
    kind = NEGATED[condition.operator]
    pageview = any_passes(kind, condition.clauses, condition.case_sensitive)
    if pageview is None:  # ApiQuery.unsupported has it: refused before this
        raise ApiRequestError("#/filters", "an event:name pattern picolytics cannot decide")
    return name_filter(found, kind, pageview)


def _filter(tree: ApiFilter) -> Filter:
    if isinstance(tree, ApiCondition):
        return _condition(tree)
    if isinstance(tree, ApiAnd | ApiOr):
        inner = tuple(_filter(item) for item in tree.filters)
        return And(inner) if isinstance(tree, ApiAnd) else Or(inner)
    if isinstance(tree, ApiNot):
        return Not(_filter(tree.filter))
    assert isinstance(tree, ApiHasDone)
    return HasDone(_filter(tree.filter), tree.negated)


def _and(trees: tuple[ApiFilter, ...]) -> Filter | None:
    found = tuple(_filter(tree) for tree in trees)
    if not found:
        return None
    return found[0] if len(found) == 1 else And(found)


def filters(query: ApiQuery) -> Filter | None:
    """The query's filters as one Filter: the top level and-ed (None: no filter)."""
    return _and(query.filters)


def conversion_filters(query: ApiQuery) -> Filter | None:
    """The filters of the conversion rates' denominators: without the top-level
    conditions on goals and custom properties."""
    return _and(tuple(tree for tree in query.filters if not counts_conversions(tree)))


def translate(query: ApiQuery, site_ids: tuple[int, ...]) -> Plan:
    """The Plan of a valid query over these sites, or an ApiRequestError for a part
    picolytics cannot answer yet."""
    refuse_unsupported(query)
    breakdown, parts = _breakdown(query)
    time = query.time_dimension
    interval = time.interval if time else None
    condition = filters(query)
    order = _order(query, parts)
    by_name = any(d.name == "event:name" for d in query.breakdowns)
    after = order if by_name or any(name == GROUP_RATE for name, _ in order) else ()
    main = Query(
        site_ids=site_ids,
        period=query.period,
        metrics=_metrics(query),
        interval=interval,
        breakdown=breakdown,
        filters=condition,
        order_by=() if after else order,
        limit=None if after else query.limit,
        offset=0 if after else query.offset,
        include_imports=query.include.imports,
    )
    imports = query.include.imports  # the denominators count imported data as the rows do
    totals = None
    if "percentage" in query.metrics:
        totals = Query(
            site_ids, query.period, ("visitors",), filters=condition, include_imports=imports
        )
    base = conversion_filters(query)
    conversion_totals = group_totals = None
    if "conversion_rate" in query.metrics:
        conversion_totals = Query(
            site_ids, query.period, ("visitors",), filters=base, include_imports=imports
        )
    if GROUP_RATE in query.metrics:
        group_totals = Query(
            site_ids, query.period, ("visitors",), interval, breakdown, filters=base,
            include_imports=imports,
        )  # fmt: skip
    columns = tuple(parts[d.name] for d in query.dimensions)
    pageviews = pageview_question(main) if by_name else None
    return Plan(query, main, totals, columns, conversion_totals, group_totals, after, pageviews)
