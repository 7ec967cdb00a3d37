"""A small TCP fault proxy between picolytics and PostgreSQL, for fault-injection tests.

It listens on 127.0.0.1 (a free port) and forwards every connection to PostgreSQL's
unix socket (or a TCP address). Its mode can be switched at any time, from any thread:

- "pass":      forward both ways;
- "refuse":    reset every open connection, and reset new ones as soon as they arrive
               (a database that is down or restarting);
- "blackhole": accept and read, but never forward or answer; connections that saw
               this stay dead even after the mode changes back (a hung server or a
               network partition: the socket is open, nothing ever comes back);
- "delay":     forward both ways, each chunk after `delay_s` (a slow network).

`cut_after_commit(n, hang=...)` arms a one-shot fault for the next n COMMITs: the
COMMIT is forwarded (so PostgreSQL commits), but its answer never reaches the client,
which then either sees the connection drop or, with hang=True, waits forever. The
client cannot know whether its transaction committed: the case a retried write must
survive without duplicating rows.

The proxy runs its own event loop in a daemon thread; `close()` stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from psycopg.conninfo import conninfo_to_dict, make_conninfo

Mode = Literal["pass", "refuse", "blackhole", "delay"]
T = TypeVar("T")

_CHUNK = 65536
_COMMIT = b"COMMIT\x00"
_ROLLBACK = b"ROLLBACK\x00"


def unix_socket_of(conninfo: str) -> Path:
    """The socket file of a conninfo whose host is a unix socket folder."""
    parts = conninfo_to_dict(conninfo)
    host = str(parts.get("host") or "")
    assert host.startswith("/"), f"not a unix socket conninfo: host={host!r}"
    return Path(host) / f".s.PGSQL.{parts.get('port') or 5432}"


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (SO_LINGER 0), as a refusing or crashed peer would."""
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@dataclass(eq=False)
class _Link:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    dead: bool = False  # saw the blackhole: never forwards again
    cut_pending: Literal["", "close", "hang"] = ""
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def close(self, *, reset: bool = False) -> None:
        if reset:
            _reset(self.client)
        else:
            self.client.transport.abort()
        if self.upstream is not None:
            self.upstream.transport.abort()


class FaultProxy:
    def __init__(self, unix_path: Path | None = None, tcp: tuple[str, int] | None = None) -> None:
        assert (unix_path is None) != (tcp is None), "one target: unix_path or tcp"
        self.unix_path = unix_path
        self.tcp = tcp
        self.mode: Mode = "pass"
        self.delay_s = 0.0
        self.connections = 0  # accepted so far
        self.commits = 0  # COMMITs seen from clients
        self.rollbacks = 0  # ROLLBACKs seen from clients
        self.commits_cut = 0  # COMMITs whose answer was withheld
        self._cuts_armed = 0
        self._cut_kind: Literal["close", "hang"] = "close"
        self._links: set[_Link] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self.port = 0

    # -- control, from any thread --------------------------------------------------
    def start(self) -> FaultProxy:
        self._thread.start()
        self._call(self._start())
        return self

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def set_mode(self, mode: Mode, delay_s: float = 0.0) -> None:
        self._call(self._set_mode(mode, delay_s))

    def cut_after_commit(self, count: int = 1, *, hang: bool = False) -> None:
        """Withhold the answer to the next `count` COMMITs (close, or hang if `hang`)."""

        async def arm() -> None:
            self._cuts_armed = count
            self._cut_kind = "hang" if hang else "close"

        self._call(arm())

    def conninfo(self, base: str, **extra: Any) -> str:
        """`base` (a database's conninfo) pointed at this proxy instead."""
        return make_conninfo(base, host="127.0.0.1", port=self.port, **extra)

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)

    # -- inside the proxy's loop -------------------------------------------------------
    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            link.close()
            for task in link.tasks:
                task.cancel()
        self._links.clear()

    async def _set_mode(self, mode: Mode, delay_s: float) -> None:
        self.mode, self.delay_s = mode, delay_s
        if mode == "refuse":
            for link in list(self._links):
                link.close(reset=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.mode == "refuse":
            _reset(writer)
            return
        link = _Link(writer)
        self._links.add(link)
        try:
            if self.mode == "blackhole":
                link.dead = True
            else:
                try:
                    if self.unix_path is not None:
                        up_reader, up_writer = await asyncio.open_unix_connection(
                            str(self.unix_path)
                        )
                    else:
                        assert self.tcp is not None
                        up_reader, up_writer = await asyncio.open_connection(*self.tcp)
                except OSError:
                    _reset(writer)
                    return
                link.upstream = up_writer
                link.tasks.append(
                    asyncio.create_task(self._pump(link, up_reader, writer, to_server=False))
                )
            await self._pump(link, reader, link.upstream, to_server=True)
        finally:
            link.close()
            self._links.discard(link)

    async def _pump(
        self,
        link: _Link,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter | None,
        *,
        to_server: bool,
    ) -> None:
        try:
            while data := await reader.read(_CHUNK):
                if self.mode == "blackhole":
                    link.dead = True
                if link.dead or writer is None:
                    continue  # read, never answer
                if to_server:
                    self._watch(link, data)
                elif link.cut_pending == "close":
                    self.commits_cut += 1
                    break
                elif link.cut_pending == "hang":
                    self.commits_cut += 1
                    link.dead = True
                    continue
                if self.mode == "delay":
                    await asyncio.sleep(self.delay_s)
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        # One side is gone: so is the other (PostgreSQL then ends the backend).
        link.close()

    def _watch(self, link: _Link, data: bytes) -> None:
        if _ROLLBACK in data:
            self.rollbacks += 1
        if _COMMIT in data:
            self.commits += 1
            if self._cuts_armed > 0:
                self._cuts_armed -= 1
                link.cut_pending = self._cut_kind
