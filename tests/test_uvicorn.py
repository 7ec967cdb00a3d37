"""SERVER=uvicorn runs the same app; the client address stays IP_EXTRACTOR's decision,
and the slow-client settings reach every worker, as under Hypercorn."""

from __future__ import annotations

import contextlib
import signal
import socket
import time
from pathlib import Path

import httpx2 as httpx
import pytest
from helpers.database import query
from helpers.processes import server_process

pytestmark = pytest.mark.slow

AGENT = "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"


def test_forwarded_headers_are_ignored_with_the_direct_extractor(
    migrated_database: str, tmp_path: Path
) -> None:
    """uvicorn's own proxy-header handling would take X-Forwarded-For from a loopback
    peer as the client: two 'different' clients, two visitors. With IP_EXTRACTOR=direct
    both requests come from 127.0.0.1 with one browser: one visitor, one visit."""
    settings = {
        "SERVER": "uvicorn",
        "IP_EXTRACTOR": "direct",
        "REQUEST_RATE_LIMIT": "0",
        "BATCH_MAX_MSEC": "20",
    }
    with server_process(migrated_database, tmp_path, settings) as server:
        for spoofed in ("203.0.113.1", "198.51.100.2"):
            response = httpx.post(
                server.base + "/p",
                content='{"n":"load","l":"https://example.com/"}',
                headers={
                    "Content-Type": "text/plain",
                    "User-Agent": AGENT,
                    "X-Forwarded-For": spoofed,
                },
            )
            assert response.status_code == 202
        deadline = time.monotonic() + 10
        while query(migrated_database, "SELECT count(*) FROM events") != [(2,)]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=30) == 0
    assert query(migrated_database, "SELECT count(DISTINCT visitor_id) FROM events") == [(1,)]


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize("server_name", ["hypercorn", "uvicorn"])
def test_request_head_timeout_reaches_every_worker(
    migrated_database: str, tmp_path: Path, server_name: str, workers: str
) -> None:
    """REQUEST_HEAD_TIMEOUT_SEC from the environment closes a connection that never
    sends its head, in each worker (the default, 10 s, would keep it open)."""
    settings = {
        "SERVER": server_name,
        "WORKERS": workers,
        "REQUEST_HEAD_TIMEOUT_SEC": "1",
        "SKIP_MIGRATIONS": "true",  # the fixture's database is migrated
    }
    with server_process(migrated_database, tmp_path, settings) as server:
        host, port = server.base.removeprefix("http://").rstrip("/").split(":")
        idle = [socket.create_connection((host, int(port)), timeout=10) for _ in range(8)]
        started = time.monotonic()
        for sock in idle:  # SO_REUSEPORT spreads the eight over the workers
            with sock:
                sock.sendall(b"POST /p HTTP/1.1\r\n")
                sock.settimeout(8)
                with contextlib.suppress(ConnectionResetError):
                    assert sock.recv(4096) == b""
        assert time.monotonic() - started < 3.5
