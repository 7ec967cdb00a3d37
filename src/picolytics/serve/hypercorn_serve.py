"""Hypercorn's serving loop with a connection bound (MAX_CONNECTIONS).

`hypercorn.asyncio.serve` accepts every connection it is offered. This is its loop
(Hypercorn 0.18's `worker_serve`, one socket, our shutdown trigger) with the accept
callback counting connections: one beyond the bound gets 503 and is closed before
Hypercorn sees it. The head deadline is Hypercorn's own idle timer
(`keep_alive_timeout`): it runs from the connection's start and from each response
until a whole head is parsed, and reads do not reset it. The body deadline is
`BodyDeadline`, the head size h11's `h11_max_incomplete_size`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

from hypercorn.asyncio.lifespan import Lifespan
from hypercorn.asyncio.tcp_server import TCPServer
from hypercorn.asyncio.worker_context import WorkerContext
from hypercorn.config import Config as HypercornConfig
from hypercorn.typing import LifespanState
from hypercorn.utils import wrap_app
from starlette.types import ASGIApp

from picolytics.serve.limits import REFUSED, ServerLimits

# The listen backlog (bind_socket's; asyncio would set Hypercorn's 100 again).
BACKLOG = 1024


async def refuse(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, RuntimeError):
        writer.write(REFUSED)
        writer.close()
        await writer.wait_closed()


async def serve_hypercorn(
    app: ASGIApp,
    config: HypercornConfig,
    sock: socket.socket,
    limits: ServerLimits,
    stop: asyncio.Event,
) -> None:
    """Serve `app` on `sock` until `stop` is set, then as Hypercorn: stop accepting,
    let open requests finish within graceful_timeout, run the lifespan's shutdown."""
    loop = asyncio.get_running_loop()
    wrapped = wrap_app(app, config.wsgi_max_body_size, "asgi")  # type: ignore[arg-type]
    state: LifespanState = {}
    lifespan = Lifespan(wrapped, config, loop, state)
    lifespan_task = loop.create_task(lifespan.handle_lifespan())
    await lifespan.wait_for_startup()
    if lifespan_task.done() and (error := lifespan_task.exception()) is not None:
        raise error
    context = WorkerContext(None)
    connections: set[asyncio.Task[None]] = set()

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(connections) >= limits.max_connections:
            await refuse(writer)
            return
        task = asyncio.current_task()
        assert task is not None  # a callback of start_server runs in a task
        connections.add(task)
        task.add_done_callback(connections.discard)
        await TCPServer(wrapped, loop, config, context, state, reader, writer)

    ssl_context = config.create_ssl_context() if config.ssl_enabled else None
    server = await asyncio.start_server(
        on_connection,
        sock=sock,
        backlog=BACKLOG,
        ssl=ssl_context,
        ssl_handshake_timeout=config.ssl_handshake_timeout if ssl_context else None,
    )
    try:
        await stop.wait()
    finally:
        await context.terminated.set()
        server.close()
        await server.wait_closed()
        if connections:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait(connections, timeout=config.graceful_timeout)
        await lifespan.wait_for_shutdown()
        lifespan_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await lifespan_task
