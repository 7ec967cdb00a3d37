"""`picolytics report`: exact numbers in text, JSON and CSV, the same as the dashboard's.

The dataset is the dashboard's (tests/test_dashboard.py), written through the real
batch writer at a fixed time, 2025-03-10 12:00 UTC, plus four custom events (and one
Plausible engagement event, which is none) inside visits that are not bounces (so
every dashboard number stays as documented there):
  signup   (visitor A in visit 1, visitor B in visit 3)   2 events, 2 visitors
  download (visitor B in visit 3, visitor C in visit 5)   2 events, 2 visitors
On 2025-03-10, example.com: 3 visitors, 5 visits, 12 pageviews, 2 bounces (40.0 %),
80 s per visit, 2.40 pages per visit, 9 bot hits. The week 2025-03-04 to 2025-03-10
also holds visitor E's one-page visit to "/old" on 2025-03-07: 4 visitors, 6 visits,
13 pageviews, 3 bounces (50.0 %), 400 / 6 = 66.7 s, 13 / 6 = 2.17 pages per visit.
other.org: one bounce on 2025-03-10 and 5 bot hits; 100 bot hits on 2025-02-28.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from helpers.database import query, reachable_tempdir, reader_login
from helpers.events import run, write
from helpers.processes import PICOLYTICS, clean_env, run_cli
from helpers.reporting import (
    OTHER_SITE,
    SITE,
    A,
    B,
    C,
    bots,
    dataset,
    expand,
    page_event,
    sql_panels,
)

from picolytics.errors import NoReportDataError, ReportOptionError
from picolytics.events import QueuedEvent
from picolytics.report import render as report_render
from picolytics.report.query import (
    DEFAULT_DAYS,
    Period,
    PeriodOptions,
    Report,
    build_report,
    report_from,
    resolve_period,
)
from picolytics.storage import migrate
from picolytics.storage.embedded import EmbeddedPostgres
from picolytics.storage.rollup import roll_day

NOW = datetime(2025, 3, 10, 12, tzinfo=UTC)
DAY = Period(date(2025, 3, 10), date(2025, 3, 10))
WEEK = Period(date(2025, 3, 4), date(2025, 3, 10))


def custom_events(now: datetime) -> list[QueuedEvent]:
    base = now - timedelta(hours=3)
    s = timedelta(seconds=1)
    return [
        page_event(base + 45 * s, A, "signup", "/pricing"),
        # Plausible's time on page: an event, but no custom event of the report.
        page_event(base + 50 * s, A, "engagement", "/pricing", engaged_ms=45_000),
        page_event(base + 700 * s, B, "signup", "/docs"),
        page_event(base + 710 * s, B, "download", "/docs"),
        page_event(now - 100 * s, C, "download", "/blog"),
    ]


@dataclass(frozen=True)
class Seeded:
    conninfo: str
    reader: str  # a login role that is only a member of picolytics_reader


@pytest.fixture(scope="module")
def seeded(module_database: str, admin_conninfo: str) -> Iterator[Seeded]:
    run(write(module_database, dataset(NOW) + custom_events(NOW), bots(NOW.date())))
    for reader in reader_login(admin_conninfo, module_database):
        yield Seeded(module_database, reader)


def make_report(
    conninfo: str, period: Period, sites: tuple[str, ...] = (SITE,), **kw: Any
) -> Report:
    async def build() -> Report:
        async with await psycopg.AsyncConnection.connect(conninfo) as connection:
            return await build_report(connection, period, sites, now=NOW, **kw)

    return run(build())


# --- the expected numbers ------------------------------------------------------------------

DAY_TEXT = """\
picolytics report: example.com
2025-03-10 to 2025-03-10 (UTC, 1 day)

  Visitors               3  Visits                 5  Pageviews             12
  Bounce rate        40.0%  Visit duration    1m 20s  Pages per visit     2.40
  Bots filtered          9

Pageviews per day
  2025-03-10 Mon  12 ██████████████████████████████████████████████████████████

Top pages                                                    Pageviews  Visitors
  /pricing                                                           4         3
  /                                                                  3         3
  /blog                                                              2         2
  /blog#/post-1                                                      1         1
  /docs                                                              1         1
  /docs#/install                                                     1         1

Top sources                                                     Visits  Visitors
  newsletter                                                         2         2
  (direct)                                                           1         1
  news.example                                                       1         1
  search.example                                                     1         1

Countries                                                                 Visits
  DE                                                                           2
  US                                                                           2
  FR                                                                           1

Browsers                                                                  Visits
  Chrome                                                                       2
  Firefox                                                                      2
  Mobile Safari                                                                1

Operating systems                                                         Visits
  Mac OS X                                                                     2
  Windows                                                                      2
  iOS                                                                          1

Devices                                                                   Visits
  desktop                                                                      4
  mobile                                                                       1

Campaigns (source / medium / campaign)               Visits  Visitors  Pageviews
  newsletter / email / launch                             2         2          5

Custom events                                                   Events  Visitors
  download                                                           2         2
  signup                                                             2         2

Bots filtered (not counted above), by reason                                Hits
  crawler_list                                                                 7
  empty_ua                                                                     2

Tables show the top 10 rows (--limit).
"""


def week_document() -> dict[str, Any]:
    """The JSON of the week on example.com (generated_at aside)."""
    zero = {"pageviews": 0, "visits": 0, "visitors": 0}
    daily = [{"day": f"2025-03-{d:02d}", **zero} for d in range(4, 11)]
    daily[3] |= {"pageviews": 1, "visits": 1, "visitors": 1}
    daily[6] |= {"pageviews": 12, "visits": 5, "visitors": 3}
    return {
        "version": 1,
        "sites": ["example.com"],
        "all_sites": False,
        "from": "2025-03-04",
        "to": "2025-03-10",
        "timezone": "UTC",
        "days": 7,
        "limit": 10,
        "summary": {
            "visitors": 4,
            "visits": 6,
            "pageviews": 13,
            "bounces": 3,
            "bounce_rate": 50.0,
            "visit_duration_s": 66.7,
            "pages_per_visit": 2.17,
            "bot_hits": 9,
        },
        "daily": daily,
        "pages": [
            {"path": "/pricing", "pageviews": 4, "visitors": 3},
            {"path": "/", "pageviews": 3, "visitors": 3},
            {"path": "/blog", "pageviews": 2, "visitors": 2},
            {"path": "/blog#/post-1", "pageviews": 1, "visitors": 1},
            {"path": "/docs", "pageviews": 1, "visitors": 1},
            {"path": "/docs#/install", "pageviews": 1, "visitors": 1},
            {"path": "/old", "pageviews": 1, "visitors": 1},
        ],
        "sources": [
            {"source": "(direct)", "visits": 2, "visitors": 2},
            {"source": "newsletter", "visits": 2, "visitors": 2},
            {"source": "news.example", "visits": 1, "visitors": 1},
            {"source": "search.example", "visits": 1, "visitors": 1},
        ],
        "countries": [
            {"country": "DE", "visits": 3},
            {"country": "US", "visits": 2},
            {"country": "FR", "visits": 1},
        ],
        "browsers": [
            {"browser": "Chrome", "visits": 3},
            {"browser": "Firefox", "visits": 2},
            {"browser": "Mobile Safari", "visits": 1},
        ],
        "operating_systems": [
            {"os": "Windows", "visits": 3},
            {"os": "Mac OS X", "visits": 2},
            {"os": "iOS", "visits": 1},
        ],
        "devices": [
            {"device_type": "desktop", "visits": 5},
            {"device_type": "mobile", "visits": 1},
        ],
        "campaigns": [
            {
                "utm_source": "newsletter",
                "utm_medium": "email",
                "utm_campaign": "launch",
                "visits": 2,
                "visitors": 2,
                "pageviews": 5,
            }
        ],
        "custom_events": [
            {"name": "download", "events": 2, "visitors": 2},
            {"name": "signup", "events": 2, "visitors": 2},
        ],
        "bots": [{"reason": "crawler_list", "hits": 7}, {"reason": "empty_ua", "hits": 2}],
    }


def without_generated_at(document: dict[str, Any]) -> dict[str, Any]:
    assert document.pop("generated_at").endswith("Z")
    return document


def week_csv() -> dict[str, list[list[str]]]:
    """The CSV files of the week on example.com, derived from the JSON above."""
    document = week_document()
    summary = document["summary"]
    files = {
        "summary.csv": [
            ["sites", "from", "to", "timezone", *summary],
            [
                "example.com",
                "2025-03-04",
                "2025-03-10",
                "UTC",
                "4",
                "6",
                "13",
                "3",
                "50.0",
                "66.7",
                "2.17",
                "9",
            ],
        ],
        "daily.csv": [["day", "pageviews", "visits", "visitors"]]
        + [
            [d["day"], str(d["pageviews"]), str(d["visits"]), str(d["visitors"])]
            for d in document["daily"]
        ],
    }
    tables = ["pages", "sources", "countries", "browsers", "operating_systems", "devices"]
    for name in [*tables, "campaigns", "custom_events", "bots"]:
        files[f"{name}.csv"] = [list(document[name][0])] + [
            [str(v) for v in row.values()] for row in document[name]
        ]
    return files


def read_zip(data: bytes) -> dict[str, list[list[str]]]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        folders = {name.split("/")[0] for name in archive.namelist()}
        assert folders == {"picolytics-report-2025-03-04-to-2025-03-10"}
        return {
            name.split("/", 1)[1]: list(csv.reader(io.StringIO(archive.read(name).decode())))
            for name in archive.namelist()
        }


# --- the report, in process ---------------------------------------------------------------


def test_text_report_of_one_day(seeded: Seeded) -> None:
    text = report_render.render_text(make_report(seeded.conninfo, DAY))
    assert text == DAY_TEXT
    assert max(len(line) for line in text.splitlines()) <= 80


def test_json_report_of_the_week(seeded: Seeded) -> None:
    document = json.loads(report_render.render_json(make_report(seeded.conninfo, WEEK)))
    assert without_generated_at(document) == week_document()


def test_csv_report_of_the_week(seeded: Seeded) -> None:
    files = read_zip(report_render.render_csv_zip(make_report(seeded.conninfo, WEEK)))
    assert files == week_csv()


def test_every_site_together(seeded: Seeded) -> None:
    report = make_report(seeded.conninfo, DAY, ())
    assert report.sites == (SITE, OTHER_SITE)
    assert report.all_sites
    s = report.summary
    assert (s.visitors, s.visits, s.pageviews, s.bounces) == (4, 6, 13, 3)
    assert (s.bounce_rate, s.bot_hits) == (Decimal("50.0"), 14)
    assert report.table("bots").rows == (("crawler_list", 7), ("parser_spider", 5), ("empty_ua", 2))
    assert report.table("pages").rows[:2] == (("/", 4, 4), ("/pricing", 4, 3))
    first_line = report_render.render_text(report).splitlines()[0]
    assert first_line == "picolytics report: all 2 sites (example.com, other.org)"


def test_site_names_compare_like_tracked_domains(seeded: Seeded) -> None:
    report = make_report(seeded.conninfo, DAY, ("WWW.Other.org.",))
    assert report.sites == (OTHER_SITE,)
    assert (report.summary.visits, report.summary.bounce_rate) == (1, Decimal("100.0"))


def test_a_period_without_traffic_is_all_zeros(seeded: Seeded) -> None:
    report = make_report(seeded.conninfo, Period(date(2024, 1, 1), date(2024, 1, 2)))
    s = report.summary
    assert (s.visitors, s.visits, s.pageviews, s.bot_hits) == (0, 0, 0, 0)
    assert (s.bounce_rate, s.visit_duration_s, s.pages_per_visit) == (None, None, None)
    assert all(not table.rows for table in report.tables)
    text = report_render.render_text(report)
    dash = "\u2013"
    assert f"  Bounce rate {dash:>12}  Visit duration {dash:>9}  Pages per visit {dash:>8}" in text
    document = json.loads(report_render.render_json(report))
    assert document["summary"]["bounce_rate"] is None
    assert document["pages"] == []


def test_limit_and_all_rows(seeded: Seeded) -> None:
    report = make_report(seeded.conninfo, WEEK, limit=2)
    assert report.table("pages").rows == (("/pricing", 4, 3), ("/", 3, 3))
    assert make_report(seeded.conninfo, WEEK, limit=None).table("pages").rows[-1] == ("/old", 1, 1)
    text = report_render.render_text(make_report(seeded.conninfo, WEEK, limit=None))
    assert "(--limit)" not in text


def test_the_reader_role_is_enough(seeded: Seeded) -> None:
    assert make_report(seeded.reader, WEEK).summary == make_report(seeded.conninfo, WEEK).summary


# --- the same numbers as the dashboard ------------------------------------------------------

# Dashboard panel -> the same numbers read from a report.
PANELS: dict[str, Callable[[Report], list[Any]]] = {
    "Visitors": lambda r: [(r.summary.visitors,)],
    "Visits": lambda r: [(r.summary.visits,)],
    "Pageviews": lambda r: [(r.summary.pageviews,)],
    "Bounce rate": lambda r: [(r.summary.bounce_rate,)],
    "Visit duration": lambda r: [(r.summary.visit_duration_s,)],
    "Pages per visit": lambda r: [(r.summary.pages_per_visit,)],
    "Top pages": lambda r: list(r.table("pages").rows),
    "Sources": lambda r: list(r.table("sources").rows),
    "Countries": lambda r: list(r.table("countries").rows),
    "Browsers": lambda r: list(r.table("browsers").rows),
    "Operating systems": lambda r: list(r.table("operating_systems").rows),
    "Devices": lambda r: list(r.table("devices").rows),
    "Campaigns": lambda r: list(r.table("campaigns").rows),
    "Bots filtered": lambda r: list(r.table("bots").rows),
}


@pytest.mark.parametrize("sites", [(SITE,), (SITE, OTHER_SITE)])
@pytest.mark.parametrize("period", [DAY, WEEK], ids=["day", "week"])
def test_same_numbers_as_the_dashboard(
    seeded: Seeded, sites: tuple[str, ...], period: Period
) -> None:
    report = make_report(seeded.conninfo, period, sites, limit=None)
    panels = {panel["title"]: panel for panel in sql_panels()}
    with psycopg.connect(seeded.reader) as connection:

        def panel_rows(title: str, ref: str = "A", interval: str = "1h") -> list[tuple[Any, ...]]:
            (target,) = [t for t in panels[title]["targets"] if t["refId"] == ref]
            text = expand(
                target["rawSql"],
                start=period.start,
                end=period.end - timedelta(seconds=1),
                interval=interval,
                sites=list(sites),
            )
            return connection.execute(text.encode()).fetchall()

        for title, numbers in PANELS.items():
            assert panel_rows(title) == numbers(report), title
        per_day = panel_rows("Pageviews and visitors", "A", "1d")
        expected = [
            (
                Decimal(int(datetime.combine(d.day, datetime.min.time(), UTC).timestamp())),
                d.pageviews,
            )
            for d in report.daily
            if d.pageviews
        ]
        assert per_day == expected


# --- periods, sites, empty databases ------------------------------------------------------------

TODAY = date(2025, 3, 10)


@pytest.mark.parametrize(
    ("days", "first", "last", "expected"),
    [
        (None, None, None, Period(date(2025, 3, 4), TODAY)),
        (1, None, None, Period(TODAY, TODAY)),
        (30, None, None, Period(date(2025, 2, 9), TODAY)),
        (None, "2025-02-01", None, Period(date(2025, 2, 1), TODAY)),
        (None, "2025-02-01", "2025-02-28", Period(date(2025, 2, 1), date(2025, 2, 28))),
        (None, "2024-02-29", "2024-02-29", Period(date(2024, 2, 29), date(2024, 2, 29))),
    ],
)
def test_periods(days: int | None, first: str | None, last: str | None, expected: Period) -> None:
    assert resolve_period(days, first, last, TODAY) == expected
    assert DEFAULT_DAYS == 7


@pytest.mark.parametrize(
    ("days", "first", "last", "message"),
    [
        (0, None, None, "--days: 0 is not between 1 and 3660"),
        (-3, None, None, "--days: -3 is not between 1 and 3660"),
        (7, "2025-03-01", None, "--days cannot be combined with --from/--to"),
        (7, None, "2025-03-01", "--days cannot be combined with --from/--to"),
        (None, None, "2025-03-01", "--to needs --from"),
        (None, "2025-02-30", None, "--from: '2025-02-30' is not a valid date (expected YYYY-MM-DD"),
        (None, "yesterday", None, "--from: 'yesterday' is not a valid date"),
        (None, "2025-03-01", "2025-13-01", "--to: '2025-13-01' is not a valid date"),
        (None, "2025-03-10", "2025-03-01", "--from 2025-03-10 is after --to 2025-03-01"),
        (None, "1990-01-01", "2025-03-01", "--from/--to: more than 3660 days"),
    ],
)
def test_bad_periods_name_the_flag(
    days: int | None, first: str | None, last: str | None, message: str
) -> None:
    with pytest.raises(ReportOptionError) as caught:
        resolve_period(days, first, last, TODAY)
    assert str(caught.value).startswith(message)
    assert caught.value.exit_code == 2


def test_unknown_site_lists_the_known_ones(seeded: Seeded) -> None:
    with pytest.raises(ReportOptionError) as caught:
        make_report(seeded.conninfo, DAY, ("nope.example", SITE))
    assert str(caught.value) == (
        "--site: no site 'nope.example' in the database (sites: example.com, other.org)"
    )


def test_empty_database(migrated_database: str) -> None:
    with pytest.raises(NoReportDataError) as caught:
        report_from(migrated_database, DAY)
    assert "no sites yet" in str(caught.value)
    assert caught.value.exit_code == 3


def test_database_without_the_schema(fresh_database: str) -> None:
    with pytest.raises(NoReportDataError) as caught:
        report_from(fresh_database, DAY, (SITE,))
    assert "no picolytics tables" in str(caught.value)


# --- the read model and time zones --------------------------------------------------------

EVERY_DAY = Period(date(2025, 2, 27), date(2025, 3, 10))


def roll_up(conninfo: str, zone: str, first: date, last: date) -> None:
    """Roll every day of every site up in `zone`, as the roller would once closed."""

    async def roll() -> None:
        async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as connection:
            cursor = await connection.execute("SELECT site_id FROM sites ORDER BY site_id")
            for (site_id,) in await cursor.fetchall():
                for n in range((last - first).days + 1):
                    await roll_day(connection, site_id, first + timedelta(days=n), zone)

    run(roll())


@pytest.fixture
def own_copy(migrated_database: str) -> str:
    """The module's dataset in a database of the test's own, to roll up or change."""
    run(write(migrated_database, dataset(NOW) + custom_events(NOW), bots(NOW.date())))
    return migrated_database


def test_the_same_report_from_rollups(own_copy: str) -> None:
    """Rolled-up days give the very numbers the raw rows give, bounces included."""
    periods = [DAY, WEEK, EVERY_DAY]
    zones = ["UTC", "Europe/Berlin"]
    sites: list[tuple[str, ...]] = [(SITE,), ()]
    raw = {
        (p, z, s): make_report(own_copy, p, s, timezone=z, limit=None)
        for p in periods
        for z in zones
        for s in sites
    }
    roll_up(own_copy, "UTC", date(2025, 2, 27), date(2025, 3, 10))
    assert query(own_copy, "SELECT count(*) FROM rollup_days") == [(24,)]
    for (period, zone, chosen), expected in raw.items():
        # Berlin's days are not rolled (another zone): read raw, the same as before.
        assert make_report(own_copy, period, chosen, timezone=zone, limit=None) == expected
    # With the raw rows gone (as prune leaves rolled days), the numbers stay, from the
    # rollups alone, campaigns included (their own rollup rows, sql/0012).
    query(own_copy, "DELETE FROM events RETURNING 1")
    query(own_copy, "DELETE FROM sessions RETURNING 1")
    for chosen in sites:
        before = raw[WEEK, "UTC", chosen]
        after = make_report(own_copy, WEEK, chosen, timezone="UTC", limit=None)
        assert (after.summary, after.daily) == (before.summary, before.daily)
        assert before.table("campaigns").rows  # the dataset has campaigns
        for table in before.tables:
            assert after.table(table.name) == table


def test_a_site_zone_is_the_default_zone(own_copy: str) -> None:
    in_utc = make_report(own_copy, DAY, ()).summary
    query(
        own_copy, "UPDATE sites SET timezone = 'Asia/Tokyo' WHERE domain = %s RETURNING 1", (SITE,)
    )
    report = make_report(own_copy, DAY)
    assert report.timezone == "Asia/Tokyo"
    assert (report.period.start, report.period.end) == (
        datetime(2025, 3, 9, 15, tzinfo=UTC),
        datetime(2025, 3, 10, 15, tzinfo=UTC),
    )
    assert report_render.render_text(report).splitlines()[1] == (
        "2025-03-10 to 2025-03-10 (Asia/Tokyo, 1 day)"
    )
    assert json.loads(report_render.render_json(report))["timezone"] == "Asia/Tokyo"
    # Two sites in two zones: UTC; in one zone: that one; --timezone wins.
    assert make_report(own_copy, DAY, ()).timezone == "UTC"
    query(own_copy, "UPDATE sites SET timezone = 'Asia/Tokyo' RETURNING 1")
    assert make_report(own_copy, DAY, ()).timezone == "Asia/Tokyo"
    assert make_report(own_copy, DAY, (), timezone="UTC").summary == in_utc


def test_visitors_are_summed_over_local_days(migrated_database: str) -> None:
    """One person, two visits an hour apart on one UTC day: one visitor id. In Berlin
    the visits fall on two local days, so the period has a visitor on each day: two
    (docs/read-model.md, What the numbers mean)."""
    at = datetime(2025, 3, 10, 22, 30, tzinfo=UTC)  # 23:30 in Berlin
    later = at + timedelta(hours=1)  # 00:30 on the 11th in Berlin; a visit of its own
    run(
        write(
            migrated_database, [page_event(at, A, "load", "/"), page_event(later, A, "load", "/")]
        )
    )
    two_days = Period(date(2025, 3, 10), date(2025, 3, 11))
    utc = make_report(migrated_database, two_days, timezone="UTC")
    berlin = make_report(migrated_database, two_days, timezone="Europe/Berlin")
    assert (utc.summary.visits, utc.summary.visitors) == (2, 1)
    assert [(d.day.day, d.visits, d.visitors) for d in utc.daily] == [(10, 2, 1), (11, 0, 0)]
    assert (berlin.summary.visits, berlin.summary.visitors) == (2, 2)
    assert [(d.day.day, d.visits, d.visitors) for d in berlin.daily] == [(10, 1, 1), (11, 1, 1)]
    assert berlin.table("pages").rows == (("/", 2, 2),)
    assert utc.table("pages").rows == (("/", 2, 1),)


def test_today_is_the_zone_today(own_copy: str) -> None:
    late = datetime(2025, 3, 10, 23, 30, tzinfo=UTC)  # the 11th in Berlin already

    async def build(zone: str) -> Report:
        async with await psycopg.AsyncConnection.connect(own_copy) as connection:
            options = PeriodOptions(days=2)
            return await build_report(connection, options, (SITE,), timezone=zone, now=late)

    assert run(build("UTC")).period == Period(date(2025, 3, 9), date(2025, 3, 10), "UTC")
    berlin = run(build("Europe/Berlin")).period
    assert berlin == Period(date(2025, 3, 10), date(2025, 3, 11), "Europe/Berlin")
    assert berlin.start == datetime(2025, 3, 9, 23, tzinfo=UTC)


def test_a_bad_zone_names_the_flag(seeded: Seeded) -> None:
    with pytest.raises(ReportOptionError) as caught:
        make_report(seeded.conninfo, DAY, timezone="Mars/Olympus_Mons")
    assert str(caught.value) == (
        "--timezone: 'Mars/Olympus_Mons' is not a known IANA time zone (e.g. Europe/Berlin, UTC)"
    )
    assert caught.value.exit_code == 2


# --- rendering details ---------------------------------------------------------------------


def test_long_labels_and_long_periods_fit_80_columns(migrated_database: str) -> None:
    long_path = "/" + "very-long-segment/" * 10
    run(write(migrated_database, [page_event(NOW, A, "load", long_path)]))
    report = make_report(migrated_database, Period(date(2025, 1, 1), TODAY), limit=None)
    for ascii_only in (False, True):
        text = report_render.render_text(report, ascii_only=ascii_only)
        assert max(len(line) for line in text.splitlines()) <= 80
        assert "Pageviews per day\n  2025-01-01 " in text  # a sparkline, not 69 bars
        if ascii_only:
            text.encode("ascii")
    assert "  /very-long-segment/very-long-segment/" in text
    assert "...  " in text


# --- the command ------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_text(seeded: Seeded, tmp_path: Path) -> None:
    env = {"PGCONNSTRING": seeded.conninfo, "PYTHONIOENCODING": "utf-8"}
    result = run_cli(
        "report",
        "--site",
        SITE,
        "--from",
        "2025-03-10",
        "--to",
        "2025-03-10",
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == DAY_TEXT


@pytest.mark.slow
def test_cli_json_to_a_file(seeded: Seeded, tmp_path: Path) -> None:
    env = {"PGCONNSTRING": seeded.conninfo}
    args = ["--site", SITE, "--from", "2025-03-04", "--to", "2025-03-10"]
    result = run_cli("report", *args, "--format", "json", "-o", "week.json", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert "wrote the report to week.json" in result.stderr
    document = json.loads((tmp_path / "week.json").read_text())
    assert without_generated_at(document) == week_document()
    assert [path.name for path in tmp_path.iterdir()] == ["week.json"]  # no temporary left


@pytest.mark.slow
def test_cli_in_another_zone(seeded: Seeded, tmp_path: Path) -> None:
    env = {"PGCONNSTRING": seeded.conninfo}
    args = ["--from", "2025-03-10", "--to", "2025-03-10", "--timezone", "Pacific/Kiritimati"]
    result = run_cli("report", *args, "--format", "json", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert (document["timezone"], document["from"], document["days"]) == (
        "Pacific/Kiritimati",
        "2025-03-10",
        1,
    )
    # UTC+14: the 10th there ends at 10:00 UTC, so only the visits started before count.
    assert (document["summary"]["visits"], document["summary"]["visitors"]) == (3, 3)


@pytest.mark.slow
def test_cli_csv_zip(seeded: Seeded, tmp_path: Path) -> None:
    env = {"PGCONNSTRING": seeded.conninfo}
    args = ["--site", SITE, "--from", "2025-03-04", "--to", "2025-03-10", "--format", "csv"]
    result = run_cli("report", *args, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    written = tmp_path / "picolytics-report-2025-03-04-to-2025-03-10.zip"
    assert read_zip(written.read_bytes()) == week_csv()
    to_stdout = subprocess.run(
        [*PICOLYTICS, "report", *args, "--output", "-"],
        capture_output=True,
        env=clean_env(env),
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert to_stdout.returncode == 0, to_stdout.stderr
    assert read_zip(to_stdout.stdout) == week_csv()


@pytest.mark.slow
def test_cli_ascii_terminal(seeded: Seeded, tmp_path: Path) -> None:
    env = {"PGCONNSTRING": seeded.conninfo, "PYTHONIOENCODING": "ascii"}
    result = run_cli("report", "--from", "2025-03-10", "--to", "2025-03-10", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "  2025-03-10 Mon  13 ####" in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", "2025-02-30"], "--from: '2025-02-30' is not a valid date"),
        (["--from", "2025-03-10", "--to", "2025-03-01"], "--from 2025-03-10 is after --to"),
        (["--days", "7", "--from", "2025-03-01"], "--days cannot be combined with --from/--to"),
        (["--to", "2025-03-01"], "--to needs --from"),
        (["--site", "nope.example"], "--site: no site 'nope.example' in the database"),
        (["--timezone", "Mars/Olympus_Mons"], "--timezone: 'Mars/Olympus_Mons' is not a known"),
        (["--timezone", "cet"], "--timezone: 'cet' is not a known IANA time zone"),
    ],
)
def test_cli_bad_options_exit_2(
    seeded: Seeded, tmp_path: Path, args: list[str], message: str
) -> None:
    result = run_cli("report", *args, env={"PGCONNSTRING": seeded.conninfo}, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith(f"picolytics: error: {message}")
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


@pytest.mark.slow
def test_cli_empty_database_exits_3(migrated_database: str, tmp_path: Path) -> None:
    result = run_cli("report", env={"PGCONNSTRING": migrated_database}, cwd=tmp_path)
    assert result.returncode == 3
    assert result.stderr.strip().splitlines()[-1] == (
        "picolytics: error: nothing to report: the database has no sites yet "
        "(no event has been recorded)"
    )
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_cli_on_the_embedded_database() -> None:
    folder = reachable_tempdir("picolytics-report-")
    try:
        env = {"DATA_DIR": str(folder / "data"), "LOG_FORMAT": "text"}
        empty = run_cli("report", env=env, cwd=folder)
        assert empty.returncode == 3, empty.stderr
        assert "no picolytics tables" in empty.stderr
        server = EmbeddedPostgres(folder / "data")
        conninfo = server.start()
        try:
            migrate.apply(conninfo)
            run(write(conninfo, dataset(NOW), bots(NOW.date())))
        finally:
            server.stop()
        args = ["--site", SITE, "--from", "2025-03-10", "--to", "2025-03-10", "--format", "json"]
        result = run_cli("report", *args, env=env, cwd=folder)
        assert result.returncode == 0, result.stderr
        summary = json.loads(result.stdout)["summary"]
        assert (summary["visitors"], summary["visits"], summary["pageviews"]) == (3, 5, 12)
        assert "embedded PostgreSQL stopped" in result.stderr
    finally:
        shutil.rmtree(folder, ignore_errors=True)
