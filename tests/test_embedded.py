from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from helpers.database import reachable_tempdir

from picolytics.errors import EmbeddedDatabaseError
from picolytics.storage.embedded import EmbeddedPostgres


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
