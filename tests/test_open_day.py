"""The open day from rollups too (docs/read-model.md, "The open day"): its prefix
rollup plus a raw tail answer exactly as raw rows do; late writes into a prefix mark
its day; a whole-day roll, a rebuild and a zone change replace or drop prefixes.

Most tests give the roller a clock (mid-afternoon three days ago), so that day is the
roller's open day; the writer's marks use the database's real clock, so every write
there is old and marks what it touches, as a backlog does. One test writes at the
real clock, for the mark of a visit extended long after it was last seen.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
from typing import Any

import psycopg
from helpers.database import query
from helpers.events import event, run, write
from psycopg import AsyncConnection

from picolytics.dimensions import Metric
from picolytics.events import QueuedEvent
from picolytics.stats.engine import run as run_query
from picolytics.stats.query import Breakdown, Interval, Period, Query, Result
from picolytics.storage import roller, rollup_prefix, sites_admin
from picolytics.storage.sites import SiteIds
from picolytics.storage.writer import EVENT_MARK_AGE, prepare_connection, write_batch

SITE = "example.com"
VISIT_METRICS: tuple[Metric, ...] = (
    "visitors", "visits", "bounces", "bounce_rate", "visit_duration", "views_per_visit",
)  # fmt: skip
ALL_METRICS: tuple[Metric, ...] = (*VISIT_METRICS, "pageviews", "events")


def at(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, clock_time(hour, minute), tzinfo=UTC)


def open_day() -> date:
    return datetime.now(UTC).date() - timedelta(days=3)


def roller_clock(day: date) -> datetime:
    """The roller's now: its prefix of `day` ends at 14:00 (15:05 - ROLL_DELAY, floored
    to VISIT_STEP), its events at 14:50 (15:05 - EVENT_DELAY, floored to EVENT_STEP)."""
    return at(day, 15, 5)


def visit(
    start: datetime, visitor: int, pages: int = 2, *, gap_min: int = 5, **page: Any
) -> list[QueuedEvent]:
    """`pages` pageviews `gap_min` apart and a custom event after the first."""
    events = [
        event(start + timedelta(minutes=gap_min * n), visitor, path=f"/p{n}", **page)
        for n in range(pages)
    ]
    return [*events, event(start + timedelta(seconds=30), visitor, name="signup")]


def dataset(day: date) -> list[QueuedEvent]:
    """The day before (rolled whole) and the open day around the prefix's end, 14:00."""
    before = day - timedelta(days=1)
    return [
        *visit(at(before, 12), 1),
        *visit(at(before, 23, 50), 2, 3, gap_min=10),  # goes on past midnight
        *visit(at(day, 9), 10),  # in the prefix; the same visitor again in the tail:
        *visit(at(day, 14, 30), 10, 1),  # one visitor that day
        *visit(at(day, 13, 50), 11, 3, gap_min=10),  # started before 14:00, ends after
        *visit(at(day, 14, 20), 12, 1),  # tail only, a bounce
        *visit(at(day, 10), 13, utm_source="mail"),  # in the prefix under one source,
        *visit(at(day, 15), 13, utm_source="ads"),  # in the tail under another
        *visit(at(day, 13), 14, 2),  # 13:00-13:05 in the prefix, 13:45 in the tail:
        *visit(at(day, 13, 45), 14, 3, gap_min=10),  # one visitor of the hour 13:00
        *visit(at(day, 11), 15, 1, referrer_host="news.example"),
        # Event dimensions: one session with the same page, event and property value
        # on both sides of 14:00 (one visit of each); one visitor with a visit in the
        # prefix and another in the tail (one visitor, two visits); one in the tail only.
        *pricing(at(day, 13, 40), 16, ("pro", "pro", "team")),
        *pricing(at(day, 14, 10), 16, ("pro",)),
        *pricing(at(day, 9, 30), 17, ("pro",)),
        *pricing(at(day, 15, 10), 17, ("pro",)),
        *pricing(at(day, 14, 40), 18, ("team",)),
        # Around the end of the prefix's events, 14:50: the same page once, the same
        # event and values on both sides.
        *pricing(at(day, 14, 46), 19, ("team", "pro", "team", "pro")),
    ]


def pricing(start: datetime, visitor: int, plans: Sequence[str]) -> list[QueuedEvent]:
    """A pageview of /pricing, then a purchase per plan, a minute apart."""
    return [
        event(start, visitor, path="/pricing"),
        *(
            event(start + timedelta(minutes=1 + n), visitor, name="purchase", props={"plan": p})
            for n, p in enumerate(plans)
        ),
    ]


GOALS = """
INSERT INTO goals (site_id, kind, event_name, page_path, display_name)
VALUES (%(site)s, 'event', 'purchase', NULL, 'Purchase'),
       (%(site)s, 'page', NULL, '/pricing', 'Pricing'),
       (%(site)s, 'page', NULL, '/p*', 'Any p page')
"""


def seed(conninfo: str, day: date) -> int:
    run(write(conninfo, dataset(day)))
    site_id = int(query(conninfo, "SELECT site_id FROM sites WHERE domain = %s", (SITE,))[0][0])
    with psycopg.connect(conninfo) as connection:
        connection.execute(GOALS, {"site": site_id})
    return site_id


def prefixes(conninfo: str) -> list[tuple[Any, ...]]:
    return query(
        conninfo,
        "SELECT site_id, day, timezone, until, events_until FROM rollup_prefix ORDER BY 1, 2",
    )


def stale(conninfo: str) -> list[date]:
    return [row[0] for row in query(conninfo, "SELECT day FROM rollup_stale ORDER BY 1")]


def catch_up(conninfo: str, now: datetime) -> roller.RollupReport:
    report = run(roller.catch_up(conninfo, now, wait=True))
    assert not report.failed, report
    return report


def questions(site_id: int, day: date) -> list[Query]:
    """Totals, series and breakdowns over periods that hold the open day whole, up to
    the prefix's end or past it, and over periods a prefix cannot answer."""
    whole = Period(at(day, 0), at(day + timedelta(days=1), 0))
    wider = Period(at(day - timedelta(days=1), 0), at(day + timedelta(days=1), 0))
    to_now = Period(at(day, 0), roller_clock(day))
    shapes: list[tuple[tuple[Metric, ...], Interval | None, Breakdown | None]] = [
        (ALL_METRICS, None, None),
        (ALL_METRICS, "day", None),
        (ALL_METRICS, "hour", None),
        (("visitors", "pageviews"), "week", None),
        ((*VISIT_METRICS, "pageviews"), None, Breakdown("source")),
        (("visitors", "visits"), "day", Breakdown("browser_version")),
        (("visitors", "visits", "pageviews"), None, Breakdown("entry_page")),
        (("visitors", "visits", "pageviews", "events"), None, Breakdown("page")),
        (("visitors", "visits", "events"), "day", Breakdown("event")),
        (("visitors", "visits", "events"), None, Breakdown("prop", "plan")),
        (("visits", "events"), "week", Breakdown("prop", "nokey")),
        (("visitors", "visits", "pageviews", "events"), None, Breakdown("goal")),
    ]
    asked = [
        Query((site_id,), period, metrics, interval=interval, breakdown=breakdown)
        for period in (whole, wider, to_now)
        for metrics, interval, breakdown in shapes
    ]
    asked += [  # the day's start or the prefix's end outside the period: raw rows
        Query((site_id,), Period(at(day, 12), at(day + timedelta(days=1), 0)), ALL_METRICS),
        Query((site_id,), Period(at(day, 0), at(day, 13, 30)), ALL_METRICS),
    ]
    return asked


async def _answers(conninfo: str, asked: Sequence[Query]) -> list[tuple[Result, Result]]:
    async with await AsyncConnection.connect(conninfo, autocommit=True) as connection:
        return [
            (await run_query(connection, q), await run_query(connection, q, use_rollups=False))
            for q in asked
        ]


def assert_exact(conninfo: str, asked: Sequence[Query]) -> list[str]:
    """Every question through both paths: the same rows; returns the fast paths."""
    paths: list[str] = []
    for question, (fast, plain) in zip(asked, run(_answers(conninfo, asked)), strict=True):
        assert fast.rows == plain.rows, question
        assert fast.total_rows == plain.total_rows, question
        paths.append(fast.path)
    return paths


def test_the_open_day_reads_its_prefix_and_a_raw_tail_exactly(migrated_database: str) -> None:
    day = open_day()
    site_id = seed(migrated_database, day)
    assert day in stale(migrated_database)  # every write there is old: marked
    report = catch_up(migrated_database, roller_clock(day))
    assert report.prefixes == 1
    assert prefixes(migrated_database) == [(site_id, day, "UTC", at(day, 14), at(day, 14, 50))]
    assert day not in stale(migrated_database)  # the prefix roll cleared its mark
    asked = questions(site_id, day)
    paths = assert_exact(migrated_database, asked)
    # Whole-day-up-to-the-prefix periods read the prefix, whatever the breakdown.
    for question, path in zip(asked, paths, strict=True):
        prefixed = question.period.start == at(day, 0) and question.period.end >= at(day, 14, 50)
        rolled_before = question.period.start < at(day, 0)  # the day before, rolled
        expected = "mixed" if prefixed or rolled_before else "raw"
        assert path == expected, (question, path)
    # The numbers the tail's dedup is about: one visitor for 10 and 13 each, and the
    # hour 13:00 has visitor 14 once though two of its visits started then (and 11).
    total = next(q for q in asked if q.interval is None and q.breakdown is None)
    fast, _ = run(_answers(migrated_database, [total]))[0]
    assert fast.rows[0].metrics["visitors"] == 10
    assert fast.rows[0].metrics["visits"] == 14
    hourly = next(q for q in asked if q.interval == "hour")
    fast, _ = run(_answers(migrated_database, [hourly]))[0]
    thirteen = next(
        row for row in fast.rows if row.time == datetime(day.year, day.month, day.day, 13)
    )
    assert (thirteen.metrics["visitors"], thirteen.metrics["visits"]) == (3, 4)  # 14, 11, 16


def test_a_late_event_into_a_prefix_marks_its_day_until_rolled_again(
    migrated_database: str,
) -> None:
    day = open_day()
    site_id = seed(migrated_database, day)
    catch_up(migrated_database, roller_clock(day))
    # Visitor 10 comes back within the session timeout of its 09:00 visit, received
    # long ago (a backlog): the prefix's visit changes, so its day is marked.
    run(write(migrated_database, [event(at(day, 9, 20), 10, path="/late")]))
    assert stale(migrated_database) == [day]
    asked = questions(site_id, day)
    paths = assert_exact(migrated_database, asked)
    assert all(
        path == "raw" or q.period.start < at(day, 0) for q, path in zip(asked, paths, strict=True)
    )
    report = catch_up(migrated_database, roller_clock(day))
    assert (report.prefixes, stale(migrated_database)) == (1, [])
    assert "mixed" in assert_exact(migrated_database, asked)


def test_a_visit_extended_long_after_it_was_last_seen_marks_its_day(
    migrated_database: str,
) -> None:
    """At the database's real clock: a fresh event (received now) that continues a
    visit last seen before the prefix's end changes the prefix; only the visit's
    previous last_seen_at says so (writer.py, MARK_AGE)."""
    now = datetime.now(UTC)
    # A fixed-offset zone whose local day holds both the visit and the prefix's end.
    offset = max(-12, min(14, 12 - now.hour))
    zone = f"Etc/GMT{-offset:+d}" if offset else "UTC"
    insert = "INSERT INTO sites (domain, timezone) VALUES (%s, %s) RETURNING site_id"
    site_id = int(query(migrated_database, insert, (SITE, zone))[0][0])
    run(write(migrated_database, visit(now - timedelta(hours=3), 20)))
    catch_up(migrated_database, now)
    (found,) = prefixes(migrated_database)
    day = found[1]
    assert stale(migrated_database) == []

    async def extend() -> None:  # a session timeout long enough to continue the visit
        async with await AsyncConnection.connect(migrated_database, autocommit=True) as c:
            await prepare_connection(c, "30s")
            fresh = [event(now - timedelta(minutes=1), 20, path="/back")]
            await write_batch(c, SiteIds(), fresh, {}, timedelta(hours=4))

    run(extend())
    assert stale(migrated_database) == [day]
    period = Period(at(day, 0) - timedelta(hours=offset), now + timedelta(hours=1), zone)
    asked = [
        Query((site_id,), period, ALL_METRICS),
        Query((site_id,), period, ("visitors",), interval="hour"),
    ]
    assert assert_exact(migrated_database, asked)


def test_an_event_written_minutes_after_its_receipt_marks_its_open_day(
    migrated_database: str,
) -> None:
    """At the database's real clock: a prefix holds the events received up to
    EVENT_DELAY ago, so the writer marks the day of a new event received more than
    EVENT_MARK_AGE before its batch, though the day has not ended; an event written
    as it arrives marks nothing (writer.py, EVENT_MARK_AGE)."""
    now = datetime.now(UTC)
    offset = max(-12, min(14, 12 - now.hour))  # a local day around noon, as above
    zone = f"Etc/GMT{-offset:+d}" if offset else "UTC"
    insert = "INSERT INTO sites (domain, timezone) VALUES (%s, %s) RETURNING site_id"
    site_id = int(query(migrated_database, insert, (SITE, zone))[0][0])
    run(write(migrated_database, visit(now - timedelta(hours=3), 20)))
    catch_up(migrated_database, now)
    ((_, day, _, until, events_until),) = prefixes(migrated_database)
    assert until < events_until <= now - rollup_prefix.EVENT_DELAY
    run(write(migrated_database, [event(now - timedelta(seconds=30), 21, path="/fresh")]))
    assert stale(migrated_database) == []
    queued = now - EVENT_MARK_AGE - timedelta(minutes=1)
    run(write(migrated_database, [event(queued, 22, path="/queued")]))
    assert stale(migrated_database) == [day]
    period = Period(at(day, 0) - timedelta(hours=offset), now + timedelta(hours=1), zone)
    assert assert_exact(migrated_database, [Query((site_id,), period, ALL_METRICS)])


def test_a_whole_day_roll_a_rebuild_and_a_zone_change_replace_prefixes(
    migrated_database: str,
) -> None:
    day = open_day()
    site_id = seed(migrated_database, day)
    catch_up(migrated_database, roller_clock(day))
    before = query(migrated_database, "SELECT rolled_at FROM rollup_prefix")
    # A rebuild clears the prefixes and rolls them again, to the same numbers.
    report = run(roller.rebuild(migrated_database, now=roller_clock(day)))
    assert report.prefixes == 1
    assert prefixes(migrated_database) == [(site_id, day, "UTC", at(day, 14), at(day, 14, 50))]
    assert query(migrated_database, "SELECT rolled_at FROM rollup_prefix") != before
    assert "mixed" in assert_exact(migrated_database, questions(site_id, day))
    # Five minutes on, only the prefix's events move on (storage/rollup_prefix.py).
    visits = query(migrated_database, "SELECT * FROM rollup_visits WHERE day = %s", (day,))
    report = catch_up(migrated_database, roller_clock(day) + timedelta(minutes=5))
    assert report.prefixes == 1
    assert prefixes(migrated_database) == [(site_id, day, "UTC", at(day, 14), at(day, 14, 55))]
    assert query(migrated_database, "SELECT * FROM rollup_visits WHERE day = %s", (day,)) == visits
    assert "mixed" in assert_exact(migrated_database, questions(site_id, day))
    assert catch_up(migrated_database, roller_clock(day) + timedelta(minutes=9)).prefixes == 0
    # The prefix moves on with the clock.
    catch_up(migrated_database, roller_clock(day) + timedelta(hours=2))
    assert prefixes(migrated_database) == [(site_id, day, "UTC", at(day, 16), at(day, 16, 50))]
    assert_exact(migrated_database, questions(site_id, day))
    # A zone change drops the site's prefixes (marks meanwhile go to the new zone's days).
    with psycopg.connect(migrated_database) as connection:
        sites_admin.set_timezone(connection, SITE, "Europe/Berlin")
    assert prefixes(migrated_database) == []
    with psycopg.connect(migrated_database) as connection:
        sites_admin.set_timezone(connection, SITE, "UTC")
    catch_up(migrated_database, roller_clock(day))
    assert len(prefixes(migrated_database)) == 1
    # Once the day is due, it is rolled whole and its prefix goes.
    catch_up(migrated_database, at(day + timedelta(days=1), 2))
    assert prefixes(migrated_database) == []
    days = query(migrated_database, "SELECT day FROM rollup_days WHERE day = %s", (day,))
    assert days == [(day,)]
    assert "rollup" in assert_exact(migrated_database, questions(site_id, day))


def test_event_breakdowns_count_a_visitor_and_a_visit_once_across_prefix_and_tail(
    migrated_database: str,
) -> None:
    """By page, event, property and goal: a tail event's visit counts only if that
    session had no prefix event of its value, its visitor only if no session of that
    visitor had one (stats/prefix_events.py)."""
    day = open_day()
    site_id = seed(migrated_database, day)
    catch_up(migrated_database, roller_clock(day))
    whole = Period(at(day, 0), at(day + timedelta(days=1), 0))
    metrics: tuple[Metric, ...] = ("visitors", "visits", "events")

    def rows(breakdown: Breakdown) -> dict[str, tuple[int, ...]]:
        asked = Query((site_id,), whole, metrics, breakdown=breakdown)
        ((fast, plain),) = run(_answers(migrated_database, [asked]))
        assert (fast.path, fast.rows) == ("mixed", plain.rows)
        return {str(r.value): tuple(int(r.metrics[m] or 0) for m in metrics) for r in fast.rows}

    # /pricing: visitors 16, 17 (twice: prefix and tail), 18, 19; visits: 16's one,
    # 17's two, 18's and 19's one; pageviews 16 twice (13:40, 14:10), 17 twice, 18, 19.
    assert rows(Breakdown("page"))["/pricing"] == (4, 5, 6)
    # purchase: 16 four times in one visit, 17 once per visit, 18 once, 19 four times
    # in one visit, across the end of the prefix's events.
    assert rows(Breakdown("event"))["purchase"] == (4, 5, 11)
    plans = rows(Breakdown("prop", "plan"))
    assert plans == {"pro": (3, 4, 7), "team": (3, 3, 4)}
    goals = rows(Breakdown("goal"))
    assert goals["Purchase"] == (4, 5, 11)
    assert goals["Pricing"] == (4, 5, 6)
    assert "Any p page" in goals  # a pattern: raw rows over the whole period


def test_an_event_tail_leaves_the_callers_planner_settings_as_they_were(
    migrated_database: str,
) -> None:
    """The tails of event breakdowns run with hash joins only (stats/engine.py,
    NO_MERGE_JOINS); in the caller's transaction the setting is the caller's after."""
    day = open_day()
    site_id = seed(migrated_database, day)
    catch_up(migrated_database, roller_clock(day))
    asked = Query((site_id,), Period(at(day, 0), at(day + timedelta(days=1), 0)), ("visitors",),
                  breakdown=Breakdown("page"))  # fmt: skip

    async def settings() -> list[tuple[str, str]]:
        async with await AsyncConnection.connect(migrated_database) as connection:
            seen = []
            for caller in ("on", "off"):
                await connection.execute(
                    "SELECT set_config('enable_mergejoin', %s, true)", (caller,)
                )
                result = await run_query(connection, asked)
                assert result.path == "mixed"
                cursor = await connection.execute("SELECT current_setting('enable_mergejoin')")
                row = await cursor.fetchone()
                assert row is not None
                seen.append((caller, str(row[0])))
            await connection.rollback()
            return seen

    assert run(settings()) == [("on", "on"), ("off", "off")]
