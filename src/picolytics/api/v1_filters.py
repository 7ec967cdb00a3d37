"""Plausible's Stats API v1 properties and its filter expressions, read into the query
layer's Filter (docs/api-v1.md).

A property is Plausible's name of a dimension (`visit:browser`, `event:page`,
`event:props:KEY`); `parse_property` knows the names Plausible's v1 accepts, and which
of them picolytics cannot answer yet (their `gap`). A filter expression is
`property==value` or `property!=value`, several joined by `;` (and); a value with
`|` is any of several values (`\\|` is a literal bar), and one with `*` a wildcard
(any run of characters), as in Plausible's LegacyStatsAPIFilterParser; a condition
on `event:name` holds for pageviews when the name `pageview` passes it, as in
Plausible (api/event_names.py). Values are
compared as Plausible spells them (`(not set)`, `Direct / None`, `Desktop`:
api/v2_names.py). Every mistake is an ApiParamError with Plausible's message where it
has one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

from picolytics.api.event_names import Positive, any_passes, name_filter
from picolytics.api.v2_names import stored
from picolytics.dimensions import Dimension
from picolytics.errors import ApiParamError
from picolytics.stats.goals import page_regex
from picolytics.stats.query import And, Condition, Filter
from picolytics.stats.validate import MAX_CONDITIONS, MAX_VALUE_LENGTH, MAX_VALUES

DOCS: Final = "https://plausible.io/docs/stats-api"
PROPS_PREFIX: Final = "event:props:"
# Plausible's v1 properties (its Legacy.Dimensions) as the query layer's dimensions;
# None where picolytics has no such dimension, or stores other values (GAPS says why).
PROPERTIES: Final[dict[str, Dimension | None]] = {
    "event:page": "page",
    "event:name": "event",
    "event:goal": "goal",
    "event:hostname": "hostname",
    "visit:source": "source",
    "visit:channel": "channel",
    "visit:referrer": "referrer",
    "visit:entry_page": "entry_page",
    "visit:exit_page": "exit_page",
    "visit:utm_medium": "utm_medium",
    "visit:utm_source": "utm_source",
    "visit:utm_campaign": "utm_campaign",
    "visit:utm_content": "utm_content",
    "visit:utm_term": "utm_term",
    "visit:device": "device",
    "visit:browser": "browser",
    "visit:browser_version": "browser_version",
    "visit:os": "os",
    "visit:os_version": "os_version",
    "visit:country": "country",
    "visit:region": "region_code",  # ISO 3166-2 ("US-CA"), where GeoIP has it
    "visit:city": "city_code",  # the GeoNames id as text ("5391959")
}
# None today: each property has a dimension that stores Plausible's values.
GAPS: Final[dict[str, str]] = {}
# Properties of events that no visit metric goes with (Plausible's event-only ones).
EVENT_ONLY: Final = frozenset({"event:name", "event:goal"})
_BAR: Final = re.compile(r"(?<!\\)\|")  # a bar that is not escaped
_OPERATOR: Final = re.compile(r"==|!=")
_SHOWN: Final = 100  # characters of a bad expression an error message repeats

V1Operator = Literal["is", "is_not", "matches", "matches_not"]


@dataclass(frozen=True, slots=True)
class V1Property:
    """A property as Plausible names it, and the query layer's dimension (None: none)."""

    name: str
    ours: Dimension | None
    prop_key: str | None = None

    @property
    def event_only(self) -> bool:
        return self.name in EVENT_ONLY or self.prop_key is not None

    @property
    def key(self) -> str:
        """The key of a breakdown row's value: `browser`, or the custom property's own."""
        return self.prop_key if self.prop_key is not None else self.name.split(":", 1)[1]

    @property
    def gap(self) -> str | None:
        """Why picolytics cannot answer this property yet, or None."""
        return GAPS.get(self.name)


def parse_property(name: str) -> V1Property | None:
    """The property Plausible's v1 calls `name`, or None when it has none by that name."""
    if name.startswith(PROPS_PREFIX):
        key = name[len(PROPS_PREFIX) :]
        if not key or len(key) > MAX_VALUE_LENGTH or "\x00" in key:
            return None
        return V1Property(name, "prop", key)
    if name not in PROPERTIES:
        return None
    return V1Property(name, PROPERTIES[name])


@dataclass(frozen=True, slots=True)
class V1Condition:
    """`on operator values`, a condition on a property: any of the values (none of
    them, for the _not forms); the values of matches/matches_not are wildcards."""

    on: V1Property
    operator: V1Operator
    values: tuple[str, ...]


def _shown(text: str) -> str:
    return text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "…"


def _split_values(raw: str) -> tuple[str, ...]:
    return tuple(part.replace("\\|", "|") for part in _BAR.split(raw))


def _condition(expression: str) -> V1Condition:
    parts = [part.strip() for part in _OPERATOR.split(expression.strip())]
    if len(parts) != 2 or not parts[0] or not parts[1]:
        raise ApiParamError(
            f"Invalid filter expression '{_shown(expression.strip())}'. Write property==value "
            f"or property!=value, joined by ; (e.g. visit:browser==Firefox;visit:country!=US). "
            f"See {DOCS}#filtering"
        )
    name, raw = parts
    found = parse_property(name)
    if found is None:
        raise ApiParamError(
            f"Invalid filter property '{_shown(name)}'. Please provide a valid filter "
            f"property: {DOCS}#properties"
        )
    negated = "!=" in expression
    values = _split_values(raw)
    wildcard = "*" in raw and found.name != "event:goal"  # a goal's name is taken as it is
    if wildcard:
        operator: V1Operator = "matches_not" if negated else "matches"
    else:
        operator = "is_not" if negated else "is"
    if found.name == "visit:country" and any(len(value.encode()) != 2 for value in values):
        raise ApiParamError(
            "Invalid visit:country filter, visit:country needs to be a valid 2-letter country code."
        )
    if len(values) > MAX_VALUES or any(
        len(value) > MAX_VALUE_LENGTH or "\x00" in value for value in values
    ):
        raise ApiParamError(
            f"Invalid filter '{_shown(expression.strip())}': at most {MAX_VALUES} values of "
            f"at most {MAX_VALUE_LENGTH} characters each, without NUL characters."
        )
    return V1Condition(found, operator, values)


def parse_filters(text: str | None) -> tuple[V1Condition, ...]:
    """The conditions of a `filters` parameter, in order (empty parts are skipped)."""
    if text is None:
        return ()
    expressions = [part for part in text.split(";") if part.strip()]
    if len(expressions) > MAX_CONDITIONS:
        raise ApiParamError(f"Invalid filters: at most {MAX_CONDITIONS} filters in a query.")
    return tuple(_condition(expression) for expression in expressions)


def check_goals(conditions: tuple[V1Condition, ...], goal_names: frozenset[str]) -> None:
    """Plausible's refusal of a goal filter naming a goal the site does not have."""
    for condition in conditions:
        if condition.on.name != "event:goal":
            continue
        for value in condition.values:
            if value in goal_names:
                continue
            if value.startswith("Visit "):
                what = f"The pageview goal for the pathname `{_shown(value[6:])}`"
            else:
                what = f"The goal `{_shown(value)}`"
            raise ApiParamError(
                f"{what} is not configured for this site. Find out how to configure goals "
                f"here: {DOCS}#filtering-by-goals"
            )


def unsupported(property_: V1Property) -> ApiParamError:
    return ApiParamError(f"Not supported yet by picolytics: {property_.gap}.")


def to_condition(found: V1Condition) -> Filter:
    """A condition as the query layer's: values spelt as stored, wildcards as patterns;
    one on event:name holds for pageviews where the name "pageview" passes it
    (api/event_names.py)."""
    ours = found.on.ours
    if ours is None:
        raise unsupported(found.on)
    wildcard = found.operator in ("matches", "matches_not")
    if wildcard:
        values = tuple(page_regex(value) for value in found.values)
    else:
        values = tuple(stored(ours, value) for value in found.values)
    condition = Condition(ours, found.operator, values, found.on.prop_key)
    if ours != "event":
        return condition
    kind: Positive = "wildcard" if wildcard else "is"
    return name_filter(condition, kind, bool(any_passes(kind, found.values, True)))


def to_filter(conditions: tuple[V1Condition, ...]) -> Filter | None:
    """The conditions and-ed, as one Filter (None: no filter)."""
    found = tuple(to_condition(condition) for condition in conditions)
    if not found:
        return None
    return found[0] if len(found) == 1 else And(found)
