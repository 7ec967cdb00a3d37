"""Who is logged in to the dashboard, and the CSRF tokens of their requests.

A login is the cookie `picolytics_session` holding a session token; the database
keeps only its hash and the session's server-side expiry (storage/accounts.py). The
cookie is HttpOnly, SameSite=Lax, Path=/dashboard, and Secure when the request came
over HTTPS (its scheme, or `X-Forwarded-Proto: https` from a proxy: a spoofed header
can only make a client's own cookie stricter) or the server runs automatic TLS.

CSRF: every state-changing request of a logged-in browser carries the session's CSRF
token, in the form field `csrf` or the header `X-CSRF-Token`. The token is an HMAC of
the session token, so it needs no storage, differs for every session, and cannot be
made without the HttpOnly cookie; it is compared in constant time. Before a session
exists (the login and setup forms) the token is a random value in a cookie of its
own, `picolytics_form`, that the form repeats (a double-submit cookie).

`current_user` is what the dashboard's pages ask; `api_user` is the same for a
request of the dashboard's own script to the Stats API, which must also carry the
`X-CSRF-Token` header (a custom header no other site can send without CORS).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from psycopg import AsyncConnection
from starlette.requests import HTTPConnection
from starlette.responses import Response

from picolytics.storage import accounts
from picolytics.storage.accounts import Session, User
from picolytics.storage.passwords import is_token, new_token

SESSION_COOKIE: Final = "picolytics_session"
FORM_COOKIE: Final = "picolytics_form"
COOKIE_PATH: Final = "/dashboard"
CSRF_FIELD: Final = "csrf"
CSRF_HEADER: Final = "x-csrf-token"
_CSRF_CONTEXT: Final = b"picolytics dashboard csrf v1"


@dataclass(frozen=True)
class LoggedIn:
    """A request's live session, and the CSRF token its pages must send back."""

    session: Session
    csrf: str = field(repr=False)

    @property
    def user(self) -> User:
        return self.session.user


def peer_address(request: HTTPConnection) -> str:
    """The TCP peer: the client address when no proxy is trusted."""
    return request.client.host if request.client else ""


def is_https(request: HTTPConnection, force: bool = False) -> bool:
    """Should this request's cookies be Secure?"""
    forwarded = request.headers.get("x-forwarded-proto", "").partition(",")[0]
    return force or request.url.scheme == "https" or forwarded.strip().lower() == "https"


def csrf_token(session_token: str) -> str:
    """The CSRF token of a session: an HMAC of its token, never stored."""
    digest = hmac.new(session_token.encode("ascii"), _CSRF_CONTEXT, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def same_token(expected: str, presented: str | None) -> bool:
    """Constant-time comparison of two tokens; an empty or missing one never matches."""
    if not expected or not presented:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), presented.encode("utf-8", "replace"))


def csrf_ok(
    request: HTTPConnection, logged_in: LoggedIn, form: Mapping[str, str] | None = None
) -> bool:
    """Does the request carry its session's CSRF token (header, else form field)?"""
    presented = request.headers.get(CSRF_HEADER) or (form or {}).get(CSRF_FIELD)
    return same_token(logged_in.csrf, presented)


async def current_session(
    request: HTTPConnection, connection: AsyncConnection[Any], *, now: datetime | None = None
) -> LoggedIn | None:
    """The request's live session, or None (no cookie, unknown, expired, logged out).
    The connection must be allowed to write: it records when the session was last
    seen (at most once a minute)."""
    token = request.cookies.get(SESSION_COOKIE, "")
    if not is_token(token):
        return None
    found = await accounts.find_session(connection, token, now or datetime.now(UTC))
    return LoggedIn(found, csrf_token(token)) if found else None


async def current_user(
    request: HTTPConnection, connection: AsyncConnection[Any], *, now: datetime | None = None
) -> User | None:
    """The logged-in account of this request, or None."""
    logged_in = await current_session(request, connection, now=now)
    return logged_in.user if logged_in else None


async def api_user(
    request: HTTPConnection, connection: AsyncConnection[Any], *, now: datetime | None = None
) -> User | None:
    """The account of a dashboard request to the Stats API: a live session and the
    session's CSRF token in `X-CSRF-Token`; None otherwise (answer 401)."""
    logged_in = await current_session(request, connection, now=now)
    if logged_in is None or not csrf_ok(request, logged_in):
        return None
    return logged_in.user


def set_session_cookie(
    response: Response, token: str, lifetime: timedelta, *, secure: bool
) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(lifetime.total_seconds()),
        path=COOKIE_PATH,
        secure=secure,
        httponly=True,
        samesite="lax",
    )


def clear_session_cookie(response: Response, *, secure: bool) -> None:
    response.delete_cookie(
        SESSION_COOKIE, path=COOKIE_PATH, secure=secure, httponly=True, samesite="lax"
    )


def form_token(request: HTTPConnection) -> tuple[str, bool]:
    """The pre-session CSRF token of this browser: (token, whether it is new and must
    be set with `set_form_cookie`)."""
    token = request.cookies.get(FORM_COOKIE, "")
    return (token, False) if is_token(token) else (new_token(), True)


def set_form_cookie(
    response: Response, token: str, *, secure: bool, path: str = COOKIE_PATH
) -> None:
    response.set_cookie(FORM_COOKIE, token, path=path, secure=secure, httponly=True, samesite="lax")


def form_csrf_ok(request: HTTPConnection, form: Mapping[str, str]) -> bool:
    """Does a login or setup form repeat its pre-session cookie's token?"""
    cookie = request.cookies.get(FORM_COOKIE, "")
    return is_token(cookie) and same_token(cookie, form.get(CSRF_FIELD))
