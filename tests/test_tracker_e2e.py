"""The whole product in a real browser: a page with pico.js served by a running
picolytics, a visit in headless Chromium, and the rows it leaves in PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    PLAYWRIGHT_ARGS_TO_DROP,
    LocalServer,
    page_html,
    running_server,
)
from helpers.database import query, wait_for_rows
from helpers.events import CHROME_UA
from helpers.processes import server_process
from playwright.sync_api import sync_playwright

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM}"),
]


@pytest.fixture
def site() -> Iterator[LocalServer]:
    with running_server() as server:
        yield server


def wait_for(conninfo: str, sql: str, expected: list[tuple[object, ...]]) -> None:
    wait_for_rows(conninfo, sql, lambda rows: rows == expected)


def test_a_visit_in_chromium_becomes_rows(
    migrated_database: str, tmp_path: Path, site: LocalServer
) -> None:
    settings = {"REQUEST_RATE_LIMIT": "0", "BATCH_MAX_MSEC": "50"}
    with (
        server_process(migrated_database, tmp_path, settings) as server,
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS,
            ignore_default_args=PLAYWRIGHT_ARGS_TO_DROP,
        )
        try:
            # Headless Chromium says "HeadlessChrome", which the crawler list rightly
            # flags as a bot; this visit plays a person's browser.
            page = browser.new_page(user_agent=CHROME_UA)
            url = site.add_page("/shop/", page_html(server.base))
            page.goto(url + "?utm_source=newsletter&utm_campaign=autumn")
            wait_for(migrated_database, "SELECT count(*) FROM events WHERE name = 'load'", [(1,)])
            page.evaluate("() => history.pushState({}, '', '/shop/cart')")
            page.evaluate("() => { location.hash = '#/checkout'; }")
            wait_for(
                migrated_database,
                "SELECT count(*) FROM events WHERE name IN ('nav', 'hashchange')",
                [(2,)],
            )
            page.close()  # the tab closes: a hidden event is sent
            wait_for(migrated_database, "SELECT count(*) FROM events WHERE name = 'hidden'", [(1,)])
        finally:
            browser.close()
    host = site.origin.split("//", 1)[1].split(":", 1)[0]
    assert query(migrated_database, "SELECT domain FROM sites") == [(host,)]
    rows = query(
        migrated_database,
        "SELECT pageviews, entry_path, exit_path, utm_source, utm_campaign, browser, "
        "device_type, bounce FROM sessions",
    )
    assert rows == [
        (
            3,
            "/shop/",
            "/shop/cart#/checkout",
            "newsletter",
            "autumn",
            "Chrome",
            "desktop",
            False,
        )
    ]
    ((load_ms, ttfb_ms),) = query(
        migrated_database, "SELECT load_time_ms, ttfb_ms FROM events WHERE name = 'load'"
    )
    assert load_ms > 0 and ttfb_ms > 0
