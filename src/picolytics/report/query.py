"""`picolytics report`: the numbers of a period, read from the reporting views (the
queries are in report/sql.py). The time grows with the traffic in the period, not with
the table.

A period is whole UTC days, `first` to `last` inclusive: [first 00:00, last+1 00:00).
All queries run in one read-only REPEATABLE READ transaction: one consistent snapshot.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import IsolationLevel

from picolytics.errors import NoReportDataError, ReportError, ReportOptionError, first_line
from picolytics.report.sql import (
    PAGEVIEWS_PER_DAY,
    SCHEMA_STATE,
    SELECT_SITES,
    SUMMARY,
    TABLE_QUERIES,
    VISITS_PER_DAY,
)

DEFAULT_DAYS = 7
MAX_DAYS = 3660
DEFAULT_LIMIT = 10


@dataclass(frozen=True)
class Period:
    """Whole UTC days, first to last inclusive."""

    first: date
    last: date

    @property
    def start(self) -> datetime:
        return datetime.combine(self.first, time(), UTC)

    @property
    def end(self) -> datetime:
        """Exclusive: 00:00 UTC of the day after `last`."""
        return datetime.combine(self.last + timedelta(days=1), time(), UTC)

    @property
    def days(self) -> list[date]:
        return [self.first + timedelta(days=n) for n in range((self.last - self.first).days + 1)]


@dataclass(frozen=True)
class Summary:
    visitors: int
    visits: int
    pageviews: int
    bounces: int
    bounce_rate: Decimal | None  # percent of visits; None without visits
    visit_duration_s: Decimal | None  # average seconds per visit
    pages_per_visit: Decimal | None
    bot_hits: int


@dataclass(frozen=True)
class Day:
    day: date
    pageviews: int
    visits: int
    visitors: int


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]


@dataclass(frozen=True)
class Report:
    sites: tuple[str, ...]  # the sites reported on, together
    all_sites: bool  # no --site given: every site of the database
    period: Period
    generated_at: datetime
    summary: Summary
    daily: tuple[Day, ...]  # every day of the period, zeros included
    tables: tuple[Table, ...]  # in the order of TABLE_QUERIES
    limit: int | None  # rows per table (None: all)

    def table(self, name: str) -> Table:
        (found,) = [table for table in self.tables if table.name == name]
        return found


def _parse_date(flag: str, text: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise ReportOptionError(
            f"{flag}: {text!r} is not a valid date (expected YYYY-MM-DD, e.g. 2025-03-31)"
        ) from None


def resolve_period(days: int | None, first: str | None, last: str | None, today: date) -> Period:
    """The period of `--days N` (ending today) or `--from D [--to D]` (--to: today)."""
    if days is not None and (first is not None or last is not None):
        raise ReportOptionError("--days cannot be combined with --from/--to; use one or the other")
    if first is None:
        if last is not None:
            raise ReportOptionError("--to needs --from (or use --days N for the last N days)")
        count = DEFAULT_DAYS if days is None else days
        if not 1 <= count <= MAX_DAYS:
            raise ReportOptionError(f"--days: {count} is not between 1 and {MAX_DAYS}")
        return Period(today - timedelta(days=count - 1), today)
    start = _parse_date("--from", first)
    end = today if last is None else _parse_date("--to", last)
    if start > end:
        raise ReportOptionError(f"--from {start} is after --to {end}")
    if (end - start).days + 1 > MAX_DAYS:
        raise ReportOptionError(f"--from/--to: more than {MAX_DAYS} days")
    return Period(start, end)


def normalise_site(name: str) -> str:
    """Compare like the tracked domains: lowercase, IDNA, without "www."."""
    domain = name.strip().lower().rstrip(".").removeprefix("www.")
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return domain


Connection = psycopg.Connection[tuple[Any, ...]]


def _choose_sites(known: list[str], wanted: Sequence[str]) -> tuple[str, ...]:
    if not known:
        raise NoReportDataError(
            "nothing to report: the database has no sites yet (no event has been recorded)"
        )
    if not wanted:
        return tuple(known)
    chosen = tuple(dict.fromkeys(normalise_site(site) for site in wanted))
    unknown = [site for site in chosen if site not in known]
    if unknown:
        listed = ", ".join(known[:10]) + (f" and {len(known) - 10} more" if len(known) > 10 else "")
        raise ReportOptionError(
            f"--site: no site {', '.join(map(repr, unknown))} in the database (sites: {listed})"
        )
    return chosen


def _check_schema(connection: Connection) -> None:
    row = connection.execute(SCHEMA_STATE).fetchone()
    has_sites, has_views = row if row else (False, False)
    if not has_sites:
        raise NoReportDataError(
            "nothing to report: the database has no picolytics tables yet "
            "(run `picolytics migrate`, or `picolytics serve` to start collecting)"
        )
    if not has_views:
        raise ReportError("the database lacks the reporting views: run `picolytics migrate` first")


def _daily(connection: Connection, period: Period, params: dict[str, Any]) -> tuple[Day, ...]:
    pageviews: dict[date, int] = dict(connection.execute(PAGEVIEWS_PER_DAY, params).fetchall())
    visits = {day: (n, v) for day, n, v in connection.execute(VISITS_PER_DAY, params)}
    return tuple(Day(day, pageviews.get(day, 0), *visits.get(day, (0, 0))) for day in period.days)


def build_report(
    connection: Connection,
    period: Period,
    sites: Sequence[str] = (),
    *,
    limit: int | None = DEFAULT_LIMIT,
    now: datetime | None = None,
) -> Report:
    """Run every query in one read-only snapshot and assemble the report."""
    connection.isolation_level = IsolationLevel.REPEATABLE_READ
    connection.read_only = True
    with connection.transaction():
        _check_schema(connection)
        known = [domain for (domain,) in connection.execute(SELECT_SITES)]
        chosen = _choose_sites(known, sites)
        params: dict[str, Any] = {
            "start": period.start,
            "end": period.end,
            "first": period.first,
            "last": period.last,
            "sites": list(chosen),
            "limit": limit,
        }
        summary_row = connection.execute(SUMMARY, params).fetchone()
        assert summary_row is not None  # an aggregate without GROUP BY: one row
        daily = _daily(connection, period, params)
        tables = []
        for name, query in TABLE_QUERIES:
            cursor = connection.execute(query, params)
            columns = tuple(column.name for column in cursor.description or ())
            tables.append(Table(name, columns, tuple(cursor.fetchall())))
    visitors, visits, bounces, bounce_rate, duration, pages_per_visit = summary_row
    bots = next(table for table in tables if table.name == "bots")
    summary = Summary(
        visitors=visitors,
        visits=visits,
        pageviews=sum(day.pageviews for day in daily),
        bounces=bounces,
        bounce_rate=bounce_rate,
        visit_duration_s=duration,
        pages_per_visit=pages_per_visit,
        bot_hits=sum(hits for _, hits in bots.rows),
    )
    return Report(
        sites=chosen,
        all_sites=not sites,
        period=period,
        generated_at=now or datetime.now(UTC),
        summary=summary,
        daily=daily,
        tables=tuple(tables),
        limit=limit,
    )


def report_from(
    conninfo: str,
    period: Period,
    sites: Sequence[str] = (),
    *,
    limit: int | None = DEFAULT_LIMIT,
) -> Report:
    """Connect, build the report, disconnect; database failures become ReportError."""
    try:
        with psycopg.connect(conninfo) as connection:
            return build_report(connection, period, sites, limit=limit)
    except psycopg.Error as error:
        raise ReportError(
            f"cannot read the report from the database: {first_line(error)}"
        ) from None
