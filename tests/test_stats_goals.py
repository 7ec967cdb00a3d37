"""Goals in the query layer (stats/goal_parts.py): a breakdown by goal and filters on
goals, on the hand-made dataset of tests/test_stats_engine.py, each answer checked
against plain SQL over the raw events and against the same query from raw rows only.

Site A's goals: "signup" (the custom event), "Visit /pricing" (a page), "Blog" (the
page pattern /blog*). In 10-13 January (UTC): S1 signs up and views /pricing, S2 and
S6 view /pricing, S4 views /blog and /blog/post, S5 signs up; S8's signup belongs to
no visit (no pageview) but is a completion all the same.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import psycopg
import pytest
from helpers.events import run
from test_stats_engine import B, P, _ask, ask, fill, site

from picolytics.errors import QueryError
from picolytics.stats.query import Breakdown, Condition, Query
from picolytics.storage import goals

GOALS = (
    goals.definition("signup", None),
    goals.definition(None, "/pricing"),
    goals.definition(None, "/blog*", "Blog"),
)

# Completions among the counted events of the period, per goal: distinct visitors per
# UTC day, distinct visits, events (plain SQL, the definition of docs/read-model.md).
COMPLETIONS = """
SELECT g.name, sum(visitors)::int, sum(visits)::int, sum(events)::int
FROM (VALUES ('signup', 'event', 'signup'), ('Visit /pricing', 'page', '^/pricing$'),
             ('Blog', 'page', '^/blog.*$')) AS g (name, kind, pattern)
CROSS JOIN LATERAL (
    SELECT e.received_at::date, count(DISTINCT e.visitor_id) AS visitors,
           count(DISTINCT e.session_id) AS visits, count(*) AS events
    FROM events e
    WHERE e.site_id = %(site)s AND e.received_at >= %(start)s AND e.received_at < %(end)s
      AND CASE g.kind WHEN 'event' THEN picolytics_is_custom_event(e.name) AND e.name = g.pattern
               ELSE picolytics_is_pageview(e.name, e.path) AND e.path ~ g.pattern END
    GROUP BY 1) per_day
GROUP BY g.name
"""


@pytest.fixture(scope="module")
def data(module_database: str) -> str:
    fill(module_database)
    for new in GOALS:

        def add(connection: psycopg.Connection[Any], new: goals.Definition = new) -> goals.Goal:
            return goals.add_goal(connection, "example.com", new)

        goals.connected(module_database, add)
    return module_database


def test_a_breakdown_by_goal_counts_completions(data: str) -> None:
    question = Query(
        (site(data),), P, ("visitors", "visits", "events"), breakdown=Breakdown("goal")
    )
    # The custom-event goal and the one-page goal from their rollup rows, the pattern
    # (distinct visitors across the pages it matches) from raw rows.
    result = ask(data, question, path="mixed")
    found = {row.value: tuple(row.metrics.values()) for row in result.rows}
    with psycopg.connect(data) as connection:
        params = {"site": site(data), "start": P.start, "end": P.end}
        rows = connection.execute(COMPLETIONS, params).fetchall()
    expected = {name: tuple(rest) for name, *rest in rows}
    assert found == expected
    # By hand: signup by S1, S5 and S8; /pricing by S1, S2, S6; /blog* by S4 on either
    # side of midnight, so once on each day (ids are counted per day).
    assert found == {"signup": (3, 3, 3), "Visit /pricing": (3, 3, 3), "Blog": (2, 2, 2)}
    # Visitors descending, then the name by code point.
    assert [row.value for row in result.rows] == ["Visit /pricing", "signup", "Blog"]


def test_a_site_without_goals_has_no_goal_rows(data: str) -> None:
    """Nothing completes a goal of a site that has none: no rows, and the events are not
    read (the query answers while another transaction holds every lock on them)."""
    question = Query(
        (site(data, B),), P, ("visitors", "events"), breakdown=Breakdown("goal"), limit=5
    )
    with psycopg.connect(data) as locker:
        locker.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        result = run(_ask(data, question, True, timeout_s=2))
    assert (result.rows, result.total_rows, result.path) == ((), 0, "raw")


@pytest.mark.parametrize(
    ("condition", "same_as"),
    [
        (Condition("goal", "is", ("signup",)), Condition("event", "is", ("signup",))),
        (Condition("goal", "is", ("visit /PRICING",), case_sensitive=False),
         Condition("page", "is", ("/pricing",))),
        (Condition("goal", "contains", ("Blog",)), Condition("page", "matches", ("^/blog.*$",))),
    ],
)  # fmt: skip
def test_a_goal_filter_is_its_events(data: str, condition: Condition, same_as: Condition) -> None:
    """A filter on a goal answers as the condition on what completes it, on both grains."""
    base = Query((site(data),), P, ("visitors", "visits", "pageviews", "events", "bounce_rate"))
    by_goal = ask(data, replace(base, filters=condition), path="raw")
    direct = ask(data, replace(base, filters=same_as), path="raw")
    assert by_goal.rows == direct.rows
    assert (by_goal.rows[0].metrics["visits"] or 0) > 0


def test_is_not_keeps_the_other_goals_completions(data: str) -> None:
    base = Query((site(data),), P, ("events",), filters=Condition("goal", "is_not", ("signup",)))
    assert ask(data, base, path="raw").rows[0].metrics == {"events": 5}  # 3 /pricing, 2 blog
    none = replace(base, filters=Condition("goal", "is", ("no such goal",)))
    assert ask(data, none, path="rollup").rows[0].metrics == {"events": 0}


@pytest.mark.parametrize(
    ("question", "field"),
    [
        (Query((1, 2), P, ("visitors",), breakdown=Breakdown("goal")), "site_ids"),
        (Query((1,), P, ("bounce_rate",), breakdown=Breakdown("goal")), "metrics"),
        (Query((1,), P, ("visits",), filters=Condition("goal", "matches", ("x",))), "filters"),
    ],
)
def test_goal_questions_that_make_no_sense(data: str, question: Query, field: str) -> None:
    with pytest.raises(QueryError) as raised:
        run(_ask(data, question, True))
    assert raised.value.field == field
