"""Slow, oversized, numerous and malformed requests against the real HTTP servers
(docs/guarantees.md, S1-S3), Hypercorn and uvicorn alike.

The server runs in a thread of this process, configured by picolytics.serve.server as
in production, with short limits (ServerLimits) so that a deadline is seen within the
test. A head's deadline runs however its bytes trickle in (REQUEST_HEAD_TIMEOUT_SEC),
a body's too (REQUEST_BODY_TIMEOUT_SEC), heads cannot grow past 16 KiB, and a process
keeps at most MAX_CONNECTIONS connections (a further one gets 503 at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import httpx2 as httpx
import pytest

from picolytics.config import Config, load_config
from picolytics.errors import ConfigError
from picolytics.ingest import endpoint as ingest
from picolytics.serve import server
from picolytics.serve.app import create_app
from picolytics.serve.limits import ServerLimits
from picolytics.serve.server import Listener, bind_all, serve_bound

pytestmark = pytest.mark.slow

HEAD_TIMEOUT_S = 1.5
BODY_TIMEOUT_S = 1.5
LIMITS = ServerLimits(max_connections=1000, head_timeout_s=HEAD_TIMEOUT_S, body_timeout_s=5)
BODY = b'{"n": "load", "l": "https://example.com/slow"}'
HEADERS = {"Content-Type": "text/plain", "User-Agent": "Mozilla/5.0 (X11; Linux) Firefox/125.0"}
SERVERS = ["hypercorn", "uvicorn"]

Serving = Callable[[ServerLimits], AbstractContextManager[str]]


@pytest.fixture(params=SERVERS)
def serving(
    request: pytest.FixtureRequest, migrated_database: str, monkeypatch: pytest.MonkeyPatch
) -> Serving:
    """Starts the app under the parametrised server with the given limits; the
    context manager yields its base URL and stops it on the way out."""
    # Hypercorn's per-read timeout, long: the deadlines must cut what it lets through.
    monkeypatch.setattr(server, "READ_TIMEOUT_S", 60)
    name = request.param

    @contextlib.contextmanager
    def serve(limits: ServerLimits) -> Iterator[str]:
        app = create_app(Config(request_rate_limit=0, geo_ip_file=""), conninfo=migrated_database)
        loop = asyncio.new_event_loop()
        stop = asyncio.Event()
        with contextlib.ExitStack() as stack:
            listener = Listener(app, "127.0.0.1:0", "public", server=name, limits=limits)
            bound = bind_all(stack, [listener])
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
                assert not thread.is_alive(), "server did not stop"
                loop.close()

    return serve


@pytest.fixture
def base(serving: Serving) -> Iterator[str]:
    with serving(LIMITS) as url:
        yield url


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


def still_open(sock: socket.socket) -> bool:
    """False once the server has closed the connection; never waits."""
    sock.setblocking(False)
    try:
        return sock.recv(4096) != b""
    except BlockingIOError:
        return True
    except ConnectionResetError:
        return False
    finally:
        sock.setblocking(True)


def trickle(sock: socket.socket, data: bytes, every_s: float, started: float) -> float:
    """Sends data a byte at a time until the server closes the connection; how long
    after `started` that was (or the whole trickle, if it never did)."""
    for byte in data:
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            break
        time.sleep(every_s)
        if not still_open(sock):
            break
    return time.monotonic() - started


def test_stalled_heads_and_bodies_are_closed(serving: Serving) -> None:
    with serving(ServerLimits(1000, HEAD_TIMEOUT_S, BODY_TIMEOUT_S)) as url:
        stalled_head = connect(url)
        stalled_head.sendall(b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Ty")
        stalled_body = connect(url)
        stalled_body.sendall(
            b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
            b"Content-Length: 100\r\n\r\n" + BODY[:10]
        )
        idle = connect(url)  # connects, never says a word
        with stalled_head, stalled_body, idle:
            assert closed_by_server(stalled_head, within_s=HEAD_TIMEOUT_S + 5)
            assert closed_by_server(stalled_body, within_s=BODY_TIMEOUT_S + 5)
            assert closed_by_server(idle, within_s=1)


def test_a_head_sent_one_byte_at_a_time_is_cut_at_its_deadline(base: str) -> None:
    """Every read comes well within any per-read timeout; the whole head does not."""
    head = b"POST /p HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"y" * 200  # never ends
    started = time.monotonic()
    with connect(base) as sock:
        cut_after = trickle(sock, head, 0.05, started)
        assert not still_open(sock)
    assert HEAD_TIMEOUT_S - 0.1 <= cut_after <= HEAD_TIMEOUT_S + 2.5, cut_after


def test_a_body_trickled_in_is_cut_at_its_deadline(
    serving: Serving, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server's own body deadline, for every route: /p's longer one is out of the way."""
    monkeypatch.setattr(ingest, "BODY_READ_TIMEOUT_S", 60)
    body = b'{"n": "load", "l": "https://example.com/' + b"x" * 150 + b'"}'
    with serving(ServerLimits(1000, 30, BODY_TIMEOUT_S)) as url, connect(url) as sock:
        sock.sendall(
            b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        started = time.monotonic()
        answer = b""
        for byte in body:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            time.sleep(0.05)
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError, ConnectionResetError):
                answer += sock.recv(4096)
            sock.setblocking(True)
            if answer:
                break
        cut_after = time.monotonic() - started
        assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
        assert closed_by_server(sock, within_s=5)
    assert BODY_TIMEOUT_S - 0.1 <= cut_after <= BODY_TIMEOUT_S + 2.5, cut_after


def test_connections_beyond_the_bound_are_refused_until_deadlines_free_them(
    serving: Serving,
) -> None:
    bound = 10
    with serving(ServerLimits(bound, HEAD_TIMEOUT_S, BODY_TIMEOUT_S)) as url:
        time.sleep(0.5)  # the fixture's own first request is closed
        slow = [connect(url) for _ in range(bound)]
        try:
            for sock in slow:
                sock.sendall(b"POST /p HTTP/1.1\r\nHost: x\r\n")
            time.sleep(0.3)
            assert all(still_open(sock) for sock in slow)
            with connect(url) as extra:
                answer = extra.recv(4096)
                assert answer.startswith(b"HTTP/1.1 503"), answer
                assert b"Retry-After: 1" in answer
                assert closed_by_server(extra, within_s=2)
            for sock in slow:  # each cut at the head deadline ...
                assert closed_by_server(sock, within_s=HEAD_TIMEOUT_S + 5)
        finally:
            for sock in slow:
                sock.close()
        deadline = time.monotonic() + 5
        while True:  # ... after which normal clients are served again
            try:
                if post(url) == 202:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "still refused after the deadlines"
            time.sleep(0.1)


def test_many_trickling_clients_do_not_block_others(base: str) -> None:
    slow = [connect(base) for _ in range(200)]
    started = time.monotonic()
    try:
        for sock in slow:
            sock.sendall(b"POST /p HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        while time.monotonic() - started < HEAD_TIMEOUT_S - 0.5:
            for sock in slow:  # a byte each, far more often than any per-read timeout
                sock.sendall(b"y")
            began = time.monotonic()
            assert post(base) == 202  # meanwhile, real clients are served, and quickly
            assert time.monotonic() - began < 2
            time.sleep(0.2)
        for sock in slow:
            assert closed_by_server(sock, within_s=HEAD_TIMEOUT_S + 5)
        assert time.monotonic() - started < HEAD_TIMEOUT_S + 5
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
            time.sleep(0.4)
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                answer += sock.recv(4096)
            sock.setblocking(True)
            if answer:
                break
    assert answer.startswith(b"HTTP/1.1 408")


def test_the_limits_are_settings_with_bounds() -> None:
    environ = {
        "MAX_CONNECTIONS": "50",
        "REQUEST_HEAD_TIMEOUT_SEC": "2.5",
        "REQUEST_BODY_TIMEOUT_SEC": "4",
    }
    assert ServerLimits.of(load_config(None, environ)) == ServerLimits(50, 2.5, 4)
    assert ServerLimits.of(Config()) == ServerLimits(1000, 10, 10) == ServerLimits()
    for name, value in (
        ("MAX_CONNECTIONS", "0"),
        ("REQUEST_HEAD_TIMEOUT_SEC", "0"),
        ("REQUEST_BODY_TIMEOUT_SEC", "-1"),
        ("REQUEST_BODY_TIMEOUT_SEC", "forever"),
    ):
        with pytest.raises(ConfigError, match=name):
            load_config(None, {name: value})
