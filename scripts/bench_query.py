"""Time the query layer and the read model at 3, 10 and 30 million events.

Usage: python scripts/bench_query.py [--events 3M,10M,30M] [--data-dir PATH] [--ingest]
       (make bench-query ARGS="--events 3M")

For each size (smallest first), it fills a database with that many events over the
last --span-days days (default 30) entirely in SQL, with data shaped like real
traffic for a read model: three sites (70/20/10 %), visitor ids that change every UTC
day (as the daily salt of the real hash makes them) and visits that run across
midnight under their start day's id, about 1.3 visits per visitor and day, 1 to 19
events per visit (40 % bounces), a few hundred pages with a long tail, ~50 referrers,
UTM tags on 5 % of visits, 30 countries with their regions and cities, browser and OS
families with versions, three devices (place, browser, OS and device are the person's,
as the visitor hash of address and browser makes them), and custom events with
properties on 4 % of visits. Indexes are dropped during the load and rebuilt after
it, then ANALYZE.

Then it rolls up every closed day (storage/roller.catch_up, timed) and prints p50/p95
of 20 runs after one warm-up (fewer when a query is slow: --budget) of each query
class: the aggregate, time series (hour over 7 days, day, week, month), a breakdown
by each dimension (top 10), and realtime visitors, over the last 30 and 7 days, in
UTC and (after setting the site's zone and re-rolling, timed) in America/New_York,
unfiltered and with one filter (country is US; page contains /blog), plus the whole
30-day `picolytics report`, and the bytes on disk of the raw and the read-model
tables. At the smallest size the unfiltered queries run with use_rollups=False too,
for contrast. Last, a summary compares the smallest size with the largest against the
targets of issue 17 (PASS/MISS). --ingest adds the written events/s of
`scripts/bench --wrk` with read-model maintenance on and off.

The Stats API rows: p50/p95 of `POST /api/v2/query` over HTTP through the real app
(serve/app.create_app, its lifespan not started, so no roller or writer runs beside;
httpx's AsyncClient on an ASGITransport, in this process, without sockets), with a key
created for the run and revoked after it, for the big site over the same 30 days in
UTC as the "30d UTC" column: the aggregate, the day series, the top 10 by visit:source
and by event:page, and by visit:source with visit:country is US, each beside the
query layer's p95 of the same class (--no-api skips them).

The database: PICOLYTICS_BENCH_DSN (a database that is emptied! one size only) if
set, else an embedded PostgreSQL per size in --data-dir/SIZE (kept, and reused
without refilling when it already holds the data) or in a temporary folder (removed).
Benchmarks print numbers; nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import httpx2
import psycopg
from bench_db import database, drop_indexes, estimated_events, run_steps, table_sizes
from psycopg import AsyncConnection

from picolytics.config import Config
from picolytics.dimensions import ROW_DIMENSIONS, Dimension, Metric
from picolytics.report import query as report
from picolytics.serve.app import create_app
from picolytics.stats import engine, periods
from picolytics.stats.query import Breakdown, Condition, Filter, Interval, Period, Query, Result
from picolytics.storage import api_keys, migrate, roller

REPO: Final = Path(__file__).resolve().parents[1]
SITES: Final = ("bench.example", "blog.example", "docs.example")
SHARES: Final = (0.7, 0.2, 0.1)  # of the visits
EVENTS_PER_VISIT: Final = 5.04  # the mean of the draw below, the custom events included
ZONES: Final = ("UTC", "America/New_York")
PROP_KEY: Final = "plan"

# Helpers of the fill, in this session's pg_temp: IMMUTABLE SQL functions, inlined.
FUNCTIONS: Final = r"""
-- A uniform number in [0, 1) drawn from (x, salt): the same in every run.
CREATE FUNCTION pg_temp.u(x bigint, salt integer) RETURNS float8
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS
$$ SELECT (hashint8extended(x, salt) & 9007199254740991)::float8 / 9007199254740992.0 $$;

-- One of 300 pages by rank (0 = the most viewed): a few landing pages, then a long
-- tail of posts, docs and products.
CREATE FUNCTION pg_temp.page(rank integer) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
SELECT CASE rank WHEN 0 THEN '/' WHEN 1 THEN '/pricing' WHEN 2 THEN '/blog'
                 WHEN 3 THEN '/docs' WHEN 4 THEN '/about' WHEN 5 THEN '/signup'
            ELSE (ARRAY['/blog/post-', '/docs/page-', '/products/item-'])[1 + rank % 3]
                 || rank END
$$;

-- Event k of a visit: 0 is the load, then by k % 6: 1 nav, 2 ping, 3 hidden,
-- 4 visible, 5 hashchange to a route (a pageview), 0 ping. Pageviews after the load
-- up to event k:
CREATE FUNCTION pg_temp.views_after_load(k integer) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT (k + 5) / 6 + (k + 1) / 6 $$;

-- The path of event k of a visit: its current page (that of the last pageview so
-- far, ranked with a long tail: 300 u^3), with the route of a hashchange.
CREATE FUNCTION pg_temp.path(visit bigint, k integer) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
SELECT pg_temp.page(
           floor(300 * pg_temp.u(visit * 32 + pg_temp.views_after_load(k), 1) ^ 3)::integer)
       || CASE WHEN k > 0 AND k % 6 IN (5, 0) THEN '#/tab' ELSE '' END
$$;

-- A custom event ends 4 % of visits (u(visit, 3) < 0.04): its name and properties.
CREATE FUNCTION pg_temp.custom_name(visit bigint) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
SELECT CASE WHEN pg_temp.u(visit, 30) < 0.4 THEN 'signup'
            WHEN pg_temp.u(visit, 30) < 0.7 THEN 'outbound'
            WHEN pg_temp.u(visit, 30) < 0.9 THEN 'download' ELSE 'purchase' END
$$;
CREATE FUNCTION pg_temp.custom_props(visit bigint) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
SELECT CASE pg_temp.custom_name(visit)
    WHEN 'signup' THEN jsonb_build_object(
        'plan', (ARRAY['free', 'free', 'pro', 'team'])[1 + floor(4 * pg_temp.u(visit, 31))::int])
    WHEN 'outbound' THEN jsonb_build_object(
        'url', 'https://partner' || floor(20 * pg_temp.u(visit, 31) ^ 2) || '.example/')
    WHEN 'download' THEN jsonb_build_object(
        'file', 'guide-' || floor(10 * pg_temp.u(visit, 31) ^ 2) || '.pdf')
    ELSE jsonb_build_object(
        'plan', (ARRAY['pro', 'team'])[1 + floor(2 * pg_temp.u(visit, 31))::int],
        'amount', (ARRAY['49', '99', '199'])[1 + floor(3 * pg_temp.u(visit, 32))::int]) END
$$;
"""

# 30 countries, drawn with a long tail (30 u^2.2).
COUNTRIES: Final = (
    "US", "DE", "GB", "FR", "IN", "CA", "NL", "BR", "JP", "ES", "IT", "AU", "PL", "SE", "CH",
    "AT", "BE", "MX", "RU", "CN", "KR", "TR", "ID", "UA", "CZ", "DK", "NO", "FI", "PT", "IE",
)  # fmt: skip
# The top 10 referrers, then site10.example ... site49.example: 50 in all (50 u^2.5).
REFERRERS: Final = (
    "www.google.com", "duckduckgo.com", "www.bing.com", "news.ycombinator.com", "t.co",
    "www.reddit.com", "github.com", "www.facebook.com", "l.instagram.com", "www.linkedin.com",
)  # fmt: skip

# One row per visit; every draw is u(visit, salt), so a refill is identical.
SESSIONS: Final = """
INSERT INTO sessions (site_id, session_id, visitor_id, started_at, last_seen_at, pageviews,
    events, engaged, entry_path, exit_path, referrer_host, utm_source, utm_medium,
    utm_campaign, utm_content, utm_term, country, region, city, browser, browser_version,
    os, os_version, device_type, screen_width, screen_height, timezone)
SELECT (%(site_ids)s::integer[])[1 + z.slot], g,
       -- The visitor id of the UTC day the visit started: the person hashed with the day.
       hashint8extended(floor(extract(epoch FROM b.started) / 86400)::bigint * 4000000000
                        + z.person, 42),
       b.started, b.started + make_interval(secs => (b.events - 1) * a.gap),
       1 + pg_temp.views_after_load(a.n - 1), b.events, a.n > 2 OR a.custom,
       pg_temp.path(g, 0), pg_temp.path(g, a.n - 1),
       CASE WHEN pg_temp.u(g, 13) < 0.45 THEN ''
            WHEN a.referrer < 10 THEN (%(referrers)s::text[])[1 + a.referrer]
            ELSE 'site' || a.referrer || '.example' END,
       CASE WHEN a.utm THEN a.utm_source ELSE '' END,
       CASE WHEN NOT a.utm THEN ''
            WHEN a.utm_source IN ('google', 'bing') THEN 'cpc'
            WHEN a.utm_source = 'newsletter' THEN 'email'
            WHEN a.utm_source IN ('partner', 'podcast') THEN 'referral' ELSE 'social' END,
       CASE WHEN a.utm THEN (ARRAY['spring-sale', 'launch', 'black-friday', 'webinar-1',
            'webinar-2', 'webinar-3', 'retargeting', 'brand', 'docs-promo', 'summer',
            'winter', 'newsletter-weekly'])[1 + floor(12 * pg_temp.u(g, 17) ^ 1.5)::int]
            ELSE '' END,
       CASE WHEN a.utm AND pg_temp.u(g, 19) < 0.5
            THEN 'variant-' || (1 + floor(5 * pg_temp.u(g, 20))) ELSE '' END,
       CASE WHEN a.utm AND a.utm_source IN ('google', 'bing')
            THEN (ARRAY['analytics', 'web analytics', 'privacy analytics', 'self-hosted',
                        'plausible alternative', 'postgres analytics'])
                 [1 + floor(6 * pg_temp.u(g, 21) ^ 1.5)::int] ELSE '' END,
       a.country,
       CASE WHEN a.country = '' OR pg_temp.u(z.person, 10) < 0.05 THEN ''
            ELSE a.country || ' region ' || (1 + floor(8 * pg_temp.u(z.person, 11) ^ 2)) END,
       CASE WHEN a.country = '' OR pg_temp.u(z.person, 10) < 0.07 THEN ''
            ELSE a.country || ' city ' || (1 + floor(20 * pg_temp.u(z.person, 12) ^ 2)) END,
       c.browser,
       (CASE c.browser WHEN 'Chrome' THEN 131 WHEN 'Chrome Mobile' THEN 131
             WHEN 'Chrome Mobile iOS' THEN 131 WHEN 'Edge' THEN 131 WHEN 'Firefox' THEN 133
             WHEN 'Firefox Mobile' THEN 133 WHEN 'Opera' THEN 114 WHEN 'Samsung Internet' THEN 27
             ELSE 18 END - floor(6 * pg_temp.u(z.person, 8) ^ 2.5))::text,
       a.os,
       CASE a.os WHEN 'Windows'
                 THEN (CASE WHEN pg_temp.u(z.person, 22) < 0.6 THEN '10' ELSE '11' END)
                 WHEN 'Mac OS X' THEN '10'
                 WHEN 'iOS' THEN (18 - floor(3 * pg_temp.u(z.person, 22) ^ 2))::text
                 WHEN 'Android' THEN (14 - floor(5 * pg_temp.u(z.person, 22) ^ 2))::text
                 ELSE '' END,
       c.device,
       CASE c.device WHEN 'desktop' THEN 1920 WHEN 'tablet' THEN 820 ELSE 390 END,
       CASE c.device WHEN 'desktop' THEN 1080 WHEN 'tablet' THEN 1180 ELSE 844 END,
       CASE WHEN a.country = 'US' THEN 'America/New_York' ELSE 'Europe/Berlin' END
FROM generate_series(1, %(sessions)s::bigint) g
CROSS JOIN LATERAL (
    SELECT CASE WHEN pg_temp.u(g, 1) < %(share_a)s THEN 0
                WHEN pg_temp.u(g, 1) < %(share_ab)s THEN 1 ELSE 2 END AS slot
) y
CROSS JOIN LATERAL (
    -- The person of the site's pool (2 x its visits a day: ~1.3 visits per visitor and
    -- day): what comes from the address and the browser (place, browser, OS, device)
    -- is the person's, as a visitor id (a hash of both) makes it in real traffic.
    SELECT y.slot, y.slot * 1000000000
                   + floor((%(pools)s::bigint[])[1 + y.slot] * pg_temp.u(g, 18))::bigint AS person
) z
CROSS JOIN LATERAL (
    SELECT
           -- 1 to 19 events, 5 on average; 8 in 20 visits are a single load.
           (ARRAY[1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 19])
               [1 + floor(20 * pg_temp.u(g, 2))::int] AS n,
           pg_temp.u(g, 3) < 0.04 AS custom,
           5 + 115 * pg_temp.u(g, 4) ^ 2 AS gap,  -- seconds between events
           floor(50 * pg_temp.u(g, 14) ^ 2.5)::int AS referrer,
           pg_temp.u(g, 15) < 0.05 AS utm,
           (ARRAY['newsletter', 'google', 'twitter', 'facebook', 'linkedin', 'reddit',
                  'partner', 'podcast', 'bing'])[1 + floor(9 * pg_temp.u(g, 16) ^ 1.5)::int]
               AS utm_source,
           CASE WHEN pg_temp.u(z.person, 10) < 0.02 THEN ''
                ELSE (%(countries)s::text[])[1 + floor(30 * pg_temp.u(z.person, 9) ^ 2.2)::int]
                END AS country,
           (ARRAY['Windows', 'Android', 'iOS', 'Mac OS X', 'Linux', 'Chrome OS'])
               [1 + floor(6 * pg_temp.u(z.person, 6) ^ 2)::int] AS os,
           pg_temp.u(z.person, 7) AS pick
) a
CROSS JOIN LATERAL (
    SELECT CASE a.os
               WHEN 'Windows' THEN (CASE WHEN a.pick < 0.65 THEN 'Chrome' WHEN a.pick < 0.85
                   THEN 'Edge' WHEN a.pick < 0.95 THEN 'Firefox' ELSE 'Opera' END)
               WHEN 'Mac OS X' THEN (CASE WHEN a.pick < 0.5 THEN 'Safari' WHEN a.pick < 0.9
                   THEN 'Chrome' ELSE 'Firefox' END)
               WHEN 'iOS' THEN (CASE WHEN a.pick < 0.8 THEN 'Mobile Safari'
                   ELSE 'Chrome Mobile iOS' END)
               WHEN 'Android' THEN (CASE WHEN a.pick < 0.75 THEN 'Chrome Mobile'
                   WHEN a.pick < 0.95 THEN 'Samsung Internet' ELSE 'Firefox Mobile' END)
               ELSE (CASE WHEN a.pick < 0.75 THEN 'Chrome' ELSE 'Firefox' END) END AS browser,
           CASE WHEN a.os NOT IN ('Android', 'iOS') THEN 'desktop'
                WHEN pg_temp.u(z.person, 23) < 0.15 THEN 'tablet' ELSE 'mobile' END AS device
) c
CROSS JOIN LATERAL (
    -- Uniform over the span; a visit that would end in the future ends now instead.
    SELECT a.n + a.custom::int AS events,
           least(%(start)s::timestamptz + pg_temp.u(g, 5) * %(span)s::interval,
                 %(now)s::timestamptz
                 - make_interval(secs => (a.n + a.custom::int - 1) * a.gap + 1)) AS started
) b
-- In order of start, as live ingest writes them: a day's visits (and, read in this
-- order, its events) sit together on disk. In generated order a day's 120 k visits
-- were spread over the whole table, and reading them raw took 5x as long.
ORDER BY b.started
"""

# The events of each visit, at even gaps from its start to its last event: a load,
# then nav, ping, hidden, visible, hashchange, ping in turn, and the custom event last.
EVENTS: Final = """
INSERT INTO events (site_id, received_at, event_id, session_id, visitor_id, name, path,
                    referrer_host, load_time_ms, ttfb_ms, props)
SELECT s.site_id,
       s.started_at + (s.last_seen_at - s.started_at) * (k::float8 / greatest(s.events - 1, 1)),
       s.session_id * 32 + k, s.session_id, s.visitor_id,
       CASE WHEN x.custom THEN pg_temp.custom_name(s.session_id)
            WHEN k = 0 THEN 'load'
            ELSE (ARRAY['ping', 'nav', 'ping', 'hidden', 'visible', 'hashchange'])[1 + k % 6]
            END,
       pg_temp.path(s.session_id, k - x.custom::int),
       CASE WHEN k = 0 THEN s.referrer_host ELSE '' END,
       CASE WHEN k = 0 THEN 300 + floor(2500 * pg_temp.u(s.session_id, 24) ^ 2)::int END,
       CASE WHEN k = 0 THEN 20 + floor(400 * pg_temp.u(s.session_id, 25) ^ 2)::int END,
       CASE WHEN x.custom THEN pg_temp.custom_props(s.session_id) END
FROM sessions s
CROSS JOIN LATERAL generate_series(0, s.events - 1) k
CROSS JOIN LATERAL (
    SELECT k = s.events - 1 AND pg_temp.u(s.session_id, 3) < 0.04 AS custom) x
"""
BOTS: Final = """
INSERT INTO bot_counts (site_id, day, reason, hits)
SELECT site_id, d::date, r, 100 + (extract(doy FROM d)::integer %% 50)
FROM sites, generate_series(%(start)s::date, %(now)s::date, '1 day') d,
     unnest(ARRAY['crawler_list', 'empty_ua', 'parser_spider']) r
"""
# What was filled, and when: a reused database says how old its data is.
BENCH_FILL: Final = """
CREATE TABLE bench_fill AS SELECT %(now)s::timestamptz AS filled_at, count(*) AS events
FROM events
"""
READ_MODEL: Final = (
    "rollup_visits", "rollup_events", "rollup_hours", "rollup_days", "rollup_stale",
    "rollup_segment_visits", "rollup_segment_events",
)  # fmt: skip


def fill(conninfo: str, events: int, span_days: int) -> None:
    """Fill an empty database with about `events` events over the last `span_days`."""
    now = datetime.now(UTC)
    start = now - timedelta(days=span_days)
    sessions = round(events / EVENTS_PER_VISIT)
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
        params = {
            "site_ids": [ids[site] for site in SITES],
            "share_a": SHARES[0],
            "share_ab": SHARES[0] + SHARES[1],
            "pools": [math.ceil(2 * sessions * share / span_days) for share in SHARES],
            "referrers": list(REFERRERS),
            "countries": list(COUNTRIES),
            "sessions": sessions,
            "start": start,
            "now": now,
            "span": f"{span_days} days",
            "events": events,
        }
        with connection.transaction():  # all or nothing: a failed fill leaves no half
            connection.execute(FUNCTIONS)
            rebuild = drop_indexes(connection, ["events", "sessions"])
            steps = [
                ("visits", SESSIONS),
                ("events", EVENTS),
                ("bot counts", BOTS),
                *rebuild,
                ("count", BENCH_FILL),
            ]
            run_steps(connection, steps, params)
        began = time.perf_counter()
        connection.execute("ANALYZE")
        print(f"  analyze: {time.perf_counter() - began:.1f} s", flush=True)


# -- timing -----------------------------------------------------------------------------


@dataclass
class Timing:
    p50_ms: float
    p95_ms: float
    runs: int
    path: str = ""  # R rollup, M mixed, W raw (or "" when not a query)
    rows: int | None = None


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (p95 of 20 runs is the 19th)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


async def timed(
    call: Callable[[], Awaitable[Any]], runs: int, budget_s: float, min_runs: int
) -> tuple[Timing, Any]:
    """One warm-up, then `runs` runs, fewer (not under `min_runs`) when the warm-up
    says they would take more than `budget_s`."""
    began = time.perf_counter()
    result = await call()
    warm = time.perf_counter() - began
    if warm * runs > budget_s:
        runs = max(min_runs, int(budget_s / max(warm, 1e-6)))
    samples = []
    for _ in range(runs):
        began = time.perf_counter()
        result = await call()
        samples.append((time.perf_counter() - began) * 1000)
    return Timing(statistics.median(samples), percentile(samples, 0.95), runs), result


PATH_CODES: Final = {"rollup": "R", "mixed": "M", "raw": "W"}


@dataclass(frozen=True)
class Variant:
    """A column of the tables: which period, in which zone."""

    period: str  # "30d", "7d" (today included, as the dashboard's), or "30 closed"
    zone: str

    @property
    def label(self) -> str:
        return f"{self.period} {'UTC' if self.zone == 'UTC' else 'NY'}"

    def resolve(self, now: datetime) -> Period:
        """ "30 closed" is the 30 days before today: rollups alone, nothing raw."""
        if self.period == CLOSED:
            today = periods.local_today(now, periods.zone(self.zone))
            return periods.days(today - timedelta(days=30), today - timedelta(days=1), self.zone)
        return periods.named(self.period, self.zone, now)


CLOSED: Final = "30 closed"


FILTERS: Final[dict[str, Filter | None]] = {
    "none": None,
    "country": Condition("country", "is", ("US",)),
    "page": Condition("page", "contains", ("/blog",)),
}
FILTER_LABELS: Final = {
    "none": "unfiltered",
    "country": "filter: country is US",
    "page": "filter: page contains /blog",
}


def query_classes(period: str) -> list[tuple[str, Query]]:
    """Every query class over a placeholder period (replaced per variant)."""
    placeholder = periods.named("7d", "UTC", datetime.now(UTC))
    base = Query(site_ids=(), period=placeholder, metrics=())
    every: tuple[Metric, ...] = (
        "visitors", "visits", "pageviews", "views_per_visit", "bounce_rate",
        "visit_duration", "events",
    )  # fmt: skip
    series: tuple[Metric, ...] = ("visitors", "visits", "pageviews")
    classes = [("aggregate", replace(base, metrics=every))]
    intervals: list[Interval] = (
        ["hour", "day", "week", "month"] if period == "7d" else ["day", "week", "month"]
    )
    classes += [(f"series {i}", replace(base, metrics=series, interval=i)) for i in intervals]
    for dimension in ROW_DIMENSIONS:
        classes.append((f"by {dimension}", breakdown_query(base, dimension)))
    return classes


def breakdown_query(base: Query, dimension: Dimension) -> Query:
    metrics: tuple[Metric, ...]
    if dimension in ("page", "hostname"):
        metrics = ("visitors", "pageviews")
    elif dimension in ("event", "prop"):
        metrics = ("visitors", "events")
    else:
        metrics = ("visitors", "visits", "bounce_rate", "visit_duration")
    key = PROP_KEY if dimension == "prop" else None
    return replace(base, metrics=metrics, breakdown=Breakdown(dimension, key), limit=10)


@dataclass
class SizeResults:
    label: str
    events: int
    fill_s: float | None
    # (filter, variant label, class) -> timing; use_rollups=False under filter "raw".
    timings: dict[tuple[str, str, str], Timing] = field(default_factory=dict)
    realtime: Timing | None = None
    reports: dict[str, Timing] = field(default_factory=dict)
    rollup_s: dict[str, float] = field(default_factory=dict)
    rollup_days: dict[str, int] = field(default_factory=dict)
    disk: list[tuple[str, int, int]] = field(default_factory=list)  # name, bytes, days
    loads: list[float] = field(default_factory=list)  # 1-min load averages: was it busy?
    api: dict[str, Timing] = field(default_factory=dict)  # Stats API class -> timing

    def note_load(self) -> None:
        self.loads.append(os.getloadavg()[0])


async def time_queries(
    connection: AsyncConnection[Any],
    results: SizeResults,
    site_id: int,
    variants: Sequence[Variant],
    filters: Sequence[str],
    options: argparse.Namespace,
    *,
    use_rollups: bool = True,
    filtered_periods: Sequence[str] = ("30d", "7d"),
) -> None:
    now = datetime.now(UTC)
    for variant in variants:
        results.note_load()
        period = variant.resolve(now)
        chosen = [f for f in filters if f == "none" or variant.period in filtered_periods]
        for filter_name in chosen if variant.period != CLOSED else ["none"]:
            key = filter_name if use_rollups else "raw"
            print(
                f"  {variant.label}, {FILTER_LABELS[filter_name]}"
                f"{'' if use_rollups else ', use_rollups=False'}:",
                end="",
                flush=True,
            )
            began = time.perf_counter()
            for name, template in query_classes("7d" if variant.period == "7d" else "30d"):
                query = replace(
                    template, site_ids=(site_id,), period=period,
                    filters=FILTERS[filter_name],
                )  # fmt: skip

                async def call(query: Query = query) -> Result:
                    return await engine.run(
                        connection, query, timeout_s=options.timeout, use_rollups=use_rollups
                    )

                timing, result = await timed(call, options.runs, options.budget, options.min_runs)
                timing.path = PATH_CODES.get(result.path, "?")
                timing.rows = result.total_rows
                results.timings[key, variant.label, name] = timing
            print(f" {time.perf_counter() - began:.0f} s", flush=True)


def set_zone(conninfo: str, site_id: int, zone: str) -> None:
    with psycopg.connect(conninfo, autocommit=True) as connection:
        connection.execute("UPDATE sites SET timezone = %s WHERE site_id = %s", (zone, site_id))


async def roll(conninfo: str, results: SizeResults, label: str) -> None:
    """Bring the read model up to date (what the server's roller does), timed."""
    async with await AsyncConnection.connect(conninfo, autocommit=True) as connection:
        began = time.perf_counter()
        report = await roller.catch_up(connection, wait=True)
        results.rollup_s[label] = time.perf_counter() - began
        results.rollup_days[label] = report.rolled
    failed = f", {len(report.failed)} failed: {report.failed[:3]}" if report.failed else ""
    print(f"  {label}: {results.rollup_s[label]:.1f} s, {roller.summary(report)}{failed}")
    # As autovacuum soon would: statistics and the visibility map of the new rows.
    began = time.perf_counter()
    with psycopg.connect(conninfo, autocommit=True) as sync:
        sync.execute("VACUUM (ANALYZE) " + ", ".join(READ_MODEL))
    print(f"  vacuum analyze of the read model: {time.perf_counter() - began:.1f} s", flush=True)


def report_state() -> str:
    """Whether `picolytics report` reads through the query layer yet."""
    source = Path(report.__file__).read_text()
    if "picolytics.stats" in source:
        return "through the query layer"
    return "still on the raw reporting views: not yet ported to the query layer"


async def time_report(conninfo: str, zone: str, options: argparse.Namespace) -> Timing:
    """`picolytics report` (its function) for the last 30 local days, today included,
    of the big site, in `zone`."""
    today = periods.local_today(datetime.now(UTC), periods.zone(zone))
    period = report.resolve_period(30, None, None, today)

    async def call() -> report.Report:
        return await asyncio.to_thread(
            report.report_from, conninfo, period, [SITES[0]], timezone=zone,
            timeout_s=options.timeout,
        )  # fmt: skip

    timing, _ = await timed(call, options.runs, options.budget, options.min_runs)
    return timing


def disk_usage(conninfo: str, results: SizeResults, span_days: int) -> None:
    with psycopg.connect(conninfo) as connection:
        sizes = table_sizes(connection, ["events", "sessions", *READ_MODEL])
        row = connection.execute("SELECT count(DISTINCT day) FROM rollup_days").fetchone()
    rolled_days = int(row[0]) if row else 0
    events_table, events_indexes = sizes["events"]
    sessions_table, sessions_indexes = sizes["sessions"]
    raw = [
        ("events (+ partitions)", events_table),
        ("events indexes", events_indexes),
        ("sessions", sessions_table),
        ("sessions indexes", sessions_indexes),
    ]
    results.disk = [(name, size, span_days) for name, size in raw]
    results.disk.append(("raw total", sum(size for _, size in raw), span_days))
    model = [(name, sum(sizes[name])) for name in READ_MODEL]
    results.disk += [(name, size, rolled_days) for name, size in model]
    results.disk.append(("read model total", sum(size for _, size in model), rolled_days))


# -- the Stats API over HTTP -----------------------------------------------------------

API_EVERY: Final = [
    "visitors", "visits", "pageviews", "views_per_visit", "bounce_rate", "visit_duration",
    "events",
]  # fmt: skip
US_ONLY: Final = [["is", "visit:country", ["US"]]]
# Each class: its v2 body (without site_id and date_range), and the key of the query
# layer's timing of the same question (filter, class), as time_queries stores it.
API_CLASSES: Final[dict[str, tuple[dict[str, Any], tuple[str, str]]]] = {
    "aggregate": ({"metrics": API_EVERY}, ("none", "aggregate")),
    "series day": (
        {"metrics": ["visitors", "visits", "pageviews"], "dimensions": ["time:day"]},
        ("none", "series day"),
    ),
    "by visit:source": (
        {
            "metrics": ["visitors", "visits", "bounce_rate", "visit_duration"],
            "dimensions": ["visit:source"],
            "pagination": {"limit": 10},
        },
        ("none", "by source"),
    ),
    "by event:page": (
        {
            "metrics": ["visitors", "pageviews"],
            "dimensions": ["event:page"],
            "pagination": {"limit": 10},
        },
        ("none", "by page"),
    ),
    "by visit:source, US": (
        {
            "metrics": ["visitors", "visits", "bounce_rate", "visit_duration"],
            "dimensions": ["visit:source"],
            "filters": US_ONLY,
            "pagination": {"limit": 10},
        },
        ("country", "by source"),
    ),
}
API_VARIANT: Final = Variant("30d", "UTC")


async def time_api(conninfo: str, results: SizeResults, options: argparse.Namespace) -> None:
    """Each Stats API class over HTTP for the big site, the site being in UTC."""
    name = f"bench-{os.getpid()}-{int(time.time())}"
    key = api_keys.connected(conninfo, lambda c: api_keys.create(c, name, [SITES[0]])).clear
    app = create_app(Config(api_rate_limit=0, query_timeout_sec=options.timeout), conninfo=conninfo)
    period = API_VARIANT.resolve(datetime.now(UTC))
    last = period.end - timedelta(days=1)  # whole UTC days: the last one's start
    date_range = [period.start.date().isoformat(), last.date().isoformat()]
    headers = {"Authorization": f"Bearer {key}"}
    transport = httpx2.ASGITransport(app=app)
    print(f"  Stats API over HTTP, {date_range[0]} to {date_range[1]} UTC:", end="", flush=True)
    began = time.perf_counter()
    try:
        async with httpx2.AsyncClient(
            transport=transport, base_url="http://bench.local", timeout=options.timeout + 10
        ) as client:
            for label, (fields, _) in API_CLASSES.items():
                request = {"site_id": SITES[0], "date_range": date_range, **fields}

                async def call(request: dict[str, Any] = request) -> int:
                    answer = await client.post("/api/v2/query", json=request, headers=headers)
                    if answer.status_code != 200:
                        raise SystemExit(f"the API answered {answer.status_code}: {answer.text}")
                    return len(answer.json()["results"])

                timing, rows = await timed(call, options.runs, options.budget, options.min_runs)
                timing.rows = rows
                results.api[label] = timing
    finally:
        api_keys.connected(conninfo, lambda c: api_keys.revoke(c, name))
    print(f" {time.perf_counter() - began:.0f} s", flush=True)


def print_api(results: SizeResults) -> None:
    if not results.api:
        return
    print(
        f"\nStats API, POST /api/v2/query over HTTP (in-process ASGI), {API_VARIANT.label}: "
        "p50/p95 ms, and the query layer's p95 of the same question"
    )
    print(f"{'query':<22}{'p50':>8}{'p95':>8}{'layer p95':>11}{'+ms':>8}{'results':>8}{'n':>4}")
    for label, timing in results.api.items():
        filter_name, name = API_CLASSES[label][1]
        layer = results.timings.get((filter_name, API_VARIANT.label, name))
        same = (
            f"{layer.p95_ms:>11.1f}{timing.p95_ms - layer.p95_ms:>8.1f}"
            if layer
            else (f"{'-':>11}{'-':>8}")
        )
        print(
            f"{label:<22}{timing.p50_ms:>8.1f}{timing.p95_ms:>8.1f}{same}"
            f"{timing.rows if timing.rows is not None else '':>8}{timing.runs:>4}"
        )


# -- printing ---------------------------------------------------------------------------


def size_label(events: int) -> str:
    if events % 1_000_000 == 0:
        return f"{events // 1_000_000}M"
    if events % 1000 == 0:
        return f"{events // 1000}k"
    return str(events)


def parse_size(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size like 3M, 500k or 100000")
    factor = {"": 1, "k": 1000, "m": 1_000_000}[match.group(2).lower()]
    return round(float(match.group(1)) * factor)


def human(size: float) -> str:
    for unit in ("B", "kB", "MB"):
        if size < 1000:
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1000
    return f"{size:,.2f} GB"


def cell(timing: Timing | None) -> str:
    if timing is None:
        return f"{'-':>15}"
    return f"{timing.p50_ms:>6.1f}/{timing.p95_ms:>6.1f} {timing.path or ' '}"


def print_size(results: SizeResults, variants: Sequence[Variant], filters: Sequence[str]) -> None:
    print()
    fill = f", filled in {results.fill_s:.0f} s" if results.fill_s is not None else ""
    print(f"=== {results.label}: {results.events:,} events{fill} ===")
    if results.loads:
        print(
            f"load average (1 min, 2 cores) while timing: {min(results.loads):.1f} to "
            f"{max(results.loads):.1f}, median {statistics.median(results.loads):.1f}"
        )
    for label, seconds in results.rollup_s.items():
        print(f"roll-up {label}: {seconds:.1f} s, {results.rollup_days[label]} site-days")
    print(
        "p50/p95 ms of each query; R = read from rollups, M = rollups + raw edges, "
        "W = raw rows only; n = runs"
    )
    for filter_name in [*filters, "raw"]:
        names = sorted(
            {key[2]: None for key in results.timings if key[0] == filter_name},
            key=class_order,
        )
        if not names:
            continue
        title = FILTER_LABELS.get(filter_name) or "unfiltered, use_rollups=False (raw rows)"
        print(f"\n{title}")
        shown = [
            v for v in variants if any(k[:2] == (filter_name, v.label) for k in results.timings)
        ]
        header = f"{'query':<22}" + "".join(f"{v.label:>16}" for v in shown)
        print(header + f"{'rows':>7}{'n':>4}")
        for name in names:
            timings = [results.timings.get((filter_name, v.label, name)) for v in shown]
            first = next((t for t in timings if t is not None), None)
            rows = "" if first is None or first.rows is None else f"{first.rows:>7}"
            runs = "" if first is None else f"{min(t.runs for t in timings if t):>4}"
            print(f"{name:<22}" + "".join(f" {cell(t)}" for t in timings) + f"{rows:>7}{runs}")
    if results.realtime:
        t = results.realtime
        print(f"\nrealtime visitors (last 5 min): p50 {t.p50_ms:.1f} ms, p95 {t.p95_ms:.1f} ms")
    for label, t in results.reports.items():
        print(
            f"picolytics report {label} ({SITES[0]}): p50 {t.p50_ms:.0f} ms, "
            f"p95 {t.p95_ms:.0f} ms, {t.runs} runs ({report_state()})"
        )
    print_api(results)
    if results.disk:
        print(f"\n{'disk':<24}{'bytes':>14}{'per day':>14}")
        for name, size, days in results.disk:
            per_day = human(size / days) if days else "-"
            print(f"{name:<24}{human(size):>14}{per_day:>14}")


def class_order(name: str) -> int:
    order = ["aggregate", "series hour", "series day", "series week", "series month"]
    order += [f"by {d}" for d in ROW_DIMENSIONS]
    return order.index(name) if name in order else len(order)


def print_summary(first: SizeResults, last: SizeResults, variants: Sequence[Variant]) -> None:
    """Issue 17's targets at the largest size, and the growth from the smallest."""
    print(f"\n=== summary: unfiltered 30-day queries, p95 ms, {first.label} vs {last.label} ===")
    print("targets: <= 100 ms in UTC, <= 250 ms in America/New_York; <= 2x from the smallest size")
    zones = [v for v in variants if v.period == "30d"]
    print(f"{'':<22}" + "".join(f" | {variant.label:<35}" for variant in zones))
    columns = f"{first.label:>12}{last.label:>8}{'x':>5}{'tgt':>5}{'2x':>5}"
    print(f"{'query':<22}" + "".join(f" | {columns}" for _ in zones))
    verdicts: dict[str, list[bool]] = {}
    names = sorted({k[2] for k in last.timings if k[0] == "none"}, key=class_order)
    for name in names:
        if not any(("none", v.label, name) in last.timings for v in zones):
            continue
        line = f"{name:<22}"
        for variant in zones:
            small = first.timings.get(("none", variant.label, name))
            big = last.timings.get(("none", variant.label, name))
            if big is None or small is None:
                line += f" | {'-':>35}"
                continue
            target = 100.0 if variant.zone == "UTC" else 250.0
            ratio = big.p95_ms / small.p95_ms
            meets, grows = big.p95_ms <= target, ratio <= 2
            zone = "UTC" if variant.zone == "UTC" else "NY"
            verdicts.setdefault(f"unfiltered <= {target:.0f} ms ({zone})", []).append(meets)
            verdicts.setdefault("unfiltered within 2x of the smallest", []).append(grows)
            line += (
                f" | {small.p95_ms:>12.1f}{big.p95_ms:>8.1f}{ratio:>5.1f}"
                f"{'PASS' if meets else 'MISS':>5}{'PASS' if grows else 'MISS':>5}"
            )
        print(line)
    for variant in variants:
        if variant.period != CLOSED:
            continue
        before = [t.p95_ms for k, t in first.timings.items() if k[:2] == ("none", variant.label)]
        after = [t.p95_ms for k, t in last.timings.items() if k[:2] == ("none", variant.label)]
        if before and after:
            print(
                f"the 30 days before today (rollups only), {variant.label[-3:].strip()}: slowest "
                f"p95 {max(before):.1f} ms at {first.label}, {max(after):.1f} ms at {last.label}"
                f" (x{max(after) / max(before):.1f}); median {statistics.median(after):.1f} ms"
            )
    worst: dict[str, tuple[float, str]] = {}
    for (filter_name, label, name), timing in last.timings.items():
        if filter_name in ("country", "page") and label.startswith("30d") and "by " in name:
            key = f"{label}, {FILTER_LABELS[filter_name]}"
            if timing.p95_ms > worst.get(key, (-1.0, ""))[0]:
                worst[key] = (timing.p95_ms, name)
    print(f"\nat {last.label}:")
    for key, (p95, name) in sorted(worst.items()):
        meets = p95 <= 1500
        verdicts.setdefault("filtered 30-day breakdown <= 1.5 s", []).append(meets)
        print(
            f"  slowest breakdown, {key}: {name} {p95:.0f} ms  "
            f"{'PASS' if meets else 'MISS'} (<= 1500)"
        )
    for label, timing in last.reports.items():
        meets = timing.p95_ms <= 1000
        verdicts.setdefault("30-day report <= 1 s", []).append(meets)
        print(
            f"  picolytics report {label}: {timing.p95_ms:.0f} ms  "
            f"{'PASS' if meets else 'MISS'} (<= 1000)"
        )
    if last.realtime:
        meets = last.realtime.p95_ms <= 100
        print(
            f"  realtime visitors: {last.realtime.p95_ms:.1f} ms  "
            f"{'PASS' if meets else 'MISS'} (<= 100)"
        )
    print("\ntargets:")
    for name, values in verdicts.items():
        print(
            f"  {name:<40} {'PASS' if all(values) else 'MISS'} ({sum(values)}/{len(values)} pass)"
        )


# -- ingest -----------------------------------------------------------------------------


def ingest(seconds: int) -> None:
    """Written events/s of `scripts/bench --wrk` with the read model maintained or not."""
    print("\n=== ingest: scripts/bench --wrk --server uvicorn --workers 2 ===", flush=True)
    for setting in ("off", "on"):
        command = [
            sys.executable,
            str(REPO / "scripts" / "bench"),
            "--wrk",
            "--server",
            "uvicorn",
            "--workers",
            "2",
            "--seconds",
            str(seconds),
            "--rollup",
            setting,
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        written = re.search(r"written (\d+) events/s", done.stdout)
        print(
            f"read-model maintenance {setting:>3} (ROLLUP_INTERVAL_SEC="
            f"{'60' if setting == 'on' else '0'}): "
            f"{written.group(1) + ' written events/s' if written else 'failed'}",
            flush=True,
        )
        for line in done.stdout.splitlines():
            print(f"  {line}")
        if done.returncode:
            print(f"  {done.stderr.strip()[-800:]}")


# -- main -------------------------------------------------------------------------------


def site_id_of(conninfo: str, domain: str) -> int:
    with psycopg.connect(conninfo) as connection:
        row = connection.execute(
            "SELECT site_id FROM sites WHERE domain = %s", (domain,)
        ).fetchone()
    if row is None:
        raise SystemExit(f"no site {domain} in the database: was it filled by this script?")
    return int(row[0])


def prepare(conninfo: str, events: int, span_days: int) -> float | None:
    """Fill the database unless it holds data already; the fill's time, or None."""
    migrate.apply(conninfo)
    existing = estimated_events(conninfo)
    if existing:
        with psycopg.connect(conninfo) as connection:
            row = connection.execute(
                "SELECT filled_at FROM bench_fill ORDER BY filled_at DESC LIMIT 1"
            ).fetchone()
        age = (datetime.now(UTC) - row[0]).total_seconds() / 3600 if row else math.nan
        print(
            f"reusing the {existing:,} events already there (estimate), filled {age:.1f} h ago",
            flush=True,
        )
        return None
    print(f"filling {events:,} events over {span_days} days:", flush=True)
    began = time.perf_counter()
    fill(conninfo, events, span_days)
    elapsed = time.perf_counter() - began
    print(f"filled in {elapsed:.0f} s", flush=True)
    return elapsed


async def bench_size(
    conninfo: str, results: SizeResults, options: argparse.Namespace, smallest: bool
) -> None:
    contrast = smallest and not options.no_contrast
    site_id = site_id_of(conninfo, SITES[0])
    zones = [zone for zone in ZONES if zone in options.zones]
    set_zone(conninfo, site_id, "UTC")
    with psycopg.connect(conninfo, autocommit=True) as sync:  # time a full roll-up
        sync.execute("TRUNCATE " + ", ".join(READ_MODEL))
    print("roll-up (catch_up):", flush=True)
    await roll(conninfo, results, "UTC")
    disk_usage(conninfo, results, options.span_days)
    async with await AsyncConnection.connect(conninfo, autocommit=True) as connection:
        for zone in zones:
            if zone != "UTC":
                set_zone(conninfo, site_id, zone)
                print(f"re-roll after setting {SITES[0]} to {zone}:", flush=True)
                await roll(conninfo, results, zone)
            variants = [Variant(period, zone) for period in ("30d", "7d", CLOSED)]
            await time_queries(
                connection, results, site_id, variants, options.filters, options,
                filtered_periods=("30d", "7d") if smallest else options.filtered_periods,
            )  # fmt: skip
            if contrast:
                await time_queries(
                    connection, results, site_id, variants[:2], ["none"], options,
                    use_rollups=False,
                )  # fmt: skip
            if zone == "UTC":

                async def realtime() -> int:
                    return await engine.realtime_visitors(
                        connection, (site_id,), datetime.now(UTC), timeout_s=options.timeout
                    )

                results.realtime, _ = await timed(
                    realtime, options.runs, options.budget, options.min_runs
                )
            results.note_load()
            print(f"  picolytics report, 30 days, {zone}:", end="", flush=True)
            timing = await time_report(conninfo, zone, options)
            results.reports[Variant("30d", zone).label] = timing
            print(f" {timing.p95_ms / 1000:.1f} s", flush=True)
            results.note_load()
            if zone == "UTC" and not options.no_api:  # the rollups are in UTC now
                await time_api(conninfo, results, options)
                results.note_load()
            if zone != zones[-1]:  # what is measured so far, in case the run is cut short
                print_size(results, variants, options.filters)
    set_zone(conninfo, site_id, "UTC")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--events",
        default="3M,10M,30M",
        help="comma-separated sizes, e.g. 3M,10M,30M (smallest first)",
    )
    parser.add_argument("--span-days", type=int, default=30)
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="keep each size's embedded database in DIR/SIZE (and reuse it)",
    )
    parser.add_argument("--runs", type=int, default=20, help="timed runs after one warm-up")
    parser.add_argument(
        "--budget",
        type=float,
        default=10.0,
        help="seconds per query class at most: fewer runs when slow",
    )
    parser.add_argument("--min-runs", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=120.0, help="statement timeout (s)")
    parser.add_argument("--zones", default=",".join(ZONES))
    parser.add_argument("--filters", default=",".join(FILTERS), help=f"of {', '.join(FILTERS)}")
    parser.add_argument(
        "--filtered-periods",
        default="30d,7d",
        help="periods of the filtered queries after the smallest size (e.g. 30d: they "
        "read raw rows and take long at 30 M); the smallest size runs both",
    )
    parser.add_argument(
        "--no-contrast",
        action="store_true",
        help="skip the use_rollups=False runs at the smallest size",
    )
    parser.add_argument(
        "--ingest",
        action="store_true",
        help="also run scripts/bench --wrk with the roller on and off",
    )
    parser.add_argument("--ingest-seconds", type=int, default=30)
    parser.add_argument(
        "--no-api",
        action="store_true",
        help="skip the Stats API rows (POST /api/v2/query over HTTP)",
    )
    options = parser.parse_args()
    sizes = sorted(parse_size(text) for text in options.events.split(","))
    options.filters = [f for f in options.filters.split(",") if f]
    options.zones = options.zones.split(",")
    options.filtered_periods = options.filtered_periods.split(",")
    unknown = set(options.filters) - set(FILTERS)
    if unknown:
        parser.error(f"unknown filters: {', '.join(sorted(unknown))}")
    variants = [Variant(p, z) for z in ZONES if z in options.zones for p in ("30d", "7d", CLOSED)]
    done: list[SizeResults] = []
    for number, events in enumerate(sizes):
        label = size_label(events)
        print(f"\n--- {label} ---", flush=True)
        folder = options.data_dir / label if options.data_dir else None
        with database(folder) as conninfo:
            fill_s = prepare(conninfo, events, options.span_days)
            results = SizeResults(label, events, fill_s)
            results.events = actual_events(conninfo) or events
            asyncio.run(bench_size(conninfo, results, options, smallest=number == 0))
        done.append(results)
        print_size(results, variants, options.filters)
    if done:
        print_summary(done[0], done[-1], variants)
    if options.ingest:
        ingest(options.ingest_seconds)


def actual_events(conninfo: str) -> int:
    with psycopg.connect(conninfo) as connection:
        row = connection.execute(
            "SELECT events FROM bench_fill ORDER BY filled_at DESC LIMIT 1"
        ).fetchone()
    return int(row[0]) if row else 0


if __name__ == "__main__":
    main()
