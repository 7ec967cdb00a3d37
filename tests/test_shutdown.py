"""SIGTERM under load: every 202 answered is a row afterwards, and the exit code is 0
(DESIGN §6.5). The server runs as a real process under Hypercorn."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import httpx2 as httpx
import pytest
from support import RunningServer, query, server_process

AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/122.0.0.0 Safari/537.36"
)


@pytest.mark.parametrize("server_kind", ["hypercorn", "uvicorn"])
def test_sigterm_under_load_loses_nothing_accepted(
    migrated_database: str, tmp_path: Path, server_kind: str
) -> None:
    settings = {
        "REQUEST_RATE_LIMIT": "0",
        "BATCH_MAX_MSEC": "200",
        "SERVER": server_kind,
        "DEBUG": "true",
    }
    with server_process(migrated_database, tmp_path, settings) as server:
        accepted, unknown, before_signal = load_then_sigterm(server)
    assert before_signal > 50  # the test really ran under load
    # Every 202 is a row; a request cut off mid-answer may be a row too (never twice).
    ((rows,),) = query(migrated_database, "SELECT count(*) FROM events")
    assert accepted <= rows <= accepted + unknown
    assert query(migrated_database, "SELECT count(DISTINCT path) FROM events") == [(rows,)]
    log = server.log()
    assert "not written" not in log
    assert "127.0.0.1:" not in log.replace(server.base.removeprefix("http://"), "")  # no peers
    assert AGENT not in log


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
                        headers={"Content-Type": "text/plain", "User-Agent": AGENT},
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
