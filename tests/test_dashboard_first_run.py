"""The dashboard's first run, end to end: `picolytics serve` on a database with no
account logs its one-time setup link (dashboard/setup.py), and that link, opened in
Debian's Chromium (Playwright), creates the first account through its form
(dashboard/auth.py) and lands logged in on the dashboard with its numbers. Then the
link is dead, and the new password logs in again after a logout, while a wrong
password and an unknown account get the same refusal.

The data: example.com (UTC), two visits two days ago (within the default view, the
last 30 days): visitor 1 views / and /pricing, visitor 2 views /: 2 visitors, 2
visits, 3 pageviews.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from helpers.browser import CHROMIUM, CHROMIUM_ARGS, PLAYWRIGHT_ARGS_TO_DROP
from helpers.database import query, reachable_tempdir
from helpers.events import event, run, write
from helpers.processes import RunningServer, answers, server_process
from playwright.sync_api import Browser, Page, expect, sync_playwright
from test_dashboard_ui import Console, metric

from picolytics.dashboard.auth import INVALID_SETUP, WRONG

EMAIL, PASSWORD = "first@example.com", "a first password, long enough"
LINK = re.compile(r"open (http://127\.0\.0\.1:\d+/dashboard/setup\?token=[\w-]{43}) ")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM}"),
]


@dataclass(frozen=True)
class FirstRun:
    server: RunningServer
    link: str  # the setup link, as the server logged it
    conninfo: str


def logged_link(server: RunningServer) -> str | None:
    found = LINK.search(server.log())
    return found.group(1) if found else None


@pytest.fixture(scope="module")
def first_run(module_database: str) -> Iterator[FirstRun]:
    two_days_ago = datetime.now(UTC) - timedelta(days=2)
    run(
        write(
            module_database,
            [
                event(two_days_ago, 1, path="/"),
                event(two_days_ago + timedelta(minutes=1), 1, name="nav", path="/pricing"),
                event(two_days_ago + timedelta(minutes=5), 2, path="/"),
            ],
        )
    )
    assert query(module_database, "SELECT count(*) FROM dashboard_users") == [(0,)]
    folder = reachable_tempdir("picolytics-first-run-")
    settings = {"ROLLUP_INTERVAL_SEC": "0", "SKIP_MIGRATIONS": "true"}  # migrated above
    # `serve` logs the link before it listens: ready once it does both.
    ready = lambda server: logged_link(server) and answers(server)  # noqa: E731
    try:
        with server_process(module_database, folder, settings, ready=ready) as server:
            link = logged_link(server)
            assert link is not None
            yield FirstRun(server, link, module_database)
            assert server.stop() == 0, server.log()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def chromium(first_run: FirstRun) -> Iterator[Browser]:
    with sync_playwright() as playwright:
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


def expect_the_numbers(page: Page) -> None:
    for name, text in {"visitors": "2", "visits": "2", "pageviews": "3"}.items():
        expect(metric(page, name)).to_have_text(text)
    expect(page.locator("#card-pages tbody th")).to_have_text(["Filter by /", "Filter by /pricing"])


def log_in(page: Page, email: str, password: str) -> None:
    page.get_by_label("E-mail address").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def test_the_setup_link_makes_the_first_account_once_then_logins_work(
    first_run: FirstRun, page: Page
) -> None:
    base = first_run.server.base
    console = Console(page)
    assert first_run.link.startswith(f"{base}/dashboard/setup?token=")
    opened = page.goto(first_run.link)
    assert opened is not None and opened.status == 200
    expect(page.get_by_role("heading", name="Set up picolytics")).to_be_visible()
    page.get_by_label("E-mail address").fill(EMAIL)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password, again").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    # Logged in at once, on the dashboard, with the numbers of the last 30 days.
    expect(page).to_have_url(f"{base}/dashboard/?site=example.com&period=30d")
    expect(page.locator(".account .who")).to_have_text(EMAIL)
    expect_the_numbers(page)
    assert console.errors == []
    users = query(first_run.conninfo, "SELECT email FROM dashboard_users")
    assert users == [(EMAIL,)]
    # The link is dead now, in this browser and in any other.
    again = page.goto(first_run.link)
    assert again is not None and again.status == 404
    expect(page.get_by_text(INVALID_SETUP)).to_be_visible()
    # The password is nowhere in the server's log (the link's token is, by design).
    assert PASSWORD not in first_run.server.log()
    console.errors.clear()  # that 404 was asked for
    # Log out, and in again with the new password; wrong ones are refused.
    page.goto(f"{base}/dashboard/")
    expect_the_numbers(page)
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(f"{base}/dashboard/login")
    left = page.goto(f"{base}/dashboard/")  # the session is over
    assert left is not None and page.url.startswith(f"{base}/dashboard/login?next=")
    assert console.errors == []
    # A wrong password and an unknown account: the same page, the same words.
    refusals = []
    for email, password in ((EMAIL, "not the password at all"), ("nobody@example.com", PASSWORD)):
        with page.expect_response(f"{base}/dashboard/login") as answer:
            log_in(page, email, password)
        expect(page.locator("#error")).to_have_text(WRONG)
        expect(page.get_by_label("E-mail address")).to_have_value(email)
        refusals.append((answer.value.status, page.locator("#error").text_content(), page.title()))
    assert refusals[0] == refusals[1] == (401, WRONG, "Log in · picolytics")
    console.errors.clear()  # those two 401s were asked for
    log_in(page, EMAIL, PASSWORD)
    expect(page).to_have_url(f"{base}/dashboard/?site=example.com&period=30d")
    expect_the_numbers(page)
    assert console.errors == []


def test_the_log_names_the_link_once(first_run: FirstRun) -> None:
    """One line, on the address the server listens on; no second link for a second
    look at the log (a new one comes only from a new start without an account)."""
    lines = [line for line in first_run.server.log().splitlines() if "/dashboard/setup?" in line]
    assert len(lines) == 1, lines
    assert "picolytics user add EMAIL" in lines[0]
