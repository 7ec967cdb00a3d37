"""Keeping the read model current (docs/read-model.md, "Exact, fresh, late writes,
concurrency"): the writer's late-write marks, the roller (catch_up, rebuild), the
server's rollup loop, prune before and after, and `picolytics rollup`.

Every test runs against a real PostgreSQL. "Equals raw" is checked two ways: each
rolled day's totals against plain SQL over the raw tables, and every rollup row
against what roll_day computes from the raw rows now (in a transaction rolled back).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty
import re
import select
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock
from pathlib import Path
from typing import Any

import psycopg
import pytest
from helpers.database import query
from helpers.events import TIMEOUT, event, run, write
from helpers.processes import PICOLYTICS, clean_env, run_cli
from psycopg import AsyncConnection
from starlette.testclient import TestClient

from picolytics.config import Config, default_config_yaml, load_config
from picolytics.errors import ConfigError, RollupError, RollupOptionError
from picolytics.events import QueuedEvent
from picolytics.serve import app as app_module
from picolytics.serve.app import create_app
from picolytics.stats.engine import run as run_query
from picolytics.stats.query import Period, Query
from picolytics.storage import roller
from picolytics.storage.pipeline import WRITE_TIMEOUT_S
from picolytics.storage.prune import prune, summary
from picolytics.storage.roller import (
    ROLL_DELAY,
    ROLL_LOCK_KEY,
    RollupReport,
    catch_up,
    due_days,
    rebuild,
)
from picolytics.storage.rollup import roll_day
from picolytics.storage.rollup_prefix import EVENT_DELAY
from picolytics.storage.sites import SiteIds
from picolytics.storage.writer import EVENT_MARK_AGE, MARK_AGE, prepare_connection, write_batch

WAIT_S = 30.0
SITE = "example.com"
OTHER = "other.example"

# Totals of each rolled day: from its rollups, and from the raw rows of the same local
# day in the zone it was rolled in.
ROLLED_TOTALS = """
SELECT d.site_id, d.day,
       coalesce(v.visits, 0), coalesce(v.visitors, 0), coalesce(v.pageviews, 0),
       coalesce(e.pageviews, 0), coalesce(e.events, 0)
FROM rollup_days d
LEFT JOIN rollup_visits v ON (v.site_id, v.day, v.dimension) = (d.site_id, d.day, '')
LEFT JOIN rollup_events e ON (e.site_id, e.day, e.dimension) = (d.site_id, d.day, '')
ORDER BY 1, 2
"""
RAW_TOTALS = """
WITH span AS (
    SELECT site_id, day, (day::timestamp AT TIME ZONE timezone) AS start_at,
           ((day + 1)::timestamp AT TIME ZONE timezone) AS end_at
    FROM rollup_days
)
SELECT d.site_id, d.day, coalesce(v.visits, 0), coalesce(v.visitors, 0),
       coalesce(v.pageviews, 0), coalesce(e.pageviews, 0), coalesce(e.events, 0)
FROM span d
LEFT JOIN LATERAL (
    SELECT count(*) AS visits, count(DISTINCT visitor_id) AS visitors,
           sum(pageviews) AS pageviews
    FROM sessions s
    WHERE s.site_id = d.site_id AND s.pageviews > 0
      AND s.started_at >= d.start_at AND s.started_at < d.end_at
) v ON true
LEFT JOIN LATERAL (
    SELECT count(*) FILTER (WHERE picolytics_is_pageview(name, path)) AS pageviews,
           count(*) AS events
    FROM events e
    WHERE e.site_id = d.site_id AND e.received_at >= d.start_at AND e.received_at < d.end_at
      AND (picolytics_is_pageview(name, path) OR picolytics_is_custom_event(name))
) e ON true
ORDER BY 1, 2
"""
ROLLUP_ROWS = {
    "visits": "SELECT * FROM rollup_visits ORDER BY 1, 2, 3, 4, 5",
    "events": "SELECT * FROM rollup_events ORDER BY 1, 2, 3, 4, 5",
    "hours": "SELECT * FROM rollup_hours ORDER BY 1, 2",
    "days": "SELECT site_id, day, timezone FROM rollup_days ORDER BY 1, 2",
}


def noon(day: date, hour: int = 12, minute: int = 0) -> datetime:
    return datetime.combine(day, clock(hour, minute), tzinfo=UTC)


def today() -> date:
    return datetime.now(UTC).date()


def rollups(conninfo: str) -> dict[str, list[tuple[Any, ...]]]:
    return {name: query(conninfo, sql) for name, sql in ROLLUP_ROWS.items()}


def rolled_days(conninfo: str, site: str = SITE) -> list[date]:
    rows = query(
        conninfo,
        "SELECT d.day FROM rollup_days d JOIN sites s USING (site_id) WHERE s.domain = %s"
        " ORDER BY 1",
        (site,),
    )
    return [row[0] for row in rows]


def stale_days(conninfo: str) -> list[tuple[str, date]]:
    rows = query(
        conninfo,
        "SELECT s.domain, r.day FROM rollup_stale r JOIN sites s USING (site_id) ORDER BY 1, 2",
    )
    return [(str(domain), day) for domain, day in rows]


def site_id(conninfo: str, domain: str = SITE) -> int:
    return int(query(conninfo, "SELECT site_id FROM sites WHERE domain = %s", (domain,))[0][0])


async def _recomputed(conninfo: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every rolled day rolled again from the raw rows now, read, and rolled back."""
    async with await AsyncConnection.connect(conninfo) as connection:
        cursor = await connection.execute("SELECT site_id, day, timezone FROM rollup_days")
        for site, day, zone in await cursor.fetchall():
            await roll_day(connection, site, day, zone)
        recomputed = {}
        for name, sql in ROLLUP_ROWS.items():
            cursor = await connection.execute(sql)
            recomputed[name] = await cursor.fetchall()
        await connection.rollback()
    return recomputed


def assert_rollups_match_raw(conninfo: str) -> None:
    assert query(conninfo, ROLLED_TOTALS) == query(conninfo, RAW_TOTALS)
    assert rollups(conninfo) == run(_recomputed(conninfo))
    assert stale_days(conninfo) == [] or all(
        day not in rolled_days(conninfo, domain) for domain, day in stale_days(conninfo)
    )


def visits_on(day: date, visitors: range, *, site: str = SITE, pages: int = 2) -> list[QueuedEvent]:
    """Each visitor views `pages` pages around noon of `day`, a custom event too."""
    events = []
    for visitor in visitors:
        start = noon(day) + timedelta(minutes=visitor % 50)
        for page in range(pages):
            events.append(
                event(start + timedelta(seconds=page), visitor, site=site, path=f"/p{page}")
            )
        events.append(event(start + timedelta(seconds=30), visitor, site=site, name="signup"))
    return events


def seed_days(conninfo: str, days: list[date], *, site: str = SITE) -> None:
    for number, day in enumerate(days):
        run(
            write(conninfo, visits_on(day, range(number * 10, number * 10 + 5 + number), site=site))
        )


def catch_up_now(conninfo: str, **options: Any) -> RollupReport:
    return run(catch_up(conninfo, **options))


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.05)


# -- the constants and the argument ------------------------------------------------------


def test_roll_delay_leaves_room_for_the_longest_write() -> None:
    """An unmarked write commits before its day can be rolled (writer.MARK_AGE)."""
    assert 10 * timedelta(seconds=WRITE_TIMEOUT_S) <= ROLL_DELAY - MARK_AGE
    assert ROLL_DELAY > TIMEOUT  # the default session timeout: most visits have ended
    assert timedelta(0) < MARK_AGE < ROLL_DELAY
    docs = (Path(__file__).resolve().parents[1] / "docs" / "read-model.md").read_text()
    assert "`ROLL_DELAY` is 1 hour and `MARK_AGE` 45 minutes" in docs
    # The open day's events (storage/rollup_prefix.py): the same margin, closer to now.
    assert 10 * timedelta(seconds=WRITE_TIMEOUT_S) <= EVENT_DELAY - EVENT_MARK_AGE
    assert timedelta(0) < EVENT_MARK_AGE < EVENT_DELAY < ROLL_DELAY
    assert "`EVENT_DELAY` (15 minutes)" in docs and "`EVENT_MARK_AGE` (5 minutes)" in docs


# -- fresh, and the writer's marks ---------------------------------------------------------


def test_an_event_written_now_is_in_the_answers_at_once(migrated_database: str) -> None:
    day = today() - timedelta(days=3)
    seed_days(migrated_database, [day])
    catch_up_now(migrated_database)
    assert rolled_days(migrated_database)[0] == day  # and the days after, till yesterday
    now = datetime.now(UTC)
    run(write(migrated_database, [event(now - timedelta(seconds=1), 999, path="/fresh")]))
    assert stale_days(migrated_database) == []  # a write of today marks nothing

    async def ask() -> tuple[Any, Any]:
        period = Period(noon(day, 0), now + timedelta(seconds=1))
        question = Query((site_id(migrated_database),), period, ("visits", "pageviews"))
        async with await AsyncConnection.connect(migrated_database, autocommit=True) as c:
            return await run_query(c, question), await run_query(c, question, use_rollups=False)

    answer, raw = run(ask())
    assert answer.rows == raw.rows
    assert answer.path == "mixed"  # the rolled day from rollups, today from raw rows
    assert answer.rows[0].metrics == {"visits": 6, "pageviews": 11}


def test_a_late_write_marks_its_day_in_the_same_transaction(migrated_database: str) -> None:
    day = today() - timedelta(days=3)
    seed_days(migrated_database, [day])
    catch_up_now(migrated_database)
    late = [event(noon(day, 20), 500, path="/late")]
    counts = "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM rollup_stale)"
    before = query(migrated_database, counts)

    async def write_then(commit: bool) -> list[tuple[Any, ...]]:
        async with await AsyncConnection.connect(migrated_database) as connection:
            await prepare_connection(connection, "30s")
            await connection.commit()
            async with connection.transaction(force_rollback=not commit):
                await write_batch(connection, SiteIds(), late, {}, TIMEOUT)
                return query(migrated_database, counts)  # from another connection

    assert run(write_then(commit=False)) == before  # neither rows nor mark before commit
    assert query(migrated_database, counts) == before  # rolled back: neither
    run(write_then(commit=True))
    assert query(migrated_database, counts) == [(before[0][0] + 1, 1)]
    assert stale_days(migrated_database) == [(SITE, day)]
    # A retried batch (the same events again) adds nothing, and marks nothing new.
    run(write(migrated_database, late))
    assert stale_days(migrated_database) == [(SITE, day)]

    report = catch_up_now(migrated_database)
    assert (report.rolled, report.stale, report.new) == (1, 1, 0)
    assert stale_days(migrated_database) == []
    assert_rollups_match_raw(migrated_database)


def test_a_late_event_that_moves_a_visit_to_the_day_before_marks_both_days(
    migrated_database: str,
) -> None:
    second = today() - timedelta(days=3)
    first = second - timedelta(days=1)
    run(write(migrated_database, [event(noon(second, 0, 10), 7, path="/after-midnight")]))
    catch_up_now(migrated_database)
    assert rolled_days(migrated_database)[0] == second
    # Written later, received before midnight: the visit now starts the day before.
    run(write(migrated_database, [event(noon(first, 23, 55), 7, path="/before-midnight")]))
    assert query(migrated_database, "SELECT count(*), min(started_at) FROM sessions") == [
        (1, noon(first, 23, 55))
    ]
    assert stale_days(migrated_database) == [(SITE, first), (SITE, second)]
    report = catch_up_now(migrated_database)
    assert (report.new, report.stale) == (1, 1)
    assert_rollups_match_raw(migrated_database)
    visits = query(migrated_database, "SELECT day, visits FROM rollup_visits WHERE dimension = ''")
    assert visits == [(first, 1)]


def test_marks_follow_the_sites_time_zone(migrated_database: str) -> None:
    day = today() - timedelta(days=3)
    run(write(migrated_database, [event(noon(day), 1)]))
    assert stale_days(migrated_database) == [(SITE, day)]  # rolled or not, a late day
    query(migrated_database, "DELETE FROM rollup_stale RETURNING 1")
    query(migrated_database, "UPDATE sites SET timezone = 'Pacific/Kiritimati' RETURNING 1")
    # 23:30 UTC is already the next day at UTC+14.
    run(write(migrated_database, [event(noon(day, 23, 30), 2)]))
    assert stale_days(migrated_database) == [(SITE, day + timedelta(days=1))]


# -- catch_up ---------------------------------------------------------------------------


def test_catch_up_rolls_every_due_day_once_oldest_first(migrated_database: str) -> None:
    first = today() - timedelta(days=6)
    seed_days(migrated_database, [first, first + timedelta(days=2)])
    seed_days(migrated_database, [first + timedelta(days=1)], site=OTHER)
    run(write(migrated_database, [event(datetime.now(UTC), 1)]))  # today: never due
    due = run(_due(migrated_database))
    assert [(d.domain, d.day) for d in due][:3] == [
        (SITE, first),
        (SITE, first + timedelta(days=1)),
        (OTHER, first + timedelta(days=1)),
    ]
    assert all(d.day < today() for d in due)
    done: list[tuple[int, int]] = []
    report = catch_up_now(migrated_database, progress=lambda n, total: done.append((n, total)))
    assert report.rolled == len(due) == report.new
    assert done[0] == (0, len(due)) and done[-1] == (len(due), len(due))
    # Every day from the first raw day on is rolled, also those without traffic.
    mine = rolled_days(migrated_database)
    assert mine[0] == first and mine == sorted(mine) and len(mine) == (mine[-1] - first).days + 1
    assert rolled_days(migrated_database, OTHER)[0] == first + timedelta(days=1)
    assert_rollups_match_raw(migrated_database)
    again = catch_up_now(migrated_database)
    assert again == RollupReport()
    assert roller.summary(again) == "the read model is up to date: no day was due"


async def _due(conninfo: str) -> list[roller.DueDay]:
    async with await AsyncConnection.connect(conninfo, autocommit=True) as connection:
        return await due_days(connection)


def test_a_day_is_due_only_once_closed_for_roll_delay(migrated_database: str) -> None:
    day = date(2024, 3, 5)
    seed_days(migrated_database, [day])
    end = noon(day + timedelta(days=1), 0)

    async def due_at(now: datetime) -> list[date]:
        async with await AsyncConnection.connect(migrated_database, autocommit=True) as c:
            return [d.day for d in await due_days(c, now)]

    assert run(due_at(end + ROLL_DELAY - timedelta(seconds=1))) == []
    assert run(due_at(end + ROLL_DELAY)) == [day]
    query(migrated_database, "UPDATE sites SET timezone = 'America/New_York' RETURNING 1")
    # The same day ends five hours later in New York.
    assert run(due_at(end + ROLL_DELAY)) == []
    assert run(due_at(end + timedelta(hours=5) + ROLL_DELAY)) == [day]


def test_a_time_zone_change_rerolls_the_days_whose_raw_rows_are_all_there(
    migrated_database: str,
) -> None:
    first = today() - timedelta(days=5)
    seed_days(migrated_database, [first, first + timedelta(days=1), first + timedelta(days=2)])
    catch_up_now(migrated_database)
    query(migrated_database, "UPDATE sites SET timezone = 'Europe/Berlin' RETURNING 1")
    report = catch_up_now(migrated_database)
    # The first Berlin day began at 23:00 UTC the day before, ahead of the oldest raw
    # row's UTC day: its raw rows may have been pruned, so it keeps its UTC rollup.
    zones = dict(query(migrated_database, "SELECT day, timezone FROM rollup_days"))
    assert zones.pop(first) == "UTC"
    assert set(zones.values()) == {"Europe/Berlin"}
    assert report.rezoned == len(zones) and report.new == report.stale == 0
    assert_rollups_match_raw(migrated_database)
    again = catch_up_now(migrated_database)
    assert again.rolled == 0  # the kept day is not tried again and again


def test_a_failing_day_is_reported_and_the_others_are_rolled(
    migrated_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    day = today() - timedelta(days=4)
    seed_days(migrated_database, [day], site=OTHER)
    seed_days(migrated_database, [day])
    other = site_id(migrated_database, OTHER)
    real = roll_day

    async def fails_for_other(connection: Any, site: int, on: date, zone: str) -> None:
        if site == other and on == day:
            raise psycopg.errors.DivisionByZero("division by zero")
        await real(connection, site, on, zone)

    monkeypatch.setattr(roller, "roll_day", fails_for_other)
    report = catch_up_now(migrated_database)
    assert report.failed == (f"{OTHER} {day}: division by zero",)
    assert report.rolled == query(migrated_database, "SELECT count(*) FROM rollup_days")[0][0]
    assert day not in rolled_days(migrated_database, OTHER)
    assert roller.summary(report).endswith("; 1 day(s) failed")
    monkeypatch.setattr(roller, "roll_day", real)
    again = catch_up_now(migrated_database)
    assert (again.rolled, again.first, again.failed) == (1, day, ())  # the failed day
    with pytest.raises(RollupError, match="rolling up failed: "):
        catch_up_now("postgresql://nobody@127.0.0.1:9/none?connect_timeout=2")


def test_a_catch_up_on_a_callers_connection_gives_the_lock_back(migrated_database: str) -> None:
    seed_days(migrated_database, [today() - timedelta(days=3)])

    async def scenario() -> bool:
        async with await AsyncConnection.connect(migrated_database, autocommit=True) as mine:
            assert (await catch_up(mine)).rolled > 0
            with psycopg.connect(migrated_database, autocommit=True) as other:
                row = other.execute("SELECT pg_try_advisory_lock(%s::bigint)", (ROLL_LOCK_KEY,))
                return bool(row.fetchone()[0])  # type: ignore[index]

    assert run(scenario())


def test_catch_up_needs_an_autocommit_connection(migrated_database: str) -> None:
    async def scenario() -> None:
        async with await AsyncConnection.connect(migrated_database) as connection:
            await catch_up(connection)

    with pytest.raises(ValueError, match="autocommit"):
        run(scenario())


# -- concurrency ------------------------------------------------------------------------


def test_two_rollers_at_once_never_double_count(migrated_database: str) -> None:
    first = today() - timedelta(days=8)
    seed_days(migrated_database, [first + timedelta(days=n) for n in range(0, 6, 2)])
    seed_days(migrated_database, [first + timedelta(days=1)], site=OTHER)
    expected = len(run(_due(migrated_database)))

    async def two_waiting() -> list[RollupReport]:
        return list(
            await asyncio.gather(
                catch_up(migrated_database, wait=True), catch_up(migrated_database, wait=True)
            )
        )

    reports = run(two_waiting())
    assert sum(report.rolled for report in reports) == expected
    assert_rollups_match_raw(migrated_database)

    # Threads, each with its loop and connection; the one that finds the lock taken
    # skips. And two roll_day calls for the same day bypassing the lock altogether.
    query(migrated_database, "DELETE FROM rollup_days RETURNING 1")
    results: list[RollupReport] = []
    threads = [
        threading.Thread(target=lambda: results.append(catch_up_now(migrated_database)))
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(r.rolled for r in results) + len(run(_due(migrated_database))) == expected
    catch_up_now(migrated_database)

    async def bypass() -> None:
        site = site_id(migrated_database)
        async with (
            await AsyncConnection.connect(migrated_database, autocommit=True) as one,
            await AsyncConnection.connect(migrated_database, autocommit=True) as two,
        ):
            await asyncio.gather(
                roll_day(one, site, first, "UTC"), roll_day(two, site, first, "UTC")
            )

    run(bypass())
    assert_rollups_match_raw(migrated_database)


def test_late_writes_while_rolling_are_never_lost(migrated_database: str) -> None:
    days = [today() - timedelta(days=n) for n in (5, 4, 3)]
    seed_days(migrated_database, days)
    stop = threading.Event()
    errors: list[BaseException] = []

    def roll_forever() -> None:
        try:
            while not stop.is_set():
                catch_up_now(migrated_database)
        except BaseException as error:  # reported below
            errors.append(error)

    roller_thread = threading.Thread(target=roll_forever)
    roller_thread.start()
    try:
        for batch in range(20):
            day = days[batch % 3]
            late = [
                event(noon(day, 18) + timedelta(seconds=batch), 1000 + batch, path=f"/l{batch}"),
                event(noon(day, 6) + timedelta(seconds=batch), batch % 4, path="/again"),
            ]
            run(write(migrated_database, late))
    finally:
        stop.set()
        roller_thread.join()
    assert errors == []
    catch_up_now(migrated_database)
    assert stale_days(migrated_database) == []
    assert_rollups_match_raw(migrated_database)


def test_a_late_write_in_flight_on_an_existing_mark_is_not_lost(migrated_database: str) -> None:
    """A mark already there: the roller clearing it must wait for the batch that is
    marking the day again, or the rollup misses that batch and no mark is left."""
    day = today() - timedelta(days=3)
    seed_days(migrated_database, [day])
    catch_up_now(migrated_database)
    run(write(migrated_database, [event(noon(day, 15), 500, path="/first-late")]))
    assert stale_days(migrated_database) == [(SITE, day)]

    async def race() -> None:
        site = site_id(migrated_database)
        async with (
            await AsyncConnection.connect(migrated_database) as writer,
            await AsyncConnection.connect(migrated_database, autocommit=True) as roller_conn,
        ):
            await prepare_connection(writer, "30s")
            await writer.commit()
            late = [event(noon(day, 16), 501, path="/second-late")]
            async with writer.transaction():  # held open while the roller starts
                await write_batch(writer, SiteIds(), late, {}, TIMEOUT)
                rolling = asyncio.create_task(roll_day(roller_conn, site, day, "UTC"))
                await asyncio.sleep(1.0)  # without the lock, the roll is long done by now
                await writer.execute("SELECT 1")
            await rolling

    run(race())
    rolled_with_it = query(
        migrated_database,
        "SELECT count(*) FROM rollup_events e JOIN rollup_days d USING (site_id, day) "
        "WHERE e.day = %s AND e.dimension = 'page' AND e.value = '/second-late'",
        (day,),
    )[0][0]
    assert rolled_with_it == 1 or (SITE, day) in stale_days(migrated_database)
    catch_up_now(migrated_database)
    assert_rollups_match_raw(migrated_database)


def test_the_server_skips_a_round_while_another_process_rolls(migrated_database: str) -> None:
    seed_days(migrated_database, [today() - timedelta(days=3)])
    with psycopg.connect(migrated_database, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s::bigint)", (ROLL_LOCK_KEY,))
        report = catch_up_now(migrated_database)
        assert report == RollupReport(busy=True)
        assert roller.summary(report) == "another process is rolling up; nothing was done"
        assert rolled_days(migrated_database) == []
        due = run(_due(migrated_database))
    assert catch_up_now(migrated_database).rolled == len(due) > 0


# -- rebuild ----------------------------------------------------------------------------


def test_rebuild_is_idempotent_and_stays_within_its_range(migrated_database: str) -> None:
    first = today() - timedelta(days=6)
    seed_days(migrated_database, [first + timedelta(days=n) for n in range(4)])
    seed_days(migrated_database, [first], site=OTHER)
    catch_up_now(migrated_database)
    before = rollups(migrated_database)
    once = run(rebuild(migrated_database))
    assert rollups(migrated_database) == before
    twice = run(rebuild(migrated_database))
    assert rollups(migrated_database) == before
    assert once.rolled == twice.rolled == len(before["days"]) and once.rebuild

    # A wrong row inside the range goes, one outside stays; other sites are untouched.
    site = site_id(migrated_database)
    inside, outside = first + timedelta(days=1), first + timedelta(days=3)
    for day in (inside, outside):
        query(
            migrated_database,
            "INSERT INTO rollup_visits VALUES (%s, %s, 'page_typo', '', 'x', 1, 1, 0, 0, 1)"
            " RETURNING 1",
            (site, day),
        )
    rolled_at = "SELECT site_id, day, rolled_at FROM rollup_days ORDER BY 1, 2"
    stamps = query(migrated_database, rolled_at)
    ranged = run(rebuild(migrated_database, site=SITE, first=first, last=inside))
    assert (ranged.rolled, ranged.first, ranged.last, ranged.sites) == (2, first, inside, 1)
    assert roller.summary(ranged) == (
        f"rebuilt 2 day(s) of 1 site(s) from raw rows ({first} to {inside})"
    )
    typos = query(migrated_database, "SELECT day FROM rollup_visits WHERE dimension = 'page_typo'")
    assert typos == [(outside,)]
    changed = {
        (s, d)
        for (s, d, t), (_, _, old) in zip(query(migrated_database, rolled_at), stamps, strict=True)
        if t != old
    }
    assert changed == {(site, first), (site, inside)}


def test_rebuild_keeps_the_days_whose_raw_rows_were_pruned(migrated_database: str) -> None:
    first = today() - timedelta(days=6)
    seed_days(migrated_database, [first + timedelta(days=n) for n in range(3)])
    catch_up_now(migrated_database)
    before = rollups(migrated_database)
    # Prune-like: the raw rows of the first day are gone (events at a UTC midnight).
    cut = noon(first + timedelta(days=1), 0)
    query(migrated_database, "DELETE FROM events WHERE received_at < %s RETURNING 1", (cut,))
    query(migrated_database, "DELETE FROM sessions WHERE last_seen_at < %s RETURNING 1", (cut,))
    report = run(rebuild(migrated_database))
    assert report.kept == 1
    assert "kept 1 rolled-up day(s) whose raw rows are not all there" in roller.summary(report)
    assert rollups(migrated_database) == before
    # Rebuilding only pruned days does nothing at all.
    only_pruned = run(rebuild(migrated_database, first=first, last=first))
    assert (only_pruned.rolled, only_pruned.kept) == (0, 1)
    assert rollups(migrated_database) == before


def test_rebuild_errors(migrated_database: str) -> None:
    with pytest.raises(RollupOptionError, match=r"--site: no site 'nope.example'"):
        run(rebuild(migrated_database, site="nope.example"))
    with pytest.raises(RollupOptionError, match=r"--from \(2024-03-05\) is after --to"):
        run(rebuild(migrated_database, first=date(2024, 3, 5), last=date(2024, 3, 1)))
    with pytest.raises(RollupError, match="rebuilding the rollups failed"):
        run(rebuild("postgresql://nobody@127.0.0.1:9/none?connect_timeout=2"))


# -- the server ------------------------------------------------------------------------


SERVER = Config(batch_max_msec=50, request_rate_limit=0, geo_ip_file="", rollup_interval_sec=1)


def test_the_server_rolls_up_by_itself(migrated_database: str) -> None:
    days = [today() - timedelta(days=n) for n in (4, 3)]
    seed_days(migrated_database, days)
    with TestClient(create_app(SERVER, conninfo=migrated_database)) as client:
        wait_until(lambda: rolled_days(migrated_database)[:2] == days, "no rollup by the server")
        # A late write: the server re-rolls the day by itself.
        run(write(migrated_database, [event(noon(days[0], 21), 4242)]))
        wait_until(lambda: stale_days(migrated_database) == [], "the stale day was not re-rolled")
        assert client.get("/").status_code == 200
    assert_rollups_match_raw(migrated_database)


def test_a_failed_rollup_is_logged_and_the_server_keeps_rolling(
    migrated_database: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    seed_days(migrated_database, [today() - timedelta(days=3)])
    real = catch_up
    calls = 0

    async def first_fails(conninfo: str) -> RollupReport:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RollupError("rolling up failed: the database went away\nDETAIL: more")
        return await real(conninfo)

    monkeypatch.setattr(app_module, "catch_up", first_fails)
    with TestClient(create_app(SERVER, conninfo=migrated_database)) as client:
        wait_until(lambda: rolled_days(migrated_database) != [], "no rollup after the failure")
        assert client.get("/").status_code == 200
    failure = next(r for r in caplog.records if r.getMessage().startswith("rollup failed"))
    assert failure.levelname == "WARNING"
    assert failure.getMessage() == (
        "rollup failed, will retry in 1 s: rolling up failed: the database went away"
    )


def test_with_interval_0_the_server_never_rolls_up(migrated_database: str) -> None:
    seed_days(migrated_database, [today() - timedelta(days=3)])
    config = Config(geo_ip_file="", rollup_interval_sec=0)
    with TestClient(create_app(config, conninfo=migrated_database)):
        time.sleep(1.5)  # a server with interval 1 rolls within this (the test above)
    assert rolled_days(migrated_database) == []


# -- prune ------------------------------------------------------------------------------

NOW = datetime(2024, 3, 10, 15, 30, tzinfo=UTC)


def seed_for_prune(conninfo: str) -> list[date]:
    days = [date(2024, 3, 4) + timedelta(days=n) for n in range(6)]  # 4th to 9th
    query(conninfo, "SELECT picolytics_ensure_event_partitions('2024-03-01', 10)")
    seed_days(conninfo, days)
    return days


def test_prune_rolls_up_first_so_the_numbers_outlive_the_raw_rows(
    migrated_database: str,
) -> None:
    days = seed_for_prune(migrated_database)
    dry = run(prune(migrated_database, 3, dry_run=True, now=NOW))
    assert dry.rolled_up_days == len(days) and rolled_days(migrated_database) == []
    assert "would roll up 6 day(s) first, so their numbers outlive them" in summary(dry)

    catch_up_now(migrated_database, now=NOW)
    totals = query(migrated_database, ROLLED_TOTALS)
    before = rollups(migrated_database)
    query(migrated_database, "DELETE FROM rollup_days WHERE day = '2024-03-05' RETURNING 1")
    report = run(prune(migrated_database, 3, now=NOW))
    assert report.rolled_up_days == 1  # the day just un-rolled, before its rows went
    assert report.dropped_partitions[-1] == "events_20240306"
    assert query(migrated_database, "SELECT min(received_at)::date FROM events") == [
        (date(2024, 3, 7),)
    ]
    assert rollups(migrated_database) == before
    assert query(migrated_database, ROLLED_TOTALS) == totals  # the numbers survived
    assert summary(report)[-2:] == [
        "rolled up 1 day(s) first, so their numbers outlive them",
        "rollups are kept forever (PRUNE_ROLLUP_DAYS is 0)",
    ]
    # Nothing is rolled again from the few raw rows left, then or later.
    assert catch_up_now(migrated_database, now=NOW).rolled == 0
    assert run(rebuild(migrated_database, now=NOW)).kept == 3


def test_prune_drops_rollups_after_prune_rollup_days(migrated_database: str) -> None:
    seed_for_prune(migrated_database)
    report = run(prune(migrated_database, 3, rollup_days=5, now=NOW))
    assert report.rollup_cutoff == date(2024, 3, 5)
    assert report.deleted_rollup_days == 1 and report.deleted_rollup_rows > 0
    assert rolled_days(migrated_database)[0] == date(2024, 3, 5)
    for table, column in (("rollup_visits", "day"), ("rollup_events", "day")):
        assert query(migrated_database, f"SELECT min({column}) FROM {table}") == [
            (date(2024, 3, 5),)
        ]
    assert query(migrated_database, "SELECT min(hour)::date FROM rollup_hours") == [
        (date(2024, 3, 5),)
    ]
    assert summary(report)[-1] == (
        f"deleted the rollups of 1 day(s) from before 2024-03-05 "
        f"({report.deleted_rollup_rows} row(s))"
    )
    assert catch_up_now(migrated_database, now=NOW).rolled == 0
    with pytest.raises(ValueError, match="rollups outlive raw rows"):
        run(prune(migrated_database, 3, rollup_days=3, now=NOW))


def test_prune_prunes_nothing_when_a_day_cannot_be_rolled(
    migrated_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed_for_prune(migrated_database)

    async def broken(connection: Any, site: int, day: date, zone: str) -> None:
        raise psycopg.errors.DivisionByZero("division by zero")

    monkeypatch.setattr(roller, "roll_day", broken)
    events = query(migrated_database, "SELECT count(*) FROM events")
    with pytest.raises(Exception, match="rolling up before pruning failed for 6 day"):
        run(prune(migrated_database, 3, now=NOW))
    assert query(migrated_database, "SELECT count(*) FROM events") == events


# -- settings ---------------------------------------------------------------------------


def test_the_settings_and_their_checks() -> None:
    config = load_config(None, {})
    assert (config.rollup_interval_sec, config.prune_rollup_days) == (60, 0)
    assert load_config(None, {"PRUNE_DAYS": "30", "PRUNE_ROLLUP_DAYS": "400"}).prune_rollup_days
    with pytest.raises(
        ConfigError,
        match=r"PRUNE_ROLLUP_DAYS \(pruneRollupDays\) = 5: must be 0 "
        r"while pruneDays is 0",
    ):
        load_config(None, {"PRUNE_ROLLUP_DAYS": "5"})
    with pytest.raises(ConfigError, match=r"= 30: must be 0 or above pruneDays \(30\)"):
        load_config(None, {"PRUNE_DAYS": "30", "PRUNE_ROLLUP_DAYS": "30"})
    with pytest.raises(ConfigError, match=r"ROLLUP_INTERVAL_SEC .*at least 0"):
        load_config(None, {"ROLLUP_INTERVAL_SEC": "-1"})
    template = default_config_yaml()
    assert "rollupIntervalSec: 60" in template and "pruneRollupDays: 0" in template


# -- the command line -------------------------------------------------------------------


def cli_env(conninfo: str, **extra: str) -> dict[str, str]:
    return {"PGCONNSTRING": conninfo, "LOG_FORMAT": "text", **extra}


@pytest.mark.slow
def test_cli_rollup_then_rebuild(migrated_database: str, tmp_path: Path) -> None:
    first = today() - timedelta(days=4)
    seed_days(migrated_database, [first, first + timedelta(days=1)])
    done = run_cli("rollup", env=cli_env(migrated_database), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    line = done.stdout.strip()
    assert re.fullmatch(
        r"rolled up \d+ day\(s\) of 1 site\(s\) \(\d+ new, 0 stale, 0 in a new time zone; "
        rf"{first} to \d{{4}}-\d\d-\d\d\)",
        line,
    ), line
    again = run_cli("rollup", env=cli_env(migrated_database), cwd=tmp_path)
    assert again.stdout.strip() == "the read model is up to date: no day was due"
    rebuilt = run_cli(
        "rollup",
        "--rebuild",
        "--site",
        "WWW.Example.com",
        "--from",
        str(first),
        "--to",
        str(first),
        env=cli_env(migrated_database),
        cwd=tmp_path,
    )
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert rebuilt.stdout.strip() == (
        f"rebuilt 1 day(s) of 1 site(s) from raw rows ({first} to {first})"
    )
    assert_rollups_match_raw(migrated_database)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rebuild", "--site", "nope.example"], "--site: no site 'nope.example' in the database"),
        (
            ["--rebuild", "--from", "2024-13-01"],
            "--from: expected a day as YYYY-MM-DD, not '2024-13-01'",
        ),
        (
            ["--rebuild", "--from", "2024-03-05", "--to", "2024-03-01"],
            "--from (2024-03-05) is after --to (2024-03-01)",
        ),
        (["--site", "example.com"], "--site, --from and --to need --rebuild"),
    ],
)
def test_cli_rollup_errors_are_clean(
    migrated_database: str, tmp_path: Path, args: list[str], message: str
) -> None:
    result = run_cli("rollup", *args, env=cli_env(migrated_database), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == f"picolytics: error: {message}"
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_cli_rollup_waits_for_another_roller(migrated_database: str, tmp_path: Path) -> None:
    seed_days(migrated_database, [today() - timedelta(days=3)])
    with psycopg.connect(migrated_database, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s::bigint)", (ROLL_LOCK_KEY,))
        process = subprocess.Popen(
            [*PICOLYTICS, "rollup"],
            env=clean_env(cli_env(migrated_database)),
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert process.stderr is not None
        waiting = process.stderr.readline()
        assert waiting.strip() == "another process is rolling up; waiting for it to finish..."
        assert process.poll() is None
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 0
    assert out.startswith("rolled up ")


@pytest.mark.slow
def test_cli_rollup_shows_progress_on_a_terminal(migrated_database: str, tmp_path: Path) -> None:
    first = today() - timedelta(days=5)
    seed_days(migrated_database, [first, first + timedelta(days=2)])
    parent, child = pty.openpty()
    process = subprocess.Popen(
        [*PICOLYTICS, "rollup", "--rebuild"],
        env=clean_env(cli_env(migrated_database)),
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=child,
        stderr=subprocess.DEVNULL,
    )
    os.close(child)
    output = b""
    with contextlib.suppress(OSError):  # EIO once the child has closed the terminal
        while True:
            ready, _, _ = select.select([parent], [], [], 60)
            if not ready:
                break
            chunk = os.read(parent, 4096)
            if not chunk:
                break
            output += chunk
    os.close(parent)
    assert process.wait(timeout=60) == 0
    text = output.decode()
    assert re.search(r"rebuilding +\[-+\] +0/5", text)  # from 0 of 5 days...
    assert re.search(r"rebuilding +\[#+\] +5/5", text)  # ...to 5 of 5
    assert text.strip().splitlines()[-1].startswith("rebuilt ")


@pytest.mark.slow
def test_cli_prune_mentions_rollups_and_checks_the_retention(
    migrated_database: str, tmp_path: Path
) -> None:
    seed_days(migrated_database, [today() - timedelta(days=10), today() - timedelta(days=1)])
    env = cli_env(migrated_database, PRUNE_DAYS="3", PRUNE_ROLLUP_DAYS="30")
    done = run_cli("prune", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert re.search(r"^rolled up \d+ day\(s\) first", done.stdout, re.M), done.stdout
    assert "deleted the rollups of 0 day(s) from before" in done.stdout
    assert today() - timedelta(days=10) in rolled_days(migrated_database)
    refused = run_cli("prune", "--days", "30", env=env, cwd=tmp_path)
    assert refused.returncode == 2
    assert "Invalid value for '--days': must be below PRUNE_ROLLUP_DAYS (30)" in refused.stderr
