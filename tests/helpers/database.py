"""A real PostgreSQL for the tests: the embedded server by default, or the server
named by PICOLYTICS_TEST_DSN (a conninfo with the right to create databases).

A pytest plugin (tests/conftest.py registers it): the fixtures below are available to
every test module. The plain functions are imported from here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from picolytics.storage import migrate
from picolytics.storage.embedded import EmbeddedPostgres

TEST_DSN = "PICOLYTICS_TEST_DSN"


def reachable_tempdir(prefix: str) -> Path:
    """A temporary folder the embedded server's unprivileged user can enter
    (pytest's tmp_path is private to root, so PostgreSQL could not use it)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path


@contextlib.contextmanager
def embedded_cluster(prefix: str) -> Iterator[str]:
    """A PostgreSQL server of its own in a fresh folder; yields a superuser conninfo."""
    folder = reachable_tempdir(prefix)
    server = EmbeddedPostgres(folder)
    conninfo = server.start()
    try:
        yield make_conninfo(conninfo, dbname="postgres")
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def new_database(admin_conninfo: str) -> Iterator[str]:
    """An empty database of its own on the admin's server; dropped afterwards."""
    name = f"picolytics_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_conninfo, autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_conninfo(admin_conninfo, dbname=name)
    finally:
        with psycopg.connect(admin_conninfo, autocommit=True) as connection:
            connection.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def reader_login(admin_conninfo: str, database: str) -> Iterator[str]:
    """A login role that is a member of picolytics_reader and nothing else; yields its
    conninfo to `database`, drops the role afterwards."""
    name = f"dash_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_conninfo, autocommit=True) as connection:
        connection.execute(
            sql.SQL("CREATE ROLE {} LOGIN IN ROLE picolytics_reader").format(sql.Identifier(name))
        )
    try:
        yield make_conninfo(database, user=name)
    finally:
        with psycopg.connect(admin_conninfo, autocommit=True) as connection:
            connection.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def query(conninfo: str, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(conninfo) as connection:
        return connection.execute(sql, params).fetchall()


def wait_for_rows(
    conninfo: str,
    sql: str,
    done: Callable[[list[tuple[Any, ...]]], bool] = bool,
    timeout_s: float = 15,
) -> list[tuple[Any, ...]]:
    """Poll `sql` until done(rows) holds (by default: some rows); return the rows."""
    deadline = time.monotonic() + timeout_s
    while not done(rows := query(conninfo, sql)):
        assert time.monotonic() < deadline, f"{sql}: still {rows}"
        time.sleep(0.05)
    return rows


def wait_for_count(conninfo: str, sql: str, expected: int, timeout_s: float = 10) -> None:
    """Poll a `SELECT count(...)` until it reaches `expected`."""
    wait_for_rows(conninfo, sql, lambda rows: rows[0][0] >= expected, timeout_s)


# -- fixtures --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def admin_conninfo() -> Iterator[str]:
    """A superuser conninfo: PICOLYTICS_TEST_DSN if set, else an embedded server
    started once for the whole session."""
    external = os.environ.get(TEST_DSN)
    if external:
        yield external
        return
    with embedded_cluster("picolytics-tests-") as conninfo:
        yield conninfo


@pytest.fixture
def fresh_database(admin_conninfo: str) -> Iterator[str]:
    """An empty database of its own for one test; dropped afterwards."""
    with new_database(admin_conninfo) as conninfo:
        yield conninfo


@pytest.fixture(scope="module")
def module_database(admin_conninfo: str) -> Iterator[str]:
    """A migrated database shared by the tests of one module that only read or reject."""
    with new_database(admin_conninfo) as conninfo:
        migrate.apply(conninfo)
        yield conninfo


@pytest.fixture
def migrated_database(fresh_database: str) -> str:
    """A fresh database with every migration applied."""
    migrate.apply(fresh_database)
    return fresh_database
