"""WORKERS=2: one port, two processes; sessions, counts, metrics and shutdown stay right."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx2 as httpx
import pytest
from helpers.database import query
from helpers.processes import free_port, load_then_sigterm, server_process
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.slow

AGENT = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0"


def metric(text: str, name: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and not sample.labels:
                return sample.value
    raise AssertionError(f"{name} missing")


def test_two_workers_share_visitors_metrics_and_shut_down_cleanly(
    migrated_database: str, tmp_path: Path
) -> None:
    admin_port = free_port()
    settings = {
        "WORKERS": "2",
        "REQUEST_RATE_LIMIT": "0",
        "BATCH_MAX_MSEC": "50",
        "ADMIN_LISTEN": f"127.0.0.1:{admin_port}",
    }
    admin = f"http://127.0.0.1:{admin_port}"
    with server_process(migrated_database, tmp_path, settings) as server:
        # One visitor (same IP and browser) on many fresh connections: the kernel spreads
        # them over both workers, and still it is one visit.
        def visit(number: int) -> None:
            with httpx.Client() as client:  # a connection of its own per thread
                for page in range(10):
                    response = client.post(
                        server.base + "/p",
                        content=f'{{"n":"load","l":"https://example.com/{number}/{page}"}}',
                        headers={"Content-Type": "text/plain", "User-Agent": AGENT},
                    )
                    assert response.status_code == 202

        threads = [threading.Thread(target=visit, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert httpx.get(admin + "/ready").status_code == 200
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=60) == 0, server.log()
    assert query(
        migrated_database, "SELECT count(*), sum(events), sum(pageviews) FROM sessions"
    ) == [(1, 80, 80)]
    assert "started worker" in server.log()
    assert server.log().count("picolytics stopped") == 3  # two workers and the supervisor


def test_metrics_describe_every_worker(migrated_database: str, tmp_path: Path) -> None:
    admin_port = free_port()
    settings = {
        "WORKERS": "2",
        "REQUEST_RATE_LIMIT": "0",
        "BATCH_MAX_MSEC": "20",
        "ADMIN_LISTEN": f"127.0.0.1:{admin_port}",
        "QUEUE_SIZE": "1000",
        "BATCH_MAX_SIZE": "100",
    }
    with server_process(migrated_database, tmp_path, settings) as server:
        for number in range(40):
            with httpx.Client() as client:  # new connections land on either worker
                client.post(
                    server.base + "/p",
                    content=f'{{"n":"load","l":"https://a.example/{number}"}}',
                    headers={"Content-Type": "text/plain", "User-Agent": AGENT},
                )
        text = ""
        for _ in range(50):  # metrics are copied from the workers once a second
            text = httpx.get(f"http://127.0.0.1:{admin_port}/metrics").text
            if metric(text, "picolytics_events_written_total") == 40:
                break
            threading.Event().wait(0.2)
        assert metric(text, "picolytics_events_accepted_total") == 40
        assert metric(text, "picolytics_events_written_total") == 40
        assert metric(text, "picolytics_queue_capacity") == 2000  # both queues
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=60) == 0


def test_sigterm_under_load_with_two_workers(migrated_database: str, tmp_path: Path) -> None:
    settings = {"WORKERS": "2", "REQUEST_RATE_LIMIT": "0", "BATCH_MAX_MSEC": "200"}
    with server_process(migrated_database, tmp_path, settings) as server:
        accepted, unknown, before_signal = load_then_sigterm(server)
    assert before_signal > 50
    ((rows,),) = query(migrated_database, "SELECT count(*) FROM events")
    assert accepted <= rows <= accepted + unknown


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(child) for child in text.split()]


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie waits for init to reap it)."""
    try:
        return "(zombie)" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


def test_workers_stop_when_the_supervisor_is_killed(migrated_database: str, tmp_path: Path) -> None:
    """SIGKILL leaves the supervisor no chance to stop its workers: they stop by
    themselves (parent-death signal) instead of holding the port as orphans."""
    settings = {"WORKERS": "2", "SKIP_MIGRATIONS": "true"}
    with server_process(migrated_database, tmp_path, settings) as server:
        deadline = time.monotonic() + 20
        while len(workers := _children(server.process.pid)) < 2:
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.1)
        server.process.kill()
        server.process.wait()
        deadline = time.monotonic() + 30
        while alive := [pid for pid in workers if _running(pid)]:
            assert time.monotonic() < deadline, f"workers {alive} outlived the supervisor"
            time.sleep(0.1)
