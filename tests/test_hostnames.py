"""Hostnames (issue #18, sql/0020_hostnames.sql): the host of each event's page and of
each visit's entry and exit pages, stored at ingest, rolled up, queried, and answered
as Plausible's event:hostname, visit:entry_page_hostname and visit:exit_page_hostname.

The query dataset is one UTC day of site multi.test whose pages are on three hosts
(Plausible's `d` names the site, `u` the page), made by the real /api/event parser:

  visit visitor  events (UTC, 2024-03-05)                          country
  V1    1        10:00 load multi.test/, 10:01 load blog/post,     DE
                 10:02 signup on shop:8443/cart (a custom event)
  V2    2        11:00 load WWW.Blog.Multi.Test/ (bounce)          US
  V3    3        12:00 load shop/, 12:05 engagement on shop/,      DE
                 12:06 load multi.test/about
  V4    4        13:00 load / stored without a host, as before 0020 DE
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path
from sys import getsizeof
from typing import Any
from urllib.parse import urlencode

import psycopg
import pytest
from helpers.database import query, wait_for_count
from helpers.events import AGENT, CHROME_UA, CLIENT_IP, LOCATION, event, run, write
from psycopg import AsyncConnection
from starlette.testclient import TestClient

from picolytics.config import Config
from picolytics.dimensions import Dimension
from picolytics.events import EventNames, Location, QueuedEvent, new_id
from picolytics.ingest.plausible import parse_plausible_event
from picolytics.serve.app import create_app
from picolytics.stats.engine import run as run_query
from picolytics.stats.query import Breakdown, Condition, Filter, Period, Query, Result
from picolytics.stats.shape import shape_of
from picolytics.storage import api_keys
from picolytics.storage.event_queue import retained_bytes
from picolytics.storage.rollup import roll_day

SITE = "multi.test"
DAY = date(2024, 3, 5)
PERIOD = Period(datetime(2024, 3, 5, tzinfo=UTC), datetime(2024, 3, 6, tzinfo=UTC))
US = Location("US", "Illinois", "Springfield")
NAMES = EventNames(frozenset({"load", "engagement", "signup"}))
MIGRATION = Path(__file__).parents[1] / "sql" / "0020_hostnames.sql"
COUNTED = "(picolytics_is_pageview(name, path) OR picolytics_is_custom_event(name))"


def at(clock: str) -> datetime:
    return datetime.fromisoformat(f"2024-03-05T{clock}+00:00")


def sent(clock: str, visitor: int, name: str, url: str, **fields: Any) -> QueuedEvent:
    """An event as /api/event reads it (its hostname from `u`), written at `clock`."""
    body = json.dumps({"n": name, "u": url, "d": SITE, **fields}).encode()
    page = parse_plausible_event(body, NAMES)
    return QueuedEvent(at(clock), new_id(), visitor, None, page, LOCATION, AGENT)


def dataset() -> list[QueuedEvent]:
    return [
        sent("10:00", 1, "pageview", "https://multi.test/"),
        sent("10:01", 1, "pageview", "https://blog.multi.test/post?x=1#top"),
        sent("10:02", 1, "signup", "https://shop.multi.test:8443/cart"),
        replace(sent("11:00", 2, "pageview", "https://WWW.Blog.Multi.Test/"), location=US),
        sent("12:00", 3, "pageview", "https://shop.multi.test/"),
        sent("12:05", 3, "engagement", "https://shop.multi.test/", e=40_000),
        sent("12:06", 3, "pageview", "https://multi.test/about"),
        event(at("13:00"), 4, site=SITE),  # hostname "": made outside ingest, or old
    ]


@pytest.fixture(scope="module")
def conninfo(module_database: str) -> str:
    run(write(module_database, dataset()))
    return module_database


def ask(conninfo: str, *, rollups: bool = True, **fields: Any) -> Result:
    async def go() -> Result:
        async with await AsyncConnection.connect(conninfo) as connection:
            (site_id,) = (await (await connection.execute(SITE_ID, (SITE,))).fetchone()) or ()
            found = Query(site_ids=(site_id,), period=PERIOD, **fields)
            return await run_query(connection, found, use_rollups=rollups)

    return run(go())


SITE_ID = "SELECT site_id FROM sites WHERE domain = %s"


def execute(conninfo: str, statements: str) -> None:
    """Statements without parameters, several at once (as migrations run)."""
    with psycopg.connect(conninfo, autocommit=True) as connection:
        connection.execute(statements.encode())


def by_value(result: Result) -> dict[str | None, dict[str, Any]]:
    return {
        row.value: {str(name): value for name, value in row.metrics.items()} for row in result.rows
    }


async def _roll(conninfo: str) -> None:
    async with await AsyncConnection.connect(conninfo, autocommit=True) as connection:
        cursor = await connection.execute("SELECT site_id FROM sites")
        for (site_id,) in await cursor.fetchall():
            await roll_day(connection, site_id, DAY, "UTC")


# --- what is stored ---------------------------------------------------------------------


def test_both_endpoints_store_the_pages_host_and_the_visits_entry_and_exit_hosts(
    migrated_database: str,
) -> None:
    config = Config(batch_max_msec=20, request_rate_limit=0, custom_event_names="Signup")
    app = create_app(config, conninfo=migrated_database)
    headers = {"Content-Type": "text/plain", "User-Agent": CHROME_UA}
    with TestClient(app, client=(CLIENT_IP, 50123)) as client:
        page = {"n": "load", "l": "https://WWW.Example.com:8443/a?utm_source=x&secret=1#frag"}
        assert client.post("/p", content=json.dumps(page), headers=headers).status_code == 202
        wait_for_count(migrated_database, "SELECT count(*) FROM events", 1)
        for name, url in (
            ("pageview", "https://blog.example.com/post?token=2"),
            ("Signup", "https://shop.example.com/cart"),  # not a pageview: not the exit
        ):
            plausible = {"n": name, "u": url, "d": "example.com"}
            response = client.post("/api/event", content=json.dumps(plausible), headers=headers)
            assert response.status_code == 202
            wait_for_count(
                migrated_database, "SELECT count(*) FROM events", 2 + (name != "pageview")
            )
    events = query(
        migrated_database,
        "SELECT d.domain, e.name, e.path, e.hostname FROM events e JOIN sites d USING (site_id) "
        "ORDER BY e.received_at",
    )
    assert events == [
        ("example.com", "load", "/a", "example.com"),
        ("example.com", "load", "/post", "blog.example.com"),
        ("example.com", "Signup", "/cart", "shop.example.com"),
    ]
    assert query(
        migrated_database,
        "SELECT entry_path, entry_hostname, exit_path, exit_hostname FROM sessions",
    ) == [("/a", "example.com", "/post", "blog.example.com")]


def test_a_late_pageview_moves_the_entry_host_with_the_entry_path(
    migrated_database: str,
) -> None:
    def page(clock: str, path: str, host: str, name: str = "load") -> QueuedEvent:
        return event(at(clock), 7, name=name, path=path, site=SITE, hostname=host)

    def visit() -> list[tuple[Any, ...]]:
        return query(
            migrated_database,
            "SELECT entry_path, entry_hostname, exit_path, exit_hostname FROM sessions",
        )

    run(write(migrated_database, [page("10:05", "/b", "b.multi.test")]))
    run(write(migrated_database, [page("10:00", "/a", "a.multi.test")]))  # arrives late
    assert visit() == [("/a", "a.multi.test", "/b", "b.multi.test")]
    run(write(migrated_database, [page("10:10", "/x", "x.multi.test", name="signup")]))
    assert visit() == [("/a", "a.multi.test", "/b", "b.multi.test")]  # no pageview
    run(write(migrated_database, [page("10:20", "/c", "c.multi.test")]))
    assert visit() == [("/a", "a.multi.test", "/c", "c.multi.test")]


def test_an_event_without_a_host_is_stored_with_none_and_sized_as_before(
    migrated_database: str,
) -> None:
    old = event(at("09:00"), 8, site=SITE)  # as every caller built one before 0020
    assert old.page.hostname == ""
    run(write(migrated_database, [old]))
    assert query(migrated_database, "SELECT hostname FROM events") == [("",)]
    assert query(migrated_database, "SELECT entry_hostname, exit_hostname FROM sessions") == [
        ("", "")
    ]
    # /p's hostname is its site's string (nothing more held); a Plausible page's is not.
    shared = replace(old, page=replace(old.page, hostname=old.page.site))
    own = replace(old, page=replace(old.page, hostname="blog.multi.test"))
    assert retained_bytes(shared) == retained_bytes(old)
    assert retained_bytes(own) == retained_bytes(old) + getsizeof("blog.multi.test")


# --- the query layer ----------------------------------------------------------------------

EVENT_METRICS = ("visitors", "visits", "pageviews", "events")
VISIT_METRICS = ("visitors", "visits", "pageviews", "bounces")


def plain_events(conninfo: str) -> dict[str, dict[str, Any]]:
    rows = query(
        conninfo,
        f"""SELECT hostname, count(DISTINCT visitor_id), count(DISTINCT session_id),
                   count(*) FILTER (WHERE picolytics_is_pageview(name, path)), count(*)
            FROM events WHERE site_id = (SELECT site_id FROM sites WHERE domain = %s)
              AND {COUNTED} GROUP BY hostname""",
        (SITE,),
    )
    return {row[0]: dict(zip(EVENT_METRICS, row[1:], strict=True)) for row in rows}


def plain_visits(conninfo: str, column: str) -> dict[str, dict[str, Any]]:
    rows = query(
        conninfo,
        f"""SELECT {column}, count(DISTINCT visitor_id), count(*), sum(pageviews),
                   count(*) FILTER (WHERE bounce)
            FROM sessions WHERE site_id = (SELECT site_id FROM sites WHERE domain = %s)
              AND pageviews > 0 GROUP BY 1""",
        (SITE,),
    )
    return {row[0]: dict(zip(VISIT_METRICS, row[1:], strict=True)) for row in rows}


def test_breakdowns_equal_plain_sql_on_the_stored_rows(conninfo: str) -> None:
    hosts = by_value(ask(conninfo, metrics=EVENT_METRICS, breakdown=Breakdown("hostname")))
    assert hosts == plain_events(conninfo)
    # Pageviews and custom events, not the engagement: shop has V1's signup and V3's load.
    assert hosts["shop.multi.test"] == {"visitors": 2, "visits": 2, "pageviews": 1, "events": 2}
    assert set(hosts) == {"multi.test", "blog.multi.test", "shop.multi.test", ""}
    pairs: tuple[tuple[Dimension, str], ...] = (
        ("entry_page_hostname", "entry_hostname"),
        ("exit_page_hostname", "exit_hostname"),
    )
    for dimension, column in pairs:
        found = by_value(ask(conninfo, metrics=VISIT_METRICS, breakdown=Breakdown(dimension)))
        assert found == plain_visits(conninfo, column)
    exits = by_value(ask(conninfo, metrics=("visits",), breakdown=Breakdown("exit_page_hostname")))
    assert exits == {
        "blog.multi.test": {"visits": 2},
        "multi.test": {"visits": 1},
        "": {"visits": 1},
    }


def test_filters_on_hosts_equal_plain_sql(conninfo: str) -> None:
    on_blog = Condition("hostname", "is", ("blog.multi.test",))
    visits = ask(conninfo, metrics=("visitors", "visits"), filters=on_blog)
    (expected,) = query(
        conninfo,
        """SELECT count(DISTINCT s.visitor_id), count(*) FROM sessions s
            WHERE s.pageviews > 0 AND EXISTS (
                SELECT FROM events e
                WHERE e.site_id = s.site_id AND e.session_id = s.session_id
                  AND e.hostname = 'blog.multi.test'
                  AND (picolytics_is_pageview(e.name, e.path)
                       OR picolytics_is_custom_event(e.name)))""",
    )
    assert (visits.rows[0].metrics["visitors"], visits.rows[0].metrics["visits"]) == expected
    assert expected == (2, 2)
    entered = Condition("entry_page_hostname", "is", ("multi.test",))
    pages = by_value(
        ask(conninfo, metrics=("pageviews",), breakdown=Breakdown("page"), filters=entered)
    )
    assert pages == {"/": {"pageviews": 1}, "/post": {"pageviews": 1}}


# Every shape the rollups hold for the new dimensions: plain breakdowns, a filter on the
# breakdown's own dimension, and a segment filter (its visit and event rollups).
COUNTRY_DE: Filter = Condition("country", "is", ("DE",))
ROLLED: list[dict[str, Any]] = [
    {"metrics": EVENT_METRICS, "breakdown": Breakdown("hostname")},
    {"metrics": EVENT_METRICS, "breakdown": Breakdown("hostname"), "interval": "day"},
    {
        "metrics": EVENT_METRICS,
        "breakdown": Breakdown("hostname"),
        "filters": Condition("hostname", "contains", ("blog",)),
    },
    {"metrics": VISIT_METRICS, "breakdown": Breakdown("entry_page_hostname")},
    {"metrics": VISIT_METRICS, "breakdown": Breakdown("exit_page_hostname")},
    {
        "metrics": VISIT_METRICS,
        "breakdown": Breakdown("entry_page_hostname"),
        "filters": COUNTRY_DE,
    },
    {
        "metrics": ("visitors",),
        "breakdown": Breakdown("exit_page_hostname"),
        "filters": Condition("exit_page_hostname", "is", ("multi.test",)),
    },
]


def test_the_rollups_answer_as_the_raw_rows(conninfo: str) -> None:
    raw = [ask(conninfo, rollups=False, **fields) for fields in ROLLED]
    run(_roll(conninfo))
    for fields, before in zip(ROLLED, raw, strict=True):
        after = ask(conninfo, **fields)
        assert after.rows == before.rows, fields
        assert after.path == "rollup", fields
    # A hostname breakdown on a segment: the segment's event rollups hold hosts too.
    segmented: dict[str, Any] = {
        "metrics": EVENT_METRICS,
        "breakdown": Breakdown("hostname"),
        "filters": COUNTRY_DE,
    }
    assert shape_of(Query((1,), PERIOD, **segmented)).segment == "country"
    answer = ask(conninfo, **segmented)
    assert (answer.rows, answer.path) == (ask(conninfo, rollups=False, **segmented).rows, "rollup")


def test_days_rolled_before_the_migration_answer_as_their_raw_rows(
    migrated_database: str,
) -> None:
    """Such a day has no host rows; 0020 adds its totals under '' (every old row's host)."""
    run(
        write(
            migrated_database, [event(at("10:00"), 1, site=SITE), event(at("11:00"), 2, site=SITE)]
        )
    )
    run(_roll(migrated_database))
    execute(
        migrated_database,
        "".join(
            f"DELETE FROM {table} WHERE dimension LIKE '%hostname';"
            for table in (
                "rollup_events",
                "rollup_visits",
                "rollup_segment_visits",
                "rollup_segment_events",
                "rollup_segment_splits",
            )
        ),
    )
    cases: list[dict[str, Any]] = [
        {"metrics": EVENT_METRICS, "breakdown": Breakdown("hostname")},
        {"metrics": VISIT_METRICS, "breakdown": Breakdown("entry_page_hostname")},
        {
            "metrics": VISIT_METRICS,
            "breakdown": Breakdown("exit_page_hostname"),
            "filters": COUNTRY_DE,
        },
        {"metrics": EVENT_METRICS, "breakdown": Breakdown("hostname"), "filters": COUNTRY_DE},
    ]
    raw = [ask(migrated_database, rollups=False, **fields).rows for fields in cases]
    assert all(rows and rows[0].value == "" for rows in raw)
    assert [ask(migrated_database, **fields).rows for fields in cases] != raw  # as rolled
    backfill = MIGRATION.read_text()
    backfill = backfill[backfill.index("INSERT INTO") :]
    execute(migrated_database, backfill)
    for fields, rows in zip(cases, raw, strict=True):
        answer = ask(migrated_database, **fields)
        assert (answer.rows, answer.path) == (rows, "rollup")


# --- the Stats API ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api(conninfo: str) -> tuple[TestClient, str]:
    key = api_keys.connected(conninfo, lambda c: api_keys.create(c, "hosts", ())).clear
    return TestClient(create_app(Config(api_rate_limit=0), conninfo=conninfo)), key


def v2(api: tuple[TestClient, str], **fields: Any) -> list[tuple[list[Any], list[Any]]]:
    client, key = api
    body = {"site_id": SITE, "date_range": ["2024-03-05", "2024-03-05"], **fields}
    response = client.post(
        "/api/v2/query", content=json.dumps(body), headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 200, response.text
    return [(r["dimensions"], r["metrics"]) for r in response.json()["results"]]


def v1(api: tuple[TestClient, str], endpoint: str, **params: str) -> Any:
    client, key = api
    params = {"site_id": SITE, "period": "custom", "date": "2024-03-05,2024-03-05", **params}
    response = client.get(
        f"/api/v1/stats/{endpoint}?{urlencode(params)}", headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_the_v2_api_answers_the_three_dimensions(
    api: tuple[TestClient, str], conninfo: str
) -> None:
    expected = plain_events(conninfo)
    found = v2(api, metrics=["visitors", "pageviews", "events"], dimensions=["event:hostname"])
    assert {tuple(d): m for d, m in found} == {
        (host,): [e["visitors"], e["pageviews"], e["events"]] for host, e in expected.items()
    }
    entries = v2(api, metrics=["visits", "bounce_rate"], dimensions=["visit:entry_page_hostname"])
    assert sorted(entries) == [([""], [1, 100]), (["blog.multi.test"], [1, 100]),
                               (["multi.test"], [1, 0]), (["shop.multi.test"], [1, 0])]  # fmt: skip
    exits = v2(
        api,
        metrics=["visitors"],
        dimensions=["visit:exit_page_hostname"],
        filters=[["is", "event:hostname", ["shop.multi.test"]]],
    )
    assert sorted(exits) == [(["blog.multi.test"], [1]), (["multi.test"], [1])]


def test_the_v1_api_filters_and_breaks_down_by_event_hostname(
    api: tuple[TestClient, str],
) -> None:
    answer = v1(api, "aggregate", metrics="visitors", filters="event:hostname==blog.multi.test")
    assert answer["results"]["visitors"]["value"] == 2
    answer = v1(api, "aggregate", metrics="visitors", filters="event:hostname==*.multi.test")
    assert answer["results"]["visitors"]["value"] == 3  # V1, V2, V3: not the bare host
    rows = v1(api, "breakdown", property="event:hostname", metrics="visitors,events")["results"]
    assert {row["hostname"]: (row["visitors"], row["events"]) for row in rows} == {
        "multi.test": (2, 2), "blog.multi.test": (2, 2), "shop.multi.test": (2, 2), "": (1, 1),
    }  # fmt: skip
