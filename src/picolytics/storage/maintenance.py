"""Upkeep the server runs periodically (serve/app.py): event partitions ahead of
time, and forgetting the visitor sessions that have ended.

Every round makes sure the daily partitions from yesterday to two days ahead exist, so
maintenance may fail for two days before events start landing in `events_default`.
`visitor_sessions` keeps only visits that may still continue, so it stays about as
large as the number of current visitors. Removing old data is prune.py's job.
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

ENSURE_PARTITIONS = "SELECT picolytics_ensure_event_partitions(%s, %s)"
EXPIRE_VISITOR_SESSIONS = "DELETE FROM visitor_sessions WHERE last_seen_at < %s"


async def maintain(connection: Connection, now: datetime, timeout: timedelta) -> None:
    """Create the coming days' event partitions and forget visits that have ended."""
    await connection.execute(
        ENSURE_PARTITIONS, (now.date() - timedelta(days=PARTITIONS_FROM_DAYS_AGO), PARTITIONS_COUNT)
    )
    await connection.execute(EXPIRE_VISITOR_SESSIONS, (now - timeout - EXPIRY_MARGIN,))
