"""POST /p over HTTP: statuses, limits, CORS, enrichment, privacy (docs/guarantees.md, I1-I8)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from helpers.database import query, wait_for_count
from helpers.events import CHROME_UA, CLIENT_IP, TIMEOUT
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.testclient import TestClient

from picolytics.config import Config
from picolytics.enrich.agents import AgentParser
from picolytics.enrich.geo import GeoLocator
from picolytics.enrich.visitor import SaltCache
from picolytics.ingest.clientip import ClientIp
from picolytics.ingest.endpoint import Ingest
from picolytics.serve.app import create_app
from picolytics.storage.pipeline import Pipeline

DATA = Path(__file__).parent / "data"
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1"
)
EVENT = {
    "n": "load",
    "l": "https://www.example.com/pricing?utm_source=newsletter&utm_medium=email&secret=1",
    "r": "https://search.example/?q=private",
    "lt": 640,
    "fb": 80,
    "sw": 390,
    "sh": 844,
    "tz": "Europe/London",
    "pr": 3,
    "pd": 24,
}


def body(**overrides: Any) -> str:
    return json.dumps({**EVENT, **overrides})


def post(
    client: TestClient,
    payload: str | bytes,
    *,
    content_type: str = "text/plain",
    user_agent: str = CHROME_UA,
) -> Any:
    return client.post(
        "/p", content=payload, headers={"Content-Type": content_type, "User-Agent": user_agent}
    )


@contextlib.contextmanager
def serving(conninfo: str) -> Iterator[tuple[TestClient, str]]:
    config = Config(
        geo_ip_file=str(DATA / "GeoIP2-City-Test.mmdb"), batch_max_msec=20, request_rate_limit=0
    )
    with TestClient(create_app(config, conninfo=conninfo), client=(CLIENT_IP, 50123)) as client:
        yield client, conninfo


@pytest.fixture
def served(migrated_database: str) -> Iterator[tuple[TestClient, str]]:
    with serving(migrated_database) as pair:
        yield pair


@pytest.fixture(scope="module")
def refusing(module_database: str) -> Iterator[tuple[TestClient, str]]:
    """One server for the tests whose requests are all refused (nothing is stored)."""
    with serving(module_database) as pair:
        yield pair


def test_accepted_event_is_enriched_and_stored(served: tuple[TestClient, str]) -> None:
    client, conninfo = served
    response = post(client, body())
    assert response.status_code == 202
    assert response.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in response.headers
    response = post(
        client,
        body(n="nav", l="https://example.com/docs", lt=None, fb=None),
        content_type="application/json; charset=utf-8",
    )
    assert response.status_code == 202
    wait_for_count(conninfo, "SELECT count(*) FROM events", 2)
    wait_for_count(conninfo, "SELECT sum(events) FROM sessions", 2)
    rows = query(
        conninfo,
        "SELECT d.domain, s.pageviews, s.entry_path, s.exit_path, "
        "s.referrer_host, s.utm_source, s.utm_medium, s.country, s.city, s.browser, "
        "s.os, s.device_type, s.screen_width, s.timezone "
        "FROM sessions s JOIN sites d USING (site_id)",
    )
    assert rows == [
        (
            "example.com",
            2,
            "/pricing",
            "/docs",
            "search.example",
            "newsletter",
            "email",
            "GB",
            "London",
            "Chrome",
            "Windows",
            "desktop",
            390,
            "Europe/London",
        )
    ]
    assert query(
        conninfo, "SELECT name, path, load_time_ms, ttfb_ms FROM events ORDER BY received_at"
    ) == [("load", "/pricing", 640, 80), ("nav", "/docs", None, None)]


def test_mobile_device_and_geo_of_ipv6(migrated_database: str) -> None:
    config = Config(
        geo_ip_file=str(DATA / "GeoIP2-City-Test.mmdb"), batch_max_msec=20, request_rate_limit=0
    )
    with TestClient(
        create_app(config, conninfo=migrated_database), client=("2001:218::1", 1)
    ) as client:
        assert post(client, body(), user_agent=IPHONE).status_code == 202
        wait_for_count(migrated_database, "SELECT count(*) FROM sessions", 1)
    assert query(migrated_database, "SELECT country, browser, os, device_type FROM sessions") == [
        ("JP", "Mobile Safari", "iOS", "mobile")
    ]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ("{not json", "malformed JSON"),
        ("[1, 2]", None),
        ('"a string"', None),
        (body(n="unknown"), "unknown event name"),
        (body(l="javascript:alert(1)"), None),
        (body(l="/relative/path"), None),
        ('{"n": "load", "l": "https://example.com/", "lt": NaN}', None),
        ("[" * 1000 + "]" * 1000, None),
        (b"\xff\xfe not utf-8", None),
        (body(lt="fast"), None),
        ("", None),
    ],
)
def test_bad_payloads_are_400_with_a_reason(
    refusing: tuple[TestClient, str], payload: str | bytes, reason: str | None
) -> None:
    client, _ = refusing
    response = post(client, payload)
    assert response.status_code == 400
    assert response.headers["access-control-allow-origin"] == "*"
    assert response.text and len(response.text) < 100
    if reason:
        assert response.text == reason


@pytest.mark.parametrize(
    "content_type", ["", "image/png", "multipart/form-data", "application/x-www-form-urlencoded"]
)
def test_other_content_types_are_415(refusing: tuple[TestClient, str], content_type: str) -> None:
    client, _ = refusing
    headers = {"User-Agent": CHROME_UA}
    if content_type:
        headers["Content-Type"] = content_type
    response = client.post("/p", content=body(), headers=headers)
    assert response.status_code == 415


def test_bodies_over_the_limit_are_413_even_chunked(refusing: tuple[TestClient, str]) -> None:
    client, _ = refusing
    big = body(tz="x" * 3000)
    assert post(client, big).status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: Transfer-Encoding: chunked
        for _ in range(10):
            yield b" " * 300
        yield body().encode()

    response = client.post("/p", content=chunks(), headers={"Content-Type": "text/plain"})
    assert response.status_code == 413


def test_preflight_allows_any_origin_without_credentials(refusing: tuple[TestClient, str]) -> None:
    client, _ = refusing
    response = client.options(
        "/p", headers={"Origin": "https://example.com", "Access-Control-Request-Method": "POST"}
    )
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == "*"
    assert "POST" in response.headers["access-control-allow-methods"]
    assert "access-control-allow-credentials" not in response.headers


def test_bots_are_counted_not_stored(served: tuple[TestClient, str]) -> None:
    client, conninfo = served
    for agent in ("Googlebot/2.1 (+http://www.google.com/bot.html)", "", "curl/8.5.0"):
        assert post(client, body(), user_agent=agent).status_code == 202
    stats = client.app.state.services.pipeline.stats  # type: ignore[attr-defined]
    assert stats.dropped["bot"] == 3
    assert stats.accepted == 0
    wait_for_count(conninfo, "SELECT coalesce(sum(hits), 0) FROM bot_counts", 3)
    assert query(conninfo, "SELECT count(*) FROM events") == [(0,)]
    reasons = {row[0] for row in query(conninfo, "SELECT reason FROM bot_counts")}
    assert "empty_ua" in reasons


def test_allowed_sites_refuse_others(migrated_database: str) -> None:
    config = Config(allowed_sites=("example.com",), batch_max_msec=20)
    with TestClient(
        create_app(config, conninfo=migrated_database), client=(CLIENT_IP, 1)
    ) as client:
        assert post(client, body()).status_code == 202
        refused = post(client, body(l="https://elsewhere.example/"))
        assert refused.status_code == 403
        stats = client.app.state.services.pipeline.stats  # type: ignore[attr-defined]
        assert stats.dropped["unknown_site"] == 1


def test_full_queue_is_503_and_the_handler_never_waits_on_the_database() -> None:
    # No writer runs and the database does not exist: accepting must not depend on it.
    pipeline = Pipeline(
        "host=/nonexistent dbname=none",
        queue_size=3,
        batch_max_size=1,
        batch_max_msec=10,
        session_timeout=TIMEOUT,
    )
    salts = SaltCache(TIMEOUT)
    today = datetime.now(UTC).date()
    salts.load({today + timedelta(days=offset): bytes(32) for offset in (-1, 0, 1)})
    ingest = Ingest(
        Config(),
        pipeline=pipeline,
        salts=salts,
        geo=GeoLocator(None),
        agents=AgentParser(),
        client_ip=ClientIp("direct", []),
    )
    app = Starlette(routes=[Route("/p", ingest, methods=["POST"])])
    client = TestClient(app, client=(CLIENT_IP, 1))
    statuses = [post(client, body()).status_code for _ in range(5)]
    assert statuses == [202, 202, 202, 503, 503]
    response = post(client, body())
    assert response.headers["retry-after"] == "1"
    assert pipeline.queue.qsize() == 3
    assert pipeline.stats.accepted == 3
    assert pipeline.stats.dropped["queue_full"] == 3


def test_shutdown_writes_everything_accepted(migrated_database: str) -> None:
    config = Config(batch_max_msec=500, batch_max_size=7, request_rate_limit=0)
    with TestClient(
        create_app(config, conninfo=migrated_database), client=(CLIENT_IP, 1)
    ) as client:
        for number in range(60):
            assert post(client, body(l=f"https://example.com/{number}")).status_code == 202
        stats = client.app.state.services.pipeline.stats  # type: ignore[attr-defined]
    # Leaving the block ran the lifespan's shutdown: the queue was drained.
    assert stats.accepted == 60
    assert stats.written == 60
    assert query(migrated_database, "SELECT count(*) FROM events") == [(60,)]


def test_no_ip_or_user_agent_anywhere_in_the_database(
    served: tuple[TestClient, str], caplog: pytest.LogCaptureFixture
) -> None:
    client, conninfo = served
    agent = CHROME_UA.replace("Chrome/120.0.0.0", "Chrome/120.0.6099.71 UniqueAgent4242")
    for number in range(5):
        post(client, body(l=f"https://example.com/p{number}"), user_agent=agent)
    post(client, body(), user_agent="")
    post(client, "{broken", user_agent=agent)
    wait_for_count(conninfo, "SELECT count(*) FROM events", 5)
    tables = [
        row[0]
        for row in query(
            conninfo,
            "SELECT c.oid::regclass::text FROM pg_class c JOIN pg_namespace n "
            "ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind = 'r'",
        )
    ]
    dump = "\n".join(
        str(row) for table in tables for row in query(conninfo, f"SELECT t::text FROM {table} t")
    )
    assert "example.com" in dump  # the dump is real
    for secret in (CLIENT_IP, "81.2.69", "UniqueAgent4242", agent, "private", "secret=1"):
        assert secret not in dump
        assert secret not in caplog.text


def test_rate_limit_per_client_is_429_and_counted(migrated_database: str) -> None:
    config = Config(request_rate_limit=3, batch_max_msec=20)
    with TestClient(
        create_app(config, conninfo=migrated_database), client=(CLIENT_IP, 1)
    ) as client:
        statuses = [post(client, body()).status_code for _ in range(5)]
        limited = post(client, body())
        stats = client.app.state.services.pipeline.stats  # type: ignore[attr-defined]
    assert statuses == [202, 202, 202, 429, 429]
    assert limited.headers["retry-after"] == "1"
    assert limited.headers["access-control-allow-origin"] == "*"
    assert stats.dropped["rate_limited"] == 3
    assert stats.accepted == 3
