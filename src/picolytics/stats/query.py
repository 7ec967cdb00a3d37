"""The typed question the query layer answers, and the shape of its answer.

Callers (report, Stats API, dashboard) build a `Query`; nothing outside stats/
assembles statistics SQL. What each metric, dimension and filter means is defined in
docs/read-model.md; `stats/validate.py` checks a query before any SQL runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Final, Literal, get_args

from picolytics.dimensions import Dimension, Metric

Interval = Literal["hour", "day", "week", "month"]
INTERVALS: Final[tuple[Interval, ...]] = get_args(Interval)

Operator = Literal["is", "is_not", "contains", "contains_not", "matches", "matches_not"]
OPERATORS: Final[tuple[Operator, ...]] = get_args(Operator)

Direction = Literal["asc", "desc"]

MAX_LIMIT: Final = 10_000
MAX_PERIOD_DAYS: Final = 3660  # ten years and a little


@dataclass(frozen=True, slots=True)
class Condition:
    """`dimension operator values`: is/contains/matches any of the values, is_not/
    contains_not/matches_not none of them. `prop_key` names the property of "prop"."""

    dimension: Dimension
    operator: Operator
    values: tuple[str, ...]
    prop_key: str | None = None
    case_sensitive: bool = True


@dataclass(frozen=True, slots=True)
class And:
    filters: tuple[Filter, ...]


@dataclass(frozen=True, slots=True)
class Or:
    filters: tuple[Filter, ...]


@dataclass(frozen=True, slots=True)
class Not:
    filter: Filter


@dataclass(frozen=True, slots=True)
class HasDone:
    """A behavioral filter: the visits in which some pageview or custom event matches
    `filter` (a filter on event dimensions only), or, `negated` (has_not_done), none.
    On the event grain an event passes when its visit does (docs/read-model.md)."""

    filter: Filter
    negated: bool = False


Filter = Condition | And | Or | Not | HasDone


@dataclass(frozen=True, slots=True)
class Breakdown:
    """Group by one dimension; "prop" needs the property's key. `then`, a second
    dimension (itself without `then`), groups each value further: its value is the
    rows' `parent` (docs/read-model.md, Breakdowns by two dimensions)."""

    dimension: Dimension
    prop_key: str | None = None
    then: Breakdown | None = None


@dataclass(frozen=True, slots=True)
class Period:
    """[start, end): aware datetimes; days and buckets are counted in `timezone`."""

    start: datetime
    end: datetime
    timezone: str = "UTC"


@dataclass(frozen=True, slots=True)
class Query:
    """One question: metrics of some sites over a period, optionally per time bucket
    (`interval`) and/or per value of one dimension (`breakdown`), filtered.

    Rows are ordered by `order_by` (metric names, "value", "then" for the breakdown's
    second dimension, or "time"), by default by time, then by the first metric
    descending and the value ascending; `limit` and
    `offset` apply to the rows of a breakdown, and Result.total_rows counts them all.
    """

    site_ids: tuple[int, ...]
    period: Period
    metrics: tuple[Metric, ...]
    interval: Interval | None = None
    breakdown: Breakdown | None = None
    filters: Filter | None = None
    order_by: tuple[tuple[str, Direction], ...] = ()
    limit: int | None = None
    offset: int = 0
    # Add imported history (docs/imports.md) on the days it covers, where the query
    # can be answered from it; Result.imports says whether it was.
    include_imports: bool = False


MetricValue = int | float | None


@dataclass(frozen=True, slots=True)
class Row:
    """One answer row: its time bucket (local date, or local datetime for hours), its
    breakdown value (with the parent value, "" when the dimension has none), and the
    metrics asked for. Rates are None when there is nothing to divide by."""

    time: date | datetime | None
    parent: str
    value: str | None
    metrics: dict[Metric, MetricValue] = field(default_factory=dict)


Path = Literal["rollup", "raw", "mixed"]

# Why imported data was left out of an answer that asked for it (Plausible's
# `imports_skip_reason` values).
ImportsSkipReason = Literal[
    "no_imported_data", "out_of_range", "unsupported_query", "unsupported_interval"
]


@dataclass(frozen=True, slots=True)
class ImportsNote:
    """Whether a query that asked for imported data (Query.include_imports) got it."""

    included: bool
    skip_reason: ImportsSkipReason | None = None


@dataclass(frozen=True, slots=True)
class Result:
    rows: tuple[Row, ...]
    total_rows: int
    # How it was answered: all from rollups, all from raw rows, or both (tests, bench).
    path: Path
    imports: ImportsNote | None = None  # None: the query did not ask for imports
