"""Imported data in an answer (Query.include_imports; docs/imports.md, How imported
data is counted): whether the query can be answered from it, and if so its parts,
which stats/engine.py adds to the native parts.

The reasons it is left out are Plausible's (`imports_skip_reason`), checked in its
order: the sites have no imported day at all (`no_imported_data`); none of them lies
in the period as a whole local day before the site's first native day
(`out_of_range`); the series is hourly, and imported days have no hours
(`unsupported_interval`); the breakdown, filters or metrics are not held by the
imported tables (`unsupported_query`, stats/imported_plan.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from psycopg import AsyncConnection
from psycopg.rows import tuple_row

from picolytics.stats.imported_plan import plan
from picolytics.stats.imported_sql import (
    SITES_WITH_IMPORTS,
    USABLE_DAYS,
    UsableDay,
    goal_parts,
    read_part,
    usable_days,
)
from picolytics.stats.query import ImportsNote, ImportsSkipReason, Period, Query
from picolytics.stats.sql import Params
from picolytics.storage.goals import Goal
from picolytics.storage.imported_days import SELECT_FIRST_NATIVE_DAY


@dataclass(frozen=True, slots=True)
class Imported:
    """What imported data adds to an answer: the note (None: not asked for) and the
    parts (stats/sql.py, PART_COLUMNS)."""

    note: ImportsNote | None
    parts: list[str] = field(default_factory=list)


NOT_ASKED: Final = Imported(None)


def _skipped(reason: ImportsSkipReason) -> Imported:
    return Imported(ImportsNote(False, reason))


async def _usable(
    connection: AsyncConnection[Any], site_ids: Sequence[int], period: Period
) -> tuple[bool, list[UsableDay]]:
    """Whether any of the sites has imported days, and those the query may read."""
    cursor = connection.cursor(row_factory=tuple_row)
    await cursor.execute(SITES_WITH_IMPORTS, {"sites": sorted(set(site_ids))})
    sites = sorted(int(row[0]) for row in await cursor.fetchall())
    if not sites:  # most sites: one statement, and no more
        return False, []
    # Site by site (on Citus, each in its shard), then the days of all of them at once.
    first_days = []
    for site in sites:
        await cursor.execute(SELECT_FIRST_NATIVE_DAY, {"site": site})
        row = await cursor.fetchone()
        first_days.append(row[0] if row else None)
    await cursor.execute(
        USABLE_DAYS,
        {
            "tz": period.timezone,
            "sites": sites,
            "first_days": first_days,
            "start": period.start,
            "end": period.end,
        },
    )
    return True, [(int(s), d, int(i)) for s, d, i in await cursor.fetchall()]


async def imported_day_count(
    connection: AsyncConnection[Any], site_ids: Sequence[int], period: Period
) -> int:
    """On how many local dates of the period a query over these sites reads imported
    data (a query the imported tables can answer), in the caller's transaction."""
    _, days = await _usable(connection, site_ids, period)
    return len({day for _, day, _ in days})


async def imported_parts(
    connection: AsyncConnection[Any], query: Query, params: Params, goals: Sequence[Goal]
) -> Imported:
    """Imported data's parts of `query` (goal conditions already resolved; `goals`: the
    sites' goals, for a breakdown by goal), read in the query's snapshot."""
    if not query.include_imports:
        return NOT_ASKED
    imported, days = await _usable(connection, query.site_ids, query.period)
    if not days:
        return _skipped("out_of_range" if imported else "no_imported_data")
    if query.interval == "hour":
        return _skipped("unsupported_interval")
    found = plan(query)
    if found.unsupported:
        return _skipped("unsupported_query")
    relation = usable_days(days, params)
    if found.goals:
        parts = goal_parts(goals, relation, params) if goals else []
    else:
        parts = [read_part(query, read, relation, params) for read in found.reads]
    return Imported(ImportsNote(True), parts)
