"""Builders shared by the ingestion tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx2 as httpx
import psycopg
from psycopg import AsyncConnection

from picolytics.events import Agent, BotHit, Location, PageEvent, QueuedEvent, new_id
from picolytics.storage import store
from picolytics.storage.store import SiteIds

T = TypeVar("T")
TIMEOUT = timedelta(minutes=30)

PAGE = PageEvent(
    name="load",
    site="example.com",
    path="/",
    referrer_host="",
    utm_source="",
    utm_medium="",
    utm_campaign="",
    utm_content="",
    utm_term="",
    load_time_ms=100,
    ttfb_ms=20,
    screen_width=1920,
    screen_height=1080,
    pixel_ratio=1.0,
    pixel_depth=24,
    timezone="UTC",
    hash_path="",
)
AGENT = Agent("Chrome", "120", "Windows", "10", "desktop", None)
# The User-Agent that AGENT describes: the tests' human visitors. (Headless Chromium
# says "HeadlessChrome", which the crawler list rightly flags as a bot.)
CHROME_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)
LOCATION = Location("DE", "Berlin", "Berlin")


def event(
    at: datetime,
    visitor: int,
    *,
    name: str = "load",
    path: str = "/",
    site: str = "example.com",
    previous: int | None = None,
    **page_fields: Any,
) -> QueuedEvent:
    page = replace(PAGE, name=name, path=path, site=site, **page_fields)
    return QueuedEvent(at, new_id(), visitor, previous, page, LOCATION, AGENT)


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


async def write(
    conninfo: str,
    events: Sequence[QueuedEvent],
    bots: dict[BotHit, int] | None = None,
    sites: SiteIds | None = None,
) -> None:
    async with await AsyncConnection.connect(conninfo, autocommit=True) as connection:
        await store.prepare_connection(connection, "30s")
        await store.write_batch(connection, sites or SiteIds(), events, bots or {}, TIMEOUT)


def query(conninfo: str, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(conninfo) as connection:
        return connection.execute(sql, params).fetchall()


def wait_for_rows(
    conninfo: str,
    sql: str,
    done: Callable[[list[tuple[Any, ...]]], bool] = bool,
    timeout_s: float = 15,
) -> list[tuple[Any, ...]]:
    """Poll `sql` until done(rows) holds (by default: some rows); return the rows."""
    deadline = time.monotonic() + timeout_s
    while not done(rows := query(conninfo, sql)):
        assert time.monotonic() < deadline, f"{sql}: still {rows}"
        time.sleep(0.05)
    return rows


def wait_for_count(conninfo: str, sql: str, expected: int, timeout_s: float = 10) -> None:
    """Poll a `SELECT count(...)` until it reaches `expected`."""
    wait_for_rows(conninfo, sql, lambda rows: rows[0][0] >= expected, timeout_s)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningServer:
    process: subprocess.Popen[bytes]
    base: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text()


@contextlib.contextmanager
def server_process(
    conninfo: str, folder: Path, settings: dict[str, str] | None = None
) -> Iterator[RunningServer]:
    """`picolytics serve` as a real process on a free port; killed if still alive after."""
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PG", "CONFIG_"))}
    env.update(
        {
            "PGCONNSTRING": conninfo,
            "LISTEN_ADDR": f"127.0.0.1:{port}",
            "LOG_FORMAT": "text",
            **(settings or {}),
        }
    )
    log_path = folder / "server.log"
    with log_path.open("w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "picolytics.cli", "serve"],
            env=env,
            cwd=folder,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    server = RunningServer(process, f"http://127.0.0.1:{port}", log_path)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(server.base + "/", timeout=1)
                break
            except httpx.TransportError:
                assert process.poll() is None, server.log()
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.1)
        yield server
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
