"""The query string of Plausible's Stats API v1, read and checked (docs/api-v1.md).

`read` turns the parameters of one endpoint into a typed `V1Request`, checking them
in Plausible's order (period, date, property, interval, filters, metrics, limit,
page) with Plausible's messages (its ExternalStatsController), before any SQL. Periods
are whole local days of the site's zone, relative to `date` (by default today there),
as Plausible's Legacy.QueryBuilder counts them:

| period | local days |
| --- | --- |
| `day` | `date` |
| `7d`, `30d` | the 7 or 30 days before `date`, `date` excluded |
| `month` | the calendar month of `date`, its days after `date` included |
| `6mo`, `12mo` | 6 or 12 whole calendar months, the month of `date` the last |
| `custom` | `date=FIRST,LAST`, both included |
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Final, Literal

from picolytics.api.v1_filters import (
    DOCS,
    V1Condition,
    V1Property,
    check_goals,
    parse_filters,
    parse_property,
)
from picolytics.api.v1_metrics import V1Metric, read_metrics
from picolytics.errors import ApiParamError
from picolytics.stats.periods import days, local_today, zone
from picolytics.stats.query import MAX_PERIOD_DAYS, Interval, Period

Endpoint = Literal["aggregate", "timeseries", "breakdown"]
PERIODS: Final = ("day", "7d", "30d", "month", "6mo", "12mo", "custom")
DEFAULT_PERIOD: Final = "30d"
INTERVALS: Final[dict[str, Interval]] = {"day": "day", "date": "day", "month": "month"}
DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 1000
# More rows than any breakdown has: a page past it is empty, and stays a bigint.
MAX_OFFSET: Final = 10**15
_DATE: Final = re.compile(r"[0-9]{4}-?[0-9]{2}-?[0-9]{2}")
_INTEGER: Final = re.compile(r"[+-]?[0-9]{1,18}")  # as Elixir's Integer.parse, bounded


@dataclass(frozen=True, slots=True)
class V1Request:
    """One valid v1 request: its period (whole local days, `first` to `last`), the
    metrics as given, the filters, and what each endpoint adds."""

    period: Period
    first: date
    last: date
    metrics: tuple[V1Metric, ...]
    filters: tuple[V1Condition, ...] = ()
    compare: bool = False  # aggregate: compare=previous_period
    interval: Interval | None = None  # timeseries
    by: V1Property | None = None  # breakdown: its property
    limit: int = DEFAULT_LIMIT
    page: int = 1
    with_imported: bool = False  # with_imported=true: imported data too (docs/imports.md)

    @property
    def offset(self) -> int:
        return min((self.page - 1) * self.limit, MAX_OFFSET)


def _date(text: str) -> date | str:
    """A date as Elixir's Date.from_iso8601 reads one, or the name of its error."""
    if not _DATE.fullmatch(text):
        return "invalid_format"
    digits = text.replace("-", "")
    if len(text) == 9:  # one dash only: neither form
        return "invalid_format"
    try:
        return date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
    except ValueError:
        return "invalid_date"


def _custom_days(text: str | None) -> tuple[date, date]:
    if text is None:
        raise ApiParamError(
            f"The `date` parameter is required when using a custom period. See {DOCS}#time-periods"
        )
    parts = [_date(part.strip()) for part in text.split(",")]
    if len(parts) != 2 or not all(isinstance(part, date) for part in parts):
        raise ApiParamError(
            "Invalid format for `date` parameter. When using a custom period, please include "
            f"two ISO-8601 formatted dates joined by a comma. See {DOCS}#time-periods"
        )
    first, last = parts
    assert isinstance(first, date) and isinstance(last, date)
    if last < first:
        raise ApiParamError(
            f"Invalid `date` parameter: the last day {last} is before the first day {first}."
        )
    return first, last


def _months_back(day: date, months: int) -> date:
    """The first of the month `months` calendar months before `day`'s month."""
    index = day.year * 12 + day.month - 1 - months
    return date(index // 12, index % 12 + 1, 1)


def _named_days(period: str, day: date) -> tuple[date, date]:
    if period == "day":
        return day, day
    if period in ("7d", "30d"):
        count = int(period[:-1])
        return day - timedelta(days=count), day - timedelta(days=1)
    end_of_month = _months_back(day, -1) - timedelta(days=1)
    if period == "month":
        return day.replace(day=1), end_of_month
    months = int(period[:-2])  # 6mo, 12mo: this month the last of them
    return _months_back(day, months - 1), end_of_month


def read_period(
    params: dict[str, str], timezone: str, now: datetime
) -> tuple[str, Period, date, date]:
    """The period's name, its Period in `timezone` and its first and last local day."""
    name = params.get("period", DEFAULT_PERIOD)
    if name not in PERIODS:
        raise ApiParamError(
            f"Error parsing `period` parameter: invalid period `{name[:50]}`. Please find "
            f"accepted values in our docs: {DOCS}#time-periods"
        )
    text = params.get("date")
    try:
        if name == "custom":
            first, last = _custom_days(text)
        else:
            day: date | str = local_today(now, zone(timezone)) if text is None else _date(text)
            if isinstance(day, str):
                raise ApiParamError(
                    f"Error parsing `date` parameter: {day}. Please specify a valid date in "
                    "ISO-8601 format."
                )
            first, last = _named_days(name, day)
        if (last - first).days + 1 > MAX_PERIOD_DAYS:
            raise ApiParamError(f"Invalid `date` parameter: more than {MAX_PERIOD_DAYS} days.")
        return name, days(first, last, timezone), first, last
    except (OverflowError, ValueError):  # before year 1 or after 9999
        raise ApiParamError("Invalid `date` parameter: out of the calendar's range.") from None


def read_property(params: dict[str, str]) -> V1Property:
    name = params.get("property")
    if name is None:
        raise ApiParamError(
            "The `property` parameter is required. Please provide at least one property to "
            "show a breakdown by."
        )
    found = parse_property(name)
    if found is None:
        raise ApiParamError(
            f"Invalid property '{name[:100]}'. Please provide a valid property for the "
            f"breakdown endpoint: {DOCS}#properties"
        )
    return found


def read_interval(params: dict[str, str], period: str) -> Interval:
    """The timeseries' bucket: as asked, or Plausible's default for the period."""
    name = params.get("interval")
    if name is None:
        return "hour" if period == "day" else "month" if period in ("6mo", "12mo") else "day"
    if name not in INTERVALS:
        raise ApiParamError(
            f"Error parsing `interval` parameter: invalid interval `{name[:50]}`. Valid "
            "intervals are `day`, `month`"
        )
    return INTERVALS[name]


def _positive(params: dict[str, str], name: str, bound: int | None) -> int | None:
    text = params.get(name)
    if text is None:
        return None
    if not _INTEGER.fullmatch(text) or int(text) < 1 or (bound is not None and int(text) > bound):
        if bound is None:
            raise ApiParamError(f"Please provide {name} as a positive number.")
        raise ApiParamError(f"Please provide {name} as a number between 1 and {bound}.")
    return int(text)


def read(
    endpoint: Endpoint,
    params: dict[str, str],
    *,
    timezone: str,
    now: datetime,
    goals: frozenset[str] = frozenset(),
) -> V1Request:
    """The request of one endpoint, or an ApiParamError for the first problem; `goals`
    are the display names of the site's goals, which goal filters must name."""
    name, period, first, last = read_period(params, timezone, now)
    by = read_property(params) if endpoint == "breakdown" else None
    interval = read_interval(params, name) if endpoint == "timeseries" else None
    filters = parse_filters(params.get("filters"))
    check_goals(filters, goals)
    metrics = read_metrics(params, filters, by)
    limit = _positive(params, "limit", MAX_LIMIT) if endpoint == "breakdown" else None
    page = _positive(params, "page", None) if endpoint == "breakdown" else None
    compare = endpoint == "aggregate" and params.get("compare") == "previous_period"
    with_imported = params.get("with_imported") == "true"
    return V1Request(
        period, first, last, metrics, filters, compare, interval, by,
        limit or DEFAULT_LIMIT, page or 1, with_imported,
    )  # fmt: skip


def previous_period(request: V1Request, timezone: str, now: datetime) -> Period:
    """Plausible's previous_period: as many days as the period has up to today (its
    days to come left out), right before it."""
    today = local_today(now, zone(timezone))
    last = min(request.last, today) if request.first <= today else request.last
    count = (last - request.first).days + 1
    try:
        before = request.first - timedelta(days=1)
        return days(before - timedelta(days=count - 1), before, timezone)
    except (OverflowError, ValueError):
        raise ApiParamError("Invalid `date` parameter: out of the calendar's range.") from None
