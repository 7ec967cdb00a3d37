"""The daily views read the rollups (migration 0007) and give the raw views' numbers.

Every daily view that 0007 redefines must give, on the same data, exactly the rows of
its original definition (the SELECT of 0002_views.sql / 0004_custom_events.sql, read
from those files): before anything is rolled up, after rolling, for days left
unrolled in between, for a stale day that a late write changed, and for a site whose
zone is not UTC (its rollups are of local days, so its UTC days are read raw).

The dataset, written through the real batch writer on two sites, utc.example (zone
UTC) and berlin.example (zone Europe/Berlin), each of the last 6 days:
  visitor 0  "/" (from news.example), ping, "/pricing", signup {plan} on "/pricing"
  visitor 1  "/blog" (utm newsletter/email/launch); 3 h later "/" from search.example:
             two bounces, one visitor
  visitor 2  "/docs", hashchange to "/docs#/install", an in-page anchor, outbound and
             download clicks (props.url)
  visitor 3  every other day at 23:20 UTC (the next local day in Berlin): "/",
             engagement of 45 s, visible
plus, 3 days ago, a visit from 23:50 UTC past midnight (a new visitor id after it,
continued through previous_visitor_id): "/", "/late", then "/after-midnight" and a
signup on the next day; and today (open, never rolled) a visit of three events.
Rolled up by the real roll_day (storage/rollup.py): every closed day of utc.example in
UTC but the one of 4 days ago, and every closed local day of berlin.example in
Europe/Berlin.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from helpers.database import query, reader_login
from helpers.events import PAGE, run, write
from psycopg import AsyncConnection

from picolytics.events import Agent, Location, QueuedEvent, new_id
from picolytics.resources import sql_dir
from picolytics.storage.rollup import roll_day

UTC_SITE = "utc.example"
BERLIN_SITE = "berlin.example"
BERLIN = "Europe/Berlin"
DAYS = 6  # closed days with traffic, before today
UNROLLED = 4  # days ago: the closed day of utc.example left unrolled
MIDNIGHT = 3  # days ago: the visit that goes on past UTC midnight starts that day

# The views 0007 redefines, and the rollup each reads for its rolled days.
REDEFINED = {
    "daily_visitors": ("rollup_visits", ""),
    "sources": ("rollup_visits", "source"),
    "entry_pages": ("rollup_visits", "entry_page"),
    "exit_pages": ("rollup_visits", "exit_page"),
    "countries": ("rollup_visits", "country"),
    "browsers": ("rollup_visits", "browser"),
    "operating_systems": ("rollup_visits", "os"),
    "devices": ("rollup_visits", "device"),
    "top_pages": ("rollup_events", "page"),
    "daily_custom_events": ("rollup_events", "event"),
}
# The daily views the rollups cannot answer: left as 0002/0004 defined them.
RAW_DAILY = ["campaigns", "custom_event_props", "conversion_pages", "page_engagement"]
VISIT_VIEWS = [view for view, (table, _) in REDEFINED.items() if table == "rollup_visits"]

CHROME = Agent("Chrome", "120", "Windows", "10", "desktop", None)
FIREFOX = Agent("Firefox", "121", "Mac OS X", "14", "desktop", None)
SAFARI = Agent("Mobile Safari", "17", "iOS", "17", "mobile", None)
AGENTS = [CHROME, FIREFOX, SAFARI]
LOCATIONS = [
    Location("DE", "Berlin", "Berlin"),
    Location("US", "New York", "New York"),
    Location("FR", "Île-de-France", "Paris"),
]
NEWSLETTER: dict[str, Any] = {
    "utm_source": "newsletter",
    "utm_medium": "email",
    "utm_campaign": "launch",
}
REPO = "https://github.com/picolytics/picolytics"
PDF = "https://example.com/files/guide.pdf"
PRO = {"plan": "pro"}


def original_selects() -> dict[str, str]:
    """Each view's SELECT as 0002 and 0004 created it (0005 changed only row views)."""
    found: dict[str, str] = {}
    for name in ("0002_views.sql", "0004_custom_events.sql"):
        text = (sql_dir() / name).read_text(encoding="utf-8")
        found |= dict(re.findall(r"^CREATE VIEW (\w+) AS\n(.*?);$", text, re.M | re.S))
    return found


ORIGINAL = original_selects()


# -- the dataset -----------------------------------------------------------------------


def hit(
    at: datetime,
    visitor: int,
    name: str,
    path: str,
    site: str,
    profile: int,
    previous: int | None = None,
    **fields: Any,
) -> QueuedEvent:
    page = replace(PAGE, name=name, path=path, site=site, **fields)
    agent, location = AGENTS[profile % 3], LOCATIONS[profile % 3]
    return QueuedEvent(at, new_id(), visitor, previous, page, location, agent)


def visitor_id(site: str, days_ago: int, number: int) -> int:
    return (1 + [UTC_SITE, BERLIN_SITE].index(site)) * 100_000 + days_ago * 100 + number


def closed_day(site: str, day: date, days_ago: int) -> list[QueuedEvent]:
    minute, hour = timedelta(minutes=1), timedelta(hours=1)
    nine = datetime.combine(day, time(9), tzinfo=UTC)

    def on(at: timedelta, number: int, name: str, path: str, **fields: Any) -> QueuedEvent:
        # Visitor `number` of the day; its browser and country vary with day and number.
        visitor = visitor_id(site, days_ago, number)
        return hit(nine + at, visitor, name, path, site, days_ago + number, **fields)

    plan = {"plan": "pro" if days_ago % 2 else "free"}
    events = [
        on(0 * minute, 0, "load", "/", referrer_host="news.example"),
        on(1 * minute, 0, "ping", "/"),
        on(2 * minute, 0, "load", "/pricing"),
        on(3 * minute, 0, "signup", "/pricing", props=plan),
        on(1 * hour, 1, "load", "/blog", **NEWSLETTER),
        on(4 * hour, 1, "load", "/", referrer_host="search.example"),
        on(2 * hour, 2, "load", "/docs"),
        on(2 * hour + minute, 2, "hashchange", "/docs", hash_path="#/install"),
        on(2 * hour + 2 * minute, 2, "hashchange", "/docs"),  # an in-page anchor
        on(2 * hour + 3 * minute, 2, "outbound", "/docs", props={"url": REPO}),
        on(2 * hour + 4 * minute, 2, "download", "/docs", props={"url": PDF}),
    ]
    if days_ago % 2 == 0:
        late = timedelta(hours=14, minutes=20)  # 23:20 UTC
        events += [
            on(late, 3, "load", "/"),
            on(late + minute, 3, "engagement", "/", engaged_ms=45_000, scroll_depth=80),
            on(late + 2 * minute, 3, "visible", "/"),
        ]
    return events


def across_midnight(site: str, day: date) -> tuple[list[QueuedEvent], list[QueuedEvent]]:
    """A visit from 23:50 UTC into the next day: the events before midnight, and those
    after it (with the next day's visitor id and the previous one)."""
    before, after = visitor_id(site, MIDNIGHT, 50), visitor_id(site, MIDNIGHT - 1, 51)
    t = datetime.combine(day, time(23, 50), tzinfo=UTC)
    minute = timedelta(minutes=1)
    return (
        [
            hit(t, before, "load", "/", site, 1, referrer_host="news.example"),
            hit(t + 5 * minute, before, "nav", "/late", site, 1),
        ],
        [
            hit(t + 15 * minute, after, "nav", "/after-midnight", site, 1, before),
            hit(t + 16 * minute, after, "signup", "/after-midnight", site, 1, before, props=PRO),
        ],
    )


def today(site: str, now: datetime) -> list[QueuedEvent]:
    """Three events of the last minutes, today in UTC even just after midnight."""
    v, second = visitor_id(site, 0, 0), timedelta(seconds=1)
    t = max(now - timedelta(minutes=20), datetime.combine(now.date(), time(), tzinfo=UTC))
    return [
        hit(t, v, "load", "/", site, 0),
        hit(t + second, v, "nav", "/pricing", site, 0),
        hit(t + 2 * second, v, "signup", "/pricing", site, 0, props=PRO),
    ]


def seed(conninfo: str, now: datetime) -> None:
    first = now.date() - timedelta(days=DAYS + 1)
    with psycopg.connect(conninfo, autocommit=True) as connection:
        # Daily partitions for every day written, so run-time pruning can be seen.
        connection.execute("SELECT picolytics_ensure_event_partitions(%s, %s)", (first, DAYS + 4))
        connection.execute(
            "INSERT INTO sites (domain, timezone) VALUES (%s, 'UTC'), (%s, %s)",
            (UTC_SITE, BERLIN_SITE, BERLIN),
        )
    batch: list[QueuedEvent] = []
    after_midnight: list[QueuedEvent] = []
    for site in (UTC_SITE, BERLIN_SITE):
        for days_ago in range(DAYS, 0, -1):
            batch += closed_day(site, now.date() - timedelta(days=days_ago), days_ago)
        before, after = across_midnight(site, now.date() - timedelta(days=MIDNIGHT))
        batch += before
        after_midnight += after
        batch += today(site, now)
    run(write(conninfo, batch))
    run(write(conninfo, after_midnight))  # continues the visit the first batch opened


# -- rolling up ------------------------------------------------------------------------


async def roll(conninfo: str, days: list[tuple[str, date, str]]) -> None:
    """roll_day for each (site, local day, zone), as the roller runs it."""
    async with await AsyncConnection.connect(conninfo, autocommit=True) as connection:
        for domain, day, zone in days:
            cursor = await connection.execute(
                "SELECT site_id FROM sites WHERE domain = %s", (domain,)
            )
            row = await cursor.fetchone()
            assert row is not None
            await roll_day(connection, int(row[0]), day, zone)


def site_id(connection: psycopg.Connection[Any], domain: str) -> int:
    row = connection.execute("SELECT site_id FROM sites WHERE domain = %s", (domain,)).fetchone()
    assert row is not None
    return int(row[0])


def roll_up(conninfo: str, now: datetime) -> None:
    """Every closed day of both sites, in its zone, but utc.example's UNROLLED day."""
    berlin_today = now.astimezone(ZoneInfo(BERLIN)).date()
    run(
        roll(
            conninfo,
            [
                (UTC_SITE, now.date() - timedelta(days=n), "UTC")
                for n in range(DAYS, 0, -1)
                if n != UNROLLED
            ]
            # Local days: the visits at 23:20 UTC belong to the next one.
            + [(BERLIN_SITE, berlin_today - timedelta(days=n), BERLIN) for n in range(DAYS, 0, -1)],
        )
    )


# -- reading ---------------------------------------------------------------------------


def view_rows(conninfo: str, view: str) -> list[tuple[Any, ...]]:
    return sorted(query(conninfo, f"SELECT * FROM {view}"))


def rows_in(connection: psycopg.Connection[Any], view: str) -> list[tuple[Any, ...]]:
    """The view's rows as a connection sees them, in a transaction of its own."""
    return sorted(connection.execute(f"SELECT * FROM {view}").fetchall())


def original_rows(conninfo: str, view: str) -> list[tuple[Any, ...]]:
    """The view's rows as its 0002/0004 definition gives them, on the same raw rows."""
    return sorted(query(conninfo, f"SELECT * FROM ({ORIGINAL[view]}) AS original"))


@dataclass(frozen=True)
class Rolled:
    conninfo: str  # as the migrating superuser
    reader: str  # a login role that is only a member of picolytics_reader
    now: datetime
    before: dict[str, list[tuple[Any, ...]]]  # each view, read before rolling up
    original: dict[str, list[tuple[Any, ...]]]  # each view's original rows, then


@pytest.fixture(scope="module")
def rolled(module_database: str, admin_conninfo: str) -> Iterator[Rolled]:
    now = datetime.now(UTC)
    seed(module_database, now)
    for reader in reader_login(admin_conninfo, module_database):
        before = {view: view_rows(reader, view) for view in REDEFINED}
        original = {view: original_rows(reader, view) for view in REDEFINED}
        roll_up(module_database, now)
        yield Rolled(module_database, reader, now, before, original)


def days_ago(rolled: Rolled, days: int) -> date:
    return rolled.now.date() - timedelta(days=days)


# -- the numbers -----------------------------------------------------------------------


@pytest.mark.parametrize("view", sorted(REDEFINED))
def test_same_rows_before_and_after_rolling_up(rolled: Rolled, view: str) -> None:
    assert rolled.before[view] == rolled.original[view]
    assert view_rows(rolled.reader, view) == rolled.original[view]
    # Rolling up changed no raw row: the original definition still gives the same.
    assert original_rows(rolled.reader, view) == rolled.original[view]


def test_the_dataset_has_what_the_views_must_handle(rolled: Rolled) -> None:
    """Not vacuous: several days per site, rolled days of both kinds, the open day."""
    rows = rolled.original["daily_visitors"]
    days = {(site, day) for site, day, *_ in rows}
    assert {(UTC_SITE, days_ago(rolled, n)) for n in range(DAYS + 1)} <= days
    assert (BERLIN_SITE, days_ago(rolled, 0)) in days
    assert len(rolled.original["daily_custom_events"]) >= 3 * DAYS
    rolled_days = query(
        rolled.conninfo,
        "SELECT s.domain, d.timezone, count(*) FROM rollup_days d JOIN sites s USING (site_id) "
        "GROUP BY 1, 2 ORDER BY 1",
    )
    assert rolled_days == [(BERLIN_SITE, BERLIN, DAYS), (UTC_SITE, "UTC", DAYS - 1)]
    # Berlin's local days are not its UTC days: read as UTC days, its rollups would be
    # wrong (the visits at 23:20 UTC).
    local, utc = (
        query(rolled.conninfo, sql, (BERLIN_SITE,))
        for sql in (
            "SELECT day, visits FROM rollup_visits JOIN sites USING (site_id) "
            "WHERE domain = %s AND dimension = '' ORDER BY 1",
            "SELECT day, visits FROM daily_visitors WHERE site = %s ORDER BY 1",
        )
    )
    assert set(local) - set(utc)
    # The visit across midnight: counted on the day it started, with its 3 pageviews.
    assert query(
        rolled.reader,
        "SELECT (time AT TIME ZONE 'UTC')::date, pageviews FROM visits "
        "WHERE site = %s AND exit_path = '/after-midnight'",
        (UTC_SITE,),
    ) == [(days_ago(rolled, MIDNIGHT), 3)]


def test_rolled_utc_days_are_read_from_the_rollups(rolled: Rolled) -> None:
    """White box: change a rolled UTC day's rollup rows (in a transaction rolled back),
    and each view shows the change for that day and site only."""
    day = days_ago(rolled, 2)
    with psycopg.connect(rolled.conninfo) as connection:
        for table in ("rollup_visits", "rollup_events"):
            connection.execute(
                f"UPDATE {table} SET visits = visits + 1000, visitors = visitors + 1000 "
                "WHERE site_id = %s AND day = %s",
                (site_id(connection, UTC_SITE), day),
            )
        connection.execute(
            "UPDATE rollup_events SET pageviews = pageviews + 1000, events = events + 1000 "
            "WHERE site_id = %s AND day = %s",
            (site_id(connection, UTC_SITE), day),
        )
        for view in REDEFINED:
            changed = {
                row[:2] for row in set(rows_in(connection, view)) ^ set(rolled.original[view])
            }
            assert changed == {(UTC_SITE, day)}, view
        connection.rollback()


def test_a_site_in_another_zone_is_read_raw(rolled: Rolled) -> None:
    """Its rollups are of Berlin days, which are not UTC days: changing them changes
    nothing the views show."""
    with psycopg.connect(rolled.conninfo) as connection:
        berlin = site_id(connection, BERLIN_SITE)
        for table in ("rollup_visits", "rollup_events"):
            connection.execute(
                f"UPDATE {table} SET visits = visits + 1000 WHERE site_id = %s", (berlin,)
            )
        for view in REDEFINED:
            assert rows_in(connection, view) == rolled.original[view], view
        connection.rollback()


def test_a_stale_day_is_read_raw(migrated_database: str) -> None:
    """A late write into a rolled day: marked stale (by the writer, or here by hand), the
    day is read raw with the late visit; rolled again, from the new rollup."""
    now = datetime.now(UTC)
    seed(migrated_database, now)
    roll_up(migrated_database, now)
    day = now.date() - timedelta(days=2)
    t = datetime.combine(day, time(15), tzinfo=UTC)
    late = [
        hit(t, 999, "load", "/late-page", UTC_SITE, 2, referrer_host="late.example"),
        hit(t + timedelta(minutes=1), 999, "signup", "/late-page", UTC_SITE, 2),
    ]
    with psycopg.connect(migrated_database, autocommit=True) as connection:
        utc_id = site_id(connection, UTC_SITE)
        ((rolled_visits,),) = connection.execute(
            "SELECT visits FROM daily_visitors WHERE site = %s AND day = %s", (UTC_SITE, day)
        ).fetchall()
    run(write(migrated_database, late))
    with psycopg.connect(migrated_database, autocommit=True) as connection:
        connection.execute(
            "INSERT INTO rollup_stale (site_id, day) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            (utc_id, day),
        )
    for view in REDEFINED:
        assert view_rows(migrated_database, view) == original_rows(migrated_database, view), view
    assert query(
        migrated_database,
        "SELECT visits FROM daily_visitors WHERE site = %s AND day = %s",
        (UTC_SITE, day),
    ) == [(rolled_visits + 1,)]
    assert query(
        migrated_database,
        "SELECT source FROM sources WHERE site = %s AND day = %s AND source = 'late.example'",
        (UTC_SITE, day),
    ) == [("late.example",)]

    run(roll(migrated_database, [(UTC_SITE, day, "UTC")]))
    assert query(migrated_database, "SELECT count(*) FROM rollup_stale WHERE day = %s", (day,)) == [
        (0,)
    ]
    for view in REDEFINED:
        assert view_rows(migrated_database, view) == original_rows(migrated_database, view), view


def test_a_day_rolled_in_utc_is_read_from_it_even_after_a_zone_change(rolled: Rolled) -> None:
    """The views are in UTC days whatever the site's zone: a day rolled in UTC stays
    usable for them after the site moves to another zone."""
    with psycopg.connect(rolled.conninfo) as connection:
        connection.execute("UPDATE sites SET timezone = %s WHERE domain = %s", (BERLIN, UTC_SITE))
        for view in REDEFINED:
            assert rows_in(connection, view) == rolled.original[view], view
        connection.rollback()


# -- what is redefined, and what stays -------------------------------------------------


def test_only_the_answerable_views_read_rollups(rolled: Rolled) -> None:
    definitions = dict(
        query(
            rolled.conninfo,
            "SELECT viewname::text, definition FROM pg_views WHERE schemaname = current_schema()",
        )
    )
    reading = {view for view, definition in definitions.items() if "rollup_" in definition}
    assert reading == set(REDEFINED)
    for view in RAW_DAILY:
        assert view in definitions


@pytest.mark.parametrize("view", sorted(REDEFINED))
def test_columns_names_and_comments_are_kept(rolled: Rolled, view: str) -> None:
    columns = query(
        rolled.conninfo,
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = %s::regclass AND attnum > 0 ORDER BY attnum",
        (view,),
    )
    # The original's columns and types, from a temporary view of its SELECT.
    with psycopg.connect(rolled.conninfo) as connection:
        connection.execute(f"CREATE TEMPORARY VIEW original AS {ORIGINAL[view]}")
        expected = connection.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = 'original'::regclass AND attnum > 0 ORDER BY attnum"
        ).fetchall()
        connection.rollback()
    assert columns == expected
    assert query(rolled.conninfo, "SELECT obj_description(%s::regclass, 'pg_class')", (view,))[0][0]


# -- the reader ------------------------------------------------------------------------


@pytest.mark.parametrize("view", sorted(REDEFINED))
def test_the_reader_reads_the_views(rolled: Rolled, view: str) -> None:
    assert query(rolled.reader, f"SELECT * FROM {view} WHERE site = %s", (UTC_SITE,))


@pytest.mark.parametrize("table", ["daily_salts", "visitor_sessions"])
def test_the_reader_still_cannot_read_private_tables(rolled: Rolled, table: str) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        query(rolled.reader, f"SELECT * FROM {table} LIMIT 1")


# -- plans: a query on a site and days reads only the rows it needs -----------------------


def plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from plan_nodes(child)


def explain(conninfo: str, view: str, first: date, last: date) -> list[dict[str, Any]]:
    """EXPLAIN ANALYZE of a Grafana-like query, as the reader, with sequential scans
    disabled: on these few rows the planner would rightly prefer them, but on a real
    database the conditions must be index conditions."""
    with psycopg.connect(conninfo) as connection:
        connection.execute("SET enable_seqscan = off")
        ((plan,),) = connection.execute(
            f"EXPLAIN (ANALYZE, FORMAT JSON) SELECT * FROM {view} "
            "WHERE site = %s AND day BETWEEN %s AND %s",
            (UTC_SITE, first, last),
        ).fetchall()
    return list(plan_nodes(plan[0]["Plan"]))


def conditions(node: dict[str, Any]) -> str:
    return " ".join(str(node.get(key, "")) for key in ("Index Cond", "Recheck Cond", "Filter"))


def day_scans(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The raw branch's scans of one day's rows: sessions by started_at, or an events
    partition by received_at (not the index lookups of the first and last row)."""
    return [
        node
        for node in nodes
        if (node.get("Relation Name") == "sessions" and "started_at >=" in conditions(node))
        or (
            str(node.get("Relation Name", "")).startswith("events")
            and "received_at >=" in conditions(node)
        )
    ]


def partition(day: date) -> str:
    return f"events_{day:%Y%m%d}"


@pytest.mark.parametrize("view", sorted(REDEFINED))
def test_rolled_days_read_no_raw_rows(rolled: Rolled, view: str) -> None:
    nodes = explain(rolled.reader, view, days_ago(rolled, 3), days_ago(rolled, 1))
    scans = day_scans(nodes)
    assert scans, "the raw branch reads one day at a time"
    assert [node["Actual Loops"] for node in scans] == [0] * len(scans)
    table, _ = REDEFINED[view]
    (rollup,) = [node for node in nodes if node.get("Relation Name") == table]
    # An index scan's condition, or a bitmap heap scan's (its bitmap index scan's own).
    used = rollup.get("Index Cond") or rollup["Recheck Cond"]
    assert "site_id =" in used and "day >=" in used
    assert rollup["Actual Rows"] > 0


@pytest.mark.parametrize("view", sorted(REDEFINED))
def test_unrolled_days_are_read_by_index_and_partition(rolled: Rolled, view: str) -> None:
    """A range with the unrolled day and the open day reads those two days' raw rows
    only: two index range scans of sessions, or the two days' events partitions."""
    nodes = explain(rolled.reader, view, days_ago(rolled, UNROLLED + 1), days_ago(rolled, 0))
    executed = [node for node in day_scans(nodes) if node["Actual Loops"] > 0]
    assert all(node["Node Type"] != "Seq Scan" for node in executed)
    if view in VISIT_VIEWS:
        assert [(node["Relation Name"], node["Actual Loops"]) for node in executed] == [
            ("sessions", 2)
        ]
        assert "started_at <" in conditions(executed[0])
    else:
        assert sorted(node["Relation Name"] for node in executed) == sorted(
            {partition(days_ago(rolled, UNROLLED)), partition(days_ago(rolled, 0))}
        )
