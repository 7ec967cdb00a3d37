"""The one-file binary (build.spec) as a user runs it, and the packed PostgreSQL tree
that it carries (picolytics.storage.pginstall).

The binary test is slow: it builds dist/picolytics with PyInstaller (about 30-40 s on
two cores) unless dist/picolytics is newer than every file it is built from, then
starts it twice on the embedded database (the first start unpacks PostgreSQL and runs
initdb).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest
from helpers.database import query, reachable_tempdir, wait_for_rows
from helpers.processes import RunningServer, run_cli, start_server

from picolytics import __version__
from picolytics.storage import pginstall
from picolytics.storage.embedded import EmbeddedPostgres, binaries_dir

ROOT = Path(__file__).resolve().parents[1]
BINARY = ROOT / "dist" / "picolytics"
CHROME = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/121.0.0.0 Safari/537.36"
)
EVENTS_AT_SHUTDOWN = 30


def build_inputs() -> Iterator[Path]:
    """Every file the binary is built from (the installed packages aside)."""
    yield ROOT / "build.spec"
    yield ROOT / "pyproject.toml"
    for folder in ("src", "sql", "assets"):
        for path in (ROOT / folder).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                yield path


def binary_is_fresh() -> bool:
    if not BINARY.is_file():
        return False
    built = BINARY.stat().st_mtime
    return all(path.stat().st_mtime < built for path in build_inputs())


@pytest.fixture(scope="module")
def binary() -> Path:
    """dist/picolytics, built now unless it is newer than all its inputs."""
    if not binary_is_fresh():
        command = [sys.executable, "-m", "PyInstaller", "--clean", "--noconfirm"]
        result = subprocess.run(
            [*command, "--log-level", "WARN", "build.spec"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        assert result.returncode == 0, result.stderr[-3000:]
    return BINARY


@pytest.fixture
def folder() -> Iterator[Path]:
    """An empty folder that the embedded server's user can reach."""
    path = reachable_tempdir("picolytics-binary-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def run(folder: Path, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env=settings, cwd=folder, timeout=180, command=["./picolytics"])


def says_ok(server: RunningServer) -> bool:
    return httpx.get(server.base + "/", timeout=2).text == "OK"


def start(folder: Path) -> RunningServer:
    """`./picolytics serve` in `folder` on the embedded database; stop() or kill() it."""
    return start_server(
        folder,
        {"REQUEST_RATE_LIMIT": "0"},
        command=["./picolytics", "serve"],
        log_name=f"serve-{time.monotonic_ns()}.log",
        ready=says_ok,
        start_timeout_s=180,  # a first start unpacks PostgreSQL and runs initdb
    )


def loaded_files(server: RunningServer) -> set[str]:
    """Files mapped by the Python process (the one-file loader's child process)."""
    pid = server.process.pid
    (child,) = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    maps = Path(f"/proc/{child}/maps").read_text().splitlines()
    return {line.split(maxsplit=5)[5] for line in maps if line.count(" /") == 1}


def post(server: RunningServer, path: str) -> int:
    event = f'{{"n": "load", "l": "https://example.com{path}", "sw": 1280, "sh": 800}}'
    headers = {"Content-Type": "text/plain", "User-Agent": CHROME}
    return httpx.post(server.base + "/p", content=event, headers=headers).status_code


@pytest.mark.slow
def test_binary_serves_the_embedded_database_and_stops_cleanly(binary: Path, folder: Path) -> None:
    shutil.copy2(binary, folder / "picolytics")

    version = run(folder, "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"picolytics, version {__version__}"
    written = run(folder, "--write-default-config")
    assert written.returncode == 0, written.stderr
    assert (folder / "config.yaml").is_file()

    data_dir = folder / "picolytics-data"
    # The embedded server's socket (the conninfo picolytics itself uses).
    conninfo = EmbeddedPostgres(data_dir).conninfo()

    server = start(folder)
    try:
        assert httpx.get(server.base + "/pico.js").status_code == 200
        # The dashboard's files are in the binary too (build.spec datas).
        assert httpx.get(server.base + "/dashboard/static/dashboard.js").status_code == 200
        assert post(server, "/first") == 202
        rows = wait_for_rows(
            conninfo, "SELECT browser, os, device_type FROM sessions", timeout_s=30
        )
        assert rows == [("Chrome", "Linux", "desktop")]
        # PostgreSQL runs from its copy in the data folder, not from the binary's
        # private, temporary _MEI folder (which the server user could not enter as root).
        postmaster_pid = (data_dir / "pgdata" / "postmaster.pid").read_text().split()[0]
        running = Path(os.readlink(f"/proc/{postmaster_pid}/exe"))
        assert running.is_relative_to(data_dir.resolve()), running
        # The compiled parts are in the binary and in use (no pure-Python fallbacks).
        loaded = loaded_files(server)
        for compiled in ("psycopg_binary/_psycopg", "maxminddb/extension", "ua_parser_rs/"):
            assert any(compiled in path for path in loaded), compiled
        # These are still in the queue when SIGTERM comes: all must be written.
        for number in range(EVENTS_AT_SHUTDOWN):
            assert post(server, f"/queued/{number}") == 202
        assert server.stop() == 0, server.log()
    finally:
        server.kill()
    assert "Traceback" not in server.log()
    assert "unpacking the embedded PostgreSQL" in server.log()
    assert "embedded PostgreSQL stopped" in server.log()

    # PostgreSQL runs from a copy inside the data folder (the one-file binary's own
    # folder is private and gone); the server user can read it, nobody else can write.
    (copy,) = data_dir.glob(f"{pginstall.PREFIX}*")
    postgres = copy / pginstall.BIN / "postgres"
    assert postgres.stat().st_mode & 0o777 == 0o755
    assert not (data_dir / "pgdata" / "postmaster.pid").exists()  # nothing left running

    restarted = start(folder)
    try:
        assert "initialising" not in restarted.log()
        assert "unpacking the embedded PostgreSQL" not in restarted.log()
        count = query(conninfo, "SELECT count(*) FROM events")
        assert count == [(EVENTS_AT_SHUTDOWN + 1,)]
        assert query(conninfo, "SELECT count(DISTINCT path) FROM events") == count
        assert restarted.stop() == 0, restarted.log()
    finally:
        restarted.kill()

    check = run(folder, "migrate", "--check")
    assert check.returncode == 0, check.stderr
    assert "no pending migrations" in check.stdout

    # `prune` arrived with the retention work; run it when this build has it.
    if run(folder, "prune", "--help").returncode == 0:
        dry = run(folder, "prune", "--days", "30", "--dry-run")
        assert dry.returncode == 0, dry.stderr
    assert list(data_dir.glob(f"{pginstall.PREFIX}*")) == [copy]


def test_a_packed_tree_runs_from_the_data_folder(folder: Path) -> None:
    """What the binary does with the archive it carries, without building the binary."""
    site_packages = binaries_dir().parents[2]
    archive = pginstall.pack(
        pginstall.wheel_files(site_packages), "test", folder / "pack", compresslevel=1
    )
    data_dir = folder / "data"
    data_dir.mkdir()
    stale = data_dir / f"{pginstall.PREFIX}old-version"
    (stale / "bin").mkdir(parents=True)
    old_umask = os.umask(0o077)  # folders must still come out 0755 (systemd's UMask=0077)
    try:
        server = EmbeddedPostgres(data_dir, archive=archive)
        conninfo = server.start()
    finally:
        os.umask(old_umask)
    try:
        assert server.bin_dir == data_dir / pginstall.folder_name(archive) / pginstall.BIN
        assert query(conninfo, "SELECT 1") == [(1,)]
        for path in [server.bin_dir, *server.bin_dir.parents[:3]]:
            assert stat.S_IMODE(path.stat().st_mode) == 0o755
        assert not stale.exists()  # copies of other versions go once the server runs
        # A second process joins the server and reuses the copy.
        joined = EmbeddedPostgres(data_dir, archive=archive)
        assert joined.start() == conninfo
        assert joined.bin_dir == server.bin_dir
        joined.stop()
    finally:
        server.stop()
    assert [path.name for path in data_dir.glob(f"*{pginstall.PREFIX}*")] == [
        pginstall.folder_name(archive)
    ]
