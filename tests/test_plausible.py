"""POST /api/event: Plausible's payload, mapped onto the same events as /p (plausible.py)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from helpers.database import query, wait_for_count
from helpers.events import CHROME_UA, CLIENT_IP
from starlette.testclient import TestClient

from picolytics.config import Config
from picolytics.events import EventNames
from picolytics.ingest.payload import InvalidPayload
from picolytics.ingest.plausible import parse_plausible_event
from picolytics.serve.app import create_app

NAMES = EventNames(
    frozenset({"load", "engagement", "outbound", "download"}), re.compile(r"[A-Za-z ]+")
)
PAGEVIEW = {
    "n": "pageview",
    "v": 36,
    "u": "https://www.example.com/pricing?utm_source=news&secret=1",
    "d": "example.com",
    "r": "https://search.example/?q=private",
}


def parse(**fields: Any) -> Any:
    payload = {**PAGEVIEW, **fields}
    return parse_plausible_event(
        json.dumps({k: v for k, v in payload.items() if v is not ...}).encode(), NAMES
    )


def test_a_pageview_is_a_load_of_the_page_of_the_named_site() -> None:
    page = parse()
    assert (page.name, page.site, page.path) == ("load", "example.com", "/pricing")
    assert (page.referrer_host, page.utm_source) == ("search.example", "news")
    assert (page.props, page.engaged_ms, page.interactive) == (None, None, True)


def test_long_field_names_mean_the_same() -> None:
    long = {"name": "Signup", "url": "https://example.com/a", "domain": "example.com"}
    page = parse_plausible_event(json.dumps({**long, "props": {"plan": "pro"}}).encode(), NAMES)
    assert (page.name, page.path, page.props) == ("Signup", "/a", {"plan": "pro"})
    with pytest.raises(InvalidPayload, match="n and name are the same field"):
        parse(name="pageview")


def test_plausible_names_for_links_become_ours_and_keep_the_url_prop() -> None:
    link = "https://other.example/file.pdf?token=1"
    outbound = parse(n="Outbound Link: Click", p={"url": link})
    download = parse(n="File Download", p={"url": link})
    assert (outbound.name, outbound.props) == (
        "outbound",
        {"url": "https://other.example/file.pdf"},
    )
    assert (download.name, download.props) == (
        "download",
        {"url": "https://other.example/file.pdf"},
    )


def test_engagement_carries_time_and_scroll_depth() -> None:
    page = parse(n="engagement", e=42_000, sd=87)
    assert (page.name, page.engaged_ms, page.scroll_depth) == ("engagement", 42_000, 87)
    assert parse(n="engagement", e=-5, sd=250).engaged_ms is None  # out of range: absent
    with pytest.raises(InvalidPayload, match="sd must be a number"):
        parse(n="engagement", sd="87")


def test_props_as_a_json_string_as_older_scripts_send_them() -> None:
    assert parse(n="Signup", p='{"plan":"pro"}').props == {"plan": "pro"}
    assert parse(n="Signup", p="").props is None
    with pytest.raises(InvalidPayload, match="props must be an object"):
        parse(n="Signup", p="[1]")
    with pytest.raises(InvalidPayload, match="malformed JSON"):
        parse(n="Signup", p="{plan")


def test_hash_mode_makes_any_fragment_part_of_the_path() -> None:
    assert parse(u="https://example.com/app#settings", h=1).path == "/app"
    assert parse(u="https://example.com/app#settings", h=1).hash_path == "#settings"
    assert parse(u="https://example.com/app#settings").hash_path == ""  # an anchor
    assert parse(u="https://example.com/app#/settings").hash_path == "#/settings"
    assert parse(u="https://example.com/app#?token=1", h=1).hash_path == ""


def test_non_interactive_events_are_flagged() -> None:
    assert parse(n="Signup", i=False).interactive is False
    with pytest.raises(InvalidPayload, match="i must be a boolean"):
        parse(n="Signup", i="no")


def test_the_site_is_the_first_domain_else_the_url_host() -> None:
    assert parse(d="Shop.Example.com, rollup.example").site == "shop.example.com"
    assert parse(d=...).site == "example.com"
    assert parse(d="").site == "example.com"
    with pytest.raises(InvalidPayload, match="d must be a domain name"):
        parse(d="not a domain")


def test_a_referrer_from_the_named_site_is_no_referral() -> None:
    assert parse(u="https://app.example.com/", r="https://example.com/x").referrer_host == ""
    assert parse(r=None).referrer_host == ""


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"n": ...}, "n is required"),
        ({"n": "Sign-up!"}, "unknown event name"),
        ({"u": ...}, "u is required"),
        ({"u": "file:///etc/passwd"}, "u must be an absolute http(s) URL"),
        ({"d": 5}, "d must be a string"),
        (
            {"n": "Signup", "p": {"a": {"b": 1}}},
            "props values must be strings, numbers or booleans",
        ),
    ],
)
def test_bad_events_are_refused_with_a_reason(fields: dict[str, Any], expected: str) -> None:
    with pytest.raises(InvalidPayload) as raised:
        parse(**fields)
    assert raised.value.reason == expected


# --- over HTTP, into PostgreSQL ------------------------------------------------------------


@pytest.fixture
def served(migrated_database: str) -> Iterator[tuple[TestClient, str]]:
    config = Config(
        batch_max_msec=20, request_rate_limit=0, custom_event_names="[A-Za-z][A-Za-z0-9 _-]*"
    )
    app = create_app(config, conninfo=migrated_database)
    with TestClient(app, client=(CLIENT_IP, 50123)) as client:
        yield client, migrated_database


def send(client: TestClient, **fields: Any) -> Any:
    payload = {**PAGEVIEW, **fields}
    return client.post(
        "/api/event",
        content=json.dumps(payload),
        headers={"Content-Type": "text/plain", "User-Agent": CHROME_UA},
    )


def test_a_visit_through_the_plausible_endpoint(served: tuple[TestClient, str]) -> None:
    client, conninfo = served
    assert send(client).status_code == 202
    assert send(client, n="Signup", p={"plan": "pro", "seats": 3}).status_code == 202
    assert send(client, n="engagement", e=45_000, sd=80).status_code == 202
    wait_for_count(conninfo, "SELECT count(*) FROM events", 3)
    events = query(
        conninfo,
        "SELECT name, path, props, engaged_ms, scroll_depth FROM events ORDER BY received_at",
    )
    assert events == [
        ("load", "/pricing", None, None, None),
        ("Signup", "/pricing", {"plan": "pro", "seats": 3}, None, None),
        ("engagement", "/pricing", None, 45_000, 80),
    ]
    wait_for_count(conninfo, "SELECT coalesce(sum(events), 0) FROM sessions", 3)
    assert query(
        conninfo,
        "SELECT d.domain, s.pageviews, s.engaged, s.referrer_host, s.utm_source "
        "FROM sessions s JOIN sites d USING (site_id)",
    ) == [("example.com", 1, True, "search.example", "news")]


@pytest.mark.parametrize(
    ("event", "engaged"),
    [
        ({"n": "engagement", "e": 3_000, "sd": 100}, False),  # a glance is still a bounce
        ({"n": "engagement", "e": 30_000}, True),
        ({"n": "Video Autoplay", "i": False}, False),
        ({"n": "Signup"}, True),
    ],
)
def test_which_events_make_a_visit_engaged(
    served: tuple[TestClient, str], event: dict[str, Any], engaged: bool
) -> None:
    client, conninfo = served
    assert send(client).status_code == 202
    assert send(client, **event).status_code == 202
    wait_for_count(conninfo, "SELECT coalesce(sum(events), 0) FROM sessions", 2)
    assert query(conninfo, "SELECT engaged FROM sessions") == [(engaged,)]


def test_refusals_are_the_same_as_on_p(served: tuple[TestClient, str]) -> None:
    client, conninfo = served
    refused = send(client, n="<script>")
    assert (refused.status_code, refused.text) == (400, "unknown event name")
    assert refused.headers["access-control-allow-origin"] == "*"
    too_big = send(client, n="Signup", p={"v": "x" * 70_000})
    assert too_big.status_code == 413
    wrong_type = client.post("/api/event", content=b"{}", headers={"Content-Type": "image/png"})
    assert wrong_type.status_code == 415
    assert client.get("/api/event").status_code == 405
    preflight = client.options(
        "/api/event",
        headers={"Origin": "https://example.com", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 204
    bot = client.post(
        "/api/event",
        content=json.dumps(PAGEVIEW),
        headers={"Content-Type": "text/plain", "User-Agent": "Googlebot/2.1"},
    )
    assert bot.status_code == 202
    wait_for_count(conninfo, "SELECT coalesce(sum(hits), 0) FROM bot_counts", 1)
    assert query(conninfo, "SELECT count(*) FROM events") == [(0,)]


def test_allowed_sites_apply_to_the_named_domain(migrated_database: str) -> None:
    config = Config(allowed_sites=("example.com",), batch_max_msec=20, request_rate_limit=0)
    app = create_app(config, conninfo=migrated_database)
    with TestClient(app, client=(CLIENT_IP, 50123)) as client:
        assert send(client, d="example.com", u="https://staging.example.net/").status_code == 202
        refused = send(client, d="other.example")
        assert (refused.status_code, refused.text) == (403, "site not tracked here")
        wait_for_count(migrated_database, "SELECT count(*) FROM events", 1)
    assert query(migrated_database, "SELECT domain FROM sites") == [("example.com",)]


def test_d_names_the_site_and_u_only_the_page(migrated_database: str) -> None:
    """Plausible's rule: `d` is the site, whatever host `u` names (a staging copy, a
    proxy); so the new-site limit counts `d`, and `u`'s host creates no site."""
    config = Config(
        batch_max_msec=20, request_rate_limit=0, geo_ip_file="", max_new_sites_per_hour=1
    )
    app = create_app(config, conninfo=migrated_database)
    with TestClient(app, client=(CLIENT_IP, 50123)) as client:
        first = send(client, d="shop.example", u="https://cdn.other.example/cart?utm_source=x")
        assert first.status_code == 202
        # Another page host under the same d: the same site, nothing new to count.
        assert send(client, d="shop.example", u="https://third.example/").status_code == 202
        # A second d is a second new site: over the limit of one.
        over = send(client, d="another.example", u="https://shop.example/")
        assert (over.status_code, over.text) == (403, "too many new sites, try again later")
        wait_for_count(migrated_database, "SELECT count(*) FROM events", 2)
    assert query(migrated_database, "SELECT domain FROM sites") == [("shop.example",)]
    assert query(migrated_database, "SELECT path FROM events ORDER BY received_at") == [
        ("/cart",),
        ("/",),
    ]
