"""The daily views with imported days (migration 0015; docs/imports.md): each view
that has an imported counterpart gives, as the reader, its native rows plus the
imported table's rows (summed per the view's value) on the days before the site's
first native day, and nothing imported on or after it.

example.com (UTC): native visits on 2024-01-10 (written through the real writer, the
day rolled up); imported 2024-01-08 and 2024-01-09, and 2024-01-10 (a native day:
ignored). other.test has native traffic only.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

import pytest
from helpers.database import query, reader_login
from helpers.events import event, run, write
from helpers.imported import add_import
from psycopg import AsyncConnection

from picolytics.storage.rollup import roll_day

SITE, OTHER = "example.com", "other.test"
D8, D9, D10 = date(2024, 1, 8), date(2024, 1, 9), date(2024, 1, 10)
NATIVE_TOO = 999  # every count of the imported native day: never seen


def seed(conninfo: str) -> None:
    at = datetime(2024, 1, 10, 10, tzinfo=UTC)
    run(
        write(
            conninfo,
            [
                event(at, 1, path="/"),
                event(at.replace(minute=1), 1, name="Signup", path="/"),
                event(at, 2, path="/", site=OTHER),
            ],
        )
    )

    async def roll() -> None:
        async with await AsyncConnection.connect(conninfo, autocommit=True) as connection:
            for (site_id,) in query(conninfo, "SELECT site_id FROM sites"):
                await roll_day(connection, site_id, D10, "UTC")

    run(roll())
    n = NATIVE_TOO
    add_import(
        conninfo,
        SITE,
        {
            "imported_visitors": [(D8, 10, 30, 4, 12, 600), (D9, 5, 9, 2, 6, 300), (D10, *[n] * 5)],
            "imported_sources": [
                (D8, "", "", "", "", "", "", "", 10, 4, 5, 100, 2),
                (D8, "Google", "google.com", "", "", "", "", "", 5, 2, 3, 50, 1),
                (D8, "Google", "google.com/x", "", "", "", "", "", 5, 1, 2, 50, 1),
                (D10, "Google", "", "", "", "", "", "", n, n, n, n, n),
            ],
            "imported_entry_pages": [(D8, "/", 9, 11, 550, 3, 28), (D10, "/", n, n, n, n, n)],
            "imported_exit_pages": [(D8, "/x", 9, 550, 11, 3, 28)],
            "imported_locations": [
                (D8, "DE", "DE-BE", "2950159", 6, 7, 300, 2, 18),
                (D8, "DE", "DE-BY", "2867714", 2, 2, 0, 2, 2),
            ],
            "imported_browsers": [
                (D8, "Chrome", "120.0", 6, 7, 300, 2, 18),
                (D8, "Chrome", "119.0", 1, 1, 0, 1, 1),
            ],
            "imported_operating_systems": [(D8, "Windows", "10", 10, 12, 600, 4, 30)],
            "imported_devices": [(D8, "Desktop", 10, 12, 600, 4, 30)],
            "imported_pages": [
                (D8, "example.com", "/", 8, 7, 20),
                (D8, "www.example.com", "/", 1, 1, 2),
            ],
            "imported_custom_events": [
                (D8, "Signup", "", "", 2, 3),
                (D10, "Signup", "", "", n, n),
            ],
        },
    )


@pytest.fixture(scope="module")
def reader(module_database: str, admin_conninfo: str) -> Iterator[str]:
    seed(module_database)
    yield from reader_login(admin_conninfo, module_database)


def rows(reader: str, view: str, site: str = SITE) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    """The view's rows of a site by (day, value), the value being its third column."""
    found = query(reader, f"SELECT * FROM {view} WHERE site = %s ORDER BY 2, 3", (site,))
    assert all(NATIVE_TOO not in row for row in found), f"{view}: an imported native day"
    return {(row[1], row[2]): tuple(row[3:]) for row in found}


def test_daily_visitors(reader: str) -> None:
    found = query(reader, "SELECT * FROM daily_visitors WHERE site = %s ORDER BY day", (SITE,))
    by_day = {row[1]: row[2:] for row in found}
    assert by_day[D8][:4] == (10, 12, 30, 4)
    assert [float(x) for x in by_day[D8][4:]] == [33.3, 50.0, 2.5]
    assert by_day[D9][:4] == (5, 6, 9, 2)
    assert by_day[D10][:2] == (1, 1)  # native only
    assert [row[1] for row in query(reader, "SELECT * FROM daily_visitors WHERE site = %s",
                                    (OTHER,))] == [D10]  # fmt: skip


def test_visit_views(reader: str) -> None:
    sources = rows(reader, "sources")
    assert sources[(D8, "(direct)")] == (5, 4, 2)
    assert sources[(D8, "Google")] == (5, 3, 2)  # two referrers of one source, summed
    assert sources[(D10, "(direct)")] == (1, 1, 0)  # native: the signup engaged
    assert rows(reader, "entry_pages")[(D8, "/")] == (11, 3)
    assert rows(reader, "exit_pages")[(D8, "/x")] == (11,)
    assert rows(reader, "countries")[(D8, "DE")] == (9, 8)
    assert rows(reader, "browsers")[(D8, "Chrome")] == (8, 7)
    assert rows(reader, "operating_systems")[(D8, "Windows")] == (12, 10)
    devices = rows(reader, "devices")
    assert devices[(D8, "desktop")] == (12, 10)
    assert (D8, "desktop") in devices and (D10, "desktop") in devices


def test_event_views(reader: str) -> None:
    assert rows(reader, "top_pages")[(D8, "/")] == (22, 8)  # both hostnames
    events = rows(reader, "daily_custom_events")
    assert events[(D8, "Signup")] == (3, 2, None)  # the format has no visits
    assert events[(D10, "Signup")] == (1, 1, 1)


def test_views_keep_their_columns(reader: str) -> None:
    for view, first in (("daily_visitors", "visitors"), ("daily_custom_events", "name")):
        columns = query(
            reader,
            "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum = 3",
            (view,),
        )
        assert columns == [(first,)]
