"""Shared parts of the database benchmarks (scripts/bench_query.py): the database to
fill, bulk-load steps timed one by one, and the indexes dropped during a load.

The database: PICOLYTICS_BENCH_DSN (a database that is emptied!) if set, else an
embedded PostgreSQL in a folder that is kept (and reused) or temporary (removed).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

Connection = psycopg.Connection[tuple[Any, ...]]


@contextmanager
def database(data_dir: Path | None) -> Iterator[str]:
    """A conninfo: PICOLYTICS_BENCH_DSN, or an embedded PostgreSQL in `data_dir` (kept)
    or in a temporary folder (removed afterwards)."""
    conninfo = os.environ.get("PICOLYTICS_BENCH_DSN", "")
    if conninfo:
        yield conninfo
        return
    from picolytics.storage.embedded import EmbeddedPostgres  # noqa: PLC0415 (only when embedded)

    keep = data_dir is not None
    folder = data_dir or Path(tempfile.mkdtemp(prefix="picolytics-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)
    server = EmbeddedPostgres(folder / "data")
    try:
        yield server.start()
    finally:
        server.stop()
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)


def run_steps(
    connection: Connection, steps: Sequence[tuple[str, str]], params: dict[str, Any]
) -> None:
    """Run each statement (with `params` when it names any), printing its time."""
    for label, statement in steps:
        began = time.perf_counter()
        cursor = connection.execute(statement, params if "%(" in statement else None)
        rows = f" ({cursor.rowcount:,} rows)" if cursor.rowcount > 0 else ""
        print(f"  {label}: {time.perf_counter() - began:.1f} s{rows}", flush=True)


def drop_indexes(connection: Connection, tables: Sequence[str]) -> list[tuple[str, str]]:
    """Drop every index and key of `tables` (faster bulk loads) and return the steps
    that rebuild them: (label, statement), keys first. Found in the catalog, so an
    index a later migration adds is rebuilt too."""
    constraints = connection.execute(
        "SELECT c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid) "
        "FROM pg_constraint c WHERE c.conrelid = ANY(%s::regclass[]) "
        "AND c.contype IN ('p', 'u') ORDER BY 1, 2",
        (list(tables),),
    ).fetchall()
    # Indexes of the tables themselves (a partitioned table's index covers its
    # partitions), not those backing a key.
    indexes = connection.execute(
        "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) FROM pg_index i "
        "WHERE i.indrelid = ANY(%s::regclass[]) AND NOT EXISTS "
        "(SELECT FROM pg_constraint c WHERE c.conindid = i.indexrelid) ORDER BY 1",
        (list(tables),),
    ).fetchall()
    for name, _ in indexes:
        connection.execute(f"DROP INDEX {name}")
    for table, name, _ in constraints:
        connection.execute(f"ALTER TABLE {table} DROP CONSTRAINT {name}")
    rebuild = [
        (f"{table} {name}", f"ALTER TABLE {table} ADD CONSTRAINT {name} {definition}")
        for table, name, definition in constraints
    ]
    # pg_get_indexdef says "ON ONLY events" (the parent alone): build every partition's.
    rebuild += [(name, definition.replace(" ON ONLY ", " ON ")) for name, definition in indexes]
    return rebuild


def estimated_events(conninfo: str) -> int:
    """The planner's estimate of the events already there (0 in a new database)."""
    with psycopg.connect(conninfo) as connection:
        row = connection.execute(
            "SELECT coalesce(sum(greatest(c.reltuples, 0)), 0)::bigint FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'events'::regclass"
        ).fetchone()
    return int(row[0]) if row else 0


def table_sizes(connection: Connection, names: Sequence[str]) -> dict[str, tuple[int, int]]:
    """Bytes on disk of each table: (heap + TOAST, its indexes), a partitioned table's
    partitions included; (0, 0) for a table that does not exist. Their sum is
    pg_total_relation_size."""
    sizes: dict[str, tuple[int, int]] = {}
    for name in names:
        row = connection.execute(
            "SELECT coalesce(sum(pg_table_size(r)), 0)::bigint, "
            "coalesce(sum(pg_indexes_size(r)), 0)::bigint FROM "
            "(SELECT to_regclass(%(t)s) AS r UNION ALL SELECT inhrelid::regclass FROM "
            "pg_inherits WHERE inhparent = to_regclass(%(t)s)) x WHERE r IS NOT NULL",
            {"t": name},
        ).fetchone()
        sizes[name] = (int(row[0]), int(row[1])) if row else (0, 0)
    return sizes
