"""Test fixtures on a real PostgreSQL: the embedded server by default, or the server
named by PICOLYTICS_TEST_DSN (a conninfo with the right to create databases)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from picolytics.storage import migrate
from picolytics.storage.embedded import EmbeddedPostgres


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


@pytest.fixture(scope="session")
def admin_conninfo() -> Iterator[str]:
    external = os.environ.get("PICOLYTICS_TEST_DSN")
    if external:
        yield external
        return
    with embedded_cluster("picolytics-tests-") as conninfo:
        yield conninfo


@contextlib.contextmanager
def new_database(admin_conninfo: str) -> Iterator[str]:
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
