"""SERVER=uvicorn runs the same app; the client address stays IP_EXTRACTOR's decision."""

from __future__ import annotations

import signal
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
