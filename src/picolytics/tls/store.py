"""Automatic TLS material in PostgreSQL (sql/0003_tls.sql): the ACME account, the
certificates and the pending HTTP-01 answers, shared by every instance on the database.

Plain synchronous psycopg: the ACME client is synchronous too, and both run in a
worker thread. Issuance is serialised across instances with a session-level advisory
lock held for the whole order, so two instances never both order a certificate.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import psycopg

Connection = psycopg.Connection[tuple[object, ...]]

# Two-key advisory locks: this first key ("pico") and a hash of directory and host.
# (Single bigint keys, as the migrations use, live in a separate lock space.)
ISSUANCE_LOCK_CLASS = 0x7069636F


@dataclass(frozen=True)
class StoredAccount:
    key_pem: bytes
    account_url: str


@dataclass(frozen=True)
class StoredCertificate:
    chain_pem: bytes
    key_pem: bytes
    not_before: datetime
    not_after: datetime


def connect(conninfo: str) -> Connection:
    return psycopg.connect(conninfo, autocommit=True)


def load_account(connection: Connection, directory_url: str) -> StoredAccount | None:
    row = connection.execute(
        "SELECT key_pem, account_url FROM tls_accounts WHERE directory_url = %s",
        (directory_url,),
    ).fetchone()
    if row is None:
        return None
    return StoredAccount(str(row[0]).encode(), str(row[1]))


def save_account(connection: Connection, directory_url: str, account: StoredAccount) -> None:
    connection.execute(
        "INSERT INTO tls_accounts (directory_url, key_pem, account_url) VALUES (%s, %s, %s) "
        "ON CONFLICT (directory_url) DO UPDATE "
        "SET key_pem = excluded.key_pem, account_url = excluded.account_url",
        (directory_url, account.key_pem.decode(), account.account_url),
    )


def load_certificate(
    connection: Connection, directory_url: str, host: str
) -> StoredCertificate | None:
    row = connection.execute(
        "SELECT chain_pem, key_pem, not_before, not_after FROM tls_certificates "
        "WHERE directory_url = %s AND host = %s",
        (directory_url, host),
    ).fetchone()
    if row is None:
        return None
    not_before, not_after = row[2], row[3]
    assert isinstance(not_before, datetime) and isinstance(not_after, datetime)
    return StoredCertificate(str(row[0]).encode(), str(row[1]).encode(), not_before, not_after)


def save_certificate(
    connection: Connection, directory_url: str, host: str, certificate: StoredCertificate
) -> None:
    connection.execute(
        "INSERT INTO tls_certificates "
        "(directory_url, host, chain_pem, key_pem, not_before, not_after) "
        "VALUES (%s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (directory_url, host) DO UPDATE SET chain_pem = excluded.chain_pem, "
        "key_pem = excluded.key_pem, not_before = excluded.not_before, "
        "not_after = excluded.not_after, issued_at = now()",
        (
            directory_url,
            host,
            certificate.chain_pem.decode(),
            certificate.key_pem.decode(),
            certificate.not_before,
            certificate.not_after,
        ),
    )


def put_challenge(
    connection: Connection, token: str, key_authorization: str, ttl_seconds: int
) -> None:
    connection.execute("DELETE FROM tls_challenges WHERE expires_at < now()")
    connection.execute(
        "INSERT INTO tls_challenges (token, key_authorization, expires_at) "
        "VALUES (%s, %s, now() + make_interval(secs => %s)) "
        "ON CONFLICT (token) DO UPDATE SET key_authorization = excluded.key_authorization, "
        "expires_at = excluded.expires_at",
        (token, key_authorization, ttl_seconds),
    )


def delete_challenge(connection: Connection, token: str) -> None:
    connection.execute("DELETE FROM tls_challenges WHERE token = %s", (token,))


async def find_challenge(
    connection: psycopg.AsyncConnection[tuple[object, ...]], token: str
) -> str | None:
    """The key authorization of a pending challenge (any instance's), or None."""
    cursor = await connection.execute(
        "SELECT key_authorization FROM tls_challenges WHERE token = %s AND expires_at > now()",
        (token,),
    )
    row = await cursor.fetchone()
    return None if row is None else str(row[0])


def _lock_key(directory_url: str, host: str) -> int:
    """A stable signed 32-bit key (PostgreSQL's int4) for one directory and host."""
    digest = zlib.crc32(f"{directory_url}\n{host}".encode())
    return digest - (1 << 32) if digest >= (1 << 31) else digest


@contextlib.contextmanager
def issuance_lock(connection: Connection, directory_url: str, host: str) -> Iterator[bool]:
    """Try to take the issuance lock of this host without waiting; yields whether it
    was taken (then it is held until the block ends or the connection closes)."""
    key = _lock_key(directory_url, host)
    row = connection.execute(
        "SELECT pg_try_advisory_lock(%s, %s)", (ISSUANCE_LOCK_CLASS, key)
    ).fetchone()
    taken = bool(row and row[0])
    try:
        yield taken
    finally:
        if taken and not connection.closed:
            connection.execute("SELECT pg_advisory_unlock(%s, %s)", (ISSUANCE_LOCK_CLASS, key))
