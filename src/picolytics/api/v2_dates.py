"""Plausible's Stats API v2 `date_range`, resolved in the site's zone into a Period.

What each form means is Plausible's (its v2 reference, and its query parser for the
details the reference leaves open), "today" being the local date of `now` in the
site's zone:

| form | local days |
| --- | --- |
| `"day"` | today |
| `"Nd"`, N from 1 ("7d", "28d", "30d", "91d") | the N days before today, today excluded |
| `"month"` | today's calendar month, the days after today included |
| `"Nmo"`, N from 1 to 100 ("6mo", "12mo") | the N calendar months before this one |
| `"year"` | today's calendar year |
| `"all"` | the site's first day (today without one) to today |
| `["2024-01-01", "2024-01-31"]` | those days, both included |
| two ISO 8601 times with offsets | from the first to the second, its second included |

A period spans at most MAX_PERIOD_DAYS (the query layer's bound): a longer explicit
range is an ApiRequestError, and "all" starts at most that many days ago. `time_bucket`
is Plausible's choice of bucket for the plain `time` dimension. The module also holds
the helpers every part of the v2 parser names the body's values with (`show`,
`json_type`, `mismatch`), as the one none of the others import.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, timedelta
from itertools import islice
from typing import Final

from picolytics.errors import ApiRequestError
from picolytics.stats.periods import days, local_today, zone
from picolytics.stats.query import MAX_PERIOD_DAYS, Interval, Period

FIELD: Final = "#/date_range"
MAX_MONTHS: Final = 100  # Plausible's bound on "Nmo"
_SHORTHAND: Final = re.compile(r"([0-9]{1,6})(d|mo)")
_DATE: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_DATETIME: Final = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?"
    r"(Z|[+-][0-9]{2}(:?[0-9]{2})?)"
)

DateRange = str | tuple[str, str]


def show(value: object, budget: int = 160) -> str:
    """A piece of the body as compact JSON for an error message, cut to about `budget`
    characters: the work and the depth are bounded by the budget, whatever the value."""
    out: list[str] = []
    _show(value, out, [budget])
    text = "".join(out)
    return text if len(text) <= budget else text[: budget - 1] + "…"


def _show(value: object, out: list[str], left: list[int]) -> None:
    def emit(text: str) -> None:
        out.append(text)
        left[0] -= len(text)

    if left[0] <= 0:
        return
    if isinstance(value, list | tuple | dict):
        # Never more items than characters left: each shown one costs at least one.
        items = islice(value.items() if isinstance(value, dict) else value, max(left[0], 0))
        emit("{" if isinstance(value, dict) else "[")
        for index, item in enumerate(items):
            if left[0] <= 0:
                break
            emit(", " if index else "")
            if isinstance(value, dict):
                _show(item[0], out, left)
                emit(": ")
                _show(item[1], out, left)
            else:
                _show(item, out, left)
        emit("}" if isinstance(value, dict) else "]")
        return
    if isinstance(value, str):
        value = value[: left[0]]
    try:
        emit(json.dumps(value, ensure_ascii=False))
    except (TypeError, ValueError):
        emit(type(value).__name__)


def json_type(value: object) -> str:
    """The JSON type of a value, as Plausible's schema errors name it."""
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "Boolean"
    for kind, name in ((int, "Integer"), (float, "Number"), (str, "String")):
        if isinstance(value, kind):
            return name
    if isinstance(value, list):
        return "Array"
    return "Object" if isinstance(value, dict) else type(value).__name__


def mismatch(field: str, expected: str, value: object) -> ApiRequestError:
    return ApiRequestError(field, f"Type mismatch. Expected {expected} but got {json_type(value)}.")


def _invalid(value: object, why: str) -> ApiRequestError:
    return ApiRequestError(FIELD, f"Invalid date range {show(value)}: {why}.")


def _months_back(day: date, months: int) -> date:
    """The first day of the month `months` months before `day`'s month."""
    index = day.year * 12 + day.month - 1 - months
    return date(index // 12, index % 12 + 1, 1)


def _span(first: date, last: date, value: object, timezone: str) -> Period:
    if last < first:
        raise _invalid(value, f"the last day {last} is before the first day {first}")
    count = (last - first).days + 1
    if count > MAX_PERIOD_DAYS:
        raise _invalid(value, f"{count} days is more than picolytics' {MAX_PERIOD_DAYS}")
    try:
        return days(first, last, timezone)
    except OverflowError:
        raise _invalid(value, "out of the calendar's range") from None


def _shorthand(value: str, today: date, timezone: str) -> Period:
    match = _SHORTHAND.fullmatch(value)
    if match is None:
        raise _invalid(value, 'not a date range (e.g. "day", "7d", "month", "6mo", "year", "all")')
    count, unit = int(match[1]), match[2]
    if unit == "d":
        if not 1 <= count <= MAX_PERIOD_DAYS:
            raise _invalid(value, f"1 to {MAX_PERIOD_DAYS} days in picolytics")
        return _span(today - timedelta(days=count), today - timedelta(days=1), value, timezone)
    if not 1 <= count <= MAX_MONTHS:
        raise _invalid(value, f"1 to {MAX_MONTHS} months")
    this_month = today.replace(day=1)
    return _span(_months_back(today, count), this_month - timedelta(days=1), value, timezone)


def _named(value: str, today: date, timezone: str, first_day: date | None) -> Period:
    if value == "day":
        return _span(today, today, value, timezone)
    if value == "month":
        next_month = _months_back(today, -1)
        return _span(today.replace(day=1), next_month - timedelta(days=1), value, timezone)
    if value == "year":
        return _span(date(today.year, 1, 1), date(today.year, 12, 31), value, timezone)
    if value == "all":
        earliest = today - timedelta(days=MAX_PERIOD_DAYS - 1)
        first = min(max(first_day or today, earliest), today)
        return _span(first, today, value, timezone)
    return _shorthand(value, today, timezone)


def _instant(text: str) -> datetime | None:
    if _DATETIME.fullmatch(text) is None:
        return None
    try:
        return datetime.fromisoformat(text.replace(" ", "T", 1))
    except ValueError:
        return None


def _custom(value: list[object], timezone: str) -> tuple[DateRange, Period]:
    if len(value) != 2 or not all(isinstance(item, str) for item in value):
        raise _invalid(value, "a custom range is a list of two dates or two times")
    first, last = str(value[0]), str(value[1])
    if _DATE.fullmatch(first) and _DATE.fullmatch(last):
        try:
            first_day, last_day = date.fromisoformat(first), date.fromisoformat(last)
        except ValueError:
            raise _invalid(value, "not a valid date (YYYY-MM-DD)") from None
        return (first, last), _span(first_day, last_day, value, timezone)
    start, end = _instant(first), _instant(last)
    if start is None or end is None:
        raise _invalid(
            value, "give two dates (YYYY-MM-DD) or two times with an offset (…T12:00:00+02:00)"
        )
    tz = zone(timezone)
    try:
        # Plausible's end is included to the second: [start, end + 1 s) here.
        start_utc = start.replace(microsecond=0).astimezone(UTC)
        end_utc = end.replace(microsecond=0).astimezone(UTC) + timedelta(seconds=1)
        period = Period(start_utc.astimezone(tz), end_utc.astimezone(tz), timezone)
    except OverflowError:
        raise _invalid(value, "out of the calendar's range") from None
    if end_utc <= start_utc:
        raise _invalid(value, "the end is before the start")
    if end_utc - start_utc > timedelta(days=MAX_PERIOD_DAYS):
        raise _invalid(value, f"more than picolytics' {MAX_PERIOD_DAYS} days")
    return (first, last), period


def resolve(
    value: object, *, timezone: str, now: datetime, first_day: date | None = None
) -> tuple[DateRange, Period]:
    """The body's `date_range` as given (a name, or the two strings) and its Period in
    `timezone`, at the instant `now`; `first_day` is the site's first day of stats."""
    if isinstance(value, list):
        return _custom(value, timezone)
    if not isinstance(value, str):
        raise ApiRequestError(FIELD, f"Invalid date range {show(value)}: a string or a list.")
    today = local_today(now, zone(timezone))
    return value, _named(value, today, timezone, first_day)


def time_bucket(period: Period) -> Interval:
    """The bucket of Plausible's plain `time` dimension: hours up to 48 hours, days up
    to 40 days, weeks up to 52 weeks, months beyond (Plausible's cut-offs, measured to
    the period's last second)."""
    span = period.end.astimezone(UTC) - period.start.astimezone(UTC) - timedelta(seconds=1)
    if span // timedelta(hours=1) <= 48:
        return "hour"
    if span.days <= 40:
        return "day"
    return "week" if span.days // 7 <= 52 else "month"
