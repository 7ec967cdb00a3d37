"""The report's questions that a `Query` cannot ask (yet), answered here so that no SQL
of statistics is assembled outside stats/:

- **campaigns**, visits grouped by utm_source, utm_medium and utm_campaign at once
  (a `Query` has one breakdown): the rolled days from their campaign rows
  (sql/0012_campaign_rollups.sql), the rest from raw visits, visitors summed over
  local days like every visitor count (docs/read-model.md, What the numbers mean);
- **bot hits** by reason, from `bot_counts`, which counts per UTC day: the hits of the
  UTC days that carry the period's local dates.

Both run in one snapshot whose statements time out after `timeout_s`, as the
engine's queries do (stats/engine.py, snapshot).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from psycopg import AsyncConnection, errors
from psycopg.rows import tuple_row

from picolytics.errors import QueryError, QueryTimeoutError
from picolytics.stats.engine import snapshot
from picolytics.stats.periods import local_days
from picolytics.stats.query import Period, Query
from picolytics.stats.rollups import split_period
from picolytics.stats.shape import shape_of
from picolytics.stats.sql import Params, in_ranges
from picolytics.stats.validate import validate

Connection = AsyncConnection[Any]


# Visits (sessions with a pageview) of the period per campaign, distinct visitors per
# site and local day, summed: the rolled days from their campaign rows, the rest from
# raw visits; the order of the dashboard's Campaigns panel, text by code point as the
# engine sorts.
CAMPAIGNS: Final = """
SELECT utm_source, utm_medium, utm_campaign, sum(visits)::bigint AS visits,
       sum(visitors)::bigint AS visitors, sum(pageviews)::bigint AS pageviews
FROM (SELECT split_part(r.parent, chr(31), 1) AS utm_source,
             split_part(r.parent, chr(31), 2) AS utm_medium, r.value AS utm_campaign,
             r.visits, r.visitors, r.pageviews
      FROM rollup_visits r
      JOIN unnest(%(rolled_sites)s::integer[], %(rolled_days)s::date[]) AS u (site_id, day)
        ON r.site_id = u.site_id AND r.day = u.day
      WHERE r.dimension = 'campaign' AND r.value <> ''
      UNION ALL
      SELECT s.utm_source, s.utm_medium, s.utm_campaign, count(*),
             count(DISTINCT s.visitor_id), sum(s.pageviews)
      FROM sessions s
      WHERE {raw_ranges} AND s.pageviews > 0 AND s.utm_campaign <> ''
      GROUP BY s.site_id, (s.started_at AT TIME ZONE %(tz)s::text)::date,
               s.utm_source, s.utm_medium, s.utm_campaign) per_site_day
GROUP BY utm_source, utm_medium, utm_campaign
ORDER BY visits DESC, utm_campaign COLLATE "C", utm_source COLLATE "C",
         utm_medium COLLATE "C"
LIMIT %(limit)s::bigint
"""
BOT_HITS: Final = """
SELECT reason, sum(hits)::bigint AS hits
FROM bot_counts
WHERE site_id = ANY(%(sites)s::integer[]) AND day >= %(first)s AND day <= %(last)s
GROUP BY reason
ORDER BY hits DESC, reason COLLATE "C"
"""


@dataclass(frozen=True, slots=True)
class Campaign:
    utm_source: str
    utm_medium: str
    utm_campaign: str
    visits: int
    visitors: int
    pageviews: int  # of those visits


@dataclass(frozen=True, slots=True)
class Extras:
    campaigns: tuple[Campaign, ...]  # most visits first, at most `limit`
    bot_hits: tuple[tuple[str, int], ...]  # (reason, hits), most first


async def extras(
    connection: Connection,
    site_ids: tuple[int, ...],
    period: Period,
    *,
    limit: int | None = None,
    timeout_s: float = 10.0,
) -> Extras:
    """Campaigns (`limit` rows, None: all) and bot hits of the sites over the
    period, in a snapshot of their own or in the caller's open transaction."""
    # The period, the sites and the zone are checked as for any query.
    query = Query(site_ids=site_ids, period=period, metrics=("visits", "bounce_rate"))
    validate(query)
    if limit is not None and limit < 0:
        raise QueryError("limit", f"{limit} is below 0")
    days = local_days(period)
    try:
        async with snapshot(connection, timeout_s):
            cursor = connection.cursor(row_factory=tuple_row)
            sites = sorted(set(site_ids))
            split = await split_period(connection, query, shape_of(query), campaigns=True)
            params = Params()
            raw = (
                in_ranges("s.site_id", "s.started_at", split.raw, params) if split.raw else "false"
            )
            params.values |= {
                "tz": period.timezone,
                "rolled_sites": [site for site, _ in split.rolled],
                "rolled_days": [day for _, day in split.rolled],
                "limit": limit,
            }
            await cursor.execute(CAMPAIGNS.format(raw_ranges=raw), params.values)
            campaigns = tuple(Campaign(*row) for row in await cursor.fetchall())
            await cursor.execute(BOT_HITS, {"sites": sites, "first": days[0], "last": days[-1]})
            bots = tuple((str(reason), int(hits)) for reason, hits in await cursor.fetchall())
    except errors.QueryCanceled as error:
        raise QueryTimeoutError(
            f"the query ran past its timeout of {timeout_s:g} s and was cancelled"
        ) from error
    return Extras(campaigns, bots)
