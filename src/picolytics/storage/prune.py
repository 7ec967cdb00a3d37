"""Retention: remove what was received before the cut-off (PRUNE_DAYS).

The cut-off is the start of a UTC day, the same granularity as the daily `events`
partitions, so a daily partition is never cut in two: each lies wholly before the
cut-off (dropped, which is cheap) or wholly after it (kept). Rows older than the
cut-off that sit anywhere else (the default partition, or a hand-made partition
spanning the cut-off) are deleted in bounded batches, each its own transaction, so
no lock is held for long. Sessions last seen and bot counts of days before the
cut-off follow, also in batches.

Rolled-up statistics outlive raw rows (docs/read-model.md, Retention): before any raw
row goes, every due day is rolled up (roller.py), so the numbers of the days about to
lose their raw rows are kept; if a day cannot be rolled, nothing is pruned. Every
local day that ended ROLL_DELAY ago is due, which covers every day a cut-off of
PRUNE_DAYS >= 1 touches except, within the first hour after a UTC midnight, a 25-hour
local day (clocks going back) right at the cut-off. Rollups themselves are removed by
local day after PRUNE_ROLLUP_DAYS (0 = never), which must exceed PRUNE_DAYS.

Only one process prunes at a time: a session-level advisory lock, tried and never
waited for, makes the others skip. Every other wait is bounded (WAIT_TIMEOUT for a lock,
STATEMENT_TIMEOUT for a statement), so a session holding a lock that prune needs makes
the run fail with an error instead of stalling retention without a word.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import psycopg
from psycopg import AsyncConnection, sql

from picolytics.errors import PruneError, first_line
from picolytics.storage import maintenance, roller
from picolytics.storage.prune_partitions import (
    DROP_LOCK_TIMEOUT,
    Partition,
    drop_partition,
    event_partitions,
    plan,
)

log = logging.getLogger(__name__)

Connection = AsyncConnection[tuple[object, ...]]

# Any fixed 64-bit number distinct from the migration lock; this one spells "picoprun".
PRUNE_LOCK_KEY = 0x7069636F7072756E
BATCH_ROWS = 10_000
# Any other lock (the roller's, waited for while another process rolls up; a row or
# table lock) is waited for at most this long: a rollup round normally takes seconds to
# a few minutes. A statement (one batch of deletes, one day's rollup) normally takes
# seconds; half an hour means something holds it. A run that hits either fails, and the
# next scheduled prune tries again.
WAIT_TIMEOUT = timedelta(minutes=10)
STATEMENT_TIMEOUT = timedelta(minutes=30)

TRY_LOCK = "SELECT pg_try_advisory_lock(%s::bigint)"

COUNT_EXPIRED = sql.SQL("SELECT count(*) FROM {table} WHERE {column} < %(cutoff)s")
# DELETE has no LIMIT: pick one batch of row addresses, then delete those rows. The
# condition is checked again so a row updated meanwhile is never removed by mistake.
# Site by site: every table has an index on (site_id, its time column), and on Citus
# row addresses mean something only within one shard, to which this is routed.
SITE_IDS = "SELECT site_id FROM sites ORDER BY site_id"
DELETE_EXPIRED_BATCH = sql.SQL(
    "DELETE FROM {table} WHERE site_id = %(site)s AND ctid = ANY(ARRAY("
    "SELECT ctid FROM {table} WHERE site_id = %(site)s AND {column} < %(cutoff)s"
    " LIMIT %(limit)s)) AND {column} < %(cutoff)s"
)


@dataclass(frozen=True)
class PruneReport:
    """What a prune removed or, with `dry_run`, would remove."""

    cutoff: datetime
    dry_run: bool
    skipped: bool = False  # another process held the prune lock: nothing was done
    dropped_partitions: tuple[str, ...] = ()
    busy_partitions: tuple[str, ...] = ()  # could not be locked in time; next prune
    deleted_events: int = 0  # rows deleted outside the dropped partitions
    deleted_sessions: int = 0
    deleted_bot_counts: int = 0
    rolled_up_days: int = 0  # days rolled up first (dry run: that would be)
    rollup_cutoff: date | None = None  # rollups of days before it go; None: kept forever
    deleted_rollup_days: int = 0
    deleted_rollup_rows: int = 0


@dataclass(frozen=True)
class _Expired:
    """The rows of one table older than the cut-off."""

    label: str
    table: sql.Identifier
    column: str
    cutoff: datetime | date

    def params(self, limit: int | None = None) -> dict[str, object]:
        return {"cutoff": self.cutoff, "limit": limit}

    def statement(self, template: sql.SQL) -> sql.Composed:
        return template.format(table=self.table, column=sql.Identifier(self.column))


def cutoff_for(now: datetime, days: int) -> datetime:
    """The start of the UTC day `days` days before `now`'s UTC day."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if days < 1:
        raise ValueError("days must be at least 1")
    day = now.astimezone(UTC).date() - timedelta(days=days)
    return datetime.combine(day, time.min, tzinfo=UTC)


def _expired_rows(trim: list[Partition], cutoff: datetime) -> list[_Expired]:
    events = [_Expired("events", p.table, "received_at", cutoff) for p in trim]
    return [
        *events,
        _Expired("sessions", sql.Identifier("sessions"), "last_seen_at", cutoff),
        _Expired("bot_counts", sql.Identifier("bot_counts"), "day", cutoff.date()),
    ]


async def _count(connection: Connection, expired: _Expired) -> int:
    cursor = await connection.execute(expired.statement(COUNT_EXPIRED), expired.params())
    row = await cursor.fetchone()
    count = int(str(row[0])) if row else 0
    log.info("prune (dry run): %d expired row(s) in %s", count, expired.table.as_string())
    return count


async def _delete_in_batches(connection: Connection, expired: _Expired, batch_size: int) -> int:
    """Delete in statements of at most batch_size rows; autocommit: one transaction each."""
    statement = expired.statement(DELETE_EXPIRED_BATCH)
    cursor = await connection.execute(SITE_IDS)
    sites = [row[0] for row in await cursor.fetchall()]
    total = 0
    for site in sites:
        while True:
            params = {**expired.params(batch_size), "site": site}
            cursor = await connection.execute(statement, params)
            total += cursor.rowcount
            log.debug("prune: deleted %d row(s) from %s so far", total, expired.table.as_string())
            if cursor.rowcount < batch_size:
                break
    log.info("prune: deleted %d expired row(s) from %s", total, expired.table.as_string())
    return total


# The rollups, by local day: rollup_days first, so that no query uses a day whose rows
# are half gone (it reads the day's raw rows, which went before).
ROLLUP_DAYS_TABLE = sql.Identifier("rollup_days")
COUNT_OLD_ROLLUP_DAYS = "SELECT count(*) FROM rollup_days WHERE day < %s"
DELETE_OLD_ROLLUP_DAYS = "DELETE FROM rollup_days WHERE day < %s"
DELETE_OLD_STALE_MARKS = "DELETE FROM rollup_stale WHERE day < %s"


def _rollup_rows(cutoff: date) -> list[_Expired]:
    return [
        _Expired("rollups", sql.Identifier("rollup_visits"), "day", cutoff),
        _Expired("rollups", sql.Identifier("rollup_events"), "day", cutoff),
        _Expired("rollups", sql.Identifier("rollup_segment_visits"), "day", cutoff),
        _Expired("rollups", sql.Identifier("rollup_segment_events"), "day", cutoff),
        _Expired("rollups", sql.Identifier("rollup_segment_splits"), "day", cutoff),
        # Local wall-clock hours: the first hour of the cut-off day is its midnight.
        _Expired(
            "rollups", sql.Identifier("rollup_hours"), "hour", datetime.combine(cutoff, time.min)
        ),
    ]


async def _preview(
    connection: Connection, cutoff: datetime, rollup_cutoff: date | None, now: datetime | None
) -> PruneReport:
    due = await roller.due_days(connection, now)
    log.info("prune (dry run): %d day(s) to roll up first", len(due))
    drop, trim = plan(await event_partitions(connection), cutoff)
    counts = {"events": 0, "sessions": 0, "bot_counts": 0, "rollups": 0}
    expired = _expired_rows(trim, cutoff)
    rollup_days = 0
    if rollup_cutoff is not None:
        expired += _rollup_rows(rollup_cutoff)
        cursor = await connection.execute(COUNT_OLD_ROLLUP_DAYS, (rollup_cutoff,))
        row = await cursor.fetchone()
        rollup_days = int(str(row[0])) if row else 0
    for rows in expired:
        counts[rows.label] += await _count(connection, rows)
    return PruneReport(
        cutoff,
        dry_run=True,
        dropped_partitions=tuple(partition.name for partition in drop),
        deleted_events=counts["events"],
        deleted_sessions=counts["sessions"],
        deleted_bot_counts=counts["bot_counts"],
        rolled_up_days=len(due),
        rollup_cutoff=rollup_cutoff,
        deleted_rollup_days=rollup_days,
        deleted_rollup_rows=counts["rollups"],
    )


async def _roll_up_first(connection: Connection, now: datetime | None) -> int:
    """Roll up every due day (waiting for a roller of another process); raise if a day
    could not be rolled, before any raw row is removed."""
    report = await roller.catch_up(connection, now, wait=True)
    if report.failed:
        raise PruneError(
            f"rolling up before pruning failed for {len(report.failed)} day(s), so nothing "
            f"was pruned: {report.failed[0]}"
        )
    return report.rolled


async def _remove_rollups(connection: Connection, cutoff: date, batch_size: int) -> tuple[int, int]:
    """(rolled-up days, rollup rows) deleted from before the cut-off day."""
    cursor = await connection.execute(DELETE_OLD_ROLLUP_DAYS, (cutoff,))
    days = max(cursor.rowcount, 0)
    await connection.execute(DELETE_OLD_STALE_MARKS, (cutoff,))
    log.info("prune: deleted %d rolled-up day(s) from before %s", days, cutoff)
    rows = 0
    for expired in _rollup_rows(cutoff):
        rows += await _delete_in_batches(connection, expired, batch_size)
    return days, rows


async def _remove(
    connection: Connection,
    cutoff: datetime,
    batch_size: int,
    lock_timeout: timedelta,
    *,
    rollup_cutoff: date | None,
    now: datetime | None,
) -> PruneReport:
    rolled = await _roll_up_first(connection, now)
    drop, trim = plan(await event_partitions(connection), cutoff)
    log.info("prune: %d partition(s) to drop, %d to delete rows from", len(drop), len(trim))
    dropped: list[str] = []
    busy: list[str] = []
    for partition in drop:
        done = await drop_partition(connection, partition, lock_timeout)
        (dropped if done else busy).append(partition.name)
    counts = {"events": 0, "sessions": 0, "bot_counts": 0}
    for expired in _expired_rows(trim, cutoff):
        counts[expired.label] += await _delete_in_batches(connection, expired, batch_size)
    rollup_days, rollup_rows = 0, 0
    if rollup_cutoff is not None:
        rollup_days, rollup_rows = await _remove_rollups(connection, rollup_cutoff, batch_size)
    return PruneReport(
        cutoff,
        dry_run=False,
        dropped_partitions=tuple(dropped),
        busy_partitions=tuple(busy),
        deleted_events=counts["events"],
        deleted_sessions=counts["sessions"],
        deleted_bot_counts=counts["bot_counts"],
        rolled_up_days=rolled,
        rollup_cutoff=rollup_cutoff,
        deleted_rollup_days=rollup_days,
        deleted_rollup_rows=rollup_rows,
    )


async def prune(
    conninfo: str,
    days: int,
    *,
    rollup_days: int = 0,
    dry_run: bool = False,
    now: datetime | None = None,
    batch_size: int = BATCH_ROWS,
    lock_timeout: timedelta = DROP_LOCK_TIMEOUT,
    wait_timeout: timedelta | None = None,
    statement_timeout: timedelta | None = None,
) -> PruneReport:
    """Roll up what is due, then remove (or, with dry_run, only count) what was
    received before the cut-off, and the rollups of days before the rollup cut-off
    (rollup_days; 0 keeps them forever). `now` defaults to the current time (the
    database's, for what is due). A lock wait beyond `wait_timeout` or a statement
    beyond `statement_timeout` (by default WAIT_TIMEOUT and STATEMENT_TIMEOUT) ends the
    run with a PruneError."""
    wait_timeout = WAIT_TIMEOUT if wait_timeout is None else wait_timeout
    statement_timeout = STATEMENT_TIMEOUT if statement_timeout is None else statement_timeout
    if rollup_days and rollup_days <= days:
        raise ValueError("rollup_days must be 0 or above days: rollups outlive raw rows")
    cutoff = cutoff_for(now or datetime.now(UTC), days)
    rollup_cutoff = (
        cutoff_for(now or datetime.now(UTC), rollup_days).date() if rollup_days else None
    )
    log.info("prune%s: removing data from before %s", " (dry run)" if dry_run else "", cutoff)
    try:
        async with await AsyncConnection.connect(conninfo, autocommit=True) as connection:
            await maintenance.set_timeouts(connection, wait_timeout, statement_timeout)
            # Session-level lock: closing the connection releases it, whatever happens.
            cursor = await connection.execute(TRY_LOCK, (PRUNE_LOCK_KEY,))
            row = await cursor.fetchone()
            if not (row and row[0]):
                log.info("prune: another process is pruning, skipping")
                return PruneReport(cutoff, dry_run, skipped=True)
            if dry_run:
                report = await _preview(connection, cutoff, rollup_cutoff, now)
            else:
                report = await _remove(
                    connection,
                    cutoff,
                    batch_size,
                    lock_timeout,
                    rollup_cutoff=rollup_cutoff,
                    now=now,
                )
    except psycopg.Error as error:
        raise PruneError(f"pruning failed: {first_line(error)}") from None
    log.info("prune finished: %s", "; ".join(summary(report)))
    return report


def summary(report: PruneReport) -> list[str]:
    """Human-readable lines describing a report (the CLI prints them, the server logs them)."""
    if report.skipped:
        return ["another process is pruning; nothing was done"]
    drop, delete = ("would drop", "would delete") if report.dry_run else ("dropped", "deleted")
    lines = [f"cut-off: {report.cutoff:%Y-%m-%d %H:%M} UTC (data received before it goes)"]
    if report.dry_run:
        lines.insert(0, "dry run: nothing was changed")
    partitions = report.dropped_partitions
    if partitions:
        lines.append(f"{drop} {len(partitions)} event partition(s): {', '.join(partitions)}")
    else:
        lines.append(f"{drop} no event partitions")
    lines.append(
        f"{delete} {report.deleted_events} event(s), {report.deleted_sessions} session(s) "
        f"and {report.deleted_bot_counts} bot count row(s)"
    )
    roll = "would roll up" if report.dry_run else "rolled up"
    lines.append(f"{roll} {report.rolled_up_days} day(s) first, so their numbers outlive them")
    if report.rollup_cutoff is None:
        lines.append("rollups are kept forever (PRUNE_ROLLUP_DAYS is 0)")
    else:
        lines.append(
            f"{delete} the rollups of {report.deleted_rollup_days} day(s) from before "
            f"{report.rollup_cutoff} ({report.deleted_rollup_rows} row(s))"
        )
    if report.busy_partitions:
        lines.append("busy, left for the next prune: " + ", ".join(report.busy_partitions))
    return lines
