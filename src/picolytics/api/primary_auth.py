"""Who asks the Stats API is found on the primary, whatever database answers.

With a read connection (PGREADCONNSTRING, storage/read_database.py) the API's pool
lends connections to a replica, where every write fails. Finding who asks must
write, though (a dashboard session records its last use, storage/accounts.py), and
must see a key revoked or a session ended at once, not one replication lag later.
`OnPrimary` wraps the endpoints' authenticator so that it runs on a connection of
the primary's own pool; the endpoint's connection, the replica's, is left to read
the site and the numbers. Without a read connection serve/ does not wrap it, and
one connection does both, as before.
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from starlette.requests import HTTPConnection

from picolytics.api.auth import Authenticator, Principal
from picolytics.api.requests import Connect


class OnPrimary:
    """`inner`, asked on a connection that `connect` lends (the primary's pool)."""

    def __init__(self, inner: Authenticator, connect: Connect) -> None:
        self.inner = inner
        self.connect = connect

    async def __call__(
        self, request: HTTPConnection, connection: AsyncConnection[Any]
    ) -> Principal | None:
        # `connection` is the replica's: held meanwhile, but never asked who this is.
        async with self.connect() as primary:
            return await self.inner(request, primary)
