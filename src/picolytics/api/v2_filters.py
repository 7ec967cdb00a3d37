"""Plausible's Stats API v2 filter trees, typed.

`parse_filters` reads the `filters` list (`["is", "visit:country", ["US"]]`, with
`{"case_sensitive": false}`, `and`/`or`/`not`, `has_done`/`has_not_done`) into
`ApiFilter` trees over the dimensions of api/v2_names.py, `leaves` walks their
conditions, and `unsupported_filters` says what of them the query layer cannot answer
yet (an `event:name` pattern that cannot be matched against "pageview" exactly:
api/event_names.py). Every mistake is an ApiRequestError whose field is the JSON pointer of the
offending filter (`#/filters/0/1/2`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final, Literal, get_args

from picolytics.api.event_names import NEGATED, any_passes
from picolytics.api.v2_dates import mismatch, show
from picolytics.api.v2_names import ApiDimension, dimension
from picolytics.errors import ApiRequestError, QueryError
from picolytics.stats.patterns import check_pattern
from picolytics.stats.validate import MAX_CONDITIONS, MAX_DEPTH, MAX_VALUE_LENGTH, MAX_VALUES

ApiOperator = Literal["is", "is_not", "contains", "contains_not", "matches", "matches_not"]
API_OPERATORS: Final[tuple[ApiOperator, ...]] = get_args(ApiOperator)
# Nesting of and/or/not/has_done: api/v2_translate.py wraps the top level in one more And.
MAX_NESTING: Final = MAX_DEPTH - 1
_BEHAVIORAL: Final = "Behavioral filters (has_done, has_not_done)"


@dataclass(frozen=True, slots=True)
class ApiCondition:
    """`operator dimension clauses`: matches if any clause does (none, for the _not forms)."""

    operator: ApiOperator
    dimension: ApiDimension
    clauses: tuple[str, ...]  # integer GeoNames ids of visit:city come as text
    case_sensitive: bool = True


@dataclass(frozen=True, slots=True)
class ApiAnd:
    filters: tuple[ApiFilter, ...]


@dataclass(frozen=True, slots=True)
class ApiOr:
    filters: tuple[ApiFilter, ...]


@dataclass(frozen=True, slots=True)
class ApiNot:
    filter: ApiFilter


@dataclass(frozen=True, slots=True)
class ApiHasDone:
    """Visits in which some event matches `filter` (`has_done`), or none (`has_not_done`)."""

    filter: ApiFilter
    negated: bool = False


ApiFilter = ApiCondition | ApiAnd | ApiOr | ApiNot | ApiHasDone


class _Reader:
    """Reads one `filters` list, counting conditions across the whole of it."""

    def __init__(self) -> None:
        self.conditions = 0

    def tree(self, value: object, at: str, depth: int, behavioral: bool) -> ApiFilter:
        if not isinstance(value, list) or not value or not isinstance(value[0], str):
            raise _invalid(at, value, "a filter is a list that starts with its operator")
        if depth > MAX_NESTING:
            raise ApiRequestError(at, f"filters may nest at most {MAX_NESTING} levels deep")
        operator = value[0]
        if operator in ("and", "or"):
            inner = value[1] if len(value) == 2 else None
            if not isinstance(inner, list) or not inner:
                raise _invalid(at, value, f"{operator} takes one non-empty list of filters")
            if len(inner) > MAX_CONDITIONS:
                raise _too_many(at)
            trees = tuple(
                self.tree(item, f"{at}/1/{index}", depth + 1, behavioral)
                for index, item in enumerate(inner)
            )
            return ApiAnd(trees) if operator == "and" else ApiOr(trees)
        if operator in ("not", "has_done", "has_not_done"):
            if len(value) != 2:
                raise _invalid(at, value, f"{operator} takes exactly one filter")
            if operator == "not":
                return ApiNot(self.tree(value[1], f"{at}/1", depth + 1, behavioral))
            if behavioral:
                raise ApiRequestError(at, f"Invalid filters. {_BEHAVIORAL} cannot be nested.")
            inner_tree = self.tree(value[1], f"{at}/1", depth + 1, True)
            return ApiHasDone(inner_tree, negated=operator == "has_not_done")
        return self.condition(value, at, behavioral)

    def condition(self, value: list[object], at: str, behavioral: bool) -> ApiCondition:
        operator = next((op for op in API_OPERATORS if op == value[0]), None)
        if operator is None:
            raise _invalid(at, value, f"unknown operator {show(value[0])}")
        if len(value) not in (3, 4) or not isinstance(value[1], str):
            raise _invalid(at, value, "a condition is [operator, dimension, clauses, modifiers?]")
        name = value[1]
        if name == "segment":
            raise ApiRequestError(at, "Segments are not supported: picolytics has no segments.")
        found = dimension(name)
        if found is None or found.grain == "time":
            raise _invalid(at, value, f"unknown filter dimension {show(name)}")
        if name == "event:goal" and operator not in ("is", "contains"):
            raise _invalid(at, value, "event:goal takes only the is and contains operators")
        if behavioral and found.grain != "event":
            raise ApiRequestError(
                at, f"Invalid filters. {_BEHAVIORAL} can only be used with event dimension filters."
            )
        clauses = _clauses(value, at, operator)
        case_sensitive = _case_sensitive(value, at, operator)
        self.conditions += 1
        if self.conditions > MAX_CONDITIONS:
            raise _too_many(at)
        return ApiCondition(operator, found, clauses, case_sensitive)


def _invalid(at: str, value: object, why: str) -> ApiRequestError:
    return ApiRequestError(at, f"Invalid filter {show(value)}: {why}.")


def _too_many(at: str) -> ApiRequestError:
    return ApiRequestError(at, f"Invalid filters. At most {MAX_CONDITIONS} conditions in a query.")


def _clauses(value: list[object], at: str, operator: ApiOperator) -> tuple[str, ...]:
    name, clauses = value[1], value[2]
    if not isinstance(clauses, list):
        raise _invalid(at, value, "clauses must be a list")
    if not 1 <= len(clauses) <= MAX_VALUES:
        raise _invalid(at, value, f"a condition has 1 to {MAX_VALUES} clauses")
    texts: list[str] = []
    numbers = name == "visit:city" and all(
        isinstance(c, int) and not isinstance(c, bool) for c in clauses
    )
    for clause in clauses:
        if numbers:
            texts.append(str(clause))
            continue
        if not isinstance(clause, str):
            raise _invalid(at, value, "clauses are strings (integers only for visit:city)")
        if len(clause) > MAX_VALUE_LENGTH or "\x00" in clause:
            raise _invalid(at, value, f"a clause has at most {MAX_VALUE_LENGTH} characters, no NUL")
        if operator in ("matches", "matches_not"):
            try:
                check_pattern(clause, at)
            except QueryError as error:
                raise ApiRequestError(at, str(error).removeprefix(f"{at}: ")) from None
        texts.append(clause)
    if name == "visit:country" and operator in ("is", "is_not") and any(len(t) != 2 for t in texts):
        raise ApiRequestError(
            at,
            "Invalid visit:country filter, visit:country needs to be a valid 2-letter "
            "country code.",
        )
    return tuple(texts)


def _case_sensitive(value: list[object], at: str, operator: ApiOperator) -> bool:
    if len(value) == 3:
        return True
    modifiers = value[3]
    if operator in ("matches", "matches_not"):
        raise _invalid(at, value, f"{operator} takes no modifiers")
    if not isinstance(modifiers, dict) or set(modifiers) - {"case_sensitive"}:
        raise _invalid(at, value, 'the only modifier is {"case_sensitive": true or false}')
    sensitive = modifiers.get("case_sensitive", True)
    if not isinstance(sensitive, bool):
        raise _invalid(at, value, "case_sensitive is true or false")
    return sensitive


def parse_filters(value: object, field: str = "#/filters") -> tuple[ApiFilter, ...]:
    """The body's `filters` (a list, implicitly and-ed), or an ApiRequestError."""
    if not isinstance(value, list):
        raise mismatch(field, "Array", value)
    if len(value) > MAX_CONDITIONS:
        raise _too_many(field)
    reader = _Reader()
    return tuple(reader.tree(item, f"{field}/{i}", 1, False) for i, item in enumerate(value))


@dataclass(frozen=True, slots=True)
class Leaf:
    """A condition of a filter list, where it sits: its JSON pointer, its depth (1 at
    the top level) and whether it is inside has_done/has_not_done."""

    at: str
    depth: int
    behavioral: bool
    condition: ApiCondition


def leaves(filters: tuple[ApiFilter, ...], field: str = "#/filters") -> Iterator[Leaf]:
    """Every condition of a filter list, depth first, with the pointer parse_filters
    gave it."""
    for index, tree in enumerate(filters):
        yield from _leaves(tree, f"{field}/{index}", 1, False)


def _leaves(tree: ApiFilter, at: str, depth: int, behavioral: bool) -> Iterator[Leaf]:
    if isinstance(tree, ApiCondition):
        yield Leaf(at, depth, behavioral, tree)
    elif isinstance(tree, ApiAnd | ApiOr):
        for index, inner in enumerate(tree.filters):
            yield from _leaves(inner, f"{at}/1/{index}", depth + 1, behavioral)
    else:
        is_behavioral = behavioral or isinstance(tree, ApiHasDone)
        yield from _leaves(tree.filter, f"{at}/1", depth + 1, is_behavioral)


@dataclass(frozen=True, slots=True)
class Unsupported:
    """A part of a valid query that the query layer cannot answer yet, and why."""

    field: str
    reason: str


def dimension_gap(found: ApiDimension) -> str | None:
    """Why the query layer cannot read Plausible's dimension exactly, or None."""
    if found.planned:
        return f"{found.name} has no dimension in picolytics yet"
    # form "name" (visit:country_name) is answered: api/v2_names.py spells the codes
    # as names, api/v2_countries.py turns filters on names into filters on codes.
    return None


def _name_gap(condition: ApiCondition) -> str | None:
    """An event:name pattern of which picolytics cannot tell exactly whether the name
    "pageview" matches it (api/event_names.py)."""
    if condition.dimension.name != "event:name":
        return None
    kind = NEGATED[condition.operator]
    if any_passes(kind, condition.clauses, condition.case_sensitive) is not None:
        return None
    return (
        "event:name matches a pattern outside the syntax picolytics can match against "
        '"pageview" exactly (letters, digits, _ / . * + ? ^ $ | ( ) [ ] - and escaped '
        "punctuation)"
    )


def unsupported_filters(
    filters: tuple[ApiFilter, ...], field: str = "#/filters"
) -> list[Unsupported]:
    """What of a valid filter list the query layer cannot answer yet."""
    found: list[Unsupported] = []
    for index, tree in enumerate(filters):
        _tree_gaps(tree, f"{field}/{index}", found)
    return found


def _tree_gaps(tree: ApiFilter, at: str, found: list[Unsupported]) -> None:
    if isinstance(tree, ApiCondition):
        gap = dimension_gap(tree.dimension) or _name_gap(tree)
        if gap is not None:
            found.append(Unsupported(at, gap))
    elif isinstance(tree, ApiAnd | ApiOr):
        for index, inner in enumerate(tree.filters):
            _tree_gaps(inner, f"{at}/1/{index}", found)
    else:  # not, has_done, has_not_done: what is inside
        _tree_gaps(tree.filter, f"{at}/1", found)
