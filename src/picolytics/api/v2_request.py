"""The body of Plausible's Stats API v2 `POST /api/v2/query`, checked and typed.

`parse` turns the decoded JSON body into a frozen `ApiQuery` (api/v2_query.py), or
raises an ApiRequestError whose field is the JSON pointer of what is wrong
(`#/metrics/1`) and whose message says what, worded as Plausible's own errors where it
has one. It accepts what Plausible's public API accepts (docs/api-v2.md): the same
keys, metric and dimension names (api/v2_names.py), date ranges (api/v2_dates.py),
filters (api/v2_filters.py) and rules, such as which metrics go with which dimensions
(api/v2_rules.py). No HTTP, no SQL: the caller names the site's zone and first day
(`SiteContext`, found with `requested_site`) and the instant `now`. What a valid query
asks that the query layer cannot answer yet (goals, a second breakdown, has_done...)
is listed in `ApiQuery.unsupported`.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Final

from picolytics.api.v2_dates import mismatch, resolve, show, time_bucket
from picolytics.api.v2_filters import parse_filters
from picolytics.api.v2_names import ApiDimension, dimension
from picolytics.api.v2_query import (
    API_METRICS,
    DEFAULT_LIMIT,
    ApiMetric,
    ApiQuery,
    Include,
    SiteContext,
)
from picolytics.api.v2_rules import REVENUE_METRICS, check, unsupported
from picolytics.errors import ApiRequestError
from picolytics.stats.query import MAX_LIMIT, Direction, Period

MAX_OFFSET: Final = 2**31 - 1
KEYS: Final = (
    "site_id", "metrics", "date_range", "dimensions", "filters", "order_by", "include",
    "pagination",
)  # fmt: skip
REQUIRED: Final = ("site_id", "metrics", "date_range")
INCLUDE_KEYS: Final = ("time_labels", "total_rows", "imports")


def _pointer(key: object, parent: str = "#") -> str:
    """A key's JSON pointer (RFC 6901) under `parent`, cut short for a message."""
    return f"{parent}/" + str(key)[:100].replace("~", "~0").replace("/", "~1")


def requested_site(body: object) -> str:
    """The domain a body asks about, to look the site up before `parse`."""
    if not isinstance(body, dict):
        raise mismatch("#", "Object", body)
    if "site_id" not in body:
        raise ApiRequestError("#/site_id", "Required property was not present.")
    site_id = body["site_id"]
    if not isinstance(site_id, str):
        raise mismatch("#/site_id", "String", site_id)
    if not site_id.strip():
        raise ApiRequestError("#/site_id", "must name a site (its domain).")
    return site_id


def _metrics(value: object) -> tuple[ApiMetric, ...]:
    if not isinstance(value, list):
        raise mismatch("#/metrics", "Array", value)
    if not value:
        raise ApiRequestError("#/metrics", "Expected a minimum of 1 items but got 0.")
    found: list[ApiMetric] = []
    for index, name in enumerate(value):
        at = f"#/metrics/{index}"
        if name in REVENUE_METRICS:
            raise ApiRequestError(
                at, f"Revenue metrics are not supported: {name} needs revenue goals."
            )
        metric = next((m for m in API_METRICS if m == name), None)
        if metric is None:
            raise ApiRequestError(at, f"Invalid metric {show(name)}")
        found.append(metric)
    if len(set(found)) < len(found):
        raise ApiRequestError("#/metrics", "Expected items to be unique but they were not.")
    return tuple(found)


def _dimensions(value: object, period: Period) -> tuple[ApiDimension, ...]:
    if not isinstance(value, list):
        raise mismatch("#/dimensions", "Array", value)
    found: list[ApiDimension] = []
    for index, name in enumerate(value):
        at = f"#/dimensions/{index}"
        parsed = dimension(name) if isinstance(name, str) else None
        if parsed is None:
            raise ApiRequestError(at, f"Invalid dimension {show(name)}")
        if parsed.grain == "time":
            if any(d.grain == "time" for d in found):
                raise ApiRequestError(at, "Only one time dimension may be used in a query.")
            if parsed.interval is None:
                parsed = ApiDimension(parsed.name, None, "time", interval=time_bucket(period))
        found.append(parsed)
    if len({d.name for d in found}) < len(found):
        raise ApiRequestError("#/dimensions", "Expected items to be unique but they were not.")
    return tuple(found)


def _order_by(value: object) -> tuple[tuple[str, Direction], ...]:
    if not isinstance(value, list):
        raise mismatch("#/order_by", "Array", value)
    entries: list[tuple[str, Direction]] = []
    for index, entry in enumerate(value):
        at = f"#/order_by/{index}"
        if not isinstance(entry, list) or len(entry) != 2:
            raise ApiRequestError(at, f"Invalid order_by entry {show(entry)}: [name, direction].")
        name, direction = entry
        if not isinstance(name, str) or (name not in API_METRICS and dimension(name) is None):
            raise ApiRequestError(f"{at}/0", f"Invalid value in order_by {show(name)}")
        if direction not in ("asc", "desc"):
            raise ApiRequestError(f"{at}/1", f"Invalid direction {show(direction)}: asc or desc.")
        entries.append((name, "asc" if direction == "asc" else "desc"))
    return tuple(entries)


def _include(value: object) -> Include:
    if not isinstance(value, dict):
        raise mismatch("#/include", "Object", value)
    flags: dict[str, bool] = {}
    for key, flag in value.items():
        at = _pointer(key, "#/include")
        if key not in INCLUDE_KEYS:
            raise ApiRequestError(at, "Schema does not allow additional properties.")
        if not isinstance(flag, bool):
            raise mismatch(at, "Boolean", flag)
        flags[key] = flag
    return Include(**flags)


def _count(value: object, at: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise mismatch(at, "Integer", value)
    if value < low:
        raise ApiRequestError(at, f"Expected the value to be >= {low}")
    if value > high:
        raise ApiRequestError(at, f"Expected the value to be <= {high}")
    return value


def _pagination(value: object) -> tuple[int, int]:
    if not isinstance(value, dict):
        raise mismatch("#/pagination", "Object", value)
    for key in value:
        if key not in ("limit", "offset"):
            raise ApiRequestError(
                _pointer(key, "#/pagination"), "Schema does not allow additional properties."
            )
    limit = _count(value.get("limit", DEFAULT_LIMIT), "#/pagination/limit", 1, MAX_LIMIT)
    return limit, _count(value.get("offset", 0), "#/pagination/offset", 0, MAX_OFFSET)


def parse(body: object, *, site: SiteContext, now: datetime) -> ApiQuery:
    """The query a v2 body asks, for `site` at the instant `now` (aware)."""
    site_id = requested_site(body)
    if not isinstance(body, dict):  # requested_site said so already; this tells mypy
        raise mismatch("#", "Object", body)
    for key in body:
        if key not in KEYS:
            raise ApiRequestError(_pointer(key), "Schema does not allow additional properties.")
    for key in REQUIRED:
        if key not in body:
            raise ApiRequestError(f"#/{key}", "Required property was not present.")
    metrics = _metrics(body["metrics"])
    date_range, period = resolve(
        body["date_range"], timezone=site.timezone, now=now, first_day=site.first_day
    )
    query = ApiQuery(
        site_id,
        metrics,
        date_range,
        period,
        _dimensions(body.get("dimensions", []), period),
        parse_filters(body.get("filters", [])),
        _order_by(body["order_by"]) if "order_by" in body else None,
        _include(body.get("include", {})),
        *_pagination(body.get("pagination", {})),
    )
    check(query)
    return replace(query, unsupported=tuple(unsupported(query)))
