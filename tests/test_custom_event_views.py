"""The custom event views of migration 0004, on a known dataset, read as a member of
picolytics_reader.

Events go through `store.write_batch` (so sessions come from the real session logic).
Day D is two days ago, every event between 10:00 and 10:10 UTC; all on example.com:
  visit a (V1): load "/", signup {plan: pro, seats: 3} on "/", nav "/pricing", ping,
                visible, hidden, two engagement events on "/pricing" (20 s, 40 %
                then 15 s, 70 %), outbound {url: github} on "/pricing"
  visit b (V2): load "/", load "/pricing", signup {plan: free} and signup {plan: pro}
                on "/pricing", download {url: a.pdf} on "/pricing", engagement on
                "/pricing" (10 s, 100 %)
  visit c (V3): load "/", an in-page anchor (hashchange without a route),
                hashchange to "/#/app", newsletter (no props) on "/#/app" and on
                "/footer" (never viewed), engagement on "/" (5 s, no scroll depth)
  visit d (V4): load "/pricing"
Day D + 1: visit e (V5): load "/pricing", signup {plan: pro} on "/pricing".
Elsewhere: a visit to other.org on day D with a signup.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from helpers.database import query, reader_login
from helpers.events import event, run, write

from picolytics.events import QueuedEvent

SITE = "example.com"
OTHER_SITE = "other.org"
V1, V2, V3, V4, V5, V6 = 11, 22, 33, 44, 55, 66
GITHUB = "https://github.com/example/project"
PDF = "https://example.com/files/a.pdf"
CUSTOM_NAMES = ["download", "newsletter", "outbound", "signup"]


@dataclass(frozen=True)
class Seeded:
    conninfo: str  # as the migrating superuser
    reader: str  # as a login role that is only a member of picolytics_reader
    day: date  # day D


def dataset(day: date) -> list[QueuedEvent]:
    t = datetime.combine(day, time(10), tzinfo=UTC)
    s = timedelta(seconds=1)
    return [
        # visit a
        event(t, V1, name="load", path="/"),
        event(t + 10 * s, V1, name="signup", path="/", props={"plan": "pro", "seats": 3}),
        event(t + 20 * s, V1, name="nav", path="/pricing"),
        event(t + 30 * s, V1, name="ping", path="/pricing"),
        event(t + 40 * s, V1, name="hidden", path="/pricing"),
        event(t + 45 * s, V1, name="visible", path="/pricing"),
        event(
            t + 50 * s, V1, name="engagement", path="/pricing", engaged_ms=20_000, scroll_depth=40
        ),
        event(
            t + 55 * s, V1, name="engagement", path="/pricing", engaged_ms=15_000, scroll_depth=70
        ),
        event(t + 60 * s, V1, name="outbound", path="/pricing", props={"url": GITHUB}),
        # visit b
        event(t + 100 * s, V2, name="load", path="/"),
        event(t + 110 * s, V2, name="load", path="/pricing"),
        event(t + 120 * s, V2, name="signup", path="/pricing", props={"plan": "free"}),
        event(t + 130 * s, V2, name="signup", path="/pricing", props={"plan": "pro"}),
        event(t + 140 * s, V2, name="download", path="/pricing", props={"url": PDF}),
        event(
            t + 150 * s, V2, name="engagement", path="/pricing", engaged_ms=10_000, scroll_depth=100
        ),
        # visit c
        event(t + 200 * s, V3, name="load", path="/"),
        event(t + 210 * s, V3, name="hashchange", path="/"),  # an in-page anchor
        event(t + 220 * s, V3, name="hashchange", path="/", hash_path="#/app"),
        event(t + 230 * s, V3, name="newsletter", path="/", hash_path="#/app"),
        event(t + 240 * s, V3, name="newsletter", path="/footer"),
        event(t + 250 * s, V3, name="engagement", path="/", engaged_ms=5_000),
        # visit d
        event(t + 300 * s, V4, name="load", path="/pricing"),
        # day D + 1
        event(t + timedelta(days=1), V5, name="load", path="/pricing"),
        event(
            t + timedelta(days=1, seconds=10),
            V5,
            name="signup",
            path="/pricing",
            props={"plan": "pro"},
        ),
        # another site
        event(t + 400 * s, V6, name="load", path="/", site=OTHER_SITE),
        event(t + 410 * s, V6, name="signup", path="/", site=OTHER_SITE, props={"plan": "pro"}),
    ]


@pytest.fixture(scope="module")
def seeded(module_database: str, admin_conninfo: str) -> Iterator[Seeded]:
    day = datetime.now(UTC).date() - timedelta(days=2)
    run(write(module_database, dataset(day)))
    for reader in reader_login(admin_conninfo, module_database):
        yield Seeded(module_database, reader, day)


def read(seeded: Seeded, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """A query as the reader role: every view below must be readable by it."""
    return query(seeded.reader, sql, params)


def test_custom_events_are_every_other_name(seeded: Seeded) -> None:
    found = read(
        seeded,
        "SELECT name, path, props, url FROM custom_events WHERE site = %s ORDER BY time",
        (SITE,),
    )
    assert found == [
        ("signup", "/", {"plan": "pro", "seats": 3}, None),
        ("outbound", "/pricing", {"url": GITHUB}, GITHUB),
        ("signup", "/pricing", {"plan": "free"}, None),
        ("signup", "/pricing", {"plan": "pro"}, None),
        ("download", "/pricing", {"url": PDF}, PDF),
        ("newsletter", "/#/app", None, None),
        ("newsletter", "/footer", None, None),
        ("signup", "/pricing", {"plan": "pro"}, None),
    ]
    # Pageviews (hashchange with or without a route), housekeeping and engagement are not.
    ((names,),) = query(
        seeded.conninfo,
        "SELECT array_agg(DISTINCT name ORDER BY name) FROM events "
        "WHERE name NOT IN (SELECT name FROM custom_events)",
    )
    assert names == ["engagement", "hashchange", "hidden", "load", "nav", "ping", "visible"]


def test_custom_events_time_and_site_are_those_of_pageviews(seeded: Seeded) -> None:
    ((first, site),) = read(
        seeded, "SELECT min(time), min(site) FROM custom_events WHERE site = %s", (SITE,)
    )
    assert first == datetime.combine(seeded.day, time(10, 0, 10), tzinfo=UTC)
    assert site == SITE


def test_daily_custom_events(seeded: Seeded) -> None:
    found = read(
        seeded,
        "SELECT day, name, events, visitors, visits FROM daily_custom_events "
        "WHERE site = %s ORDER BY day, name",
        (SITE,),
    )
    d, next_day = seeded.day, seeded.day + timedelta(days=1)
    assert found == [
        (d, "download", 1, 1, 1),
        (d, "newsletter", 2, 1, 1),
        (d, "outbound", 1, 1, 1),
        (d, "signup", 3, 2, 2),  # twice in visit b
        (next_day, "signup", 1, 1, 1),
    ]
    assert read(
        seeded, "SELECT name, events FROM daily_custom_events WHERE site = %s", (OTHER_SITE,)
    ) == [("signup", 1)]


def test_custom_event_props(seeded: Seeded) -> None:
    found = read(
        seeded,
        "SELECT name, property, value, events, visitors FROM custom_event_props "
        "WHERE site = %s AND day = %s ORDER BY name, property, value",
        (SITE, seeded.day),
    )
    assert found == [
        ("download", "url", PDF, 1, 1),
        ("outbound", "url", GITHUB, 1, 1),
        ("signup", "plan", "free", 1, 1),
        ("signup", "plan", "pro", 2, 2),  # visits a and b
        ("signup", "seats", "3", 1, 1),  # a number, as text
    ]  # newsletter has no properties, so no row
    assert read(
        seeded,
        "SELECT sum(events) FROM custom_event_props WHERE site = %s AND property = 'plan'",
        (SITE,),
    ) == [(4,)]  # with day D + 1


def test_conversion_pages(seeded: Seeded) -> None:
    found = read(
        seeded,
        "SELECT day, name, path, visits, page_visits, conversion_rate FROM conversion_pages "
        "WHERE site = %s ORDER BY day, name, path",
        (SITE,),
    )
    d, next_day = seeded.day, seeded.day + timedelta(days=1)
    # "/" was viewed in visits a, b, c; "/pricing" in a, b, d; "/#/app" in c.
    assert found == [
        (d, "download", "/pricing", 1, 3, Decimal("33.3")),
        (d, "newsletter", "/#/app", 1, 1, Decimal("100.0")),
        (d, "newsletter", "/footer", 1, 1, Decimal("100.0")),  # sent from, never viewed
        (d, "outbound", "/pricing", 1, 3, Decimal("33.3")),
        (d, "signup", "/", 1, 3, Decimal("33.3")),
        (d, "signup", "/pricing", 1, 3, Decimal("33.3")),  # two signups in one visit
        (next_day, "signup", "/pricing", 1, 1, Decimal("100.0")),
    ]
    assert read(
        seeded, "SELECT name, path, visits FROM conversion_pages WHERE site = %s", (OTHER_SITE,)
    ) == [("signup", "/", 1)]


def test_conversion_pages_filters_reach_the_events_scan(seeded: Seeded) -> None:
    """A site and day filter is applied when reading `events`, not after aggregating
    every page of every site and day."""
    plan = "\n".join(
        line
        for (line,) in read(
            seeded,
            "EXPLAIN SELECT * FROM conversion_pages WHERE site = %s AND day = %s",
            (SITE, seeded.day),
        )
    )
    scans = [line for line in plan.splitlines() if "Scan on events" in line]
    assert scans
    assert plan.count("AT TIME ZONE 'UTC'::text))::date = ") >= 2  # both arms filtered
    assert plan.count("domain = 'example.com'::text") >= 2


def test_page_engagement(seeded: Seeded) -> None:
    found = read(
        seeded,
        "SELECT path, visits, visitors, avg_engaged_s, avg_scroll_depth FROM page_engagement "
        "WHERE site = %s AND day = %s ORDER BY path",
        (SITE, seeded.day),
    )
    assert found == [
        ("/", 1, 1, Decimal("5.0"), None),
        # a: 20 + 15 s, deepest 70 %; b: 10 s, 100 %
        ("/pricing", 2, 2, Decimal("22.5"), Decimal("85.0")),
    ]


def test_custom_events_do_not_change_visit_numbers(seeded: Seeded) -> None:
    found = read(
        seeded,
        "SELECT visits, pageviews, bounces FROM daily_visitors WHERE site = %s AND day = %s",
        (SITE, seeded.day),
    )
    # Visit d alone is a bounce: one pageview and no engagement.
    assert found == [(4, 7, 1)]


def test_reader_cannot_read_salts_or_session_state(seeded: Seeded) -> None:
    for table in ("daily_salts", "visitor_sessions", "schema_migrations"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            read(seeded, f"SELECT * FROM {table} LIMIT 1")


def test_properties_that_are_not_an_object_are_skipped(migrated_database: str) -> None:
    """picolytics only stores objects, but a row written by hand must not make the
    breakdown fail for everyone (jsonb_each_text raises on a scalar or an array)."""
    with psycopg.connect(migrated_database) as connection:
        connection.execute(
            "WITH site AS (INSERT INTO sites (domain) VALUES ('example.com') RETURNING site_id) "
            "INSERT INTO events (site_id, received_at, event_id, session_id, visitor_id, "
            "                    name, path, props) "
            "SELECT site_id, now(), n, 1, 1, 'outbound', '/', p "
            "FROM site, unnest(ARRAY[1, 2, 3, 4], "
            "                  ARRAY['\"pro\"', '[1]', 'null', '{\"plan\": \"pro\"}']::jsonb[]) "
            "     AS u (n, p)"
        )
    assert query(migrated_database, "SELECT property, value, events FROM custom_event_props") == [
        ("plan", "pro", 1)
    ]
    assert query(migrated_database, "SELECT count(*), count(url) FROM custom_events") == [(4, 0)]
