"""Time `picolytics report` on a large database.

Usage: python scripts/bench_report.py [--events N] [--span-days D] [--data-dir PATH]

Fills a database with N events (default 10 million) in about N/5 sessions spread over
the last D days (default 30), on two sites (90 % / 10 %), entirely in SQL
(generate_series; no Python loop per row): the daily partitions first, indexes
dropped during the load and rebuilt after it, then ANALYZE. Then it times the report
(the last 7 days of the big site, and the whole span over every site), each run twice
(the first may read from disk). The report reads through the query layer (stats/);
scripts/bench_query.py times each of its query classes, with and without rollups.

The database: PICOLYTICS_BENCH_DSN (a database that is emptied!) if set, else an
embedded PostgreSQL in --data-dir (kept, and reused without refilling when it already
holds the data: handy while tuning) or in a temporary folder (removed).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from picolytics.report import query as report
from picolytics.storage import migrate

SITES = ("bench.example", "small.example")
# Secondary indexes and the primary key of events, rebuilt after the bulk load.
EVENT_INDEXES = ("events_site_name_received", "events_site_session")

SESSIONS = """
INSERT INTO sessions (site_id, session_id, visitor_id, started_at, last_seen_at, pageviews,
    events, engaged, entry_path, exit_path, referrer_host, utm_source, utm_medium,
    utm_campaign, country, region, city, browser, browser_version, os, os_version,
    device_type, screen_width, screen_height, timezone)
SELECT CASE WHEN g %% 10 = 0 THEN %(small)s ELSE %(big)s END,
       g, g / 2 + (g %% 3),   -- about two visits per visitor
       t.started, t.started + make_interval(secs => t.n * t.gap), t.pv, t.n,
       t.n > 2, '/page/' || (g %% 200), '/page/' || ((g * 7) %% 200),
       CASE WHEN g %% 3 = 0 THEN 'ref' || (g %% 50) || '.example' ELSE '' END,
       CASE WHEN g %% 20 = 0 THEN 'newsletter' ELSE '' END,
       CASE WHEN g %% 20 = 0 THEN 'email' ELSE '' END,
       CASE WHEN g %% 20 = 0 THEN 'spring-' || (g %% 4) ELSE '' END,
       (ARRAY['DE','US','FR','GB','NL','IN','BR','JP','CA','']) [1 + g %% 10], '', '',
       (ARRAY['Chrome','Firefox','Safari','Edge','Mobile Safari','Samsung Internet'])
           [1 + (g / 7) %% 6], '120',
       (ARRAY['Windows','Mac OS X','Linux','iOS','Android']) [1 + (g / 11) %% 5], '',
       (ARRAY['desktop','mobile','tablet']) [1 + (g / 13) %% 3], 1920, 1080, 'UTC'
FROM generate_series(1, %(sessions)s::bigint) g,
LATERAL (SELECT %(start)s::timestamptz + random() * %(span)s::interval AS started,
                1 + (g * 7919) %% 9 AS n,                -- 1..9 events, 5 on average
                random() * 60 AS gap,
                -- pageviews: the load, nav at k = 1 and 6, hashchange to a route at k = 5
                1 + ((1 + (g * 7919) %% 9) >= 2)::int + ((1 + (g * 7919) %% 9) >= 6)::int
                  + ((1 + (g * 7919) %% 9) >= 7)::int AS pv) t
"""
# The events of each session: a load, then nav, ping, visible, hashchange in turn,
# and a custom event in one session of 50.
EVENTS = """
INSERT INTO events (site_id, received_at, event_id, session_id, visitor_id, name, path,
                    referrer_host, load_time_ms, ttfb_ms)
SELECT s.site_id,
       s.started_at + (s.last_seen_at - s.started_at) * (k::float8 / greatest(s.events - 1, 1)),
       s.session_id * 16 + k,
       s.session_id, s.visitor_id,
       CASE WHEN k = 0 THEN 'load'
            WHEN s.session_id % 50 = 0 AND k = 1 THEN 'signup'
            ELSE (ARRAY['hashchange','nav','ping','visible','hidden']) [1 + k % 5] END,
       '/page/' || ((s.session_id + k) % 200)
           || CASE WHEN k % 5 = 0 AND k > 0 THEN '#/tab' ELSE '' END,
       s.referrer_host, 300, 40
FROM sessions s, generate_series(0, s.events - 1) k
"""
BOTS = """
INSERT INTO bot_counts (site_id, day, reason, hits)
SELECT site_id, d::date, r, 100 + (extract(doy FROM d)::integer %% 50)
FROM sites, generate_series(%(start)s::date, %(end)s::date, '1 day') d,
     unnest(ARRAY['crawler_list','empty_ua','parser_spider']) r
"""


def _index_definitions(connection: psycopg.Connection[Any]) -> list[str]:
    rows = connection.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'events' "
        "AND indexname = ANY(%s)",
        (list(EVENT_INDEXES),),
    ).fetchall()
    return [definition for _, definition in rows]


def fill(conninfo: str, events: int, span_days: int) -> None:
    now = datetime.now(UTC)
    start = now - timedelta(days=span_days)
    sessions = events // 5
    with psycopg.connect(conninfo, autocommit=True) as connection:
        connection.execute("SET maintenance_work_mem = '1GB'")
        connection.execute("SET synchronous_commit = off")
        connection.execute(
            "SELECT picolytics_ensure_event_partitions(%s, %s)", (start.date(), span_days + 3)
        )
        connection.execute(
            "INSERT INTO sites (domain) SELECT unnest(%s::text[]) ON CONFLICT DO NOTHING",
            (list(SITES),),
        )
        ids: dict[str, int] = dict(
            connection.execute("SELECT domain, site_id FROM sites").fetchall()
        )
        indexes = _index_definitions(connection)
        steps = [
            ("drop indexes", "DROP INDEX " + ", ".join(EVENT_INDEXES)),
            ("drop primary key", "ALTER TABLE events DROP CONSTRAINT events_pkey"),
            ("sessions", SESSIONS),
            ("events", EVENTS),
            ("bot counts", BOTS),
            ("primary key", "ALTER TABLE events ADD PRIMARY KEY (site_id, received_at, event_id)"),
            # pg_indexes shows "ON ONLY events" (the parent alone); build every partition's.
            *[(d.split()[2], d.replace(" ON ONLY ", " ON ")) for d in indexes],
            ("analyze", "ANALYZE"),
        ]
        params = {
            "small": ids[SITES[1]],
            "big": ids[SITES[0]],
            "sessions": sessions,
            "start": start,
            "end": now,
            "span": f"{span_days} days",
        }
        with connection.transaction():  # all or nothing: a failed fill leaves no half
            _run_steps(connection, steps, params)


def _run_steps(
    connection: psycopg.Connection[Any], steps: list[tuple[str, str]], params: dict[str, Any]
) -> None:
    for label, statement in steps:
        began = time.perf_counter()
        uses = params if "%(" in statement else None
        cursor = connection.execute(statement, uses)
        rows = f" ({cursor.rowcount:,} rows)" if cursor.rowcount > 0 else ""
        print(f"  {label}: {time.perf_counter() - began:.1f} s{rows}", flush=True)


def already_filled(conninfo: str) -> int:
    """The planner's estimate of the events already there (0 in a new database)."""
    with psycopg.connect(conninfo) as connection:
        row = connection.execute(
            "SELECT coalesce(sum(greatest(c.reltuples, 0)), 0)::bigint FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'events'::regclass"
        ).fetchone()
    return int(row[0]) if row else 0


def time_report(conninfo: str, label: str, period: report.Period, sites: list[str]) -> None:
    for attempt in ("first", "again"):
        began = time.perf_counter()
        result = report.report_from(conninfo, period, sites)
        elapsed = time.perf_counter() - began
        s = result.summary
        print(
            f"report {label} ({attempt}): {elapsed:.2f} s - {s.pageviews:,} pageviews, "
            f"{s.visits:,} visits, {s.visitors:,} visitors"
        )


@contextmanager
def database(data_dir: str | None) -> Iterator[str]:
    conninfo = os.environ.get("PICOLYTICS_BENCH_DSN", "")
    if conninfo:
        yield conninfo
        return
    from picolytics.storage.embedded import EmbeddedPostgres  # noqa: PLC0415 (only when embedded)

    keep = data_dir is not None
    folder = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="picolytics-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)
    server = EmbeddedPostgres(folder / "data")
    try:
        yield server.start()
    finally:
        server.stop()
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--span-days", type=int, default=30)
    parser.add_argument("--data-dir", help="keep the embedded database here (and reuse it)")
    options = parser.parse_args()
    with database(options.data_dir) as conninfo:
        migrate.apply(conninfo)
        existing = already_filled(conninfo)
        if existing:
            print(f"reusing the {existing:,} events already there (estimate)")
        else:
            print(f"filling {options.events:,} events over {options.span_days} days:")
            began = time.perf_counter()
            fill(conninfo, options.events, options.span_days)
            print(f"filled in {time.perf_counter() - began:.0f} s")
        today = datetime.now(UTC).date()
        week = report.resolve_period(7, None, None, today)
        span = report.resolve_period(options.span_days + 1, None, None, today)
        time_report(conninfo, f"7 days, {SITES[0]}", week, [SITES[0]])
        time_report(conninfo, f"{len(span.days)} days, every site", span, list(SITES))


if __name__ == "__main__":
    main()
