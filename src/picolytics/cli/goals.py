"""`picolytics goal`: add, list and remove the goals of a site (storage/goals.py,
docs/goals.md)."""

from __future__ import annotations

from typing import Any

import click

from picolytics.cli.common import JSON_FLAG, aligned, config_of, echo_listing
from picolytics.storage import goals
from picolytics.storage.database import database_conninfo
from picolytics.storage.goals import Goal
from picolytics.text import normalise_domain

COLUMNS = ("domain", "name", "kind", "definition")


def table(found: list[Goal]) -> list[str]:
    """`picolytics goal list` for a terminal: one aligned line per goal."""
    rows = [(goal.domain, goal.display_name, goal.kind, goal.definition) for goal in found]
    empty = "no goals yet (add one with `picolytics goal add DOMAIN --event NAME`)"
    return aligned(COLUMNS, rows, empty)


def document(found: list[Goal]) -> list[dict[str, Any]]:
    """`picolytics goal list --json`: the fields of Plausible's Sites API goals, plus
    the domain and when the goal was added."""
    return [
        {
            "id": goal.goal_id,
            "domain": goal.domain,
            "goal_type": goal.kind,
            "display_name": goal.display_name,
            "event_name": goal.event_name,
            "page_path": goal.page_path,
            "created_at": goal.created_at.isoformat(),
        }
        for goal in found
    ]


def _described(goal: Goal) -> str:
    return f"{goal.domain}: goal {goal.display_name!r} ({goal.kind} {goal.definition!r})"


@click.group("goal")
def group() -> None:
    """Add, list and remove goals: custom events or pages that count as conversions."""


@group.command("add")
@click.argument("domain")
@click.option("--event", metavar="NAME", help="A custom event's name, exactly as sent.")
@click.option(
    "--page", metavar="PATH", help="A page path such as /pricing; * matches any characters."
)
@click.option(
    "--name",
    metavar="DISPLAY",
    help='The name shown and asked for (default: the event name, or "Visit PATH").',
)
@click.pass_context
def add_command(
    ctx: click.Context, domain: str, event: str | None, page: str | None, name: str | None
) -> None:
    """Add a goal to a site.

    The site must exist: it does once its first event has arrived.

    Give exactly one of --event and --page. Exit codes: 0 added, 1 database error,
    2 bad argument (unknown site, goal exists already, empty or malformed value).
    """

    new = goals.definition(event, page, name)  # checked before connecting
    site = normalise_domain(domain)
    config = config_of(ctx)
    with database_conninfo(config) as conninfo:
        added = goals.connected(conninfo, lambda connection: goals.add_goal(connection, site, new))
    click.echo(f"added {_described(added)}")


@group.command("list")
@click.argument("domain", required=False)
@JSON_FLAG
@click.pass_context
def list_command(ctx: click.Context, domain: str | None, as_json: bool) -> None:
    """The goals of one site, or of every site."""

    site = normalise_domain(domain) if domain is not None else None

    def fetch(conninfo: str) -> list[Goal]:
        return goals.connected(conninfo, lambda connection: goals.list_goals(connection, site))

    echo_listing(ctx, as_json, fetch, table, document)


@group.command("remove")
@click.argument("domain")
@click.argument("name")
@click.pass_context
def remove_command(ctx: click.Context, domain: str, name: str) -> None:
    """Remove a site's goal by its name.

    NAME is the goal's name as `picolytics goal list` shows it. Only the goal goes;
    the events and pageviews it counted stay.
    """

    site = normalise_domain(domain)
    config = config_of(ctx)
    with database_conninfo(config) as conninfo:
        removed = goals.connected(
            conninfo, lambda connection: goals.remove_goal(connection, site, name)
        )
    click.echo(f"removed {_described(removed)}")
