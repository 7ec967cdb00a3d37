"""Imported data in the query layer (stats/imported.py; docs/imports.md, How imported
data is counted), known answers on a small dataset made by hand.

Site example.com has native traffic from 2024-01-10 (two visits that day, through the
real writer) and an import of 2024-01-05 .. 2024-01-10, written into the imported
tables with plain SQL. The imported 2024-01-10 is a day with native data: it never
counts. Site other.test has native traffic and no import.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any

import psycopg
import pytest
from helpers.database import new_database, query
from helpers.events import event, run, write
from helpers.imported import add_import
from psycopg import AsyncConnection

from picolytics.dimensions import Metric
from picolytics.imports.tables import TableName
from picolytics.stats.engine import run as run_query
from picolytics.stats.periods import days
from picolytics.stats.query import (
    Breakdown,
    Condition,
    Filter,
    ImportsNote,
    Interval,
    Period,
    Query,
    Result,
)
from picolytics.storage import migrate

A, B = "example.com", "other.test"
D = date(2024, 1, 5)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def day(n: int) -> date:
    return date(2024, 1, 5 + n)


# Days 0..5 = 2024-01-05 .. 2024-01-10; day 5 has native data and must never count.
IMPORTED: dict[TableName, list[tuple[Any, ...]]] = {
    "imported_visitors": [
        # visitors, pageviews, bounces, visits, visit_duration
        (day(0), 10, 30, 4, 12, 600),
        (day(1), 5, 9, 2, 6, 300),
        (day(5), 1000, 1000, 1000, 1000, 1000),
    ],
    "imported_sources": [
        # source, referrer, utm x5, pageviews, visitors, visits, visit_duration, bounces
        (day(0), "", "", "", "", "", "", "", 10, 4, 5, 100, 2),
        (day(0), "Google", "google.com", "", "", "", "", "", 20, 6, 7, 500, 2),
        (day(1), "Direct / None", "", "", "", "", "", "", 9, 5, 6, 300, 2),
        (day(5), "Google", "google.com", "", "", "", "", "", 999, 999, 999, 999, 999),
    ],
    "imported_pages": [
        # hostname, page, visits, visitors, pageviews
        (day(0), "example.com", "/", 8, 7, 20),
        (day(0), "example.com", "/pricing", 4, 3, 10),
        (day(1), "example.com", "/", 6, 5, 9),
    ],
    "imported_entry_pages": [
        # entry_page, visitors, entrances, visit_duration, bounces, pageviews
        (day(0), "/", 9, 11, 550, 3, 28),
    ],
    "imported_exit_pages": [
        # exit_page, visitors, visit_duration, exits, bounces, pageviews
        (day(0), "/pricing", 9, 550, 11, 3, 28),
    ],
    "imported_custom_events": [
        # name, link_url, path, visitors, events
        (day(0), "Signup", "", "", 2, 3),
        (day(0), "Outbound Link: Click", "https://x.test/", "", 1, 4),
        (day(1), "signup", "", "", 1, 1),
    ],
    "imported_locations": [
        # country, region, city, visitors, visits, visit_duration, bounces, pageviews
        (day(0), "DE", "DE-BE", "2950159", 6, 7, 300, 2, 18),
        (day(0), "FR", "FR-IDF", "2988507", 4, 5, 300, 2, 12),
        (day(1), "DE", "", "0", 1, 1, 0, 1, 1),  # no region, no city
    ],
    "imported_devices": [(day(0), "Desktop", 10, 12, 600, 4, 30)],
    "imported_browsers": [
        (day(0), "Chrome", "120.0", 6, 7, 300, 2, 18),
        (day(0), "Chrome", "119.0", 1, 1, 0, 1, 1),
        (day(0), "Firefox", "121.0", 3, 4, 300, 1, 11),
    ],
    "imported_operating_systems": [(day(0), "Windows", "10", 10, 12, 600, 4, 30)],
}


@pytest.fixture(scope="module")
def database(admin_conninfo: str) -> Any:
    with new_database(admin_conninfo) as conninfo:
        migrate.apply(conninfo)
        # Native: two visits on 2024-01-10, one on 2024-01-11; other.test on 2024-01-06.
        run(
            write(
                conninfo,
                [
                    event(at("2024-01-10 10:00"), 1, path="/"),
                    event(at("2024-01-10 10:01"), 1, name="nav", path="/pricing"),
                    event(at("2024-01-10 12:00"), 2, path="/", referrer_host="google.com"),
                    event(at("2024-01-11 09:00"), 3, path="/", name="Signup"),
                    event(at("2024-01-06 09:00"), 4, path="/", site=B),
                ],
            )
        )
        add_import(conninfo, A, IMPORTED)
        with psycopg.connect(conninfo) as connection:
            connection.execute(
                "INSERT INTO goals (site_id, kind, event_name, page_path, display_name)"
                " SELECT site_id, 'event', 'Signup', NULL, 'Signup' FROM sites WHERE domain = %s"
                " UNION ALL SELECT site_id, 'page', NULL, '/pri*', 'Visit /pri*' FROM sites"
                " WHERE domain = %s",
                (A, A),
            )
        yield conninfo


def ask(
    conninfo: str,
    metrics: Sequence[Metric],
    *,
    site: str = A,
    period: Period | None = None,
    breakdown: Breakdown | None = None,
    filters: Filter | None = None,
    interval: Interval | None = None,
    imports: bool = True,
) -> Result:
    site_id = query(conninfo, "SELECT site_id FROM sites WHERE domain = %s", (site,))[0][0]
    question = Query(
        site_ids=(site_id,),
        period=period or days(date(2024, 1, 1), date(2024, 1, 31)),
        metrics=tuple(metrics),
        breakdown=breakdown,
        filters=filters,
        interval=interval,
        include_imports=imports,
    )

    async def go() -> Result:
        async with await AsyncConnection.connect(conninfo) as connection:
            return await run_query(connection, question)

    return run(go())


def table(result: Result) -> dict[tuple[str, str | None], dict[str, Any]]:
    return {
        (row.parent, row.value): {str(k): v for k, v in row.metrics.items()} for row in result.rows
    }


def metrics_of(result: Result) -> dict[str, int]:
    """The one row's metrics, as numbers (counts)."""
    return {name: int(value or 0) for name, value in result.rows[0].metrics.items()}


def test_totals_add_imported_days_before_the_first_native_day(database: str) -> None:
    metrics: tuple[Metric, ...] = (
        "visitors", "visits", "pageviews", "events", "bounces",
        "bounce_rate", "visit_duration", "views_per_visit",
    )  # fmt: skip
    native = ask(database, metrics, imports=False)
    both = ask(database, metrics)
    assert native.imports is None
    assert both.imports == ImportsNote(True)
    n, got = metrics_of(native), metrics_of(both)
    # Imported days 0 and 1 only: day 5 (2024-01-10) has native data.
    assert got["visitors"] == n["visitors"] + 15
    assert got["visits"] == n["visits"] + 18
    assert got["pageviews"] == n["pageviews"] + 39
    assert got["bounces"] == n["bounces"] + 6
    # events: pageviews and imported custom events (3 + 4 + 1).
    assert got["events"] == n["events"] + 39 + 8
    rate = both.rows[0].metrics["bounce_rate"]
    assert rate == round(100 * (n["bounces"] + 6) / (n["visits"] + 18), 1)


def test_the_day_with_native_data_never_counts_its_imported_rows(database: str) -> None:
    one_day = days(date(2024, 1, 10), date(2024, 1, 10))
    native = ask(database, ["visitors", "pageviews"], period=one_day, imports=False)
    both = ask(database, ["visitors", "pageviews"], period=one_day)
    assert both.rows == native.rows
    assert both.imports == ImportsNote(False, "out_of_range")


def test_daily_series_puts_imported_days_in_their_buckets(database: str) -> None:
    result = ask(database, ["visitors"], interval="day")
    by_day = {row.time: row.metrics["visitors"] for row in result.rows}
    assert by_day[day(0)] == 10 and by_day[day(1)] == 5
    assert by_day[day(5)] == 2  # native only
    weekly = ask(database, ["visitors"], interval="week")
    native = ask(database, ["visitors"], interval="week", imports=False)
    total = sum(int(r.metrics["visitors"] or 0) for r in weekly.rows)
    assert total == 15 + sum(int(r.metrics["visitors"] or 0) for r in native.rows)


def test_only_whole_local_days_of_the_period_count(database: str) -> None:
    # From 2024-01-05 12:00 UTC: day 0 is not whole in the period, day 1 is.
    period = Period(at("2024-01-05 12:00"), at("2024-01-07 00:00"), "UTC")
    assert ask(database, ["visitors"], period=period).rows[0].metrics["visitors"] == 5
    # In Berlin (UTC+1), 2024-01-06 is [01-05 23:00, 01-06 23:00) UTC: within the period.
    berlin = Period(at("2024-01-05 12:00"), at("2024-01-07 00:00"), "Europe/Berlin")
    assert ask(database, ["visitors"], period=berlin).rows[0].metrics["visitors"] == 5
    tight = Period(at("2024-01-06 00:00"), at("2024-01-07 00:00"), "Europe/Berlin")
    assert ask(database, ["visitors"], period=tight).imports == ImportsNote(False, "out_of_range")


def test_skip_reasons(database: str) -> None:
    assert ask(database, ["visitors"], site=B).imports == ImportsNote(False, "no_imported_data")
    later = days(date(2024, 3, 1), date(2024, 3, 31))
    assert ask(database, ["visitors"], period=later).imports == ImportsNote(False, "out_of_range")
    hourly = ask(database, ["visitors"], interval="hour")
    assert hourly.imports == ImportsNote(False, "unsupported_interval")
    assert hourly.rows == ask(database, ["visitors"], interval="hour", imports=False).rows
    mixed = ask(
        database, ["visitors"],
        breakdown=Breakdown("browser"), filters=Condition("source", "is", ("Google",)),
    )  # fmt: skip
    assert mixed.imports == ImportsNote(False, "unsupported_query")
    assert ask(database, ["visitors"], breakdown=Breakdown("channel")).imports == ImportsNote(
        False, "unsupported_query"
    )
    # `events` by a visit dimension: the format has no custom events per source.
    events = ask(database, ["events"], breakdown=Breakdown("source"))
    assert events.imports == ImportsNote(False, "unsupported_query")
    # Bounces of the visits that saw a page: imported pages hold no bounces.
    bounce = ask(database, ["bounce_rate"], filters=Condition("page", "is", ("/",)))
    assert bounce.imports == ImportsNote(False, "unsupported_query")


def test_breakdowns_by_each_imported_table(database: str) -> None:
    sources = table(ask(database, ["visitors", "visits"], breakdown=Breakdown("source")))
    native = table(
        ask(database, ["visitors", "visits"], breakdown=Breakdown("source"), imports=False)
    )
    assert sources[("", "(direct)")]["visitors"] == native[("", "(direct)")]["visitors"] + 4 + 5
    assert sources[("", "Google")] == {"visitors": 6, "visits": 7}
    pages = table(ask(database, ["pageviews", "visitors"], breakdown=Breakdown("page")))
    assert pages[("", "/pricing")]["pageviews"] == 10 + 1  # imported + native nav
    entry = table(ask(database, ["visits"], breakdown=Breakdown("entry_page")))
    assert entry[("", "/")]["visits"] == 11 + 2
    exits = table(ask(database, ["visits"], breakdown=Breakdown("exit_page")))
    assert exits[("", "/pricing")]["visits"] == 11 + 1
    versions = table(ask(database, ["visitors"], breakdown=Breakdown("browser_version")))
    assert versions[("Chrome", "119.0")] == {"visitors": 1}
    regions = table(ask(database, ["visitors"], breakdown=Breakdown("region")))
    assert regions[("FR", "FR-IDF")] == {"visitors": 4}  # codes: they do not merge with names
    cities = table(ask(database, ["visitors"], breakdown=Breakdown("city")))
    assert cities[("DE", "2950159")] == {"visitors": 6}
    assert cities[("DE", "")] == {"visitors": 1}  # GeoNames id 0: no city
    devices = table(ask(database, ["visits"], breakdown=Breakdown("device")))
    assert devices[("", "desktop")]["visits"] == 12 + 2  # "Desktop" is picolytics' desktop
    oses = table(ask(database, ["visits"], breakdown=Breakdown("os_version")))
    assert oses[("Windows", "10")]["visits"] == 12 + 2
    events = table(ask(database, ["events", "visitors"], breakdown=Breakdown("event")))
    assert events[("", "Signup")] == {"events": 3 + 1, "visitors": 2 + 1}
    assert events[("", "signup")] == {"events": 1, "visitors": 1}
    urls = table(ask(database, ["events"], breakdown=Breakdown("prop", "url")))
    assert urls == {("", "https://x.test/"): {"events": 4}}


def test_filters_on_the_breakdowns_own_table(database: str) -> None:
    chrome = Condition("browser", "is", ("Chrome",))
    result = ask(database, ["visitors"], breakdown=Breakdown("browser_version"), filters=chrome)
    assert result.imports == ImportsNote(True)
    assert table(result)[("Chrome", "119.0")] == {"visitors": 1}
    assert ("Firefox", "121.0") not in table(result)
    # Without a breakdown, all conditions on one table: that table's sums.
    totals = ask(database, ["visitors", "visits"], filters=Condition("country", "is", ("FR",)))
    assert totals.imports == ImportsNote(True)
    assert totals.rows[0].metrics == {"visitors": 4, "visits": 5}
    signup = ask(
        database, ["events"], filters=Condition("event", "is", ("signup",), case_sensitive=False)
    )
    assert signup.rows[0].metrics["events"] == 3 + 1 + 1  # imported Signup, signup, native


def test_breakdown_by_goal(database: str) -> None:
    result = ask(database, ["visitors", "events"], breakdown=Breakdown("goal"))
    assert result.imports == ImportsNote(True)
    goals = table(result)
    assert goals[("", "Signup")] == {"visitors": 2 + 1, "events": 3 + 1}
    # /pri* matches /pricing: imported 3 visitors and 10 pageviews, native 1 and 1.
    assert goals[("", "Visit /pri*")] == {"visitors": 3 + 1, "events": 10 + 1}
    asked = ask(database, ["visits"], breakdown=Breakdown("goal"))
    assert asked.imports == ImportsNote(False, "unsupported_query")


def test_an_import_that_replaces_another_counts_alone(admin_conninfo: str) -> None:
    with new_database(admin_conninfo) as conninfo:
        migrate.apply(conninfo)
        add_import(conninfo, A, {"imported_visitors": [(D, 10, 10, 0, 10, 0)]})
        add_import(conninfo, A, {"imported_visitors": [(D, 3, 3, 0, 3, 0)]})
        period = days(D, D)
        assert ask(conninfo, ["visitors"], period=period).rows[0].metrics == {"visitors": 3}
