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
from starlette.types import Receive, Scope, Send

from picolytics.api.auth import Authenticator, BearerKeys, FirstOf, KeyRateLimiter
from picolytics.api.pool import ConnectionPool
from picolytics.api.primary_auth import OnPrimary
from picolytics.api.v1_endpoints import v1_routes
from picolytics.api.v2_endpoint import QueryApi
from picolytics.config import Config
from picolytics.dashboard.api_access import DashboardAccess
from picolytics.dashboard.setup import dashboard_routes
from picolytics.dashboard.ui import DashboardPages
from picolytics.enrich.agents import AgentParser
from picolytics.enrich.geo import GeoLocator
from picolytics.enrich.visitor import SaltCache
from picolytics.errors import first_line
from picolytics.ingest.clientip import ClientIp
from picolytics.ingest.endpoint import Ingest, log_startup_notes
from picolytics.serve.admin import create_admin_app, readiness_reason
from picolytics.serve.metrics import Metrics, exposition_registry
from picolytics.serve.server import SHUTDOWN_DRAIN_S
from picolytics.serve.static import StaticFiles, choose_static_dir
from picolytics.storage.maintenance import maintain, set_timeouts
from picolytics.storage.pipeline import Pipeline
from picolytics.storage.prune import prune
from picolytics.storage.read_database import read_conninfo
from picolytics.storage.roller import catch_up
from picolytics.storage.roller import summary as rollup_summary
from picolytics.storage.sites import NewSites, SiteIds

log = logging.getLogger(__name__)

ROBOTS_TXT = "User-agent: *\nDisallow: /\n"
MAINTENANCE_INTERVAL_S = 60.0
METRICS_SYNC_INTERVAL_S = 1.0


@dataclass
class Services:
    """What the routes share; the lifespan starts and stops the database parts."""

    config: Config
    conninfo: str
    pipeline: Pipeline
    salts: SaltCache
    geo: GeoLocator
    metrics: Metrics
    api_pool: ConnectionPool  # the Stats API's and the dashboard's queries
    # With a read connection, the primary's pool that finds who asks the API.
    auth_pool: ConnectionPool | None = None

    def sync_metrics(self) -> None:
        pipeline = self.pipeline
        self.metrics.sync(
            pipeline.stats,
            pipeline.queue.qsize(),
            pipeline.queue.maxsize,
            pipeline.database_ok,
            new_sites_refused=pipeline.sites.new_sites.refused,
            queue_fill=pipeline.queue.fill(),
        )

    async def sync_metrics_forever(self) -> None:
        failing = False
        while True:
            try:
                self.sync_metrics()
            except Exception as error:  # e.g. a full multiprocess metrics folder: retry
                if not failing:  # once per outage, not every second
                    log.warning("metrics sync failed, will retry: %s", first_line(error))
                failing = True
            else:
                failing = False
            await asyncio.sleep(METRICS_SYNC_INTERVAL_S)

    async def readiness(self) -> str | None:
        """None when this process can take traffic, else why not (for /ready)."""
        queue = self.pipeline.queue
        return await readiness_reason(
            queue_fill=queue.fill(),
            database_ok=self.pipeline.database_ok,
            conninfo=self.conninfo,
        )

    async def maintain(self) -> None:
        """Salts for today and tomorrow, partitions ahead, expired visits forgotten."""
        now = datetime.now(UTC)
        async with await AsyncConnection.connect(self.conninfo, autocommit=True) as connection:
            await set_timeouts(connection)  # a held lock fails the round, never stalls it
            await self.salts.refresh(connection, now)
            await maintain(connection, now, self.pipeline.session_timeout)

    async def maintenance_round(self) -> None:
        """One round of maintenance; a failure is logged and counted, never raised."""
        try:
            await self.maintain()
        except Exception as error:  # keep maintaining after outages
            self.metrics.missed_run("maintenance", "failed")
            log.warning("maintenance failed, will retry: %s", first_line(error))

    async def maintain_forever(self) -> None:
        while True:
            await asyncio.sleep(MAINTENANCE_INTERVAL_S)
            await self.maintenance_round()

    async def prune_forever(self) -> None:
        """Prune at startup, then every PRUNE_CHECK_HOURS; the lock lets one server do it."""
        while True:
            await self.prune_round()
            await asyncio.sleep(self.config.prune_check_hours * 3600)

    async def prune_round(self) -> None:
        """One scheduled prune; a failure or a skip is counted, a failure logged."""
        try:
            report = await prune(
                self.conninfo,
                self.config.prune_days,
                rollup_days=self.config.prune_rollup_days,
            )
        except Exception as error:  # a failed prune waits for the next check
            self.metrics.missed_run("prune", "failed")
            log.warning(
                "scheduled prune failed, will retry in %d hour(s): %s",
                self.config.prune_check_hours,
                first_line(error),
            )
        else:
            if report.skipped:
                self.metrics.missed_run("prune", "skipped")

    async def rollup_forever(self) -> None:
        """Roll up the due days at startup, then every ROLLUP_INTERVAL_SEC, on a
        connection of its own (ingest never waits for it). With several processes the
        roller's lock lets one roll while the others skip the round."""
        interval = self.config.rollup_interval_sec
        while True:
            try:
                report = await catch_up(self.conninfo)
            except Exception as error:  # keep rolling up after outages
                log.warning("rollup failed, will retry in %d s: %s", interval, first_line(error))
            else:
                if report.failed:
                    log.warning(
                        "rollup: %s; first failure: %s", rollup_summary(report), report.failed[0]
                    )
            await asyncio.sleep(interval)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        await self.maintain()
        log_startup_notes(self.config)
        # Known sites first, so that a restart lets none of them count as new.
        async with await AsyncConnection.connect(self.conninfo, autocommit=True) as connection:
            await self.pipeline.sites.preload(connection)
        self.pipeline.start()
        background = [
            asyncio.create_task(self.maintain_forever(), name="picolytics-maintenance"),
            asyncio.create_task(self.sync_metrics_forever(), name="picolytics-metrics"),
        ]
        if self.config.prune_days > 0:
            background.append(asyncio.create_task(self.prune_forever(), name="picolytics-prune"))
        if self.config.rollup_interval_sec > 0:
            background.append(asyncio.create_task(self.rollup_forever(), name="picolytics-rollup"))
        try:
            yield
        finally:
            for task in background:
                task.cancel()
            # A task that died of an error must not keep the queue from being drained.
            ended = await asyncio.gather(*background, return_exceptions=True)
            for task, outcome in zip(background, ended, strict=True):
                if isinstance(outcome, Exception):
                    log.error("%s had stopped: %s", task.get_name(), first_line(outcome))
            await self.api_pool.close()  # the server answers no more requests
            if self.auth_pool is not None:
                await self.auth_pool.close()
            await self.pipeline.stop(SHUTDOWN_DRAIN_S)
            self.sync_metrics()
            self.geo.close()


def build_services(config: Config, conninfo: str) -> Services:
    timeout = timedelta(minutes=config.session_timeout_min)
    geo_path = Path(config.geo_ip_file) if config.geo_ip_file else None
    metrics = Metrics()
    reads = read_conninfo(config, conninfo)  # PGREADCONNSTRING, else the primary

    def pool(target: str) -> ConnectionPool:
        # A request waits for a connection as long as a query may run.
        wait = config.query_timeout_sec
        return ConnectionPool(
            target, size=config.api_pool_size, connect_timeout_s=wait, wait_s=wait
        )

    return Services(
        metrics=metrics,
        config=config,
        conninfo=conninfo,
        pipeline=Pipeline(
            conninfo,
            queue_size=config.queue_size,
            batch_max_size=config.batch_max_size,
            batch_max_msec=config.batch_max_msec,
            session_timeout=timeout,
            on_batch=metrics.observe_batch,
            # Bounded by the memory its events hold as well as by count.
            queue_max_bytes=config.queue_memory_mb * 1024 * 1024,
            # ALLOWED_SITES bounds the sites already; else at most so many new an hour.
            sites=SiteIds(
                NewSites(None if config.allowed_sites else config.max_new_sites_per_hour)
            ),
        ),
        salts=SaltCache(timeout),
        geo=GeoLocator(geo_path),
        api_pool=pool(reads),
        auth_pool=pool(conninfo) if reads != conninfo else None,
    )


class PublicApp:
    """/p and /api/event go straight to the ingest handler, ahead of Starlette's
    middleware and router (the one hot path); everything else, and the lifespan, goes
    to Starlette."""

    def __init__(self, router: Starlette, ingest: Ingest | None) -> None:
        self.router = router
        self.ingest = ingest
        self.state = router.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ingest = self.ingest
        if ingest is not None and scope["type"] == "http" and scope["path"] in ingest.parsers:
            await ingest(scope, receive, send)
        else:
            await self.router(scope, receive, send)


def create_app(
    config: Config, *, conninfo: str | None = None, static_folder: Path | None = None
) -> PublicApp:
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
    ingest = None
    if services is not None:
        client_ip = ClientIp(config.ip_extractor, config.trusted_networks())
        ingest = Ingest(
            config,
            pipeline=services.pipeline,
            salts=services.salts,
            geo=services.geo,
            agents=AgentParser(),
            client_ip=client_ip,
        )
        keys = BearerKeys(KeyRateLimiter(config.api_rate_limit))
        readers: Authenticator = keys
        if config.dashboard_enabled:  # after the key: the dashboard's login or shared link
            readers = FirstOf(keys, DashboardAccess(KeyRateLimiter(config.api_rate_limit).wait))
        if services.auth_pool is not None:  # numbers from a replica, who asks from the primary
            readers = OnPrimary(readers, services.auth_pool.connection)
        timeout = config.query_timeout_sec
        connect = services.api_pool.connection  # v1, v2 and the dashboard's calls
        api = QueryApi(connect, timeout_s=timeout, limiter=keys.limiter, authenticator=readers)
        # The dashboard's calls go under the paths its cookies are sent to.
        bases = ("", "/dashboard", "/share/{token}") if config.dashboard_enabled else ("",)
        for base in bases:
            routes.append(Route(f"{base}/api/v2/query", api.handle, methods=["POST"]))
            routes += v1_routes(
                connect,
                timeout_s=timeout,
                limiter=keys.limiter,
                authenticator=readers,
                prefix=base,
            )

        def client_of(request: Request) -> str:  # the login throttle's client, behind proxies
            peer = request.client.host if request.client else ""
            forwarded = request.headers.getlist("x-forwarded-for")
            return client_ip.extract(peer, forwarded, request.headers.get("x-real-ip", ""))

        routes += dashboard_routes(config, services.conninfo, client_of=client_of)
        if config.dashboard_enabled:
            routes += DashboardPages(services.conninfo).routes()
    routes.append(Route("/{path:path}", static.serve, methods=["GET", "HEAD"]))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if services is None:
            yield
            return
        async with services.running():
            yield

    router = Starlette(routes=routes, lifespan=lifespan)
    router.state.services = services
    return PublicApp(router, ingest)


def admin_app_for(app: PublicApp, config: Config) -> Starlette:
    """The admin app (health, readiness, metrics) of a public app built by create_app."""
    services: Services = app.state.services
    return create_admin_app(
        registry=exposition_registry(services.metrics, not config.disable_host_metrics),
        readiness=services.readiness,
        before_scrape=services.sync_metrics,
        debug=config.debug,
    )
