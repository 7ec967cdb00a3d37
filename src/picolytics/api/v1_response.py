"""The answers of the v1 endpoints, shaped as Plausible's (its Legacy.Aggregate,
Legacy.Timeseries and Legacy.Breakdown).

- aggregate: `{"results": {"visitors": {"value": 5}, ...}}`; with
  `compare=previous_period` each metric also has `comparison_value` and `change`:
  the percent change rounded to an integer (100 from nothing, 0 from nothing to
  nothing), for bounce_rate the difference in points (null from 0), for
  conversion_rate the difference to one decimal;
- timeseries: `{"results": [{"date": "2024-01-10", "visitors": 2}, ...]}`, a row for
  every bucket of the period, empty ones with zeros; hours as `"2024-01-10 09:00:00"`,
  months by their first day;
- breakdown: `{"results": [{"browser": "Firefox", "visitors": 2}, ...]}`, the value
  under the property's short name (`event:props:plan` under `plan`), a version with
  its browser or OS.

Numbers as Plausible's: counts as integers, bounce_rate a whole percent of the visits
and visit_duration whole seconds (0 without visits; by event:page those of the visits
that entered on the page), time_on_page whole seconds (0 where no visit reported
one), views_per_visit with two decimals, conversion_rate a percent of the visitors
with one decimal (half to even, from the exact quotient, as api/v2_conversions.py
divides for the v2 endpoint). Keys in alphabetical order, as Plausible's maps come
out.
"""

from __future__ import annotations

import math
from typing import Any

from picolytics.api.v1_metrics import V1Metric
from picolytics.api.v1_params import V1Request
from picolytics.api.v1_queries import RATE, Answer, group_rates
from picolytics.api.v2_conversions import GROUP_RATE, ordered, percent, visitors_of
from picolytics.api.v2_names import shown
from picolytics.api.v2_response import bounce_rate, bucket_label, time_labels
from picolytics.dimensions import PARENT_OF
from picolytics.stats.query import Direction, Row

JSON = dict[str, Any]
Number = int | float


def _elixir_round(value: float) -> int:
    """Elixir's round/1: to the nearest integer, halves away from zero."""
    return int(math.copysign(math.floor(abs(value) + 0.5), value))


def value(metric: V1Metric, row: Row, answer: Answer) -> Number:
    """One metric of one row of an answer, as Plausible writes it."""
    values = row.metrics
    if metric == "bounce_rate":
        return bounce_rate(values)
    if metric == "visit_duration":
        return round(values.get("visit_duration") or 0)
    if metric == "views_per_visit":
        return float(values.get("views_per_visit") or 0.0)
    if metric == "conversion_rate":
        return percent(visitors_of(row), answer.denominator(row))
    if metric in ("visitors", "visits", "pageviews", "events"):
        return int(values.get(metric) or 0)
    if metric == "time_on_page":  # v1 has no null: 0 where no visit reported one
        found = values.get("time_on_page")
        return 0 if found is None else round(found)
    raise ValueError(f"{metric} is not answered by picolytics yet")  # refused before this


def change(metric: V1Metric, old: Number, new: Number) -> Number | None:
    """Plausible's change from the previous period (its Stats.Compare)."""
    if metric == "conversion_rate":
        return round(new - old, 1)
    if metric == "bounce_rate":
        return new - old if old > 0 else None
    if old == 0:
        return 100 if new > 0 else 0
    return _elixir_round((new - old) / old * 100)


def _only_row(answer: Answer) -> Row:
    return answer.rows[0] if answer.rows else Row(None, "", None)


def aggregate(request: V1Request, answer: Answer, previous: Answer | None) -> JSON:
    current_row = _only_row(answer)
    results: JSON = {}
    for metric in sorted(request.metrics):
        now = value(metric, current_row, answer)
        if previous is None:
            results[metric] = {"value": now}
            continue
        before = value(metric, _only_row(previous), previous)
        results[metric] = {
            "change": change(metric, before, now),
            "comparison_value": before,
            "value": now,
        }
    return {"results": results}


def timeseries(request: V1Request, answer: Answer) -> JSON:
    interval = request.interval or "day"
    by_label = {
        bucket_label(row.time, interval, request.first): row
        for row in answer.rows
        if row.time is not None
    }
    results = []
    for label in time_labels(request.period, interval):
        row = by_label.get(label)
        found: JSON = {"date": label}
        for metric in request.metrics:
            found[metric] = value(metric, row or Row(None, "", None), answer)
        results.append(dict(sorted(found.items())))
    return {"results": results}


def breakdown(request: V1Request, answer: Answer) -> JSON:
    by = request.by
    assert by is not None and by.ours is not None  # a breakdown has a property
    parent = PARENT_OF.get(by.ours) if by.ours in ("browser_version", "os_version") else None
    rows = list(answer.rows)
    if group_rates(request) and request.metrics[0] == RATE:  # not paged yet (v1_queries.py)
        order: list[tuple[str, Direction]] = [(GROUP_RATE, "desc"), ("value", "asc")]
        rows = ordered(rows, order, lambda row: percent(visitors_of(row), answer.denominator(row)))
        rows = rows[request.offset : request.offset + request.limit]
    results = []
    for row in rows:
        found: JSON = {by.key: shown(by.ours, row.value)}
        if parent is not None:
            found[parent] = shown(parent, row.parent)
        for metric in request.metrics:
            found[metric] = value(metric, row, answer)
        results.append(dict(sorted(found.items())))
    return {"results": results}
