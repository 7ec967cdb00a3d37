"""Goals in a query (docs/goals.md; docs/read-model.md, Goals). A goal is its site's,
so a query that names goals asks one site (stats/validate.py).

- A condition on `goal` becomes conditions on pages and custom events: each goal is a
  custom event of its name, a pageview of its path, or a pageview whose path matches
  its pattern (stats/goals.py). `is`/`contains` keep the events completing a goal whose
  name matches; `is_not`/`contains_not` the events completing some goal, none of whose
  names match. The rest of the query layer (rollups included) then answers as usual.
- A breakdown by goal counts each goal's completions among the counted events: an
  event completing two goals counts once for each; visitors and visits are the
  distinct ids among a goal's completions, per site and local day, as for every event
  dimension. Without filters, a goal completed by one custom event or one page is that
  event's or page's row of rollup_events on the rolled days (`goal_rollup_part`), and
  raw rows only on the others; a page pattern is read from raw rows over the whole
  period, since its visitors are distinct across the pages it matches.
"""

from __future__ import annotations

from collections.abc import Sequence

from picolytics.dimensions import EVENT_ROWS
from picolytics.stats.filters import conditions, event_condition, needs_visit
from picolytics.stats.goals import has_wildcard, page_regex
from picolytics.stats.query import And, Condition, Filter, HasDone, Not, Or, Query
from picolytics.stats.raw import VISIT_OF_EVENT
from picolytics.stats.shape import Shape
from picolytics.stats.sql import COUNTED_EVENT, Params, Range, in_ranges, local_key, part
from picolytics.storage.goals import Goal

# Goal names are compared as text in Python: these are the operators a goal takes.
GOAL_OPERATORS = ("is", "is_not", "contains", "contains_not")


def uses_goals(query: Query) -> bool:
    if query.breakdown is not None and query.breakdown.dimension == "goal":
        return True
    return query.filters is not None and any(
        c.dimension == "goal" for c in conditions(query.filters)
    )


def completes(goal: Goal) -> Condition:
    """The events that complete `goal`, as a condition on pages or custom events."""
    if goal.kind == "event":
        return Condition("event", "is", (goal.definition,))
    if has_wildcard(goal.definition):
        return Condition("page", "matches", (page_regex(goal.definition),))
    return Condition("page", "is", (goal.definition,))


def _name_matches(condition: Condition, name: str) -> bool:
    def fold(text: str) -> str:
        return text if condition.case_sensitive else text.casefold()

    if condition.operator in ("is", "is_not"):
        return any(fold(name) == fold(value) for value in condition.values)
    return any(fold(value) in fold(name) for value in condition.values)


def resolve(filter_: Filter | None, goals: Sequence[Goal]) -> Filter | None:
    """The filter with every condition on `goal` replaced by what completes the goals."""
    if filter_ is None:
        return None
    if isinstance(filter_, Not | HasDone):
        inner = resolve(filter_.filter, goals)
        assert inner is not None
        return Not(inner) if isinstance(filter_, Not) else HasDone(inner, filter_.negated)
    if isinstance(filter_, And | Or):
        resolved = tuple(resolve(inner, goals) for inner in filter_.filters)
        return type(filter_)(tuple(f for f in resolved if f is not None))
    if filter_.dimension != "goal":
        return filter_
    named = Or(tuple(completes(g) for g in goals if _name_matches(filter_, g.display_name)))
    if not filter_.operator.endswith("_not"):
        return named
    return And((Or(tuple(completes(g) for g in goals)), Not(named)))


def rolled_up(goal: Goal) -> bool:
    """Is the goal one row of rollup_events (a custom event, or one page)?"""
    return goal.kind == "event" or not has_wildcard(goal.definition)


def goal_rollup_part(rolled_days: str, params: Params, goals: Sequence[Goal]) -> str:
    """The part of a breakdown by goal from the rolled days (`rolled_days`: an unnest of
    (site_id, day), stats/rollups.py) for goals that are one row each (`rolled_up`)."""
    names = params.add([g.display_name for g in goals], cast="::text[]")
    kinds = params.add([g.kind for g in goals], cast="::text[]")
    values = params.add([g.definition for g in goals], cast="::text[]")
    columns = {
        "k": "r.day",
        "parent": "''",
        "value": "g.name",
        "visitors": "r.visitors",
        "visits": "r.visits",
        "pageviews": "r.pageviews",
        "events": "r.events",
    }
    from_where = f"""FROM unnest({names}, {kinds}, {values}) AS g (name, kind, value)
JOIN rollup_events r
  ON r.dimension = CASE g.kind WHEN 'event' THEN 'event' ELSE 'page' END
 AND r.parent = '' AND r.value = g.value
JOIN {rolled_days} ON r.site_id = u.site_id AND r.day = u.day"""
    return part(columns, from_where)


def goal_part(
    query: Query, shape: Shape, ranges: Sequence[Range], params: Params, goals: Sequence[Goal]
) -> str:
    """The part (stats/sql.py, PART_COLUMNS) of a breakdown by goal, from raw rows."""
    tz = params.add(query.period.timezone, cast="::text")
    names = params.add([g.display_name for g in goals], cast="::text[]")
    event_names = params.add(
        [g.definition if g.kind == "event" else None for g in goals], cast="::text[]"
    )
    paths = params.add(
        [
            g.definition if g.kind == "page" and not has_wildcard(g.definition) else None
            for g in goals
        ],
        cast="::text[]",
    )
    regexes = params.add(
        [
            page_regex(g.definition) if g.kind == "page" and has_wildcard(g.definition) else None
            for g in goals
        ],
        cast="::text[]",
    )
    columns = {
        "k": local_key("e.received_at", tz, shape.hourly),
        "parent": "''",
        "value": "g.name",
        "visitors": "count(DISTINCT e.visitor_id)",
        "visits": "count(DISTINCT e.session_id)",
        "pageviews": f"count(*) FILTER (WHERE {EVENT_ROWS['page']})",
        "events": "count(*)",
    }
    completed = f"""
CROSS JOIN LATERAL (
    SELECT g.name FROM unnest({names}, {event_names}, {paths}, {regexes})
                       AS g (name, event_name, path, regex)
    WHERE (g.event_name IS NOT NULL AND {EVENT_ROWS["event"]} AND e.name = g.event_name)
       OR (g.path IS NOT NULL AND {EVENT_ROWS["page"]} AND e.path = g.path)
       OR (g.regex IS NOT NULL AND {EVENT_ROWS["page"]} AND e.path ~ g.regex)
) AS g"""
    visit = VISIT_OF_EVENT if needs_visit(query.filters) else ""
    where = [in_ranges("e.site_id", "e.received_at", ranges, params), COUNTED_EVENT]
    if query.filters is not None:
        where.append(event_condition(query.filters, params))
    from_where = "FROM events e" + visit + completed + "\nWHERE " + "\n  AND ".join(where)
    return part(columns, from_where, "e.site_id")
