"""Plausible's `event:name` with its `"pageview"`, over the query layer's `event`
dimension, which holds custom events only (docs/read-model.md), for v1 and v2 alike.

In Plausible every event has a name, a pageview's being `"pageview"`. Here:

- **filters**: a condition on `event:name` is the condition on custom events, or-ed
  with "is a pageview" (`PAGEVIEW`: a pageview is the one event with a page) when the
  name `"pageview"` passes it: `is pageview` is the pageviews, `is_not Signup` the
  pageviews and the other custom events, `contains view` the pageviews and the custom
  events whose names contain `view`. Whether `"pageview"` passes is decided here, for
  `is` and `contains` as PostgreSQL compares (case folding of ASCII letters only),
  for a v1 wildcard exactly, and for a v2 regular expression only when it is written
  in the syntax PostgreSQL and Python read alike (`decidable`); otherwise the caller
  refuses that condition, as not supported yet.
- **breakdowns**: the `pageview` row is a second question (`pageview_question`): the
  same one without the breakdown, restricted to pageviews; `merged` puts its rows
  (those with any pageview) beside the custom events' rows, for the caller to order
  and page.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Final, Literal

from picolytics.stats.query import And, Condition, Filter, Or, Query, Row

PAGEVIEW: Final = "pageview"
# Only pageviews have a page (docs/read-model.md, Event dimensions in filters).
IS_PAGEVIEW: Final = Condition("page", "matches", ("^",))
# A regular expression of these alone means the same to PostgreSQL and to Python.
_PLAIN_PATTERN: Final = re.compile(r"(?:[A-Za-z0-9_ /.*+?^$|()\[\]-]|\\[^A-Za-z0-9])*")
_ASCII_LOWER: Final = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
Positive = Literal["is", "contains", "matches", "wildcard"]
NEGATED: Final[dict[str, Positive]] = {
    "is": "is", "is_not": "is", "contains": "contains", "contains_not": "contains",
    "matches": "matches", "matches_not": "matches",
}  # fmt: skip


def _fold(text: str, case_sensitive: bool) -> str:
    return text if case_sensitive else text.translate(_ASCII_LOWER)


def decidable(pattern: str) -> bool:
    """Is this regular expression in the syntax PostgreSQL and Python read alike?
    (Not `(?...)`: each has options and groups of its own there.)"""
    return _PLAIN_PATTERN.fullmatch(pattern) is not None and "(?" not in pattern


def _wildcard(pattern: str) -> str:
    """A v1 wildcard (`*`: any run of characters) as a Python expression, exact."""
    return ".*".join(re.escape(part) for part in pattern.split("*"))


def passes(kind: Positive, clause: str, case_sensitive: bool = True) -> bool | None:
    """Does the name `"pageview"` pass the positive form of a condition with this one
    clause? None when that cannot be told exactly (a regular expression outside the
    syntax both engines share)."""
    name = _fold(PAGEVIEW, case_sensitive)
    if kind == "is":
        return _fold(clause, case_sensitive) == name
    if kind == "contains":
        return _fold(clause, case_sensitive) in name
    if kind == "wildcard":
        return re.fullmatch(_wildcard(clause), PAGEVIEW, re.DOTALL) is not None
    if not decidable(clause):
        return None
    flags = re.DOTALL if case_sensitive else re.DOTALL | re.IGNORECASE
    try:
        return re.search(clause, PAGEVIEW, flags) is not None
    except re.error:  # not a pattern Python reads ("*a"): PostgreSQL is the judge
        return None


def any_passes(kind: Positive, clauses: tuple[str, ...], case_sensitive: bool) -> bool | None:
    """Does `"pageview"` pass any clause (None: some clause cannot be decided)?"""
    found = [passes(kind, clause, case_sensitive) for clause in clauses]
    if None in found:
        return None
    return any(found)


def name_filter(condition: Condition, kind: Positive, pageview: bool) -> Filter:
    """An `event:name` condition (on our `event`, values as the query layer takes
    them) with the pageviews when `pageview`, the name "pageview", passes it: the
    positive forms add them when it matches, the negated ones when it does not."""
    negated = condition.operator.endswith("_not")
    with_pageviews = pageview != negated
    custom: Filter | None = condition
    if kind == "is" and not negated:  # "pageview" itself names no custom event
        folded = _fold(PAGEVIEW, condition.case_sensitive)
        kept = tuple(
            value for value in condition.values if _fold(value, condition.case_sensitive) != folded
        )
        custom = replace(condition, values=kept) if kept else None
    if custom is None:
        return IS_PAGEVIEW
    return Or((custom, IS_PAGEVIEW)) if with_pageviews else custom


def pageview_question(main: Query) -> Query:
    """The question of the `pageview` row of a breakdown by event: the main one
    without its breakdown, on pageviews only, with `events` (= pageviews) to tell
    buckets without any."""
    metrics = main.metrics if "events" in main.metrics else (*main.metrics, "events")
    only = IS_PAGEVIEW if main.filters is None else And((main.filters, IS_PAGEVIEW))
    return replace(
        main, metrics=metrics, breakdown=None, filters=only, order_by=(), limit=None, offset=0
    )


def merged(custom: tuple[Row, ...], pageviews: tuple[Row, ...], main: Query) -> list[Row]:
    """The custom events' rows and the `pageview` rows (those with any pageview, with
    the main question's metrics only), unordered."""
    rows = list(custom)
    for row in pageviews:
        if not row.metrics.get("events"):
            continue
        metrics = {name: row.metrics[name] for name in main.metrics}
        rows.append(Row(row.time, "", PAGEVIEW, metrics))
    return rows
