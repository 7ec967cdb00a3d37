"""Breakdowns by two unrelated dimensions (issue #18): `Breakdown(..., then=...)` in
the query layer, from raw rows only, checked against plain SQL over `sessions` and
`events`; and Plausible's v2 queries with two dimensions besides time, over HTTP.

The dataset, site pairs.test (UTC), April 2024, written by the real batch writer and
rolled up (so a pair reading rollups would show):

  visit visitor events                                          source       device, country
  V1    1       1st 09:00 load /, 09:01 nav /pricing,           google.com   desktop, DE
                09:02 signup /pricing {plan: pro}
  V2    2       1st 10:00 load /pricing, 10:01 signup {free}    google.com   mobile, US
  V3    3       1st 11:00 load / on shop.pairs.test             (direct)     desktop, DE
  V4    5       1st 23:50 load /blog, 2nd 00:05 nav /blog/post  (direct)     desktop, DE
  V5    1       2nd 09:00 load /, 09:01 signup / {plan: pro}    news.test    desktop, DE
  -     4       2nd 12:00 visible /, 12:01 signup {plan: pro}   no pageview: no visit
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime
from typing import Any

import pytest
from helpers.database import query
from helpers.events import event, run, write
from psycopg import AsyncConnection
from starlette.testclient import TestClient

from picolytics.config import Config
from picolytics.dimensions import Metric
from picolytics.errors import QueryError
from picolytics.events import Agent, Location, QueuedEvent
from picolytics.serve.app import create_app
from picolytics.stats.engine import run as run_query
from picolytics.stats.query import Breakdown, Condition, Period, Query, Result
from picolytics.stats.validate import validate
from picolytics.storage import api_keys
from picolytics.storage.rollup import roll_day

SITE = "pairs.test"
DAYS = (date(2024, 4, 1), date(2024, 4, 2))
PERIOD = Period(datetime(2024, 4, 1, tzinfo=UTC), datetime(2024, 4, 3, tzinfo=UTC))
US = Location("US", "Illinois", "Springfield")
MOBILE = Agent("Chrome Mobile", "120", "Android", "14", "mobile", None)
COUNTED = "(picolytics_is_pageview(e.name, e.path) OR picolytics_is_custom_event(e.name))"
SOURCE = (
    "CASE WHEN s.utm_source <> '' THEN s.utm_source"
    " WHEN s.referrer_host <> '' THEN s.referrer_host ELSE '(direct)' END"
)


def at(text: str) -> datetime:
    return datetime.fromisoformat(f"2024-04-0{text}").replace(tzinfo=UTC)


def dataset() -> list[QueuedEvent]:
    def ev(when: str, visitor: int, hostname: str = SITE, **fields: Any) -> QueuedEvent:
        return event(at(when), visitor, site=SITE, hostname=hostname, **fields)

    google = {"referrer_host": "google.com"}
    return [
        ev("1 09:00", 1, path="/", **google),
        ev("1 09:01", 1, name="nav", path="/pricing", **google),
        ev("1 09:02", 1, name="signup", path="/pricing", props={"plan": "pro"}),
        replace(ev("1 10:00", 2, path="/pricing", **google), location=US, agent=MOBILE),
        replace(
            ev("1 10:01", 2, name="signup", path="/pricing", props={"plan": "free"}),
            location=US,
            agent=MOBILE,
        ),
        ev("1 11:00", 3, path="/", hostname=f"shop.{SITE}"),
        ev("1 23:50", 5, path="/blog"),
        ev("2 00:05", 5, name="nav", path="/blog/post"),
        ev("2 09:00", 1, path="/", referrer_host="news.test"),
        ev("2 09:01", 1, name="signup", path="/", props={"plan": "pro"}),
        ev("2 12:00", 4, name="visible", path="/"),
        ev("2 12:01", 4, name="signup", path="/", props={"plan": "pro"}),
    ]


async def _roll(conninfo: str) -> None:
    async with await AsyncConnection.connect(conninfo, autocommit=True) as connection:
        for day in DAYS:
            await roll_day(connection, site_id(conninfo), day, "UTC")


def site_id(conninfo: str) -> int:
    return int(query(conninfo, "SELECT site_id FROM sites WHERE domain = %s", (SITE,))[0][0])


@pytest.fixture(scope="module")
def conninfo(module_database: str) -> str:
    run(write(module_database, dataset()))
    run(_roll(module_database))
    return module_database


def ask(conninfo: str, **fields: Any) -> Result:
    async def go() -> Result:
        async with await AsyncConnection.connect(conninfo) as connection:
            found = Query(site_ids=(site_id(conninfo),), period=PERIOD, **fields)
            return await run_query(connection, found)

    return run(go())


Keyed = dict[tuple[Any, ...], tuple[Any, ...]]


def keyed(result: Result, metrics: tuple[Metric, ...], with_time: bool = False) -> Keyed:
    return {
        ((row.time,) if with_time else ()) + (row.value, row.parent): tuple(
            row.metrics[m] for m in metrics
        )
        for row in result.rows
    }


def plain(conninfo: str, sql: str, width: int) -> Keyed:
    """Rows of plain SQL whose first `width` columns are the key."""
    return {tuple(r[:width]): tuple(r[width:]) for r in query(conninfo, sql, (SITE,))}


# --- the query layer against plain SQL --------------------------------------------------


VISITS = f"""
SELECT {{keys}},
       count(DISTINCT (s.started_at::date, s.visitor_id))::int, count(*)::int,
       sum(s.pageviews)::int, sum(coalesce(ev.n, 0))::int,
       round(100.0 * count(*) FILTER (WHERE s.bounce) / count(*), 1)::float,
       round(sum(s.duration_s)::numeric / count(*), 1)::float
FROM sessions s
JOIN sites USING (site_id)
LEFT JOIN (SELECT e.session_id, count(*) AS n FROM events e WHERE {COUNTED}
           GROUP BY 1) ev USING (session_id)
WHERE sites.domain = %s AND s.pageviews > 0 {{where}}
GROUP BY {{group}}
"""
VISIT_METRICS: tuple[Metric, ...] = (
    "visitors",
    "visits",
    "pageviews",
    "events",
    "bounce_rate",
    "visit_duration",
)


def test_visit_by_visit_equals_plain_sql_and_reads_raw_rows(conninfo: str) -> None:
    pair = Breakdown("source", then=Breakdown("device"))
    found = ask(conninfo, metrics=VISIT_METRICS, breakdown=pair)
    expected = plain(
        conninfo, VISITS.format(keys=f"{SOURCE}, s.device_type", where="", group="1, 2"), 2
    )
    assert keyed(found, VISIT_METRICS) == expected
    # Visitor 1 came from google.com on the 1st and from news.test on the 2nd.
    assert expected[("google.com", "desktop")][:3] == (1, 1, 2)
    assert ("news.test", "desktop") in expected
    assert found.path == "raw" and found.total_rows == len(expected) == 4
    # The same dimension alone reads the rollups of those days.
    assert ask(conninfo, metrics=("visitors",), breakdown=Breakdown("source")).path == "rollup"


def test_visit_by_visit_per_day_with_an_event_filter(conninfo: str) -> None:
    # Visits that had a pageview of "/": per day, visitors add up over days.
    pair = Breakdown("device", then=Breakdown("country"))
    home = Condition("page", "is", ("/",))
    found = ask(conninfo, metrics=VISIT_METRICS, breakdown=pair, filters=home, interval="day")
    where = """AND EXISTS (SELECT 1 FROM events e WHERE e.session_id = s.session_id
                  AND picolytics_is_pageview(e.name, e.path) AND e.path = '/')"""
    sql = VISITS.format(
        keys="s.started_at::date, s.device_type, s.country", where=where, group="1, 2, 3"
    )
    expected = plain(conninfo, sql, 3)
    assert keyed(found, VISIT_METRICS, with_time=True) == expected
    assert set(expected) == {
        (DAYS[0], "desktop", "DE"),  # V1, V3
        (DAYS[1], "desktop", "DE"),  # V5
    }
    assert expected[(DAYS[0], "desktop", "DE")][:2] == (2, 2)


EVENTS = """
SELECT {keys},
       count(DISTINCT (e.received_at::date, e.visitor_id))::int,
       count(DISTINCT (e.received_at::date, e.session_id))::int,
       count(*) FILTER (WHERE picolytics_is_pageview(e.name, e.path))::int, count(*)::int
FROM events e
JOIN sites USING (site_id)
{join}
WHERE sites.domain = %s AND {rows}
GROUP BY {group}
"""
EVENT_METRICS: tuple[Metric, ...] = ("visitors", "visits", "pageviews", "events")
OF_VISIT = "JOIN sessions s ON s.session_id = e.session_id AND s.pageviews > 0"


def test_event_by_visit_equals_plain_sql_both_ways_round(conninfo: str) -> None:
    desktop = Condition("device", "is", ("desktop",))
    sql = EVENTS.format(
        keys="e.path, s.country",
        join=OF_VISIT,
        rows="picolytics_is_pageview(e.name, e.path) AND s.device_type = 'desktop'",
        group="1, 2",
    )
    expected = plain(conninfo, sql, 2)
    pair = Breakdown("page", then=Breakdown("country"))
    found = ask(conninfo, metrics=EVENT_METRICS, breakdown=pair, filters=desktop)
    assert keyed(found, EVENT_METRICS) == expected
    # V1 and V5 (visitor 1, on two days) and V3 viewed "/" on desktops in DE.
    assert expected[("/", "DE")] == (3, 3, 3, 3)
    assert ("/pricing", "US") not in expected  # a mobile visit
    swapped = ask(
        conninfo,
        metrics=EVENT_METRICS,
        breakdown=Breakdown("country", then=Breakdown("page")),
        filters=desktop,
    )
    assert keyed(swapped, EVENT_METRICS) == {(c, p): m for (p, c), m in expected.items()}


def test_an_event_dimension_with_a_visit_dimension_leaves_out_non_visits(conninfo: str) -> None:
    pair = Breakdown("event", then=Breakdown("source"))
    found = ask(conninfo, metrics=EVENT_METRICS, breakdown=pair, interval="day")
    sql = EVENTS.format(
        keys=f"e.received_at::date, e.name, {SOURCE}",
        join=OF_VISIT,
        rows="picolytics_is_custom_event(e.name)",
        group="1, 2, 3",
    )
    expected = plain(conninfo, sql, 3)
    assert keyed(found, EVENT_METRICS, with_time=True) == expected
    # Visitor 4's signup has no visit, so no source: on the 2nd only visitor 1's.
    assert expected[(DAYS[1], "signup", "news.test")] == (1, 1, 0, 1)
    assert len([k for k in expected if k[0] == DAYS[1]]) == 1


def test_event_by_event_equals_plain_sql(conninfo: str) -> None:
    # A custom event's name and property: every such event, of a visit or not.
    found = ask(
        conninfo,
        metrics=EVENT_METRICS,
        breakdown=Breakdown("event", then=Breakdown("prop", "plan")),
    )
    sql = EVENTS.format(
        keys="e.name, e.props ->> 'plan'",
        join="",
        rows="picolytics_is_custom_event(e.name) AND e.props ? 'plan'",
        group="1, 2",
    )
    expected = plain(conninfo, sql, 2)
    assert keyed(found, EVENT_METRICS) == expected
    assert expected[("signup", "pro")][:2] == (3, 3)  # 1 on both days, and 4
    # Pages by host, hourly, filtered on a visit dimension.
    google = Condition("source", "is", ("google.com",))
    found = ask(
        conninfo,
        metrics=EVENT_METRICS,
        breakdown=Breakdown("hostname", then=Breakdown("page")),
        filters=google,
        interval="hour",
    )
    sql = EVENTS.format(
        keys="date_trunc('hour', e.received_at AT TIME ZONE 'UTC'), e.hostname, e.path",
        join=OF_VISIT,
        # A page's rows are its pageviews (dimensions.EVENT_ROWS), of any host.
        rows=f"picolytics_is_pageview(e.name, e.path) AND {SOURCE} = 'google.com'",
        group="1, 2, 3",
    )
    expected = plain(conninfo, sql, 3)
    assert keyed(found, EVENT_METRICS, with_time=True) == expected
    assert len(expected) == 3  # 09h: / and /pricing; 10h: /pricing


def test_rows_are_ordered_as_asked_ties_by_value_then_parent(conninfo: str) -> None:
    pair = Breakdown("page", then=Breakdown("device"))
    everything = ask(conninfo, metrics=("visitors",), breakdown=pair)
    keys = [(r.value, r.parent) for r in everything.rows]
    counts = {(r.value, r.parent): int(r.metrics["visitors"] or 0) for r in everything.rows}
    # The default: the first metric descending, then the value, then the parent.
    assert keys == sorted(keys, key=lambda k: (-counts[k], k[0], k[1]))
    assert ("/pricing", "desktop") in keys and ("/pricing", "mobile") in keys
    assert len(set(counts.values())) > 1  # the metric orders, not the ties alone
    by_then = ask(conninfo, metrics=("visitors",), breakdown=pair, order_by=(("then", "desc"),))
    by_value = sorted(keys)  # ties of order_by: the value, then the parent, ascending
    assert [(r.value, r.parent) for r in by_then.rows] == sorted(
        by_value, key=lambda k: k[1], reverse=True
    )
    assert by_then.rows[0].parent == "mobile"
    page = ask(conninfo, metrics=("visitors",), breakdown=pair, limit=2, offset=1)
    assert [(r.value, r.parent) for r in page.rows] == keys[1:3]
    assert page.total_rows == len(keys)


def _query(breakdown: Breakdown, **fields: Any) -> Query:
    return Query(site_ids=(1,), period=PERIOD, metrics=("visitors",), breakdown=breakdown, **fields)


@pytest.mark.parametrize(
    ("bad", "field", "words"),
    [
        (_query(Breakdown("goal", then=Breakdown("source"))), "breakdown.then", "goal"),
        (_query(Breakdown("source", then=Breakdown("goal"))), "breakdown.then", "goal"),
        (_query(Breakdown("source", then=Breakdown("source"))), "breakdown.then", "already"),
        (
            _query(Breakdown("prop", "a", then=Breakdown("prop", "a"))),
            "breakdown.then",
            "already",
        ),
        (_query(Breakdown("source", then=Breakdown("prop"))), "breakdown.then.prop_key", "key"),
        (
            _query(Breakdown("source", then=Breakdown("device", then=Breakdown("os")))),
            "breakdown.then",
            "two dimensions at most",
        ),
        (_query(Breakdown("city", then=Breakdown("source"))), "breakdown.then", "country"),
        (_query(Breakdown("source", then=Breakdown("os_version"))), "breakdown.then", "os"),
        (_query(Breakdown("page", then=Breakdown("event"))), "breakdown.then", "no event"),
        (
            _query(Breakdown("source", then=Breakdown("device")), include_imports=True),
            "include_imports",
            "imported",
        ),
        (
            replace(_query(Breakdown("source", then=Breakdown("page"))), metrics=("bounce_rate",)),
            "metrics",
            "page counts events",
        ),
        (
            replace(_query(Breakdown("page", then=Breakdown("device"))), metrics=("time_on_page",)),
            "metrics",
            "page and device",
        ),
        (_query(Breakdown("source"), order_by=(("then", "asc"),)), "order_by", "two dimensions"),
    ],
)
def test_bad_pairs_are_refused_naming_the_field(bad: Query, field: str, words: str) -> None:
    with pytest.raises(QueryError) as refused:
        validate(bad)
    assert refused.value.field == field
    assert words in str(refused.value)


def test_a_valid_pair_passes_validation() -> None:
    # The refusals above are of the pair, not of every pair.
    validate(_query(Breakdown("source", then=Breakdown("device")), order_by=(("then", "asc"),)))
    validate(replace(_query(Breakdown("page", then=Breakdown("device"))), metrics=("visits",)))


# --- the Stats API v2 ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(conninfo: str) -> TestClient:
    return TestClient(create_app(Config(api_rate_limit=0), conninfo=conninfo))


@pytest.fixture(scope="module")
def key(conninfo: str) -> str:
    return api_keys.connected(conninfo, lambda c: api_keys.create(c, "pairs", ())).clear


def post(client: TestClient, key: str, **fields: Any) -> Any:
    body = {"site_id": SITE, "metrics": ["visitors"], "date_range": ["2024-04-01", "2024-04-02"]}
    return client.post(
        "/api/v2/query", json={**body, **fields}, headers={"Authorization": f"Bearer {key}"}
    )


def results(client: TestClient, key: str, **fields: Any) -> list[tuple[list[Any], list[Any]]]:
    response = post(client, key, **fields)
    assert response.status_code == 200, response.text
    return [(r["dimensions"], r["metrics"]) for r in response.json()["results"]]


def test_api_answers_two_dimensions_in_the_order_given(client: TestClient, key: str) -> None:
    metrics = ["visitors", "visits", "pageviews"]
    first = results(client, key, metrics=metrics, dimensions=["visit:source", "visit:device"])
    assert sorted(first) == [
        (["Direct / None", "Desktop"], [2, 2, 3]),
        (["google.com", "Desktop"], [1, 1, 2]),
        (["google.com", "Mobile"], [1, 1, 1]),
        (["news.test", "Desktop"], [1, 1, 1]),
    ]
    swapped = results(client, key, metrics=metrics, dimensions=["visit:device", "visit:source"])
    assert sorted(swapped) == sorted(([b, a], m) for (a, b), m in first)
    # Plausible's pagination-query.json: two campaign dimensions (every visit: no tags).
    tags = results(client, key, dimensions=["visit:utm_medium", "visit:utm_source"])
    assert tags == [(["(not set)", "(not set)"], [5])]


def test_api_an_event_and_a_visit_dimension_with_time_between(client: TestClient, key: str) -> None:
    found = results(
        client,
        key,
        metrics=["visitors", "pageviews"],
        dimensions=["event:page", "time:day", "visit:country"],
        filters=[["is", "visit:device", ["Desktop"]]],
        order_by=[["visit:country", "asc"], ["event:page", "desc"]],
    )
    assert found == [
        (["/pricing", "2024-04-01", "DE"], [1, 1]),
        (["/blog/post", "2024-04-02", "DE"], [1, 1]),
        (["/blog", "2024-04-01", "DE"], [1, 1]),
        (["/", "2024-04-01", "DE"], [2, 2]),
        (["/", "2024-04-02", "DE"], [1, 1]),
    ]


def test_api_orders_by_either_dimension(client: TestClient, key: str) -> None:
    dimensions = ["visit:country", "event:page"]
    by_page = results(client, key, dimensions=dimensions, order_by=[["event:page", "desc"]])
    pages = [d[1] for d, _ in by_page]
    assert pages == sorted(pages, reverse=True)
    by_country = results(client, key, dimensions=dimensions, order_by=[["visit:country", "desc"]])
    assert by_country[0][0][0] == "US"
    # Ties by the first dimension, then the second, ascending.
    assert [d for d, _ in by_country][1:] == sorted(d for d, _ in by_country[1:])


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"dimensions": ["event:goal", "visit:source"]},
            "#/dimensions/1: Not supported yet by picolytics: event:goal with another dimension",
        ),
        (
            {"dimensions": ["visit:source", "visit:device", "visit:country"]},
            "#/dimensions/2: Not supported yet by picolytics: one dimension too many",
        ),
        (
            {"metrics": ["bounce_rate"], "dimensions": ["event:page", "visit:device"]},
            "#/dimensions/1: Not supported yet by picolytics: bounce_rate by event:page",
        ),
        (
            {"dimensions": ["visit:source", "visit:device"], "include": {"imports": True}},
            "#/dimensions/1: Not supported yet by picolytics: include.imports",
        ),
        (
            {"dimensions": ["visit:city_name", "visit:source"]},
            "#/dimensions/1: Not supported yet by picolytics: visit:city_name with a dimension",
        ),
        (
            {"dimensions": ["event:page", "event:props:plan"]},
            "#/dimensions/1: Not supported yet by picolytics: event:page with a custom event",
        ),
        (
            {"dimensions": ["event:name", "visit:source"]},
            "#/dimensions/1: Not supported yet by picolytics: event:name with another",
        ),
    ],
)
def test_api_refuses_pairs_it_cannot_answer(
    client: TestClient, key: str, fields: dict[str, Any], message: str
) -> None:
    response = post(client, key, **fields)
    assert response.status_code == 400, response.text
    assert response.json()["error"].startswith(message)
