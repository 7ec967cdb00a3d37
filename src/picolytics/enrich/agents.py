"""User agents: browser, OS and device type, and whether the client is a bot.

User-Agent strings pass through here only in memory; nothing here logs them.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Final

import ua_parser
from ua_parser import Parser

from picolytics.accounting import BotReason
from picolytics.events import Agent, DeviceType
from picolytics.text import sanitize_text

try:  # The compiled matcher comes with the ua-parser[regex] extra; fall back if absent.
    import ua_parser_rs
except ImportError:  # pragma: no cover - the extra is a runtime dependency
    ua_parser_rs = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)


# User agents are cut to this length before parsing and caching: real ones are far
# shorter, and it bounds both the cache's memory and the time a hostile header costs.
MAX_UA_LENGTH: Final = 1024
# Longest browser/OS family or version kept (ua-parser copies text out of the UA).
_MAX_FIELD_LENGTH: Final = 64
_OTHER: Final = "Other"  # ua-parser's own word for "not recognised"

_CRAWLER_DATA: Final = "crawler_patterns.json"

_MOBILE_OS: Final = frozenset(
    {"iOS", "Windows Phone", "BlackBerry OS", "KaiOS", "Firefox OS", "Symbian OS"}
)
_DESKTOP_OS: Final = frozenset(
    {
        "Mac OS X",
        "Linux",
        "Ubuntu",
        "Debian",
        "Fedora",
        "Red Hat",
        "SUSE",
        "Arch Linux",
        "Linux Mint",
        "Chrome OS",
        "FreeBSD",
        "OpenBSD",
        "NetBSD",
        "Solaris",
    }
)


_EMPTY_AGENT: Final = Agent(_OTHER, "", _OTHER, "", "bot", "empty_ua")


def load_crawler_patterns() -> list[str]:
    """The crawler-user-agents patterns shipped in picolytics/data/."""
    source = resources.files("picolytics") / "data" / _CRAWLER_DATA
    patterns = json.loads(source.read_text(encoding="utf-8"))["patterns"]
    if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
        raise ValueError(f"{_CRAWLER_DATA}: 'patterns' must be a list of strings")
    return patterns


class _CrawlerMatcher:
    """Tells whether a UA matches any of ~1,500 crawler patterns.

    One Python alternation of all of them costs ~500 µs per UA; the Rust matcher that
    ua-parser already uses prefilters on literals and answers in ~2 µs, so it is
    preferred. Patterns the chosen engine cannot compile are skipped and counted.
    """

    def __init__(self, patterns: Sequence[str], *, compiled: bool = True) -> None:
        self.backend = "rust" if compiled and ua_parser_rs is not None else "python"
        usable = list(patterns)
        try:
            self._match = self._build(usable)
        except (ValueError, re.error):
            # Only now pay for checking the patterns one by one.
            usable = [p for p in patterns if self._compiles(p)]
            self._match = self._build(usable)
        self.skipped = len(patterns) - len(usable)
        if self.skipped:
            logger.warning("%d crawler patterns skipped: not valid regexes", self.skipped)

    def matches(self, user_agent: str) -> bool:
        return self._match(user_agent) is not None

    def _build(self, patterns: Sequence[str]) -> Callable[[str], object]:
        if self.backend == "rust":
            # The extractor takes ua-parser rows: (regex, family, 4 version templates).
            rows = [(p, "bot", None, None, None, None) for p in patterns]
            return ua_parser_rs.UserAgentExtractor(rows).extract
        # Each pattern is checked alone first: joined, a stray ")" could still compile.
        if not all(self._compiles(p) for p in patterns):
            raise ValueError("invalid crawler pattern")
        return re.compile("|".join(f"(?:{p})" for p in patterns) or "(?!)").search

    def _compiles(self, pattern: str) -> bool:
        try:
            self._build_one(pattern)
        except (ValueError, re.error):
            return False
        return True

    def _build_one(self, pattern: str) -> None:
        if self.backend == "rust":
            ua_parser_rs.UserAgentExtractor([(pattern, "bot", None, None, None, None)])
        else:
            re.compile(pattern)
            # Wrapped as it will be joined: catches e.g. a "(?i)" not at the start.
            re.compile(f"(?:{pattern})")


def _make_ua_parser() -> Parser:
    """ua-parser with the compiled (Rust) resolver when available; no cache of its own."""
    if ua_parser.RegexResolver is not None:
        # Lazy builtins skip compiling ~1,000 Python regexes the Rust resolver never uses.
        return Parser(ua_parser.RegexResolver(ua_parser.load_lazy_builtins()))
    logger.warning("ua-parser-rs not installed: user-agent parsing is ~40x slower")
    return Parser(ua_parser.BasicResolver(ua_parser.load_builtins()))


class AgentParser:
    """Parses User-Agent headers into Agent values, with an LRU cache per UA string.

    Bot reasons, first match wins: empty UA, then the crawler-user-agents list, then
    ua-parser's "Spider" device family. Bots still get their browser/OS fields.
    """

    def __init__(self, cache_size: int = 10_000) -> None:
        self._parser = _make_ua_parser()
        self._crawlers = _CrawlerMatcher(load_crawler_patterns())
        # functools' LRU is C code and thread-safe; a cache hit costs well under 1 µs.
        self._cached = functools.lru_cache(maxsize=cache_size)(self._parse_uncached)

    def parse(self, user_agent: str) -> Agent:
        """Agent for one UA; repeated UAs return the same cached object."""
        return self._cached(user_agent[:MAX_UA_LENGTH])

    def _parse_uncached(self, user_agent: str) -> Agent:
        if not user_agent.strip():
            return _EMPTY_AGENT
        result = self._parser.parse(user_agent)
        browser, os_, device = result.user_agent, result.os, result.device
        device_family = device.family if device else _OTHER
        bot_reason = self._bot_reason(user_agent, device_family)
        if bot_reason is None:
            brand = (device.brand if device else None) or ""
            os_family = os_.family if os_ else _OTHER
            device_type = _device_type(user_agent, os_family, device_family, brand)
        else:
            device_type = "bot"
        return Agent(
            browser=_field(browser.family if browser else _OTHER) or _OTHER,
            browser_version=_field(browser.major if browser else None),
            os=_field(os_.family if os_ else _OTHER) or _OTHER,
            os_version=_field(os_.major if os_ else None),
            device_type=device_type,
            bot_reason=bot_reason,
        )

    def _bot_reason(self, user_agent: str, device_family: str) -> BotReason | None:
        if self._crawlers.matches(user_agent):
            return "crawler_list"
        if device_family == "Spider":
            return "parser_spider"
        return None


def _device_type(user_agent: str, os_family: str, device_family: str, brand: str) -> DeviceType:
    """desktop / mobile / tablet / other for a client already known not to be a bot.

    iPadOS Safari sends a Mac UA by default, so those iPads count as desktop.
    """
    if device_family == "iPad" or "Kindle" in device_family or brand == "Generic_Android_Tablet":
        return "tablet"
    if os_family == "Android":
        # Android's convention: phones say "Mobile", tablets do not.
        return "mobile" if "Mobile" in user_agent else "tablet"
    if device_family in ("iPhone", "iPod") or os_family in _MOBILE_OS or "Mobi" in user_agent:
        return "mobile"
    if os_family.startswith("Windows") or os_family in _DESKTOP_OS:
        return "desktop"
    return "other"


def _field(value: str | None) -> str:
    return sanitize_text(value, _MAX_FIELD_LENGTH) if value else ""
