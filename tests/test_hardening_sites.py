"""Invented domains cost bounded memory and at most MAX_NEW_SITES_PER_HOUR new sites
(issue 21, item 2; docs/guarantees.md)."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import date, timedelta

import pytest
from helpers.database import query, wait_for_count
from helpers.events import CHROME_UA, CLIENT_IP
from psycopg import AsyncConnection
from starlette.testclient import TestClient

from picolytics.config import Config
from picolytics.events import BotHit
from picolytics.ingest.endpoint import log_startup_notes
from picolytics.serve.app import Services, create_app
from picolytics.storage.pipeline import MAX_BOT_KEYS, Pipeline
from picolytics.storage.sites import NEW_SITES_WINDOW_S, NewSites, SiteIds


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_new_sites_are_limited_per_hour() -> None:
    clock = FakeClock()
    gate = NewSites(2, clock=clock)
    assert gate.admit("a.example") and gate.admit("b.example")
    assert not gate.admit("c.example")
    assert gate.admit("a.example")  # let through once: its later events pass too
    assert gate.refused == 1
    clock.now += NEW_SITES_WINDOW_S / 2
    assert not gate.admit("c.example")
    clock.now += NEW_SITES_WINDOW_S / 2
    assert gate.admit("c.example")  # an hour later the first two no longer count
    assert gate.refused == 2
    assert not NewSites(0).admit("a.example")  # 0: no new site at all
    assert NewSites(None).admit("a.example")  # None (ALLOWED_SITES set): no limit


def test_a_site_that_existed_gives_its_place_back() -> None:
    gate = NewSites(1, clock=FakeClock())
    assert gate.admit("old.example")
    assert not gate.admit("new.example")
    gate.existed(["old.example"])
    assert gate.admit("new.example")


async def _write_sites(conninfo: str, sites: SiteIds, domains: list[str]) -> list[int]:
    async with await AsyncConnection.connect(conninfo) as connection:
        async with connection.transaction():
            await sites.ensure(connection, domains)
            ids = [sites.get(domain) for domain in domains]
        sites.committed()
    return ids


def test_the_site_id_cache_is_bounded(migrated_database: str) -> None:
    sites = SiteIds(max_size=3)
    domains = [f"s{number}.example" for number in range(5)]
    ids = asyncio.run(_write_sites(migrated_database, sites, domains))
    assert len(set(ids)) == 5  # every id known inside the transaction, more than fit
    assert len(sites) == 3
    asyncio.run(_write_sites(migrated_database, sites, ["s4.example", "s9.example"]))
    assert len(sites) == 3
    assert "s4.example" in sites and "s9.example" in sites  # least recently used go first
    assert asyncio.run(_write_sites(migrated_database, sites, ["s0.example"])) == ids[:1]


def test_the_writer_tells_the_gate_which_sites_existed(migrated_database: str) -> None:
    asyncio.run(_write_sites(migrated_database, SiteIds(), ["old.example"]))
    gate = NewSites(1, clock=FakeClock())
    sites = SiteIds(gate)
    assert gate.admit("old.example")  # unknown to this process: it takes the one place
    asyncio.run(_write_sites(migrated_database, sites, ["old.example"]))
    assert gate.admit("new.example")  # given back: old.example created nothing


def test_preload_knows_the_existing_sites(migrated_database: str) -> None:
    asyncio.run(_write_sites(migrated_database, SiteIds(), ["a.example", "b.example"]))
    sites = SiteIds(NewSites(0), max_size=1)

    async def preload() -> None:
        async with await AsyncConnection.connect(migrated_database) as connection:
            await sites.preload(connection)

    asyncio.run(preload())
    assert "b.example" in sites and len(sites) == 1  # the most recent, up to the bound
    assert sites.new_sites.admit("b.example")


def test_bot_counters_held_in_memory_are_bounded() -> None:
    pipeline = Pipeline(
        "", queue_size=1, batch_max_size=1, batch_max_msec=1, session_timeout=timedelta(minutes=30)
    )
    day = date(2026, 1, 1)
    for number in range(MAX_BOT_KEYS + 500):
        pipeline.count_bot(BotHit(f"bot{number}.example", day, "empty_ua"))
    pipeline.count_bot(BotHit("bot0.example", day, "empty_ua"))  # a held key still counts
    assert len(pipeline._bots) == MAX_BOT_KEYS
    assert pipeline._bots[BotHit("bot0.example", day, "empty_ua")] == 2
    assert pipeline.bots_uncounted == 500
    assert pipeline.stats.dropped["bot"] == MAX_BOT_KEYS + 501


def _post(client: TestClient, site: str) -> int:
    payload = json.dumps({"n": "load", "l": f"https://{site}/"})
    headers = {"Content-Type": "text/plain", "User-Agent": CHROME_UA}
    return client.post("/p", content=payload, headers=headers).status_code


def test_events_of_sites_over_the_limit_are_refused_and_counted(migrated_database: str) -> None:
    config = Config(
        batch_max_msec=20, request_rate_limit=0, geo_ip_file="", max_new_sites_per_hour=2
    )
    app = create_app(config, conninfo=migrated_database)
    with TestClient(app, client=(CLIENT_IP, 1)) as client:
        statuses = [_post(client, f"site{number}.example") for number in range(4)]
        assert statuses == [202, 202, 403, 403]
        assert _post(client, "site1.example") == 202
        wait_for_count(migrated_database, "SELECT count(*) FROM events", 3)
        services: Services = app.state.services
        services.sync_metrics()
        registry = services.metrics.registry
        assert registry.get_sample_value("picolytics_new_sites_refused_total") == 2
    assert query(migrated_database, "SELECT domain FROM sites ORDER BY 1") == [
        ("site0.example",),
        ("site1.example",),
    ]
    # After a restart the existing sites are known, not new: two new ones fit again.
    with TestClient(create_app(config, conninfo=migrated_database), client=(CLIENT_IP, 1)) as c:
        assert [_post(c, f"site{number}.example") for number in range(5)] == [202] * 4 + [403]


def test_allowed_sites_are_not_limited(migrated_database: str) -> None:
    allowed = tuple(f"site{number}.example" for number in range(3))
    config = Config(
        batch_max_msec=20,
        request_rate_limit=0,
        geo_ip_file="",
        allowed_sites=allowed,
        max_new_sites_per_hour=0,
    )
    with TestClient(create_app(config, conninfo=migrated_database), client=(CLIENT_IP, 1)) as c:
        assert [_post(c, site) for site in allowed] == [202] * 3


def test_an_open_server_warns_at_startup(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="picolytics"):
        log_startup_notes(Config())
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "ALLOWED_SITES is empty: any domain a client names becomes a site"
        " (at most 100 new ones per hour and process: MAX_NEW_SITES_PER_HOUR)"
    ]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="picolytics"):
        log_startup_notes(Config(allowed_sites=("example.com",)))
    assert caplog.records == []
