"""Session assignment: which visit each event of a batch belongs to.

`visitor_sessions` holds one row per (site, visitor): the visitor's current visit and
when it was last seen. One INSERT ... ON CONFLICT over every visitor of a batch
continues a visit seen within the session timeout or opens a new one; its row locks
make concurrent writers (several workers, several servers) agree on one session.
A visitor whose events in the batch are further apart than the timeout gets one
session per run of events, and its row moves on to the last of them. A visit that
began before midnight continues under yesterday's visitor id, since the daily salt
changes every visitor id at UTC midnight.

Runs inside the writer's transaction (writer.py); `maintenance.py` forgets the rows of
visits that have ended.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from psycopg import AsyncConnection, sql

from picolytics.events import QueuedEvent, new_id
from picolytics.storage.sites import SiteIds

Connection = AsyncConnection[tuple[object, ...]]

# Visitors whose visit from before midnight may continue under yesterday's hash.
SELECT_OPEN_VISITS = """
SELECT site_id, visitor_id, last_seen_at FROM visitor_sessions
WHERE (site_id, visitor_id) IN (SELECT * FROM unnest(%s::integer[], %s::bigint[]))
"""

# Input: one row per (site, visitor) of the batch, with the proposed id, start and end
# of the visitor's first run of events in the batch. The visitor's open session
# continues if it was seen within the timeout of that start; otherwise the proposed id
# opens a new one. Sorted input keeps concurrent writers from deadlocking. The gap is
# a difference of two instants, not an instant minus the timeout: timestamptz minus
# timestamptz is IMMUTABLE, timestamptz minus interval only STABLE, and Citus allows
# only IMMUTABLE functions in DO UPDATE SET (storage/citus.py). The timeout, a setting,
# is a quoted literal: Citus passes a parameter of DO UPDATE SET on without its type.
ASSIGN_SESSIONS = """
INSERT INTO visitor_sessions AS v (site_id, visitor_id, session_id, started_at, last_seen_at)
SELECT * FROM unnest(%(sites)s::integer[], %(visitors)s::bigint[], %(sessions)s::bigint[],
                     %(starts)s::timestamptz[], %(ends)s::timestamptz[])
ORDER BY 1, 2
ON CONFLICT (site_id, visitor_id) DO UPDATE SET
    session_id = CASE WHEN EXCLUDED.started_at - v.last_seen_at <= {timeout}::interval
                      THEN v.session_id ELSE EXCLUDED.session_id END,
    started_at = CASE WHEN EXCLUDED.started_at - v.last_seen_at <= {timeout}::interval
                      THEN v.started_at ELSE EXCLUDED.started_at END,
    last_seen_at = GREATEST(v.last_seen_at, EXCLUDED.last_seen_at)
RETURNING site_id, visitor_id, session_id
"""

# A visitor whose events in one batch are further apart than the timeout (a backlog
# written after an outage) has several visits in it: the row moves to the last one.
MOVE_TO_LAST_SESSION = """
UPDATE visitor_sessions AS v SET
    session_id = u.session_id, started_at = u.started_at,
    last_seen_at = GREATEST(v.last_seen_at, u.last_seen_at)
FROM unnest(%s::integer[], %s::bigint[], %s::bigint[], %s::timestamptz[], %s::timestamptz[])
     AS u (site_id, visitor_id, session_id, started_at, last_seen_at)
WHERE v.site_id = u.site_id AND v.visitor_id = u.visitor_id
"""


@dataclass(slots=True)
class _Run:
    """Consecutive events of one visitor no further apart than the session timeout."""

    session_id: int
    started_at: datetime
    last_seen_at: datetime
    events: list[QueuedEvent]


async def _continue_from_yesterday(
    connection: Connection, sites: SiteIds, events: Sequence[QueuedEvent], timeout: timedelta
) -> dict[tuple[int, int], int]:
    """(site, today's id) -> yesterday's id, for visits that began before midnight."""
    candidates = [event for event in events if event.previous_visitor_id is not None]
    if not candidates:
        return {}
    site_ids = [sites.get(event.page.site) for event in candidates]
    previous = [event.previous_visitor_id for event in candidates]
    cursor = await connection.execute(SELECT_OPEN_VISITS, (site_ids, previous))
    last_seen = {(cast(int, s), cast(int, v)): t for s, v, t in await cursor.fetchall()}
    mapping: dict[tuple[int, int], int] = {}
    for site_id, event in zip(site_ids, candidates, strict=True):
        assert event.previous_visitor_id is not None
        seen = last_seen.get((site_id, event.previous_visitor_id))
        if isinstance(seen, datetime) and event.received_at - seen <= timeout:
            mapping[(site_id, event.visitor_id)] = event.previous_visitor_id
    return mapping


def _runs_by_visitor(
    events: Sequence[tuple[int, int, QueuedEvent]], timeout: timedelta
) -> dict[tuple[int, int], list[_Run]]:
    grouped: dict[tuple[int, int], list[QueuedEvent]] = defaultdict(list)
    for site_id, visitor_id, event in events:
        grouped[(site_id, visitor_id)].append(event)
    runs: dict[tuple[int, int], list[_Run]] = {}
    for key, visitor_events in grouped.items():
        visitor_events.sort(key=lambda event: event.received_at)
        visitor_runs: list[_Run] = []
        for event in visitor_events:
            last = visitor_runs[-1] if visitor_runs else None
            if last is not None and event.received_at - last.last_seen_at <= timeout:
                last.last_seen_at = event.received_at
                last.events.append(event)
            else:
                visitor_runs.append(_Run(new_id(), event.received_at, event.received_at, [event]))
        runs[key] = visitor_runs
    return runs


async def assign_sessions(
    connection: Connection, sites: SiteIds, events: Sequence[QueuedEvent], timeout: timedelta
) -> list[tuple[int, int, int, QueuedEvent]]:
    """Give every event its (site_id, visitor_id, session_id), race-free across writers.

    Every site of the batch must already be known to `sites`.
    """
    yesterday = await _continue_from_yesterday(connection, sites, events, timeout)
    keyed = []
    for event in events:
        site_id = sites.get(event.page.site)
        keyed.append((site_id, yesterday.get((site_id, event.visitor_id), event.visitor_id), event))
    runs = _runs_by_visitor(keyed, timeout)
    keys = sorted(runs)
    firsts = [runs[key][0] for key in keys]
    cursor = await connection.execute(
        sql.SQL(ASSIGN_SESSIONS).format(timeout=sql.Literal(timeout)),
        {
            "sites": [key[0] for key in keys],
            "visitors": [key[1] for key in keys],
            "sessions": [run.session_id for run in firsts],
            "starts": [run.started_at for run in firsts],
            "ends": [run.last_seen_at for run in firsts],
        },
    )
    for row_site, row_visitor, row_session in await cursor.fetchall():
        runs[(cast(int, row_site), cast(int, row_visitor))][0].session_id = cast(int, row_session)
    several = [key for key in keys if len(runs[key]) > 1]
    if several:
        lasts = [runs[key][-1] for key in several]
        await connection.execute(
            MOVE_TO_LAST_SESSION,
            (
                [key[0] for key in several],
                [key[1] for key in several],
                [run.session_id for run in lasts],
                [run.started_at for run in lasts],
                [run.last_seen_at for run in lasts],
            ),
        )
    return [
        (site_id, visitor_id, run.session_id, event)
        for (site_id, visitor_id), visitor_runs in runs.items()
        for run in visitor_runs
        for event in run.events
    ]
