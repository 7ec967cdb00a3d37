"""Which imported tables can answer a query, and how (docs/imports.md, How imported
data is counted): the mapping of the query layer's dimensions and components onto the
ten tables of Plausible's CSV import format (sql/0014_imports.sql), and the rule of
what imported data can answer, Plausible's: a breakdown reads its dimension's table,
and every filter condition must be on a dimension of that same table (without a
breakdown: all conditions on one table). Pure: no SQL runs here.

The tables hold daily sums per value of a few dimensions grouped together (country,
region and city; browser and its version; OS and its version; a custom event's name
and its `url` or `path` property), so no other combination can be told apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from picolytics.dimensions import PARENT_OF, Dimension, Metric
from picolytics.stats.filters import behavioral, conditions
from picolytics.stats.query import Breakdown, Condition, Query

# The components (stats/sql.py) of the tables with a visit's sums. Imported pageviews
# are the pageviews of those visits, for views per visit and a visit breakdown alike.
_VISIT_SUMS: Final = {
    "visitors": "r.visitors",
    "visits": "r.visits",
    "bounces": "r.bounces",
    "duration_s": "r.visit_duration",
    "session_pageviews": "r.pageviews",
    "pageviews": "r.pageviews",
}

# Per table: the components its rows hold. A metric whose components a table lacks
# cannot be answered from it (custom events have no visits, pages no bounces, and no
# table but the totals holds the custom events of visits of a value).
COMPONENTS: Final[dict[str, dict[str, str]]] = {
    "imported_visitors": _VISIT_SUMS | {"events": "r.pageviews"},
    "imported_sources": _VISIT_SUMS,
    "imported_locations": _VISIT_SUMS,
    "imported_devices": _VISIT_SUMS,
    "imported_browsers": _VISIT_SUMS,
    "imported_operating_systems": _VISIT_SUMS,
    "imported_entry_pages": _VISIT_SUMS | {"visits": "r.entrances"},
    "imported_exit_pages": _VISIT_SUMS | {"visits": "r.exits"},
    "imported_pages": {
        "visitors": "r.visitors",
        "visits": "r.visits",
        "pageviews": "r.pageviews",
        "events": "r.pageviews",
    },
    "imported_custom_events": {
        "visitors": "r.visitors",
        "pageviews": "0::bigint",  # custom events only, as a native breakdown by event
        "events": "r.events",
    },
}

# The components each metric is made of (stats/assemble.py).
NEEDS: Final[dict[Metric, tuple[str, ...]]] = {
    "visitors": ("visitors",),
    "visits": ("visits",),
    "bounces": ("bounces",),
    "total_duration": ("duration_s",),
    "bounce_rate": ("bounces", "visits"),
    "visit_duration": ("duration_s", "visits"),
    "views_per_visit": ("session_pageviews", "visits"),
    "pageviews": ("pageviews",),
    "events": ("events",),
}

# Each dimension's table, and its value there as SQL over the table's row `r`.
# Plausible writes a direct visit's source as '' (or "Direct / None"), picolytics as
# "(direct)"; its devices are capitalised ("Desktop"), picolytics' lower case; its
# city is a GeoNames id, '0' for none, which picolytics writes ''. Regions (ISO 3166-2
# codes) and cities (ids) stay as they are: they never merge with picolytics' names.
_SOURCES: Final = "imported_sources"
TABLE_OF: Final[dict[Dimension, str]] = {
    "source": _SOURCES,
    "referrer": _SOURCES,
    "utm_source": _SOURCES,
    "utm_medium": _SOURCES,
    "utm_campaign": _SOURCES,
    "utm_content": _SOURCES,
    "utm_term": _SOURCES,
    "page": "imported_pages",
    "entry_page": "imported_entry_pages",
    "exit_page": "imported_exit_pages",
    "country": "imported_locations",
    "region": "imported_locations",
    "city": "imported_locations",
    "browser": "imported_browsers",
    "browser_version": "imported_browsers",
    "os": "imported_operating_systems",
    "os_version": "imported_operating_systems",
    "device": "imported_devices",
    "event": "imported_custom_events",
    "prop": "imported_custom_events",
}
COLUMN_OF: Final[dict[Dimension, str]] = {
    "source": "CASE WHEN r.source IN ('', 'Direct / None') THEN '(direct)' ELSE r.source END",
    "referrer": "r.referrer",
    "utm_source": "r.utm_source",
    "utm_medium": "r.utm_medium",
    "utm_campaign": "r.utm_campaign",
    "utm_content": "r.utm_content",
    "utm_term": "r.utm_term",
    "page": "r.page",
    "entry_page": "r.entry_page",
    "exit_page": "r.exit_page",
    "country": "r.country",
    "region": "r.region",
    "city": "CASE WHEN r.city = '0' THEN '' ELSE r.city END",
    "browser": "r.browser",
    "browser_version": "r.browser_version",
    "os": "r.operating_system",
    "os_version": "r.operating_system_version",
    "device": "lower(r.device)",
    "event": "r.name",
}
# The two properties the format keeps, each in a column of its own ('' where an event
# has none: such a row holds no value of the property).
PROP_COLUMNS: Final = {"url": "r.link_url", "path": "r.path"}


def column(dimension: Dimension, prop_key: str | None) -> str | None:
    """The value of a dimension (with its property's key) in its table, if it has one."""
    if dimension == "prop":
        return PROP_COLUMNS.get(prop_key or "")
    return COLUMN_OF.get(dimension)


def parent_column(dimension: Dimension) -> str:
    parent = PARENT_OF.get(dimension)
    return COLUMN_OF[parent] if parent is not None else "''"


@dataclass(frozen=True, slots=True)
class Read:
    """One imported table read as a part: its value and parent (None: no breakdown),
    and the only components it gives (empty: all it holds)."""

    table: str
    value: str | None = None
    parent: str = "''"
    only: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Plan:
    """How imported data answers a query: tables read with the query's filter, or the
    goals (a breakdown by goal, stats/imported_sql.py)."""

    reads: tuple[Read, ...] = ()
    goals: bool = False
    unsupported: bool = False


UNSUPPORTED: Final = Plan(unsupported=True)


def _answers(table: str, metrics: tuple[Metric, ...]) -> bool:
    held = COMPONENTS[table]
    return all(need in held for metric in metrics for need in NEEDS[metric])


def _table_of(condition: Condition) -> str | None:
    if column(condition.dimension, condition.prop_key) is None:
        return None  # channel, a property the format does not keep, a goal
    return TABLE_OF.get(condition.dimension)


def _filter_table(query: Query) -> tuple[bool, str | None]:
    """Can the filter be read from imported rows, and from which table (None: no
    filter)? Every condition must have a column in one and the same table."""
    if query.filters is None:
        return True, None
    if behavioral(query.filters):
        return False, None  # which events a visit had: no imported table holds it
    tables = {_table_of(c) for c in conditions(query.filters)}
    if None in tables or len(tables) != 1:
        return False, None
    return True, next(iter(tables))


def _totals(query: Query, filtered: str | None) -> Plan:
    if filtered is not None:
        if not _answers(filtered, query.metrics):
            return UNSUPPORTED
        return Plan(reads=(Read(filtered),))
    reads = [Read("imported_visitors")]
    if "events" in query.metrics:  # pageviews and custom events
        reads.append(Read("imported_custom_events", only=("events",)))
    return Plan(reads=tuple(reads))


def _by_goal(query: Query, filtered: str | None) -> Plan:
    # Event goals read custom events and page goals pages: a filter could not be on both.
    tables = ("imported_pages", "imported_custom_events")
    if filtered is not None or not all(_answers(t, query.metrics) for t in tables):
        return UNSUPPORTED
    return Plan(goals=True)


def _by_value(query: Query, breakdown: Breakdown, filtered: str | None) -> Plan:
    value = column(breakdown.dimension, breakdown.prop_key)
    table = TABLE_OF.get(breakdown.dimension)
    if value is None or table is None or filtered not in (None, table):
        return UNSUPPORTED
    if not _answers(table, query.metrics):
        return UNSUPPORTED
    return Plan(reads=(Read(table, value, parent_column(breakdown.dimension)),))


def plan(query: Query) -> Plan:
    """The plan for a query whose goal conditions are resolved (stats/goal_parts.py),
    or UNSUPPORTED when imported data cannot answer it."""
    readable, filtered = _filter_table(query)
    breakdown = query.breakdown
    if not readable:
        return UNSUPPORTED
    if breakdown is None:
        return _totals(query, filtered)
    if breakdown.dimension == "goal":
        return _by_goal(query, filtered)
    return _by_value(query, breakdown, filtered)
