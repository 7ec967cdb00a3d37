"""has_done and has_not_done in POST /api/v2/query (api/v2_filters.py, v2_translate.py,
v2_rules.py): Plausible's request shapes as the query layer's HasDone, their answers
over HTTP on the hand-made dataset of tests/test_stats_behavioral.py (March 2024:
V1 signs up with plan pro after viewing /pricing, V2 views /pricing and signs up with
plan free, V3 signs up with plan pro the day after its /blog, V4 views /docs; S5's
signup belongs to no visit), and the 400s of Plausible's rules.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import Any

import pytest
from helpers.events import run, write
from starlette.testclient import TestClient
from test_stats_behavioral import PRICING, PRO, SIGNUP, dataset

from picolytics.api.v2_query import SiteContext
from picolytics.api.v2_request import parse
from picolytics.api.v2_translate import translate
from picolytics.config import Config
from picolytics.errors import ApiRequestError
from picolytics.serve.app import create_app
from picolytics.stats.query import And, Condition, Filter, HasDone, Not
from picolytics.storage import api_keys

SITE = "example.com"
DAYS = ["2024-03-04", "2024-03-05"]
URL = "/api/v2/query"


def body(**fields: Any) -> dict[str, Any]:
    return {"site_id": SITE, "metrics": ["visitors"], "date_range": DAYS, **fields}


def translated(query_body: dict[str, Any]) -> Filter | None:
    query = parse(
        query_body, site=SiteContext("UTC", date(2024, 1, 1)), now=datetime(2024, 3, 6, tzinfo=UTC)
    )
    return translate(query, (1,)).main.filters


# --- Plausible's shapes as the query layer's filters (no database) -------------------------


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ([["has_done", ["is", "event:name", ["signup"]]]], HasDone(SIGNUP)),
        ([["has_not_done", ["is", "event:name", ["signup"]]]], HasDone(SIGNUP, negated=True)),
        (
            # Plausible's example (PR 4980) without its goals: /pricing pageviews of
            # visits that signed up, and did not pick the free plan.
            [
                ["is", "event:page", ["/pricing"]],
                ["has_done", ["is", "event:name", ["signup"]]],
                ["has_not_done", ["is", "event:props:plan", ["free"]]],
            ],
            And(
                (
                    PRICING,
                    HasDone(SIGNUP),
                    HasDone(Condition("prop", "is", ("free",), "plan"), negated=True),
                )
            ),
        ),
        (
            [
                [
                    "has_done",
                    [
                        "and",
                        [["is", "event:name", ["signup"]], ["is", "event:props:plan", ["pro"]]],
                    ],
                ]
            ],
            HasDone(And((SIGNUP, PRO))),
        ),
        (
            [
                [
                    "not",
                    ["has_done", ["contains", "event:page", ["PRIC"], {"case_sensitive": False}]],
                ]
            ],
            Not(HasDone(Condition("page", "contains", ("PRIC",), case_sensitive=False))),
        ),
    ],
)
def test_behavioral_filters_translate_to_has_done(filters: list[Any], expected: Filter) -> None:
    assert translated(body(filters=filters)) == expected


# --- over HTTP ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def key(module_database: str) -> str:
    run(write(module_database, dataset()))
    return api_keys.connected(module_database, lambda c: api_keys.create(c, "all", ())).clear


@pytest.fixture(scope="module")
def client(module_database: str, key: str) -> TestClient:
    return TestClient(create_app(Config(api_rate_limit=0), conninfo=module_database))


def post(client: TestClient, key: str, query_body: object) -> Any:
    headers = {"Authorization": f"Bearer {key}"}
    return client.post(URL, content=json.dumps(query_body).encode(), headers=headers)


def results(client: TestClient, key: str, query_body: dict[str, Any]) -> list[Any]:
    response = post(client, key, query_body)
    assert response.status_code == 200, response.text
    return [(r["dimensions"], r["metrics"]) for r in response.json()["results"]]


@pytest.mark.parametrize(
    ("query_body", "expected"),
    [
        (body(filters=[["has_done", ["is", "event:name", ["signup"]]]]), [([], [3])]),
        (body(filters=[["has_not_done", ["is", "event:name", ["signup"]]]]), [([], [1])]),
        # One event that is a signup with plan pro: V1 and V3 (V2's pro is a download).
        (
            body(
                filters=[
                    [
                        "has_done",
                        [
                            "and",
                            [["is", "event:name", ["signup"]], ["is", "event:props:plan", ["pro"]]],
                        ],
                    ]
                ]
            ),
            [([], [2])],
        ),
        # Pageviews of /pricing in visits that signed up: V1's and V2's.
        (
            body(
                metrics=["visitors", "pageviews"],
                filters=[
                    ["is", "event:page", ["/pricing"]],
                    ["has_done", ["is", "event:name", ["signup"]]],
                ],
            ),
            [([], [2, 2])],
        ),
        # Events of the visits that never viewed /pricing: V3's 2, V4's 1, and S5's
        # signup, whose session is no visit (has_not_done holds for it).
        (
            body(
                metrics=["events"], filters=[["has_not_done", ["is", "event:page", ["/pricing"]]]]
            ),
            [([], [4])],
        ),
        (
            body(
                metrics=["visits"],
                dimensions=["visit:entry_page"],
                filters=[["has_done", ["matches", "event:name", ["^sign"]]]],
            ),
            [(["/"], [1]), (["/blog"], [1]), (["/pricing"], [1])],
        ),
        # Plausible ignores behavioral filters in its views_per_visit rule.
        (
            body(
                metrics=["views_per_visit"],
                filters=[["has_done", ["is", "event:page", ["/pricing"]]]],
            ),
            [([], [1.5])],
        ),
    ],
)
def test_behavioral_answers(
    client: TestClient, key: str, query_body: dict[str, Any], expected: list[Any]
) -> None:
    assert results(client, key, query_body) == expected


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        (
            [["has_done", ["is", "visit:browser", ["Chrome"]]]],
            "#/filters/0/1: Invalid filters. Behavioral filters (has_done, has_not_done) can "
            "only be used with event dimension filters.",
        ),
        (
            [
                [
                    "has_not_done",
                    ["or", [["is", "event:page", ["/"]], ["is", "visit:source", ["x"]]]],
                ]
            ],
            "#/filters/0/1/1/1: Invalid filters. Behavioral filters (has_done, has_not_done) "
            "can only be used with event dimension filters.",
        ),
        (
            [["has_done", ["has_not_done", ["is", "event:page", ["/"]]]]],
            "#/filters/0/1: Invalid filters. Behavioral filters (has_done, has_not_done) "
            "cannot be nested.",
        ),
        (
            [["not", ["has_done", ["not", ["has_done", ["is", "event:page", ["/"]]]]]]],
            "#/filters/0/1/1/1: Invalid filters. Behavioral filters (has_done, has_not_done) "
            "cannot be nested.",
        ),
        ([["has_done"]], "#/filters/0: Invalid filter"),
        ([["has_done", ["is", "event:page", ["/"]], ["is", "event:page", ["/a"]]]], "#/filters/0"),
    ],
)
def test_bad_behavioral_filters_are_400(
    client: TestClient, key: str, filters: list[Any], message: str
) -> None:
    response = post(client, key, body(filters=filters))
    assert response.status_code == 400, response.text
    assert response.json()["error"].startswith(message)


def test_nesting_is_refused_before_any_sql() -> None:
    with pytest.raises(ApiRequestError, match="cannot be nested"):
        translated(body(filters=[["has_done", ["has_done", ["is", "event:page", ["/"]]]]]))
