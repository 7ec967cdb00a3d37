"""Where statistics are read from: the read connection (PGREADCONNSTRING), for
example a streaming replica, or else the primary.

The report, the Stats API and the dashboard's numbers only read, through the query
layer's READ ONLY transactions (stats/engine.py), so a hot standby can answer them.
Everything that writes stays on the primary: ingest, rollups, maintenance, prune,
logins, setup links, shared links, and finding who asks the Stats API (a dashboard
session records its last use, and a revoked key must fail at once, not after the
replication lag; api/primary_auth.py).

- `read_conninfo` is the conninfo those readers connect with. It only parses, so
  every server process (a worker, too) derives the same one; a string libpq cannot
  parse is a ConfigError naming the setting.
- `check_read_database` runs once at startup: the read connection must answer within
  PGCONNATTEMPTS, pass the primary's own schema check (storage/database.py) and hold
  picolytics' schema. A schema behind this version's migrations is only a warning (a
  replica that has not replayed them yet), and so is the primary itself named again,
  since reads would not leave it then.
- `reads_conninfo` is what a reading command (`picolytics report`) connects to: the
  read connection alone when one is set (the primary is not reached at all), else
  the primary as every command reaches it.

Messages name the setting and host:port/dbname, never the password.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import psycopg

from picolytics.config import Config
from picolytics.errors import (
    DatabaseUnavailableError,
    ReadDatabaseError,
    UnsafeSchemaError,
    first_line,
)
from picolytics.storage import migrate
from picolytics.storage.database import (
    check_schema,
    database_conninfo,
    describe,
    wait_for_database,
    with_connection_options,
)

log = logging.getLogger(__name__)

SETTING = "PGREADCONNSTRING (pgReadConnString)"
# Which server answers: a replica made by pg_basebackup shares its primary's system
# identifier, but no two servers share a postmaster's start time as well.
SERVER_IDENTITY = """
SELECT (SELECT system_identifier FROM pg_control_system()),
       pg_postmaster_start_time(), current_database(), pg_is_in_recovery()
"""
SCHEMA_VERSION = "SELECT coalesce(max(version), 0) FROM schema_migrations"


def read_conninfo(config: Config, primary: str) -> str:
    """The conninfo the readers use: PGREADCONNSTRING with picolytics' connection
    options, or `primary` when it is empty."""
    if not config.pg_read_conn_string:
        return primary
    return with_connection_options(config.pg_read_conn_string, SETTING)


def named(conninfo: str) -> str:
    """The read connection in a message: the setting and host:port/dbname."""
    return f"the read connection {SETTING} at {describe(conninfo)}"


def _identity(conninfo: str) -> tuple[Any, ...]:
    with psycopg.connect(conninfo) as connection:
        row = connection.execute(SERVER_IDENTITY).fetchone()
    assert row is not None  # one row, always
    return tuple(row)


def _schema_version(conninfo: str) -> int | None:
    """The newest migration applied there, or None without picolytics' schema."""
    with psycopg.connect(conninfo) as connection:
        found = connection.execute(migrate.MIGRATIONS_TABLE_EXISTS).fetchone()
        if not (found and found[0]):
            return None
        row = connection.execute(SCHEMA_VERSION).fetchone()
    return int(row[0]) if row else 0


def _check_schema_version(reads: str) -> None:
    version = _schema_version(reads)
    if version is None or version == 0:
        raise ReadDatabaseError(
            f"{named(reads)} holds no picolytics schema (no migrations applied there): "
            "point it at a replica of picolytics' database"
        )
    newest = max((migration.version for migration in migrate.discover()), default=0)
    if version < newest:
        log.warning(
            "%s has migrations up to %04d, this picolytics up to %04d: a replica that has "
            "not replayed them yet answers from an older schema",
            named(reads),
            version,
            newest,
        )


def check_read_database(config: Config, primary: str | None) -> str:
    """At startup: reach the read connection, check its schema, and say what it is;
    return its conninfo (`primary`'s when none is set). `primary` None: not compared."""
    reads = read_conninfo(config, primary or "")
    if not config.pg_read_conn_string:
        return reads
    try:
        wait_for_database(reads, config.pg_conn_attempts)
        check_schema(reads)
        _check_schema_version(reads)
        identity = _identity(reads)
        same = primary is not None and _identity(primary) == identity
    except (DatabaseUnavailableError, UnsafeSchemaError) as error:
        raise type(error)(f"{SETTING}: {error}") from None
    except psycopg.Error as error:
        raise DatabaseUnavailableError(
            f"cannot check {named(reads)}: {first_line(error)}"
        ) from None
    if same:
        log.warning(
            "%s reaches the primary itself: statistics are read from the primary",
            named(reads),
        )
    else:
        standby = "a standby in recovery" if identity[3] else "a server that is not in recovery"
        log.info("statistics are read from %s, %s", named(reads), standby)
    return reads


@contextlib.contextmanager
def reads_conninfo(config: Config) -> Iterator[str]:
    """A reading command's database: the read connection alone, checked, when one is
    set; otherwise the primary, as `database_conninfo` gives it."""
    if not config.pg_read_conn_string:
        with database_conninfo(config) as conninfo:
            yield conninfo
        return
    yield check_read_database(config, None)
