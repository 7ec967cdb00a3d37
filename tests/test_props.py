"""Custom event properties: limits, sanitising, and storage as jsonb (props.py)."""

from __future__ import annotations

import contextlib
import json
import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from helpers.database import query
from helpers.events import event, run, write
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from picolytics.events import EventNames
from picolytics.ingest.collect import parse_event
from picolytics.ingest.payload import InvalidPayload
from picolytics.ingest.props import MAX_KEY_BYTES, MAX_PROPS, MAX_VALUE_BYTES

NAMES = EventNames(frozenset({"load", "outbound", "download"}), re.compile(r"[a-z_]+"))


def parsed(props: Any, name: str = "signup") -> Any:
    body = json.dumps({"n": name, "l": "https://example.com/", "p": props}).encode()
    return parse_event(body, NAMES).props


def reason(props: Any) -> str:
    with pytest.raises(InvalidPayload) as raised:
        parsed(props)
    return raised.value.reason


def test_scalar_values_are_kept_with_their_types() -> None:
    props = {"plan": "pro", "seats": 3, "price": 9.5, "trial": False}
    assert parsed(props) == props


def test_no_props_empty_props_and_null_values_mean_none() -> None:
    assert parsed(None) is None
    assert parsed({}) is None
    assert parsed({"gone": None}) is None
    assert parsed({"gone": None, "kept": "x"}) == {"kept": "x"}


def test_at_most_30_keys() -> None:
    thirty = {f"k{i}": i for i in range(MAX_PROPS)}
    assert parsed(thirty) == thirty
    assert reason({**thirty, "one_more": 1}) == "props has more than 30 keys"


def test_keys_are_limited_in_utf8_bytes_not_characters() -> None:
    assert parsed({"k" * MAX_KEY_BYTES: 1}) == {"k" * MAX_KEY_BYTES: 1}
    assert reason({"k" * (MAX_KEY_BYTES + 1): 1}) == "props key is too long"
    # 150 two-byte characters are 300 bytes; one more is over.
    assert parsed({"é" * 150: 1}) == {"é" * 150: 1}
    assert reason({"é" * 151: 1}) == "props key is too long"


def test_string_values_are_limited_in_utf8_bytes() -> None:
    assert parsed({"v": "x" * MAX_VALUE_BYTES}) == {"v": "x" * MAX_VALUE_BYTES}
    assert reason({"v": "x" * (MAX_VALUE_BYTES + 1)}) == "props value is too long"
    assert parsed({"v": "€" * 666}) == {"v": "€" * 666}  # 1998 bytes
    assert reason({"v": "€" * 667}) == "props value is too long"  # 2001 bytes
    assert reason({"v": 10 ** (MAX_VALUE_BYTES + 1)}) == "props value is too long"


@pytest.mark.parametrize(
    ("props", "expected"),
    [
        ([], "props must be an object"),
        ("plan=pro", "props must be an object"),
        ({"v": {"nested": 1}}, "props values must be strings, numbers or booleans"),
        ({"v": [1, 2]}, "props values must be strings, numbers or booleans"),
        ({"": 1}, "props key is empty"),
        ({"\x00\x01 ": 1}, "props key is empty"),
        ({"plan": 1, "plan\x00": 2}, "duplicate props key"),
    ],
)
def test_bad_props_are_refused_with_a_reason(props: Any, expected: str) -> None:
    assert reason(props) == expected


def test_infinite_numbers_are_refused() -> None:
    body = b'{"n":"signup","l":"https://example.com/","p":{"v":1e999}}'
    with pytest.raises(InvalidPayload, match="props value is out of range"):
        parse_event(body, NAMES)


def test_keys_and_values_are_sanitised() -> None:
    assert parsed({" pl\x00an ": " p\u0085ro\ud800 "}) == {"plan": "pro"}


def test_link_urls_lose_their_query_and_fragment() -> None:
    url = "https://other.example/a/b.pdf?token=secret#page=2"
    assert parsed({"url": url}, "download") == {"url": "https://other.example/a/b.pdf"}
    assert parsed({"url": url}, "outbound") == {"url": "https://other.example/a/b.pdf"}
    # Custom events keep what the site owner chose to send.
    assert parsed({"url": url}, "signup") == {"url": url}


def test_names_come_from_the_list_or_the_whole_custom_pattern() -> None:
    assert parse_event(b'{"n":"sign_up","l":"https://example.com/"}', NAMES).name == "sign_up"
    with pytest.raises(InvalidPayload, match="unknown event name"):
        parse_event(b'{"n":"Sign Up","l":"https://example.com/"}', NAMES)  # fullmatch only
    longest = json.dumps({"n": "a" * 120, "l": "https://example.com/"}).encode()
    assert parse_event(longest, NAMES).name == "a" * 120
    too_long = json.dumps({"n": "a" * 121, "l": "https://example.com/"}).encode()
    with pytest.raises(InvalidPayload, match="event name is too long"):
        parse_event(too_long, NAMES)  # refused, not cut to a name the pattern allows
    without_pattern = EventNames(frozenset({"load"}))
    with pytest.raises(InvalidPayload, match="unknown event name"):
        parse_event(b'{"n":"sign_up","l":"https://example.com/"}', without_pattern)


scalar = st.one_of(
    st.text(max_size=40),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
)


def numerically(props: dict[str, Any]) -> dict[str, Any]:
    # jsonb keeps numbers as numeric: 1.5e17 comes back as 150000000000000000.
    return {
        key: Decimal(repr(value)) if type(value) in (int, float) else value
        for key, value in props.items()
    }


@settings(
    max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    many=st.lists(
        st.dictionaries(st.text(min_size=1, max_size=20), scalar, max_size=MAX_PROPS),
        min_size=10,
        max_size=30,
    )
)
def test_any_accepted_props_are_stored_as_jsonb_unchanged(
    migrated_database: str, many: list[dict[str, Any]]
) -> None:
    accepted = []
    for props in many:
        with contextlib.suppress(InvalidPayload):  # e.g. keys equal once sanitised
            accepted.append(parsed(props))
    at = datetime.now(UTC)
    events = [
        event(at, visitor, name="signup", props=props) for visitor, props in enumerate(accepted)
    ]
    run(write(migrated_database, events))
    ids = [stored.event_id for stored in events]
    # By receipt time too: Hypothesis seeds `random` alike for every example, so an
    # earlier example in this database may have written rows with the same event ids.
    rows = query(
        migrated_database,
        "SELECT event_id, props FROM events WHERE event_id = ANY(%s) AND received_at = %s",
        (ids, at),
    )
    stored = {event_id: props for event_id, props in rows}
    assert len(stored) == len(events)
    for written in events:
        expected = written.page.props
        got = stored[written.event_id]
        assert (got is None) == (expected is None)
        if expected is not None:
            assert numerically(got) == numerically(expected)
