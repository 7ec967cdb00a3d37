"""Citus: the schema distributed by site when the database has the `citus` extension.

The plan is data. `sites` and the small admin tables become *reference* tables (a copy
on every node, so foreign keys and joins to them work from any shard); every table
that grows with traffic is *distributed* by `site_id`, all in one colocation group,
so one site's events, visits, rollups and imported days live in the same shard and
every per-site query and write stays on one node. Tables that are never joined with
those (the salts, the TLS material, the migration bookkeeping) stay plain tables on
the coordinator. On plain PostgreSQL nothing here runs.

`apply` runs after the SQL migrations (storage/migrate.py), under their advisory lock,
and is idempotent: a table Citus already knows is left alone, so each run only does
what a new migration added. Daily partitions of `events` created later
(`picolytics_ensure_event_partitions`) are distributed by Citus itself, as partitions
of a distributed table. Afterwards the reader's grants are run again, so that Citus
propagates them to every shard.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import psycopg

from picolytics.errors import CitusPlanError

log = logging.getLogger(__name__)

Connection = psycopg.Connection[tuple[object, ...]]

DISTRIBUTION_COLUMN = "site_id"
# The first distributed table; the others are colocated with it.
COLOCATION_ANCHOR = "sessions"

# A copy on every node. Order matters: a table before those with a foreign key to it.
REFERENCE_TABLES = (
    "sites",
    "api_keys",
    "goals",
    "dashboard_users",
    "dashboard_sessions",
    "dashboard_setup_tokens",
    "dashboard_shares",
    "imports",
)

# Distributed by site_id, colocated with COLOCATION_ANCHOR. `events` takes its daily
# partitions along. (`imports` is a reference table: Citus distributes no table with an
# identity column once a foreign key to `sites` made it a Citus local table.)
DISTRIBUTED_TABLES = (
    COLOCATION_ANCHOR,
    "events",
    "visitor_sessions",
    "bot_counts",
    "rollup_days",
    "rollup_stale",
    "rollup_visits",
    "rollup_events",
    "rollup_hours",
    "rollup_segment_visits",
    "rollup_segment_events",
    "rollup_segment_splits",
    "rollup_prefix",
    "imported_days",
    "imported_visitors",
    "imported_sources",
    "imported_pages",
    "imported_entry_pages",
    "imported_exit_pages",
    "imported_custom_events",
    "imported_locations",
    "imported_devices",
    "imported_browsers",
    "imported_operating_systems",
)

# Plain tables on the coordinator: never joined with a distributed table, and some
# must not be copied to other nodes (the salts are UNLOGGED on purpose; TLS keys).
LOCAL_TABLES = (
    "schema_migrations",
    "daily_salts",
    "reader_grants",
    "tls_accounts",
    "tls_certificates",
    "tls_challenges",
)

CITUS_VERSION = "SELECT extversion FROM pg_extension WHERE extname = 'citus'"
# What Citus knows of each table of ours: 'h' hash-distributed (with its column),
# 'n' + replication 't' a reference table ('n' otherwise: a Citus local table).
CITUS_TABLES = """
SELECT c.relname, p.partmethod, p.repmodel,
       CASE WHEN p.partmethod = 'h' THEN column_to_column_name(p.logicalrelid, p.partkey) END
FROM pg_dist_partition p JOIN pg_class c ON c.oid = p.logicalrelid
WHERE c.relnamespace = current_schema()::regnamespace AND NOT c.relispartition
"""
# Ordinary and partitioned tables of the schema, partitions excluded.
SCHEMA_TABLES = """
SELECT relname FROM pg_class
WHERE relnamespace = current_schema()::regnamespace AND relkind IN ('r', 'p')
  AND NOT relispartition
"""
USER_TRIGGERS = """
SELECT c.relname, t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
WHERE NOT t.tgisinternal AND c.relname = ANY(%s)
  AND c.relnamespace = current_schema()::regnamespace AND NOT c.relispartition
ORDER BY 1, 2
"""
CREATE_REFERENCE = "SELECT create_reference_table(%s)"
CREATE_DISTRIBUTED = "SELECT create_distributed_table(%s, %s, colocate_with => %s)"
# Local rows copied into the shards are dropped from the coordinator's table.
TRUNCATE_LOCAL = "SELECT truncate_local_data_after_distributing_table(%s)"
GRANT_READER = "SELECT picolytics_grant_reader()"
# The daily views in their Citus form (sql/0017), for a database migrated without Citus.
CITUS_VIEWS = (
    "SELECT picolytics_citus_views() WHERE to_regprocedure('picolytics_citus_views()') IS NOT NULL"
)


@dataclass(frozen=True)
class Mode:
    """Which kind of database this is: plain PostgreSQL, or Citus and its version."""

    citus_version: str | None

    @property
    def is_citus(self) -> bool:
        return self.citus_version is not None

    def __str__(self) -> str:
        if self.citus_version is None:
            return "PostgreSQL (single node)"
        return f"Citus {self.citus_version} (distributed by site_id)"


def detect(connection: Connection) -> Mode:
    """The database's mode: Citus when the extension is installed in it."""
    row = connection.execute(CITUS_VERSION).fetchone()
    return Mode(None if row is None else str(row[0]))


def mode_of(conninfo: str) -> Mode:
    """`detect` on a connection of its own (for `picolytics migrate --check`)."""
    with psycopg.connect(conninfo, autocommit=True) as connection:
        return detect(connection)


def _citus_tables(connection: Connection) -> dict[str, tuple[str, str, str | None]]:
    return {
        str(name): (str(method), str(model), None if column is None else str(column))
        for name, method, model, column in connection.execute(CITUS_TABLES)
    }


def unplanned_tables(connection: Connection) -> list[str]:
    """Tables of the schema the plan does not name: a migration added a table
    without saying where it lives on Citus."""
    planned = {*REFERENCE_TABLES, *DISTRIBUTED_TABLES, *LOCAL_TABLES}
    names = [str(name) for (name,) in connection.execute(SCHEMA_TABLES)]
    return sorted(name for name in names if name not in planned)


def _triggers(connection: Connection) -> list[tuple[str, str]]:
    planned = [*REFERENCE_TABLES, *DISTRIBUTED_TABLES]
    rows = connection.execute(USER_TRIGGERS, (planned,)).fetchall()
    return [(str(table), str(trigger)) for table, trigger in rows]


def _exists(connection: Connection, table: str) -> bool:
    row = connection.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
    return bool(row and row[0])


def _check_known(table: str, known: tuple[str, str, str | None], wanted: str) -> None:
    method, model, column = known
    if wanted == "reference" and (method, model) == ("n", "t"):
        return
    if wanted == "distributed" and (method, column) == ("h", DISTRIBUTION_COLUMN):
        return
    raise CitusPlanError(
        f"table {table} is already a Citus table of another kind (method {method!r}, "
        f"column {column}); picolytics wants it {wanted}: undistribute it "
        f"(SELECT undistribute_table('{table}')) and run `picolytics migrate` again"
    )


def apply(connection: Connection) -> list[str]:
    """Make the schema match the plan on a Citus database (autocommit connection);
    return the tables changed now. Does nothing on plain PostgreSQL."""
    if not detect(connection).is_citus:
        return []
    unplanned = unplanned_tables(connection)
    if unplanned:
        log.warning("tables not in the Citus plan stay on the coordinator: %s", unplanned)
    known = _citus_tables(connection)
    changed: list[str] = []
    steps = [(table, "reference") for table in REFERENCE_TABLES] + [
        (table, "distributed") for table in DISTRIBUTED_TABLES
    ]
    for table, trigger in _triggers(connection):
        log.warning(
            "citus: trigger %s on %s runs on the shards; if it queries another distributed "
            "table, the statement that fires it fails there",
            trigger,
            table,
        )
    # Citus explains each step in NOTICEs; the log says which table is done instead.
    connection.execute("SET client_min_messages = warning")
    # Citus refuses to distribute a table with a trigger unless told its triggers are
    # safe on shards: one that is not fails loudly when it fires, never silently.
    connection.execute("SET citus.enable_unsafe_triggers = on")
    try:
        for table, wanted in steps:
            if table in known:
                _check_known(table, known[table], wanted)
                continue
            if not _exists(connection, table):
                continue  # a table of a migration this database has not reached
            log.info("citus: making %s a %s table", table, wanted)
            _make(connection, table, wanted)
            changed.append(table)
        # Only once every table is a Citus table: the truncation of a table's local rows
        # cascades along foreign keys, and must not reach a table still holding its own.
        for table in changed:
            _run(connection, TRUNCATE_LOCAL, (table,), f"cannot drop the local copy of {table}")
        if changed:
            # One transaction grants on reference and distributed tables: Citus wants
            # that done shard by shard, not in parallel.
            connection.execute("SET citus.multi_shard_modify_mode = sequential")
            _run(connection, GRANT_READER, (), "cannot grant picolytics_reader the shards")
            _run(connection, CITUS_VIEWS, (), "cannot define the daily views for Citus")
    finally:
        connection.execute("RESET client_min_messages")
        connection.execute("RESET citus.multi_shard_modify_mode")
        connection.execute("RESET citus.enable_unsafe_triggers")
    return changed


def _make(connection: Connection, table: str, wanted: str) -> None:
    if wanted == "reference":
        _run(connection, CREATE_REFERENCE, (table,), f"cannot make {table} a reference table")
    else:
        anchor = "default" if table == COLOCATION_ANCHOR else COLOCATION_ANCHOR
        _run(
            connection,
            CREATE_DISTRIBUTED,
            (table, DISTRIBUTION_COLUMN, anchor),
            f"cannot distribute {table} by {DISTRIBUTION_COLUMN}",
        )


def _run(connection: Connection, statement: str, params: tuple[str, ...], what: str) -> None:
    try:
        connection.execute(statement, params)
    except psycopg.Error as error:
        raise CitusPlanError(f"citus: {what}: {error}") from None
