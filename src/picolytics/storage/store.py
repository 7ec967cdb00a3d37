"""All runtime SQL, next to the functions that run it.

One batch of events is written in one transaction with a constant number of round
trips, whatever its size:
  1. sites: insert unknown domains (only when the in-memory cache misses);
  2. sessions: one INSERT ... ON CONFLICT on visitor_sessions assigns every visitor of
     the batch its session; its row locks make concurrent writers agree on one session;
  3. COPY the enriched events into a temporary staging table;
  4. one statement inserts the staged events (ON CONFLICT DO NOTHING, so a retried
     batch adds nothing twice) and folds only the rows really inserted into the
     session aggregates, so retries are idempotent end to end;
  5. bot counts, when the batch saw bots.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from psycopg import AsyncConnection

from picolytics.events import BotHit, QueuedEvent, new_id

Connection = AsyncConnection[tuple[object, ...]]

INSERT_SITES = """
INSERT INTO sites (domain) SELECT unnest(%s::text[]) ORDER BY 1
ON CONFLICT (domain) DO NOTHING
"""
SELECT_SITES = "SELECT domain, site_id FROM sites WHERE domain = ANY(%s::text[])"

# Visitors whose visit from before midnight may continue under yesterday's hash.
SELECT_OPEN_VISITS = """
SELECT site_id, visitor_id, last_seen_at FROM visitor_sessions
WHERE (site_id, visitor_id) IN (SELECT * FROM unnest(%s::integer[], %s::bigint[]))
"""

# Input: one row per (site, visitor) of the batch, with the proposed id, start and end
# of the visitor's first run of events in the batch. The visitor's open session
# continues if it was seen within the timeout of that start; otherwise the proposed id
# opens a new one. Sorted input keeps concurrent writers from deadlocking.
ASSIGN_SESSIONS = """
INSERT INTO visitor_sessions AS v (site_id, visitor_id, session_id, started_at, last_seen_at)
SELECT * FROM unnest(%(sites)s::integer[], %(visitors)s::bigint[], %(sessions)s::bigint[],
                     %(starts)s::timestamptz[], %(ends)s::timestamptz[])
ORDER BY 1, 2
ON CONFLICT (site_id, visitor_id) DO UPDATE SET
    session_id = CASE WHEN v.last_seen_at >= EXCLUDED.started_at - %(timeout)s::interval
                      THEN v.session_id ELSE EXCLUDED.session_id END,
    started_at = CASE WHEN v.last_seen_at >= EXCLUDED.started_at - %(timeout)s::interval
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

# The staging table's columns, in the order `_staging_row` gives its values: the table
# and the binary COPY's types both come from this one list.
STAGING_COLUMNS = (
    ("site_id", "int4"),
    ("received_at", "timestamptz"),
    ("event_id", "int8"),
    ("session_id", "int8"),
    ("visitor_id", "int8"),
    ("name", "text"),
    ("path", "text"),
    ("referrer_host", "text"),
    ("load_time_ms", "int4"),
    ("ttfb_ms", "int4"),
    ("is_pageview", "bool"),
    ("is_engagement", "bool"),
    ("utm_source", "text"),
    ("utm_medium", "text"),
    ("utm_campaign", "text"),
    ("utm_content", "text"),
    ("utm_term", "text"),
    ("country", "text"),
    ("region", "text"),
    ("city", "text"),
    ("browser", "text"),
    ("browser_version", "text"),
    ("os", "text"),
    ("os_version", "text"),
    ("device_type", "text"),
    ("screen_width", "int4"),
    ("screen_height", "int4"),
    ("timezone", "text"),
    ("engaged_ms", "int4"),
    ("scroll_depth", "int2"),
    ("props", "jsonb"),
)
CREATE_STAGING = (
    "CREATE TEMPORARY TABLE IF NOT EXISTS picolytics_staging ("
    + ", ".join(f"{column} {type_}" for column, type_ in STAGING_COLUMNS)
    + ") ON COMMIT DELETE ROWS"
)
STAGING_TYPES = [type_ for _, type_ in STAGING_COLUMNS]
COPY_STAGING = "COPY picolytics_staging FROM STDIN (FORMAT BINARY)"

# Only events inserted now (not already present from an earlier try) reach the
# session aggregates; session details come from each session's first new event.
# Returns the number of sessions opened (rows inserted rather than updated).
INSERT_EVENTS_AND_SESSIONS = """
WITH inserted AS (
    INSERT INTO events (site_id, received_at, event_id, session_id, visitor_id, name, path,
                        referrer_host, load_time_ms, ttfb_ms, engaged_ms, scroll_depth, props)
    SELECT site_id, received_at, event_id, session_id, visitor_id, name, path,
           referrer_host, load_time_ms, ttfb_ms, engaged_ms, scroll_depth, props
    FROM picolytics_staging
    ON CONFLICT DO NOTHING
    RETURNING site_id, received_at, event_id
), fresh AS (
    SELECT s.* FROM picolytics_staging s JOIN inserted USING (site_id, received_at, event_id)
), totals AS (
    SELECT site_id, session_id, min(visitor_id) AS visitor_id,
           min(received_at) AS started_at, max(received_at) AS last_seen_at,
           count(*) FILTER (WHERE is_pageview) AS pageviews, count(*) AS events,
           bool_or(is_engagement) AS engaged,
           coalesce((array_agg(path ORDER BY received_at)
                     FILTER (WHERE is_pageview))[1], '') AS entry_path,
           coalesce((array_agg(path ORDER BY received_at DESC)
                     FILTER (WHERE is_pageview))[1], '') AS exit_path
    FROM fresh GROUP BY site_id, session_id
), firsts AS (
    SELECT DISTINCT ON (site_id, session_id) *
    FROM fresh ORDER BY site_id, session_id, is_pageview DESC, received_at
), upserted AS (
INSERT INTO sessions AS s (
    site_id, session_id, visitor_id, started_at, last_seen_at, pageviews, events, engaged,
    entry_path, exit_path, referrer_host, utm_source, utm_medium, utm_campaign, utm_content,
    utm_term, country, region, city, browser, browser_version, os, os_version, device_type,
    screen_width, screen_height, timezone)
SELECT t.site_id, t.session_id, t.visitor_id, t.started_at, t.last_seen_at, t.pageviews,
       t.events, t.engaged, t.entry_path, t.exit_path, f.referrer_host, f.utm_source,
       f.utm_medium, f.utm_campaign, f.utm_content, f.utm_term, f.country, f.region, f.city,
       f.browser, f.browser_version, f.os, f.os_version, f.device_type, f.screen_width,
       f.screen_height, f.timezone
FROM totals t JOIN firsts f USING (site_id, session_id)
ORDER BY t.site_id, t.session_id
ON CONFLICT (site_id, session_id) DO UPDATE SET
    started_at = LEAST(s.started_at, EXCLUDED.started_at),
    last_seen_at = GREATEST(s.last_seen_at, EXCLUDED.last_seen_at),
    pageviews = s.pageviews + EXCLUDED.pageviews,
    events = s.events + EXCLUDED.events,
    engaged = s.engaged OR EXCLUDED.engaged,
    entry_path = CASE WHEN EXCLUDED.entry_path <> ''
                       AND (s.entry_path = '' OR EXCLUDED.started_at < s.started_at)
                      THEN EXCLUDED.entry_path ELSE s.entry_path END,
    exit_path = CASE WHEN EXCLUDED.exit_path <> '' AND EXCLUDED.last_seen_at >= s.last_seen_at
                     THEN EXCLUDED.exit_path ELSE s.exit_path END
RETURNING xmax = 0 AS opened
)
SELECT count(*) FILTER (WHERE opened) FROM upserted
"""

ADD_BOT_COUNTS = """
INSERT INTO bot_counts (site_id, day, reason, hits)
SELECT * FROM unnest(%s::integer[], %s::date[], %s::text[], %s::bigint[]) ORDER BY 1, 2, 3
ON CONFLICT (site_id, day, reason) DO UPDATE SET hits = bot_counts.hits + EXCLUDED.hits
"""

ENSURE_PARTITIONS = "SELECT picolytics_ensure_event_partitions(%s, %s)"
EXPIRE_VISITOR_SESSIONS = "DELETE FROM visitor_sessions WHERE last_seen_at < %s"


class SiteIds:
    """domain -> site_id, cached: sites are never deleted, so a hit never goes stale.

    Ids learnt inside a transaction count only once it commits: a rolled-back insert
    of a new site leaves no id behind to break the next try.
    """

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self._pending: dict[str, int] = {}

    def get(self, domain: str) -> int:
        return self._ids.get(domain) or self._pending[domain]

    async def ensure(self, connection: Connection, domains: Iterable[str]) -> None:
        missing = sorted({domain for domain in domains if domain not in self._ids})
        if not missing:
            return
        await connection.execute(INSERT_SITES, (missing,))
        cursor = await connection.execute(SELECT_SITES, (missing,))
        for domain, site_id in await cursor.fetchall():
            self._pending[str(domain)] = cast(int, site_id)

    def committed(self) -> None:
        self._ids.update(self._pending)
        self._pending.clear()

    def rolled_back(self) -> None:
        self._pending.clear()


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
    """Give every event its (site_id, visitor_id, session_id), race-free across writers."""
    yesterday = await _continue_from_yesterday(connection, sites, events, timeout)
    keyed = []
    for event in events:
        site_id = sites.get(event.page.site)
        keyed.append((site_id, yesterday.get((site_id, event.visitor_id), event.visitor_id), event))
    runs = _runs_by_visitor(keyed, timeout)
    keys = sorted(runs)
    firsts = [runs[key][0] for key in keys]
    cursor = await connection.execute(
        ASSIGN_SESSIONS,
        {
            "sites": [key[0] for key in keys],
            "visitors": [key[1] for key in keys],
            "sessions": [run.session_id for run in firsts],
            "starts": [run.started_at for run in firsts],
            "ends": [run.last_seen_at for run in firsts],
            "timeout": timeout,
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


def _staging_row(
    site_id: int, visitor_id: int, session_id: int, event: QueuedEvent
) -> tuple[object, ...]:
    page, location, agent = event.page, event.location, event.agent
    return (
        site_id,
        event.received_at,
        event.event_id,
        session_id,
        visitor_id,
        page.name,
        event.path,
        page.referrer_host,
        page.load_time_ms,
        page.ttfb_ms,
        event.is_pageview,
        event.is_engagement,
        page.utm_source,
        page.utm_medium,
        page.utm_campaign,
        page.utm_content,
        page.utm_term,
        location.country,
        location.region,
        location.city,
        agent.browser,
        agent.browser_version,
        agent.os,
        agent.os_version,
        agent.device_type,
        page.screen_width,
        page.screen_height,
        page.timezone,
        page.engaged_ms,
        page.scroll_depth,
        page.props,
    )


async def write_batch(
    connection: Connection,
    sites: SiteIds,
    events: Sequence[QueuedEvent],
    bots: dict[BotHit, int],
    timeout: timedelta,
) -> int:
    """Write events (and bot counts) in one transaction; safe to retry after any failure.

    The connection must have been set up by `prepare_connection`. Returns the number
    of visits opened.
    """
    try:
        opened = await _write_in_transaction(connection, sites, events, bots, timeout)
    except BaseException:
        sites.rolled_back()
        raise
    sites.committed()
    return opened


async def _write_in_transaction(
    connection: Connection,
    sites: SiteIds,
    events: Sequence[QueuedEvent],
    bots: dict[BotHit, int],
    timeout: timedelta,
) -> int:
    opened = 0
    async with connection.transaction():
        await sites.ensure(
            connection, [event.page.site for event in events] + [hit.site for hit in bots]
        )
        if events:
            assigned = await assign_sessions(connection, sites, events, timeout)
            async with connection.cursor().copy(COPY_STAGING) as copy:
                copy.set_types(STAGING_TYPES)
                for row in assigned:
                    await copy.write_row(_staging_row(*row))
            cursor = await connection.execute(INSERT_EVENTS_AND_SESSIONS)
            counted = await cursor.fetchone()
            opened = cast(int, counted[0]) if counted else 0
        if bots:
            hits = sorted(
                bots.items(), key=lambda item: (item[0].site, item[0].day, item[0].reason)
            )
            await connection.execute(
                ADD_BOT_COUNTS,
                (
                    [sites.get(hit.site) for hit, _ in hits],
                    [hit.day for hit, _ in hits],
                    [hit.reason for hit, _ in hits],
                    [count for _, count in hits],
                ),
            )
    return opened


async def prepare_connection(connection: Connection, statement_timeout: str) -> None:
    """Session settings and the staging table a writer connection needs."""
    await connection.execute(f"SET statement_timeout = '{statement_timeout}'")
    # The planner cannot estimate the batch's CTEs and picks a nested loop that is
    # quadratic in the batch size; hash and merge joins are always right here.
    await connection.execute("SET enable_nestloop = off")
    await connection.execute(CREATE_STAGING)


async def maintain(connection: Connection, now: datetime, timeout: timedelta) -> None:
    """Create the coming days' event partitions and forget visits that have ended."""
    await connection.execute(ENSURE_PARTITIONS, (now.date() - timedelta(days=1), 4))
    await connection.execute(EXPIRE_VISITOR_SESSIONS, (now - timeout - timedelta(minutes=5),))
