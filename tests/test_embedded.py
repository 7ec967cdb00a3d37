from __future__ import annotations

import os
import pwd
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from helpers.database import reachable_tempdir
from psycopg.conninfo import conninfo_to_dict

from picolytics.errors import EmbeddedDatabaseError
from picolytics.storage import migrate
from picolytics.storage.embedded import (
    MARKER,
    SERVER_USER,
    EmbeddedPostgres,
    embedded_database,
)
from picolytics.storage.embedded_roles import APP_ROLE


@pytest.fixture
def data_dir() -> Iterator[Path]:
    folder = reachable_tempdir("picolytics-embedded-")
    yield folder / "data"
    shutil.rmtree(folder, ignore_errors=True)


def test_start_stop_and_restart_keep_the_data(data_dir: Path) -> None:
    server = EmbeddedPostgres(data_dir)
    conninfo = server.start()
    try:
        with psycopg.connect(conninfo, autocommit=True) as connection:
            assert connection.execute("SELECT current_database()").fetchone() == ("picolytics",)
            connection.execute("CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)")
        # A second handle on the same folder joins the running server and leaves it running.
        joined = EmbeddedPostgres(data_dir)
        assert joined.start() == conninfo
        joined.stop()
        assert server.is_running()
    finally:
        server.stop()
    assert not server.is_running()
    assert not (data_dir / "run" / ".s.PGSQL.5432").exists()

    server.start()
    try:
        with psycopg.connect(conninfo) as connection:
            assert connection.execute("SELECT x FROM kept").fetchone() == (42,)
    finally:
        server.stop()


def test_no_tcp_port_is_opened(data_dir: Path) -> None:
    server = EmbeddedPostgres(data_dir)
    conninfo = server.start()
    try:
        with psycopg.connect(conninfo) as connection:
            row = connection.execute("SHOW listen_addresses").fetchone()
        assert row == ("",)
    finally:
        server.stop()


def test_long_data_dir_paths_use_a_short_socket_folder(data_dir: Path) -> None:
    deep = data_dir / ("x" * 60) / ("y" * 60)
    server = EmbeddedPostgres(deep)
    assert len(str(server.socket_dir)) < 100
    assert server.socket_dir != deep / "run"


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the server to another user")
def test_private_parent_folder_gives_a_clear_error() -> None:
    private = Path(tempfile.mkdtemp(prefix="picolytics-private-"))  # 0700, like pytest's tmp_path
    try:
        with pytest.raises(EmbeddedDatabaseError, match=r"cannot enter.*DATA_DIR"):
            EmbeddedPostgres(private / "data").start()
    finally:
        shutil.rmtree(private, ignore_errors=True)


# -- hardening: socket only, a role that is not superuser, our folders only --------------


def one(conninfo: str, statement: str) -> object:
    with psycopg.connect(conninfo) as connection:
        row = connection.execute(statement).fetchone()
    assert row is not None
    return row[0]


def owners(conninfo: str) -> set[str]:
    """Owners of picolytics' tables, views and functions in the database."""
    with psycopg.connect(conninfo) as connection:
        rows = connection.execute(
            "SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class "
            "WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'p', 'v') "
            "UNION SELECT DISTINCT pg_get_userbyid(proowner) FROM pg_proc "
            "WHERE pronamespace = 'public'::regnamespace"
        ).fetchall()
    return {str(row[0]) for row in rows}


def test_the_app_runs_its_migrations_as_a_role_that_is_not_superuser(data_dir: Path) -> None:
    with embedded_database(data_dir) as conninfo:
        assert conninfo_to_dict(conninfo)["user"] == APP_ROLE
        assert one(conninfo, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user") is False
        assert migrate.apply(conninfo)  # everything the migrations need, as that role
        assert owners(conninfo) == {APP_ROLE}
        assert one(conninfo, "SELECT has_table_privilege('picolytics_reader', 'sites', 'SELECT')")
        with psycopg.connect(conninfo) as connection, pytest.raises(psycopg.Error):
            connection.execute("CREATE ROLE intruder SUPERUSER")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_manual_start_on_a_tcp_port_rejects_every_connection(data_dir: Path) -> None:
    server = EmbeddedPostgres(data_dir)
    server.start()
    server.stop()
    port = free_port()
    options = f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories=''"
    log = str(data_dir / "manual.log")  # without -l the server would hold our stdout
    started = server._run(
        "pg_ctl", "start", "-w", "-D", str(server.pgdata), "-l", log, "-o", options
    )
    assert started.returncode == 0, started.stderr
    try:
        with pytest.raises(psycopg.OperationalError, match=r"pg_hba\.conf rejects"):
            psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
    finally:
        server._run("pg_ctl", "stop", "-m", "fast", "-w", "-D", str(server.pgdata))


def test_a_data_folder_from_before_the_app_role_is_upgraded_at_its_next_start(
    data_dir: Path,
) -> None:
    """The old layout: no marker, no APP_ROLE, tables owned by the superuser, and a
    pg_hba.conf that trusts TCP connections from localhost."""
    server = EmbeddedPostgres(data_dir)
    server.start()
    try:
        with psycopg.connect(server.conninfo("postgres"), autocommit=True) as connection:
            connection.execute("ALTER DATABASE picolytics OWNER TO postgres")
            connection.execute(f"DROP ROLE {APP_ROLE}")
        migrate.apply(server.conninfo())  # as the superuser, like earlier versions
        assert owners(server.conninfo()) == {"postgres"}
    finally:
        server.stop()
    (data_dir / MARKER).unlink()
    (server.pgdata / "pg_hba.conf").write_text(
        "local all all trust\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n"
    )

    with embedded_database(data_dir) as conninfo:
        assert migrate.pending(conninfo) == []
        assert owners(conninfo) == {APP_ROLE}
        with psycopg.connect(conninfo) as connection:
            connection.execute("INSERT INTO sites (domain) VALUES ('upgraded.example')")
            partitions = connection.execute(
                "SELECT picolytics_ensure_event_partitions(current_date + 10, 1)"
            ).fetchone()
        assert partitions == (1,)
        with psycopg.connect(server.conninfo()) as connection:
            found = connection.execute("SELECT type, auth_method FROM pg_hba_file_rules")
            rules = {(str(kind), str(method)) for kind, method in found.fetchall()}
        assert rules == {("local", "trust"), ("host", "reject")}
    assert (data_dir / MARKER).exists()


def test_a_folder_that_is_neither_empty_nor_ours_is_refused_untouched(data_dir: Path) -> None:
    data_dir.mkdir()
    (data_dir / "thesis.tex").write_text("someone else's")
    before = {path: path.stat() for path in [data_dir, data_dir / "thesis.tex"]}
    with pytest.raises(EmbeddedDatabaseError, match=r"not empty and not picolytics'.*DATA_DIR"):
        EmbeddedPostgres(data_dir).start()
    assert sorted(path.name for path in data_dir.iterdir()) == ["thesis.tex"]
    for path, info in before.items():
        assert (path.stat().st_uid, path.stat().st_mode) == (info.st_uid, info.st_mode)


def test_a_long_path_gets_a_private_socket_folder_and_refuses_a_planted_one(
    data_dir: Path,
) -> None:
    deep = data_dir / ("x" * 60) / ("y" * 60)
    server = EmbeddedPostgres(deep)
    socket_dir = server.socket_dir
    shutil.rmtree(socket_dir, ignore_errors=True)
    try:
        server.start()
        try:
            info = socket_dir.lstat()
            assert stat.S_IMODE(info.st_mode) == 0o700
            expected = os.geteuid() if os.geteuid() else pwd.getpwnam(SERVER_USER).pw_uid
            assert info.st_uid == expected
        finally:
            server.stop()
        # Someone plants the predictable folder as a link to a place of theirs.
        shutil.rmtree(socket_dir)
        elsewhere = Path(tempfile.mkdtemp(prefix="picolytics-planted-"))
        socket_dir.symlink_to(elsewhere)
        try:
            with pytest.raises(EmbeddedDatabaseError, match=r"socket folder .* not a folder of"):
                EmbeddedPostgres(deep).start()
            assert not any(elsewhere.iterdir())
        finally:
            socket_dir.unlink()
            shutil.rmtree(elsewhere, ignore_errors=True)
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can plant a folder of another user")
def test_a_socket_folder_of_another_user_is_refused(data_dir: Path) -> None:
    deep = data_dir / ("x" * 60) / ("y" * 60)
    socket_dir = EmbeddedPostgres(deep).socket_dir
    shutil.rmtree(socket_dir, ignore_errors=True)
    socket_dir.mkdir(mode=0o777)
    nobody = pwd.getpwnam("nobody")
    os.chown(socket_dir, nobody.pw_uid, nobody.pw_gid)
    try:
        with pytest.raises(EmbeddedDatabaseError, match="not a folder of this user"):
            EmbeddedPostgres(deep).start()
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)
