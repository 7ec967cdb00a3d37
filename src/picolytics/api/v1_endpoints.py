"""Plausible's Stats API v1 over HTTP (docs/api-v1.md): the GET endpoints
`/api/v1/stats/realtime/visitors`, `/aggregate`, `/timeseries`, `/breakdown` and
`/api/v1/sites`. `v1_routes` gives their Starlette routes (`StatsApiV1.routes` under
a prefix too: the dashboard asks for its current visitors under /dashboard/).

One request, in Plausible's order:
1. who asks, by the injected authenticator (api/auth.py; by default the API key): 401
   without a key or with an unknown or revoked one, 429 with `Retry-After` over its
   rate limit (the bucket the v2 endpoint counts in too, when it is passed as
   `limiter`); `/api/v1/sites` lists the sites of API keys only;
2. `site_id`: 400 when it is missing; a site that does not exist and a site outside
   the asker's scope both get the 401 of an invalid key, word for word, so an answer
   never tells which sites exist;
3. the query string (api/v1_params.py), in the site's zone: 400 with Plausible's
   message;
4. the query layer's answer (api/v1_queries.py, stats/engine.py) in one read-only
   snapshot, each statement under QUERY_TIMEOUT_SEC: a QueryError is 400, a timeout
   503, an unreachable database 503. Then 200 with Plausible's shape
   (api/v1_response.py).

Every refusal is `{"error": "..."}`. The work runs in a task beside a watcher of the
client's connection: when the client goes away the task is cancelled, and psycopg
cancels the running statement in PostgreSQL. Connections come from a provider
(`connect_to`: one connection per request, as the v2 endpoint opens them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import psycopg
from psycopg import AsyncConnection
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive

from picolytics.api import v1_response
from picolytics.api.auth import (
    INVALID_KEY,
    MISSING_KEY,
    Authenticator,
    BearerKeys,
    KeyRateLimiter,
    Principal,
    authorize_site,
    error_response,
    identify,
)
from picolytics.api.v1_params import Endpoint, previous_period, read
from picolytics.api.v1_queries import ask
from picolytics.api.v1_sites import list_sites
from picolytics.errors import ApiAuthError, ApiParamError, QueryError, QueryTimeoutError, first_line
from picolytics.stats.engine import realtime_visitors, snapshot
from picolytics.storage.api_keys import ApiKey, normalise_domain

log = logging.getLogger(__name__)

Connection = AsyncConnection[Any]
Connect = Callable[[], AbstractAsyncContextManager[Connection]]
Work = Callable[[Request, Connection, Principal, datetime], Awaitable[Response]]

MISSING_SITE: Final = (
    "Missing site ID. Please provide the required site_id parameter with your request."
)
DATABASE_DOWN: Final = "The database is unavailable; please try again later."
REALTIME_MINUTES: Final = 5  # Plausible's current visitors: the last 5 minutes
SELECT_SITE: Final = "SELECT site_id, timezone FROM sites WHERE domain = %s"
SELECT_GOAL_NAMES: Final = "SELECT display_name FROM goals WHERE site_id = %s"


@dataclass(frozen=True, slots=True)
class Site:
    site_id: int
    timezone: str


def connect_to(conninfo: str, timeout_s: float) -> Connect:
    """A provider of one autocommit connection per request to `conninfo`."""

    @contextlib.asynccontextmanager
    async def connect() -> AsyncIterator[Connection]:
        timeout = max(1, math.ceil(timeout_s))
        async with await AsyncConnection.connect(
            conninfo, autocommit=True, connect_timeout=timeout
        ) as connection:
            yield connection

    return connect


async def _disconnected(receive: Receive) -> None:
    """Return once the client has gone (a GET has nothing else to send)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def find_site(connection: Connection, who: Principal, params: dict[str, str]) -> Site:
    """The site of `site_id`, if `who` may read it; else Plausible's refusal."""
    domain = params.get("site_id")
    if domain is None:
        raise ApiParamError(MISSING_SITE)
    authorize_site(who, domain)
    row = None
    if "\x00" not in domain:
        cursor = await connection.execute(SELECT_SITE, (normalise_domain(domain),))
        row = await cursor.fetchone()
    if row is None:  # the same answer as a site outside the key's scope
        raise ApiAuthError(401, INVALID_KEY)
    return Site(int(row[0]), str(row[1]))


async def goal_names(connection: Connection, site: Site, params: dict[str, str]) -> frozenset[str]:
    """The display names of the site's goals, when a filter names a goal."""
    if "event:goal" not in params.get("filters", ""):
        return frozenset()
    cursor = await connection.execute(SELECT_GOAL_NAMES, (site.site_id,))
    return frozenset(str(row[0]) for row in await cursor.fetchall())


class StatsApiV1:
    """The handlers of the v1 endpoints; `routes` are their Starlette routes."""

    def __init__(
        self,
        connect: Connect,
        *,
        timeout_s: float,
        limiter: KeyRateLimiter,
        authenticator: Authenticator | None = None,
    ) -> None:
        self.connect = connect
        self.timeout_s = timeout_s
        self.limiter = limiter
        self.authenticator = authenticator or BearerKeys(limiter)

    def routes(self, prefix: str = "") -> list[Route]:
        """The routes, each path under `prefix` (say "/dashboard")."""

        def stats(endpoint: Endpoint) -> Callable[[Request], Awaitable[Response]]:
            async def handle(request: Request) -> Response:
                return await self.serve(request, lambda *args: self.stats(endpoint, *args))

            return handle

        async def realtime(request: Request) -> Response:
            return await self.serve(request, self.realtime)

        async def sites(request: Request) -> Response:
            return await self.serve(request, self.sites)

        base = f"{prefix}/api/v1/stats"
        return [
            Route(f"{base}/realtime/visitors", realtime, methods=["GET"]),
            Route(f"{base}/aggregate", stats("aggregate"), methods=["GET"]),
            Route(f"{base}/timeseries", stats("timeseries"), methods=["GET"]),
            Route(f"{base}/breakdown", stats("breakdown"), methods=["GET"]),
            Route(f"{prefix}/api/v1/sites", sites, methods=["GET"]),
        ]

    async def serve(self, request: Request, work: Work) -> Response:
        """Answer with `work`, unless the client goes away first (then 499, unread)."""
        now = datetime.now(UTC)
        task = asyncio.create_task(self._answer(request, work, now))
        gone = asyncio.create_task(_disconnected(request.receive))
        try:
            await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in (task, gone):
                waiting.cancel()
            for waiting in (task, gone):
                with contextlib.suppress(asyncio.CancelledError):
                    await waiting
        if task.cancelled():
            return Response(status_code=499)
        return task.result()

    async def _answer(self, request: Request, work: Work, now: datetime) -> Response:
        try:
            async with self.connect() as connection:
                who = await identify(self.authenticator, request, connection)
                return await work(request, connection, who, now)
        except ApiAuthError as refused:
            return error_response(refused)
        except (ApiParamError, QueryError) as error:
            return _error(400, str(error))
        except QueryTimeoutError:
            return _error(
                503,
                f"The query ran past the time limit of {self.timeout_s:g} s and was stopped: "
                "ask for a shorter period or fewer rows, or try again later.",
            )
        except psycopg.Error as error:
            log.warning("stats API v1: the database failed: %s", first_line(error))
            return _error(503, DATABASE_DOWN)

    async def realtime(
        self, request: Request, connection: Connection, who: Principal, now: datetime
    ) -> Response:
        site = await find_site(connection, who, dict(request.query_params))
        visitors = await realtime_visitors(
            connection, (site.site_id,), now, REALTIME_MINUTES, timeout_s=self.timeout_s
        )
        return JSONResponse(visitors)

    async def stats(
        self,
        endpoint: Endpoint,
        request: Request,
        connection: Connection,
        who: Principal,
        now: datetime,
    ) -> Response:
        params = dict(request.query_params)
        site = await find_site(connection, who, params)
        goals = await goal_names(connection, site, params)
        v1 = read(endpoint, params, timezone=site.timezone, now=now, goals=goals)
        timeout = self.timeout_s
        async with snapshot(connection, timeout):
            answer = await ask(connection, v1, site.site_id, timeout_s=timeout)
            if endpoint == "timeseries":
                return JSONResponse(v1_response.timeseries(v1, answer))
            if endpoint == "breakdown":
                return JSONResponse(v1_response.breakdown(v1, answer))
            previous = None
            if v1.compare:
                before = previous_period(v1, site.timezone, now)
                previous = await ask(connection, v1, site.site_id, timeout_s=timeout, period=before)
        return JSONResponse(v1_response.aggregate(v1, answer, previous))

    async def sites(
        self, request: Request, connection: Connection, who: Principal, now: datetime
    ) -> Response:
        if not isinstance(who, ApiKey):  # Plausible's Sites API lists a key's sites
            raise ApiAuthError(401, MISSING_KEY)
        return JSONResponse(await list_sites(connection, who, dict(request.query_params)))


def v1_routes(
    conninfo: str,
    *,
    timeout_s: float,
    limiter: KeyRateLimiter,
    authenticator: Authenticator | None = None,
    prefix: str = "",
) -> list[Route]:
    """The v1 routes over one connection per request to `conninfo`, under `prefix`."""
    return StatsApiV1(
        connect_to(conninfo, timeout_s),
        timeout_s=timeout_s,
        limiter=limiter,
        authenticator=authenticator,
    ).routes(prefix)
