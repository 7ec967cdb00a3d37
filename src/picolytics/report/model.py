"""What a report is: its period of local days, its summary, days and tables (as
report/render.py shows them)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from decimal import Decimal
from typing import Any

from picolytics.errors import QueryError, ReportOptionError
from picolytics.stats import periods
from picolytics.stats.query import Period as StatsPeriod


def report_zone(name: str) -> tzinfo:
    """The zone of --timezone, or a clean option error."""
    try:
        return periods.zone(name, "--timezone")
    except QueryError as error:
        raise ReportOptionError(str(error)) from None


@dataclass(frozen=True)
class Period:
    """Whole local days, first to last inclusive, in `timezone` (None: the report's
    default zone, see build_report; UTC until then)."""

    first: date
    last: date
    timezone: str | None = None

    @property
    def zone(self) -> str:
        return self.timezone or "UTC"

    @property
    def start(self) -> datetime:
        return periods.day_start(self.first, report_zone(self.zone))

    @property
    def end(self) -> datetime:
        """Exclusive: 00:00 of the day after `last`, in the zone."""
        return periods.day_start(self.last + timedelta(days=1), report_zone(self.zone))

    @property
    def days(self) -> list[date]:
        return [self.first + timedelta(days=n) for n in range((self.last - self.first).days + 1)]

    def query_period(self) -> StatsPeriod:
        return StatsPeriod(self.start, self.end, self.zone)


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
    period: Period  # its timezone is the report's zone
    generated_at: datetime
    summary: Summary
    daily: tuple[Day, ...]  # every day of the period, zeros included
    tables: tuple[Table, ...]  # in the order of TABLES
    limit: int | None  # rows per table (None: all)
    imported_days: int = 0  # local days whose imported data is included (docs/imports.md)

    @property
    def timezone(self) -> str:
        return self.period.zone

    def table(self, name: str) -> Table:
        (found,) = [table for table in self.tables if table.name == name]
        return found
