"""The `metrics` parameter of Plausible's Stats API v1, and Plausible's rules of which
metric goes with which filters and breakdown (its ExternalStatsController), worded as
Plausible words them.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

from picolytics.api.v1_filters import DOCS, V1Condition, V1Property
from picolytics.errors import ApiParamError

V1Metric = Literal[
    "visitors",
    "visits",
    "pageviews",
    "views_per_visit",
    "bounce_rate",
    "visit_duration",
    "events",
    "conversion_rate",
    "time_on_page",
]
V1_METRICS: Final[tuple[V1Metric, ...]] = get_args(V1Metric)
# Plausible's metrics of visits: none goes with an event-only filter or breakdown.
SESSION_METRICS: Final = frozenset({"visits", "bounce_rate", "visit_duration", "views_per_visit"})


def _time_on_page(filtered: list[str], by: V1Property | None) -> str | None:
    metric = "time_on_page"
    for name in ("event:goal", "event:name"):
        if name in filtered:
            return f"Metric `{metric}` cannot be queried when filtering by `{name}`"
    if by is not None and by.name != "event:page":
        return (
            f"Metric `{metric}` is not supported in breakdown queries (except `event:page` "
            "breakdown)"
        )
    if by is None and "event:page" not in filtered:
        return f"Metric `{metric}` can only be queried in a page breakdown or with a page filter."
    return None


def _conversion_rate(filtered: list[str], by: V1Property | None) -> str | None:
    if (by is not None and by.name == "event:goal") or "event:goal" in filtered:
        return None
    return "Metric `conversion_rate` can only be queried in a goal breakdown or with a goal filter"


def _session_metric(
    metric: V1Metric, filters: tuple[V1Condition, ...], by: V1Property | None
) -> str | None:
    if by is not None and by.event_only:
        return f"Session metric `{metric}` cannot be queried for breakdown by `{by.name}`."
    event_only = next((c.on.name for c in filters if c.on.event_only), None)
    if event_only is not None:
        return f"Session metric `{metric}` cannot be queried when using a filter on `{event_only}`."
    return None


def problem(
    metric: V1Metric, filters: tuple[V1Condition, ...], by: V1Property | None
) -> str | None:
    """Plausible's refusal of `metric` with these filters and breakdown, or None."""
    filtered = [condition.on.name for condition in filters]
    if metric == "time_on_page":
        return _time_on_page(filtered, by)
    if metric == "conversion_rate":
        return _conversion_rate(filtered, by)
    if metric == "views_per_visit" and "event:page" in filtered:
        return f"Metric `{metric}` cannot be queried with a filter on `event:page`."
    if metric == "views_per_visit" and by is not None:
        return f"Metric `{metric}` is not supported in breakdown queries."
    if metric in SESSION_METRICS:
        return _session_metric(metric, filters, by)
    return None


def read_metrics(
    params: dict[str, str], filters: tuple[V1Condition, ...], by: V1Property | None
) -> tuple[V1Metric, ...]:
    """The metrics as given (by default `visitors`), each allowed with the filters and
    the breakdown, or Plausible's refusal of the first that is not. Names are taken as
    they are, spaces included, as Plausible takes them."""
    names = params.get("metrics", "visitors").split(",")
    if len(names) != len(set(names)):
        raise ApiParamError("Metrics cannot be queried multiple times.")
    metrics: list[V1Metric] = []
    for name in names:
        metric = next((known for known in V1_METRICS if known == name), None)
        if metric is None:
            raise ApiParamError(
                f"The metric `{name[:50]}` is not recognized. Find valid metrics from the "
                f"documentation: {DOCS}#metrics"
            )
        refusal = problem(metric, filters, by)
        if refusal is not None:
            raise ApiParamError(refusal)
        metrics.append(metric)
    return tuple(metrics)
