"""For the browser tests: two local HTTP servers and a beacon recorder.

The tracker must send to the origin of its own <script src>, so the tests use two
servers on two ports (two origins): a "site" that serves the test pages, and a
"collector" that serves assets/pico.js and records every request the browser makes to
it (POST /p beacons, any CORS preflight, and the tests' own /probe markers); it also
serves assets/pico.ext.js. Both are
stdlib `http.server`s in threads, bound to 127.0.0.1 on ephemeral ports.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parents[2]
TRACKER = ROOT / "assets" / "pico.js"
# What the collector serves: the plain tracker and the one with opt-in extensions.
SCRIPTS = {"/pico.js": TRACKER, "/pico.ext.js": ROOT / "assets" / "pico.ext.js"}
# Plausible's own tracker (vendored, see its README), for tests/test_plausible_browser.py.
SCRIPTS["/plausible.js"] = ROOT / "tests" / "data" / "plausible-tracker" / "plausible.js"

CHROMIUM = Path("/usr/bin/chromium")
# What Chromium needs on these machines (docs/architecture.md, Tests): headless, as root
# (no sandbox), no GPU, and off the network (no updates, sync or background requests).
# Playwright adds a fresh user-data-dir itself, and --headless again when headless=True.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Playwright turns the back/forward cache off by default; the visibility tests use it,
# because leaving a page for another and coming back is a real way, in headless
# Chromium, to make a live page hidden and then visible again.
PLAYWRIGHT_ARGS_TO_DROP = ["--disable-back-forward-cache"]

# Server-side delays that give the page known lower bounds for TTFB and load time.
PAGE_DELAY_S = 0.02
IMAGE_DELAY_S = 0.03

# The fields the tracker may send (docs/guarantees.md, P1): nothing else, and no
# identifier. p (the props of a custom event) is only there when the event has props.
PAYLOAD_FIELDS = frozenset({"n", "l", "r", "lt", "fb", "sw", "sh", "tz", "pr", "pd", "p"})

_GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00"
    b"\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)


@dataclass(frozen=True)
class Request:
    """One request the browser sent to a test server (other than GETs)."""

    method: str
    path: str
    content_type: str
    fetch_mode: str  # Sec-Fetch-Mode: "no-cors" from sendBeacon (text/plain), "cors" from fetch
    cookie: str | None
    body: bytes

    @property
    def data(self) -> dict[str, Any]:
        value = json.loads(self.body)
        assert isinstance(value, dict), self.body
        return value

    @property
    def is_beacon(self) -> bool:
        return self.method == "POST" and self.path == "/p"

    @property
    def name(self) -> str:
        return str(self.data["n"]) if self.is_beacon else f"{self.method} {self.path}"


class Recorder:
    """Requests in arrival order; tests wait on it with a bounded timeout."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._requests: list[Request] = []

    def add(self, request: Request) -> None:
        with self._changed:
            self._requests.append(request)
            self._changed.notify_all()

    @property
    def requests(self) -> list[Request]:
        with self._changed:
            return list(self._requests)

    @property
    def beacons(self) -> list[Request]:
        return [request for request in self.requests if request.is_beacon]

    def wait_until(
        self, done: Callable[[list[Request]], bool], what: str, timeout: float = 10.0
    ) -> list[Request]:
        """Wait until done(requests) holds; fail naming `what` after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not done(self._requests):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = [(request.name, _location(request)) for request in self._requests]
                    raise AssertionError(f"timed out waiting for {what}; received {seen}")
                self._changed.wait(remaining)
            return list(self._requests)

    def wait_for_beacon(
        self, name: str, url_ends_with: str = "", count: int = 1, timeout: float = 10.0
    ) -> Request:
        """Wait for the count-th beacon named `name` (on a URL ending so); return it."""

        def matching(requests: list[Request]) -> list[Request]:
            return [
                request
                for request in requests
                if request.is_beacon
                and request.data["n"] == name
                and str(request.data["l"]).endswith(url_ends_with)
            ]

        what = f"{count} {name!r} beacon(s) for a URL ending in {url_ends_with!r}"
        requests = self.wait_until(lambda seen: len(matching(seen)) >= count, what, timeout)
        return matching(requests)[count - 1]

    def wait_for_probe(self, timeout: float = 10.0) -> list[Request]:
        """Wait for the page's probe marker (see PROBE_JS); return what came before it."""
        requests = self.wait_until(
            lambda seen: any(request.path == "/probe" for request in seen),
            "the probe request",
            timeout,
        )
        index = next(i for i, request in enumerate(requests) if request.path == "/probe")
        return requests[:index]


def _location(request: Request) -> str:
    return str(request.data.get("l", "")) if request.is_beacon else ""


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.recorder = Recorder()
        self.pages: dict[str, str] = {}

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep pytest's output clean

    def do_GET(self) -> None:
        path = self.path.partition("?")[0]
        if path in SCRIPTS:
            self._send(200, "text/javascript; charset=utf-8", SCRIPTS[path].read_bytes())
        elif path == "/slow.gif":
            time.sleep(IMAGE_DELAY_S)
            self._send(200, "image/gif", _GIF)
        elif path in self.server.pages:
            time.sleep(PAGE_DELAY_S)
            self._send(200, "text/html; charset=utf-8", self.server.pages[path].encode())
        else:
            self._send(404, "text/plain", b"not found")

    def do_POST(self) -> None:
        self._record()
        self._send(202, "text/plain", b"")

    def do_OPTIONS(self) -> None:
        self._record()
        self._send(204, "text/plain", b"")

    def _record(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.server.recorder.add(
            Request(
                method=self.command,
                path=self.path,
                content_type=self.headers.get("Content-Type", ""),
                fetch_mode=self.headers.get("Sec-Fetch-Mode", ""),
                cookie=self.headers.get("Cookie"),
                body=self.rfile.read(length),
            )
        )

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        # As the picolytics server does (docs/guarantees.md, I8): CORS *, no credentials.
        self.send_header("Access-Control-Allow-Origin", "*")
        self.end_headers()
        self.wfile.write(body)


class LocalServer:
    """A running test server: its origin, what it recorded, and the pages it serves."""

    def __init__(self, server: _Server) -> None:
        self._server = server

    @property
    def origin(self) -> str:
        return self._server.origin

    @property
    def recorder(self) -> Recorder:
        return self._server.recorder

    def add_page(self, path: str, html: str) -> str:
        """Serve `html` at `path`; return the page's URL."""
        self._server.pages[path] = html
        return self.origin + path


@contextmanager
def running_server() -> Iterator[LocalServer]:
    server = _Server()
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="tracker-test-server"
    )
    thread.start()
    try:
        yield LocalServer(server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def page_html(
    collector: str,
    *,
    ping: float | None = None,
    tracker: bool = True,
    script: str = "pico.js",
    attributes: str = "",
    body: str = "",
) -> str:
    """A test page: the tracker (unless tracker=False) and a slow image to load.

    `script` is the file the collector serves, `attributes` go on its <script> tag
    (say ' data-outbound'), and `body` is more HTML for the page (say links).
    """
    if ping is not None:
        attributes += f' data-ping="{ping}"'
    tag = f'<script defer src="{collector}/{script}"{attributes}></script>' if tracker else ""
    return (
        "<!doctype html><html><head><meta charset=utf-8><title>tracker test</title>"
        f"{tag}</head><body><h1>tracker test</h1>"
        '<p><a id=anchor href="#section">to a section</a></p>'
        f'{body}<img src="/slow.gif" alt=""><p id=section>section</p></body></html>'
    )


def probe_js(collector: str, delay_ms: int = 0) -> str:
    """JS for page.evaluate: after delay_ms, send a /probe marker to the collector.

    Whatever the tracker sent before the probe (in the same page, earlier timers
    first) has been handed to the network by then, so a test waiting for the probe
    can check that some beacon was *not* sent. Resolves once the probe is sent.
    """
    return (
        "() => new Promise(resolve => setTimeout(() => {"
        f' fetch("{collector}/probe", {{method: "POST", mode: "no-cors", keepalive: true,'
        ' body: "probe"}); resolve(); }, ' + str(delay_ms) + "))"
    )


def cast_number(value: object) -> float:
    """A JSON number from a beacon (int or float, never bool)."""
    assert type(value) in (int, float), value
    return cast(float, value)
