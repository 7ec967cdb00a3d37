"""Prefix rollups of the open day (docs/read-model.md, "The open day"): the sums of a
day's rollup over the part of a local day that can no longer change unmarked, so the
query layer reads the open day from rollups too and only its last hour or so raw.

The prefix of a site's local day holds the day's visits that ended before `until`
(last_seen_at < until, so they started before it too; a VISIT_STEP boundary at
least ROLL_DELAY old, by the database's clock) in rollup_visits and rollup_hours, with the
events received before `until` in rollup_hours, and the day's events received before
`events_until` (an EVENT_STEP boundary at least EVENT_DELAY old: an event never changes
once written, and the writer marks a late one, writer.EVENT_MARK_AGE) in
rollup_events (sql/0016_open_day.sql, 0018_open_day_events.sql). `rollup_prefix` says
which day has one, in which zone, up to when. The query layer adds the *tail* from
raw rows (stats/prefix.py).

A prefix is rolled whole again when `until` moves on or a late write marked its day
stale, and only its events when `events_until` moves on (each roll one transaction
that replaces the rows it rolls); it is dropped when the whole day is rolled
(storage/rollup_sql.py, DROP_PREFIX). The roller (storage/roller.py) rolls the
prefixes after the due days, under its lock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
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

# The prefix's visits end on a grid of VISIT_STEP at least ROLL_DELAY ago, so the
# whole prefix is rolled that often. How far its events reach: EVENT_MARK_AGE plus ten
# times the longest write (the argument at writer.MARK_AGE, with EVENT_MARK_AGE for
# events; storage/roller.py checks the margin), on a grid of EVENT_STEP, so its
# rollup_events rows are rolled that often (a fifth of a whole roll's work).
VISIT_STEP: Final = timedelta(minutes=15)
EVENT_DELAY: Final = timedelta(minutes=15)
EVENT_STEP: Final = timedelta(minutes=5)

# The prefix's instants: `until`, the VISIT_STEP boundary at or before `closed_before`
# (now - ROLL_DELAY), and `events_until`, the EVENT_STEP boundary at or before
# `events_before` (now - EVENT_DELAY). UTC instants on a grid from a UTC midnight:
# exactness does not need local ones (stats/prefix.py counts a tail visitor per local
# hour and day), and the bounds are the same for all sites.
BOUNDS: Final = """
SELECT date_bin(%(visit_step)s::interval, %(closed_before)s::timestamptz,
                TIMESTAMPTZ '2000-01-01 00:00:00+00'),
       date_bin(%(event_step)s::interval, %(events_before)s::timestamptz,
                TIMESTAMPTZ '2000-01-01 00:00:00+00')
"""

# Per site: the local day that holds `until` (in the site's zone) when it started
# before `until`, is not rolled whole, had events before `until`, and has no prefix
# up to `until` and `events_until` in the site's zone that no late write made stale
# (%(every)s: a rebuild rolls it again anyway). `whole`: its visits are due too (no
# such prefix up to `until`), not only its events.
DUE_PREFIXES: Final = """
WITH site AS (
    SELECT s.site_id, s.domain, s.timezone,
           (%(until)s::timestamptz AT TIME ZONE s.timezone)::date AS day
    FROM sites s
    WHERE %(site_id)s::integer IS NULL OR s.site_id = %(site_id)s::integer
), due AS (
    SELECT site.*, p.events_until AS rolled_events_until
    FROM site
    LEFT JOIN rollup_prefix p
           ON NOT %(every)s
          AND p.site_id = coalesce(%(site_id)s::integer, site.site_id)
          AND p.day = site.day AND p.timezone = site.timezone
          AND p.until = %(until)s::timestamptz
          AND NOT EXISTS (SELECT FROM rollup_stale x
                          WHERE x.site_id = p.site_id AND x.day = p.day)
    WHERE (site.day::timestamp AT TIME ZONE site.timezone) < %(until)s::timestamptz
      AND EXISTS (SELECT FROM events e
                  WHERE e.site_id = site.site_id
                    AND e.received_at >= (site.day::timestamp AT TIME ZONE site.timezone)
                    AND e.received_at < %(until)s::timestamptz)
      AND NOT EXISTS (SELECT FROM rollup_days d
                      WHERE d.site_id = site.site_id AND d.day = site.day)
)
SELECT site_id, domain, day, timezone, rolled_events_until IS NULL AS whole
FROM due
WHERE rolled_events_until IS DISTINCT FROM %(events_until)s::timestamptz
ORDER BY site_id
"""

# The visits and events a prefix holds (storage/rollup_sql.py's day, cut at until, and
# for rollup_events at events_until).
PREFIX_VISITS: Final = f"{VISITS_OF_DAY}\n  AND s.last_seen_at < %(until)s"
PREFIX_EVENTS: Final = f"{EVENTS_OF_DAY}\n  AND e.received_at < %(until)s"
PREFIX_LATER_EVENTS: Final = f"{EVENTS_OF_DAY}\n  AND e.received_at < %(events_until)s"

MARK_PREFIX: Final = """
INSERT INTO rollup_prefix (site_id, day, timezone, until, events_until, rolled_at)
VALUES (%(site_id)s, %(day)s, %(timezone)s, %(until)s, %(events_until)s, now())
ON CONFLICT (site_id, day) DO UPDATE SET timezone = EXCLUDED.timezone,
                                         until = EXCLUDED.until,
                                         events_until = EXCLUDED.events_until,
                                         rolled_at = EXCLUDED.rolled_at
"""
# Only the events moved on: the prefix up to the same `until` (in the same zone) gets
# its new `events_until`. Its stale mark, if a write made one meanwhile, stays.
MARK_PREFIX_EVENTS: Final = """
UPDATE rollup_prefix SET events_until = %(events_until)s, rolled_at = now()
WHERE site_id = %(site_id)s AND day = %(day)s AND timezone = %(timezone)s
  AND until = %(until)s
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
    roll_events(PREFIX_LATER_EVENTS),
    roll_hours(PREFIX_VISITS, PREFIX_EVENTS),
    MARK_PREFIX,
)
# Only rollup_events, up to the new `events_until`: a prefix whose visits are current.
ROLL_PREFIX_EVENTS: Final = (
    LOCK_DAY,
    DELETE_EVENTS,
    roll_events(PREFIX_LATER_EVENTS),
    MARK_PREFIX_EVENTS,
)

# A rebuild clears the prefixes of its sites (and days) first: queries read those
# days raw until they are rolled again. The rows under them go with the next roll.
CLEAR_PREFIXES: Final = """
DELETE FROM rollup_prefix
WHERE (%(site_id)s::integer IS NULL OR site_id = %(site_id)s::integer)
  AND day >= coalesce(%(first)s::date, day) AND day <= coalesce(%(last)s::date, day)
"""


@dataclass(frozen=True)
class PrefixBounds:
    """Where the prefixes rolled now end: visits at `until`, events at `events_until`."""

    until: datetime
    events_until: datetime


@dataclass(frozen=True)
class DuePrefix:
    site_id: int
    domain: str
    day: date
    timezone: str
    whole: bool  # visits and events, or (False) only the events


async def prefix_bounds(
    connection: Connection, closed_before: datetime, events_before: datetime
) -> PrefixBounds:
    """The bounds of the prefixes rolled when days closed before `closed_before` (now -
    ROLL_DELAY, storage/roller.py) are due; `events_before` is now - EVENT_DELAY."""
    params = {
        "closed_before": closed_before,
        "events_before": events_before,
        "visit_step": VISIT_STEP,
        "event_step": EVENT_STEP,
    }
    cursor = await connection.execute(BOUNDS, params)
    row = await cursor.fetchone()
    assert row is not None and isinstance(row[0], datetime) and isinstance(row[1], datetime)
    return PrefixBounds(row[0], row[1])


async def due_prefixes(
    connection: Connection,
    bounds: PrefixBounds,
    *,
    site_id: int | None = None,
    every: bool = False,
) -> list[DuePrefix]:
    """The open days whose prefix up to `bounds` is missing, behind or stale."""
    params = {
        "until": bounds.until,
        "events_until": bounds.events_until,
        "site_id": site_id,
        "every": every,
    }
    cursor = await connection.execute(DUE_PREFIXES, params)
    return [DuePrefix(*row) for row in await cursor.fetchall()]


async def roll_prefix(connection: Connection, due: DuePrefix, bounds: PrefixBounds) -> None:
    """Replace the rollups of the due day with its prefix up to `bounds` (only its
    events when `due.whole` is false), in one transaction (READ COMMITTED, as roll_day:
    see there)."""
    params = {
        "site_id": due.site_id,
        "day": due.day,
        "timezone": due.timezone,
        "until": bounds.until,
        "events_until": bounds.events_until,
    }
    async with connection.transaction():
        for setting in ROLL_SETTINGS:
            await connection.execute(setting)
        for statement in ROLL_PREFIX if due.whole else ROLL_PREFIX_EVENTS:
            await connection.execute(statement, params)


async def clear_prefixes(
    connection: Connection, site_id: int | None, first: date | None, last: date | None
) -> None:
    """Drop the prefixes of a site (None: every site) within [first, last]."""
    params = {"site_id": site_id, "first": first, "last": last}
    await connection.execute(CLEAR_PREFIXES, params)
