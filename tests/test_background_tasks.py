"""The server's background tasks keep going after a failure, and a task that died anyway
never keeps shutdown from writing what was accepted.

Each test injects one fault (a maintenance round, a batch observer, a metrics sync or
a fork that fails, a row psycopg cannot encode, a background task that dies) into a
server or writer that runs against a real PostgreSQL. Every wait is for a condition,
bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx2 as httpx
import psycopg
import pytest
from helpers.database import query
from helpers.events import CHROME_UA, TIMEOUT, event, run
from helpers.processes import server_process
from psycopg.conninfo import make_conninfo
from starlette.testclient import TestClient

from picolytics.config import Config
from picolytics.events import QueuedEvent
from picolytics.serve import app as app_module
from picolytics.serve.app import PublicApp, Services, create_app
from picolytics.storage.pipeline import BatchObserver, Pipeline

CONFIG = Config(batch_max_msec=50, batch_max_size=50, request_rate_limit=0, geo_ip_file="")
WAIT_S = 30.0  # the most any condition below may take; normally well under a second
HEADERS = {"Content-Type": "text/plain", "User-Agent": CHROME_UA}


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.02)


async def wait_until_async(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.02)


def post_pages(client: TestClient, count: int) -> None:
    for number in range(count):
        body = json.dumps({"n": "load", "l": f"https://example.com/page/{number}"})
        assert client.post("/p", content=body, headers=HEADERS).status_code == 202


def services_of(app: PublicApp) -> Services:
    services: Services = app.state.services
    return services


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records]


def has_written(pipeline: Pipeline, count: int) -> Callable[[], bool]:
    return lambda: pipeline.stats.written == count


def new_pipeline(
    conninfo: str, *, batch_max_size: int = 100, on_batch: BatchObserver | None = None
) -> Pipeline:
    return Pipeline(
        conninfo,
        queue_size=100,
        batch_max_size=batch_max_size,
        batch_max_msec=20,
        session_timeout=TIMEOUT,
        on_batch=on_batch,
    )


# -- the maintenance task ----------------------------------------------------------


def test_a_maintenance_failure_with_an_empty_message_leaves_the_server_maintaining(
    migrated_database: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """str(error).splitlines()[0] raised IndexError for a message-less error, and the
    maintenance task died of it: no partitions ahead, no expired visits forgotten."""
    monkeypatch.setattr(app_module, "MAINTENANCE_INTERVAL_S", 0.05)
    real_maintain = Services.maintain
    calls = 0

    async def first_round_fails(self: Services) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:  # the first periodic round (call 1 is the startup's, which must work)
            raise psycopg.OperationalError()
        await real_maintain(self)

    monkeypatch.setattr(Services, "maintain", first_round_fails)
    app = create_app(CONFIG, conninfo=migrated_database)
    with TestClient(app):
        # A visit that ended two days ago: only a round that succeeds forgets it.
        query(
            migrated_database,
            "INSERT INTO visitor_sessions VALUES (1, 1, 1, now() - interval '2 days', "
            "now() - interval '2 days') RETURNING 1",
        )
        wait_until(
            lambda: query(migrated_database, "SELECT count(*) FROM visitor_sessions") == [(0,)],
            "a maintenance round after the failed one",
        )
    assert calls >= 3
    assert "maintenance failed, will retry: OperationalError" in messages(caplog)


def test_shutdown_writes_every_accepted_event_although_a_background_task_died(
    migrated_database: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The shutdown awaited each background task before draining the queue, so a task
    that had died re-raised its error there and every queued event was lost."""
    died = threading.Event()

    async def dies(self: Services) -> None:
        died.set()
        raise IndexError  # what the maintenance task died of

    monkeypatch.setattr(Services, "maintain_forever", dies)
    # Batches wait for 60 s or 1000 events: the events are still queued at shutdown.
    config = Config(
        batch_max_msec=60_000, batch_max_size=1000, request_rate_limit=0, geo_ip_file=""
    )
    app = create_app(config, conninfo=migrated_database)
    pipeline = services_of(app).pipeline
    with TestClient(app, client=("81.2.69.160", 1)) as client:
        wait_until(died.is_set, "the maintenance task ran")
        post_pages(client, 25)
        assert pipeline.queue.qsize() == 25
    assert query(migrated_database, "SELECT count(*), count(DISTINCT path) FROM events") == [
        (25, 25)
    ]
    assert pipeline.stats.written == pipeline.stats.accepted == 25
    assert "picolytics-maintenance had stopped: IndexError" in messages(caplog)


# -- the metrics sync task ---------------------------------------------------------


def test_metrics_keep_syncing_after_a_failed_sync(
    migrated_database: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The sync loop had no error handling: one failure (say, a full multiprocess
    metrics folder) ended it, and the metrics froze until shutdown."""
    monkeypatch.setattr(app_module, "METRICS_SYNC_INTERVAL_S", 0.02)
    app = create_app(CONFIG, conninfo=migrated_database)
    metrics = services_of(app).metrics
    real_sync = metrics.sync
    calls = 0

    def first_sync_fails(*args: object, **kwargs: object) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError(28, "No space left on device")
        real_sync(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(metrics, "sync", first_sync_fails)
    with TestClient(app, client=("81.2.69.160", 1)) as client:
        post_pages(client, 5)
        wait_until(
            lambda: metrics.registry.get_sample_value("picolytics_events_written_total") == 5,
            "the metrics show the written events",
        )
    logged = messages(caplog)
    assert logged.count("metrics sync failed, will retry: [Errno 28] No space left on device") == 1


# -- the writer task ---------------------------------------------------------------


def test_a_row_psycopg_cannot_encode_is_dropped_alone_and_the_writer_goes_on(
    migrated_database: str,
) -> None:
    """A lone surrogate makes psycopg raise UnicodeEncodeError, not a database error:
    that ended the writer task, and nothing was written after it."""
    at = datetime.now(UTC)

    async def scenario() -> Pipeline:
        pipeline = new_pipeline(migrated_database)
        good = [event(at, visitor, path=f"/first/{visitor}") for visitor in range(6)]
        poison = event(at, 99, path="/lone\ud800surrogate")  # bypasses the sanitiser
        for queued in [*good[:3], poison, *good[3:]]:
            assert pipeline.offer(queued)
        pipeline.start()
        await wait_until_async(lambda: pipeline.stats.written == 6, "the good rows written")
        for visitor in range(4):  # the writer is still there for what comes next
            assert pipeline.offer(event(at, 100 + visitor, path=f"/then/{visitor}"))
        await wait_until_async(lambda: pipeline.stats.written == 10, "later events written")
        await pipeline.stop(deadline_s=30)
        return pipeline

    pipeline = run(scenario())
    assert pipeline.stats.dropped == Counter({"bad_row": 1})
    assert pipeline.stats.accepted == 11
    assert query(migrated_database, "SELECT count(*) FROM events") == [(10,)]


def test_a_failing_batch_observer_does_not_stop_the_writer(
    migrated_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    """on_batch (the metrics) ran unguarded in the writer task: its first failure
    ended the task, and no later batch was written."""
    at = datetime.now(UTC)

    def observer(events: int, write_s: float, age_s: float, opened: int) -> None:
        raise OSError(28, "No space left on device")

    async def scenario() -> Pipeline:
        pipeline = new_pipeline(migrated_database, on_batch=observer)
        pipeline.start()
        for round_number in range(3):
            for visitor in range(5):
                assert pipeline.offer(event(at, visitor, path=f"/{round_number}/{visitor}"))
            written = 5 * (round_number + 1)
            await wait_until_async(has_written(pipeline, written), f"{written} events written")
        await pipeline.stop(deadline_s=30)
        return pipeline

    pipeline = run(scenario())
    assert query(migrated_database, "SELECT count(*) FROM events") == [(15,)]
    assert pipeline.stats.dropped_after_acceptance() == 0
    assert messages(caplog).count("the batch observer failed; writing goes on") == 1


def test_stop_does_not_wait_for_a_partial_batch_to_fill(migrated_database: str) -> None:
    """stop() did not wake a writer waiting for its batch to fill: with BATCH_MAX_MSEC
    longer than the drain deadline, shutdown waited it out and the workers' stop
    timeout (or the orchestrator) killed the process with the events still queued."""
    at = datetime.now(UTC)

    async def scenario() -> Pipeline:
        pipeline = Pipeline(
            migrated_database,
            queue_size=100,
            batch_max_size=100,
            batch_max_msec=600_000,  # the largest BATCH_MAX_MSEC allowed
            session_timeout=TIMEOUT,
        )
        pipeline.start()
        for visitor in range(3):
            assert pipeline.offer(event(at, visitor, path=f"/{visitor}"))
        await asyncio.sleep(0.1)  # the writer has its first event and waits for more
        async with asyncio.timeout(WAIT_S):
            await pipeline.stop(deadline_s=WAIT_S)
        return pipeline

    pipeline = run(scenario())
    assert pipeline.stats.written == 3
    assert pipeline.stats.dropped_after_acceptance() == 0
    assert query(migrated_database, "SELECT count(*) FROM events") == [(3,)]


def test_stop_closes_the_connection_and_counts_the_queue_although_the_writer_died(
    migrated_database: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """stop() awaited the writer task first: one that had died re-raised its error
    there, so the connection stayed open and the queued events went uncounted."""
    at = datetime.now(UTC)
    name = "picolytics-dying-writer"

    async def scenario() -> Pipeline:
        # One event a batch, so that events are still queued when the writer dies.
        pipeline = new_pipeline(
            make_conninfo(migrated_database, application_name=name), batch_max_size=1
        )
        real_write = pipeline._write
        writes = 0

        async def second_write_dies(events: list[QueuedEvent]) -> None:
            nonlocal writes
            writes += 1
            if writes == 2:
                raise RuntimeError  # a bug: nothing in the writer catches it
            await real_write(events)

        monkeypatch.setattr(pipeline, "_write", second_write_dies)
        pipeline.start()
        assert pipeline.offer(event(at, 1, path="/written"))
        await wait_until_async(lambda: pipeline.stats.written == 1, "the first batch written")
        for visitor in range(4):
            assert pipeline.offer(event(at, 10 + visitor, path=f"/lost/{visitor}"))
        await wait_until_async(lambda: writes == 2, "the writer died")
        await pipeline.stop(deadline_s=5)
        return pipeline

    pipeline = run(scenario())
    # The event the writer died with is gone, written or not: there is no knowing.
    assert pipeline.stats.dropped == Counter({"shutdown": 3})
    wait_until(
        lambda: (
            query(
                migrated_database,
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                (name,),
            )
            == [(0,)]
        ),
        "the writer's connection closed",
    )
    logged = messages(caplog)
    assert "the writer had stopped: RuntimeError" in logged
    assert "the writer had stopped: 3 accepted event(s) were not written" in logged


# -- the supervisor (WORKERS > 1) --------------------------------------------------

# Installed in the server process only (through PYTHONPATH): the supervisor's first
# attempt to replace a dead worker fails as fork does when processes run out.
FAILING_FORK = """
from picolytics.serve import supervisor

_spawn = supervisor.Supervisor._spawn
_calls = 0


def _spawn_failing_once(self):
    global _calls
    _calls += 1
    if _calls == 3:  # 1 and 2 are the first two workers
        raise BlockingIOError(11, "Resource temporarily unavailable")
    return _spawn(self)


supervisor.Supervisor._spawn = _spawn_failing_once
"""


@pytest.fixture
def failing_fork(tmp_path: Path) -> Iterator[Path]:
    """A PYTHONPATH folder with the hook; afterwards, kills the server's workers still
    alive (a supervisor killed by the test leaves them behind)."""
    folder = tmp_path / "hook"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(FAILING_FORK)
    yield folder
    for process in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):  # gone meanwhile, or not ours to read
            if str(folder).encode() in (process / "environ").read_bytes():
                os.kill(int(process.name), signal.SIGKILL)


def test_the_supervisor_retries_a_worker_it_could_not_start_and_still_drains(
    migrated_database: str, tmp_path: Path, failing_fork: Path
) -> None:
    """A failed fork raised out of the supervising loop: the supervisor went away
    without stopping its workers, so nothing drained their queues."""
    settings = {
        "WORKERS": "2",
        "BATCH_MAX_MSEC": "50",
        "REQUEST_RATE_LIMIT": "0",
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(failing_fork), os.environ.get("PYTHONPATH")])
        ),
    }
    with server_process(migrated_database, tmp_path, settings) as server:

        def started() -> list[int]:
            return [int(pid) for pid in re.findall(r"started worker (\d+)", server.log())]

        wait_until(lambda: len(started()) == 2, "two workers")
        os.kill(started()[0], signal.SIGKILL)
        wait_until(lambda: len(started()) == 3, "a worker in place of the killed one")
        assert "cannot start a worker, will retry: [Errno 11] Resource temporarily unavailable" in (
            server.log()
        )
        # SIGTERM during a worker's start-up ends it uncleanly: let it come up first.
        wait_until(
            lambda: f"worker {started()[2]} server listening" in server.log(),
            "the new worker listening",
        )
        with httpx.Client() as client:
            for number in range(20):
                body = json.dumps({"n": "load", "l": f"https://example.com/w/{number}"})
                response = client.post(server.base + "/p", content=body, headers=HEADERS)
                assert response.status_code == 202
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=60) == 0, server.log()
    assert query(migrated_database, "SELECT count(*) FROM events") == [(20,)]
