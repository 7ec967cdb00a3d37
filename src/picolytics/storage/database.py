"""Reaching PostgreSQL: which database, its connection options, waiting for it at startup.

Every connection pins its search_path (SEARCH_PATH): queries call functions and
operators such as `unnest` and `lower` unqualified, and which one runs is decided by
the search_path, so no role's or database's setting, nor a schema named after the
user (`"$user"`), may change it. Pinning cannot stop an overload that matches the
argument types better (`public.unnest(text[])` beats `pg_catalog.unnest(anyarray)`
wherever public sits in the path), so an external database is also checked at
startup: a shadowing function or operator of a foreign role refuses the start, and a
schema on the path where every role may create objects is warned about (PostgreSQL 14
and older grant CREATE on `public` to PUBLIC).
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from picolytics.config import Config
from picolytics.errors import (
    ConfigError,
    DatabaseUnavailableError,
    UnsafeSchemaError,
    first_line,
)
from picolytics.storage.embedded import embedded_database

T = TypeVar("T")

log = logging.getLogger(__name__)

# Without a connect timeout, a black-holed address hangs a connection attempt forever.
CONNECT_TIMEOUT_S = 5
_MAX_BACKOFF_S = 10.0
TCP_USER_TIMEOUT_MS = 30_000
# public alone: pg_catalog, when not named, is searched before it (so a copy of a
# built-in with the same argument types never wins) while public stays the schema new
# tables go to (named first, pg_catalog would be, and migrations would fail). A
# deployment that keeps the tables in another schema sets its own
# `options=-c search_path=...` in PGCONNSTRING, which is then kept.
SEARCH_PATH = "public"
# The quoted fragments of libpq's parse errors, taken in pairs from the left.
_QUOTED = re.compile(r'"[^"]*"')

# The checks below run with pg_catalog alone on the path (the very functions and
# operators they look for cannot interfere) and get the pinned path as a parameter.
PATH_SCHEMAS = "SELECT pg_catalog.current_schemas(false)"
CATALOG_ONLY = "SET search_path = pg_catalog"
# Functions and operators in the path's schemas (other than pg_catalog) that share a
# name with a built-in, owned by neither the current user nor a superuser, and not
# part of an extension.
SHADOWING = """
SELECT object || ' (owner ' || pg_get_userbyid(owner) || ')'
FROM (
    SELECT p.oid::regprocedure::text, p.proowner, p.oid, 'pg_proc'::regclass
    FROM pg_proc p
    WHERE p.pronamespace <> 'pg_catalog'::regnamespace
      AND p.pronamespace::regnamespace::text = ANY(%(schemas)s::text[])
      AND EXISTS (SELECT 1 FROM pg_proc b
                  WHERE b.pronamespace = 'pg_catalog'::regnamespace AND b.proname = p.proname)
    UNION ALL
    SELECT o.oid::regoperator::text, o.oprowner, o.oid, 'pg_operator'::regclass
    FROM pg_operator o
    WHERE o.oprnamespace <> 'pg_catalog'::regnamespace
      AND o.oprnamespace::regnamespace::text = ANY(%(schemas)s::text[])
      AND EXISTS (SELECT 1 FROM pg_operator b
                  WHERE b.oprnamespace = 'pg_catalog'::regnamespace AND b.oprname = o.oprname)
) AS found (object, owner, objid, classid)
WHERE owner <> (SELECT oid FROM pg_roles WHERE rolname = current_user)
  AND NOT (SELECT rolsuper FROM pg_roles WHERE oid = owner)
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = found.classid AND d.objid = found.objid AND d.deptype = 'e')
ORDER BY 1
"""
# Schemas on the path in which every role may create objects.
OPEN_SCHEMAS = """
SELECT schema FROM unnest(%(schemas)s::text[]) AS schema
WHERE schema <> 'pg_catalog' AND has_schema_privilege('public', schema, 'CREATE')
"""


def with_connection_options(conninfo: str, setting: str = "PGCONNSTRING (pgConnString)") -> str:
    """Add a connect timeout, TCP keepalives and user timeout and a name, unless set; a
    string libpq cannot parse is a ConfigError naming `setting`."""
    try:
        given = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError as error:
        # libpq quotes the part it could not parse, which may be the password.
        reason = _QUOTED.sub(_hidden, first_line(error))
        raise ConfigError(f"{setting} is not a valid connection string: {reason}") from None
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
    options = str(given.get("options") or "")
    if "search_path" not in options:  # an operator's own search_path is kept
        extra["options"] = f"{options} -c search_path={SEARCH_PATH}".strip()
    return make_conninfo(conninfo, **extra)


def _hidden(quoted: re.Match[str]) -> str:
    """A quoted fragment of two or more characters hidden ("=" is kept)."""
    return quoted[0] if len(quoted[0]) <= 3 else '"…"'


def check_schema(conninfo: str) -> None:
    """Refuse a database where a foreign role's function or operator shadows a
    built-in on our search_path; warn when every role may create objects there."""
    try:
        with psycopg.connect(conninfo) as connection:
            row = connection.execute(PATH_SCHEMAS).fetchone()
            params = {"schemas": list(row[0]) if row else []}
            connection.execute(CATALOG_ONLY)
            shadowing = [str(row[0]) for row in connection.execute(SHADOWING, params)]
            open_schemas = [str(row[0]) for row in connection.execute(OPEN_SCHEMAS, params)]
    except psycopg.Error as error:
        raise DatabaseUnavailableError(
            f"cannot check the schema of {describe(conninfo)}: {first_line(error)}"
        ) from None
    if shadowing:
        raise UnsafeSchemaError(
            f"{describe(conninfo)}: these would run instead of PostgreSQL's own functions "
            f"or operators in picolytics' queries: {', '.join(shadowing)}; drop them, and "
            "revoke CREATE on the schema from other roles"
        )
    for schema in open_schemas:
        log.warning(
            "every role may create objects in schema %s of %s, and so shadow functions "
            "picolytics calls: run REVOKE CREATE ON SCHEMA %s FROM PUBLIC",
            schema,
            describe(conninfo),
            schema,
        )


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
    check_schema(conninfo)
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
