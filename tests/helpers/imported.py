"""Imported rows written with plain SQL, as the store (imports/store.py) would, so the
query layer's imported path is tested apart from the importers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import psycopg

from picolytics.imports.tables import COLUMNS, TableName


def add_import(
    conninfo: str, site: str, rows: Mapping[TableName, Sequence[tuple[Any, ...]]]
) -> int:
    """One import of `rows` (each: its date, then the table's columns) owning its days;
    returns its id."""
    found = [row[0] for table_rows in rows.values() for row in table_rows]
    with psycopg.connect(conninfo) as connection:
        site_id = connection.execute(
            "INSERT INTO sites (domain) VALUES (%s) ON CONFLICT (domain) DO UPDATE"
            " SET domain = excluded.domain RETURNING site_id",
            (site,),
        ).fetchone()[0]  # type: ignore[index]
        import_id = connection.execute(
            "INSERT INTO imports (site_id, source, file_name, sha256, first_day, last_day)"
            " VALUES (%s, 'plausible', 'test.zip', 'x', %s, %s) RETURNING import_id",
            (site_id, min(found), max(found)),
        ).fetchone()[0]  # type: ignore[index]
        connection.execute(
            "INSERT INTO imported_days (site_id, day, import_id)"
            " SELECT %s, day, %s FROM unnest(%s::date[]) AS day"
            " ON CONFLICT (site_id, day) DO UPDATE SET import_id = excluded.import_id",
            (site_id, import_id, sorted(set(found))),
        )
        for table, table_rows in rows.items():
            columns = ("day", *COLUMNS[table])
            marks = ", ".join(["%s"] * (len(columns) + 2))
            connection.cursor().executemany(
                f"INSERT INTO {table} (site_id, import_id, {', '.join(columns)}) VALUES ({marks})",
                [(site_id, import_id, *row) for row in table_rows],
            )
    return int(import_id)
