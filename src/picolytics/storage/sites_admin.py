"""Sites as an operator sees them: `picolytics site list` and `picolytics site set`.

Each site has an IANA time zone (`sites.timezone`, default UTC) in which its periods
and day, week and month buckets are counted (docs/read-model.md). Changing it touches
no raw row: the rollups of the old zone simply stop matching (`rollup_days.timezone`),
so queries read those days from raw rows until the roller rolls them again in the new
zone. Days whose raw rows were pruned keep the rollup of their old zone, unused until
the site is set back to it (queries read rollups of the site's own zone only).
(storage/sites.py is something else: the writer's cache of site ids.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import date
from typing import Any, TypeVar

import psycopg

from picolytics.errors import SiteError, SiteOptionError
from picolytics.storage import database
from picolytics.storage.imported_days import LIST_IMPORTS

Connection = psycopg.Connection[tuple[Any, ...]]
T = TypeVar("T")

# The read model's migration (0006) adds sites.timezone and rollup_days.
SCHEMA_STATE = """
SELECT to_regclass('sites') IS NOT NULL,
       to_regclass('rollup_days') IS NOT NULL AND to_regclass('rollup_stale') IS NOT NULL
"""
# Imported history (migration 0014, docs/imports.md).
HAS_IMPORTS = "SELECT to_regclass('imports') IS NOT NULL"

# Per site (%(site)s): its zone, the first and last local day with raw rows (visits
# and events, each found by an index: one short scan) or rollups, and its rolled-up
# days by how a query can use them. One statement per site, each distributed table
# read by the site itself: Citus refuses subqueries correlated to its reference table
# sites, and routes this one to the site's shard.
SITE_IDS = "SELECT site_id FROM sites ORDER BY site_id"
LIST_SITE = """
SELECT s.domain, s.timezone,
       least((raw.first_at AT TIME ZONE s.timezone)::date, rolled.first_day) AS first_day,
       greatest((raw.last_at AT TIME ZONE s.timezone)::date, rolled.last_day) AS last_day,
       coalesce(rolled.usable, 0) AS rolled_up_days,
       coalesce(rolled.stale, 0) AS stale_days,
       coalesce(rolled.other_zone, 0) AS other_zone_days
FROM sites s
CROSS JOIN LATERAL (
    SELECT least((SELECT started_at FROM sessions
                  WHERE site_id = %(site)s ORDER BY started_at LIMIT 1),
                 (SELECT received_at FROM events
                  WHERE site_id = %(site)s ORDER BY received_at LIMIT 1)) AS first_at,
           greatest((SELECT last_seen_at FROM sessions
                     WHERE site_id = %(site)s ORDER BY last_seen_at DESC LIMIT 1),
                    (SELECT received_at FROM events
                     WHERE site_id = %(site)s ORDER BY received_at DESC LIMIT 1)) AS last_at
) raw
LEFT JOIN LATERAL (
    SELECT min(d.day) AS first_day, max(d.day) AS last_day,
           count(*) FILTER (WHERE d.timezone = s.timezone AND st.day IS NULL) AS usable,
           count(*) FILTER (WHERE d.timezone = s.timezone AND st.day IS NOT NULL) AS stale,
           count(*) FILTER (WHERE d.timezone <> s.timezone) AS other_zone
    FROM rollup_days d
    LEFT JOIN rollup_stale st ON st.site_id = d.site_id AND st.day = d.day
    WHERE d.site_id = %(site)s
) rolled ON true
WHERE s.site_id = %(site)s
"""

SELECT_SITE = "SELECT site_id, timezone FROM sites WHERE domain = %s FOR UPDATE"
SELECT_DOMAINS = "SELECT domain FROM sites ORDER BY site_id"
# PostgreSQL's own zone database: the name must be one of its zones (not merely an
# abbreviation or a POSIX rule, which AT TIME ZONE would also take), spelt as it is.
ZONE_EXISTS = "SELECT EXISTS (SELECT FROM pg_timezone_names WHERE name = %s)"
ZONE_SPELLINGS = "SELECT name FROM pg_timezone_names WHERE lower(name) = lower(%s) ORDER BY 1"
UPDATE_ZONE = "UPDATE sites SET timezone = %s WHERE site_id = %s"
# The site's rollups after the change: rolled in the new zone (usable again) or in
# another one, and of those how many the roller keeps as they are, by its rule
# (storage/roller.py, _catch_up_reason): not stale, and either starting before the
# raw horizon (the UTC midnight before the oldest raw event: prune may have taken some
# of its rows), or without raw events in the new zone's day while the old rollup
# counts something. tests/test_site_cli.py holds the two to the same answer.
ROLLUPS_BY_ZONE = """
WITH first_raw AS (
    SELECT date_trunc('day', (SELECT received_at FROM events WHERE site_id = %(site)s
                              ORDER BY received_at LIMIT 1), 'UTC') AS horizon
), rolled AS (
    SELECT d.day, d.timezone, st.day IS NOT NULL AS stale,
           d.day::timestamp AT TIME ZONE %(zone)s AS day_start,
           (d.day + 1)::timestamp AT TIME ZONE %(zone)s AS day_end
    FROM rollup_days d
    LEFT JOIN rollup_stale st ON st.site_id = d.site_id AND st.day = d.day
    WHERE d.site_id = %(site)s
)
SELECT count(*) FILTER (WHERE r.timezone = %(zone)s) AS in_new_zone,
       count(*) FILTER (WHERE r.timezone <> %(zone)s) AS in_other_zones,
       count(*) FILTER (
           WHERE r.timezone <> %(zone)s AND NOT r.stale
             AND NOT coalesce(
                 r.day_start >= f.horizon
                 AND (EXISTS (SELECT FROM events e
                              WHERE e.site_id = %(site)s
                                AND e.received_at >= r.day_start AND e.received_at < r.day_end)
                      OR NOT EXISTS (SELECT FROM rollup_visits v
                                     WHERE v.site_id = %(site)s AND v.day = r.day)
                         AND NOT EXISTS (SELECT FROM rollup_events v
                                         WHERE v.site_id = %(site)s AND v.day = r.day)),
                 false)
       ) AS kept
FROM rolled r
CROSS JOIN first_raw f
"""


@dataclass(frozen=True)
class SiteImport:
    """One import of a site's history, with the days it owns now."""

    import_id: int
    source: str  # "plausible" or "goatcounter"
    file_name: str
    first_day: date | None  # None: a later import replaced every one of its days
    last_day: date | None
    days: int


@dataclass(frozen=True)
class SiteSummary:
    """One line of `picolytics site list`."""

    domain: str
    timezone: str
    first_day: date | None  # the first local day with data (raw rows or rollups)
    last_day: date | None
    rolled_up_days: int  # rolled in the site's zone and not stale: read from rollups
    stale_days: int  # rolled in the site's zone, changed since (read raw, re-rolled)
    other_zone_days: int  # rolled in another zone (read raw until re-rolled)
    imports: tuple[SiteImport, ...] = ()  # imported history, by first day


@dataclass(frozen=True)
class ZoneChange:
    """What `set_timezone` did."""

    domain: str
    old: str
    new: str
    rolled_in_new_zone: int  # rollups of the new zone, from an earlier setting: used again
    rolled_in_other_zones: int  # no longer used; the roller rolls them again
    kept: int  # of those, without all their raw rows (none, or pruned): the roller keeps them

    @property
    def changed(self) -> bool:
        return self.old != self.new


# Said by every administration command (sites, goals) run before the first migration.
NO_TABLES = (
    "the database has no picolytics tables yet "
    "(run `picolytics migrate`, or `picolytics serve` to start collecting)"
)


def _check_schema(connection: Connection) -> None:
    row = connection.execute(SCHEMA_STATE).fetchone()
    has_sites, has_read_model = row if row else (False, False)
    if not has_sites:
        raise SiteError(NO_TABLES)
    if not has_read_model:
        raise SiteError("the database lacks the sites' time zones: run `picolytics migrate` first")


def list_sites(connection: Connection) -> list[SiteSummary]:
    """Every site, in the order they were first seen."""
    with connection.transaction():
        _check_schema(connection)
        sites = [
            SiteSummary(*row)
            for (site_id,) in connection.execute(SITE_IDS).fetchall()
            for row in connection.execute(LIST_SITE, {"site": site_id})
        ]
        row = connection.execute(HAS_IMPORTS).fetchone()
        if not (row and row[0]):
            return sites
        imports: dict[str, list[SiteImport]] = {}
        for domain, import_id, source, name, _, first, last, days in connection.execute(
            LIST_IMPORTS
        ):
            imports.setdefault(domain, []).append(
                SiteImport(import_id, source, name, first, last, days)
            )
        return [replace(site, imports=tuple(imports.get(site.domain, ()))) for site in sites]


def unknown_site(connection: Connection, domain: str) -> SiteOptionError:
    known = [name for (name,) in connection.execute(SELECT_DOMAINS)]
    if not known:
        return SiteOptionError(f"no site {domain!r}: the database has no sites yet")
    listed = ", ".join(known[:10]) + (f" and {len(known) - 10} more" if len(known) > 10 else "")
    return SiteOptionError(f"no site {domain!r} in the database (sites: {listed})")


def check_zone(connection: Connection, zone: str, flag: str = "--timezone") -> None:
    """The zone must be one of PostgreSQL's, spelt as PostgreSQL spells it."""
    row = connection.execute(ZONE_EXISTS, (zone,)).fetchone()
    if row and row[0]:
        return
    spellings = [name for (name,) in connection.execute(ZONE_SPELLINGS, (zone,))]
    hint = f" (did you mean {spellings[0]}?)" if spellings else " (e.g. Europe/Berlin, UTC)"
    raise SiteOptionError(f"{flag}: {zone!r} is not a time zone PostgreSQL knows{hint}")


MARK_ROLLED_IN_ZONE_STALE = """
INSERT INTO rollup_stale (site_id, day)
SELECT site_id, day FROM rollup_days WHERE site_id = %s AND timezone = %s
ORDER BY 1, 2
ON CONFLICT (site_id, day) DO UPDATE SET day = EXCLUDED.day
"""
# The open day's prefixes (migration 0016, storage/rollup_prefix.py) of the old zone.
HAS_PREFIXES = "SELECT to_regclass('rollup_prefix') IS NOT NULL"
DROP_PREFIXES = "DELETE FROM rollup_prefix WHERE site_id = %s"


def set_timezone(connection: Connection, domain: str, zone: str) -> ZoneChange:
    """Set the site's zone in one transaction; raw rows and rollups stay as they are.

    `zone` must already be one Python knows (stats/periods.py checks that); PostgreSQL
    must know it too, since the queries count local days with AT TIME ZONE."""
    with connection.transaction():
        _check_schema(connection)
        row = connection.execute(SELECT_SITE, (domain,)).fetchone()
        if row is None:
            raise unknown_site(connection, domain)
        site_id, old = row
        check_zone(connection, zone)
        if old != zone:
            connection.execute(UPDATE_ZONE, (zone, site_id))
            # Late writes were marked in the other zone meanwhile: the days rolled in
            # this one may have changed unmarked, so they read raw until rolled again.
            connection.execute(MARK_ROLLED_IN_ZONE_STALE, (site_id, zone))
            # After a change and back, a prefix of the old zone may have changed unmarked
            # (marks went to the other zone's days): the roller rolls them again. Here
            # and not in a trigger on sites, which Citus refuses (sql/0016).
            has_prefixes = connection.execute(HAS_PREFIXES).fetchone()
            if has_prefixes and has_prefixes[0]:
                connection.execute(DROP_PREFIXES, (site_id,))
        counts = connection.execute(ROLLUPS_BY_ZONE, {"zone": zone, "site": site_id}).fetchone()
        assert counts is not None  # an aggregate without GROUP BY: one row
    return ZoneChange(domain, old, zone, *counts)


def _days(count: int) -> str:
    return f"{count} day{'' if count == 1 else 's'}"


def summary(change: ZoneChange) -> list[str]:
    """What the change means, in a few lines for the terminal."""
    if not change.changed:
        return [f"{change.domain} is already in {change.new}: nothing changed"]
    lines = [
        f"{change.domain}: time zone {change.old} -> {change.new}",
        "Raw events and visits are unchanged; periods and day, week and month buckets "
        f"are now local days in {change.new}.",
    ]
    stale = change.rolled_in_other_zones
    if stale:
        lines.append(
            f"{_days(stale)} {'was' if stale == 1 else 'were'} rolled up in another zone: "
            "queries read them from raw rows until the roller rolls them again in "
            f"{change.new} (the server does so by itself; `picolytics rollup` does it now)."
        )
    if change.kept:
        one = change.kept == 1
        lines.append(
            f"{change.kept} of them {'lacks' if one else 'lack'} complete raw rows (no"
            f" traffic, or pruned) and {'keeps its' if one else 'keep their'} rollup in the"
            " old zone, unused until the site is set back to it; in the new zone, whatever"
            " raw rows are left answer."
        )
    if change.rolled_in_new_zone:
        lines.append(
            f"{_days(change.rolled_in_new_zone)} already rolled up in {change.new} "
            f"{'is' if change.rolled_in_new_zone == 1 else 'are'} read from the rollups again."
        )
    return lines


def connected(conninfo: str, action: Callable[[Connection], T]) -> T:
    """Run `action` on a new connection; a database failure becomes a SiteError."""
    return database.connected(
        conninfo,
        action,
        lambda detail: SiteError(f"cannot read or change the sites in the database: {detail}"),
    )


COLUMNS = ("domain", "time zone", "first day", "last day", "rolled up")


def _rolled_up(site: SiteSummary) -> str:
    text = _days(site.rolled_up_days)
    others = [
        f"{site.stale_days} stale" if site.stale_days else "",
        f"{site.other_zone_days} in another zone" if site.other_zone_days else "",
    ]
    notes = ", ".join(note for note in others if note)
    return f"{text} ({notes})" if notes else text


def _imported(site: SiteSummary) -> str:
    ranges = [
        f"{found.first_day}..{found.last_day} ({found.source})"
        for found in site.imports
        if found.days
    ]
    return ", ".join(ranges) or "-"


def table(sites: list[SiteSummary]) -> list[str]:
    """`picolytics site list` for a terminal: one aligned line per site, with a column
    of imported days once some site has an import."""
    if not sites:
        return ["no sites yet (a site appears with its first event)"]
    with_imports = any(site.imports for site in sites)
    columns = (*COLUMNS, "imported") if with_imports else COLUMNS
    rows = [
        (
            site.domain,
            site.timezone,
            str(site.first_day or "-"),
            str(site.last_day or "-"),
            _rolled_up(site),
            *((_imported(site),) if with_imports else ()),
        )
        for site in sites
    ]
    widths = [max(len(row[n]) for row in [columns, *rows]) for n in range(len(columns))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [columns, *rows]
    ]


def _json(value: Any) -> Any:
    return value.isoformat() if isinstance(value, date) else value


def document(sites: list[SiteSummary]) -> list[dict[str, Any]]:
    """`picolytics site list --json`: days as YYYY-MM-DD (or null), counts as numbers;
    `imports` lists each import (id, source, file, first and last day it owns, days)."""
    return [
        {
            key: [{k: _json(v) for k, v in found.items()} for found in value]
            if key == "imports"
            else _json(value)
            for key, value in asdict(site).items()
        }
        for site in sites
    ]
