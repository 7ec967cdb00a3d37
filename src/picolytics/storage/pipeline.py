"""Between request handlers and the database: the event queue and its one writer task.

Handlers only `offer` events: a full queue (event_queue.py) is refused at once (the
handler answers 503), so memory stays bounded and nothing waits on the database. The
writer takes batches of up to BATCH_MAX_SIZE events or BATCH_MAX_MSEC of waiting, and
writes each in one transaction (writer.py). On a connection failure it keeps the
batch and retries with capped exponential backoff and full jitter; writes are
idempotent, so a retry after an unknown commit outcome duplicates no event. A batch
that cannot be written for its rows (PostgreSQL rejects them, or psycopg cannot
encode them) is split until the bad rows are isolated; they alone are dropped and
counted. No error ends the writer before shutdown, when it drains the queue within
a deadline.

Accounting always holds: accepted = written + queued + dropped after acceptance.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg import AsyncConnection

from picolytics.accounting import PipelineStats
from picolytics.errors import first_line
from picolytics.events import BotHit, QueuedEvent
from picolytics.storage.event_queue import EventQueue
from picolytics.storage.sites import SiteIds
from picolytics.storage.writer import prepare_connection, write_batch

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
# Distinct (site, day, reason) bot counters held while they wait to be written: while
# the database is down they pile up, so hits of a new key beyond this are not counted.
MAX_BOT_KEYS = 10_000

# Errors of the database or of the way to it: the same rows may well succeed later.
_TRANSIENT_ERRORS = (psycopg.Error, TimeoutError)
# Errors PostgreSQL raises for the rows themselves: retrying them can never succeed.
_DATA_ERRORS = (psycopg.errors.DataError, psycopg.errors.IntegrityError)


# Called after each written batch: events, write seconds, age of the oldest event in
# seconds, visits opened.
BatchObserver = Callable[[int, float, float, int], None]


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
        sites: SiteIds | None = None,
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
        self.bots_uncounted = 0  # bot hits of keys beyond MAX_BOT_KEYS
        self.sites = sites if sites is not None else SiteIds()  # the writer's site ids
        self._connection: AsyncConnection[tuple[object, ...]] | None = None
        self._stopping = False
        self._give_up_at: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._observer_failed = False

    # -- the request side: never blocks, never touches the database ---------------
    def offer(self, event: QueuedEvent) -> bool:
        if not self.queue.put(event):
            return False
        self.stats.accepted += 1
        return True

    def count_bot(self, hit: BotHit) -> None:
        self.stats.dropped["bot"] += 1
        if hit in self._bots or len(self._bots) < MAX_BOT_KEYS:
            self._bots[hit] += 1
        else:
            if not self.bots_uncounted:  # once: it goes on for as long as the outage
                log.warning(
                    "%d bot counters wait to be written: new ones go uncounted", len(self._bots)
                )
            self.bots_uncounted += 1

    # -- the writer ---------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="picolytics-writer")

    async def stop(self, deadline_s: float) -> None:
        """Write what is queued, giving up after deadline_s; then close the connection."""
        self._stopping = True
        self._give_up_at = time.monotonic() + deadline_s
        self.queue.hurry()
        why = "shutdown deadline passed"
        if self._task is not None:
            # A writer that died anyway must not keep the connection open or leave the
            # queued events uncounted.
            (ended,) = await asyncio.gather(self._task, return_exceptions=True)
            if isinstance(ended, Exception):
                log.error("the writer had stopped: %s", first_line(ended))
                why = "the writer had stopped"
        await self._forget_connection()
        lost = self.queue.qsize()
        if lost:
            self.stats.dropped["shutdown"] += lost
            log.error("%s: %d accepted event(s) were not written", why, lost)

    async def _run(self) -> None:
        while True:
            batch = await self.queue.get_batch(self.batch_wait_s, _IDLE_POLL_S)
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
            except _TRANSIENT_ERRORS as error:
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
                opened = await write_batch(
                    connection, self.sites, events, bots, self.session_timeout
                )
        except _DATA_ERRORS as error:
            await self._isolate(events, bots, f"PostgreSQL error {error.sqlstate}")
            return
        except _TRANSIENT_ERRORS:
            raise
        except Exception as error:  # any other error is the rows' (see _isolate)
            await self._isolate(events, bots, type(error).__name__)
            return
        self.stats.written += len(events)
        self.stats.batches += 1
        if self.on_batch is not None and events:
            oldest = min(event.received_at for event in events)
            self._observe(
                len(events),
                time.monotonic() - started,
                (datetime.now(UTC) - oldest).total_seconds(),
                opened,
            )

    async def _isolate(
        self, events: Sequence[QueuedEvent], bots: Counter[BotHit], cause: str
    ) -> None:
        """Split what failed for its rows until each bad event fails alone, and drop it.

        Besides PostgreSQL's own data errors, this takes any error that is neither the
        database's nor a timeout: psycopg failing to encode a row (a lone surrogate the
        sanitiser missed), or a bug. Either way, retrying the same rows would fail
        forever; isolating loses only the events that fail on their own, and the
        writer lives on. The cause is an error code or class, never the message: that
        may quote the event's data.
        """
        if len(events) > 1:
            middle = len(events) // 2
            await self._write_isolating(events[:middle], bots)
            await self._write_isolating(events[middle:], Counter())
        elif events:
            self.stats.dropped["bad_row"] += 1
            log.warning("dropped an event that could not be written (%s)", cause)
            if bots:
                await self._write_isolating([], bots)
        elif bots:  # the bot counts alone failed: nothing accepted is lost
            log.warning("dropped bot counts that could not be written (%s)", cause)

    def _observe(self, events: int, write_s: float, age_s: float, opened: int) -> None:
        """Tell on_batch; its failure (a bug in the metrics) must not end the writer."""
        assert self.on_batch is not None
        try:
            self.on_batch(events, write_s, age_s, opened)
        except Exception:
            if not self._observer_failed:  # once, not for every batch
                log.exception("the batch observer failed; writing goes on")
            self._observer_failed = True

    async def _get_connection(self) -> AsyncConnection[tuple[object, ...]]:
        if self._connection is None or self._connection.closed:
            connection = await AsyncConnection.connect(self.conninfo, autocommit=True)
            try:
                await prepare_connection(connection, STATEMENT_TIMEOUT)
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
