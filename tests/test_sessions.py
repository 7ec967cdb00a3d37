"""Sessions and batch writes against a real PostgreSQL (docs/guarantees.md, Visits and counts)."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta

from helpers.database import query
from helpers.events import TIMEOUT, event, run, write

from picolytics.events import BotHit
from picolytics.storage.pipeline import Pipeline
from picolytics.storage.sites import SiteIds

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def sessions(conninfo: str) -> list[tuple[object, ...]]:
    return query(
        conninfo,
        "SELECT visitor_id, pageviews, events, engaged, bounce, entry_path, "
        "exit_path, duration_s FROM sessions ORDER BY started_at",
    )


def test_one_pageview_is_a_bounce(migrated_database: str) -> None:
    run(
        write(
            migrated_database,
            [event(T0, 1, path="/a", referrer_host="news.example", utm_source="mail")],
        )
    )
    assert sessions(migrated_database) == [(1, 1, 1, False, True, "/a", "/a", 0)]
    assert query(
        migrated_database,
        "SELECT referrer_host, utm_source, country, browser, device_type FROM sessions",
    ) == [("news.example", "mail", "DE", "Chrome", "desktop")]


def test_pageviews_engagement_entry_exit_and_duration(migrated_database: str) -> None:
    run(
        write(
            migrated_database,
            [
                event(T0, 1, path="/a"),
                event(T0 + timedelta(seconds=10), 1, name="hidden", path="/a"),
                event(T0 + timedelta(seconds=20), 1, name="visible", path="/a"),
            ],
        )
    )
    # hidden/visible are neither pageviews nor engagement: still a bounce
    assert sessions(migrated_database) == [(1, 1, 3, False, True, "/a", "/a", 20)]
    run(
        write(
            migrated_database,
            [
                event(T0 + timedelta(seconds=40), 1, name="nav", path="/b"),
                event(T0 + timedelta(seconds=70), 1, name="ping", path="/b"),
                event(T0 + timedelta(seconds=80), 1, name="hashchange", path="/b"),  # an anchor
                event(T0 + timedelta(seconds=90), 1, name="hashchange", path="/b", hash_path="#/c"),
            ],
        )
    )
    assert sessions(migrated_database) == [(1, 3, 7, True, False, "/a", "/b#/c", 90)]


def test_idle_longer_than_the_timeout_starts_a_new_visit(migrated_database: str) -> None:
    run(write(migrated_database, [event(T0, 7)]))
    run(write(migrated_database, [event(T0 + TIMEOUT - timedelta(seconds=1), 7)]))
    assert len(sessions(migrated_database)) == 1
    later = T0 + 2 * TIMEOUT + timedelta(seconds=1)
    run(write(migrated_database, [event(later, 7, path="/again")]))
    rows = sessions(migrated_database)
    assert [row[1] for row in rows] == [2, 1]
    assert rows[1][5] == "/again"


def test_one_batch_holding_two_visits(migrated_database: str) -> None:
    """A backlog written after an outage can hold several visits of one visitor."""
    run(
        write(
            migrated_database,
            [
                event(T0, 9, path="/1"),
                event(T0 + timedelta(hours=2), 9, path="/2"),
                event(T0 + timedelta(hours=2, minutes=5), 9, path="/3"),
            ],
        )
    )
    assert [row[1] for row in sessions(migrated_database)] == [1, 2]
    # The visitor's open visit is the last one: a new event continues it.
    run(write(migrated_database, [event(T0 + timedelta(hours=2, minutes=20), 9, path="/4")]))
    assert [(row[1], row[6]) for row in sessions(migrated_database)] == [(1, "/1"), (3, "/4")]


def test_a_visit_crossing_midnight_continues(migrated_database: str) -> None:
    before = datetime(2026, 11, 28, 23, 55, tzinfo=UTC)
    after = datetime(2026, 11, 29, 0, 5, tzinfo=UTC)
    run(write(migrated_database, [event(before, 111, path="/late")]))
    # After midnight the same person has a new hash (new salt) and yesterday's hash.
    run(write(migrated_database, [event(after, 222, previous=111, name="nav", path="/later")]))
    assert sessions(migrated_database) == [(111, 2, 2, False, False, "/late", "/later", 600)]
    # Someone else whose "yesterday id" has no open visit starts a visit of their own.
    run(write(migrated_database, [event(after, 333, previous=444)]))
    assert len(sessions(migrated_database)) == 2


def test_retried_batch_duplicates_nothing(migrated_database: str) -> None:
    batch = [event(T0, 5, path="/x"), event(T0 + timedelta(seconds=30), 5, name="ping")]
    bots = {BotHit("example.com", T0.date(), "crawler_list"): 3}
    run(write(migrated_database, batch, bots))
    run(write(migrated_database, batch))  # the same events again: an unknown-outcome retry
    assert query(migrated_database, "SELECT count(*) FROM events") == [(2,)]
    assert sessions(migrated_database) == [(5, 1, 2, True, False, "/x", "/x", 30)]
    assert query(migrated_database, "SELECT reason, hits FROM bot_counts") == [("crawler_list", 3)]


def test_sites_are_created_once(migrated_database: str) -> None:
    sites = SiteIds()
    run(
        write(
            migrated_database,
            [event(T0, 1, site="a.example"), event(T0, 2, site="b.example")],
            sites=sites,
        )
    )
    run(write(migrated_database, [event(T0, 3, site="a.example")]))  # a fresh cache
    assert query(migrated_database, "SELECT domain FROM sites ORDER BY 1") == [
        ("a.example",),
        ("b.example",),
    ]


def test_two_writers_on_the_same_visitors_open_one_session_each(migrated_database: str) -> None:
    """Two server processes receiving the same visitors at the same moment."""

    async def scenario() -> None:
        for round_number in range(15):
            at = T0 + timedelta(hours=round_number)  # each round: new visits
            visitors = range(round_number * 1000, round_number * 1000 + 40)
            first = [event(at, visitor) for visitor in visitors]
            second = [
                event(at + timedelta(milliseconds=1), visitor, name="ping")
                for visitor in reversed(visitors)
            ]
            await asyncio.gather(write(migrated_database, first), write(migrated_database, second))

    run(scenario())
    per_visitor = query(
        migrated_database, "SELECT visitor_id, count(*), sum(events) FROM sessions GROUP BY 1"
    )
    assert len(per_visitor) == 15 * 40
    assert {(count, total) for _, count, total in per_visitor} == {(1, 2)}


def test_a_rejected_row_does_not_block_its_batch(migrated_database: str) -> None:
    async def scenario() -> Pipeline:
        pipeline = Pipeline(
            migrated_database,
            queue_size=100,
            batch_max_size=100,
            batch_max_msec=50,
            session_timeout=TIMEOUT,
        )
        good = [event(T0, visitor, path=f"/{visitor}") for visitor in range(6)]
        poison = event(T0, 99, path="/bad\x00row")  # bypasses the sanitiser
        for queued in [*good[:3], poison, *good[3:]]:
            assert pipeline.offer(queued)
        pipeline.start()
        await pipeline.stop(deadline_s=30)
        return pipeline

    pipeline = run(scenario())
    assert pipeline.stats.written == 6
    assert pipeline.stats.dropped == Counter({"bad_row": 1})
    assert pipeline.stats.accepted == 7
    assert query(migrated_database, "SELECT count(*) FROM events") == [(6,)]
    assert query(migrated_database, "SELECT count(*) FROM sessions") == [(6,)]
