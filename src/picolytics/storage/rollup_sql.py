"""The statements of `roll_day` (storage/rollup.py): one site's local day, recomputed
from raw rows into rollup_visits, rollup_events and rollup_hours (sql/0006_read_model.sql).

What each row holds is defined in docs/read-model.md. The value and parent expressions
come from dimensions.py, so the rollups and the query layer's raw path (stats/raw.py)
read a dimension the same way; only those expressions and the dimension names are put
into the text, every value is a parameter: %(site_id)s, %(day)s and %(timezone)s.

Each table is filled by one pass over the day's rows that unpivots every row into one
row per dimension (LATERAL), then one GROUP BY. GROUPING SETS would read the rows once
too, but count(DISTINCT) makes PostgreSQL sort once per set anyway, the event
dimensions group different rows (pageviews by path, custom events by name and by
property), and each set would need its name and parent back from GROUPING(); the
unpivot says the same thing in plain rows.
"""

from __future__ import annotations

from typing import Final

from picolytics.dimensions import (
    EVENT_COLUMNS,
    EVENT_ROWS,
    PARENT_OF,
    VISIT_COLUMNS,
    VISIT_DIMENSIONS,
)

# The local day [day 00:00, day + 1 00:00) as instants. Where a zone skips midnight,
# PostgreSQL reads 00:00 with the offset before the change, which is the day's first
# instant: the days of a zone tile time without gaps or overlaps.
DAY_START: Final = "(%(day)s::date::timestamp AT TIME ZONE %(timezone)s)"
DAY_END: Final = "((%(day)s::date + 1)::timestamp AT TIME ZONE %(timezone)s)"

VISITS_OF_DAY = f"""s.site_id = %(site_id)s AND s.pageviews > 0
  AND s.started_at >= {DAY_START} AND s.started_at < {DAY_END}"""
EVENTS_OF_DAY = f"""e.site_id = %(site_id)s
  AND e.received_at >= {DAY_START} AND e.received_at < {DAY_END}"""
# The event grain: pageviews and custom events (docs/read-model.md).
COUNTED = f"({EVENT_ROWS['page']} OR {EVENT_ROWS['event']})"

# Two roll_day calls for the same site and day wait for each other, so concurrent
# rollers replace the day's rows one after the other, never both at once (the pair of
# int4 keys is a lock space of its own, apart from the one-key locks of other tasks).
LOCK_DAY: Final = "SELECT pg_advisory_xact_lock(%(site_id)s, %(day)s::date - DATE '2000-01-01')"

CLEAR_STALE: Final = "DELETE FROM rollup_stale WHERE site_id = %(site_id)s AND day = %(day)s"
DELETE_VISITS: Final = "DELETE FROM rollup_visits WHERE site_id = %(site_id)s AND day = %(day)s"
DELETE_EVENTS: Final = "DELETE FROM rollup_events WHERE site_id = %(site_id)s AND day = %(day)s"
DELETE_HOURS: Final = """
DELETE FROM rollup_hours
WHERE site_id = %(site_id)s AND hour >= %(day)s::date AND hour < %(day)s::date + 1
"""


# The report's campaigns (sql/0012_campaign_rollups.sql): source and medium in the parent.
CAMPAIGN_SEPARATOR: Final = "\x1f"
_CAMPAIGN_ROW: Final = "('campaign', s.utm_source || chr(31) || s.utm_medium, s.utm_campaign)"


def _visit_values() -> str:
    """One (dimension, parent, value) row per visit dimension, '' for the total, and
    the campaign."""
    rows = ["('', '', '')", _CAMPAIGN_ROW]
    for dimension in VISIT_DIMENSIONS:
        parent = PARENT_OF.get(dimension)
        parent_sql = VISIT_COLUMNS[parent] if parent else "''"
        rows.append(f"('{dimension}', {parent_sql}, {VISIT_COLUMNS[dimension]})")
    return ",\n           ".join(rows)


def roll_visits(visits: str) -> str:
    """The INSERT of rollup_visits rows over the visits `s` the condition `visits` keeps."""
    return f"""
INSERT INTO rollup_visits (site_id, day, dimension, parent, value,
                           visitors, visits, bounces, duration_s, pageviews)
SELECT %(site_id)s, %(day)s, d.dimension, d.parent, d.value,
       count(DISTINCT s.visitor_id), count(*), count(*) FILTER (WHERE s.bounce),
       sum(s.duration_s), sum(s.pageviews)
FROM sessions s
CROSS JOIN LATERAL (
    VALUES {_visit_values()}
) AS d (dimension, parent, value)
WHERE {visits}
GROUP BY d.dimension, d.parent, d.value
"""


ROLL_VISITS: Final = roll_visits(VISITS_OF_DAY)


# 'prop' rows: every key and value of a custom event's props, objects only
# (jsonb_each_text raises on anything else); a JSON null has no text and no row.
def roll_events(events: str) -> str:
    """The INSERT of rollup_events rows over the events `e` the condition `events` keeps."""
    return f"""
INSERT INTO rollup_events (site_id, day, dimension, parent, value,
                           visitors, visits, pageviews, events)
SELECT %(site_id)s, %(day)s, d.dimension, d.parent, d.value,
       count(DISTINCT e.visitor_id), count(DISTINCT e.session_id),
       count(*) FILTER (WHERE {EVENT_ROWS["page"]}), count(*)
FROM events e
CROSS JOIN LATERAL (
    SELECT '', '', '' WHERE {COUNTED}
    UNION ALL
    SELECT 'page', '', e.path WHERE {EVENT_ROWS["page"]}
    UNION ALL
    SELECT 'event', '', e.name WHERE {EVENT_ROWS["event"]}
    UNION ALL
    SELECT 'hostname', '', {EVENT_COLUMNS["hostname"]} WHERE {EVENT_ROWS["hostname"]}
    UNION ALL
    SELECT 'prop', p.key, p.value
    FROM jsonb_each_text(CASE WHEN jsonb_typeof(e.props) = 'object' THEN e.props END) AS p
    WHERE {EVENT_ROWS["event"]} AND p.value IS NOT NULL
) AS d (dimension, parent, value)
WHERE {events}
GROUP BY d.dimension, d.parent, d.value
"""


ROLL_EVENTS: Final = roll_events(EVENTS_OF_DAY)


# Local wall-clock hours: when clocks go back, the repeated hour is one row.
def roll_hours(visits: str, events: str) -> str:
    """The INSERT of rollup_hours rows over the visits and events the conditions keep."""
    return f"""
INSERT INTO rollup_hours (site_id, hour, visitors, visits, bounces, duration_s,
                          session_pageviews, pageviews, events)
SELECT %(site_id)s, hour, coalesce(v.visitors, 0), coalesce(v.visits, 0),
       coalesce(v.bounces, 0), coalesce(v.duration_s, 0), coalesce(v.session_pageviews, 0),
       coalesce(ev.pageviews, 0), coalesce(ev.events, 0)
FROM (SELECT date_trunc('hour', s.started_at AT TIME ZONE %(timezone)s) AS hour,
             count(DISTINCT s.visitor_id) AS visitors, count(*) AS visits,
             count(*) FILTER (WHERE s.bounce) AS bounces, sum(s.duration_s) AS duration_s,
             sum(s.pageviews) AS session_pageviews
      FROM sessions s
      WHERE {visits}
      GROUP BY 1) v
FULL JOIN (SELECT date_trunc('hour', e.received_at AT TIME ZONE %(timezone)s) AS hour,
                  count(*) FILTER (WHERE {EVENT_ROWS["page"]}) AS pageviews,
                  count(*) AS events
           FROM events e
           WHERE {events} AND {COUNTED}
           GROUP BY 1) ev USING (hour)
"""


ROLL_HOURS: Final = roll_hours(VISITS_OF_DAY, EVENTS_OF_DAY)

# A day rolled whole has no prefix any more (storage/rollup_prefix.py).
DROP_PREFIX: Final = "DELETE FROM rollup_prefix WHERE site_id = %(site_id)s AND day = %(day)s"

MARK_ROLLED: Final = """
INSERT INTO rollup_days (site_id, day, timezone, rolled_at, campaigns)
VALUES (%(site_id)s, %(day)s, %(timezone)s, now(), true)
ON CONFLICT (site_id, day) DO UPDATE SET timezone = EXCLUDED.timezone,
                                         rolled_at = EXCLUDED.rolled_at,
                                         campaigns = true
"""

# In this order, in one transaction: the mark goes first, so a late write that marks
# the day again after this transaction read the raw rows leaves its mark behind.
ROLL_DAY: Final = (
    LOCK_DAY,
    CLEAR_STALE,
    DELETE_VISITS,
    DELETE_EVENTS,
    DELETE_HOURS,
    ROLL_VISITS,
    ROLL_EVENTS,
    ROLL_HOURS,
    DROP_PREFIX,
    MARK_ROLLED,
)
# The segment rollups' statements follow (storage/rollup_segments_sql.py).
