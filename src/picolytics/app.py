"""The public web application: routes, and the lifespan of what they need."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from psycopg import AsyncConnection
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from picolytics import store
from picolytics.agents import AgentParser
from picolytics.clientip import ClientIp
from picolytics.config import Config
from picolytics.geo import GeoLocator
from picolytics.ingest import Ingest
from picolytics.pipeline import Pipeline
from picolytics.static import StaticFiles, choose_static_dir
from picolytics.visitor import SaltCache

log = logging.getLogger(__name__)

ROBOTS_TXT = "User-agent: *\nDisallow: /\n"
MAINTENANCE_INTERVAL_S = 60.0
SHUTDOWN_DRAIN_S = 15.0


@dataclass
class Services:
    """What the routes share; the lifespan starts and stops the database parts."""

    config: Config
    conninfo: str
    pipeline: Pipeline
    salts: SaltCache
    geo: GeoLocator

    async def maintain(self) -> None:
        """Salts for today and tomorrow, partitions ahead, expired visits forgotten."""
        now = datetime.now(UTC)
        async with await AsyncConnection.connect(self.conninfo, autocommit=True) as connection:
            await self.salts.refresh(connection, now)
            await store.maintain(connection, now, self.pipeline.session_timeout)

    async def maintain_forever(self) -> None:
        while True:
            await asyncio.sleep(MAINTENANCE_INTERVAL_S)
            try:
                await self.maintain()
            except Exception as error:  # keep maintaining after outages
                log.warning("maintenance failed, will retry: %s", str(error).splitlines()[0])

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        await self.maintain()
        self.pipeline.start()
        maintenance = asyncio.create_task(self.maintain_forever(), name="picolytics-maintenance")
        try:
            yield
        finally:
            maintenance.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await maintenance
            await self.pipeline.stop(SHUTDOWN_DRAIN_S)
            self.geo.close()


def build_services(config: Config, conninfo: str) -> Services:
    timeout = timedelta(minutes=config.session_timeout_min)
    geo_path = Path(config.geo_ip_file) if config.geo_ip_file else None
    return Services(
        config=config,
        conninfo=conninfo,
        pipeline=Pipeline(
            conninfo,
            queue_size=config.queue_size,
            batch_max_size=config.batch_max_size,
            batch_max_msec=config.batch_max_msec,
            session_timeout=timeout,
        ),
        salts=SaltCache(timeout),
        geo=GeoLocator(geo_path),
    )


def create_app(
    config: Config, *, conninfo: str | None = None, static_folder: Path | None = None
) -> Starlette:
    """The app; with a conninfo it also collects events (POST /p) into that database."""
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
    ]
    services = build_services(config, conninfo) if conninfo is not None else None
    if services is not None:
        ingest = Ingest(
            config,
            pipeline=services.pipeline,
            salts=services.salts,
            geo=services.geo,
            agents=AgentParser(),
            client_ip=ClientIp(config.ip_extractor, config.trusted_networks()),
        )
        routes += [
            Route("/p", ingest.collect, methods=["POST"]),
            Route("/p", ingest.preflight, methods=["OPTIONS"]),
        ]
    routes.append(Route("/{path:path}", static.serve, methods=["GET", "HEAD"]))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if services is None:
            yield
            return
        async with services.running():
            yield

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.services = services
    return app
