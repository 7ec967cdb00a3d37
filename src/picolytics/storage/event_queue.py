"""The bounded queue between request handlers and the writer: bounded by count and by
the bytes its events hold, so a flood cannot grow memory past the bound.

`put` never waits: a full queue refuses at once and the handler answers 503. The
writer takes whole batches and is woken once per batch, not once per event.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from sys import getsizeof

from picolytics.events import QueuedEvent

# What every queued event holds whatever it says: the QueuedEvent (80 bytes), its
# PageEvent (200), time (48), two 63-bit ids (72), Location (72), the queue's own
# (event, size) pair with its deque slot (96), and some 50 bytes of rounding. Its
# strings, numbers and props are counted one by one; tests/test_queue_memory.py
# compares the sum with tracemalloc's measure.
EVENT_OVERHEAD_BYTES = 616


class EventQueue:
    """A FIFO bounded by count and by bytes that wakes the writer once per batch.

    An asyncio.Queue would wake the waiting writer for every single event; here the
    writer sleeps until a batch is full or its wait is over.
    """

    def __init__(self, maxsize: int, max_bytes: int | None, batch_size: int) -> None:
        self.maxsize = maxsize
        self.max_bytes = max_bytes
        self.batch_size = batch_size
        self.queued_bytes = 0
        self._items: deque[tuple[QueuedEvent, int]] = deque()
        self._arrived = asyncio.Event()  # the queue is not empty
        self._batch_full = asyncio.Event()  # a whole batch is waiting
        self._hurrying = False

    def qsize(self) -> int:
        return len(self._items)

    def fill(self) -> float:
        """How full the queue is, 0 to 1: by count or by bytes, whichever is fuller."""
        by_count = len(self._items) / self.maxsize if self.maxsize else 1.0
        if not self.max_bytes:
            return by_count
        return max(by_count, self.queued_bytes / self.max_bytes)

    def put(self, event: QueuedEvent) -> bool:
        size = retained_bytes(event)
        if len(self._items) >= self.maxsize or (
            self.max_bytes is not None and self.queued_bytes + size > self.max_bytes
        ):
            return False
        self._items.append((event, size))
        self.queued_bytes += size
        if len(self._items) == 1:
            self._arrived.set()
        if len(self._items) >= self.batch_size:
            self._batch_full.set()
        return True

    def hurry(self) -> None:
        """Hand out batches at once from now on, without waiting for them to fill, and
        wake a get_batch that is waiting (at shutdown: BATCH_MAX_MSEC may well be longer
        than the drain deadline)."""
        self._hurrying = True
        self._batch_full.set()

    async def get_batch(self, batch_wait_s: float, idle_s: float) -> list[QueuedEvent]:
        """Up to batch_size events: waits idle_s for a first one, then up to batch_wait_s
        for a full batch (not at all once hurrying)."""
        if not self._items:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), idle_s)
            if not self._items:
                return []
        if len(self._items) < self.batch_size and not self._hurrying:
            self._batch_full.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._batch_full.wait(), batch_wait_s)
        batch: list[QueuedEvent] = []
        for _ in range(min(self.batch_size, len(self._items))):
            event, size = self._items.popleft()
            self.queued_bytes -= size
            batch.append(event)
        if not self._items:
            self._arrived.clear()
        if len(self._items) < self.batch_size:
            self._batch_full.clear()
        return batch


def retained_bytes(event: QueuedEvent) -> int:
    """The memory a queued event holds, from above but close (within a quarter).

    The empty string, None and the Agent (shared from the parser's cache) cost an
    event nothing; every other string, number and property is its own object.
    """
    page, location = event.page, event.location
    strings = (
        page.name,
        page.site,
        page.path,
        page.hash_path,
        page.referrer_host,
        page.utm_source,
        page.utm_medium,
        page.utm_campaign,
        page.utm_content,
        page.utm_term,
        page.timezone,
        location.country,
        location.region,
        location.city,
        location.region_code,
        location.city_code,
        event.channel,
    )
    numbers = (
        page.load_time_ms,
        page.ttfb_ms,
        page.screen_width,
        page.screen_height,
        page.pixel_ratio,
        page.pixel_depth,
        page.engaged_ms,
        page.scroll_depth,
        event.previous_visitor_id,
    )
    size = EVENT_OVERHEAD_BYTES
    size += sum(getsizeof(text) for text in strings if text)
    # /p's hostname is the very string of its site; a Plausible event's is its own.
    if page.hostname and page.hostname is not page.site:
        size += getsizeof(page.hostname)
    size += sum(getsizeof(number) for number in numbers if number is not None)
    props = page.props
    if props:
        size += getsizeof(props)
        size += sum(getsizeof(key) + getsizeof(value) for key, value in props.items())
    return size
