"""Prefix rollups of the open day (docs/read-model.md, "The open day"): the sums of a
day's rollup over the part of a local day that can no longer change unmarked, so the
query layer reads the open day from rollups too and only its last hour or two raw.

The prefix of a site's local day up to `until` (an hour boundary at least ROLL_DELAY
old, by the database's clock) holds the day's visits that ended before `until`
(last_seen_at < until, so they started before it too) and the day's events received
before `until`, in the same tables and rows as a whole day's rollup
(sql/0016_open_day.sql); `rollup_prefix` says which day has one, in which zone, up
to when. The query layer adds the *tail* from raw rows: the day's visits with
last_seen_at >= until, and the events received from `until` on (stats/prefix.py).

A prefix is rolled again when `until` moves on (each roll one transaction that
replaces the day's rows) or when a late write marked its day stale, and dropped when
the whole day is rolled (storage/rollup_sql.py, DROP_PREFIX). The roller
(storage/roller.py) rolls the prefixes after the due days, under its lock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Final

from psycopg import AsyncConnection

from picolytics.storage.rollup import ROLL_SETTINGS
from picolytics.storage.rollup_sql import (
    CLEAR_STALE,
    DELETE_EVENTS,
    DELETE_HOURS,
    DELETE_VISITS,
    EVENTS_OF_DAY,
    LOCK_DAY,
    VISITS_OF_DAY,
    roll_events,
    roll_hours,
    roll_visits,
)

Connection = AsyncConnection[Any]

# The prefix's instant: the hour boundary at or before `closed_before` (now -
# ROLL_DELAY). A UTC hour: exactness does not need a local one (stats/prefix.py
# counts a tail visitor per local hour and day), and the bound is the same for all.
UNTIL: Final = "SELECT date_trunc('hour', %s::timestamptz AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"

# Per site: the local day that holds `until` (in the site's zone) when it started
# before `until`, is not rolled whole, had events before `until`, and has no prefix
# up to `until` in the site's zone that no late write made stale (%(every)s: a
# rebuild rolls it again anyway).
DUE_PREFIXES: Final = """
WITH site AS (
    SELECT s.site_id, s.domain, s.timezone,
           (%(until)s::timestamptz AT TIME ZONE s.timezone)::date AS day
    FROM sites s
    WHERE %(site_id)s::integer IS NULL OR s.site_id = %(site_id)s::integer
)
SELECT site.site_id, site.domain, site.day, site.timezone
FROM site
WHERE (site.day::timestamp AT TIME ZONE site.timezone) < %(until)s::timestamptz
  AND EXISTS (SELECT FROM events e
              WHERE e.site_id = site.site_id
                AND e.received_at >= (site.day::timestamp AT TIME ZONE site.timezone)
                AND e.received_at < %(until)s::timestamptz)
  AND NOT EXISTS (SELECT FROM rollup_days d
                  WHERE d.site_id = site.site_id AND d.day = site.day)
  AND (%(every)s OR NOT EXISTS (
      SELECT FROM rollup_prefix p
      WHERE p.site_id = coalesce(%(site_id)s::integer, site.site_id)
        AND p.day = site.day AND p.timezone = site.timezone
        AND p.until = %(until)s::timestamptz
        AND NOT EXISTS (SELECT FROM rollup_stale x
                        WHERE x.site_id = p.site_id AND x.day = p.day)))
ORDER BY site.site_id
"""

# The visits and events a prefix holds (storage/rollup_sql.py's day, cut at until).
PREFIX_VISITS: Final = f"{VISITS_OF_DAY}\n  AND s.last_seen_at < %(until)s"
PREFIX_EVENTS: Final = f"{EVENTS_OF_DAY}\n  AND e.received_at < %(until)s"

MARK_PREFIX: Final = """
INSERT INTO rollup_prefix (site_id, day, timezone, until, rolled_at)
VALUES (%(site_id)s, %(day)s, %(timezone)s, %(until)s, now())
ON CONFLICT (site_id, day) DO UPDATE SET timezone = EXCLUDED.timezone,
                                         until = EXCLUDED.until,
                                         rolled_at = EXCLUDED.rolled_at
"""

# As ROLL_DAY, in one transaction: the day's lock, its stale mark cleared first (a
# write marking it after the reads below leaves its mark behind), its rows replaced.
ROLL_PREFIX: Final = (
    LOCK_DAY,
    CLEAR_STALE,
    DELETE_VISITS,
    DELETE_EVENTS,
    DELETE_HOURS,
    roll_visits(PREFIX_VISITS),
    roll_events(PREFIX_EVENTS),
    roll_hours(PREFIX_VISITS, PREFIX_EVENTS),
    MARK_PREFIX,
)

# A rebuild clears the prefixes of its sites (and days) first: queries read those
# days raw until they are rolled again. The rows under them go with the next roll.
CLEAR_PREFIXES: Final = """
DELETE FROM rollup_prefix
WHERE (%(site_id)s::integer IS NULL OR site_id = %(site_id)s::integer)
  AND day >= coalesce(%(first)s::date, day) AND day <= coalesce(%(last)s::date, day)
"""


@dataclass(frozen=True)
class DuePrefix:
    site_id: int
    domain: str
    day: date
    timezone: str


async def prefix_until(connection: Connection, closed_before: datetime) -> datetime:
    """The `until` of the prefixes rolled when days closed before `closed_before` are due."""
    cursor = await connection.execute(UNTIL, (closed_before,))
    row = await cursor.fetchone()
    assert row is not None and isinstance(row[0], datetime)
    return row[0]


async def due_prefixes(
    connection: Connection, until: datetime, *, site_id: int | None = None, every: bool = False
) -> list[DuePrefix]:
    """The open days whose prefix up to `until` is missing, behind or stale."""
    params = {"until": until, "site_id": site_id, "every": every}
    cursor = await connection.execute(DUE_PREFIXES, params)
    return [DuePrefix(*row) for row in await cursor.fetchall()]


async def roll_prefix(
    connection: Connection, site_id: int, day: date, timezone: str, until: datetime
) -> None:
    """Replace the rollups of `site_id`'s local `day` with its prefix up to `until`, in
    one transaction (READ COMMITTED, as roll_day: see there)."""
    params = {"site_id": site_id, "day": day, "timezone": timezone, "until": until}
    async with connection.transaction():
        for setting in ROLL_SETTINGS:
            await connection.execute(setting)
        for statement in ROLL_PREFIX:
            await connection.execute(statement, params)


async def clear_prefixes(
    connection: Connection, site_id: int | None, first: date | None, last: date | None
) -> None:
    """Drop the prefixes of a site (None: every site) within [first, last]."""
    params = {"site_id": site_id, "first": first, "last": last}
    await connection.execute(CLEAR_PREFIXES, params)
