"""Bounds on the cost of a filter's regular expression, checked before any SQL runs.

PostgreSQL's engine (Spencer's, as in Tcl) runs a regular expression without
backtracking unless it holds a back-reference, and refuses one whose automaton grows
too large ("too complex"). So what is refused up front is what could still cost
too much: a long pattern, a back-reference, a repetition of a group that repeats
inside (`(a+)+`, `(a*b)*`), and bounds over MAX_REPEAT. Whether the pattern compiles
at all is PostgreSQL's word: stats/engine.py compiles each before the query.
"""

from __future__ import annotations

from typing import Final

from picolytics.errors import QueryError

MAX_PATTERN_LENGTH: Final = 256
MAX_REPEAT: Final = 100


def _bound(pattern: str, start: int) -> tuple[int, int, int | None] | None:
    """At a '{': (index after the '}', low, high or None for no upper bound) when it
    starts a bound {m}, {m,} or {m,n}; None when the '{' is a plain character."""
    end = pattern.find("}", start)
    if end < 0:
        return None
    low, comma, high = pattern[start + 1 : end].partition(",")
    if not low.isdigit() or (high and not high.isdigit()):
        return None
    if not comma:
        return end + 1, int(low), int(low)
    return end + 1, int(low), int(high) if high else None


def _after_bracket(pattern: str, start: int) -> int:
    """The index after the bracket expression at `start` (the end when unbalanced:
    PostgreSQL says so when it compiles). A ']' right after '[' or '[^' is a member."""
    first = start + (2 if pattern[start + 1 : start + 2] == "^" else 1)
    end = pattern.find("]", first + 1)
    return len(pattern) if end < 0 else end + 1


def check_pattern(pattern: str, field: str) -> None:
    """Raise QueryError(field) for a regular expression too costly to run."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise QueryError(field, f"a regular expression may be {MAX_PATTERN_LENGTH} characters long")
    # Per open group: does it repeat anything inside? The outermost entry is the pattern.
    repeats = [False]
    closed: bool | None = None  # the group just closed repeated inside (None: no group)
    index = 0
    while index < len(pattern):
        char = pattern[index]
        just_closed, closed = closed, None
        if char == "\\":
            if pattern[index + 1 : index + 2] in tuple("123456789"):
                raise QueryError(field, "back-references (\\1 ... \\9) are not allowed")
            index += 2
            continue
        if char == "[":
            index = _after_bracket(pattern, index)
            continue
        bound = _bound(pattern, index) if char == "{" else None
        if char == "(":
            repeats.append(False)
            if pattern[index + 1 : index + 2] == "?":
                index += 1  # (?:...), (?=...), (?!...): not a quantifier
        elif char == ")" and len(repeats) > 1:
            closed = repeats.pop()
            repeats[-1] = repeats[-1] or closed
        elif char in "*+?" or bound:
            many = char in "*+"  # more than once; '?' is at most once
            if bound:
                after, low, high = bound
                if max(low, high or 0) > MAX_REPEAT:
                    raise QueryError(field, f"a repetition bound may be at most {MAX_REPEAT}")
                many = high is None or high > 1
                index = after - 1
            if just_closed and many:
                raise QueryError(field, "a repeated group may not repeat inside (as in (a+)+)")
            repeats[-1] = True
        index += 1
