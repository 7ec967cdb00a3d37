"""Rolling up one local day of one site: the read model's unit of work
(docs/read-model.md, How it is kept fast). Which days to roll, and when, is the
roller's call (storage/roller.py); the statements are in storage/rollup_sql.py.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from psycopg import AsyncConnection

from picolytics.storage.rollup_segments_sql import (
    DELETE_SEGMENT_EVENTS,
    DELETE_SEGMENT_SPLITS,
    DELETE_SEGMENT_VISITS,
    MARK_SEGMENTS,
    ROLL_SEGMENTS,
)
from picolytics.storage.rollup_sql import ROLL_DAY

# The plain rollups, then the segment rollups, then the day's segment marks.
STATEMENTS = (
    *ROLL_DAY,
    DELETE_SEGMENT_VISITS,
    DELETE_SEGMENT_EVENTS,
    DELETE_SEGMENT_SPLITS,
    *ROLL_SEGMENTS,
    MARK_SEGMENTS,
)
# The unpivots sort a few hundred MB at most, in memory; a memoized LATERAL over each
# event's name, path and props (all distinct) costs far more than it saves.
ROLL_SETTINGS = (
    "SET LOCAL work_mem = '256MB'",
    "SET LOCAL enable_memoize = off",
)


async def roll_day(
    connection: AsyncConnection[Any], site_id: int, day: date, timezone: str
) -> None:
    """Replace the rollups of `site_id`'s local `day` in `timezone` with sums of its raw
    rows, clear the day's stale mark and record it in rollup_days, all in one
    transaction: a query sees the old rollup or the new one, never a mix, and an empty
    day is recorded too (its raw rows are none, so its rollup is no rows).

    Run it at READ COMMITTED (the default): each statement then reads the raw rows
    committed by then, including those of a writer that marked the day stale before
    the mark was cleared. In a transaction of the caller's it becomes a savepoint.
    An unknown `timezone` raises PostgreSQL's error.
    """
    params = {"site_id": site_id, "day": day, "timezone": timezone}
    async with connection.transaction():
        for setting in ROLL_SETTINGS:
            await connection.execute(setting)
        for statement in STATEMENTS:
            await connection.execute(statement, params)
