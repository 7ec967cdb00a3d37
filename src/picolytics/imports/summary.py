"""What an import did (or, with --dry-run, would do), and how `picolytics import`
says it: one line, and a second for what was left out."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from picolytics.imports.tables import TableName


@dataclass(frozen=True)
class ImportSummary:
    """The outcome of storing one ImportBatch for one site."""

    domain: str
    source: str
    file_name: str
    import_id: int | None  # None: nothing was left to import, so no import was made
    site_created: bool  # the site did not exist: the import made it
    rows: dict[TableName, int]  # rows stored per table
    first_day: date | None
    last_day: date | None
    days: int  # days the import owns
    days_replaced: int  # of those, days an earlier import owned (its rows there deleted)
    imports_removed: tuple[int, ...]  # earlier imports left without days, deleted
    first_native_day: date | None  # the site's, when it has native data
    native_days_left_out: int  # days on or after the first native day
    today: date  # the site's local today: that day and later are left out too
    future_days_left_out: int  # days from today on, before any native day
    skipped: dict[str, int] = field(default_factory=dict)  # what the reader left out
    dry_run: bool = False

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())


def _days(count: int) -> str:
    return f"{count} day{'' if count == 1 else 's'}"


def lines(summary: ImportSummary) -> list[str]:
    """The summary for a terminal: the first line says what was (or would be) stored."""
    verb = "would import" if summary.dry_run else "imported"
    site = f"{summary.domain} (new site)" if summary.site_created else summary.domain
    if summary.import_id is None:
        head = f"{site}: nothing to import from {summary.file_name}"
    else:
        head = (
            # A dry run's id is given back with its transaction: name none.
            f"{site}: {verb} {summary.file_name}"
            + ("" if summary.dry_run else f" as import {summary.import_id}")
            + f" ({summary.source}): {summary.total_rows} rows,"
            f" {_days(summary.days)} {summary.first_day}..{summary.last_day}"
        )
        if summary.days_replaced:
            head += f", {_days(summary.days_replaced)} replaced"
        if summary.imports_removed:
            removed = ", ".join(str(n) for n in summary.imports_removed)
            head += f" (import {removed} {'is' if len(summary.imports_removed) == 1 else 'are'}"
            head += " now empty: removed)"
    notes = []
    if summary.native_days_left_out:
        notes.append(
            f"{_days(summary.native_days_left_out)} on or after the first native day"
            f" {summary.first_native_day} left out"
        )
    if summary.future_days_left_out:
        notes.append(
            f"{_days(summary.future_days_left_out)} from today ({summary.today}) on left out"
        )
    notes += [f"{count} {what} skipped" for what, count in sorted(summary.skipped.items())]
    if summary.dry_run:
        notes.append("dry run: nothing was changed")
    return [head] + (["; ".join(notes)] if notes else [])
