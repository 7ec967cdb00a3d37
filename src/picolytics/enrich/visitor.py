"""Private visitor ids: a keyed hash of site, IP and User-Agent with the UTC day's salt.

The id is stable for one visitor on one site for one UTC day and unlinkable across
days and sites: the salt changes every day and is deleted once no visit can continue
with it, so nobody (not even the database owner) can recompute yesterday's ids.
Screen size, time zone and language are deliberately left out: adding them would
turn the id into a fingerprint.

Salts live in the UNLOGGED `daily_salts` table so every process agrees on them;
whichever process needs a day's salt first creates it (INSERT ... ON CONFLICT DO
NOTHING, then read back). Request handlers only read the in-memory copy.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from datetime import UTC, date, datetime, timedelta
from typing import cast

from psycopg import AsyncConnection

log = logging.getLogger(__name__)

SALT_BYTES = 32
# Yesterday's salt outlives midnight by the session timeout plus this margin, so a
# visit that started before midnight can continue.
SALT_GRACE_MARGIN = timedelta(minutes=5)

INSERT_SALTS = """
INSERT INTO daily_salts (day, salt)
SELECT * FROM unnest(%s::date[], %s::bytea[])
ON CONFLICT (day) DO NOTHING
"""
SELECT_SALTS = "SELECT day, salt FROM daily_salts WHERE day >= %s"
DELETE_OLD_SALTS = "DELETE FROM daily_salts WHERE day < %s"


class SaltUnavailableError(RuntimeError):
    """Today's salt is not known yet (the database was unreachable since startup)."""


def _field(value: str) -> bytes:
    encoded = value.encode("utf-8", "surrogatepass")
    return len(encoded).to_bytes(4, "big") + encoded


def visitor_hash(salt: bytes, site: str, ip: str, user_agent: str) -> int:
    """Keyed BLAKE2b-64 over length-prefixed fields, as a signed 64-bit integer."""
    digest = hashlib.blake2b(
        _field(site) + _field(ip) + _field(user_agent), digest_size=8, key=salt
    ).digest()
    return int.from_bytes(digest, "big", signed=True)


class SaltCache:
    """The salts of yesterday (while still needed), today and tomorrow, in memory."""

    def __init__(self, session_timeout: timedelta) -> None:
        self.grace = session_timeout + SALT_GRACE_MARGIN
        self._salts: dict[date, bytes] = {}

    def visitor_ids(
        self, site: str, ip: str, user_agent: str, now: datetime
    ) -> tuple[int, int | None]:
        """Today's id, and yesterday's while a visit from before midnight may continue."""
        today = now.date()
        salt = self._salts.get(today)
        if salt is None:
            raise SaltUnavailableError(f"no salt for {today}")
        current = visitor_hash(salt, site, ip, user_agent)
        previous_salt = self._salts.get(today - timedelta(days=1))
        if previous_salt is None or now - _midnight(today) > self.grace:
            return current, None
        return current, visitor_hash(previous_salt, site, ip, user_agent)

    def oldest_day_to_keep(self, now: datetime) -> date:
        today = now.date()
        if now - _midnight(today) <= self.grace:
            return today - timedelta(days=1)
        return today

    async def refresh(self, connection: AsyncConnection[tuple[object, ...]], now: datetime) -> None:
        """Create today's and tomorrow's salts if missing, load them, drop expired ones."""
        today = now.date()
        days = [today, today + timedelta(days=1)]
        keep_from = self.oldest_day_to_keep(now)
        async with connection.transaction():
            await connection.execute(
                INSERT_SALTS, (days, [secrets.token_bytes(SALT_BYTES) for _ in days])
            )
            await connection.execute(DELETE_OLD_SALTS, (keep_from,))
            cursor = await connection.execute(SELECT_SALTS, (keep_from,))
            rows = await cursor.fetchall()
        self.load({cast(date, day): bytes(cast(bytes, salt)) for day, salt in rows})

    def load(self, salts: dict[date, bytes]) -> None:
        """Replace the known salts (refresh reads them from the database)."""
        self._salts = dict(salts)
        log.debug("salts loaded for %s", sorted(self._salts))

    def known_days(self) -> list[date]:
        return sorted(self._salts)


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)
