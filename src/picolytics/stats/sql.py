"""SQL building blocks the raw path and the rollup path share: named parameters, the
columns every part of a query yields, local days and hours, and time ranges.

Statements are assembled from fixed text, expressions of dimensions.py and
placeholders; every value a caller gives travels as a parameter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from picolytics.dimensions import EVENT_ROWS

# The columns of every part (raw or rollup, visit or event grain), in this order: the
# day or hour `k`, the breakdown's parent and value, then sums that add up over days.
# Each part yields 0 for the components its grain does not have.
COMPONENTS: Final = (
    "visitors",
    "visits",
    "bounces",
    "duration_s",
    "session_pageviews",
    "pageviews",
    "events",
)
PART_COLUMNS: Final = ("k", "parent", "value", *COMPONENTS)

# The rows of the event grain: pageviews and custom events.
COUNTED_EVENT: Final = f"({EVENT_ROWS['page']} OR {EVENT_ROWS['event']})"
_PROP_KEY: Final = "%(prop_key)s"


@dataclass(slots=True)
class Params:
    """The named parameters of one statement; `add` returns the placeholder of a value."""

    values: dict[str, object] = field(default_factory=dict)

    def add(self, value: object, *, cast: str = "") -> str:
        name = f"p{len(self.values)}"
        self.values[name] = value
        return f"%({name})s{cast}"


def with_prop_key(expression: str, key: str | None, params: Params) -> str:
    """An expression of dimensions.py that reads a property (EVENT_COLUMNS["prop"],
    EVENT_ROWS["prop"]) with `key` as its own parameter."""
    if _PROP_KEY not in expression:
        return expression
    return expression.replace(_PROP_KEY, params.add(key, cast="::text"))


def part(columns: dict[str, str], from_where: str, group_site: str | None = None) -> str:
    """SELECT the part columns (missing components are 0) FROM/WHERE `from_where`:
    raw rows grouped per site (the column `group_site`) and k/parent/value, since
    distinct ids are counted per site and day; rollup rows as they are."""
    select = ",\n       ".join(
        f"{columns.get(name, '0::bigint')} AS {name}" for name in PART_COLUMNS
    )
    grouping = f"\nGROUP BY {group_site}, 1, 2, 3" if group_site else ""
    return f"SELECT {select}\n{from_where}{grouping}"


def local_key(column: str, tz: str, hourly: bool) -> str:
    """The local day (a date) or local wall-clock hour (a timestamp) of an instant."""
    local = f"({column} AT TIME ZONE {tz})"
    return f"date_trunc('hour', {local})" if hourly else f"{local}::date"


@dataclass(frozen=True, slots=True)
class Range:
    """[start, end) of some sites, read from raw rows."""

    site_ids: tuple[int, ...]
    start: datetime
    end: datetime


def in_ranges(site_column: str, time_column: str, ranges: Sequence[Range], params: Params) -> str:
    """Rows of the ranges' sites within their times: one plain condition per range,
    so the planner uses the (site, time) indexes and prunes event partitions."""
    conditions = [
        f"({site_column} = ANY({params.add(list(r.site_ids), cast='::integer[]')})"
        f" AND {time_column} >= {params.add(r.start)} AND {time_column} < {params.add(r.end)})"
        for r in ranges
    ]
    return "(" + "\n     OR ".join(conditions) + ")"
