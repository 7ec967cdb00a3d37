"""The shared data types: what an event is at each step from request to row.

Every layer may import this module; it imports nothing of picolytics but the closed
sets in `accounting`. See docs/architecture.md for the path of one event.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import Final, Literal, get_args

from picolytics.accounting import BotReason

DeviceType = Literal["desktop", "mobile", "tablet", "bot", "other"]
DEVICE_TYPES: Final[tuple[DeviceType, ...]] = get_args(DeviceType)
# A custom property value: text, a number or a boolean (ingest/props.py checks them).
PropValue = str | int | float | bool
Props = dict[str, PropValue]


@dataclass(frozen=True, slots=True)
class EventNames:
    """The event names a server accepts: a fixed set, plus an optional pattern that a
    whole custom name must match (CUSTOM_EVENT_NAMES)."""

    valid: frozenset[str]
    custom: re.Pattern[str] | None = None

    def accepts(self, name: str) -> bool:
        return name in self.valid or (self.custom is not None and bool(self.custom.fullmatch(name)))


@dataclass(frozen=True, slots=True)
class PageEvent:
    """One validated tracker event. Text fields are sanitised; absent text is ""."""

    name: str  # a configured valid name, or matches the custom pattern
    # Host of the page URL (or the domain a Plausible client names): lowercase ASCII
    # (IDNA), no "www.", no trailing dot, no port.
    site: str
    path: str  # path of the URL without query or fragment, "/" when empty, <= 1024 chars
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
    props: Props | None = None  # custom properties (ingest/props.py), None when there are none
    engaged_ms: int | None = None  # `e`: time the page was visible and focused, ms
    scroll_depth: int | None = None  # `sd`: deepest scroll, percent of the page
    interactive: bool = True  # False: the event says nothing about engagement
    # Host of the page URL itself, normalised like `site` (ingest/urls.py); it differs
    # from `site` when a Plausible client's `d` names the site and `u` a page of another
    # host (a subdomain, a staging host). "" when unknown, as for events made outside
    # ingest and those stored before sql/0020_hostnames.sql.
    hostname: str = ""


@dataclass(frozen=True, slots=True)
class Agent:
    """What a User-Agent header says about the client.

    Unrecognised families are "Other" (ua-parser's word); unknown versions are "".
    """

    browser: str  # family, e.g. "Chrome"
    browser_version: str  # major version, e.g. "120"
    os: str  # e.g. "Windows", "Mac OS X"
    os_version: str  # major version, e.g. "10"
    device_type: DeviceType
    bot_reason: BotReason | None  # None for humans


@dataclass(frozen=True, slots=True)
class Location:
    """Where a client address is, at most to city level (never coordinates)."""

    country: str  # ISO 3166-1 alpha-2, "" if unknown
    region: str  # subdivision name (or code if no name), "" if unknown
    city: str  # "" if unknown
    # Plausible's visit:region and visit:city, where the GeoIP database has them
    # (MaxMind's layout; DB-IP lite and the flat layout have none): "" if unknown.
    region_code: str = ""  # ISO 3166-2, "US-CA"
    city_code: str = ""  # GeoNames id as text, "5391959"


UNKNOWN_LOCATION: Final = Location("", "", "")


# The event rules. Their SQL twins, picolytics_is_pageview() and
# picolytics_is_custom_event() in sql/0005_rules_and_grants.sql, decide the same for
# the views; tests/test_sql_rules.py checks that both sides agree.

# Events that may show a page: the first load, a single-page-app navigation, a new
# #fragment (a pageview only when the fragment is a route, not an in-page anchor).
PAGEVIEW_NAMES = frozenset({"load", "nav", "hashchange"})
# Events that say nothing about engagement: the page being shown or hidden again.
VISIBILITY_NAMES = frozenset({"visible", "hidden"})
# The tracker's own events and Plausible's time on page: every other name is a custom
# event, the link clicks `outbound` and `download` included.
BUILTIN_NAMES = PAGEVIEW_NAMES | VISIBILITY_NAMES | {"ping", "engagement"}
ENGAGED_TIME_MS = 30_000


def counts_as_pageview(name: str, path: str) -> bool:
    """Is an event of this name and stored path (the page's path, then its #/route if
    any) a pageview? A stored path holds "#" only for a route: ingest drops anchors."""
    if name == "hashchange":
        return "#" in path
    return name in PAGEVIEW_NAMES


def is_custom_event(name: str) -> bool:
    return name not in BUILTIN_NAMES


@dataclass(frozen=True, slots=True)
class QueuedEvent:
    """An accepted event. It holds no IP address or User-Agent, only what is stored."""

    received_at: datetime  # server clock at the request, UTC
    event_id: int  # random 63-bit id: makes a retried write idempotent
    visitor_id: int  # today's visitor hash
    previous_visitor_id: int | None  # yesterday's hash, shortly after midnight only
    page: PageEvent
    location: Location
    agent: Agent
    # The visit's acquisition channel if this event opens one ("Organic Search"...:
    # enrich/channels.py, from page's utm tags and referrer). "" when not decided, as
    # for events made outside ingest; stored as the visit's channel, shown "(not set)".
    channel: str = ""

    @property
    def path(self) -> str:
        return self.page.path + self.page.hash_path

    @property
    def is_pageview(self) -> bool:
        return counts_as_pageview(self.page.name, self.path)

    @property
    def is_engagement(self) -> bool:
        """Does the event make its visit engaged (not a bounce)? A ping (the page stayed
        visible), an interactive custom event, or Plausible's time on page once it
        reaches ENGAGED_TIME_MS, the same 30 s after which pico.js sends its first ping."""
        page = self.page
        if page.name == "engagement":
            return (page.engaged_ms or 0) >= ENGAGED_TIME_MS
        return page.interactive and (page.name == "ping" or is_custom_event(page.name))


@dataclass(frozen=True, slots=True)
class BotHit:
    site: str
    day: date
    reason: BotReason


def new_id() -> int:
    """A random positive 63-bit id (event and session ids): no coordination needed."""
    return random.getrandbits(63) or 1
