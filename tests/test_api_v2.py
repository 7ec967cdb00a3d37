"""POST /api/v2/query over HTTP (api/v2_endpoint.py, v2_translate.py, v2_response.py),
through the real app (serve/app.py) on a real database.

The dataset is written through the real batch writer and rolled up; every number is
counted by hand from DATASET with the definitions of docs/read-model.md. Request bodies
marked "docs example" follow Plausible's published examples (plausible/docs,
src/js/apiv2-examples/*-query.json) on our dataset's dates, and are checked against the
shapes of the published answers (*-response.json).

Site example.com (UTC), January 2024 (the 10th is a Wednesday), times in UTC:

  visit visitor events                                       source         notes
  V1    1       10th 09:00 load /, 09:01 nav /pricing,       google.com     Chrome, DE Berlin
                09:02 signup /pricing {plan: pro}
  V2    2       10th 15:00 load /pricing                     news (email)   bounce
  V3    3       11th 10:00 load /, 10:00:30 signup / {plan:  (direct)       US Springfield
                free}
  V4    4       11th 12:00 load /blog                        news.yc...     Firefox, bounce
  V5    5       12th 08:00 load /docs, 08:02 nav /docs/api   (direct)       Firefox

Visitors 5, visits 5, pageviews 7, events 9, bounces 2 (40 %), durations 120 + 30 +
120 = 270 s (54 s a visit), 1.4 pageviews a visit. Site other.test has one visit on the
10th; berlin.example (Europe/Berlin) one on the 10th; recent.test one yesterday and
one today (UTC), for the date ranges relative to now. The sites with goals (shop.test,
and two of Plausible's own tests) are in March: see `goal_dataset`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import pytest
from helpers.database import new_database, query
from helpers.events import event, run, write
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import AsyncConnection
from starlette.testclient import TestClient

from picolytics.api import auth
from picolytics.config import Config
from picolytics.enrich.channels import channel_of
from picolytics.events import Agent, Location, QueuedEvent
from picolytics.serve.app import create_app
from picolytics.stats.engine import run as run_query
from picolytics.stats.query import And, Breakdown, Condition, Filter, Period, Query, Result
from picolytics.storage import api_keys, goals, migrate
from picolytics.storage.rollup import roll_day

A, B, BERLIN, RECENT = "example.com", "other.test", "berlin.example", "recent.test"
US = Location("US", "Illinois", "Springfield")
FIREFOX = Agent("Firefox", "121", "Linux", "", "desktop", None)
URL = "/api/v2/query"
RANGE = ["2024-01-10", "2024-01-12"]


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def dataset(today: date) -> list[QueuedEvent]:
    d1, d2, d3 = "2024-01-10", "2024-01-11", "2024-01-12"
    yesterday = datetime.combine(today - timedelta(days=1), datetime.min.time(), UTC)
    return [
        event(at(f"{d1} 09:00"), 1, path="/", referrer_host="google.com"),
        event(at(f"{d1} 09:01"), 1, name="nav", path="/pricing", referrer_host="google.com"),
        event(at(f"{d1} 09:02"), 1, name="signup", path="/pricing", props={"plan": "pro"}),
        event(at(f"{d1} 15:00"), 2, path="/pricing", utm_source="news", utm_medium="email"),
        replace(event(at(f"{d2} 10:00"), 3, path="/"), location=US),
        replace(
            event(at(f"{d2} 10:00:30"), 3, name="signup", path="/", props={"plan": "free"}),
            location=US,
        ),
        replace(
            event(at(f"{d2} 12:00"), 4, path="/blog", referrer_host="news.ycombinator.com"),
            agent=FIREFOX,
        ),
        replace(event(at(f"{d3} 08:00"), 5, path="/docs"), agent=FIREFOX),
        replace(event(at(f"{d3} 08:02"), 5, name="nav", path="/docs/api"), agent=FIREFOX),
        event(at(f"{d1} 11:00"), 9, path="/", site=B),
        event(at(f"{d1} 11:00"), 9, path="/", site=BERLIN),
        event(yesterday + timedelta(hours=12), 7, path="/", site=RECENT),
        event(datetime.now(UTC) - timedelta(seconds=5), 8, path="/", site=RECENT),
    ]


def with_channels(events: list[QueuedEvent]) -> list[QueuedEvent]:
    """The events with the channel that ingest gives each (enrich/channels.py)."""
    return [
        replace(e, channel=channel_of(p.utm_source, p.utm_medium, p.utm_campaign, p.referrer_host))
        for e in events
        for p in (e.page,)
    ]


@dataclass(frozen=True)
class Env:
    conninfo: str
    key: str  # reads every site
    scoped: str  # reads other.test only
    revoked: str


def create_key(conninfo: str, name: str, *sites: str) -> str:
    return api_keys.connected(conninfo, lambda c: api_keys.create(c, name, sites)).clear


async def _roll(conninfo: str) -> None:
    """January 2024 rolled up, each site in its zone (recent.test is left raw)."""
    days = [date(2024, 1, 1) + timedelta(days=n) for n in range(31)]
    async with await AsyncConnection.connect(conninfo, autocommit=True) as connection:
        zone = "UPDATE sites SET timezone = 'Europe/Berlin' WHERE domain = %s"
        await connection.execute(zone, (BERLIN,))
        cursor = await connection.execute(
            "SELECT site_id, timezone FROM sites WHERE domain <> %s", (RECENT,)
        )
        for site_id, timezone in await cursor.fetchall():
            for day in days:
                await roll_day(connection, site_id, day, timezone)


@pytest.fixture(scope="module")
def env(module_database: str) -> Env:
    run(write(module_database, with_channels(dataset(datetime.now(UTC).date()))))
    run(_roll(module_database))
    revoked = create_key(module_database, "revoked")
    api_keys.connected(module_database, lambda c: api_keys.revoke(c, "revoked"))
    return Env(
        module_database,
        create_key(module_database, "all"),
        create_key(module_database, "scoped", B),
        revoked,
    )


@pytest.fixture(scope="module")
def client(env: Env) -> TestClient:
    return TestClient(create_app(Config(api_rate_limit=0), conninfo=env.conninfo))


def post(client: TestClient, key: str | None, body: object) -> Any:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(URL, content=content, headers=headers)


def ok(client: TestClient, env: Env, body: dict[str, Any]) -> dict[str, Any]:
    response = post(client, env.key, body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def refused(client: TestClient, env: Env, body: object, status: int = 400) -> str:
    response = post(client, env.key, body)
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error"}
    message: str = response.json()["error"]
    return message


def rows(answer: dict[str, Any]) -> list[tuple[list[Any], list[Any]]]:
    return [(r["dimensions"], r["metrics"]) for r in answer["results"]]


def body(**fields: Any) -> dict[str, Any]:
    return {"site_id": A, "metrics": ["visitors"], "date_range": RANGE, **fields}


# --- Plausible's published examples, with their answers' shapes ------------------------------


def test_docs_example_aggregate(client: TestClient, env: Env) -> None:
    # docs example: aggregate-query.json / aggregate-response.json
    answer = ok(client, env, body(metrics=["visitors", "events"]))
    assert answer == {
        "results": [{"dimensions": [], "metrics": [5, 9]}],
        "meta": {},
        "query": {
            "site_id": A,
            "metrics": ["visitors", "events"],
            "date_range": ["2024-01-10T00:00:00+00:00", "2024-01-12T23:59:59+00:00"],
            "filters": [],
            "dimensions": [],
            "order_by": [["visitors", "desc"]],
            "include": {},
            "pagination": {"offset": 0, "limit": 10000},
        },
    }
    assert list(answer) == ["results", "meta", "query"]


def test_every_metric_with_plausibles_numbers(client: TestClient, env: Env) -> None:
    metrics = [
        "visitors", "visits", "pageviews", "views_per_visit", "bounce_rate", "visit_duration",
        "events",
    ]  # fmt: skip
    answer = ok(client, env, body(metrics=metrics))
    # Integers as Plausible gives them: bounce_rate in whole percent, visit_duration in s.
    assert rows(answer) == [([], [5, 5, 7, 1.4, 40, 54, 9])]
    values = answer["results"][0]["metrics"]
    assert [type(v) for v in values] == [int, int, int, float, int, int, int]
    nothing = ok(client, env, body(metrics=metrics, date_range=["2023-01-01", "2023-01-02"]))
    assert rows(nothing) == [([], [0, 0, 0, 0.0, 0, 0, 0])]


def test_docs_example_timeseries_with_time_labels(client: TestClient, env: Env) -> None:
    # docs examples: timeseries-query.json, time-labels-query.json
    answer = ok(
        client,
        env,
        body(
            metrics=["visitors", "events"],
            date_range=["2024-01-09", "2024-01-12"],
            filters=[["is", "visit:browser", ["Chrome", "Safari"]]],
            dimensions=["time:day"],
            include={"time_labels": True},
        ),
    )
    assert rows(answer) == [(["2024-01-10"], [2, 4]), (["2024-01-11"], [1, 2])]
    assert answer["meta"] == {
        "time_labels": ["2024-01-09", "2024-01-10", "2024-01-11", "2024-01-12"]
    }
    assert answer["query"]["order_by"] == [["time:day", "asc"], ["visitors", "desc"]]
    assert answer["query"]["include"] == {"time_labels": True}
    assert answer["query"]["filters"] == [["is", "visit:browser", ["Chrome", "Safari"]]]


def test_hours_weeks_months_and_the_plain_time_dimension(client: TestClient, env: Env) -> None:
    hours = ok(
        client,
        env,
        body(date_range=["2024-01-10", "2024-01-10"], dimensions=["time:hour"],
             include={"time_labels": True}),
    )  # fmt: skip
    assert rows(hours) == [(["2024-01-10 09:00:00"], [1]), (["2024-01-10 15:00:00"], [1])]
    labels = hours["meta"]["time_labels"]
    assert labels == [f"2024-01-10 {hour:02}:00:00" for hour in range(24)]
    # A week starting before the period is labelled with the period's first day.
    weeks = ok(
        client,
        env,
        body(date_range=["2024-01-10", "2024-01-20"], dimensions=["time:week"],
             include={"time_labels": True}),
    )  # fmt: skip
    assert rows(weeks) == [(["2024-01-10"], [5])]
    assert weeks["meta"]["time_labels"] == ["2024-01-10", "2024-01-15"]
    months = ok(
        client,
        env,
        body(date_range=["2023-12-20", "2024-02-03"], dimensions=["time:month"],
             include={"time_labels": True}),
    )  # fmt: skip
    assert rows(months) == [(["2024-01-01"], [5])]
    assert months["meta"]["time_labels"] == ["2023-12-01", "2024-01-01", "2024-02-01"]
    plain = ok(client, env, body(dimensions=["time"], order_by=[["time", "desc"]]))
    assert rows(plain) == [(["2024-01-12"], [1]), (["2024-01-11"], [2]), (["2024-01-10"], [2])]
    assert plain["query"]["dimensions"] == ["time:day"]
    assert plain["query"]["order_by"] == [["time:day", "desc"]]


def test_breakdown_by_source_with_pagination(client: TestClient, env: Env) -> None:
    # docs example: pagination-query.json (by visit:source, which one breakdown answers)
    every = ok(client, env, body(dimensions=["visit:source"]))
    assert rows(every) == [
        (["Direct / None"], [2]),
        (["google.com"], [1]),
        (["news"], [1]),
        (["news.ycombinator.com"], [1]),
    ]
    page = ok(
        client,
        env,
        body(
            metrics=["visitors", "events", "pageviews"],
            dimensions=["visit:source"],
            include={"total_rows": True},
            pagination={"limit": 2, "offset": 1},
        ),
    )
    assert rows(page) == [(["google.com"], [1, 3, 2]), (["news"], [1, 1, 1])]
    assert page["meta"] == {"total_rows": 4}
    assert page["query"]["pagination"] == {"offset": 1, "limit": 2}
    assert page["query"]["include"] == {"total_rows": True}


def test_breakdown_by_channel(client: TestClient, env: Env) -> None:
    # V1 google.com, V2 utm_medium=email, V3 and V5 nothing, V4 news.ycombinator.com.
    metrics = ["visitors", "visits", "pageviews", "bounce_rate"]
    answer = ok(client, env, body(metrics=metrics, dimensions=["visit:channel"]))
    assert rows(answer) == [
        (["Direct"], [2, 2, 3, 0]),
        (["Email"], [1, 1, 1, 100]),
        (["Organic Search"], [1, 1, 2, 0]),
        (["Organic Social"], [1, 1, 1, 100]),
    ]
    # Filters by channel, and a breakdown of one channel by source (Plausible's drilldown).
    social = ["is", "visit:channel", ["Organic Social", "Organic Search"]]
    answer = ok(client, env, body(dimensions=["visit:source"], filters=[social]))
    assert rows(answer) == [(["google.com"], [1]), (["news.ycombinator.com"], [1])]
    direct = ["is_not", "visit:channel", ["Direct"]]
    assert rows(ok(client, env, body(filters=[direct]))) == [([], [3])]
    # By day: these days are rolled up (`_roll`), so this reads the channel's rollup rows.
    days = ok(client, env, body(dimensions=["time:day", "visit:channel"]))
    assert rows(days) == [
        (["2024-01-10", "Email"], [1]),
        (["2024-01-10", "Organic Search"], [1]),
        (["2024-01-11", "Direct"], [1]),
        (["2024-01-11", "Organic Social"], [1]),
        (["2024-01-12", "Direct"], [1]),
    ]


def test_docs_example_filters(client: TestClient, env: Env) -> None:
    # docs example: filtering-basics-query.json
    basics = [
        ["contains", "event:page", ["/docs", "/pricing"]],
        [
            "or",
            [
                ["not", ["is", "visit:utm_campaign", ["Referral"]]],
                ["is", "visit:country", ["US"]],
            ],
        ],
    ]
    answer = ok(client, env, body(filters=basics))
    assert rows(answer) == [([], [3])]  # V1, V2 (/pricing), V5 (/docs)
    assert answer["query"]["filters"] == basics
    # docs example: filtering-case-insensitive-query.json
    insensitive = [["contains", "event:page", ["PRICING"], {"case_sensitive": False}]]
    answer = ok(client, env, body(filters=insensitive))
    assert rows(answer) == [([], [2])]
    assert answer["query"]["filters"] == insensitive
    assert rows(ok(client, env, body(filters=[["contains", "event:page", ["PRICING"]]]))) == [
        ([], [0])
    ]
    # Plausible's names of empty values and devices are read as ours.
    for condition, visitors in [
        (["is", "visit:source", ["Direct / None"]], 2),
        (["is_not", "visit:utm_medium", ["(not set)"]], 1),
        (["is", "visit:device", ["Desktop"]], 5),
        (["matches", "event:page", ["^/d"]], 1),
        (["is", "event:props:plan", ["pro", "free"]], 2),
        (["not", ["is", "visit:country", ["DE"]]], 1),
    ]:
        assert rows(ok(client, env, body(filters=[condition]))) == [([], [visitors])], condition


def test_docs_example_custom_properties(client: TestClient, env: Env) -> None:
    # docs example: custom-properties-query.json
    answer = ok(
        client,
        env,
        body(
            dimensions=["time:day", "event:props:plan"],
            order_by=[["time:day", "asc"], ["event:props:plan", "desc"]],
        ),
    )
    assert rows(answer) == [(["2024-01-10", "pro"], [1]), (["2024-01-11", "free"], [1])]
    assert answer["query"]["order_by"] == [["time:day", "asc"], ["event:props:plan", "desc"]]


def test_docs_example_country_and_city(client: TestClient, env: Env) -> None:
    # docs example: country-and-city-query.json, with the country's code (we store codes)
    answer = ok(
        client,
        env,
        body(
            metrics=["visitors", "pageviews", "bounce_rate"],
            filters=[["is_not", "visit:country", ["ZZ"]]],
            dimensions=["visit:country", "visit:city_name"],
        ),
    )
    assert rows(answer) == [(["DE", "Berlin"], [4, 6, 50]), (["US", "Springfield"], [1, 1, 0])]
    flipped = ok(client, env, body(dimensions=["visit:city_name", "visit:country"]))
    assert rows(flipped) == [(["Berlin", "DE"], [4]), (["Springfield", "US"], [1])]


def test_percentage_devices_and_not_set(client: TestClient, env: Env) -> None:
    shares = ok(client, env, body(metrics=["visitors", "percentage"], dimensions=["visit:browser"]))
    assert rows(shares) == [(["Chrome"], [3, 60.0]), (["Firefox"], [2, 40.0])]
    by_share = ok(
        client,
        env,
        body(
            metrics=["percentage"], dimensions=["visit:browser"], order_by=[["percentage", "asc"]]
        ),
    )
    assert rows(by_share) == [(["Firefox"], [40.0]), (["Chrome"], [60.0])]
    thirds = ok(
        client,
        env,
        body(
            metrics=["percentage"],
            dimensions=["visit:source"],
            filters=[["is", "visit:browser", ["Chrome"]]],
        ),
    )  # of the 3 visitors of the filter, not of all 5
    assert rows(thirds) == [
        (["Direct / None"], [33.3]),
        (["google.com"], [33.3]),
        (["news"], [33.3]),
    ]
    assert rows(ok(client, env, body(dimensions=["visit:device"]))) == [(["Desktop"], [5])]
    assert rows(ok(client, env, body(dimensions=["visit:utm_medium"]))) == [
        (["(not set)"], [4]),
        (["email"], [1]),
    ]
    empty = ok(
        client,
        env,
        body(
            metrics=["percentage"], dimensions=["visit:os"], date_range=["2023-01-01", "2023-01-02"]
        ),
    )
    assert rows(empty) == []


def test_the_sites_zone_and_imports(client: TestClient, env: Env) -> None:
    answer = ok(
        client,
        env,
        body(site_id="WWW." + BERLIN, date_range=["2024-01-10", "2024-01-10"],
             include={"imports": True}),
    )  # fmt: skip
    assert rows(answer) == [([], [1])]
    assert answer["query"]["site_id"] == BERLIN
    assert answer["query"]["date_range"] == [
        "2024-01-10T00:00:00+01:00",
        "2024-01-10T23:59:59+01:00",
    ]
    assert answer["meta"] == {"imports_included": False, "imports_skip_reason": "no_imported_data"}
    assert answer["query"]["include"] == {"imports": True}
    times = ok(
        client,
        env,
        body(site_id=BERLIN, date_range=["2024-01-10T12:00:00+01:00", "2024-01-10T12:00:00Z"]),
    )
    assert rows(times) == [([], [1])]
    assert times["query"]["date_range"] == [
        "2024-01-10T12:00:00+01:00",
        "2024-01-10T13:00:00+01:00",
    ]


def test_date_ranges_relative_to_today(client: TestClient, env: Env) -> None:
    today = datetime.now(UTC).date()
    week = ok(client, env, body(site_id=RECENT, date_range="7d"))
    assert rows(week) == [([], [1])]  # yesterday's; today is not in "7d"
    assert week["query"]["date_range"] == [
        f"{today - timedelta(days=7)}T00:00:00+00:00",
        f"{today - timedelta(days=1)}T23:59:59+00:00",
    ]
    day = ok(
        client,
        env,
        body(site_id=RECENT, date_range="day", dimensions=["time:hour"],
             include={"time_labels": True}),
    )  # fmt: skip
    assert [m for _, m in rows(day)] == [[1]]
    assert len(day["meta"]["time_labels"]) == 24
    assert rows(ok(client, env, body(site_id=RECENT, date_range="all"))) == [([], [2])]


# --- goals and conversion rates --------------------------------------------------------------

SHOP, PLAUSIBLE_A, PLAUSIBLE_B = "shop.test", "goals-a.test", "goals-b.test"
MOBILE = Agent("Chrome Mobile", "120", "Android", "14", "mobile", None)
GOAL_DAYS = ["2024-03-04", "2024-03-05"]
SHOP_GOALS = (
    goals.definition("Signup", None),
    goals.definition(None, "/pricing"),
    goals.definition(None, "/blog*", "Blog"),
)
# Which events complete each of SHOP_GOALS (docs/goals.md), in plain SQL.
SHOP_GOAL_ROWS = """
goal (name, kind, target) AS (
    VALUES ('Signup', 'event', '^Signup$'), ('Visit /pricing', 'page', '^/pricing$'),
           ('Blog', 'page', '^/blog.*$')),
completion AS (
    SELECT e.session_id, e.visitor_id, e.received_at, g.name AS goal
    FROM events e JOIN sites USING (site_id) JOIN goal g
      ON CASE g.kind WHEN 'event' THEN picolytics_is_custom_event(e.name) AND e.name ~ g.target
              ELSE picolytics_is_pageview(e.name, e.path) AND e.path ~ g.target END
    WHERE sites.domain = 'shop.test'),
visit AS (
    SELECT s.*, CASE WHEN s.utm_source <> '' THEN s.utm_source
                     WHEN s.referrer_host <> '' THEN s.referrer_host ELSE '(direct)' END AS source
    FROM sessions s JOIN sites USING (site_id)
    WHERE sites.domain = 'shop.test' AND s.pageviews > 0)
"""


def goal_dataset() -> list[QueuedEvent]:
    """shop.test, in UTC, 4 and 5 March 2024: eight visitors, four a day.

    visitor  events                                                  source     device
    11       d1 09:00 load /, 09:01 nav /pricing, 09:02 Signup {pro} google.com desktop
    12       d1 10:00 load /pricing                                  (direct)   mobile
    13       d1 11:00 load /blog/a, 11:01 Signup {plan: free}        news.yc... mobile
    14       d1 12:00 load /                                         google.com desktop
    15       d2 09:00 load /blog                                     (direct)   desktop
    16       d2 10:00 load /, 10:01 Signup {pro}, 10:02 Signup {pro} google.com mobile
    17       d2 11:00 load /docs                                     (direct)   desktop
    18       d2 12:00 load /docs                                     google.com desktop

    goals-a.test and goals-b.test hold the events of two of Plausible's own tests
    (below), each with a pageview first, which makes a visit in picolytics."""
    d1, d2 = GOAL_DAYS

    def shop(when: str, visitor: int, *, mobile: bool = False, **fields: Any) -> QueuedEvent:
        found = event(at(when), visitor, site=SHOP, **fields)
        return replace(found, agent=MOBILE) if mobile else found

    google, yc = "google.com", "news.ycombinator.com"
    return [
        shop(f"{d1} 09:00", 11, path="/", referrer_host=google),
        shop(f"{d1} 09:01", 11, name="nav", path="/pricing"),
        shop(f"{d1} 09:02", 11, name="Signup", path="/pricing", props={"plan": "pro"}),
        shop(f"{d1} 10:00", 12, mobile=True, path="/pricing"),
        shop(f"{d1} 11:00", 13, mobile=True, path="/blog/a", referrer_host=yc),
        shop(f"{d1} 11:01", 13, mobile=True, name="Signup", path="/blog/a", props={"plan": "free"}),
        shop(f"{d1} 12:00", 14, path="/", referrer_host=google),
        shop(f"{d2} 09:00", 15, path="/blog"),
        shop(f"{d2} 10:00", 16, mobile=True, path="/", referrer_host=google),
        shop(f"{d2} 10:01", 16, mobile=True, name="Signup", path="/", props={"plan": "pro"}),
        shop(f"{d2} 10:02", 16, mobile=True, name="Signup", path="/", props={"plan": "pro"}),
        shop(f"{d2} 11:00", 17, path="/docs"),
        shop(f"{d2} 12:00", 18, path="/docs", referrer_host=google),
        *plausible_examples(f"{d1} 08:00"),
    ]


def plausible_examples(when: str) -> list[QueuedEvent]:
    """Plausible's tests "returns conversion_rate in an event:goal breakdown" and
    "returns conversion_rate in a multi-goal filtered visit:screen_size breakdown"
    (test/plausible_web/controllers/api/external_stats_controller/
    query_goal_dimension_test.exs and query_special_metrics_test.exs)."""
    start = at(when)

    def one(site: str, visitor: int, minute: int, mobile: bool, **fields: Any) -> QueuedEvent:
        found = event(start + timedelta(minutes=minute), visitor, site=site, **fields)
        return replace(found, agent=MOBILE) if mobile else found

    a, b = PLAUSIBLE_A, PLAUSIBLE_B
    return [
        one(a, 1, 0, False, path="/"),
        one(a, 1, 1, False, name="Signup"),
        one(a, 1, 2, False, name="Signup"),
        one(a, 2, 0, False, path="/blog"),
        one(a, 3, 0, False, path="/blog/post"),
        one(a, 4, 0, False, path="/"),
        one(b, 1, 0, True, path="/"),
        one(b, 2, 0, True, path="/"),
        one(b, 2, 1, True, name="AddToCart"),
        one(b, 3, 0, True, path="/"),
        one(b, 3, 1, True, name="AddToCart"),
        one(b, 4, 0, False, path="/"),
        one(b, 4, 1, False, name="AddToCart"),
        one(b, 4, 2, False, name="Purchase"),
        one(b, 5, 0, False, path="/"),
    ]


def add_goals(conninfo: str, domain: str, *new: goals.Definition) -> None:
    for definition in new:

        def add(connection: Any, definition: goals.Definition = definition) -> goals.Goal:
            return goals.add_goal(connection, domain, definition)

        goals.connected(conninfo, add)


async def _roll_goal_days(conninfo: str) -> None:
    async with await AsyncConnection.connect(conninfo, autocommit=True) as connection:
        cursor = await connection.execute(
            "SELECT site_id FROM sites WHERE domain = ANY(%s)", ([SHOP, PLAUSIBLE_A, PLAUSIBLE_B],)
        )
        for (site_id,) in await cursor.fetchall():
            for day in (date(2024, 3, 4), date(2024, 3, 5)):
                await roll_day(connection, site_id, day, "UTC")


@pytest.fixture(scope="module")
def shop(env: Env) -> Env:
    """env, with the goal sites written, their goals added and their days rolled up."""
    run(write(env.conninfo, goal_dataset()))
    add_goals(env.conninfo, SHOP, *SHOP_GOALS)
    add_goals(env.conninfo, PLAUSIBLE_A, goals.definition("Signup", None))
    add_goals(env.conninfo, PLAUSIBLE_A, goals.definition(None, "/blog**"))
    add_goals(env.conninfo, PLAUSIBLE_B, goals.definition("Purchase", None))
    add_goals(env.conninfo, PLAUSIBLE_B, goals.definition("AddToCart", None))
    run(_roll_goal_days(env.conninfo))
    return env


def shop_body(**fields: Any) -> dict[str, Any]:
    return {"site_id": SHOP, "metrics": ["visitors"], "date_range": GOAL_DAYS, **fields}


def rate(part: int, whole: int) -> float:
    """The test's own rounding: one decimal, half to even, in decimal arithmetic."""
    if not whole:
        return 0.0
    exact = Decimal(100 * part) / Decimal(whole)
    return float(exact.quantize(Decimal("0.1"), rounding=ROUND_HALF_EVEN))


def sql(conninfo: str, text: str) -> list[tuple[Any, ...]]:
    return query(conninfo, "WITH " + SHOP_GOAL_ROWS + text)


TOTAL_VISITORS = "SELECT count(DISTINCT (started_at::date, visitor_id)) FROM visit"


def test_plausible_example_conversion_rate_by_goal(client: TestClient, shop: Env) -> None:
    # Plausible's test "returns conversion_rate in an event:goal breakdown", its answer.
    answer = ok(
        client,
        shop,
        {
            "site_id": PLAUSIBLE_A,
            "date_range": "all",
            "metrics": ["visitors", "events", "conversion_rate"],
            "dimensions": ["event:goal"],
        },
    )
    assert answer["results"] == [
        {"dimensions": ["Visit /blog**"], "metrics": [2, 2, 50.0]},
        {"dimensions": ["Signup"], "metrics": [1, 2, 25.0]},
    ]
    assert answer["query"]["dimensions"] == ["event:goal"]
    assert answer["query"]["order_by"] == [["visitors", "desc"]]


def test_plausible_example_group_conversion_rate_by_device(client: TestClient, shop: Env) -> None:
    # Plausible's test "returns conversion_rate in a multi-goal filtered
    # visit:screen_size breakdown": its visitors and group_conversion_rate.
    goal_filter = ["is", "event:goal", ["AddToCart", "Purchase"]]
    request = {
        "site_id": PLAUSIBLE_B,
        "metrics": ["visitors", "group_conversion_rate"],
        "date_range": "all",
        "dimensions": ["visit:device"],
        "filters": [goal_filter],
    }
    answer = ok(client, shop, request)
    assert rows(answer) == [(["Mobile"], [2, 66.7]), (["Desktop"], [1, 50.0])]
    assert answer["query"]["filters"] == [goal_filter]
    # Its `events` are the conversions; ours would be every event of those visits.
    request["metrics"] = ["visitors", "events", "group_conversion_rate"]
    assert refused(client, shop, request) == (
        "#/metrics/1: Not supported yet by picolytics: events by visit:device with an "
        "event:goal filter: the query layer counts every one of the converting visits, "
        "Plausible only the conversions."
    )


def test_a_breakdown_by_goal_equals_plain_sql(client: TestClient, shop: Env) -> None:
    metrics = ["visitors", "events", "conversion_rate", "percentage"]
    answer = ok(client, shop, shop_body(metrics=metrics, dimensions=["event:goal"]))
    counted = sql(
        shop.conninfo,
        "SELECT goal, count(DISTINCT (received_at::date, visitor_id))::int, count(*)::int "
        "FROM completion GROUP BY goal",
    )
    total = int(sql(shop.conninfo, TOTAL_VISITORS)[0][0])
    # percentage's denominator: the visitors of the same filters (none), here the same.
    expected = {name: [v, e, rate(v, total), rate(v, total)] for name, v, e in counted}
    assert {tuple(r["dimensions"]): r["metrics"] for r in answer["results"]} == {
        (name,): values for name, values in expected.items()
    }
    # By hand: 8 visitors; Signup by 11, 13 and 16 (twice); /pricing by 11 and 12; the
    # blog by 13 and 15. Visitors descending, then the name.
    assert rows(answer) == [
        (["Signup"], [3, 4, 37.5, 37.5]),
        (["Blog"], [2, 2, 25.0, 25.0]),
        (["Visit /pricing"], [2, 2, 25.0, 25.0]),
    ]
    series = ok(client, shop, shop_body(dimensions=["time:day", "event:goal"]))
    assert rows(series) == [  # by day, then visitors descending, then the name
        (["2024-03-04", "Signup"], [2]),
        (["2024-03-04", "Visit /pricing"], [2]),
        (["2024-03-04", "Blog"], [1]),
        (["2024-03-05", "Blog"], [1]),
        (["2024-03-05", "Signup"], [1]),
    ]


CONVERTED_BY = """SELECT {group}, count(DISTINCT (v.started_at::date, v.visitor_id))::int
FROM visit v WHERE EXISTS (SELECT 1 FROM completion c
                           WHERE c.session_id = v.session_id AND c.goal = 'Signup')
GROUP BY 1"""
VISITORS_BY = """SELECT {group}, count(DISTINCT (v.started_at::date, v.visitor_id))::int
FROM visit v GROUP BY 1"""


@pytest.mark.parametrize(
    ("dimension", "group", "by_hand"),
    [
        (
            "visit:source",
            "v.source",
            [(["google.com"], [2, 25.0, 50.0]), (["news.ycombinator.com"], [1, 12.5, 100.0])],
        ),
        (
            "visit:device",
            "initcap(v.device_type)",
            [(["Mobile"], [2, 25.0, 66.7]), (["Desktop"], [1, 12.5, 20.0])],
        ),
        (
            "time:day",
            "v.started_at::date::text",
            [(["2024-03-04"], [2, 25.0, 50.0]), (["2024-03-05"], [1, 12.5, 25.0])],
        ),
    ],
)
def test_a_goal_filter_with_a_dimension_equals_plain_sql(
    client: TestClient, shop: Env, dimension: str, group: str, by_hand: list[Any]
) -> None:
    metrics = ["visitors", "conversion_rate", "group_conversion_rate"]
    request = shop_body(
        metrics=metrics, dimensions=[dimension], filters=[["is", "event:goal", ["Signup"]]]
    )
    answer = ok(client, shop, request)
    converted = dict(sql(shop.conninfo, CONVERTED_BY.format(group=group)))
    visitors = dict(sql(shop.conninfo, VISITORS_BY.format(group=group)))
    total = int(sql(shop.conninfo, TOTAL_VISITORS)[0][0])
    expected = {
        (name,): [count, rate(count, total), rate(count, visitors[name])]
        for name, count in converted.items()
    }
    assert {tuple(r["dimensions"]): r["metrics"] for r in answer["results"]} == expected
    assert rows(answer) == by_hand
    # Ordered by the rate of each group, then paged: only a Python sort can say.
    request.update(
        order_by=[["group_conversion_rate", "asc"]],
        pagination={"limit": 1, "offset": 1},
        include={"total_rows": True},
    )
    paged = ok(client, shop, request)
    ascending = sorted(by_hand, key=lambda row: row[1][2])
    assert rows(paged) == ascending[1:2]
    assert paged["meta"] == {"total_rows": 2}
    assert paged["query"]["order_by"] == [["group_conversion_rate", "asc"]]


def test_the_denominators_drop_goal_and_property_filters(client: TestClient, shop: Env) -> None:
    signup = ["is", "event:goal", ["Signup"]]
    metrics = ["visitors", "events", "conversion_rate", "group_conversion_rate"]
    aggregate = ok(client, shop, shop_body(metrics=metrics, filters=[signup]))
    assert rows(aggregate) == [([], [3, 4, 37.5, 37.5])]  # 3 of 8; 4 Signup events
    pro = ["is", "event:props:plan", ["pro"]]
    with_pro = ok(client, shop, shop_body(metrics=metrics, filters=[signup, pro]))
    # 11 and 16 signed up on pro (3 events), of all 8 visitors: no plan filter below.
    assert rows(with_pro) == [([], [2, 3, 25.0, 25.0])]
    # Other filters stay: of the 4 visitors from google.com, 11 and 16 signed up.
    google = ["is", "visit:source", ["google.com"]]
    from_google = ok(client, shop, shop_body(metrics=metrics, filters=[signup, google]))
    assert rows(from_google) == [([], [2, 3, 50.0, 50.0])]
    # Goal names: contains, case-insensitively if asked; an unknown name in contains
    # matches nothing, and then every rate is 0.
    visits = ["contains", "event:goal", ["visit"], {"case_sensitive": False}]
    assert rows(ok(client, shop, shop_body(metrics=metrics, filters=[visits]))) == [
        ([], [2, 2, 25.0, 25.0])
    ]
    nothing = ["contains", "event:goal", ["Nope"]]
    assert rows(ok(client, shop, shop_body(metrics=metrics, filters=[nothing]))) == [
        ([], [0, 0, 0.0, 0.0])
    ]
    empty = ok(client, shop, shop_body(metrics=metrics, filters=[signup], date_range=RANGE))
    assert rows(empty) == [([], [0, 0, 0.0, 0.0])]


@pytest.mark.parametrize(
    ("query_body", "message"),
    [
        (
            shop_body(metrics=["conversion_rate"]),
            "#/metrics/0: Metric `conversion_rate` can only be queried with event:goal "
            "filters or dimensions.",
        ),
        (
            shop_body(metrics=["visitors", "group_conversion_rate"], dimensions=["visit:source"]),
            "#/metrics/1: Metric `group_conversion_rate` can only be queried with event:goal "
            "filters or dimensions.",
        ),
        (
            shop_body(filters=[["is", "event:goal", ["Signup", "Nope"]]]),
            "#/filters/0: Invalid filters. The goal `Nope` is not configured for this site.",
        ),
        (
            shop_body(filters=[["is_not", "event:goal", ["Signup"]]]),
            "#/filters/0: Invalid filter",
        ),
        (
            shop_body(filters=[["not", ["is", "event:goal", ["Signup"]]]]),
            "#/filters/0/1: Invalid filters. Dimension `event:goal` can only be filtered at "
            "the top level.",
        ),
        (
            shop_body(metrics=["bounce_rate"], dimensions=["event:goal"]),
            "#/dimensions: Session metric(s) `bounce_rate` cannot be queried along with event "
            "dimension(s) `event:goal`",
        ),
        (
            shop_body(dimensions=["event:goal", "visit:source"]),
            "#/dimensions/1: Not supported yet by picolytics: event:goal with another "
            "dimension besides time",
        ),
    ],
)
def test_bad_goal_queries_say_what_is_wrong(
    client: TestClient, shop: Env, query_body: object, message: str
) -> None:
    assert refused(client, shop, query_body).startswith(message)


# --- what is refused -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query_body", "message"),
    [
        (
            # Two are answered (pagination-query.json: tests/test_two_dimensions.py).
            body(dimensions=["visit:utm_medium", "visit:utm_source", "visit:device"]),
            "#/dimensions/2: Not supported yet by picolytics: one dimension too many",
        ),
        (
            body(
                dimensions=["visit:country", "visit:city_name"], order_by=[["visit:country", "asc"]]
            ),
            "#/order_by/0: Not supported yet by picolytics: order by visit:country",
        ),
        (body(metrics=["total_revenue"]), "#/metrics/0: Revenue metrics are not supported"),
        (body(filters=[["is", "segment", [2]]]), "#/filters/0: Segments are not supported"),
        (body(metrics=["visitors", "nope"]), '#/metrics/1: Invalid metric "nope"'),
        (body(pagination={"limit": 10_001}), "#/pagination/limit: Expected the value to be <="),
        ({"metrics": ["visitors"]}, "#/site_id: Required property was not present."),
        (["visitors"], "#: Type mismatch. Expected Object but got Array."),
        (body(filters=[["matches", "event:page", ["("]]]), "#/filters: invalid regular expression"),
    ],
)
def test_bad_queries_say_what_is_wrong(
    client: TestClient, env: Env, query_body: object, message: str
) -> None:
    assert refused(client, env, query_body).startswith(message)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "#: The request body is empty"),
        (b"{", "#: The request body is not valid JSON"),
        (b'{"site_id": NaN}', "#: The request body is not valid JSON: NaN is not JSON"),
        (b"\xff\xfe", "#: The request body is not valid UTF-8."),
        (b"[" * 30_000, "#: The request body is nested too deeply."),
        (b'"' + b"1" * 100 + b'"', "#: Type mismatch. Expected Object but got String."),
        (b"9" * 10_000, "#: The request body is not valid JSON"),
        (
            json.dumps(body(filters=[["is", "event:page", ["\ud800"]]])).encode(),
            "#: A string holds a lone surrogate",
        ),
    ],
)
def test_bad_bodies_say_what_is_wrong(
    client: TestClient, env: Env, raw: bytes, message: str
) -> None:
    assert refused(client, env, raw).startswith(message)


def test_a_body_over_64_kib_is_refused(client: TestClient, env: Env) -> None:
    big = json.dumps(body(filters=[["is", "event:page", ["x" * 70_000]]])).encode()
    assert refused(client, env, big, 413) == "The request body is larger than 65536 bytes."


# --- who may ask -----------------------------------------------------------------------------


def test_keys_and_sites(client: TestClient, env: Env) -> None:
    missing = post(client, None, body())
    assert (missing.status_code, missing.json()) == (401, {"error": auth.MISSING_KEY})
    invalid = {"error": auth.INVALID_KEY}
    for key in ("pico_" + "x" * 43, "not-a-key", env.revoked):
        wrong = post(client, key, body())
        assert (wrong.status_code, wrong.json()) == (401, invalid), key
    # Outside the key's scope and unknown: the same answer, so nothing tells them apart.
    outside = post(client, env.scoped, body())
    unknown = post(client, env.key, body(site_id="nowhere.example"))
    assert (outside.status_code, outside.json()) == (401, invalid)
    assert (unknown.status_code, unknown.content) == (401, outside.content)
    assert ok(client, env, body(site_id=B))["results"] == [{"dimensions": [], "metrics": [1]}]
    scoped = post(client, env.scoped, body(site_id=B))
    assert scoped.status_code == 200


def test_the_rate_limit(env: Env) -> None:
    limited = TestClient(create_app(Config(api_rate_limit=2), conninfo=env.conninfo))
    statuses = [post(limited, env.key, body()).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    over = post(limited, env.key, body())
    assert over.status_code == 429
    assert 28 <= int(over.headers["retry-after"]) <= 30  # a request every 30 s
    assert over.json() == {
        "error": "Too many API requests. Your API key is limited to 2 requests per minute."
    }
    assert post(limited, env.scoped, body(site_id=B)).status_code == 200  # a bucket per key


# --- the API equals the query layer ----------------------------------------------------------

# Plausible's names as the query layer's, said here apart from api/v2_translate.py.
VISIT = {"visit:source": "source", "visit:browser": "browser", "visit:country": "country",
         "visit:os": "os", "visit:referrer": "referrer", "visit:utm_source": "utm_source",
         "visit:entry_page": "entry_page", "visit:channel": "channel"}  # fmt: skip
EVENT = {"event:page": ("page", None), "event:props:plan": ("prop", "plan")}
# Plausible's spelling of empty values, and of our source of direct visits.
NO_REFERRER, NOT_SET = "Direct / None", "(not set)"
EMPTY = {"visit:source": NO_REFERRER, "visit:referrer": NO_REFERRER, "visit:browser": NOT_SET,
         "visit:os": NOT_SET, "visit:utm_source": NOT_SET, "visit:channel": NOT_SET}  # fmt: skip
CONDITIONS: dict[str, tuple[list[Any], Condition]] = {
    "chrome": (["is", "visit:browser", ["Chrome"]], Condition("browser", "is", ("Chrome",))),
    "not us": (["is_not", "visit:country", ["US"]], Condition("country", "is_not", ("US",))),
    "pric": (
        ["contains", "event:page", ["PRIC"], {"case_sensitive": False}],
        Condition("page", "contains", ("PRIC",), case_sensitive=False),
    ),
    "direct": (["is", "visit:source", ["Direct / None"]], Condition("source", "is", ("(direct)",))),
    "docs": (["matches", "event:page", ["^/d"]], Condition("page", "matches", ("^/d",))),
    "search": (
        ["is_not", "visit:channel", ["Organic Search"]],
        Condition("channel", "is_not", ("Organic Search",)),
    ),
    "pro": (["is", "event:props:plan", ["pro"]], Condition("prop", "is", ("pro",), "plan")),
}
COUNTS = ["visitors", "visits", "pageviews", "events"]
RATES = ["bounce_rate", "visit_duration"]


@st.composite
def generated(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["none", "visit", "event"]))
    if kind == "visit":
        dimensions = [draw(st.sampled_from(sorted(VISIT)))]
        allowed = COUNTS + RATES + ["percentage"]
        if dimensions == ["visit:entry_page"]:
            allowed = [m for m in allowed if m not in ("pageviews", "events")]
    elif kind == "event":
        dimensions = [draw(st.sampled_from(sorted(EVENT)))]
        allowed = [*COUNTS, "percentage"]
    else:
        dimensions = []
        allowed = [*COUNTS, *RATES, "views_per_visit"]
    if draw(st.booleans()):
        dimensions.insert(draw(st.integers(0, len(dimensions))), "time:day")
    if dimensions == ["time:day"]:
        allowed = [m for m in allowed if m != "views_per_visit"] + ["percentage"]
    metrics = draw(st.lists(st.sampled_from(allowed), min_size=1, max_size=3, unique=True))
    names = draw(st.lists(st.sampled_from(sorted(CONDITIONS)), max_size=2, unique=True))
    if "views_per_visit" in metrics:
        names = [n for n in names if CONDITIONS[n][1].dimension != "page"]
    first = draw(st.sampled_from(["2024-01-09", "2024-01-10", "2024-01-11"]))
    return {
        "site_id": A,
        "metrics": metrics,
        "date_range": [first, "2024-01-12"],
        "dimensions": dimensions,
        "filters": [CONDITIONS[n][0] for n in names],
    }


def expected_query(site_id: int, request: dict[str, Any]) -> Query:
    metrics: list[Any] = []
    for metric in request["metrics"]:
        needs = {"bounce_rate": ["bounces", "visits"], "percentage": ["visitors"]}
        metrics += [m for m in needs.get(metric, [metric]) if m not in metrics]
    breakdown = None
    for name in request["dimensions"]:
        if name in VISIT:
            breakdown = Breakdown(VISIT[name])  # type: ignore[arg-type]
        elif name in EVENT:
            breakdown = Breakdown(*EVENT[name])  # type: ignore[arg-type]
    conditions = [c for n, (j, c) in CONDITIONS.items() if j in request["filters"]]
    filters: Filter | None = None
    if conditions:
        filters = conditions[0] if len(conditions) == 1 else And(tuple(conditions))
    first = date.fromisoformat(request["date_range"][0])
    period = Period(
        datetime.combine(first, datetime.min.time(), UTC), datetime(2024, 1, 13, tzinfo=UTC)
    )
    interval = "day" if "time:day" in request["dimensions"] else None
    return Query((site_id,), period, tuple(metrics), interval, breakdown, filters)  # type: ignore[arg-type]


def shown(name: str, row: Any) -> str:
    if name == "time:day":
        return str(row.time.isoformat())
    if name == "visit:source" and row.value == "(direct)":
        return "Direct / None"
    return str(EMPTY.get(name, "") if row.value == "" else row.value)


def expected_rows(request: dict[str, Any], result: Result, total: int) -> list[Any]:
    found = []
    for row in result.rows:
        dimensions = [shown(name, row) for name in request["dimensions"]]
        values = row.metrics
        metrics: list[int | float | None] = []
        for metric in request["metrics"]:
            if metric == "bounce_rate":
                visits = values["visits"] or 0
                metrics.append(round(100 * (values["bounces"] or 0) / visits) if visits else 0)
            elif metric == "percentage":
                metrics.append(round((values["visitors"] or 0) / total * 100, 1) if total else None)
            elif metric == "visit_duration":
                metrics.append(round(values["visit_duration"] or 0))
            elif metric == "views_per_visit":
                metrics.append(values["views_per_visit"] or 0)
            else:
                metrics.append(values[metric])
        found.append((dimensions, metrics))
    return found


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=generated())
def test_the_api_equals_the_query_layer(
    client: TestClient, env: Env, request: dict[str, Any]
) -> None:
    answer = ok(client, env, request)
    site_id = int(query(env.conninfo, "SELECT site_id FROM sites WHERE domain = %s", (A,))[0][0])
    asked = expected_query(site_id, request)

    async def layer() -> tuple[Result, Result]:
        async with await AsyncConnection.connect(env.conninfo, autocommit=True) as connection:
            main = await run_query(connection, asked)
            totals = Query(asked.site_ids, asked.period, ("visitors",), filters=asked.filters)
            return main, await run_query(connection, totals)

    main, totals = run(layer())
    total = int(totals.rows[0].metrics["visitors"] or 0)
    expected = expected_rows(request, main, total)
    assert sorted(rows(answer), key=repr) == sorted(expected, key=repr)
    if request["metrics"][0] != "bounce_rate":  # which the layer orders by bounces here
        # Plausible's default order, the layer's: time, the first metric descending.
        assert rows(answer) == expected
    assert answer["meta"] == {}


# --- fuzzed bodies: never a 500, every 400 says what is wrong --------------------------------

WORDS = st.sampled_from(
    ["visitors", "visits", "pageviews", "bounce_rate", "percentage", "events", "views_per_visit",
     "visit:source", "visit:country", "visit:city_name", "event:page", "event:props:plan", "time",
     "time:day", "time:hour", "event:goal", "is", "is_not", "contains", "matches", "and", "or",
     "not", "has_done", "asc", "desc", "day", "7d", "all", "2024-01-10", "2024-01-12", A, B,
     "Chrome", "(not set)", "Direct / None", "case_sensitive", "limit", "offset", "total_rows"]
)  # fmt: skip
NEAR = st.recursive(
    WORDS | st.integers(-3, 20_000) | st.booleans() | st.none() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(WORDS, inner, max_size=3),
    max_leaves=25,
)
BODIES = st.fixed_dictionaries(
    {
        "site_id": st.sampled_from([A, A, B, "nowhere.example"]),
        "metrics": st.lists(WORDS, min_size=1, max_size=3) | NEAR,
        "date_range": st.sampled_from(["7d", "all", "day", RANGE, ["2024-01-10", "x"]]) | NEAR,
    },
    optional={
        "dimensions": st.lists(WORDS, max_size=2) | NEAR,
        "filters": st.lists(st.lists(NEAR, min_size=1, max_size=4), max_size=3) | NEAR,
        "order_by": st.lists(st.lists(WORDS, min_size=2, max_size=2), max_size=2) | NEAR,
        "include": st.dictionaries(st.sampled_from(["time_labels", "total_rows"]), st.booleans()),
        "pagination": st.dictionaries(
            st.sampled_from(["limit", "offset"]), st.integers(-2, 20_000)
        ),
    },
)


def never_500(client: TestClient, env: Env, raw: bytes) -> None:
    response = post(client, env.key, raw)
    assert response.status_code in (200, 400, 401), response.text
    if response.status_code != 200:
        message = response.json()["error"]
        assert message.startswith("#") or response.status_code == 401, message
        assert len(message) < 1000


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(query_body=BODIES)
def test_fuzzed_bodies_never_fail(client: TestClient, env: Env, query_body: dict[str, Any]) -> None:
    never_500(client, env, json.dumps(query_body).encode())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_fuzzed_bytes_never_fail(client: TestClient, env: Env, raw: bytes) -> None:
    never_500(client, env, raw)


# --- slow queries: the timeout, and a client that goes away ----------------------------------

BIG = """
WITH site AS (INSERT INTO sites (domain) VALUES ('big.test') RETURNING site_id),
visits AS (
    INSERT INTO sessions (site_id, session_id, visitor_id, started_at, last_seen_at,
                          pageviews, events, entry_path, exit_path)
    SELECT site_id, n, n, timestamptz '2024-01-10 00:00Z' + n * interval '1 second',
           timestamptz '2024-01-10 00:00Z' + n * interval '1 second', 1, 1, '/', '/'
    FROM site, generate_series(1, 50000) AS n)
INSERT INTO events (site_id, received_at, event_id, session_id, visitor_id, name, path)
SELECT site_id, timestamptz '2024-01-10 00:00Z' + n * interval '1 second', n, n, n,
       'load', '/' || repeat('a', 1000) || n
FROM site, generate_series(1, 50000) AS n
"""
# Seconds of work on 2 cores: 100 LIKE patterns on each of 50,000 long paths.
SLOW = {
    "site_id": "big.test",
    "metrics": ["visitors", "pageviews"],
    "date_range": ["2024-01-10", "2024-01-20"],
    "filters": [["contains", "event:page", [f"zz{n}" for n in range(100)]]],
}
ACTIVE = """
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND state = 'active' AND pid <> pg_backend_pid()
  AND backend_type = 'client backend'
"""


@pytest.fixture(scope="module")
def big(admin_conninfo: str) -> Iterator[tuple[str, str]]:
    with new_database(admin_conninfo) as conninfo:
        migrate.apply(conninfo)
        with_big = query(conninfo, BIG + " RETURNING 1")
        assert len(with_big) == 50_000
        yield conninfo, create_key(conninfo, "big")


def test_a_query_past_the_timeout_is_503(big: tuple[str, str]) -> None:
    conninfo, key = big
    app = create_app(Config(api_rate_limit=0, query_timeout_sec=0.2), conninfo=conninfo)
    response = post(TestClient(app), key, SLOW)
    assert response.status_code == 503
    assert response.json() == {
        "error": "The query ran past the time limit of 0.2 s and was stopped: ask for a shorter "
        "period or fewer rows, or try again later."
    }
    assert query(conninfo, ACTIVE) == [(0,)]


def test_a_client_that_goes_away_cancels_its_query(big: tuple[str, str]) -> None:
    conninfo, key = big
    app = create_app(Config(api_rate_limit=0, query_timeout_sec=60), conninfo=conninfo)
    raw = json.dumps(SLOW).encode()
    gone = asyncio.Event()
    sent: list[dict[str, Any]] = []
    bodies = [{"type": "http.request", "body": raw, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if bodies:
            return bodies.pop()
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def scenario() -> tuple[int, int, int]:
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
            "scheme": "http", "path": URL, "raw_path": URL.encode(), "query_string": b"",
            "root_path": "", "headers": [(b"authorization", f"Bearer {key}".encode())],
            "client": ("127.0.0.1", 1), "server": ("testserver", 80),
        }  # fmt: skip
        handling = asyncio.create_task(app(scope, receive, send))  # type: ignore[arg-type]
        for _ in range(100):  # the query starts within a few seconds
            await asyncio.sleep(0.1)
            if (running := query(conninfo, ACTIVE)[0][0]) > 0:
                break
        gone.set()
        await asyncio.wait_for(handling, 10)
        after = query(conninfo, ACTIVE)[0][0]
        return running, after, sent[0]["status"]

    running, after, status = run(scenario())
    assert running == 1  # the query was running in PostgreSQL
    assert after == 0  # and stopped there as soon as the client had gone
    assert status == 499
