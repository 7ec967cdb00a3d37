"""Plausible's Stats API v1 over HTTP (api/v1_endpoints.py and the modules it reads
with), through the real app (serve/app.py) on a real database.

The dataset is written through the real batch writer and rolled up; every number is
counted by hand from `dataset` with the definitions of docs/read-model.md. Requests
marked "docs example" are Plausible's published examples (plausible/docs,
docs/stats-api-v1.md and docs/sites-api.md) on our dataset's dates, checked against
the shapes of the published answers.

Site example.com (UTC), January 2024 (the 10th is a Wednesday), times in UTC:

  visit visitor events                                       source         notes
  V6    6       8th 10:00 load /                             (direct)       bounce
  V7    7       9th 11:00 load /, 11:01 nav /pricing         (direct)
  V1    1       10th 09:00 load /, 09:01 nav /pricing,       google.com     Chrome, DE
                09:02 signup /pricing {plan: pro}
  V2    2       10th 15:00 load /pricing                     news (email)   bounce
  V3    3       11th 10:00 load /, 10:00:30 signup / {plan:  (direct)       US
                free}
  V4    4       11th 12:00 load /blog                        news.yc...     Firefox, bounce
  V5    5       12th 08:00 load /docs, 08:02 nav /docs/api   (direct)       Firefox

The 10th to the 12th: visitors 5, visits 5, pageviews 7, events 9, bounces 2 (40 %),
durations 120 + 30 + 120 = 270 s (54 s a visit), 1.4 pageviews a visit. The three days
before (7th-9th): visitors 2, visits 2, pageviews 3, events 3, one bounce (50 %),
30 s a visit, 1.5 pageviews a visit. Everyone but V1-V3 is on Chrome; all of them but
V3 (US) are in DE. Goals of example.com: `signup` (event) and `Visit /pricing`.
Site other.test has one visit on the 10th; berlin.example (Europe/Berlin) one at
23:30 UTC on the 10th, the 11th there; recent.test one a few seconds ago.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from helpers.database import new_database, query
from helpers.events import event, run, write
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import AsyncConnection
from starlette.testclient import TestClient

from picolytics.api import auth
from picolytics.config import Config
from picolytics.events import Agent, Location, QueuedEvent
from picolytics.serve.app import create_app
from picolytics.stats.engine import run as run_query
from picolytics.stats.periods import days
from picolytics.stats.query import And, Breakdown, Condition, Filter, Query, Result
from picolytics.storage import api_keys, goals, migrate
from picolytics.storage.rollup import roll_day

A, B, BERLIN, RECENT = "example.com", "other.test", "berlin.example", "recent.test"
US = Location("US", "Illinois", "Springfield")
FIREFOX = Agent("Firefox", "121", "Linux", "", "desktop", None)
STATS = "/api/v1/stats"
CUSTOM = {"period": "custom", "date": "2024-01-10,2024-01-12"}
DOCS = "https://plausible.io/docs/stats-api"


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def dataset() -> list[QueuedEvent]:
    d1, d2, d3 = "2024-01-10", "2024-01-11", "2024-01-12"
    return [
        event(at("2024-01-08 10:00"), 6, path="/"),
        event(at("2024-01-09 11:00"), 7, path="/"),
        event(at("2024-01-09 11:01"), 7, name="nav", path="/pricing"),
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
        event(at(f"{d1} 23:30"), 9, path="/", site=BERLIN),
        event(datetime.now(UTC) - timedelta(seconds=5), 8, path="/", site=RECENT),
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
    rolled = [date(2024, 1, 1) + timedelta(days=n) for n in range(31)]
    async with await AsyncConnection.connect(conninfo, autocommit=True) as connection:
        zone = "UPDATE sites SET timezone = 'Europe/Berlin' WHERE domain = %s"
        await connection.execute(zone, (BERLIN,))
        cursor = await connection.execute(
            "SELECT site_id, timezone FROM sites WHERE domain <> %s", (RECENT,)
        )
        for site_id, timezone in await cursor.fetchall():
            for day in rolled:
                await roll_day(connection, site_id, day, timezone)


@pytest.fixture(scope="module")
def env(module_database: str) -> Env:
    run(write(module_database, dataset()))
    run(_roll(module_database))
    for new in (goals.definition("signup", None), goals.definition(None, "/pricing")):

        def add(connection: Any, new: goals.Definition = new) -> goals.Goal:
            return goals.add_goal(connection, A, new)

        goals.connected(module_database, add)
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


def get(client: TestClient, key: str | None, path: str, **params: str) -> Any:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return client.get(f"{path}?{urlencode(params)}" if params else path, headers=headers)


def ok(client: TestClient, env: Env, endpoint: str, **params: str) -> Any:
    response = get(client, env.key, f"{STATS}/{endpoint}", **({"site_id": A} | params))
    assert response.status_code == 200, response.text
    return response.json()


def refused(client: TestClient, env: Env, endpoint: str, **params: str) -> str:
    response = get(client, env.key, f"{STATS}/{endpoint}", **({"site_id": A} | params))
    assert response.status_code == 400, response.text
    assert set(response.json()) == {"error"}
    message: str = response.json()["error"]
    return message


# --- Plausible's published examples, with their answers' shapes ------------------------------


def test_docs_example_realtime_visitors(client: TestClient, env: Env) -> None:
    # docs example: GET /api/v1/stats/realtime/visitors answers a bare number.
    response = get(client, env.key, f"{STATS}/realtime/visitors", site_id=RECENT)
    assert (response.status_code, response.text) == (200, "1")
    assert ok(client, env, "realtime/visitors") == 0  # example.com: nothing recent


def test_docs_example_aggregate(client: TestClient, env: Env) -> None:
    # docs example: period, metrics=visitors,pageviews,bounce_rate,visit_duration
    metrics = "visitors,pageviews,bounce_rate,visit_duration"
    answer = ok(client, env, "aggregate", metrics=metrics, **CUSTOM)
    assert answer == {
        "results": {
            "bounce_rate": {"value": 40},
            "pageviews": {"value": 7},
            "visit_duration": {"value": 54},
            "visitors": {"value": 5},
        }
    }
    assert list(answer["results"]) == sorted(answer["results"])  # as Plausible's map


def test_every_metric_with_plausibles_numbers(client: TestClient, env: Env) -> None:
    metrics = "visitors,visits,pageviews,views_per_visit,bounce_rate,visit_duration,events"
    answer = ok(client, env, "aggregate", metrics=metrics, **CUSTOM)["results"]
    values = {name: found["value"] for name, found in answer.items()}
    assert values == {
        "visitors": 5, "visits": 5, "pageviews": 7, "views_per_visit": 1.4,
        "bounce_rate": 40, "visit_duration": 54, "events": 9,
    }  # fmt: skip
    assert type(values["views_per_visit"]) is float and type(values["bounce_rate"]) is int
    nothing = ok(client, env, "aggregate", metrics=metrics, period="day", date="2023-06-01")
    assert {n: f["value"] for n, f in nothing["results"].items()} == {
        "visitors": 0, "visits": 0, "pageviews": 0, "views_per_visit": 0.0,
        "bounce_rate": 0, "visit_duration": 0, "events": 0,
    }  # fmt: skip


def test_aggregate_compared_with_the_previous_period(client: TestClient, env: Env) -> None:
    metrics = "visitors,pageviews,bounce_rate,visit_duration,events,views_per_visit"
    answer = ok(client, env, "aggregate", metrics=metrics, compare="previous_period", **CUSTOM)
    assert answer["results"] == {
        # (5 - 2) / 2, (7 - 3) / 3, 40 - 50 points, (54 - 30) / 30, (9 - 3) / 3,
        # (1.4 - 1.5) / 1.5 = -6.7 %: Plausible's rounding to integers.
        "visitors": {"change": 150, "comparison_value": 2, "value": 5},
        "pageviews": {"change": 133, "comparison_value": 3, "value": 7},
        "bounce_rate": {"change": -10, "comparison_value": 50, "value": 40},
        "visit_duration": {"change": 80, "comparison_value": 30, "value": 54},
        "events": {"change": 200, "comparison_value": 3, "value": 9},
        "views_per_visit": {"change": -7, "comparison_value": 1.5, "value": 1.4},
    }
    # From nothing: 100 %, and a bounce rate from 0 has no change.
    early = {"period": "custom", "date": "2024-01-08,2024-01-09"}
    first = ok(
        client, env, "aggregate", metrics="visitors,bounce_rate", compare="previous_period", **early
    )
    assert first["results"] == {
        "visitors": {"change": 100, "comparison_value": 0, "value": 2},
        "bounce_rate": {"change": None, "comparison_value": 0, "value": 50},
    }
    # Any other compare is ignored, as Plausible ignores it.
    plain = ok(client, env, "aggregate", compare="year_over_year", **CUSTOM)
    assert plain == {"results": {"visitors": {"value": 5}}}


def test_docs_example_timeseries(client: TestClient, env: Env) -> None:
    # docs example: the main graph, a row for every bucket, empty ones with zeros.
    answer = ok(client, env, "timeseries", period="7d", date="2024-01-13")
    assert answer == {
        "results": [
            {"date": "2024-01-06", "visitors": 0},
            {"date": "2024-01-07", "visitors": 0},
            {"date": "2024-01-08", "visitors": 1},
            {"date": "2024-01-09", "visitors": 1},
            {"date": "2024-01-10", "visitors": 2},
            {"date": "2024-01-11", "visitors": 2},
            {"date": "2024-01-12", "visitors": 1},
        ]
    }
    months = ok(client, env, "timeseries", period="6mo", date="2024-01-15")["results"]
    assert months == [{"date": f"2023-{m:02}-01", "visitors": 0} for m in range(8, 13)] + [
        {"date": "2024-01-01", "visitors": 7}
    ]


def test_timeseries_intervals_and_metrics(client: TestClient, env: Env) -> None:
    hours = ok(client, env, "timeseries", period="day", date="2024-01-10")["results"]
    assert len(hours) == 24 and hours[0] == {"date": "2024-01-10 00:00:00", "visitors": 0}
    assert [h["date"][11:13] for h in hours if h["visitors"]] == ["09", "15"]
    metrics = "visitors,pageviews,bounce_rate,visit_duration,views_per_visit"
    by_day = ok(client, env, "timeseries", metrics=metrics, interval="date", **CUSTOM)
    assert by_day["results"][0] == {
        "bounce_rate": 50, "date": "2024-01-10", "pageviews": 3, "views_per_visit": 1.5,
        "visit_duration": 60, "visitors": 2,
    }  # fmt: skip
    months = ok(
        client, env, "timeseries", interval="month", period="custom", date="2023-12-15,2024-01-31"
    )
    assert months["results"] == [
        {"date": "2023-12-01", "visitors": 0},
        {"date": "2024-01-01", "visitors": 7},
    ]


def test_docs_example_breakdown(client: TestClient, env: Env) -> None:
    # docs example: property=visit:source&metrics=visitors,bounce_rate&limit=5
    answer = ok(
        client, env, "breakdown", property="visit:source", metrics="visitors,bounce_rate",
        limit="5", **CUSTOM,
    )  # fmt: skip
    assert answer == {
        "results": [
            {"bounce_rate": 0, "source": "Direct / None", "visitors": 2},
            {"bounce_rate": 0, "source": "google.com", "visitors": 1},
            {"bounce_rate": 100, "source": "news", "visitors": 1},
            {"bounce_rate": 100, "source": "news.ycombinator.com", "visitors": 1},
        ]
    }


def test_docs_example_top_pages_and_pagination(client: TestClient, env: Env) -> None:
    # docs example "Top pages": property=event:page&limit=5
    pages = ok(client, env, "breakdown", property="event:page", **CUSTOM)["results"]
    assert pages == [
        {"page": "/", "visitors": 2},
        {"page": "/pricing", "visitors": 2},
        {"page": "/blog", "visitors": 1},
        {"page": "/docs", "visitors": 1},
        {"page": "/docs/api", "visitors": 1},
    ]
    second = ok(client, env, "breakdown", property="event:page", limit="2", page="2", **CUSTOM)
    assert second["results"] == pages[2:4]
    assert ok(client, env, "breakdown", property="event:page", page="99", **CUSTOM) == {
        "results": []
    }


def test_breakdowns_by_visit_properties(client: TestClient, env: Env) -> None:
    def rows(name: str, **params: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = ok(
            client, env, "breakdown", property=name, **(CUSTOM | params)
        )["results"]
        return found

    assert rows("visit:country") == [
        {"country": "DE", "visitors": 4},
        {"country": "US", "visitors": 1},
    ]
    assert rows("visit:browser_version") == [
        {"browser": "Chrome", "browser_version": "120", "visitors": 3},
        {"browser": "Firefox", "browser_version": "121", "visitors": 2},
    ]
    assert rows("visit:device", metrics="visitors,visits,pageviews") == [
        {"device": "Desktop", "pageviews": 7, "visitors": 5, "visits": 5}
    ]
    # No row for an empty UTM value, as Plausible leaves it out.
    assert rows("visit:utm_source") == [{"utm_source": "news", "visitors": 1}]
    assert rows("visit:browser", metrics="bounce_rate,visitors") == [
        {"bounce_rate": 50, "browser": "Firefox", "visitors": 2},
        {"bounce_rate": 33, "browser": "Chrome", "visitors": 3},
    ]


def test_docs_example_filters(client: TestClient, env: Env) -> None:
    def visitors(filters: str, metric: str = "visitors") -> int:
        answer = ok(client, env, "aggregate", filters=filters, metrics=metric, **CUSTOM)
        return int(answer["results"][metric]["value"])

    # docs example "Number of visitors to a specific page": event:page==/order/confirmation
    assert visitors("event:page==/pricing") == 2
    assert visitors("visit:browser==Firefox") == 2
    assert visitors("visit:browser==Firefox;visit:country!=US") == 2
    assert visitors("visit:browser!=Firefox") == 3
    assert visitors("visit:country==US|DE") == 5
    assert visitors("visit:source==google.com|news") == 2
    assert visitors("visit:source==Direct / None") == 2
    assert visitors("visit:device==Desktop") == 5
    assert visitors("visit:utm_campaign==campaign\\|one") == 0
    # Wildcards: the pages of the visits, and the pageviews themselves.
    assert visitors("event:page==/docs*") == 1
    assert visitors("event:page==/docs*", "pageviews") == 2
    assert visitors("event:page!=/docs*", "pageviews") == 5
    assert visitors("event:page==/b*|/docs/*", "pageviews") == 2
    assert visitors("event:props:plan==pro") == 1
    assert visitors(" visit:browser == Firefox ;") == 2  # spaces and an empty part


def test_docs_example_monthly_traffic_from_a_source(client: TestClient, env: Env) -> None:
    # docs example "Monthly traffic from Google": period=6mo&filters=visit:source==Google
    answer = ok(
        client,
        env,
        "timeseries",
        period="6mo",
        date="2024-01-31",
        filters="visit:source==google.com",
    )
    assert answer["results"][-1] == {"date": "2024-01-01", "visitors": 1}
    assert len(answer["results"]) == 6


def test_goals_and_conversion_rates(client: TestClient, env: Env) -> None:
    signup = ok(
        client, env, "aggregate", filters="event:goal==signup",
        metrics="visitors,events,conversion_rate", **CUSTOM,
    )  # fmt: skip
    assert signup["results"] == {
        "conversion_rate": {"value": 40.0},  # 2 of the 5 visitors
        "events": {"value": 2},
        "visitors": {"value": 2},
    }
    pricing = ok(client, env, "aggregate", filters="event:goal==Visit /pricing", **CUSTOM)
    assert pricing["results"] == {"visitors": {"value": 2}}
    by_goal = ok(
        client, env, "breakdown", property="event:goal", metrics="visitors,conversion_rate",
        **CUSTOM,
    )  # fmt: skip
    assert by_goal["results"] == [
        {"conversion_rate": 40.0, "goal": "Visit /pricing", "visitors": 2},
        {"conversion_rate": 40.0, "goal": "signup", "visitors": 2},
    ]
    # docs example "Breakdown custom event by custom properties"
    plans = ok(
        client, env, "breakdown", property="event:props:plan", filters="event:goal==signup",
        **CUSTOM,
    )  # fmt: skip
    assert plans["results"] == [{"plan": "free", "visitors": 1}, {"plan": "pro", "visitors": 1}]
    series = ok(
        client, env, "timeseries", filters="event:goal==signup", metrics="conversion_rate",
        **CUSTOM,
    )  # fmt: skip
    assert series["results"] == [
        {"conversion_rate": 50.0, "date": "2024-01-10"},
        {"conversion_rate": 50.0, "date": "2024-01-11"},
        {"conversion_rate": 0.0, "date": "2024-01-12"},
    ]
    # By anything else: Plausible's group conversion rate, of each source's own visitors.
    signup_by = {"property": "visit:source", "filters": "event:goal==signup"}
    sources = ok(
        client, env, "breakdown", metrics="visitors,conversion_rate", **signup_by, **CUSTOM
    )
    assert sources["results"] == [
        {"conversion_rate": 50.0, "source": "Direct / None", "visitors": 1},  # V3 of V3, V5
        {"conversion_rate": 100.0, "source": "google.com", "visitors": 1},
    ]
    by_rate = {"metrics": "conversion_rate,visitors", **signup_by, **CUSTOM}
    assert [row["source"] for row in ok(client, env, "breakdown", **by_rate)["results"]] == [
        "google.com",
        "Direct / None",
    ]
    paged = ok(client, env, "breakdown", limit="1", page="2", **by_rate)["results"]
    assert [row["source"] for row in paged] == ["Direct / None"]
    compared = ok(
        client, env, "aggregate", filters="event:goal==signup", metrics="conversion_rate",
        compare="previous_period", **CUSTOM,
    )  # fmt: skip
    assert compared["results"] == {
        "conversion_rate": {"change": 40.0, "comparison_value": 0.0, "value": 40.0}
    }


def test_periods_in_the_sites_zone(client: TestClient, env: Env) -> None:
    def visitors(site: str, **params: str) -> int:
        return int(
            ok(client, env, "aggregate", site_id=site, **params)["results"]["visitors"]["value"]
        )

    # 23:30 UTC on the 10th is the 11th in Berlin.
    assert visitors(BERLIN, period="day", date="2024-01-11") == 1
    assert visitors(BERLIN, period="day", date="2024-01-10") == 0
    # 7d and 30d end the day before `date`; month and 6mo/12mo are whole months.
    assert visitors(A, period="7d", date="2024-01-12") == 6  # 5th-11th
    assert visitors(A, period="30d", date="2024-01-13") == 7
    assert visitors(A, period="month", date="2024-01-01") == 7
    assert visitors(A, period="12mo", date="2024-01-01") == 7
    assert visitors(A, period="day", date="20240110") == 2  # ISO 8601's basic form
    # Without `date`: relative to today, 30d by default.
    assert visitors(RECENT) == 0  # its one visit is today, which 30d leaves out
    assert visitors(RECENT, period="day") == 1


# --- bad input: Plausible's messages and statuses --------------------------------------------


PROPERTIES_DOCS = f"{DOCS}#properties"
PERIODS_DOCS = f"See {DOCS}#time-periods"
GOALS_DOCS = f"Find out how to configure goals here: {DOCS}#filtering-by-goals"
DATE = "Please specify a valid date in ISO-8601 format."
LIMIT = "Please provide limit as a number between 1 and 1000."
OS = {"property": "visit:os"}
BAD: list[tuple[str, dict[str, str], str]] = [
    ("aggregate", {"period": "3d"}, "Error parsing `period` parameter: invalid period `3d`. "
     f"Please find accepted values in our docs: {DOCS}#time-periods"),
    ("aggregate", {"date": "2024-13-01"}, f"Error parsing `date` parameter: invalid_date. {DATE}"),
    ("aggregate", {"date": "tomorrow"}, f"Error parsing `date` parameter: invalid_format. {DATE}"),
    ("aggregate", {"period": "custom"},
     f"The `date` parameter is required when using a custom period. {PERIODS_DOCS}"),
    ("aggregate", {"period": "custom", "date": "2024-01-10"},
     "Invalid format for `date` parameter. When using a custom period, please include two "
     f"ISO-8601 formatted dates joined by a comma. {PERIODS_DOCS}"),
    ("aggregate", {"period": "custom", "date": "2024-01-12,2024-01-10"},
     "Invalid `date` parameter: the last day 2024-01-10 is before the first day 2024-01-12."),
    ("aggregate", {"period": "custom", "date": "2000-01-01,2024-01-10"},
     "Invalid `date` parameter: more than 3660 days."),
    ("aggregate", {"date": "0001-01-01"},
     "Invalid `date` parameter: out of the calendar's range."),
    ("aggregate", {"metrics": "visitors,visitors"}, "Metrics cannot be queried multiple times."),
    ("aggregate", {"metrics": "visitors,uniques"}, "The metric `uniques` is not recognized. "
     f"Find valid metrics from the documentation: {DOCS}#metrics"),
    ("aggregate", {"metrics": "views_per_visit", "filters": "event:page==/"},
     "Metric `views_per_visit` cannot be queried with a filter on `event:page`."),
    ("aggregate", {"metrics": "visits", "filters": "event:goal==signup"},
     "Session metric `visits` cannot be queried when using a filter on `event:goal`."),
    ("aggregate", {"metrics": "conversion_rate"},
     "Metric `conversion_rate` can only be queried in a goal breakdown or with a goal filter"),
    ("aggregate", {"metrics": "time_on_page"},
     "Metric `time_on_page` can only be queried in a page breakdown or with a page filter."),
    ("aggregate", {"filters": "visit:nope==x"},
     f"Invalid filter property 'visit:nope'. Please provide a valid filter property: "
     f"{PROPERTIES_DOCS}"),
    ("aggregate", {"filters": "visit:browser=Firefox"},
     "Invalid filter expression 'visit:browser=Firefox'. Write property==value or "
     "property!=value, joined by ; (e.g. visit:browser==Firefox;visit:country!=US). "
     f"See {DOCS}#filtering"),
    ("aggregate", {"filters": "visit:country==Germany"}, "Invalid visit:country filter, "
     "visit:country needs to be a valid 2-letter country code."),
    ("aggregate", {"filters": "event:goal==Nope"},
     f"The goal `Nope` is not configured for this site. {GOALS_DOCS}"),
    ("aggregate", {"filters": "event:goal==Visit /nope"},
     f"The pageview goal for the pathname `/nope` is not configured for this site. {GOALS_DOCS}"),
    ("timeseries", {"interval": "week"}, "Error parsing `interval` parameter: invalid interval "
     "`week`. Valid intervals are `day`, `month`"),
    ("breakdown", {}, "The `property` parameter is required. Please provide at least one "
     "property to show a breakdown by."),
    ("breakdown", {"property": "visit:nope"}, "Invalid property 'visit:nope'. Please provide a "
     f"valid property for the breakdown endpoint: {PROPERTIES_DOCS}"),
    ("breakdown", {"property": "event:props:plan", "metrics": "bounce_rate"},
     "Session metric `bounce_rate` cannot be queried for breakdown by `event:props:plan`."),
    ("breakdown", OS | {"metrics": "views_per_visit"},
     "Metric `views_per_visit` is not supported in breakdown queries."),
    ("breakdown", OS | {"limit": "1001"}, LIMIT),
    ("breakdown", OS | {"limit": "0"}, LIMIT),
    ("breakdown", OS | {"limit": "10abc"}, LIMIT),
    ("breakdown", OS | {"page": "0"}, "Please provide page as a positive number."),
    ("breakdown", OS | {"page": "9" * 5000}, "Please provide page as a positive number."),
]  # fmt: skip


@pytest.mark.parametrize(("endpoint", "params", "message"), BAD)
def test_bad_parameters_get_plausibles_messages(
    client: TestClient, env: Env, endpoint: str, params: dict[str, str], message: str
) -> None:
    assert refused(client, env, endpoint, **params) == message


NOT_YET: list[tuple[str, dict[str, str], str]] = [
    ("aggregate", {"filters": "event:page==" + "x*" * 200}, "filters: "),
]


@pytest.mark.parametrize(("endpoint", "params", "starts"), NOT_YET)
def test_what_picolytics_cannot_answer_yet_is_a_clear_400(
    client: TestClient, env: Env, endpoint: str, params: dict[str, str], starts: str
) -> None:
    assert refused(client, env, endpoint, **(CUSTOM | params)).startswith(starts)


def test_keys_and_sites(client: TestClient, env: Env) -> None:
    path = f"{STATS}/aggregate"
    missing = get(client, None, path, site_id=A)
    assert (missing.status_code, missing.json()) == (401, {"error": auth.MISSING_KEY})
    invalid = {"error": auth.INVALID_KEY}
    for key in ("pico_" + "x" * 43, "not-a-key", env.revoked):
        wrong = get(client, key, path, site_id=A)
        assert (wrong.status_code, wrong.json()) == (401, invalid), key
    # Outside the key's scope and unknown: the same answer, so nothing tells them apart.
    outside = get(client, env.scoped, path, site_id=A)
    unknown = get(client, env.key, path, site_id="nowhere.example")
    nul = get(client, env.key, path, site_id="a\x00b")
    assert (outside.status_code, outside.json()) == (401, invalid)
    assert (unknown.status_code, unknown.content) == (401, outside.content)
    assert (nul.status_code, nul.content) == (401, outside.content)
    assert get(client, env.scoped, path, site_id=B).json() == {
        "results": {"visitors": {"value": 0}}
    }
    assert get(client, env.key, path, site_id="WWW.Example.COM").status_code == 200
    no_site = get(client, env.key, path)
    assert no_site.status_code == 400
    assert no_site.json() == {
        "error": "Missing site ID. Please provide the required site_id parameter with your request."
    }


def test_the_rate_limit_is_shared_with_v2(env: Env) -> None:
    limited = TestClient(create_app(Config(api_rate_limit=3), conninfo=env.conninfo))
    v2 = limited.post(
        "/api/v2/query",
        json={"site_id": A, "metrics": ["visitors"], "date_range": "day"},
        headers={"Authorization": f"Bearer {env.key}"},
    )
    assert v2.status_code == 200
    statuses = [
        get(limited, env.key, f"{STATS}/aggregate", site_id=A).status_code for _ in range(3)
    ]
    assert statuses == [200, 200, 429]
    over = get(limited, env.key, "/api/v1/sites")
    assert over.status_code == 429
    assert 18 <= int(over.headers["retry-after"]) <= 20  # a request every 20 s
    assert over.json() == {
        "error": "Too many API requests. Your API key is limited to 3 requests per minute."
    }
    assert get(limited, env.scoped, f"{STATS}/aggregate", site_id=B).status_code == 200


# --- GET /api/v1/sites -----------------------------------------------------------------------


def test_docs_example_sites(client: TestClient, env: Env) -> None:
    every = get(client, env.key, "/api/v1/sites")
    assert every.status_code == 200
    assert every.json() == {
        "sites": [
            {"domain": BERLIN, "timezone": "Europe/Berlin"},
            {"domain": A, "timezone": "UTC"},
            {"domain": B, "timezone": "UTC"},
            {"domain": RECENT, "timezone": "UTC"},
        ],
        "meta": {"after": None, "before": None, "limit": 100},
    }
    scoped = get(client, env.scoped, "/api/v1/sites").json()
    assert scoped["sites"] == [{"domain": B, "timezone": "UTC"}]


def test_sites_are_paged_by_cursors(client: TestClient, env: Env) -> None:
    first = get(client, env.key, "/api/v1/sites", limit="3").json()
    assert [s["domain"] for s in first["sites"]] == [BERLIN, A, B]
    assert first["meta"]["before"] is None and first["meta"]["limit"] == 3
    second = get(client, env.key, "/api/v1/sites", limit="3", after=first["meta"]["after"]).json()
    assert [s["domain"] for s in second["sites"]] == [RECENT]
    assert second["meta"]["after"] is None
    back = get(client, env.key, "/api/v1/sites", limit="3", before=second["meta"]["before"]).json()
    assert back == first
    for params in (
        {"limit": "0"},
        {"limit": "101"},
        {"after": "%%%"},
        {"after": "x", "before": "y"},
    ):
        assert get(client, env.key, "/api/v1/sites", **params).status_code == 400


# --- the API equals the query layer ----------------------------------------------------------

PROPERTIES = {"visit:source": "source", "visit:browser": "browser", "visit:os": "os",
              "visit:entry_page": "entry_page", "event:page": "page"}  # fmt: skip
FILTERS: dict[str, Condition] = {
    "visit:browser==Chrome": Condition("browser", "is", ("Chrome",)),
    "visit:country!=US": Condition("country", "is_not", ("US",)),
    "visit:source==Direct / None|google.com": Condition("source", "is", ("(direct)", "google.com")),
    "event:page==/docs*": Condition("page", "matches", ("^/docs.*$",)),
    "event:props:plan==pro": Condition("prop", "is", ("pro",), "plan"),
}
COUNTS = ["visitors", "visits", "pageviews", "events"]


@st.composite
def generated(draw: st.DrawFn) -> dict[str, str]:
    endpoint = draw(st.sampled_from(["aggregate", "timeseries", "breakdown"]))
    names = draw(st.lists(st.sampled_from(sorted(FILTERS)), max_size=2, unique=True))
    allowed = [*COUNTS, "bounce_rate", "visit_duration"]
    if any("props" in name for name in names):
        allowed = ["visitors", "pageviews", "events"]
    params = {"endpoint": endpoint, "site_id": A, "period": "custom"}
    if endpoint == "breakdown":
        params["property"] = draw(st.sampled_from(sorted(PROPERTIES)))
        if params["property"] == "event:page":
            allowed = [m for m in allowed if m in COUNTS]
    params["metrics"] = ",".join(
        draw(st.lists(st.sampled_from(allowed), min_size=1, max_size=3, unique=True))
    )
    first = draw(st.sampled_from(["2024-01-07", "2024-01-09", "2024-01-10"]))
    params["date"] = f"{first},2024-01-12"
    if names:
        params["filters"] = ";".join(names)
    return params


def layer_answer(conninfo: str, params: dict[str, str]) -> Result:
    site_id = int(query(conninfo, "SELECT site_id FROM sites WHERE domain = %s", (A,))[0][0])
    first = date.fromisoformat(params["date"].split(",")[0])
    metrics: list[Any] = []
    for metric in params["metrics"].split(","):
        needs = ["bounce_rate", "bounces", "visits"] if metric == "bounce_rate" else [metric]
        metrics += [m for m in needs if m not in metrics]
    conditions = [FILTERS[name] for name in params.get("filters", "").split(";") if name]
    breakdown = None
    if "property" in params:
        breakdown = Breakdown(PROPERTIES[params["property"]])  # type: ignore[arg-type]
    filters: Filter | None = None
    if conditions:
        filters = conditions[0] if len(conditions) == 1 else And(tuple(conditions))
    asked = Query(
        (site_id,), days(first, date(2024, 1, 12)), tuple(metrics),
        interval="day" if params["endpoint"] == "timeseries" else None,
        breakdown=breakdown, filters=filters, limit=100 if breakdown else None,
    )  # fmt: skip

    async def ask() -> Result:
        async with await AsyncConnection.connect(conninfo, autocommit=True) as connection:
            return await run_query(connection, asked)

    return run(ask())


def plausible_values(metrics: list[str], values: Mapping[Any, Any]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for metric in metrics:
        if metric == "bounce_rate":
            visits = values.get("visits") or 0
            found[metric] = round(100 * (values.get("bounces") or 0) / visits) if visits else 0
        elif metric == "visit_duration":
            found[metric] = round(values.get(metric) or 0)
        else:
            found[metric] = values.get(metric) or 0
    return found


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(params=generated())
def test_the_api_equals_the_query_layer(
    client: TestClient, env: Env, params: dict[str, str]
) -> None:
    endpoint = params.pop("endpoint")
    answer = ok(client, env, endpoint, **params)["results"]
    result = layer_answer(env.conninfo, params | {"endpoint": endpoint})
    metrics = params["metrics"].split(",")
    if endpoint == "aggregate":
        row = result.rows[0].metrics if result.rows else {}
        assert {m: v["value"] for m, v in answer.items()} == plausible_values(metrics, row)
    elif endpoint == "timeseries":
        found = {r.time.isoformat(): plausible_values(metrics, r.metrics) for r in result.rows}  # type: ignore[union-attr]
        for bucket in answer:
            label = bucket.pop("date")
            assert bucket == found.get(label, dict.fromkeys(metrics, 0)), label
    else:
        key = params["property"].split(":")[1]
        expected = []
        for r in result.rows:
            value = "Direct / None" if r.value == "(direct)" else r.value
            expected.append({key: value} | plausible_values(metrics, r.metrics))
        if key == "entry_page":
            expected = [row for row in expected if row[key] != ""]
        assert answer == expected


# --- fuzzed query strings: never a 500 -------------------------------------------------------

WORDS = st.sampled_from(
    ["visitors", "visits", "pageviews", "bounce_rate", "conversion_rate", "time_on_page",
     "views_per_visit", "events", "visit:source", "visit:country", "visit:city", "event:page",
     "event:goal", "event:props:plan", "event:name", "==", "!=", "|", ";", "*", "\\|", ",",
     "day", "7d", "30d", "month", "6mo", "12mo", "custom", "2024-01-10", "2024-01-12", "0",
     "-1", "1000", "signup", "Visit /pricing", "US", "Chrome", "(not set)", "Direct / None"]
)  # fmt: skip
VALUES = st.lists(WORDS | st.text(max_size=5), max_size=6).map("".join)
PARAMS = st.fixed_dictionaries(
    {"site_id": st.sampled_from([A, A, B, "nowhere.example", ""])},
    optional={
        name: VALUES
        for name in ("period", "date", "metrics", "filters", "property", "interval", "limit",
                     "page", "compare")
    },
)  # fmt: skip


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    endpoint=st.sampled_from(["aggregate", "timeseries", "breakdown", "realtime/visitors"]),
    params=PARAMS,
)
def test_fuzzed_query_strings_never_fail(
    client: TestClient, env: Env, endpoint: str, params: dict[str, str]
) -> None:
    response = get(client, env.key, f"{STATS}/{endpoint}", **params)
    assert response.status_code in (200, 400, 401), response.text
    if response.status_code != 200:
        message = response.json()["error"]
        assert message and len(message) < 1000


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
RETURNING 1
"""
# Seconds of work on 2 cores: 100 wildcards on each of 50,000 long paths.
SLOW = {
    "site_id": "big.test",
    "period": "custom",
    "date": "2024-01-10,2024-01-20",
    "metrics": "visitors,pageviews",
    "filters": "event:page==" + "|".join(f"*zz{n}*" for n in range(100)),
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
        assert len(query(conninfo, BIG)) == 50_000
        yield conninfo, create_key(conninfo, "big")


def test_a_query_past_the_timeout_is_503(big: tuple[str, str]) -> None:
    conninfo, key = big
    app = create_app(Config(api_rate_limit=0, query_timeout_sec=0.2), conninfo=conninfo)
    response = get(TestClient(app), key, f"{STATS}/aggregate", **SLOW)
    assert response.status_code == 503
    assert response.json() == {
        "error": "The query ran past the time limit of 0.2 s and was stopped: ask for a shorter "
        "period or fewer rows, or try again later."
    }
    assert query(conninfo, ACTIVE) == [(0,)]


def test_a_client_that_goes_away_cancels_its_query(big: tuple[str, str]) -> None:
    conninfo, key = big
    app = create_app(Config(api_rate_limit=0, query_timeout_sec=60), conninfo=conninfo)
    gone = asyncio.Event()
    sent: list[dict[str, Any]] = []
    bodies = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> dict[str, Any]:
        if bodies:
            return bodies.pop()
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def scenario() -> tuple[int, int, int]:
        path = f"{STATS}/aggregate"
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
            "scheme": "http", "path": path, "raw_path": path.encode(),
            "query_string": urlencode(SLOW).encode(), "root_path": "",
            "headers": [(b"authorization", f"Bearer {key}".encode())],
            "client": ("127.0.0.1", 1), "server": ("testserver", 80),
        }  # fmt: skip
        handling = asyncio.create_task(app(scope, receive, send))  # type: ignore[arg-type]
        running = 0
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
