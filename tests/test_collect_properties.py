"""Property tests of the tracker body parser: no input escapes as a 500, no output is unsafe."""

from __future__ import annotations

import ipaddress
import json
import unicodedata
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from picolytics.events import EventNames, PageEvent
from picolytics.ingest.collect import MAX_NAME_LENGTH, MAX_TIMEZONE_LENGTH, parse_event
from picolytics.ingest.payload import InvalidPayload
from picolytics.ingest.urls import MAX_HOST_LENGTH, MAX_PATH_LENGTH, MAX_UTM_LENGTH
from picolytics.text import sanitize_text

NAMES = EventNames(frozenset({"load", "visible", "hidden", "hashchange", "ping"}))
UTM_FIELDS = ("utm_source", "utm_medium", "utm_campaign", "utm_content", "utm_term")
FIXED_REASONS = {
    "body is not valid UTF-8",
    "malformed JSON",
    "JSON nested too deeply",
    "NaN and Infinity are not allowed",
    "duplicate key",
    "body must be a JSON object",
    "unknown event name",
    "l is too long",
    "l must be an absolute http(s) URL",
    "n is required",
    "l is required",
    *(f"{key} must be a string" for key in ("n", "l", "r", "tz")),
    *(f"{key} must be a number" for key in ("lt", "fb", "sw", "sh", "pr", "pd", "e", "sd")),
    "event name is too long",
    "props must be an object",
    "props has more than 30 keys",
    "props key is empty",
    "props key is too long",
    "duplicate props key",
    "props value is too long",
    "props value is out of range",
    "props values must be strings, numbers or booleans",
}
MAX_LENGTHS = {
    "name": MAX_NAME_LENGTH,
    "site": MAX_HOST_LENGTH,
    "path": MAX_PATH_LENGTH,
    "referrer_host": MAX_HOST_LENGTH,
    "timezone": MAX_TIMEZONE_LENGTH,
    "hash_path": MAX_PATH_LENGTH,
    **dict.fromkeys(UTM_FIELDS, MAX_UTM_LENGTH),
}
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def parse_or_reason(raw: bytes) -> PageEvent | str:
    """The event, or the reason; anything else (TypeError, RecursionError...) fails the test."""
    try:
        return parse_event(raw, NAMES)
    except InvalidPayload as error:
        assert error.reason in FIXED_REASONS
        return error.reason


def is_clean(text: str) -> bool:
    return not any(unicodedata.category(ch) in ("Cc", "Cs") for ch in text)


def assert_safe(event: PageEvent) -> None:
    for field, maximum in MAX_LENGTHS.items():
        value = getattr(event, field)
        assert isinstance(value, str)
        assert len(value) <= maximum, field
        assert is_clean(value), field
        assert value == value.strip(), field
        value.encode("utf-8")  # strict
    assert event.name in NAMES.valid
    for host in (event.site, event.referrer_host):
        assert host.isascii()
        assert host == host.lower()
        assert not host.startswith("www.")
        assert not host.endswith(".")
    assert event.site
    assert event.path.startswith("/")
    assert event.hash_path == "" or event.hash_path.startswith(("#/", "#!/"))
    assert event.referrer_host != event.site
    for number, maximum in (
        (event.load_time_ms, 600_000),
        (event.ttfb_ms, 600_000),
        (event.screen_width, 100_000),
        (event.screen_height, 100_000),
        (event.pixel_depth, 128),
    ):
        assert number is None or (type(number) is int and 0 <= number <= maximum)
    ratio = event.pixel_ratio
    assert ratio is None or (type(ratio) is float and 0 < ratio <= 16)
    assert event.engaged_ms is None or 0 <= event.engaged_ms <= 86_400_000
    assert event.scroll_depth is None or 0 <= event.scroll_depth <= 100
    assert event.props is None or 0 < len(event.props) <= 30
    for key, prop in (event.props or {}).items():
        assert key and key == key.strip() and is_clean(key)
        assert len(key.encode("utf-8")) <= 300
        assert type(prop) in (str, int, float, bool)
        if isinstance(prop, str):
            assert prop == prop.strip() and is_clean(prop)
            assert len(prop.encode("utf-8")) <= 2000


# --- strategies -------------------------------------------------------------------------

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=8,
)
label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
domain = st.lists(label, min_size=1, max_size=4).map(".".join).filter(lambda d: d != "www")
messy_host = st.one_of(
    domain,
    domain.map(str.upper),
    domain.map(lambda d: "www." + d + "."),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda ip: f"[{ip}]"),
    st.text(max_size=12),
    st.sampled_from(["Bücher.example", "例え.テスト", "xn--bcher-kva.example", "a..b", "[::1"]),
)
messy_url = st.builds(
    "{}{}{}{}{}{}{}".format,
    st.sampled_from(["http://", "https://", "HTTP://", "ftp://", "javascript:", "", "//"]),
    st.sampled_from(["", "user@", "u:p@"]),
    messy_host,
    st.sampled_from(["", ":", ":80", ":65536", ":x", ":٨"]),
    st.text(max_size=20).map(lambda p: "/" + p),
    st.sampled_from(["", "?utm_source=a&utm_source=b", "?utm_term=%FF+x&q=1", "?utm_medium"]),
    st.sampled_from(["", "#", "#/r?x=1", "#top", "#!/a"]),
) | st.text(max_size=40)
good_url = st.builds(
    "https://{}/{}?utm_source={}#{}".format, domain, st.text(max_size=20), st.text(), st.text()
)
good_number = st.integers(-10, 10**6) | st.floats(-1, 10**6) | st.sampled_from([0, 1.5, 16])
# n and l are usually valid, so that most bodies get past them to the other fields.
required_fields: dict[str, st.SearchStrategy[Any]] = {
    "n": st.one_of(*[st.sampled_from(sorted(NAMES.valid))] * 4, st.just(" load\x00"), json_values),
    "l": st.one_of(*[good_url] * 4, messy_url, json_values),
}
optional_fields: dict[str, st.SearchStrategy[Any]] = {
    "r": good_url | messy_url | json_values,
    "tz": st.text(max_size=80) | json_values,
    **{key: good_number | json_values for key in ("lt", "fb", "sw", "sh", "pr", "pd")},
    "e": good_number | json_values,
    "sd": good_number | json_values,
    "p": st.dictionaries(st.text(max_size=8), scalars, max_size=5) | json_values,
}
payloads = st.fixed_dictionaries(required_fields, optional=optional_fields).flatmap(
    lambda fields: st.dictionaries(st.text(max_size=3), json_values, max_size=3).map(
        lambda extra: {**extra, **fields}
    )
)


def to_bytes(payload: object, ascii_only: bool) -> bytes:
    # ensure_ascii turns lone surrogates into \udXXX escapes; without it they reach the
    # bytes as CESU-style sequences, which strict UTF-8 decoding must refuse.
    return json.dumps(payload, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


# --- any input --------------------------------------------------------------------------


@FAST
@given(st.binary(max_size=600))
def test_any_bytes_give_an_event_or_invalid_payload(raw: bytes) -> None:
    result = parse_or_reason(raw)
    if isinstance(result, PageEvent):
        assert_safe(result)


@FAST
@given(payloads, st.booleans())
def test_any_json_object_gives_a_safe_event_or_invalid_payload(
    payload: dict[str, Any], ascii_only: bool
) -> None:
    result = parse_or_reason(to_bytes(payload, ascii_only))
    if isinstance(result, PageEvent):
        assert_safe(result)


@FAST
@given(json_values, st.booleans(), st.binary(max_size=8), st.integers(0, 50))
def test_mangled_json_never_escapes_as_another_exception(
    value: object, ascii_only: bool, junk: bytes, position: int
) -> None:
    raw = to_bytes(value, ascii_only)
    parse_or_reason(raw[:position] + junk + raw[position:])


@FAST
@given(st.text(), st.integers(0, 300))
def test_sanitize_text_output_is_clean_bounded_and_idempotent(value: str, maximum: int) -> None:
    clean = sanitize_text(value, maximum)
    assert len(clean) <= maximum
    assert is_clean(clean)
    assert clean == clean.strip()
    clean.encode("utf-8")
    assert sanitize_text(clean, maximum) == clean


@FAST
@given(st.text(st.characters(exclude_categories=("Cc", "Cs")), max_size=50))
def test_sanitize_text_keeps_clean_text(value: str) -> None:
    assert sanitize_text(value, 50) == value.strip()


# --- agreement with urllib.parse --------------------------------------------------------


def expected_site(hostname: str) -> str:
    if ":" in hostname:
        return str(ipaddress.IPv6Address(hostname.partition("%")[0]))
    host = hostname.encode("idna").decode("ascii").lower().removesuffix(".")
    return host[4:] if host.startswith("www.") and len(host) > 4 else host


@FAST
@given(messy_url | good_url)
def test_accepted_urls_agree_with_urlsplit(url: str) -> None:
    result = parse_or_reason(json.dumps({"n": "load", "l": url}).encode())
    if not isinstance(result, PageEvent):
        return
    parts = urlsplit(sanitize_text(url, 2048))
    assert parts.scheme in ("http", "https")
    assert parts.port is None or 0 <= parts.port <= 65535
    assert parts.hostname
    assert result.site == expected_site(parts.hostname)
    assert result.path == (sanitize_text(parts.path, MAX_PATH_LENGTH) or "/")
    query = parse_qs(parts.query, keep_blank_values=True)
    for field in UTM_FIELDS:
        first = query.get(field, [""])[0]
        assert getattr(result, field) == sanitize_text(first, MAX_UTM_LENGTH)


# --- round trip of well-formed events ---------------------------------------------------

path_text = st.text(st.sampled_from("abcxyzABC019-._~!$&'()*+,;=:@%/é"), max_size=60).map(
    lambda p: "/" + p
)
utm_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=300)
timing = st.none() | st.integers(0, 600_000)
screen = st.none() | st.integers(0, 100_000)


@FAST
@given(
    name=st.sampled_from(sorted(NAMES.valid)),
    host=domain,
    www=st.booleans(),
    upper=st.booleans(),
    port=st.none() | st.integers(0, 65535),
    path=path_text,
    utm=st.fixed_dictionaries({}, optional=dict.fromkeys(UTM_FIELDS, utm_text)),
    route=st.none() | st.from_regex(r"/[a-z0-9/]{0,20}", fullmatch=True),
    referrer=st.none() | domain,
    numbers=st.tuples(timing, timing, screen, screen, st.none() | st.integers(0, 128)),
    ratio=st.none() | st.floats(0.01, 16),
    tz=st.text(max_size=80),
)
def test_well_formed_events_round_trip(
    name: str,
    host: str,
    www: bool,
    upper: bool,
    port: int | None,
    path: str,
    utm: dict[str, str],
    route: str | None,
    referrer: str | None,
    numbers: tuple[int | None, ...],
    ratio: float | None,
    tz: str,
) -> None:
    authority = ("www." if www else "") + (host.upper() if upper else host)
    authority += "" if port is None else f":{port}"
    query = "&".join(f"{key}={quote(value, safe='')}" for key, value in utm.items())
    url = f"https://{authority}{path}?{query}" + ("" if route is None else f"#{route}")
    lt, fb, sw, sh, pd = numbers
    payload = {"n": name, "l": url, "lt": lt, "fb": fb, "sw": sw, "sh": sh, "pr": ratio, "pd": pd}
    payload["tz"] = tz
    if referrer is not None:
        payload["r"] = f"http://www.{referrer}/from?x=1"

    event = parse_event(json.dumps(payload).encode(), NAMES)

    assert event.name == name
    assert event.site == host
    assert event.path == path
    for field in UTM_FIELDS:
        assert getattr(event, field) == sanitize_text(utm.get(field, ""), MAX_UTM_LENGTH)
    assert event.hash_path == ("" if route is None else "#" + route)
    assert event.referrer_host == ("" if referrer in (None, host) else referrer)
    assert (event.load_time_ms, event.ttfb_ms) == (lt, fb)
    assert (event.screen_width, event.screen_height, event.pixel_depth) == (sw, sh, pd)
    assert event.pixel_ratio == ratio
    assert event.timezone == sanitize_text(tz, MAX_TIMEZONE_LENGTH)
    assert_safe(event)
