"""The admin server: /healthz, /ready, /metrics, debug endpoints (docs/guarantees.md, R7, S8)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

from helpers.database import query
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from picolytics.accounting import DROP_REASONS
from picolytics.config import Config
from picolytics.serve.app import admin_app_for, create_app

AGENT = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/17.1 Safari/605.1.15 PrivateMarker"
)
CLIENT_IP = "203.0.113.44"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def send(
    client: TestClient, payload: object, *, agent: str = AGENT, content_type: str = "text/plain"
) -> int:
    content = payload if isinstance(payload, str) else json.dumps(payload)
    return client.post(
        "/p", content=content, headers={"Content-Type": content_type, "User-Agent": agent}
    ).status_code


def test_health_ready_and_metrics_after_mixed_traffic(migrated_database: str) -> None:
    config = Config(
        request_rate_limit=0, batch_max_msec=20, body_max_size=512, disable_host_metrics=False
    )
    app = create_app(config, conninfo=migrated_database)
    admin = TestClient(admin_app_for(app, config))
    with TestClient(app, client=(CLIENT_IP, 1)) as client:
        assert admin.get("/healthz").text == "ok"
        assert admin.get("/ready").status_code == 200
        statuses = [
            send(client, {"n": "load", "l": f"https://shop.example/item/{n}"}) for n in range(20)
        ]
        statuses += [send(client, "{oops")]  # invalid
        statuses += [send(client, {"n": "load", "l": "https://shop.example/"}, agent="")]  # bot
        statuses += [send(client, {"n": "load", "l": "https://shop.example/", "x": "y" * 600})]
        statuses += [
            send(client, {"n": "load", "l": "https://shop.example/"}, content_type="text/html")
        ]
        assert statuses == [202] * 20 + [400, 202, 413, 415]
        deadline = time.monotonic() + 10
        while query(migrated_database, "SELECT count(*) FROM events")[0][0] < 20:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        text = admin.get("/metrics").text
    stats = app.state.services.pipeline.stats
    # accepted = written + queued + dropped after acceptance, and every request is counted
    assert stats.accepted == stats.written + app.state.services.pipeline.queue.qsize() + (
        stats.dropped_after_acceptance()
    )
    assert stats.accepted + sum(stats.dropped.values()) == len(statuses)
    found = samples(text)
    assert found[("picolytics_events_accepted_total", ())] == 20
    assert found[("picolytics_events_written_total", ())] == 20
    dropped = {
        labels[0][1]: value
        for (name, labels), value in found.items()
        if name == "picolytics_events_dropped_total"
    }
    assert set(dropped) == set(DROP_REASONS)  # every reason exists, at 0 if unused
    assert (
        dropped["invalid"],
        dropped["bot"],
        dropped["too_large"],
        dropped["unsupported_type"],
    ) == (1, 1, 1, 1)
    assert found[("picolytics_queue_capacity", ())] == config.queue_size
    assert found[("picolytics_database_up", ())] == 1
    assert found[("picolytics_sessions_opened_total", ())] == 1
    assert found[("picolytics_batch_size_events_count", ())] >= 1
    assert found[("picolytics_batch_size_events_sum", ())] == 20
    assert ("picolytics_ingest_to_write_seconds_count", ()) in found
    assert found[("process_resident_memory_bytes", ())] > 0
    assert found[("picolytics_host_memory_total_bytes", ())] > 0
    assert 0 <= found[("picolytics_host_cpu_used_ratio", ())] <= 1
    # Bounded labels only: no client address, user agent, domain or path anywhere.
    for private in (CLIENT_IP, "PrivateMarker", "shop.example", "/item/"):
        assert private not in text


def test_ready_fails_when_the_database_is_unreachable() -> None:
    config = Config()
    app = create_app(config, conninfo="host=/nonexistent-folder dbname=none connect_timeout=1")
    admin = TestClient(admin_app_for(app, config))
    response = admin.get("/ready")
    assert response.status_code == 503
    assert response.text == "not ready: database unreachable"
    assert admin.get("/healthz").status_code == 200  # alive, just not ready


def test_ready_fails_above_the_queue_high_water_mark(migrated_database: str) -> None:
    config = Config(queue_size=10, batch_max_size=5)
    app = create_app(config, conninfo=migrated_database)
    admin = TestClient(admin_app_for(app, config))
    services = app.state.services
    assert admin.get("/ready").status_code == 200
    services.salts.load(
        {datetime.now(UTC).date() + timedelta(days=d): bytes(32) for d in (-1, 0, 1)}
    )
    client = TestClient(app, client=(CLIENT_IP, 1))  # no lifespan: nothing drains the queue
    for _ in range(9):
        assert send(client, {"n": "load", "l": "https://shop.example/"}) == 202
    response = admin.get("/ready")
    assert response.status_code == 503
    assert "high-water" in response.text


def test_ready_fails_when_the_queue_is_full_by_its_bytes(migrated_database: str) -> None:
    """QUEUE_MEMORY_MB bounds the queue as QUEUE_SIZE does: nearly full by bytes, with
    room by count, is not ready either."""
    config = Config(queue_size=10_000, batch_max_size=5)
    app = create_app(config, conninfo=migrated_database)
    admin = TestClient(admin_app_for(app, config))
    services = app.state.services
    services.salts.load(
        {datetime.now(UTC).date() + timedelta(days=d): bytes(32) for d in (-1, 0, 1)}
    )
    queue = services.pipeline.queue
    client = TestClient(app, client=(CLIENT_IP, 1))  # no lifespan: nothing drains the queue
    assert send(client, {"n": "load", "l": "https://shop.example/"}) == 202
    queue.max_bytes = queue.queued_bytes * 10  # room for ten such events
    for _ in range(7):
        assert send(client, {"n": "load", "l": "https://shop.example/"}) == 202
    assert admin.get("/ready").status_code == 200  # 8 of 10: at the high-water mark
    assert send(client, {"n": "load", "l": "https://shop.example/"}) == 202
    assert queue.qsize() == 9 and queue.fill() == 0.9  # 0.09 % of its count
    response = admin.get("/ready")
    assert response.status_code == 503
    assert "high-water" in response.text


def test_debug_endpoints_exist_only_with_debug(migrated_database: str) -> None:
    for debug in (False, True):
        config = Config(debug=debug)
        app = create_app(config, conninfo=migrated_database)
        admin = TestClient(admin_app_for(app, config))
        for path in ("/debug/tasks", "/debug/threads", "/debug/memory"):
            assert admin.get(path).status_code == (200 if debug else 404)
        if debug:
            assert "MainThread" in admin.get("/debug/threads").text
            assert "peak RSS" in admin.get("/debug/memory").text
