"""GoatCounter's values read into what the imported tables hold (docs/imports.md,
GoatCounter): its booleans and bot codes, its dates, and a hit's browser, system,
referrer, screen size and location as the columns of a visit.

`is_bot` and `moment` raise ValueError with the reason, `agent_columns` and
`referrer_columns` tell a malformed value by their result; the aggregation names the
line and the column. What GoatCounter writes is its `exportcsv.go`: Browser and System as
`name || ' ' || version`, Screen size as `width,height,scale`, Location as an ISO 3166-2
code ("US" or "US-TX"), Date as RFC 3339 in UTC.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Final

from picolytics.text import sanitize_text

# Go's strconv.ParseBool, which GoatCounter's importer reads Event and FirstVisit with:
# its true and false spellings.
TRUE: Final = frozenset({"1", "t", "T", "true", "TRUE", "True"})
FALSE: Final = frozenset({"0", "f", "F", "false", "FALSE", "False"})

# A session id is two hex numbers joined by "-"; "0-0" (or nothing) is "no session":
# the site did not collect sessions, and every hit stands alone.
NO_SESSION: Final = frozenset({"", "0-0"})

# GoatCounter caps paths and referrers at 2048 characters; so do we.
MAX_TEXT: Final = 2048

# GoatCounter's own screen classes by width (its hit_stats.go): phones below 600,
# tablets below 1000, wider is a desktop; spelt as Plausible's files spell devices.
_DEVICES: Final = ((600.0, "Mobile"), (1000.0, "Tablet"))
_DESKTOP: Final = "Desktop"

_LOCATION: Final = re.compile(r"([A-Za-z]{2})(?:-([A-Za-z0-9]{1,3}))?")
_SCHEMES: Final = frozenset({"h", "g", "c", "o", ""})

# A visit's columns, from its first pageview: (source, referrer, utm_source) and
# (country, region, device, browser, browser version, OS, OS version).
ReferrerColumns = tuple[str, str, str]
AgentColumns = tuple[str, str, str, str, str, str, str]


def is_bot(value: str) -> bool:
    """Whether a Bot value marks a bot: 0 is a person, any other isbot code a bot (as
    GoatCounter stores them apart: `Bot > 0`)."""
    if value == "0":
        return False
    if not value.isascii() or not value.isdigit():
        raise ValueError(f"not a number: {value[:40]!r}")
    return int(value) != 0


def moment(value: str) -> datetime:
    """A Date: RFC 3339 with its offset ("2020-12-01T00:07:10Z")."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"not an RFC 3339 date: {value[:40]!r}") from None
    if parsed.tzinfo is None:
        raise ValueError(f"not an RFC 3339 date (no offset): {value[:40]!r}")
    return parsed


def text(value: str) -> str:
    """A path or name as stored: control characters gone, trimmed, at most 2048."""
    return sanitize_text(value, MAX_TEXT)


def agent_columns(
    browser: str, system: str, screen: str, location: str
) -> tuple[AgentColumns, str | None]:
    """A hit's country, region, device, browser and OS, or the name of the column that
    is malformed (the columns then meaningless). Pure: the caller caches it."""
    device = _device(screen)
    if device is None:
        return _NO_AGENT, "Screen size"
    place = _LOCATION.fullmatch(location) if location else None
    if location and place is None:
        return _NO_AGENT, "Location"
    country = place.group(1).upper() if place else ""
    region = f"{country}-{place.group(2).upper()}" if place and place.group(2) else ""
    browser_name, browser_version = _name_version(browser)
    os_name, os_version = _name_version(system)
    return (country, region, device, browser_name, browser_version, os_name, os_version), None


def referrer_columns(referrer: str, scheme: str) -> ReferrerColumns | None:
    """(source, referrer, utm_source) of a Referrer and its scheme; None for a scheme
    GoatCounter has not.

    h (a URL, stored without its scheme) and o (other, such as an app's id): the host
    is the source and the referrer, as picolytics keeps a referrer. g (generated: a
    name such as "Hacker News" or "Email" for a group of hosts): the name is the
    source. c (campaign: the value of the page's utm_source, ref, src or source
    parameter): the value is the source and the utm_source."""
    if scheme not in _SCHEMES:
        return None
    value = text(referrer)
    if not value:
        return _DIRECT
    if scheme == "c":
        return value, "", value
    if scheme == "g":
        return value, "", ""
    host = _HOST_END.split(value.split("://", 1)[-1], maxsplit=1)[0]
    if not host.startswith("["):  # a port goes, as picolytics keeps only the host
        host = host.partition(":")[0]
    host = host.lower().rstrip(".").removeprefix("www.")
    return host, host, ""


_NO_AGENT: Final[AgentColumns] = ("", "", "", "", "", "", "")
_DIRECT: Final[ReferrerColumns] = ("", "", "")
_HOST_END: Final = re.compile(r"[/?#]")


def _device(screen: str) -> str | None:
    """The device of a Screen size ("" when unknown), None when it is no number."""
    if not screen:
        return ""
    width_text = screen.partition(",")[0].strip()
    try:
        width = float(width_text)
    except ValueError:
        return None
    if not 0 <= width < 1e6:  # also refuses nan and inf
        return None
    if width == 0:  # GoatCounter writes 0 when it has no width
        return ""
    return next((device for bound, device in _DEVICES if width < bound), _DESKTOP)


def _name_version(value: str) -> tuple[str, str]:
    """("Chrome", "86") of "Chrome 86": GoatCounter joins name and version with one
    space, so the version is what follows the last one ("Linux " has none)."""
    name, _, version = value.rpartition(" ")
    if not name:  # no space at all: a name without a version
        return text(version), ""
    return text(name), text(version)
