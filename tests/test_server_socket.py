"""The listening socket picolytics binds itself (server.bind_socket)."""

from __future__ import annotations

import asyncio
import socket

from picolytics.serve.server import bind_socket


def test_accepted_connections_get_tcp_nodelay() -> None:
    """Without TCP_NODELAY, Nagle and the client's delayed ACK add ~40 ms to every
    keep-alive request after the first; asyncio only sets it on sockets marked TCP."""

    async def scenario() -> int:
        accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                sock = transport.get_extra_info("socket")
                accepted.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                transport.close()

        with bind_socket("127.0.0.1:0") as listening:
            server = await asyncio.get_running_loop().create_server(Probe, sock=listening)
            port = listening.getsockname()[1]
            async with server:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                nodelay = await asyncio.wait_for(accepted, 10)
                writer.close()
        return nodelay

    assert asyncio.run(scenario()) == 1


def test_reuse_port_lets_workers_share_a_port() -> None:
    with bind_socket("127.0.0.1:0", reuse_port=True) as first:
        port = first.getsockname()[1]
        with bind_socket(f"127.0.0.1:{port}", reuse_port=True) as second:
            assert second.getsockname()[1] == port
