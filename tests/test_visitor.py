"""Private visitor ids and daily salts (docs/guarantees.md, P3, P4)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from helpers.database import query
from helpers.events import run
from psycopg import AsyncConnection

from picolytics.enrich.visitor import SaltCache, SaltUnavailableError, visitor_hash

SALT_A = bytes(range(32))
SALT_B = bytes(range(1, 33))
DAY1_NOON = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
UA = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"


def test_hash_is_a_signed_64_bit_integer_and_keyed() -> None:
    value = visitor_hash(SALT_A, "example.com", "203.0.113.5", UA)
    assert -(2**63) <= value < 2**63
    assert value == visitor_hash(SALT_A, "example.com", "203.0.113.5", UA)
    assert value != visitor_hash(SALT_B, "example.com", "203.0.113.5", UA)
    assert value != visitor_hash(SALT_A, "other.example", "203.0.113.5", UA)
    assert value != visitor_hash(SALT_A, "example.com", "203.0.113.6", UA)
    assert value != visitor_hash(SALT_A, "example.com", "203.0.113.5", UA + " x")


def test_fields_are_length_prefixed() -> None:
    # Without length prefixes "ab"+"c" and "a"+"bc" would hash alike.
    assert visitor_hash(SALT_A, "ab", "c", "") != visitor_hash(SALT_A, "a", "bc", "")


async def refreshed(conninfo: str, now: datetime, cache: SaltCache | None = None) -> SaltCache:
    cache = cache or SaltCache(timedelta(minutes=30))
    async with await AsyncConnection.connect(conninfo, autocommit=True) as connection:
        await cache.refresh(connection, now)
    return cache


def test_no_salt_no_id() -> None:
    with pytest.raises(SaltUnavailableError):
        SaltCache(timedelta(minutes=30)).visitor_ids("example.com", "203.0.113.5", UA, DAY1_NOON)


def test_stable_within_a_day_different_across_days_and_sites(migrated_database: str) -> None:
    cache = run(refreshed(migrated_database, DAY1_NOON))
    morning = cache.visitor_ids("example.com", "203.0.113.5", UA, DAY1_NOON - timedelta(hours=11))
    evening = cache.visitor_ids("example.com", "203.0.113.5", UA, DAY1_NOON + timedelta(hours=11))
    assert morning == evening
    assert morning[1] is None  # no yesterday's salt: nothing to continue from
    other_site = cache.visitor_ids("other.example", "203.0.113.5", UA, DAY1_NOON)
    assert other_site[0] != morning[0]
    next_day = DAY1_NOON + timedelta(days=1)
    tomorrow = cache.visitor_ids("example.com", "203.0.113.5", UA, next_day)  # pre-created
    assert tomorrow[0] != morning[0]


def test_every_process_agrees_on_the_salt(migrated_database: str) -> None:
    async def race() -> list[SaltCache]:
        return list(
            await asyncio.gather(*(refreshed(migrated_database, DAY1_NOON) for _ in range(6)))
        )

    caches = run(race())
    ids = {cache.visitor_ids("example.com", "198.51.100.1", UA, DAY1_NOON) for cache in caches}
    assert len(ids) == 1
    assert query(migrated_database, "SELECT count(*) FROM daily_salts") == [(2,)]


def test_yesterdays_salt_lives_only_while_a_visit_can_continue(migrated_database: str) -> None:
    cache = run(refreshed(migrated_database, DAY1_NOON))
    late_evening = datetime(2026, 11, 28, 23, 50, tzinfo=UTC)
    before, _ = cache.visitor_ids("example.com", "203.0.113.5", UA, late_evening)

    just_after = datetime(2026, 11, 29, 0, 20, tzinfo=UTC)
    run(refreshed(migrated_database, just_after, cache))
    today, previous = cache.visitor_ids("example.com", "203.0.113.5", UA, just_after)
    assert previous == before  # a visit from before midnight can be found again
    assert today != before

    # 30 min timeout + 5 min margin after midnight: yesterday's salt is deleted.
    later = datetime(2026, 11, 29, 0, 36, tzinfo=UTC)
    run(refreshed(migrated_database, later, cache))
    assert cache.visitor_ids("example.com", "203.0.113.5", UA, later)[1] is None
    days = [row[0] for row in query(migrated_database, "SELECT day FROM daily_salts ORDER BY 1")]
    assert days == [later.date(), later.date() + timedelta(days=1)]
