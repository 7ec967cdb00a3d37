"""What a reader of another tool's export hands to the store: the rows of the ten
imported tables, already checked, and what it skipped (docs/imports.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Literal

from picolytics.imports.tables import TableName

Source = Literal["plausible", "goatcounter"]

# One row of an imported table: its date, then its columns in tables.COLUMNS order
# (text as str, counts and seconds as int).
ImportedRow = tuple[date, *tuple[str | int, ...]]


@dataclass(slots=True)
class ImportBatch:
    """Everything one file (or folder, or zip) holds, ready to store in one transaction.

    `sha256` identifies the input's bytes; `skipped` counts what was left out and why
    ("bot rows": 12), for the summary."""

    source: Source
    file_name: str
    sha256: str
    rows: dict[TableName, list[ImportedRow]] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)

    def days(self) -> tuple[date, date] | None:
        """The first and last day of any row, or None when there is none."""
        found = [row[0] for rows in self.rows.values() for row in rows]
        return (min(found), max(found)) if found else None
