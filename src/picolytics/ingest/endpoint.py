"""POST /p and POST /api/event: from a tracker's request to an enriched event in the queue.

The handler reads the body under a size limit, validates it (collect.py), refuses
sites beyond ALLOWED_SITES or the new-site limit (storage/sites.py), drops bots into
a counter, derives the private visitor id and the location from the IP
address and User-Agent (which go no further than this function), and offers the
event to the queue. It never waits on the database.

It is a plain ASGI app rather than a Starlette route: this is the one hot path, and
skipping the Request/Response objects saves a good share of the CPU per event.
Both paths share everything but the body parser: /p reads picolytics' own tracker
payload, /api/event Plausible's (plausible.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from starlette.types import Message, Receive, Scope, Send

from picolytics.accounting import RejectReason
from picolytics.config import DEFAULTS, Config
from picolytics.enrich.agents import AgentParser
from picolytics.enrich.channels import channel_of
from picolytics.enrich.geo import GeoLocator
from picolytics.enrich.visitor import SaltCache, SaltUnavailableError
from picolytics.events import BotHit, EventNames, PageEvent, QueuedEvent, new_id
from picolytics.ingest.clientip import ClientIp, trust_note
from picolytics.ingest.collect import parse_event
from picolytics.ingest.payload import InvalidPayload
from picolytics.ingest.plausible import parse_plausible_event
from picolytics.ingest.ratelimit import RateLimiter
from picolytics.storage.pipeline import Pipeline

log = logging.getLogger(__name__)

ACCEPTED_CONTENT_TYPES = frozenset({b"text/plain", b"application/json"})
CORS_HEADERS = [(b"access-control-allow-origin", b"*")]
TEXT_HEADERS = [*CORS_HEADERS, (b"content-type", b"text/plain; charset=utf-8")]
PREFLIGHT_HEADERS = [
    *CORS_HEADERS,
    (b"access-control-allow-methods", b"POST, OPTIONS"),
    (b"access-control-allow-headers", b"Content-Type"),
    (b"access-control-max-age", b"86400"),
]
RETRY_AFTER = [(b"retry-after", b"1")]
# A whole body must arrive within this time: the server's read timeout applies per
# read, so a client dripping one byte at a time would otherwise hold a handler forever.
BODY_READ_TIMEOUT_S = 10.0
ACCEPTED_BODY = b"accepted"


class BodyTooLargeError(Exception):
    pass


class ClientDisconnectedError(Exception):
    pass


class Rejected(Exception):  # noqa: N818 - a response, not a failure
    """The request is refused: counted under `reason`, answered with `status`."""

    def __init__(
        self,
        reason: RejectReason,
        status: int,
        text: str,
        headers: list[tuple[bytes, bytes]] | None = None,
    ):
        super().__init__(text)
        self.reason, self.status, self.text, self.headers = reason, status, text, headers or []


@dataclass(slots=True)
class RequestHead:
    """The few request headers /p needs, read in one pass over the ASGI scope."""

    content_type: bytes = b""
    content_length: int | None = None
    user_agent: str = ""
    forwarded_for: list[str] = field(default_factory=list)
    real_ip: str = ""

    @classmethod
    def from_scope(cls, scope: Scope) -> RequestHead:
        head = cls()
        for name, value in scope["headers"]:
            if name == b"content-type":
                head.content_type = value.split(b";", 1)[0].strip().lower()
            elif name == b"content-length":
                head.content_length = int(value) if value.isdigit() else None
            elif name == b"user-agent":
                head.user_agent = value.decode("latin-1")
            elif name == b"x-forwarded-for":
                head.forwarded_for.append(value.decode("latin-1"))
            elif name == b"x-real-ip":
                head.real_ip = value.decode("latin-1")
        return head


async def read_body(receive: Receive, declared: int | None, limit: int) -> bytes:
    """The body, refused as soon as it exceeds `limit` (chunked bodies too), and if it
    comes in pieces, within BODY_READ_TIMEOUT_S."""
    if declared is not None and declared > limit:
        raise BodyTooLargeError
    message = await receive()  # a tracker's body nearly always comes in one piece
    first = _body_of(message, limit)
    if not message.get("more_body", False):
        return first
    chunks = [first]
    size = len(first)
    async with asyncio.timeout(BODY_READ_TIMEOUT_S):
        while True:
            message = await receive()
            chunk = _body_of(message, limit - size)
            size += len(chunk)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _body_of(message: Message, limit: int) -> bytes:
    if message["type"] == "http.disconnect":
        raise ClientDisconnectedError
    chunk: bytes = message.get("body", b"")
    if len(chunk) > limit:
        raise BodyTooLargeError
    return chunk


async def respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def log_startup_notes(config: Config) -> None:
    """Log, once at startup, who may name sites and whose forwarded addresses count."""
    if not config.allowed_sites:
        log.warning(
            "ALLOWED_SITES is empty: any domain a client names becomes a site"
            " (at most %d new ones per hour and process: MAX_NEW_SITES_PER_HOUR)",
            config.max_new_sites_per_hour,
        )
    note = trust_note(config.ip_extractor, config.trusted_networks())
    if note is not None:
        if config.trusted_proxies == DEFAULTS.trusted_proxies:
            log.warning("%s (the default: every private range; set your proxies' own)", note)
        else:
            log.info("%s", note)


class Ingest:
    def __init__(
        self,
        config: Config,
        *,
        pipeline: Pipeline,
        salts: SaltCache,
        geo: GeoLocator,
        agents: AgentParser,
        client_ip: ClientIp,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.rate_limiter = (
            RateLimiter(config.request_rate_limit, ipv6_prefix=config.rate_limit_ipv6_prefix)
            if config.request_rate_limit > 0
            else None
        )
        self.body_limit = config.body_max_size
        self.names = config.event_names()
        # path -> body parser: the paths this handler serves.
        self.parsers: dict[str, Callable[[bytes, EventNames], PageEvent]] = {
            "/p": parse_event,
            "/api/event": parse_plausible_event,
        }
        self.allowed_sites = frozenset(config.allowed_sites)
        self.pipeline = pipeline
        # Anyone may name a new site while ALLOWED_SITES is empty: a limit per hour.
        self.new_sites = pipeline.sites.new_sites
        self.salts = salts
        self.geo = geo
        self.agents = agents
        self.client_ip = client_ip
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        if method == "POST":
            await self.collect(scope, receive, send)
        elif method == "OPTIONS":
            await respond(send, 204, b"", PREFLIGHT_HEADERS)
        else:
            await respond(send, 405, b"use POST", [*TEXT_HEADERS, (b"allow", b"POST, OPTIONS")])

    async def collect(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._collect(scope, receive)
        except Rejected as rejected:
            self.pipeline.stats.dropped[rejected.reason] += 1
            await respond(
                send, rejected.status, rejected.text.encode(), [*TEXT_HEADERS, *rejected.headers]
            )
            return
        await respond(send, 202, ACCEPTED_BODY, TEXT_HEADERS)

    async def _read_page(self, path: str, head: RequestHead, receive: Receive) -> PageEvent:
        if head.content_type not in ACCEPTED_CONTENT_TYPES:
            raise Rejected(
                "unsupported_type", 415, "use Content-Type text/plain or application/json"
            )
        try:
            body = await read_body(receive, head.content_length, self.body_limit)
        except TimeoutError:
            raise Rejected("too_slow", 408, "request body too slow") from None
        except BodyTooLargeError:
            raise Rejected("too_large", 413, "body too large") from None
        except ClientDisconnectedError:
            raise Rejected("invalid", 400, "incomplete body") from None
        try:
            page = self.parsers[path](body, self.names)
        except InvalidPayload as error:
            raise Rejected("invalid", 400, error.reason) from None
        if self.allowed_sites and page.site not in self.allowed_sites:
            raise Rejected("unknown_site", 403, "site not tracked here")
        if not self.new_sites.admit(page.site):  # bots too: their counters are per site
            raise Rejected("unknown_site", 403, "too many new sites, try again later")
        return page

    async def _collect(self, scope: Scope, receive: Receive) -> None:
        received_at = self.clock()
        head = RequestHead.from_scope(scope)
        client = scope.get("client")
        ip = self.client_ip.extract(client[0] if client else "", head.forwarded_for, head.real_ip)
        # First, before any parsing: an abusive client should cost as little as possible.
        if self.rate_limiter is not None and not self.rate_limiter.allow(ip):
            raise Rejected("rate_limited", 429, "too many requests", RETRY_AFTER)
        page = await self._read_page(scope["path"], head, receive)
        user_agent = head.user_agent
        agent = self.agents.parse(user_agent)
        if agent.bot_reason is not None:
            self.pipeline.count_bot(BotHit(page.site, received_at.date(), agent.bot_reason))
            return
        try:
            visitor_id, previous_id = self.salts.visitor_ids(page.site, ip, user_agent, received_at)
        except SaltUnavailableError:
            raise Rejected("no_salt", 503, "try again later", [(b"retry-after", b"10")]) from None
        event = QueuedEvent(
            received_at=received_at,
            event_id=new_id(),
            visitor_id=visitor_id,
            previous_visitor_id=previous_id,
            page=page,
            location=self.geo.lookup(ip),
            agent=agent,
            channel=channel_of(
                page.utm_source, page.utm_medium, page.utm_campaign, page.referrer_host
            ),
        )
        if not self.pipeline.offer(event):
            raise Rejected("queue_full", 503, "queue full, try again later", RETRY_AFTER)
