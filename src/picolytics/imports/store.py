"""An ImportBatch stored for one site in one transaction, and imports removed.

Storing (docs/imports.md, The rules): the site is locked (and made, when no event has
made it yet), the rows on or after the site's import cut (its first native day, or its
local today: storage/imported_days.py) are left out, the `imports` row is inserted,
its days are claimed in `imported_days` (an earlier import's rows on those days are
deleted first, so importing a file again replaces it and no day is ever owned twice;
an earlier import left with no day is deleted), and the rows go in by COPY. Either all
of it happens or none: `dry_run` does all of it and rolls back.

Sync psycopg, as the other administration commands (storage/sites_admin.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, Final, TypeVar

import psycopg

from picolytics.errors import ImportOptionError, ImportStoreError
from picolytics.imports.batch import ImportBatch, ImportedRow
from picolytics.imports.summary import ImportSummary
from picolytics.imports.tables import COLUMNS, TABLES, TableName
from picolytics.storage import database
from picolytics.storage.imported_days import SELECT_CUT
from picolytics.storage.sites_admin import NO_TABLES, unknown_site

Connection = psycopg.Connection[tuple[Any, ...]]
T = TypeVar("T")

SCHEMA_STATE: Final = "SELECT to_regclass('sites') IS NOT NULL, to_regclass('imports') IS NOT NULL"
INSERT_SITE: Final = "INSERT INTO sites (domain) VALUES (%s) ON CONFLICT (domain) DO NOTHING"
# The lock makes imports of one site, and their replacements, one after another.
SELECT_SITE: Final = "SELECT site_id FROM sites WHERE domain = %s FOR UPDATE"
SELECT_ZONE: Final = "SELECT timezone FROM sites WHERE domain = %s"
INSERT_IMPORT: Final = """
INSERT INTO imports (site_id, source, file_name, sha256, first_day, last_day)
VALUES (%s, %s, %s, %s, %s, %s)
RETURNING import_id
"""
# The days an earlier import owned, released for the new one.
RELEASE_DAYS: Final = """
DELETE FROM imported_days WHERE site_id = %s AND day = ANY(%s::date[])
RETURNING import_id
"""
CLAIM_DAYS: Final = """
INSERT INTO imported_days (site_id, day, import_id)
SELECT %s, day, %s FROM unnest(%s::date[]) AS day ORDER BY day
"""
# Each day belongs to one import, so these are exactly the released days' rows.
DELETE_ROWS_ON_DAYS: Final = {
    table: f"DELETE FROM {table} WHERE site_id = %s AND import_id = ANY(%s::integer[])"
    " AND day = ANY(%s::date[])"
    for table in TABLES
}
DELETE_ROWS_OF_IMPORTS: Final = {
    table: f"DELETE FROM {table} WHERE site_id = %s AND import_id = ANY(%s::integer[])"
    for table in TABLES
}
# Earlier imports that lost days: gone when they have none left, else their range
# shrinks to the days they still own.
DELETE_EMPTY_IMPORTS: Final = """
DELETE FROM imports i
WHERE i.site_id = %(site)s AND i.import_id = ANY(%(ids)s::integer[])
  AND NOT EXISTS (SELECT FROM imported_days d
                  WHERE d.site_id = i.site_id AND d.import_id = i.import_id)
RETURNING i.import_id
"""
SHRINK_IMPORTS: Final = """
UPDATE imports i SET first_day = d.first_day, last_day = d.last_day
FROM (SELECT import_id, min(day) AS first_day, max(day) AS last_day
      FROM imported_days WHERE site_id = %(site)s AND import_id = ANY(%(ids)s::integer[])
      GROUP BY import_id) d
WHERE i.site_id = %(site)s AND i.import_id = d.import_id
"""
COPY_ROWS: Final = {
    table: f"COPY {table} (site_id, import_id, day, {', '.join(COLUMNS[table])}) FROM STDIN"
    for table in TABLES
}
REMOVE_IMPORTS: Final = """
DELETE FROM imports
WHERE site_id = %(site)s AND (%(id)s::integer IS NULL OR import_id = %(id)s::integer)
RETURNING import_id
"""


@dataclass(frozen=True)
class _Cut:
    first_native_day: date | None
    today: date

    @property
    def day(self) -> date:
        """The first day left out."""
        return min(self.first_native_day or self.today, self.today)


def _check_schema(connection: Connection) -> None:
    row = connection.execute(SCHEMA_STATE).fetchone()
    has_sites, has_imports = row if row else (False, False)
    if not has_sites:
        raise ImportStoreError(NO_TABLES)
    if not has_imports:
        raise ImportStoreError("the database lacks the import tables: run `picolytics migrate`")


def _site(connection: Connection, domain: str) -> tuple[int, bool]:
    """The site's id, locked, and whether this import made it."""
    created = connection.execute(INSERT_SITE, (domain,)).rowcount == 1
    row = connection.execute(SELECT_SITE, (domain,)).fetchone()
    assert row is not None  # inserted or there, and locked: it stays
    return int(row[0]), created


def _left_out(days: set[date], cut: _Cut) -> tuple[int, int]:
    """How many of the days are on or after the first native day, and how many of the
    rest are from today on."""
    native = cut.first_native_day
    on_native = sum(1 for day in days if native is not None and day >= native)
    future = sum(1 for day in days if day >= cut.today and not (native and day >= native))
    return on_native, future


def _copy(
    connection: Connection, table: TableName, prefix: tuple[int, int], rows: Sequence[ImportedRow]
) -> None:
    with connection.cursor() as cursor, cursor.copy(COPY_ROWS[table]) as copy:
        for row in rows:
            copy.write_row(prefix + row)


def _replace(connection: Connection, site_id: int, days: list[date]) -> tuple[int, tuple[int, ...]]:
    """Release the days from earlier imports and delete those imports' rows on them;
    the number of days released and the earlier imports left with none (deleted)."""
    released = [row[0] for row in connection.execute(RELEASE_DAYS, (site_id, days))]
    if not released:
        return 0, ()
    earlier = sorted(set(released))
    for table in TABLES:
        connection.execute(DELETE_ROWS_ON_DAYS[table], (site_id, earlier, days))
    params = {"site": site_id, "ids": earlier}
    removed = tuple(sorted(row[0] for row in connection.execute(DELETE_EMPTY_IMPORTS, params)))
    connection.execute(SHRINK_IMPORTS, params)
    return len(released), removed


def _store(connection: Connection, domain: str, batch: ImportBatch, dry_run: bool) -> ImportSummary:
    _check_schema(connection)
    site_id, created = _site(connection, domain)
    found = connection.execute(SELECT_CUT, {"site": site_id}).fetchone()
    assert found is not None  # the site is locked
    cut = _Cut(*found)
    kept: dict[TableName, list[ImportedRow]] = {}
    dropped: set[date] = set()
    for table, rows in batch.rows.items():
        kept[table] = [row for row in rows if row[0] < cut.day]
        if len(kept[table]) < len(rows):
            dropped.update(row[0] for row in rows if row[0] >= cut.day)
    days = sorted({row[0] for rows in kept.values() for row in rows})
    on_native, future = _left_out(dropped, cut)
    import_id: int | None = None
    replaced = 0
    removed: tuple[int, ...] = ()
    if days:
        args = (site_id, batch.source, batch.file_name, batch.sha256, days[0], days[-1])
        row = connection.execute(INSERT_IMPORT, args).fetchone()
        assert row is not None
        import_id = int(row[0])
        replaced, removed = _replace(connection, site_id, days)
        connection.execute(CLAIM_DAYS, (site_id, import_id, days))
        for table in TABLES:
            if kept.get(table):
                _copy(connection, table, (site_id, import_id), kept[table])
    return ImportSummary(
        domain=domain,
        source=batch.source,
        file_name=batch.file_name,
        import_id=import_id,
        site_created=created and bool(days),
        rows={table: len(kept.get(table, ())) for table in TABLES},
        first_day=days[0] if days else None,
        last_day=days[-1] if days else None,
        days=len(days),
        days_replaced=replaced,
        imports_removed=removed,
        first_native_day=cut.first_native_day,
        native_days_left_out=on_native,
        today=cut.today,
        future_days_left_out=future,
        skipped=dict(batch.skipped),
        dry_run=dry_run,
    )


def store(
    connection: Connection, domain: str, batch: ImportBatch, *, dry_run: bool = False
) -> ImportSummary:
    """Store `batch` for the site `domain` (as sites.domain spells it) in one
    transaction; with `dry_run`, or when nothing is left to import, roll it back."""
    with connection.transaction():
        summary = _store(connection, domain, batch, dry_run)
        if dry_run or summary.import_id is None:
            raise psycopg.Rollback()  # a site made for nothing is not kept either
    return summary


def site_zone(connection: Connection, domain: str) -> str:
    """The site's time zone; UTC, every new site's, for a site not made yet."""
    row = connection.execute(SELECT_ZONE, (domain,)).fetchone()
    return str(row[0]) if row else "UTC"


def remove(connection: Connection, domain: str, import_id: int | None) -> list[int]:
    """Delete one import of the site (or, without an id, every one) with its rows; the
    ids removed."""
    with connection.transaction():
        _check_schema(connection)
        row = connection.execute(SELECT_SITE, (domain,)).fetchone()
        if row is None:
            raise unknown_site(connection, domain)
        site_id = int(row[0])
        params = {"site": site_id, "id": import_id}
        ids = sorted(int(found[0]) for found in connection.execute(REMOVE_IMPORTS, params))
        if import_id is not None and not ids:
            raise ImportOptionError(f"ID: {domain} has no import {import_id}")
        for table in TABLES:
            connection.execute(DELETE_ROWS_OF_IMPORTS[table], (site_id, ids))
    return ids


def connected(conninfo: str, action: Callable[[Connection], T]) -> T:
    """Run `action` on a new connection; a database failure becomes an ImportStoreError."""
    return database.connected(
        conninfo,
        action,
        lambda detail: ImportStoreError(f"cannot store the import in the database: {detail}"),
    )
