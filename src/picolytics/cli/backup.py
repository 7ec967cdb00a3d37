"""`picolytics backup OUT`: a pg_dump of picolytics' database that never holds the salts.

The daily salts (`daily_salts`, UNLOGGED) turn a visitor id back into an address and a
User-Agent, so they must never leave the server; a plain `pg_dump` copies UNLOGGED
tables' rows all the same. This command runs pg_dump in its custom format with
`--no-unlogged-table-data` and, in case the table was ever made LOGGED, excludes its
rows by name. The table itself stays in the dump: a restored server creates new salts.

The embedded database is dumped with its own pg_dump (the same major version as the
server); an external one with the pg_dump on PATH. The dump appears complete at OUT
or not at all (written beside it, then renamed), readable by its owner only: it holds
the TLS private keys and the hashes of passwords and keys. A password goes to pg_dump
in its environment, never on its command line, where other users could read it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

import click
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from picolytics.cli.common import config_of
from picolytics.errors import BackupError
from picolytics.storage.database import database_conninfo
from picolytics.storage.embedded import EmbeddedPostgres, program_environment

SECRET_TABLES = ("daily_salts",)  # rows never dumped (the table's definition is)
# A dump waits this long for a table's lock (a migration or a partition drop holds
# one briefly) before it fails, instead of hanging behind a session that never ends.
LOCK_WAIT_TIMEOUT = "60s"
DUMP_TIMEOUT_S = 6 * 3600


def dump_command(pg_dump: Path, conninfo: str, out: Path) -> list[str]:
    """pg_dump's arguments for `conninfo` (without its password) into `out`."""
    return [
        str(pg_dump),
        "--format=custom",
        "--no-unlogged-table-data",
        *(f"--exclude-table-data={table}" for table in SECRET_TABLES),
        f"--lock-wait-timeout={LOCK_WAIT_TIMEOUT}",
        f"--file={out}",
        f"--dbname={conninfo}",
    ]


def _pg_dump(embedded: EmbeddedPostgres | None) -> Path:
    found = embedded.bin_dir / "pg_dump" if embedded is not None else shutil.which("pg_dump")
    if found is None or not Path(found).exists():
        raise BackupError(
            "pg_dump not found: install PostgreSQL's client programs (the server's major "
            "version or newer) so that pg_dump is on PATH"
        )
    return Path(found)


def _reason(result: subprocess.CompletedProcess[str]) -> str:
    """pg_dump's error line (its detail lines follow it), or its exit code."""
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if "error:" in line]
    return (errors or lines or [f"exit code {result.returncode}"])[0].removeprefix("pg_dump: ")


def backup(pg_dump: Path, conninfo: str, out: Path) -> None:
    """Dump the database at `conninfo` into `out` (mode 0600), or raise BackupError."""
    parts = {key: str(value) for key, value in conninfo_to_dict(conninfo).items()}
    env = program_environment()  # no PG* of the caller; the bundle's library path undone
    password = parts.pop("password", None)
    if password is not None:
        env["PGPASSWORD"] = password
    parts["application_name"] = "picolytics-backup"
    partial = out.with_name(f".{out.name}.partial")
    try:
        os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as error:
        raise BackupError(f"cannot write {partial}: {error.strerror}") from None
    try:
        try:
            result = subprocess.run(
                dump_command(pg_dump, make_conninfo("", **parts), partial),
                capture_output=True,
                text=True,
                env=env,
                timeout=DUMP_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise BackupError(f"cannot run {pg_dump}: {error}") from None
        if result.returncode != 0:
            raise BackupError(f"pg_dump failed: {_reason(result)}")
        partial.replace(out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()


@click.command("backup")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.pass_context
def command(ctx: click.Context, out: Path) -> None:
    """Write a pg_dump (custom format) of the database to OUT, without the daily salts.

    Restore it with pg_restore (see the README's Backups section).
    """
    config = config_of(ctx)
    with database_conninfo(config) as conninfo:
        embedded = (
            EmbeddedPostgres(Path(config.data_dir)) if config.uses_embedded_database else None
        )
        backup(_pg_dump(embedded), conninfo, out)
    click.echo(f"wrote {out} (custom format, without the daily salts)")
