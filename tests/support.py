"""Builders shared by the ingestion tests."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

import psycopg
from psycopg import AsyncConnection

from picolytics import store
from picolytics.agents import Agent
from picolytics.collect import PageEvent
from picolytics.geo import Location
from picolytics.model import QueuedEvent
from picolytics.store import BotHit, SiteIds, new_id

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
        await connection.execute(store.CREATE_STAGING)
        await store.write_batch(connection, sites or SiteIds(), events, bots or {}, TIMEOUT)


def query(conninfo: str, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(conninfo) as connection:
        return connection.execute(sql, params).fetchall()
