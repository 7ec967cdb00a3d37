"""A site's native numbers as Plausible's CSV export: a zip of the ten files, named
`imported_{table}_{YYYYMMDD}_{YYYYMMDD}.csv` as Plausible names them, over local days
of the site's zone (docs/imports.md, The export).

Every number is an answer of the query layer (stats/engine.py): one Query per file and
stretch of days, with interval "day" and the file's one dimension as breakdown, so the
export says what the Stats API says by construction. Imported data is never exported
(Plausible does the same). What the query layer cannot group by is filled as follows:

- imported_sources: a row per day and source; `referrer` is the source itself when
  every visit of it that day came without UTM tags (the source is then the referrer's
  host), `utm_source` the source when every visit of it carried one; the other UTM
  columns stay empty. Direct visits, source "(direct)", have source "".
- imported_locations: a row per day and country; region "" and city 0 (we keep names,
  Plausible wants ISO 3166-2 codes and GeoNames ids).
- imported_custom_events: a row per day and event name; link_url and path empty.
- imported_devices: the device type capitalised, as Plausible writes it ("Desktop").
- visit_duration: the total seconds (the query layer's `total_duration`), exact.
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Final

from psycopg import AsyncConnection

from picolytics.dimensions import Dimension, Metric
from picolytics.errors import ImportOptionError
from picolytics.imports.tables import COLUMNS, TABLES, TEXT_COLUMNS, TableName, header
from picolytics.stats import engine, periods
from picolytics.stats.query import And, Breakdown, Condition, Filter, Query, Row
from picolytics.storage.imported_days import SELECT_CUT

Connection = AsyncConnection[Any]
Progress = Callable[[int, int], None]

ONE_SNAPSHOT: Final = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"
CHUNK_DAYS: Final = 31  # days per query: answers stay small, progress moves
TIMEOUT_S: Final = 60.0
# The file's breakdown (None: the day alone).
BREAKDOWNS: Final[dict[TableName, Dimension | None]] = {
    "imported_visitors": None,
    "imported_sources": "source",
    "imported_pages": "page",
    "imported_entry_pages": "entry_page",
    "imported_exit_pages": "exit_page",
    "imported_custom_events": "event",
    "imported_locations": "country",
    "imported_devices": "device",
    "imported_browsers": "browser_version",
    "imported_operating_systems": "os_version",
}
# The metric behind each count column of the format.
METRIC_OF: Final[dict[str, Metric]] = {
    "visitors": "visitors",
    "visits": "visits",
    "pageviews": "pageviews",
    "bounces": "bounces",
    "visit_duration": "total_duration",
    "entrances": "visits",
    "exits": "visits",
    "events": "events",
}
DIRECT: Final = "(direct)"
NO_UTM: Final[Filter] = And(
    tuple(
        Condition(name, "is", ("",))
        for name in ("utm_source", "utm_medium", "utm_campaign", "utm_content", "utm_term")
    )
)
HAS_UTM_SOURCE: Final[Filter] = Condition("utm_source", "is_not", ("",))


@dataclass(frozen=True)
class ExportSite:
    """The site exported, and the days it has native data on (None: none)."""

    site_id: int
    domain: str
    timezone: str
    first_native_day: date | None
    today: date  # local


SELECT_SITE: Final = "SELECT site_id, domain, timezone FROM sites WHERE domain = %s"


async def find_site(connection: Connection, domain: str) -> ExportSite:
    """The site by its domain (as sites.domain spells it), or ImportOptionError."""
    async with connection.transaction():
        cursor = await connection.execute(SELECT_SITE, (domain,))
        row = await cursor.fetchone()
        if row is None:
            raise ImportOptionError(f"--site: no site {domain!r} in the database")
        # Its cut by id, a statement of its own (on Citus, in the site's shard).
        cursor = await connection.execute(SELECT_CUT, {"site": row[0]})
        cut = await cursor.fetchone()
        assert cut is not None  # the site exists
    return ExportSite(*row, *cut)


def file_name(table: TableName, first: date, last: date) -> str:
    return f"{table}_{first:%Y%m%d}_{last:%Y%m%d}.csv"


def _chunks(first: date, last: date) -> Iterator[tuple[date, date]]:
    start = first
    while start <= last:
        end = min(last, start + timedelta(days=CHUNK_DAYS - 1))
        yield start, end
        start = end + timedelta(days=1)


def _metrics(table: TableName) -> tuple[Metric, ...]:
    return tuple(dict.fromkeys(METRIC_OF[c] for c in COLUMNS[table] if c not in TEXT_COLUMNS))


def _counts(table: TableName, row: Row) -> list[int]:
    return [_int(row, METRIC_OF[c]) for c in COLUMNS[table] if c not in TEXT_COLUMNS]


def _int(row: Row, metric: Metric) -> int:
    value = row.metrics[metric]
    return int(value) if value is not None else 0


class _Exporter:
    def __init__(self, connection: Connection, site: ExportSite) -> None:
        self.connection, self.site = connection, site

    async def ask(
        self, table: TableName, first: date, last: date, filters: Filter | None = None,
        metrics: tuple[Metric, ...] | None = None,
    ) -> tuple[Row, ...]:  # fmt: skip
        dimension = BREAKDOWNS[table]
        query = Query(
            site_ids=(self.site.site_id,),
            period=periods.days(first, last, self.site.timezone),
            metrics=metrics or _metrics(table),
            interval="day",
            breakdown=Breakdown(dimension) if dimension else None,
            filters=filters,
            # A stable file, whatever the counts: by day, then value.
            order_by=(("time", "asc"), *((("value", "asc"),) if dimension else ())),
        )
        result = await engine.run(self.connection, query, timeout_s=TIMEOUT_S)
        return result.rows

    async def rows(self, table: TableName, first: date, last: date) -> list[list[Any]]:
        """The file's rows for the days, each as the format's columns."""
        found = await self.ask(table, first, last)
        if table == "imported_sources":
            return await self._sources(found, first, last)
        out = []
        for row in found:
            assert isinstance(row.time, date)
            out.append([row.time.isoformat(), *self._texts(table, row), *_counts(table, row)])
        return out

    def _texts(self, table: TableName, row: Row) -> list[Any]:
        value = row.value or ""
        if table == "imported_pages":
            return [self.site.domain, value]
        if table == "imported_custom_events":
            return [value, "", ""]
        if table == "imported_locations":
            return [value, "", 0]
        if table in ("imported_browsers", "imported_operating_systems"):
            return [row.parent, value]
        if table == "imported_devices":  # Plausible's spelling: "Desktop"
            return [value[:1].upper() + value[1:]]
        return [value] if BREAKDOWNS[table] else []

    async def _sources(self, found: tuple[Row, ...], first: date, last: date) -> list[list[Any]]:
        visits_only: tuple[Metric, ...] = ("visits",)
        plain = await self.ask("imported_sources", first, last, NO_UTM, visits_only)
        tagged = await self.ask("imported_sources", first, last, HAS_UTM_SOURCE, visits_only)
        without = {(r.time, r.value): r.metrics["visits"] for r in plain}
        with_utm = {(r.time, r.value): r.metrics["visits"] for r in tagged}
        out = []
        for row in found:
            assert isinstance(row.time, date)
            source = row.value or ""
            visits, key = row.metrics["visits"], (row.time, row.value)
            referrer = source if without.get(key) == visits and source != DIRECT else ""
            utm_source = source if with_utm.get(key) == visits else ""
            shown = "" if source == DIRECT else source
            texts = [shown, referrer, utm_source, "", "", "", ""]
            out.append([row.time.isoformat(), *texts, *_counts("imported_sources", row)])
        return out


async def export(
    connection: Connection,
    site: ExportSite,
    first: date,
    last: date,
    out: Path,
    *,
    progress: Progress | None = None,
) -> dict[TableName, int]:
    """Write the site's native numbers of the local days `first` to `last` as a zip
    of the ten files to `out`, all read from one snapshot; the rows per file."""
    chunks = list(_chunks(first, last))
    total, done = len(chunks) * len(TABLES), 0
    exporter = _Exporter(connection, site)
    counts: dict[TableName, int] = {}
    async with connection.transaction():
        await connection.execute(ONE_SNAPSHOT)
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
            for table in TABLES:
                with (
                    archive.open(file_name(table, first, last), "w") as raw,
                    io.TextIOWrapper(raw, encoding="utf-8", newline="") as text,
                ):
                    writer = csv.writer(text, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n")
                    writer.writerow(header(table))
                    counts[table] = 0
                    for chunk_first, chunk_last in chunks:
                        rows = await exporter.rows(table, chunk_first, chunk_last)
                        writer.writerows(rows)
                        counts[table] += len(rows)
                        done += 1
                        if progress is not None:
                            progress(done, total)
    return counts
