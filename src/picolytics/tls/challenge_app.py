"""Port 80 under automatic TLS: the ACME HTTP-01 answers, and a 308 redirect to HTTPS
for everything else. Its lifespan runs the certificate manager's renewal loop, so the
loop lives exactly as long as the server the CA validates against."""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import quote

from starlette.types import Receive, Scope, Send

from picolytics.tls.renewal import CertificateManager

CHALLENGE_PREFIX = "/.well-known/acme-challenge/"


class ChallengeApp:
    """The ASGI app of port 80, around one certificate manager."""

    def __init__(self, manager: CertificateManager, https_port: int) -> None:
        self.manager = manager
        port = "" if https_port in (0, 443) else f":{https_port}"
        self.https_origin = f"https://{manager.host}{port}"
        self._task: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._task = asyncio.create_task(self.manager.run(), name="autotls")
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._task is not None:
                    self._task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await self._task
                await self.manager.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, send: Send) -> None:
        path: str = scope["path"]
        if path.startswith(CHALLENGE_PREFIX):
            answer = await self.manager.answers.find(path.removeprefix(CHALLENGE_PREFIX))
            if answer is None:
                await _respond(send, 404, b"not found\n", [])
            else:
                await _respond(send, 200, answer.encode(), [])
            return
        query: bytes = scope.get("query_string", b"")
        location = self.https_origin + quote(path)
        if query:
            location += "?" + query.decode("latin-1")
        await _respond(send, 308, b"", [(b"location", location.encode("latin-1"))])


async def _respond(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
