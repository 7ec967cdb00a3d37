"""Dashboard accounts, their login sessions and the one-time setup link, in the tables
of migration 0011 (docs/dashboard-accounts.md).

Addresses are stored case-folded, passwords as scrypt hashes, session and setup tokens
as their SHA-256 (storage/passwords.py). `authenticate` does the same work for an
address without an account as for one with an account: it checks the password
against a hash of the same cost that no password matches, so neither its answer nor
the time it takes tells whether an account exists. A changed password or a removed
account ends the account's sessions.

The CLI (`picolytics user`, cli/users.py) uses the synchronous functions, one
transaction each; the server's login (dashboard/) the async ones, which hash in a
thread. Times of sessions and setup links come from the caller's clock.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

import psycopg
from psycopg import AsyncConnection

from picolytics.errors import AccountError, AccountOptionError
from picolytics.storage import database
from picolytics.storage.passwords import (
    DUMMY_HASH,
    MAX_PASSWORD,
    check_password,
    hash_password,
    is_token,
    needs_rehash,
    new_token,
    normalise_email,
    token_hash,
    verify_password,
)

Connection = psycopg.Connection[tuple[Any, ...]]
T = TypeVar("T")

SETUP_VALID = timedelta(hours=24)
SEEN_EVERY = timedelta(minutes=1)  # last_seen_at is written at most this often

TABLE_EXISTS = "SELECT to_regclass('dashboard_users') IS NOT NULL"
USER = "user_id, email, created_at, password_changed_at"
OF_U = "u.user_id, u.email, u.created_at, u.password_changed_at"
INSERT_USER = f"INSERT INTO dashboard_users (email, password_hash) VALUES (%s, %s) RETURNING {USER}"
SELECT_USERS = f"""
SELECT {OF_U}, count(s.session_id) FILTER (WHERE s.expires_at > now()),
       max(s.last_seen_at) FILTER (WHERE s.expires_at > now())
FROM dashboard_users u LEFT JOIN dashboard_sessions s USING (user_id)
GROUP BY u.user_id ORDER BY u.created_at, u.user_id
"""
SELECT_LOGIN = f"SELECT password_hash, {USER} FROM dashboard_users WHERE email = %s"
DELETE_USER = "DELETE FROM dashboard_users WHERE email = %s RETURNING user_id"
CHANGE_HASH = """
UPDATE dashboard_users SET password_hash = %s, password_changed_at = now()
WHERE email = %s RETURNING user_id
"""
REHASH = "UPDATE dashboard_users SET password_hash = %s WHERE user_id = %s"
END_SESSIONS = "DELETE FROM dashboard_sessions WHERE user_id = %s AND expires_at > now()"
ANY_USER = "SELECT EXISTS (SELECT FROM dashboard_users)"
INSERT_SESSION = """
INSERT INTO dashboard_sessions (token_hash, user_id, created_at, expires_at, last_seen_at)
VALUES (%s, %s, %s, %s, %s)
"""
# The lookup of every request: the unique index, then last_seen_at at most once a
# minute (so a page's many API calls do not each write).
FIND_SESSION = f"""
WITH found AS (
    SELECT s.token_hash, s.session_id, s.expires_at, s.last_seen_at, {OF_U}
    FROM dashboard_sessions s JOIN dashboard_users u USING (user_id)
    WHERE s.token_hash = %(hash)s AND s.expires_at > %(now)s
), touched AS (
    UPDATE dashboard_sessions d SET last_seen_at = %(now)s FROM found
    WHERE d.session_id = found.session_id AND found.last_seen_at < %(stale)s
)
SELECT token_hash, session_id, expires_at, {USER} FROM found
"""
DELETE_SESSION = "DELETE FROM dashboard_sessions WHERE token_hash = %s"
EXPIRE = [
    "DELETE FROM dashboard_sessions WHERE expires_at <= %(now)s",
    "DELETE FROM dashboard_setup_tokens WHERE expires_at <= %(now)s OR used_at IS NOT NULL",
]
INSERT_SETUP = """
INSERT INTO dashboard_setup_tokens (token_hash, created_at, expires_at) VALUES (%s, %s, %s)
"""
SETUP_VALID_SQL = """
SELECT NOT EXISTS (SELECT FROM dashboard_users) AND EXISTS (
    SELECT FROM dashboard_setup_tokens
    WHERE token_hash = %s AND used_at IS NULL AND expires_at > %s)
"""
USE_SETUP = """
UPDATE dashboard_setup_tokens SET used_at = %s
WHERE token_hash = %s AND used_at IS NULL AND expires_at > %s RETURNING token_id
"""


@dataclass(frozen=True)
class User:
    user_id: int
    email: str  # case-folded
    created_at: datetime
    password_changed_at: datetime


@dataclass(frozen=True)
class Listing:
    """A row of `picolytics user list`: the account, its live sessions, last seen."""

    user: User
    sessions: int
    last_seen_at: datetime | None


@dataclass(frozen=True)
class Session:
    """A live login: its account and when it ends (never the token itself)."""

    session_id: int
    user: User
    expires_at: datetime


# -- the CLI: synchronous, one transaction each ----------------------------------------


def _check_schema(connection: Connection) -> None:
    row = connection.execute(TABLE_EXISTS).fetchone()
    if not (row and row[0]):
        raise AccountError("the database has no dashboard tables yet: run `picolytics migrate`")


def add_user(connection: Connection, email: str, password: str) -> User:
    """A new account; an AccountOptionError for a bad address or password, or one taken."""
    address = normalise_email(email)
    check_password(password)
    hashed = hash_password(password)
    try:
        with connection.transaction():
            _check_schema(connection)
            row = connection.execute(INSERT_USER, (address, hashed)).fetchone()
    except psycopg.errors.UniqueViolation:
        raise AccountOptionError(
            f"an account for {address!r} exists already (`picolytics user set-password`)"
        ) from None
    assert row is not None  # INSERT ... RETURNING of one row
    return User(*row)


def list_users(connection: Connection) -> list[Listing]:
    with connection.transaction():
        _check_schema(connection)
        rows = connection.execute(SELECT_USERS).fetchall()
    return [Listing(User(*row[:4]), row[4], row[5]) for row in rows]


def _unknown(email: str) -> AccountOptionError:
    return AccountOptionError(f"no account for {email!r} (`picolytics user list`)")


def remove_user(connection: Connection, email: str) -> None:
    """Remove the account and, with it, its sessions."""
    address = normalise_email(email)
    with connection.transaction():
        _check_schema(connection)
        if connection.execute(DELETE_USER, (address,)).fetchone() is None:
            raise _unknown(address)


def set_password(connection: Connection, email: str, password: str) -> int:
    """Change the account's password and end its sessions; how many were ended."""
    address = normalise_email(email)
    check_password(password)
    hashed = hash_password(password)
    with connection.transaction():
        _check_schema(connection)
        row = connection.execute(CHANGE_HASH, (hashed, address)).fetchone()
        if row is None:
            raise _unknown(address)
        return connection.execute(END_SESSIONS, (row[0],)).rowcount


def connected(conninfo: str, action: Callable[[Connection], T]) -> T:
    """Run `action` on a new connection; a database failure becomes an AccountError."""
    return database.connected(
        conninfo,
        action,
        lambda detail: AccountError(
            f"cannot read or change the dashboard accounts or shared links: {detail}"
        ),
    )


# -- the server: logins, sessions, the setup link --------------------------------------


async def authenticate(connection: AsyncConnection[Any], email: str, password: str) -> User | None:
    """The account if the password is its own, else None, after the same work either
    way (a malformed address or an unknown one is checked against DUMMY_HASH)."""
    try:
        address = normalise_email(email)
    except AccountOptionError:
        address = ""
    row = None
    if address and len(password) <= 4 * MAX_PASSWORD:
        row = await (await connection.execute(SELECT_LOGIN, (address,))).fetchone()
    stored = row[0] if row else DUMMY_HASH
    matches = await asyncio.to_thread(verify_password, stored, password)
    if row is None or not matches:
        return None
    user = User(*row[1:])
    if needs_rehash(stored):  # a hash of an older, lower cost: upgrade it now
        rehashed = await asyncio.to_thread(hash_password, password)
        await connection.execute(REHASH, (rehashed, user.user_id))
    return user


async def create_session(
    connection: AsyncConnection[Any], user: User, now: datetime, lifetime: timedelta
) -> str:
    """A new session of `user` until now + lifetime; its token, which only the cookie keeps."""
    token = new_token()
    await connection.execute(
        INSERT_SESSION, (token_hash(token), user.user_id, now, now + lifetime, now)
    )
    return token


async def find_session(
    connection: AsyncConnection[Any], token: str, now: datetime
) -> Session | None:
    """The live session of this token, or None (unknown, malformed, expired)."""
    if not is_token(token):
        return None
    digest = token_hash(token)
    params = {"hash": digest, "now": now, "stale": now - SEEN_EVERY}
    row = await (await connection.execute(FIND_SESSION, params)).fetchone()
    if row is None or not hmac.compare_digest(bytes(row[0]), digest):
        return None
    return Session(row[1], User(*row[3:]), row[2])


async def delete_session(connection: AsyncConnection[Any], token: str) -> None:
    await connection.execute(DELETE_SESSION, (token_hash(token),))


async def expire(connection: AsyncConnection[Any], now: datetime) -> None:
    """Forget ended sessions and setup links that were used or ran out."""
    for statement in EXPIRE:
        await connection.execute(statement, {"now": now})


async def create_setup_token(connection: AsyncConnection[Any], now: datetime) -> str | None:
    """A new setup link's token, valid once for SETUP_VALID; None once an account exists."""
    if (await (await connection.execute(ANY_USER)).fetchone() or (False,))[0]:
        return None
    token = new_token()
    await connection.execute(INSERT_SETUP, (token_hash(token), now, now + SETUP_VALID))
    return token


async def setup_token_valid(connection: AsyncConnection[Any], token: str, now: datetime) -> bool:
    """Would this token create the first account now? (Unused, not expired, no account.)"""
    if not is_token(token):
        return False
    row = await (await connection.execute(SETUP_VALID_SQL, (token_hash(token), now))).fetchone()
    return bool(row and row[0])


async def use_setup_token(
    connection: AsyncConnection[Any], token: str, email: str, password: str, now: datetime
) -> User | None:
    """Create the first account with a valid setup token, using it up; None when the
    token is unknown, used or expired, or an account exists already. A bad address or
    password is an AccountOptionError, and leaves the token as it was."""
    address = normalise_email(email)
    check_password(password)
    if not is_token(token):
        return None
    hashed = await asyncio.to_thread(hash_password, password)
    async with connection.transaction():
        # One setup at a time, so two links cannot both create a "first" account.
        await connection.execute("LOCK TABLE dashboard_setup_tokens IN EXCLUSIVE MODE")
        if (await (await connection.execute(ANY_USER)).fetchone() or (True,))[0]:
            return None
        cursor = await connection.execute(USE_SETUP, (now, token_hash(token), now))
        if await cursor.fetchone() is None:
            return None
        row = await (await connection.execute(INSERT_USER, (address, hashed))).fetchone()
    assert row is not None  # INSERT ... RETURNING of one row
    return User(*row)
