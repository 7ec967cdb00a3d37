"""The engagement metrics `scroll_depth` and `time_on_page` (stats/engagement.py): the
query layer against plain SQL and against numbers counted by hand, and the Stats API v2
over HTTP (api/v2_rules.py, v2_translate.py, v2_response.py).

Site eng.test (UTC), March 2024, written through the real batch writer; `eng` is an
engagement event with its engaged time (ms) and deepest scroll (percent):

  visit visitor events                                                    source
  V1    1       5th 10:00 load /a, 10:01 eng /a 20000 40, 10:02 eng /a    (direct)
                10000 70, 10:03 nav /b, 10:04 eng /b 5000 100
  V2    2       5th 12:00 load /a, 12:00:30 eng /a 8000 (no depth),       (direct)
                12:01 eng /a 4000 20
  V3    3       6th 09:00 load /a, 09:01 eng /a 1000 55                   google.com
  V4    4       6th 10:00 load /b                                         (direct)

By page: /a scroll depth (70 + 20 + 55) / 3 = 48.3, time on page (30 + 12 + 1) / 3 =
14.3 s; /b 100 and 5.0 s (V4 reported nothing). In all: per visit over its pages,
(100 + 20 + 55) / 3 = 58.3 and (35 + 12 + 1) / 3 = 16.0 s.

The metrics of visits by page (stats/engagement_merge.py) are those of the visits that
entered on it: /a is V1, V2 and V3's entry page, /b V4's.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from helpers.database import query as sql_rows
from helpers.events import event, run, write
from psycopg import AsyncConnection
from starlette.testclient import TestClient

from picolytics.config import Config
from picolytics.dimensions import Metric
from picolytics.errors import QueryError
from picolytics.events import QueuedEvent
from picolytics.serve.app import create_app
from picolytics.stats.engine import run as run_query
from picolytics.stats.query import Breakdown, Condition, HasDone, Period, Query, Result
from picolytics.storage import api_keys
from picolytics.storage.rollup import roll_day

SITE = "eng.test"
PERIOD = Period(datetime(2024, 3, 5, tzinfo=UTC), datetime(2024, 3, 7, tzinfo=UTC))


def at(text: str) -> datetime:
    return datetime.fromisoformat(f"2024-03-{text}").replace(tzinfo=UTC)


def eng(when: str, visitor: int, path: str, ms: int, depth: int | None) -> QueuedEvent:
    return event(
        at(when), visitor, name="engagement", path=path, site=SITE, engaged_ms=ms,
        scroll_depth=depth,
    )  # fmt: skip


def dataset() -> list[QueuedEvent]:
    return [
        event(at("05 10:00"), 1, path="/a", site=SITE),
        eng("05 10:01", 1, "/a", 20_000, 40),
        eng("05 10:02", 1, "/a", 10_000, 70),
        event(at("05 10:03"), 1, name="nav", path="/b", site=SITE),
        eng("05 10:04", 1, "/b", 5_000, 100),
        event(at("05 12:00"), 2, path="/a", site=SITE),
        eng("05 12:00:30", 2, "/a", 8_000, None),
        eng("05 12:01", 2, "/a", 4_000, 20),
        event(at("06 09:00"), 3, path="/a", site=SITE, referrer_host="google.com"),
        eng("06 09:01", 3, "/a", 1_000, 55),
        event(at("06 10:00"), 4, path="/b", site=SITE),
    ]


@pytest.fixture(scope="module")
def conninfo(module_database: str) -> str:
    run(write(module_database, dataset()))
    return module_database


@pytest.fixture(scope="module")
def site_id(conninfo: str) -> int:
    found: int = sql_rows(conninfo, "SELECT site_id FROM sites WHERE domain = %s", (SITE,))[0][0]
    return found


def ask(conninfo: str, query: Query) -> Result:
    async def go() -> Result:
        async with await AsyncConnection.connect(conninfo) as connection:
            return await run_query(connection, query)

    return run(go())


def table(result: Result) -> list[tuple[Any, ...]]:
    return [(row.time, row.value, *row.metrics.values()) for row in result.rows]


# The definitions in plain SQL, on their own: per visit (and page) the deepest scroll
# and the engaged time of its engagement events, averaged over the visits.
PLAIN = """
SELECT key, round(avg(depth), 1), round(avg(engaged) / 1000.0, 1)
FROM (SELECT {key} AS key, session_id,
             max(scroll_depth) FILTER (WHERE scroll_depth BETWEEN 0 AND 100) AS depth,
             sum(engaged_ms) AS engaged
      FROM events
      WHERE site_id = %s AND name = 'engagement' {where}
        AND received_at >= '2024-03-05' AND received_at < '2024-03-07'
      GROUP BY {key}, session_id) per_visit
GROUP BY 1 ORDER BY 1
"""


def plain(conninfo: str, site: int, key: str, where: str = "") -> list[tuple[Any, ...]]:
    return [
        (k, float(d) if d is not None else None, float(t) if t is not None else None)
        for k, d, t in sql_rows(conninfo, PLAIN.format(key=key, where=where), (site,))
    ]


METRICS: tuple[Metric, ...] = ("scroll_depth", "time_on_page")


def test_by_page_equals_plain_sql_and_the_hand_count(conninfo: str, site_id: int) -> None:
    result = ask(
        conninfo,
        Query(
            (site_id,), PERIOD, METRICS, breakdown=Breakdown("page"), order_by=(("value", "asc"),)
        ),
    )
    assert [
        (r.value, r.metrics["scroll_depth"], r.metrics["time_on_page"]) for r in result.rows
    ] == [
        ("/a", 48.3, 14.3),
        ("/b", 100.0, 5.0),
    ]
    assert [(r.value, *r.metrics.values()) for r in result.rows] == plain(conninfo, site_id, "path")
    assert result.total_rows == 2
    assert result.path == "raw"


def test_totals_take_each_visits_deepest_scroll_over_its_pages(conninfo: str, site_id: int) -> None:
    result = ask(conninfo, Query((site_id,), PERIOD, METRICS))
    assert table(result) == [(None, None, 58.3, 16.0)]
    assert [(None, *r.metrics.values()) for r in result.rows] == plain(
        conninfo, site_id, "NULL::text"
    )


def test_a_page_filter_per_day(conninfo: str, site_id: int) -> None:
    only_a = Condition("page", "is", ("/a",))
    result = ask(conninfo, Query((site_id,), PERIOD, METRICS, interval="day", filters=only_a))
    assert table(result) == [
        (date(2024, 3, 5), None, 45.0, 21.0),
        (date(2024, 3, 6), None, 55.0, 1.0),
    ]
    expected = plain(conninfo, site_id, "(received_at AT TIME ZONE 'UTC')::date", "AND path = '/a'")
    assert [(r.time, *r.metrics.values()) for r in result.rows] == expected


def test_a_visit_filter_keeps_the_engagement_of_its_visits(conninfo: str, site_id: int) -> None:
    google = Condition("source", "is", ("google.com",))
    result = ask(
        conninfo, Query((site_id,), PERIOD, METRICS, breakdown=Breakdown("page"), filters=google)
    )
    assert [(r.value, *r.metrics.values()) for r in result.rows] == [("/a", 55.0, 1.0)]
    # has_done: the engagement of the visits that viewed /b (V1 alone).
    saw_b = HasDone(Condition("page", "is", ("/b",)))
    by_page = Query(
        (site_id,), PERIOD, METRICS, breakdown=Breakdown("page"), filters=saw_b,
        order_by=(("value", "asc"),),
    )  # fmt: skip
    assert [(r.value, *r.metrics.values()) for r in ask(conninfo, by_page).rows] == [
        ("/a", 70.0, 30.0),
        ("/b", 100.0, 5.0),
    ]
    # A custom event's condition holds for no engagement event.
    signup = Condition("event", "is", ("signup",))
    assert table(ask(conninfo, Query((site_id,), PERIOD, METRICS, filters=signup))) == [
        (None, None, None, None)
    ]


def test_with_other_metrics_ordered_and_paged(conninfo: str, site_id: int) -> None:
    query = Query(
        (site_id,), PERIOD, ("pageviews", "visitors", "scroll_depth"), breakdown=Breakdown("page"),
        order_by=(("scroll_depth", "desc"),), limit=1,
    )  # fmt: skip
    result = ask(conninfo, query)
    assert table(result) == [(None, "/b", 2, 2, 100.0)]
    assert result.total_rows == 2
    second = ask(conninfo, Query(**{**_fields(query), "offset": 1}))
    assert table(second) == [(None, "/a", 3, 3, 48.3)]
    # By default by the first metric: /a has more pageviews.
    by_default = ask(conninfo, Query(**{**_fields(query), "order_by": (), "limit": None}))
    assert [r.value for r in by_default.rows] == ["/a", "/b"]


def _fields(query: Query) -> dict[str, Any]:
    return {name: getattr(query, name) for name in Query.__dataclass_fields__}


def test_rolled_days_merge_with_the_raw_engagement(conninfo: str, site_id: int) -> None:
    async def roll() -> None:
        async with await AsyncConnection.connect(conninfo, autocommit=True) as connection:
            for day in (date(2024, 3, 5), date(2024, 3, 6)):
                await roll_day(connection, site_id, day, "UTC")

    run(roll())
    query = Query((site_id,), PERIOD, ("visits", "time_on_page"), interval="day")
    result = ask(conninfo, query)
    assert table(result) == [(date(2024, 3, 5), None, 2, 23.5), (date(2024, 3, 6), None, 2, 1.0)]
    assert result.path == "mixed"  # visits from rollups, time on page from raw rows


@pytest.mark.parametrize(
    ("metric", "breakdown", "message"),
    [
        ("scroll_depth", Breakdown("source"), "scroll_depth is a metric of pages; a breakdown by"),
        ("time_on_page", Breakdown("event"), "time_on_page is a metric of pages; a breakdown by"),
        ("bounce_rate", Breakdown("event"), "bounce_rate is a metric of visits; a breakdown by"),
        ("bounces", Breakdown("goal"), "bounces is a metric of visits; a breakdown by goal"),
    ],
)
def test_metrics_by_a_breakdown_they_have_no_meaning_for_are_refused(
    conninfo: str, site_id: int, metric: Metric, breakdown: Breakdown, message: str
) -> None:
    with pytest.raises(QueryError, match=f"^metrics: {message}") as raised:
        ask(conninfo, Query((site_id,), PERIOD, (metric,), breakdown=breakdown))
    assert raised.value.field == "metrics"


# --- the Stats API v2 over HTTP --------------------------------------------------------------


@pytest.fixture(scope="module")
def api(conninfo: str) -> tuple[TestClient, str]:
    key = api_keys.connected(conninfo, lambda c: api_keys.create(c, "eng", ())).clear
    return TestClient(create_app(Config(api_rate_limit=0), conninfo=conninfo)), key


def post(api: tuple[TestClient, str], **fields: Any) -> Any:
    client, key = api
    body = {"site_id": SITE, "date_range": ["2024-03-05", "2024-03-06"], **fields}
    headers = {"Authorization": f"Bearer {key}"}
    return client.post("/api/v2/query", content=json.dumps(body).encode(), headers=headers)


def results(response: Any) -> list[tuple[list[Any], list[Any]]]:
    assert response.status_code == 200, response.text
    return [(r["dimensions"], r["metrics"]) for r in response.json()["results"]]


def test_api_v2_by_page(api: tuple[TestClient, str]) -> None:
    answer = post(
        api, metrics=["visitors", "scroll_depth", "time_on_page"], dimensions=["event:page"],
        order_by=[["scroll_depth", "asc"]],
    )  # fmt: skip
    assert results(answer) == [(["/a"], [3, 48, 14]), (["/b"], [2, 100, 5])]


def test_api_v2_with_a_page_filter(api: tuple[TestClient, str]) -> None:
    filters = [["is", "event:page", ["/a"]]]
    assert results(post(api, metrics=["scroll_depth", "time_on_page"], filters=filters)) == [
        ([], [48, 14])
    ]
    by_day = post(api, metrics=["time_on_page"], filters=filters, dimensions=["time:day"])
    assert results(by_day) == [(["2024-03-05"], [21]), (["2024-03-06"], [1])]
    nothing = [["is", "event:page", ["/nowhere"]]]
    assert results(post(api, metrics=["scroll_depth"], filters=nothing)) == [([], [None])]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"metrics": ["scroll_depth"]},
            "#/metrics/0: Metric `scroll_depth` can only be queried with event:page filters or "
            "dimensions.",
        ),
        (
            {"metrics": ["time_on_page"], "dimensions": ["visit:source"],
             "filters": [["is", "event:page", ["/a"]]]},
            "#/metrics/0: Not supported yet by picolytics: time_on_page by visit:source: the "
            "query layer has time_on_page by event:page only.",
        ),
    ],
)  # fmt: skip
def test_api_v2_refusals(api: tuple[TestClient, str], fields: dict[str, Any], message: str) -> None:
    response = post(api, **fields)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == message


def test_decimal_free_numbers(conninfo: str, site_id: int) -> None:
    # Metric values are floats, never Decimals (JSON and the report need plain numbers).
    row = ask(conninfo, Query((site_id,), PERIOD, METRICS)).rows[0]
    assert not any(isinstance(v, Decimal) for v in row.metrics.values())
    assert all(isinstance(v, float) for v in row.metrics.values())


# --- the metrics of visits by page: those of the visits that entered on it -------------------

ENTRIES = """
SELECT entry_path, count(*), round(100.0 * count(*) FILTER (WHERE bounce) / count(*), 1),
       round(avg(duration_s), 1), round(avg(pageviews), 2)
FROM sessions
WHERE site_id = %s AND pageviews > 0
  AND started_at >= '2024-03-05' AND started_at < '2024-03-07'
GROUP BY 1 ORDER BY 1
"""


def test_visit_metrics_by_page_are_the_entry_pages(conninfo: str, site_id: int) -> None:
    # By hand: /a is where V1, V2 and V3 entered (V2 and V3 bounced), /b V4 (a bounce);
    # visitors stay the page's own (V1 saw /b too).
    query = Query(
        (site_id,), PERIOD,
        ("visitors", "bounces", "bounce_rate", "visit_duration", "views_per_visit"),
        breakdown=Breakdown("page"), order_by=(("value", "asc"),),
    )  # fmt: skip
    result = ask(conninfo, query)
    expected = sql_rows(conninfo, ENTRIES, (site_id,))
    assert [(r.value, r.metrics["visitors"], r.metrics["bounces"]) for r in result.rows] == [
        ("/a", 3, 2),
        ("/b", 2, 1),
    ]
    assert [
        (r.value, r.metrics["bounces"], r.metrics["bounce_rate"], r.metrics["visit_duration"],
         r.metrics["views_per_visit"])
        for r in result.rows
    ] == [
        (path, round(float(rate) * visits / 100), float(rate), float(duration), float(views))
        for path, visits, rate, duration, views in expected
    ]  # fmt: skip
    assert [r.metrics["bounce_rate"] for r in result.rows] == [66.7, 100.0]
    # Ordered by a visit metric, and paged.
    worst = ask(
        conninfo, Query(**{**_fields(query), "order_by": (("bounce_rate", "desc"),), "limit": 1})
    )
    assert [(r.value, r.metrics["bounce_rate"]) for r in worst.rows] == [("/b", 100.0)]
    assert worst.total_rows == 2


def test_visit_metrics_by_page_keep_the_pages_rows(conninfo: str, site_id: int) -> None:
    # With a filter on the page, the visits that saw /b entered on /a (V1) and /b
    # (V4): the row is /b's, with the visits that entered on it.
    only_b = Condition("page", "is", ("/b",))
    query = Query((site_id,), PERIOD, ("bounce_rate",), breakdown=Breakdown("page"), filters=only_b)
    assert [(r.value, r.metrics["bounce_rate"]) for r in ask(conninfo, query).rows] == [
        ("/b", 100.0)
    ]


def test_api_v2_visit_metrics_by_page(api: tuple[TestClient, str]) -> None:
    answer = post(
        api, metrics=["visits", "bounce_rate", "visit_duration"], dimensions=["event:page"],
        order_by=[["bounce_rate", "asc"]],
    )  # fmt: skip
    found = results(answer)
    assert [(d, m[:2]) for d, m in found] == [(["/a"], [3, 67]), (["/b"], [2, 100])]
    assert found[1][1][2] == 0  # V4's visit lasted no time
