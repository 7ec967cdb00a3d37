"""Sites by domain: the site_id cache a writer keeps, and the SQL that fills it.

A domain seen for the first time gets its row in `sites` inside the writer's
transaction; every later batch finds its id in memory, without a round trip.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

from psycopg import AsyncConnection

Connection = AsyncConnection[tuple[object, ...]]

# Sorted, so that concurrent writers adding the same new domains take their row locks
# in one order and cannot deadlock.
INSERT_SITES = """
INSERT INTO sites (domain) SELECT unnest(%s::text[]) ORDER BY 1
ON CONFLICT (domain) DO NOTHING
"""
SELECT_SITES = "SELECT domain, site_id FROM sites WHERE domain = ANY(%s::text[])"


class SiteIds:
    """domain -> site_id, cached: sites are never deleted, so a hit never goes stale.

    Ids learnt inside a transaction count only once it commits: a rolled-back insert
    of a new site leaves no id behind to break the next try.
    """

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self._pending: dict[str, int] = {}

    def get(self, domain: str) -> int:
        return self._ids.get(domain) or self._pending[domain]

    async def ensure(self, connection: Connection, domains: Iterable[str]) -> None:
        """Know the id of every domain, inserting the new ones (inside the caller's
        transaction)."""
        missing = sorted({domain for domain in domains if domain not in self._ids})
        if not missing:
            return
        await connection.execute(INSERT_SITES, (missing,))
        cursor = await connection.execute(SELECT_SITES, (missing,))
        for domain, site_id in await cursor.fetchall():
            self._pending[str(domain)] = cast(int, site_id)

    def committed(self) -> None:
        self._ids.update(self._pending)
        self._pending.clear()

    def rolled_back(self) -> None:
        self._pending.clear()
