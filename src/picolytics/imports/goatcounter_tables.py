"""GoatCounter's visits, page hits and event hits (goatcounter_aggregate.py) summed into
the rows of the ten imported tables (docs/imports.md, GoatCounter).

GoatCounter has no visitor id beyond its session (which lasts up to 8 hours), so each
visit counts one visitor: visitors equal visits in every table, and a day's visitors of
a page or an event are the distinct sessions that had it. A visit's duration is its
last minus its first pageview (whole seconds), a bounce is a visit of one pageview, its
entry and exit pages its first and last. Plausible's columns GoatCounter has nothing
for stay empty: hostname, utm_medium/campaign/content/term, city, link_url and path.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Final

from picolytics.imports.batch import ImportedRow
from picolytics.imports.goatcounter_aggregate import GoatCounterHits, Who
from picolytics.imports.tables import TableName

# Per key of a visit table (the day, then text): [visitors, visits, visit_duration,
# bounces, pageviews].
Key = tuple[date, *tuple[str, ...]]
Sums = dict[Key, list[int]]
_KINDS: Final = ("day", "source", "entry", "exit", "place", "device", "browser", "os")
# [visitors, visits, visit_duration, bounces, pageviews] in each table's order.
_ORDERS: Final[dict[str, Callable[[list[int]], tuple[int, ...]]]] = {
    "day": lambda t: (t[0], t[4], t[3], t[1], t[2]),  # visitors pageviews bounces visits dur.
    "source": lambda t: (t[4], t[0], t[1], t[2], t[3]),  # pageviews visitors visits dur. bounces
    "entry": lambda t: (t[0], t[1], t[2], t[3], t[4]),  # visitors entrances dur. bounces pv
    "exit": lambda t: (t[0], t[2], t[1], t[3], t[4]),  # visitors dur. exits bounces pageviews
}
_AS_IS: Final[Callable[[list[int]], tuple[int, ...]]] = tuple


def table_rows(hits: GoatCounterHits) -> dict[TableName, list[ImportedRow]]:
    """The ten tables' rows in tables.COLUMNS order, each table sorted; empty ones left out."""
    sums = _visit_sums(hits)

    def rows(kind: str, blanks: int = 0) -> list[ImportedRow]:
        # `blanks` empty text columns go after the key (those GoatCounter has not).
        order = _ORDERS.get(kind, _AS_IS)
        empty = ("",) * blanks
        return sorted(_row(key, empty, order(totals)) for key, totals in sums[kind].items())

    pages = _per_name(hits.page_hits)
    events = _per_name(hits.event_hits)
    out: dict[TableName, list[ImportedRow]] = {
        "imported_visitors": rows("day"),
        "imported_sources": rows("source", blanks=4),
        # Plausible's page rows: hostname (GoatCounter has none), page, visits, visitors, pv.
        "imported_pages": sorted(
            (day, "", page, sessions, sessions, views)
            for (day, page), (sessions, views) in pages.items()
        ),
        "imported_entry_pages": rows("entry"),
        "imported_exit_pages": rows("exit"),
        "imported_custom_events": sorted(
            (day, name, "", "", sessions, count)
            for (day, name), (sessions, count) in events.items()
        ),
        "imported_locations": rows("place", blanks=1),  # city: none
        "imported_devices": rows("device"),
        "imported_browsers": rows("browser"),
        "imported_operating_systems": rows("os"),
    }
    return {table: found for table, found in out.items() if found}


def _row(key: Key, empty: tuple[str, ...], totals: tuple[int, ...]) -> ImportedRow:
    values: tuple[str | int, ...] = (*key[1:], *empty, *totals)
    return (key[0], *values)


def _visit_sums(hits: GoatCounterHits) -> dict[str, Sums]:
    sums: dict[str, Sums] = {kind: {} for kind in _KINDS}
    for (day, _who), visit in hits.visits.items():
        pageviews = visit.pageviews
        duration = int(visit.last - visit.first)
        bounce = 1 if pageviews == 1 else 0
        country, region, device, browser, browser_version, os_name, os_version = visit.agent
        keys: tuple[tuple[str, Key], ...] = (
            ("day", (day,)),
            ("source", (day, *visit.referrer)),
            ("entry", (day, visit.entry)),
            ("exit", (day, visit.exit)),
            ("place", (day, country, region)),
            ("device", (day, device)),
            ("browser", (day, browser, browser_version)),
            ("os", (day, os_name, os_version)),
        )
        for kind, key in keys:
            totals = sums[kind].get(key)
            if totals is None:
                sums[kind][key] = [1, 1, duration, bounce, pageviews]
            else:
                totals[0] += 1
                totals[1] += 1
                totals[2] += duration
                totals[3] += bounce
                totals[4] += pageviews
    return sums


def _per_name(hits: dict[tuple[date, str, Who], int]) -> dict[tuple[date, str], list[int]]:
    """(day, name) -> [distinct sessions, hits]."""
    out: dict[tuple[date, str], list[int]] = {}
    for (day, name, _who), count in hits.items():
        totals = out.get((day, name))
        if totals is None:
            out[day, name] = [1, count]
        else:
            totals[0] += 1
            totals[1] += count
    return out
