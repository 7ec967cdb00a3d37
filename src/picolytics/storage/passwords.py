"""Secrets as the dashboard's tables keep them: password hashes and token digests.

A password is kept as its scrypt hash (`hashlib.scrypt`: N=2**15, r=8, p=1, a random
16-byte salt per hash), written "scrypt$N$r$p$salt$key" in base64url so that each hash
carries the cost it was made with: `verify_password` uses that cost, `needs_rehash`
tells an older, cheaper one. At most two hashes are computed at once in a process
(each takes 32 MiB at this cost); callers on an event loop run them in a thread.
`DUMMY_HASH` has today's cost and a random key that no password derives to: checking
a password against it costs what checking a real one does, which is how a login for
an unknown address takes as long as one for a known address.

Session, setup and shared-link tokens are 32 random bytes (`new_token`, 43 base64url
characters), of which only the SHA-256 is stored: that random, a fast digest gives
nothing to guess from (as for API keys, storage/api_keys.py).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import threading
import unicodedata

from picolytics.errors import AccountOptionError

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
SALT_BYTES, KEY_BYTES = 16, 32
MAX_SCRYPT_MEMORY = 256 * 1024 * 1024  # refuse a stored cost beyond this
_HASHING = threading.BoundedSemaphore(2)
MIN_PASSWORD, MAX_PASSWORD = 10, 1024
MAX_EMAIL = 254
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")
TOKEN_BYTES = 32
_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")  # token_urlsafe(32)


def normalise_email(text: str) -> str:
    """The address as stored: NFKC, case-folded, trimmed; else an AccountOptionError."""
    email = unicodedata.normalize("NFKC", text).strip().casefold()
    if len(email) > MAX_EMAIL or not _EMAIL.fullmatch(email):
        raise AccountOptionError(f"{text[:80]!r} is not an e-mail address (name@example.com)")
    return email


def check_password(password: str) -> None:
    """An AccountOptionError unless the password is 10 to 1024 characters long."""
    length = len(unicodedata.normalize("NFC", password))
    if length < MIN_PASSWORD:
        raise AccountOptionError(
            f"the password is too short: it needs at least {MIN_PASSWORD} characters, "
            f"this one has {length}"
        )
    if length > MAX_PASSWORD:
        raise AccountOptionError(
            f"the password is too long: at most {MAX_PASSWORD} characters, this one has {length}"
        )


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _derive(password: str, salt: bytes, cost: tuple[int, int, int], size: int) -> bytes:
    # NFC: the same password typed on two systems is the same bytes.
    data = unicodedata.normalize("NFC", password).encode("utf-8", "surrogatepass")
    n, r, p = cost
    memory = 128 * r * (n + p + 2) + 1024 * 1024
    with _HASHING:
        return hashlib.scrypt(data, salt=salt, n=n, r=r, p=p, maxmem=memory, dklen=size)


def hash_password(password: str) -> str:
    """A new scrypt hash of `password`, with a salt of its own."""
    salt = secrets.token_bytes(SALT_BYTES)
    key = _derive(password, salt, (SCRYPT_N, SCRYPT_R, SCRYPT_P), KEY_BYTES)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(key)}"


DUMMY_HASH = (
    f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}$"
    f"{_b64(secrets.token_bytes(SALT_BYTES))}${_b64(secrets.token_bytes(KEY_BYTES))}"
)


def parse_hash(stored: str) -> tuple[int, int, int, bytes, bytes] | None:
    """(N, r, p, salt, key) of a stored hash; None if malformed or of an absurd cost."""
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        return None
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt, key = _unb64(parts[4]), _unb64(parts[5])
    except (ValueError, binascii.Error):
        return None
    sane = 1 < n <= 2**20 and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 16
    if not sane or 128 * n * r > MAX_SCRYPT_MEMORY or not 16 <= len(key) <= 64:
        return None
    return n, r, p, salt, key


def verify_password(stored: str, password: str) -> bool:
    """Does `password` match the hash? The keys are compared in constant time."""
    parsed = parse_hash(stored)
    if parsed is None:
        return False
    n, r, p, salt, key = parsed
    return hmac.compare_digest(_derive(password, salt, (n, r, p), len(key)), key)


def needs_rehash(stored: str) -> bool:
    """Was the hash made at a lower cost than today's?"""
    parsed = parse_hash(stored)
    if parsed is None:
        return True
    n, r, p = parsed[:3]
    return n < SCRYPT_N or r < SCRYPT_R or p < SCRYPT_P


def new_token() -> str:
    """32 random bytes as 43 base64url characters."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> bytes:
    """The SHA-256 of a token as presented: what the tables hold."""
    return hashlib.sha256(token.encode("utf-8")).digest()


def is_token(text: str) -> bool:
    """Is this shaped like a token of `new_token`? (Checked before any query.)"""
    return _TOKEN.fullmatch(text) is not None
