"""POST /p: from a tracker's request to an enriched event in the queue.

The handler reads the body under a size limit, validates it (collect.py), drops
bots into a counter, derives the private visitor id and the location from the IP
address and User-Agent (which go no further than this function), and offers the
event to the queue. It never waits on the database.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response

from picolytics.agents import AgentParser
from picolytics.collect import InvalidPayload, PageEvent, parse_event
from picolytics.config import Config
from picolytics.geo import GeoLocator
from picolytics.model import QueuedEvent
from picolytics.pipeline import Pipeline
from picolytics.ratelimit import RateLimiter
from picolytics.store import BotHit, new_id
from picolytics.visitor import SaltCache, SaltUnavailableError

log = logging.getLogger(__name__)

ACCEPTED_CONTENT_TYPES = frozenset({"text/plain", "application/json"})
CORS_HEADERS = {"Access-Control-Allow-Origin": "*"}
PREFLIGHT_HEADERS = {
    **CORS_HEADERS,
    "Access-Control-Allow-Methods": "POST, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type",
    "Access-Control-Max-Age": "86400",
}
RETRY_AFTER_S = "1"


class BodyTooLargeError(Exception):
    pass


class Rejected(Exception):  # noqa: N818 - a response, not a failure
    """The request is refused: counted under `reason`, answered with `status`."""

    def __init__(self, reason: str, status: int, text: str, headers: dict[str, str] | None = None):
        super().__init__(text)
        self.reason, self.status, self.text, self.headers = reason, status, text, headers


def _reply(status: int, text: str, extra: dict[str, str] | None = None) -> Response:
    headers = {**CORS_HEADERS, **extra} if extra else CORS_HEADERS
    return PlainTextResponse(text, status_code=status, headers=headers)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused as soon as it exceeds `limit` (chunked bodies too)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLargeError
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError
        chunks.append(chunk)
    return b"".join(chunks)


class Ingest:
    def __init__(
        self,
        config: Config,
        *,
        pipeline: Pipeline,
        salts: SaltCache,
        geo: GeoLocator,
        agents: AgentParser,
        client_ip: Callable[[Request], str],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.rate_limiter = (
            RateLimiter(config.request_rate_limit) if config.request_rate_limit > 0 else None
        )
        self.body_limit = config.body_max_size
        self.valid_names = frozenset(config.valid_event_names)
        self.allowed_sites = frozenset(config.allowed_sites)
        self.pipeline = pipeline
        self.salts = salts
        self.geo = geo
        self.agents = agents
        self.client_ip = client_ip
        self.clock = clock

    async def preflight(self, request: Request) -> Response:
        return Response(status_code=204, headers=PREFLIGHT_HEADERS)

    async def collect(self, request: Request) -> Response:
        try:
            await self._collect(request)
        except Rejected as rejected:
            self.pipeline.stats.dropped[rejected.reason] += 1
            return _reply(rejected.status, rejected.text, rejected.headers)
        return _reply(202, "accepted")

    async def _read_page(self, request: Request) -> PageEvent:
        media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media_type not in ACCEPTED_CONTENT_TYPES:
            raise Rejected(
                "unsupported_type", 415, "use Content-Type text/plain or application/json"
            )
        try:
            body = await read_body(request, self.body_limit)
        except BodyTooLargeError:
            raise Rejected("too_large", 413, "body too large") from None
        except ClientDisconnect:
            raise Rejected("invalid", 400, "incomplete body") from None
        try:
            page = parse_event(body, self.valid_names)
        except InvalidPayload as error:
            raise Rejected("invalid", 400, error.reason) from None
        if self.allowed_sites and page.site not in self.allowed_sites:
            raise Rejected("unknown_site", 403, "site not tracked here")
        return page

    async def _collect(self, request: Request) -> None:
        received_at = self.clock()
        ip = self.client_ip(request)
        # First, before any parsing: an abusive client should cost as little as possible.
        if self.rate_limiter is not None and not self.rate_limiter.allow(ip):
            raise Rejected("rate_limited", 429, "too many requests", {"Retry-After": "1"})
        page = await self._read_page(request)
        user_agent = request.headers.get("user-agent", "")
        agent = self.agents.parse(user_agent)
        if agent.bot_reason is not None:
            self.pipeline.count_bot(BotHit(page.site, received_at.date(), agent.bot_reason))
            return
        try:
            visitor_id, previous_id = self.salts.visitor_ids(page.site, ip, user_agent, received_at)
        except SaltUnavailableError:
            raise Rejected("no_salt", 503, "try again later", {"Retry-After": "10"}) from None
        event = QueuedEvent(
            received_at=received_at,
            event_id=new_id(),
            visitor_id=visitor_id,
            previous_visitor_id=previous_id,
            page=page,
            location=self.geo.lookup(ip),
            agent=agent,
        )
        if not self.pipeline.offer(event):
            raise Rejected(
                "queue_full", 503, "queue full, try again later", {"Retry-After": RETRY_AFTER_S}
            )
