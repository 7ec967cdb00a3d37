"""What one client may take of a server process, the same under Hypercorn and uvicorn.

- MAX_CONNECTIONS: a process keeps at most this many connections open; a further one
  gets `REFUSED` (503, Retry-After: 1) at once and is closed.
- REQUEST_HEAD_TIMEOUT_SEC: from a connection's start, or from its previous response,
  the whole request head must be in within this time, however the bytes trickle in;
  else the connection is closed (an idle keep-alive connection too). Each server
  enforces it in its protocol (serve/hypercorn_serve.py, serve/uvicorn_protocol.py).
- REQUEST_BODY_TIMEOUT_SEC: once the head is in, the whole body must be within this
  time; else `BodyDeadline` answers 408 and the connection is closed.
- A request head is at most `HEAD_MAX_BYTES` (431 beyond, or the connection closed).
"""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from picolytics.config import DEFAULTS, Config

# h11's and Hypercorn's default limit of an incomplete request head.
HEAD_MAX_BYTES = 16 * 1024
# Written to a connection beyond MAX_CONNECTIONS before it is closed.
REFUSED = (
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\n"
    b"Connection: close\r\n\r\n"
)
HEAD_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\n"
    b"Connection: close\r\n\r\n"
)
_BODYLESS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class ServerLimits:
    max_connections: int = DEFAULTS.max_connections
    head_timeout_s: float = DEFAULTS.request_head_timeout_sec
    body_timeout_s: float = DEFAULTS.request_body_timeout_sec

    @classmethod
    def of(cls, config: Config) -> ServerLimits:
        return cls(
            config.max_connections, config.request_head_timeout_sec, config.request_body_timeout_sec
        )


class BodyDeadline:
    """Gives each request's body `timeout_s` from the moment the app is called (the
    head is in). Past it the app reads a disconnect, the client gets 408 with
    `Connection: close` (unless a response had started), and whatever the app sends
    later is dropped."""

    def __init__(self, app: ASGIApp, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in _BODYLESS:
            await self.app(scope, receive, send)
            return
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        complete = started = late = False

        async def receive_in_time() -> Message:
            nonlocal complete, late
            if late:
                return {"type": "http.disconnect"}
            if complete:  # after the body: a wait for the disconnect, not bounded here
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                late = True
                if not started:
                    await send(_REQUEST_TIMEOUT_START)
                    await send(_REQUEST_TIMEOUT_BODY)
                return {"type": "http.disconnect"}
            if message["type"] != "http.request" or not message.get("more_body", False):
                complete = True
            return message

        async def send_unless_late(message: MutableMapping[str, Any]) -> None:
            nonlocal started
            if late:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, receive_in_time, send_unless_late)


_REQUEST_TIMEOUT_TEXT = b"The request body took too long.\n"
_REQUEST_TIMEOUT_START: Message = {
    "type": "http.response.start",
    "status": 408,
    "headers": [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(_REQUEST_TIMEOUT_TEXT)).encode()),
        (b"connection", b"close"),
    ],
}
_REQUEST_TIMEOUT_BODY: Message = {"type": "http.response.body", "body": _REQUEST_TIMEOUT_TEXT}
