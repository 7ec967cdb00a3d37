"""POST /api/event: Plausible's event payload mapped onto the same `PageEvent` as /p.

Teams leaving Plausible point its tracker here (`data-api`, or `endpoint` in the npm
package) and keep their tags. Fields, each under its short or long name:
  n/name      event name: "pageview" is a page load, "engagement" is time on page and
              scroll depth (`e` ms, `sd` percent), "Outbound Link: Click" and
              "File Download" become our `outbound` and `download`; any other name
              is a custom event and must be allowed like one sent to /p
  u/url       page URL (required); its host is the event's hostname (Plausible's
              event:hostname), kept apart from the site
  d/domain    the site, as configured in Plausible; the first of a comma-separated
              list (Plausible's roll-ups), falling back to the URL's host. `d` wins:
              `u` names only the page, whatever its host (docs/ingest.md)
  r/referrer  referrer URL (host kept only)
  p/props     custom properties: an object, or that object as a JSON string (older
              scripts send it so)
  h/hashMode  1: the page routes by #fragment, so the fragment is part of the path
  i/interactive  false: the event does not make the visit engaged
Revenue (`$`) and anything else are ignored.
"""

from __future__ import annotations

from picolytics.events import EventNames, PageEvent
from picolytics.ingest.collect import build_event, check_name, page_url
from picolytics.ingest.payload import (
    InvalidPayload,
    decode_json,
    load_object,
    optional_bool,
    optional_str,
    required_str,
)
from picolytics.ingest.urls import domain_host

# Plausible's names for what picolytics already has a name for.
RENAMED = {
    "pageview": "load",
    "Outbound Link: Click": "outbound",
    "File Download": "download",
}
_LONG_NAMES = {
    "name": "n",
    "url": "u",
    "domain": "d",
    "referrer": "r",
    "props": "p",
    "hashMode": "h",
    "interactive": "i",
}


def parse_plausible_event(body: bytes, names: EventNames) -> PageEvent:
    """Validate a Plausible event body; raise InvalidPayload with a fixed reason."""
    payload = _short_names(load_object(body))
    raw_name = required_str(payload, "n")
    name = check_name(names, RENAMED.get(raw_name, raw_name))
    page = page_url(payload, "u")
    props = payload.get("p")
    if type(props) is str:
        payload["p"] = decode_json(props) if props else None
    return build_event(
        payload,
        name,
        page,
        site=_site(optional_str(payload, "d")) or page.host,
        hash_routing=optional_bool(payload, "h", False),
        interactive=optional_bool(payload, "i", True),
    )


def _short_names(payload: dict[str, object]) -> dict[str, object]:
    for long_name, short_name in _LONG_NAMES.items():
        if long_name in payload:
            if short_name in payload:
                raise InvalidPayload(f"{short_name} and {long_name} are the same field")
            payload[short_name] = payload.pop(long_name)
    return payload


def _site(domains: str) -> str:
    first = domains.partition(",")[0].strip()
    if not first:
        return ""
    site = domain_host(first.lower())
    if site is None:
        raise InvalidPayload("d must be a domain name")
    return site
