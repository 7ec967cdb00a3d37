"""The SQL of imported data in a query (docs/imports.md, How imported data is counted):
which imported days a query may read, and the imported rows as parts of the query
(stats/sql.py, PART_COLUMNS), added to the native parts by stats/assemble.py.

An imported day is a date in the zone its export was made in; the query layer reads
it as a local date of the query's zone, and only when that whole local day lies in
the period. A day is read only before the site's first native day, so a day with
native data never counts its imported rows too, and only the rows of the import that
owns the day (imported_days), so a day imported twice counts once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Final

from picolytics.stats.filters import operator_sql
from picolytics.stats.goals import has_wildcard, page_regex
from picolytics.stats.imported_plan import COMPONENTS, Read, column
from picolytics.stats.query import And, Condition, Filter, HasDone, Not, Or, Query
from picolytics.stats.sql import Params, part
from picolytics.storage.goals import Goal

# The (site, day, owning import) of every imported day the query may read: a whole
# local day of the period, before the site's first native day (%(first_days)s, in the
# order of %(sites)s; NULL: none).
USABLE_DAYS: Final = """
SELECT d.site_id, d.day, d.import_id
FROM imported_days d
JOIN unnest(%(sites)s::integer[], %(first_days)s::date[]) AS native (site_id, first_day)
  ON native.site_id = d.site_id
WHERE d.day >= (%(start)s::timestamptz AT TIME ZONE %(tz)s)::date
  AND d.day <= (%(end)s::timestamptz AT TIME ZONE %(tz)s)::date
  AND d.day::timestamp AT TIME ZONE %(tz)s >= %(start)s::timestamptz
  AND (d.day + 1)::timestamp AT TIME ZONE %(tz)s <= %(end)s::timestamptz
  AND (native.first_day IS NULL OR d.day < native.first_day)
ORDER BY d.site_id, d.day
"""

# The sites of a query that have any imported day at all.
SITES_WITH_IMPORTS: Final = (
    "SELECT DISTINCT site_id FROM imported_days WHERE site_id = ANY(%(sites)s::integer[])"
)

UsableDay = tuple[int, date, int]


def usable_days(days: Sequence[UsableDay], params: Params) -> str:
    """The usable days as a relation `u (site_id, day, import_id)` to join on."""
    sites = params.add([d[0] for d in days], cast="::integer[]")
    dates = params.add([d[1] for d in days], cast="::date[]")
    imports = params.add([d[2] for d in days], cast="::integer[]")
    return f"unnest({sites}, {dates}, {imports}) AS u (site_id, day, import_id)"


_ON_DAYS: Final = "ON r.site_id = u.site_id AND r.day = u.day AND r.import_id = u.import_id"


def filter_sql(filter_: Filter, params: Params) -> str:
    """A filter on imported rows `r` of one table (stats/imported_plan.py checks that
    every condition has a column there). A property holds only where the row has it."""
    if isinstance(filter_, Condition):
        target = column(filter_.dimension, filter_.prop_key)
        assert target is not None
        test = operator_sql(filter_, target, params)
        return f"({target} <> '' AND {test})" if filter_.dimension == "prop" else test
    if isinstance(filter_, Not):
        return f"(NOT {filter_sql(filter_.filter, params)})"
    assert not isinstance(filter_, HasDone)  # the plan leaves behavioral filters out
    assert isinstance(filter_, And | Or)
    if not filter_.filters:  # from resolving goals: none
        return "true" if isinstance(filter_, And) else "false"
    joiner = " AND " if isinstance(filter_, And) else " OR "
    return "(" + joiner.join(filter_sql(inner, params) for inner in filter_.filters) + ")"


def read_part(query: Query, read: Read, days: str, params: Params) -> str:
    """One imported table as a part: its rows on the usable days, with the filter."""
    held = COMPONENTS[read.table]
    sums = {name: sql for name, sql in held.items() if not read.only or name in read.only}
    columns = {"k": "r.day", "parent": read.parent, "value": read.value or "NULL::text"}
    conditions = []
    if query.filters is not None:
        conditions.append(filter_sql(query.filters, params))
    breakdown = query.breakdown
    if breakdown is not None and breakdown.dimension == "prop":
        conditions.append(f"{read.value} <> ''")  # the events that have the property
    where = f"\nWHERE {' AND '.join(conditions)}" if conditions else ""
    return part(columns | sums, f"FROM {read.table} r\nJOIN {days} {_ON_DAYS}{where}")


def goal_parts(goals: Sequence[Goal], days: str, params: Params) -> list[str]:
    """A breakdown by goal: event goals from imported custom events of their name, page
    goals from imported pages of their path or pattern (stats/goals.py). A pattern's
    visitors are summed over the pages it matches: the format cannot tell them apart."""
    names = params.add([g.display_name for g in goals], cast="::text[]")
    events = params.add(
        [g.definition if g.kind == "event" else None for g in goals], cast="::text[]"
    )
    paths = params.add(
        [g.definition if g.kind == "page" and not has_wildcard(g.definition) else None
         for g in goals],
        cast="::text[]",
    )  # fmt: skip
    regexes = params.add(
        [page_regex(g.definition) if g.kind == "page" and has_wildcard(g.definition) else None
         for g in goals],
        cast="::text[]",
    )  # fmt: skip
    key = {"k": "r.day", "parent": "''", "value": "g.name"}
    custom = part(
        key | COMPONENTS["imported_custom_events"],
        f"""FROM unnest({names}, {events}) AS g (name, event_name)
JOIN imported_custom_events r ON r.name = g.event_name
JOIN {days} {_ON_DAYS}""",
    )
    pages = part(
        key | COMPONENTS["imported_pages"],
        f"""FROM unnest({names}, {paths}, {regexes}) AS g (name, path, regex)
JOIN imported_pages r ON (r.page = g.path OR r.page ~ g.regex)
JOIN {days} {_ON_DAYS}""",
    )
    return [custom, pages]
