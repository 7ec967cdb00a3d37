"""Slow, oversized and malformed requests against the real HTTP server (docs/guarantees.md, S1-S3).

Hypercorn serves the app in a thread of this process, configured by
picolytics.serve.server as in production except for a short read timeout (the module
constant, patched here), so a stalled client is seen closed within the test.
Hypercorn's read timeout is per read: a client that trickles a byte more often than
that is not cut by it; such clients must at least not take resources from others,
and headers cannot grow past h11's limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import httpx2 as httpx
import pytest

from picolytics.config import Config
from picolytics.ingest import endpoint as ingest
from picolytics.serve import server
from picolytics.serve.app import create_app
from picolytics.serve.server import Listener, bind_all, serve_bound

pytestmark = pytest.mark.slow

READ_TIMEOUT_S = 1
BODY = b'{"n": "load", "l": "https://example.com/slow"}'
HEADERS = {"Content-Type": "text/plain", "User-Agent": "Mozilla/5.0 (X11; Linux) Firefox/125.0"}


@pytest.fixture
def base(migrated_database: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setattr(server, "READ_TIMEOUT_S", READ_TIMEOUT_S)
    app = create_app(Config(request_rate_limit=0, geo_ip_file=""), conninfo=migrated_database)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    with contextlib.ExitStack() as stack:
        bound = bind_all(stack, [Listener(app, "127.0.0.1:0", "public")])
        port = bound[0][1].getsockname()[1]
        thread = threading.Thread(
            target=lambda: loop.run_until_complete(serve_bound(bound, stop)), daemon=True
        )
        thread.start()
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url + "/", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.05)
        try:
            yield url
        finally:
            loop.call_soon_threadsafe(stop.set)
            thread.join(timeout=30)
            loop.close()


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def closed_by_server(sock: socket.socket, within_s: float = 15) -> bool:
    """True once the server closes the connection (EOF or reset), read bounded."""
    sock.settimeout(within_s)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


def post(url: str) -> int:
    return httpx.post(url + "/p", content=BODY, headers=HEADERS, timeout=10).status_code


def test_stalled_headers_and_bodies_are_closed_after_the_read_timeout(base: str) -> None:
    stalled_headers = connect(base)
    stalled_headers.sendall(b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Ty")
    stalled_body = connect(base)
    stalled_body.sendall(
        b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
        b"Content-Length: 100\r\n\r\n" + BODY[:10]
    )
    with stalled_headers, stalled_body:
        assert closed_by_server(stalled_headers)
        assert closed_by_server(stalled_body)


def test_many_trickling_clients_do_not_block_others(base: str) -> None:
    slow = [connect(base) for _ in range(200)]
    try:
        for sock in slow:
            sock.sendall(b"POST /p HTTP/1.1\r\nHost: x\r\n")
        for round_ in range(5):  # a header byte each, more often than the read timeout
            for sock in slow:
                sock.sendall(b"X"[:1] if round_ else b"X-Slow: ")
            assert post(base) == 202  # meanwhile, real clients are served
            time.sleep(READ_TIMEOUT_S / 4)
    finally:
        for sock in slow:
            sock.close()


def test_endless_headers_are_cut_at_h11s_limit(base: str) -> None:
    with connect(base) as sock:
        sock.sendall(b"POST /p HTTP/1.1\r\nHost: x\r\n")
        answer = b""
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            for number in range(2000):  # 2000 * 30 bytes: far past 16 KiB
                sock.sendall(f"X-Filler-{number:05}: {'y' * 12}\r\n".encode())
        with contextlib.suppress(ConnectionResetError):
            sock.settimeout(10)
            answer = sock.recv(4096)
        assert answer == b"" or answer.split(b" ")[1] in (b"400", b"431")


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GARBAGE\r\n\r\n", b"400"),
        (b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n", b"400"),
        (b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx", b"400"),
        (
            b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
            b"Content-Length: 100000\r\n\r\n" + b"x" * 100,
            b"413",
        ),
        (
            b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + b"400\r\n" + b"x" * 1024 + b"\r\n"
            b"400\r\n" + b"x" * 1024 + b"\r\n" + b"400\r\n" + b"x" * 1024 + b"\r\n0\r\n\r\n",
            b"413",
        ),
        (b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n\r\n", b"415"),
        (
            b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
            b"Content-Length: 5\r\n\r\n\xff\xfe\x00\x01\x02",
            b"400",
        ),
    ],
    ids=[
        "garbage",
        "negative-length",
        "two-lengths",
        "too-large",
        "chunked-too-large",
        "content-type",
        "binary",
    ],
)
def test_malformed_and_oversized_requests_get_the_right_status(
    base: str, request_bytes: bytes, status: bytes
) -> None:
    with connect(base) as sock:
        sock.sendall(request_bytes)
        sock.settimeout(10)
        answer = sock.recv(4096)
    assert answer.split(b" ")[1] == status, answer[:200]


def test_a_body_dripped_byte_by_byte_gets_408(base: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each read beats the server's read timeout, but the whole body is too slow."""
    monkeypatch.setattr(ingest, "BODY_READ_TIMEOUT_S", 1.5)
    with connect(base) as sock:
        sock.sendall(
            b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
            b"Content-Length: %d\r\n\r\n" % len(BODY)
        )
        answer = b""
        for byte in BODY:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            time.sleep(0.4)  # under READ_TIMEOUT_S per read
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                answer += sock.recv(4096)
            sock.setblocking(True)
            if answer:
                break
    assert answer.startswith(b"HTTP/1.1 408")
