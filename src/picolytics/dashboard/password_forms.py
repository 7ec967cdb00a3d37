"""What the dashboard's two password forms share: the login (dashboard/auth.py) and a
shared link's password (dashboard/shared.py).

Both are built on `PasswordForms`: the injected clock, throttle and client address;
one autocommit connection a request; a form page that carries this browser's
pre-session CSRF token (dashboard/session.py); the checks before a password is tried
(`refusal`: the token, 403, then the throttle, 429 with Retry-After); and the error
pages of a handler (`guarded`: a form refused by `pages.read_form`, a client gone, an
unreachable database as 503).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import psycopg
from psycopg import AsyncConnection
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from picolytics.dashboard import pages
from picolytics.dashboard.session import (
    COOKIE_PATH,
    form_csrf_ok,
    form_token,
    is_https,
    peer_address,
    set_form_cookie,
)
from picolytics.dashboard.throttle import LoginThrottle

EXPIRED_FORM: Final = "This form has expired. Please send it again."
UNAVAILABLE: Final = "The database is unavailable. Please try again later."

Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class Refusal:
    """Why a password form is shown again instead of trying the password."""

    status: int
    message: str
    headers: dict[str, str] | None = None


class PasswordForms:
    """The settings and steps the login and a shared link's password have in common."""

    def __init__(
        self,
        conninfo: str,
        *,
        session_days: int = 14,
        force_secure: bool = False,
        client_of: Callable[[Request], str] = peer_address,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        throttle: LoginThrottle | None = None,
    ) -> None:
        self.conninfo = conninfo
        self.lifetime = timedelta(days=session_days)
        self.force_secure = force_secure
        self.client_of = client_of
        self.clock = clock
        self.throttle = throttle or LoginThrottle()

    def _secure(self, request: Request) -> bool:
        return is_https(request, self.force_secure)

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[AsyncConnection[Any]]:
        async with await AsyncConnection.connect(self.conninfo, autocommit=True) as connection:
            yield connection

    def _guard(self, handler: Handler) -> Handler:
        """`handler`, with the answers to what may go wrong under any form."""

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except pages.FormRefused as refused:
                return pages.page("Error", pages.message(refused.message), refused.status)
            except ClientDisconnect:
                return Response(status_code=400)  # nobody is there to read it
            except psycopg.Error:
                return pages.page("Unavailable", pages.message(UNAVAILABLE), 503)

        return guarded

    def _form_page(
        self,
        request: Request,
        title: str,
        build: Callable[[str], str],
        status: int = 200,
        headers: dict[str, str] | None = None,
        *,
        cookie_path: str = COOKIE_PATH,
    ) -> Response:
        """A page whose form, `build(token)`, carries this browser's pre-session CSRF
        token; a new token is set as a cookie on `cookie_path`."""
        token, new = form_token(request)
        response = pages.page(title, build(token), status, headers)
        if new:
            set_form_cookie(response, token, secure=self._secure(request), path=cookie_path)
        return response

    def _refusal(
        self, request: Request, fields: Mapping[str, str], account: str, too_many: str
    ) -> Refusal | None:
        """What stops a password being tried: a form without its CSRF token, then too
        many failures of this account or client (`too_many` names the wait)."""
        if not form_csrf_ok(request, fields):
            return Refusal(403, EXPIRED_FORM)
        wait = self.throttle.attempt(account, self.client_of(request))
        if wait:
            message = too_many.format(wait=pages.seconds(wait))
            return Refusal(429, message, {"Retry-After": str(wait)})
        return None

    def _succeeded(self, request: Request, account: str) -> None:
        """The password was right: forget this account's and client's failures."""
        self.throttle.succeeded(account, self.client_of(request))
