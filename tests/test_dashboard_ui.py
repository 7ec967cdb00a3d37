"""The dashboard's pages (dashboard/ui.py, dashboard/assets.py, dashboard/static/) and
its calls to the Stats API with a login or a shared link (dashboard/api_access.py,
api/auth.py), through the real app (serve/app.py) on a real database; the page
itself in Debian's Chromium, driven by Playwright.

Site example.com (UTC), January 2024, times in UTC (as tests/test_api_v2.py's):

  visit visitor events                                       source         notes
  V1    1       10th 09:00 load /, 09:01 nav /pricing,       google.com
                09:02 signup /pricing {plan: pro}
  V2    2       10th 15:00 load /pricing                     news (email)   bounce
  V3    3       11th 10:00 load /, 10:00:30 signup /         (direct)       US
  V4    4       11th 12:00 load /blog                        news.yc...     Firefox, bounce
  V5    5       12th 08:00 load /docs, 08:02 nav /docs/api   (direct)       Firefox

From the 10th to the 12th: 5 visitors, 5 visits, 7 pageviews, 1.4 views per visit,
bounce rate 40 %, visit duration (120 + 30 + 120) / 5 = 54 s. From google.com only:
1, 1, 2, 2, 0 %, 120 s. One more visitor of example.com 20 seconds ago (the current
visitors), and other.test has one visit on the 10th, shown through a shared link.
A year earlier, example.com had two bounces: V6 on 11 January 2023 (/) and V7 on the
12th (/pricing), against which the year-earlier comparison is checked.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

import httpx2 as httpx
import psycopg
import pytest
import uvicorn
from helpers.browser import CHROMIUM, CHROMIUM_ARGS, PLAYWRIGHT_ARGS_TO_DROP
from helpers.database import wait_for_count
from helpers.events import CHROME_UA, event, run, write
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Page,
    Playwright,
    Request,
    Response,
    Route,
    expect,
    sync_playwright,
)
from starlette.testclient import TestClient

from picolytics.api import auth
from picolytics.config import Config
from picolytics.dashboard import api_access
from picolytics.dashboard.assets import StaticAssets
from picolytics.dashboard.session import SESSION_COOKIE, csrf_token
from picolytics.events import Agent, Location
from picolytics.serve.app import PublicApp, create_app
from picolytics.stats.engine import comparison_period
from picolytics.stats.periods import day_start
from picolytics.stats.query import Period
from picolytics.storage import accounts, api_keys, shares

EMAIL, PASSWORD = "ann@example.com", "correct horse battery"
A, B = "example.com", "other.test"
US = Location("US", "Illinois", "Springfield")
FIREFOX = Agent("Firefox", "121", "Linux", "", "desktop", None)
RANGE = ["2024-01-10", "2024-01-12"]
VIEW = "/dashboard/?site=example.com&period=custom&from=2024-01-10&to=2024-01-12"
AXE = Path(__file__).parent / "data" / "axe-core" / "axe.min.js"
BUDGET_BYTES = 150 * 1024  # the page's JS and CSS before compression (issue 19)
in_chromium = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM}")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def dataset() -> list[Any]:
    d1, d2, d3 = "2024-01-10", "2024-01-11", "2024-01-12"
    return [
        event(at(f"{d1} 09:00"), 1, path="/", referrer_host="google.com"),
        event(at(f"{d1} 09:01"), 1, name="nav", path="/pricing", referrer_host="google.com"),
        event(at(f"{d1} 09:02"), 1, name="signup", path="/pricing", props={"plan": "pro"}),
        event(at(f"{d1} 15:00"), 2, path="/pricing", utm_source="news", utm_medium="email"),
        replace(event(at(f"{d2} 10:00"), 3, path="/"), location=US),
        replace(
            event(at(f"{d2} 10:00:30"), 3, name="signup", path="/", props={"plan": "free"}),
            location=US,
        ),
        replace(
            event(at(f"{d2} 12:00"), 4, path="/blog", referrer_host="news.ycombinator.com"),
            agent=FIREFOX,
        ),
        replace(event(at(f"{d3} 08:00"), 5, path="/docs"), agent=FIREFOX),
        replace(event(at(f"{d3} 08:02"), 5, name="nav", path="/docs/api"), agent=FIREFOX),
        event(at(f"{d1} 11:00"), 9, path="/", site=B),
        event(at("2023-01-11 10:00"), 6, path="/"),
        event(at("2023-01-12 10:00"), 7, path="/pricing"),
        event(datetime.now(UTC) - timedelta(seconds=20), 8, path="/now"),
    ]


@dataclass(frozen=True)
class Env:
    conninfo: str
    key: str  # an API key of every site
    share: str  # the path of a shared link of other.test
    locked: str  # the path of a shared link of other.test with a password


@pytest.fixture(scope="module")
def env(module_database: str) -> Env:
    run(write(module_database, dataset()))
    accounts.connected(module_database, lambda c: accounts.add_user(c, EMAIL, PASSWORD))
    with psycopg.connect(module_database) as connection:
        link = shares.create(connection, B)
        locked = shares.create(connection, B, "a password for the link")
    key = api_keys.connected(module_database, lambda c: api_keys.create(c, "all", ())).clear
    return Env(module_database, key, link.path, locked.path)


def app_of(env: Env, **settings: Any) -> PublicApp:
    config = Config(**{"api_rate_limit": 0, "rollup_interval_sec": 0, **settings})
    return create_app(config, conninfo=env.conninfo)


@pytest.fixture(scope="module")
def app(env: Env) -> PublicApp:
    return app_of(env)


def logged_in(app: PublicApp) -> tuple[TestClient, str]:
    """A client logged in through the form, and its session's CSRF token."""
    client = TestClient(app, follow_redirects=False)
    form = client.get("/dashboard/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf, form.text
    fields = {"csrf": csrf.group(1), "next": "/dashboard/", "email": EMAIL, "password": PASSWORD}
    done = client.post("/dashboard/login", data=fields)
    assert done.status_code == 303, done.text
    return client, csrf_token(client.cookies[SESSION_COOKIE])


def totals(site: str = A, filters: list[Any] | None = None) -> dict[str, Any]:
    metrics = [
        "visitors",
        "visits",
        "pageviews",
        "views_per_visit",
        "bounce_rate",
        "visit_duration",
    ]
    return {"site_id": site, "metrics": metrics, "date_range": RANGE, "filters": filters or []}


def post(client: TestClient, path: str, body: object, **headers: str) -> Any:
    return client.post(path, content=json.dumps(body).encode(), headers=headers)


# --- the Stats API with a login or a shared link ----------------------------------------------


def test_the_api_takes_a_session_with_its_csrf_header(env: Env, app: PublicApp) -> None:
    client, csrf = logged_in(app)
    path = "/dashboard/api/v2/query"
    by_key = post(client, "/api/v2/query", totals(), Authorization=f"Bearer {env.key}")
    assert by_key.status_code == 200
    assert by_key.json()["results"] == [{"metrics": [5, 5, 7, 1.4, 40, 54], "dimensions": []}]
    answer = post(client, path, totals(), **{"X-CSRF-Token": csrf})
    assert (answer.status_code, answer.json()) == (200, by_key.json())
    # Behind a proxy's Basic authentication the browser sends that header along too.
    proxied = post(client, path, totals(), Authorization="Basic YTpi", **{"X-CSRF-Token": csrf})
    assert proxied.status_code == 200
    assert post(client, path, totals(B), **{"X-CSRF-Token": csrf}).status_code == 200  # every site
    refusals = {
        "no header": post(client, path, totals()),
        "a wrong token": post(client, path, totals(), **{"X-CSRF-Token": csrf[:-2] + "xx"}),
        "another session's": post(client, path, totals(), **{"X-CSRF-Token": csrf_token("x" * 43)}),
    }
    for what, refused in refusals.items():
        assert (refused.status_code, refused.json()) == (403, {"error": api_access.NO_CSRF}), what
    stranger = TestClient(app)
    nobody = post(stranger, path, totals(), **{"X-CSRF-Token": csrf})
    assert (nobody.status_code, nobody.json()) == (401, {"error": auth.MISSING_KEY})
    stranger.cookies.set(SESSION_COOKIE, "A" * 43)  # a token of no session
    ended = post(stranger, path, totals(), **{"X-CSRF-Token": csrf_token("A" * 43)})
    assert (ended.status_code, ended.json()) == (401, {"error": api_access.NO_SESSION})
    # v1's current visitors, for the page's counter, the same way.
    realtime = "/dashboard/api/v1/stats/realtime/visitors?site_id=example.com"
    assert client.get(realtime, headers={"X-CSRF-Token": csrf}).json() == 1
    assert client.get(realtime).status_code == 403
    # The Sites API lists an API key's sites only.
    assert client.get("/dashboard/api/v1/sites", headers={"X-CSRF-Token": csrf}).status_code == 401


def test_after_logout_the_api_answers_401(app: PublicApp) -> None:
    client, csrf = logged_in(app)
    cookie = client.cookies[SESSION_COOKIE]
    assert client.post("/dashboard/logout", data={"csrf": csrf}).status_code == 303
    client.cookies.set(SESSION_COOKIE, cookie)  # a browser that kept it anyway
    after = post(client, "/dashboard/api/v2/query", totals(), **{"X-CSRF-Token": csrf})
    assert (after.status_code, after.json()) == (401, {"error": api_access.NO_SESSION})
    assert client.get("/dashboard/").status_code == 303


def test_a_shared_link_reads_its_one_site(env: Env, app: PublicApp) -> None:
    client = TestClient(app)
    path = f"{env.share}/api/v2/query"
    mine = post(client, path, totals(B))
    assert mine.status_code == 200 and mine.json()["results"][0]["metrics"][:3] == [1, 1, 1]
    other = post(client, path, totals(A))
    assert (other.status_code, other.json()) == (401, {"error": auth.INVALID_KEY})
    realtime = f"{env.share}/api/v1/stats/realtime/visitors"
    assert client.get(f"{realtime}?site_id={B}").json() == 0
    assert client.get(f"{realtime}?site_id={A}").status_code == 401
    for path in (f"/share/{'A' * 43}/api/v2/query", f"{env.locked}/api/v2/query"):
        refused = post(client, path, totals(B))
        assert (refused.status_code, refused.json()) == (401, {"error": api_access.NO_SHARE}), path
    # A session cookie does not widen a link: under /share/ only the link counts.
    session, csrf = logged_in(app)
    widened = post(session, f"{env.share}/api/v2/query", totals(A), **{"X-CSRF-Token": csrf})
    assert widened.status_code == 401


def test_a_shared_link_has_a_rate_limit(env: Env) -> None:
    client = TestClient(app_of(env, api_rate_limit=2))
    statuses = [post(client, f"{env.share}/api/v2/query", totals(B)).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]


def test_with_the_dashboard_off_nothing_answers(env: Env) -> None:
    client = TestClient(app_of(env, dashboard_enabled=False), follow_redirects=False)
    assert client.get("/dashboard/").status_code == 404
    assert client.get(env.share).status_code == 404
    assert client.get("/dashboard/static/dashboard.js").status_code == 404
    assert post(client, "/dashboard/api/v2/query", totals()).status_code in (404, 405)
    by_key = post(client, "/api/v2/query", totals(), Authorization=f"Bearer {env.key}")
    assert by_key.status_code == 200


# --- the pages and their files ----------------------------------------------------------------


def test_the_dashboard_page_needs_a_login(app: PublicApp) -> None:
    stranger = TestClient(app, follow_redirects=False)
    away = stranger.get(VIEW)
    assert away.status_code == 303
    assert away.headers["location"] == "/dashboard/login?next=" + (
        "%2Fdashboard%2F%3Fsite%3Dexample.com%26period%3Dcustom%26from%3D2024-01-10%26to%3D2024-01-12"
    )
    assert stranger.get("/dashboard").headers["location"] == "/dashboard/"
    client, csrf = logged_in(app)
    page = client.get(VIEW)
    assert page.status_code == 200
    assert f'<meta name="csrf-token" content="{csrf}">' in page.text
    policy = page.headers["content-security-policy"]
    assert "script-src 'self';" in policy and "unsafe" not in policy
    assert "frame-ancestors 'none'" in policy and page.headers["x-frame-options"] == "DENY"
    assert page.headers["cache-control"] == "no-store"
    assert "<script>" not in page.text and "style=" not in page.text  # nothing inline
    # The free DB-IP database's attribution, wherever its data is shown.
    assert '<a href="https://db-ip.com">IP Geolocation by DB-IP</a>' in page.text
    config = re.search(
        r'<script type="application/json" id="picolytics-config">(.*?)</script>', page.text
    )
    assert config is not None
    shown = json.loads(config.group(1))
    assert (shown["mode"], shown["base"]) == ("private", "/dashboard")
    assert shown["sites"] == [{"domain": A, "timezone": "UTC"}, {"domain": B, "timezone": "UTC"}]
    assert (
        '<label for="site">Site</label>' in page.text
        and '<label for="period">Period</label>' in page.text
    )


def test_the_shared_page(env: Env, app: PublicApp) -> None:
    client = TestClient(app, follow_redirects=False)
    page = client.get(env.share)
    assert page.status_code == 200 and page.headers["referrer-policy"] == "no-referrer"
    config = re.search(r'id="picolytics-config">(.*?)</script>', page.text)
    assert config is not None
    shown = json.loads(config.group(1))
    assert shown["sites"] == [{"domain": B, "timezone": "UTC"}] and shown["base"] == env.share
    assert (
        'id="site"' not in page.text
        and "csrf-token" not in page.text
        and "Log out" not in page.text
    )
    assert page.headers["x-frame-options"] == "DENY"
    embedded = client.get(f"{env.share}?embed=true")
    assert "frame-ancestors *" in embedded.headers["content-security-policy"]
    assert "x-frame-options" not in embedded.headers
    assert client.get(env.locked).headers["location"] == f"{env.locked}/password"
    locked_embed = client.get(f"{env.locked}?embed=true")
    assert locked_embed.status_code == 303  # a link with a password is never framed
    assert client.get(f"/share/{'A' * 43}").status_code == 404


def test_the_static_files(app: PublicApp) -> None:
    client = TestClient(app)
    script = client.get("/dashboard/static/dashboard.js")
    assert script.status_code == 200
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert script.headers["cache-control"] == "no-cache"
    again = client.get(
        "/dashboard/static/dashboard.js", headers={"If-None-Match": script.headers["etag"]}
    )
    assert (again.status_code, again.content) == (304, b"")
    style = client.get("/dashboard/static/vendor/uPlot.min.css")
    assert style.headers["content-type"] == "text/css; charset=utf-8"
    for missing in ("vendor/README.md", "vendor/LICENSE.uPlot", "../ui.py", "nothing.js"):
        assert client.get(f"/dashboard/static/{missing}").status_code == 404, missing
    assets = StaticAssets()
    assert "/dashboard/static/vendor/uPlot.iife.min.js" in assets.files
    assert assets.size() <= BUDGET_BYTES, assets.size()


# --- in Chromium --------------------------------------------------------------------------------


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
    """After the server and its dataset: Playwright's loop runs in this thread from
    here on, and the dataset's writer (asyncio.run) could not run inside it."""
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


class Console:
    """What the page said in its console (errors, CSP violations) and threw."""

    def __init__(self, page: Page) -> None:
        self.errors: list[str] = []
        page.on("console", self._message)
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))
        page.on("requestfailed", self._failed)
        page.on("response", self._response)

    def _failed(self, request: Request) -> None:
        if request.failure != "net::ERR_ABORTED":  # a call the page gave up: state changed
            self.errors.append(f"failed: {request.url} {request.failure}")

    def _response(self, response: Response) -> None:
        if response.status >= 400:
            self.errors.append(f"{response.status}: {response.url}")

    def _message(self, message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            self.errors.append(f"{message.type}: {message.text}")


@pytest.fixture
def page(chromium: Browser) -> Iterator[Page]:
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    yield context.new_page()
    context.close()


def log_in(page: Page, server: str, path: str = VIEW) -> None:
    page.goto(server + path)
    assert page.url.startswith(f"{server}/dashboard/login?next=")
    page.get_by_label("E-mail address").fill(EMAIL)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(server + path)


def metric(page: Page, name: str) -> Any:
    return page.locator(f"#metric-{name} .value")


def expect_totals(page: Page, values: dict[str, str]) -> None:
    for name, text in values.items():
        expect(metric(page, name)).to_have_text(text)


ALL = {
    "visitors": "5",
    "visits": "5",
    "pageviews": "7",
    "views_per_visit": "1.4",
    "bounce_rate": "40%",
    "visit_duration": "54s",
}
GOOGLE = {
    "visitors": "1",
    "visits": "1",
    "pageviews": "2",
    "views_per_visit": "2",
    "bounce_rate": "0%",
    "visit_duration": "2m 00s",
}


@pytest.mark.browser
@in_chromium
def test_log_in_filter_by_a_source_and_go_back(page: Page, server: str) -> None:
    console = Console(page)
    log_in(page, server)
    expect(page.locator("#title")).to_have_text(A)
    expect_totals(page, ALL)
    expect(page.locator("#realtime-count")).to_have_text("1")
    sources = page.locator("#card-sources")
    expect(sources.locator("tbody tr")).to_have_count(4)
    expect(page.locator("#card-pages tbody tr")).to_have_count(5)
    sources.get_by_role("button", name="Filter by google.com").click()
    chip = page.get_by_role("button", name="Remove filter: Source is google.com")
    expect(chip).to_be_visible()
    assert "f=visit%3Asource%3Dgoogle.com" in page.url
    expect_totals(page, GOOGLE)
    # Every panel is filtered: V1's two pages, its one country.
    expect(page.locator("#card-pages tbody th")).to_have_text(["Filter by /", "Filter by /pricing"])
    expect(page.locator("#card-locations tbody tr")).to_have_count(1)
    page.go_back()
    expect(chip).to_have_count(0)
    expect_totals(page, ALL)
    page.go_forward()  # the filter again, from the URL alone
    expect(chip).to_be_visible()
    expect_totals(page, GOOGLE)
    chip.click()
    expect(chip).to_have_count(0)
    expect_totals(page, ALL)
    assert console.errors == []


@pytest.mark.browser
@in_chromium
def test_periods_properties_and_csv(page: Page, server: str) -> None:
    console = Console(page)
    log_in(page, server)
    expect_totals(page, ALL)
    page.get_by_label("Period", exact=True).select_option("realtime")
    expect(page).to_have_url(re.compile(r"period=realtime"))
    expect_totals(page, {"visitors": "1", "pageviews": "1"})  # the visit of 20 s ago
    expect(page.locator("#graph-section")).to_be_hidden()  # no graph of 30 minutes
    page.get_by_label("Period", exact=True).select_option("day")
    expect_totals(page, {"visitors": "1", "pageviews": "1"})
    expect(page.locator("#graph canvas")).to_have_count(1)
    expect(page.locator("#graph-table tbody tr")).to_have_count(24)  # the hours of today
    page.go_back()
    page.go_back()
    expect_totals(page, ALL)
    # The breakdown of a property, named in its form.
    page.get_by_label("Property name", exact=True).fill("plan")
    page.get_by_label("Property name", exact=True).press("Enter")
    expect(page).to_have_url(re.compile(r"prop=plan"))
    rows = page.locator("#card-props tbody th")
    expect(rows).to_have_text(["Filter by free", "Filter by pro"])
    # A panel as CSV: every row, values as the API spells them.
    with page.expect_download() as download:
        page.locator("#card-sources").get_by_role("button", name="Download CSV").click()
    text = Path(download.value.path()).read_text()
    assert download.value.suggested_filename == "example.com-sources-2024-01-10-2024-01-12.csv"
    assert text.splitlines() == [
        "Source,Visitors,%",
        "Direct / None,2,40",
        "google.com,1,20",
        "news,1,20",
        "news.ycombinator.com,1,20",
    ]
    assert console.errors == []


@pytest.mark.browser
@in_chromium
def test_a_shared_link_shows_its_site_and_no_other(page: Page, server: str, env: Env) -> None:
    console = Console(page)
    page.goto(f"{server}{env.share}?period=custom&from=2024-01-10&to=2024-01-12")
    expect(page.locator("#title")).to_have_text(B)
    expect_totals(page, {"visitors": "1", "visits": "1", "pageviews": "1"})
    expect(page.locator("#card-pages tbody th")).to_have_text(["Filter by /"])
    expect(page.locator("select#site")).to_have_count(0)
    expect(page.get_by_role("button", name="Log out")).to_have_count(0)
    assert console.errors == []
    asked = page.evaluate(
        """async (site) => {
            const answer = await fetch(location.pathname + "/api/v2/query", {method: "POST",
                body: JSON.stringify({site_id: site, metrics: ["visitors"], date_range: "all"})});
            return [answer.status, await answer.json()];
        }""",
        A,
    )
    assert asked == [401, {"error": auth.INVALID_KEY}]
    # The dashboard itself stays closed to the link's visitor.
    page.goto(f"{server}/dashboard/")
    assert page.url.startswith(f"{server}/dashboard/login")


def axe_violations(page: Page) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page as it is now."""
    page.evaluate(AXE.read_text())  # through DevTools: the page's CSP stays as it is
    found: list[dict[str, Any]] = page.evaluate(
        """async () => (await axe.run(document, {resultTypes: ["violations"]})).violations
            .map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.map(n => n.target[0])}))"""
    )
    return [v for v in found if v["impact"] in ("serious", "critical")]


@pytest.mark.browser
@in_chromium
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_axe_finds_no_serious_violation(
    chromium: Browser, server: str, env: Env, scheme: Literal["light", "dark"]
) -> None:
    context = chromium.new_context(viewport={"width": 1280, "height": 900}, color_scheme=scheme)
    try:
        page = context.new_page()
        console = Console(page)
        log_in(page, server)
        expect_totals(page, ALL)
        page.get_by_text("The graph's numbers as a table").click()
        page.locator("#card-sources").get_by_role("button", name="Filter by google.com").click()
        expect_totals(page, GOOGLE)
        assert axe_violations(page) == []
        page.goto(f"{server}{env.share}?period=custom&from=2024-01-10&to=2024-01-12")
        expect(metric(page, "visitors")).to_have_text("1")
        assert axe_violations(page) == []
        phone = context.new_page()
        phone.set_viewport_size({"width": 390, "height": 844})
        phone.goto(f"{server}{VIEW}")
        expect(metric(phone, "visitors")).to_have_text("5")
        assert axe_violations(phone) == []
        assert console.errors == []
        # axe is really looking: a button without a name is caught.
        phone.evaluate("document.querySelector('main').append(document.createElement('button'))")
        assert [v["id"] for v in axe_violations(phone)] == ["button-name"]
    finally:
        context.close()


@pytest.mark.browser
@in_chromium
def test_the_current_visitors_rise_when_an_event_arrives(page: Page, server: str, env: Env) -> None:
    page.clock.install()  # the page's timers run when the test says so
    log_in(page, server)
    counter = page.locator("#realtime-count")
    expect(counter).to_have_text("1")
    beacon = json.dumps({"n": "load", "l": "https://example.com/live"})
    headers = {"Content-Type": "text/plain", "User-Agent": CHROME_UA}
    assert httpx.post(f"{server}/p", content=beacon, headers=headers).status_code == 202
    wait_for_count(env.conninfo, "SELECT count(*) FROM events WHERE path = '/live'", 1)
    page.clock.run_for(29_000)
    expect(counter).to_have_text("1")  # not yet: every 30 seconds
    page.clock.run_for(1_000)
    expect(counter).to_have_text("2")


@pytest.mark.browser
@in_chromium
def test_tabs_metrics_the_site_switcher_and_the_keyboard(page: Page, server: str) -> None:
    console = Console(page)
    log_in(page, server)
    expect_totals(page, ALL)
    pages = page.locator("#card-pages")
    pages.get_by_role("button", name="Entry pages", exact=True).click()
    expect(page).to_have_url(re.compile(r"pages=entry"))
    expect(pages.get_by_role("button", name="Entry pages", exact=True)).to_have_attribute(
        "aria-pressed", "true"
    )
    expect(pages.locator("thead th")).to_have_text(["Entry page", "Visitors", "Entrances"])
    expect(pages.locator("tbody tr")).to_have_count(4)  # /, /pricing, /blog, /docs
    page.get_by_role("button", name=re.compile("^Total pageviews")).click()
    expect(page.locator("#graph-h")).to_have_text("Total pageviews over time")
    expect(page).to_have_url(re.compile(r"metric=pageviews"))
    expect(page.locator("#graph-table tbody td").first).to_have_text("3")  # the 10th: V1 2, V2 1
    # Custom events: signup only, not the API's "pageview" row of event:name.
    goals = page.locator("#card-goals")
    goals.get_by_role("button", name="Custom events", exact=True).click()
    expect(goals.locator("tbody tr")).to_have_count(1)
    expect(goals.locator("tbody tr").first).to_contain_text("signup")
    # The keyboard alone: to the first country, and Enter filters by it.
    page.locator("#card-locations").get_by_role("button", name="Filter by Germany").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("button", name="Remove filter: Country is Germany")).to_be_visible()
    expect(metric(page, "visitors")).to_have_text("4")  # all but V3, from the US
    page.get_by_role("button", name="Remove filter: Country is Germany").press("Enter")
    expect(metric(page, "visitors")).to_have_text("5")
    page.get_by_label("Site", exact=True).select_option(B)
    expect(page.locator("#title")).to_have_text(B)
    expect(page).to_have_url(re.compile(r"site=other\.test"))
    expect_totals(page, {"visitors": "1", "pageviews": "1"})
    assert console.errors == []


@pytest.mark.browser
@in_chromium
def test_what_the_api_refuses_is_hidden_not_an_error(page: Page, server: str) -> None:
    """The API's 400s, made here for the test: a refused metric leaves the row, a
    refused tab its card, and a card with no tab left the page."""
    locations = {"visit:country", "visit:region_name", "visit:city_name"}

    def refuse(route: Route) -> None:
        body: dict[str, Any] = route.request.post_data_json or {}
        dimensions = set(body.get("dimensions", []))
        refused = (
            dimensions & locations
            or dimensions == {"visit:referrer"}
            or "views_per_visit" in body["metrics"]
        )
        if refused:
            route.fulfill(status=400, json={"error": "#/dimensions/0: Not supported yet"})
        else:
            route.continue_()

    page.route("**/dashboard/api/v2/query", refuse)
    log_in(page, server)
    expect_totals(page, {k: v for k, v in ALL.items() if k != "views_per_visit"})
    expect(page.locator("#metric-views_per_visit")).to_have_count(0)
    expect(page.locator("#card-locations")).to_be_hidden()
    sources = page.locator("#card-sources")
    sources.get_by_role("button", name="Referrers", exact=True).click()
    expect(sources.get_by_role("button", name="Referrers", exact=True)).to_have_count(0)
    expect(sources.get_by_role("button", name="Sources", exact=True)).to_have_attribute(
        "aria-pressed", "true"
    )
    expect(sources.locator("tbody tr")).to_have_count(4)
    expect(page.locator(".failed")).to_have_count(0)


@pytest.mark.browser
@in_chromium
def test_compare_with_a_year_earlier_or_nothing(page: Page, server: str) -> None:
    """The comparison is in the URL; the metrics row's changes, the graph's second
    line and the API's date ranges follow it."""
    console = Console(page)
    asked: list[Any] = []
    page.on(
        "request",
        lambda r: asked.append(r.post_data_json) if r.url.endswith("/api/v2/query") else None,
    )
    log_in(page, server)
    expect_totals(page, ALL)
    # Each part says when its numbers are in (scripts/bench_dashboard.py waits on it).
    for part, outcome in {"metrics": "rows", "graph-section": "rows", "card-props": "idle"}.items():
        expect(page.locator(f"#{part}")).to_have_attribute("data-loaded", outcome)
    visitors_change = page.locator("#metric-visitors .change")
    expect(visitors_change).to_contain_text("against the previous period")  # 7-9 Jan: none
    compare = page.get_by_label("Compare with", exact=True)
    expect(compare).to_have_value("previous")
    asked.clear()
    compare.select_option("year")
    expect(page).to_have_url(re.compile(r"compare=year"))
    expect(visitors_change).to_have_text("↑ 150%, up 150% against a year earlier")  # 5 vs 2
    expect(page.locator("#metric-bounce_rate .change")).to_contain_text("down 60 pts")  # 40 vs 100
    graph = page.locator("#graph-table")
    expect(graph.locator("thead th")).to_have_text(["Bucket", "Unique visitors", "A year earlier"])
    expect(graph.locator("tbody td")).to_have_text(
        ["2", "0 (2023-01-10)", "2", "1 (2023-01-11)", "1", "1 (2023-01-12)"]
    )
    year = ["2023-01-10", "2023-01-12"]
    assert year in [body["date_range"] for body in asked if "dimensions" not in body]
    assert year in [body["date_range"] for body in asked if body.get("dimensions") == ["time:day"]]
    compare.select_option("off")
    expect(page).to_have_url(re.compile(r"compare=off"))
    expect_totals(page, ALL)
    expect(page.locator("#metrics .change")).to_have_count(0)
    expect(graph.locator("thead th")).to_have_text(["Bucket", "Unique visitors"])
    page.go_back()  # the URL holds the comparison: back to a year earlier
    expect(compare).to_have_value("year")
    expect(visitors_change).to_contain_text("against a year earlier")
    assert console.errors == []


def engine_year_earlier(first: str, last: str, zone: str) -> list[str]:
    """The query layer's year-earlier days of the local days first..last in zone."""
    tz = ZoneInfo(zone)
    start = day_start(date.fromisoformat(first), tz)
    end = day_start(date.fromisoformat(last) + timedelta(days=1), tz)
    before = comparison_period(Period(start, end, zone), "year_earlier")
    last_day = before.end.astimezone(tz).date() - timedelta(days=1)
    return [before.start.astimezone(tz).date().isoformat(), last_day.isoformat()]


def engine_year_earlier_instants(start: datetime, end: datetime, zone: str) -> list[str]:
    before = comparison_period(Period(start, end, zone), "year_earlier")
    return [
        moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        for moment in (before.start, before.end)
    ]


@pytest.mark.browser
@in_chromium
def test_the_page_and_the_query_layer_agree_on_a_year_earlier(page: Page, server: str) -> None:
    """static/periods.js against stats/engine.comparison_period, in the page itself:
    the same days (29 February is the 28th), and for "today so far" and realtime the
    same wall-clock instants, across DST."""
    log_in(page, server)
    expect_totals(page, ALL)
    resolve = """async ([state, zone, now]) => {
        const periods = await import("/dashboard/static/periods.js");
        const range = periods.resolve({...state, compare: "year"}, zone, Date.parse(now));
        return [range.previous, range.previousGraph];
    }"""
    ranges = [
        ("UTC", "2024-01-10", "2024-01-12"),
        ("Europe/Berlin", "2024-02-29", "2024-03-01"),  # 29 Feb 2024 is 28 Feb 2023
        ("Europe/Berlin", "2024-02-01", "2024-02-29"),
        ("America/New_York", "2024-03-01", "2024-03-31"),  # DST begins inside
        ("Asia/Kolkata", "2023-12-01", "2024-11-30"),
        ("Pacific/Auckland", "2025-03-01", "2025-04-30"),
    ]
    for zone, first, last in ranges:
        state = {"period": "custom", "from": first, "to": last}
        previous, graph = page.evaluate(resolve, [state, zone, "2025-06-01T12:00:00Z"])
        expected = engine_year_earlier(first, last, zone)
        assert previous == graph == expected, (zone, first, last)
    # A range that ends on 28 February of a leap year: its exclusive end (29 February)
    # must not become the 28th, or a day alone would compare with nothing.
    state = {"period": "custom", "from": "2024-02-28", "to": "2024-02-28"}
    previous, _ = page.evaluate(resolve, [state, "UTC", "2025-06-01T12:00:00Z"])
    assert previous == ["2023-02-28", "2023-02-28"]
    assert engine_year_earlier("2024-02-28", "2024-02-28", "UTC") == ["2023-02-28", "2023-02-28"]
    # Instants: today so far and the last 30 minutes, in a zone on the day DST begins.
    zone, now = "America/New_York", datetime(2024, 3, 10, 15, 30, 12, 345000, tzinfo=UTC)
    today = day_start(date(2024, 3, 10), ZoneInfo(zone))
    text = now.isoformat().replace("+00:00", "Z")
    previous, graph = page.evaluate(resolve, [{"period": "day"}, zone, text])
    assert previous == engine_year_earlier_instants(today, now, zone)
    assert graph == ["2023-03-10", "2023-03-10"]
    previous, graph = page.evaluate(resolve, [{"period": "realtime"}, zone, text])
    assert previous == engine_year_earlier_instants(now - timedelta(minutes=30), now, zone)
    assert graph is None
