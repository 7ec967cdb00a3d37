"""Child processes: one free port, one clean environment, `picolytics` on the command
line, and `picolytics serve` as a running server."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx2 as httpx

from helpers.events import CHROME_LINUX_UA
from picolytics.config.settings import SETTINGS

PICOLYTICS = [sys.executable, "-m", "picolytics.cli"]

# What a child process must not inherit from the shell that runs pytest: it would
# configure picolytics (or libpq) behind the test's back, say a developer's PGHOST or
# LISTEN_ADDR pointing the server at another database or port.
#   PG*                      libpq's own variables and picolytics' database settings;
#   CONFIG_*                 CONFIG_PATH and CONFIG_NAME, which find a config file;
#   PICOLYTICS_*             the suite's own (PICOLYTICS_TEST_DSN);
#   every other setting      LISTEN_ADDR, DEBUG, SERVER, DATA_DIR, ... (config/settings.py);
#   PROMETHEUS_MULTIPROC_DIR set by a multi-worker server, read by prometheus_client.
REMOVED_PREFIXES = ("PG", "CONFIG_", "PICOLYTICS_")
REMOVED_NAMES = frozenset({setting.env for setting in SETTINGS} | {"PROMETHEUS_MULTIPROC_DIR"})


def clean_env(settings: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without anything that configures picolytics, plus
    `settings`: what every child process the tests start gets."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(REMOVED_PREFIXES) and key not in REMOVED_NAMES
    }
    env.update(settings or {})
    return env


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (at the time of asking)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_cli(
    *args: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 60,
    command: Sequence[str] = PICOLYTICS,
) -> subprocess.CompletedProcess[str]:
    """`picolytics ARGS` (or `command ARGS`) to its end, in a clean environment plus
    `env`; its output as text, whatever the exit code."""
    return subprocess.run(
        [*command, *args],
        capture_output=True,
        text=True,
        env=clean_env(env),
        cwd=cwd,
        timeout=timeout,
        check=False,
    )


@dataclass
class RunningServer:
    process: subprocess.Popen[bytes]
    base: str  # http://127.0.0.1:PORT, its LISTEN_ADDR
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout_s: float = 120) -> int:
        """SIGTERM, then wait for the exit; returns the exit code."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout_s)

    def kill(self) -> None:
        """SIGKILL if it is still running."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def answers(server: RunningServer) -> bool:
    """The default readiness check: the public port answers HTTP at all."""
    httpx.get(server.base + "/", timeout=1)
    return True


def start_server(
    folder: Path,
    settings: Mapping[str, str] | None = None,
    *,
    conninfo: str | None = None,
    command: Sequence[str] = (*PICOLYTICS, "serve"),
    log_name: str = "server.log",
    ready: Callable[[RunningServer], object] = answers,
    start_timeout_s: float = 30,
) -> RunningServer:
    """`picolytics serve` (or `command`) in `folder` on a free port, once ready(server)
    returns something true without raising OSError, an HTTP transport error or an
    AssertionError. Its output goes to folder/log_name. Without `conninfo` it uses
    the embedded database in `folder`. The caller stops or kills it."""
    port = free_port()
    env = clean_env(
        {
            **({"PGCONNSTRING": conninfo} if conninfo is not None else {}),
            "LISTEN_ADDR": f"127.0.0.1:{port}",
            "LOG_FORMAT": "text",
            **(settings or {}),
        }
    )
    log_path = folder / log_name
    with log_path.open("w") as log_file:
        process = subprocess.Popen(
            list(command), env=env, cwd=folder, stdout=log_file, stderr=subprocess.STDOUT
        )
    server = RunningServer(process, f"http://127.0.0.1:{port}", log_path)
    try:
        deadline = time.monotonic() + start_timeout_s
        while True:
            try:
                if ready(server):
                    return server
            except (OSError, httpx.TransportError, AssertionError):
                pass
            assert process.poll() is None, server.log()
            assert time.monotonic() < deadline, f"the server did not start: {server.log()}"
            time.sleep(0.1)
    except BaseException:
        server.kill()
        raise


@contextlib.contextmanager
def server_process(
    conninfo: str | None,
    folder: Path,
    settings: Mapping[str, str] | None = None,
    *,
    command: Sequence[str] = (*PICOLYTICS, "serve"),
    log_name: str = "server.log",
    ready: Callable[[RunningServer], object] = answers,
    start_timeout_s: float = 30,
) -> Iterator[RunningServer]:
    """start_server(...) for the length of a with block; killed if still alive after."""
    server = start_server(
        folder,
        settings,
        conninfo=conninfo,
        command=command,
        log_name=log_name,
        ready=ready,
        start_timeout_s=start_timeout_s,
    )
    try:
        yield server
    finally:
        server.kill()


def load_then_sigterm(server: RunningServer) -> tuple[int, int, int]:
    """Four clients post events; SIGTERM after 1.5 s; returns (202s, unknown, 202s before)."""
    base = server.base
    accepted = 0
    unknown = 0  # requests whose answer never came: the server may or may not have them
    lock = threading.Lock()
    stop_sending = threading.Event()

    def sender(number: int) -> None:
        nonlocal accepted, unknown
        with httpx.Client(timeout=5) as client:
            sent = 0
            while not stop_sending.is_set() and sent < 3000:
                body = json.dumps({"n": "load", "l": f"https://example.com/{number}/{sent}"})
                sent += 1
                try:
                    response = client.post(
                        base + "/p",
                        content=body,
                        headers={"Content-Type": "text/plain", "User-Agent": CHROME_LINUX_UA},
                    )
                except httpx.TransportError:
                    with lock:
                        unknown += 1
                    time.sleep(0.01)  # the server is going away; keep trying until told
                    continue
                if response.status_code == 202:
                    with lock:
                        accepted += 1

    try:
        threads = [threading.Thread(target=sender, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(1.5)  # load is flowing
        with lock:
            before_signal = accepted
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=60) == 0, server.log()
        stop_sending.set()
        for thread in threads:
            thread.join(timeout=30)
    finally:
        stop_sending.set()
    return accepted, unknown, before_signal
