"""Sites by domain: the site_id cache a writer keeps, the SQL that fills it, and the
gate that limits how many new sites an open server lets anyone create.

A domain seen for the first time gets its row in `sites` inside the writer's
transaction; every later batch finds its id in memory, without a round trip. The
cache is bounded (least recently used domains are forgotten first): with
ALLOWED_SITES empty the domains are whatever clients send.

`NewSites` is asked by the request handler before an event is accepted: a domain
this process knows is always let through; one it does not know is let through only
while fewer than MAX_NEW_SITES_PER_HOUR unknown domains have been let through in the
last hour. A domain that turns out to exist already (after a restart, or created by
another worker) gives its place back once the writer has seen its row.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import cast

from psycopg import AsyncConnection

Connection = AsyncConnection[tuple[object, ...]]

# Domains whose id a writer keeps in memory (about 150 bytes each).
SITE_CACHE_SIZE = 10_000
NEW_SITES_WINDOW_S = 3600.0

# Sorted, so that concurrent writers adding the same new domains take their row locks
# in one order and cannot deadlock. RETURNING tells which domains were really new.
INSERT_SITES = """
INSERT INTO sites (domain) SELECT unnest(%s::text[]) ORDER BY 1
ON CONFLICT (domain) DO NOTHING
RETURNING domain
"""
SELECT_SITES = "SELECT domain, site_id FROM sites WHERE domain = ANY(%s::text[])"
# At startup: the most recently created sites, so that a restart charges none of them.
SELECT_RECENT_SITES = "SELECT domain, site_id FROM sites ORDER BY site_id DESC LIMIT %s"


class NewSites:
    """How many domains unknown to this process were let through in the last hour.

    `per_hour` None: no limit (ALLOWED_SITES already bounds the domains).
    """

    def __init__(
        self, per_hour: int | None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.per_hour = per_hour
        self.clock = clock
        self.refused = 0  # events refused for the limit (a metric)
        self.known: Callable[[str], bool] = lambda domain: False  # SiteIds sets it
        self._charged: dict[str, float] = {}  # domain -> when let through, oldest first

    def admit(self, domain: str) -> bool:
        """True if an event of this site may be accepted; counts a refusal if not."""
        if self.per_hour is None or domain in self._charged or self.known(domain):
            return True
        now = self.clock()
        while self._charged:  # forget what was let through over an hour ago
            oldest, at = next(iter(self._charged.items()))
            if now - at < NEW_SITES_WINDOW_S:
                break
            del self._charged[oldest]
        if len(self._charged) < self.per_hour:
            self._charged[domain] = now
            return True
        self.refused += 1
        return False

    def existed(self, domains: Iterable[str]) -> None:
        """These domains had their row already: they created nothing."""
        for domain in domains:
            self._charged.pop(domain, None)


class SiteIds:
    """domain -> site_id, cached: sites are never deleted, so a hit never goes stale.

    Ids learnt inside a transaction count only once it commits: a rolled-back insert
    of a new site leaves no id behind to break the next try.
    """

    def __init__(
        self, new_sites: NewSites | None = None, *, max_size: int = SITE_CACHE_SIZE
    ) -> None:
        self.max_size = max_size
        self.new_sites = new_sites if new_sites is not None else NewSites(None)
        self.new_sites.known = self.__contains__
        self._ids: OrderedDict[str, int] = OrderedDict()  # least recently used first
        self._pending: dict[str, int] = {}
        self._existed: list[str] = []

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, domain: str) -> bool:
        return domain in self._ids

    def get(self, domain: str) -> int:
        return self._ids.get(domain) or self._pending[domain]

    async def ensure(self, connection: Connection, domains: Iterable[str]) -> None:
        """Know the id of every domain, inserting the new ones (inside the caller's
        transaction)."""
        missing = set()
        for seen in set(domains):
            if seen in self._ids:
                self._ids.move_to_end(seen)  # recently used: kept longest
            else:
                missing.add(seen)
        if not missing:
            return
        ordered = sorted(missing)
        cursor = await connection.execute(INSERT_SITES, (ordered,))
        inserted = {str(row[0]) for row in await cursor.fetchall()}
        self._existed.extend(missing - inserted)
        cursor = await connection.execute(SELECT_SITES, (ordered,))
        for domain, site_id in await cursor.fetchall():
            self._pending[str(domain)] = cast(int, site_id)

    async def preload(self, connection: Connection) -> None:
        """Learn the most recent sites' ids, up to the cache's size (at startup)."""
        cursor = await connection.execute(SELECT_RECENT_SITES, (self.max_size,))
        for domain, site_id in reversed(await cursor.fetchall()):
            self._ids[str(domain)] = cast(int, site_id)
        self._trim()

    def committed(self) -> None:
        self._ids.update(self._pending)
        self._pending.clear()
        self.new_sites.existed(self._existed)
        self._existed.clear()
        self._trim()

    def rolled_back(self) -> None:
        self._pending.clear()
        self._existed.clear()

    def _trim(self) -> None:
        while len(self._ids) > self.max_size:
            self._ids.popitem(last=False)
