"""The pending ACME HTTP-01 answers (challenge token -> key authorization).

An order publishes each answer twice: in this process's memory, for a CA that reaches
this instance, and in PostgreSQL, for a CA that reaches another instance on the same
database (any of them may serve port 80). The port-80 app looks a token up in memory
first, then in the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re

import psycopg

from picolytics.errors import first_line
from picolytics.tls import store as tls_store

log = logging.getLogger(__name__)

# ACME tokens are base64url; anything else is not worth a query.
_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,256}")  # fullmatch: `$` would let "\n" pass


class ChallengeAnswers:
    """This instance's pending answers, and the lookup of every instance's."""

    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo
        # Written by the order's worker thread, read on the event loop: single dict
        # operations, which the GIL keeps whole.
        self._mine: dict[str, str] = {}
        # One connection, one query at a time, for tokens of other instances' orders:
        # this path is open to anyone on port 80.
        self._lookup_lock = asyncio.Lock()
        self._lookup: psycopg.AsyncConnection[tuple[object, ...]] | None = None

    def publish(
        self,
        connection: tls_store.Connection,
        token: str,
        key_authorization: str,
        ttl_seconds: int,
    ) -> None:
        """Make an answer available before the CA is told to validate (worker thread)."""
        self._mine[token] = key_authorization
        tls_store.put_challenge(connection, token, key_authorization, ttl_seconds)

    def withdraw(self, connection: tls_store.Connection, token: str) -> None:
        """Forget an answer once its order is over. Never fails: a row left behind
        expires on its own."""
        self._mine.pop(token, None)
        with contextlib.suppress(Exception):
            tls_store.delete_challenge(connection, token)

    async def find(self, token: str) -> str | None:
        """The key authorization for a challenge token, or None (event loop)."""
        if not _TOKEN.fullmatch(token):
            return None
        if token in self._mine:
            return self._mine[token]
        async with self._lookup_lock:  # maybe another instance's order
            try:
                if self._lookup is None or self._lookup.closed:
                    self._lookup = await psycopg.AsyncConnection.connect(
                        self.conninfo, autocommit=True, connect_timeout=5
                    )
                return await tls_store.find_challenge(self._lookup, token)
            except psycopg.Error as error:
                log.warning("autotls: cannot look up an ACME challenge: %s", first_line(error))
                await self.close()
                return None

    async def close(self) -> None:
        if self._lookup is not None:
            with contextlib.suppress(psycopg.Error):
                await self._lookup.close()
            self._lookup = None
