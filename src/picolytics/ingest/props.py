"""Custom event properties: a small flat map of scalars, stored as jsonb.

Limits (violations are a 400 with a fixed reason, never a silent cut: a property
that changes meaning when truncated is worse than a refused event):
- at most `MAX_PROPS` keys; a key is 1..`MAX_KEY_BYTES` bytes of UTF-8;
- values are strings, numbers or booleans (no objects or arrays), a string at most
  `MAX_VALUE_BYTES` bytes; `null` means "no such property" and is dropped;
- keys and string values are sanitised like every other text (controls and lone
  surrogates removed, surrounding space trimmed), so jsonb always accepts them.

Events named in `URL_PROP_EVENTS` (outbound link clicks, downloads) carry the link
in `url`; its query string and fragment are dropped, as for every URL we keep.
"""

from __future__ import annotations

import math

from picolytics.events import Props, PropValue
from picolytics.ingest.payload import InvalidPayload
from picolytics.text import sanitize_text

MAX_PROPS = 30
MAX_KEY_BYTES = 300
MAX_VALUE_BYTES = 2000
URL_PROP_EVENTS = frozenset({"outbound", "download"})

# A UTF-8 code point is at most 4 bytes: shorter strings need no encoding to check.
_BYTES_PER_CHAR = 4


def parse_props(value: object, event_name: str) -> Props | None:
    """Validated properties of an event, or None when it has none."""
    if value is None:
        return None
    if type(value) is not dict:
        raise InvalidPayload("props must be an object")
    if len(value) > MAX_PROPS:
        raise InvalidPayload(f"props has more than {MAX_PROPS} keys")
    props: Props = {}
    for raw_key, raw_value in value.items():
        if raw_value is None:
            continue
        key = _checked_text(raw_key, MAX_KEY_BYTES, "props key")
        if not key:
            raise InvalidPayload("props key is empty")
        if key in props:
            raise InvalidPayload("duplicate props key")
        props[key] = _checked_value(raw_value)
    if event_name in URL_PROP_EVENTS:
        _drop_url_query(props)
    return props or None


def _checked_value(value: object) -> PropValue:
    if type(value) is str:
        return _checked_text(value, MAX_VALUE_BYTES, "props value")
    if type(value) is bool:
        return value
    if type(value) is int:
        if len(str(value)) > MAX_VALUE_BYTES:  # json caps ints at 4300 digits
            raise InvalidPayload("props value is too long")
        return value
    if type(value) is float and math.isfinite(value):  # "1e999" parses as inf
        return value
    if type(value) is float:
        raise InvalidPayload("props value is out of range")
    raise InvalidPayload("props values must be strings, numbers or booleans")


def _checked_text(text: str, max_bytes: int, what: str) -> str:
    # Sanitise without cutting, then measure: a cut would change the value.
    clean = sanitize_text(text, len(text))
    if len(clean) * _BYTES_PER_CHAR > max_bytes and len(clean.encode()) > max_bytes:
        raise InvalidPayload(f"{what} is too long")
    return clean


def _drop_url_query(props: Props) -> None:
    url = props.get("url")
    if isinstance(url, str):
        end = min((i for i in (url.find("?"), url.find("#")) if i >= 0), default=len(url))
        props["url"] = url[:end]
