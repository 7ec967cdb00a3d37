"""The open day's raw tail for breakdowns by an event dimension (page, event, prop) and
by goal (docs/read-model.md, "The open day"), which add to the prefix's rollup_events
rows exactly.

A prefixed day D (stats/prefix.py) is its prefix, the events received in [D's start,
`until`), plus its tail, the events received in [`until`, end), where `until` is the
prefix's `events_until` (rollup_events' cut; Prefix.bounds). Pageviews and events
add. Visitors and visits are distinct ids over the events of a value, so a tail event
of value v counts its visit only if that session has no prefix event of value v, and
its visitor only if no session of that visitor id has one.

The tail's events are grouped per (site, session, value) first. The prefix events that
could match are those of the tail's visitors' sessions that overlap the prefix: the
visitors' sessions by the index sessions_site_visitor (sql/0016_open_day.sql; ids
change every UTC day, so a handful each), then all those sessions' events before
`until` in one scan of events_site_session. An event's visitor id is its session's
(storage/sessions.py keys a session by its visitor), so these are all of the
visitor's prefix events. Two hash joins on (session, value) and (visitor, value) then
say which tail rows are new.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime

from picolytics.dimensions import EVENT_COLUMNS, EVENT_DIMENSIONS, EVENT_ROWS
from picolytics.stats.goals import has_wildcard
from picolytics.stats.shape import Shape
from picolytics.stats.sql import COUNTED_EVENT, Params, local_key, part, with_prop_key
from picolytics.storage.goals import Goal

# The day's start, the tail's end, and `until`: rollup_events' cut (Prefix.bounds).
Bounds = tuple[datetime, datetime, datetime]


def _on(expression: str, alias: str) -> str:
    """An event expression of dimensions.py over the event `alias` instead of `e`."""
    return re.sub(r"\be\.", f"{alias}.", expression)


def _tail(grouped: str, value: str, joins: str, rows: str, window: tuple[str, str, str]) -> str:
    """The tail's part from `grouped` (rows: site_id, visitor_id, session_id, value, k,
    pageviews, events; one per site, session and value) and the `value` of a prefix
    event `pe` (with `joins`, among the `rows` that have one); `window`: the
    placeholders of the sites, the day's start and until."""
    sites, start, until = window
    columns = {
        "k": "t.k",
        "parent": "''",
        "value": "t.value",
        "visitors": "count(DISTINCT t.visitor_id) FILTER (WHERE by_visitor.visitor_id IS NULL)",
        "visits": "count(*) FILTER (WHERE by_visit.session_id IS NULL)",
        "pageviews": "sum(t.pageviews)::bigint",
        "events": "sum(t.events)::bigint",
    }
    from_where = """FROM tail t
LEFT JOIN seen by_visit
       ON by_visit.site_id = t.site_id AND by_visit.session_id = t.session_id
      AND by_visit.value = t.value
LEFT JOIN (SELECT DISTINCT site_id, visitor_id, value FROM seen) AS by_visitor
       ON by_visitor.site_id = t.site_id AND by_visitor.visitor_id = t.visitor_id
      AND by_visitor.value = t.value"""
    # `seen`: the values of the tail's visitors' prefix events, per session. Only their
    # sessions that overlap the prefix can hold one (an event is received within its
    # session's [started_at, last_seen_at]); most tail visits started after `until`.
    # One index scan for all those sessions (an array) costs less than one per session.
    # Each row is the event's own (site, visitor, session, value), so a session id
    # that two sites share can only add true rows of the other site.
    return f"""WITH tail AS ({grouped}
), seen AS (
    SELECT DISTINCT pe.site_id, pe.visitor_id, pe.session_id, {value} AS value
    FROM events pe{joins}
    WHERE pe.site_id = ANY({sites}) AND pe.session_id = ANY (ARRAY(
              SELECT ps.session_id
              FROM (SELECT DISTINCT site_id, visitor_id FROM tail) AS v
              JOIN sessions ps ON ps.site_id = v.site_id AND ps.visitor_id = v.visitor_id
              WHERE ps.started_at < {until} AND ps.last_seen_at >= {start}))
      AND pe.received_at >= {start} AND pe.received_at < {until} AND {rows}
)
{part(columns, from_where, "t.site_id")}"""


def _tail_events(
    sites: Sequence[int], bounds: Bounds, params: Params
) -> tuple[str, tuple[str, str, str]]:
    """The condition on the tail's events `e`, and the placeholders of the sites, the
    day's start and until."""
    start, end, until = (params.add(moment) for moment in bounds)
    site_ids = params.add(list(sites), cast="::integer[]")
    where = f"e.site_id = ANY({site_ids}) AND e.received_at >= {until} AND e.received_at < {end}"
    return where, (site_ids, start, until)


def event_tail(shape: Shape, sites: Sequence[int], bounds: Bounds, tz: str, params: Params) -> str:
    """The tail's part of a breakdown by page, event or prop."""
    dimension = shape.dimension
    assert dimension in EVENT_DIMENSIONS
    where, window = _tail_events(sites, bounds, params)
    value = with_prop_key(EVENT_COLUMNS[dimension], shape.prop_key, params)
    rows = with_prop_key(EVENT_ROWS[dimension], shape.prop_key, params)
    grouped = f"""
    SELECT e.site_id, e.visitor_id, e.session_id, {value} AS value,
           {local_key("e.received_at", tz, False)} AS k,
           count(*) FILTER (WHERE {EVENT_ROWS["page"]}) AS pageviews, count(*) AS events
    FROM events e
    WHERE {where} AND {rows} AND {value} IS NOT NULL
    GROUP BY 1, 2, 3, 4, 5"""
    pe_value = with_prop_key(_on(EVENT_COLUMNS[dimension], "pe"), shape.prop_key, params)
    pe_rows = with_prop_key(_on(EVENT_ROWS[dimension], "pe"), shape.prop_key, params)
    return _tail(grouped, pe_value, "", f"{pe_rows} AND {pe_value} IS NOT NULL", window)


def goal_tail(
    sites: Sequence[int], bounds: Bounds, tz: str, params: Params, goals: Sequence[Goal]
) -> str:
    """The tail's part of a breakdown by goal, for goals of one custom event or one page
    (stats/goal_parts.py, rolled_up): the tail's completions, each goal's value its
    name, matched in the prefix by what completes it."""
    assert not any(g.kind == "page" and has_wildcard(g.definition) for g in goals)
    where, window = _tail_events(sites, bounds, params)
    names = params.add([g.display_name for g in goals], cast="::text[]")
    kinds = params.add([g.kind for g in goals], cast="::text[]")
    targets = params.add([g.definition for g in goals], cast="::text[]")

    def completed(e: str) -> str:  # the goals an event `e` completes
        return f"""
    JOIN unnest({names}, {kinds}, {targets}) AS g (name, kind, target)
      ON (g.kind = 'event' AND {_on(EVENT_ROWS["event"], e)} AND {e}.name = g.target)
      OR (g.kind = 'page' AND {_on(EVENT_ROWS["page"], e)} AND {e}.path = g.target)"""

    grouped = f"""
    SELECT e.site_id, e.visitor_id, e.session_id, g.name AS value,
           {local_key("e.received_at", tz, False)} AS k,
           count(*) FILTER (WHERE {EVENT_ROWS["page"]}) AS pageviews, count(*) AS events
    FROM events e{completed("e")}
    WHERE {where} AND {COUNTED_EVENT}
    GROUP BY 1, 2, 3, 4, 5"""
    return _tail(grouped, "g.name", completed("pe"), _on(COUNTED_EVENT, "pe"), window)
