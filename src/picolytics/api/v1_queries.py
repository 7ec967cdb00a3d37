"""A valid v1 request as the query layer's questions, and their answers.

- metrics: each of ours by its name; `bounce_rate` also asks for `bounces` and
  `visits`, which api/v1_response.py divides as Plausible does (to a whole percent),
  but by `event:page` (the visits that entered on each page, whose `visits` are not
  the page's: stats/engagement_merge.py) its tenth of a percent; `time_on_page` is
  the query layer's (stats/engagement.py);
  `conversion_rate` asks for `visitors`, and a second Query for the visitors without
  the goal and custom property filters (Plausible's denominator): of the period, per
  time bucket in a timeseries, and in a breakdown by anything but goals and custom
  properties per value (Plausible's group conversion rate, which orders and pages its
  rows after the division when it is the first metric);
- the timeseries' interval is the Query's; the breakdown's property its Breakdown,
  with Plausible's extra filter of a breakdown by UTM fields, country and entry or
  exit page: no row for an empty value;
- rows ordered as Plausible orders them: time, then the first metric descending and
  the value ascending; `limit` and `page` as limit and offset;
- a breakdown by `event:name` is the custom events' breakdown and a second question
  for the `pageview` row (api/event_names.py), merged, ordered and paged here.

What picolytics cannot answer yet (planned dimensions) is an ApiParamError saying so,
before any SQL.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Final

from psycopg import AsyncConnection

from picolytics.api.event_names import merged, pageview_question
from picolytics.api.v1_filters import V1Condition, to_filter, unsupported
from picolytics.api.v1_metrics import V1Metric
from picolytics.api.v1_params import V1Request
from picolytics.api.v2_conversions import GroupKey, group_key, ordered, visitors_of
from picolytics.dimensions import Metric
from picolytics.errors import ApiParamError
from picolytics.stats.engine import run
from picolytics.stats.query import And, Breakdown, Condition, Filter, Period, Query, Row

# What each v1 metric needs of the query layer; the first is what it is ordered by.
NEEDS: Final[dict[V1Metric, tuple[Metric, ...]]] = {
    "visitors": ("visitors",),
    "visits": ("visits",),
    "pageviews": ("pageviews",),
    "events": ("events",),
    "views_per_visit": ("views_per_visit",),
    "visit_duration": ("visit_duration",),
    "bounce_rate": ("bounce_rate", "bounces", "visits"),
    "conversion_rate": ("visitors",),
    "time_on_page": ("time_on_page",),
}
# Plausible leaves the empty value out of a breakdown by these (Legacy.Breakdown).
NO_EMPTY_ROW: Final = frozenset(
    {"visit:utm_medium", "visit:utm_source", "visit:utm_campaign", "visit:utm_content",
     "visit:utm_term", "visit:country", "visit:entry_page", "visit:exit_page"}
)  # fmt: skip
# Global conversion rates: a breakdown by these divides by the period's visitors.
GLOBAL_RATE: Final = ("goal", "prop")
RATE: Final = "conversion_rate"


@dataclass(frozen=True, slots=True)
class Answer:
    """The rows, and for conversion_rate its denominators: the visitors without goal
    and custom property filters, per group (time bucket, parent, value), either of the
    rows' own groups (`grouped`) or of their time bucket alone."""

    rows: tuple[Row, ...]
    totals: dict[GroupKey, int] | None = None
    grouped: bool = False

    def denominator(self, row: Row) -> int:
        key = group_key(row) if self.grouped else (row.time, "", None)
        return (self.totals or {}).get(key, 0)


def _refuse_gaps(request: V1Request) -> None:
    for condition in request.filters:
        if condition.on.gap is not None:
            raise unsupported(condition.on)
    by = request.by
    if by is None:
        return
    if by.gap is not None:
        raise unsupported(by)
    if by.name == "event:name" and RATE in request.metrics:
        raise ApiParamError(
            "Not supported yet by picolytics: conversion_rate by event:name (the pageview "
            "row has no denominator of its own yet)."
        )


def _filters(request: V1Request, conditions: tuple[V1Condition, ...]) -> Filter | None:
    """The conditions and-ed, with the breakdown's condition of no empty row."""
    condition = to_filter(conditions)
    by = request.by
    if by is not None and by.ours is not None and by.name in NO_EMPTY_ROW:
        empty = Condition(by.ours, "is_not", ("",))
        condition = empty if condition is None else And((condition, empty))
    return condition


def _without_goals(request: V1Request) -> tuple[V1Condition, ...]:
    """The request's conditions less those on goals and custom properties: the
    conversion rates' denominators."""
    return tuple(c for c in request.filters if c.on.name != "event:goal" and c.on.prop_key is None)


def _by_name(request: V1Request) -> bool:
    """A breakdown by event:name: its custom events, and a `pageview` row merged here."""
    return request.by is not None and request.by.name == "event:name"


def group_rates(request: V1Request) -> bool:
    """Does conversion_rate divide by each row's own group (Plausible's group
    conversion rate, of a breakdown by anything but goals and custom properties)?"""
    by = request.by
    return "conversion_rate" in request.metrics and by is not None and by.ours not in GLOBAL_RATE


def plan(request: V1Request, site_id: int) -> Query:
    """The query layer's question for a request of one site."""
    _refuse_gaps(request)
    by = request.by
    by_page = by is not None and by.name == "event:page"
    metrics: list[Metric] = []
    for metric in request.metrics:
        # By page, the rate of the visits that entered on it: the query layer's own.
        needs = ("bounce_rate",) if by_page and metric == "bounce_rate" else NEEDS[metric]
        metrics += [m for m in needs if m not in metrics]
    breakdown = Breakdown(by.ours, by.prop_key) if by is not None and by.ours else None
    # Rows ordered by a group rate are ordered and paged once divided (v1_response.py),
    # those by event:name once the pageview row is in (ask).
    paged = breakdown is not None and not (group_rates(request) and request.metrics[0] == RATE)
    paged = paged and not _by_name(request)
    return Query(
        site_ids=(site_id,),
        period=request.period,
        metrics=tuple(metrics),
        interval=request.interval,
        breakdown=breakdown,
        filters=_filters(request, request.filters),
        limit=request.limit if paged else None,
        offset=request.offset if paged else 0,
        # Imported data could reach the custom events' rows and not the pageview row.
        include_imports=request.with_imported and not _by_name(request),
    )


async def ask(
    connection: AsyncConnection[Any],
    request: V1Request,
    site_id: int,
    *,
    timeout_s: float,
    period: Period | None = None,
) -> Answer:
    """The answer to a request (over `period` instead of its own, if given)."""
    query = plan(request, site_id)
    if period is not None:
        query = replace(query, period=period)
    result = await run(connection, query, timeout_s=timeout_s)
    if _by_name(request):
        pageviews = await run(connection, pageview_question(query), timeout_s=timeout_s)
        first = NEEDS[request.metrics[0]][0]
        rows = ordered(
            merged(result.rows, pageviews.rows, query),
            [(first, "desc"), ("value", "asc")],
            lambda row: 0.0,  # no group rate here (_refuse_gaps)
        )
        return Answer(tuple(rows[request.offset : request.offset + request.limit]))
    if RATE not in request.metrics:
        return Answer(result.rows)
    grouped = group_rates(request)
    totals_query = Query(
        query.site_ids,
        query.period,
        ("visitors",),
        interval=query.interval,
        breakdown=query.breakdown if grouped else None,
        filters=_filters(request, _without_goals(request)),
        include_imports=query.include_imports,
    )
    totals = await run(connection, totals_query, timeout_s=timeout_s)
    visitors = {group_key(row): visitors_of(row) for row in totals.rows}
    return Answer(result.rows, visitors, grouped)
