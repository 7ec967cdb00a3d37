"""The embedded server's roles and database: picolytics connects as APP_ROLE, which
owns the database and everything in it but is not a superuser (storage/embedded.py
says why). Run at every start, so data folders from before APP_ROLE existed get it,
and the role takes over the objects the superuser created there.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

DATABASE = "picolytics"
APP_ROLE = "picolytics"
READER_ROLE = "picolytics_reader"  # migrations grant to it; APP_ROLE may not create roles
CREATE_ROLE = "CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE"
# What the superuser owns in the database's own schemas (data folders from before
# APP_ROLE): relations (their indexes and column sequences follow them) and routines.
# OID 10 is the bootstrap superuser; extension members stay with their extension.
SUPERUSER_OBJECTS = """
SELECT CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                      WHEN 'S' THEN 'SEQUENCE' WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END,
       n.nspname, c.relname, NULL
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relowner = 10 AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
  AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND (d.deptype = 'e' OR c.relkind = 'S'
                                           AND d.deptype IN ('a', 'i')))
UNION ALL
SELECT 'ROUTINE', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE p.proowner = 10 AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                  AND d.objid = p.oid AND d.deptype = 'e')
"""


def prepare_app_database(admin_conninfo: str, database_conninfo: str) -> None:
    """Create APP_ROLE and READER_ROLE if missing, give DATABASE to APP_ROLE (creating
    it if missing), and hand it what the superuser owns there. `admin_conninfo` is the
    superuser's on the server's `postgres` database, `database_conninfo` on DATABASE."""
    app, database = sql.Identifier(APP_ROLE), sql.Identifier(DATABASE)
    with psycopg.connect(admin_conninfo, autocommit=True) as connection:
        for role, create in ((APP_ROLE, CREATE_ROLE), (READER_ROLE, "CREATE ROLE {} NOLOGIN")):
            found = connection.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
            if found.fetchone() is None:
                connection.execute(sql.SQL(create).format(sql.Identifier(role)))
        exists = connection.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)
        ).fetchone()
        if exists is None:
            connection.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(database, app))
        else:
            connection.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(database, app))
    with psycopg.connect(database_conninfo) as connection:  # one transaction
        for kind, schema, name, arguments in connection.execute(SUPERUSER_OBJECTS).fetchall():
            target: sql.Composable = sql.Identifier(schema, name)
            if arguments is not None:  # the catalog's own text for a routine's signature
                target = sql.SQL("{}({})").format(target, sql.SQL(arguments))
            connection.execute(
                sql.SQL("ALTER {} {} OWNER TO {}").format(sql.SQL(kind), target, app)
            )
