"""stats/periods.py: named periods as whole local days in a zone, at a given instant.

DST days are 23 or 25 hours (Europe/Berlin: 2025-03-30 and 2025-10-26; America/
New_York: 2025-03-09 and 2025-11-02), months end on their last day (February 29 in a
leap year), and every mistake is a QueryError naming its field.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import psycopg
import pytest

from picolytics.errors import QueryError
from picolytics.stats import periods
from picolytics.stats.query import MAX_PERIOD_DAYS, Period

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
HOUR = timedelta(hours=1)


def at(text: str) -> datetime:
    """An instant in UTC: "2025-03-10 12:00"."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def local(day: date, tz: ZoneInfo) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=tz)


def hours(period: Period) -> timedelta:
    """The period's length in real time (within one zone Python subtracts wall times)."""
    return period.end.astimezone(UTC) - period.start.astimezone(UTC)


def first_last(period: Period) -> tuple[date, date]:
    tz = ZoneInfo(period.timezone)
    return period.start.astimezone(tz).date(), (period.end.astimezone(tz) - HOUR).date()


# --- named periods ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "now", "first", "last"),
    [
        ("today", "2025-03-10 12:00", date(2025, 3, 10), date(2025, 3, 10)),
        ("yesterday", "2025-03-10 12:00", date(2025, 3, 9), date(2025, 3, 9)),
        ("7d", "2025-03-10 12:00", date(2025, 3, 4), date(2025, 3, 10)),
        ("30d", "2025-03-10 12:00", date(2025, 2, 9), date(2025, 3, 10)),
        ("month", "2025-03-10 12:00", date(2025, 3, 1), date(2025, 3, 10)),
        ("month", "2025-03-01 00:00", date(2025, 3, 1), date(2025, 3, 1)),
        ("last_month", "2025-03-10 12:00", date(2025, 2, 1), date(2025, 2, 28)),
        ("last_month", "2024-03-10 12:00", date(2024, 2, 1), date(2024, 2, 29)),
        ("last_month", "2025-01-31 23:59", date(2024, 12, 1), date(2024, 12, 31)),
        ("last_month", "2025-05-31 12:00", date(2025, 4, 1), date(2025, 4, 30)),
        ("6mo", "2025-03-10 12:00", date(2024, 10, 1), date(2025, 3, 10)),
        ("12mo", "2025-03-10 12:00", date(2024, 4, 1), date(2025, 3, 10)),
        ("12mo", "2025-12-31 12:00", date(2025, 1, 1), date(2025, 12, 31)),
        ("yesterday", "2024-03-01 00:30", date(2024, 2, 29), date(2024, 2, 29)),
    ],
)
def test_named_periods_in_utc(name: str, now: str, first: date, last: date) -> None:
    period = periods.named(name, "UTC", at(now))
    assert period == Period(
        datetime(first.year, first.month, first.day, tzinfo=UTC),
        datetime(last.year, last.month, last.day, tzinfo=UTC) + timedelta(days=1),
        "UTC",
    )
    assert periods.local_days(period)[0] == first
    assert periods.local_days(period)[-1] == last
    assert len(periods.local_days(period)) == (last - first).days + 1


@pytest.mark.parametrize(
    ("tz", "day", "length"),
    [
        (BERLIN, date(2025, 3, 30), 23),
        (BERLIN, date(2025, 10, 26), 25),
        (BERLIN, date(2025, 3, 29), 24),
        (NEW_YORK, date(2025, 3, 9), 23),
        (NEW_YORK, date(2025, 11, 2), 25),
        (NEW_YORK, date(2025, 11, 3), 24),
    ],
)
def test_a_dst_day_is_23_or_25_hours(tz: ZoneInfo, day: date, length: int) -> None:
    noon = datetime(day.year, day.month, day.day, 12, tzinfo=tz)
    period = periods.named("today", str(tz), noon)
    assert period.timezone == str(tz)
    assert period.start == local(day, tz)
    assert period.end == local(day + timedelta(days=1), tz)
    assert hours(period) == timedelta(hours=length)
    assert periods.local_days(period) == (day,)
    assert period.start.utcoffset() is not None  # aware, in the zone


def test_berlin_spring_forward_in_utc_instants() -> None:
    period = periods.named("today", "Europe/Berlin", at("2025-03-30 12:00"))
    assert period.start == at("2025-03-29 23:00")  # 00:00 CET (+01:00)
    assert period.end == at("2025-03-30 22:00")  # 00:00 CEST (+02:00)
    autumn = periods.named("yesterday", "Europe/Berlin", at("2025-10-27 06:00"))
    assert (autumn.start, autumn.end) == (at("2025-10-25 22:00"), at("2025-10-26 23:00"))


def test_new_york_days_across_utc_midnight() -> None:
    # 2025-03-10 03:00 UTC is 2025-03-09 23:00 EDT: still the 9th, the 23-hour day.
    period = periods.named("today", "America/New_York", at("2025-03-10 03:00"))
    assert (period.start, period.end) == (at("2025-03-09 05:00"), at("2025-03-10 04:00"))
    # And 04:00 UTC is already the 10th.
    assert periods.local_days(
        periods.named("today", "America/New_York", at("2025-03-10 04:00"))
    ) == (date(2025, 3, 10),)


def test_today_is_the_local_today() -> None:
    now = at("2025-03-10 23:30")  # 00:30 on the 11th in Berlin, 19:30 on the 10th in New York
    assert first_last(periods.named("today", "Europe/Berlin", now)) == (
        date(2025, 3, 11),
        date(2025, 3, 11),
    )
    assert first_last(periods.named("today", "America/New_York", now)) == (
        date(2025, 3, 10),
        date(2025, 3, 10),
    )
    # The instant may come in any offset: only the instant counts.
    same = now.astimezone(timezone(timedelta(hours=-9)))
    assert periods.named("7d", "Europe/Berlin", same) == periods.named("7d", "Europe/Berlin", now)


def test_seven_and_thirty_days_across_dst() -> None:
    week = periods.named("7d", "Europe/Berlin", at("2025-04-02 10:00"))
    assert first_last(week) == (date(2025, 3, 27), date(2025, 4, 2))
    assert hours(week) == timedelta(days=7) - HOUR
    month = periods.named("30d", "America/New_York", at("2025-11-20 15:00"))
    assert first_last(month) == (date(2025, 10, 22), date(2025, 11, 20))
    assert hours(month) == timedelta(days=30) + HOUR
    assert len(periods.local_days(month)) == 30


def test_months_in_a_zone() -> None:
    # 2025-03-31 22:30 UTC is April 1st 00:30 in Berlin: a new month there.
    now = at("2025-03-31 22:30")
    assert first_last(periods.named("month", "Europe/Berlin", now)) == (
        date(2025, 4, 1),
        date(2025, 4, 1),
    )
    last = periods.named("last_month", "Europe/Berlin", now)
    assert first_last(last) == (date(2025, 3, 1), date(2025, 3, 31))
    assert hours(last) == timedelta(days=31) - HOUR  # March has the short day
    assert first_last(periods.named("last_month", "UTC", now)) == (
        date(2025, 2, 1),
        date(2025, 2, 28),
    )
    october = periods.named("last_month", "America/New_York", at("2025-11-10 12:00"))
    assert first_last(october) == (date(2025, 10, 1), date(2025, 10, 31))
    assert hours(october) == timedelta(days=31)  # the change is on Nov 2
    six = periods.named("6mo", "Europe/Berlin", at("2025-08-31 23:00"))  # Sept 1 in Berlin
    assert first_last(six) == (date(2025, 4, 1), date(2025, 9, 1))
    assert len(periods.local_days(periods.named("12mo", "UTC", at("2024-12-31 12:00")))) == 366


# --- custom periods ---------------------------------------------------------------------


def test_custom_dates_are_inclusive_local_days() -> None:
    period = periods.custom("2024-02-28", "2024-03-01", "Europe/Berlin")
    assert period == Period(
        local(date(2024, 2, 28), BERLIN), local(date(2024, 3, 2), BERLIN), "Europe/Berlin"
    )
    assert periods.local_days(period) == (date(2024, 2, 28), date(2024, 2, 29), date(2024, 3, 1))
    assert periods.custom(date(2025, 3, 30), date(2025, 3, 30), "Europe/Berlin") == (
        periods.named("today", "Europe/Berlin", at("2025-03-30 12:00"))
    )
    assert periods.resolve(
        "custom", "UTC", at("2025-01-01 00:00"), first="2025-03-01", last=" 2025-03-31 "
    ) == periods.days(date(2025, 3, 1), date(2025, 3, 31))


def test_custom_datetimes_are_kept_as_instants() -> None:
    start = datetime(2025, 3, 10, 9, 30, tzinfo=timezone(timedelta(hours=1)))
    end = at("2025-03-10 17:00")
    period = periods.custom(start, end, "America/New_York")
    assert (period.start, period.end, period.timezone) == (start, end, "America/New_York")
    assert period.start.tzinfo == NEW_YORK and period.end.tzinfo == NEW_YORK
    assert periods.local_days(period) == (date(2025, 3, 10),)
    empty = periods.custom(end, end, "UTC")
    assert empty.start == empty.end


def test_the_longest_period() -> None:
    first = date(2015, 1, 1)
    longest = periods.days(first, first + timedelta(days=MAX_PERIOD_DAYS - 1))
    assert len(periods.local_days(longest)) == MAX_PERIOD_DAYS
    with pytest.raises(QueryError) as caught:
        periods.days(first, first + timedelta(days=MAX_PERIOD_DAYS))
    assert caught.value.field == "period"
    assert str(caught.value) == f"period: {MAX_PERIOD_DAYS + 1} days is more than 3660 days"


NOON = "2025-03-10 12:00"


def zone_error(name: str) -> Callable[[], object]:
    return lambda: periods.named("today", name, at(NOON))


MISTAKES = [
    # (call, field, the message's start)
    (zone_error("Mars/Olympus_Mons"), "timezone", "'Mars/Olympus_Mons' is not a known IANA"),
    (zone_error(""), "timezone", "'' is not a known IANA time zone (e.g. Europe/Berlin, UTC)"),
    (zone_error("Europe"), "timezone", "'Europe' is not a known"),  # a folder
    (zone_error("europe/berlin"), "timezone", "'europe/berlin' is not"),
    (zone_error(" UTC"), "timezone", "' UTC' is not"),
    (zone_error("localtime"), "timezone", "'localtime' is not"),  # the server's zone
    (zone_error("right/UTC"), "timezone", "'right/UTC' is not"),  # leap seconds
    (zone_error("../../etc/passwd"), "timezone", "'../../etc/passwd' is not"),
    (zone_error("/etc/localtime"), "timezone", "'/etc/localtime' is not"),
    (lambda: periods.custom("2025-03-01", "2025-03-02", "Nowhere"), "timezone", "'Nowhere'"),
    (
        lambda: periods.named("fortnight", "UTC", at(NOON)),
        "period",
        "'fortnight' is not a period (one of: today, yesterday, 7d, 30d, month, last_month,",
    ),
    (lambda: periods.named("custom", "UTC", at(NOON)), "period", "custom needs its first"),
    (
        lambda: periods.custom("2025-02-29", "2025-03-01"),
        "period.first",
        "'2025-02-29' is not a valid date (expected YYYY-MM-DD, e.g. 2025-03-31)",
    ),
    (lambda: periods.custom("2025-03-01", "yesterday"), "period.last", "'yesterday' is not a"),
    (
        lambda: periods.custom("2025-03-10", "2025-03-01"),
        "period",
        "the last day 2025-03-01 is before the first day 2025-03-10",
    ),
    (lambda: periods.custom("1990-01-01", "2025-03-01"), "period", "12844 days is more than"),
    (
        lambda: periods.custom(at("2025-03-10 12:00"), at("2025-03-10 11:00")),
        "period",
        "the end 2025-03-10T11:00:00+00:00 is before the start 2025-03-10T12:00:00+00:00",
    ),
    (
        lambda: periods.custom(at("2000-01-01 00:00"), at("2025-03-10 11:00")),
        "period",
        "more than 3660 days",
    ),
    (
        lambda: periods.custom(datetime(2025, 3, 10), at("2025-03-11 00:00")),
        "period.start",
        "2025-03-10T00:00:00 has no UTC offset",
    ),
    (
        lambda: periods.custom(at("2025-03-10 00:00"), datetime(2025, 3, 11)),
        "period.end",
        "2025-03-11T00:00:00 has no UTC offset",
    ),
    (
        lambda: periods.custom(date(2025, 3, 10), at("2025-03-11 00:00")),
        "period",
        "give two dates or two datetimes, not one of each",
    ),
    (
        lambda: periods.resolve("custom", "UTC", at(NOON), last="2025-03-01"),
        "period.first",
        "a custom period needs its first day",
    ),
    (
        lambda: periods.resolve("custom", "UTC", at(NOON), first="2025-03-01"),
        "period.last",
        "a custom period needs its last day",
    ),
    (
        lambda: periods.resolve("7d", "UTC", at(NOON), first="2025-03-01"),
        "period",
        "'7d' takes no first or last day (only custom does)",
    ),
]


@pytest.mark.parametrize(
    ("call", "field", "message"),
    [pytest.param(*mistake, id=f"{mistake[1]}-{n}") for n, mistake in enumerate(MISTAKES)],
)
def test_mistakes_name_the_field(call: Callable[[], object], field: str, message: str) -> None:
    with pytest.raises(QueryError) as caught:
        call()
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: {message}")
    assert caught.value.exit_code == 2


def test_now_must_be_aware() -> None:
    with pytest.raises(ValueError, match="aware"):
        periods.named("today", "UTC", datetime(2025, 3, 10, 12))


def test_utc_needs_no_zone_database() -> None:
    assert periods.zone("UTC") is UTC
    assert periods.zone("Europe/Berlin") == BERLIN


def test_every_name_resolves() -> None:
    now = at("2025-03-10 12:00")
    for name in periods.PERIOD_NAMES:
        first = "2025-03-01" if name == "custom" else None
        last = "2025-03-02" if name == "custom" else None
        period = periods.resolve(name, "Europe/Berlin", now, first=first, last=last)
        assert period.end <= periods.named("today", "Europe/Berlin", now).end
        assert period.start < period.end


# --- the same local days as PostgreSQL ---------------------------------------------------

ZONES_AND_DAYS = [
    ("Europe/Berlin", date(2025, 3, 30)),
    ("Europe/Berlin", date(2025, 10, 26)),
    ("America/New_York", date(2025, 3, 9)),
    ("America/New_York", date(2025, 11, 2)),
    ("America/Sao_Paulo", date(2018, 11, 4)),  # clocks went from 00:00 to 01:00
    ("America/Havana", date(2025, 3, 9)),  # 00:00 to 01:00 too
    ("Asia/Kolkata", date(2024, 2, 29)),
    ("Australia/Lord_Howe", date(2025, 4, 6)),  # a half-hour change
    ("Pacific/Apia", date(2011, 12, 30)),  # a day that did not happen
    ("UTC", date(2024, 2, 29)),
]


def test_day_boundaries_agree_with_postgresql(admin_conninfo: str) -> None:
    """A period's start and end are where PostgreSQL puts `day::timestamp AT TIME ZONE
    zone`, which is how SQL groups rows into local days, even where midnight is skipped."""
    with psycopg.connect(admin_conninfo) as connection:
        for name, day in ZONES_AND_DAYS:
            period = periods.days(day, day, name)
            row = connection.execute(
                "SELECT %s::date::timestamp AT TIME ZONE %s,"
                " (%s::date + 1)::timestamp AT TIME ZONE %s,"
                " (%s::timestamptz AT TIME ZONE %s)::date",
                (day, name, day, name, period.start, name),
            ).fetchone()
            assert row is not None
            assert (period.start, period.end) == (row[0], row[1]), (name, day)
            if period.end > period.start:
                assert row[2] == day, (name, day)
