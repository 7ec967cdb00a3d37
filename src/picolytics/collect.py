"""Tracker request body -> validated, sanitised `PageEvent`.

Pure functions, no I/O: the HTTP layer has already enforced the body size and the
content type; it calls `parse_event` and turns `InvalidPayload` into a 400 whose text
is `InvalidPayload.reason` (a fixed string that never echoes client data).

Rules chosen here (DESIGN §5, §7, §11):
- The body is strict UTF-8 JSON whose top level is an object. NaN/Infinity, duplicate
  keys (also after unescaping, so "n" and "\\u006e" clash) and nesting deeper than
  `MAX_JSON_DEPTH` are rejected. Unknown extra fields are ignored.
- Wrong *types* are a 400 (a string where a number belongs is a broken client), JSON
  `null` counts as absent, and an out-of-range number becomes None (a silly screen
  size must not lose the page view). Booleans are not numbers.
- Every text field is sanitised and cut to its maximum length; `l` longer than
  `MAX_URL_LENGTH` is refused outright, while an over-long `r` is treated as absent.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from typing import NamedTuple, NoReturn
from urllib.parse import unquote_plus

__all__ = [
    "MAX_HOST_LENGTH",
    "MAX_JSON_DEPTH",
    "MAX_NAME_LENGTH",
    "MAX_PATH_LENGTH",
    "MAX_TIMEZONE_LENGTH",
    "MAX_URL_LENGTH",
    "MAX_UTM_LENGTH",
    "InvalidPayload",
    "PageEvent",
    "parse_event",
    "sanitize_text",
]

MAX_URL_LENGTH = 2048
MAX_PATH_LENGTH = 1024
MAX_UTM_LENGTH = 256
MAX_TIMEZONE_LENGTH = 64
MAX_NAME_LENGTH = 64
MAX_HOST_LENGTH = 253  # DNS limit for a name without its trailing dot
# The top-level object is depth 1. Our own fields are flat; the margin leaves room for
# small optional extensions (e.g. custom properties) without letting `json` recurse deeply.
MAX_JSON_DEPTH = 8

_MAX_TIMING_MS = 600_000
_MAX_SCREEN_PX = 100_000
_MAX_PIXEL_DEPTH = 128
_MAX_PIXEL_RATIO = 16.0

_MAX_PORT = 65_535
_UTM_KEYS = frozenset({"utm_source", "utm_medium", "utm_campaign", "utm_content", "utm_term"})

# C0 controls, DEL, C1 controls, and every surrogate code point: in a Python str a
# surrogate can never be encoded as UTF-8 (json.loads already joins valid pairs into
# one code point, so whatever surrogate is left is a lone one).
_UNSAFE_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# An absolute http(s) URL split as RFC 3986 appendix B (and urlsplit) split it:
# authority, path, query, fragment. One precompiled match instead of urlsplit plus its
# hostname and port properties, which cost several times more per URL (~7 vs ~2 us here).
# The input is already sanitised (no controls, no surrounding space), which is what
# urlsplit's own WHATWG clean-up would have removed.
_HTTP_URL = re.compile(r"(?i:https?)://([^/?#]*)([^?#]*)(?:\?([^#]*))?(?:#(.*))?", re.DOTALL)
# Lowercase LDH labels (plus "_", which real hostnames do carry), 1-63 chars each.
_ASCII_HOST = re.compile(r"[a-z0-9_-]{1,63}(?:\.[a-z0-9_-]{1,63})*")
# JSON tokens for the nesting pre-check: a string (its brackets are text, and an
# unterminated one runs to the end, which keeps the scan linear), an opener, a closer.
_JSON_TOKENS = re.compile(r'("[^"\\]*(?:\\.?[^"\\]*)*"?)|([\[{])|[\]}]', re.DOTALL)
# A hash route ends where its own query or key=value data begins (tokens live there).
_HASH_ROUTE_END = re.compile(r"[?&=]")


class _HttpUrl(NamedTuple):
    host: str
    path: str
    query: str
    fragment: str


class InvalidPayload(ValueError):  # noqa: N818 - the name is the agreed interface
    """The body is not an acceptable event; `reason` is short, fixed, client-data free."""

    reason: str

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class PageEvent:
    """One validated tracker event. Text fields are sanitised; absent text is ""."""

    name: str  # one of the configured valid names
    site: str  # host of `l`: lowercase ASCII (IDNA), no "www.", no trailing dot, no port
    path: str  # path of `l` without query or fragment, "/" when empty, <= 1024 chars
    referrer_host: str  # host of `r` normalised like `site`; "" if absent/invalid/same site
    utm_source: str
    utm_medium: str
    utm_campaign: str
    utm_content: str
    utm_term: str
    load_time_ms: int | None  # `lt`, 0..600_000
    ttfb_ms: int | None  # `fb`, 0..600_000
    screen_width: int | None  # `sw`, 0..100_000
    screen_height: int | None  # `sh`, 0..100_000
    pixel_ratio: float | None  # `pr`, 0 < pr <= 16
    pixel_depth: int | None  # `pd`, 0..128
    timezone: str  # `tz`, <= 64 chars
    # "#/route" or "#!/route" when `l` uses hash routing (SPA), for every event name and
    # not only "hashchange": the load of "/#/about" is a view of that route too. Any
    # other fragment is dropped: in-page anchors are not pages, and fragments such as
    # "#access_token=..." carry secrets. The route stops before "?", "&" or "=".
    hash_path: str


def sanitize_text(value: str, max_length: int) -> str:
    """Drop control characters and surrogates, trim whitespace, cut to max_length.

    Removed, not replaced: NUL and other C0 controls, DEL, C1 controls, and surrogate
    code points (none can be stored by PostgreSQL or encoded as UTF-8). Cutting counts
    code points; with surrogates gone a cut can never split a character's encoding
    (it may still split a multi-code-point grapheme such as a flag emoji).
    """
    if not value.isprintable():  # fast path: printable text has nothing to remove
        value = _UNSAFE_CHARS.sub("", value)
    value = value.strip()
    if len(value) > max_length:
        value = value[:max_length].rstrip()
    return value


def parse_event(body: bytes, valid_names: frozenset[str]) -> PageEvent:
    """Validate a tracker body; raise InvalidPayload with a fixed reason if it is unusable."""
    payload = _load_object(body)

    name = sanitize_text(_required_str(payload, "n"), MAX_NAME_LENGTH)
    if name not in valid_names:
        raise InvalidPayload("unknown event name")

    url = _required_str(payload, "l")
    if len(url) > MAX_URL_LENGTH:
        raise InvalidPayload("l is too long")
    page = _split_http_url(sanitize_text(url, MAX_URL_LENGTH))
    if page is None:
        raise InvalidPayload("l must be an absolute http(s) URL")

    utm = _utm_values(page.query)
    return PageEvent(
        name=name,
        site=page.host,
        path=sanitize_text(page.path, MAX_PATH_LENGTH) or "/",
        referrer_host=_referrer_host(_optional_str(payload, "r"), page.host),
        utm_source=utm.get("utm_source", ""),
        utm_medium=utm.get("utm_medium", ""),
        utm_campaign=utm.get("utm_campaign", ""),
        utm_content=utm.get("utm_content", ""),
        utm_term=utm.get("utm_term", ""),
        load_time_ms=_int_in_range(payload, "lt", _MAX_TIMING_MS),
        ttfb_ms=_int_in_range(payload, "fb", _MAX_TIMING_MS),
        screen_width=_int_in_range(payload, "sw", _MAX_SCREEN_PX),
        screen_height=_int_in_range(payload, "sh", _MAX_SCREEN_PX),
        pixel_ratio=_pixel_ratio(payload),
        pixel_depth=_int_in_range(payload, "pd", _MAX_PIXEL_DEPTH),
        timezone=sanitize_text(_optional_str(payload, "tz"), MAX_TIMEZONE_LENGTH),
        hash_path=_hash_route(page.fragment),
    )


# --- JSON ------------------------------------------------------------------------------


def _reject_constant(_constant: str) -> NoReturn:
    raise InvalidPayload("NaN and Infinity are not allowed")


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    # Rejecting beats "last one wins": two values for one key means a confused client.
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise InvalidPayload("duplicate key")
    return obj


# One decoder built at import: json.loads(**kwargs) would build a new one per call.
_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys, parse_constant=_reject_constant)


def _load_object(body: bytes) -> dict[str, object]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        # `from None` here and below: the chained error would quote client bytes.
        raise InvalidPayload("body is not valid UTF-8") from None
    if _nested_too_deep(text):
        raise InvalidPayload("JSON nested too deeply")
    try:
        payload: object = _DECODER.decode(text)
    except InvalidPayload:
        raise
    except RecursionError:  # unreachable after the pre-check; kept as a safety net
        raise InvalidPayload("JSON nested too deeply") from None
    except ValueError:  # JSONDecodeError, and int() refusing more than 4300 digits
        raise InvalidPayload("malformed JSON") from None
    if type(payload) is not dict:
        raise InvalidPayload("body must be a JSON object")
    return payload


def _nested_too_deep(text: str) -> bool:
    # json recurses once per level and raises RecursionError (not ValueError) on deep
    # input, so measure the depth first. Few brackets in all cannot nest deeply.
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return False
    depth = 0
    for token in _JSON_TOKENS.finditer(text):
        kind = token.lastindex
        if kind == 2:
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return True
        elif kind is None:
            depth -= 1
    return False


# --- fields ----------------------------------------------------------------------------


def _required_str(payload: dict[str, object], key: str) -> str:
    value = payload.get(key)
    if value is None:
        raise InvalidPayload(f"{key} is required")
    if type(value) is not str:
        raise InvalidPayload(f"{key} must be a string")
    return value


def _optional_str(payload: dict[str, object], key: str) -> str:
    value = payload.get(key)
    if value is None:
        return ""
    if type(value) is not str:
        raise InvalidPayload(f"{key} must be a string")
    return value


def _number(payload: dict[str, object], key: str) -> int | float | None:
    value = payload.get(key)
    if value is None:
        return None
    # `type(...) is` rather than isinstance: bool is an int subclass and is not a number.
    if type(value) is not int and type(value) is not float:
        raise InvalidPayload(f"{key} must be a number")
    return value


def _int_in_range(payload: dict[str, object], key: str, maximum: int) -> int | None:
    value = _number(payload, key)
    # Compare before round(): round(inf) would raise, and "1e999" parses as inf.
    if value is None or not 0 <= value <= maximum:
        return None
    return round(value)


def _pixel_ratio(payload: dict[str, object]) -> float | None:
    value = _number(payload, "pr")
    if value is None or not 0 < value <= _MAX_PIXEL_RATIO:
        return None
    return float(value)


# --- URLs ------------------------------------------------------------------------------


def _split_http_url(url: str) -> _HttpUrl | None:
    """Host (normalised), path, query and fragment of an absolute http(s) URL, else None."""
    match = _HTTP_URL.match(url)
    if match is None:
        return None
    authority, path, query, fragment = match.groups("")
    host = _authority_host(authority)
    if host is None:
        return None
    return _HttpUrl(host, path, query, fragment)


def _authority_host(authority: str) -> str | None:
    # As urlsplit's hostname and port, but stricter: "[...]" must hold an IPv6 address
    # and must come first, with nothing but ":port" after it.
    hostport = authority.rpartition("@")[2]  # userinfo is dropped, never stored
    if hostport.startswith("["):
        hostname, bracket, port = hostport[1:].partition("]")
        if not bracket or (port and port[0] != ":") or not _valid_port(port[1:]):
            return None
        return _ipv6_host(hostname)
    hostname, _, port = hostport.partition(":")
    if not hostname or not _valid_port(port):
        return None
    return _domain_host(hostname.lower())


def _valid_port(port: str) -> bool:
    # The port is dropped, but a malformed one means a malformed URL. "" is "no port".
    if not port:
        return True
    return len(port) <= 5 and port.isascii() and port.isdigit() and int(port) <= _MAX_PORT


def _ipv6_host(literal: str) -> str | None:
    # Canonical compressed form without brackets or zone id, so "[0:0::1]" and "[::1]"
    # are one site. IPv4 in brackets and IPvFuture are refused, as urlsplit does.
    try:
        return str(ipaddress.IPv6Address(literal.partition("%")[0]))
    except ValueError:
        return None


def _domain_host(hostname: str) -> str | None:
    """A lowercased DNS name or IPv4 address as stored: ASCII, no trailing dot, no "www."."""
    if not hostname.isascii():
        # Browsers already send punycode; this is for other clients. Python's codec is
        # IDNA 2003 (e.g. it maps "ß" to "ss" where IDNA 2008 would keep it).
        try:
            hostname = hostname.encode("idna").decode("ascii").lower()
        except UnicodeError:
            return None
    if hostname.endswith("."):
        hostname = hostname[:-1]
    if len(hostname) > MAX_HOST_LENGTH or not _ASCII_HOST.fullmatch(hostname):
        return None
    if hostname.startswith("www.") and len(hostname) > 4:
        hostname = hostname[4:]
    return hostname


def _referrer_host(referrer: str, site: str) -> str:
    # Anything unusable is simply "no referrer": it must not cost the page view.
    if not referrer or len(referrer) > MAX_URL_LENGTH:
        return ""
    url = _split_http_url(sanitize_text(referrer, MAX_URL_LENGTH))
    if url is None or url.host == site:  # same-site navigation is not a referral
        return ""
    return url.host


def _utm_values(query: str) -> dict[str, str]:
    """utm_* values of a query string, percent-decoded; the first occurrence wins."""
    found: dict[str, str] = {}
    if "utm" not in query:  # fast path for the common query without campaign tags
        return found
    for pair in query.split("&"):
        raw_key, _, raw_value = pair.partition("=")
        key = raw_key if raw_key in _UTM_KEYS else unquote_plus(raw_key)
        if key in _UTM_KEYS and key not in found:
            # unquote's default errors="replace": bad UTF-8 becomes U+FFFD, never a surrogate.
            found[key] = sanitize_text(unquote_plus(raw_value), MAX_UTM_LENGTH)
    return found


def _hash_route(fragment: str) -> str:
    if not fragment.startswith(("/", "!/")):
        return ""
    end = _HASH_ROUTE_END.search(fragment)
    route = fragment if end is None else fragment[: end.start()]
    return sanitize_text("#" + route, MAX_PATH_LENGTH)
