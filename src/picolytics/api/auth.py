"""Who asks the Stats API, and whether they may: a request's API key, its sites, its
rate limit; and the `Authenticator` an endpoint is given to find out.

An `Authenticator` turns a request into its `Principal` (anything with the `sites` it
may read: a key, a dashboard login, a shared link), or None when the request carries
no credential of the kind it reads, or refuses it with an ApiAuthError. `BearerKeys`
is the default, API keys; `FirstOf` tries several in turn (serve/ adds the dashboard's
session and shared links after the key, dashboard/api_access.py), and `identify`
turns "nobody" into the 401 of a missing key.

A request names its key as `Authorization: Bearer KEY`, as Plausible's API wants.
`authenticate_request` finds the key (storage/api_keys.py: by its SHA-256, compared
in constant time, revoked keys refused) and takes one request from the key's token
bucket; `authorize_site` then checks the site the request asks about. Each refusal is
an ApiAuthError with Plausible's status and message, which `error_response` turns
into the answer: 401 for a missing, unknown or revoked key and for a site outside
the key's scope (one message for all three, as Plausible does, so an answer does not
tell which sites exist), 429 with `Retry-After` over the rate limit.

Nothing here keeps a key in clear: buckets are keyed by the key's id.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, Protocol

from psycopg import AsyncConnection
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse

from picolytics.errors import ApiAuthError
from picolytics.storage import api_keys
from picolytics.storage.api_keys import ApiKey
from picolytics.text import normalise_domain

MISSING_KEY = "Missing API key. Please use a valid Plausible API key as a Bearer Token."
INVALID_KEY = (
    "Invalid API key or site ID. Please make sure you're using a valid API key with "
    "access to the site you've requested."
)
TOO_MANY = "Too many API requests. Your API key is limited to {limit} requests per minute."


class KeyRateLimiter:
    """A token bucket per API key: `per_minute` requests a minute, refilled evenly, and
    a burst of the whole minute's budget. 0 means no limit.

    Per process, like REQUEST_RATE_LIMIT. Only keys that authenticated get a bucket,
    so the table is as small as the api_keys table; a bucket holds (tokens, updated)."""

    def __init__(self, per_minute: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.rate = per_minute / 60  # tokens per second
        self.clock = clock
        self._buckets: dict[int, tuple[float, float]] = {}

    def wait(self, key_id: int) -> int:
        """Take one request from the key's bucket: 0 if it may go ahead now, else the
        whole seconds (at least 1) until the bucket holds a request again."""
        if self.per_minute <= 0:
            return 0
        now = self.clock()
        tokens, updated = self._buckets.get(key_id, (float(self.per_minute), now))
        tokens = min(float(self.per_minute), tokens + (now - updated) * self.rate)
        if tokens >= 1:
            self._buckets[key_id] = (tokens - 1, now)
            return 0
        self._buckets[key_id] = (tokens, now)
        # Less a hair, so that float noise (0.95 refilled of 1) does not add a second.
        return max(1, math.ceil((1 - tokens) / self.rate - 1e-9))


def bearer_key(request: HTTPConnection) -> str:
    """The key of `Authorization: Bearer KEY`; without one, a 401 ApiAuthError."""
    scheme, _, token = request.headers.get("authorization", "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise ApiAuthError(401, MISSING_KEY)
    return token


async def authenticate_request(
    request: HTTPConnection, connection: AsyncConnection[Any], limiter: KeyRateLimiter
) -> ApiKey:
    """The request's valid API key, its request counted; else an ApiAuthError: 401 for
    no key, an unknown or a revoked one, 429 when the key is over its rate limit."""
    key = await api_keys.authenticate(connection, bearer_key(request))
    if key is None:
        raise ApiAuthError(401, INVALID_KEY)
    wait = limiter.wait(key.key_id)
    if wait:
        raise ApiAuthError(429, TOO_MANY.format(limit=limiter.per_minute), retry_after=wait)
    return key


class Principal(Protocol):
    """Who asks: the sites they may read (normalised domains; None: every site)."""

    @property
    def sites(self) -> tuple[str, ...] | None: ...


class Authenticator(Protocol):
    async def __call__(
        self, request: HTTPConnection, connection: AsyncConnection[Any]
    ) -> Principal | None:
        """The request's principal; None when it carries no credential of this kind;
        an ApiAuthError when it carries one that is wrong or over its limit."""
        ...


class BearerKeys:
    """The API keys of `Authorization` headers, each counted in `limiter`."""

    def __init__(self, limiter: KeyRateLimiter) -> None:
        self.limiter = limiter

    async def __call__(
        self, request: HTTPConnection, connection: AsyncConnection[Any]
    ) -> ApiKey | None:
        scheme = request.headers.get("authorization", "").strip().partition(" ")[0]
        if scheme.lower() != "bearer":
            # No key: not even the Basic credentials of a proxy in front, which the
            # browser sends along with the dashboard's own calls.
            return None
        return await authenticate_request(request, connection, self.limiter)


class FirstOf:
    """The first principal one of `authenticators` finds, in their order."""

    def __init__(self, *authenticators: Authenticator) -> None:
        self.authenticators = authenticators

    async def __call__(
        self, request: HTTPConnection, connection: AsyncConnection[Any]
    ) -> Principal | None:
        for authenticator in self.authenticators:
            found = await authenticator(request, connection)
            if found is not None:
                return found
        return None


async def identify(
    authenticator: Authenticator, request: HTTPConnection, connection: AsyncConnection[Any]
) -> Principal:
    """The request's principal, or the 401 of a missing key when it names nobody."""
    found = await authenticator(request, connection)
    if found is None:
        raise ApiAuthError(401, MISSING_KEY)
    return found


def authorize_site(who: Principal, domain: str) -> None:
    """A 401 ApiAuthError unless `who` may read the site (its `site_id`)."""
    if isinstance(who, ApiKey):
        allowed = api_keys.may_read(who, domain)  # a revoked key reads nothing
    else:
        allowed = who.sites is None or normalise_domain(domain) in who.sites
    if not allowed:
        raise ApiAuthError(401, INVALID_KEY)


def error_response(error: ApiAuthError) -> JSONResponse:
    """The answer to a refused request: `{"error": message}`, and `Retry-After`."""
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after else None
    return JSONResponse({"error": error.message}, status_code=error.status, headers=headers)
