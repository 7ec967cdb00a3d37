"""The SQL of `picolytics report`: read-only queries over the reporting views.

Every query reads the row views (`visits`, `pageviews`, `bot_traffic` of migration
0002, `custom_events` of 0004) with the same expressions as the sample Grafana
dashboard's panels, so the report and the dashboard agree on the same data and range.
Filters are on the views' `time` (visit start, event receipt) and the site's domain,
which the planner turns into a range scan of `sessions_site_started` for visits, and
for events into partition pruning plus a scan by site.
"""

from __future__ import annotations

# `sites` comes with migration 0001; the views the report reads with 0002 and 0004.
SCHEMA_STATE = """
SELECT to_regclass('sites') IS NOT NULL,
       to_regclass('visits') IS NOT NULL AND to_regclass('custom_events') IS NOT NULL
"""
SELECT_SITES = "SELECT domain FROM sites ORDER BY site_id"

# The same WHERE clause everywhere: the row views' time within the period, the sites.
_PERIOD = "time >= %(start)s AND time < %(end)s AND site = ANY(%(sites)s)"

# Visitors are distinct per site, like the dashboard's count(DISTINCT (site_id,
# visitor_id)), but counted as count(DISTINCT visitor_id) per site and summed: the
# same number, 3 to 4 times faster on large tables than comparing row values.
SUMMARY = f"""
SELECT coalesce(sum(visitors), 0)::bigint AS visitors,
       coalesce(sum(visits), 0)::bigint AS visits,
       coalesce(sum(bounces), 0)::bigint AS bounces,
       round(100.0 * sum(bounces) / nullif(sum(visits), 0), 1) AS bounce_rate,
       round(sum(duration_s)::numeric / nullif(sum(visits), 0), 1) AS visit_duration_s,
       round(sum(pageviews)::numeric / nullif(sum(visits), 0), 2) AS pages_per_visit
FROM (SELECT site_id, count(DISTINCT visitor_id) AS visitors, count(*) AS visits,
             count(*) FILTER (WHERE bounce) AS bounces, sum(duration_s) AS duration_s,
             sum(pageviews) AS pageviews
      FROM visits
      WHERE {_PERIOD}
      GROUP BY site_id) per_site
"""
PAGEVIEWS_PER_DAY = f"""
SELECT (time AT TIME ZONE 'UTC')::date AS day, count(*) AS pageviews
FROM pageviews
WHERE {_PERIOD}
GROUP BY 1
"""
VISITS_PER_DAY = f"""
SELECT day, sum(visits)::bigint AS visits, sum(visitors)::bigint AS visitors
FROM (SELECT site_id, (time AT TIME ZONE 'UTC')::date AS day, count(*) AS visits,
             count(DISTINCT visitor_id) AS visitors
      FROM visits
      WHERE {_PERIOD}
      GROUP BY 1, 2) per_site
GROUP BY day
"""


def _counted_with_visitors(view: str, column: str, counted: str) -> str:
    """Rows of a row view per value of one column, and their visitors, most first.

    Visitors are distinct per site and summed, as in SUMMARY."""
    return f"""
SELECT {column}, sum({counted})::bigint AS {counted}, sum(visitors)::bigint AS visitors
FROM (SELECT site_id, {column}, count(*) AS {counted}, count(DISTINCT visitor_id) AS visitors
      FROM {view}
      WHERE {_PERIOD}
      GROUP BY site_id, {column}) per_site
GROUP BY {column}
ORDER BY {counted} DESC, {column}
LIMIT %(limit)s
"""


TOP_PAGES = _counted_with_visitors("pageviews", "path", "pageviews")
SOURCES = _counted_with_visitors("visits", "source", "visits")
CUSTOM_EVENTS = _counted_with_visitors("custom_events", "name", "events")


def _visits_by(column: str, where: str = "") -> str:
    """Visits per value of one column of `visits`, most first (as the dashboard)."""
    return f"""
SELECT {column}, count(*) AS visits
FROM visits
WHERE {_PERIOD}{where}
GROUP BY {column}
ORDER BY visits DESC, {column}
LIMIT %(limit)s
"""


COUNTRIES = _visits_by("country", " AND country <> ''")  # as the dashboard: known only
BROWSERS = _visits_by("browser")
OPERATING_SYSTEMS = _visits_by("os")
DEVICES = _visits_by("device_type")
CAMPAIGNS = f"""
SELECT utm_source, utm_medium, utm_campaign, sum(visits)::bigint AS visits,
       sum(visitors)::bigint AS visitors, sum(pageviews)::bigint AS pageviews
FROM (SELECT site_id, utm_source, utm_medium, utm_campaign, count(*) AS visits,
             count(DISTINCT visitor_id) AS visitors, sum(pageviews) AS pageviews
      FROM visits
      WHERE {_PERIOD} AND utm_campaign <> ''
      GROUP BY 1, 2, 3, 4) per_site
GROUP BY utm_source, utm_medium, utm_campaign
ORDER BY visits DESC, utm_campaign, utm_source, utm_medium
LIMIT %(limit)s
"""
BOTS = """
SELECT reason, sum(hits)::bigint AS hits
FROM bot_traffic
WHERE day >= %(first)s AND day <= %(last)s AND site = ANY(%(sites)s)
GROUP BY reason
ORDER BY hits DESC, reason
"""

# (name, query): the tables of a report, in order; their columns come from the query.
TABLE_QUERIES: tuple[tuple[str, str], ...] = (
    ("pages", TOP_PAGES),
    ("sources", SOURCES),
    ("countries", COUNTRIES),
    ("browsers", BROWSERS),
    ("operating_systems", OPERATING_SYSTEMS),
    ("devices", DEVICES),
    ("campaigns", CAMPAIGNS),
    ("custom_events", CUSTOM_EVENTS),
    ("bots", BOTS),
)
