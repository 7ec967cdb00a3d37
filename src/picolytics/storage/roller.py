"""Keeping the read model current: which local days to roll up, and when
(docs/read-model.md, "Exact, fresh, late writes, concurrency").

`catch_up` rolls every due day: a local day of a site (in the site's zone) that has
been closed for ROLL_DELAY, from the site's first raw day on, and that is not rolled
up yet, or is marked stale by a late write, or was rolled in another zone while its
raw rows are all still there. `rebuild` recomputes a range of days from raw rows.
Each day is rolled by `roll_day` (rollup.py) in one transaction of its own, oldest
first, so an interrupted run leaves every day either rolled or not, and the next run
goes on from there. Both are idempotent.

One roller at a time: a session advisory lock of its own. The server tries it and
skips a round when another process holds it; the CLI and prune wait for it. roll_day
also locks its day, so even two rollers that bypassed this lock would not double count.

The clock is the database's by default (`now=None`): the writer's late-write marks
(writer.py, MARK_AGE) are decided by the database's clock too, and the argument that
no write is lost holds only when both use the same clock.

Raw rows that prune removed cannot be rolled again, so a day already rolled up is
replaced from raw rows only when all of its raw rows are certainly still there. Prune
cuts raw events at a UTC midnight, so for a site whose oldest raw event was received
at `first_at`, every day starting at or after the UTC midnight before `first_at` (its
*raw horizon*) still has all of its rows; the day that straddles the horizon may not,
and neither may a day without any raw event left (a partition prune left behind).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Any, Literal

import psycopg
from psycopg import AsyncConnection

from picolytics.errors import RollupError, RollupOptionError, first_line
from picolytics.storage.pipeline import WRITE_TIMEOUT_S
from picolytics.storage.rollup import roll_day
from picolytics.storage.rollup_prefix import (
    EVENT_DELAY,
    clear_prefixes,
    due_prefixes,
    prefix_bounds,
    roll_prefix,
)
from picolytics.storage.writer import EVENT_MARK_AGE, MARK_AGE

log = logging.getLogger(__name__)

Connection = AsyncConnection[Any]
# Called with (days done, days to do) before the first day and after each one.
Progress = Callable[[int, int], None]

# Any fixed 64-bit number distinct from the other advisory locks: "picoroll".
ROLL_LOCK_KEY = 0x7069636F726F6C6C
# A local day is rolled up once it ended this long ago: the default session timeout
# (30 min) plus as much again, so nearly every visit of the day has ended and the
# rollup is rarely made stale by a visit that goes on. Correctness does not depend on
# the session timeout (a visit that goes on marks its day stale, writer.py), only on
# ROLL_DELAY - MARK_AGE exceeding the longest a write may take: see the argument at
# writer.MARK_AGE.
ROLL_DELAY = timedelta(hours=1)
# The margin between the two, in units of the writer's deadline for a whole write.
SAFETY_FACTOR = 10
if SAFETY_FACTOR * timedelta(seconds=WRITE_TIMEOUT_S) > ROLL_DELAY - MARK_AGE:
    raise AssertionError("ROLL_DELAY - MARK_AGE must exceed the writer's longest write")
# The same for an open day's events, which a prefix holds up to EVENT_DELAY ago.
if SAFETY_FACTOR * timedelta(seconds=WRITE_TIMEOUT_S) > EVENT_DELAY - EVENT_MARK_AGE:
    raise AssertionError("EVENT_DELAY - EVENT_MARK_AGE must exceed the writer's longest write")

TRY_LOCK = "SELECT pg_try_advisory_lock(%s::bigint)"
LOCK = "SELECT pg_advisory_lock(%s::bigint)"
UNLOCK = "SELECT pg_advisory_unlock(%s::bigint)"
CLOSED_BEFORE = "SELECT coalesce(%s::timestamptz, now()) - %s::interval"
SITE_ID = "SELECT site_id FROM sites WHERE domain = %s"

# The sites (one, or all) and each one's oldest raw event, found by the primary key:
# one short index scan per partition (on Citus, in the site's shard).
SITE_IDS = """
SELECT site_id FROM sites
WHERE %(site_id)s::integer IS NULL OR site_id = %(site_id)s::integer
ORDER BY site_id
"""
FIRST_EVENT = "SELECT received_at FROM events WHERE site_id = %s ORDER BY received_at LIMIT 1"

# For the site %(site_id)s, whose oldest raw event is %(first_at)s: its zone, its first
# raw day and raw horizon, and the last local day closed before %(closed_before)s,
# within [%(first)s, %(last)s] when given. Every distributed table is read by the site
# itself, not through the CTE, so that Citus routes the statement to the site's shard.
# Only a site with a day of that span not rolled up in its zone is walked day by day;
# otherwise it contributes its stale days alone, so a round over a long, fully rolled
# history costs one pass over the site's rollup_days. For each day: whether it is rolled
# up, stale, in which zone, whether it starts at or after the horizon, and (only for a
# rolled day that might be replaced) whether replacing it loses nothing: it still has
# raw events, or its rollup counts nothing anyway.
# %(every)s (a rebuild) returns every day of the spans, else only the candidates.
DAYS = """
WITH site AS (
    SELECT s.site_id, s.domain, s.timezone, f.first_at,
           date_trunc('day', f.first_at, 'UTC') AS horizon,
           greatest((f.first_at AT TIME ZONE s.timezone)::date,
                    %(first)s::date) AS first_day,
           least((%(closed_before)s::timestamptz AT TIME ZONE s.timezone)::date - 1,
                 %(last)s::date) AS last_day
    FROM sites s
    CROSS JOIN (SELECT %(first_at)s::timestamptz AS first_at) f
    WHERE s.site_id = %(site_id)s::integer
), rolled AS (
    SELECT r.site_id, count(*) AS days
    FROM rollup_days r JOIN site ON site.site_id = r.site_id
    WHERE r.site_id = %(site_id)s::integer
      AND r.day BETWEEN site.first_day AND site.last_day AND r.timezone = site.timezone
    GROUP BY r.site_id
), walked AS (
    SELECT site.* FROM site LEFT JOIN rolled USING (site_id)
    WHERE %(every)s OR coalesce(rolled.days, 0) < site.last_day - site.first_day + 1
), span AS (
    SELECT walked.*, walked.first_day + n AS day
    FROM walked CROSS JOIN LATERAL generate_series(0, walked.last_day - walked.first_day) AS n
    UNION
    SELECT site.*, st.day
    FROM site JOIN rollup_stale st
      ON st.site_id = %(site_id)s::integer AND st.day BETWEEN site.first_day AND site.last_day
)
SELECT sp.site_id, sp.domain, sp.timezone, sp.day,
       r.day IS NOT NULL AS rolled,
       st.day IS NOT NULL AS stale,
       r.timezone IS NOT NULL AND r.timezone <> sp.timezone AS other_zone,
       (sp.day::timestamp AT TIME ZONE sp.timezone) >= sp.horizon AS complete,
       CASE WHEN r.day IS NOT NULL AND st.day IS NULL
                 AND (%(every)s OR r.timezone <> sp.timezone)
            THEN EXISTS (
                SELECT 1 FROM events e
                WHERE e.site_id = %(site_id)s::integer
                  AND e.received_at >= (sp.day::timestamp AT TIME ZONE sp.timezone)
                  AND e.received_at < ((sp.day + 1)::timestamp AT TIME ZONE sp.timezone))
              OR NOT EXISTS (SELECT 1 FROM rollup_visits v
                             WHERE v.site_id = %(site_id)s::integer AND v.day = sp.day)
                 AND NOT EXISTS (SELECT 1 FROM rollup_events v
                                 WHERE v.site_id = %(site_id)s::integer AND v.day = sp.day)
       END AS replaceable
FROM span sp
LEFT JOIN rollup_days r ON r.site_id = %(site_id)s::integer AND r.day = sp.day
LEFT JOIN rollup_stale st ON st.site_id = %(site_id)s::integer AND st.day = sp.day
WHERE (%(every)s OR r.day IS NULL OR st.day IS NOT NULL OR r.timezone <> sp.timezone)
  AND ((sp.day + 1)::timestamp AT TIME ZONE sp.timezone) <= %(closed_before)s::timestamptz
ORDER BY sp.day
"""

# Rolled-up days of a rebuild's range before their site's first raw day (all raw rows
# pruned): a rebuild keeps them as they are.
KEPT_BEFORE_RAW = """
SELECT count(*) FROM rollup_days r JOIN sites s USING (site_id)
WHERE (%(site_id)s::integer IS NULL OR r.site_id = %(site_id)s::integer)
  AND r.day >= coalesce(%(first)s::date, r.day) AND r.day <= coalesce(%(last)s::date, r.day)
  AND r.day < coalesce((SELECT (e.received_at AT TIME ZONE s.timezone)::date FROM events e
                        WHERE e.site_id = r.site_id ORDER BY e.received_at LIMIT 1),
                       'infinity'::date)
"""

# A rebuild clears the days it is about to roll first: from then on queries read those
# days from raw rows (the same numbers), never a rollup the rebuild is replacing.
# rollup_days goes first, so no query uses a day whose rows are half gone.
CLEAR_DAYS = (
    "DELETE FROM rollup_days WHERE site_id = %(site_id)s AND day = ANY(%(days)s::date[])",
    "DELETE FROM rollup_visits WHERE site_id = %(site_id)s AND day = ANY(%(days)s::date[])",
    "DELETE FROM rollup_events WHERE site_id = %(site_id)s AND day = ANY(%(days)s::date[])",
    "DELETE FROM rollup_segment_visits WHERE site_id = %(site_id)s AND day = ANY(%(days)s::date[])",
    "DELETE FROM rollup_segment_events WHERE site_id = %(site_id)s AND day = ANY(%(days)s::date[])",
    "DELETE FROM rollup_segment_splits WHERE site_id = %(site_id)s AND day = ANY(%(days)s::date[])",
    "DELETE FROM rollup_hours WHERE site_id = %(site_id)s"
    " AND hour >= %(first)s::date AND hour < %(last)s::date + 1"
    " AND hour::date = ANY(%(days)s::date[])",
)

Reason = Literal["new", "stale", "zone", "rebuild"]


@dataclass(frozen=True)
class DueDay:
    site_id: int
    domain: str
    day: date
    timezone: str
    reason: Reason


@dataclass(frozen=True)
class RollupReport:
    """What a catch-up or a rebuild did."""

    busy: bool = False  # another process held the roller's lock: nothing was done
    rebuild: bool = False
    rolled: int = 0  # days rolled up
    new: int = 0  # of which never rolled before
    stale: int = 0  # of which marked stale by a late write
    rezoned: int = 0  # of which rolled in another zone before
    sites: int = 0  # sites with a day rolled
    kept: int = 0  # rebuild: rolled-up days kept, their raw rows not all there
    first: date | None = None  # the first and last day rolled
    last: date | None = None
    failed: tuple[str, ...] = ()  # "domain day: error" of days that could not be rolled
    prefixes: int = 0  # open days whose prefix was rolled (storage/rollup_prefix.py)


@dataclass(frozen=True)
class _Row:
    site_id: int
    domain: str
    timezone: str
    day: date
    rolled: bool
    stale: bool
    other_zone: bool
    complete: bool
    replaceable: bool | None


def _catch_up_reason(row: _Row) -> Reason | None:
    if not row.rolled:
        return "new"
    if row.stale:
        return "stale"
    if row.other_zone and row.complete and row.replaceable:
        return "zone"
    return None  # rolled in another zone, but its raw rows may be gone: kept


def _rebuild_reason(row: _Row) -> Reason | None:
    if not row.rolled or row.stale or (row.complete and row.replaceable):
        return "rebuild"
    return None


async def _rows(
    connection: Connection,
    closed_before: datetime,
    *,
    every: bool,
    site_id: int | None = None,
    first: date | None = None,
    last: date | None = None,
) -> list[_Row]:
    """The rows of DAYS, site by site (one statement per site: on Citus, each stays in
    one shard), oldest day first across the sites."""
    rows: list[_Row] = []
    for site in await _site_ids(connection, site_id):
        cursor = await connection.execute(FIRST_EVENT, (site,))
        found = await cursor.fetchone()
        if found is None:
            continue  # no raw events: nothing to roll
        params = {
            "closed_before": closed_before,
            "every": every,
            "site_id": site,
            "first_at": found[0],
            "first": first,
            "last": last,
        }
        cursor = await connection.execute(DAYS, params)
        rows.extend(_Row(*row) for row in await cursor.fetchall())
    return sorted(rows, key=lambda row: (row.day, row.site_id))


async def _site_ids(connection: Connection, site_id: int | None) -> list[int]:
    cursor = await connection.execute(SITE_IDS, {"site_id": site_id})
    return [int(row[0]) for row in await cursor.fetchall()]


async def _closed_before(connection: Connection, now: datetime | None) -> datetime:
    cursor = await connection.execute(CLOSED_BEFORE, (now, ROLL_DELAY))
    row = await cursor.fetchone()
    assert row is not None and isinstance(row[0], datetime)
    return row[0]


async def due_days(connection: Connection, now: datetime | None = None) -> list[DueDay]:
    """The days `catch_up` would roll now, oldest first."""
    rows = await _rows(connection, await _closed_before(connection, now), every=False)
    due = []
    for row in rows:
        reason = _catch_up_reason(row)
        if reason is not None:
            due.append(DueDay(row.site_id, row.domain, row.day, row.timezone, reason))
    return due


async def _lock(connection: Connection, wait: bool, on_wait: Callable[[], None] | None) -> bool:
    cursor = await connection.execute(TRY_LOCK, (ROLL_LOCK_KEY,))
    row = await cursor.fetchone()
    if row and row[0]:
        return True
    if not wait:
        return False
    if on_wait is not None:
        on_wait()
    log.info("rollup: another process is rolling up, waiting for it")
    await connection.execute(LOCK, (ROLL_LOCK_KEY,))
    return True


async def _roll(
    connection: Connection, days: Sequence[DueDay], progress: Progress | None, rebuild: bool
) -> RollupReport:
    """Roll each day in its own transaction; a day that fails is reported, the others
    go on, unless the connection itself is lost."""
    if progress is not None:
        progress(0, len(days))
    rolled: list[DueDay] = []
    failed: list[str] = []
    for number, due in enumerate(days, 1):
        try:
            await roll_day(connection, due.site_id, due.day, due.timezone)
        except psycopg.Error as error:
            if connection.broken or connection.closed:
                raise
            failed.append(f"{due.domain} {due.day}: {first_line(error)}")
            log.warning("rollup of %s %s failed: %s", due.domain, due.day, first_line(error))
        else:
            rolled.append(due)
            log.debug("rollup: rolled %s %s (%s)", due.domain, due.day, due.reason)
        if progress is not None:
            progress(number, len(days))
    return RollupReport(
        rebuild=rebuild,
        rolled=len(rolled),
        new=sum(due.reason == "new" for due in rolled),
        stale=sum(due.reason == "stale" for due in rolled),
        rezoned=sum(due.reason == "zone" for due in rolled),
        sites=len({due.site_id for due in rolled}),
        first=min((due.day for due in rolled), default=None),
        last=max((due.day for due in rolled), default=None),
        failed=tuple(failed),
    )


async def _roll_prefixes(
    connection: Connection,
    closed_before: datetime,
    report: RollupReport,
    *,
    site_id: int | None = None,
    every: bool = False,
) -> RollupReport:
    """After the days: the prefix of each site's open day, up to the last VISIT_STEP
    boundary before `closed_before` (its events further, storage/rollup_prefix.py), where it is
    missing, behind or stale (`every`: all)."""
    events_before = closed_before + (ROLL_DELAY - EVENT_DELAY)
    bounds = await prefix_bounds(connection, closed_before, events_before)
    rolled = 0
    failed = list(report.failed)
    # Site by site, so that on Citus each statement stays in one site's shard.
    pending = [
        found
        for site in await _site_ids(connection, site_id)
        for found in await due_prefixes(connection, bounds, site_id=site, every=every)
    ]
    for due in pending:
        try:
            await roll_prefix(connection, due, bounds)
        except psycopg.Error as error:
            if connection.broken or connection.closed:
                raise
            failed.append(f"{due.domain} {due.day} (open day): {first_line(error)}")
            log.warning("rollup of %s's open day %s failed: %s", due.domain, due.day, error)
        else:
            rolled += 1
            log.debug(
                "rollup: rolled %s's open day %s up to %s (events %s)%s",
                due.domain, due.day, bounds.until, bounds.events_until,
                "" if due.whole else ", its events only",
            )  # fmt: skip
    return replace(report, prefixes=rolled, failed=tuple(failed))


async def _with_connection(
    target: Connection | str, work: Callable[[Connection], Awaitable[RollupReport]], what: str
) -> RollupReport:
    """Run `work` on the given connection (autocommit: each day its own transaction),
    or on a new one to the given conninfo; psycopg's errors become RollupError."""
    try:
        if isinstance(target, str):
            async with await AsyncConnection.connect(target, autocommit=True) as connection:
                report = await work(connection)
        else:
            if not target.autocommit:
                raise ValueError("the roller needs an autocommit connection")
            report = await work(target)
    except psycopg.Error as error:
        raise RollupError(f"{what} failed: {first_line(error)}") from None
    return report


async def _locked(
    connection: Connection,
    wait: bool,
    on_wait: Callable[[], None] | None,
    work: Callable[[], Awaitable[RollupReport]],
) -> RollupReport:
    """Run `work` under the roller's lock; a busy report if it is held and not waited for."""
    if not await _lock(connection, wait, on_wait):
        log.debug("rollup: another process is rolling up, skipping")
        return RollupReport(busy=True)
    try:
        report = await work()
    except Exception:
        # A lost connection took the lock with its session; on a cancellation (the
        # server stopping) nothing is awaited here: closing the connection releases it.
        if not (connection.broken or connection.closed):
            with contextlib.suppress(psycopg.Error):
                await connection.execute(UNLOCK, (ROLL_LOCK_KEY,))
        raise
    await connection.execute(UNLOCK, (ROLL_LOCK_KEY,))
    return report


async def catch_up(
    target: Connection | str,
    now: datetime | None = None,
    *,
    progress: Progress | None = None,
    wait: bool = False,
    on_wait: Callable[[], None] | None = None,
) -> RollupReport:
    """Roll up every due day, oldest first (see the module's docstring).

    `target` is an autocommit connection or a conninfo; `now` defaults to the
    database's clock. With another roller running, returns a busy report at once, or
    with `wait` calls `on_wait` and waits for it to finish. Days that fail are listed
    in the report's `failed`; a lost connection raises RollupError.
    """

    async def work(connection: Connection) -> RollupReport:
        async def locked() -> RollupReport:
            report = await _roll(connection, await due_days(connection, now), progress, False)
            closed_before = await _closed_before(connection, now)
            return await _roll_prefixes(connection, closed_before, report)

        return await _locked(connection, wait, on_wait, locked)

    report = await _with_connection(target, work, "rolling up")
    if report.rolled or report.failed:
        log.info("rollup: %s", summary(report))
    return report


async def rebuild(
    target: Connection | str,
    *,
    site: str | None = None,
    first: date | None = None,
    last: date | None = None,
    progress: Progress | None = None,
    now: datetime | None = None,
    wait: bool = True,
    on_wait: Callable[[], None] | None = None,
) -> RollupReport:
    """Recompute the rollups of the days from `first` to `last` (local days, both
    included; by default every closed day with raw rows) of `site` (a domain; by
    default every site) from raw rows.

    Only closed days (ROLL_DELAY) from the site's first raw day on are rolled; a
    rolled-up day whose raw rows are not all there any more (pruned) is kept as it is.
    The days to roll are cleared first, within the range only, then rolled one by one,
    oldest first. Running it twice gives the same rows. Raises RollupOptionError for an
    unknown site or a range that ends before it starts.
    """
    if first is not None and last is not None and first > last:
        raise RollupOptionError(f"--from ({first}) is after --to ({last})")

    async def work(connection: Connection) -> RollupReport:
        site_id = None
        if site is not None:
            cursor = await connection.execute(SITE_ID, (site,))
            found = await cursor.fetchone()
            if found is None:
                raise RollupOptionError(f"--site: no site {site!r} in the database")
            site_id = int(found[0])

        async def locked() -> RollupReport:
            closed_before = await _closed_before(connection, now)
            rows = await _rows(
                connection, closed_before, every=True, site_id=site_id, first=first, last=last
            )
            days = []
            for row in rows:
                if _rebuild_reason(row) is not None:
                    days.append(DueDay(row.site_id, row.domain, row.day, row.timezone, "rebuild"))
            cursor = await connection.execute(
                KEPT_BEFORE_RAW, {"site_id": site_id, "first": first, "last": last}
            )
            counted = await cursor.fetchone()
            kept = len(rows) - len(days) + (int(counted[0]) if counted else 0)
            await _clear(connection, days)
            await clear_prefixes(connection, site_id, first, last)
            report = await _roll(connection, days, progress, True)
            report = await _roll_prefixes(
                connection, closed_before, report, site_id=site_id, every=True
            )
            return replace(report, kept=kept)

        return await _locked(connection, wait, on_wait, locked)

    report = await _with_connection(target, work, "rebuilding the rollups")
    log.info("rollup: %s", summary(report))
    return report


async def _clear(connection: Connection, days: Sequence[DueDay]) -> None:
    by_site: dict[int, list[date]] = {}
    for due in days:
        by_site.setdefault(due.site_id, []).append(due.day)
    async with connection.transaction():
        for site_id, site_days in sorted(by_site.items()):
            params = {
                "site_id": site_id,
                "days": site_days,
                "first": min(site_days),
                "last": max(site_days),
            }
            for statement in CLEAR_DAYS:
                await connection.execute(statement, params)


def summary(report: RollupReport) -> str:
    """One line about a report (the CLI prints it, the server logs it)."""
    if report.busy:
        return "another process is rolling up; nothing was done"
    failed = f"; {len(report.failed)} day(s) failed" if report.failed else ""
    if report.rebuild:
        kept = (
            f"; kept {report.kept} rolled-up day(s) whose raw rows are not all there"
            if report.kept
            else ""
        )
        if not report.rolled:
            return f"rebuilt no day: nothing in range has raw rows to roll up{kept}{failed}"
        return (
            f"rebuilt {report.rolled} day(s) of {report.sites} site(s) from raw rows "
            f"({report.first} to {report.last}){kept}{failed}"
        )
    if not report.rolled:
        if report.failed:
            return f"rolled up no day{failed}"
        return "the read model is up to date: no day was due"
    return (
        f"rolled up {report.rolled} day(s) of {report.sites} site(s) "
        f"({report.new} new, {report.stale} stale, {report.rezoned} in a new time zone; "
        f"{report.first} to {report.last}){failed}"
    )
