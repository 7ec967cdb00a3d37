"""The dashboard's login, logout and first-account setup, as Starlette handlers.

- `GET /dashboard/login` the form (a logged-in browser goes on to /dashboard/);
  `POST` checks the form's CSRF token (403), the throttle (429 with Retry-After,
  dashboard/throttle.py), then the password (401), each with one message whether
  the account exists or not; on success a new session and its cookie
  (dashboard/session.py), and a 303 to `next` (a /dashboard/ path) or /dashboard/.
- `POST /dashboard/logout` with the session's CSRF token ends the session on the
  server and clears the cookie; a wrong or missing token is 403 and ends nothing.
- `GET /dashboard/setup?token=...` the form that creates the first account, while the
  link is unused, unexpired and no account exists (404 otherwise); `POST` creates it,
  uses the link up, and logs the new account in.

Each request opens one connection of its own (autocommit), as the Stats API does; an
unreachable database is a 503 page. The clock, the throttle and the client address
(`client_of`; serve/ passes the one behind trusted proxies) are injected; what the
login shares with a shared link's password is dashboard/password_forms.py.
"""

from __future__ import annotations

from typing import Final

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from picolytics.dashboard import pages
from picolytics.dashboard.pages import alert, form, page, read_form, text_input
from picolytics.dashboard.password_forms import EXPIRED_FORM, PasswordForms
from picolytics.dashboard.session import (
    SESSION_COOKIE,
    clear_session_cookie,
    csrf_ok,
    current_session,
    form_csrf_ok,
    set_session_cookie,
)
from picolytics.errors import AccountOptionError
from picolytics.storage import accounts
from picolytics.storage.passwords import normalise_email

HOME: Final = "/dashboard/"
LOGIN_PATH: Final = "/dashboard/login"
LOGOUT_PATH: Final = "/dashboard/logout"
SETUP_PATH: Final = "/dashboard/setup"
WRONG: Final = "Wrong e-mail address or password."
TOO_MANY: Final = "Too many failed logins. Please try again in {wait}."
DIFFERENT: Final = "The two passwords are not the same."
INVALID_SETUP: Final = (
    "This setup link cannot be used: it was used already, it has expired, or an account "
    "exists. Run `picolytics user add EMAIL` on the server instead."
)


def safe_next(target: str) -> str:
    """Where to go after logging in: a path under /dashboard/, never another site."""
    plain = target.isprintable() and "\\" not in target and "//" not in target
    return target if plain and target.startswith(HOME) else HOME


def _sentence(error: AccountOptionError) -> str:
    text = str(error)
    return text[:1].upper() + text[1:] + "."


class DashboardAuth(PasswordForms):
    """The login, logout and setup handlers; `routes()` is what the app mounts."""

    def routes(self) -> list[Route]:
        return [
            Route(LOGIN_PATH, self._guard(self.login_page), methods=["GET", "HEAD"]),
            Route(LOGIN_PATH, self._guard(self.login), methods=["POST"]),
            Route(LOGOUT_PATH, self._guard(self.logout), methods=["POST"]),
            Route(SETUP_PATH, self._guard(self.setup_page), methods=["GET", "HEAD"]),
            Route(SETUP_PATH, self._guard(self.setup), methods=["POST"]),
        ]

    def _login_form(
        self,
        request: Request,
        *,
        status: int = 200,
        error: str | None = None,
        email: str = "",
        target: str = HOME,
        headers: dict[str, str] | None = None,
    ) -> Response:
        def build(token: str) -> str:
            inputs = [
                text_input("E-mail address", "email", "email", "username", email),
                text_input("Password", "password", "password", "current-password"),
            ]
            hidden = {"csrf": token, "next": target}
            return alert(error) + form(LOGIN_PATH, hidden, inputs, "Log in")

        return self._form_page(request, "Log in", build, status, headers)

    # -- login and logout ------------------------------------------------------------

    async def login_page(self, request: Request) -> Response:
        async with self._connection() as connection:
            if await current_session(request, connection, now=self.clock()):
                return RedirectResponse(HOME, 303)
        return self._login_form(request, target=safe_next(request.query_params.get("next", "")))

    async def login(self, request: Request) -> Response:
        fields = await read_form(request)
        email, password = fields.get("email", ""), fields.get("password", "")
        target = safe_next(fields.get("next", ""))
        try:
            account = normalise_email(email)
        except AccountOptionError:
            account = email.strip().casefold()
        refused = self._refusal(request, fields, account, TOO_MANY)
        if refused:
            return self._login_form(
                request,
                status=refused.status,
                error=refused.message,
                email=email,
                target=target,
                headers=refused.headers,
            )
        async with self._connection() as connection:
            user = await accounts.authenticate(connection, email, password)
            if user is None:
                return self._login_form(
                    request, status=401, error=WRONG, email=email, target=target
                )
            self._succeeded(request, account)
            now = self.clock()
            await accounts.expire(connection, now)
            token = await accounts.create_session(connection, user, now, self.lifetime)
        response = RedirectResponse(target, 303)
        set_session_cookie(response, token, self.lifetime, secure=self._secure(request))
        return response

    async def logout(self, request: Request) -> Response:
        fields = await read_form(request)
        secure = self._secure(request)
        async with self._connection() as connection:
            logged_in = await current_session(request, connection, now=self.clock())
            if logged_in is not None:
                if not csrf_ok(request, logged_in, fields):
                    return page("Log out", pages.message(EXPIRED_FORM), 403)
                await accounts.delete_session(connection, request.cookies[SESSION_COOKIE])
        response = RedirectResponse(LOGIN_PATH, 303)
        clear_session_cookie(response, secure=secure)
        return response

    # -- the first account -----------------------------------------------------------

    def _setup_form(
        self,
        request: Request,
        setup_token: str,
        *,
        status: int = 200,
        error: str | None = None,
        email: str = "",
    ) -> Response:
        def build(token: str) -> str:
            inputs = [
                text_input("E-mail address", "email", "email", "username", email),
                text_input("Password", "password", "password", "new-password"),
                text_input("Password, again", "confirm", "password", "new-password"),
            ]
            hidden = {"csrf": token, "token": setup_token}
            intro = pages.message("Create the first account of this picolytics dashboard.")
            return intro + alert(error) + form(SETUP_PATH, hidden, inputs, "Create account")

        return self._form_page(request, "Set up picolytics", build, status)

    async def setup_page(self, request: Request) -> Response:
        setup_token = request.query_params.get("token", "")
        async with self._connection() as connection:
            valid = await accounts.setup_token_valid(connection, setup_token, self.clock())
        if not valid:
            return page("Set up picolytics", pages.message(INVALID_SETUP), 404)
        return self._setup_form(request, setup_token)

    async def setup(self, request: Request) -> Response:
        fields = await read_form(request)
        setup_token, email = fields.get("token", ""), fields.get("email", "")
        password = fields.get("password", "")
        if not form_csrf_ok(request, fields):
            return self._setup_form(
                request, setup_token, status=403, error=EXPIRED_FORM, email=email
            )
        if password != fields.get("confirm", ""):
            return self._setup_form(request, setup_token, status=400, error=DIFFERENT, email=email)
        now = self.clock()
        async with self._connection() as connection:
            # Checked first, so that a bad link costs no password hash.
            if not await accounts.setup_token_valid(connection, setup_token, now):
                return page("Set up picolytics", pages.message(INVALID_SETUP), 404)
            try:
                user = await accounts.use_setup_token(connection, setup_token, email, password, now)
            except AccountOptionError as error:
                return self._setup_form(
                    request, setup_token, status=400, error=_sentence(error), email=email
                )
            if user is None:
                return page("Set up picolytics", pages.message(INVALID_SETUP), 404)
            token = await accounts.create_session(connection, user, now, self.lifetime)
        response = RedirectResponse(HOME, 303)
        set_session_cookie(response, token, self.lifetime, secure=self._secure(request))
        return response
