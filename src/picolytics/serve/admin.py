"""The admin application, served only on ADMIN_LISTEN: health, readiness, metrics, debug.

It lives on its own listener so that none of it is reachable from the internet-facing
port. The debug endpoints exist only with DEBUG=true.
"""

from __future__ import annotations

import asyncio
import gc
import io
import resource
import sys
import threading
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable

import psycopg
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from psycopg import AsyncConnection
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from picolytics.serve.metrics import render

# Returns None when ready, else the reason it is not.
Readiness = Callable[[], Awaitable[str | None]]

# /ready fails above this share of the queue (by count or by bytes, whichever is
# fuller: EventQueue.fill), so a balancer sends traffic elsewhere.
QUEUE_HIGH_WATER = 0.8
READY_PING_TIMEOUT_S = 3.0


async def readiness_reason(*, queue_fill: float, database_ok: bool, conninfo: str) -> str | None:
    """None when the server can take traffic, else why not."""
    if queue_fill > QUEUE_HIGH_WATER:
        return "queue above its high-water mark"
    if not database_ok:
        return "database writes are failing"
    try:
        async with asyncio.timeout(READY_PING_TIMEOUT_S):
            connection = await AsyncConnection.connect(conninfo, connect_timeout=2)
            async with connection:
                await connection.execute("SELECT 1")
    except (TimeoutError, psycopg.Error):
        return "database unreachable"
    return None


def create_admin_app(
    *,
    registry: CollectorRegistry,
    readiness: Readiness,
    before_scrape: Callable[[], None] = lambda: None,
    debug: bool = False,
) -> Starlette:
    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def ready(request: Request) -> Response:
        reason = await readiness()
        if reason is None:
            return PlainTextResponse("ready")
        return PlainTextResponse(f"not ready: {reason}", status_code=503)

    async def metrics(request: Request) -> Response:
        before_scrape()
        return Response(render(registry), media_type=CONTENT_TYPE_LATEST)

    routes = [
        Route("/healthz", healthz, methods=["GET", "HEAD"]),
        Route("/ready", ready, methods=["GET", "HEAD"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    if debug:
        routes += [
            Route("/debug/tasks", debug_tasks, methods=["GET"]),
            Route("/debug/threads", debug_threads, methods=["GET"]),
            Route("/debug/memory", debug_memory, methods=["GET"]),
        ]
    return Starlette(routes=routes)


async def debug_tasks(request: Request) -> Response:
    """Every asyncio task of this process with its current stack."""
    out = io.StringIO()
    for task in sorted(asyncio.all_tasks(), key=lambda task: task.get_name()):
        out.write(f"--- task {task.get_name()} ({'done' if task.done() else 'pending'})\n")
        task.print_stack(file=out)
    return PlainTextResponse(out.getvalue())


async def debug_threads(request: Request) -> Response:
    """The stack of every thread of this process."""
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    out = io.StringIO()
    for ident, frame in sys._current_frames().items():
        out.write(f"--- thread {names.get(ident, '?')} ({ident})\n")
        out.write("".join(traceback.format_stack(frame)))
    return PlainTextResponse(out.getvalue())


async def debug_memory(request: Request) -> Response:
    """Peak RSS, garbage collector state and the most numerous object types."""
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    counts = Counter(type(obj).__name__ for obj in gc.get_objects())
    lines = [
        f"peak RSS: {peak_kib / 1024:.1f} MiB",
        f"gc counts: {gc.get_count()}",
        "most common objects:",
    ]
    lines += [f"  {count:>10}  {name}" for name, count in counts.most_common(25)]
    return PlainTextResponse("\n".join(lines) + "\n")
