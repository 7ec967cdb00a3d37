"""Time `picolytics import goatcounter` on a realistic GoatCounter export (issue 20).

Usage: python scripts/bench_import.py [--rows 1M] [--dsn CONNINFO] [--data-dir PATH]
       [--no-store] [--keep DIR]          (make bench-import ARGS="--rows 200k")

It writes a GoatCounter CSV export of format version 2 (the header exactly as
GoatCounter's exportcsv.go writes it) with --rows hits over the 365 days before today
(UTC), in time order as GoatCounter exports them: sessions of 1 to 12 pageviews
(about 3.2 a session, 40 % of one), a few thousand pages with a long tail, ~60
referrers of all four schemes (about 45 % of sessions have none), browsers, systems,
screen widths, countries with regions, 5 % events and 1 % bot rows. Once plain and once
gzipped; then it times imports/goatcounter.read_goatcounter on each, and the whole
import (read, then imports/store.store by COPY in one transaction) on the plain file,
printing seconds, rows/s and the peak memory of this process (getrusage, which only
grows: each step's figure is the peak so far).

The database: --dsn, else PICOLYTICS_BENCH_DSN, else an embedded PostgreSQL in
--data-dir (kept) or a temporary folder (removed). Migrations are applied; the import
goes to the site bench-import.example (importing again replaces it; nothing else is
touched). The target: 1 M rows in at most 60 s on 2 cores, the store included.
Benchmarks print numbers; nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import os
import random
import resource
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, TextIO

import psycopg
from bench_db import database

from picolytics.imports.goatcounter import read_goatcounter
from picolytics.imports.store import store
from picolytics.storage import migrate

SITE: Final = "bench-import.example"
HEADER: Final = (
    "2Path", "Title", "Event", "UserAgent", "Browser", "System", "Session", "Bot",
    "Referrer", "Referrer scheme", "Screen size", "Location", "FirstVisit", "Date",
)  # fmt: skip
BROWSERS: Final = (
    ("Chrome 120", 40), ("Chrome 119", 10), ("Firefox 121", 12), ("Safari 17.2", 15),
    ("Edge 120", 8), ("Samsung Internet 23.0", 3), ("Opera 105", 2), ("Chrome ", 1),
)  # fmt: skip
SYSTEMS: Final = (
    ("Windows 10", 35), ("macOS 14.2", 18), ("iOS 17.2", 17), ("Android 14", 20),
    ("Linux ", 6), ("Chrome OS 15633", 2), ("Windows 7", 1),
)  # fmt: skip
SCREENS: Final = (
    ("390,0,1", 25), ("412,0,1", 10), ("768,0,1", 5), ("1280,0,1", 15), ("1440,0,1", 10),
    ("1920,0,1", 25), ("2560,0,1", 5), ("0,0,1", 5),
)  # fmt: skip
COUNTRIES: Final = ("US", "DE", "GB", "FR", "NL", "IN", "CA", "AU", "PL", "SE", "BR", "JP")
REGIONS: Final = {"US": ("US-CA", "US-NY", "US-TX", "US-WA"), "DE": ("DE-BE", "DE-BY")}
GENERATED: Final = ("Google", "Hacker News", "Email", "RSS", "Yandex", "Baidu")
CAMPAIGNS: Final = ("newsletter", "mastodon", "spring-sale", "partner")


def size(text: str) -> int:
    multiplier = {"k": 1_000, "m": 1_000_000}.get(text[-1:].lower(), 1)
    digits = text[:-1] if multiplier > 1 else text
    try:
        return int(float(digits) * multiplier)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size like 1M or 200k") from None


def weighted(pairs: tuple[tuple[str, int], ...]) -> Callable[[], str]:
    values = [value for value, _ in pairs]
    weights = [weight for _, weight in pairs]
    return lambda: random.choices(values, weights)[0]


def write_export(out: TextIO, rows: int) -> int:
    """Write `rows` hits (and the header); the number of bot rows among them."""
    random.seed(20)
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER)
    browser, system, screen = weighted(BROWSERS), weighted(SYSTEMS), weighted(SCREENS)
    pages = [f"/blog/post-{n}.html" for n in range(3000)] + ["/", "/about", "/pricing"]
    hosts = [f"news{n}.example.org" for n in range(40)] + ["www.reddit.com", "github.com"]
    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = end - timedelta(days=365)
    span = int((end - start).total_seconds()) - 4 * 3600  # sessions end before today
    # Sessions' start times, sorted, so the rows come out about in time order.
    sessions = max(1, rows * 10 // 32)
    starts = sorted(random.randrange(span) for _ in range(sessions))
    written = bots = 0
    for number, offset in enumerate(starts):
        session = f"{random.getrandbits(60):x}-{number:x}"
        agent = (browser(), system(), screen())
        country = random.choice(COUNTRIES)
        location = random.choice(REGIONS.get(country, (country,)))
        draw = random.random()
        if draw < 0.45:
            ref, scheme = "", ""
        elif draw < 0.75:
            ref, scheme = random.choice(hosts) + f"/item/{random.randrange(50)}", "h"
        elif draw < 0.93:
            ref, scheme = random.choice(GENERATED), "g"
        else:
            ref, scheme = random.choice(CAMPAIGNS), "c"
        views = 1 if random.random() < 0.4 else random.randint(2, 8)
        at = start + timedelta(seconds=offset)
        for view in range(views):
            if written >= rows:
                return bots
            page = pages[min(int(random.paretovariate(0.8)) - 1, len(pages) - 1)]
            is_event = random.random() < 0.05
            is_bot = random.random() < 0.01
            bots += is_bot
            writer.writerow((
                ("click-" + page.strip("/").replace("/", "-")) if is_event else page,
                "A title", "true" if is_event else "false", "", *agent[:2], session,
                "5" if is_bot else "0", ref if view == 0 else "", scheme if view == 0 else "",
                agent[2], location, "true" if view == 0 else "false",
                at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            ))  # fmt: skip
            written += 1
            at += timedelta(seconds=random.randint(5, 300))
    return bots


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(label: str, rows: int, action: Callable[[], Any]) -> Any:
    began = time.perf_counter()
    result = action()
    seconds = time.perf_counter() - began
    print(
        f"  {label}: {seconds:.1f} s, {rows / seconds:,.0f} rows/s, peak {peak_mb():.0f} MB",
        flush=True,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=size, default=1_000_000, help="hits (default 1M)")
    parser.add_argument("--dsn", help="a PostgreSQL conninfo (default: embedded)")
    parser.add_argument("--data-dir", type=Path, help="the embedded server's folder (kept)")
    parser.add_argument("--no-store", action="store_true", help="time the reader only")
    parser.add_argument("--keep", type=Path, help="write the files here and keep them")
    options = parser.parse_args()
    folder = options.keep or Path(tempfile.mkdtemp(prefix="picolytics-bench-import-"))
    folder.mkdir(parents=True, exist_ok=True)
    plain, packed = folder / "goatcounter-export.csv", folder / "goatcounter-export.csv.gz"
    try:
        print(f"writing {options.rows:,} rows ...", flush=True)
        with plain.open("w", encoding="utf-8", newline="") as out:
            bots = write_export(out, options.rows)
        with plain.open("rb") as source, gzip.open(packed, "wb", compresslevel=6) as target:
            shutil.copyfileobj(source, target)
        mb = plain.stat().st_size / 1e6
        print(f"  {mb:.0f} MB plain, {packed.stat().st_size / 1e6:.0f} MB gzipped, {bots:,} bots")
        print(f"read_goatcounter (peak before: {peak_mb():.0f} MB)")
        timed("plain", options.rows, lambda: read_goatcounter(plain))
        batch = timed("gzip", options.rows, lambda: read_goatcounter(packed))
        counts = ", ".join(f"{table[9:]} {len(rows):,}" for table, rows in batch.rows.items())
        print(f"  rows out: {counts}; skipped {batch.skipped}")
        del batch
        if not options.no_store:
            store_all(options, plain)
    finally:
        if options.keep is None:
            shutil.rmtree(folder, ignore_errors=True)


def store_all(options: argparse.Namespace, plain: Path) -> None:
    if options.dsn:
        os.environ["PICOLYTICS_BENCH_DSN"] = options.dsn
    with database(options.data_dir) as conninfo:
        migrate.apply(conninfo)
        print("the whole import (read + store)")

        def run() -> None:
            with psycopg.connect(conninfo) as connection:
                summary = store(connection, SITE, read_goatcounter(plain))
            print(f"    {summary.days} days, import {summary.import_id}", flush=True)

        timed("read + store", options.rows, run)


if __name__ == "__main__":
    main()
