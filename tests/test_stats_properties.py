"""The query layer is exact (issue 17): whatever the data and the question, the answer
read from rollups equals the answer read from raw rows, and both equal an independent
reference that evaluates docs/read-model.md in plain Python over the raw rows
(tests/helpers/stats_reference.py).

Datasets: a few sites in different zones, visits across UTC and local midnight (and
across DST changes), visitor ids that change at UTC midnight as the daily salt makes
them, bots, custom events with string, number and boolean props, hashchange with and
without a route, engagement, pings; written through the real batch writer at chosen
receipt times, so sessions are assigned for real. Queries: random metrics, intervals,
breakdowns, filter trees with every operator, periods and zones, orders and pages.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from helpers.database import new_database
from helpers.events import PAGE, TIMEOUT
from helpers.stats_reference import (
    Answer,
    Raw,
    answer,
    documented_key,
    json_text,
    load,
    visit_passes,
)
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import event as statistic
from hypothesis import strategies as st
from psycopg import AsyncConnection
from psycopg.pq import TransactionStatus

from picolytics.dimensions import (
    EVENT_DIMENSIONS,
    METRICS,
    ROW_DIMENSIONS,
    SEGMENTS,
    VISIT_DIMENSIONS,
    Metric,
)
from picolytics.enrich.channels import channel_of
from picolytics.errors import QueryError
from picolytics.events import Agent, BotHit, Location, Props, QueuedEvent, new_id
from picolytics.stats import engine as stats_engine
from picolytics.stats.query import (
    INTERVALS,
    OPERATORS,
    And,
    Breakdown,
    Condition,
    Filter,
    HasDone,
    Interval,
    Not,
    Or,
    Period,
    Query,
    Result,
    Row,
)
from picolytics.storage import migrate, roller, rollup_prefix, sites_admin
from picolytics.storage.prune import prune
from picolytics.storage.sites import SiteIds
from picolytics.storage.writer import prepare_connection, write_batch

DOMAINS = ("alpha.test", "beta.test", "gamma.test")
# Whole-hour, half-hour and DST zones: outside UTC, local midnight is never UTC midnight.
ZONES = (
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Asia/Kolkata",
    "America/St_Johns",
    "America/Santiago",  # clocks change at midnight: a day may start at 01:00
)
# The days a dataset starts on (UTC midnight): US clocks go forward on 2026-03-08 and
# back on 2026-11-01, EU clocks forward on 2026-03-29 and back on 2026-10-25, Chile's
# at midnight (back on 2026-04-05, forward on 2026-09-06); June crosses a month and an
# ISO week, New Year a year. None: two days before today, so the open day has data too.
BASES: tuple[datetime | None, ...] = (
    datetime(2026, 3, 7, tzinfo=UTC),
    datetime(2026, 3, 28, tzinfo=UTC),
    datetime(2026, 4, 3, tzinfo=UTC),
    datetime(2026, 6, 29, tzinfo=UTC),
    datetime(2026, 9, 4, tzinfo=UTC),
    datetime(2026, 10, 24, tzinfo=UTC),
    datetime(2026, 10, 31, tzinfo=UTC),
    datetime(2025, 12, 30, tzinfo=UTC),
    None,
    None,
)
SPAN_DAYS = 3
# Yesterday's visitor id is offered this long after UTC midnight (SaltCache's grace).
SALT_GRACE = TIMEOUT + timedelta(minutes=5)

# Persons: one browser and place each. The same browser version under two browsers and
# the same city and region under two countries, so (parent, value) pairs matter.
AGENTS = (
    Agent("Chrome", "120", "Windows", "10", "desktop", None),
    Agent("Firefox", "120", "Linux", "", "desktop", None),
    Agent("Safari", "17", "iOS", "17", "mobile", None),
    Agent("Chrome", "121", "Android", "14", "mobile", None),
    Agent("Other", "", "Other", "", "tablet", None),
)
LOCATIONS = (
    Location("DE", "Berlin", "Berlin"),
    Location("US", "Illinois", "Springfield"),
    Location("US", "Massachusetts", "Springfield"),
    Location("CA", "Ontario", "London"),
    Location("GB", "England", "London"),
    Location("", "", ""),
)
PATHS = ("/", "/a", "/a/b", "/Blog/x_1", "/100%", "/über", "/shop.html", "/c\\d")
ROUTES = ("#/home", "#!/cart", "#/a")
CUSTOM_NAMES = ("signup", "Download", "outbound", "play_video")
PROP_KEYS = ("plan", "n", "ok", "url")
PROP_VALUES: tuple[str | int | float | bool, ...] = (
    "pro", "Pro", "free", "a_b%", 3, -1, 2.5, 0, True, False,
)  # fmt: skip
REFERRERS = ("", "", "news.example", "search.example")
UTM_SOURCES = ("", "", "mail", "Ads")
UTM_VALUES = ("", "", "spring", "x-1")
BOT_REASONS = ("empty_ua", "crawler_list", "parser_spider")


# -- datasets ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Step:
    """One event of a visit, `gap_s` after the one before (the first: at the start)."""

    gap_s: int
    name: str
    path: str = "/"
    hash_path: str = ""
    props: Props | None = None
    engaged_ms: int | None = None
    scroll_depth: int | None = None
    interactive: bool = True


@dataclass(frozen=True, slots=True)
class Visit:
    """What one person does in one go. Long gaps split it into several sessions."""

    site: int  # index into Dataset.zones
    person: int
    start: timedelta  # after the dataset's base
    referrer_host: str
    utm: tuple[str, str, str, str, str]
    steps: tuple[Step, ...]


@dataclass(frozen=True, slots=True)
class Dataset:
    base: datetime | None  # None: two days before today (see `base_of`)
    zones: tuple[str, ...]  # one per site: DOMAINS[i] is in zones[i]
    visits: tuple[Visit, ...]
    late: tuple[Visit, ...]  # written after the rollups (late writes)
    bots: tuple[tuple[int, int, str, int], ...]  # site, day after base, reason, hits
    batch_size: int
    # When the roller runs, after base (None: `roller_clock`): a day of the dataset is
    # then the roller's open day, rolled as a prefix (storage/rollup_prefix.py).
    roll_at: timedelta | None = None


HOSTS = ("a.example", "", "b.a.example")


def base_of(dataset: Dataset, now: datetime) -> datetime:
    if dataset.base is not None:
        return dataset.base
    today = datetime.combine(now.astimezone(UTC).date(), time(), UTC)
    return today - timedelta(days=2)


def visitor_id(site: int, person: int, day: date) -> int:
    """A visitor id as the daily salt makes it: a new one every UTC day."""
    digest = hashlib.blake2b(f"{site}:{person}:{day}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def queued_events(visits: Sequence[Visit], base: datetime, now: datetime) -> list[QueuedEvent]:
    """The events of the visits as the ingest would queue them, in order of receipt;
    none later than a minute ago."""
    out: list[QueuedEvent] = []
    for visit in visits:
        at = base + visit.start
        for number, step in enumerate(visit.steps):
            if number:
                at += timedelta(seconds=step.gap_s)
            if at > now - timedelta(minutes=1):
                break
            day = at.date()
            midnight = datetime.combine(day, time(), UTC)
            previous = (
                visitor_id(visit.site, visit.person, day - timedelta(days=1))
                if at - midnight <= SALT_GRACE
                else None
            )
            source, medium, campaign, content, term = visit.utm
            page = replace(
                PAGE,
                # A page's host: several per site and visit, and "" as stored before 0020.
                hostname=HOSTS[(visit.person + number) % len(HOSTS)],
                name=step.name,
                site=DOMAINS[visit.site],
                path=step.path,
                hash_path=step.hash_path,
                referrer_host=visit.referrer_host,
                utm_source=source,
                utm_medium=medium,
                utm_campaign=campaign,
                utm_content=content,
                utm_term=term,
                props=step.props,
                engaged_ms=step.engaged_ms,
                scroll_depth=step.scroll_depth,
                interactive=step.interactive,
            )
            out.append(
                QueuedEvent(
                    at,
                    new_id(),
                    visitor_id(visit.site, visit.person, day),
                    previous,
                    page,
                    LOCATIONS[visit.person % len(LOCATIONS)],
                    AGENTS[visit.person % len(AGENTS)],
                    channel=channel_of(source, medium, campaign, visit.referrer_host),
                )
            )
    out.sort(key=lambda event: event.received_at)
    return out


async def write_events(
    conninfo: str,
    events: Sequence[QueuedEvent],
    batch_size: int,
    bots: dict[BotHit, int] | None = None,
) -> None:
    """Through the real batch writer, in batches in order of receipt, as the pipeline
    writes them; bot hits with the first batch."""
    sites = SiteIds()
    async with await AsyncConnection.connect(conninfo, autocommit=True) as connection:
        await prepare_connection(connection, "30s")
        batches = [events[i : i + batch_size] for i in range(0, len(events), batch_size)]
        for number, batch in enumerate(batches or [[]]):
            hits = (bots or {}) if number == 0 else {}
            if batch or hits:
                await write_batch(connection, sites, batch, hits, TIMEOUT)


def reset(connection: psycopg.Connection[Any], zones: Sequence[str]) -> dict[int, int]:
    """Empty every table the data and the read model live in; create the sites, each in
    its zone. Returns site index -> site_id."""
    connection.execute(
        "TRUNCATE sites, sessions, visitor_sessions, events, bot_counts, rollup_days,"
        " rollup_stale, rollup_visits, rollup_events, rollup_hours, rollup_segment_visits,"
        " rollup_segment_events, rollup_segment_splits RESTART IDENTITY CASCADE"
    )
    ids: dict[int, int] = {}
    for index, zone in enumerate(zones):
        row = connection.execute(
            "INSERT INTO sites (domain) VALUES (%s) RETURNING site_id", (DOMAINS[index],)
        ).fetchone()
        assert row is not None
        ids[index] = int(row[0])
        connection.execute("UPDATE sites SET timezone = %s WHERE site_id = %s", (zone, ids[index]))
    return ids


def bot_hits(dataset: Dataset, base: datetime) -> dict[BotHit, int]:
    return {
        BotHit(DOMAINS[site], (base + timedelta(days=day)).date(), reason): hits  # type: ignore[arg-type]
        for site, day, reason, hits in dataset.bots
        if site < len(dataset.zones)
    }


# -- dataset strategies ------------------------------------------------------------------

# Minutes of the UTC day near which visits start: UTC midnight and the local midnights
# of ZONES (Berlin 22:00/23:00, New York 04:00/05:00, Kolkata 18:30, St John's 02:30/
# 03:30, Santiago 03:00/04:00).
MIDNIGHTS = (0, 22 * 60, 23 * 60, 3 * 60, 4 * 60, 5 * 60, 18 * 60 + 30, 2 * 60 + 30, 3 * 60 + 30)


@st.composite
def starts(draw: st.DrawFn, anchors: Sequence[timedelta]) -> timedelta:
    """When a visit starts: near one of the dataset's anchors (so one person's visits
    fall on both sides of a midnight), near a midnight, or anywhere in the span."""
    kind = draw(st.sampled_from(("anchor", "anchor", "midnight", "any")))
    if kind == "anchor":
        jitter = draw(st.integers(-90 * 60, 90 * 60))
        return max(timedelta(0), draw(st.sampled_from(anchors)) + timedelta(seconds=jitter))
    day = draw(st.integers(0, SPAN_DAYS - 1))
    if kind == "midnight":
        minute = draw(st.sampled_from(MIDNIGHTS)) + draw(st.integers(-50, 50))
    else:
        minute = draw(st.integers(0, 24 * 60 - 1))
    return timedelta(days=day, minutes=minute, seconds=draw(st.integers(0, 59)))


props_strategy = st.one_of(
    st.none(),
    st.dictionaries(st.sampled_from(PROP_KEYS), st.sampled_from(PROP_VALUES), max_size=3),
)
# Mostly seconds apart; sometimes longer than the session timeout (a new session).
gaps = st.one_of(st.integers(0, 300), st.integers(300, 1700), st.integers(1900, 4000))


@st.composite
def steps(draw: st.DrawFn, first: bool) -> Step:
    gap = 0 if first else draw(gaps)
    kind = draw(
        st.sampled_from(
            ("load", "load", "nav", "route", "anchor", "custom", "engagement", "ping", "visible")
        )
        if not first
        else st.sampled_from(("load", "load", "load", "route", "custom", "engagement"))
    )
    path = draw(st.sampled_from(PATHS))
    if kind in ("load", "nav"):
        route = draw(st.sampled_from(("", "", *ROUTES)))
        return Step(gap, kind, path, route)
    if kind == "route":
        return Step(gap, "hashchange", path, draw(st.sampled_from(ROUTES)))
    if kind == "anchor":  # in-page anchor: the ingest keeps no fragment, not a pageview
        return Step(gap, "hashchange", path)
    if kind == "custom":
        return Step(
            gap,
            draw(st.sampled_from(CUSTOM_NAMES)),
            path,
            props=draw(props_strategy),
            interactive=draw(st.booleans()),
        )
    if kind == "engagement":
        return Step(
            gap,
            "engagement",
            path,
            engaged_ms=draw(st.sampled_from((5_000, 30_000, 45_000))),
            scroll_depth=draw(st.integers(0, 100)),
        )
    return Step(gap, kind, path)


@st.composite
def visits(draw: st.DrawFn, sites: int, anchors: Sequence[timedelta]) -> Visit:
    count = draw(st.integers(1, 7))
    return Visit(
        site=draw(st.integers(0, sites - 1)),
        person=draw(st.sampled_from((0, 0, 1, 1, 2, 3, 4, 5))),
        start=draw(starts(anchors)),
        referrer_host=draw(st.sampled_from(REFERRERS)),
        utm=(
            draw(st.sampled_from(UTM_SOURCES)),
            draw(st.sampled_from(UTM_VALUES)),
            draw(st.sampled_from(UTM_VALUES)),
            draw(st.sampled_from(UTM_VALUES)),
            draw(st.sampled_from(UTM_VALUES)),
        ),
        steps=(draw(steps(True)), *(draw(steps(False)) for _ in range(count - 1))),
    )


@st.composite
def datasets(draw: st.DrawFn, late: bool = False) -> Dataset:
    zones = tuple(draw(st.lists(st.sampled_from(ZONES), min_size=1, max_size=3)))
    anchors = [
        timedelta(
            days=draw(st.integers(0, SPAN_DAYS - 1)), minutes=draw(st.sampled_from(MIDNIGHTS))
        )
        for _ in range(draw(st.integers(1, 3)))
    ]
    some_visits = st.lists(visits(len(zones), anchors), min_size=4, max_size=20)
    return Dataset(
        base=draw(st.sampled_from(BASES)),
        zones=zones,
        visits=tuple(draw(some_visits)),
        late=tuple(draw(st.lists(visits(len(zones), anchors), min_size=1, max_size=5)))
        if late
        else (),
        bots=tuple(
            draw(
                st.lists(
                    st.tuples(
                        st.integers(0, len(zones) - 1),
                        st.integers(0, SPAN_DAYS - 1),
                        st.sampled_from(BOT_REASONS),
                        st.integers(1, 50),
                    ),
                    max_size=3,
                    unique_by=lambda hit: hit[:3],
                )
            )
        ),
        batch_size=draw(st.sampled_from((1, 7, 50, 1000))),
        # Mostly a few hours after an anchor, so the open day has visits on both sides of
        # its prefix's end; often just over ROLL_DELAY after, so that some visit goes on
        # across it (the same page or event on both sides: stats/prefix_events.py).
        roll_at=draw(
            st.one_of(
                st.none(),
                st.sampled_from(anchors).flatmap(
                    lambda anchor: st.one_of(st.integers(60, 150), st.integers(30, 720)).map(
                        lambda m: anchor + timedelta(minutes=m)
                    )
                ),
            )
        ),
    )


# -- the database ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stats_database(admin_conninfo: str) -> Iterator[str]:
    """One migrated database for this module; each example starts by emptying it."""
    with new_database(admin_conninfo) as conninfo:
        migrate.apply(conninfo)
        yield conninfo


def write_dataset(conninfo: str, dataset: Dataset, now: datetime) -> dict[int, int]:
    """Empty the database and write the dataset's visits and bots (not the late ones)."""
    base = base_of(dataset, now)
    with psycopg.connect(conninfo, autocommit=True) as connection:
        ids = reset(connection, dataset.zones)
    events = queued_events(dataset.visits, base, now)
    asyncio.run(write_events(conninfo, events, dataset.batch_size, bot_hits(dataset, base)))
    return ids


def raw_rows(conninfo: str) -> Raw:
    with psycopg.connect(conninfo) as connection:
        return load(connection)


# -- the reference by hand ---------------------------------------------------------------

BERLIN = "Europe/Berlin"
JUNE_10 = datetime(2026, 6, 10, tzinfo=UTC)


def by_hand_visits() -> tuple[Visit, ...]:
    """Four visits of a site in Berlin (UTC+2 in June), around UTC and local midnight:

    V1 person 0, 06-10 21:50Z (23:50 local 06-10): /a, /b two minutes later; 120 s.
    V2 person 0, 06-10 22:30Z (00:30 local 06-11): /a alone, a bounce; same visitor
       id as V1 (same UTC day), a new session (38 minutes later).
    V3 person 0, 06-11 00:10Z (02:10 local 06-11): /a, then signup {plan: pro} a
       minute later; a new visitor id (new UTC day), not a bounce; 60 s.
    V4 person 1, 06-11 10:00Z (12:00 local): /b, a ping 30 s later; not a bounce; 30 s.
    """
    none = ("", "", "", "", "")
    return (
        Visit(0, 0, timedelta(hours=21, minutes=50), "", none,
              (Step(0, "load", "/a"), Step(120, "nav", "/b"))),
        Visit(0, 0, timedelta(hours=22, minutes=30), "news.example", none,
              (Step(0, "load", "/a"),)),
        Visit(0, 0, timedelta(days=1, minutes=10), "", ("mail", "", "", "", ""),
              (Step(0, "load", "/a"), Step(60, "signup", "/a", props={"plan": "pro"}))),
        Visit(0, 1, timedelta(days=1, hours=10), "", none,
              (Step(0, "load", "/b"), Step(30, "ping", "/b"))),
    )  # fmt: skip


def local_days(first: date, last: date, zone: str) -> Period:
    tz = ZoneInfo(zone)
    return Period(
        datetime.combine(first, time(), tz),
        datetime.combine(last + timedelta(days=1), time(), tz),
        zone,
    )


def ask(raw: Raw, site_id: int, period: Period, **fields: Any) -> Answer:
    return answer(raw, Query(site_ids=(site_id,), period=period, **fields))


def test_reference_by_hand(stats_database: str) -> None:
    dataset = Dataset(JUNE_10, (BERLIN,), by_hand_visits(), (), ((0, 1, "crawler_list", 9),), 2)
    now = datetime.now(UTC)
    ids = write_dataset(stats_database, dataset, now)
    site = ids[0]
    raw = raw_rows(stats_database)
    # The writer made the sessions described above.
    sessions = sorted(raw.sessions.values(), key=lambda s: s.started_at)
    assert [(s.pageviews, s.bounce, s.duration_s) for s in sessions] == [
        (2, False, 120),
        (1, True, 0),
        (1, False, 60),
        (1, False, 30),
    ]
    assert sessions[0].visitor_id == sessions[1].visitor_id != sessions[2].visitor_id
    berlin = local_days(date(2026, 6, 10), date(2026, 6, 11), BERLIN)
    utc = local_days(date(2026, 6, 10), date(2026, 6, 11), "UTC")
    every = ("visitors", "visits", "pageviews", "events", "bounce_rate", "visit_duration",
             "views_per_visit")  # fmt: skip
    totals = {"visits": 4, "pageviews": 5, "events": 6, "bounce_rate": 25.0,
              "visit_duration": 52.5, "views_per_visit": 1.25}  # fmt: skip
    # Berlin: 06-10 has V1 (1 id); 06-11 has V2, V3, V4 (3 ids). UTC: 06-10 has V1 and
    # V2 (1 id), 06-11 V3 and V4 (2 ids).
    assert ask(raw, site, berlin, metrics=every).page == (
        Row(None, "", None, {"visitors": 4, **totals}),  # type: ignore[dict-item]
    )
    assert ask(raw, site, utc, metrics=every).page == (
        Row(None, "", None, {"visitors": 3, **totals}),  # type: ignore[dict-item]
    )
    # Pages: visitors and visits are distinct ids of the pageviews, per local day.
    pages = ask(raw, site, berlin, metrics=("pageviews", "visitors", "visits", "events"),
                breakdown=Breakdown("page"))  # fmt: skip
    assert pages.page == (
        Row(None, "", "/a", {"pageviews": 3, "visitors": 3, "visits": 3, "events": 3}),
        Row(None, "", "/b", {"pageviews": 2, "visitors": 2, "visits": 2, "events": 2}),
    )
    assert pages.total_rows == 2
    # Entry pages: a visit dimension, so pageviews are those of the visits.
    entries = ask(raw, site, berlin, metrics=("visits", "visitors", "pageviews", "bounce_rate"),
                  breakdown=Breakdown("entry_page"))  # fmt: skip
    assert entries.page == (
        Row(None, "", "/a", {"visits": 3, "visitors": 3, "pageviews": 4, "bounce_rate": 33.3}),
        Row(None, "", "/b", {"visits": 1, "visitors": 1, "pageviews": 1, "bounce_rate": 0.0}),
    )
    sources = ask(raw, site, berlin, metrics=("visits",), breakdown=Breakdown("source"))
    assert [(row.value, row.metrics["visits"]) for row in sources.page] == [
        ("(direct)", 2),
        ("mail", 1),
        ("news.example", 1),
    ]
    # Days in Berlin: pageviews by when they were received.
    days = ask(raw, site, berlin, metrics=("visits", "visitors", "pageviews"), interval="day")
    assert days.page == (
        Row(date(2026, 6, 10), "", None, {"visits": 1, "visitors": 1, "pageviews": 2}),
        Row(date(2026, 6, 11), "", None, {"visits": 3, "visitors": 3, "pageviews": 3}),
    )
    hours = ask(raw, site, berlin, metrics=("visits",), interval="hour")
    assert [(row.time, row.metrics["visits"]) for row in hours.page] == [
        (datetime(2026, 6, 10, 23), 1),
        (datetime(2026, 6, 11, 0), 1),
        (datetime(2026, 6, 11, 2), 1),
        (datetime(2026, 6, 11, 12), 1),
    ]
    signups = ask(raw, site, berlin, metrics=("events", "visitors", "visits"),
                  breakdown=Breakdown("event"))  # fmt: skip
    assert signups.page == (Row(None, "", "signup", {"events": 1, "visitors": 1, "visits": 1}),)
    plans = ask(raw, site, berlin, metrics=("events",), breakdown=Breakdown("prop", "plan"))
    assert [(row.value, row.metrics["events"]) for row in plans.page] == [("pro", 1)]
    # A page filter on the visit grain: visits with a pageview of /b (V1, V4).
    on_b = Condition("page", "is", ("/b",))
    assert ask(raw, site, berlin, metrics=("visits",), filters=on_b).page[0].metrics == {
        "visits": 2
    }
    # ... and on the event grain: the pageviews of /b only.
    assert ask(raw, site, berlin, metrics=("pageviews", "events"), filters=on_b).page[
        0
    ].metrics == {"pageviews": 2, "events": 2}
    # A visit filter keeps the events of those visits: V2 came from news.example.
    news = Condition("referrer", "contains", ("NEWS",), case_sensitive=False)
    assert ask(raw, site, berlin, metrics=("visits", "pageviews"), filters=news).page[
        0
    ].metrics == {"visits": 1, "pageviews": 1}
    # The bots wrote only bot_counts: nothing above counts them.
    with psycopg.connect(stats_database) as connection:
        assert connection.execute("SELECT sum(hits) FROM bot_counts").fetchone() == (9,)
    # Paging and order: by visits ascending, one row after the first.
    paged = ask(raw, site, berlin, metrics=("visits",), breakdown=Breakdown("entry_page"),
                order_by=(("visits", "asc"),), limit=1, offset=1)  # fmt: skip
    assert [row.value for row in paged.page] == ["/a"]
    assert paged.total_rows == 2


# -- query strategies --------------------------------------------------------------------

MISS = "zz-miss"
REGEX_SPECIAL = frozenset(".^$*+?()[]{}|\\")


@dataclass(frozen=True, slots=True)
class Values:
    """The values each dimension takes in the raw rows (to filter on them)."""

    of: dict[str, tuple[str, ...]]
    prop_keys: tuple[str, ...]
    props: dict[str, tuple[str, ...]]
    times: tuple[datetime, ...] = ()  # of visit starts and events: period edges

    def pool(self, dimension: str, prop_key: str | None) -> tuple[str, ...]:
        if dimension == "prop":
            return (*self.props.get(prop_key or "", ()), MISS)
        return (*self.of.get(dimension, ()), MISS)


def observed_values(raw: Raw) -> Values:
    of: dict[str, set[str]] = {dimension: set() for dimension in ROW_DIMENSIONS}
    props: dict[str, set[str]] = {}
    for session in raw.sessions.values():
        for dimension in VISIT_DIMENSIONS:
            of[dimension].add(session.value(dimension))
    for event in raw.events:
        if event.is_pageview:
            of["page"].add(event.path)
        if event.counted:
            of["hostname"].add(event.hostname)
        if event.is_custom:
            of["event"].add(event.name)
            for key, value in (event.props or {}).items():
                props.setdefault(key, set()).add(json_text(value))
    return Values(
        {dimension: tuple(sorted(values)) for dimension, values in of.items()},
        tuple(sorted(props)),
        {key: tuple(sorted(values)) for key, values in props.items()},
        tuple(
            sorted(
                {s.started_at for s in raw.sessions.values()} | {e.received_at for e in raw.events}
            )
        ),
    )


def escape(text: str) -> str:
    """A literal in a regular expression, read alike by PostgreSQL and Python."""
    return "".join("\\" + c if c in REGEX_SPECIAL else c for c in text)


@st.composite
def patterns(draw: st.DrawFn, value: str) -> str:
    """A regular expression made from a value with the features both engines read
    alike: literals, ., [], ?, *, +, ^, $ and alternation."""
    start = draw(st.integers(0, len(value)))
    end = draw(st.integers(start, len(value)))
    tokens: list[str] = []
    for char in value[start:end]:
        choice = draw(st.sampled_from(("literal", "literal", "literal", "dot", "class")))
        if choice == "dot":
            token = "."
        elif choice == "class" and char.isascii() and char.isalnum():
            token = "[" + char + draw(st.sampled_from("xyZ9")) + "]"
        else:
            token = escape(char)
        token += draw(st.sampled_from(("", "", "", "", "?", "*", "+")))
        tokens.append(token)
    pattern = "".join(tokens)
    if draw(st.booleans()):
        pattern = ("^" if start == 0 else ".") + pattern
    if draw(st.booleans()):
        pattern += "$" if end == len(value) else "."
    return pattern


def swap_ascii_case(text: str, mask: int) -> str:
    """Flip the case of some ASCII letters (bit i of mask: the i-th character)."""
    return "".join(
        c.swapcase() if c.isascii() and c.isalpha() and mask >> i & 1 else c
        for i, c in enumerate(text)
    )


@st.composite
def conditions(
    draw: st.DrawFn, values: Values, on: Breakdown | None = None, events_only: bool = False
) -> Condition:
    """A condition on any dimension (on an event dimension only, if asked), or on the
    breakdown's `on` (with its key)."""
    # Event dimensions (3 of 20) more often: their rules are the subtle ones.
    among = EVENT_DIMENSIONS if events_only else ROW_DIMENSIONS + EVENT_DIMENSIONS * 3
    dimension = on.dimension if on else draw(st.sampled_from(among))
    prop_key = None
    if dimension == "prop":
        prop_key = (
            on.prop_key
            if on
            else draw(st.sampled_from((*values.prop_keys, *values.prop_keys, "nokey")))
        )
    operator = draw(st.sampled_from(OPERATORS))
    case_sensitive = draw(st.booleans())
    pool = values.pool(dimension, prop_key)
    chosen: list[str] = []
    for _ in range(draw(st.integers(1, 3))):
        value = draw(st.sampled_from(pool))
        if operator.startswith("contains"):
            start = draw(st.integers(0, len(value)))
            value = value[start : draw(st.integers(start, len(value)))]
        elif operator.startswith("matches"):
            value = draw(patterns(value))
        if not case_sensitive:
            value = swap_ascii_case(value, draw(st.integers(0, 2**12)))
        chosen.append(value)
    if operator.startswith("matches") and len(chosen) > 1 and draw(st.booleans()):
        chosen = ["|".join(chosen)]  # alternation inside one pattern
    return Condition(dimension, operator, tuple(chosen), prop_key, case_sensitive)


@st.composite
def behavioral(draw: st.DrawFn, values: Values) -> Filter:
    """has_done or has_not_done of a condition on events, or of two or three of them
    (and-ed: one event must match them all; or-ed), or of a negated one."""
    event = conditions(values, events_only=True)
    shape = draw(st.sampled_from(("one", "and", "or", "not")))
    if shape == "one":
        inner: Filter = draw(event)
    elif shape == "not":
        inner = Not(draw(event))
    else:
        found = [draw(event) for _ in range(draw(st.integers(2, 3)))]
        if shape == "or":
            inner = Or(tuple(found))
        else:
            inner = And(tuple(Not(f) if draw(st.booleans()) else f for f in found))
    return HasDone(inner, draw(st.booleans()))


@st.composite
def leaf_filters(draw: st.DrawFn, values: Values) -> Filter:
    """A condition, or one time in four a behavioral filter (at most 3 conditions, 3
    deep)."""
    if draw(st.integers(0, 3)) == 0:
        return draw(behavioral(values))
    return draw(conditions(values))


def filters(values: Values) -> st.SearchStrategy[Filter]:
    # One composite leaf: the recursion's repr holds `values` once.
    return st.recursive(
        leaf_filters(values),
        lambda children: st.one_of(
            st.lists(children, min_size=1, max_size=3).map(lambda fs: And(tuple(fs))),
            st.lists(children, min_size=1, max_size=3).map(lambda fs: Or(tuple(fs))),
            children.map(Not),
        ),
        max_leaves=4,
    )


def metrics_for(breakdown: Breakdown | None) -> tuple[Metric, ...]:
    if breakdown is None or breakdown.dimension not in EVENT_DIMENSIONS:
        return METRICS
    if breakdown.dimension == "page":
        return ("pageviews", "events", "visitors", "visits")
    return ("events", "visitors", "visits")


def day_start(day: date, zone: str) -> datetime:
    return datetime.combine(day, time(), ZoneInfo(zone))


@st.composite
def periods(
    draw: st.DrawFn, base: datetime, zone: str, now: datetime, times: Sequence[datetime] = ()
) -> Period:
    kind = draw(st.sampled_from(("days", "days", "partial", "span", "open", "edges")))
    if kind == "edges" and times:  # from a row's time to (just after) another's
        start, end = sorted((draw(st.sampled_from(times)), draw(st.sampled_from(times))))
        if draw(st.booleans()) or end == start:
            end += timedelta(microseconds=1)
        return Period(start.astimezone(ZoneInfo(zone)), end.astimezone(ZoneInfo(zone)), zone)
    if kind == "edges":
        kind = "partial"
    if kind == "days":
        first = base.date() + timedelta(days=draw(st.integers(-1, SPAN_DAYS)))
        count = draw(st.integers(1, SPAN_DAYS))
        return Period(day_start(first, zone), day_start(first + timedelta(days=count), zone), zone)
    if kind == "partial":
        start = base + timedelta(minutes=draw(st.integers(-600, SPAN_DAYS * 1440 + 600)))
        end = start + timedelta(minutes=draw(st.integers(1, 3 * 1440)))
        return Period(start.astimezone(ZoneInfo(zone)), end.astimezone(ZoneInfo(zone)), zone)
    if kind == "span":
        first = base.date() - timedelta(days=2)
        last = base.date() + timedelta(days=SPAN_DAYS + 2)
        return Period(day_start(first, zone), day_start(last, zone), zone)
    today = now.astimezone(ZoneInfo(zone)).date()
    end = (
        now + timedelta(minutes=draw(st.integers(-30, 30)))
        if draw(st.booleans())
        else day_start(today + timedelta(days=1), zone)
    )
    start = day_start(today - timedelta(days=draw(st.integers(0, 3))), zone)
    end = max(end, start + timedelta(minutes=1))
    return Period(start, end.astimezone(ZoneInfo(zone)), zone)


@st.composite
def queries(
    draw: st.DrawFn, site_ids: dict[int, int], zones: Sequence[str], values: Values,
    base: datetime, now: datetime, old_zones: Sequence[str] = (),
) -> Query:  # fmt: skip
    """A query of some sites, mostly in the zone of the first (or the zone it had)."""
    indexes = draw(st.lists(st.sampled_from(sorted(site_ids)), min_size=1, unique=True))
    first_zone = zones[indexes[0]]
    was = old_zones[indexes[0]] if old_zones else first_zone
    zone = draw(st.sampled_from((first_zone, was, *ZONES)))
    breakdown: Breakdown | None = None
    if draw(st.booleans()):
        # Event dimensions twice as often: their open-day tails count ids over events.
        dimension = draw(st.sampled_from((*ROW_DIMENSIONS, *EVENT_DIMENSIONS)))
        key = (
            draw(st.sampled_from((*values.prop_keys, *values.prop_keys, "nokey")))
            if dimension == "prop"
            else None
        )
        breakdown = Breakdown(dimension, key)
    metrics = tuple(
        draw(st.lists(st.sampled_from(metrics_for(breakdown)), min_size=1, max_size=4, unique=True))
    )
    interval = draw(st.sampled_from((None, None, *INTERVALS)))
    filter_ = draw(st.one_of(st.none(), filters(values)))
    if breakdown is not None and filter_ is not None and draw(st.booleans()):
        # A filter on the breakdown's own dimension: the rollups can answer it.
        own: Filter = draw(conditions(values, breakdown))
        wrap = draw(st.sampled_from(("", "not", "or")))
        if wrap == "not":
            own = Not(own)
        elif wrap == "or":
            own = Or((own, draw(conditions(values, breakdown))))
        filter_ = own
    elif filter_ is not None and draw(st.booleans()):
        # A filter on one segment: the segment rollups can answer it (a Not sometimes,
        # which they cannot, and a one-value `is` often, which they may on any day).
        on = Breakdown(draw(st.sampled_from(SEGMENTS)))
        segment_filter: Filter = draw(conditions(values, on))
        if draw(st.booleans()):
            segment_filter = Condition(
                on.dimension, "is", (draw(st.sampled_from(values.pool(on.dimension, None))),)
            )
        wrap = draw(st.sampled_from(("", "", "and", "or", "not")))
        if wrap == "not":
            segment_filter = Not(segment_filter)
        elif wrap:
            pair = (segment_filter, draw(conditions(values, on)))
            segment_filter = And(pair) if wrap == "and" else Or(pair)
        filter_ = segment_filter
    keys = [*metrics, *(["value"] if breakdown else []), *(["time"] if interval else [])]
    order = draw(
        st.lists(
            st.tuples(st.sampled_from(keys), st.sampled_from(("asc", "desc"))),
            max_size=2,
            unique_by=lambda item: item[0],
        )
    )
    limit = draw(st.one_of(st.none(), st.integers(0, 6))) if breakdown or interval else None
    offset = draw(st.integers(0, 4)) if limit is not None else 0
    return Query(
        site_ids=tuple(site_ids[i] for i in indexes),
        period=draw(periods(base, zone, now, values.times)),
        metrics=metrics,
        interval=interval,
        breakdown=breakdown,
        filters=filter_,
        order_by=tuple(order),  # type: ignore[arg-type]
        limit=limit,
        offset=offset,
    )


# -- the reference is consistent with itself ---------------------------------------------

PROPERTY = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def total(raw: Raw, query: Query, metric: Metric) -> Any:
    (row,) = answer(raw, replace(query, metrics=(metric,), interval=None, breakdown=None)).rows
    return row.metrics[metric]


@PROPERTY
@given(data=st.data())
def test_reference_is_consistent(stats_database: str, data: st.DataObject) -> None:
    """Sums the definitions promise: visits and visitors over buckets add up to the
    period's; a filter and its negation split the visits and the events; in UTC the
    visitors are the distinct ids (visitor ids change at UTC midnight only)."""
    now = datetime.now(UTC)
    dataset = data.draw(datasets())
    ids = write_dataset(stats_database, dataset, now)
    raw = raw_rows(stats_database)
    expected = queued_events(dataset.visits, base_of(dataset, now), now)
    assert len(raw.events) == len(expected)  # bots are never events
    values = observed_values(raw)
    base = base_of(dataset, now)
    for _ in range(4):
        query = data.draw(queries(ids, dataset.zones, values, base, now))
        query = replace(query, breakdown=None, order_by=(), limit=None, offset=0)
        visits = total(raw, query, "visits")
        visitors = total(raw, query, "visitors")
        events = total(raw, query, "events")
        for interval in ("day", "week", "month"):
            series = answer(
                raw, replace(query, metrics=("visits", "visitors", "events"), interval=interval)
            ).rows
            assert sum(row.metrics["visits"] or 0 for row in series) == visits
            assert sum(row.metrics["visitors"] or 0 for row in series) == visitors
            assert sum(row.metrics["events"] or 0 for row in series) == events
        if query.filters is not None:
            unfiltered = replace(query, filters=None)
            negated = replace(query, filters=Not(query.filters))
            for metric in ("visits", "events", "pageviews"):
                assert total(raw, query, metric) + total(raw, negated, metric) == total(
                    raw, unfiltered, metric
                )
        for dimension in ("source", "country", "browser_version", "entry_page"):
            rows = answer(
                raw, replace(query, metrics=("visits",), breakdown=Breakdown(dimension))
            ).rows
            assert sum(row.metrics["visits"] or 0 for row in rows) == visits
        if query.period.timezone == "UTC":
            distinct = {
                s.visitor_id
                for s in raw.sessions.values()
                if s.site_id in query.site_ids
                and s.pageviews
                and query.period.start <= s.started_at < query.period.end
                and (
                    query.filters is None
                    or visit_passes(
                        query.filters, s, raw.events_of.get((s.site_id, s.session_id), ())
                    )
                )
            }
            assert visitors == len(distinct)


# -- the engine against the reference ----------------------------------------------------

EQUAL = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
QUERIES_PER_DATASET = 6


def rollup_shaped(query: Query) -> bool:
    """May rollups answer this query's rolled days? (docs/read-model.md, How it is kept
    fast; stats/shape.py): not with a filter on another dimension than the breakdown's
    (and its key) or than one segment (without Not, by nothing, a visit dimension or
    page), not an hourly series with a breakdown or a filter, not `events` by a visit
    dimension (the events of visits are not rolled up by visit value)."""
    breakdown = query.breakdown
    dimension = breakdown.dimension if breakdown else None
    if query.interval == "hour" and (breakdown is not None or query.filters is not None):
        return False
    if dimension in VISIT_DIMENSIONS and "events" in query.metrics:
        return False
    if query.filters is None:
        return True
    if has_done(query.filters):  # whether a visit had some event: in no rollup
        return False
    assert breakdown is not None or dimension is None
    own = all(
        c.dimension == dimension and (dimension != "prop" or c.prop_key == breakdown.prop_key)  # type: ignore[union-attr]
        for c in leaves(query.filters)
    )
    return own or segment_of(query) is not None


def segment_of(query: Query) -> str | None:
    """The segment whose rollups answer a filtered query, if any."""
    dimension = query.breakdown.dimension if query.breakdown else None
    if query.filters is None or dimension in ("event", "prop"):
        return None
    found = {c.dimension for c in leaves(query.filters)}
    if len(found) != 1 or dimension in found:
        return None
    (segment,) = found
    if segment not in SEGMENTS or has_not(query.filters):
        return None
    return segment


def has_not(filter_: Filter) -> bool:
    if isinstance(filter_, Not | HasDone):
        return True
    if isinstance(filter_, Condition):
        return False
    return any(has_not(inner) for inner in filter_.filters)


def has_done(filter_: Filter) -> bool:
    if isinstance(filter_, HasDone):
        return True
    if isinstance(filter_, Condition):
        return False
    if isinstance(filter_, Not):
        return has_done(filter_.filter)
    return any(has_done(inner) for inner in filter_.filters)


def any_day(query: Query) -> bool:
    """May a segment's rollups answer on a day the segment splits a visitor? When the
    visitors of several values are never added: the filter holds for one value only
    (a case-sensitive `is` of one value), or no visitors are asked for."""
    one = query.filters
    return "visitors" not in query.metrics or (
        isinstance(one, Condition)
        and one.operator == "is"
        and one.case_sensitive
        and len(one.values) == 1
    )


def leaves(filter_: Filter) -> Iterator[Condition]:
    if isinstance(filter_, Condition):
        yield filter_
    elif isinstance(filter_, Not | HasDone):
        yield from leaves(filter_.filter)
    else:
        for inner in filter_.filters:
            yield from leaves(inner)


@dataclass(frozen=True, slots=True)
class ReadModel:
    """What the rollups hold: (site_id, day) -> zone of the rolled days, the stale, and
    each site's zone (only rollups of the site's own zone may answer)."""

    rolled: dict[tuple[int, date], str]
    stale: frozenset[tuple[int, date]]
    zones: dict[int, str]
    # (site_id, day) -> the segments it has rollups of, those splitting a visitor, and
    # whether it has the split counts (sql/0019_segment_splits.sql).
    segments: dict[tuple[int, date], tuple[frozenset[str], frozenset[str], bool]]
    # (site_id, day) -> (zone, until, events_until) of the open days' prefix rollups.
    prefixes: dict[tuple[int, date], tuple[str, datetime, datetime]] = field(default_factory=dict)


async def read_model(connection: AsyncConnection[Any]) -> ReadModel:
    cursor = await connection.execute(
        "SELECT site_id, day, timezone, segments, split_segments, segment_splits FROM rollup_days"
    )
    found = await cursor.fetchall()
    rolled = {(int(s), d): str(z) for s, d, z, *_ in found}
    segments = {
        (int(s), d): (frozenset(has), frozenset(split), bool(counted))
        for s, d, _, has, split, counted in found
    }
    cursor = await connection.execute("SELECT site_id, day FROM rollup_stale")
    stale = frozenset((int(s), d) for s, d in await cursor.fetchall())
    cursor = await connection.execute("SELECT site_id, timezone FROM sites")
    zones = {int(s): str(z) for s, z in await cursor.fetchall()}
    cursor = await connection.execute(
        "SELECT site_id, day, timezone, until, events_until FROM rollup_prefix"
    )
    prefixes = {(int(s), d): (str(z), u, eu) for s, d, z, u, eu in await cursor.fetchall()}
    return ReadModel(rolled, stale, zones, segments, prefixes)


def expected_path(query: Query, model: ReadModel) -> str:
    """The path the engine must take: rollups for every whole local day of the period
    rolled in the query's zone, which is the site's, and not stale; raw rows for the
    rest."""
    if not rollup_shaped(query):
        return "raw"
    if prefix_used(query, model):
        return "mixed"  # the prefix's rows and the tail's raw rows
    segment = segment_of(query)
    period = query.period
    tz = ZoneInfo(period.timezone)
    first = period.start.astimezone(tz).date()
    last = period.end.astimezone(tz).date()
    used = 0
    tiled = True
    for site_id in set(query.site_ids):
        covered_to = period.start
        for offset in range((last - first).days + 1):
            day = first + timedelta(days=offset)
            start, end = (
                day_start(day, period.timezone),
                day_start(day + timedelta(days=1), period.timezone),
            )
            if start < period.start or end > period.end:
                continue
            if (
                model.rolled.get((site_id, day)) == period.timezone == model.zones[site_id]
                and (site_id, day) not in model.stale
                and (segment is None or segment_usable(model, site_id, day, segment, query))
            ):
                used += 1
                tiled = tiled and start == covered_to
                covered_to = end
        tiled = tiled and covered_to == period.end
    if not used:
        return "raw"
    return "rollup" if tiled else "mixed"


def prefix_used(query: Query, model: ReadModel) -> bool:
    """Does an open day's prefix answer a day of the query? (docs/read-model.md, The open
    day): without a filter, for a day whole in the period up to the prefix's end, rolled
    in the query's zone, the site's, not stale."""
    dimension = query.breakdown.dimension if query.breakdown else None
    if query.filters is not None:
        return False
    period = query.period
    for (site_id, day), (zone, _, events_until) in model.prefixes.items():
        if (
            site_id in query.site_ids
            and zone == period.timezone == model.zones[site_id]
            and (site_id, day) not in model.stale
            and (site_id, day) not in model.rolled
            and day_start(day, zone) >= period.start
            and events_until <= period.end
        ):
            statistic("an open day read from its prefix and tail")
            if dimension in EVENT_DIMENSIONS:
                statistic("an open day's prefix and tail, by an event dimension")
            return True
    return False


def open_day_queries(model: ReadModel, values: Values, data: st.DataObject) -> list[Query]:
    """Unfiltered breakdowns by page, event and prop over each open day with a prefix in
    its site's zone, whole in the period (from its start or the day before, mostly up
    to the day's end, else to the prefix's end), so its prefix and tail answer."""
    asked = []
    for (site_id, day), (zone, _, events_until) in sorted(model.prefixes.items()):
        if model.zones[site_id] != zone:
            continue
        day_end = day_start(day + timedelta(days=1), zone)
        for dimension in EVENT_DIMENSIONS:
            keys = (*values.prop_keys, "nokey")
            breakdown = Breakdown(
                dimension, data.draw(st.sampled_from(keys)) if dimension == "prop" else None
            )
            extra = data.draw(st.lists(st.sampled_from(metrics_for(breakdown)), unique=True))
            metrics = tuple(dict.fromkeys(("visitors", "visits", *extra)))
            start = day_start(day - timedelta(days=data.draw(st.integers(0, 1))), zone)
            end = data.draw(st.sampled_from((day_end, day_end, events_until)))
            interval: Interval | None = data.draw(st.sampled_from((None, "day", "week")))
            period = Period(start, end, zone)
            asked.append(Query((site_id,), period, metrics, interval=interval, breakdown=breakdown))
    return asked


def with_straddlers(dataset: Dataset, now: datetime, data: st.DataObject) -> Dataset:
    """With a roller's clock, one person's visits across an end of its prefix (the
    visits' or the events'): a page, a
    custom event and a property in one session on both sides of it, then again in a
    new session after it (the tail's visit and visitor: stats/prefix_events.py). A
    third of the datasets without a roller's clock get one, a while after some visit's
    start (the others keep every day rolled whole)."""
    if dataset.roll_at is None:
        if data.draw(st.integers(0, 2)):
            return dataset
        start = data.draw(st.sampled_from([visit.start for visit in dataset.visits]))
        roll_at = start + timedelta(minutes=data.draw(st.integers(60, 150)))
        dataset = replace(dataset, roll_at=roll_at)
    base = base_of(dataset, now)
    clock = roller_clock(base, now, dataset.roll_at)
    # The prefix's cuts (storage/rollup_prefix.py): the visits' and rollup_events'.
    until = floored(clock - roller.ROLL_DELAY, rollup_prefix.VISIT_STEP)
    events_until = floored(clock - rollup_prefix.EVENT_DELAY, rollup_prefix.EVENT_STEP)
    cut = data.draw(st.sampled_from((until, events_until)))
    path = data.draw(st.sampled_from(PATHS))
    name = data.draw(st.sampled_from(CUSTOM_NAMES))
    props: Props = {data.draw(st.sampled_from(PROP_KEYS)): data.draw(st.sampled_from(PROP_VALUES))}
    both = (Step(0, "load", path), Step(30, name, path, props=props))
    first = Visit(
        site=data.draw(st.integers(0, len(dataset.zones) - 1)),
        person=data.draw(st.sampled_from((0, 1, 9))),
        start=cut - base - timedelta(minutes=data.draw(st.integers(1, 19))),
        referrer_host="",
        utm=("", "", "", "", ""),
        steps=(*both, Step(20 * 60, "load", path), Step(30, name, path, props=props)),
    )
    again = replace(first, start=first.start + timedelta(minutes=60), steps=both)
    return replace(dataset, visits=(*dataset.visits, first, again))


def floored(moment: datetime, step: timedelta) -> datetime:
    """`moment` floored to a multiple of `step` since the epoch (UTC midnights)."""
    step_s = int(step.total_seconds())
    return datetime.fromtimestamp(moment.timestamp() // step_s * step_s, UTC)


def note_straddles(raw: Raw, model: ReadModel) -> None:
    """Statistics: does an open day have a page or custom event on both sides of its
    prefix's end, in one session, or of one visitor in two sessions?"""
    for (site_id, day), (zone, _, events_until) in model.prefixes.items():
        start, end = day_start(day, zone), day_start(day + timedelta(days=1), zone)
        sides: dict[tuple[Any, ...], set[tuple[int, bool]]] = {}
        for e in raw.events:
            if e.site_id == site_id and start <= e.received_at < end and e.counted:
                value = ("page", e.path) if e.is_pageview else ("event", e.name)
                sides.setdefault((e.visitor_id, value), set()).add(
                    (e.session_id, e.received_at >= events_until)
                )
        for found in sides.values():
            if {after for _, after in found} == {False, True}:
                sessions = {session for session, _ in found}
                before = {session for session, after in found if not after}
                after = {session for session, after in found if after}
                if before & after:
                    statistic("an open day: one value in one session before and after")
                if len(sessions) > 1 and after - before:
                    statistic("an open day: one value of one visitor in two sessions")


def segment_usable(model: ReadModel, site_id: int, day: date, segment: str, query: Query) -> bool:
    """May the segment rollups answer this day? Where the segment splits a visitor, only
    if the query adds no visitors of two values, or the day has its split counts
    (sql/0019_segment_splits.sql), which take the visitors counted twice off."""
    has, split, counted = model.segments[(site_id, day)]
    if segment in split and not any_day(query):
        if not counted:
            return False
        statistic("a day whose segment splits a visitor, from the split counts")
    return segment in has


def describe(rows: Sequence[Row]) -> str:
    return "\n".join(f"  {row.time} {row.parent!r} {row.value!r} {row.metrics}" for row in rows)


def assert_same(result: Result, expected: Answer, query: Query, label: str) -> None:
    """The engine's page is the reference's: the same rows with the same numbers, in an
    order the documentation allows (ties it leaves open may fall either way), and the
    same number of rows before paging."""
    context = (
        f"{label}: {query}\nengine ({result.path}):\n{describe(result.rows)}\n"
        f"reference (all rows):\n{describe(expected.rows)}"
    )
    assert result.total_rows == expected.total_rows, context
    by_identity = {(row.time, row.parent, row.value): row for row in expected.rows}
    identities = [(row.time, row.parent, row.value) for row in result.rows]
    assert len(set(identities)) == len(identities), context
    for identity, row in zip(identities, result.rows, strict=True):
        assert identity in by_identity, context
        assert row == by_identity[identity], context
    key = documented_key(query)
    assert [key(row) for row in result.rows] == [key(row) for row in expected.page], context


async def engine(connection: AsyncConnection[Any], query: Query, *, use_rollups: bool) -> Result:
    return await stats_engine.run(connection, query, use_rollups=use_rollups)


async def compare(
    connection: AsyncConnection[Any],
    raw: Raw,
    batch: Sequence[Query],
    label: str,
    *,
    model: ReadModel | None = None,
) -> Counter[str]:
    """Each query through both paths, against the reference; with `model`, each
    rollup-shaped query must read the rollups of its rolled days. Returns the paths."""
    paths: Counter[str] = Counter()
    for query in batch:
        expected = answer(raw, query)
        plain = await engine(connection, query, use_rollups=False)
        assert plain.path == "raw", query
        assert_same(plain, expected, query, f"{label}, use_rollups=False")
        fast = await engine(connection, query, use_rollups=True)
        assert_same(fast, expected, query, f"{label}, use_rollups=True")
        if model is not None:
            assert fast.path == expected_path(query, model), (label, query, model)
        paths[fast.path] += 1
        statistic(f"path: {fast.path}")
        if query.filters is not None and has_done(query.filters):
            statistic("with a behavioral filter")
        if model is not None and segment_of(query):
            statistic(f"filtered on a segment, path: {fast.path}")
    return paths


def realtime(raw: Raw, site_ids: Sequence[int], now: datetime, minutes: int) -> int:
    """Visitors of the last minutes (docs/read-model.md, fine print): distinct visitor
    ids among every event received in (now - minutes, now], per site, summed."""
    since = now - timedelta(minutes=minutes)
    return len(
        {
            (e.site_id, e.visitor_id)
            for e in raw.events
            if e.site_id in site_ids and since < e.received_at <= now
        }
    )


def roller_clock(base: datetime, now: datetime, roll_at: timedelta | None = None) -> datetime:
    """When the roller runs: two days after the dataset's last day (so it rolls the
    dataset's days, not the months of empty days since), or now; with `roll_at`, that
    long after base (or now), so a day of the dataset is its open day."""
    if roll_at is not None:
        return min(now, base + roll_at)
    return min(now, base + timedelta(days=SPAN_DAYS + 2))


def not_due(
    days: frozenset[tuple[int, date]], zones: Sequence[str], clock: datetime
) -> frozenset[tuple[int, date]]:
    """The (site, day) pairs of `days` the roller at `clock` may not roll yet: a write
    marks a day that ended MARK_AGE ago, the roller rolls it once it ended ROLL_DELAY
    ago (storage/writer.py, storage/roller.py)."""
    closed_before = clock - roller.ROLL_DELAY
    found = frozenset(
        (site_id, day)
        for site_id, day in days
        if day_start(day + timedelta(days=1), zones[site_id - 1]) > closed_before
    )
    if found:
        statistic("a write marked a day not due yet")
    return found


async def catch_up(
    conninfo: str, base: datetime, now: datetime, roll_at: timedelta | None = None
) -> None:
    """The roller's catch-up, as the server runs it (every due day, in its site's zone,
    then the open days' prefixes)."""
    report = await roller.catch_up(conninfo, roller_clock(base, now, roll_at), wait=True)
    assert not report.failed, report


@EQUAL
@given(data=st.data())
def test_rollups_equal_raw_rows_equal_reference(stats_database: str, data: st.DataObject) -> None:
    """Every query, before and after the rollups: the fast path, the raw path and the
    reference agree; after rolling, rollup-shaped queries really read the rollups."""
    now = datetime.now(UTC)
    dataset = with_straddlers(data.draw(datasets()), now, data)
    ids = write_dataset(stats_database, dataset, now)
    raw = raw_rows(stats_database)
    statistic(f"events written: {min(len(raw.events) // 10 * 10, 50)}+")
    values = observed_values(raw)
    base = base_of(dataset, now)
    batch = [
        data.draw(queries(ids, dataset.zones, values, base, now))
        for _ in range(QUERIES_PER_DATASET)
    ]

    moments = [
        (
            base + timedelta(minutes=data.draw(st.integers(0, SPAN_DAYS * 1440))),
            data.draw(st.integers(1, 60)),
        )
        for _ in range(3)
    ]

    async def check() -> None:
        async with await AsyncConnection.connect(stats_database, autocommit=True) as connection:
            for at, minutes in moments:
                sites = tuple(ids.values())
                live = await stats_engine.realtime_visitors(connection, sites, at, minutes)
                assert live == realtime(raw, sites, at, minutes), (at, minutes)
            before = await compare(connection, raw, batch, "nothing rolled up")
            assert set(before) == {"raw"}
            await catch_up(stats_database, base, now, dataset.roll_at)
            model = await read_model(connection)
            # Every day is rolled, unless the write marked it (it ended MARK_AGE ago)
            # before it was due (ROLL_DELAY): the answers then read its raw rows.
            clock = roller_clock(base, now, dataset.roll_at)
            assert model.stale == not_due(model.stale, dataset.zones, clock)
            assert all(key not in model.stale for key in model.prefixes)  # rolled: cleared
            await compare(connection, raw, batch, "rolled up", model=model)
            # Every open day with a prefix, by an event dimension too (few drawn queries
            # hold an open day whole, and fewer of them break down by one).
            opened = open_day_queries(model, values, data)
            note_straddles(raw, model)
            await compare(connection, raw, opened, "open days", model=model)

    asyncio.run(check())


# -- late writes -------------------------------------------------------------------------

LATE = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def day_rows(raw: Raw, site_id: int, day: date, zone: str) -> tuple[list[Any], list[int]]:
    """What a rollup of one local day is computed from: the day's visits (as stored)
    and the ids of its pageviews and custom events."""
    start, end = day_start(day, zone), day_start(day + timedelta(days=1), zone)
    visits = sorted(
        (s.session_id, s.visitor_id, s.started_at, s.duration_s, s.pageviews, s.bounce,
         sorted(s.columns.items()))
        for s in raw.sessions.values()
        if s.site_id == site_id and s.pageviews and start <= s.started_at < end
    )  # fmt: skip
    events = sorted(
        e.event_id
        for e in raw.events
        if e.site_id == site_id and e.counted and start <= e.received_at < end
    )
    return visits, events


def prefix_rows(
    raw: Raw, site_id: int, day: date, zone: str, until: datetime, events_until: datetime
) -> tuple[list[Any], list[int]]:
    """What a prefix rollup of one local day is computed from: the day's visits last
    seen before `until` and its events received before `events_until` (those before
    `until`, in rollup_hours, among them)."""
    visits, _ = day_rows(raw, site_id, day, zone)
    ended = {
        s.session_id
        for s in raw.sessions.values()
        if s.site_id == site_id and s.last_seen_at < until
    }
    start = day_start(day, zone)
    events = sorted(
        e.event_id
        for e in raw.events
        if e.site_id == site_id and e.counted and start <= e.received_at < events_until
    )
    return [visit for visit in visits if visit[0] in ended], events


def set_zone(conninfo: str, domain: str, zone: str) -> None:
    """`picolytics site set DOMAIN --timezone ZONE`."""
    with psycopg.connect(conninfo) as connection:
        sites_admin.set_timezone(connection, domain, zone)


@LATE
@given(data=st.data())
def test_late_writes_mark_their_days_and_stay_exact(
    stats_database: str, data: st.DataObject
) -> None:
    """A batch written into rolled days (a backlog after an outage) marks every rolled
    day whose rows it changed, so answers stay exact; the roller then re-rolls them and
    the rollups answer again. Sometimes a site's zone changes before the late batch
    (`picolytics site set --timezone`), so rollups of two zones coexist, and sometimes
    it is set back before the roller runs, so the old zone's rollups count again."""
    now = datetime.now(UTC)
    dataset = data.draw(datasets(late=True))
    ids = write_dataset(stats_database, dataset, now)
    base = base_of(dataset, now)
    rezone = data.draw(
        st.one_of(
            st.none(), st.tuples(st.integers(0, len(dataset.zones) - 1), st.sampled_from(ZONES))
        )
    )
    back = rezone is not None and data.draw(st.booleans())  # set back before a roll

    async def check() -> None:
        await catch_up(stats_database, base, now, dataset.roll_at)
        zones = list(dataset.zones)
        if rezone is not None:
            set_zone(stats_database, DOMAINS[rezone[0]], rezone[1])
            statistic("a site's zone changed" if rezone[1] != zones[rezone[0]] else "same zone")
            zones[rezone[0]] = rezone[1]
        before = raw_rows(stats_database)
        late = queued_events(dataset.late, base, now)
        await write_events(stats_database, late, dataset.batch_size)
        if rezone is not None and back:
            set_zone(stats_database, DOMAINS[rezone[0]], dataset.zones[rezone[0]])
            zones[rezone[0]] = dataset.zones[rezone[0]]
        after = raw_rows(stats_database)
        async with await AsyncConnection.connect(stats_database, autocommit=True) as connection:
            model = await read_model(connection)
            for (site_id, day), zone in sorted(model.rolled.items()):
                if day_rows(before, site_id, day, zone) != day_rows(after, site_id, day, zone):
                    statistic(
                        "late write into a day rolled in "
                        + ("the site's zone" if zone == zones[site_id - 1] else "its old zone")
                    )
                    # Marks are made in the site's zone; a rollup of a zone the site has
                    # left is never read (the path check below), so needs none.
                    assert zone != zones[site_id - 1] or (site_id, day) in model.stale, (
                        f"site {site_id}'s day {day}, rolled up in {zone}, changed but is not "
                        f"marked stale (the site is in {zones[site_id - 1]})"
                    )
            for (site_id, day), (zone, until, events_until) in sorted(model.prefixes.items()):
                cut = (site_id, day, zone, until, events_until)
                if prefix_rows(before, *cut) != prefix_rows(after, *cut):
                    statistic("late write into an open day's prefix")
                    # A zone change drops the site's prefixes: any left are in its zone.
                    assert zone == zones[site_id - 1] and (site_id, day) in model.stale, (
                        f"site {site_id}'s open day {day}, its prefix up to {until} rolled "
                        f"in {zone}, changed but is not marked stale"
                    )
            values = observed_values(after)
            batch = [
                data.draw(queries(ids, zones, values, base, now, dataset.zones))
                for _ in range(QUERIES_PER_DATASET)
            ]
            await compare(connection, after, batch, "after a late write", model=model)
            await catch_up(stats_database, base, now, dataset.roll_at)
            model = await read_model(connection)
            # Every stale day the roller is due to roll (one with raw rows, in its site's
            # zone, ended ROLL_DELAY ago) is rolled again. A day that ended between
            # MARK_AGE and ROLL_DELAY ago is marked but not due yet: it waits.
            clock = roller_clock(base, now, dataset.roll_at)
            due = model.stale - not_due(model.stale, zones, clock)
            for site_id, day in due:
                assert not day_rows(after, site_id, day, zones[site_id - 1])[1], (
                    f"catch-up left site {site_id}'s day {day} stale"
                )
            await compare(connection, after, batch, "re-rolled", model=model)

    asyncio.run(check())


# -- pruned days -------------------------------------------------------------------------

PRUNE = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def cutoffs(base: datetime, now: datetime, zones: Sequence[str], model: ReadModel,
            ids: dict[int, int]) -> list[datetime]:  # fmt: skip
    """UTC midnights prune may cut at (PRUNE_DAYS = 1, a day later): every local day a
    cut touches is rolled up in its site's zone."""
    found = []
    for days in range(1, SPAN_DAYS + 1):
        cut = base + timedelta(days=days)
        if cut + timedelta(days=1) > now:
            break
        last = cut - timedelta(microseconds=1)
        if all(
            model.rolled.get((site_id, last.astimezone(ZoneInfo(zones[i])).date())) == zones[i]
            for i, site_id in ids.items()
        ):
            found.append(cut)
    return found


def prune_safe(query: Query, ids: dict[int, int], zones: Sequence[str], base: datetime,
               first: int, days: int) -> Query:  # fmt: skip
    """The query, made one that a rollup answers for its pruned days: whole local days
    in the zone of its sites, which the rollups were made in, and a rollup shape."""
    zone = zones[next(i for i, s in ids.items() if s == query.site_ids[0])]
    sites = tuple(s for i, s in ids.items() if zones[i] == zone and s in query.site_ids)
    start = base.date() + timedelta(days=first)
    period = Period(day_start(start, zone), day_start(start + timedelta(days=days), zone), zone)
    query = replace(query, site_ids=sites, period=period)
    if query.interval == "hour" and (query.breakdown or query.filters):
        query = replace(query, interval="day", order_by=())
    if not rollup_shaped(query):
        query = replace(query, filters=None)
    if not rollup_shaped(query):  # events by a visit dimension
        metrics = tuple(m for m in query.metrics if m != "events") or ("visits",)
        query = replace(query, metrics=metrics, order_by=())
    assert rollup_shaped(query)
    return query


@PRUNE
@given(data=st.data())
def test_pruned_days_keep_their_numbers(stats_database: str, data: st.DataObject) -> None:
    """Prune (PRUNE_DAYS) rolls up and drops the raw rows before a UTC midnight; the
    answers over the rolled days stay what they were, also after the roller and a
    rebuild ran again over the pruned days."""
    now = datetime.now(UTC)
    dataset = data.draw(datasets())
    ids = write_dataset(stats_database, dataset, now)
    base = base_of(dataset, now)
    raw = raw_rows(stats_database)
    values = observed_values(raw)

    async def check() -> None:
        await catch_up(stats_database, base, now)
        async with await AsyncConnection.connect(stats_database, autocommit=True) as connection:
            model = await read_model(connection)
            possible = cutoffs(base, now, dataset.zones, model, ids)
            assume(possible)
            cut = data.draw(st.sampled_from(possible))
            batch = []
            for _ in range(QUERIES_PER_DATASET):
                query = data.draw(queries(ids, dataset.zones, values, base, now))
                first = data.draw(st.integers(-1, SPAN_DAYS - 1))
                days = data.draw(st.integers(1, SPAN_DAYS + 1 - first))
                batch.append(prune_safe(query, ids, dataset.zones, base, first, days))
            expected = [answer(raw, query) for query in batch]
            report = await prune(stats_database, 1, now=min(cut + timedelta(days=1, hours=2), now))
            assert report.cutoff == cut, report
            pruned = raw_rows(stats_database)
            assert all(e.received_at >= cut for e in pruned.events)
            for label in ("pruned", "pruned, then caught up", "pruned, then rebuilt"):
                if label.endswith("caught up"):
                    await catch_up(stats_database, base, now)
                elif label.endswith("rebuilt"):
                    rebuilt = await roller.rebuild(stats_database, now=roller_clock(base, now))
                    assert not rebuilt.failed, rebuilt
                model = await read_model(connection)
                for query, reference in zip(batch, expected, strict=True):
                    result = await engine(connection, query, use_rollups=True)
                    assert_same(result, reference, query, label)
                    assert result.path == expected_path(query, model), (label, query)

    asyncio.run(check())


# -- invalid queries ---------------------------------------------------------------------


def corruptions(query: Query) -> list[tuple[str, Query]]:
    """(the field a QueryError must name, the query with that field made invalid)."""
    period = query.period
    naive = period.start.replace(tzinfo=None)
    visit_only = Breakdown("event")
    out: list[tuple[str, Query]] = [
        ("site_ids", replace(query, site_ids=())),
        ("period.start", replace(query, period=replace(period, start=naive))),
        (
            "period.end",
            replace(query, period=replace(period, end=period.start - timedelta(hours=1))),
        ),
        ("period", replace(query, period=replace(period, end=period.start + timedelta(days=3661)))),
        ("period.timezone", replace(query, period=replace(period, timezone="Mars/Olympus_Mons"))),
        ("metrics", replace(query, metrics=("nope",))),  # type: ignore[arg-type]
        ("metrics", replace(query, metrics=())),
        ("metrics", replace(query, metrics=(query.metrics[0], query.metrics[0]), order_by=())),
        ("interval", replace(query, interval="fortnight")),  # type: ignore[arg-type]
        ("breakdown", replace(query, breakdown=Breakdown("nope"))),  # type: ignore[arg-type]
        ("breakdown.prop_key", replace(query, breakdown=Breakdown("prop"))),
        ("breakdown.prop_key", replace(query, breakdown=Breakdown("page", "plan"))),
        ("metrics", replace(query, breakdown=visit_only, metrics=("bounce_rate",), order_by=())),
        ("filters", replace(query, filters=Condition("nope", "is", ("x",)))),  # type: ignore[arg-type]
        ("filters", replace(query, filters=Condition("page", "like", ("x",)))),  # type: ignore[arg-type]
        ("filters", replace(query, filters=Condition("page", "is", ()))),
        ("filters", replace(query, filters=And(()))),
        ("filters", replace(query, filters=Condition("page", "matches", ("(a+)+$",)))),
        ("filters", replace(query, filters=Condition("source", "matches_not", ("a(b",)))),
        ("filters", replace(query, filters=Not(Condition("city", "matches", ("[z-a]",))))),
        ("filters", replace(query, filters=HasDone(Condition("source", "is", ("x",))))),
        ("filters", replace(query, filters=HasDone(Not(Condition("country", "is", ("DE",)))))),
        ("filters", replace(query, filters=HasDone(HasDone(Condition("page", "is", ("/",)))))),
        ("filters", replace(query, filters=HasDone(Condition("page", "matches", ("a(b",)), True))),
        ("order_by", replace(query, order_by=(("nope", "asc"),))),
        ("order_by", replace(query, order_by=((query.metrics[0], "up"),))),  # type: ignore[arg-type]
        ("limit", replace(query, limit=10_001)),
        ("offset", replace(query, offset=-1)),
    ]
    return out


INVALID = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@INVALID
@given(data=st.data())
def test_invalid_queries_name_their_field(stats_database: str, data: st.DataObject) -> None:
    """A valid query runs; the same query with one field made invalid raises a
    QueryError naming that field, and leaves the connection ready for the next query."""
    now = datetime.now(UTC)
    base = datetime(2026, 6, 29, tzinfo=UTC)
    values = Values({d: ("/", "x") for d in ROW_DIMENSIONS}, ("plan",), {"plan": ("pro",)})
    ids = {0: 1, 1: 2}
    query = data.draw(queries(ids, ("UTC", "Europe/Berlin"), values, base, now))
    cases = corruptions(query)
    chosen = data.draw(st.lists(st.sampled_from(cases), min_size=1, max_size=4))

    async def check() -> None:
        async with await AsyncConnection.connect(stats_database, autocommit=True) as connection:
            await engine(connection, query, use_rollups=True)  # valid as drawn
            for field, wrong in chosen:
                with pytest.raises(QueryError) as raised:
                    await engine(connection, wrong, use_rollups=True)
                assert raised.value.field == field, (str(raised.value), wrong)
                assert connection.info.transaction_status == TransactionStatus.IDLE
                await engine(connection, query, use_rollups=False)

    asyncio.run(check())


# -- the minimal cases the properties found ----------------------------------------------

NO_UTM = ("", "", "", "", "")
JUNE_29 = datetime(2026, 6, 29, tzinfo=UTC)


async def both_paths(conninfo: str, query: Query) -> tuple[Result, Result, Answer]:
    async with await AsyncConnection.connect(conninfo, autocommit=True) as connection:
        fast = await engine(connection, query, use_rollups=True)
        plain = await engine(connection, query, use_rollups=False)
    return fast, plain, answer(raw_rows(conninfo), query)


def test_hourly_series_of_visits_from_rollups(stats_database: str) -> None:
    """One visit: a pageview at 04:59 and a custom event at 05:01. Visits per hour are
    one row, 04:00; rollup_hours also holds 05:00 (an hour with events and no visit
    start), which must not become a row {visitors: 0} of a series that asks only for
    visit metrics (nor, the other way round, an hour with a visit start and no event a
    row of pageviews)."""
    visit = Visit(0, 0, timedelta(hours=4, minutes=59), "", NO_UTM,
                  (Step(0, "load", "/"), Step(120, "signup", "/")))  # fmt: skip
    now = datetime.now(UTC)
    ids = write_dataset(stats_database, Dataset(JUNE_29, ("UTC",), (visit,), (), (), 10), now)
    asyncio.run(catch_up(stats_database, JUNE_29, now))
    query = Query(
        site_ids=(ids[0],),
        period=Period(JUNE_29, JUNE_29 + timedelta(days=1), "UTC"),
        metrics=("visitors",),
        interval="hour",
    )
    fast, plain, expected = asyncio.run(both_paths(stats_database, query))
    assert plain.path == "raw"
    assert (
        plain.rows == expected.rows == (Row(datetime(2026, 6, 29, 4), "", None, {"visitors": 1}),)
    )
    assert fast.path == "rollup"
    assert fast.rows == plain.rows


@pytest.mark.parametrize("set_back", [False, True], ids=["rezoned", "set-back"])
def test_late_write_after_a_zone_change(stats_database: str, set_back: bool) -> None:
    """A site in UTC has a visit at 06-29 20:00Z, rolled up in UTC; its zone becomes
    Asia/Kolkata; a late visit arrives for 06-29 21:00Z (06-30 02:30 in Kolkata). The
    UTC rollup of 06-29 is now wrong, and the writer marks only the Kolkata day 06-30.
    So a query in UTC must not read it, also once the zone is set back to UTC before
    the roller ran (the site then has its UTC rollups again)."""
    first = Visit(0, 0, timedelta(hours=20), "", NO_UTM, (Step(0, "load", "/"),))
    late = Visit(0, 1, timedelta(hours=21), "", NO_UTM, (Step(0, "load", "/late"),))
    now = datetime.now(UTC)
    ids = write_dataset(stats_database, Dataset(JUNE_29, ("UTC",), (first,), (), (), 10), now)
    asyncio.run(catch_up(stats_database, JUNE_29, now))
    set_zone(stats_database, DOMAINS[0], "Asia/Kolkata")
    asyncio.run(write_events(stats_database, queued_events((late,), JUNE_29, now), 10))
    if set_back:
        set_zone(stats_database, DOMAINS[0], "UTC")
    query = Query(
        site_ids=(ids[0],),
        period=Period(JUNE_29, JUNE_29 + timedelta(days=1), "UTC"),
        metrics=("visits", "pageviews"),
    )
    fast, plain, expected = asyncio.run(both_paths(stats_database, query))
    assert plain.rows == expected.rows == (Row(None, "", None, {"visits": 2, "pageviews": 2}),)
    assert fast.rows == plain.rows, fast.path
