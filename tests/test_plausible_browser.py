"""Plausible's own tracker against a running picolytics: the npm package
@plausible-analytics/tracker (vendored in tests/data/plausible-tracker), in headless
Chromium, sending to POST /api/event; the tests read what lands in PostgreSQL.

The tracker refuses to run in two situations that a test browser is in:
- on localhost or 127.x, unless init() says captureOnLocalhost;
- under automation (`navigator.webdriver`, which Playwright's Chromium sets), unless
  `window.__plausible` is set. That check sits inside the same `if` as the localhost
  one, so captureOnLocalhost skips it too.
The main test serves its page as http://shop.test:PORT (Chromium's host resolver maps
*.test to 127.0.0.1), so the tracker runs with a production config and the page has
to set `window.__plausible`; the hash-routing test runs on 127.0.0.1 with
captureOnLocalhost, as a developer's machine would.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    PLAYWRIGHT_ARGS_TO_DROP,
    LocalServer,
    running_server,
)
from helpers.database import query, wait_for_rows
from helpers.events import CHROME_UA
from helpers.processes import server_process
from playwright.sync_api import Browser, sync_playwright

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM}"),
]

# Plausible names no event "Signup"; it must pass CUSTOM_EVENT_NAMES.
SETTINGS = {
    "REQUEST_RATE_LIMIT": "0",
    "BATCH_MAX_MSEC": "50",
    "CUSTOM_EVENT_NAMES": "[A-Za-z0-9 _-]+",
}
# The tracker sends "engagement" when the page is hidden or loses focus: the first
# time always, later only after this much more engaged time or a deeper scroll. The
# test stays a little longer, so the time it reports is more than noise.
TRACKER_ENGAGED_MS = 3000
Row = tuple[Any, ...]


@pytest.fixture
def site() -> Iterator[LocalServer]:
    with running_server() as server:
        yield server


@pytest.fixture
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                *CHROMIUM_ARGS,
                # Names under .test reach the local site server: a page whose host is
                # not loopback, as on a real site.
                "--host-resolver-rules=MAP *.test 127.0.0.1",
                # The browser's own UA too, not only the context's: a keepalive fetch
                # sent while the page goes into the back/forward cache (the engagement
                # event) carries it, and "HeadlessChrome" would be dropped as a bot.
                f"--user-agent={CHROME_UA}",
            ],
            ignore_default_args=PLAYWRIGHT_ARGS_TO_DROP,
        )
        try:
            yield browser
        finally:
            browser.close()


def plausible_page(options: str, body: str = "", before: str = "") -> str:
    """A page that imports the vendored tracker as a module, runs `before`, calls
    init(options) and exposes `track` as window.track for the test."""
    return (
        "<!doctype html><html><head><meta charset=utf-8><title>plausible test</title>"
        "<script type=module>import {init, track} from '/plausible.js';\n"
        f"{before}\n"
        f"init({options});\n"
        "window.track = track;\n"
        f"</script></head><body>{body}</body></html>"
    )


def test_plausible_tracker_visit_becomes_rows(
    migrated_database: str, tmp_path: Path, site: LocalServer, browser: Browser
) -> None:
    port = site.origin.rsplit(":", 1)[1]
    shop = f"http://shop.test:{port}"
    site.add_page("/files/prices.pdf", "%PDF-1.4 not really")
    site.add_page("/landing", "<!doctype html><title>elsewhere</title><p>elsewhere</p>")
    with server_process(migrated_database, tmp_path, SETTINGS) as server:
        site.add_page(
            "/pricing/",
            plausible_page(
                # A roll-up list: picolytics keeps the first domain, not the page's host.
                f"{{domain: 'shop.example,rollup.example', endpoint: '{server.base}/api/event',"
                " outboundLinks: true, fileDownloads: true}",
                # Tall enough to scroll; the download link downloads (no navigation),
                # the outbound one leaves for another host.
                '<div style="height: 4000px">'
                '<a id=download href="/files/prices.pdf?v=2" download>prices</a> '
                f'<a id=outbound href="http://elsewhere.test:{port}/landing?from=shop">'
                "elsewhere</a></div>",
                # Playwright's Chromium sets navigator.webdriver; unless this flag is set
                # before init(), the tracker sends nothing (and logs no warning).
                before="window.__plausible = true;",
            ),
        )
        context = browser.new_context(user_agent=CHROME_UA)
        page = context.new_page()
        started = time.monotonic()
        page.goto(f"{shop}/pricing/?utm_source=newsletter", referer="https://news.example/story")
        (load,) = wait_for_rows(
            migrated_database,
            "SELECT e.path, s.domain, e.referrer_host, e.props FROM events e "
            "JOIN sites s USING (site_id) WHERE e.name = 'load'",
        )
        assert load == ("/pricing/", "shop.example", "news.example", None)

        page.evaluate("() => window.track('Signup', {props: {plan: 'pro'}})")
        assert wait_for_rows(
            migrated_database, "SELECT props FROM events WHERE name = 'Signup'"
        ) == [({"plan": "pro"},)]

        page.click("#download")
        # The tracker drops the link's query itself for downloads.
        assert wait_for_rows(
            migrated_database, "SELECT props FROM events WHERE name = 'download'"
        ) == [({"url": f"{shop}/files/prices.pdf"},)]

        # Read like a person: scroll down, stay past the tracker's threshold.
        page.mouse.wheel(0, 1500)
        page.wait_for_function("() => window.scrollY >= 1500")
        page.wait_for_function(f"() => performance.now() > {TRACKER_ENGAGED_MS + 500}")
        depth = page.evaluate(
            "() => Math.round((scrollY + innerHeight) / document.documentElement.scrollHeight"
            " * 100)"
        )
        # Leaving the page for another site hides it: that sends the engagement event.
        page.click("#outbound")
        page.wait_for_url(f"http://elsewhere.test:{port}/landing?from=shop")
        (outbound,) = wait_for_rows(
            migrated_database, "SELECT path, props FROM events WHERE name = 'outbound'"
        )
        # The tracker sends the whole href; picolytics keeps no query in a URL prop.
        assert outbound == ("/pricing/", {"url": f"http://elsewhere.test:{port}/landing"})
        (engagement,) = wait_for_rows(
            migrated_database,
            "SELECT path, engaged_ms, scroll_depth, props FROM events WHERE name = 'engagement'",
        )
        elapsed_ms = (time.monotonic() - started) * 1000
        path, engaged_ms, scroll_depth, props = engagement
        assert path == "/pricing/"
        assert TRACKER_ENGAGED_MS <= engaged_ms <= elapsed_ms
        assert scroll_depth == depth
        assert 30 < depth < 100  # the scroll counted, and it did not reach the bottom
        assert props is None
        context.close()

    assert query(migrated_database, "SELECT domain FROM sites") == [("shop.example",)]
    assert query(
        migrated_database,
        "SELECT pageviews, events, engaged, bounce, entry_path, exit_path, referrer_host,"
        " utm_source, browser, device_type FROM sessions",
    ) == [(1, 5, True, False, "/pricing/", "/pricing/", "news.example", "newsletter",
           "Chrome", "desktop")]  # fmt: skip


def test_plausible_hash_routing_and_bounce(
    migrated_database: str, tmp_path: Path, site: LocalServer, browser: Browser
) -> None:
    with server_process(migrated_database, tmp_path, SETTINGS) as server:
        site.add_page(
            "/",
            plausible_page(
                f"{{domain: 'spa.example', endpoint: '{server.base}/api/event',"
                " hashBasedRouting: true, captureOnLocalhost: true}"
            ),
        )
        context = browser.new_context(user_agent=CHROME_UA)
        page = context.new_page()
        page.goto(site.origin + "/#/about")
        assert wait_for_rows(migrated_database, "SELECT path FROM events WHERE name = 'load'") == [
            ("/#/about",)
        ]

        # A non-interactive event leaves a one-page visit a bounce.
        page.evaluate("() => window.track('Autoplay', {interactive: false})")
        wait_for_rows(migrated_database, "SELECT 1 FROM events WHERE name = 'Autoplay'")
        assert query(migrated_database, "SELECT pageviews, engaged, bounce FROM sessions") == [
            (1, False, True)
        ]

        # A new route: the tracker reports engagement on the old one, then a pageview.
        # "#pricing" is a route only because the tracker says hash mode (h): without
        # it, picolytics takes a fragment without "/" for an in-page anchor.
        page.evaluate("() => { location.hash = '#pricing'; }")
        rows = wait_for_rows(
            migrated_database,
            "SELECT name, path FROM events WHERE name IN ('load', 'engagement') ORDER BY 1, 2",
            lambda rows: len(rows) == 3,
        )
        assert rows == [("engagement", "/#/about"), ("load", "/#/about"), ("load", "/#pricing")]
        context.close()

    assert query(migrated_database, "SELECT domain FROM sites") == [("spa.example",)]
    assert query(
        migrated_database,
        "SELECT pageviews, engaged, bounce, entry_path, exit_path FROM sessions",
    ) == [(2, False, False, "/#/about", "/#pricing")]
