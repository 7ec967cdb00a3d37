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
client's connection (api/requests.py, shared with v2): when the client goes away the
task is cancelled, and psycopg cancels the running statement in PostgreSQL.
Connections come from a provider, the API's pool (api/pool.py) in the server.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from picolytics.api import v1_response
from picolytics.api.auth import (
    MISSING_KEY,
    Authenticator,
    BearerKeys,
    KeyRateLimiter,
    Principal,
    identify,
)
from picolytics.api.requests import Connect, Connection, Site, answer, error, until_disconnect
from picolytics.api.requests import find_site as find_named_site
from picolytics.api.v1_params import Endpoint, previous_period, read
from picolytics.api.v1_queries import ask
from picolytics.api.v1_sites import list_sites
from picolytics.errors import ApiAuthError, ApiParamError, QueryError
from picolytics.stats.engine import realtime_visitors, snapshot
from picolytics.storage.api_keys import ApiKey

Work = Callable[[Request, Connection, Principal, datetime], Awaitable[Response]]

MISSING_SITE: Final = (
    "Missing site ID. Please provide the required site_id parameter with your request."
)
REALTIME_MINUTES: Final = 5  # Plausible's current visitors: the last 5 minutes
SELECT_GOAL_NAMES: Final = "SELECT display_name FROM goals WHERE site_id = %s"


async def find_site(connection: Connection, who: Principal, params: dict[str, str]) -> Site:
    """The site of `site_id`, if `who` may read it; else Plausible's refusal."""
    domain = params.get("site_id")
    if domain is None:
        raise ApiParamError(MISSING_SITE)
    return await find_named_site(connection, who, domain, first_day=False)


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

        async def on(connection: Connection) -> Response:
            try:
                who = await identify(self.authenticator, request, connection)
                return await work(request, connection, who, now)
            except (ApiParamError, QueryError) as bad:
                return error(400, str(bad))

        answering = answer(self.connect, on, timeout_s=self.timeout_s, api="stats API v1")
        return await until_disconnect(request.receive, answering)

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
    connect: Connect,
    *,
    timeout_s: float,
    limiter: KeyRateLimiter,
    authenticator: Authenticator | None = None,
    prefix: str = "",
) -> list[Route]:
    """The v1 routes over the connections of `connect` (the API's pool), under `prefix`."""
    return StatsApiV1(
        connect, timeout_s=timeout_s, limiter=limiter, authenticator=authenticator
    ).routes(prefix)
