"""Which days imported history may cover, said once in SQL (docs/imports.md).

Imported data covers only the days before a site's first native day: the local day,
in the site's zone, of its oldest raw event, or its oldest rolled-up day, whichever is
earlier (rollups outlive pruned raw rows). A site without native data has none, and
imported days stop only at its local today, which is never imported either (it is
still being counted). The store (imports/store.py) drops imported rows on or after
the cut; the query layer (stats/) applies the same rule when it reads them, so a site
that starts collecting before an import's last day never counts a day twice.

The rule is also a site's first local day of stats (the Stats API's earliest date).
Every statement names the site by its id (%(site)s) in its subqueries, not through
`sites s`: Citus refuses subqueries correlated to its reference table sites, and
routes these to the site's shard. The Grafana views (sql/0015, sql/0017) say the same
rule in SQL of their own.
"""

from __future__ import annotations

from typing import Final

# The site's first native day, or NULL when it has no native data; over `sites s`,
# the site. Both reads use an index: events (site_id, received_at), rollup_days'
# primary key (site_id, day).
_FIRST_NATIVE_DAY: Final = """least(
    (SELECT (e.received_at AT TIME ZONE s.timezone)::date FROM events e
     WHERE e.site_id = %(site)s ORDER BY e.received_at LIMIT 1),
    (SELECT d.day FROM rollup_days d WHERE d.site_id = %(site)s ORDER BY d.day LIMIT 1)
)"""

SELECT_FIRST_NATIVE_DAY: Final = (
    f"SELECT {_FIRST_NATIVE_DAY} FROM sites s WHERE s.site_id = %(site)s"
)

# The first native day and the site's local today, where imported days end at the
# latest: imported days are those before both.
SELECT_CUT: Final = f"""
SELECT {_FIRST_NATIVE_DAY} AS first_native_day,
       (now() AT TIME ZONE s.timezone)::date AS today
FROM sites s WHERE s.site_id = %(site)s
"""

# Every import of every site, for `picolytics site list`: what it is and the days it
# owns now (an import that a later one partly replaced owns fewer than it brought).
LIST_IMPORTS: Final = """
SELECT s.domain, i.import_id, i.source, i.file_name, i.imported_at,
       min(d.day) AS first_day, max(d.day) AS last_day, count(d.day) AS days
FROM imports i
JOIN sites s USING (site_id)
LEFT JOIN imported_days d ON d.site_id = i.site_id AND d.import_id = i.import_id
GROUP BY i.site_id, i.import_id, s.domain
ORDER BY i.site_id, min(d.day), i.import_id
"""
