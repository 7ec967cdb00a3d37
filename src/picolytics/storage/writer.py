"""Writing one batch of events: one transaction, a constant number of round trips.

Whatever the batch's size:
  1. sites: insert unknown domains (only when the in-memory cache misses; sites.py);
  2. sessions: one INSERT ... ON CONFLICT on visitor_sessions assigns every visitor of
     the batch its session (sessions.py);
  3. COPY the enriched events into a temporary staging table;
  4. one statement inserts the staged events (ON CONFLICT DO NOTHING, so a retried
     batch adds nothing twice) and folds only the rows really inserted into the
     session aggregates, so retries are idempotent end to end;
  5. bot counts, when the batch saw bots.
Step 4 also marks, in `rollup_stale`, every local day whose rollup the batch may have
made wrong (a late write: see MARK_AGE), so the mark commits with the rows.
So events and sessions are safe to retry after any failure, even when the commit's
outcome is unknown; bot counts are plain sums, which such a retry may add twice.
When to retry is the pipeline's call (pipeline.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import cast

from psycopg import AsyncConnection

from picolytics.events import BotHit, QueuedEvent
from picolytics.storage.sessions import assign_sessions
from picolytics.storage.sites import SiteIds

Connection = AsyncConnection[tuple[object, ...]]

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
    ("channel", "text"),
    ("hostname", "text"),
    ("region_code", "text"),
    ("city_code", "text"),
)
CREATE_STAGING = (
    "CREATE TEMPORARY TABLE IF NOT EXISTS picolytics_staging ("
    + ", ".join(f"{column} {type_}" for column, type_ in STAGING_COLUMNS)
    + ") ON COMMIT DELETE ROWS"
)
STAGING_TYPES = [type_ for _, type_ in STAGING_COLUMNS]
COPY_STAGING = "COPY picolytics_staging FROM STDIN (FORMAT BINARY)"

# For the whole session (not only one transaction): SET cannot take a parameter.
SET_STATEMENT_TIMEOUT = "SELECT set_config('statement_timeout', %s, false)"
# The planner cannot estimate the batch's CTEs and picks a nested loop that is
# quadratic in the batch size; hash and merge joins are always right here.
DISABLE_NESTED_LOOPS = "SET enable_nestloop = off"

# Late writes (docs/read-model.md, "Why no write is lost"). A local
# day (in its site's zone) is rolled up only once it ended ROLL_DELAY ago
# (storage/roller.py); a batch that writes an event received on, or changes a visit
# started on, a day that ended more than MARK_AGE before the batch's transaction began
# marks that day in rollup_stale, in the same transaction. A write it does not mark
# therefore touches only days that ended after (transaction start - MARK_AGE); it is
# visible once it commits, at most about WRITE_TIMEOUT_S (pipeline.py: 60 s, the
# client's deadline for the whole write, after which the transaction is abandoned and
# never commits) after its start; and such a day is rolled no earlier than
# (transaction start - MARK_AGE + ROLL_DELAY). So ROLL_DELAY - MARK_AGE (15 min, with
# ROLL_DELAY = 1 h) is kept well above WRITE_TIMEOUT_S: an unmarked write always
# commits before its day can be rolled, and the roll sees it. MARK_AGE itself is as
# large as that allows, so the ordinary stragglers (a batch in flight at midnight, a
# short outage's backlog, a visit that goes on past midnight) mark nothing for it.
# Both clocks are the database's (now()), never a server's.
# An open day's prefix (storage/rollup_prefix.py) holds the visits older than a
# boundary ROLL_DELAY old, so the same margin covers it: a batch also marks the day of
# a visit whose previous last_seen_at was more than MARK_AGE before its transaction
# began, whether or not that day has ended.
MARK_AGE = timedelta(minutes=45)
_MARK_AGE = f"interval '{int(MARK_AGE.total_seconds())} seconds'"
# A prefix's events reach closer to now than its visits (storage/rollup_prefix.py,
# EVENT_DELAY), so a new event is late sooner: a batch marks the day of any new event
# received more than EVENT_MARK_AGE before its transaction began, ended or not. The
# same argument as above, with EVENT_DELAY - EVENT_MARK_AGE as the margin. Events are
# written within seconds of receipt, so only a backlog marks.
EVENT_MARK_AGE = timedelta(minutes=5)
_EVENT_MARK_AGE = f"interval '{int(EVENT_MARK_AGE.total_seconds())} seconds'"

# Only events inserted now (not already present from an earlier try) reach the
# session aggregates; session details come from each session's first new event.
# Returns the number of sessions opened (rows inserted rather than updated).
# `marked` inserts the late-write marks: the local days of the new events' receipt
# and of the changed visits' start (before and after this batch: a late event may
# move a visit's start to an earlier day). `previous` reads the statement's snapshot,
# so it sees a batch's visits as they were before this statement; by primary key, and
# only those that started before MARK_AGE ago. (Not a subquery in RETURNING: Citus
# runs RETURNING on the shard, where a query of `sessions` is refused.) Recent rows are
# filtered out on their time alone, so the common batch costs one comparison a row;
# late ones are grouped by minute (zone offsets are whole minutes, so a local day never
# starts inside one) before each site's zone is looked up, once per site and minute
# (OFFSET 0 keeps the lookup from being copied into each expression that uses it).
INSERT_EVENTS_AND_SESSIONS = f"""
WITH inserted AS (
    INSERT INTO events (site_id, received_at, event_id, session_id, visitor_id, name, path,
                        referrer_host, load_time_ms, ttfb_ms, engaged_ms, scroll_depth, props,
                        hostname)
    SELECT site_id, received_at, event_id, session_id, visitor_id, name, path,
           referrer_host, load_time_ms, ttfb_ms, engaged_ms, scroll_depth, props, hostname
    FROM picolytics_staging
    ON CONFLICT DO NOTHING
    RETURNING site_id, received_at, event_id
), previous AS (
    SELECT site_id, session_id, started_at, last_seen_at FROM sessions
    WHERE site_id = ANY(%(sites)s::integer[]) AND session_id = ANY(%(sessions)s::bigint[])
      AND started_at < now() - {_MARK_AGE}
), fresh AS (
    SELECT s.* FROM picolytics_staging s JOIN inserted USING (site_id, received_at, event_id)
), totals AS (
    SELECT site_id, session_id, min(visitor_id) AS visitor_id,
           min(received_at) AS started_at, max(received_at) AS last_seen_at,
           count(*) FILTER (WHERE is_pageview) AS pageviews, count(*) AS events,
           bool_or(is_engagement) AS engaged,
           -- event_id breaks ties, so each host is the one of its path's pageview.
           coalesce((array_agg(path ORDER BY received_at, event_id)
                     FILTER (WHERE is_pageview))[1], '') AS entry_path,
           coalesce((array_agg(path ORDER BY received_at DESC, event_id DESC)
                     FILTER (WHERE is_pageview))[1], '') AS exit_path,
           coalesce((array_agg(hostname ORDER BY received_at, event_id)
                     FILTER (WHERE is_pageview))[1], '') AS entry_hostname,
           coalesce((array_agg(hostname ORDER BY received_at DESC, event_id DESC)
                     FILTER (WHERE is_pageview))[1], '') AS exit_hostname
    FROM fresh GROUP BY site_id, session_id
), firsts AS (
    SELECT DISTINCT ON (site_id, session_id) *
    FROM fresh ORDER BY site_id, session_id, is_pageview DESC, received_at
), upserted AS (
INSERT INTO sessions AS s (
    site_id, session_id, visitor_id, started_at, last_seen_at, pageviews, events, engaged,
    entry_path, exit_path, referrer_host, utm_source, utm_medium, utm_campaign, utm_content,
    utm_term, country, region, city, browser, browser_version, os, os_version, device_type,
    screen_width, screen_height, timezone, channel, entry_hostname, exit_hostname,
    region_code, city_code)
SELECT t.site_id, t.session_id, t.visitor_id, t.started_at, t.last_seen_at, t.pageviews,
       t.events, t.engaged, t.entry_path, t.exit_path, f.referrer_host, f.utm_source,
       f.utm_medium, f.utm_campaign, f.utm_content, f.utm_term, f.country, f.region, f.city,
       f.browser, f.browser_version, f.os, f.os_version, f.device_type, f.screen_width,
       f.screen_height, f.timezone, f.channel, t.entry_hostname, t.exit_hostname,
       f.region_code, f.city_code
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
                     THEN EXCLUDED.exit_path ELSE s.exit_path END,
    -- Each host with its path: the same condition, on the row's old values.
    entry_hostname = CASE WHEN EXCLUDED.entry_path <> ''
                           AND (s.entry_path = '' OR EXCLUDED.started_at < s.started_at)
                          THEN EXCLUDED.entry_hostname ELSE s.entry_hostname END,
    exit_hostname = CASE WHEN EXCLUDED.exit_path <> ''
                          AND EXCLUDED.last_seen_at >= s.last_seen_at
                         THEN EXCLUDED.exit_hostname ELSE s.exit_hostname END
RETURNING xmax = 0 AS opened, s.site_id, s.session_id, s.started_at
), late AS (  -- column names in the SELECT: Citus loses a CTE's column list
    -- any_day: the write may change an open day's prefix (storage/rollup_prefix.py),
    -- so its day is marked even if it has not ended: an event received before
    -- EVENT_MARK_AGE ago, or a visit extended that was last seen before MARK_AGE ago.
    SELECT site_id, received_at AS at, true AS any_day FROM inserted
    WHERE received_at < now() - {_EVENT_MARK_AGE}
    UNION ALL
    SELECT u.site_id, u.started_at, p.last_seen_at < now() - {_MARK_AGE}
    FROM upserted u LEFT JOIN previous p
         ON NOT u.opened AND p.site_id = u.site_id AND p.session_id = u.session_id
    WHERE u.started_at < now() - {_MARK_AGE}
    UNION ALL
    SELECT p.site_id, p.started_at, p.last_seen_at < now() - {_MARK_AGE}
    FROM upserted u JOIN previous p
         ON NOT u.opened AND p.site_id = u.site_id AND p.session_id = u.session_id
    WHERE p.started_at < now() - {_MARK_AGE}
), late_minutes AS (
    SELECT site_id, date_trunc('minute', at) AS at, bool_or(any_day) AS any_day
    FROM late GROUP BY 1, 2
), late_days AS (
    SELECT site_id, (at AT TIME ZONE zone)::date AS day, zone, bool_or(any_day) AS any_day
    FROM (SELECT site_id, at, any_day,
                 (SELECT timezone FROM sites z WHERE z.site_id = m.site_id) AS zone
          FROM late_minutes m OFFSET 0) AS zoned
    GROUP BY 1, 2, 3
), marked AS (
    INSERT INTO rollup_stale (site_id, day)
    SELECT site_id, day FROM late_days
    WHERE any_day OR ((day + 1)::timestamp AT TIME ZONE zone) < now() - {_MARK_AGE}
    ORDER BY site_id, day
    -- DO UPDATE, not DO NOTHING: it locks a mark that is already there, so a roller
    -- clearing that mark waits for this batch to commit and then reads its rows.
    ON CONFLICT (site_id, day) DO UPDATE SET day = EXCLUDED.day
)
SELECT count(*) FILTER (WHERE opened) FROM upserted
"""

ADD_BOT_COUNTS = """
INSERT INTO bot_counts (site_id, day, reason, hits)
SELECT * FROM unnest(%s::integer[], %s::date[], %s::text[], %s::bigint[]) ORDER BY 1, 2, 3
ON CONFLICT (site_id, day, reason) DO UPDATE SET hits = bot_counts.hits + EXCLUDED.hits
"""


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
        event.channel,
        page.hostname,
        location.region_code,
        location.city_code,
    )


async def write_batch(
    connection: Connection,
    sites: SiteIds,
    events: Sequence[QueuedEvent],
    bots: dict[BotHit, int],
    timeout: timedelta,
) -> int:
    """Write events (and bot counts) in one transaction; retrying after any failure
    writes no event twice.

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
            cursor = await connection.execute(
                INSERT_EVENTS_AND_SESSIONS,
                {
                    "sites": sorted({row[0] for row in assigned}),
                    "sessions": sorted({row[2] for row in assigned}),
                },
            )
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
    await connection.execute(SET_STATEMENT_TIMEOUT, (statement_timeout,))
    await connection.execute(DISABLE_NESTED_LOOPS)
    await connection.execute(CREATE_STAGING)
