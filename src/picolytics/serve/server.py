"""Run the ASGI app under Hypercorn or uvicorn until SIGTERM or SIGINT, then shut down
gracefully; both under the same limits on slow and numerous clients (serve/limits.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import signal
import socket
import ssl
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from hypercorn.config import Config as HypercornConfig
from starlette.types import ASGIApp, Receive, Scope, Send

from picolytics.config import ServerName, split_listen_addr
from picolytics.errors import ListenError
from picolytics.serve.hypercorn_serve import serve_hypercorn
from picolytics.serve.limits import BodyDeadline, ServerLimits

log = logging.getLogger(__name__)
access_log = logging.getLogger("picolytics.access")

# Hypercorn waits forever for a client's next bytes unless told otherwise (the head and
# the body have deadlines of their own: ServerLimits).
READ_TIMEOUT_S = 30
GRACEFUL_TIMEOUT_S = 10.0
# How long a stopping server may take to write what its queue still holds.
SHUTDOWN_DRAIN_S = 15.0


def bind_socket(
    listen_addr: str, *, reuse_port: bool = False, listen: bool = True
) -> socket.socket:
    """Bind the listening socket ourselves, so the real port is known (even for :0).

    With reuse_port, several worker processes each bind their own socket to the same
    port and the kernel spreads new connections evenly between them.
    """
    host, port = split_listen_addr(listen_addr)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on sockets that say they
    # are TCP. Without it Nagle holds each keep-alive response's last segment until the
    # client's delayed ACK: 40 ms per request.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host or "0.0.0.0", port))  # noqa: S104 - ":8080" means every address
        if listen:
            sock.listen(1024)
    except OSError as error:
        sock.close()
        raise ListenError(f"cannot listen on {listen_addr}: {error.strerror}") from None
    sock.set_inheritable(True)
    return sock


def listen_addr_of(sock: socket.socket, listen_addr: str) -> str:
    """The listen address with the port the socket really got (for ":0")."""
    host, _ = split_listen_addr(listen_addr)
    port = sock.getsockname()[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def public_url(sock: socket.socket, listen_addr: str, scheme: str = "http") -> str:
    host, _ = split_listen_addr(listen_addr)
    port = sock.getsockname()[1]
    if host in ("", "0.0.0.0", "::"):  # noqa: S104
        host = "localhost"
    elif ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}/"


class AccessLog:
    """Logs method, path and status at DEBUG: never the client address or User-Agent."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not access_log.isEnabledFor(logging.DEBUG):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def send_and_note(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            access_log.debug(
                "%s %s %d %.1fms",
                scope["method"],
                scope["path"],
                status,
                (time.perf_counter() - started) * 1000,
            )


class _TLSHypercornConfig(HypercornConfig):
    """Serves HTTPS with a context we own (AUTOTLS): Hypercorn would build its own from
    certfile/keyfile once, at startup; certificates loaded into this one later are used
    by new handshakes."""

    def __init__(self, context: ssl.SSLContext) -> None:
        super().__init__()
        self._context = context

    @property
    def ssl_enabled(self) -> bool:
        return True

    def create_ssl_context(self) -> ssl.SSLContext:
        return self._context


def hypercorn_config(
    limits: ServerLimits, ssl_context: ssl.SSLContext | None = None
) -> HypercornConfig:
    config = HypercornConfig() if ssl_context is None else _TLSHypercornConfig(ssl_context)
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.read_timeout = READ_TIMEOUT_S
    # Hypercorn's idle timer runs until a whole head is in: the head deadline.
    config.keep_alive_timeout = limits.head_timeout_s
    config.ssl_handshake_timeout = limits.head_timeout_s
    config.graceful_timeout = GRACEFUL_TIMEOUT_S
    config.include_server_header = False  # as under uvicorn: no version advertised
    return config


DEFAULT_LIMITS = ServerLimits()


@dataclass(frozen=True)
class Listener:
    """One app on one address: the public app, or the admin app."""

    app: ASGIApp
    listen_addr: str
    name: str
    reuse_port: bool = False
    server: ServerName = "hypercorn"  # the SERVER setting, public listener only
    ssl_context: ssl.SSLContext | None = None  # HTTPS (AUTOTLS), Hypercorn only
    limits: ServerLimits = DEFAULT_LIMITS  # MAX_CONNECTIONS, REQUEST_*_TIMEOUT_SEC


Bound = list[tuple[Listener, socket.socket]]


def bind_all(stack: contextlib.ExitStack, listeners: list[Listener]) -> Bound:
    """Bind every listener's socket up front, so a busy port fails before anything runs."""
    return [
        (
            listener,
            stack.enter_context(bind_socket(listener.listen_addr, reuse_port=listener.reuse_port)),
        )
        for listener in listeners
    ]


async def serve_bound(bound: Bound, stop: asyncio.Event) -> None:
    """Serve every bound listener until `stop` is set, then shut down gracefully."""
    servers = []
    for listener, sock in bound:
        log.info(
            "picolytics %s server listening on %s",
            listener.name,
            public_url(sock, listener.listen_addr, "https" if listener.ssl_context else "http"),
        )
        limits = listener.limits
        app = BodyDeadline(AccessLog(listener.app), limits.body_timeout_s)
        if listener.server == "uvicorn":
            servers.append(serve_uvicorn(app, sock, limits, stop))
        else:
            config = hypercorn_config(limits, listener.ssl_context)
            servers.append(serve_hypercorn(app, config, sock, limits, stop))
    await asyncio.gather(*servers)


async def serve_uvicorn(
    app: ASGIApp, sock: socket.socket, limits: ServerLimits, stop: asyncio.Event
) -> None:
    """The same app under uvicorn with httptools (SERVER=uvicorn): about 5x less CPU per
    request than Hypercorn. Its access log (client address included) stays off."""
    import uvicorn  # noqa: PLC0415 - an optional extra, imported only when chosen

    from picolytics.serve.uvicorn_protocol import LimitedHttpToolsProtocol  # noqa: PLC0415

    config = uvicorn.Config(
        app,
        http=LimitedHttpToolsProtocol.with_limits(limits),
        # Idle keep-alive connections close at the head deadline, as under Hypercorn.
        timeout_keep_alive=max(1, math.ceil(limits.head_timeout_s)),
        loop="asyncio",
        lifespan="on",
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=int(GRACEFUL_TIMEOUT_S),
        server_header=False,
        # Client addresses are IP_EXTRACTOR's business: uvicorn's own X-Forwarded-For
        # handling would otherwise rewrite the peer for anyone on loopback.
        proxy_headers=False,
    )
    server = uvicorn.Server(config)

    async def stop_when_told() -> None:
        await stop.wait()
        server.should_exit = True

    watcher = asyncio.create_task(stop_when_told())
    try:
        # _serve, not serve: serve() would install signal handlers of its own over ours.
        await server._serve(sockets=[sock])
    finally:
        watcher.cancel()


def stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)


async def _serve_until_signal(bound: Bound) -> None:
    stop = asyncio.Event()
    stop_on_signals(stop)
    await serve_bound(bound, stop)
    log.info("picolytics stopped")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed (a dependency, but not on Windows): under Hypercorn and
    uvicorn alike the loop's own work is a good part of each request's CPU."""
    with contextlib.suppress(ImportError):
        import uvloop  # noqa: PLC0415 - optional

        return uvloop.new_event_loop
    return None


def run(*listeners: Listener) -> None:
    """Serve until SIGTERM/SIGINT; in-flight requests finish, the apps' lifespans close."""
    with contextlib.ExitStack() as stack:
        bound = bind_all(stack, list(listeners))
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            runner.run(_serve_until_signal(bound))
