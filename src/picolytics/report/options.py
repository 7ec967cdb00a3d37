"""The report's command-line options: the period (`--days`, `--from`, `--to`) and the
sites (`--site`), checked before the database is asked anything."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

from picolytics.errors import ReportOptionError
from picolytics.report.model import Period
from picolytics.stats.query import MAX_PERIOD_DAYS

DEFAULT_DAYS = 7
MAX_DAYS = MAX_PERIOD_DAYS
DEFAULT_LIMIT = 10


def _parse_date(flag: str, text: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise ReportOptionError(
            f"{flag}: {text!r} is not a valid date (expected YYYY-MM-DD, e.g. 2025-03-31)"
        ) from None


def _span(start: date, end: date) -> Period:
    if start > end:
        raise ReportOptionError(f"--from {start} is after --to {end}")
    if (end - start).days + 1 > MAX_DAYS:
        raise ReportOptionError(f"--from/--to: more than {MAX_DAYS} days")
    return Period(start, end)


@dataclass(frozen=True)
class PeriodOptions:
    """`--days N` (ending today) or `--from D [--to D]` (--to: today), checked as far as
    they can be without knowing today, which is a local day of the report's zone."""

    days: int | None = None
    first: str | None = None
    last: str | None = None
    _dates: tuple[date | None, date | None] = field(
        default=(None, None), init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if self.days is not None and (self.first is not None or self.last is not None):
            raise ReportOptionError(
                "--days cannot be combined with --from/--to; use one or the other"
            )
        if self.first is None:
            if self.last is not None:
                raise ReportOptionError("--to needs --from (or use --days N for the last N days)")
            count = DEFAULT_DAYS if self.days is None else self.days
            if not 1 <= count <= MAX_DAYS:
                raise ReportOptionError(f"--days: {count} is not between 1 and {MAX_DAYS}")
            return
        start = _parse_date("--from", self.first)
        end = None if self.last is None else _parse_date("--to", self.last)
        if end is not None:
            _span(start, end)
        object.__setattr__(self, "_dates", (start, end))

    def resolve(self, today: date) -> Period:
        start, end = self._dates
        if start is None:
            count = DEFAULT_DAYS if self.days is None else self.days
            return Period(today - timedelta(days=count - 1), today)
        return _span(start, today if end is None else end)


def resolve_period(days: int | None, first: str | None, last: str | None, today: date) -> Period:
    """The period of `--days N` (ending today) or `--from D [--to D]` (--to: today)."""
    return PeriodOptions(days, first, last).resolve(today)
