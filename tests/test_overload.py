"""Overload (docs/guarantees.md, R1, R2): the queue is bounded by count and by bytes, so a
flood of the most memory-hungry events the body limit allows cannot grow memory
past the bound; the excess is refused with 503 + Retry-After and counted."""

from __future__ import annotations

import gc
import json
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from helpers.events import CHROME_LINUX_UA, typical_body
from helpers.faultproxy import FaultProxy, unix_socket_of
from starlette.testclient import TestClient

from picolytics.config import Config
from picolytics.enrich.agents import AgentParser
from picolytics.enrich.geo import GeoLocator
from picolytics.events import EventNames, QueuedEvent, new_id
from picolytics.ingest.collect import parse_event
from picolytics.serve.app import create_app
from picolytics.storage import pipeline as pipeline_module
from picolytics.storage.database import with_connection_options
from picolytics.storage.event_queue import retained_bytes

GEO = Path(__file__).parent / "data" / "GeoIP2-City-Test.mmdb"
BODY_MAX = Config().body_max_size
SMILE = "\U0001f600"  # one 4-byte character makes Python store a whole string at 4 bytes/char


# What a request handled by the app allocates passes through these (the endpoint, the
# queue, the event types); counting only that keeps allocations of other threads left
# by earlier tests (a background task of another app, say) out of the measure.
REQUEST_CODE = (
    "*/picolytics/ingest/*",
    "*/picolytics/storage/event_queue.py",
    "*/picolytics/events.py",
)
FRAMES = 12


def retained_by_requests(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot) -> int:
    """Bytes allocated between the snapshots, and still held, under the request code."""
    filters = [tracemalloc.Filter(True, pattern, all_frames=True) for pattern in REQUEST_CODE]
    grown = after.filter_traces(filters).compare_to(before.filter_traces(filters), "filename")
    return sum(stat.size_diff for stat in grown)


def hostile(number: int) -> bytes:
    """As much retained memory as BODY_MAX_SIZE allows: long ASCII strings, each made
    4 bytes per character by one emoji."""
    fields = {"utm_source": 200, "utm_medium": 200, "utm_campaign": 200, "utm_term": 200}
    query = "&".join(f"{key}={'u' * size}{SMILE}" for key, size in fields.items())
    head = {"n": "load", "tz": "t" * 60 + SMILE}
    path_room = BODY_MAX - len(json.dumps({**head, "l": f"https://e.example/?{query}"})) - 60
    url = f"https://e.example/{number}{'p' * path_room}{SMILE}?{query}"
    body = json.dumps({**head, "l": url}, ensure_ascii=False).encode()
    assert BODY_MAX - 100 < len(body) <= BODY_MAX
    return body


@pytest.mark.parametrize("make_body", [typical_body, hostile], ids=["typical", "hostile"])
def test_retained_bytes_bounds_what_an_event_really_holds(
    make_body: Callable[[int], bytes],
) -> None:
    names = EventNames(frozenset({"load"}))
    agents, geo = AgentParser(), GeoLocator(GEO)

    def queued(number: int) -> QueuedEvent:
        return QueuedEvent(
            datetime.now(UTC),
            new_id(),
            new_id(),
            None,
            parse_event(make_body(number), names),
            geo.lookup("81.2.69.160"),
            agents.parse(CHROME_LINUX_UA),
        )

    count = 2000
    queued(0)  # caches warm
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        held = [queued(number) for number in range(count)]
        gc.collect()
        measured = (tracemalloc.get_traced_memory()[0] - before) / count
    finally:
        tracemalloc.stop()
        geo.close()
    estimated = sum(map(retained_bytes, held)) / count
    print(f"{make_body.__name__}: {measured:.0f} bytes/event held, {estimated:.0f} estimated")
    assert measured <= estimated  # the byte bound counts at least what is really held
    assert estimated <= 2 * measured  # ... and not wildly more


def test_memory_stays_bounded_while_the_queue_is_full(
    migrated_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline_module, "RETRY_CAP_S", 0.5)
    queue_size = 400
    memory = 1024 * 1024  # QUEUE_MEMORY_MB=1: about 120 of these events
    config = Config(
        queue_size=queue_size,
        queue_memory_mb=1,
        batch_max_size=50,
        request_rate_limit=0,
        geo_ip_file="",
    )
    with FaultProxy(unix_socket_of(migrated_database)) as proxy:
        conninfo = with_connection_options(proxy.conninfo(migrated_database, connect_timeout=2))
        app = create_app(config, conninfo=conninfo)
        pipeline = app.state.services.pipeline
        assert pipeline.queue.max_bytes == memory
        headers = {"Content-Type": "text/plain", "User-Agent": CHROME_LINUX_UA}
        with TestClient(app, client=("81.2.69.160", 1)) as client:
            proxy.set_mode("refuse")  # nothing leaves the queue
            status, number = 202, 0
            while status == 202:
                number += 1
                status = client.post("/p", content=hostile(number), headers=headers).status_code
                assert number <= queue_size
            assert status == 503
            # Full by bytes long before it is full by count.
            assert pipeline.queue.qsize() < queue_size // 2
            assert pipeline.queue.queued_bytes <= memory
            gc.collect()
            tracemalloc.start(FRAMES)
            try:
                at_full = tracemalloc.take_snapshot()
                for _ in range(500):
                    number += 1
                    refused = client.post("/p", content=hostile(number), headers=headers)
                    assert refused.status_code == 503
                    assert refused.headers["retry-after"] == "1"
                gc.collect()
                grown = retained_by_requests(at_full, tracemalloc.take_snapshot())
            finally:
                tracemalloc.stop()
            # 500 more events would hold megabytes; refused ones leave nothing behind.
            assert grown < 100_000
            stats = pipeline.stats
            assert stats.dropped["queue_full"] == 501
            proxy.set_mode("pass")  # the queue drains on the way out
        assert stats.accepted == stats.written == number - 501
