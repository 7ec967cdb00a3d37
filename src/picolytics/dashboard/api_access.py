"""Who may ask the Stats API from the dashboard's own pages: a logged-in browser, or
the visitor of a shared link.

- Under /dashboard/ (the path of the session cookie): a live session
  (dashboard/session.py) and its CSRF token in the `X-CSRF-Token` header, which no
  other site can send without CORS; such a reader reads every site. A cookie that
  names no live session is 401; a live session without its token is 403.
- Under /share/TOKEN/ (a route with a `token`): the live link of that token, unlocked
  in this browser when it has a password (dashboard/shared.py); it reads its one site
  and nothing else. An unknown, revoked or locked link is 401, and each link's
  requests are counted by `wait` (429 over the limit), as an API key's are: a link is
  public, its queries are not free. A shared page changes nothing, so it needs no CSRF
  token: another site could only read what the link itself shows, and CORS keeps
  the answer from it anyway.

`DashboardAccess` is an authenticator of the Stats API in the sense of api/auth.py,
matched by its shape (two features never import each other): serve/ tries it after
the API key. A request with neither a cookie nor a link token carries no credential
of its kind (None).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from psycopg import AsyncConnection
from starlette.requests import HTTPConnection

from picolytics.dashboard.session import SESSION_COOKIE, csrf_ok, current_session
from picolytics.dashboard.shared import shared_view
from picolytics.errors import ApiAuthError

NO_SESSION: Final = "Not logged in, or the login has ended: log in again at /dashboard/login."
NO_CSRF: Final = "Missing or wrong X-CSRF-Token header: reload the dashboard."
NO_SHARE: Final = "This shared link does not exist, was revoked, or needs its password."
TOO_MANY: Final = "Too many requests through this shared link; please wait a moment."


@dataclass(frozen=True)
class Reader:
    """A dashboard's reader: the sites it may read (normalised domains; None: all)."""

    sites: tuple[str, ...] | None
    share_id: int | None = None  # the shared link it came through, if any


class DashboardAccess:
    """The login or the shared link of a dashboard page's request to the Stats API.
    `wait` takes one request from a link's budget (by its id): 0 to go ahead, else
    the seconds to wait."""

    def __init__(self, wait: Callable[[int], int] | None = None) -> None:
        self.wait = wait

    async def __call__(
        self, request: HTTPConnection, connection: AsyncConnection[Any]
    ) -> Reader | None:
        token = request.path_params.get("token")
        if isinstance(token, str):
            return await self._shared(request, connection, token)
        if SESSION_COOKIE not in request.cookies:
            return None
        logged_in = await current_session(request, connection)
        if logged_in is None:
            raise ApiAuthError(401, NO_SESSION)
        if not csrf_ok(request, logged_in):
            raise ApiAuthError(403, NO_CSRF)
        return Reader(None)

    async def _shared(
        self, request: HTTPConnection, connection: AsyncConnection[Any], token: str
    ) -> Reader:
        view = await shared_view(request, connection, token)
        if view is None or not view.unlocked:
            raise ApiAuthError(401, NO_SHARE)
        share = view.share
        delay = self.wait(share.share_id) if self.wait else 0
        if delay:
            raise ApiAuthError(429, TOO_MANY, retry_after=delay)
        return Reader((share.domain,), share.share_id)
