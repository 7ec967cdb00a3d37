"""`picolytics report`: the numbers of a period, read through the query layer (stats/),
so from the rollups of closed days and raw rows for the rest, with the definitions of
docs/read-model.md.

A period is whole local days `first` to `last` inclusive in the report's zone:
`--timezone`, else the zone of the site reported on (or the one zone all of them share),
else UTC. Each table is one `Query` (stats/engine.py); bounces, campaigns and bot hits,
which a Query cannot ask, come from stats/extras.py. All of them read one READ ONLY
REPEATABLE READ snapshot, so the tables agree on a database being written to.
"""

from __future__ import annotations

# Callers take the report's whole surface from here.
__all__ = [
    "DEFAULT_DAYS",
    "DEFAULT_LIMIT",
    "Period",
    "PeriodOptions",
    "Report",
    "build_report",
    "report_from",
    "resolve_period",
]

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import AsyncConnection

from picolytics.dimensions import Dimension, Metric
from picolytics.errors import (
    NoReportDataError,
    ReportError,
    ReportOptionError,
    first_line,
)
from picolytics.report.model import Day, Period, Report, Summary, Table, report_zone
from picolytics.report.options import (
    DEFAULT_DAYS,
    DEFAULT_LIMIT,
    PeriodOptions,
    resolve_period,
)
from picolytics.report.sql import SCHEMA_STATE, SELECT_SITES
from picolytics.stats import engine, periods
from picolytics.stats.extras import extras
from picolytics.stats.imported import imported_day_count
from picolytics.stats.query import (
    MAX_LIMIT,
    Breakdown,
    Condition,
    Filter,
    Query,
    Result,
)
from picolytics.text import normalise_domain

ONE_SNAPSHOT = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"
DEFAULT_TIMEOUT_S = 10.0  # per query, as the query layer's default


@dataclass(frozen=True)
class TableQuery:
    """A table of the report as a breakdown: its name, the column of the value, the
    metrics (ordered by the first, descending, then by value) and a filter."""

    name: str
    column: str
    dimension: Dimension
    metrics: tuple[Metric, ...]
    filters: Filter | None = None


# The tables, in the order of the report (campaigns and bots come from stats/extras.py).
TABLES: tuple[TableQuery | str, ...] = (
    TableQuery("pages", "path", "page", ("pageviews", "visitors")),
    TableQuery("sources", "source", "source", ("visits", "visitors")),
    # As the dashboard: known countries only.
    TableQuery(
        "countries", "country", "country", ("visits",), Condition("country", "is_not", ("",))
    ),
    TableQuery("browsers", "browser", "browser", ("visits",)),
    TableQuery("operating_systems", "os", "os", ("visits",)),
    TableQuery("devices", "device_type", "device", ("visits",)),
    "campaigns",
    TableQuery("custom_events", "name", "event", ("events", "visitors")),
    "bots",
)
CAMPAIGN_COLUMNS = ("utm_source", "utm_medium", "utm_campaign", "visits", "visitors", "pageviews")
BOT_COLUMNS = ("reason", "hits")


Connection = AsyncConnection[Any]


@dataclass(frozen=True)
class Site:
    site_id: int
    domain: str
    timezone: str


def _choose_sites(known: list[Site], wanted: Sequence[str]) -> tuple[Site, ...]:
    if not known:
        raise NoReportDataError(
            "nothing to report: the database has no sites yet (no event has been recorded)"
        )
    if not wanted:
        return tuple(known)
    by_domain = {site.domain: site for site in known}
    chosen = tuple(dict.fromkeys(normalise_domain(site) for site in wanted))
    unknown = [site for site in chosen if site not in by_domain]
    if unknown:
        names = [site.domain for site in known]
        listed = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
        raise ReportOptionError(
            f"--site: no site {', '.join(map(repr, unknown))} in the database (sites: {listed})"
        )
    return tuple(by_domain[domain] for domain in chosen)


def defaultreport_zone(sites: Sequence[Site]) -> str:
    """The zone of the sites when they share one, else UTC."""
    zones = {site.timezone for site in sites}
    return zones.pop() if len(zones) == 1 else "UTC"


async def _sites(connection: Connection) -> list[Site]:
    """The sites, after checking the schema: one short transaction, so the connection
    is idle again for the query layer."""
    async with connection.transaction():
        cursor = await connection.execute(SCHEMA_STATE)
        row = await cursor.fetchone()
        has_sites, has_read_model = row if row else (False, False)
        if not has_sites:
            raise NoReportDataError(
                "nothing to report: the database has no picolytics tables yet "
                "(run `picolytics migrate`, or `picolytics serve` to start collecting)"
            )
        if not has_read_model:
            raise ReportError(
                "the database lacks the read model (migration 0006): run `picolytics migrate` first"
            )
        cursor = await connection.execute(SELECT_SITES)
        return [Site(*site) for site in await cursor.fetchall()]


def _rate(value: Any, places: str) -> Decimal | None:
    """A rate of the query layer (a float rounded to `places`) as the Decimal it is."""
    return None if value is None else Decimal(repr(value)).quantize(Decimal(places))


def _int(value: Any) -> int:
    return int(value) if value is not None else 0


async def build_report(
    connection: Connection,
    period: Period | PeriodOptions,
    sites: Sequence[str] = (),
    *,
    timezone: str | None = None,
    limit: int | None = DEFAULT_LIMIT,
    now: datetime | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    imports: bool = True,
) -> Report:
    """Read the sites, then every table through the query layer, and assemble the
    report. `period` in days (local to the zone) or as options (today: the zone's).
    `imports`: add imported data on the days it covers (docs/imports.md), as Plausible's
    dashboard does by default; campaigns and bot hits are native only."""
    now = now or datetime.now(UTC)
    if timezone is not None:
        report_zone(timezone)
    chosen = _choose_sites(await _sites(connection), sites)
    zone = timezone or (period.timezone if isinstance(period, Period) else None)
    zone = zone or defaultreport_zone(chosen)
    today = periods.local_today(now, report_zone(zone))
    dates = period.resolve(today) if isinstance(period, PeriodOptions) else period
    resolved = replace(dates, timezone=zone)
    site_ids = tuple(site.site_id for site in chosen)
    stats_period = resolved.query_period()
    page = limit if limit is not None and limit <= MAX_LIMIT else None

    # Every table from one snapshot: the report adds up on a database being written to.
    async with connection.transaction():
        await connection.execute(ONE_SNAPSHOT)

        async def run(query: Query) -> Result:
            query = replace(query, include_imports=imports)
            return await engine.run(connection, query, timeout_s=timeout_s)

        totals = await run(
            Query(
                site_ids,
                stats_period,
                (
                    "visitors",
                    "visits",
                    "pageviews",
                    "bounces",
                    "bounce_rate",
                    "visit_duration",
                    "views_per_visit",
                ),
            )
        )
        per_day = await run(
            Query(site_ids, stats_period, ("pageviews", "visits", "visitors"), interval="day")
        )
        found = {row.time: row.metrics for row in per_day.rows}

        def on(day: date, metric: Metric) -> int:
            return _int(found.get(day, {}).get(metric))

        daily = tuple(
            Day(day, on(day, "pageviews"), on(day, "visits"), on(day, "visitors"))
            for day in resolved.days
        )
        extra = await extras(connection, site_ids, stats_period, limit=limit, timeout_s=timeout_s)
        tables = []
        for spec in TABLES:
            if spec == "campaigns":
                rows: tuple[tuple[Any, ...], ...] = tuple(
                    (c.utm_source, c.utm_medium, c.utm_campaign, c.visits, c.visitors, c.pageviews)
                    for c in extra.campaigns
                )
                tables.append(Table("campaigns", CAMPAIGN_COLUMNS, rows))
                continue
            if spec == "bots":
                tables.append(Table("bots", BOT_COLUMNS, extra.bot_hits))
                continue
            assert isinstance(spec, TableQuery)
            result = await run(
                Query(
                    site_ids,
                    stats_period,
                    spec.metrics,
                    breakdown=Breakdown(spec.dimension),
                    filters=spec.filters,
                    order_by=((spec.metrics[0], "desc"), ("value", "asc")),
                    limit=page,
                )
            )
            rows = tuple(
                (row.value, *(_int(row.metrics[m]) for m in spec.metrics)) for row in result.rows
            )
            tables.append(Table(spec.name, (spec.column, *spec.metrics), rows[:limit]))
        imported_days = 0
        if imports and totals.imports is not None and totals.imports.included:
            imported_days = await imported_day_count(connection, site_ids, stats_period)
        (total,) = totals.rows
        metrics = total.metrics
        summary = Summary(
            visitors=_int(metrics["visitors"]),
            visits=_int(metrics["visits"]),
            pageviews=_int(metrics["pageviews"]),
            bounces=_int(metrics["bounces"]),
            bounce_rate=_rate(metrics["bounce_rate"], "0.1"),
            visit_duration_s=_rate(metrics["visit_duration"], "0.1"),
            pages_per_visit=_rate(metrics["views_per_visit"], "0.01"),
            bot_hits=sum(hits for _, hits in extra.bot_hits),
        )
    return Report(
        sites=tuple(site.domain for site in chosen),
        all_sites=not sites,
        period=resolved,
        generated_at=now,
        summary=summary,
        daily=daily,
        tables=tuple(tables),
        limit=limit,
        imported_days=imported_days,
    )


async def _report_from(
    conninfo: str,
    period: Period | PeriodOptions,
    sites: Sequence[str],
    **options: Any,
) -> Report:
    async with await AsyncConnection.connect(conninfo) as connection:
        return await build_report(connection, period, sites, **options)


def report_from(
    conninfo: str,
    period: Period | PeriodOptions,
    sites: Sequence[str] = (),
    *,
    timezone: str | None = None,
    limit: int | None = DEFAULT_LIMIT,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    imports: bool = True,
) -> Report:
    """Connect, build the report, disconnect; database failures become ReportError."""
    try:
        options = {"timezone": timezone, "limit": limit, "timeout_s": timeout_s}
        return asyncio.run(_report_from(conninfo, period, sites, imports=imports, **options))
    except psycopg.Error as error:
        raise ReportError(
            f"cannot read the report from the database: {first_line(error)}"
        ) from None
