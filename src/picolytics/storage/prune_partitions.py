"""The daily partitions of `events` as retention sees them (storage/prune.py): which
wholly expired ones picolytics may drop, which must be emptied of expired rows
instead, and dropping one without queueing behind a long query.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg
from psycopg import AsyncConnection, sql

from picolytics.storage.maintenance import milliseconds

log = logging.getLogger(__name__)

Connection = AsyncConnection[tuple[object, ...]]

# A partition drop locks the whole `events` table; never queue behind a long query
# (blocking every insert meanwhile) for longer than this. A busy partition is retried
# at the next prune.
DROP_LOCK_TIMEOUT = timedelta(seconds=3)
# Partitions picolytics creates (picolytics_ensure_event_partitions); only these are
# ever dropped. Others (hand-made) are emptied of expired rows instead.
DAILY_PARTITION = re.compile(r"events_\d{8}")

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


@dataclass(frozen=True)
class Partition:
    schema: str
    name: str
    is_default: bool
    lower: datetime | None
    upper: datetime | None

    @property
    def table(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)


def plan(partitions: list[Partition], cutoff: datetime) -> tuple[list[Partition], list[Partition]]:
    """(partitions to drop, partitions to delete expired rows from)."""
    drop: list[Partition] = []
    trim: list[Partition] = []
    for partition in partitions:
        wholly_expired = partition.upper is not None and partition.upper <= cutoff
        if (
            wholly_expired
            and not partition.is_default
            and DAILY_PARTITION.fullmatch(partition.name)
        ):
            drop.append(partition)
        elif partition.lower is None or partition.lower < cutoff:
            trim.append(partition)
    return drop, trim


async def event_partitions(connection: Connection) -> list[Partition]:
    cursor = await connection.execute(LIST_EVENT_PARTITIONS)
    return [
        Partition(str(schema), str(name), bool(is_default), bound(lower), bound(upper))
        for schema, name, is_default, lower, upper in await cursor.fetchall()
    ]


def bound(value: object) -> datetime | None:
    return value if isinstance(value, datetime) else None


async def drop_partition(
    connection: Connection, partition: Partition, lock_timeout: timedelta
) -> bool:
    """Drop one partition; False when it could not be locked within lock_timeout."""
    try:
        async with connection.transaction():
            await connection.execute(SET_LOCK_TIMEOUT, (milliseconds(lock_timeout),))
            await connection.execute(DROP_PARTITION.format(table=partition.table))
    except psycopg.errors.LockNotAvailable:
        log.warning("prune: %s is busy, will drop it next time", partition.name)
        return False
    log.info("prune: dropped partition %s", partition.name)
    return True
