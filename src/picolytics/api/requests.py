"""What every Stats API endpoint (v1 and v2) does around its own work.

- `until_disconnect`: run the answer in a task beside a watcher of the client's
  connection; when the client goes away first the task is cancelled (psycopg then
  cancels the running statement in PostgreSQL, and the pool, api/pool.py, gets its
  connection back clean or discards it) and the answer is a 499 nobody reads;
- `answer`: borrow one connection for the work and turn the failures the endpoints
  share into their answers: a refused key (401/429), a query past QUERY_TIMEOUT_SEC,
  a pool whose connections all stay busy, and a database that failed (each 503);
- `find_site`: the site a request names, if the asker may read it; a site that does
  not exist gets the 401 of a site outside the asker's scope, word for word, so an
  answer never tells which sites exist.

Each endpoint still maps its own bad requests (400) inside its work: their messages
differ (Plausible's v1 wording, v2's JSON pointers).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from datetime import date
from typing import Any, Final

import psycopg
from psycopg import AsyncConnection
from starlette.responses import JSONResponse, Response
from starlette.types import Receive

from picolytics.api.auth import INVALID_KEY, Principal, authorize_site, error_response
from picolytics.errors import ApiAuthError, ApiBusyError, QueryTimeoutError, first_line
from picolytics.storage.imported_days import SELECT_FIRST_NATIVE_DAY
from picolytics.text import normalise_domain

log = logging.getLogger(__name__)

Connection = AsyncConnection[Any]
Connect = Callable[[], AbstractAsyncContextManager[Connection]]
Work = Callable[[Connection], Awaitable[Response]]

DATABASE_DOWN: Final = "The database is unavailable; please try again later."
BUSY: Final = "The server is busy answering other queries; please try again in a moment."
GONE: Final = 499  # the client went away: nobody reads this status
# The site and its zone.
SELECT_SITE_ONLY: Final = "SELECT site_id, domain, timezone, NULL FROM sites WHERE domain = %s"


@dataclass(frozen=True, slots=True)
class Site:
    site_id: int
    domain: str
    timezone: str
    first_day: date | None  # None: no stats yet, or not looked up


def error(status: int, message: str) -> JSONResponse:
    """A refusal: `{"error": message}`."""
    return JSONResponse({"error": message}, status_code=status)


async def find_site(
    connection: Connection, who: Principal, domain: str, *, first_day: bool = True
) -> Site:
    """The site of `domain`, if `who` may read it; else the 401 of an invalid key.
    Without `first_day`, its first day of stats is left None (not looked up)."""
    authorize_site(who, domain)
    row = None
    if "\x00" not in domain:  # PostgreSQL's text cannot hold it: no such site
        cursor = await connection.execute(SELECT_SITE_ONLY, (normalise_domain(domain),))
        row = await cursor.fetchone()
    if row is None:  # the same answer as a site outside the key's scope
        raise ApiAuthError(401, INVALID_KEY)
    site = Site(int(row[0]), str(row[1]), str(row[2]), None)
    if first_day:
        # Its first local day of stats: the first native day (v1 does not need it).
        cursor = await connection.execute(SELECT_FIRST_NATIVE_DAY, {"site": site.site_id})
        found = await cursor.fetchone()
        site = replace(site, first_day=found[0] if found else None)
    return site


async def _disconnected(receive: Receive) -> None:
    """Return once the client has gone (the body, if any, was read: nothing else may
    come)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def until_disconnect(receive: Receive, work: Coroutine[Any, Any, Response]) -> Response:
    """The answer of `work`, unless the client goes away first: then `work` is
    cancelled, and the answer is a 499 nobody reads."""
    task = asyncio.create_task(work)
    gone = asyncio.create_task(_disconnected(receive))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in (task, gone):
            waiting.cancel()
        for waiting in (task, gone):
            with contextlib.suppress(asyncio.CancelledError):
                await waiting
    if task.cancelled():
        return Response(status_code=GONE)
    return task.result()


async def answer(connect: Connect, work: Work, *, timeout_s: float, api: str) -> Response:
    """`work` on one borrowed connection, its shared failures answered."""
    try:
        async with connect() as connection:
            return await work(connection)
    except ApiAuthError as refused:
        return error_response(refused)
    except QueryTimeoutError:
        return error(
            503,
            f"The query ran past the time limit of {timeout_s:g} s and was stopped: "
            "ask for a shorter period or fewer rows, or try again later.",
        )
    except ApiBusyError as busy:
        log.warning("%s: %s", api, busy)
        return error(503, BUSY)
    except psycopg.Error as failed:  # unreachable, restarted, or the connection broke
        log.warning("%s: the database failed: %s", api, first_line(failed))
        return error(503, DATABASE_DOWN)
