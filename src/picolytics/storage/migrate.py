"""Forward-only schema migrations: `sql/NNNN_name.sql`, each applied once, in order.

Every migration runs in its own transaction together with its row in
`schema_migrations`, so a failure leaves no half-applied file behind. A session-level
advisory lock is taken before anything is read, so several processes starting at once
apply each file exactly once: the first does the work, the others wait and find
nothing left to do. On a Citus database the tables are then distributed by site
(storage/citus.py), in the same lock.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg

from picolytics.errors import MigrationError
from picolytics.resources import sql_dir
from picolytics.storage import citus

log = logging.getLogger(__name__)

# Any fixed 64-bit number works; this one spells "picomigr".
MIGRATION_LOCK_KEY = 0x7069636F6D696772

_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

CREATE_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""
SELECT_APPLIED = "SELECT version, name, checksum FROM schema_migrations ORDER BY version"
INSERT_APPLIED = "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)"
MIGRATIONS_TABLE_EXISTS = "SELECT to_regclass('schema_migrations') IS NOT NULL"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path

    @property
    def text(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()

    def __str__(self) -> str:
        return f"{self.version:04d}_{self.name}"


def discover(folder: Path | None = None) -> list[Migration]:
    """The migration files in version order; malformed names or duplicates are errors."""
    folder = folder or sql_dir()
    found: dict[int, Migration] = {}
    for path in sorted(folder.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: migration files are named NNNN_name.sql")
        version = int(match.group(1))
        if version in found:
            raise MigrationError(f"{path.name}: version {version} is used twice")
        found[version] = Migration(version, match.group(2), path)
    return [found[version] for version in sorted(found)]


def _applied(connection: psycopg.Connection[tuple[object, ...]]) -> dict[int, str]:
    row = connection.execute(MIGRATIONS_TABLE_EXISTS).fetchone()
    if row is None or not row[0]:
        return {}
    return {
        int(str(version)): str(checksum)
        for version, _name, checksum in connection.execute(SELECT_APPLIED)
    }


def _warn_about_drift(migrations: list[Migration], applied: dict[int, str]) -> None:
    known = {migration.version: migration for migration in migrations}
    for version, checksum in applied.items():
        migration = known.get(version)
        if migration is None:
            log.warning("the database has migration %04d, unknown to this version", version)
        elif migration.checksum != checksum:
            log.warning("migration %s changed after it was applied", migration)


def _log_notice(notice: psycopg.errors.Diagnostic) -> None:
    if notice.severity_nonlocalized == "NOTICE" and notice.message_primary:
        log.warning("migration notice: %s", notice.message_primary)


def pending(conninfo: str, folder: Path | None = None) -> list[Migration]:
    """Migrations not yet applied to the database (read-only)."""
    migrations = discover(folder)
    with psycopg.connect(conninfo, autocommit=True) as connection:
        applied = _applied(connection)
    _warn_about_drift(migrations, applied)
    return [migration for migration in migrations if migration.version not in applied]


def apply(conninfo: str, folder: Path | None = None) -> list[Migration]:
    """Apply every pending migration under the advisory lock; return those applied."""
    migrations = discover(folder)
    done: list[Migration] = []
    with psycopg.connect(conninfo, autocommit=True) as connection:
        connection.execute("SELECT pg_advisory_lock(%s::bigint)", (MIGRATION_LOCK_KEY,))
        try:
            connection.execute(CREATE_MIGRATIONS_TABLE)
            applied = _applied(connection)
            _warn_about_drift(migrations, applied)
            # A migration's NOTICE is meant for the operator (a role it could not create).
            connection.add_notice_handler(_log_notice)
            for migration in migrations:
                if migration.version in applied:
                    continue
                log.info("applying migration %s", migration)
                try:
                    with connection.transaction():
                        connection.execute(migration.text.encode())
                        connection.execute(
                            INSERT_APPLIED,
                            (migration.version, migration.name, migration.checksum),
                        )
                except psycopg.Error as error:
                    raise MigrationError(f"migration {migration} failed: {error}") from None
                done.append(migration)
            # On Citus, distribute what the migrations created (storage/citus.py).
            citus.apply(connection)
        finally:
            connection.execute("SELECT pg_advisory_unlock(%s::bigint)", (MIGRATION_LOCK_KEY,))
    return done
