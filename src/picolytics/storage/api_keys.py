"""Stats API keys in the `api_keys` table (migration 0009, docs/api-keys.md).

A key is `pico_` and 43 URL-safe characters: 32 random bytes. It exists in clear only
in what `create` returns, once; the table keeps its SHA-256, the first 12 characters
to tell keys apart, the sites it may read (normalised domains; NULL for all), and
when it was created and revoked. Because a key is that random, a fast hash is the
right one: a digest gives nothing to guess from, so no salt or slow hash is needed.

`create`, `list_keys` and `revoke` serve `picolytics api-key` (synchronous, one
transaction each); `authenticate` serves the API on the server's event loop.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import psycopg
from psycopg import AsyncConnection, errors

from picolytics import text
from picolytics.errors import ApiKeyError, ApiKeyOptionError
from picolytics.storage import database

Connection = psycopg.Connection[tuple[Any, ...]]
T = TypeVar("T")

KEY_PREFIX = "pico_"
SECRET_BYTES = 32
# What may follow the prefix: token_urlsafe(32) is 43 characters of base64url.
_KEY = re.compile(r"pico_[A-Za-z0-9_-]{43}")
DISPLAY_LENGTH = 12  # "pico_" and 7 random characters
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._:@-]{0,63}")  # as the table's CHECK says
_DOMAIN = re.compile(r"(?=.{1,253}$)[a-z0-9]([a-z0-9.-]*[a-z0-9])?")

TABLE_EXISTS = "SELECT to_regclass('api_keys') IS NOT NULL"
COLUMNS = "key_id, name, key_prefix, sites, created_at, revoked_at"
INSERT_KEY = f"""
INSERT INTO api_keys (name, key_hash, key_prefix, sites) VALUES (%s, %s, %s, %s)
RETURNING {COLUMNS}
"""
SELECT_KEYS = f"SELECT {COLUMNS} FROM api_keys ORDER BY created_at, key_id"
SELECT_BY_NAME = f"SELECT {COLUMNS} FROM api_keys WHERE name = %s"
REVOKE_KEY = f"""
UPDATE api_keys SET revoked_at = now() WHERE name = %s AND revoked_at IS NULL
RETURNING {COLUMNS}
"""
# The lookup of every API request: the unique index on key_hash, revoked keys left out.
SELECT_BY_HASH = f"""
SELECT key_hash, {COLUMNS} FROM api_keys WHERE key_hash = %s AND revoked_at IS NULL
"""


@dataclass(frozen=True)
class ApiKey:
    """A key as stored: everything but the key itself."""

    key_id: int
    name: str
    prefix: str  # the key's first characters, for display only
    sites: tuple[str, ...] | None  # normalised domains; None: every site
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class NewKey:
    """What `create` returns: the stored key and, this once, the key in clear."""

    key: ApiKey
    clear: str = field(repr=False)  # never in a repr, hence never in a log line


def _key_of(row: Sequence[Any]) -> ApiKey:
    key_id, name, prefix, sites, created_at, revoked_at = row
    return ApiKey(key_id, name, prefix, tuple(sites) if sites else None, created_at, revoked_at)


def key_hash(presented: str) -> bytes:
    """The SHA-256 of a key as presented: what the table holds."""
    return hashlib.sha256(presented.encode("utf-8")).digest()


def may_read(key: ApiKey, domain: str) -> bool:
    """May this key read this site's statistics? A revoked key reads nothing."""
    if key.revoked_at is not None:
        return False
    return key.sites is None or text.normalise_domain(domain) in key.sites


def _check_name(name: str) -> None:
    if not _NAME.fullmatch(name):
        raise ApiKeyOptionError(
            f"--name: {name!r} is not a key name (1-64 letters, digits, space or ._:@-, "
            "starting with a letter or digit)"
        )


def _scope(sites: Sequence[str]) -> list[str] | None:
    domains: list[str] = []
    for site in sites:
        domain = text.normalise_domain(site)
        if not _DOMAIN.fullmatch(domain):
            raise ApiKeyOptionError(f"--site: {site!r} is not a domain (e.g. example.com)")
        if domain not in domains:
            domains.append(domain)
    return domains or None


def _check_schema(connection: Connection) -> None:
    row = connection.execute(TABLE_EXISTS).fetchone()
    if not (row and row[0]):
        raise ApiKeyError("the database has no api_keys table yet: run `picolytics migrate`")


def create(connection: Connection, name: str, sites: Sequence[str] = ()) -> NewKey:
    """A new key named `name`, reading `sites` (none: every site); its clear text is
    in the result and nowhere else."""
    _check_name(name)
    scope = _scope(sites)
    clear = KEY_PREFIX + secrets.token_urlsafe(SECRET_BYTES)
    try:
        with connection.transaction():
            _check_schema(connection)
            row = connection.execute(
                INSERT_KEY, (name, key_hash(clear), clear[:DISPLAY_LENGTH], scope)
            ).fetchone()
    except errors.UniqueViolation:
        # The name (a 256-bit key colliding is not a thing that happens).
        raise ApiKeyOptionError(
            f"--name: a key named {name!r} exists already (a revoked key keeps its name)"
        ) from None
    assert row is not None  # INSERT ... RETURNING of one row
    return NewKey(_key_of(row), clear)


def list_keys(connection: Connection) -> list[ApiKey]:
    """Every key, revoked ones too, oldest first."""
    with connection.transaction():
        _check_schema(connection)
        return [_key_of(row) for row in connection.execute(SELECT_KEYS)]


def revoke(connection: Connection, name: str) -> tuple[ApiKey, bool]:
    """Revoke the key named `name` from now on; (the key, whether this call revoked
    it: False if it was revoked already). An unknown name is an ApiKeyOptionError."""
    with connection.transaction():
        _check_schema(connection)
        row = connection.execute(REVOKE_KEY, (name,)).fetchone()
        if row is not None:
            return _key_of(row), True
        row = connection.execute(SELECT_BY_NAME, (name,)).fetchone()
    if row is None:
        raise ApiKeyOptionError(f"no API key named {name!r} (`picolytics api-key list`)")
    return _key_of(row), False


async def authenticate(connection: AsyncConnection[Any], presented: str) -> ApiKey | None:
    """The key, not revoked, whose hash is that of `presented`; None otherwise.

    Found by its hash (the unique index), then the digests are compared once more in
    constant time: what reaches the comparison never depends on how much of a guess
    was right. A string that is not shaped like a key is refused without a query."""
    if not _KEY.fullmatch(presented):
        return None
    digest = key_hash(presented)
    cursor = await connection.execute(SELECT_BY_HASH, (digest,))
    row = await cursor.fetchone()
    if row is None or not hmac.compare_digest(bytes(row[0]), digest):
        return None
    return _key_of(row[1:])


def connected(conninfo: str, action: Callable[[Connection], T]) -> T:
    """Run `action` on a new connection; a database failure becomes a ApiKeyError."""
    return database.connected(
        conninfo,
        action,
        lambda detail: ApiKeyError(f"cannot read or change the API keys in the database: {detail}"),
    )
