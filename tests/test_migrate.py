from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from picolytics.errors import MigrationError
from picolytics.storage import migrate


def table_names(conninfo: str) -> set[str]:
    with psycopg.connect(conninfo) as connection:
        rows = connection.execute(
            "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE nspname = 'public' AND relkind IN ('r', 'p')"
        ).fetchall()
    return {str(row[0]) for row in rows}


def test_fresh_database_gets_the_schema(fresh_database: str) -> None:
    applied = migrate.apply(fresh_database)
    assert next(str(m) for m in applied) == "0001_initial"
    tables = table_names(fresh_database)
    assert {
        "sites",
        "sessions",
        "events",
        "visitor_sessions",
        "daily_salts",
        "bot_counts",
        "schema_migrations",
    } <= tables
    with psycopg.connect(fresh_database) as connection:
        kinds: dict[str, str] = dict(
            connection.execute(
                "SELECT relname, relkind::text || relpersistence::text FROM pg_class "
                "WHERE relname IN ('events', 'daily_salts')"
            ).fetchall()
        )
        assert kinds == {"events": "pp", "daily_salts": "ru"}  # partitioned; unlogged
        versions = connection.execute("SELECT version, name FROM schema_migrations").fetchall()
        assert (1, "initial") in versions


def test_rerun_applies_nothing(migrated_database: str) -> None:
    assert migrate.apply(migrated_database) == []
    assert migrate.pending(migrated_database) == []


def test_pending_lists_everything_on_an_empty_database(fresh_database: str) -> None:
    assert [m.version for m in migrate.pending(fresh_database)] == [
        m.version for m in migrate.discover()
    ]


def test_four_concurrent_appliers_apply_each_file_once(fresh_database: str) -> None:
    results: list[list[migrate.Migration]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def apply() -> None:
        start.wait()
        try:
            results.append(migrate.apply(fresh_database))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=apply) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert sorted(len(result) for result in results) == [0, 0, 0, len(migrate.discover())]
    with psycopg.connect(fresh_database) as connection:
        count = connection.execute("SELECT count(*) FROM schema_migrations").fetchone()
    assert count == (len(migrate.discover()),)


def test_failed_migration_leaves_nothing_behind(fresh_database: str, tmp_path: Path) -> None:
    (tmp_path / "0001_good.sql").write_text("CREATE TABLE good (x int);")
    (tmp_path / "0002_bad.sql").write_text("CREATE TABLE half (x int); SELECT * FROM missing;")
    with pytest.raises(MigrationError, match="0002_bad failed"):
        migrate.apply(fresh_database, tmp_path)
    assert "good" in table_names(fresh_database)
    assert "half" not in table_names(fresh_database)  # rolled back with its row
    assert [m.name for m in migrate.pending(fresh_database, tmp_path)] == ["bad"]


@pytest.mark.parametrize("name", ["1_x.sql", "0001-x.sql", "0001_X.sql"])
def test_malformed_file_names_are_rejected(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_text("SELECT 1;")
    with pytest.raises(MigrationError, match=r"NNNN_name\.sql"):
        migrate.discover(tmp_path)


def test_duplicate_versions_are_rejected(tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("SELECT 1;")
    (tmp_path / "0001_b.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="used twice"):
        migrate.discover(tmp_path)


def test_event_partitions_exist_around_today(migrated_database: str) -> None:
    today = datetime.now(UTC).date()
    with psycopg.connect(migrated_database) as connection:
        names = {
            str(row[0])
            for row in connection.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = 'events'::regclass"
            )
        }
        for day in (today, today + timedelta(days=1)):
            assert f"events_{day:%Y%m%d}" in names
        # Calling the maintenance function again is harmless and creates only new days.
        created = connection.execute(
            "SELECT picolytics_ensure_event_partitions(%s, 5)", (today,)
        ).fetchone()
        assert created == (2,)
        now = datetime.now(UTC)
        connection.execute("INSERT INTO sites (domain) VALUES ('example.com');")
        connection.execute(
            "INSERT INTO events (site_id, received_at, event_id, session_id, visitor_id, name, "
            "path) VALUES (1, %s, 1, 1, 1, 'load', '/')",
            (now,),
        )
        row = connection.execute("SELECT tableoid::regclass::text FROM events").fetchone()
    assert row == (f"events_{now:%Y%m%d}",)
