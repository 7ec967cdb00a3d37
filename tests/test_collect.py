"""Example-based tests of the tracker body parser (`picolytics.ingest.collect`)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from picolytics.events import EventNames, PageEvent
from picolytics.ingest.collect import MAX_TIMEZONE_LENGTH, parse_event
from picolytics.ingest.payload import MAX_JSON_DEPTH, InvalidPayload
from picolytics.ingest.urls import MAX_PATH_LENGTH, MAX_URL_LENGTH, MAX_UTM_LENGTH
from picolytics.text import sanitize_text

NAMES = EventNames(frozenset({"load", "visible", "hidden", "hashchange", "ping"}))
PAGE = "https://example.com/"


def body(**fields: Any) -> bytes:
    """A JSON body with n="load" and l=PAGE unless given; a value of ... drops the key."""
    payload: dict[str, Any] = {"n": "load", "l": PAGE}
    payload.update(fields)
    return json.dumps({k: v for k, v in payload.items() if v is not ...}).encode()


def parse(**fields: Any) -> PageEvent:
    return parse_event(body(**fields), NAMES)


def reason_of(raw: bytes) -> str:
    with pytest.raises(InvalidPayload) as info:
        parse_event(raw, NAMES)
    return info.value.reason


# --- a typical event --------------------------------------------------------------------


def test_typical_body_fills_every_field() -> None:
    event = parse(
        n="load",
        l="https://www.example.com/blog/post?utm_source=news&utm_medium=email&x=1#top",
        r="https://news.ycombinator.com/item?id=1",
        lt=812,
        fb=95,
        sw=1920,
        sh=1080,
        pr=1.5,
        pd=24,
        tz="Europe/Berlin",
    )
    assert event == PageEvent(
        name="load",
        site="example.com",
        path="/blog/post",
        referrer_host="news.ycombinator.com",
        utm_source="news",
        utm_medium="email",
        utm_campaign="",
        utm_content="",
        utm_term="",
        load_time_ms=812,
        ttfb_ms=95,
        screen_width=1920,
        screen_height=1080,
        pixel_ratio=1.5,
        pixel_depth=24,
        timezone="Europe/Berlin",
        hash_path="",
        hostname="example.com",
    )


def test_minimal_body_gives_empty_optionals() -> None:
    event = parse_event(b'{"n":"ping","l":"http://example.com"}', NAMES)
    assert (event.name, event.site, event.path) == ("ping", "example.com", "/")
    assert event.referrer_host == event.timezone == event.hash_path == ""
    assert event.utm_source == event.utm_term == ""
    assert event.load_time_ms is event.ttfb_ms is event.pixel_ratio is event.pixel_depth is None
    assert event.screen_width is event.screen_height is None


def test_event_is_frozen() -> None:
    event = parse()
    with pytest.raises(AttributeError):
        event.site = "other.example"  # type: ignore[misc]


def test_unknown_extra_fields_are_ignored() -> None:
    event = parse(x="y", future={"props": [1, 2, {"a": None}]}, v=2)
    assert event.site == "example.com"


def test_null_optional_fields_count_as_absent() -> None:
    event = parse(r=None, tz=None, lt=None, fb=None, sw=None, sh=None, pr=None, pd=None)
    assert event.referrer_host == event.timezone == ""
    assert event.load_time_ms is event.pixel_ratio is None


# --- InvalidPayload ---------------------------------------------------------------------


def test_invalid_payload_is_a_value_error_with_its_reason() -> None:
    error = InvalidPayload("malformed JSON")
    assert isinstance(error, ValueError)
    assert error.reason == str(error) == "malformed JSON"


def test_reasons_never_echo_client_data() -> None:
    secret = "SeCrEt"
    for raw in (
        body(n=secret),
        body(l=f"javascript:{secret}"),
        body(l=f"https://{secret} .example/"),
        body(lt=secret),
        f'{{"n":"load","{secret}":1,"{secret}":2}}'.encode(),
        f'{{"n":"{secret}'.encode(),
        b"\xff" + secret.encode(),
    ):
        assert secret.lower() not in reason_of(raw).lower()


# --- event name -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["load", "visible", "hidden", "hashchange", "ping"])
def test_every_valid_name_is_accepted(name: str) -> None:
    assert parse(n=name).name == name


@pytest.mark.parametrize("name", ["", "Load", "loadx", "click", "load load"])
def test_unknown_event_name(name: str) -> None:
    assert reason_of(body(n=name)) == "unknown event name"


def test_name_is_matched_after_sanitising() -> None:
    assert parse(n=" load\u0000\n").name == "load"


def test_name_is_required() -> None:
    assert reason_of(body(n=...)) == "n is required"
    assert reason_of(body(n=None)) == "n is required"


@pytest.mark.parametrize("value", [1, 1.5, True, ["load"], {"n": "load"}])
def test_name_must_be_a_string(value: object) -> None:
    assert reason_of(body(n=value)) == "n must be a string"


def test_valid_names_come_from_the_caller() -> None:
    assert parse_event(body(n="click"), EventNames(frozenset({"click"}))).name == "click"
    with pytest.raises(InvalidPayload):
        parse_event(body(n="load"), EventNames(frozenset({"click"})))


# --- page URL: required, http(s), sane --------------------------------------------------


def test_url_is_required() -> None:
    assert reason_of(body(l=...)) == "l is required"
    assert reason_of(body(l=None)) == "l is required"


@pytest.mark.parametrize("value", [1, False, ["https://example.com/"], {"href": PAGE}])
def test_url_must_be_a_string(value: object) -> None:
    assert reason_of(body(l=value)) == "l must be a string"


def test_url_length_limit() -> None:
    base = "https://example.com/"
    exact = base + "a" * (MAX_URL_LENGTH - len(base))
    assert parse(l=exact).path == "/" + "a" * (MAX_PATH_LENGTH - 1)
    assert reason_of(body(l=exact + "a")) == "l is too long"


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "JavaScript://example.com/%0aalert(1)",
        "data:text/html,<b>hi</b>",
        "ftp://example.com/file",
        "file:///etc/passwd",
        "mailto:someone@example.com",
        "ws://example.com/",
        "/relative/path",
        "//example.com/scheme-relative",
        "example.com",
        "",
        "https://",
        "https:///path",
        "http:example.com",
        "http://:80/",
        "http://user@/",
        "http://exa mple.com/",
        "http://exa%6dple.com/",
        "http://example.com:99999/",
        "http://example.com:8o/",
        "http://example.com:٨٠/",
        "http://[::1/",
        "http://[::1]x/",
        "http://[1.2.3.4]/",
        "http://[v1.fe80]/",
        "http://[nope]/",
        "http://a[::1]/",
        "http://a..b/",
        "http://.example.com/",
        "http://example.com../",
        "http://" + "a" * 64 + ".com/",
        "http://" + "a." * 127 + "com/",
        "http://" + "ü" * 70 + ".example/",
        "http://exam\u2100ple.com/",
    ],
)
def test_url_must_be_absolute_http(url: str) -> None:
    assert reason_of(body(l=url)) == "l must be an absolute http(s) URL"


# --- site -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "site"),
    [
        ("https://example.com/", "example.com"),
        ("HTTPS://EXAMPLE.COM/", "example.com"),
        ("http://www.example.com/", "example.com"),
        ("http://WWW.Example.Com./", "example.com"),
        ("http://www.www.example.com/", "www.example.com"),
        ("http://www/", "www"),
        ("http://wwwexample.com/", "wwwexample.com"),
        ("https://example.com:8443/", "example.com"),
        ("https://example.com:/", "example.com"),
        ("https://user:pa%40ss@www.example.com:81/", "example.com"),
        ("https://Bücher.example/", "xn--bcher-kva.example"),
        ("https://www.bücher.example./", "xn--bcher-kva.example"),
        ("https://xn--bcher-kva.example/", "xn--bcher-kva.example"),
        ("https://例え.テスト/", "xn--r8jz45g.xn--zckzah"),
        (
            "https://\uff25\uff38\uff21\uff2d\uff30\uff2c\uff25\u3002com/",
            "example.com",
        ),  # full width
        ("http://sub_domain.example.com/", "sub_domain.example.com"),
        ("http://localhost:8080/", "localhost"),
        ("http://192.168.1.10:8080/", "192.168.1.10"),
        ("http://[::1]:8080/", "::1"),
        ("http://[0:0:0:0::1]/", "::1"),
        ("http://[2001:DB8::1]/", "2001:db8::1"),
        ("http://[fe80::1%25eth0]/", "fe80::1"),
        ("http://" + "a" * 63 + ".com/", "a" * 63 + ".com"),
    ],
)
def test_site_is_normalised(url: str, site: str) -> None:
    assert parse(l=url).site == site


def test_site_with_control_characters_is_cleaned_before_parsing() -> None:
    assert parse(l="\u0000 https://exa\tmple.com/pa\nth ").site == "example.com"
    assert parse(l="https://exa\tmple.com/pa\nth").path == "/path"


# --- path -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("https://example.com", "/"),
        ("https://example.com/", "/"),
        ("https://example.com?q=1", "/"),
        ("https://example.com#x", "/"),
        ("https://example.com/a/b/?q=1#frag", "/a/b/"),
        ("https://example.com/caf%C3%A9", "/caf%C3%A9"),
        ("https://example.com/café", "/café"),
        ("https://example.com/a%00b", "/a%00b"),
        ("https://example.com/a\u0085b\u009f", "/ab"),
        ("https://example.com/a;p=1", "/a;p=1"),
    ],
)
def test_path(url: str, path: str) -> None:
    assert parse(l=url).path == path


def test_long_path_is_cut() -> None:
    event = parse(l="https://example.com/" + "x" * 1500)
    assert event.path == "/" + "x" * (MAX_PATH_LENGTH - 1)


# --- hash routes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "hash_path"),
    [
        ("https://example.com/", ""),
        ("https://example.com/#", ""),
        ("https://example.com/#top", ""),
        ("https://example.com/#access_token=abc&state=x", ""),
        ("https://example.com/#/", "#/"),
        ("https://example.com/app#/users/42", "#/users/42"),
        ("https://example.com/#!/users", "#!/users"),
        ("https://example.com/#/callback?code=abc", "#/callback"),
        ("https://example.com/#/access_token=abc", "#/access_token"),
        ("https://example.com/#/a&b", "#/a"),
    ],
)
def test_hash_path_keeps_only_hash_routes(url: str, hash_path: str) -> None:
    event = parse(n="hashchange", l=url)
    assert event.hash_path == hash_path
    assert "#" not in event.path


def test_hash_route_is_kept_for_every_event_name() -> None:
    assert parse(n="load", l="https://example.com/#/about").hash_path == "#/about"


# --- referrer ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("referrer", "host"),
    [
        ("https://news.ycombinator.com/item?id=1", "news.ycombinator.com"),
        ("https://WWW.Google.COM:443/search?q=private", "google.com"),
        ("http://www.bücher.example/", "xn--bcher-kva.example"),
        ("https://sub.example.com/", "sub.example.com"),
        ("http://[::1]:3000/", "::1"),
        ("", ""),
        ("   ", ""),
        ("not a url", ""),
        ("android-app://com.google.android.gm/", ""),
        ("javascript:alert(1)", ""),
        ("ftp://files.example.org/", ""),
        ("https:///nohost", ""),
        ("http://bad host/", ""),
        ("https://other.example/" + "a" * MAX_URL_LENGTH, ""),
    ],
)
def test_referrer_host(referrer: str, host: str) -> None:
    assert parse(r=referrer).referrer_host == host


@pytest.mark.parametrize(
    "referrer",
    [
        "https://example.com/previous",
        "http://www.example.com/",
        "https://EXAMPLE.com:8443/?utm_source=x",
        "https://example.com./",
    ],
)
def test_same_site_referrer_is_empty(referrer: str) -> None:
    assert parse(l="https://www.example.com/next", r=referrer).referrer_host == ""


@pytest.mark.parametrize("value", [1, True, ["https://a.example/"], {"u": 1}])
def test_referrer_must_be_a_string(value: object) -> None:
    assert reason_of(body(r=value)) == "r must be a string"


# --- UTM --------------------------------------------------------------------------------


def test_all_utm_fields() -> None:
    event = parse(
        l="https://example.com/?utm_source=a&utm_medium=b&utm_campaign=c&utm_content=d&utm_term=e"
    )
    utm = (event.utm_source, event.utm_medium, event.utm_campaign, event.utm_content)
    assert (*utm, event.utm_term) == ("a", "b", "c", "d", "e")


@pytest.mark.parametrize(
    ("query", "source"),
    [
        ("utm_source=first&utm_source=second", "first"),
        ("utm_source=&utm_source=second", ""),
        ("utm_source=spring%20sale", "spring sale"),
        ("utm_source=spring+sale", "spring sale"),
        ("utm_source=caf%C3%A9", "café"),
        ("utm_source=%F0%9F%98%80", "\U0001f600"),
        ("utm_source=bad%FFutf8", "bad\ufffdutf8"),
        ("utm_source=a%00b%0Ac%1Fd%7F", "abcd"),
        ("utm_source=%ED%A0%80x", "\ufffd\ufffd\ufffdx"),
        ("utm%5Fsource=encoded", "encoded"),
        ("utm_source=a=b", "a=b"),
        ("utm_source", ""),
        ("UTM_SOURCE=upper", ""),
        ("xutm_source=no", ""),
        ("q=1&utm_source=x&ref=y", "x"),
        ("utm_source=in#utm_source=fragment", "in"),
    ],
)
def test_utm_source(query: str, source: str) -> None:
    assert parse(l=f"https://example.com/?{query}").utm_source == source


def test_utm_values_are_cut() -> None:
    event = parse(l="https://example.com/?utm_campaign=" + "c" * 1000)
    assert event.utm_campaign == "c" * MAX_UTM_LENGTH


def test_other_query_parameters_are_dropped() -> None:
    event = parse(l="https://example.com/p?email=a@b.example&utm_term=t&token=secret")
    stored = [getattr(event, field) for field in event.__slots__]
    assert not any(isinstance(value, str) and "secret" in value for value in stored)
    assert not any(isinstance(value, str) and "a@b" in value for value in stored)
    assert event.utm_term == "t"


# --- numbers ----------------------------------------------------------------------------

INT_FIELDS = [
    ("lt", "load_time_ms", 600_000),
    ("fb", "ttfb_ms", 600_000),
    ("sw", "screen_width", 100_000),
    ("sh", "screen_height", 100_000),
    ("pd", "pixel_depth", 128),
]


@pytest.mark.parametrize(("key", "field", "maximum"), INT_FIELDS)
def test_integer_fields_keep_their_range(key: str, field: str, maximum: int) -> None:
    assert getattr(parse(**{key: 0}), field) == 0
    assert getattr(parse(**{key: maximum}), field) == maximum
    assert getattr(parse(**{key: 24.4}), field) == 24
    assert getattr(parse(**{key: 24.6}), field) == 25
    assert getattr(parse(**{key: -1}), field) is None
    assert getattr(parse(**{key: -0.1}), field) is None
    assert getattr(parse(**{key: maximum + 1}), field) is None
    assert getattr(parse(**{key: 10**30}), field) is None


@pytest.mark.parametrize(("key", "field", "maximum"), INT_FIELDS)
def test_integer_fields_are_ints(key: str, field: str, maximum: int) -> None:
    assert type(getattr(parse(**{key: 7.0}), field)) is int


@pytest.mark.parametrize("key", ["lt", "fb", "sw", "sh", "pd", "pr"])
@pytest.mark.parametrize("value", [True, False, "12", "", [1], {"v": 1}])
def test_wrong_number_types_are_rejected(key: str, value: object) -> None:
    assert reason_of(body(**{key: value})) == f"{key} must be a number"


@pytest.mark.parametrize("key", ["lt", "fb", "sw", "sh", "pd", "pr"])
def test_overflowing_numbers_become_none(key: str) -> None:
    raw = b'{"n":"load","l":"https://example.com/","%s":1e999}' % key.encode()
    event = parse_event(raw, NAMES)
    assert all(getattr(event, f) is None for f in ("load_time_ms", "pixel_ratio", "pixel_depth"))
    assert event.screen_width is event.screen_height is event.ttfb_ms is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [(1, 1.0), (2.625, 2.625), (16, 16.0), (0.01, 0.01), (0, None), (-1, None), (16.01, None)],
)
def test_pixel_ratio(value: float, expected: float | None) -> None:
    ratio = parse(pr=value).pixel_ratio
    assert ratio == expected
    assert ratio is None or type(ratio) is float


# --- timezone ---------------------------------------------------------------------------


def test_timezone() -> None:
    assert parse(tz="America/Argentina/Buenos_Aires").timezone == "America/Argentina/Buenos_Aires"
    assert parse(tz=" Europe/Paris\u0000\n").timezone == "Europe/Paris"
    assert parse(tz="x" * 100).timezone == "x" * MAX_TIMEZONE_LENGTH


@pytest.mark.parametrize("value", [1, True, ["UTC"], {"tz": "UTC"}])
def test_timezone_must_be_a_string(value: object) -> None:
    assert reason_of(body(tz=value)) == "tz must be a string"


# --- JSON envelope ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [b"\xff", b'{"n":"load\xc3"}', b'{"n":"\xed\xa0\x80"}', b"\xfe\xff\x00{", b"\xc0\xaf"],
)
def test_invalid_utf8(raw: bytes) -> None:
    assert reason_of(raw) == "body is not valid UTF-8"


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b" ",
        b"{",
        b'{"n":"load",}',
        b"{'n':'load'}",
        b'{"n":"load"} {}',
        b'{"n":"lo\nad"}',
        b"\xef\xbb\xbf{}",
        b'{"n":"load","lt":1' + b"1" * 5000 + b"}",
        b'{"n":"load","lt":01}',
        b'{"n":"\\x41"}',
    ],
)
def test_malformed_json(raw: bytes) -> None:
    assert reason_of(raw) == "malformed JSON"


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_nan_and_infinity_are_rejected(constant: bytes) -> None:
    assert reason_of(b'{"n":"load","l":"%s","lt":%s}' % (PAGE.encode(), constant)) == (
        "NaN and Infinity are not allowed"
    )
    assert reason_of(b'{"x":[%s]}' % constant) == "NaN and Infinity are not allowed"


@pytest.mark.parametrize(
    "raw",
    [b"[]", b"[{}]", b'"load"', b"1", b"-0.5", b"null", b"true", b'  "x"  '],
)
def test_top_level_must_be_an_object(raw: bytes) -> None:
    assert reason_of(raw) == "body must be a JSON object"


@pytest.mark.parametrize("opener", [b"[", b"{", b'{"a":'])
def test_deep_nesting_is_rejected_without_recursion_error(opener: bytes) -> None:
    assert reason_of(opener * 100_000) == "JSON nested too deeply"


def test_nesting_limit() -> None:
    def nested(depth: int) -> bytes:
        inner = "[" * (depth - 1) + "]" * (depth - 1)  # the top-level object is depth 1
        return b'{"n":"load","l":"%s","x":%s}' % (PAGE.encode(), inner.encode())

    assert parse_event(nested(MAX_JSON_DEPTH), NAMES).site == "example.com"
    assert reason_of(nested(MAX_JSON_DEPTH + 1)) == "JSON nested too deeply"


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    event = parse(
        l="https://example.com/[[[[[[[[[[{{{{{{{{{{",
        tz='"\\[[[[[[[[[[[[',
        x='\\"[{[{[{[{[{[{[{[{[{[{',
    )
    assert event.path == "/[[[[[[[[[[{{{{{{{{{{"


def test_nesting_is_measured_even_in_broken_json() -> None:
    assert reason_of(b'{"a":"\\"' + b"[" * 5000) == "malformed JSON"
    assert reason_of(b'{"a":' + b"[" * 5000 + b'"') == "JSON nested too deeply"


@pytest.mark.parametrize(
    "raw",
    [
        b'{"n":"load","n":"load","l":"https://example.com/"}',
        b'{"n":"load","\\u006e":"ping","l":"https://example.com/"}',
        b'{"n":"load","l":"https://example.com/","x":1,"x":2}',
        b'{"n":"load","l":"https://example.com/","x":{"a":1,"a":1}}',
    ],
)
def test_duplicate_keys_are_rejected(raw: bytes) -> None:
    assert reason_of(raw) == "duplicate key"


# --- sanitize_text ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("plain", "plain"),
        ("", ""),
        ("a\x00b", "ab"),
        ("\x00\x01\x02\x1f", ""),
        ("a\tb\nc\rd\x0be\x0cf", "abcdef"),
        ("a\x7fb", "ab"),
        ("a\x80b\x85c\x9fd", "abcd"),
        ("a\u00a0b", "a\u00a0b"),
        ("a\ud800b", "ab"),
        ("a\udfffb", "ab"),
        ("\ud83d\ude00", ""),
        ("x\ud83d", "x"),
        ("\U0001f600", "\U0001f600"),
        ("  padded \t\n", "padded"),
        ("\u3000wide space\u2003", "wide space"),
        ("é̀ combining", "é̀ combining"),
        ("zero\u200bwidth", "zero\u200bwidth"),
    ],
)
def test_sanitize_text(value: str, expected: str) -> None:
    assert sanitize_text(value, 100) == expected


def test_sanitize_text_cuts_to_code_points() -> None:
    assert sanitize_text("abcdef", 3) == "abc"
    assert sanitize_text("\U0001f600" * 5, 3) == "\U0001f600" * 3
    assert sanitize_text("ab cd", 3) == "ab"  # no trailing space left behind by the cut
    assert sanitize_text("abc", 0) == ""
    assert sanitize_text("a\x00" * 10, 5) == "aaaaa"  # removal happens before the cut


def test_sanitize_text_cut_never_leaves_a_surrogate() -> None:
    cut = sanitize_text("a\ud83d\ude00b" * 10, 7)
    cut.encode("utf-8")  # strict: raises on any surrogate
    assert len(cut) <= 7


def test_json_surrogate_escapes() -> None:
    raw = b'{"n":"load","l":"%s","tz":"%s"}'
    emoji = parse_event(raw % (PAGE.encode(), b"\\ud83d\\ude00"), NAMES)
    assert emoji.timezone == "\U0001f600"
    lone = parse_event(raw % (PAGE.encode(), b"a\\ud800b\\udc00c\\ude00\\ud83d"), NAMES)
    assert lone.timezone == "abc"
    nul = parse_event(raw % (PAGE.encode(), b"a\\u0000b\\u001bc\\u0085d"), NAMES)
    assert nul.timezone == "abcd"


def test_surrogates_in_url_do_not_survive() -> None:
    raw = b'{"n":"load","l":"https://exa\\ud800mple.com/p\\udfffath?utm_term=a\\udc00b"}'
    event = parse_event(raw, NAMES)
    assert (event.site, event.path, event.utm_term) == ("example.com", "/path", "ab")
