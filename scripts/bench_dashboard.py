"""Time the dashboard in a real browser: how long the 30-day view of the benchmark site
takes, after navigation, to show the numbers of each of its panels, and of all of them.

Usage: python scripts/bench_dashboard.py [--data-dir DIR] [--runs 5] [--warmup 1]
       [--period 30d] [--prop plan] [--server hypercorn|uvicorn]
       (make bench-dashboard ARGS="--data-dir /work/benchdata/3M")

The database is one that scripts/bench_query.py filled (site bench.example): its
embedded PostgreSQL in --data-dir (DIR/data, as bench_query.py keeps it per size in
DIR/SIZE), or PICOLYTICS_BENCH_DSN. Its events are left as they are: the script applies
the migrations and rolls up the due closed days (as a starting server and its roller
would), adds a dashboard account for the run through storage/accounts.py, and removes
it at the end.

It runs the real server, `picolytics serve`, as a subprocess on 127.0.0.1 and a free
port (settings by environment variables: PGCONNSTRING, LISTEN_ADDR, SERVER,
SKIP_MIGRATIONS, and ROLLUP_INTERVAL_SEC=0 so that no roll-up runs during the timed
runs), logs in through the form in headless Chromium (Playwright, started as
tests/helpers/browser.py starts it), then navigates to the view --warmup + --runs
times. Each part of the page sets `data-loaded` when its numbers are in
(static/dashboard.js, panels.js); an init script records, by a MutationObserver, the
moment (performance.now(), from the navigation's start) each part got it. "first
panel" is the earliest part that asked the Stats API, "every panel" the last of all.
It prints p50 and p95 (nearest rank: of 5 runs, the slowest) of each and of each
Stats API call (sent to answered, as Chromium saw it), and how many raw events the
open day (today, in the site's zone) holds. Every process it started is stopped at
the end. Benchmarks print numbers; nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

import httpx2
import psycopg
from bench_db import database, estimated_events
from playwright.sync_api import Page, Request, sync_playwright

from picolytics.storage import accounts, migrate, roller

SITE: Final = "bench.example"  # bench_query.SITES[0], the big site
CHROMIUM: Final = Path("/usr/bin/chromium")
CHROMIUM_ARGS: Final = [  # as tests/helpers/browser.py starts it
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# The parts of the page, by element id, in the order shown.
PARTS: Final = {
    "realtime": "current visitors",
    "metrics": "metrics row",
    "graph-section": "graph",
    "card-sources": "Sources",
    "card-pages": "Pages",
    "card-locations": "Locations",
    "card-devices": "Devices",
    "card-goals": "Goals and events",
    "card-props": "Properties",
}
QUERIED: Final = ("rows", "empty", "failed")  # outcomes of a part that asked the API
RECORDER: Final = """
window.__loaded = {};
new MutationObserver((records) => {
  const at = performance.now();
  for (const record of records) {
    const element = record.target;
    if (element.id && element.dataset.loaded && !(element.id in window.__loaded)) {
      window.__loaded[element.id] = [at, element.dataset.loaded];
    }
  }
}).observe(document, { subtree: true, attributes: true, attributeFilter: ["data-loaded"] });
"""
ALL_LOADED: Final = "(ids) => ids.every((id) => id in window.__loaded)"
TODAY_EVENTS: Final = """
SELECT s.timezone, count(e.event_id)
FROM sites s
LEFT JOIN events e
  ON e.site_id = s.site_id AND e.received_at >= date_trunc('day', now(), s.timezone)
WHERE s.domain = %s
GROUP BY s.timezone
"""
UNROLLED: Final = """
SELECT count(*) FROM sites s CROSS JOIN generate_series(1, 30) n
WHERE s.domain = %s AND NOT EXISTS (
    SELECT FROM rollup_days r
    WHERE r.site_id = s.site_id AND r.timezone = s.timezone
      AND r.day = (now() AT TIME ZONE s.timezone)::date - n)
"""


@dataclass
class Run:
    """One navigation: each part's time (ms from the navigation's start) and outcome."""

    html_ms: float
    parts: dict[str, tuple[float, str]]
    calls: dict[str, float]  # each Stats API call (what it asked) and its ms, sent to answered

    def first_ms(self) -> float:
        return min(t for t, outcome in self.parts.values() if outcome in QUERIED)

    def every_ms(self) -> float:
        return max(t for t, _ in self.parts.values())


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    log: Path
    started_s: float = 0.0
    lines: list[str] = field(default_factory=list)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def picolytics_command() -> list[str]:
    return [sys.executable, "-m", "picolytics.cli", "serve"]  # as tests/helpers/processes.py


@contextmanager
def server(conninfo: str, kind: str) -> Iterator[Server]:
    """`picolytics serve` on 127.0.0.1 and a free port until the block ends."""
    port = free_port()
    env = {
        **os.environ,
        "PGCONNSTRING": conninfo,
        "LISTEN_ADDR": f"127.0.0.1:{port}",
        "SERVER": kind,
        "ROLLUP_INTERVAL_SEC": "0",  # rolled up before; no roll-up during the runs
        "SKIP_MIGRATIONS": "true",  # applied before the roll-up
        "API_RATE_LIMIT": "0",
    }
    log = Path(tempfile.mkstemp(prefix="bench-dashboard-", suffix=".log")[1])
    began = time.perf_counter()
    with log.open("wb") as out:
        process = subprocess.Popen(picolytics_command(), env=env, stdout=out, stderr=out)
    running = Server(process, f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise SystemExit(f"bench_dashboard: the server stopped:\n{log.read_text()}")
            try:
                if httpx2.get(f"{running.url}/dashboard/login", timeout=2).status_code == 200:
                    break
            except httpx2.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"bench_dashboard: the server did not start:\n{log.read_text()}")
            time.sleep(0.2)
        running.started_s = time.perf_counter() - began
        yield running
    finally:
        process.terminate()  # SIGTERM: the server's own clean shutdown
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        running.lines = log.read_text(errors="replace").splitlines()
        log.unlink(missing_ok=True)


@contextmanager
def throwaway_account(conninfo: str) -> Iterator[tuple[str, str]]:
    """A dashboard account for this run (e-mail, password), removed afterwards."""
    email = f"bench-{secrets.token_hex(6)}@example.com"
    password = secrets.token_urlsafe(18)
    accounts.connected(conninfo, lambda c: accounts.add_user(c, email, password))
    try:
        yield email, password
    finally:
        accounts.connected(conninfo, lambda c: accounts.remove_user(c, email))


async def roll_due(conninfo: str, roll: bool = True) -> tuple[int, float, int]:
    """Roll up the due days (unless not `roll`), as a server's roller would (after the
    migrations the server applies at startup, so that the roller's SQL finds its
    columns): (days rolled, seconds, closed days of the last 30 still not rolled up in
    the site's zone, those closed less than roller.ROLL_DELAY ago)."""
    migrate.apply(conninfo)
    began = time.perf_counter()
    report = await roller.catch_up(conninfo, wait=True) if roll else roller.RollupReport()
    seconds = time.perf_counter() - began
    if report.failed:
        raise SystemExit(f"bench_dashboard: {len(report.failed)} day(s) could not be rolled up")
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as connection:
        cursor = await connection.execute(UNROLLED, (SITE,))
        row = await cursor.fetchone()
    return report.rolled, seconds, int(row[0]) if row else 0


def today_events(conninfo: str) -> tuple[str, int]:
    with psycopg.connect(conninfo) as connection:
        row = connection.execute(TODAY_EVENTS, (SITE,)).fetchone()
    if row is None:
        raise SystemExit(f"bench_dashboard: no site {SITE!r}: fill it with scripts/bench_query.py")
    return str(row[0]), int(row[1])


def log_in(page: Page, base: str, email: str, password: str) -> None:
    page.goto(f"{base}/dashboard/login")
    page.get_by_label("E-mail address").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{base}/dashboard/")


def call_label(body: dict[str, Any]) -> str:
    """A Stats API call by what it asks: its dimensions (or "totals") and days."""
    dates = body.get("date_range") or ["?", "?"]
    asked = ", ".join(body.get("dimensions") or []) or "totals"
    return f"{asked} {str(dates[0])[:10]}..{str(dates[1])[:10]}"


def measure(page: Page, url: str, timeout_s: float) -> Run:
    asked: list[Request] = []
    done: dict[str, float] = {}

    def sent(request: Request) -> None:
        if request.url.endswith("/api/v2/query"):
            asked.append(request)

    def finished(request: Request) -> None:
        if request in asked:
            label = call_label(request.post_data_json or {})
            done[label if label not in done else f"{label} #{len(done)}"] = request.timing[
                "responseEnd"
            ]

    page.goto("about:blank")
    page.on("request", sent)
    page.on("requestfinished", finished)
    try:
        page.goto(url, wait_until="commit")
        page.wait_for_function(ALL_LOADED, arg=list(PARTS), timeout=timeout_s * 1000)
        loaded: dict[str, list[Any]] = page.evaluate("window.__loaded")
        html: float = page.evaluate("performance.getEntriesByType('navigation')[0].responseEnd")
        deadline = time.monotonic() + 10
        while len(done) < len(asked) and time.monotonic() < deadline:
            page.wait_for_timeout(50)  # the last calls' "requestfinished" events
    finally:
        page.remove_listener("request", sent)
        page.remove_listener("requestfinished", finished)
    parts = {key: (float(value[0]), str(value[1])) for key, value in loaded.items()}
    return Run(html, parts, done)


def nearest_rank(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def report(runs: Sequence[Run], warmup: Sequence[Run]) -> None:
    rows: list[tuple[str, list[float], str]] = [("HTML received", [r.html_ms for r in runs], "")]
    rows.append(("first panel", [r.first_ms() for r in runs], ""))
    for key, label in PARTS.items():
        outcomes = sorted({r.parts[key][1] for r in runs})
        rows.append((label, [r.parts[key][0] for r in runs], ",".join(outcomes)))
    rows.append(("every panel", [r.every_ms() for r in runs], ""))
    print(f"\n{'part':<20} {'p50 ms':>8} {'p95 ms':>8}  {'runs (ms)':<34} outcome")
    for label, values, outcome in rows:
        each = " ".join(f"{v:.0f}" for v in values)
        p50, p95 = statistics.median(values), nearest_rank(values, 0.95)
        print(f"{label:<20} {p50:>8.0f} {p95:>8.0f}  {each:<34} {outcome}")
    counts = ", ".join(str(n) for n in sorted({len(r.calls) for r in runs}))
    print(f"\nStats API calls per view: {counts} (the page runs at most 4 at once)")
    print(f"{'call (sent to answered)':<48} {'p50 ms':>8} {'p95 ms':>8}")
    for label in sorted(runs[0].calls, key=lambda k: -runs[0].calls[k]):
        values = [r.calls[label] for r in runs if label in r.calls]
        p50, p95 = statistics.median(values), nearest_rank(values, 0.95)
        print(f"{label:<48} {p50:>8.0f} {p95:>8.0f}")
    if warmup:
        shown = ", ".join(f"{r.every_ms():.0f}" for r in warmup)
        print(f"warm-up (not counted), every panel: {shown} ms")
    failed = sorted({PARTS[k] for r in runs for k, (_, o) in r.parts.items() if o == "failed"})
    if failed:
        print(f"WARNING: these parts failed to load: {', '.join(failed)}")


def view_path(period: str, prop: str) -> str:
    path = f"/dashboard/?site={SITE}&period={period}"
    return path + (f"&prop={prop}" if prop else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, help="bench_query.py's folder of one size")
    parser.add_argument("--runs", type=int, default=5, help="timed navigations")
    parser.add_argument("--warmup", type=int, default=1, help="navigations before, not counted")
    parser.add_argument("--period", default="30d", help="the dashboard's period (30d)")
    parser.add_argument("--prop", default="", help="a custom property to break down too")
    parser.add_argument("--server", choices=("hypercorn", "uvicorn"), default="hypercorn")
    parser.add_argument(
        "--no-roll",
        action="store_true",
        help="roll nothing up first: on a database filled on an earlier day, that day's "
        "traffic stays raw, as the open day's is late in the day",
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per view at most")
    options = parser.parse_args()
    if options.data_dir is None and not os.environ.get("PICOLYTICS_BENCH_DSN"):
        parser.error("give --data-dir (a folder bench_query.py filled) or PICOLYTICS_BENCH_DSN")
    if not CHROMIUM.exists():
        raise SystemExit(f"bench_dashboard: no Chromium at {CHROMIUM}")
    with database(options.data_dir) as conninfo:
        rolled, roll_s, unrolled = asyncio.run(roll_due(conninfo, not options.no_roll))
        zone, today_count = today_events(conninfo)
        today = datetime.now(ZoneInfo(zone)).date()
        print(f"database: ~{estimated_events(conninfo):,} raw events (planner estimate)")
        print(f"roll-up before the runs: {rolled} due day(s) rolled in {roll_s:.1f} s")
        with (
            throwaway_account(conninfo) as (email, password),
            server(conninfo, options.server) as running,
        ):
            print(f"server: picolytics serve ({options.server}) up in {running.started_s:.1f} s")
            runs, warmup = browse(running.url, email, password, options)
        print(describe(options.period, today, zone, today_count, unrolled))
        report(runs, warmup)
        errors = [line for line in running.lines if " ERROR " in line or "Traceback" in line]
        if errors:
            print("server errors:\n" + "\n".join(errors[:10]))


def browse(
    base: str, email: str, password: str, options: argparse.Namespace
) -> tuple[list[Run], list[Run]]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            context.add_init_script(RECORDER)
            page = context.new_page()
            log_in(page, base, email, password)
            url = base + view_path(options.period, options.prop)
            warmup = [measure(page, url, options.timeout) for _ in range(options.warmup)]
            runs = [measure(page, url, options.timeout) for _ in range(options.runs)]
            context.close()
        finally:
            browser.close()
    return runs, warmup


def describe(period: str, today: date, zone: str, today_count: int, unrolled: int) -> str:
    span = ""
    if period == "30d":
        first, last = today - timedelta(days=30), today - timedelta(days=1)
        span = f" ({first} to {last})"
    return (
        f"\n{SITE}, period {period}{span}, {zone}; the open day {today} holds "
        f"{today_count:,} raw events; closed days of the last 30 not rolled up yet "
        f"(closed < {roller.ROLL_DELAY} ago, read from raw rows): {unrolled}"
    )


if __name__ == "__main__":
    main()
