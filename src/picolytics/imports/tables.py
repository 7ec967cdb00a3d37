"""The ten tables of Plausible's CSV import format, with their columns in the order and
under the names Plausible documents (its `csv-import` page), as sql/0014_imports.sql
stores them. Every file starts with `date`; the database calls that column `day`.

One home for the format: the Plausible reader and writer, the GoatCounter reader and
the store all take the columns from here.
"""

from __future__ import annotations

from typing import Final, Literal

TableName = Literal[
    "imported_visitors",
    "imported_sources",
    "imported_pages",
    "imported_entry_pages",
    "imported_exit_pages",
    "imported_custom_events",
    "imported_locations",
    "imported_devices",
    "imported_browsers",
    "imported_operating_systems",
]

_VISIT_SUMS: Final = ("visitors", "visits", "visit_duration", "bounces", "pageviews")

# Per table: its columns after `date`, text columns first as documented.
COLUMNS: Final[dict[TableName, tuple[str, ...]]] = {
    "imported_visitors": ("visitors", "pageviews", "bounces", "visits", "visit_duration"),
    "imported_sources": (
        "source", "referrer", "utm_source", "utm_medium", "utm_campaign", "utm_content",
        "utm_term", "pageviews", "visitors", "visits", "visit_duration", "bounces",
    ),
    "imported_pages": ("hostname", "page", "visits", "visitors", "pageviews"),
    "imported_entry_pages": (
        "entry_page", "visitors", "entrances", "visit_duration", "bounces", "pageviews",
    ),
    "imported_exit_pages": (
        "exit_page", "visitors", "visit_duration", "exits", "bounces", "pageviews",
    ),
    "imported_custom_events": ("name", "link_url", "path", "visitors", "events"),
    "imported_locations": ("country", "region", "city", *_VISIT_SUMS),
    "imported_devices": ("device", *_VISIT_SUMS),
    "imported_browsers": ("browser", "browser_version", *_VISIT_SUMS),
    "imported_operating_systems": (
        "operating_system", "operating_system_version", *_VISIT_SUMS,
    ),
}  # fmt: skip

TABLES: Final[tuple[TableName, ...]] = tuple(COLUMNS)

# Columns that hold text (everything else is a count or seconds, a non-negative integer).
# `city` is a GeoNames id in Plausible's files, kept as text ('' or '0': none).
TEXT_COLUMNS: Final = frozenset(
    {
        "source", "referrer", "utm_source", "utm_medium", "utm_campaign", "utm_content",
        "utm_term", "hostname", "page", "entry_page", "exit_page", "name", "link_url",
        "path", "country", "region", "city", "device", "browser", "browser_version",
        "operating_system", "operating_system_version",
    }
)  # fmt: skip


def header(table: TableName) -> tuple[str, ...]:
    """The header line of the table's CSV file."""
    return ("date", *COLUMNS[table])
