"""A request body as a JSON object, and typed, sanitised reads of its fields.

Shared by every ingestion endpoint. Rules:
- The body is strict UTF-8 JSON whose top level is an object. NaN/Infinity, duplicate
  keys (also after unescaping, so "n" and "\\u006e" clash) and nesting deeper than
  `MAX_JSON_DEPTH` are rejected.
- Wrong *types* are a 400 (a string where a number belongs is a broken client), JSON
  `null` counts as absent, and an out-of-range number becomes None (a silly value
  must not lose the event). Booleans are not numbers.
"""

from __future__ import annotations

import json
import re
from typing import NoReturn

# The top-level object is depth 1. Our own fields are flat, custom properties one level
# deeper; the margin still keeps `json` from recursing deeply.
MAX_JSON_DEPTH = 8

# JSON tokens for the nesting pre-check: a string (its brackets are text, and an
# unterminated one runs to the end, which keeps the scan linear), an opener, a closer.
_JSON_TOKENS = re.compile(r'("[^"\\]*(?:\\.?[^"\\]*)*"?)|([\[{])|[\]}]', re.DOTALL)


class InvalidPayload(ValueError):  # noqa: N818 - the name is the agreed interface
    """The body is not an acceptable event; `reason` is short, fixed, client-data free."""

    reason: str

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


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


def load_object(body: bytes) -> dict[str, object]:
    """The request body as a JSON object."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        # `from None` here and below: the chained error would quote client bytes.
        raise InvalidPayload("body is not valid UTF-8") from None
    payload = decode_json(text)
    if type(payload) is not dict:
        raise InvalidPayload("body must be a JSON object")
    return payload


def decode_json(text: str) -> object:
    """Strict JSON: depth-limited, no NaN/Infinity, no duplicate keys."""
    if _nested_too_deep(text):
        raise InvalidPayload("JSON nested too deeply")
    try:
        return _DECODER.decode(text)
    except InvalidPayload:
        raise
    except RecursionError:  # unreachable after the pre-check; kept as a safety net
        raise InvalidPayload("JSON nested too deeply") from None
    except ValueError:  # JSONDecodeError, and int() refusing more than 4300 digits
        raise InvalidPayload("malformed JSON") from None


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


def required_str(payload: dict[str, object], key: str) -> str:
    value = payload.get(key)
    if value is None:
        raise InvalidPayload(f"{key} is required")
    if type(value) is not str:
        raise InvalidPayload(f"{key} must be a string")
    return value


def optional_str(payload: dict[str, object], key: str) -> str:
    value = payload.get(key)
    if value is None:
        return ""
    if type(value) is not str:
        raise InvalidPayload(f"{key} must be a string")
    return value


def number(payload: dict[str, object], key: str) -> int | float | None:
    value = payload.get(key)
    if value is None:
        return None
    # `type(...) is` rather than isinstance: bool is an int subclass and is not a number.
    if type(value) is not int and type(value) is not float:
        raise InvalidPayload(f"{key} must be a number")
    return value


def int_in_range(payload: dict[str, object], key: str, maximum: int) -> int | None:
    value = number(payload, key)
    # Compare before round(): round(inf) would raise, and "1e999" parses as inf.
    if value is None or not 0 <= value <= maximum:
        return None
    return round(value)


def optional_bool(payload: dict[str, object], key: str, default: bool) -> bool:
    """true/false; 1 and 0 too, as some clients send flags as numbers."""
    value = payload.get(key)
    if value is None:
        return default
    if value is True or value is False:
        return value
    if type(value) is int and value in (0, 1):
        return value == 1
    raise InvalidPayload(f"{key} must be a boolean")
