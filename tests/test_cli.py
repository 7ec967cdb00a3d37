"""The command line as users run it: a real process, real exit codes and messages."""

from __future__ import annotations

import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest
from helpers.database import query, reachable_tempdir
from helpers.processes import free_port, run_cli, server_process

from picolytics import __version__

pytestmark = pytest.mark.slow


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"picolytics, version {__version__}"


def test_bad_config_exits_2_naming_the_setting(tmp_path: Path) -> None:
    result = run_cli("migrate", env={"PGPORT": "nope"}, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "picolytics: error: PGPORT (pgPort) = 'nope': expected a whole number"
    )


def test_bad_config_file_exits_2(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("listenAddr: nowhere\n")
    result = run_cli("serve", cwd=tmp_path)
    assert result.returncode == 2
    assert "LISTEN_ADDR (listenAddr) = 'nowhere'" in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_database_exits_1_without_the_password(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    result = run_cli(
        "serve",
        cwd=tmp_path,
        env={
            "PGCONNSTRING": f"postgresql://app:s3cr3t-pw@127.0.0.1:{port}/analytics",
            "PGCONNATTEMPTS": "2",
        },
    )
    assert result.returncode == 1
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith(
        f"picolytics: error: cannot connect to PostgreSQL at 127.0.0.1:{port}/analytics "
        "after 2 attempt(s)"
    )
    assert "s3cr3t-pw" not in result.stderr
    assert result.stderr.count("not reachable (attempt") == 2
    assert "Traceback" not in result.stderr


def test_write_default_config_flag_and_refusal(tmp_path: Path) -> None:
    result = run_cli("--write-default-config", cwd=tmp_path)
    assert result.returncode == 0
    assert (tmp_path / "config.yaml").is_file()
    again = run_cli("--write-default-config", cwd=tmp_path)
    assert again.returncode == 2
    assert "already exists" in again.stderr
    custom = run_cli("--write-default-config", "other.yaml", cwd=tmp_path)
    assert custom.returncode == 0
    assert (tmp_path / "other.yaml").read_text() == (tmp_path / "config.yaml").read_text()
    subcommand = run_cli("write-default-config", "third.yaml", cwd=tmp_path)
    assert subcommand.returncode == 0


def test_migrate_and_check_on_an_external_database(fresh_database: str, tmp_path: Path) -> None:
    env = {"PGCONNSTRING": fresh_database}
    check = run_cli("migrate", "--check", env=env, cwd=tmp_path)
    assert check.returncode == 1
    assert "pending: 0001_initial" in check.stdout
    applied = run_cli("migrate", env=env, cwd=tmp_path)
    assert applied.returncode == 0, applied.stderr
    assert "applied: 0001_initial" in applied.stdout
    check = run_cli("migrate", "--check", env=env, cwd=tmp_path)
    assert check.returncode == 0
    assert "no pending migrations" in check.stdout


def test_migrate_on_the_embedded_database() -> None:
    folder = reachable_tempdir("picolytics-cli-")
    try:
        env = {"DATA_DIR": str(folder / "data"), "LOG_FORMAT": "text"}
        result = run_cli("migrate", env=env, cwd=folder)
        assert result.returncode == 0, result.stderr
        assert "embedded PostgreSQL started" in result.stderr
        assert "embedded PostgreSQL stopped" in result.stderr
        check = run_cli("migrate", "--check", env=env, cwd=folder)
        assert check.returncode == 0, check.stderr
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def running_server(migrated_database: str, tmp_path: Path) -> Iterator[tuple[str, Path, str]]:
    with server_process(migrated_database, tmp_path, {"DEBUG": "true"}) as server:
        yield server.base, server.log_path, migrated_database
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=30) == 0


def test_serve_answers_collects_and_logs_no_client_details(
    running_server: tuple[str, Path, str],
) -> None:
    base, log_path, conninfo = running_server
    secret_agent = "Mozilla/5.0 (SecretAgent 7.7)"
    headers = {"User-Agent": secret_agent, "X-Forwarded-For": "203.0.113.77"}
    assert httpx.get(base + "/", headers=headers).text == "OK"
    assert httpx.get(base + "/robots.txt", headers=headers).status_code == 200
    assert httpx.get(base + "/missing", headers=headers).status_code == 404
    pico = httpx.get(base + "/pico.js", headers=headers)
    assert pico.headers["cache-control"] == "public, max-age=3600"
    event = '{"n": "load", "l": "https://example.com/welcome", "sw": 1280, "sh": 800}'
    chrome = (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/121.0.0.0 Safari/537.36"
    )
    posted = httpx.post(
        base + "/p", content=event, headers={"Content-Type": "text/plain", "User-Agent": chrome}
    )
    assert posted.status_code == 202
    deadline = time.monotonic() + 1.0  # a real event shows up within a second
    while not (rows := query(conninfo, "SELECT browser, os, device_type FROM sessions")):
        assert time.monotonic() < deadline, "the event was not written within a second"
        time.sleep(0.02)
    assert rows == [("Chrome", "Linux", "desktop")]
    log_text = log_path.read_text()
    assert "listening on http://127.0.0.1:" in log_text
    assert "GET /missing 404" in log_text  # the access log is on (DEBUG) ...
    for private in (secret_agent, "SecretAgent", "203.0.113.77"):
        assert private not in log_text  # ... and carries no client details
