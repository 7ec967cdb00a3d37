"""Retention (PRUNE_DAYS, `picolytics prune`): what goes, what stays, and who prunes."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest
from helpers.database import query
from helpers.events import run
from helpers.processes import run_cli
from psycopg import AsyncConnection
from starlette.testclient import TestClient

from picolytics.config import Config
from picolytics.serve.app import create_app
from picolytics.storage.migrate import MIGRATION_LOCK_KEY
from picolytics.storage.prune import PRUNE_LOCK_KEY, PruneReport, cutoff_for, prune, summary

NOW = datetime(2024, 3, 10, 15, 30, tzinfo=UTC)
DAYS = 3
CUTOFF = datetime(2024, 3, 7, tzinfo=UTC)
JUST_BEFORE = CUTOFF - timedelta(microseconds=1)

PARTITIONS = """
SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'events'::regclass ORDER BY 1
"""
EVENTS = "SELECT tableoid::regclass::text, received_at FROM events ORDER BY 2, 1"
SESSIONS = "SELECT session_id, last_seen_at FROM sessions ORDER BY 1"
BOT_COUNTS = "SELECT day, reason FROM bot_counts ORDER BY 1, 2"


def at(day: int, hour: int = 12, month: int = 3) -> datetime:
    return datetime(2024, month, day, hour, tzinfo=UTC)


def add_site(connection: psycopg.Connection[Any]) -> int:
    row = connection.execute(
        "INSERT INTO sites (domain) VALUES ('example.com') RETURNING site_id"
    ).fetchone()
    assert row is not None
    return int(row[0])


def add_events(connection: psycopg.Connection[Any], site: int, times: list[datetime]) -> None:
    with connection.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO events (site_id, received_at, event_id, session_id, visitor_id, name,"
            " path) VALUES (%s, %s, %s, 1, 1, 'load', '/')",
            [(site, received_at, number) for number, received_at in enumerate(times, 1)],
        )


def add_sessions(
    connection: psycopg.Connection[Any], site: int, visits: dict[int, tuple[datetime, datetime]]
) -> None:
    with connection.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO sessions (site_id, session_id, visitor_id, started_at, last_seen_at)"
            " VALUES (%s, %s, 1, %s, %s)",
            [(site, number, start, end) for number, (start, end) in visits.items()],
        )


def add_bot_counts(connection: psycopg.Connection[Any], site: int, days: list[date]) -> None:
    with connection.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO bot_counts (site_id, day, reason, hits) VALUES (%s, %s, 'empty_ua', 1)",
            [(site, day) for day in days],
        )


def seed(conninfo: str) -> None:
    """Daily partitions around the cut-off, a hand-made one wholly before it, the default
    partition, and sessions and bot counts on both sides of the cut-off."""
    with psycopg.connect(conninfo, autocommit=True) as connection:
        site = add_site(connection)
        connection.execute("SELECT picolytics_ensure_event_partitions('2024-03-01', 10)")
        connection.execute(
            "CREATE TABLE events_archive PARTITION OF events"
            " FOR VALUES FROM ('2024-01-01 00:00+00') TO ('2024-02-01 00:00+00')"
        )
        add_events(
            connection,
            site,
            [
                at(1),
                at(4),
                JUST_BEFORE,  # the last instant of events_20240306
                CUTOFF,  # the first instant of events_20240307
                at(8),
                at(10, 15),
                at(15, month=1),  # events_archive
                at(20, month=2),  # events_default, before the cut-off
                at(29, 23, month=2),  # events_default, before the cut-off
                at(20),  # events_default, after the cut-off
            ],
        )
        add_sessions(
            connection,
            site,
            {
                1: (at(1), at(1, 13)),
                2: (at(3), at(3, 13)),
                3: (at(6, 23), JUST_BEFORE),
                4: (JUST_BEFORE, CUTOFF),
                5: (at(5), at(8)),
                6: (at(9), at(9, 13)),
            },
        )
        add_bot_counts(
            connection,
            site,
            [date(2024, 3, 1), date(2024, 3, 6), date(2024, 3, 7), date(2024, 3, 9)],
        )


def snapshot(conninfo: str) -> dict[str, list[tuple[Any, ...]]]:
    return {
        "partitions": query(conninfo, PARTITIONS),
        "events": query(conninfo, EVENTS),
        "sessions": query(conninfo, SESSIONS),
        "bot_counts": query(conninfo, BOT_COUNTS),
    }


def partition_names(conninfo: str) -> set[str]:
    return {str(name) for (name,) in query(conninfo, PARTITIONS)}


EXPECTED_DROPS = tuple(f"events_202403{day:02d}" for day in range(1, 7))


def test_cutoff_is_the_start_of_a_utc_day() -> None:
    assert cutoff_for(NOW, DAYS) == CUTOFF
    assert cutoff_for(datetime(2024, 3, 10, tzinfo=UTC), DAYS) == CUTOFF
    # 01:00 on the 10th in UTC+2 is 23:00 on the 9th in UTC: the UTC day counts.
    east = datetime(2024, 3, 10, 1, tzinfo=timezone(timedelta(hours=2)))
    assert cutoff_for(east, DAYS) == datetime(2024, 3, 6, tzinfo=UTC)
    with pytest.raises(ValueError, match="at least 1"):
        cutoff_for(NOW, 0)
    with pytest.raises(ValueError, match="timezone-aware"):
        cutoff_for(datetime(2024, 3, 10), DAYS)


def test_dry_run_reports_exactly_and_changes_nothing(migrated_database: str) -> None:
    seed(migrated_database)
    before = snapshot(migrated_database)
    report = run(prune(migrated_database, DAYS, dry_run=True, now=NOW))
    assert report == PruneReport(
        CUTOFF,
        dry_run=True,
        dropped_partitions=EXPECTED_DROPS,
        deleted_events=3,  # events_archive 1, events_default 2
        deleted_sessions=3,
        deleted_bot_counts=2,
        rolled_up_days=55,  # to roll up first: every day from 15 January to 9 March
    )
    assert snapshot(migrated_database) == before
    assert summary(report) == [
        "dry run: nothing was changed",
        "cut-off: 2024-03-07 00:00 UTC (data received before it goes)",
        "would drop 6 event partition(s): " + ", ".join(EXPECTED_DROPS),
        "would delete 3 event(s), 3 session(s) and 2 bot count row(s)",
        "would roll up 55 day(s) first, so their numbers outlive them",
        "rollups are kept forever (PRUNE_ROLLUP_DAYS is 0)",
    ]


def test_prune_drops_expired_partitions_and_deletes_the_rest(migrated_database: str) -> None:
    seed(migrated_database)
    preview = run(prune(migrated_database, DAYS, dry_run=True, now=NOW))
    before = partition_names(migrated_database)
    # Batches of 2 rows: several statements per table, the last one partial.
    report = run(prune(migrated_database, DAYS, now=NOW, batch_size=2))
    assert report == PruneReport(
        CUTOFF,
        dry_run=False,
        dropped_partitions=EXPECTED_DROPS,
        deleted_events=3,
        deleted_sessions=3,
        deleted_bot_counts=2,
        rolled_up_days=55,
    )
    assert (report.dropped_partitions, report.deleted_events) == (
        preview.dropped_partitions,
        preview.deleted_events,
    )
    # Only picolytics' own daily partitions go; the default and hand-made ones stay.
    assert partition_names(migrated_database) == before - set(EXPECTED_DROPS)
    assert {"events_default", "events_archive", "events_20240307"} <= partition_names(
        migrated_database
    )
    assert query(migrated_database, EVENTS) == [
        ("events_20240307", CUTOFF),
        ("events_20240308", at(8)),
        ("events_20240310", at(10, 15)),
        ("events_default", at(20)),
    ]
    assert query(migrated_database, SESSIONS) == [(4, CUTOFF), (5, at(8)), (6, at(9, 13))]
    assert query(migrated_database, BOT_COUNTS) == [
        (date(2024, 3, 7), "empty_ua"),
        (date(2024, 3, 9), "empty_ua"),
    ]
    # Nothing left to do, and the partition maintenance still works after a prune.
    again = run(prune(migrated_database, DAYS, now=NOW))
    assert again == PruneReport(CUTOFF, dry_run=False)
    assert query(
        migrated_database, "SELECT picolytics_ensure_event_partitions('2024-03-10', 3)"
    ) == [(2,)]


def test_a_partition_spanning_the_cutoff_loses_only_its_old_rows(migrated_database: str) -> None:
    with psycopg.connect(migrated_database, autocommit=True) as connection:
        site = add_site(connection)
        connection.execute("SELECT picolytics_ensure_event_partitions('2024-03-05', 1)")
        connection.execute(
            "CREATE TABLE events_span PARTITION OF events"
            " FOR VALUES FROM ('2024-03-06 00:00+00') TO ('2024-03-08 00:00+00')"
        )
        add_events(connection, site, [at(5), at(6, 10), JUST_BEFORE, CUTOFF, at(7, 18)])
    preview = run(prune(migrated_database, DAYS, dry_run=True, now=NOW))
    assert (preview.dropped_partitions, preview.deleted_events) == (("events_20240305",), 2)
    report = run(prune(migrated_database, DAYS, now=NOW, batch_size=1))
    assert (report.dropped_partitions, report.deleted_events) == (("events_20240305",), 2)
    assert query(migrated_database, EVENTS) == [
        ("events_span", CUTOFF),
        ("events_span", at(7, 18)),
    ]


def test_a_busy_partition_is_left_for_the_next_prune(migrated_database: str) -> None:
    seed(migrated_database)
    with psycopg.connect(migrated_database) as reader:
        reader.execute("LOCK TABLE events_20240301 IN ACCESS SHARE MODE")  # a long query
        report = run(
            prune(migrated_database, DAYS, now=NOW, lock_timeout=timedelta(milliseconds=100))
        )
        assert report.busy_partitions == ("events_20240301",)
        assert report.dropped_partitions == EXPECTED_DROPS[1:]
        assert report.deleted_sessions == 3
        assert "busy, left for the next prune: events_20240301" in summary(report)
    assert run(prune(migrated_database, DAYS, now=NOW)).dropped_partitions == ("events_20240301",)


async def wait_for_prune_lock(conninfo: str) -> None:
    deadline = time.monotonic() + 30
    high, low = PRUNE_LOCK_KEY >> 32, PRUNE_LOCK_KEY & 0xFFFFFFFF
    async with await AsyncConnection.connect(conninfo, autocommit=True) as connection:
        while True:
            cursor = await connection.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND classid::bigint = %s AND objid::bigint = %s AND objsubid = 1",
                (high, low),
            )
            row = await cursor.fetchone()
            if row and row[0]:
                return
            assert time.monotonic() < deadline, "the first prune never took the lock"
            await asyncio.sleep(0.02)


def test_two_prunes_at_once_one_skips(migrated_database: str) -> None:
    seed(migrated_database)
    assert PRUNE_LOCK_KEY != MIGRATION_LOCK_KEY

    async def two_prunes() -> tuple[PruneReport, PruneReport]:
        # A writer holds an expired session's row: the first prune, holding the prune
        # lock, waits for it, so the second certainly runs while the first is busy.
        async with await AsyncConnection.connect(migrated_database) as writer:
            await writer.execute("SELECT 1 FROM sessions WHERE session_id = 1 FOR UPDATE")
            first = asyncio.create_task(prune(migrated_database, DAYS, now=NOW))
            await wait_for_prune_lock(migrated_database)
            second = await prune(migrated_database, DAYS, now=NOW)
            await writer.rollback()
            return await first, second

    first, second = run(two_prunes())
    assert second == PruneReport(CUTOFF, dry_run=False, skipped=True)
    assert summary(second) == ["another process is pruning; nothing was done"]
    assert (first.skipped, first.dropped_partitions, first.deleted_sessions) == (
        False,
        EXPECTED_DROPS,
        3,
    )
    # The lock went with the first prune's connection: the next one runs.
    assert not run(prune(migrated_database, DAYS, now=NOW)).skipped


# --- the command line (the real clock: data far from the cut-off, so midnight can't matter)


def seed_around_today(conninfo: str) -> str:
    """One expired day (its partition, a session, a bot count) and recent data; returns
    the name of the expired partition."""
    now = datetime.now(UTC)
    old = now - timedelta(days=10)
    with psycopg.connect(conninfo, autocommit=True) as connection:
        site = add_site(connection)
        connection.execute("SELECT picolytics_ensure_event_partitions(%s, 1)", (old.date(),))
        recent = now - timedelta(minutes=1)
        add_events(connection, site, [old, recent])
        add_sessions(connection, site, {1: (old, old), 2: (recent, recent)})
        add_bot_counts(connection, site, [old.date(), recent.date()])
    return f"events_{old:%Y%m%d}"


def counts(conninfo: str) -> tuple[int, int, int]:
    row = query(
        conninfo,
        "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM sessions),"
        " (SELECT count(*) FROM bot_counts)",
    )[0]
    return (int(row[0]), int(row[1]), int(row[2]))


@pytest.mark.slow
def test_cli_dry_run_then_prune(migrated_database: str, tmp_path: Path) -> None:
    expired = seed_around_today(migrated_database)
    env = {"PGCONNSTRING": migrated_database, "PRUNE_DAYS": "3", "LOG_FORMAT": "text"}
    dry = run_cli("prune", "--dry-run", env=env, cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    assert lines[0] == "dry run: nothing was changed"
    assert lines[1].startswith("cut-off: ")
    assert lines[2:4] == [
        f"would drop 1 event partition(s): {expired}",
        "would delete 0 event(s), 1 session(s) and 1 bot count row(s)",
    ]
    assert lines[4].startswith("would roll up ") and lines[5].startswith("rollups are kept")
    assert counts(migrated_database) == (2, 2, 2)
    # --days overrides PRUNE_DAYS.
    env["PRUNE_DAYS"] = "1000"
    done = run_cli("prune", "--days", "3", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1:3] == [
        f"dropped 1 event partition(s): {expired}",
        "deleted 0 event(s), 1 session(s) and 1 bot count row(s)",
    ]
    assert done.stdout.splitlines()[3].startswith("rolled up ")
    assert "prune: dropped partition" in done.stderr  # progress is logged
    assert counts(migrated_database) == (1, 1, 1)
    assert expired not in partition_names(migrated_database)


@pytest.mark.slow
def test_cli_without_days_does_nothing(tmp_path: Path) -> None:
    # Nothing listens there: exiting 0 shows that no connection was even tried.
    env = {"PGCONNSTRING": "postgresql://nobody@127.0.0.1:9/none", "PGCONNATTEMPTS": "1"}
    result = run_cli("prune", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "PRUNE_DAYS is 0 (keep everything) and no --days given: nothing to prune"
    )


@pytest.mark.slow
def test_cli_rejects_days_below_one(tmp_path: Path) -> None:
    result = run_cli("prune", "--days", "0", cwd=tmp_path)
    assert result.returncode == 2
    assert "Invalid value for '--days'" in result.stderr


@pytest.mark.slow
def test_cli_reports_another_prune_and_exits_1(migrated_database: str, tmp_path: Path) -> None:
    seed_around_today(migrated_database)
    with psycopg.connect(migrated_database, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s::bigint)", (PRUNE_LOCK_KEY,))
        result = run_cli(
            "prune", "--days", "3", env={"PGCONNSTRING": migrated_database}, cwd=tmp_path
        )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "picolytics: error: another process is pruning; nothing was done"
    )
    assert counts(migrated_database) == (2, 2, 2)


# --- the server


def wait_until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_the_server_prunes_at_startup(migrated_database: str) -> None:
    expired = seed_around_today(migrated_database)
    config = Config(prune_days=3, geo_ip_file="")
    with TestClient(create_app(config, conninfo=migrated_database)) as client:
        wait_until(
            lambda: counts(migrated_database) == (1, 1, 1), "the server did not prune at startup"
        )
        assert client.get("/").status_code == 200
    assert expired not in partition_names(migrated_database)


def test_a_failed_prune_is_logged_and_the_server_keeps_serving(
    migrated_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    seed_around_today(migrated_database)
    with psycopg.connect(migrated_database, autocommit=True) as connection:
        # Pruning gets as far as the bot counts, then fails.
        connection.execute("ALTER TABLE bot_counts RENAME TO bot_counts_elsewhere")
    config = Config(prune_days=3, geo_ip_file="")
    with TestClient(create_app(config, conninfo=migrated_database)) as client:
        wait_until(lambda: "scheduled prune failed" in caplog.text, "the failure was not logged")
        assert client.get("/").status_code == 200
    failure = next(record for record in caplog.records if "scheduled prune" in record.message)
    assert failure.levelname == "WARNING"
    assert failure.message == (
        'scheduled prune failed, will retry in 24 hour(s): pruning failed: relation "bot_counts" '
        "does not exist"
    )
