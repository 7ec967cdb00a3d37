"""Reaching PostgreSQL: which database, its connection options, waiting for it at startup."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from picolytics.config import Config
from picolytics.errors import ConfigError, DatabaseUnavailableError, first_line
from picolytics.storage.embedded import embedded_database

T = TypeVar("T")

log = logging.getLogger(__name__)

# Without a connect timeout, a black-holed address hangs a connection attempt forever.
CONNECT_TIMEOUT_S = 5
_MAX_BACKOFF_S = 10.0
TCP_USER_TIMEOUT_MS = 30_000


def with_connection_options(conninfo: str) -> str:
    """Add a connect timeout, TCP keepalives and user timeout and a name, unless set."""
    try:
        given = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError as error:
        raise ConfigError(
            f"PGCONNSTRING (pgConnString) is not a valid connection string: {first_line(error)}"
        ) from None
    defaults: dict[str, str | int] = {
        "connect_timeout": CONNECT_TIMEOUT_S,
        "application_name": "picolytics",
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
        # Over TCP, sent data unacknowledged this long (ms) ends the connection (a
        # partition while a write is in flight, where keepalives do not apply).
        "tcp_user_timeout": TCP_USER_TIMEOUT_MS,
    }
    extra = {key: value for key, value in defaults.items() if key not in given}
    return make_conninfo(conninfo, **extra)


def describe(conninfo: str) -> str:
    """host:port/dbname for messages: never the password or the whole string."""
    try:
        parts = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return "<unparseable connection string>"
    host = str(parts.get("host") or "localhost")
    port = str(parts.get("port") or "5432")
    return f"{host}:{port}/{parts.get('dbname', '')}"


def wait_for_database(
    conninfo: str, attempts: int, *, sleep: Callable[[float], None] = time.sleep
) -> None:
    """Try to connect `attempts` times with capped exponential backoff, then give up."""
    delay = 0.5
    for attempt in range(1, attempts + 1):
        try:
            psycopg.connect(conninfo).close()
        except psycopg.OperationalError as error:
            reason = first_line(error)
            log.warning(
                "PostgreSQL at %s not reachable (attempt %d of %d): %s",
                describe(conninfo),
                attempt,
                attempts,
                reason,
            )
            if attempt == attempts:
                raise DatabaseUnavailableError(
                    f"cannot connect to PostgreSQL at {describe(conninfo)} after {attempts} "
                    f"attempt(s): {reason}"
                ) from None
            sleep(delay)
            delay = min(delay * 2, _MAX_BACKOFF_S)
        else:
            return


@contextlib.contextmanager
def database_conninfo(config: Config) -> Iterator[str]:
    """The configured database, or an embedded one started for the duration of the block."""
    if config.uses_embedded_database:
        log.info("no database configured: using the embedded PostgreSQL in %s", config.data_dir)
        with embedded_database(Path(config.data_dir)) as conninfo:
            yield with_connection_options(conninfo)
        return
    conninfo = with_connection_options(config.database_url())
    wait_for_database(conninfo, config.pg_conn_attempts)
    yield conninfo


def connected(
    conninfo: str,
    action: Callable[[psycopg.Connection[Any]], T],
    failure: Callable[[str], Exception],
) -> T:
    """Run `action` on a new connection (one transaction, committed when it returns); a
    database failure becomes `failure(first line of the error)`, without the chain, so
    no conninfo or password reaches a message."""
    try:
        with psycopg.connect(conninfo) as connection:
            return action(connection)
    except psycopg.Error as error:
        raise failure(first_line(error)) from None
