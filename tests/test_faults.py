"""Database faults under load (docs/guarantees.md, R2-R4): the app writes through a fault
proxy that refuses, black-holes and delays, or to a PostgreSQL that is stopped and
started again; a COMMIT whose answer is lost is retried without duplicating rows; a
batch PostgreSQL rejects for its data is isolated, never retried forever.

Every wait is for a condition, bounded; no assertion is about how long anything took.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import shutil
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx2 as httpx
import pytest
from helpers.database import query, reachable_tempdir
from helpers.events import CHROME_LINUX_UA, TIMEOUT, event, run
from helpers.faultproxy import FaultProxy, unix_socket_of
from helpers.processes import server_process
from starlette.applications import Starlette
from starlette.testclient import TestClient

from picolytics.accounting import PipelineStats
from picolytics.config import Config
from picolytics.serve.app import admin_app_for, create_app
from picolytics.storage import migrate
from picolytics.storage import pipeline as pipeline_module
from picolytics.storage.database import with_connection_options
from picolytics.storage.embedded import EmbeddedPostgres
from picolytics.storage.pipeline import Pipeline

pytestmark = pytest.mark.slow

CONFIG = Config(batch_max_msec=50, batch_max_size=50, request_rate_limit=0, geo_ip_file="")
WAIT_S = 30.0  # the most any condition below may take; normally well under a second


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.02)


@pytest.fixture(autouse=True)
def quick_recovery(monkeypatch: pytest.MonkeyPatch) -> None:
    """Short retry cap and write deadline, so an outage ends within a test's patience."""
    monkeypatch.setattr(pipeline_module, "RETRY_CAP_S", 0.5)
    monkeypatch.setattr(pipeline_module, "WRITE_TIMEOUT_S", 3.0)


@dataclass
class Load:
    """One thread posting events with unique paths as fast as the app answers."""

    client: TestClient
    statuses: Counter[int] = field(default_factory=Counter)
    sent: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _post(self) -> None:
        while not self._stop.is_set():
            body = json.dumps({"n": "load", "l": f"https://example.com/load/{self.sent}"})
            self.sent += 1
            response = self.client.post(
                "/p",
                content=body,
                headers={"Content-Type": "text/plain", "User-Agent": CHROME_LINUX_UA},
            )
            self.statuses[response.status_code] += 1
            time.sleep(0.002)

    def __enter__(self) -> Load:
        self._thread = threading.Thread(target=self._post, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=30)

    def accepted_more_than(self, count: int) -> Callable[[], bool]:
        return lambda: self.statuses[202] > count


@contextlib.contextmanager
def app_on(conninfo: str) -> Iterator[tuple[TestClient, TestClient, Pipeline]]:
    """The public app (lifespan running) writing to `conninfo`, and its admin app."""
    app = create_app(CONFIG, conninfo=conninfo)
    admin: Starlette = admin_app_for(app, CONFIG)
    with TestClient(app, client=("81.2.69.160", 1)) as client:
        yield client, TestClient(admin), app.state.services.pipeline


def ready_status(admin: TestClient) -> int:
    return int(admin.get("/ready").status_code)


def assert_exact_accounting(stats: PipelineStats, statuses: Counter[int], conninfo: str) -> None:
    """accepted = written + dropped after acceptance; each accepted event is one row."""
    assert set(statuses) <= {202, 503}, statuses
    assert stats.accepted == statuses[202]
    assert stats.accepted == stats.written + stats.dropped_after_acceptance()
    assert stats.dropped_after_acceptance() == 0  # the queue always had room
    ((rows, paths),) = query(conninfo, "SELECT count(*), count(DISTINCT path) FROM events")
    assert rows == paths == stats.written  # no row lost, none written twice
    # The session aggregates counted each event once too.
    assert query(conninfo, "SELECT coalesce(sum(events), 0) FROM sessions") == [(rows,)]


@pytest.fixture
def proxy(migrated_database: str) -> Iterator[FaultProxy]:
    with FaultProxy(unix_socket_of(migrated_database)) as running:
        yield running


def proxied(proxy: FaultProxy, conninfo: str) -> str:
    return with_connection_options(proxy.conninfo(conninfo, connect_timeout=2))


def test_refused_then_blackholed_database_recovers_by_itself(
    proxy: FaultProxy, migrated_database: str
) -> None:
    with (
        app_on(proxied(proxy, migrated_database)) as (client, admin, pipeline),
        Load(client) as load,
    ):
        stats = pipeline.stats
        wait_until(lambda: stats.written > 20, "writes flow")
        assert ready_status(admin) == 200

        proxy.set_mode("refuse")  # the database goes down
        wait_until(lambda: ready_status(admin) == 503, "/ready turns 503 while refused")
        errors = stats.database_errors
        accepted = load.statuses[202]
        wait_until(load.accepted_more_than(accepted + 50), "events still accepted")
        wait_until(lambda: pipeline.queue.qsize() > 20, "the queue holds events")
        wait_until(lambda: not pipeline.database_ok, "the writer noticed")
        assert stats.database_errors > errors

        proxy.set_mode("blackhole")  # it hangs: connections open, no answers ever
        errors = stats.database_errors
        # Each attempt ends by itself (connect_timeout, the write deadline) and is
        # retried: a hung database cannot hang the writer.
        wait_until(lambda: stats.database_errors >= errors + 2, "attempts end while hung")
        assert ready_status(admin) == 503
        held = pipeline.queue.qsize()
        assert held > 0

        proxy.set_mode("delay", delay_s=0.05)  # back, but slow
        written = stats.written
        wait_until(lambda: stats.written > written + 50, "writes resume while slow")

        proxy.set_mode("pass")
        wait_until(lambda: ready_status(admin) == 200, "/ready turns 200 again")
        wait_until(lambda: stats.written > written + held + 50, "writes keep flowing")
    assert load.statuses[202] > 200  # the test really ran under load
    assert_exact_accounting(stats, load.statuses, migrated_database)


@pytest.mark.parametrize("hang", [False, True], ids=["connection-dropped", "answer-lost"])
def test_commit_with_unknown_outcome_is_retried_without_duplicates(
    proxy: FaultProxy, migrated_database: str, hang: bool
) -> None:
    with app_on(proxied(proxy, migrated_database)) as (client, _, pipeline), Load(client) as load:
        stats = pipeline.stats
        wait_until(lambda: stats.written > 10, "writes flow")
        proxy.cut_after_commit(2, hang=hang)
        wait_until(lambda: proxy.commits_cut == 2, "two COMMITs lost their answer")
        wait_until(lambda: stats.database_errors >= 2, "the writer noticed")
        written = stats.written
        wait_until(lambda: stats.written > written + 20, "writes resume")
    # The batches whose COMMIT landed were written again by the retry: ON CONFLICT
    # DO NOTHING made the retry add nothing, and the sessions count each event once.
    assert_exact_accounting(stats, load.statuses, migrated_database)


def test_postgresql_stopped_and_started_mid_load() -> None:
    folder = reachable_tempdir("picolytics-restart-")
    server = EmbeddedPostgres(folder / "data")
    try:
        conninfo = with_connection_options(server.start())
        migrate.apply(conninfo)
        with app_on(conninfo) as (client, admin, pipeline), Load(client) as load:
            stats = pipeline.stats
            wait_until(lambda: stats.written > 20, "writes flow")
            server.stop()
            wait_until(lambda: ready_status(admin) == 503, "/ready turns 503 while down")
            errors = stats.database_errors
            wait_until(lambda: stats.database_errors > errors, "writes fail and are retried")
            accepted = load.statuses[202]
            wait_until(load.accepted_more_than(accepted + 50), "events still accepted")
            held = pipeline.queue.qsize()
            assert held > 0
            server.start()
            wait_until(lambda: ready_status(admin) == 200, "/ready turns 200 again")
            written = stats.written
            wait_until(lambda: stats.written > written + 50, "writes resume")
        assert_exact_accounting(stats, load.statuses, conninfo)
    finally:
        with contextlib.suppress(Exception):
            server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def test_a_rejected_batch_is_split_once_never_retried_forever(
    proxy: FaultProxy, migrated_database: str
) -> None:
    """Poison rows cost a bounded number of attempts; the writer then moves on."""
    t0 = datetime.now(UTC)
    size = 16

    async def scenario() -> tuple[Pipeline, int]:
        pipeline = Pipeline(
            proxied(proxy, migrated_database),
            queue_size=1000,
            batch_max_size=size,
            batch_max_msec=200,
            session_timeout=TIMEOUT,
        )
        batch = [event(t0, visitor, path=f"/first/{visitor}") for visitor in range(size)]
        batch[5] = event(t0, 5, path="/bad\x00row")  # bypasses the sanitiser
        for queued in batch:
            assert pipeline.offer(queued)
        pipeline.start()
        wait = time.monotonic() + WAIT_S
        while pipeline.stats.written < size - 1:
            assert time.monotonic() < wait, "the poisoned batch was never done with"
            await asyncio.sleep(0.02)
        rollbacks = proxy.rollbacks
        # The writer moved on: later events are written while it keeps running.
        for visitor in range(size):
            assert pipeline.offer(event(t0, 100 + visitor, path=f"/then/{visitor}"))
        while pipeline.stats.written < 2 * size - 1:
            assert time.monotonic() < wait, "the writer did not move on"
            await asyncio.sleep(0.02)
        await pipeline.stop(deadline_s=30)
        return pipeline, rollbacks

    pipeline, rollbacks = run(scenario())
    # One failed attempt per halving that still holds the bad row, and no more: the
    # bad batch was not retried, and nothing after it failed.
    assert rollbacks == math.ceil(math.log2(size)) + 1
    assert proxy.rollbacks == rollbacks
    assert pipeline.stats.database_errors == 0
    assert pipeline.stats.dropped == Counter({"bad_row": 1})
    assert pipeline.stats.written == 2 * size - 1
    assert query(migrated_database, "SELECT count(*) FROM events") == [(2 * size - 1,)]


def test_serve_waits_for_a_booting_database_and_survives_a_corrupt_geoip_file(
    proxy: FaultProxy, migrated_database: str, tmp_path: Path
) -> None:
    """docs/guarantees.md, R6: connection attempts are retried until the database answers; a
    GeoIP file that cannot be read is a warning, not a crash."""
    corrupt = tmp_path / "geoip.mmdb"
    corrupt.write_bytes(b"\x00not a maxmind database\xff" * 100)
    proxy.set_mode("refuse")

    def database_boots() -> None:
        wait_until(lambda: proxy.connections >= 2, "two refused attempts")
        proxy.set_mode("pass")

    booting = threading.Thread(target=database_boots, daemon=True)
    booting.start()
    settings = {"PGCONNATTEMPTS": "6", "GEO_IP_FILE": str(corrupt), "REQUEST_RATE_LIMIT": "0"}
    with server_process(proxy.conninfo(migrated_database), tmp_path, settings) as server:
        booting.join(timeout=WAIT_S)
        body = '{"n": "load", "l": "https://example.com/booted"}'
        headers = {"Content-Type": "text/plain", "User-Agent": CHROME_LINUX_UA}
        posted = httpx.post(server.base + "/p", content=body, headers=headers)
        assert posted.status_code == 202
        wait_until(
            lambda: query(migrated_database, "SELECT count(*) FROM events") == [(1,)],
            "the event is written",
        )
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=WAIT_S) == 0
    log = server.log()
    assert "not reachable (attempt 1 of 6)" in log
    assert f"GeoIP disabled: cannot open database {corrupt}" in log
    assert "Traceback" not in log
    assert query(migrated_database, "SELECT country, city FROM sessions") == [("", "")]
