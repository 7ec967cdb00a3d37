"""What a valid query needs: which grains it reads, how its rows are grouped, and
whether rollups can answer it (docs/read-model.md, How it is kept fast).

Rollups answer, for the days they hold:
- totals and day/week/month series without a filter (rollup_visits and
  rollup_events, dimension ''), and hourly series without a filter (rollup_hours);
- a breakdown, also per day/week/month, without a filter or with a filter whose every
  condition is on the breakdown's own dimension (and, for "prop", its key): that is a
  condition on the rows' values, and each rollup row is one value;
- totals, series and breakdowns by a visit dimension or by page, filtered on one
  *segment* (dimensions.SEGMENTS) with is/contains/matches and their negations under
  And/Or, but no Not: the segment rollups hold them per segment value. (A Not would
  keep the events of sessions that are no visit, which those rollups do not hold.)
Everything else reads raw rows for the whole period: a filter on another dimension
or on two (the rollups hold no other combinations), a behavioral filter (has_done,
has_not_done: whether a visit had some event is in no rollup, not even when the inner
filter is on the breakdown's own dimension, as a row of a page is not the visits that
saw it), an hourly series with a breakdown or a filter, `events` by a visit
dimension (the events of visits are not rolled up by visit value), and a breakdown
by two dimensions (no rollup holds pairs of values): on the visit grain when both are
visit dimensions, else on the event grain, with each event's visit for a visit
dimension.
"""

from __future__ import annotations

from dataclasses import dataclass

from picolytics.dimensions import (
    ENGAGEMENT_METRICS,
    EVENT_DIMENSIONS,
    SEGMENTS,
    VISIT_DIMENSIONS,
    Dimension,
    VisitDimension,
)
from picolytics.stats.filters import behavioral, conditions
from picolytics.stats.query import Breakdown, Condition, Filter, HasDone, Not, Query

# Metrics of each grain when there is no breakdown.
_VISIT_TOTALS = frozenset(
    {
        "visitors",
        "visits",
        "bounces",
        "bounce_rate",
        "visit_duration",
        "views_per_visit",
        "total_duration",
    }
)
_EVENT_TOTALS = frozenset({"pageviews", "events"})


@dataclass(frozen=True, slots=True)
class Shape:
    dimension: Dimension | None
    prop_key: str | None
    hourly: bool
    visit_grain: bool  # a part over visits (sessions with a pageview)
    event_grain: bool  # a part over pageviews and custom events
    visit_events: bool  # a visit breakdown's `events`: the counted events of each visit
    rollups: bool  # may rollup rows answer the days they hold?
    # The segment whose rollups answer a filtered query (None: the plain rollups), and
    # whether they do so on a day where the segment splits a visitor: yes when the
    # filter matches one value only, or no visitors are asked for (docs/read-model.md).
    segment: VisitDimension | None = None
    segment_any_day: bool = False
    then: Breakdown | None = None  # the second dimension, whose value is the parent

    @property
    def by_visit_dimension(self) -> bool:
        return self.dimension in VISIT_DIMENSIONS

    @property
    def by_event_dimension(self) -> bool:
        return self.dimension is not None and self.dimension in EVENT_DIMENSIONS


def shape_of(query: Query) -> Shape:
    """The shape of a query that stats/validate.py accepted."""
    breakdown = query.breakdown
    dimension = breakdown.dimension if breakdown else None
    prop_key = breakdown.prop_key if breakdown else None
    metrics = set(query.metrics)
    if dimension is None:
        visit_grain = bool(metrics & _VISIT_TOTALS)
        event_grain = bool(metrics & _EVENT_TOTALS)
    else:  # a goal is completed by events
        visit_grain = dimension in VISIT_DIMENSIONS
        event_grain = not visit_grain
    hourly = query.interval == "hour"
    if breakdown is not None and breakdown.then is not None:
        return _pair_shape(query, breakdown, breakdown.then)
    visit_events = dimension is not None and visit_grain and "events" in metrics
    if metrics & ENGAGEMENT_METRICS:  # no rollup holds them (stats/engagement.py)
        return Shape(dimension, prop_key, hourly, visit_grain, event_grain, visit_events, False)
    if dimension == "goal":  # from raw rows: stats/goal_parts.py
        return Shape(dimension, prop_key, hourly, False, True, False, False)
    if query.filters is None:
        rollups = not visit_events and not (hourly and dimension is not None)
        return Shape(dimension, prop_key, hourly, visit_grain, event_grain, visit_events, rollups)
    if behavioral(query.filters):  # the events of each visit: raw rows only
        return Shape(dimension, prop_key, hourly, visit_grain, event_grain, visit_events, False)
    own = all(
        c.dimension == dimension and (dimension != "prop" or c.prop_key == prop_key)
        for c in conditions(query.filters)
    )
    segment = None if own else _segment_of(query.filters, dimension)
    rollups = (own or segment is not None) and not hourly and not visit_events
    any_day = _one_value(query.filters) or "visitors" not in metrics
    return Shape(
        dimension, prop_key, hourly, visit_grain, event_grain, visit_events, rollups,
        segment if rollups else None, any_day,
    )  # fmt: skip


def _pair_shape(query: Query, first: Breakdown, then: Breakdown) -> Shape:
    """Two dimensions (validate.py refused goals): raw rows only, of one grain."""
    visit_grain = first.dimension in VISIT_DIMENSIONS and then.dimension in VISIT_DIMENSIONS
    return Shape(
        first.dimension, first.prop_key, query.interval == "hour",
        visit_grain=visit_grain, event_grain=not visit_grain,
        visit_events=visit_grain and "events" in query.metrics, rollups=False, then=then,
    )  # fmt: skip


def _segment_of(filters: Filter, dimension: Dimension | None) -> VisitDimension | None:
    """The segment of a filter whose conditions are all on that one segment, without
    Not, for a query the segment rollups hold (by nothing, a visit dimension, page)."""
    found = {c.dimension for c in conditions(filters)}
    # Segment event rollups hold the total, pages and hosts only (no event, prop).
    if len(found) != 1 or _has_not(filters) or dimension in ("event", "prop"):
        return None
    (segment,) = found
    return next((s for s in SEGMENTS if s == segment), None)


def _has_not(filter_: Filter) -> bool:
    if isinstance(filter_, Condition):
        return False
    if isinstance(filter_, Not | HasDone):  # (a HasDone never gets here: raw rows)
        return True
    return any(_has_not(inner) for inner in filter_.filters)


def _one_value(filter_: Filter) -> bool:
    """Can the filter hold for one value only? (A case-sensitive `is` of one value.)"""
    return (
        isinstance(filter_, Condition)
        and filter_.operator == "is"
        and filter_.case_sensitive
        and len(filter_.values) == 1
    )
