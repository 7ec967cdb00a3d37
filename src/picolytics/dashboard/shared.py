"""Shared links, `/share/TOKEN`: which site a link shows, and the password it may ask for.

`shared_view` is what a shared page (and its calls to the Stats API) asks: the live
link of the token, or None (unknown or revoked: answer 404), and whether this browser
may see it. A link without a password may always be seen; one with a password once
the browser has given it at `/share/TOKEN/password` (`SharePasswords`), which sets the
cookie `picolytics_share` on the link's own path for DASHBOARD_SESSION_DAYS.

That cookie needs no table: it is the time it ends and an HMAC of the link and that
time, keyed by the password's stored hash, which never leaves the server. It cannot
be made from the link's token or the password alone, and it stops working when the
link is revoked. The form has the login's protections, from dashboard/password_forms.py:
a pre-session CSRF token (dashboard/session.py) and the throttle (dashboard/throttle.py),
per link and client.
An embedded view (`?embed=true`) cannot ask for a password: a page in another site's
frame gets no SameSite=Lax cookie, so only links without a password are embeddable.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from psycopg import AsyncConnection
from starlette.requests import HTTPConnection, Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from picolytics.dashboard import pages
from picolytics.dashboard.password_forms import PasswordForms
from picolytics.storage import shares
from picolytics.storage.shares import FoundShare, Share

SHARE_COOKIE: Final = "picolytics_share"
GATE_ROUTE: Final = "/share/{token}/password"
WRONG: Final = "Wrong password."
TOO_MANY: Final = "Too many wrong passwords. Please try again in {wait}."
NOT_FOUND: Final = "This shared link does not exist or was revoked."


@dataclass(frozen=True)
class SharedView:
    share: Share
    unlocked: bool  # False: the link has a password this browser has not given yet


def _mac(found: FoundShare, until: int) -> str:
    assert found.password_hash is not None  # only links with a password have cookies
    message = f"picolytics share {found.share.share_id} until {until}".encode()
    digest = hmac.new(found.password_hash.encode(), message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def unlock_value(found: FoundShare, until: datetime) -> str:
    """The cookie that opens a link with a password until `until`."""
    seconds = int(until.timestamp())
    return f"{seconds}.{_mac(found, seconds)}"


def unlocked(found: FoundShare, cookie: str, now: datetime) -> bool:
    if found.password_hash is None:
        return True
    seconds, _, mac = cookie.partition(".")
    if not seconds.isdigit() or int(seconds) <= now.timestamp():
        return False
    return hmac.compare_digest(_mac(found, int(seconds)).encode(), mac.encode("utf-8", "replace"))


async def shared_view(
    request: HTTPConnection,
    connection: AsyncConnection[Any],
    token: str,
    *,
    now: datetime | None = None,
) -> SharedView | None:
    """The link of `token` as this request may see it; None if there is no such live link."""
    found = await shares.find(connection, token)
    if found is None:
        return None
    cookie = request.cookies.get(SHARE_COOKIE, "")
    return SharedView(found.share, unlocked(found, cookie, now or datetime.now(UTC)))


class SharePasswords(PasswordForms):
    """GET/POST /share/TOKEN/password: the form of a link's password."""

    def routes(self) -> list[Route]:
        return [Route(GATE_ROUTE, self._guard(self._answer), methods=["GET", "HEAD", "POST"])]

    def _form(
        self,
        request: Request,
        token: str,
        status: int = 200,
        error: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        def build(csrf: str) -> str:
            inputs = [pages.text_input("Password", "password", "password", "current-password")]
            return pages.alert(error) + pages.form(
                GATE_ROUTE.format(token=token), {"csrf": csrf}, inputs, "Show the dashboard"
            )

        path = shares.share_path(token)
        return self._form_page(request, "Password", build, status, headers, cookie_path=path)

    async def _answer(self, request: Request) -> Response:
        token = request.path_params["token"]
        fields = await pages.read_form(request) if request.method == "POST" else None
        async with self._connection() as connection:
            found = await shares.find(connection, token)
        if found is None:
            return pages.page("Not found", pages.message(NOT_FOUND), 404)
        if found.password_hash is None:
            return RedirectResponse(shares.share_path(token), 303)  # nothing to ask
        if fields is None:
            return self._form(request, token)
        return await self._check(request, token, found, fields)

    async def _check(
        self, request: Request, token: str, found: FoundShare, fields: dict[str, str]
    ) -> Response:
        account = f"share {found.share.share_id}"
        refused = self._refusal(request, fields, account, TOO_MANY)
        if refused:
            return self._form(request, token, refused.status, refused.message, refused.headers)
        if not await shares.password_matches(found, fields.get("password", "")):
            return self._form(request, token, 401, WRONG)
        self._succeeded(request, account)
        back = RedirectResponse(shares.share_path(token), 303)
        back.set_cookie(
            SHARE_COOKIE,
            unlock_value(found, self.clock() + self.lifetime),
            max_age=int(self.lifetime.total_seconds()),
            path=shares.share_path(token),
            secure=self._secure(request),
            httponly=True,
            samesite="lax",
        )
        return back
