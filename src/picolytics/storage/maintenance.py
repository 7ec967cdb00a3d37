"""Upkeep the server runs periodically (serve/app.py): event partitions ahead of
time, and forgetting the visitor sessions that have ended.

Every round makes sure the daily partitions from yesterday to two days ahead exist, so
maintenance may fail for two days before events start landing in `events_default`.
`visitor_sessions` keeps only visits that may still continue, so it stays about as
large as the number of current visitors. Removing old data is prune.py's job.

A round never waits long: creating a partition needs the partition function's advisory
lock and a lock on `events`, and a session that holds either (or a statement that never
ends) would otherwise stall every later round without a word. `set_timeouts` bounds
both waits on the round's connection, so a stuck round fails (and is counted, see
serve/metrics.py) and the next one tries again.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from psycopg import AsyncConnection

Connection = AsyncConnection[tuple[object, ...]]

# From yesterday (a batch written late, just after midnight) to a few days ahead.
PARTITIONS_FROM_DAYS_AGO = 1
PARTITIONS_COUNT = 4
# A visit is forgotten this long after it could no longer continue.
EXPIRY_MARGIN = timedelta(minutes=5)
# A round runs every minute and normally takes milliseconds: waiting 10 s for a lock
# rides out a concurrent partition creation or a short query on `events`, and 30 s per
# statement bounds a round well within its minute, even for a large session expiry.
LOCK_TIMEOUT = timedelta(seconds=10)
STATEMENT_TIMEOUT = timedelta(seconds=30)

SET_TIMEOUTS = (
    "SELECT set_config('lock_timeout', %s, false), set_config('statement_timeout', %s, false)"
)
ENSURE_PARTITIONS = "SELECT picolytics_ensure_event_partitions(%s, %s)"
EXPIRE_VISITOR_SESSIONS = "DELETE FROM visitor_sessions WHERE last_seen_at < %s"


def milliseconds(duration: timedelta) -> str:
    """A duration as PostgreSQL's timeout settings read it (0 would mean no limit)."""
    return str(max(1, int(duration.total_seconds() * 1000)))


async def set_timeouts(
    connection: Connection,
    lock_timeout: timedelta | None = None,
    statement_timeout: timedelta | None = None,
) -> None:
    """Bound every lock wait and statement on this connection (for the whole session;
    by default LOCK_TIMEOUT and STATEMENT_TIMEOUT)."""
    lock = LOCK_TIMEOUT if lock_timeout is None else lock_timeout
    statement = STATEMENT_TIMEOUT if statement_timeout is None else statement_timeout
    await connection.execute(SET_TIMEOUTS, (milliseconds(lock), milliseconds(statement)))


async def maintain(connection: Connection, now: datetime, timeout: timedelta) -> None:
    """Create the coming days' event partitions and forget visits that have ended
    (on a connection whose waits `set_timeouts` has bounded)."""
    await connection.execute(
        ENSURE_PARTITIONS, (now.date() - timedelta(days=PARTITIONS_FROM_DAYS_AGO), PARTITIONS_COUNT)
    )
    await connection.execute(EXPIRE_VISITOR_SESSIONS, (now - timeout - EXPIRY_MARGIN,))
