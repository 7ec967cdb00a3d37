"""A session that holds a lock maintenance or prune needs makes the run fail (or skip)
within its timeout, and the server counts it in picolytics_background_runs_missed.

Each test holds one real lock in a session of its own (the partition function's
advisory lock, the roller's, prune's), runs one round the way the server does
(Services.maintenance_round / prune_round, or prune() itself), and bounds the wait, so
a round that still stalls fails the test instead of hanging it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import timedelta

import psycopg
import pytest

from picolytics.config import Config
from picolytics.errors import PicolyticsError
from picolytics.serve.app import Services, build_services
from picolytics.storage import maintenance, prune, roller

CONFIG = Config(request_rate_limit=0, geo_ip_file="", prune_days=30)
# The ensure function's transaction lock (sql/0001_initial.sql); a session-level lock
# on the same key conflicts with it.
PARTITION_LOCK = "SELECT pg_advisory_lock(hashtext('picolytics_event_partitions'))"
KEY_LOCK = "SELECT pg_advisory_lock(%s::bigint)"
STALL_S = 60.0  # a round still waiting after this long stalls: the bug


@pytest.fixture
def holder(migrated_database: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A session of its own, closed (releasing its locks) after the test."""
    with psycopg.connect(migrated_database, autocommit=True) as connection:
        yield connection


def missed(services: Services, task: str, outcome: str) -> float:
    value = services.metrics.registry.get_sample_value(
        "picolytics_background_runs_missed_total", {"task": task, "outcome": outcome}
    )
    assert value is not None, "the series exists from the start"
    return value


def timed_round(services: Services, name: str) -> float:
    """Run one round of `name`; its duration in seconds, failing if it stalls."""

    async def run() -> None:
        await asyncio.wait_for(getattr(services, name)(), STALL_S)

    started = time.monotonic()
    asyncio.run(run())
    return time.monotonic() - started


def test_a_held_partition_lock_fails_the_maintenance_round_within_its_lock_timeout(
    migrated_database: str,
    holder: psycopg.Connection[tuple[object, ...]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    services = build_services(CONFIG, migrated_database)
    assert missed(services, "maintenance", "failed") == 0
    holder.execute(PARTITION_LOCK)
    elapsed = timed_round(services, "maintenance_round")
    limit = maintenance.LOCK_TIMEOUT.total_seconds()
    assert limit <= elapsed < limit + 20, elapsed  # it waited its timeout, then gave up
    assert missed(services, "maintenance", "failed") == 1
    assert "maintenance failed, will retry" in caplog.text
    assert "lock timeout" in caplog.text

    holder.execute("SELECT pg_advisory_unlock_all()")
    timed_round(services, "maintenance_round")  # the lock is gone: the next round works
    assert missed(services, "maintenance", "failed") == 1


def test_a_held_prune_lock_makes_the_scheduled_prune_skip_and_counts_it(
    migrated_database: str, holder: psycopg.Connection[tuple[object, ...]]
) -> None:
    services = build_services(CONFIG, migrated_database)
    holder.execute(KEY_LOCK, (prune.PRUNE_LOCK_KEY,))
    assert timed_round(services, "prune_round") < STALL_S
    assert missed(services, "prune", "skipped") == 1
    assert missed(services, "prune", "failed") == 0


def test_a_held_roller_lock_fails_prune_within_its_wait_timeout(
    migrated_database: str, holder: psycopg.Connection[tuple[object, ...]]
) -> None:
    holder.execute(KEY_LOCK, (roller.ROLL_LOCK_KEY,))  # prune rolls up first and waits
    started = time.monotonic()
    with pytest.raises(PicolyticsError, match="lock timeout"):
        asyncio.run(
            asyncio.wait_for(
                prune.prune(migrated_database, 30, wait_timeout=timedelta(seconds=1)), STALL_S
            )
        )
    assert time.monotonic() - started < 20


def test_a_failed_scheduled_prune_is_counted(
    migrated_database: str,
    holder: psycopg.Connection[tuple[object, ...]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(prune, "WAIT_TIMEOUT", timedelta(seconds=1))
    services = build_services(CONFIG, migrated_database)
    holder.execute(KEY_LOCK, (roller.ROLL_LOCK_KEY,))
    assert timed_round(services, "prune_round") < 20
    assert missed(services, "prune", "failed") == 1
    assert missed(services, "prune", "skipped") == 0


def test_the_statement_timeout_ends_a_statement_that_runs_too_long(
    migrated_database: str,
) -> None:
    async def run() -> None:
        async with await psycopg.AsyncConnection.connect(
            migrated_database, autocommit=True
        ) as connection:
            await maintenance.set_timeouts(connection, statement_timeout=timedelta(seconds=0.2))
            await connection.execute("SELECT pg_sleep(30)")

    started = time.monotonic()
    with pytest.raises(psycopg.errors.QueryCanceled):
        asyncio.run(run())
    assert time.monotonic() - started < 15
