"""Answering a `Query`: validate it, read the rolled days from rollups and the rest
from raw rows, add the parts up (docs/read-model.md). Also realtime visitors and the
period a query is compared with.

Every statement of one query runs in one REPEATABLE READ READ ONLY transaction, so
rollup_days, rollup_stale, the rollups and the raw rows are one snapshot: a day that
a roller replaces meanwhile is read whole from before or not at all. Each statement
has the query's timeout; PostgreSQL cancels a statement that runs past it, and
psycopg cancels the running statement in the server when the asyncio task running
`run` is cancelled, so nothing is left running either way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from psycopg import AsyncConnection, errors
from psycopg.pq import TransactionStatus
from psycopg.rows import tuple_row

from picolytics.errors import QueryError, QueryTimeoutError, first_line
from picolytics.stats.assemble import decode, statement
from picolytics.stats.engagement_merge import answer_in_parts, in_parts
from picolytics.stats.filters import patterns
from picolytics.stats.goal_parts import (
    goal_part,
    goal_rollup_part,
    resolve,
    rolled_up,
    uses_goals,
)
from picolytics.stats.goals import load_goals
from picolytics.stats.imported import imported_parts
from picolytics.stats.periods import day_start, zone
from picolytics.stats.prefix import Prefix, goal_tails, open_day_parts
from picolytics.stats.query import Path, Period, Query, Result
from picolytics.stats.raw import raw_parts
from picolytics.stats.rollups import rolled_days, rollup_parts, split_period
from picolytics.stats.shape import Shape, shape_of
from picolytics.stats.sql import Params, Range
from picolytics.stats.validate import validate
from picolytics.storage.goals import Goal

BEGIN_SNAPSHOT = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"
SET_TIMEOUT = "SELECT set_config('statement_timeout', %s, true)"
# Compiles each pattern, also when no row would reach it, so a bad one always fails.
COMPILE_PATTERNS = "SELECT bool_or('' ~ pattern) FROM unnest(%s::text[]) AS pattern"
REALTIME_VISITORS = """
SELECT coalesce(sum(visitors), 0)::bigint
FROM (SELECT count(DISTINCT visitor_id) AS visitors FROM events
      WHERE site_id = ANY(%(sites)s::integer[])
        AND received_at > %(since)s AND received_at <= %(now)s
      GROUP BY site_id) per_site
"""

# The open day's event tails (stats/prefix_events.py) join the tail with its visitors'
# prefix events on (site, session, value). A CTE's row estimate is poor, and a merge
# join over many equal keys (a site with one host) went quadratic: 140 ms against 32
# by host at 30 M. For that one statement, hash joins; the caller's setting after.
NO_MERGE_JOINS = (
    "SELECT current_setting('enable_mergejoin'), set_config('enable_mergejoin', 'off', true)"
)
RESTORE_MERGE_JOINS = "SELECT set_config('enable_mergejoin', %s, true)"

Connection = AsyncConnection[Any]


async def run(
    connection: Connection, query: Query, *, timeout_s: float = 10.0, use_rollups: bool = True
) -> Result:
    """The answer to `query`. Raises QueryError for an invalid query (before any SQL,
    or for a pattern PostgreSQL cannot compile) and QueryTimeoutError when a statement
    runs past `timeout_s`. On an idle connection it runs in a snapshot of its own; in
    the caller's open transaction, in the caller's snapshot."""
    validate(query)
    try:
        async with snapshot(connection, timeout_s):
            if in_parts(query):  # engagement, visit metrics by page (stats/engagement_merge.py)
                return await answer_in_parts(
                    connection, query, lambda part: _answer(connection, part, use_rollups)
                )
            return await _answer(connection, query, use_rollups)
    except errors.QueryCanceled as error:
        raise QueryTimeoutError(
            f"the query ran past its timeout of {timeout_s:g} s and was cancelled"
        ) from error
    except errors.InvalidRegularExpression as error:
        raise QueryError("filters", first_line(error)) from error
    except errors.InvalidParameterValue as error:
        if "time zone" not in str(error):
            raise
        raise QueryError("period.timezone", first_line(error)) from error


@asynccontextmanager
async def snapshot(connection: Connection, timeout_s: float) -> AsyncIterator[None]:
    """A READ ONLY REPEATABLE READ transaction whose statements time out after timeout_s.

    Inside a transaction of the caller's (one snapshot for several queries, as the
    report needs), a savepoint instead: the caller chose the snapshot, and a failed
    query leaves the caller's transaction usable."""
    status = connection.info.transaction_status
    if status not in (TransactionStatus.IDLE, TransactionStatus.INTRANS):
        raise RuntimeError("stats queries need an idle connection or an open transaction")
    async with connection.transaction():
        if status == TransactionStatus.IDLE:
            await connection.execute(BEGIN_SNAPSHOT)  # before any query of the transaction
        await connection.execute(SET_TIMEOUT, (f"{max(1, round(timeout_s * 1000))}ms",))
        yield


async def _answer(connection: Connection, query: Query, use_rollups: bool) -> Result:
    goals: list[Goal] = []
    if uses_goals(query):  # the site's goals, from the query's snapshot
        goals = await load_goals(connection, query.site_ids)
        query = replace(query, filters=resolve(query.filters, goals))
    shape = shape_of(query)
    cursor = connection.cursor(row_factory=tuple_row)
    found = patterns(query.filters)
    if found:
        await cursor.execute(COMPILE_PATTERNS, (found,))
    params = Params()
    imported = await imported_parts(connection, query, params, goals)  # docs/imports.md
    whole = (Range(tuple(sorted(set(query.site_ids))), query.period.start, query.period.end),)
    rolled: tuple[tuple[int, date], ...] = ()
    ranges: tuple[Range, ...] = whole
    prefixes: tuple[Prefix, ...] = ()  # the open day: prefix rollup + raw tail
    if use_rollups and shape.rollups:
        split = await split_period(connection, query, shape)
        rolled, ranges, prefixes = split.rolled, split.raw, split.prefixes
    parts: list[str] = []
    if shape.dimension == "goal":
        if not goals:  # nothing can complete a goal
            return Result(rows=(), total_rows=0, path="raw", imports=imported.note)
        rolled, ranges, prefixes, parts = await _goal_parts(
            connection, query, shape, params,
            goals=goals, whole=whole, rollups=use_rollups and query.filters is None,
        )  # fmt: skip
    else:
        if rolled or prefixes:
            days = rolled + tuple((p.site_id, p.day) for p in prefixes)
            parts += rollup_parts(query, shape, days, params)
        if prefixes:
            parts += open_day_parts(query, shape, prefixes, params)
        if ranges:
            parts += raw_parts(query, shape, ranges, params)
    parts += imported.parts
    tails = bool(prefixes) and (shape.by_event_dimension or shape.dimension == "goal")
    if tails:
        await cursor.execute(NO_MERGE_JOINS)
        setting = await cursor.fetchone()
    await cursor.execute(statement(query, parts, params), params.values)
    rows, total = decode(query, await cursor.fetchall())
    if tails:
        assert setting is not None
        await cursor.execute(RESTORE_MERGE_JOINS, (setting[0],))
    path: Path = "mixed" if (rolled and ranges) or prefixes else "rollup" if rolled else "raw"
    return Result(rows=rows, total_rows=total, path=path, imports=imported.note)


async def _goal_parts(
    connection: Connection,
    query: Query,
    shape: Shape,
    params: Params,
    *,
    goals: list[Goal],
    whole: tuple[Range, ...],
    rollups: bool,
) -> tuple[tuple[tuple[int, date], ...], tuple[Range, ...], tuple[Prefix, ...], list[str]]:
    """A breakdown by goal (stats/goal_parts.py): goals of one rollup row each from the
    rolled days, prefixes and their tails (stats/prefix.py) and raw rows elsewhere, page
    patterns from raw rows over the `whole` period; the rolled days, the raw ranges,
    the prefixes and the parts."""
    single = [g for g in goals if rolled_up(g)] if rollups and not shape.hourly else []
    by_pattern = [g for g in goals if g not in single]
    rolled: tuple[tuple[int, date], ...] = ()
    ranges = whole
    prefixes: tuple[Prefix, ...] = ()
    if single:
        split = await split_period(connection, query, shape)
        rolled, ranges, prefixes = split.rolled, split.raw, split.prefixes
    parts: list[str] = []
    if rolled or prefixes:
        days = rolled + tuple((p.site_id, p.day) for p in prefixes)
        parts.append(goal_rollup_part(rolled_days(days, params), params, single))
    if prefixes:
        parts += goal_tails(query, prefixes, params, single)
    if single and ranges:
        parts.append(goal_part(query, shape, ranges, params, single))
    if by_pattern:
        parts.append(goal_part(query, shape, whole, params, by_pattern))
    return rolled, whole if by_pattern else ranges, prefixes, parts


async def realtime_visitors(
    connection: Connection,
    site_ids: Sequence[int],
    now: datetime,
    minutes: int = 5,
    *,
    timeout_s: float = 10.0,
) -> int:
    """Visitors of the last `minutes` up to `now`: distinct visitor ids among the events
    (any event: a tab that pings is a visitor still there) received in (now - minutes,
    now], per site and summed."""
    if not site_ids:
        raise QueryError("site_ids", "name at least one site")
    if now.utcoffset() is None:
        raise QueryError("now", "must be an aware datetime (with a time zone)")
    if not 1 <= minutes <= 60:
        raise QueryError("minutes", "must be between 1 and 60")
    params = {"sites": list(site_ids), "since": now - timedelta(minutes=minutes), "now": now}
    try:
        async with snapshot(connection, timeout_s):
            cursor = connection.cursor(row_factory=tuple_row)
            await cursor.execute(REALTIME_VISITORS, params)
            row = await cursor.fetchone()
    except errors.QueryCanceled as error:
        raise QueryTimeoutError(f"realtime visitors ran past {timeout_s:g} s") from error
    return int(row[0]) if row else 0


def comparison_period(period: Period, mode: Literal["previous_period", "year_earlier"]) -> Period:
    """The period to compare `period` with, in its zone:
    - previous_period: as long, ending where `period` starts; for whole local days
      (both ends a local midnight) the same number of local days before;
    - year_earlier: the same local wall-clock times a year before (29 February: the
      28th), each end read in the zone as it was then; for whole local days, the same
      days a year before, the last one included (so 28 February 2024 alone compares
      with 28 February 2023, not with nothing).
    """
    tz = zone(period.timezone, "period.timezone")
    start, end = period.start.astimezone(tz), period.end.astimezone(tz)
    whole_days = start == day_start(start.date(), tz) and end == day_start(end.date(), tz)
    if mode == "previous_period":
        if whole_days:
            days = (end.date() - start.date()).days
            new_start = day_start(start.date() - timedelta(days=days), tz)
        else:  # instants: subtract in UTC, where wall-clock changes do not count
            new_start = start.astimezone(UTC) - (end.astimezone(UTC) - start.astimezone(UTC))
        return Period(new_start.astimezone(tz), period.start.astimezone(tz), period.timezone)
    if mode != "year_earlier":
        raise QueryError("compare", f"unknown comparison {mode!r}")

    def shift(day: date) -> date:
        return day.replace(
            year=day.year - 1, day=28 if (day.month, day.day) == (2, 29) else day.day
        )

    if whole_days:
        last = shift(end.date() - timedelta(days=1))
        return Period(
            day_start(shift(start.date()), tz), day_start(last + timedelta(days=1), tz),
            period.timezone,
        )  # fmt: skip

    def year_before(moment: datetime) -> datetime:
        wall = datetime.combine(shift(moment.date()), moment.timetz().replace(tzinfo=None), tz)
        return wall.astimezone(UTC).astimezone(tz)  # a wall time the gap skipped moves on

    return Period(year_before(start), year_before(end), period.timezone)
