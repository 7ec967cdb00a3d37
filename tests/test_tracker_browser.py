"""assets/pico.js and assets/pico.ext.js in a real headless Chromium (Debian's, driven
by Playwright).

The test pages come from one local server (the "site") and the tracker from another
(the "collector"), so every beacon must go to the script's origin, never the page's.
Waits are bounded and wait for an expected request; nothing asserts on how long the
test took. The few lower bounds on timings come from delays the servers add on purpose.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    IMAGE_DELAY_S,
    PAGE_DELAY_S,
    PAYLOAD_FIELDS,
    PLAYWRIGHT_ARGS_TO_DROP,
    LocalServer,
    Recorder,
    Request,
    cast_number,
    page_html,
    probe_js,
    running_server,
)
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason=f"no Chromium at {CHROMIUM}: `apt-get install chromium` to run the browser tests",
    ),
]

TIMEZONE = "Asia/Tokyo"
SCREEN_WIDTH, SCREEN_HEIGHT = 1366, 768
PIXEL_RATIO = 2


# --- fixtures ----------------------------------------------------------------------------


# New servers (new ports, so new origins) for each test: a page of an earlier test that
# is still closing cannot send into a later test's recorder.
@pytest.fixture
def collector() -> Iterator[LocalServer]:
    with running_server() as server:
        yield server


@pytest.fixture
def site() -> Iterator[LocalServer]:
    with running_server() as server:
        yield server


@pytest.fixture
def beacons(collector: LocalServer, site: LocalServer) -> Iterator[Recorder]:
    """What the collector received; the site (the page's origin) must receive nothing."""
    yield collector.recorder
    assert site.recorder.requests == [], "the tracker sent to the page's origin"


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as instance:
        yield instance


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(
        executable_path=str(CHROMIUM),
        args=CHROMIUM_ARGS,
        ignore_default_args=PLAYWRIGHT_ARGS_TO_DROP,
    )
    yield browser
    browser.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    context = browser.new_context(
        timezone_id=TIMEZONE,
        screen={"width": SCREEN_WIDTH, "height": SCREEN_HEIGHT},
        device_scale_factor=PIXEL_RATIO,
    )
    yield context
    context.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()


def tracked_page(
    site: LocalServer, collector: LocalServer, path: str, ping: float | None = None
) -> str:
    return site.add_page(path, page_html(collector.origin, ping=ping))


def sent_nothing(page: Page, beacons: Recorder, collector: LocalServer) -> None:
    """Probe after the page had time to send, then check it sent nothing before the probe."""
    page.evaluate(probe_js(collector.origin, delay_ms=300))
    before = beacons.wait_for_probe()
    assert [request.name for request in before] == []


# --- the load event and the payload --------------------------------------------------------


def test_load_is_sent_once_to_the_script_origin_with_every_field(
    page: Page, site: LocalServer, collector: LocalServer, beacons: Recorder
) -> None:
    url = tracked_page(site, collector, "/load")
    referrer = site.origin + "/from"
    page.goto(url, referer=referrer)
    load = beacons.wait_for_beacon("load")

    assert load.method == "POST"
    assert load.path == "/p"
    assert load.content_type.startswith("text/plain")  # no CORS preflight
    assert load.fetch_mode == "no-cors"  # sent by navigator.sendBeacon
    assert load.cookie is None
    data = load.data
    assert set(data) == PAYLOAD_FIELDS - {"p"}  # p only comes with props
    assert data["l"] == url
    assert data["r"] == referrer
    assert data["tz"] == TIMEZONE
    assert (data["sw"], data["sh"]) == (SCREEN_WIDTH, SCREEN_HEIGHT)
    assert data["pr"] == PIXEL_RATIO
    assert type(data["pd"]) is int and data["pd"] > 0
    # Real Navigation Timing values: the page answered after PAGE_DELAY_S, and the load
    # event waited for an image served IMAGE_DELAY_S later still (lower bounds only).
    ttfb, load_time = cast_number(data["fb"]), cast_number(data["lt"])
    assert ttfb >= PAGE_DELAY_S * 1000 * 0.9
    assert load_time >= ttfb + IMAGE_DELAY_S * 1000 * 0.9
    assert page.evaluate("navigator.doNotTrack") is None  # the real default: unset

    page.evaluate(probe_js(collector.origin))
    before = beacons.wait_for_probe()
    assert [request.name for request in before] == ["load"]
    assert not any(request.method == "OPTIONS" for request in beacons.requests)


def test_load_is_sent_when_the_script_is_added_after_the_page_loaded(
    page: Page, site: LocalServer, collector: LocalServer, beacons: Recorder
) -> None:
    url = site.add_page("/late", page_html(collector.origin, tracker=False))
    page.goto(url)
    assert page.evaluate("document.readyState") == "complete"
    page.evaluate(
        "src => { const s = document.createElement('script'); s.src = src;"
        " document.head.append(s); }",
        collector.origin + "/pico.js",
    )
    load = beacons.wait_for_beacon("load")
    assert cast_number(load.data["lt"]) >= cast_number(load.data["fb"]) > 0
    page.evaluate(probe_js(collector.origin))
    assert [request.name for request in beacons.wait_for_probe()] == ["load"]


def test_fetch_with_keepalive_takes_over_when_send_beacon_refuses(
    page: Page, site: LocalServer, collector: LocalServer, beacons: Recorder
) -> None:
    page.add_init_script("navigator.sendBeacon = () => false;")
    url = tracked_page(site, collector, "/fallback")
    page.goto(url)
    load = beacons.wait_for_beacon("load")
    assert load.method == "POST"
    assert load.content_type.startswith("text/plain")
    assert load.fetch_mode == "cors"  # sent by fetch, not sendBeacon
    assert load.data["l"] == url
    assert not any(request.method == "OPTIONS" for request in beacons.requests)


def test_custom_events_and_no_cookie_storage_or_identifier(
    page: Page,
    context: BrowserContext,
    site: LocalServer,
    collector: LocalServer,
    beacons: Recorder,
) -> None:
    url = tracked_page(site, collector, "/custom", ping=0.1)
    page.goto(url)
    beacons.wait_for_beacon("load")
    page.evaluate("pico('signup')")
    signup = beacons.wait_for_beacon("signup")
    assert signup.data["l"] == url
    assert "lt" not in signup.data and "fb" not in signup.data
    page.evaluate("history.pushState(null, '', '/custom/next'); location.hash = '#/step'")
    beacons.wait_for_beacon("hashchange")
    beacons.wait_for_beacon("ping")

    assert context.cookies() == []
    assert page.evaluate("document.cookie") == ""
    assert page.evaluate("[localStorage.length, sessionStorage.length]") == [0, 0]
    for beacon in beacons.beacons:
        assert set(beacon.data) <= PAYLOAD_FIELDS, beacon.data
        assert beacon.cookie is None


def test_custom_event_props_are_sent_as_p(
    page: Page, site: LocalServer, collector: LocalServer, beacons: Recorder
) -> None:
    url = tracked_page(site, collector, "/props")
    page.goto(url)
    assert "p" not in beacons.wait_for_beacon("load").data
    page.evaluate("pico('signup', {plan: 'pro', seats: 3, yearly: true, note: 'é ✓'})")
    signup = beacons.wait_for_beacon("signup")
    assert signup.data["p"] == {"plan": "pro", "seats": 3, "yearly": True, "note": "é ✓"}
    assert signup.data["l"] == url
    assert "lt" not in signup.data and "fb" not in signup.data  # timings are load's alone
    assert signup.fetch_mode == "no-cors"  # sendBeacon, like every event
    # The server validates props (docs/guarantees.md, I11); the tracker forwards what it is given.
    page.evaluate("pico('plain'); pico('nested', {a: {b: [1]}})")
    assert "p" not in beacons.wait_for_beacon("plain").data
    assert beacons.wait_for_beacon("nested").data["p"] == {"a": {"b": [1]}}


# --- visibility and pings ------------------------------------------------------------------


def test_hidden_and_visible_when_leaving_and_coming_back_and_hidden_on_close(
    page: Page, site: LocalServer, collector: LocalServer, beacons: Recorder
) -> None:
    # Headless Chromium keeps every tab "visible"; leaving a page for another (it goes
    # hidden into the back/forward cache) and going back (visible again) are real
    # visibility changes, and so is closing the tab.
    first = tracked_page(site, collector, "/first")
    second = tracked_page(site, collector, "/second")
    page.goto(first)
    beacons.wait_for_beacon("load", "/first")

    page.goto(second)
    beacons.wait_for_beacon("hidden", "/first")
    beacons.wait_for_beacon("load", "/second")

    page.go_back(wait_until="commit")
    beacons.wait_for_beacon("visible", "/first")
    assert page.evaluate("document.visibilityState") == "visible"

    page.close()
    beacons.wait_for_beacon("hidden", "/first", count=2)

    first_page = [
        beacon.name for beacon in beacons.beacons if str(beacon.data["l"]).endswith("/first")
    ]
    assert first_page == ["load", "hidden", "visible", "hidden"]  # restored, not reloaded


def test_pings_are_sent_on_the_data_ping_interval_while_visible(
    page: Page, site: LocalServer, collector: LocalServer, beacons: Recorder
) -> None:
    url = tracked_page(site, collector, "/ping", ping=0.1)
    page.goto(url)
    third = beacons.wait_for_beacon("ping", count=3)
    assert third.data["l"] == url
    assert "lt" not in third.data


def test_no_pings_while_the_page_is_hidden(
    page: Page, site: LocalServer, collector: LocalServer, beacons: Recorder
) -> None:
    # No real way to keep a hidden page running headless (a back/forward-cached page is
    # frozen, timers and all), so this one test overrides document.hidden itself.
    page.add_init_script("Object.defineProperty(document, 'hidden', {get: () => true});")
    url = tracked_page(site, collector, "/hidden-ping", ping=0.05)
    page.goto(url)
    # The probe timer starts after the ping interval and lasts several of its periods.
    page.evaluate(probe_js(collector.origin, delay_ms=400))
    assert [request.name for request in beacons.wait_for_probe()] == ["load"]


# --- single-page apps ----------------------------------------------------------------------


def test_spa_navigations_are_each_sent_once_with_their_new_path(
    page: Page, site: LocalServer, collector: LocalServer, beacons: Recorder
) -> None:
    url = tracked_page(site, collector, "/app")
    origin = site.origin
    page.goto(url)
    beacons.wait_for_beacon("load")

    steps: list[tuple[str, str | None, str]] = [
        # (script, event expected or None, URL after the step)
        ("history.pushState({}, '', '/app/one')", "nav", "/app/one"),
        ("history.replaceState({}, '', '/app/two')", "nav", "/app/two"),
        ("history.replaceState({}, '', '/app/two?tab=2')", None, "/app/two?tab=2"),
        ("history.pushState({}, '', '/app/two?tab=3')", None, "/app/two?tab=3"),
        # Chromium fires popstate and then hashchange here; one beacon is expected.
        ("location.hash = '#/route'", "hashchange", "/app/two?tab=3#/route"),
        ("document.getElementById('anchor').click()", "hashchange", "/app/two?tab=3#section"),
        ("history.back()", "hashchange", "/app/two?tab=3#/route"),
        ("history.go(-2)", "hashchange", "/app/two?tab=2"),  # same path, fragment gone
        ("history.back()", "nav", "/app"),  # popstate to another path
        ("history.forward()", "nav", "/app/two?tab=2"),
    ]
    expected = [("load", origin + "/app")]
    for script, event, after in steps:
        page.evaluate(script)
        page.wait_for_url(origin + after)
        if event is not None:
            expected.append((event, origin + after))
            count = expected.count((event, origin + after))
            beacon = beacons.wait_for_beacon(event, after, count=count)
            assert beacon.data["l"] == origin + after
            assert "lt" not in beacon.data

    page.evaluate(probe_js(collector.origin))
    sent = beacons.wait_for_probe()
    assert [(request.name, request.data["l"]) for request in sent] == expected


# --- Do Not Track and Global Privacy Control -----------------------------------------------

SIGNALS = {
    "navigator.doNotTrack '0'": ("Navigator.prototype", "doNotTrack", '"0"', True),
    "navigator.doNotTrack 'unspecified'": (
        "Navigator.prototype",
        "doNotTrack",
        '"unspecified"',
        True,
    ),
    "navigator.doNotTrack '1'": ("Navigator.prototype", "doNotTrack", '"1"', False),
    "window.doNotTrack '1'": ("window", "doNotTrack", '"1"', False),
    "window.doNotTrack '0'": ("window", "doNotTrack", '"0"', True),
    "globalPrivacyControl true": ("Navigator.prototype", "globalPrivacyControl", "true", False),
    "globalPrivacyControl false": ("Navigator.prototype", "globalPrivacyControl", "false", True),
}


@pytest.mark.parametrize("signal", list(SIGNALS))
def test_privacy_signals_stop_everything_only_when_really_on(
    signal: str, page: Page, site: LocalServer, collector: LocalServer, beacons: Recorder
) -> None:
    # Chromium has no Global Privacy Control and sets DNT from a profile preference
    # (tested for real below), so these values are put in place before the page runs.
    target, name, value, sends = SIGNALS[signal]
    page.add_init_script(
        f"Object.defineProperty({target}, {json.dumps(name)},"
        f" {{get: () => {value}, configurable: true}});"
    )
    url = tracked_page(site, collector, "/signal", ping=0.05)
    page.goto(url)
    page.evaluate("pico('signup'); history.pushState(null, '', '/signal/next')")
    if sends:
        beacons.wait_for_beacon("load")
        beacons.wait_for_beacon("signup")
        beacons.wait_for_beacon("nav", "/signal/next")
    else:
        sent_nothing(page, beacons, collector)


def test_do_not_track_from_chromium_preferences_sends_nothing(
    playwright: Playwright,
    site: LocalServer,
    collector: LocalServer,
    beacons: Recorder,
    tmp_path: Path,
) -> None:
    # The real setting ("Send a Do Not Track request"), written into a fresh profile.
    profile = tmp_path / "profile"
    (profile / "Default").mkdir(parents=True)
    (profile / "Default" / "Preferences").write_text(json.dumps({"enable_do_not_track": True}))
    context = playwright.chromium.launch_persistent_context(
        str(profile), executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
    )
    try:
        page = context.new_page()
        page.goto(tracked_page(site, collector, "/dnt", ping=0.05))
        assert page.evaluate("navigator.doNotTrack") == "1"
        page.evaluate("pico('signup'); location.hash = '#/x'")
        sent_nothing(page, beacons, collector)
    finally:
        context.close()


# --- pico.ext.js: outbound links and downloads ---------------------------------------------

# Events every page sends on its own; the click tests look at what comes besides them.
USUAL_EVENTS = frozenset({"load", "visible", "hidden", "ping"})
# Cancels the links' navigation (new tabs too), so one page can take several clicks; the
# tracker listens on the window, after the document, and must not care.
STAY_ON_THE_PAGE = (
    "() => ['click', 'auxclick'].forEach(type =>"
    " document.addEventListener(type, event => event.preventDefault()))"
)


@pytest.fixture
def elsewhere() -> Iterator[LocalServer]:
    """Another site (another port of 127.0.0.1) that outbound links lead to."""
    with running_server() as server:
        server.add_page("/landing", "<!doctype html><title>landing</title><p>landed")
        yield server
        assert server.recorder.requests == [], "the tracker sent to a linked site"


def links_html(elsewhere: LocalServer) -> str:
    other = elsewhere.origin
    return (
        f'<p><a id=outbound href="{other}/landing?ref=news#top"><b id=inside>away</b></a>'
        '<a id=report href="/files/Report.PDF?token=secret#page=2">report</a>'
        '<a id=notes href="/files/notes.md">notes</a>'
        '<a id=internal href="/about?tab=2">about</a>'
        f'<a id=outbound-zip href="{other}/files/archive.zip?v=2">archive</a>'
        '<a id=mail href="mailto:someone@example.com">mail</a>'
        "<a id=no-href>no link</a></p>"
    )


def ext_page(
    site: LocalServer,
    collector: LocalServer,
    elsewhere: LocalServer,
    path: str,
    attributes: str,
    script: str = "pico.ext.js",
) -> str:
    html = page_html(
        collector.origin, script=script, attributes=attributes, body=links_html(elsewhere)
    )
    return site.add_page(path, html)


def click_every_link(page: Page) -> None:
    """Left-, middle- and right-click each link of links_html, staying on the page."""
    page.evaluate(STAY_ON_THE_PAGE)
    for link in ("#inside", "#report", "#notes", "#internal", "#outbound-zip", "#mail"):
        for button in ("left", "middle", "right"):
            page.click(link, button=button)
    page.click("#no-href")


def sent_besides_the_usual(page: Page, beacons: Recorder, collector: LocalServer) -> list[Request]:
    """The beacons sent before a probe (see sent_nothing), less the usual events."""
    page.evaluate(probe_js(collector.origin, delay_ms=300))
    return [request for request in beacons.wait_for_probe() if request.name not in USUAL_EVENTS]


def sent_for_every_click(
    page: Page, beacons: Recorder, collector: LocalServer, url: str
) -> list[tuple[str, Any]]:
    """(name, props) of what clicking every link of the page at `url` sent."""
    page.goto(url)
    beacons.wait_for_beacon("load")
    click_every_link(page)
    sent = sent_besides_the_usual(page, beacons, collector)
    return [(request.name, request.data["p"]) for request in sent]


def test_outbound_click_that_leaves_the_page_is_sent_without_query_or_fragment(
    page: Page,
    site: LocalServer,
    collector: LocalServer,
    elsewhere: LocalServer,
    beacons: Recorder,
) -> None:
    url = ext_page(site, collector, elsewhere, "/out", " data-outbound")
    page.goto(url)
    beacons.wait_for_beacon("load")
    # A real navigating click, on an element inside the link: the page unloads (into
    # the back/forward cache) right after the click, and the beacon must still arrive.
    page.click("#inside")
    page.wait_for_url(elsewhere.origin + "/landing?ref=news#top")
    outbound = beacons.wait_for_beacon("outbound")
    assert outbound.data["p"] == {"url": elsewhere.origin + "/landing"}
    assert outbound.data["l"] == url
    assert outbound.fetch_mode == "no-cors"  # sendBeacon
    beacons.wait_for_beacon("hidden")  # the page did go away
    assert [request.name for request in beacons.beacons] == ["load", "outbound", "hidden"]


def test_outbound_counts_left_and_middle_clicks_on_links_to_another_host_only(
    page: Page,
    site: LocalServer,
    collector: LocalServer,
    elsewhere: LocalServer,
    beacons: Recorder,
) -> None:
    url = ext_page(site, collector, elsewhere, "/out-buttons", " data-outbound")
    # Not the same-host links (a .pdf is no download without data-downloads), not
    # mailto:, not the right button; a zip on another host is outbound here.
    assert sent_for_every_click(page, beacons, collector, url) == [
        ("outbound", {"url": elsewhere.origin + "/landing"}),  # left
        ("outbound", {"url": elsewhere.origin + "/landing"}),  # middle
        ("outbound", {"url": elsewhere.origin + "/files/archive.zip"}),
        ("outbound", {"url": elsewhere.origin + "/files/archive.zip"}),
    ]


def test_downloads_with_the_default_extensions(
    page: Page,
    site: LocalServer,
    collector: LocalServer,
    elsewhere: LocalServer,
    beacons: Recorder,
) -> None:
    url = ext_page(site, collector, elsewhere, "/files", " data-downloads")
    # .PDF in any case and .zip are on the default list, .md is not; the outbound page
    # is not tracked without data-outbound.
    report = {"url": site.origin + "/files/Report.PDF"}
    archive = {"url": elsewhere.origin + "/files/archive.zip"}
    assert sent_for_every_click(page, beacons, collector, url) == [
        ("download", report),
        ("download", report),
        ("download", archive),
        ("download", archive),
    ]


def test_downloads_with_a_custom_extension_list(
    page: Page,
    site: LocalServer,
    collector: LocalServer,
    elsewhere: LocalServer,
    beacons: Recorder,
) -> None:
    url = ext_page(site, collector, elsewhere, "/md", ' data-downloads="md, epub"')
    notes = {"url": site.origin + "/files/notes.md"}
    assert sent_for_every_click(page, beacons, collector, url) == [
        ("download", notes),  # left
        ("download", notes),  # middle; the list replaced the defaults (no pdf, no zip)
    ]


def test_a_link_both_outbound_and_a_download_counts_as_a_download(
    page: Page,
    site: LocalServer,
    collector: LocalServer,
    elsewhere: LocalServer,
    beacons: Recorder,
) -> None:
    page.goto(ext_page(site, collector, elsewhere, "/both", " data-outbound data-downloads"))
    beacons.wait_for_beacon("load")
    page.evaluate(STAY_ON_THE_PAGE)
    page.click("#outbound-zip")
    page.click("#inside")
    page.click("#report")
    sent = sent_besides_the_usual(page, beacons, collector)
    assert [(request.name, request.data["p"]["url"]) for request in sent] == [
        ("download", elsewhere.origin + "/files/archive.zip"),
        ("outbound", elsewhere.origin + "/landing"),
        ("download", site.origin + "/files/Report.PDF"),
    ]


@pytest.mark.parametrize(
    ("script", "attributes"),
    [("pico.ext.js", ""), ("pico.js", " data-outbound data-downloads")],
    ids=["pico.ext.js without attributes", "pico.js with them"],
)
def test_clicks_send_nothing_unless_pico_ext_js_is_asked_to(
    script: str,
    attributes: str,
    page: Page,
    site: LocalServer,
    collector: LocalServer,
    elsewhere: LocalServer,
    beacons: Recorder,
) -> None:
    url = ext_page(site, collector, elsewhere, "/quiet", attributes, script=script)
    assert sent_for_every_click(page, beacons, collector, url) == []
    page.evaluate("pico('signup', {plan: 'pro'})")  # the core works the same
    assert beacons.wait_for_beacon("signup").data["p"] == {"plan": "pro"}


def test_do_not_track_silences_the_extensions_too(
    page: Page,
    site: LocalServer,
    collector: LocalServer,
    elsewhere: LocalServer,
    beacons: Recorder,
) -> None:
    page.add_init_script(
        "Object.defineProperty(Navigator.prototype, 'doNotTrack', {get: () => '1'});"
    )
    page.goto(ext_page(site, collector, elsewhere, "/dnt-ext", " data-outbound data-downloads"))
    click_every_link(page)
    sent_nothing(page, beacons, collector)
