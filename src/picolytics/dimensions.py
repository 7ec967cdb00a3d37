"""The vocabulary of the read side: metrics, dimensions, and the SQL that reads each
dimension from raw rows. Said once, for the roller that fills the rollups
(storage/rollup.py) and the query layer that reads them or the raw rows (stats/).
What each one means: docs/read-model.md.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

Metric = Literal[
    "visitors",
    "visits",
    "pageviews",
    "views_per_visit",
    "bounce_rate",
    "visit_duration",
    "events",
    "bounces",
    "total_duration",  # the sum of the visits' durations, s (the export's total)
    "scroll_depth",  # mean of each visit's deepest scroll (of each page), percent
    "time_on_page",  # engaged time per visit (of each page), seconds
]
ALL_METRICS: Final[tuple[Metric, ...]] = get_args(Metric)
# Metrics of engagement events, answered from raw rows (stats/engagement.py): in no
# rollup, and by no breakdown but page.
ENGAGEMENT_METRICS: Final = frozenset({"scroll_depth", "time_on_page"})
# The metrics that rollups and raw rows add up alike (stats/assemble.py): all others.
METRICS: Final[tuple[Metric, ...]] = tuple(m for m in ALL_METRICS if m not in ENGAGEMENT_METRICS)
# Metrics of the visit grain only: no meaning for a breakdown by an event dimension,
# but by page they are the visits' that entered on it (stats/engagement_merge.py).
VISIT_ONLY_METRICS: Final = frozenset(
    {"views_per_visit", "bounce_rate", "visit_duration", "bounces", "total_duration"}
)

VisitDimension = Literal[
    "entry_page",
    "exit_page",
    "entry_page_hostname",
    "exit_page_hostname",
    "source",
    "referrer",
    "channel",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_content",
    "utm_term",
    "country",
    "region",
    "city",
    "region_code",
    "city_code",
    "browser",
    "browser_version",
    "os",
    "os_version",
    "device",
]
EventDimension = Literal["page", "event", "prop", "hostname"]
# The goals (docs/goals.md) a site's events complete: defined per site in the goals
# table, so the query layer resolves them per query (stats/goal_parts.py).
GoalDimension = Literal["goal"]
Dimension = Literal[VisitDimension, EventDimension, GoalDimension]
VISIT_DIMENSIONS: Final[tuple[VisitDimension, ...]] = get_args(VisitDimension)
EVENT_DIMENSIONS: Final[tuple[EventDimension, ...]] = get_args(EventDimension)
DIMENSIONS: Final[tuple[Dimension, ...]] = get_args(Dimension)
# The dimensions whose value a raw row holds (all but goals).
ROW_DIMENSIONS: Final[tuple[VisitDimension | EventDimension, ...]] = (
    *VISIT_DIMENSIONS,
    *EVENT_DIMENSIONS,
)
# A value of these is shown with the value it belongs to (Row.parent).
PARENT_OF: Final[dict[Dimension, VisitDimension]] = {
    "browser_version": "browser",
    "os_version": "os",
    "region": "country",
    "city": "country",
    "region_code": "country",
    "city_code": "country",
}

# The visit dimensions rolled up per value (sql/0008_segment_rollups.sql): a query
# filtered on one of them reads rollups. The ones people filter by most, each with few
# values a day, so the segment rollups stay a small multiple of the plain ones.
SEGMENTS: Final[tuple[VisitDimension, ...]] = ("source", "country", "browser", "os", "device")

# Visit dimensions over `sessions s`: the expression of the value, and of its parent.
VISIT_COLUMNS: Final[dict[VisitDimension, str]] = {
    "entry_page": "s.entry_path",
    "exit_page": "s.exit_path",
    # The hosts of those two pages; '' for visits stored before sql/0020_hostnames.sql.
    "entry_page_hostname": "s.entry_hostname",
    "exit_page_hostname": "s.exit_hostname",
    # As the `visits` view: a campaign's source first, then the referrer.
    "source": (
        "CASE WHEN s.utm_source <> '' THEN s.utm_source"
        " WHEN s.referrer_host <> '' THEN s.referrer_host ELSE '(direct)' END"
    ),
    "referrer": "s.referrer_host",
    # Decided at ingest from the first event's tags and referrer (enrich/channels.py);
    # '' for visits stored before sql/0013_channels.sql.
    "channel": "s.channel",
    "utm_source": "s.utm_source",
    "utm_medium": "s.utm_medium",
    "utm_campaign": "s.utm_campaign",
    "utm_content": "s.utm_content",
    "utm_term": "s.utm_term",
    "country": "s.country",
    "region": "s.region",
    "city": "s.city",
    # Plausible's codes of those two: ISO 3166-2 and the GeoNames id, where the GeoIP
    # database has them; '' for visits stored before sql/0021_place_codes.sql.
    "region_code": "s.region_code",
    "city_code": "s.city_code",
    "browser": "s.browser",
    "browser_version": "s.browser_version",
    "os": "s.os",
    "os_version": "s.os_version",
    "device": "s.device_type",
}
# Event dimensions over `events e`; "prop" reads the key given as a parameter.
EVENT_COLUMNS: Final[dict[EventDimension, str]] = {
    "page": "e.path",
    "event": "e.name",
    "prop": "(e.props ->> %(prop_key)s)",
    # The page URL's host; '' for events stored before sql/0020_hostnames.sql.
    "hostname": "e.hostname",
}
# Which event rows each event dimension groups (docs/read-model.md, Breakdowns).
EVENT_ROWS: Final[dict[EventDimension, str]] = {
    "page": "picolytics_is_pageview(e.name, e.path)",
    "event": "picolytics_is_custom_event(e.name)",
    "prop": "picolytics_is_custom_event(e.name) AND e.props ? %(prop_key)s",
    # As Plausible's event:hostname: pageviews and custom events alike.
    "hostname": "(picolytics_is_pageview(e.name, e.path) OR picolytics_is_custom_event(e.name))",
}
