"""Behavioral filters in the query layer (stats/query.py HasDone; docs/read-model.md,
Filters): known answers on a small dataset made by hand, written through the real
batch writer and rolled up; every query is asked from rollups and from raw rows only,
and must read raw rows both times (no rollup holds which events a visit had).

Site example.com (UTC), March 2024, times in UTC:

  visit  visitor  events
  V1     1        4th 09:00 load /, 09:01 nav /pricing, 09:02 signup {plan: pro}
  V2     2        4th 10:00 load /pricing, 10:01 signup {plan: free},
                  10:02 download {plan: pro}
  V3     3        4th 23:50 load /blog, 5th 00:05 signup {plan: pro} (across midnight)
  V4     4        5th 12:00 load /docs, 12:00:10 visible /docs (not a counted event)
  S5     5        5th 14:00 visible /, 14:01 signup {plan: pro} (no pageview: no visit)

Counted events: V1 3 (2 pageviews), V2 3 (1), V3 2 (1), V4 1 (1), S5 1 (0): 10 events,
5 pageviews, 4 visits.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
import pytest
from helpers.database import query
from helpers.events import event, run, write
from psycopg import AsyncConnection

from picolytics.dimensions import Metric
from picolytics.errors import QueryError
from picolytics.events import QueuedEvent
from picolytics.stats.engine import run as run_query
from picolytics.stats.query import (
    And,
    Breakdown,
    Condition,
    Filter,
    HasDone,
    Not,
    Or,
    Period,
    Query,
    Result,
)
from picolytics.storage import goals
from picolytics.storage.rollup import roll_day

SIGNUP = Condition("event", "is", ("signup",))
PRO = Condition("prop", "is", ("pro",), "plan")
FREE = Condition("prop", "is", ("free",), "plan")
PRICING = Condition("page", "is", ("/pricing",))
DOCS = Condition("page", "is", ("/docs",))


def at(text: str) -> datetime:
    return datetime.fromisoformat(f"2024-03-{text}").replace(tzinfo=UTC)


def dataset() -> list[QueuedEvent]:
    return [
        event(at("04 09:00"), 1, path="/"),
        event(at("04 09:01"), 1, name="nav", path="/pricing"),
        event(at("04 09:02"), 1, name="signup", path="/pricing", props={"plan": "pro"}),
        event(at("04 10:00"), 2, path="/pricing"),
        event(at("04 10:01"), 2, name="signup", path="/pricing", props={"plan": "free"}),
        event(at("04 10:02"), 2, name="download", path="/pricing", props={"plan": "pro"}),
        event(at("04 23:50"), 3, path="/blog"),
        event(at("05 00:05"), 3, name="signup", path="/blog", props={"plan": "pro"}),
        event(at("05 12:00"), 4, path="/docs"),
        event(at("05 12:00:10"), 4, name="visible", path="/docs"),
        event(at("05 14:00"), 5, name="visible", path="/"),
        event(at("05 14:01"), 5, name="signup", path="/", props={"plan": "pro"}),
    ]


async def _roll(conninfo: str) -> None:
    async with await AsyncConnection.connect(conninfo, autocommit=True) as connection:
        for (site_id,) in query(conninfo, "SELECT site_id FROM sites"):
            for offset in range(10):
                await roll_day(
                    connection, site_id, date(2024, 3, 1) + timedelta(days=offset), "UTC"
                )


@pytest.fixture(scope="module")
def data(module_database: str) -> str:
    run(write(module_database, dataset()))
    run(_roll(module_database))
    return module_database


def period(first: int, end: int) -> Period:
    return Period(datetime(2024, 3, first, tzinfo=UTC), datetime(2024, 3, end, tzinfo=UTC))


BOTH_DAYS = period(4, 6)


async def _ask(conninfo: str, question: Query, use_rollups: bool) -> Result:
    async with await AsyncConnection.connect(conninfo, autocommit=True) as connection:
        return await run_query(connection, question, use_rollups=use_rollups)


def ask(conninfo: str, question: Query) -> Result:
    """The answer, the same with and without rollups, read from raw rows both times."""
    fast = run(_ask(conninfo, question, True))
    plain = run(_ask(conninfo, question, False))
    assert fast.path == plain.path == "raw", question
    assert fast.rows == plain.rows
    return fast


def q(conninfo: str, metrics: tuple[Metric, ...], filters: Filter | None, **fields: Any) -> Query:
    (site_id,) = query(conninfo, "SELECT site_id FROM sites WHERE domain = 'example.com'")[0]
    fields.setdefault("period", BOTH_DAYS)
    return Query((site_id,), metrics=metrics, filters=filters, **fields)


def totals(
    conninfo: str, metrics: tuple[Metric, ...], filters: Filter | None, **fields: Any
) -> Any:
    (row,) = ask(conninfo, q(conninfo, metrics, filters, **fields)).rows
    return tuple(row.metrics[m] for m in metrics)


def test_the_dataset_is_rolled_up(data: str) -> None:
    # Without a behavioral filter the same totals come from rollups.
    question = q(data, ("visits", "events", "pageviews"), None)
    result = run(_ask(data, question, True))
    assert result.path == "rollup"
    assert tuple(result.rows[0].metrics.values()) == (4, 10, 5)


@pytest.mark.parametrize(
    ("filters", "visits"),
    [
        (HasDone(SIGNUP), 3),  # V1, V2, V3 (V3's signup the next day counts too)
        (HasDone(SIGNUP, negated=True), 1),  # V4
        (Not(HasDone(SIGNUP)), 1),
        # One event that is a signup with plan pro: V1, V3, not V2 (its pro is a download)...
        (HasDone(And((SIGNUP, PRO))), 2),
        # ...while the plain And holds for a visit with a signup and some pro event.
        (And((SIGNUP, PRO)), 3),
        (HasDone(Or((PRICING, DOCS))), 3),  # V1, V2, V4
        # A counted event that is not a pageview of /docs: every visit but V4, whose
        # `visible` is no counted event.
        (HasDone(Not(DOCS)), 3),
        (HasDone(Not(DOCS), negated=True), 1),
        (And((HasDone(SIGNUP), HasDone(FREE, negated=True))), 2),  # V1, V3
        (HasDone(Condition("page", "contains", ("PRIC",), case_sensitive=False)), 2),
        (HasDone(Condition("event", "matches", ("^sign",))), 3),
        (HasDone(Condition("page", "is", ("/nowhere",))), 0),
    ],
)
def test_visits_that_have_done(data: str, filters: Filter, visits: int) -> None:
    assert totals(data, ("visits", "visitors"), filters) == (visits, visits)


@pytest.mark.parametrize(
    ("filters", "events", "pageviews"),
    [
        # The events of V1, V2 and V3; not S5's signup, which belongs to no visit.
        (HasDone(SIGNUP), 8, 4),
        # Their complement: V4's load and S5's signup (no visit has done nothing).
        (HasDone(SIGNUP, negated=True), 2, 1),
        # Plausible's example: pageviews of /pricing in visits that signed up.
        (And((PRICING, HasDone(SIGNUP))), 2, 2),
        (And((PRICING, HasDone(FREE, negated=True))), 1, 1),  # V1's nav
        (And((SIGNUP, HasDone(PRICING))), 2, 0),  # V1's and V2's signups
        (HasDone(And((SIGNUP, PRO))), 5, 3),  # V1's 3 and V3's 2
    ],
)
def test_events_of_visits_that_have_done(
    data: str, filters: Filter, events: int, pageviews: int
) -> None:
    assert totals(data, ("events", "pageviews"), filters) == (events, pageviews)


def test_a_visits_events_count_whenever_received(data: str) -> None:
    # The 4th only: V3 started then, and its signup (the 5th) counts for it.
    assert totals(data, ("visits",), HasDone(SIGNUP), period=period(4, 5)) == (3,)
    # V1's 3 events, V2's 3 and V3's load of the 4th.
    assert totals(data, ("events",), HasDone(SIGNUP), period=period(4, 5)) == (7,)
    # The 5th: no visit started then has signed up (V4), but V3's signup of the 5th is
    # an event of a visit that has.
    assert totals(data, ("visits", "events"), HasDone(SIGNUP), period=period(5, 6)) == (0, 1)


def test_breakdowns_with_behavioral_filters(data: str) -> None:
    by_page = ask(data, q(data, ("pageviews",), HasDone(SIGNUP), breakdown=Breakdown("page")))
    assert [(r.value, r.metrics["pageviews"]) for r in by_page.rows] == [
        ("/pricing", 2),
        ("/", 1),
        ("/blog", 1),
    ]
    by_entry = ask(data, q(data, ("visits",), HasDone(PRICING), breakdown=Breakdown("entry_page")))
    assert [(r.value, r.metrics["visits"]) for r in by_entry.rows] == [("/", 1), ("/pricing", 1)]
    # Custom events by name in visits that never viewed /pricing: V3's signup, and S5's
    # (no visit: it passes every has_not_done); visits are the events' distinct sessions.
    by_name = ask(
        data,
        q(
            data,
            ("events", "visits"),
            HasDone(PRICING, negated=True),
            breakdown=Breakdown("event"),
        ),
    )
    assert [(r.value, r.metrics["events"], r.metrics["visits"]) for r in by_name.rows] == [
        ("signup", 2, 2)
    ]


def test_a_series_with_a_behavioral_filter(data: str) -> None:
    series = ask(data, q(data, ("visits", "events"), HasDone(SIGNUP), interval="day"))
    assert [(r.time, r.metrics["visits"], r.metrics["events"]) for r in series.rows] == [
        (date(2024, 3, 4), 3, 7),
        (date(2024, 3, 5), 0, 1),
    ]


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        (HasDone(Condition("source", "is", ("x",))), "not on source"),
        (HasDone(And((SIGNUP, Condition("country", "is", ("DE",))))), "not on country"),
        (HasDone(HasDone(SIGNUP)), "cannot be nested"),
        (HasDone(Not(HasDone(SIGNUP))), "cannot be nested"),
        (HasDone(SIGNUP, negated=1), "True or False"),  # type: ignore[arg-type]
        (HasDone(Condition("page", "is", ())), "1 to 100 values"),
    ],
)
def test_bad_behavioral_filters_name_the_field(data: str, filters: Filter, message: str) -> None:
    with pytest.raises(QueryError) as raised:
        run(_ask(data, q(data, ("visits",), filters), True))
    assert raised.value.field == "filters"
    assert message in str(raised.value)


@pytest.fixture(scope="module")
def with_goals(data: str) -> str:
    """The dataset with the goals "signup" (the custom event) and "Visit /pricing"."""
    for new in (goals.definition("signup", None), goals.definition(None, "/pricing")):

        def add(connection: psycopg.Connection[Any], new: goals.Definition = new) -> goals.Goal:
            return goals.add_goal(connection, "example.com", new)

        goals.connected(data, add)
    return data


def test_goals_inside_behavioral_filters(with_goals: str) -> None:
    signup = Condition("goal", "is", ("signup",))
    pricing = Condition("goal", "is", ("Visit /pricing",))
    assert totals(with_goals, ("visits",), HasDone(signup)) == (3,)  # V1, V2, V3
    assert totals(with_goals, ("visits",), HasDone(pricing, negated=True)) == (2,)  # V3, V4
    # Completions of some goal but not signup: V1's and V2's /pricing.
    not_signup = Condition("goal", "is_not", ("signup",))
    assert totals(with_goals, ("visits",), HasDone(not_signup)) == (2,)
    # Signups in visits that viewed /pricing: V1's and V2's.
    assert totals(with_goals, ("events",), And((signup, HasDone(PRICING)))) == (2,)
    by_goal = ask(
        with_goals, q(with_goals, ("events",), HasDone(PRICING), breakdown=Breakdown("goal"))
    )
    assert {r.value: r.metrics["events"] for r in by_goal.rows} == {
        "signup": 2,
        "Visit /pricing": 2,
    }
