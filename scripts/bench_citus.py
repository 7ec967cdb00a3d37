"""picolytics on a Citus cluster beside one plain PostgreSQL, on the same machine.

Usage: python scripts/bench_citus.py [--events 1M] [--runs 10] [--ingest-seconds 20]
       (make bench-citus ARGS="--events 1M"); needs PICOLYTICS_CITUS_BIN (a build of
       ../shared/citus/build-citus.sh, as for tests/test_citus*.py).

Two databases: an embedded PostgreSQL (scripts/bench_db.py) and a Citus cluster of a
coordinator and two workers on loopback (tests/helpers/citus.py's launcher, the one
the tests use). Each is filled with the same synthetic traffic (scripts/bench_query.py's
fill, --events over --span-days), rolled up (storage/roller.catch_up, timed), and
asked every query class of scripts/bench_query.py over the last 30 and 7 days in UTC,
unfiltered: p50/p95 of --runs runs after one warm-up. Then ingest: `scripts/bench
--wrk` against a picolytics server on a fresh database of each (written events/s,
read-model maintenance off). The results are printed side by side.

All nodes share this machine's cores and disk, so the cluster pays for its network
hops and coordination without gaining any hardware: it shows the cost of Citus, not
its benefit. The Citus nodes run with fsync off (tests/helpers/citus.py); the embedded
server with its own settings. Benchmarks print numbers; nothing here asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

import psycopg
from bench_db import database
from bench_query import (
    REPO,
    SITES,
    SizeResults,
    Timing,
    Variant,
    actual_events,
    prepare,
    roll,
    site_id_of,
    time_queries,
)
from psycopg import AsyncConnection
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from picolytics.storage import migrate

sys.path.insert(0, str(REPO / "tests"))
from helpers.citus import CitusCluster, citus_bin, running_cluster, skip_reason

BACKENDS: Final = ("PostgreSQL", "Citus")
VARIANTS: Final = (Variant("30d", "UTC"), Variant("7d", "UTC"))


@dataclass
class Target:
    """The benchmark's database, a fresh one for ingest, and (Citus) the cluster."""

    conninfo: str
    fresh: str
    nodes: CitusCluster | None = None


@contextlib.contextmanager
def plain() -> Iterator[Target]:
    """An embedded PostgreSQL."""
    with database(None) as conninfo:
        with psycopg.connect(conninfo, autocommit=True) as connection:
            connection.execute("CREATE DATABASE bench_ingest")
        yield Target(conninfo, make_conninfo(conninfo, dbname="bench_ingest"))


@contextlib.contextmanager
def cluster() -> Iterator[Target]:
    """A coordinator and two workers, each database on every node. The benchmark's
    database starts without the extension (the fill's temporary functions would not
    exist on the workers): filled as plain PostgreSQL, then distributed by
    `picolytics migrate`, as an existing installation moves to Citus."""
    bin_dir = citus_bin()
    if bin_dir is None:
        raise SystemExit(skip_reason())
    with running_cluster(bin_dir, workers=2) as nodes:
        conninfo = nodes.create_database()
        with psycopg.connect(conninfo, autocommit=True) as connection:
            connection.execute("DROP EXTENSION citus")
        yield Target(conninfo, nodes.create_database(), nodes)


def distribute(target: Target) -> float:
    """Citus back in the filled database, the workers added, the schema distributed
    (storage/citus.py through migrate); the seconds it took."""
    assert target.nodes is not None
    began = time.perf_counter()
    with psycopg.connect(target.conninfo, autocommit=True) as connection:
        connection.execute("CREATE EXTENSION citus")
        port = target.nodes.coordinator.port
        connection.execute("SELECT citus_set_coordinator_host('127.0.0.1', %s)", (port,))
        for worker in target.nodes.workers:
            connection.execute("SELECT citus_add_node('127.0.0.1', %s)", (worker.port,))
    migrate.apply(target.conninfo)
    with psycopg.connect(target.conninfo, autocommit=True) as connection:
        connection.execute("ANALYZE")
    return time.perf_counter() - began


def ingest(conninfo: str, seconds: int) -> tuple[str, list[str]]:
    """Written events/s of `scripts/bench --wrk` against a server on `conninfo`."""
    command = [
        sys.executable, str(REPO / "scripts" / "bench"), "--wrk", "--server", "uvicorn",
        "--workers", "2", "--seconds", str(seconds), "--rollup", "off", "--dsn", conninfo,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    written = re.search(r"written (\d+) events/s", done.stdout)
    lines = done.stdout.splitlines() + ([done.stderr.strip()[-800:]] if done.returncode else [])
    return (written.group(1) if written else "failed"), lines


async def measure(conninfo: str, results: SizeResults, options: argparse.Namespace) -> None:
    await roll(conninfo, results, "UTC")
    site_id = site_id_of(conninfo, SITES[0])
    async with await AsyncConnection.connect(conninfo, autocommit=True) as connection:
        await time_queries(connection, results, site_id, VARIANTS, ["none"], options)


def run_backend(name: str, options: argparse.Namespace) -> tuple[SizeResults, str]:
    print(f"\n--- {name} ---", flush=True)
    opened = plain() if name == "PostgreSQL" else cluster()
    with opened as target:
        conninfo = target.conninfo
        print(f"database: {conninfo_to_dict(conninfo).get('dbname')}", flush=True)
        fill_s = prepare(conninfo, options.events, options.span_days)
        results = SizeResults(name, options.events, fill_s)
        results.events = actual_events(conninfo) or options.events
        if target.nodes is not None:
            results.rollup_s["distribute"] = distribute(target)
            print(f"distributed in {results.rollup_s['distribute']:.0f} s", flush=True)
        asyncio.run(measure(conninfo, results, options))
        written = "skipped"
        if options.ingest_seconds:
            print(f"ingest, {options.ingest_seconds} s:", flush=True)
            written, lines = ingest(target.fresh, options.ingest_seconds)
            for line in lines:
                print(f"  {line}", flush=True)
    return results, written


def cell(timing: Timing | None) -> str:
    if timing is None:
        return f"{'-':>17}"
    return f"{timing.p50_ms:>7.1f} {timing.p95_ms:>7.1f} {timing.path or ' '}"


def print_side_by_side(done: dict[str, tuple[SizeResults, str]]) -> None:
    first = next(iter(done.values()))[0]
    print(f"\n=== {first.events:,} events; p50 / p95 ms (R rollup, M mixed, W raw) ===")
    header = "".join(f" | {name:^17}" for name in done)
    for variant in VARIANTS:
        print(f"\n{variant.label:<18}{header}")
        names = sorted({key[2] for r, _ in done.values() for key in r.timings})
        order = {name: n for n, name in enumerate(key[2] for key in first.timings)}
        for name in sorted(names, key=lambda n: order.get(n, len(order))):
            cells = "".join(
                f" | {cell(r.timings.get(('none', variant.label, name)))}" for r, _ in done.values()
            )
            print(f"{name:<18}{cells}")
    print()
    for label, value in (
        ("fill (s)", lambda r, w: f"{r.fill_s:.0f}" if r.fill_s is not None else "-"),
        ("distribute (s)", lambda r, w: f"{r.rollup_s.get('distribute', 0):.0f}"),
        ("roll-up (s)", lambda r, w: f"{r.rollup_s.get('UTC', float('nan')):.1f}"),
        ("days rolled", lambda r, w: str(r.rollup_days.get("UTC", "-"))),
        ("ingest written/s", lambda r, w: w),
        ("load average", lambda r, w: f"{max(r.loads, default=float('nan')):.1f} (max)"),
    ):
        cells = "".join(f" | {value(r, w):>17}" for r, w in done.values())
        print(f"{label:<18}{cells}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", default="1M", help="e.g. 1M, 500k")
    parser.add_argument("--span-days", type=int, default=30)
    parser.add_argument("--runs", type=int, default=10, help="timed runs after one warm-up")
    parser.add_argument("--budget", type=float, default=10.0, help="seconds per class at most")
    parser.add_argument("--min-runs", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=120.0, help="statement timeout (s)")
    parser.add_argument("--ingest-seconds", type=int, default=20, help="0: no ingest")
    parser.add_argument("--only", choices=BACKENDS, help="one backend only")
    options = parser.parse_args()
    text = options.events.strip().upper()
    scale = {"K": 1_000, "M": 1_000_000}.get(text[-1:], 1)
    options.events = int(float(text.rstrip("KM")) * scale)
    os.environ.pop("PICOLYTICS_BENCH_DSN", None)  # both databases are this script's own
    began = time.perf_counter()
    done = {name: run_backend(name, options) for name in BACKENDS if options.only in (None, name)}
    print_side_by_side(done)
    print(f"\n(whole run: {time.perf_counter() - began:.0f} s)")


if __name__ == "__main__":
    main()
