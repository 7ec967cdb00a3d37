"""Imported data adds up exactly (stats/imported.py; docs/imports.md): for random
imported rows and random queries, the answer with include_imports equals the native
answer plus a plain sum, in Python, over the imported rows of the usable days (whole
local days of the period in the query's zone, before the site's first native day, a
local day of the site's zone), per metric, breakdown, supported filter, period and
zone.
A query the imported tables cannot answer gets the native answer and its reason.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from helpers.database import new_database
from helpers.events import event, run, write
from helpers.imported import add_import
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import event as statistic
from hypothesis import strategies as st
from psycopg import AsyncConnection

from picolytics.dimensions import Dimension, Metric
from picolytics.imports.tables import TableName
from picolytics.stats.engine import run as run_query
from picolytics.stats.periods import days
from picolytics.stats.query import Breakdown, Condition, ImportsNote, Query, Result
from picolytics.storage import migrate

SITE = "example.com"
FIRST_NATIVE = datetime(2024, 3, 10, 0, 30, tzinfo=UTC)  # 2024-03-09 in New York
WINDOW = [date(2024, 3, 3) + timedelta(days=n) for n in range(10)]
ZONES = ("UTC", "America/New_York", "Asia/Kolkata")
ADDITIVE: tuple[Metric, ...] = ("visitors", "visits", "pageviews", "events", "bounces")

# Restated for the test: per table, the metric each column gives, and the value.
METRIC_COLUMNS: dict[str, dict[Metric, str]] = {
    "imported_sources": {"visitors": "visitors", "visits": "visits",
                         "pageviews": "pageviews", "bounces": "bounces"},
    "imported_browsers": {"visitors": "visitors", "visits": "visits",
                          "pageviews": "pageviews", "bounces": "bounces"},
    "imported_pages": {"visitors": "visitors", "visits": "visits",
                       "pageviews": "pageviews", "events": "pageviews"},
    # pageviews 0, as natively: a breakdown by event counts custom events only.
    "imported_custom_events": {"visitors": "visitors", "events": "events", "pageviews": "none"},
}  # fmt: skip
TABLE: dict[Dimension, str] = {
    "source": "imported_sources",
    "browser": "imported_browsers",
    "browser_version": "imported_browsers",
    "page": "imported_pages",
    "event": "imported_custom_events",
}


def sources() -> st.SearchStrategy[tuple[Any, ...]]:
    return st.tuples(
        st.sampled_from(WINDOW), st.sampled_from(["", "Google", "news"]),
        *[st.just("")] * 6, *[st.integers(0, 50)] * 5,
    )  # fmt: skip


ROWS = st.fixed_dictionaries(
    {
        "imported_visitors": st.lists(
            st.tuples(st.sampled_from(WINDOW), *[st.integers(0, 50)] * 5),
            max_size=6, unique_by=lambda row: row[0],
        ),
        "imported_sources": st.lists(sources(), max_size=6),
        "imported_browsers": st.lists(
            st.tuples(
                st.sampled_from(WINDOW), st.sampled_from(["Chrome", "Firefox"]),
                st.sampled_from(["1", "2"]), *[st.integers(0, 50)] * 5,
            ),
            max_size=6,
        ),
        "imported_pages": st.lists(
            st.tuples(
                st.sampled_from(WINDOW), st.just("example.com"), st.sampled_from(["/", "/a"]),
                *[st.integers(0, 50)] * 3,
            ),
            max_size=6,
        ),
        "imported_custom_events": st.lists(
            st.tuples(
                st.sampled_from(WINDOW), st.sampled_from(["Signup", "Buy"]), st.just(""),
                st.just(""), st.integers(0, 50), st.integers(0, 50),
            ),
            max_size=6,
        ),
    }
)  # fmt: skip
NAMES = ("visitors", "pageviews", "bounces", "visits", "visit_duration")
COLUMN_INDEX: dict[str, dict[str, int]] = {
    "imported_visitors": {name: 1 + i for i, name in enumerate(NAMES)},
    "imported_sources": {"pageviews": 8, "visitors": 9, "visits": 10, "bounces": 12},
    "imported_browsers": {"visitors": 3, "visits": 4, "bounces": 6, "pageviews": 7},
    "imported_pages": {"visits": 3, "visitors": 4, "pageviews": 5},
    "imported_custom_events": {"visitors": 4, "events": 5},
}


def key_of(table: str, dimension: Dimension | None, row: tuple[Any, ...]) -> tuple[str, Any]:
    if dimension is None:
        return ("", None)
    if dimension == "source":
        return ("", "(direct)" if row[1] == "" else row[1])
    if dimension == "browser_version":
        return (row[1], row[2])
    return ("", row[2] if table == "imported_pages" else row[1])


@pytest.fixture(scope="module")
def database(admin_conninfo: str) -> Iterator[str]:
    with new_database(admin_conninfo) as conninfo:
        migrate.apply(conninfo)
        run(
            write(
                conninfo,
                [
                    event(FIRST_NATIVE, 1, path="/", referrer_host="news"),
                    event(FIRST_NATIVE + timedelta(minutes=1), 1, name="Signup", path="/"),
                    event(FIRST_NATIVE + timedelta(days=1), 2, path="/a"),
                ],
            )
        )
        yield conninfo


def ask(conninfo: str, query: Query) -> Result:
    async def go() -> Result:
        async with await AsyncConnection.connect(conninfo) as connection:
            return await run_query(connection, query)

    return run(go())


@settings(
    max_examples=150, deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)  # fmt: skip
@given(
    rows=ROWS,
    metrics=st.lists(st.sampled_from(ADDITIVE), min_size=1, max_size=3, unique=True),
    dimension=st.sampled_from([None, "source", "browser", "browser_version", "page", "event"]),
    filtered=st.booleans(),
    first=st.sampled_from(WINDOW),
    length=st.integers(1, 9),
    zone=st.sampled_from(ZONES),
    site_zone=st.sampled_from(ZONES),
)
def test_imported_answers_add_up(
    database: str,
    rows: dict[TableName, list[tuple[Any, ...]]],
    metrics: list[Metric],
    dimension: Dimension | None,
    filtered: bool,
    first: date,
    length: int,
    zone: str,
    site_zone: str,
) -> None:
    assume(not (dimension in ("page", "event") and "bounces" in metrics))  # a QueryError
    with psycopg.connect(database, autocommit=True) as connection:
        connection.execute("UPDATE sites SET timezone = %s", (site_zone,))
        connection.execute("DELETE FROM imports")  # the imported rows go with it (no FK)
        for name in rows:
            connection.execute(f"DELETE FROM {name}")
    if any(rows.values()):
        add_import(database, SITE, {t: r for t, r in rows.items() if r})
    site_id = 1
    last = first + timedelta(days=length - 1)
    # A filter on the breakdown's own table: the Chrome rows, or page /, or Signup;
    # without a breakdown, on the browser: the totals of the Chrome rows.
    condition = None
    table: str | None = TABLE.get(dimension) if dimension else "imported_visitors"
    if filtered and dimension is None:
        table = "imported_browsers"
    if filtered:
        condition = {
            "imported_sources": Condition("source", "is", ("Google",)),
            "imported_browsers": Condition("browser", "is", ("Chrome",)),
            "imported_pages": Condition("page", "is", ("/",)),
            "imported_custom_events": Condition("event", "is", ("Signup",)),
        }[table or ""]
    query = Query(
        site_ids=(site_id,), period=days(first, last, zone), metrics=tuple(metrics),
        breakdown=Breakdown(dimension) if dimension else None, filters=condition,
        include_imports=True,
    )  # fmt: skip
    native = {
        (r.parent, r.value): {str(k): v for k, v in r.metrics.items()}
        for r in ask(database, _native(query)).rows
    }
    result = ask(database, query)
    statistic(str(result.imports))
    # The first native day is a local day of the site's zone (storage/imported_days.py).
    first_native = FIRST_NATIVE.astimezone(ZoneInfo(site_zone)).date()
    usable = {d for d in WINDOW if first <= d <= last and d < first_native}
    owned = {row[0] for table_rows in rows.values() for row in table_rows}
    if not owned:
        assert result.imports == ImportsNote(False, "no_imported_data")
    elif not usable & owned:
        assert result.imports == ImportsNote(False, "out_of_range")
    assert table is not None
    answered = METRIC_COLUMNS.get(table, {m: m for m in ("visitors", "visits", "pageviews",
                                                         "bounces", "events")})  # fmt: skip
    if usable & owned and not all(m in answered for m in metrics):
        assert result.imports == ImportsNote(False, "unsupported_query")
    if result.imports != ImportsNote(True):
        assert {
            (r.parent, r.value): {str(k): v for k, v in r.metrics.items()} for r in result.rows
        } == native
        return
    expected: dict[tuple[str, Any], dict[str, Any]] = defaultdict(dict)
    for key, values in native.items():
        expected[key] = dict(values)
    for read in [table]:
        for row in rows.get(read, []):  # type: ignore[call-overload]
            if row[0] not in usable or (condition and not _passes(read, condition, row)):
                continue
            key = key_of(read, dimension, row)
            sums = expected[key]
            for metric in metrics:
                column = answered.get(metric, metric)
                index = COLUMN_INDEX[read].get(column)
                if read == "imported_visitors" and metric == "events":
                    index = COLUMN_INDEX[read]["pageviews"]
                sums[metric] = sums.get(metric, 0) + (row[index] if index is not None else 0)
    if table == "imported_visitors" and "events" in metrics:  # and custom events
        for row in rows.get("imported_custom_events", []):
            if row[0] in usable:
                expected[("", None)]["events"] += row[5]
    if dimension is None:
        expected[("", None)] = {m: expected[("", None)].get(m, 0) for m in metrics}
    got = {(r.parent, r.value): {str(k): v for k, v in r.metrics.items()} for r in result.rows}
    assert got == {k: {m: v.get(m, 0) for m in metrics} for k, v in expected.items()}


def _native(query: Query) -> Query:
    return replace(query, include_imports=False)


def _passes(table: str, condition: Condition, row: tuple[Any, ...]) -> bool:
    value = {"imported_sources": row[1], "imported_browsers": row[1],
             "imported_pages": row[2], "imported_custom_events": row[1]}[table]  # fmt: skip
    return value in condition.values
