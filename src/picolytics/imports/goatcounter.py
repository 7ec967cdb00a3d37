"""`picolytics import goatcounter`'s reader: one GoatCounter CSV export (format version
2, plain or gzipped) read into an ImportBatch of the ten imported tables
(docs/imports.md, GoatCounter).

The file is read once, as a stream: goatcounter_csv.py checks its bytes, lines and
header and hashes it, goatcounter_aggregate.py gathers its hits into visits per local
day of the site's zone (UTC unless told), goatcounter_tables.py sums those. Nothing of
a single hit is kept: the file's UserAgent column (blank in today's exports) is never
read, and the file has no IP address.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from picolytics.errors import ImportOptionError
from picolytics.imports.batch import ImportBatch
from picolytics.imports.goatcounter_aggregate import GoatCounterHits
from picolytics.imports.goatcounter_csv import GoatCounterCsv
from picolytics.imports.goatcounter_tables import table_rows

BOT_ROWS = "bot rows"  # the key of ImportBatch.skipped


def read_goatcounter(
    path: Path, progress: Callable[[int], None] | None = None, timezone: str = "UTC"
) -> ImportBatch:
    """The daily sums of a GoatCounter CSV export, by local days of `timezone`.

    `progress` gets the bytes of the file read so far. A malformed file raises
    ImportFileError naming the file, line and column; an unknown zone ImportOptionError."""
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ImportOptionError(f"unknown time zone {timezone!r}") from None
    stream = GoatCounterCsv(path, progress)
    hits = GoatCounterHits(zone)
    hits.add_all(stream, stream.fail)
    skipped = {BOT_ROWS: hits.bots} if hits.bots else {}
    return ImportBatch("goatcounter", str(path), stream.sha256, table_rows(hits), skipped)
