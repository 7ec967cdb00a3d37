"""The Stats API's connection pool (api/pool.py) and what every endpoint does around
its work (api/requests.py), through the real app (serve/app.py) on a real database.

Requests go to the ASGI app in one event loop, as a server runs them, and every count
of connections is PostgreSQL's own (pg_stat_activity of the test's database, which
nothing else uses: the app's lifespan, with its writer, runs in one test only).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from helpers.database import new_database, query
from helpers.events import run
from psycopg import AsyncConnection
from starlette.responses import JSONResponse, Response
from starlette.testclient import TestClient

from picolytics.api.pool import ConnectionPool
from picolytics.api.requests import BUSY, DATABASE_DOWN, answer
from picolytics.config import Config, load_config
from picolytics.errors import ApiBusyError, ConfigError
from picolytics.serve.app import PublicApp, create_app
from picolytics.storage import api_keys, migrate

URL = "/api/v2/query"
DATA = """
WITH site AS (INSERT INTO sites (domain) VALUES ('pool.test') RETURNING site_id),
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
QUICK = {
    "site_id": "pool.test",
    "metrics": ["visitors"],
    "date_range": ["2024-01-11", "2024-01-12"],
}


def slow(patterns: int) -> dict[str, Any]:
    """A query of `patterns` LIKE patterns on each of 50,000 long paths: some work."""
    return {
        "site_id": "pool.test",
        "metrics": ["visitors", "pageviews"],
        "date_range": ["2024-01-10", "2024-01-20"],
        "filters": [["contains", "event:page", [f"zz{n}" for n in range(patterns)]]],
    }


# The database's client connections but the one asking.
BACKENDS = """
SELECT pid, state FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid()
  AND backend_type = 'client backend'
ORDER BY pid
"""


@dataclass(frozen=True)
class Env:
    conninfo: str
    key: str


@pytest.fixture(scope="module")
def env(admin_conninfo: str) -> Iterator[Env]:
    with new_database(admin_conninfo) as conninfo:
        migrate.apply(conninfo)
        assert len(query(conninfo, DATA)) == 50_000
        key = api_keys.connected(conninfo, lambda c: api_keys.create(c, "pool", ())).clear
        yield Env(conninfo, key)


def app_of(env: Env, size: int = 2, timeout_s: float = 60) -> PublicApp:
    config = Config(api_rate_limit=0, api_pool_size=size, query_timeout_sec=timeout_s)
    return create_app(config, conninfo=env.conninfo)


def backends(env: Env) -> list[tuple[int, str]]:
    return [(int(pid), str(state)) for pid, state in query(env.conninfo, BACKENDS)]


async def call(
    app: PublicApp, key: str, body: object, gone: asyncio.Event | None = None
) -> tuple[int, Any]:
    """POST one v2 query to the app; (status, JSON answer or None). Setting `gone`
    makes the client go away."""
    raw = json.dumps(body).encode()
    bodies = [{"type": "http.request", "body": raw, "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if bodies:
            return bodies.pop()
        await (gone or asyncio.Event()).wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": URL, "raw_path": URL.encode(), "query_string": b"",
        "root_path": "", "headers": [(b"authorization", f"Bearer {key}".encode())],
        "client": ("127.0.0.1", 1), "server": ("testserver", 80),
    }  # fmt: skip
    await app(scope, receive, send)  # type: ignore[arg-type]
    content = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], json.loads(content) if content else None


def test_the_size_is_a_setting_with_a_clear_error() -> None:
    assert load_config(None, {}).api_pool_size == 4
    assert load_config(None, {"API_POOL_SIZE": "7"}).api_pool_size == 7
    with pytest.raises(
        ConfigError, match=r"API_POOL_SIZE \(apiPoolSize\) = '0': must be at least 1"
    ):
        load_config(None, {"API_POOL_SIZE": "0"})
    with pytest.raises(ConfigError, match=r"API_POOL_SIZE .*at most 100"):
        load_config(None, {"API_POOL_SIZE": "101"})
    with pytest.raises(ConfigError, match=r"API_POOL_SIZE .*whole number"):
        load_config(None, {"API_POOL_SIZE": "four"})


def test_connections_are_opened_lazily_and_reused(env: Env) -> None:
    app = app_of(env)
    assert backends(env) == []  # building the app opens nothing

    async def scenario() -> list[list[tuple[int, str]]]:
        seen = []
        for _ in range(5):
            status, found = await call(app, env.key, QUICK)
            assert (status, found["results"]) == (200, [{"metrics": [0], "dimensions": []}])
            seen.append(backends(env))
        await app.state.services.api_pool.close()
        return seen

    seen = run(scenario())
    assert len(seen[0]) == 1 and seen[0][0][1] == "idle"  # one, idle between requests
    assert all(found == seen[0] for found in seen)  # the same backend every time
    assert backends(env) == []  # closed with the pool


def test_n_plus_one_concurrent_requests_open_at_most_n_connections(env: Env) -> None:
    app = app_of(env, size=2)

    async def scenario() -> tuple[list[tuple[int, Any]], int, int]:
        requests = [asyncio.create_task(call(app, env.key, slow(30))) for _ in range(3)]
        most = 0
        while not all(r.done() for r in requests):
            most = max(most, len(await asyncio.to_thread(backends, env)))
            await asyncio.sleep(0.02)
        answers = [r.result() for r in requests]
        opened = app.state.services.api_pool.open_connections
        await app.state.services.api_pool.close()
        return answers, most, opened

    answers, most, opened = run(scenario())
    assert [status for status, _ in answers] == [200, 200, 200]
    assert all(found["results"] == answers[0][1]["results"] for _, found in answers)
    assert most == 2  # two at once, and never a third
    assert opened == 2


def test_a_request_past_a_full_pool_waits_then_is_a_clean_503(env: Env) -> None:
    async def scenario() -> tuple[float, Response]:
        pool = ConnectionPool(env.conninfo, size=1, connect_timeout_s=5, wait_s=0.3)

        async def work(connection: AsyncConnection[Any]) -> Response:
            return JSONResponse({})

        async with pool.connection():
            started = time.monotonic()
            with pytest.raises(ApiBusyError, match=r"every Stats API connection \(1\)"):
                async with pool.connection():
                    pass
            waited = time.monotonic() - started
            refused = await answer(pool.connection, work, timeout_s=10, api="test")
        async with pool.connection() as connection:  # free again: lent at once
            assert (await (await connection.execute("SELECT 1")).fetchone()) == (1,)
        await pool.close()
        return waited, refused

    waited, refused = run(scenario())
    assert waited >= 0.3
    assert (refused.status_code, json.loads(bytes(refused.body))) == (503, {"error": BUSY})


def test_a_connection_the_server_ended_is_replaced(env: Env) -> None:
    app = app_of(env)

    async def scenario() -> tuple[int, int, int]:
        assert (await call(app, env.key, QUICK))[0] == 200
        [(first, _)] = backends(env)
        # As a restart does: the server ends the idle connection (and waits for it).
        query(env.conninfo, "SELECT pg_terminate_backend(%s, 5000)", (first,))
        status, _ = await call(app, env.key, QUICK)
        [(second, _)] = backends(env)
        await app.state.services.api_pool.close()
        return status, first, second

    status, first, second = run(scenario())
    assert status == 200  # not a 500, not even a 503: a fresh connection answered
    assert second != first


def test_a_connection_broken_during_a_query_is_a_503_then_discarded(env: Env) -> None:
    app = app_of(env, size=1)

    async def scenario() -> tuple[tuple[int, Any], int, int]:
        request = asyncio.create_task(call(app, env.key, slow(100)))
        pid = 0
        for _ in range(200):
            await asyncio.sleep(0.05)
            active = [p for p, state in await asyncio.to_thread(backends, env) if state == "active"]
            if active:
                pid = active[0]
                break
        assert pid, "the slow query never started"
        query(env.conninfo, "SELECT pg_terminate_backend(%s, 5000)", (pid,))
        broken = await asyncio.wait_for(request, 30)
        status, _ = await call(app, env.key, QUICK)  # on a fresh connection
        [(after, _)] = backends(env)
        await app.state.services.api_pool.close()
        return broken, status, after - pid

    broken, status, moved = run(scenario())
    assert broken == (503, {"error": DATABASE_DOWN})
    assert status == 200
    assert moved != 0  # the broken one was not lent again


def test_a_client_that_goes_away_leaves_a_clean_connection(env: Env) -> None:
    app = app_of(env, size=1)

    async def scenario() -> tuple[int, int, list[tuple[int, str]], int]:
        gone = asyncio.Event()
        request = asyncio.create_task(call(app, env.key, slow(100), gone))
        running = 0
        for _ in range(200):  # the query starts within a few seconds
            await asyncio.sleep(0.05)
            states = [state for _, state in await asyncio.to_thread(backends, env)]
            if (running := states.count("active")) > 0:
                break
        gone.set()
        status, _ = await asyncio.wait_for(request, 10)
        after = backends(env)  # no running query, no open transaction
        started = time.monotonic()
        next_status, _ = await call(app, env.key, QUICK)  # on the same, clean connection
        assert time.monotonic() - started < 10
        assert backends(env) == after
        await app.state.services.api_pool.close()
        return running, status, after, next_status

    running, status, after, next_status = run(scenario())
    assert running == 1
    assert status == 499
    assert [state for _, state in after] in ([], ["idle"])  # kept clean, or discarded
    assert next_status == 200


def test_requests_in_loops_of_their_own_keep_no_connections_of_old_loops(env: Env) -> None:
    app = app_of(env)
    client = TestClient(app)  # each request runs in an event loop of its own
    for _ in range(3):
        response = client.post(URL, content=json.dumps(QUICK), headers=auth(env))
        assert response.status_code == 200
        assert len(backends(env)) == 1
    run(app.state.services.api_pool.close())
    assert backends(env) == []


def test_the_pool_is_closed_at_shutdown(env: Env) -> None:
    with TestClient(app_of(env)) as client:  # runs the lifespan: writer, maintenance...
        response = client.post(URL, content=json.dumps(QUICK), headers=auth(env))
        assert response.status_code == 200
        assert client.app.state.services.api_pool.open_connections == 1  # type: ignore[attr-defined]
    deadline = time.monotonic() + 10
    while backends(env) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert backends(env) == []


def auth(env: Env) -> dict[str, str]:
    return {"Authorization": f"Bearer {env.key}"}
