"""The answer to a v2 query, shaped as Plausible's (its QueryResult): `results`,
`meta` and the resolved `query`.

- `results`: one `{"dimensions": [...], "metrics": [...]}` per row, both in the order
  the query named them, each dimension read from the part of a Row that
  Plan.columns names (Row.parent holds a value's parent or a second dimension's
  value). Time buckets as Plausible writes them: `"2024-01-01"` for a day,
  `"2024-01-01 10:00:00"` for a local hour, a week by its Monday (or the first day
  of the period, if the week starts before it), a month by its first day. Values
  in Plausible's spelling (api/v2_names.py `shown`; `visit:country_name` spells the
  stored code as the country's English name).
- metrics as Plausible's numbers: counts as integers; `bounce_rate` (bounces / visits;
  by event:page from the query layer's tenth) and `visit_duration` (seconds) rounded
  to integers, 0 without visits;
  `views_per_visit` to two decimals, 0 without visits; `scroll_depth` (percent) and
  `time_on_page` (seconds) rounded to integers, null where no visit reported one
  (stats/engagement.py); `percentage` = 100 * the row's
  visitors / the visitors of the same filters and period, to one decimal, null when
  there are none; `conversion_rate` and `group_conversion_rate` likewise over their
  own denominators (api/v2_conversions.py), 0 when there are none. Plausible rounds
  its floats half to even (ClickHouse's round); picolytics rounds the exact quotient
  of the counts half to even. Rows ordered by `group_conversion_rate`, and those by
  `event:name` (its custom events and its `pageview` row: api/event_names.py), are
  ordered and paged here (Plan.order_after).
- `meta`, its keys sorted as Plausible sorts them: with `include.imports`,
  `imports_included`, and when imported data was left out `imports_skip_reason` (and
  `imports_warning`, in Plausible's words, for an unsupported query or interval),
  `time_labels` with `include.time_labels` (every bucket of the period, in order),
  `total_rows` with `include.total_rows`.
- `query`: the query as it was answered: the site's domain, the metrics, `date_range`
  as its first and last second in the site's zone (ISO 8601, with the offset), the
  filters, the dimensions (the plain `time` resolved to its bucket), `order_by` (its
  default spelt out), the `include` flags that are set, and `pagination`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

from picolytics.api.event_names import merged
from picolytics.api.v2_conversions import (
    GroupKey,
    group_rate,
    group_visitors,
    ordered,
    percent,
    total_visitors,
)
from picolytics.api.v2_filters import ApiAnd, ApiCondition, ApiFilter, ApiHasDone, ApiNot, ApiOr
from picolytics.api.v2_names import ApiDimension, shown
from picolytics.api.v2_query import ApiMetric, ApiQuery
from picolytics.api.v2_translate import Answers, Part, Plan
from picolytics.dimensions import Metric
from picolytics.stats.periods import zone
from picolytics.stats.query import Interval, MetricValue, Period, Result, Row

JSON = dict[str, Any]
SECOND = timedelta(seconds=1)


def _first_and_last_day(period: Period) -> tuple[date, date]:
    tz = zone(period.timezone)
    last = (period.end.astimezone(UTC) - SECOND).astimezone(tz)
    return period.start.astimezone(tz).date(), last.date()


def bucket_label(value: date | datetime, interval: Interval, first_day: date) -> str:
    """A time bucket as Plausible writes it; `first_day` is the period's first day."""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if interval == "week":
        value = max(value, first_day)  # Plausible's week never starts before the period
    return value.isoformat()


def time_labels(period: Period, interval: Interval) -> list[str]:
    """Every bucket of the period, in order, as results label them: local wall-clock
    hours (as Plausible counts them: 24 a day), days, weeks, months."""
    tz = zone(period.timezone)
    first_day, last_day = _first_and_last_day(period)
    if interval == "hour":
        start = period.start.astimezone(tz).replace(minute=0, second=0, microsecond=0)
        hour = start.replace(tzinfo=None)
        last = (period.end.astimezone(UTC) - SECOND).astimezone(tz).replace(tzinfo=None)
        labels = []
        while hour <= last:  # naive: each wall-clock hour once
            labels.append(bucket_label(hour, interval, first_day))
            hour += timedelta(hours=1)
        return labels
    if interval == "day":
        count = (last_day - first_day).days + 1
        return [(first_day + timedelta(days=n)).isoformat() for n in range(count)]
    if interval == "week":
        monday = first_day - timedelta(days=first_day.weekday())
        weeks = (last_day - monday).days // 7 + 1
        return [
            bucket_label(monday + timedelta(weeks=n), interval, first_day) for n in range(weeks)
        ]
    labels = []
    month = first_day.replace(day=1)
    while month <= last_day:
        labels.append(month.isoformat())
        month = (month + timedelta(days=32)).replace(day=1)
    return labels


@dataclass(frozen=True, slots=True)
class Denominators:
    """The visitors each rate divides by: percentage's and conversion_rate's one
    number each, group_conversion_rate's per group."""

    percentage: int | None = None
    conversion: int = 0
    groups: dict[GroupKey, int] = field(default_factory=dict)

    @classmethod
    def of(cls, answers: Answers) -> Denominators:
        return cls(
            total_visitors(answers.totals),
            total_visitors(answers.conversion_totals) or 0,
            group_visitors(answers.group_totals),
        )


def _rate(metric: ApiMetric, row: Row, under: Denominators) -> float | None:
    """A percentage of visitors: of the same filters, or a conversion rate."""
    visitors = int(row.metrics["visitors"] or 0)
    if metric == "conversion_rate":
        return percent(visitors, under.conversion)
    if metric == "group_conversion_rate":
        return group_rate(row, under.groups)
    return percent(visitors, under.percentage) if under.percentage else None


def bounce_rate(values: dict[Metric, MetricValue]) -> int:
    """Plausible's whole percent of bounces over visits (v1 and v2); by event:page the
    query layer's rate of the visits that entered there, asked without `bounces`
    (api/v2_translate.py, api/v1_queries.py)."""
    if "bounces" not in values:
        return round(values.get("bounce_rate") or 0)
    visits = int(values.get("visits") or 0)
    return round(int(values.get("bounces") or 0) / visits * 100) if visits else 0


def _metric(metric: ApiMetric, row: Row, under: Denominators) -> int | float | None:
    values = row.metrics
    if metric == "bounce_rate":
        return bounce_rate(values)
    if metric == "visit_duration":
        return round(values["visit_duration"] or 0)
    if metric == "views_per_visit":
        return float(values["views_per_visit"] or 0.0)
    if metric in ("percentage", "conversion_rate", "group_conversion_rate"):
        return _rate(metric, row, under)
    if metric in ("visitors", "visits", "pageviews", "events"):
        return int(values[metric] or 0)
    if metric in ("scroll_depth", "time_on_page"):  # null where no visit reported one
        found = values[metric]
        return None if found is None else round(found)
    raise ValueError(f"{metric} is not answered by picolytics yet")  # refused before this


def _dimension(dimension: ApiDimension, part: Part, row: Row, first_day: date) -> str | None:
    if part == "time":
        assert row.time is not None and dimension.interval is not None
        return bucket_label(row.time, dimension.interval, first_day)
    if part == "parent":
        # The value's parent (PARENT_OF), or a second dimension's value (Breakdown.then):
        # either is a dimension of ours (api/v2_translate.py).
        return shown(dimension.ours, row.parent, dimension.form)
    return shown(dimension.ours, row.value, dimension.form)


def _all_rows(plan: Plan, answers: Answers) -> list[Row]:
    """The main answer's rows, and by event:name its pageview rows (unordered)."""
    if plan.pageviews is None:
        return list(answers.main.rows)
    assert answers.pageviews is not None, "api/v2_answers.py asks every question of a plan"
    return merged(answers.main.rows, answers.pageviews.rows, plan.main)


def _rows(plan: Plan, answers: Answers, under: Denominators) -> list[Row]:
    """The rows, ordered and paged here if the plan says so."""
    rows = _all_rows(plan, answers)
    if not plan.order_after:
        return rows
    query = plan.query
    found = ordered(rows, plan.order_after, lambda row: group_rate(row, under.groups))
    return found[query.offset : query.offset + query.limit]


def results(plan: Plan, answers: Answers) -> list[JSON]:
    """The rows of the main answer, with the rates' denominators, as Plausible's."""
    query = plan.query
    under = Denominators.of(answers)
    first_day, _ = _first_and_last_day(query.period)
    return [
        {
            "dimensions": [
                _dimension(dimension, part, row, first_day)
                for dimension, part in zip(query.dimensions, plan.columns, strict=True)
            ],
            "metrics": [_metric(metric, row, under) for metric in query.metrics],
        }
        for row in _rows(plan, answers, under)
    ]


# Plausible's warnings for the reasons a user can do something about.
IMPORTS_WARNINGS: Final = {
    "unsupported_query": (
        "Imported stats are not included in the results because query parameters are not"
        " supported. For more information, see:"
        " https://plausible.io/docs/stats-api#filtering-imported-stats"
    ),
    "unsupported_interval": (
        "Imported stats are not included because the time dimension (i.e. the interval)"
        " is too short."
    ),
}


def meta(query: ApiQuery, main: Result, total_rows: int | None = None) -> JSON:
    """`total_rows`: the rows before pagination, if not the main answer's."""
    found: JSON = {}
    if query.include.imports and main.imports is not None:
        found["imports_included"] = main.imports.included
        reason = main.imports.skip_reason
        if reason is not None:
            found["imports_skip_reason"] = reason
            if reason in IMPORTS_WARNINGS:
                found["imports_warning"] = IMPORTS_WARNINGS[reason]
    time = query.time_dimension
    if query.include.time_labels and time is not None and time.interval is not None:
        found["time_labels"] = time_labels(query.period, time.interval)
    if query.include.total_rows:
        found["total_rows"] = main.total_rows if total_rows is None else total_rows
    return found


def filter_json(tree: ApiFilter) -> list[Any]:
    """A filter as Plausible's JSON, as it was given."""
    if isinstance(tree, ApiCondition):
        shape: list[Any] = [tree.operator, tree.dimension.name, list(tree.clauses)]
        return shape if tree.case_sensitive else [*shape, {"case_sensitive": False}]
    if isinstance(tree, ApiAnd | ApiOr):
        operator = "and" if isinstance(tree, ApiAnd) else "or"
        return [operator, [filter_json(inner) for inner in tree.filters]]
    if isinstance(tree, ApiHasDone):
        return ["has_not_done" if tree.negated else "has_done", filter_json(tree.filter)]
    assert isinstance(tree, ApiNot)
    return ["not", filter_json(tree.filter)]


def resolved_query(query: ApiQuery, domain: str) -> JSON:
    tz = zone(query.period.timezone)
    last = (query.period.end.astimezone(UTC) - SECOND).astimezone(tz)
    flags = query.include
    include = {"imports": flags.imports, "time_labels": flags.time_labels}
    include["total_rows"] = flags.total_rows
    return {
        "site_id": domain,
        "metrics": list(query.metrics),
        "date_range": [
            query.period.start.astimezone(tz).isoformat(timespec="seconds"),
            last.isoformat(timespec="seconds"),
        ],
        "filters": [filter_json(tree) for tree in query.filters],
        "dimensions": [d.resolved_name for d in query.dimensions],
        "order_by": [[name, direction] for name, direction in query.resolved_order],
        "include": {key: True for key, flag in include.items() if flag},
        "pagination": {"offset": query.offset, "limit": query.limit},
    }


def response(plan: Plan, answers: Answers, domain: str) -> JSON:
    """The whole answer, for the site whose stored domain is `domain`."""
    total = len(_all_rows(plan, answers)) if plan.pageviews is not None else None
    return {
        "results": results(plan, answers),
        "meta": dict(sorted(meta(plan.query, answers.main, total).items())),
        "query": resolved_query(plan.query, domain),
    }
