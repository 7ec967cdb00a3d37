"""The queue's memory bound (docs/guarantees.md): what the queue counts for an event is
what the event really holds, props included, measured with tracemalloc; the bound
comes from QUEUE_MEMORY_MB, and the Helm chart's memory limit leaves room for it."""

from __future__ import annotations

import gc
import json
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from helpers.events import CHROME_LINUX_UA, typical_body

from picolytics.config import Config
from picolytics.enrich.agents import AgentParser
from picolytics.enrich.geo import GeoLocator
from picolytics.events import EventNames, QueuedEvent, new_id
from picolytics.ingest.collect import parse_event
from picolytics.ingest.plausible import parse_plausible_event
from picolytics.serve.app import build_services
from picolytics.storage.event_queue import EventQueue

GEO = Path(__file__).parent / "data" / "GeoIP2-City-Test.mmdb"
SMILE = "\U0001f600"  # one 4-byte character: Python stores the whole string at 4 bytes/char
NAMES = EventNames(frozenset({"load", "signup", "outbound"}))
COUNT = 2000


def bare(number: int) -> bytes:
    return json.dumps({"n": "load", "l": f"https://e.example/{number}"}).encode()


def long_strings(number: int) -> bytes:
    """Every text field long, and 4 bytes per character."""
    utm = "&".join(f"utm_{key}={'u' * 150}{SMILE}" for key in ("source", "medium", "term"))
    url = f"https://e.example/{number}{'p' * 600}{SMILE}?{utm}"
    return json.dumps({"n": "load", "l": url, "tz": "t" * 60 + SMILE}, ensure_ascii=False).encode()


def four_props(number: int) -> bytes:
    props = {"plan": "pro", "seats": number, "trial": True, "source": f"campaign-{number}"}
    return json.dumps({"n": "signup", "l": f"https://e.example/{number}", "p": props}).encode()


def many_small_props(number: int) -> bytes:
    """The most objects a body allows: 30 properties of one number each."""
    props = {f"k{index:02}": index + number for index in range(30)}
    return json.dumps({"n": "signup", "l": f"https://e.example/{number}", "p": props}).encode()


def long_props(number: int) -> bytes:
    props = {f"key{index}": f"{SMILE}{'v' * 200}{number}" for index in range(8)}
    body = {"n": "outbound", "l": f"https://e.example/{number}", "p": props}
    return json.dumps(body, ensure_ascii=False).encode()


def plausible_props(number: int) -> bytes:
    body = {
        "n": "signup",
        "u": f"https://e.example/{number}",
        "d": "e.example",
        "p": {"plan": "pro", "seats": number, "ratio": number / 7},
    }
    return json.dumps(body).encode()


BODIES = [typical_body, bare, long_strings, four_props, many_small_props, long_props]


def held_and_counted(events: Callable[[int], QueuedEvent]) -> tuple[float, float]:
    """Bytes per event that COUNT queued events hold (tracemalloc), and that the
    queue counted for them."""
    queue = EventQueue(COUNT, None, COUNT)
    events(0)  # caches warm
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for number in range(1, COUNT + 1):
            assert queue.put(events(number))
        gc.collect()
        held = (tracemalloc.get_traced_memory()[0] - before) / COUNT
    finally:
        tracemalloc.stop()
    return held, queue.queued_bytes / COUNT


def assert_close(name: str, held: float, counted: float) -> None:
    print(f"{name}: {held:.0f} bytes/event held, {counted:.0f} counted")
    assert held <= counted <= 1.25 * held, (name, held, counted)


@pytest.mark.parametrize("make_body", BODIES, ids=[body.__name__ for body in BODIES])
def test_the_queue_counts_what_an_event_holds(make_body: Callable[[int], bytes]) -> None:
    agents, geo = AgentParser(), GeoLocator(GEO)

    def queued(number: int) -> QueuedEvent:
        return QueuedEvent(
            datetime.now(UTC),
            new_id(),
            new_id(),
            None if number % 2 else new_id(),  # yesterday's id, shortly after midnight
            parse_event(make_body(number), NAMES),
            geo.lookup("81.2.69.160"),
            agents.parse(CHROME_LINUX_UA),
        )

    try:
        held, counted = held_and_counted(queued)
    finally:
        geo.close()
    assert_close(make_body.__name__, held, counted)


def test_plausible_events_with_props_are_counted_too() -> None:
    agents = AgentParser()
    geo = GeoLocator(None)  # no GeoIP file: every event shares UNKNOWN_LOCATION

    def queued(number: int) -> QueuedEvent:
        page = parse_plausible_event(plausible_props(number), NAMES)
        return QueuedEvent(
            datetime.now(UTC),
            new_id(),
            new_id(),
            None,
            page,
            geo.lookup("81.2.69.160"),
            agents.parse(CHROME_LINUX_UA),
        )

    held, counted = held_and_counted(queued)
    assert_close("plausible", held, counted)


def test_the_byte_bound_is_queue_memory_mb() -> None:
    for megabytes in (1, 256):
        services = build_services(Config(queue_memory_mb=megabytes, geo_ip_file=""), conninfo="")
        assert services.pipeline.queue.max_bytes == megabytes * 1024 * 1024
        services.geo.close()
