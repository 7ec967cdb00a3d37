"""A real Prometheus (Debian's package) scrapes the admin server's /metrics."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

import httpx2 as httpx
import pytest
from helpers.processes import free_port, server_process

PROMETHEUS = shutil.which("prometheus")
pytestmark = [
    pytest.mark.external,
    pytest.mark.skipif(
        PROMETHEUS is None, reason="Debian's prometheus is not installed (apt install prometheus)"
    ),
]


def query(prometheus: str, expression: str) -> list[dict[str, object]]:
    response = httpx.get(f"{prometheus}/api/v1/query?query={quote(expression)}", timeout=5)
    result: list[dict[str, object]] = json.loads(response.text)["data"]["result"]
    return result


def test_prometheus_scrapes_the_admin_server(migrated_database: str, tmp_path: Path) -> None:
    assert PROMETHEUS is not None
    admin_port, prometheus_port = free_port(), free_port()
    settings = {
        "ADMIN_LISTEN": f"127.0.0.1:{admin_port}",
        "REQUEST_RATE_LIMIT": "0",
        "DISABLE_HOST_METRICS": "false",
        "BATCH_MAX_MSEC": "20",
    }
    (tmp_path / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: picolytics\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{admin_port}']\n"
    )
    with server_process(migrated_database, tmp_path, settings) as server:
        for number in range(5):
            httpx.post(
                server.base + "/p",
                content=f'{{"n":"load","l":"https://a.example/{number}"}}',
                headers={
                    "Content-Type": "text/plain",
                    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/125.0",
                },
            )
        with (tmp_path / "prometheus.log").open("w") as log:
            prometheus = subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={tmp_path / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{prometheus_port}",
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        base = f"http://127.0.0.1:{prometheus_port}"
        try:
            deadline = time.monotonic() + 60
            accepted: list[dict[str, object]] = []
            while time.monotonic() < deadline:
                try:
                    accepted = query(base, "picolytics_events_accepted_total")
                    if accepted and float(accepted[0]["value"][1]) == 5:  # type: ignore[index]
                        break
                except (httpx.TransportError, KeyError, json.JSONDecodeError):
                    pass
                time.sleep(0.5)
            assert accepted and float(accepted[0]["value"][1]) == 5, accepted  # type: ignore[index]
            up = query(base, 'up{job="picolytics"}')
            assert float(up[0]["value"][1]) == 1  # type: ignore[index]
            dropped = query(base, "picolytics_events_dropped_total")
            assert {entry["metric"]["reason"] for entry in dropped} >= {"invalid", "bot"}  # type: ignore[index]
            assert query(base, "picolytics_host_memory_total_bytes")
        finally:
            prometheus.send_signal(signal.SIGTERM)
            prometheus.wait(timeout=30)
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=30) == 0
