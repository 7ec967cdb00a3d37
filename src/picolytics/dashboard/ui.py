"""The dashboard's pages: `/dashboard/` for a logged-in account, `/share/TOKEN` for a
shared link, and their static files (docs/dashboard.md).

Both pages are one server-rendered shell: the landmarks, the site switcher, the
period picker, what the period is compared with, the "Include imported data" toggle,
and a JSON block with what the script needs (the sites, their zones and whether they
have imported data, where to send its Stats API calls, the server's clock).
Everything else is drawn by `static/dashboard.js` from the Stats API v2 (POST
`BASE/api/v2/query`) and v1's current visitors (`BASE/api/v1/stats/realtime/visitors`),
BASE being /dashboard or /share/TOKEN, the paths where the browser sends the session
cookie or the link's own; dashboard/api_access.py says who may ask there.

- `/dashboard/` without a live session answers 303 to the login, with `next` set
  to the page asked for (bookmarks and filters survive a login). With one, the page
  carries the session's CSRF token in `<meta name="csrf-token">`, which the script
  sends as `X-CSRF-Token`, and the logout button's form.
- `/share/TOKEN` shows the link's one site, read-only, with no switcher and no
  account; an unknown or revoked link is 404, and a link with a password this
  browser has not given goes to `/share/TOKEN/password`. `?embed=true` of a link
  without a password may be framed by any site (a slimmer page: `body.embed`).

Every page has a strict Content-Security-Policy: scripts, styles and API calls from
this origin only, no inline script or style, no framing (but the embeddable view),
and no caching, since the page holds a CSRF token.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from html import escape
from typing import Any, Final
from urllib.parse import quote

import psycopg
from psycopg import AsyncConnection
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from picolytics.dashboard import pages
from picolytics.dashboard.assets import PREFIX, StaticAssets
from picolytics.dashboard.auth import LOGIN_PATH, LOGOUT_PATH
from picolytics.dashboard.session import current_session
from picolytics.dashboard.shared import GATE_ROUTE, shared_view

HOME: Final = "/dashboard/"
SHARE_ROUTE: Final = "/share/{token}"
# Each site's zone, and whether it has imported days (the page's "Include imported
# data" toggle is shown for those only). Not a subquery correlated to sites: Citus
# refuses those from its reference table sites to the distributed imported_days.
SELECT_SITES: Final = """
SELECT s.domain, s.timezone, s.site_id IN (SELECT d.site_id FROM imported_days d)
FROM sites s ORDER BY 1
"""
SELECT_ZONE: Final = """
SELECT s.timezone, EXISTS (SELECT FROM imported_days d WHERE d.site_id = %(site)s)
FROM sites s WHERE s.site_id = %(site)s
"""
SCRIPTS: Final = ("vendor/uPlot.iife.min.js",)
MODULE: Final = "dashboard.js"
STYLES: Final = ("vendor/uPlot.min.css", "dashboard.css")
_CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors {ancestors}"
)
PERIODS: Final = (
    ("realtime", "Realtime"),
    ("day", "Today"),
    ("yesterday", "Yesterday"),
    ("7d", "Last 7 days"),
    ("30d", "Last 30 days"),
    ("month", "Month to date"),
    ("lastmonth", "Last month"),
    ("6mo", "Last 6 months"),
    ("12mo", "Last 12 months"),
    ("custom", "Custom range"),
)
# What the numbers are compared with (static/periods.js); the first is the default.
COMPARES: Final = (
    ("previous", "The previous period"),
    ("year", "A year earlier"),
    ("off", "Nothing"),
)


def security_headers(*, embeddable: bool = False, referrer: str = "same-origin") -> dict[str, str]:
    headers = {
        "Content-Security-Policy": _CSP.format(ancestors="*" if embeddable else "'none'"),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": referrer,
        "Cache-Control": "no-store",
    }
    if not embeddable:
        headers["X-Frame-Options"] = "DENY"
    return headers


def _json_block(value: Mapping[str, Any]) -> str:
    """JSON for a `<script type="application/json">`, which no `</script>` can end."""
    text = json.dumps(value, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _options(choices: tuple[tuple[str, str], ...]) -> str:
    return "".join(f'<option value="{escape(v)}">{escape(label)}</option>' for v, label in choices)


def _account(email: str, csrf: str) -> str:
    return (
        f'<form class="account" method="post" action="{LOGOUT_PATH}">'
        f'<span class="who">{escape(email)}</span>'
        f'<input type="hidden" name="csrf" value="{escape(csrf)}">'
        '<button type="submit">Log out</button></form>'
    )


def shell(
    config: Mapping[str, Any],
    *,
    title: str,
    csrf: str = "",
    account: str = "",
    embed: bool = False,
) -> str:
    """The page: header (switcher, period, account), main landmark, the config block."""
    sites = config["sites"]
    site_options = _options(tuple((s["domain"], s["domain"]) for s in sites))
    switcher = (
        f'<label for="site">Site</label><select id="site" name="site">{site_options}</select>'
        if config["mode"] == "private"
        else f'<span class="site-name">{escape(sites[0]["domain"])}</span>'
    )
    controls = (
        f'<div class="control">{switcher}</div>'
        '<div class="control"><label for="period">Period</label>'
        f'<select id="period" name="period">{_options(PERIODS)}</select></div>'
        '<div class="control"><label for="compare">Compare with</label>'
        f'<select id="compare" name="compare">{_options(COMPARES)}</select></div>'
        '<div class="control custom" id="custom-range" hidden>'
        '<label for="from">From</label><input type="date" id="from" name="from">'
        '<label for="to">To</label><input type="date" id="to" name="to">'
        '<button type="button" id="apply-range">Apply</button></div>'
        '<div class="control imports" id="imports-control" hidden>'
        '<input type="checkbox" id="imports" name="imports" checked>'
        '<label for="imports">Include imported data</label></div>'
    )
    header = (
        '<a href="#main" class="skip">Skip to the statistics</a><header class="top">'
        '<p class="brand"><span aria-hidden="true">◔</span> picolytics</p>'
        f'<nav aria-label="Site and period">{controls}</nav>{account}</header>'
    )
    styles = "".join(f'<link rel="stylesheet" href="{PREFIX}{name}">' for name in STYLES)
    scripts = "".join(f'<script defer src="{PREFIX}{name}"></script>' for name in SCRIPTS)
    scripts += f'<script type="module" src="{PREFIX}{MODULE}"></script>'
    meta = f'<meta name="csrf-token" content="{escape(csrf)}">' if csrf else ""
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="color-scheme" content="light dark">'
        '<link rel="icon" href="data:,">'
        f"<title>{escape(title)} · picolytics</title>{meta}{styles}{scripts}</head>"
        f'<body class="{"embed" if embed else "full"}">{header}'
        f'<main id="main" tabindex="-1"><h1 id="title">{escape(title)}</h1>'
        "<noscript><p>The dashboard needs JavaScript. Its numbers are also in the Stats "
        "API and <code>picolytics report</code>.</p></noscript>"
        '<div id="app" aria-busy="true"></div></main>'
        # The free DB-IP database asks for this wherever its data is shown (README).
        '<footer class="attribution"><a href="https://db-ip.com">IP Geolocation by DB-IP</a>'
        "</footer>"
        f'<script type="application/json" id="picolytics-config">{_json_block(config)}</script>'
        "</body></html>\n"
    )


class DashboardPages:
    """The routes of the dashboard's pages and static files."""

    def __init__(self, conninfo: str, *, assets: StaticAssets | None = None) -> None:
        self.conninfo = conninfo
        self.assets = assets or StaticAssets()

    def routes(self) -> list[Route]:
        return [
            Route("/dashboard", self.to_home, methods=["GET", "HEAD"]),
            Route(HOME, self.home, methods=["GET", "HEAD"]),
            Route(PREFIX + "{path:path}", self.assets.serve, methods=["GET", "HEAD"]),
            Route(SHARE_ROUTE, self.shared, methods=["GET", "HEAD"]),
        ]

    async def to_home(self, request: Request) -> Response:
        query = f"?{request.url.query}" if request.url.query else ""
        return RedirectResponse(HOME + query, 308)

    async def _connect(self) -> AsyncConnection[Any]:
        return await AsyncConnection.connect(self.conninfo, autocommit=True)

    async def home(self, request: Request) -> Response:
        try:
            async with await self._connect() as connection:
                logged_in = await current_session(request, connection)
                if logged_in is None:
                    asked = HOME + (f"?{request.url.query}" if request.url.query else "")
                    return RedirectResponse(f"{LOGIN_PATH}?next={quote(asked, safe='')}", 303)
                cursor = await connection.execute(SELECT_SITES)
                sites = [_site(d, z, i) for d, z, i in await cursor.fetchall()]
        except psycopg.Error:
            return _unavailable()
        config = {"mode": "private", "base": "/dashboard", "sites": sites, "now": _now()}
        account = _account(logged_in.user.email, logged_in.csrf)
        page = shell(config, title="Dashboard", csrf=logged_in.csrf, account=account)
        return HTMLResponse(page, headers=security_headers())

    async def shared(self, request: Request) -> Response:
        token = request.path_params["token"]
        try:
            async with await self._connect() as connection:
                view = await shared_view(request, connection, token)
                zone = None
                if view is not None and view.unlocked:
                    cursor = await connection.execute(SELECT_ZONE, {"site": view.share.site_id})
                    zone = await cursor.fetchone()
        except psycopg.Error:
            return _unavailable()
        if view is None or (view.unlocked and zone is None):
            body = pages.message("This shared link does not exist or was revoked.")
            return pages.page("Not found", body, 404)
        if not view.unlocked:
            return RedirectResponse(GATE_ROUTE.format(token=token), 303)
        assert zone is not None  # an unlocked view found its site's zone above
        domain = view.share.domain
        embed = request.query_params.get("embed") == "true" and view.share.embeddable
        config = {
            "mode": "shared",
            "base": f"/share/{token}",
            "sites": [_site(domain, zone[0], zone[1])],
            "now": _now(),
            "embed": embed,
        }
        headers = security_headers(embeddable=embed, referrer="no-referrer")
        return HTMLResponse(shell(config, title=domain, embed=embed), headers=headers)


def _site(domain: str, timezone: str, imports: bool) -> dict[str, Any]:
    """A site as the page's config has it; `imports` only when it has imported data."""
    return {"domain": domain, "timezone": timezone} | ({"imports": True} if imports else {})


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _unavailable() -> Response:
    return pages.page("Unavailable", pages.message("The database is unavailable."), 503)
