"""Imported data through the Stats API (docs/imports.md, docs/api-v2.md, docs/api-v1.md):
v2's `include.imports` and its `meta` (`imports_included`, `imports_skip_reason`,
`imports_warning` in Plausible's words), v1's `with_imported=true`.

Site example.com: native visits on 2024-01-10 (visitor 1, direct, Chrome) and
2024-01-11 (visitor 2, from google.com); imported 2024-01-05 (10 visitors, 4 of them
direct, 6 from Google, all Chrome) and 2024-01-06 (5 visitors). other.test has no import.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import urlencode

import pytest
from helpers.events import event, run, write
from helpers.imported import add_import
from starlette.testclient import TestClient

from picolytics.api.v2_response import IMPORTS_WARNINGS
from picolytics.config import Config
from picolytics.serve.app import create_app
from picolytics.storage import api_keys

A, B = "example.com", "other.test"
RANGE = ["2024-01-01", "2024-01-31"]


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.fixture(scope="module")
def env(module_database: str) -> tuple[str, str]:
    run(
        write(
            module_database,
            [
                event(at("2024-01-10 10:00"), 1, path="/"),
                event(at("2024-01-11 10:00"), 2, path="/", referrer_host="google.com"),
                event(at("2024-01-10 10:00"), 3, path="/", site=B),
            ],
        )
    )
    d0, d1 = date(2024, 1, 5), date(2024, 1, 6)
    add_import(
        module_database,
        A,
        {
            "imported_visitors": [(d0, 10, 30, 4, 12, 600), (d1, 5, 9, 2, 6, 300)],
            "imported_sources": [
                (d0, "", "", "", "", "", "", "", 10, 4, 5, 100, 2),
                (d0, "Google", "google.com", "", "", "", "", "", 20, 6, 7, 500, 2),
            ],
            "imported_browsers": [(d0, "Chrome", "120.0", 10, 12, 600, 4, 30)],
        },
    )
    key = api_keys.connected(module_database, lambda c: api_keys.create(c, "all", ())).clear
    return module_database, key


@pytest.fixture(scope="module")
def client(env: tuple[str, str]) -> TestClient:
    return TestClient(create_app(Config(api_rate_limit=0), conninfo=env[0]))


def v2(client: TestClient, key: str, **fields: Any) -> dict[str, Any]:
    body = {"site_id": A, "metrics": ["visitors"], "date_range": RANGE, **fields}
    response = client.post(
        "/api/v2/query",
        content=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def v1(client: TestClient, key: str, endpoint: str, **params: str) -> Any:
    query = urlencode({"site_id": A, "period": "custom", "date": "2024-01-01,2024-01-31"} | params)
    response = client.get(
        f"/api/v1/stats/{endpoint}?{query}", headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_v2_include_imports_adds_the_imported_days(
    client: TestClient, env: tuple[str, str]
) -> None:
    key = env[1]
    plain = v2(client, key)
    assert plain["results"] == [{"dimensions": [], "metrics": [2]}]
    assert plain["meta"] == {}
    both = v2(client, key, include={"imports": True})
    assert both["results"] == [{"dimensions": [], "metrics": [2 + 15]}]
    assert both["meta"] == {"imports_included": True}
    sources = v2(client, key, dimensions=["visit:source"], include={"imports": True})
    assert {tuple(r["dimensions"]): r["metrics"] for r in sources["results"]} == {
        ("Direct / None",): [1 + 4],
        ("google.com",): [1],
        ("Google",): [6],
    }


def test_v2_meta_says_why_imports_were_left_out(client: TestClient, env: tuple[str, str]) -> None:
    key = env[1]
    mixed = v2(
        client, key, dimensions=["visit:browser"], filters=[["is", "visit:source", ["Google"]]],
        include={"imports": True},
    )  # fmt: skip
    assert mixed["meta"] == {
        "imports_included": False,
        "imports_skip_reason": "unsupported_query",
        "imports_warning": IMPORTS_WARNINGS["unsupported_query"],
    }
    assert mixed["results"] == []  # the native answer: no visit from "Google"
    assert "query parameters are not supported" in mixed["meta"]["imports_warning"]
    hourly = v2(
        client, key, date_range=["2024-01-05", "2024-01-05"], dimensions=["time:hour"],
        include={"imports": True},
    )  # fmt: skip
    assert hourly["meta"]["imports_skip_reason"] == "unsupported_interval"
    assert hourly["meta"]["imports_warning"].startswith("Imported stats are not included")
    later = v2(client, key, date_range=["2024-02-01", "2024-02-29"], include={"imports": True})
    assert later["meta"] == {"imports_included": False, "imports_skip_reason": "out_of_range"}
    other = v2(client, key, site_id=B, include={"imports": True})
    assert other["meta"] == {"imports_included": False, "imports_skip_reason": "no_imported_data"}


def test_v1_with_imported(client: TestClient, env: tuple[str, str]) -> None:
    key = env[1]
    metrics = "visitors,visits,pageviews,bounce_rate"
    plain = v1(client, key, "aggregate", metrics=metrics)["results"]
    both = v1(client, key, "aggregate", metrics=metrics, with_imported="true")["results"]
    assert plain["visitors"] == {"value": 2}
    assert both["visitors"] == {"value": 2 + 15}
    assert both["visits"] == {"value": 2 + 18}
    assert both["pageviews"] == {"value": 2 + 39}
    assert both["bounce_rate"] == {"value": round(100 * (2 + 6) / (2 + 18))}
    assert v1(client, key, "aggregate", with_imported="false")["results"] == {
        "visitors": {"value": 2}
    }
    series = v1(client, key, "timeseries", with_imported="true")["results"]
    by_day = {row["date"]: row["visitors"] for row in series}
    assert by_day["2024-01-05"] == 10 and by_day["2024-01-06"] == 5 and by_day["2024-01-10"] == 1
    browsers = v1(client, key, "breakdown", property="visit:browser", with_imported="true")
    assert browsers["results"] == [{"browser": "Chrome", "visitors": 2 + 10}]
