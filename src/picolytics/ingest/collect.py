"""Tracker request body -> validated, sanitised `PageEvent`.

Pure functions, no I/O: the HTTP layer has already enforced the body size and the
content type; it calls `parse_event` (POST /p) or `plausible.parse_plausible_event`
(POST /api/event) and turns `InvalidPayload` into a 400 whose text is
`InvalidPayload.reason` (a fixed string that never echoes client data).

Rules chosen here: the JSON rules of payload.py; unknown extra fields
are ignored; every text field is sanitised and cut to its maximum length; a page URL
longer than `MAX_URL_LENGTH` is refused outright, while an over-long referrer is
treated as absent.
"""

from __future__ import annotations

from picolytics.events import EventNames, PageEvent
from picolytics.ingest.payload import (
    InvalidPayload,
    int_in_range,
    load_object,
    number,
    optional_str,
    required_str,
)
from picolytics.ingest.props import parse_props
from picolytics.ingest.urls import (
    MAX_PATH_LENGTH,
    MAX_URL_LENGTH,
    HttpUrl,
    hash_route,
    referrer_host,
    split_http_url,
    utm_values,
)
from picolytics.text import sanitize_text

MAX_TIMEZONE_LENGTH = 64
MAX_NAME_LENGTH = 120  # as Plausible's, so its custom event names fit
MAX_ENGAGED_MS = 86_400_000  # a day: a tab left open longer is not engagement

_MAX_TIMING_MS = 600_000
_MAX_SCREEN_PX = 100_000
_MAX_PIXEL_DEPTH = 128
_MAX_PIXEL_RATIO = 16.0
_MAX_SCROLL_PERCENT = 100


def check_name(names: EventNames, raw: str) -> str:
    """The sanitised event name if `names` accepts it, else InvalidPayload."""
    # Refused rather than cut: a cut name could match the pattern as another name.
    name = sanitize_text(raw, len(raw))
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidPayload("event name is too long")
    if not names.accepts(name):
        raise InvalidPayload("unknown event name")
    return name


def parse_event(body: bytes, names: EventNames) -> PageEvent:
    """Validate a /p body; raise InvalidPayload with a fixed reason if it is unusable."""
    payload = load_object(body)
    name = check_name(names, required_str(payload, "n"))
    page = page_url(payload, "l")
    return build_event(payload, name, page, site=page.host)


def page_url(payload: dict[str, object], key: str) -> HttpUrl:
    """The page URL under `key`: required, absolute http(s), not over-long."""
    url = required_str(payload, key)
    if len(url) > MAX_URL_LENGTH:
        raise InvalidPayload(f"{key} is too long")
    page = split_http_url(sanitize_text(url, MAX_URL_LENGTH))
    if page is None:
        raise InvalidPayload(f"{key} must be an absolute http(s) URL")
    return page


def build_event(
    payload: dict[str, object],
    name: str,
    page: HttpUrl,
    *,
    site: str,
    hash_routing: bool = False,
    interactive: bool = True,
) -> PageEvent:
    """The event of a checked name and page URL, its other fields read from `payload`:
    `r` referrer, `lt`/`fb` timings, `sw`/`sh`/`pr`/`pd` screen, `tz` timezone,
    `p` custom properties, `e` engaged time and `sd` scroll depth (all optional).
    `hostname` is the page URL's host, normalised as `site` is."""
    utm = utm_values(page.query)
    referrer = referrer_host(optional_str(payload, "r"), page.host)
    return PageEvent(
        name=name,
        site=site,
        path=sanitize_text(page.path, MAX_PATH_LENGTH) or "/",
        referrer_host="" if referrer == site else referrer,
        utm_source=utm.get("utm_source", ""),
        utm_medium=utm.get("utm_medium", ""),
        utm_campaign=utm.get("utm_campaign", ""),
        utm_content=utm.get("utm_content", ""),
        utm_term=utm.get("utm_term", ""),
        load_time_ms=int_in_range(payload, "lt", _MAX_TIMING_MS),
        ttfb_ms=int_in_range(payload, "fb", _MAX_TIMING_MS),
        screen_width=int_in_range(payload, "sw", _MAX_SCREEN_PX),
        screen_height=int_in_range(payload, "sh", _MAX_SCREEN_PX),
        pixel_ratio=_pixel_ratio(payload),
        pixel_depth=int_in_range(payload, "pd", _MAX_PIXEL_DEPTH),
        timezone=sanitize_text(optional_str(payload, "tz"), MAX_TIMEZONE_LENGTH),
        hash_path=hash_route(page.fragment, hash_routing),
        props=parse_props(payload.get("p"), name),
        engaged_ms=int_in_range(payload, "e", MAX_ENGAGED_MS),
        scroll_depth=int_in_range(payload, "sd", _MAX_SCROLL_PERCENT),
        interactive=interactive,
        # The page's own host, whatever `site` is: Plausible's event:hostname.
        hostname=page.host,
    )


def _pixel_ratio(payload: dict[str, object]) -> float | None:
    value = number(payload, "pr")
    if value is None or not 0 < value <= _MAX_PIXEL_RATIO:
        return None
    return float(value)
