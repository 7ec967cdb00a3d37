"""Which `lower` or `unnest` runs is not up to other roles: picolytics' connections pin
their search_path (`public`, so pg_catalog is searched first), and a database where a
foreign role's function would still win by a better argument match is refused at
startup.

A test role stands for a role that may create objects in `public` (every role on
PostgreSQL 14 and older); the shadowing functions it creates return a marker, so a
call that reaches them is seen.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from picolytics.config import Config
from picolytics.errors import UnsafeSchemaError
from picolytics.storage import migrate
from picolytics.storage.database import check_schema, database_conninfo, with_connection_options

SHADOW_LOWER = """
CREATE FUNCTION public.lower(text) RETURNS text LANGUAGE sql AS $$ SELECT 'shadowed' $$
"""
# A better match than pg_catalog.unnest(anyarray) for a text[] argument, so the
# search_path's order does not matter: only the startup check stops it.
SHADOW_UNNEST = """
CREATE FUNCTION public.unnest(text[]) RETURNS SETOF text LANGUAGE sql
AS $$ SELECT 'shadowed' $$
"""


@pytest.fixture
def intruder(fresh_database: str, admin_conninfo: str) -> Iterator[str]:
    """A login role that may create objects in `public` of the fresh database; yields
    its conninfo there."""
    name = f"intruder_{uuid.uuid4().hex[:10]}"
    role = sql.Identifier(name)
    with psycopg.connect(admin_conninfo, autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE ROLE {} LOGIN").format(role))
    with psycopg.connect(fresh_database, autocommit=True) as connection:
        connection.execute(sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(role))
    try:
        yield make_conninfo(fresh_database, user=name)
    finally:
        with psycopg.connect(fresh_database, autocommit=True) as connection:
            connection.execute(sql.SQL("DROP OWNED BY {}").format(role))
        with psycopg.connect(admin_conninfo, autocommit=True) as connection:
            connection.execute(sql.SQL("DROP ROLE {}").format(role))


def one(conninfo: str, query: str) -> object:
    with psycopg.connect(conninfo) as connection:
        row = connection.execute(query).fetchone()
    assert row is not None
    return row[0]


def test_a_shadowing_function_is_not_called_whatever_the_database_search_path(
    fresh_database: str, intruder: str
) -> None:
    with psycopg.connect(intruder, autocommit=True) as connection:
        connection.execute(SHADOW_LOWER)
    # The database's own setting puts public first (a careless or hostile owner).
    database = conninfo_to_dict(fresh_database)["dbname"]
    with psycopg.connect(fresh_database, autocommit=True) as connection:
        connection.execute(
            sql.SQL("ALTER DATABASE {} SET search_path = public, pg_catalog").format(
                sql.Identifier(str(database))
            )
        )
    assert one(fresh_database, "SELECT lower('ABC')") == "shadowed"  # the attack works
    pinned = with_connection_options(fresh_database)
    assert one(pinned, "SHOW search_path") == "public"
    assert one(pinned, "SELECT lower('ABC')") == "abc"  # pg_catalog wins


def test_a_schema_named_after_the_user_is_not_searched(fresh_database: str) -> None:
    """The default path starts with "$user": a schema of that name would hide `public`'s
    tables and functions."""
    user = str(one(fresh_database, "SELECT current_user"))
    with psycopg.connect(fresh_database, autocommit=True) as connection:
        connection.execute("CREATE TABLE public.marker (side text)")
        connection.execute("INSERT INTO public.marker VALUES ('public')")
        connection.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(user)))
        connection.execute(
            sql.SQL("CREATE TABLE {}.marker AS SELECT 'shadow' AS side").format(
                sql.Identifier(user)
            )
        )
    assert one(fresh_database, "SELECT side FROM marker") == "shadow"
    assert one(with_connection_options(fresh_database), "SELECT side FROM marker") == "public"


def test_an_operators_own_search_path_is_kept(fresh_database: str) -> None:
    given = make_conninfo(fresh_database, options="-c search_path=pg_catalog,elsewhere")
    assert one(with_connection_options(given), "SHOW search_path") == "pg_catalog,elsewhere"
    other = make_conninfo(fresh_database, options="-c work_mem=8MB")
    pinned = with_connection_options(other)
    assert one(pinned, "SHOW search_path") == "public"
    assert one(pinned, "SHOW work_mem") == "8MB"


def test_a_better_matching_overload_wins_despite_the_path_so_startup_refuses_it(
    fresh_database: str, intruder: str
) -> None:
    pinned = with_connection_options(fresh_database)
    check_schema(pinned)  # clean: nothing to refuse
    with psycopg.connect(intruder, autocommit=True) as connection:
        connection.execute(SHADOW_UNNEST)
    # Why pinning alone is not enough: the exact match beats pg_catalog's anyarray.
    assert one(pinned, "SELECT unnest(ARRAY['a']::text[])") == "shadowed"
    with pytest.raises(UnsafeSchemaError, match=r"unnest\(text\[\]\) \(owner intruder_"):
        check_schema(pinned)
    config = Config(pg_conn_string=fresh_database, pg_conn_attempts=1)
    with pytest.raises(UnsafeSchemaError), database_conninfo(config):
        pass


def test_a_shadowing_operator_is_refused(fresh_database: str, intruder: str) -> None:
    with psycopg.connect(intruder, autocommit=True) as connection:
        connection.execute(
            "CREATE FUNCTION public.always(text, varchar) RETURNS boolean "
            "LANGUAGE sql AS $$ SELECT true $$"
        )
        connection.execute(
            "CREATE OPERATOR public.= (LEFTARG = text, RIGHTARG = varchar, FUNCTION = always)"
        )
    with pytest.raises(UnsafeSchemaError, match=r"=\(text,character varying\)"):
        check_schema(with_connection_options(fresh_database))


def test_functions_of_the_owner_and_of_superusers_are_allowed(fresh_database: str) -> None:
    with psycopg.connect(fresh_database, autocommit=True) as connection:
        connection.execute(SHADOW_LOWER)  # the test's user is a superuser
    check_schema(with_connection_options(fresh_database))


def test_a_schema_every_role_may_create_in_is_warned_about(
    fresh_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    pinned = with_connection_options(fresh_database)
    with caplog.at_level(logging.WARNING):
        check_schema(pinned)
    assert "REVOKE CREATE ON SCHEMA" not in caplog.text
    with psycopg.connect(fresh_database, autocommit=True) as connection:
        connection.execute("GRANT CREATE ON SCHEMA public TO PUBLIC")  # PostgreSQL <= 14
    with caplog.at_level(logging.WARNING):
        check_schema(pinned)
    assert "every role may create objects in schema public" in caplog.text
    assert "REVOKE CREATE ON SCHEMA public FROM PUBLIC" in caplog.text


def test_migrations_through_the_pinned_path_create_their_tables_in_public(
    fresh_database: str,
) -> None:
    """Named first, pg_catalog would be where CREATE TABLE puts a table."""
    pinned = with_connection_options(fresh_database)
    assert one(pinned, "SELECT current_schema()") == "public"
    assert migrate.apply(pinned)
    assert one(fresh_database, "SELECT to_regclass('public.sites') IS NOT NULL") is True
