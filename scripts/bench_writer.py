"""Measure the writer alone: events/s from the queue into PostgreSQL (sessions included).

Usage: python scripts/bench_writer.py [EVENTS] [VISITORS]
Uses PICOLYTICS_BENCH_DSN if set, else an embedded PostgreSQL in a temporary folder.
Prints written events/s; the HTTP side is measured by the full benchmark.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from picolytics.events import Agent, Location, PageEvent, QueuedEvent, new_id
from picolytics.storage import migrate
from picolytics.storage.embedded import EmbeddedPostgres
from picolytics.storage.pipeline import Pipeline

NAMES = ["load"] * 5 + ["ping"] * 3 + ["hidden", "visible", "nav"]


def make_events(count: int, visitors: int) -> list[QueuedEvent]:
    start = datetime.now(UTC)
    agent = Agent("Chrome", "120", "Windows", "10", "desktop", None)
    location = Location("DE", "Berlin", "Berlin")
    events = []
    for number in range(count):
        page = PageEvent(
            name=NAMES[number % len(NAMES)],
            site=f"site{number % 5}.example",
            path=f"/page/{number % 50}",
            referrer_host="",
            utm_source="",
            utm_medium="",
            utm_campaign="",
            utm_content="",
            utm_term="",
            load_time_ms=300,
            ttfb_ms=40,
            screen_width=1920,
            screen_height=1080,
            pixel_ratio=1.0,
            pixel_depth=24,
            timezone="Europe/Berlin",
            hash_path="",
        )
        at = start + timedelta(microseconds=number * 100)
        events.append(QueuedEvent(at, new_id(), number % visitors, None, page, location, agent))
    return events


async def measure(conninfo: str, events: list[QueuedEvent]) -> float:
    pipeline = Pipeline(
        conninfo,
        queue_size=len(events),
        batch_max_size=6400,
        batch_max_msec=500,
        session_timeout=timedelta(minutes=30),
    )
    for event in events:
        pipeline.offer(event)
    started = time.perf_counter()
    pipeline.start()
    await pipeline.stop(deadline_s=600)
    elapsed = time.perf_counter() - started
    assert pipeline.stats.written == len(events), pipeline.stats
    return elapsed


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    visitors = int(sys.argv[2]) if len(sys.argv) > 2 else 5_000
    folder = None
    server = None
    conninfo = os.environ.get("PICOLYTICS_BENCH_DSN", "")
    if not conninfo:
        folder = Path(tempfile.mkdtemp(prefix="picolytics-bench-", dir="/tmp"))
        folder.chmod(0o755)
        server = EmbeddedPostgres(folder / "data")
        conninfo = server.start()
    try:
        migrate.apply(conninfo)
        events = make_events(count, visitors)
        elapsed = asyncio.run(measure(conninfo, events))
        print(
            f"writer: {count} events, {visitors} visitors in {elapsed:.2f} s "
            f"= {count / elapsed:,.0f} events/s written"
        )
    finally:
        if server is not None:
            server.stop()
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
