"""`POST /api/v2/query`: Plausible's Stats API v2 over HTTP (docs/api-v2.md).

One request, in this order:
1. the body, at most MAX_BODY_BYTES (413), whole within BODY_READ_TIMEOUT_S (408);
2. who asks, by the injected authenticator (api/auth.py; by default the API key): 401
   without a key or with an unknown or revoked one, 429 with `Retry-After` over its
   rate limit (serve/ also lets in the dashboard's login and shared links);
3. the body as strict JSON (400), the site it names: a site that does not exist and
   a site outside the asker's scope both get the 401 of an invalid key, word for word,
   so an answer never tells which sites exist;
4. the query, checked (api/v2_request.py) in the site's zone, from its first day of
   stats, its `is` goal filters against the site's goals (api/v2_rules.py), and
   translated (api/v2_translate.py): 400 naming the part that is wrong or not
   supported yet;
5. the query layer's answers (stats/engine.py) to the plan's questions (the main one,
   and the denominators of percentage and the conversion rates) in one read-only
   snapshot, each statement under QUERY_TIMEOUT_SEC: a QueryError is 400, a timeout
   503; an unreachable database is 503 too. Then 200 with Plausible's shape
   (api/v2_response.py).

Every refusal is `{"error": "..."}`. From step 2 on the work runs in a task beside a
watcher of the client's connection: when the client goes away the task is cancelled,
and psycopg cancels the running statement in PostgreSQL, so no query outlives its
request. Each request opens one connection of its own (autocommit; psycopg_pool is
not a dependency), for the key, the site and the query.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Final

import psycopg
from psycopg import AsyncConnection
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive

from picolytics.api.auth import (
    INVALID_KEY,
    Authenticator,
    BearerKeys,
    KeyRateLimiter,
    authorize_site,
    error_response,
    identify,
)
from picolytics.api.v2_query import SiteContext
from picolytics.api.v2_request import parse, requested_site
from picolytics.api.v2_response import response
from picolytics.api.v2_rules import check_goal_names, names_goals
from picolytics.api.v2_translate import Answers, Plan, translate
from picolytics.errors import (
    ApiAuthError,
    ApiRequestError,
    QueryError,
    QueryTimeoutError,
    first_line,
)
from picolytics.stats.engine import run, snapshot
from picolytics.stats.goals import load_goals
from picolytics.stats.query import Query, Result
from picolytics.storage.api_keys import normalise_domain

log = logging.getLogger(__name__)

MAX_BODY_BYTES: Final = 64 * 1024
BODY_READ_TIMEOUT_S: Final = 10.0
# The site, its zone, and its first local day of stats: the first rolled-up day or
# the day of its oldest event, whichever is older (rollups outlive pruned raw rows).
SELECT_SITE: Final = """
SELECT s.site_id, s.domain, s.timezone,
       least((SELECT min(r.day) FROM rollup_days r WHERE r.site_id = s.site_id),
             (SELECT (e.received_at AT TIME ZONE s.timezone)::date FROM events e
              WHERE e.site_id = s.site_id ORDER BY e.received_at LIMIT 1)) AS first_day
FROM sites s WHERE s.domain = %s
"""
# Where the query layer's field names point in the body (stats/validate.py's fields).
_POINTERS: Final = {
    "metrics": "#/metrics",
    "interval": "#/dimensions",
    "breakdown": "#/dimensions",
    "filters": "#/filters",
    "order_by": "#/order_by",
    "limit": "#/pagination/limit",
    "offset": "#/pagination/offset",
}
DATABASE_DOWN: Final = "The database is unavailable; please try again later."


class Refused(Exception):  # noqa: N818 - an answer, not a failure
    """A request answered with `status` and `{"error": message}`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(frozen=True, slots=True)
class Site:
    site_id: int
    domain: str
    timezone: str
    first_day: date | None


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def read_body(request: Request) -> bytes:
    """The body, or Refused: 413 over MAX_BODY_BYTES, 408 when it comes too slowly."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise Refused(413, f"The request body is larger than {MAX_BODY_BYTES} bytes.")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(BODY_READ_TIMEOUT_S):
            async for chunk in request.stream():
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    raise Refused(413, f"The request body is larger than {MAX_BODY_BYTES} bytes.")
                chunks.append(chunk)
    except TimeoutError:
        raise Refused(
            408, f"The request body took longer than {BODY_READ_TIMEOUT_S:g} s."
        ) from None
    return b"".join(chunks)


def _no_constants(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _lone_surrogate(value: object) -> bool:
    """Does any string of the decoded body hold a lone surrogate (a `\\ud800` escape)?
    PostgreSQL could not store it, nor could the answer be written as UTF-8."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if any("\ud800" <= char <= "\udfff" for char in item):
                return True
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
    return False


def decode_json(body: bytes) -> object:
    """The body as JSON (UTF-8, no NaN or Infinity), or an ApiRequestError at `#`."""
    if not body.strip():
        raise ApiRequestError("#", "The request body is empty: send the query as a JSON object.")
    try:
        value = json.loads(body.decode("utf-8"), parse_constant=_no_constants)
    except UnicodeDecodeError:
        raise ApiRequestError("#", "The request body is not valid UTF-8.") from None
    except RecursionError:
        raise ApiRequestError("#", "The request body is nested too deeply.") from None
    except ValueError as error:  # JSONDecodeError, NaN, an integer of too many digits
        raise ApiRequestError("#", f"The request body is not valid JSON: {error}.") from None
    if _lone_surrogate(value):
        raise ApiRequestError("#", "A string holds a lone surrogate: not valid Unicode.")
    return value


async def find_site(connection: AsyncConnection[Any], domain: str) -> Site | None:
    cursor = await connection.execute(SELECT_SITE, (normalise_domain(domain),))
    row = await cursor.fetchone()
    return Site(*row) if row else None


async def ask(connection: AsyncConnection[Any], plan: Plan, timeout_s: float) -> Answers:
    """The answers to every question of the plan, in the caller's snapshot."""

    async def one(question: Query | None) -> Result | None:
        if question is None:
            return None
        return await run(connection, question, timeout_s=timeout_s)

    main = await run(connection, plan.main, timeout_s=timeout_s)
    totals = await one(plan.totals)
    return Answers(main, totals, await one(plan.conversion_totals), await one(plan.group_totals))


async def _disconnected(receive: Receive) -> None:
    """Return once the client has gone (the body was read: nothing else may come)."""
    while (await receive())["type"] != "http.disconnect":
        pass


class QueryApi:
    """The handler of POST /api/v2/query: `handle` is its Starlette endpoint."""

    def __init__(
        self,
        conninfo: str,
        *,
        timeout_s: float,
        rate_limit: int = 0,
        limiter: KeyRateLimiter | None = None,
        authenticator: Authenticator | None = None,
    ) -> None:
        """`limiter` (else one of `rate_limit` a minute) counts the keys' requests;
        `authenticator` says who asks (else the Bearer keys of that limiter)."""
        self.conninfo = conninfo
        self.timeout_s = timeout_s
        self.limiter = limiter or KeyRateLimiter(rate_limit)
        self.authenticator = authenticator or BearerKeys(self.limiter)

    async def handle(self, request: Request) -> Response:
        now = datetime.now(UTC)
        try:
            body = await read_body(request)
        except Refused as refused:
            return _error(refused.status, refused.message)
        except ClientDisconnect:
            return Response(status_code=400)  # nobody is there to read it
        work = asyncio.create_task(self._answer(request, body, now))
        gone = asyncio.create_task(_disconnected(request.receive))
        try:
            await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (work, gone):
                task.cancel()
            for task in (work, gone):
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if work.cancelled():
            return Response(status_code=499)  # the client went away; nobody reads this
        return work.result()

    async def _answer(self, request: Request, body: bytes, now: datetime) -> Response:
        try:
            return await self._query(request, body, now)
        except ApiAuthError as refused:
            return error_response(refused)
        except ApiRequestError as error:
            return _error(400, str(error))
        except QueryError as error:
            message = str(error).removeprefix(f"{error.field}: ")
            return _error(400, f"{_POINTERS.get(error.field, '#')}: {message}")
        except QueryTimeoutError:
            return _error(
                503,
                f"The query ran past the time limit of {self.timeout_s:g} s and was stopped: "
                "ask for a shorter period or fewer rows, or try again later.",
            )
        except psycopg.Error as error:
            log.warning("stats API: the database failed: %s", first_line(error))
            return _error(503, DATABASE_DOWN)

    async def _query(self, request: Request, raw: bytes, now: datetime) -> Response:
        connect_timeout = max(1, math.ceil(self.timeout_s))
        async with await AsyncConnection.connect(
            self.conninfo, autocommit=True, connect_timeout=connect_timeout
        ) as connection:
            who = await identify(self.authenticator, request, connection)
            body = decode_json(raw)
            domain = requested_site(body)
            authorize_site(who, domain)
            site = await find_site(connection, domain)
            if site is None:  # the same answer as a site outside the key's scope
                raise ApiAuthError(401, INVALID_KEY)
            query = parse(body, site=SiteContext(site.timezone, site.first_day), now=now)
            if names_goals(query):
                goals = await load_goals(connection, (site.site_id,))
                check_goal_names(query, {goal.display_name for goal in goals})
            plan = translate(query, (site.site_id,))
            async with snapshot(connection, self.timeout_s):
                answers = await ask(connection, plan, self.timeout_s)
        return JSONResponse(response(plan, answers, site.domain))
