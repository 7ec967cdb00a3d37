"""Plausible's rules for a v2 query as a whole, and what of a valid one the query layer
cannot answer yet.

`check` raises an ApiRequestError, worded as Plausible's own error where it has one,
for a query whose parts are each valid but do not go together: an order_by entry
that is not queried, event:goal or event:hostname filters below the top level, which
metrics go with which dimensions and filters, time labels without a time dimension.
`check_goal_names` is Plausible's rule that an `is` goal filter names goals the site
has (the endpoint reads them). `unsupported` lists, with their JSON pointers, the
parts of a valid query that picolytics cannot answer yet (a third dimension besides
time, event:goal with another dimension or has_done...), for the endpoint to refuse
with a clear message (docs/api-v2.md).
"""

from __future__ import annotations

from typing import Final

from picolytics.api.v2_dates import show
from picolytics.api.v2_filters import (
    Leaf,
    Unsupported,
    dimension_gap,
    leaves,
    unsupported_filters,
)
from picolytics.api.v2_names import ApiDimension
from picolytics.api.v2_query import ApiMetric, ApiQuery
from picolytics.dimensions import PARENT_OF
from picolytics.errors import ApiRequestError

REVENUE_METRICS: Final = ("total_revenue", "average_revenue")
# Plausible's metrics of its sessions table only, and of its events table only.
SESSION_METRICS: Final = ("bounce_rate", "visit_duration", "views_per_visit")
EVENT_METRICS: Final = ("pageviews", "events", "scroll_depth", "time_on_page")
# Plausible's metrics of engagement events: the query layer has them by page only.
ENGAGEMENT_METRICS: Final = ("scroll_depth", "time_on_page")


def check(query: ApiQuery) -> None:
    """Raise ApiRequestError for the first of Plausible's rules the query breaks."""
    _check_order(query)
    _check_filters(query)
    _check_metrics(query)
    if query.include.time_labels and query.time_dimension is None:
        raise ApiRequestError(
            "#/include/time_labels", "Invalid include.time_labels: requires a time dimension."
        )


def _check_order(query: ApiQuery) -> None:
    queried = {*query.metrics, *(d.name for d in query.dimensions)}
    for index, (name, direction) in enumerate(query.order_by or ()):
        if name not in queried:
            raise ApiRequestError(
                f"#/order_by/{index}",
                f"Invalid order_by entry {show([name, direction])}. "
                "Entry is not a queried metric or dimension.",
            )


def _on(query: ApiQuery, name: str, top_level: bool = False) -> Leaf | None:
    """The first condition on Plausible's dimension `name` outside has_done/has_not_done
    (and at the top level, if asked)."""
    return next(
        (
            leaf
            for leaf in leaves(query.filters)
            if leaf.condition.dimension.name == name
            and not leaf.behavioral
            and (leaf.depth == 1 or not top_level)
        ),
        None,
    )


def _goal_clauses(query: ApiQuery) -> list[tuple[Leaf, str]]:
    """The clauses of case-sensitive `is` goal filters, behavioral ones too (as
    Plausible checks them; a case-insensitive clause may match names spelt otherwise)."""
    return [
        (leaf, clause)
        for leaf in leaves(query.filters)
        if leaf.condition.dimension.name == "event:goal"
        and leaf.condition.operator == "is"
        and leaf.condition.case_sensitive
        for clause in leaf.condition.clauses
    ]


def names_goals(query: ApiQuery) -> bool:
    """Does the query name goals that `check_goal_names` must find?"""
    return bool(_goal_clauses(query))


def check_goal_names(query: ApiQuery, goal_names: set[str]) -> None:
    """An ApiRequestError, Plausible's, for an `is` goal filter naming a goal (by its
    display name) that the site does not have; `contains` may match none."""
    for leaf, clause in _goal_clauses(query):
        if clause not in goal_names:
            raise ApiRequestError(
                leaf.at, f"Invalid filters. The goal `{clause}` is not configured for this site."
            )


def _check_filters(query: ApiQuery) -> None:
    special = {"conversion_rate", "group_conversion_rate"} & set(query.metrics)
    for leaf in leaves(query.filters):
        name = leaf.condition.dimension.name
        if name in ("event:goal", "event:hostname") and leaf.depth > 1 and not leaf.behavioral:
            raise ApiRequestError(
                leaf.at,
                f"Invalid filters. Dimension `{name}` can only be filtered at the top level.",
            )
        if special and leaf.depth > 1 and leaf.condition.dimension.prop_key is not None:
            raise ApiRequestError(
                leaf.at,
                "Invalid filters. When `conversion_rate` or `group_conversion_rate` metrics "
                "are used, custom property filters can only be used on top level.",
            )


def _metric_problem(metric: ApiMetric, query: ApiQuery, names: list[str]) -> str | None:
    """What keeps Plausible from answering `metric` in this query, or None."""
    if metric in ("conversion_rate", "group_conversion_rate"):
        if "event:goal" not in names and _on(query, "event:goal") is None:
            return "can only be queried with event:goal filters or dimensions."
    elif metric in ("scroll_depth", "time_on_page"):
        page_filter = _on(query, "event:page", top_level=metric == "scroll_depth")
        if "event:page" not in names and page_filter is None:
            return "can only be queried with event:page filters or dimensions."
    elif metric == "views_per_visit":
        if _on(query, "event:page") is not None:
            return "cannot be queried with a filter on `event:page`."
        if names:
            return "cannot be queried with `dimensions`."
    elif metric == "percentage" and not names:
        return "requires non-empty `dimensions`."
    return None


def _check_metrics(query: ApiQuery) -> None:
    names = [d.name for d in query.dimensions]
    for index, metric in enumerate(query.metrics):
        problem = _metric_problem(metric, query, names)
        if problem is not None:
            raise ApiRequestError(f"#/metrics/{index}", f"Metric `{metric}` {problem}")
    # Plausible splits a query into its events and its sessions tables, whose
    # dimensions must agree; event:page alone is its special case (by entry page).
    events = [d.name for d in query.dimensions if d.grain == "event"]
    if events == ["event:page"]:
        return
    sessions = [d.name for d in query.dimensions if d.session_only]
    visit_only: list[str] = [m for m in query.metrics if m in SESSION_METRICS]
    event_only: list[str] = [m for m in query.metrics if m in EVENT_METRICS]
    for kind, metrics, other, dimensions in (
        ("Session", visit_only, "event", events),
        ("Event", event_only, "session", sessions),
    ):
        if metrics and dimensions:
            raise ApiRequestError(
                "#/dimensions",
                f"{kind} metric(s) {_ticked(metrics)} cannot be queried along with "
                f"{other} dimension(s) {_ticked(dimensions)}",
            )


def _ticked(names: list[str]) -> str:
    return ", ".join(f"`{name}`" for name in names)


def child_and_parent(*dimensions: ApiDimension) -> tuple[ApiDimension, ApiDimension] | None:
    """Two dimensions one breakdown answers, as (value, parent) (Row.value, Row.parent):
    visit:city_name with visit:country, or visit:browser_version with visit:browser."""
    if len(dimensions) != 2:
        return None
    first, second = dimensions
    for child, parent in ((first, second), (second, first)):
        if child.ours is not None and PARENT_OF.get(child.ours, None) == parent.ours:
            return child, parent
    return None


def unrelated_pair(query: ApiQuery) -> tuple[ApiDimension, ApiDimension] | None:
    """Two dimensions besides time that are not a value and its parent, in the order
    given: the query layer's Breakdown and its `then` (stats/query.py)."""
    found = query.breakdowns
    if len(found) != 2 or child_and_parent(*found) is not None:
        return None
    return found[0], found[1]


def _pair_gap(query: ApiQuery, pair: tuple[ApiDimension, ApiDimension]) -> str | None:
    """What of two unrelated dimensions the query layer cannot answer yet."""
    names = {d.name for d in pair}
    gaps = [  # goals are resolved, event:name's pageview row merged, on their own
        f"{d.name} with another dimension besides time"
        for d in pair
        if d.name in ("event:goal", "event:name")
    ]
    gaps += [
        f"{d.name} with a dimension other than its {PARENT_OF[d.ours]}"
        for d in pair
        if d.ours is not None and d.ours in PARENT_OF
    ]
    if "event:page" in names and any(d.ours in ("event", "prop") for d in pair):
        gaps.append("event:page with a custom event's dimension (page holds pageviews only)")
    gaps += [
        f"{m} by event:page with another dimension"
        for m in query.metrics
        if m in SESSION_METRICS and "event:page" in names
    ]
    if query.include.imports:
        gaps.append("include.imports with two dimensions besides time")
    ordered = {name for name, _ in query.order_by or ()}
    if "group_conversion_rate" in ordered and pair[1].name in ordered:
        gaps.append(f"order by {pair[1].name} with an order by group_conversion_rate")
    return gaps[0] if gaps else None


def _dimension_count(query: ApiQuery) -> list[Unsupported]:
    """Two dimensions besides time at most; two unrelated ones as _pair_gap allows."""
    breakdowns = [(i, d) for i, d in enumerate(query.dimensions) if d.grain != "time"]
    if len(breakdowns) > 2:
        return [
            Unsupported(
                f"#/dimensions/{index}",
                "one dimension too many: the query layer has two besides time at most",
            )
            for index, _ in breakdowns[2:]
        ]
    pair = unrelated_pair(query)
    gap = None if pair is None else _pair_gap(query, pair)
    return [] if gap is None else [Unsupported(f"#/dimensions/{breakdowns[1][0]}", gap)]


def _conversions_by_visit(query: ApiQuery) -> list[Unsupported]:
    """Pageviews and events by a visit dimension with a goal filter: Plausible counts
    the events that complete the goals (its "Total conversions"); the query layer
    counts every event of the visits that complete them."""
    by_visit = next((d for d in query.breakdowns if d.grain == "visit"), None)
    if by_visit is None or _on(query, "event:goal") is None:
        return []
    return [
        Unsupported(
            f"#/metrics/{index}",
            f"{metric} by {by_visit.name} with an event:goal filter: the query layer counts "
            f"every one of the converting visits, Plausible only the conversions",
        )
        for index, metric in enumerate(query.metrics)
        if metric in ("pageviews", "events")
    ]


def _name_gap(query: ApiQuery, found: ApiDimension) -> str | None:
    """What a breakdown by event:name (its custom events and a pageview row, merged:
    api/event_names.py) cannot answer yet."""
    if found.name != "event:name":
        return None
    if "group_conversion_rate" in query.metrics:
        return "group_conversion_rate by event:name: the pageview row has no group of its own yet"
    if query.include.imports:
        return "event:name with include.imports: the pageview row cannot take imported data yet"
    return None


def unsupported(query: ApiQuery) -> list[Unsupported]:
    """What of a valid query the query layer cannot answer yet."""
    other = next((d for d in query.breakdowns if d.name != "event:page"), None)
    found = [
        Unsupported(
            f"#/metrics/{index}",
            f"{metric} by {other.name}: the query layer has {metric} by event:page only",
        )
        for index, metric in enumerate(query.metrics)
        if metric in ENGAGEMENT_METRICS and other is not None
    ]
    found += _conversions_by_visit(query)
    for index, found_dimension in enumerate(query.dimensions):
        gap = dimension_gap(found_dimension) or _name_gap(query, found_dimension)
        if gap is not None:
            found.append(Unsupported(f"#/dimensions/{index}", gap))
    found += _dimension_count(query)
    pair = child_and_parent(*query.breakdowns)
    if pair is not None:
        found += [
            Unsupported(
                f"#/order_by/{index}",
                f"order by {name}: the query layer orders the rows of {pair[0].name} "
                f"with its parent by the {pair[0].name} first",
            )
            for index, (name, _) in enumerate(query.order_by or ())
            if name == pair[1].name
        ]
    return found + unsupported_filters(query.filters)
