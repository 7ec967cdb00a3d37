"""Named periods ("today", "7d", "last_month", ...) resolved in a time zone at a given
instant, as the `Period` of a `Query` (docs/read-model.md, What the numbers mean).

Every period is whole local days, [first 00:00, last + 1 00:00) in its zone, so a day of
a DST change is 23 or 25 hours long. Where a zone skips its midnight, a day starts at
its first instant, which is also what PostgreSQL makes of `day::timestamp AT TIME ZONE
zone`. `start` and `end` are aware datetimes in the zone, each a wall-clock time that
exists there; compare and subtract them in UTC (within one zone Python does both on
wall-clock times). A named period ends with today at the latest ("month" is month to
date), never in the future; only a custom one may end anywhere.

| name | local days |
| --- | --- |
| `today`, `yesterday` | that day |
| `7d`, `30d` | the last 7 or 30 days, today included |
| `month` | the first of this month to today |
| `last_month` | the whole previous calendar month |
| `6mo`, `12mo` | 6 or 12 calendar months to today, this one included |
| `custom` | `first` to `last` inclusive (dates), or [start, end) (aware datetimes) |

Each mistake is a `QueryError` naming its field: `timezone`, `period`, `period.first`,
`period.last`, `period.start`, `period.end`.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Final, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from picolytics.errors import QueryError
from picolytics.stats.query import MAX_PERIOD_DAYS, Period

PeriodName = Literal[
    "today", "yesterday", "7d", "30d", "month", "last_month", "6mo", "12mo", "custom"
]
PERIOD_NAMES: Final[tuple[PeriodName, ...]] = get_args(PeriodName)

# The last N local days, today included.
_LAST_DAYS: Final = {"today": 1, "7d": 7, "30d": 30}
# N calendar months, the current one (to date) included.
_LAST_MONTHS: Final = {"month": 1, "6mo": 6, "12mo": 12}


# Names the zone database answers to that are no zone of their own: the server's zone
# (which PostgreSQL and Python may see differently), a placeholder, and the copies with
# POSIX rules or leap seconds.
_NOT_ZONES: Final = frozenset({"localtime", "Factory", "posixrules"})
_NOT_ZONE_PREFIXES: Final = ("posix/", "right/")


def zone(name: str, field: str = "timezone") -> tzinfo:
    """The IANA zone `name`, or a QueryError naming `field`. "UTC" needs no zone
    database; every other zone needs the system's (or the tzdata package)."""
    if name == "UTC":
        return UTC
    unknown = QueryError(field, f"{name!r} is not a known IANA time zone (e.g. Europe/Berlin, UTC)")
    if name != name.strip() or name in _NOT_ZONES or name.startswith(_NOT_ZONE_PREFIXES):
        raise unknown
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        # ValueError: a path ("../x", "/etc") or no zone file; OSError: a folder.
        raise unknown from None


def day_start(day: date, tz: tzinfo) -> datetime:
    """The first instant of the local day `day`, as a wall-clock time that exists in
    `tz`: where midnight is skipped, the first instant after the gap (00:00 read with
    the offset before the change, as PostgreSQL reads it)."""
    return datetime.combine(day, time(), tz).astimezone(UTC).astimezone(tz)


def local_today(now: datetime, tz: tzinfo) -> date:
    """The local date of the aware instant `now` in `tz`."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now must be an aware datetime, not {now!r}")
    return now.astimezone(tz).date()


def _check_span(first: date, last: date) -> None:
    if last < first:
        raise QueryError("period", f"the last day {last} is before the first day {first}")
    days = (last - first).days + 1
    if days > MAX_PERIOD_DAYS:
        raise QueryError("period", f"{days} days is more than {MAX_PERIOD_DAYS} days")


def days(first: date, last: date, timezone: str = "UTC") -> Period:
    """The local days `first` to `last`, both included, in `timezone`."""
    tz = zone(timezone)
    _check_span(first, last)
    return Period(day_start(first, tz), day_start(last + timedelta(days=1), tz), timezone)


def _months_back(day: date, months: int) -> date:
    """The first of the month `months` calendar months before `day`'s month."""
    index = day.year * 12 + (day.month - 1) - months
    return date(index // 12, index % 12 + 1, 1)


def named(name: str, timezone: str, now: datetime) -> Period:
    """A named period other than "custom", as it is at the instant `now` in `timezone`."""
    tz = zone(timezone)
    today = local_today(now, tz)
    if name in _LAST_DAYS:
        return days(today - timedelta(days=_LAST_DAYS[name] - 1), today, timezone)
    if name == "yesterday":
        return days(today - timedelta(days=1), today - timedelta(days=1), timezone)
    if name in _LAST_MONTHS:
        return days(_months_back(today, _LAST_MONTHS[name] - 1), today, timezone)
    if name == "last_month":
        this_month = today.replace(day=1)
        return days(_months_back(today, 1), this_month - timedelta(days=1), timezone)
    if name == "custom":
        raise QueryError(
            "period", "custom needs its first and last day (period.first, period.last)"
        )
    known = ", ".join(PERIOD_NAMES)
    raise QueryError("period", f"{name!r} is not a period (one of: {known})")


def parse_date(text: str, field: str) -> date:
    """A YYYY-MM-DD date, or a QueryError naming `field`."""
    try:
        return date.fromisoformat(text.strip())
    except (ValueError, AttributeError):
        raise QueryError(
            field, f"{text!r} is not a valid date (expected YYYY-MM-DD, e.g. 2025-03-31)"
        ) from None


def _aware(value: datetime, field: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise QueryError(field, f"{value.isoformat()} has no UTC offset (needs an aware time)")
    return value


def custom(
    first: date | datetime | str, last: date | datetime | str, timezone: str = "UTC"
) -> Period:
    """Local dates `first` to `last` inclusive (date objects or YYYY-MM-DD), or the
    aware instants [first, last) as they are: both of one kind."""
    tz = zone(timezone)
    if isinstance(first, datetime) or isinstance(last, datetime):
        if not (isinstance(first, datetime) and isinstance(last, datetime)):
            raise QueryError("period", "give two dates or two datetimes, not one of each")
        start, end = _aware(first, "period.start"), _aware(last, "period.end")
        # In UTC: within one zone Python compares and subtracts wall-clock times.
        if end.astimezone(UTC) < start.astimezone(UTC):
            raise QueryError(
                "period", f"the end {end.isoformat()} is before the start {start.isoformat()}"
            )
        if end.astimezone(UTC) - start.astimezone(UTC) > timedelta(days=MAX_PERIOD_DAYS):
            raise QueryError("period", f"more than {MAX_PERIOD_DAYS} days")
        return Period(start.astimezone(tz), end.astimezone(tz), timezone)
    first_day = first if isinstance(first, date) else parse_date(first, "period.first")
    last_day = last if isinstance(last, date) else parse_date(last, "period.last")
    return days(first_day, last_day, timezone)


def resolve(
    name: str,
    timezone: str,
    now: datetime,
    *,
    first: date | datetime | str | None = None,
    last: date | datetime | str | None = None,
) -> Period:
    """Any period by name: `first` and `last` belong to "custom", and only to it."""
    if name == "custom":
        if first is None:
            raise QueryError("period.first", "a custom period needs its first day")
        if last is None:
            raise QueryError("period.last", "a custom period needs its last day")
        return custom(first, last, timezone)
    if first is not None or last is not None:
        raise QueryError("period", f"{name!r} takes no first or last day (only custom does)")
    return named(name, timezone, now)


def local_days(period: Period) -> tuple[date, ...]:
    """Every local date the period touches, in its zone, in order."""
    tz = zone(period.timezone)
    first = period.start.astimezone(tz).date()
    end = period.end.astimezone(tz)
    last = (end - timedelta(microseconds=1)).date() if end > period.start else first
    return tuple(first + timedelta(days=n) for n in range((last - first).days + 1))
