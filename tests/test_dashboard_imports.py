"""The dashboard with imported data (dashboard/ui.py, dashboard/static/; docs/imports.md,
docs/dashboard.md), in Debian's Chromium as tests/test_dashboard_ui.py drives it: the
"Include imported data" toggle is shown for a site with imports only, on by default,
its state in the URL (`imports=off`); a panel whose query leaves imported data out
says so.

example.com (UTC): native visits on 2024-01-10, visitor 1 on / (direct) and visitor 2
on /pricing from google.com; imported 2024-01-05 (10 visitors: 4 direct, 6 from
Google) and 2024-01-06 (5 visitors). other.test: one native visit, no import.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime

import pytest
import uvicorn
from helpers.browser import CHROMIUM, CHROMIUM_ARGS, PLAYWRIGHT_ARGS_TO_DROP
from helpers.events import event, run, write
from helpers.imported import add_import
from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright
from test_dashboard_ui import EMAIL, PASSWORD, Console, log_in, metric

from picolytics.config import Config
from picolytics.serve.app import PublicApp, create_app
from picolytics.storage import accounts

A, B = "example.com", "other.test"
VIEW = "/dashboard/?site=example.com&period=custom&from=2024-01-01&to=2024-01-31"
in_chromium = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM}")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.fixture(scope="module")
def app(module_database: str) -> PublicApp:
    run(
        write(
            module_database,
            [
                event(at("2024-01-10 09:00"), 1, path="/"),
                event(at("2024-01-10 10:00"), 2, path="/pricing", referrer_host="google.com"),
                event(at("2024-01-10 11:00"), 3, path="/", site=B),
            ],
        )
    )
    d0, d1 = date(2024, 1, 5), date(2024, 1, 6)
    add_import(
        module_database,
        A,
        {
            "imported_visitors": [(d0, 10, 30, 4, 12, 600), (d1, 5, 9, 2, 6, 300)],
            "imported_sources": [
                (d0, "", "", "", "", "", "", "", 10, 4, 5, 100, 2),
                (d0, "Google", "google.com", "", "", "", "", "", 20, 6, 7, 500, 2),
            ],
        },
    )
    accounts.connected(module_database, lambda c: accounts.add_user(c, EMAIL, PASSWORD))
    config = Config(api_rate_limit=0, rollup_interval_sec=0)
    return create_app(config, conninfo=module_database)


@pytest.fixture(scope="module")
def server(app: PublicApp) -> Iterator[str]:
    """The app on 127.0.0.1, in a thread of this process (uvicorn); its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    instance = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=instance.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not instance.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    instance.should_exit = True
    thread.join(30)
    sock.close()


@pytest.fixture(scope="module")
def playwright(server: str) -> Iterator[Playwright]:
    with sync_playwright() as instance:
        yield instance


@pytest.fixture(scope="module")
def chromium(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(
        executable_path=str(CHROMIUM),
        args=CHROMIUM_ARGS,
        ignore_default_args=PLAYWRIGHT_ARGS_TO_DROP,
    )
    yield browser
    browser.close()


@pytest.fixture
def page(chromium: Browser) -> Iterator[Page]:
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    yield context.new_page()
    context.close()


@pytest.mark.browser
@in_chromium
def test_the_imports_toggle_its_url_and_the_panel_note(page: Page, server: str) -> None:
    console = Console(page)
    log_in(page, server, VIEW)
    toggle = page.get_by_label("Include imported data")
    expect(toggle).to_be_visible()
    expect(toggle).to_be_checked()
    expect(metric(page, "visitors")).to_have_text("17")  # 2 native + 10 + 5 imported
    sources = page.locator("#card-sources")
    expect(sources.get_by_role("button", name="Filter by Google", exact=True)).to_be_visible()
    expect(page.locator(".imports-note")).to_have_count(0)

    toggle.uncheck()
    expect(page).to_have_url(re.compile(r"imports=off"))
    expect(metric(page, "visitors")).to_have_text("2")
    expect(sources.get_by_role("button", name="Filter by Google", exact=True)).to_have_count(0)
    page.go_back()
    expect(toggle).to_be_checked()
    expect(metric(page, "visitors")).to_have_text("17")

    # A filter on a source: the sources card, broken down by the filter's own dimension,
    # still adds imported data; the pages card cannot (two tables), and says so.
    sources.get_by_role("button", name="Filter by Google", exact=True).click()
    expect(metric(page, "visitors")).to_have_text("6")  # imported only: no native "Google"
    pages = page.locator("#card-pages")
    expect(pages.locator(".imports-note")).to_have_text(re.compile("Imported data is left out"))
    expect(sources.locator(".imports-note")).to_have_count(0)

    # A site without imports has no toggle.
    page.get_by_label("Site", exact=True).select_option(B)
    expect(page.locator("#title")).to_have_text(B)
    expect(toggle).to_be_hidden()
    assert console.errors == []
