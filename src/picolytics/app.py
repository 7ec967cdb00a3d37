"""The public web application: routes and the lifespan of what they need."""

from __future__ import annotations

import logging
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from picolytics.config import Config
from picolytics.static import StaticFiles, choose_static_dir

log = logging.getLogger(__name__)

ROBOTS_TXT = "User-agent: *\nDisallow: /\n"


def create_app(
    config: Config, *, conninfo: str | None = None, static_folder: Path | None = None
) -> Starlette:
    static = StaticFiles(
        static_folder or choose_static_dir(config.static_dir), config.static_cache_max_age
    )

    async def root(request: Request) -> Response:
        if config.root_redirect:
            return RedirectResponse(config.root_redirect, status_code=302)
        return PlainTextResponse("OK")

    async def robots(request: Request) -> Response:
        return PlainTextResponse(ROBOTS_TXT)

    routes = [
        Route("/", root, methods=["GET", "HEAD"]),
        Route("/robots.txt", robots, methods=["GET", "HEAD"]),
        Route("/{path:path}", static.serve, methods=["GET", "HEAD"]),
    ]
    return Starlette(routes=routes)
