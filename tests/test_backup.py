"""A dump made as documented (`picolytics backup OUT`) holds no salt: not in its data,
not anywhere in the text pg_restore makes of it, and a database restored from it has
none; the README's former plain pg_dump did copy them.

The salts are real rows of `daily_salts`, written the way the server writes them
(SaltCache.refresh); each dump is read back with the wheel's pg_restore.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from helpers.database import new_database, query, reachable_tempdir
from helpers.processes import run_cli

from picolytics.cli import backup, cli
from picolytics.enrich.visitor import SaltCache
from picolytics.storage import migrate
from picolytics.storage.embedded import (
    SERVER_USER,
    EmbeddedPostgres,
    binaries_dir,
    embedded_database,
    program_environment,
)

BIN = binaries_dir()


def make_salts(conninfo: str) -> list[bytes]:
    """Today's and tomorrow's salts, created as the server creates them."""

    async def refresh() -> None:
        async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as connection:
            await SaltCache(timedelta(minutes=30)).refresh(connection, datetime.now(UTC))

    asyncio.run(refresh())
    salts = [bytes(row[0]) for row in query(conninfo, "SELECT salt FROM daily_salts")]
    assert len(salts) == 2
    return salts


def dump_text(dump: Path) -> str:
    """The whole dump as SQL, as pg_restore writes it."""
    result = subprocess.run(
        [str(BIN / "pg_restore"), "-f", "-", str(dump)],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def assert_no_salt(dump: Path, salts: list[bytes]) -> None:
    text = dump_text(dump)
    assert "CREATE UNLOGGED TABLE public.daily_salts" in text  # the table, without its rows
    assert "COPY public.sites" in text
    assert "COPY public.daily_salts" not in text
    raw = dump.read_bytes()
    for salt in salts:
        assert salt.hex() not in text
        assert salt not in raw


@pytest.fixture
def pg_dump_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")


def run_backup(conninfo: str, out: Path) -> tuple[int, str]:
    result = CliRunner().invoke(
        cli, ["backup", str(out)], env={"PGCONNSTRING": conninfo, "PGCONNATTEMPTS": "1"}
    )
    return result.exit_code, result.output


def test_the_old_plain_pg_dump_copied_the_salts(migrated_database: str, tmp_path: Path) -> None:
    """What the README said before: the reason for `picolytics backup`."""
    salts = make_salts(migrated_database)
    dump = tmp_path / "plain.dump"
    subprocess.run(
        [str(BIN / "pg_dump"), "--format=custom", f"--file={dump}", migrated_database],
        check=True,
        capture_output=True,
    )
    assert salts[0].hex() in dump_text(dump)


def test_a_backup_of_an_external_database_holds_no_salt_and_restores(
    migrated_database: str, admin_conninfo: str, tmp_path: Path, pg_dump_on_path: None
) -> None:
    salts = make_salts(migrated_database)
    query(migrated_database, "INSERT INTO sites (domain) VALUES ('kept.example') RETURNING 1")
    out = tmp_path / "picolytics.dump"
    code, output = run_backup(migrated_database, out)
    assert code == 0, output
    assert "without the daily salts" in output
    assert out.stat().st_mode & 0o777 == 0o600
    assert_no_salt(out, salts)
    assert [path.name for path in tmp_path.iterdir()] == ["picolytics.dump"]

    with new_database(admin_conninfo) as restored:
        subprocess.run(
            [str(BIN / "pg_restore"), "--no-owner", f"--dbname={restored}", str(out)],
            check=True,
            capture_output=True,
        )
        assert query(restored, "SELECT count(*) FROM daily_salts") == [(0,)]
        assert query(restored, "SELECT domain FROM sites") == [("kept.example",)]
        assert migrate.pending(restored) == []


def as_server_user(command: list[str]) -> None:
    """What `sudo -u picolytics-pg` does for the README's commands when root runs them."""
    user = SERVER_USER if os.geteuid() == 0 else None
    result = subprocess.run(
        command, capture_output=True, text=True, check=False, env=program_environment(), user=user
    )
    assert result.returncode == 0, result.stderr


@pytest.fixture
def embedded() -> Iterator[tuple[EmbeddedPostgres, Path]]:
    folder = reachable_tempdir("picolytics-backup-")
    server = EmbeddedPostgres(folder / "data")
    server.start()
    try:
        yield server, folder
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def test_a_backup_of_the_embedded_database_holds_no_salt(
    embedded: tuple[EmbeddedPostgres, Path],
) -> None:
    server, folder = embedded
    migrate.apply(server.app_conninfo())
    salts = make_salts(server.app_conninfo())
    env = {"DATA_DIR": str(server.data_dir), "LOG_FORMAT": "text", "PATH": "/usr/bin:/bin"}
    query(server.app_conninfo(), "INSERT INTO sites (domain) VALUES ('kept.example') RETURNING 1")
    result = run_cli("backup", "backup.dump", env=env, cwd=folder, timeout=180)
    assert result.returncode == 0, result.stderr
    assert_no_salt(folder / "backup.dump", salts)

    # The README's restore, step by step, into a new DATA_DIR.
    new = folder / "new-data"
    env["DATA_DIR"] = str(new)
    check = run_cli("migrate", "--check", env=env, cwd=folder, timeout=180)
    assert check.returncode == 1, check.stderr  # PostgreSQL, the role, an empty database
    restored = EmbeddedPostgres(new)
    pg_ctl = str(restored.bin_dir / "pg_ctl")
    options = f"-c listen_addresses='' -c unix_socket_directories='{new / 'run'}'"
    pgdata, log = str(new / "pgdata"), str(new / "postgres.log")
    as_server_user([pg_ctl, "start", "-w", "-D", pgdata, "-l", log, "-o", options])
    try:
        subprocess.run(
            [
                str(restored.bin_dir / "pg_restore"),
                "-h",
                str(new / "run"),
                "-U",
                "postgres",
                "-d",
                "picolytics",
                "--no-owner",
                "--role=picolytics",
                str(folder / "backup.dump"),
            ],
            check=True,
            capture_output=True,
        )
    finally:
        as_server_user([pg_ctl, "stop", "-w", "-D", pgdata])
    check = run_cli("migrate", "--check", env=env, cwd=folder, timeout=180)
    assert check.returncode == 0, check.stderr
    with embedded_database(new) as conninfo:
        assert query(conninfo, "SELECT domain FROM sites") == [("kept.example",)]
        assert query(conninfo, "SELECT count(*) FROM daily_salts") == [(0,)]
        assert query(
            conninfo, "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'"
        ) == [("picolytics",)]


def test_no_pg_dump_on_path_is_a_clean_error(migrated_database: str, tmp_path: Path) -> None:
    env = {"PGCONNSTRING": migrated_database, "PATH": str(tmp_path)}
    result = run_cli("backup", "out.dump", env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().endswith("so that pg_dump is on PATH")
    assert "picolytics: error: pg_dump not found" in result.stderr
    assert "Traceback" not in result.stderr
    assert not any(tmp_path.iterdir())


def test_a_failing_pg_dump_is_a_clean_error_and_leaves_no_file(
    migrated_database: str,
    tmp_path: Path,
    pg_dump_on_path: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A session holding a table's exclusive lock: pg_dump gives up after its lock wait
    (instead of hanging), and no partial dump is left behind."""
    monkeypatch.setattr(backup, "LOCK_WAIT_TIMEOUT", "500ms")
    with psycopg.connect(migrated_database) as holder:
        holder.execute("LOCK TABLE sites IN ACCESS EXCLUSIVE MODE")
        code, output = run_backup(migrated_database, tmp_path / "out.dump")
    assert code == 1
    assert "picolytics: error: pg_dump failed:" in output
    assert "canceling statement due to statement timeout" in output  # its lock wait
    assert not any(tmp_path.iterdir())


def test_the_password_goes_to_pg_dump_in_its_environment_not_its_arguments(
    tmp_path: Path,
) -> None:
    """Other local users can read a process's arguments, not its environment."""
    recorder = tmp_path / "pg_dump"  # records what it was given, writes an empty dump
    recorder.write_text(
        '#!/bin/sh\nprintf "%s\\n" "$@" > "$(dirname "$0")/args"\n'
        'printf "%s" "$PGPASSWORD" > "$(dirname "$0")/password"\n'
    )
    recorder.chmod(0o755)
    out = tmp_path / "out.dump"
    backup.backup(recorder, "host=db dbname=picolytics user=app password=s3cret-pw", out)
    arguments = (tmp_path / "args").read_text()
    assert "s3cret-pw" not in arguments
    assert (tmp_path / "password").read_text() == "s3cret-pw"
    assert "--no-unlogged-table-data" in arguments.splitlines()
    assert "--exclude-table-data=daily_salts" in arguments.splitlines()
    assert out.exists()
