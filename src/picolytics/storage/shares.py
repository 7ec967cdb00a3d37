"""A site's read-only shared links, in `dashboard_shares` (migration 0011,
docs/dashboard-accounts.md).

A link is `/share/TOKEN`, TOKEN 32 random bytes (storage/passwords.py): it exists in
clear only in what `create` returns, once; the table keeps its SHA-256, the site, an
optional password's scrypt hash, and when it was created and revoked. A link shows
one site, the one it was made for. The site must exist (it appears with its first
event), as for goals.

`create`, `list_shares` and `revoke` serve `picolytics share` (synchronous, one
transaction each); `find` and `password_matches` serve the shared pages.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection

from picolytics.errors import AccountError, AccountOptionError
from picolytics.storage.accounts import Connection
from picolytics.storage.passwords import (
    check_password,
    hash_password,
    is_token,
    new_token,
    token_hash,
    verify_password,
)
from picolytics.storage.sites_admin import unknown_site
from picolytics.text import normalise_domain

TABLE_EXISTS = "SELECT to_regclass('dashboard_shares') IS NOT NULL"
SELECT_SITE = "SELECT site_id FROM sites WHERE domain = %s"
INSERT_SHARE = """
INSERT INTO dashboard_shares (site_id, token_hash, password_hash) VALUES (%s, %s, %s)
RETURNING share_id
"""
COLUMNS = """sh.share_id, s.domain, sh.site_id, sh.password_hash IS NOT NULL, sh.created_at,
sh.revoked_at"""
SELECT_SHARES = f"""
SELECT {COLUMNS} FROM dashboard_shares sh JOIN sites s USING (site_id)
ORDER BY sh.created_at, sh.share_id
"""
SELECT_BY_ID = f"""
SELECT {COLUMNS} FROM dashboard_shares sh JOIN sites s USING (site_id) WHERE sh.share_id = %s
"""
REVOKE_SHARE = """
UPDATE dashboard_shares SET revoked_at = now() WHERE share_id = %s AND revoked_at IS NULL
RETURNING share_id
"""
# The lookup of every shared page: the unique index, revoked links left out.
FIND_SHARE = f"""
SELECT sh.token_hash, sh.password_hash, {COLUMNS}
FROM dashboard_shares sh JOIN sites s USING (site_id)
WHERE sh.token_hash = %s AND sh.revoked_at IS NULL
"""


@dataclass(frozen=True)
class Share:
    """A link as stored: everything but its token and its password's hash."""

    share_id: int
    domain: str
    site_id: int
    protected: bool  # has a password
    created_at: datetime
    revoked_at: datetime | None

    @property
    def embeddable(self) -> bool:
        """A page in another site's frame cannot ask for a password (its cookie would
        be a third party's), so only a link without one can be embedded."""
        return not self.protected


@dataclass(frozen=True)
class NewShare:
    """What `create` returns: the stored link and, this once, its token."""

    share: Share
    token: str = field(repr=False)  # never in a repr, hence never in a log line

    @property
    def path(self) -> str:
        return share_path(self.token)


@dataclass(frozen=True)
class FoundShare:
    """A live link found by its token, with what checks its password."""

    share: Share
    password_hash: str | None = field(repr=False)


def share_path(token: str, *, embed: bool = False) -> str:
    """The link's URL path: /share/TOKEN, with ?embed=true for a frame."""
    return f"/share/{token}" + ("?embed=true" if embed else "")


def _check_schema(connection: Connection) -> None:
    row = connection.execute(TABLE_EXISTS).fetchone()
    if not (row and row[0]):
        raise AccountError("the database has no dashboard tables yet: run `picolytics migrate`")


def _share_of(row: Sequence[Any]) -> Share:
    return Share(*row)


def create(connection: Connection, domain: str, password: str | None = None) -> NewShare:
    """A new link to the site's dashboard, with an optional password (10+ characters)."""
    site = normalise_domain(domain)
    if password is not None:
        check_password(password)
    hashed = hash_password(password) if password is not None else None
    token = new_token()
    with connection.transaction():
        _check_schema(connection)
        row = connection.execute(SELECT_SITE, (site,)).fetchone()
        if row is None:
            raise unknown_site(connection, site)
        created = connection.execute(INSERT_SHARE, (row[0], token_hash(token), hashed)).fetchone()
        assert created is not None  # INSERT ... RETURNING of one row
        shown = connection.execute(SELECT_BY_ID, (created[0],)).fetchone()
    assert shown is not None  # the row just inserted
    return NewShare(_share_of(shown), token)


def list_shares(connection: Connection) -> list[Share]:
    """Every link, revoked ones too, oldest first."""
    with connection.transaction():
        _check_schema(connection)
        return [_share_of(row) for row in connection.execute(SELECT_SHARES)]


def revoke(connection: Connection, share_id: int) -> tuple[Share, bool]:
    """Revoke a link from now on; (the link, whether this call revoked it: False if it
    was revoked already). An unknown id is an AccountOptionError."""
    with connection.transaction():
        _check_schema(connection)
        revoked = connection.execute(REVOKE_SHARE, (share_id,)).fetchone() is not None
        row = connection.execute(SELECT_BY_ID, (share_id,)).fetchone()
    if row is None:
        raise AccountOptionError(f"no shared link {share_id} (`picolytics share list`)")
    return _share_of(row), revoked


async def find(connection: AsyncConnection[Any], token: str) -> FoundShare | None:
    """The live (not revoked) link of this token, or None. Found by the token's hash,
    compared once more in constant time; a malformed token costs no query."""
    if not is_token(token):
        return None
    digest = token_hash(token)
    row = await (await connection.execute(FIND_SHARE, (digest,))).fetchone()
    if row is None or not hmac.compare_digest(bytes(row[0]), digest):
        return None
    return FoundShare(_share_of(row[2:]), row[1])


async def password_matches(found: FoundShare, password: str) -> bool:
    """Does the password open this link? (The hash runs in a thread.)"""
    if found.password_hash is None:
        return True
    return await asyncio.to_thread(verify_password, found.password_hash, password)
