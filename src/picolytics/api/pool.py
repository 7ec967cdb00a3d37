"""A small bounded pool of autocommit PostgreSQL connections for the Stats API.

Every API request (v1, v2, and the dashboard's calls through them) borrows one
connection for its whole work: the key, the site, and the query in its one read-only
snapshot (stats/engine.py). With a read connection (PGREADCONNSTRING) serve/app.py
gives the API two pools: this one on the replica for the site and the query, and
one on the primary for the key or the login (api/primary_auth.py). The pool:

- opens connections lazily, on demand, and never more than `size` at once: a request
  past that waits for one to come back, at most `wait_s`, then ApiBusyError (503);
- keeps a connection only when it comes back clean: open, not broken, idle (no open
  transaction, no statement running). Any other is discarded: a statement still
  running is cancelled in PostgreSQL first, then the connection is closed (the
  server rolls back what it held). A request cancelled because its client went away
  therefore never leaves a running query or an open transaction behind;
- checks an idle connection before lending it: one the server ended while it waited
  (a restart, pg_terminate_backend) has unread data or end-of-file on its socket, and
  is discarded for a fresh one, so a request does not fail on a stale connection;
- belongs to one event loop: asyncio primitives and connections are bound to the
  loop that made them. When it is used from another loop (a test client that runs
  each request in a loop of its own), the idle connections of the old loop are closed
  and it starts over; a real server runs one loop per process.

psycopg_pool's AsyncConnectionPool was not used: its workers and scheduler are tasks
of the loop that opened it, which the loop-per-request case above breaks, and the
lazy, close-on-dirty policy here is a few lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import select
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from psycopg import AsyncConnection
from psycopg.pq import TransactionStatus

from picolytics.errors import ApiBusyError, first_line

log = logging.getLogger(__name__)

Connection = AsyncConnection[Any]
CANCEL_TIMEOUT_S = 5.0  # the most a discarded connection waits for its cancel


@dataclass
class _LoopState:
    """The pool's state in one event loop."""

    loop: asyncio.AbstractEventLoop
    slots: asyncio.Semaphore
    idle: list[Connection] = field(default_factory=list)
    open: int = 0  # connections of this state open now, lent or idle


def _finish(connections: list[Connection]) -> None:
    """Close connections without a loop (libpq's finish is synchronous)."""
    while connections:
        connection = connections.pop()  # held until closed: unclosed, it warns when freed
        connection.pgconn.finish()


def _readable(connection: Connection) -> bool:
    """Has the server sent something to an idle connection (its FATAL on a
    termination, or end-of-file)? Then it is not fit to lend."""
    try:
        ready, _, _ = select.select([connection.fileno()], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(ready)


def _clean(connection: Connection) -> bool:
    """Open, not broken, no transaction, nothing running."""
    if connection.closed or connection.broken:
        return False
    return connection.info.transaction_status == TransactionStatus.IDLE


class ConnectionPool:
    """At most `size` autocommit connections to `conninfo`, opened when needed."""

    def __init__(
        self, conninfo: str, *, size: int, connect_timeout_s: float, wait_s: float
    ) -> None:
        if size < 1:
            raise ValueError("a pool holds at least one connection")
        self.conninfo = conninfo
        self.size = size
        self.connect_timeout = max(1, math.ceil(connect_timeout_s))
        self.wait_s = wait_s
        self._state: _LoopState | None = None
        self._closed = False
        # Idle connections left when the pool is dropped unclosed (an app whose
        # lifespan never ran) are closed then, not reported as leaked.
        self._idle_lists: list[list[Connection]] = []
        weakref.finalize(self, _finish_all, self._idle_lists)

    @property
    def open_connections(self) -> int:
        """Connections of the current loop open now (lent or idle)."""
        return self._state.open if self._state else 0

    def _current(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        state = self._state
        if state is None or state.loop is not loop:
            if state is not None:
                _finish(state.idle)  # bound to a loop that no longer asks
            state = _LoopState(loop, asyncio.Semaphore(self.size))
            self._idle_lists[:] = [state.idle]
            self._state = state
        return state

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        """Lend one connection for the block; give it back clean, or discard it."""
        if self._closed:
            raise ApiBusyError("the Stats API is shutting down")
        state = self._current()
        try:
            async with asyncio.timeout(self.wait_s):
                await state.slots.acquire()
        except TimeoutError:
            raise ApiBusyError(
                f"every Stats API connection ({self.size}) stayed busy for {self.wait_s:g} s"
            ) from None
        connection: Connection | None = None
        try:
            connection = await self._take(state)
            yield connection
        finally:
            # Shielded: a second cancellation must not leave it half given back.
            await asyncio.shield(self._give_back(state, connection))

    async def _take(self, state: _LoopState) -> Connection:
        while state.idle:
            connection = state.idle.pop()
            if _clean(connection) and not _readable(connection):
                return connection
            await self._discard(state, connection)
        connection = await AsyncConnection.connect(
            self.conninfo, autocommit=True, connect_timeout=self.connect_timeout
        )
        state.open += 1
        return connection

    async def _give_back(self, state: _LoopState, connection: Connection | None) -> None:
        try:
            if connection is None:
                return
            if _clean(connection) and not self._closed and state is self._state:
                state.idle.append(connection)
            else:
                await self._discard(state, connection)
        finally:
            state.slots.release()

    async def _discard(self, state: _LoopState, connection: Connection) -> None:
        """Close a connection, cancelling in PostgreSQL a statement still running."""
        state.open -= 1
        if connection.closed:
            return
        try:
            if connection.info.transaction_status == TransactionStatus.ACTIVE:
                await connection.cancel_safe(timeout=CANCEL_TIMEOUT_S)
        except Exception as error:  # closing it below ends the statement's client anyway
            log.warning("stats API: could not cancel a discarded query: %s", first_line(error))
        await connection.close()

    async def close(self) -> None:
        """Close the idle connections; those lent are closed when they come back."""
        self._closed = True
        state = self._state
        if state is None:
            return
        while state.idle:
            await self._discard(state, state.idle.pop())


def _finish_all(idle_lists: list[list[Connection]]) -> None:
    for idle in idle_lists:
        _finish(idle)
