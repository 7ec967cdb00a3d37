"""Screenshots of the dashboard for the README, from a made-up month of traffic.

Usage: python scripts/screenshots.py [--out docs/images]

It starts an embedded PostgreSQL in a temporary folder, writes 62 days of traffic for
example.com (Europe/Berlin) through the real batch writer (visits shaped like real
ones: pages, referrers, campaigns, places, browsers, a custom event with a property,
two goals, a few visitors of the last minutes), rolls the closed days up, creates an
account, serves the real app on 127.0.0.1 (uvicorn, in a thread) and logs in through
the form in Debian's Chromium (Playwright). Then it saves, at 1280x900 unless said:

  dashboard.png           the last 30 days
  dashboard-filtered.png  the same, filtered by the source google.com
  dashboard-dark.png      the last 30 days in dark mode
  dashboard-phone.png     the last 30 days at a phone's 390x844

The numbers are random but the same on every run (a fixed seed), except that the
days are the 62 before today.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar
from zoneinfo import ZoneInfo

import uvicorn
from playwright.sync_api import Browser, Page, sync_playwright
from psycopg import AsyncConnection

from picolytics.config import Config
from picolytics.events import Agent, Location, PageEvent, Props, QueuedEvent, new_id
from picolytics.serve.app import create_app
from picolytics.storage import accounts, goals, migrate, sites_admin
from picolytics.storage.embedded import EmbeddedPostgres
from picolytics.storage.roller import catch_up
from picolytics.storage.sites import SiteIds
from picolytics.storage.writer import prepare_connection, write_batch

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SITE, ZONE = "example.com", "Europe/Berlin"
EMAIL, PASSWORD = "owner@example.com", "a screenshot password"
DAYS = 62  # the last 30 days, and the 30 before to compare them with
SESSION = timedelta(minutes=30)
T = TypeVar("T")
FULL_PAGE = [False]  # --full-page: the whole page, not the first screen

PAGES = [
    ("/", 30),
    ("/pricing", 12),
    ("/blog", 10),
    ("/docs", 9),
    ("/docs/install", 6),
    ("/blog/privacy-first-analytics", 5),
    ("/blog/postgres-rollups", 4),
    ("/about", 3),
    ("/docs/api", 3),
    ("/changelog", 2),
    ("/contact", 1),
]
SOURCES = [
    ("", 30),
    ("google.com", 25),
    ("news.ycombinator.com", 8),
    ("duckduckgo.com", 7),
    ("github.com", 6),
    ("reddit.com", 4),
    ("bing.com", 3),
    ("mastodon.social", 2),
]
CAMPAIGNS = [("newsletter", "email", "march"), ("mastodon", "social", "launch")]
PLACES = [
    (Location("DE", "Berlin", "Berlin"), 14),
    (Location("US", "California", "San Francisco"), 12),
    (Location("US", "New York", "New York"), 8),
    (Location("GB", "England", "London"), 9),
    (Location("FR", "Île-de-France", "Paris"), 7),
    (Location("NL", "North Holland", "Amsterdam"), 5),
    (Location("JP", "Tokyo", "Tokyo"), 4),
    (Location("BR", "São Paulo", "São Paulo"), 3),
    (Location("IN", "Karnataka", "Bengaluru"), 3),
    (Location("CA", "Ontario", "Toronto"), 3),
]
AGENTS = [
    (Agent("Chrome", "124", "Windows", "11", "desktop", None), 22),
    (Agent("Chrome", "124", "macOS", "14", "desktop", None), 12),
    (Agent("Safari", "17", "iOS", "17", "mobile", None), 14),
    (Agent("Firefox", "125", "Linux", "", "desktop", None), 8),
    (Agent("Chrome", "124", "Android", "14", "mobile", None), 10),
    (Agent("Edge", "124", "Windows", "10", "desktop", None), 5),
    (Agent("Safari", "17", "iPadOS", "17", "tablet", None), 2),
]


def pick(rng: random.Random, choices: list[tuple[T, int]]) -> T:
    return rng.choices([c for c, _ in choices], [w for _, w in choices])[0]


def page(
    path: str,
    referrer: str,
    campaign: tuple[str, str, str] | None,
    name: str = "load",
    props: Props | None = None,
) -> PageEvent:
    source, medium, name_of = campaign or ("", "", "")
    return PageEvent(
        name=name,
        site=SITE,
        path=path,
        referrer_host=referrer,
        utm_source=source,
        utm_medium=medium,
        utm_campaign=name_of,
        utm_content="",
        utm_term="",
        load_time_ms=180,
        ttfb_ms=40,
        screen_width=1440,
        screen_height=900,
        pixel_ratio=2.0,
        pixel_depth=24,
        timezone=ZONE,
        hash_path="",
        props=props,
    )


def visit(rng: random.Random, start: datetime, visitor: int) -> list[QueuedEvent]:
    place, agent = pick(rng, PLACES), pick(rng, AGENTS)
    campaign = rng.choice(CAMPAIGNS) if rng.random() < 0.06 else None
    referrer = "" if campaign else pick(rng, SOURCES)
    views = 1 if rng.random() < 0.42 else rng.randint(2, 6)
    at, events = start, []
    for index in range(views):
        path = pick(rng, PAGES) if index == 0 else rng.choice(PAGES)[0]
        events.append(
            QueuedEvent(at, new_id(), visitor, None, page(path, referrer, campaign), place, agent)
        )
        if path == "/pricing" and rng.random() < 0.25:
            plan = rng.choice(["free", "pro", "pro", "team"])
            signup = page(path, referrer, campaign, "Signup", {"plan": plan})
            events.append(
                QueuedEvent(
                    at + timedelta(seconds=20), new_id(), visitor, None, signup, place, agent
                )
            )
        at += timedelta(seconds=rng.randint(15, 150))
    return events


def traffic(now: datetime) -> list[QueuedEvent]:
    rng = random.Random(19)
    zone = ZoneInfo(ZONE)
    today = now.astimezone(zone).date()
    events: list[QueuedEvent] = []
    for back in range(DAYS, 0, -1):
        day = today - timedelta(days=back)
        weekend = day.weekday() >= 5
        count = int((70 + 25 * math.sin(back / 4) + 2 * (DAYS - back)) * (0.6 if weekend else 1))
        midnight = datetime.combine(day, datetime.min.time(), zone)
        seen: list[int] = []  # a visitor id lasts a day: some come back within it
        for _ in range(count):
            hour = min(23.9, max(0.0, rng.gauss(14, 4)))
            back_again = seen and rng.random() < 0.2
            visitor = rng.choice(seen) if back_again else rng.getrandbits(62)
            seen.append(visitor)
            events += visit(rng, midnight + timedelta(hours=hour), visitor)
    for seconds in (40, 90, 200):  # the current visitors
        events += visit(rng, now - timedelta(seconds=seconds), rng.getrandbits(62))[:1]
    return sorted(events, key=lambda e: e.received_at)


async def fill(conninfo: str, events: list[QueuedEvent]) -> None:
    sites = SiteIds()
    async with await AsyncConnection.connect(conninfo, autocommit=True) as connection:
        await prepare_connection(connection, "60s")
        for start in range(0, len(events), 2000):
            await write_batch(connection, sites, events[start : start + 2000], {}, SESSION)


@contextmanager
def database() -> Iterator[str]:
    folder = Path(tempfile.mkdtemp(prefix="picolytics-shots-", dir="/tmp"))
    folder.chmod(0o755)  # the embedded server's own user must enter it
    server = EmbeddedPostgres(folder)
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def serving(conninfo: str) -> Iterator[str]:
    app = create_app(Config(rollup_interval_sec=0, api_rate_limit=0), conninfo=conninfo)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)


def ready(page: Page) -> None:
    """Wait until every panel has drawn its rows and the graph its canvas."""
    page.wait_for_selector("#graph canvas")
    for card in ("sources", "pages", "locations", "devices", "goals"):
        page.wait_for_selector(f"#card-{card} tbody tr")
    page.wait_for_function("!document.querySelector('[aria-busy=true]')")
    page.wait_for_timeout(300)  # the chart's last frame


def shoot(browser: Browser, base: str, out: Path, name: str, **context: object) -> Page:
    viewport = context.pop("viewport", {"width": 1280, "height": 900})
    session = browser.new_context(viewport=viewport, **context)  # type: ignore[arg-type]
    tab = session.new_page()
    tab.goto(f"{base}/dashboard/?site={SITE}&period=30d")
    tab.get_by_label("E-mail address").fill(EMAIL)
    tab.get_by_label("Password").fill(PASSWORD)
    tab.get_by_role("button", name="Log in").click()
    ready(tab)
    tab.screenshot(path=str(out / name), full_page=FULL_PAGE[0])
    return tab


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    parser.add_argument("--full-page", action="store_true", help="the whole page, scrolled")
    options = parser.parse_args()
    out: Path = options.out
    FULL_PAGE[0] = options.full_page
    out.mkdir(parents=True, exist_ok=True)
    with database() as conninfo:
        migrate.apply(conninfo)
        asyncio.run(fill(conninfo, traffic(datetime.now(UTC))))
        sites_admin.connected(conninfo, lambda c: sites_admin.set_timezone(c, SITE, ZONE))
        goals.connected(
            conninfo, lambda c: goals.add_goal(c, SITE, goals.definition("Signup", None))
        )
        page_goal = goals.definition(None, "/pricing")
        goals.connected(conninfo, lambda c: goals.add_goal(c, SITE, page_goal))
        asyncio.run(catch_up(conninfo))
        accounts.connected(conninfo, lambda c: accounts.add_user(c, EMAIL, PASSWORD))
        with serving(conninfo) as base, sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            tab = shoot(browser, base, out, "dashboard.png")
            tab.locator("#card-sources").get_by_role("button", name="Filter by google.com").click()
            tab.get_by_role("button", name="Remove filter: Source is google.com").wait_for()
            ready(tab)
            tab.screenshot(path=str(out / "dashboard-filtered.png"), full_page=FULL_PAGE[0])
            shoot(browser, base, out, "dashboard-dark.png", color_scheme="dark")
            phone = {"viewport": {"width": 390, "height": 844}, "is_mobile": True}
            shoot(browser, base, out, "dashboard-phone.png", **phone)
            browser.close()
    for name in (
        "dashboard.png",
        "dashboard-filtered.png",
        "dashboard-dark.png",
        "dashboard-phone.png",
    ):
        print(out / name)


if __name__ == "__main__":
    main()
