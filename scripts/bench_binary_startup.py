"""Start-up time of the one-file binary to a ready server, on the embedded database.

    make dist && .venv/bin/python scripts/bench_binary_startup.py [BINARY] [--runs N]

Per run, in a fresh folder: `--version`; a first `serve` (unpacks PostgreSQL, initdb,
migrations) until `GET /` answers; SIGTERM; a restart until ready; SIGTERM. Prints
each run and the median. "Ready" means the public listener answers `OK`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import httpx2 as httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def environment(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "CONFIG_"))}
    env.update(settings)
    return env


def time_to_ready(folder: Path) -> tuple[float, float]:
    """Seconds until the server answers, and seconds from SIGTERM to its exit."""
    port = free_port()
    started = time.monotonic()
    process = subprocess.Popen(
        ["./picolytics", "serve"],
        cwd=folder,
        env=environment(LISTEN_ADDR=f"127.0.0.1:{port}"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/", timeout=1).text == "OK":
                    break
            except httpx.TransportError:
                if process.poll() is not None:
                    raise SystemExit(f"the server exited with {process.returncode}") from None
                time.sleep(0.02)
        ready = time.monotonic() - started
        stopping = time.monotonic()
        process.send_signal(signal.SIGTERM)
        if process.wait(timeout=120) != 0:
            raise SystemExit(f"the server exited with {process.returncode}")
        return ready, time.monotonic() - stopping
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def one_run(binary: Path) -> tuple[float, float, float, float]:
    folder = Path(tempfile.mkdtemp(prefix="picolytics-bench-", dir="/tmp"))
    folder.chmod(0o755)  # reachable for the embedded server's user when run as root
    try:
        shutil.copy2(binary, folder / "picolytics")
        started = time.monotonic()
        subprocess.run(["./picolytics", "--version"], cwd=folder, capture_output=True, check=True)
        version = time.monotonic() - started
        first, _ = time_to_ready(folder)
        restart, stop = time_to_ready(folder)
        return version, first, restart, stop
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("binary", nargs="?", default="dist/picolytics", type=Path)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    binary = args.binary.resolve()
    print(f"{binary}: {binary.stat().st_size / 1e6:.1f} MB")
    results = []
    for number in range(1, args.runs + 1):
        result = one_run(binary)
        results.append(result)
        version, first, restart, stop = result
        print(
            f"run {number}: --version {version:.2f} s, first start {first:.2f} s, "
            f"restart {restart:.2f} s, SIGTERM to exit {stop:.2f} s"
        )
    columns = list(zip(*results, strict=True))
    medians = [statistics.median(column) for column in columns]
    print(
        f"median: --version {medians[0]:.2f} s, first start {medians[1]:.2f} s, "
        f"restart {medians[2]:.2f} s, SIGTERM to exit {medians[3]:.2f} s"
    )


if __name__ == "__main__":
    main()
