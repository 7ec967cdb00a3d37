"""Which events complete a goal, as SQL: the rule the query layer counts conversions
by (docs/goals.md). Goals themselves are kept by storage/goals.py.

An event goal is completed by a custom event of exactly its name. A page goal is
completed by a pageview whose stored path equals the goal's path or, when the path
holds `*`, matches it as a pattern. The wildcard is Plausible's as its documentation
describes it today (plausible/docs, docs/pageview-goals.md, "How to group your pages":
"You can use an asterisk (`*`) to match patterns in your page path URLs. Asterisks can
be placed on either end or in the middle of any page path URL", with `/blog*` grouping
every blog post): `*` stands for any run of characters, none or many, `/` included.
`**`, which Plausible documented until January 2024 as the one wildcard that crosses
a `/` (a single `*` then stopped at one), still works and means the same, as it does
in Plausible (Plausible.Stats.Filters.Utils.page_regex turns both into `.*`). Every
other character stands for itself; a pattern always matches the whole path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from psycopg import AsyncConnection
from psycopg.rows import tuple_row

from picolytics.dimensions import EVENT_ROWS
from picolytics.stats.sql import Params
from picolytics.storage.goals import ORDER, SELECT_GOALS, Goal

WILDCARD: Final = "*"
# Every ASCII character that is not a letter, a digit or space is escaped, whether or
# not PostgreSQL's regular expressions give it a meaning today (`\` before anything
# but a letter or digit stands for that character). `/` is left bare: it is never
# special, and the patterns stay readable.
_ESCAPED: Final = frozenset("!\"#$%&'()+,-.:;<=>?@[\\]^_`{|}~")

LOAD_GOALS: Final = SELECT_GOALS + "WHERE g.site_id = ANY(%s::integer[])" + ORDER


def has_wildcard(pattern: str) -> bool:
    return WILDCARD in pattern


def page_regex(pattern: str) -> str:
    """A page goal's path as a PostgreSQL regular expression for `path ~ regex`:
    anchored at both ends, each run of `*` as one `.*` (a run of them means nothing
    more, and `.*.*...` makes PostgreSQL's matcher very slow), the rest literal."""
    parts = ["^"]
    previous = ""
    for char in pattern:
        if char == WILDCARD:
            if previous != WILDCARD:
                parts.append(".*")
        elif char in _ESCAPED:
            parts.append("\\" + char)
        else:
            parts.append(char)
        previous = char
    parts.append("$")
    return "".join(parts)


def goal_condition(goal: Goal, params: Params) -> str:
    """SQL on a row `e` of `events`: is it a completion of this goal? True or false,
    never NULL. A path without `*` is compared as it is, as Plausible does too."""
    if goal.kind == "event":
        rows = EVENT_ROWS["event"]
        test = f"e.name = {params.add(goal.event_name, cast='::text')}"
    else:
        path = goal.definition
        rows = EVENT_ROWS["page"]
        if has_wildcard(path):
            test = f"e.path ~ {params.add(page_regex(path), cast='::text')}"
        else:
            test = f"e.path = {params.add(path, cast='::text')}"
    return f"({rows} AND {test})"


async def load_goals(connection: AsyncConnection[Any], site_ids: Sequence[int]) -> list[Goal]:
    """The goals of these sites, in the order they were added, in the caller's
    transaction (the query's snapshot) if one is open."""
    async with connection.cursor(row_factory=tuple_row) as cursor:
        await cursor.execute(LOAD_GOALS, (list(site_ids),))
        return [Goal(*row) for row in await cursor.fetchall()]
