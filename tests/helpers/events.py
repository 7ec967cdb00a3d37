"""Ready-made events and the real batch writer, for tests that need rows in a database."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

from psycopg import AsyncConnection

from picolytics.events import Agent, BotHit, Location, PageEvent, QueuedEvent, new_id
from picolytics.storage.sites import SiteIds
from picolytics.storage.writer import prepare_connection, write_batch

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
# A human visitor on Linux: the User-Agent of the load tests (faults, overload, shutdown).
CHROME_LINUX_UA = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/122.0.0.0 Safari/537.36"
)
LOCATION = Location("DE", "Berlin", "Berlin")
CLIENT_IP = "81.2.69.160"  # London in MaxMind's test database (tests/data)


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
    """Events (and bot counts) through the real batch writer, as the pipeline writes them."""
    async with await AsyncConnection.connect(conninfo, autocommit=True) as connection:
        await prepare_connection(connection, "30s")
        await write_batch(connection, sites or SiteIds(), events, bots or {}, TIMEOUT)


def typical_body(number: int) -> bytes:
    """A /p page load as a tracker sends it (URL with UTM tags, referrer, timings,
    screen): `number` makes each path its own."""
    return json.dumps(
        {
            "n": "load",
            "l": f"https://www.example.com/pricing/{number}?utm_source=news&utm_medium=email",
            "r": "https://search.example/?q=x",
            "lt": 640,
            "fb": 80,
            "sw": 390,
            "sh": 844,
            "tz": "Europe/London",
            "pr": 3,
            "pd": 24,
        }
    ).encode()
