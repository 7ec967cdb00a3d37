"""The bounded queue between request handlers and the database, and its one writer.

Handlers only `offer` events: a full queue is refused at once (the handler answers
503), so memory stays bounded and nothing waits on the database. The writer takes
batches of up to BATCH_MAX_SIZE events or BATCH_MAX_MSEC of waiting, and writes each
in one transaction. On a connection failure it keeps the batch and retries with
capped exponential backoff and full jitter; writes are idempotent, so a retry after
an unknown commit outcome duplicates nothing. A batch that PostgreSQL rejects for
its data is split until the bad rows are isolated; they alone are dropped and counted.
On shutdown the writer drains the queue within a deadline.

Accounting always holds: accepted = written + queued + dropped after acceptance.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg import AsyncConnection

from picolytics.accounting import PipelineStats
from picolytics.errors import first_line
from picolytics.events import BotHit, QueuedEvent
from picolytics.storage import store
from picolytics.storage.store import SiteIds

log = logging.getLogger(__name__)

RETRY_BASE_S = 0.2
RETRY_CAP_S = 10.0
# A statement that runs longer than this is cancelled and retried, so a database that
# stops answering cannot hang the writer.
STATEMENT_TIMEOUT = "30s"
# The client's own deadline for one write (connecting included): statement_timeout
# is enforced by the server, so it cannot end a write whose messages never reach it,
# or whose answer never comes back (a hung server, a partition). Then the write is
# abandoned (psycopg cancels it, or closes the connection) and retried.
WRITE_TIMEOUT_S = 60.0
_IDLE_POLL_S = 0.5
# What a queued event holds besides its page's strings (the objects, numbers, time,
# location), measured with tracemalloc (tests/test_fuzz_ingest.py checks the bound).
EVENT_OVERHEAD_BYTES = 1024

# Errors caused by the rows themselves: retrying the same rows can never succeed.
_DATA_ERRORS = (psycopg.errors.DataError, psycopg.errors.IntegrityError)


# Called after each written batch: events, write seconds, age of the oldest event in
# seconds, visits opened.
BatchObserver = Callable[[int, float, float, int], None]


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

    def qsize(self) -> int:
        return len(self._items)

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

    async def get_batch(self, batch_wait_s: float, idle_s: float, hurry: bool) -> list[QueuedEvent]:
        """Up to batch_size events: waits idle_s for a first one, then up to batch_wait_s
        for a full batch (not at all when hurrying, e.g. while shutting down)."""
        if not self._items:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), idle_s)
            if not self._items:
                return []
        if len(self._items) < self.batch_size and not hurry:
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


class Pipeline:
    def __init__(
        self,
        conninfo: str,
        *,
        queue_size: int,
        batch_max_size: int,
        batch_max_msec: int,
        session_timeout: timedelta,
        on_batch: BatchObserver | None = None,
        queue_max_bytes: int | None = None,
    ) -> None:
        self.conninfo = conninfo
        self.on_batch = on_batch
        # The queue is bounded by bytes too: hostile events (long strings of 4-byte
        # characters) retain several times what typical ones do.
        self.queue = EventQueue(queue_size, queue_max_bytes, batch_max_size)
        self.batch_wait_s = batch_max_msec / 1000
        self.session_timeout = session_timeout
        self.stats = PipelineStats()
        self.database_ok = True
        self._bots: Counter[BotHit] = Counter()
        self._sites = SiteIds()
        self._connection: AsyncConnection[tuple[object, ...]] | None = None
        self._stopping = False
        self._give_up_at: float | None = None
        self._task: asyncio.Task[None] | None = None

    # -- the request side: never blocks, never touches the database ---------------
    def offer(self, event: QueuedEvent) -> bool:
        if not self.queue.put(event):
            return False
        self.stats.accepted += 1
        return True

    def count_bot(self, hit: BotHit) -> None:
        self._bots[hit] += 1
        self.stats.dropped["bot"] += 1

    # -- the writer ---------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="picolytics-writer")

    async def stop(self, deadline_s: float) -> None:
        """Write what is queued, giving up after deadline_s; then close the connection."""
        self._stopping = True
        self._give_up_at = time.monotonic() + deadline_s
        if self._task is not None:
            await self._task
        if self._connection is not None:
            await self._connection.close()
        lost = self.queue.qsize()
        if lost:
            self.stats.dropped["shutdown"] += lost
            log.error("shutdown deadline passed: %d accepted event(s) were not written", lost)

    async def _run(self) -> None:
        while True:
            batch = await self.queue.get_batch(self.batch_wait_s, _IDLE_POLL_S, self._stopping)
            if batch or self._bots:
                await self._write(batch)
            elif self._stopping:
                return
            if self._out_of_time():
                return

    def _out_of_time(self) -> bool:
        return self._give_up_at is not None and time.monotonic() >= self._give_up_at

    async def _write(self, events: list[QueuedEvent]) -> None:
        """Write one batch, retrying transient failures until it lands or time is up."""
        bots, self._bots = self._bots, Counter()
        delay = RETRY_BASE_S
        while True:
            try:
                await self._write_isolating(events, bots)
            except (psycopg.Error, TimeoutError) as error:
                self.stats.database_errors += 1
                await self._forget_connection()
                if self.database_ok:
                    log.warning("database write failed, retrying: %s", first_line(error))
                self.database_ok = False
                if self._out_of_time():
                    self.stats.dropped["shutdown"] += len(events)
                    log.error(  # noqa: TRY400 - the cause was logged when it happened
                        "shutdown deadline passed: %d event(s) not written", len(events)
                    )
                    return
                await asyncio.sleep(random.uniform(0, delay))  # noqa: S311 - jitter only
                delay = min(delay * 2, RETRY_CAP_S)
            else:
                if not self.database_ok:
                    log.info("database writes resumed")
                self.database_ok = True
                return

    async def _write_isolating(self, events: Sequence[QueuedEvent], bots: Counter[BotHit]) -> None:
        """Write; on a data error, split to write the good rows and drop only the bad."""
        try:
            async with asyncio.timeout(WRITE_TIMEOUT_S):
                connection = await self._get_connection()
                started = time.monotonic()
                opened = await store.write_batch(
                    connection, self._sites, events, bots, self.session_timeout
                )
        except _DATA_ERRORS as error:
            if len(events) <= 1:
                self.stats.dropped["bad_row"] += len(events)
                log.warning("dropped an event PostgreSQL rejected (%s)", error.sqlstate)
                if bots:
                    await self._write_isolating([], bots)
                return
            middle = len(events) // 2
            await self._write_isolating(events[:middle], bots)
            await self._write_isolating(events[middle:], Counter())
            return
        self.stats.written += len(events)
        self.stats.batches += 1
        if self.on_batch is not None and events:
            oldest = min(event.received_at for event in events)
            self.on_batch(
                len(events),
                time.monotonic() - started,
                (datetime.now(UTC) - oldest).total_seconds(),
                opened,
            )

    async def _get_connection(self) -> AsyncConnection[tuple[object, ...]]:
        if self._connection is None or self._connection.closed:
            connection = await AsyncConnection.connect(self.conninfo, autocommit=True)
            try:
                await store.prepare_connection(connection, STATEMENT_TIMEOUT)
            except BaseException:  # a timeout too: never leave it open behind us
                with contextlib.suppress(psycopg.Error):
                    await connection.close()
                raise
            self._connection = connection
        return self._connection

    async def _forget_connection(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(psycopg.Error):
                await self._connection.close()
            self._connection = None


def retained_bytes(event: QueuedEvent) -> int:
    """An upper bound of the memory a queued event holds (its strings are its own)."""
    page = event.page
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
    )
    return EVENT_OVERHEAD_BYTES + sum(map(sys.getsizeof, strings))
