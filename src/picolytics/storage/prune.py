"""Retention: remove what was received before the cut-off (PRUNE_DAYS).

The cut-off is the start of a UTC day, the same granularity as the daily `events`
partitions, so a daily partition is never cut in two: each lies wholly before the
cut-off (dropped, which is cheap) or wholly after it (kept). Rows older than the
cut-off that sit anywhere else (the default partition, or a hand-made partition
spanning the cut-off) are deleted in bounded batches, each its own transaction, so
no lock is held for long. Sessions last seen and bot counts of days before the
cut-off follow, also in batches.

Only one process prunes at a time: a session-level advisory lock, tried and never
waited for, makes the others skip.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import psycopg
from psycopg import AsyncConnection, sql

from picolytics.errors import PruneError, first_line

log = logging.getLogger(__name__)

Connection = AsyncConnection[tuple[object, ...]]

# Any fixed 64-bit number distinct from the migration lock; this one spells "picoprun".
PRUNE_LOCK_KEY = 0x7069636F7072756E
BATCH_ROWS = 10_000
# A partition drop locks the whole `events` table; never queue behind a long query
# (blocking every insert meanwhile) for longer than this. A busy partition is retried
# at the next prune.
DROP_LOCK_TIMEOUT = timedelta(seconds=3)

# Partitions picolytics creates (picolytics_ensure_event_partitions); only these are
# ever dropped. Others (hand-made) are emptied of expired rows instead.
_DAILY_PARTITION = re.compile(r"events_\d{8}")

TRY_LOCK = "SELECT pg_try_advisory_lock(%s::bigint)"

# Each partition of `events` with its range; NULL bounds are MINVALUE/MAXVALUE (or the
# default partition). pg_get_expr prints timestamptz bounds with their UTC offset, so
# casting them back is exact whatever the session's time zone.
LIST_EVENT_PARTITIONS = r"""
SELECT n.nspname, c.relname, bound = 'DEFAULT',
       substring(bound FROM $re$FROM \('([^']+)'\)$re$)::timestamptz,
       substring(bound FROM $re$ TO \('([^']+)'\)$re$)::timestamptz
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN LATERAL pg_get_expr(c.relpartbound, c.oid) AS bound
WHERE i.inhparent = 'events'::regclass
ORDER BY 4 NULLS FIRST, 2
"""
SET_LOCK_TIMEOUT = "SELECT set_config('lock_timeout', %s, true)"
DROP_PARTITION = sql.SQL("DROP TABLE {table}")
COUNT_EXPIRED = sql.SQL("SELECT count(*) FROM {table} WHERE {column} < %(cutoff)s")
# DELETE has no LIMIT: pick one batch of row addresses, then delete those rows. The
# condition is checked again so a row updated meanwhile is never removed by mistake.
DELETE_EXPIRED_BATCH = sql.SQL(
    "DELETE FROM {table} WHERE ctid = ANY(ARRAY("
    "SELECT ctid FROM {table} WHERE {column} < %(cutoff)s LIMIT %(limit)s"
    ")) AND {column} < %(cutoff)s"
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


@dataclass(frozen=True)
class _Partition:
    schema: str
    name: str
    is_default: bool
    lower: datetime | None
    upper: datetime | None

    @property
    def table(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)


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


def _plan(
    partitions: list[_Partition], cutoff: datetime
) -> tuple[list[_Partition], list[_Partition]]:
    """(partitions to drop, partitions to delete expired rows from)."""
    drop: list[_Partition] = []
    trim: list[_Partition] = []
    for partition in partitions:
        wholly_expired = partition.upper is not None and partition.upper <= cutoff
        if (
            wholly_expired
            and not partition.is_default
            and _DAILY_PARTITION.fullmatch(partition.name)
        ):
            drop.append(partition)
        elif partition.lower is None or partition.lower < cutoff:
            trim.append(partition)
    return drop, trim


def _expired_rows(trim: list[_Partition], cutoff: datetime) -> list[_Expired]:
    events = [_Expired("events", p.table, "received_at", cutoff) for p in trim]
    return [
        *events,
        _Expired("sessions", sql.Identifier("sessions"), "last_seen_at", cutoff),
        _Expired("bot_counts", sql.Identifier("bot_counts"), "day", cutoff.date()),
    ]


async def _event_partitions(connection: Connection) -> list[_Partition]:
    cursor = await connection.execute(LIST_EVENT_PARTITIONS)
    return [
        _Partition(str(schema), str(name), bool(is_default), _bound(lower), _bound(upper))
        for schema, name, is_default, lower, upper in await cursor.fetchall()
    ]


def _bound(value: object) -> datetime | None:
    return value if isinstance(value, datetime) else None


async def _count(connection: Connection, expired: _Expired) -> int:
    cursor = await connection.execute(expired.statement(COUNT_EXPIRED), expired.params())
    row = await cursor.fetchone()
    count = int(str(row[0])) if row else 0
    log.info("prune (dry run): %d expired row(s) in %s", count, expired.table.as_string())
    return count


async def _delete_in_batches(connection: Connection, expired: _Expired, batch_size: int) -> int:
    """Delete in statements of at most batch_size rows; autocommit: one transaction each."""
    statement = expired.statement(DELETE_EXPIRED_BATCH)
    total = 0
    while True:
        cursor = await connection.execute(statement, expired.params(batch_size))
        total += cursor.rowcount
        log.debug("prune: deleted %d row(s) from %s so far", total, expired.table.as_string())
        if cursor.rowcount < batch_size:
            break
    log.info("prune: deleted %d expired row(s) from %s", total, expired.table.as_string())
    return total


async def _drop(connection: Connection, partition: _Partition, lock_timeout: timedelta) -> bool:
    """Drop one partition; False when it could not be locked within lock_timeout."""
    try:
        async with connection.transaction():
            milliseconds = max(1, int(lock_timeout.total_seconds() * 1000))
            await connection.execute(SET_LOCK_TIMEOUT, (f"{milliseconds}ms",))
            await connection.execute(DROP_PARTITION.format(table=partition.table))
    except psycopg.errors.LockNotAvailable:
        log.warning("prune: %s is busy, will drop it next time", partition.name)
        return False
    log.info("prune: dropped partition %s", partition.name)
    return True


async def _preview(connection: Connection, cutoff: datetime) -> PruneReport:
    drop, trim = _plan(await _event_partitions(connection), cutoff)
    counts = {"events": 0, "sessions": 0, "bot_counts": 0}
    for expired in _expired_rows(trim, cutoff):
        counts[expired.label] += await _count(connection, expired)
    return PruneReport(
        cutoff,
        dry_run=True,
        dropped_partitions=tuple(partition.name for partition in drop),
        deleted_events=counts["events"],
        deleted_sessions=counts["sessions"],
        deleted_bot_counts=counts["bot_counts"],
    )


async def _remove(
    connection: Connection, cutoff: datetime, batch_size: int, lock_timeout: timedelta
) -> PruneReport:
    drop, trim = _plan(await _event_partitions(connection), cutoff)
    log.info("prune: %d partition(s) to drop, %d to delete rows from", len(drop), len(trim))
    dropped: list[str] = []
    busy: list[str] = []
    for partition in drop:
        done = await _drop(connection, partition, lock_timeout)
        (dropped if done else busy).append(partition.name)
    counts = {"events": 0, "sessions": 0, "bot_counts": 0}
    for expired in _expired_rows(trim, cutoff):
        counts[expired.label] += await _delete_in_batches(connection, expired, batch_size)
    return PruneReport(
        cutoff,
        dry_run=False,
        dropped_partitions=tuple(dropped),
        busy_partitions=tuple(busy),
        deleted_events=counts["events"],
        deleted_sessions=counts["sessions"],
        deleted_bot_counts=counts["bot_counts"],
    )


async def prune(
    conninfo: str,
    days: int,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
    batch_size: int = BATCH_ROWS,
    lock_timeout: timedelta = DROP_LOCK_TIMEOUT,
) -> PruneReport:
    """Remove (or, with dry_run, only count) what was received before the cut-off."""
    cutoff = cutoff_for(now or datetime.now(UTC), days)
    log.info("prune%s: removing data from before %s", " (dry run)" if dry_run else "", cutoff)
    try:
        async with await AsyncConnection.connect(conninfo, autocommit=True) as connection:
            # Session-level lock: closing the connection releases it, whatever happens.
            cursor = await connection.execute(TRY_LOCK, (PRUNE_LOCK_KEY,))
            row = await cursor.fetchone()
            if not (row and row[0]):
                log.info("prune: another process is pruning, skipping")
                return PruneReport(cutoff, dry_run, skipped=True)
            if dry_run:
                report = await _preview(connection, cutoff)
            else:
                report = await _remove(connection, cutoff, batch_size, lock_timeout)
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
    if report.busy_partitions:
        lines.append("busy, left for the next prune: " + ", ".join(report.busy_partitions))
    return lines
