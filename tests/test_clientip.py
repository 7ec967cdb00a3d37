"""Client IP behind proxies (docs/guarantees.md, S5): spoofing from untrusted peers fails."""

from __future__ import annotations

import ipaddress
import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.testclient import TestClient

from picolytics.config import DEFAULTS, Config, IpExtractor
from picolytics.ingest.clientip import ClientIp, parse_address
from picolytics.ingest.endpoint import log_startup_notes
from picolytics.serve.app import create_app

TRUSTED = [ipaddress.ip_network(cidr) for cidr in DEFAULTS.trusted_proxies]


class Call:
    """One request's inputs to ClientIp.extract: the peer and the forwarded headers."""

    def __init__(self, peer: str, headers: list[tuple[str, str]]) -> None:
        self.peer = peer
        self.forwarded_for = [value for name, value in headers if name == "X-Forwarded-For"]
        self.real_ip = next((value for name, value in headers if name == "X-Real-IP"), "")


def request(peer: str, headers: list[tuple[str, str]]) -> Call:
    return Call(peer, headers)


def run(extract: ClientIp, call: Call) -> str:
    return extract.extract(call.peer, call.forwarded_for, call.real_ip)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("203.0.113.5", "203.0.113.5"),
        (" 203.0.113.5:8080 ", "203.0.113.5"),
        ("2001:db8::1", "2001:db8::1"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("::ffff:198.51.100.7", "198.51.100.7"),
        ("fe80::1%eth0", "fe80::1"),
        ("unknown", None),
        ("", None),
        ("1.2.3", None),
        ("[::1", "::1"),
    ],
)
def test_parse_address(text: str, expected: str | None) -> None:
    parsed = parse_address(text)
    assert (str(parsed) if parsed else None) == expected


def test_direct_ignores_forwarded_headers() -> None:
    extract = ClientIp("direct", TRUSTED)
    assert run(extract, request("10.0.0.2", [("X-Forwarded-For", "203.0.113.9")])) == "10.0.0.2"


def test_untrusted_peer_cannot_spoof() -> None:
    extractors: tuple[IpExtractor, ...] = ("xff", "realip")
    for extractor in extractors:
        extract = ClientIp(extractor, TRUSTED)
        spoofed = request(
            "198.51.100.20", [("X-Forwarded-For", "203.0.113.9"), ("X-Real-IP", "203.0.113.9")]
        )
        assert run(extract, spoofed) == "198.51.100.20"


def test_xff_walks_from_the_right_skipping_trusted_hops() -> None:
    extract = ClientIp("xff", TRUSTED)
    # client-supplied junk, the real client, then two internal proxies
    chain = "6.6.6.6, 203.0.113.9, 10.1.1.1"
    assert run(extract, request("10.0.0.2", [("X-Forwarded-For", chain)])) == "203.0.113.9"
    # the header split over two lines is one list
    split = request(
        "127.0.0.1", [("X-Forwarded-For", "203.0.113.9"), ("X-Forwarded-For", "192.168.1.1")]
    )
    assert run(extract, split) == "203.0.113.9"
    v6 = request("::1", [("X-Forwarded-For", "2001:db8::7, fd00::1")])
    assert run(extract, v6) == "2001:db8::7"
    mapped = request("::ffff:10.0.0.1", [("X-Forwarded-For", "::ffff:203.0.113.4")])
    assert run(extract, mapped) == "203.0.113.4"


def test_xff_stops_at_garbage_and_falls_back() -> None:
    extract = ClientIp("xff", TRUSTED)
    assert (
        run(extract, request("10.0.0.2", [("X-Forwarded-For", "203.0.113.9, nonsense")]))
        == "10.0.0.2"
    )
    assert run(extract, request("10.0.0.2", [])) == "10.0.0.2"
    # every hop trusted: the leftmost one is the best we know
    assert (
        run(extract, request("10.0.0.2", [("X-Forwarded-For", "10.9.9.9, 10.8.8.8")])) == "10.9.9.9"
    )


def test_realip_from_a_trusted_proxy() -> None:
    extract = ClientIp("realip", TRUSTED)
    assert run(extract, request("172.16.0.3", [("X-Real-IP", "203.0.113.9")])) == "203.0.113.9"
    assert run(extract, request("172.16.0.3", [("X-Real-IP", "bogus")])) == "172.16.0.3"


def test_empty_trust_list_trusts_nobody() -> None:
    extract = ClientIp("xff", [])
    assert run(extract, request("127.0.0.1", [("X-Forwarded-For", "203.0.113.9")])) == "127.0.0.1"


@given(peer=st.ip_addresses(), header=st.text(max_size=200))
def test_any_header_gives_an_address_never_an_exception(
    peer: ipaddress.IPv4Address | ipaddress.IPv6Address, header: str
) -> None:
    extract = ClientIp("xff", TRUSTED)
    result = run(extract, request(str(peer), [("X-Forwarded-For", header)]))
    assert ipaddress.ip_address(result)
    if not any(peer in network for network in TRUSTED):
        assert parse_address(result) == parse_address(str(peer))


def _startup_lines(config: Config, caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="picolytics"):
        log_startup_notes(config)
    return [
        (record.levelno, record.getMessage())
        for record in caplog.records
        if "IP_EXTRACTOR" in record.getMessage()
    ]


def test_the_trusted_ranges_are_logged_at_startup(caplog: pytest.LogCaptureFixture) -> None:
    explicit = Config(ip_extractor="xff", trusted_proxies=("10.244.0.0/16", "fd00::/8"))
    assert _startup_lines(explicit, caplog) == [
        (
            logging.INFO,
            "IP_EXTRACTOR=xff: X-Forwarded-For is believed from TRUSTED_PROXIES"
            " 10.244.0.0/16, fd00::/8",
        )
    ]
    realip = _startup_lines(Config(ip_extractor="realip"), caplog)
    assert realip == [
        (
            logging.WARNING,
            "IP_EXTRACTOR=realip: X-Real-IP is believed from TRUSTED_PROXIES "
            + ", ".join(DEFAULTS.trusted_proxies)
            + " (the default: every private range; set your proxies' own)",
        )
    ]
    assert _startup_lines(Config(ip_extractor="direct"), caplog) == []  # nothing is believed


def test_the_server_logs_its_startup_notes(
    migrated_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    config = Config(ip_extractor="xff", trusted_proxies=("192.0.2.0/24",), geo_ip_file="")
    with (
        caplog.at_level(logging.INFO, logger="picolytics"),
        TestClient(create_app(config, conninfo=migrated_database)),
    ):
        pass
    messages = [record.getMessage() for record in caplog.records]
    assert "IP_EXTRACTOR=xff: X-Forwarded-For is believed from TRUSTED_PROXIES 192.0.2.0/24" in (
        messages
    )
    assert sum(message.startswith("ALLOWED_SITES is empty") for message in messages) == 1
