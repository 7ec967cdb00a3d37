"""Goals as an operator keeps them: `picolytics goal add`, `list` and `remove`.

A goal (docs/goals.md) belongs to one site, which must exist (a site appears with its
first event), and is either a custom event, by its whole name, or pageviews of a page
path, which may hold the wildcard `*` (stats/goals.py turns it into SQL). Each goal
has a display name, by default Plausible's: "Visit /pricing" for a page goal, the
event's name for an event goal. Within a site the definition and the display name are
each unique (sql/0010_goals.sql), so a goal can be asked for by its name.

Domains are taken as sites.domain spells them; the CLI normalises what users type
(text.py, `normalise_domain`) before calling in here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeVar

import psycopg

from picolytics.errors import GoalError, GoalOptionError
from picolytics.events import BUILTIN_NAMES
from picolytics.storage import database
from picolytics.storage.sites_admin import NO_TABLES, unknown_site
from picolytics.text import sanitize_text

Connection = psycopg.Connection[tuple[Any, ...]]
GoalKind = Literal["event", "page"]
T = TypeVar("T")

# As Plausible's goals and the ingest's event names (ingest/collect.py): a longer name
# could never match a stored event.
MAX_EVENT_NAME_LENGTH = 120
MAX_PAGE_PATH_LENGTH = 2000
MAX_DISPLAY_NAME_LENGTH = 2000
# Names that are not custom events (events.py): pageviews are page goals. "pageview"
# is Plausible's name for a page load, which is stored as "load".
NOT_CUSTOM_EVENTS = BUILTIN_NAMES | {"pageview"}

SCHEMA_STATE = "SELECT to_regclass('sites') IS NOT NULL, to_regclass('goals') IS NOT NULL"
SELECT_SITE = "SELECT site_id FROM sites WHERE domain = %s"
# Every read of goals, here and in the query layer (stats/goals.py), yields these
# columns in this order: the fields of Goal.
COLUMNS = """g.goal_id, s.domain, g.site_id, g.kind, g.event_name, g.page_path,
       g.display_name, g.created_at"""
SELECT_GOALS = f"SELECT {COLUMNS}\nFROM goals g\nJOIN sites s USING (site_id)\n"
ORDER = " ORDER BY g.site_id, g.goal_id"
# No conflict target: any of the three unique constraints (definition or name) stops
# the row, and the goal it met is looked up for the message.
INSERT_GOAL = """
INSERT INTO goals (site_id, kind, event_name, page_path, display_name)
VALUES (%(site)s, %(kind)s, %(event)s, %(page)s, %(name)s)
ON CONFLICT DO NOTHING
RETURNING goal_id
"""
CONFLICTING_GOAL = (
    SELECT_GOALS + "WHERE g.site_id = %(site)s AND (g.event_name = %(event)s"
    " OR g.page_path = %(page)s OR g.display_name = %(name)s)" + ORDER + " LIMIT 1"
)
DELETE_BY_NAME = f"""
DELETE FROM goals g USING sites s
WHERE s.site_id = g.site_id AND g.site_id = %s AND g.display_name = %s
RETURNING {COLUMNS}
"""
DELETE_BY_ID = f"""
DELETE FROM goals g USING sites s
WHERE s.site_id = g.site_id AND g.goal_id = %s
RETURNING {COLUMNS}
"""


@dataclass(frozen=True)
class Goal:
    """One goal of one site, as stored."""

    goal_id: int
    domain: str
    site_id: int
    kind: GoalKind
    event_name: str | None  # kind "event"
    page_path: str | None  # kind "page": a path, or a pattern with `*`
    display_name: str
    created_at: datetime

    @property
    def definition(self) -> str:
        """The event name or the page path, whichever its kind has."""
        value = self.event_name if self.kind == "event" else self.page_path
        assert value is not None  # the table's goals_one_definition
        return value


@dataclass(frozen=True)
class Definition:
    """A new goal's checked parts, before it has a site and an id."""

    kind: GoalKind
    value: str
    display_name: str


def _text(value: str, flag: str, what: str, limit: int) -> str:
    value = value.strip()
    if not value:
        raise GoalOptionError(f"{flag}: {what} may not be empty")
    if len(value) > limit:
        raise GoalOptionError(f"{flag}: {what} may be at most {limit} characters long")
    # What the ingest removes from stored text (text.py) could never match.
    if sanitize_text(value, limit) != value:
        raise GoalOptionError(f"{flag}: {what} may not hold control characters")
    return value


def definition(event: str | None, page: str | None, name: str | None = None) -> Definition:
    """Check a new goal: exactly one of an event name or a page path, and its display
    name (by default "Visit PATH" or the event name). Whitespace around is dropped."""
    if (event is None) == (page is None):
        raise GoalOptionError("give exactly one of --event NAME or --page PATH")
    kind: GoalKind
    if event is not None:
        kind, value = "event", _text(event, "--event", "an event name", MAX_EVENT_NAME_LENGTH)
        if value in NOT_CUSTOM_EVENTS:
            raise GoalOptionError(
                f"--event: {value!r} is not a custom event (for pageviews use --page PATH)"
            )
        default = value
    else:
        assert page is not None
        kind, value = "page", _text(page, "--page", "a page path", MAX_PAGE_PATH_LENGTH)
        if not value.startswith("/"):
            raise GoalOptionError(
                f"--page: {value!r} does not start with /: a page path is written as Top"
                " pages shows it ('/pricing', not 'pricing' or a whole URL)"
            )
        default = f"Visit {value}"
    shown = default if name is None else name
    return Definition(
        kind, value, _text(shown, "--name", "a display name", MAX_DISPLAY_NAME_LENGTH)
    )


def _check_schema(connection: Connection) -> None:
    row = connection.execute(SCHEMA_STATE).fetchone()
    has_sites, has_goals = row if row else (False, False)
    if not has_sites:
        raise GoalError(NO_TABLES)
    if not has_goals:
        raise GoalError("the database has no goals table yet: run `picolytics migrate` first")


def _site_id(connection: Connection, domain: str) -> int:
    row = connection.execute(SELECT_SITE, (domain,)).fetchone()
    if row is None:
        raise unknown_site(connection, domain)
    return int(row[0])


def _goal(connection: Connection, goal_id: int) -> Goal:
    row = connection.execute(SELECT_GOALS + "WHERE g.goal_id = %s", (goal_id,)).fetchone()
    assert row is not None  # read in the transaction that wrote or deleted it
    return Goal(*row)


def add_goal(connection: Connection, domain: str, new: Definition) -> Goal:
    """Add a goal to an existing site in one transaction; a goal with the same event
    name, page path or display name in that site is refused, naming it."""
    with connection.transaction():
        _check_schema(connection)
        site_id = _site_id(connection, domain)
        values = {
            "site": site_id,
            "kind": new.kind,
            "event": new.value if new.kind == "event" else None,
            "page": new.value if new.kind == "page" else None,
            "name": new.display_name,
        }
        row = connection.execute(INSERT_GOAL, values).fetchone()
        if row is not None:
            return _goal(connection, int(row[0]))
        taken = connection.execute(CONFLICTING_GOAL, values).fetchone()
    if taken is None:  # removed meanwhile: the constraint still spoke for it
        raise GoalOptionError(f"{domain} has a goal like this already")
    other = Goal(*taken)
    same_definition = (other.kind, other.definition) == (new.kind, new.value)
    if other.display_name == new.display_name and not same_definition:
        raise GoalOptionError(
            f"{domain} has a goal named {new.display_name!r} already "
            f"({other.kind} {other.definition!r}): choose another --name"
        )
    raise GoalOptionError(
        f"{domain} has a goal for the {other.kind} {other.definition!r} already "
        f"(named {other.display_name!r})"
    )


def list_goals(connection: Connection, domain: str | None = None) -> list[Goal]:
    """The goals of one site, or of every site, in the order they were added."""
    with connection.transaction():
        _check_schema(connection)
        if domain is None:
            rows = connection.execute(SELECT_GOALS + ORDER).fetchall()
        else:
            site_id = _site_id(connection, domain)
            rows = connection.execute(
                SELECT_GOALS + "WHERE g.site_id = %s" + ORDER, (site_id,)
            ).fetchall()
    return [Goal(*row) for row in rows]


def remove_goal(connection: Connection, domain: str, name: str) -> Goal:
    """Remove the site's goal of this display name (exactly as listed); return it."""
    with connection.transaction():
        _check_schema(connection)
        site_id = _site_id(connection, domain)
        found = connection.execute(DELETE_BY_NAME, (site_id, name)).fetchone()
        if found is None:
            query = SELECT_GOALS + "WHERE g.site_id = %s" + ORDER
            names = [Goal(*row).display_name for row in connection.execute(query, (site_id,))]
            known = f"goals: {', '.join(map(repr, names))}" if names else "it has no goals"
            raise GoalOptionError(f"{domain} has no goal named {name!r} ({known})")
    return Goal(*found)


def remove_goal_by_id(connection: Connection, goal_id: int) -> Goal:
    """Remove the goal with this id, whichever its site; return it."""
    with connection.transaction():
        _check_schema(connection)
        found = connection.execute(DELETE_BY_ID, (goal_id,)).fetchone()
    if found is None:
        raise GoalOptionError(f"no goal with id {goal_id}")
    return Goal(*found)


def connected(conninfo: str, action: Callable[[Connection], T]) -> T:
    """Run `action` on a new connection; a database failure becomes a GoalError."""
    return database.connected(
        conninfo,
        action,
        lambda detail: GoalError(f"cannot read or change the goals in the database: {detail}"),
    )
