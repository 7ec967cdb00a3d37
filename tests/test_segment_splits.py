"""Visitors with two values of a segment on one day (docs/read-model.md, Filtered
queries): the segment rollups count them once per value, and the split counts of
sql/0019_segment_splits.sql take the extra counts off, so a filtered query reads such
a day from rollups, exactly, also once its raw rows are pruned."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from helpers.database import query
from helpers.events import event, run, write
from psycopg import AsyncConnection

from picolytics.dimensions import Metric
from picolytics.events import QueuedEvent
from picolytics.stats.engine import run as run_query
from picolytics.stats.query import And, Breakdown, Condition, Filter, Interval, Period, Query
from picolytics.storage import roller
from picolytics.storage.prune import prune

DAY = datetime(2026, 3, 7, tzinfo=UTC)
NOW = DAY + timedelta(days=5)
METRICS: tuple[Metric, ...] = ("visitors", "visits", "pageviews")


def visit(hour: int, visitor: int, source: str, *paths: str) -> list[QueuedEvent]:
    start = DAY + timedelta(hours=hour)
    return [
        event(
            start + timedelta(minutes=n),
            visitor,
            path=path,
            referrer_host=source,
            hostname="b.example.com" if path == "/b" else "example.com",  # two hosts
        )
        for n, path in enumerate(paths or ("/",))
    ]


def dataset() -> list[QueuedEvent]:
    """Visitor 1 comes from two sources and sees /a from both; visitor 2 from three,
    /b from two of them (news, mail); visitor 3 from one; a later day keeps raw rows."""
    return [
        *visit(8, 1, "news.example", "/a"),
        *visit(15, 1, "blog.example", "/a", "/b"),
        *visit(9, 2, "news.example", "/b"),
        *visit(12, 2, "blog.example", "/c"),
        *visit(18, 2, "mail.example", "/b"),
        *visit(10, 3, "news.example", "/a"),
        *visit(3 * 24 + 10, 4, "news.example"),
    ]


FILTERS: list[Filter] = [
    Condition("source", "is", ("news.example", "blog.example")),
    Condition("source", "is_not", ("zz.example",)),
    Condition("source", "contains", ("EXAMPLE",), case_sensitive=False),
    Condition("source", "matches_not", ("^mail",)),
    And(
        (Condition("source", "is_not", ("mail.example",)), Condition("source", "contains", ("e",)))
    ),
]
SHAPES: list[tuple[Interval | None, Breakdown | None]] = [
    (None, None),
    ("day", None),
    (None, Breakdown("page")),
    (None, Breakdown("hostname")),
    (None, Breakdown("entry_page")),
    ("day", Breakdown("exit_page")),
]


def questions() -> list[Query]:
    period = Period(DAY, DAY + timedelta(days=1))
    return [
        Query((1,), period, METRICS, interval=interval, breakdown=breakdown, filters=filter_)
        for filter_ in FILTERS
        for interval, breakdown in SHAPES
    ]


async def _answers(conninfo: str, use_rollups: bool) -> list[tuple[str, Any]]:
    async with await AsyncConnection.connect(conninfo, autocommit=True) as connection:
        found: list[tuple[str, Any]] = []
        for question in questions():
            result = await run_query(connection, question, use_rollups=use_rollups)
            found.append((result.path, [(r.time, r.value, r.metrics) for r in result.rows]))
        return found


def answers(conninfo: str, use_rollups: bool = True) -> list[tuple[str, Any]]:
    return run(_answers(conninfo, use_rollups))


def test_split_days_read_from_rollups_exactly_also_after_prune(migrated_database: str) -> None:
    run(write(migrated_database, dataset()))
    run(roller.catch_up(migrated_database, NOW, wait=True))
    assert query(migrated_database, "SELECT split_segments, segment_splits FROM rollup_days"
                 " WHERE day = %s", (DAY.date(),)) == [(["source"], True)]  # fmt: skip
    plain = answers(migrated_database, use_rollups=False)
    fast = answers(migrated_database)
    assert [rows for _, rows in fast] == [rows for _, rows in plain]
    assert {path for path, _ in fast} == {"rollup"}
    # Visitor 2 is one visitor of the three sources (counted three times by the segment
    # rollups), 1 one of two: the totals of the unfiltered-like filter.
    total = fast[FILTERS.index(FILTERS[1]) * len(SHAPES)][1]
    assert total == [(None, None, {"visitors": 3, "visits": 6, "pageviews": 7})]
    run(prune(migrated_database, 1, now=DAY + timedelta(days=2, hours=2)))
    assert query(migrated_database, "SELECT count(*) FROM sessions WHERE started_at < %s",
                 (DAY + timedelta(days=1),)) == [(0,)]  # fmt: skip
    assert answers(migrated_database) == fast


def test_a_day_rolled_without_split_counts_reads_raw(migrated_database: str) -> None:
    """As before sql/0019: such a day's visitors come from raw rows, the same numbers."""
    run(write(migrated_database, dataset()))
    run(roller.catch_up(migrated_database, NOW, wait=True))
    with psycopg.connect(migrated_database) as connection:
        connection.execute("UPDATE rollup_days SET segment_splits = false")
        connection.execute("DELETE FROM rollup_segment_splits")
    fast = answers(migrated_database)
    assert [rows for _, rows in fast] == [rows for _, rows in answers(migrated_database, False)]
    assert {path for path, _ in fast} == {"raw"}


def test_split_counts_hold_value_sets_not_visitors(migrated_database: str) -> None:
    run(write(migrated_database, dataset()))
    run(roller.catch_up(migrated_database, NOW, wait=True))
    rows = query(
        migrated_database,
        "SELECT grain, dimension, value, segment_values, visitors FROM rollup_segment_splits"
        " WHERE segment = 'source' AND dimension IN ('', 'page') ORDER BY 1, 2, 3, 4",
    )
    assert rows == [
        ("events", "", "", ["blog.example", "mail.example", "news.example"], 1),
        ("events", "", "", ["blog.example", "news.example"], 1),
        ("events", "page", "/a", ["blog.example", "news.example"], 1),
        ("events", "page", "/b", ["mail.example", "news.example"], 1),
        ("visits", "", "", ["blog.example", "mail.example", "news.example"], 1),
        ("visits", "", "", ["blog.example", "news.example"], 1),
    ]
    # No segment other than source splits anyone here (one browser, country, device).
    assert query(migrated_database, "SELECT DISTINCT segment FROM rollup_segment_splits") == [
        ("source",)
    ]
