"""The typed Stats API v2 query: what `api/v2_request.py` reads a body into, what
`api/v2_rules.py` checks and `api/v2_translate.py` turns into the query layer's Query.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Final, Literal, get_args

from picolytics.api.v2_dates import DateRange
from picolytics.api.v2_filters import ApiFilter, Unsupported
from picolytics.api.v2_names import ApiDimension
from picolytics.stats.query import Direction, Period

ApiMetric = Literal[
    "visitors",
    "visits",
    "pageviews",
    "views_per_visit",
    "bounce_rate",
    "visit_duration",
    "events",
    "percentage",
    "conversion_rate",
    "group_conversion_rate",
    "scroll_depth",
    "time_on_page",
]
API_METRICS: Final[tuple[ApiMetric, ...]] = get_args(ApiMetric)
DEFAULT_LIMIT: Final = 10_000  # Plausible's default, and its maximum


@dataclass(frozen=True, slots=True)
class SiteContext:
    """What the parser needs of the queried site: its IANA zone (a known one), and its
    first day of stats, where `"all"` starts (None: today)."""

    timezone: str = "UTC"
    first_day: date | None = None


@dataclass(frozen=True, slots=True)
class Include:
    time_labels: bool = False  # meta.time_labels: every bucket of the period
    total_rows: bool = False  # meta.total_rows: the rows before pagination
    imports: bool = False  # imported data too, where it can answer (docs/imports.md)


@dataclass(frozen=True, slots=True)
class ApiQuery:
    """One valid v2 query. `period` is [start, end) in the site's zone; a time
    dimension's `interval` is resolved ("time" from the period); `order_by` is None
    for Plausible's default (time ascending, then the first metric descending)."""

    site_id: str
    metrics: tuple[ApiMetric, ...]
    date_range: DateRange
    period: Period
    dimensions: tuple[ApiDimension, ...] = ()
    filters: tuple[ApiFilter, ...] = ()
    order_by: tuple[tuple[str, Direction], ...] | None = None
    include: Include = field(default_factory=Include)
    limit: int = DEFAULT_LIMIT
    offset: int = 0
    unsupported: tuple[Unsupported, ...] = ()

    @property
    def time_dimension(self) -> ApiDimension | None:
        return next((d for d in self.dimensions if d.grain == "time"), None)

    @property
    def breakdowns(self) -> tuple[ApiDimension, ...]:
        return tuple(d for d in self.dimensions if d.grain != "time")

    @property
    def resolved_order(self) -> tuple[tuple[str, Direction], ...]:
        """`order_by`, or Plausible's default: the time dimension ascending (if any),
        then the first metric descending. Names as Plausible echoes them."""
        if self.order_by is None:
            time = self.time_dimension
            first: tuple[tuple[str, Direction], ...] = ((self.metrics[0], "desc"),)
            return first if time is None else ((time.resolved_name, "asc"), *first)
        names = {d.name: d.resolved_name for d in self.dimensions}
        return tuple((names.get(name, name), direction) for name, direction in self.order_by)
