"""What the server wires in at startup: the setup link it logs while no account
exists, and the routes of the login, logout, setup and shared-link password pages.

`announce_setup_link` runs once per server process at startup. With the dashboard on
and no account yet, it creates a setup token (valid once, for 24 hours) and logs one
line with its link, `/dashboard/setup?token=...`, on the server's address. That line
is the one place a token appears in clear: the link creates the first account and
nothing else, and stops working once used, after 24 hours, or as soon as any account
exists (also one made with `picolytics user add`). A database that cannot be read
(or has no dashboard tables, with SKIP_MIGRATIONS) costs one warning, never startup.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

import psycopg
from psycopg import AsyncConnection
from starlette.requests import Request
from starlette.routing import Route

from picolytics.config import Config, split_listen_addr
from picolytics.dashboard.auth import SETUP_PATH, DashboardAuth
from picolytics.dashboard.session import peer_address
from picolytics.dashboard.shared import SharePasswords
from picolytics.dashboard.throttle import LoginThrottle
from picolytics.errors import first_line
from picolytics.storage import accounts

log = logging.getLogger(__name__)


def base_url(config: Config) -> str:
    """This server's address as a browser on its host would type it."""
    if config.autotls_enabled and config.autotls_host:
        _, port = split_listen_addr(config.autotls_https_addr)
        return f"https://{config.autotls_host}" + ("" if port == 443 else f":{port}")
    host, port = split_listen_addr(config.listen_addr)
    if host in ("", "0.0.0.0", "::"):  # noqa: S104 - a wildcard: name this host instead
        host = "localhost"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


async def announce_setup_link(
    conninfo: str, config: Config, *, now: datetime | None = None
) -> str | None:
    """With the dashboard on and no account yet, log one line with a new setup link;
    the link, or None when nothing was logged."""
    if not config.dashboard_enabled:
        return None
    moment = now or datetime.now(UTC)
    try:
        async with await AsyncConnection.connect(conninfo, autocommit=True) as connection:
            await accounts.expire(connection, moment)
            token = await accounts.create_setup_token(connection, moment)
    except psycopg.Error as error:
        log.warning("dashboard: no setup link could be made: %s", first_line(error))
        return None
    if token is None:
        return None
    link = f"{base_url(config)}{SETUP_PATH}?token={token}"
    log.warning(
        "no dashboard account yet: open %s to create the first one (valid once, for 24 "
        "hours), or run `picolytics user add EMAIL`",
        link,
    )
    return link


def dashboard_routes(
    config: Config, conninfo: str, client_of: Callable[[Request], str] = peer_address
) -> list[Route]:
    """The routes to mount (none with DASHBOARD_ENABLED off); `client_of` names the
    client address the throttle counts (the one behind trusted proxies)."""
    if not config.dashboard_enabled:
        return []
    throttle = LoginThrottle()  # one for both forms: one budget per client
    days, secure = config.dashboard_session_days, config.autotls_enabled
    auth = DashboardAuth(
        conninfo, session_days=days, force_secure=secure, client_of=client_of, throttle=throttle
    )
    passwords = SharePasswords(
        conninfo, session_days=days, force_secure=secure, client_of=client_of, throttle=throttle
    )
    return auth.routes() + passwords.routes()
