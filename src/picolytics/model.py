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
        """A ping (the page stayed visible) or a custom event; a bounce has neither."""
        return self.page.name not in PAGEVIEW_NAMES and self.page.name not in VISIBILITY_NAMES
