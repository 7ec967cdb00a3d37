"""What travels from the request handler to the writer: one accepted event, enriched."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from picolytics.agents import Agent
from picolytics.collect import PageEvent
from picolytics.geo import Location

# Events that may show a page: the first load, a single-page-app navigation, a new
# #fragment (a pageview only when the fragment is a route, not an in-page anchor).
PAGEVIEW_NAMES = frozenset({"load", "nav", "hashchange"})
# Events that say nothing about engagement: the page being shown or hidden again.
VISIBILITY_NAMES = frozenset({"visible", "hidden"})
ENGAGED_TIME_MS = 30_000


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

    @property
    def path(self) -> str:
        return self.page.path + self.page.hash_path

    @property
    def is_pageview(self) -> bool:
        if self.page.name == "hashchange":
            return bool(self.page.hash_path)
        return self.page.name in PAGEVIEW_NAMES

    @property
    def is_engagement(self) -> bool:
        """Does the event make its visit engaged (not a bounce)? A ping (the page stayed
        visible), an interactive custom event, or Plausible's time on page once it
        reaches ENGAGED_TIME_MS, the same 30 s after which pico.js sends its first ping."""
        page = self.page
        if page.name == "engagement":
            return (page.engaged_ms or 0) >= ENGAGED_TIME_MS
        return (
            page.interactive
            and page.name not in PAGEVIEW_NAMES
            and page.name not in VISIBILITY_NAMES
        )
