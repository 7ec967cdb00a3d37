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
   the denominators of percentage and the conversion rates, and the pageview row of a
   breakdown by event:name: api/v2_answers.py) in one read-only
   snapshot, each statement under QUERY_TIMEOUT_SEC: a QueryError is 400, a timeout
   503; an unreachable database is 503 too. Then 200 with Plausible's shape
   (api/v2_response.py).

Every refusal is `{"error": "..."}`. From step 2 on the work runs in a task beside a
watcher of the client's connection (api/requests.py, shared with v1): when the client
goes away the task is cancelled, and psycopg cancels the running statement in
PostgreSQL, so no query outlives its request. Each request borrows one connection of
the API's pool (api/pool.py) for the key, the site and the query. Filters on
`visit:country_name` become filters on the stored codes (api/v2_countries.py) before
the query is translated.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Final

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from picolytics.api.auth import Authenticator, BearerKeys, KeyRateLimiter, identify
from picolytics.api.requests import Connect, Connection, answer, error, find_site, until_disconnect
from picolytics.api.v2_answers import ask
from picolytics.api.v2_countries import names_to_codes
from picolytics.api.v2_query import SiteContext
from picolytics.api.v2_request import parse, requested_site
from picolytics.api.v2_response import response
from picolytics.api.v2_rules import check_goal_names, names_goals
from picolytics.api.v2_translate import translate
from picolytics.errors import ApiRequestError, QueryError
from picolytics.stats.engine import snapshot
from picolytics.stats.goals import load_goals

MAX_BODY_BYTES: Final = 64 * 1024
BODY_READ_TIMEOUT_S: Final = 10.0
# Where the query layer's field names point in the body (stats/validate.py's fields).
_POINTERS: Final = {
    "metrics": "#/metrics",
    "interval": "#/dimensions",
    "breakdown": "#/dimensions",
    "breakdown.then": "#/dimensions",
    "include_imports": "#/include/imports",
    "filters": "#/filters",
    "order_by": "#/order_by",
    "limit": "#/pagination/limit",
    "offset": "#/pagination/offset",
}


class Refused(Exception):  # noqa: N818 - an answer, not a failure
    """A request answered with `status` and `{"error": message}`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


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


class QueryApi:
    """The handler of POST /api/v2/query: `handle` is its Starlette endpoint."""

    def __init__(
        self,
        connect: Connect,
        *,
        timeout_s: float,
        rate_limit: int = 0,
        limiter: KeyRateLimiter | None = None,
        authenticator: Authenticator | None = None,
    ) -> None:
        """`connect` lends a connection (the API's pool); `limiter` (else one of
        `rate_limit` a minute) counts the keys' requests; `authenticator` says who asks
        (else the Bearer keys of that limiter)."""
        self.connect = connect
        self.timeout_s = timeout_s
        self.limiter = limiter or KeyRateLimiter(rate_limit)
        self.authenticator = authenticator or BearerKeys(self.limiter)

    async def handle(self, request: Request) -> Response:
        now = datetime.now(UTC)
        try:
            body = await read_body(request)
        except Refused as refused:
            return error(refused.status, refused.message)
        except ClientDisconnect:
            return Response(status_code=400)  # nobody is there to read it

        async def on(connection: Connection) -> Response:
            try:
                return await self._query(request, connection, body, now)
            except ApiRequestError as bad:
                return error(400, str(bad))
            except QueryError as bad:
                message = str(bad).removeprefix(f"{bad.field}: ")
                return error(400, f"{_POINTERS.get(bad.field, '#')}: {message}")

        answering = answer(self.connect, on, timeout_s=self.timeout_s, api="stats API v2")
        return await until_disconnect(request.receive, answering)

    async def _query(
        self, request: Request, connection: Connection, raw: bytes, now: datetime
    ) -> Response:
        who = await identify(self.authenticator, request, connection)
        body = decode_json(raw)
        site = await find_site(connection, who, requested_site(body))
        query = parse(body, site=SiteContext(site.timezone, site.first_day), now=now)
        if names_goals(query):
            goals = await load_goals(connection, (site.site_id,))
            check_goal_names(query, {goal.display_name for goal in goals})
        filters = await names_to_codes(connection, query.filters, self.timeout_s)
        plan = translate(replace(query, filters=filters), (site.site_id,))
        async with snapshot(connection, self.timeout_s):
            answers = await ask(connection, plan, self.timeout_s)
        return JSONResponse(response(plan, answers, site.domain))
