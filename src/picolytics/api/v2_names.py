"""Plausible's Stats API v2 names of dimensions, and how their values read in picolytics.

`PLAUSIBLE_DIMENSIONS` maps each name Plausible accepts (`visit:country`, `event:page`;
`event:props:KEY` and the `time` dimensions are handled apart) onto the query layer's
dimension (dimensions.py; `event:goal` is `goal`, the site's goals by display name), or
onto None where picolytics has none yet (none today: the hostnames were the last): such
names are accepted and kept, so a caller can tell "not supported yet" from "invalid".
`dimension` reads one name.

Values differ in spelling where Plausible shows an empty value by a name of its
own (`(not set)`, and `Direct / None` for sources and referrers), where it
capitalises devices (`Desktop`), and for `visit:country_name`, the English name of
the ISO 3166-1 alpha-2 code picolytics stores (picolytics/data/country_names.json,
from the npm package i18n-iso-countries: scripts/update_country_names.py). `shown`
spells a stored value as Plausible does, `stored` spells an `is`/`is_not` clause as
picolytics stores it, and `country_codes` finds the codes of a country's name
(api/v2_countries.py turns every filter on names into one on codes).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources
from typing import Final, Literal

from picolytics.dimensions import Dimension
from picolytics.stats.query import Interval
from picolytics.stats.validate import MAX_VALUE_LENGTH

Grain = Literal["visit", "event", "time"]
# How Plausible's values relate to ours: the same ("value", also visit:region and
# visit:city, the stored ISO 3166-2 codes and GeoNames ids, sql/0021_place_codes.sql),
# or the display name of our code ("name": visit:country_name).
Form = Literal["value", "name"]


@dataclass(frozen=True, slots=True)
class DimensionInfo:
    ours: Dimension | None  # None: the query layer has no such dimension yet
    grain: Grain
    session_only: bool = False  # Plausible's visit dimensions of the sessions table only
    form: Form = "value"


def _visit(ours: Dimension | None, form: Form = "value", session: bool = False) -> DimensionInfo:
    return DimensionInfo(ours, "visit", session, form)


PLAUSIBLE_DIMENSIONS: Final[dict[str, DimensionInfo]] = {
    "event:name": DimensionInfo("event", "event"),  # ours: custom events only, no "pageview"
    "event:page": DimensionInfo("page", "event"),
    "event:goal": DimensionInfo("goal", "event"),  # display names: "Signup", "Visit /a"
    "event:hostname": DimensionInfo("hostname", "event"),  # pageviews and custom events
    "visit:entry_page": _visit("entry_page", session=True),
    "visit:exit_page": _visit("exit_page", session=True),
    "visit:entry_page_hostname": _visit("entry_page_hostname", session=True),
    "visit:exit_page_hostname": _visit("exit_page_hostname", session=True),
    "visit:source": _visit("source"),
    "visit:channel": _visit("channel"),
    "visit:referrer": _visit("referrer"),
    "visit:utm_medium": _visit("utm_medium"),
    "visit:utm_source": _visit("utm_source"),
    "visit:utm_campaign": _visit("utm_campaign"),
    "visit:utm_content": _visit("utm_content"),
    "visit:utm_term": _visit("utm_term"),
    "visit:device": _visit("device"),
    "visit:screen": _visit("device"),  # Plausible's older name of visit:device
    "visit:browser": _visit("browser"),
    "visit:browser_version": _visit("browser_version"),
    "visit:os": _visit("os"),
    "visit:os_version": _visit("os_version"),
    "visit:country": _visit("country"),
    "visit:country_name": _visit("country", "name"),
    "visit:region": _visit("region_code"),  # ISO 3166-2 ("US-CA"), where GeoIP has it
    "visit:region_name": _visit("region"),
    "visit:city": _visit("city_code"),  # the GeoNames id as text ("5391959")
    "visit:city_name": _visit("city"),
}
PROPS_PREFIX: Final = "event:props:"
# Plausible's time dimensions; "time" picks its bucket from the period (v2_request).
TIME_DIMENSIONS: Final[dict[str, Interval | None]] = {
    "time": None,
    "time:hour": "hour",
    "time:day": "day",
    "time:week": "week",
    "time:month": "month",
}


@dataclass(frozen=True, slots=True)
class ApiDimension:
    """A dimension as Plausible names it, with what it is in the query layer."""

    name: str  # as given: "visit:country_name", "event:props:plan", "time:day"
    ours: Dimension | None  # None for time dimensions and names picolytics lacks
    grain: Grain
    prop_key: str | None = None
    interval: Interval | None = None  # of a time dimension; "time" once resolved
    session_only: bool = False
    form: Form = "value"

    @property
    def planned(self) -> bool:
        """A name Plausible accepts that has no dimension in the query layer yet."""
        return self.ours is None and self.grain != "time"

    @property
    def resolved_name(self) -> str:
        """The name as Plausible echoes it: the plain `time` as its bucket (`time:day`)."""
        if self.name == "time" and self.interval is not None:
            return f"time:{self.interval}"
        return self.name


def dimension(name: str) -> ApiDimension | None:
    """The dimension Plausible calls `name`, or None when there is none."""
    if name in TIME_DIMENSIONS:
        return ApiDimension(name, None, "time", interval=TIME_DIMENSIONS[name])
    if name.startswith(PROPS_PREFIX):
        key = name[len(PROPS_PREFIX) :]
        if not key or len(key) > MAX_VALUE_LENGTH or "\x00" in key:
            return None
        return ApiDimension(name, "prop", "event", prop_key=key)
    info = PLAUSIBLE_DIMENSIONS.get(name)
    if info is None:
        return None
    return ApiDimension(name, info.ours, info.grain, None, None, info.session_only, info.form)


NOT_SET: Final = "(not set)"
NO_REFERRER: Final = "Direct / None"
DIRECT: Final = "(direct)"  # the source of a visit without campaign or referrer (dimensions.py)
# Plausible's name for an empty value, where it has one (its SQL.Expression module).
_EMPTY: Final[dict[Dimension, str]] = {
    "source": NO_REFERRER,
    "referrer": NO_REFERRER,
    "channel": NOT_SET,  # visits stored before channels were (sql/0013_channels.sql)
    "utm_medium": NOT_SET,
    "utm_source": NOT_SET,
    "utm_campaign": NOT_SET,
    "utm_content": NOT_SET,
    "utm_term": NOT_SET,
    "device": NOT_SET,
    "browser": NOT_SET,
    "browser_version": NOT_SET,
    "os": NOT_SET,
    "os_version": NOT_SET,
}
DEVICES: Final = ("desktop", "mobile", "tablet", "other")  # as enrich/agents.py stores them
_SHOWN_DEVICES: Final = frozenset(device.capitalize() for device in DEVICES)


def shown(ours: Dimension | None, value: str | None, form: Form = "value") -> str | None:
    """A stored value of our dimension as Plausible shows it (`form` "name": the
    country's English name for its code)."""
    if value is None or ours is None:
        return value
    if form == "name" and ours == "country":
        return country_name(value)
    if ours == "source" and value == DIRECT:
        return NO_REFERRER
    if value == "":
        return _EMPTY.get(ours, value)
    if ours == "device" and value in DEVICES:
        return value.capitalize()
    return value


def stored(ours: Dimension | None, clause: str) -> str:
    """An `is`/`is_not` clause as the value picolytics stores for it: Plausible's names
    of empty values and of devices back to ours; any other clause as it is."""
    if ours is None:
        return clause
    if ours == "source" and clause == NO_REFERRER:
        return DIRECT
    if clause == _EMPTY.get(ours):
        return ""
    if ours == "device" and clause in _SHOWN_DEVICES:
        return clause.lower()
    return clause


COUNTRY_NAMES: Final = "country_names.json"  # in picolytics/data/


@functools.cache
def country_names() -> dict[str, tuple[str, ...]]:
    """Code -> the country's English names, the shown one first (read once)."""
    source = resources.files("picolytics") / "data" / COUNTRY_NAMES
    data = json.loads(source.read_text(encoding="utf-8"))
    countries = data["countries"]  # the file ships with the package: trusted
    return {str(code): tuple(str(name) for name in names) for code, names in countries.items()}


def country_name(code: str) -> str:
    """The name shown for a stored code: `(not set)` for the empty code of a visit
    whose country is unknown, the code itself for one the list lacks."""
    if code == "":
        return NOT_SET
    names = country_names().get(code)
    return names[0] if names else code


@functools.cache
def _codes_by_name(case_sensitive: bool) -> dict[str, tuple[str, ...]]:
    """Every name of every country (and `(not set)`) -> its codes; casefolded keys
    when not case-sensitive. A name two countries share ("Congo") has both."""
    found: dict[str, list[str]] = {(NOT_SET if case_sensitive else NOT_SET.casefold()): [""]}
    for code, names in country_names().items():
        for name in names:
            key = name if case_sensitive else name.casefold()
            codes = found.setdefault(key, [])
            if code not in codes:
                codes.append(code)
    return {name: tuple(codes) for name, codes in found.items()}


def country_codes(name: str, case_sensitive: bool = True) -> tuple[str, ...]:
    """The stored codes of a country's name (any of its names: "United States" and
    "United States of America" both give US); () for no country of that name."""
    key = name if case_sensitive else name.casefold()
    return _codes_by_name(case_sensitive).get(key, ())


def shown_countries() -> dict[str, str]:
    """Every code picolytics can show a name for ("" too) -> that name."""
    return {"": NOT_SET} | {code: country_name(code) for code in country_names()}
