"""Filters on `visit:country_name` as filters on the codes picolytics stores.

Visits keep their country as an ISO 3166-1 alpha-2 code ("" when unknown); Plausible's
`visit:country_name` is its English name (api/v2_names.py, `country_name`). Every
condition on names becomes an `is` or `is_not` condition on `visit:country`, whose
codes are found here, before the query is translated:

- `is` / `is_not`: the codes of the names given, by lookup (any of a country's names,
  "United States" or "United States of America"; `(not set)` is the unknown country;
  the case modifier compares casefolded names);
- `contains` / `contains_not`: the codes whose shown name contains a clause, evaluated
  over the list in Python (casefolded when not case-sensitive);
- `matches` / `matches_not`: the codes whose shown name matches a pattern, evaluated
  over the list in PostgreSQL, the engine of every other `matches` (the same syntax,
  the same answer, under QUERY_TIMEOUT_SEC): Python's `re` backtracks, and a pattern
  stats/patterns.py lets through, such as `(.|.)*z`, would take it minutes.

A positive condition turns into `is CODES`, a negated one into `is_not CODES`. When no
country fits, the code NO_COUNTRY, which no visit has, stands in (`is` matches nothing,
`is_not` everything). Codes beyond a condition's MAX_VALUES are split into several
conditions, or-ed (`is`) or and-ed (`is_not`). A stored code that the list lacks is
shown as the code itself and found by `is` only.
"""

from __future__ import annotations

from typing import Any, Final

from psycopg import AsyncConnection, errors

from picolytics.api.v2_filters import (
    ApiAnd,
    ApiCondition,
    ApiFilter,
    ApiHasDone,
    ApiNot,
    ApiOperator,
    ApiOr,
)
from picolytics.api.v2_names import country_codes, dimension, shown_countries
from picolytics.errors import QueryError, QueryTimeoutError, first_line
from picolytics.stats.engine import snapshot
from picolytics.stats.validate import MAX_VALUES

NO_COUNTRY: Final = "--"  # not a code: geo lookups store two letters or ""
MATCHING: Final = """
SELECT c.code FROM unnest(%s::text[], %s::text[]) AS c(code, name)
WHERE c.name ~ ANY(%s::text[])
ORDER BY c.code
"""
_COUNTRY: Final = dimension("visit:country")


async def names_to_codes(
    connection: AsyncConnection[Any], filters: tuple[ApiFilter, ...], timeout_s: float
) -> tuple[ApiFilter, ...]:
    """The filters with every condition on country names made one on codes."""
    return tuple([await _tree(connection, tree, timeout_s) for tree in filters])


async def _tree(connection: AsyncConnection[Any], tree: ApiFilter, timeout_s: float) -> ApiFilter:
    if isinstance(tree, ApiCondition):
        if tree.dimension.form != "name":
            return tree
        return await _condition(connection, tree, timeout_s)
    if isinstance(tree, ApiAnd | ApiOr):
        inner = tuple([await _tree(connection, item, timeout_s) for item in tree.filters])
        return ApiAnd(inner) if isinstance(tree, ApiAnd) else ApiOr(inner)
    if isinstance(tree, ApiNot):
        return ApiNot(await _tree(connection, tree.filter, timeout_s))
    return ApiHasDone(await _tree(connection, tree.filter, timeout_s), tree.negated)


async def _condition(
    connection: AsyncConnection[Any], condition: ApiCondition, timeout_s: float
) -> ApiFilter:
    operator, clauses, sensitive = condition.operator, condition.clauses, condition.case_sensitive
    if operator in ("is", "is_not"):
        codes = [code for clause in clauses for code in country_codes(clause, sensitive)]
    elif operator in ("contains", "contains_not"):
        codes = contained(clauses, sensitive)
    else:
        codes = await matching(connection, clauses, timeout_s)
    return on_codes(tuple(dict.fromkeys(codes)), negated=operator.endswith("_not"))


def contained(clauses: tuple[str, ...], case_sensitive: bool) -> list[str]:
    """The codes whose shown name contains any of the clauses."""
    fold = (lambda text: text) if case_sensitive else str.casefold
    wanted = [fold(clause) for clause in clauses]
    return [
        code
        for code, name in shown_countries().items()
        if any(clause in fold(name) for clause in wanted)
    ]


async def matching(
    connection: AsyncConnection[Any], patterns: tuple[str, ...], timeout_s: float
) -> list[str]:
    """The codes whose shown name matches any of the patterns, in PostgreSQL."""
    names = shown_countries()
    try:
        async with snapshot(connection, timeout_s):
            cursor = await connection.execute(
                MATCHING, (list(names), list(names.values()), list(patterns))
            )
            rows = await cursor.fetchall()
    except errors.InvalidRegularExpression as error:
        raise QueryError("filters", first_line(error)) from error
    except errors.QueryCanceled as error:
        raise QueryTimeoutError(f"country names ran past {timeout_s:g} s") from error
    return [str(row[0]) for row in rows]


def on_codes(codes: tuple[str, ...], *, negated: bool) -> ApiFilter:
    """`is codes` (`is_not` when negated) on visit:country, split by MAX_VALUES."""
    assert _COUNTRY is not None  # a name of PLAUSIBLE_DIMENSIONS
    operator: ApiOperator = "is_not" if negated else "is"
    if not codes:
        return ApiCondition(operator, _COUNTRY, (NO_COUNTRY,))
    conditions = tuple(
        ApiCondition(operator, _COUNTRY, codes[at : at + MAX_VALUES])
        for at in range(0, len(codes), MAX_VALUES)
    )
    if len(conditions) == 1:
        return conditions[0]
    return ApiAnd(conditions) if negated else ApiOr(conditions)
