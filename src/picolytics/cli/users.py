"""`picolytics user add|list|remove|set-password`: the dashboard's accounts
(storage/accounts.py, docs/dashboard-accounts.md).

A password comes from a hidden prompt, typed twice, or with `--password-stdin` from
the first line of standard input (for scripts); it is never an argument, which any
user of the machine could read in the process list. Only its hash is stored.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import click

from picolytics.cli.common import config_of
from picolytics.errors import AccountOptionError
from picolytics.storage import accounts
from picolytics.storage.database import database_conninfo
from picolytics.storage.passwords import check_password, normalise_email

COLUMNS = ("email", "created", "sessions", "last seen")
PASSWORD_STDIN = click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from the first line of standard input instead of a prompt.",
)


def when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if moment else "-"


def iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat() if moment else None


def aligned(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A header and rows in aligned columns, for a terminal."""
    every = [tuple(columns), *(tuple(row) for row in rows)]
    widths = [max(len(row[n]) for row in every) for n in range(len(columns))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in every
    ]


def read_password(from_stdin: bool, prompt: str = "Password") -> str:
    """The new password, from standard input or a hidden prompt typed twice, checked
    against the rules before anything is stored."""
    if from_stdin:
        line = sys.stdin.readline()
        password = line.removesuffix("\n").removesuffix("\r")
        if not password:
            raise AccountOptionError("--password-stdin: standard input holds no password")
    else:
        answer = click.prompt(
            prompt, hide_input=True, confirmation_prompt=f"{prompt}, again", type=str
        )
        password = str(answer)
    check_password(password)
    return password


def table(found: list[accounts.Listing]) -> list[str]:
    """`picolytics user list` for a terminal."""
    if not found:
        return ["no dashboard accounts yet (`picolytics user add EMAIL`)"]
    rows = [
        (item.user.email, when(item.user.created_at), str(item.sessions), when(item.last_seen_at))
        for item in found
    ]
    return aligned(COLUMNS, rows)


def document(found: list[accounts.Listing]) -> list[dict[str, Any]]:
    """`picolytics user list --json`: times in ISO 8601 UTC."""
    return [
        {
            "email": item.user.email,
            "created_at": iso(item.user.created_at),
            "password_changed_at": iso(item.user.password_changed_at),
            "sessions": item.sessions,
            "last_seen_at": iso(item.last_seen_at),
        }
        for item in found
    ]


@click.group("user")
def group() -> None:
    """Add, list and remove the dashboard's accounts; set their passwords."""


@group.command("add")
@click.argument("email")
@PASSWORD_STDIN
@click.pass_context
def add_command(ctx: click.Context, email: str, password_stdin: bool) -> None:
    """Add an account that may log in to the dashboard."""

    config = config_of(ctx)
    address = normalise_email(email)  # before the prompt: a typo fails at once
    password = read_password(password_stdin)
    with database_conninfo(config) as conninfo:
        user = accounts.connected(
            conninfo, lambda connection: accounts.add_user(connection, address, password)
        )
    click.echo(f"account {user.email} added: it may log in at /dashboard/login")


@group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def list_command(ctx: click.Context, as_json: bool) -> None:
    """Every account: e-mail, created, live sessions, last seen."""

    config = config_of(ctx)
    with database_conninfo(config) as conninfo:
        found = accounts.connected(conninfo, accounts.list_users)
    if as_json:
        click.echo(json.dumps(document(found), indent=2, ensure_ascii=False))
        return
    for line in table(found):
        click.echo(line)


@group.command("remove")
@click.argument("email")
@click.pass_context
def remove_command(ctx: click.Context, email: str) -> None:
    """Remove an account; its sessions end at once."""

    config = config_of(ctx)
    with database_conninfo(config) as conninfo:
        accounts.connected(conninfo, lambda connection: accounts.remove_user(connection, email))
    click.echo(f"account {normalise_email(email)} removed")


@group.command("set-password")
@click.argument("email")
@PASSWORD_STDIN
@click.pass_context
def set_password_command(ctx: click.Context, email: str, password_stdin: bool) -> None:
    """Set an account's password; its sessions end, so it logs in again."""

    config = config_of(ctx)
    address = normalise_email(email)
    password = read_password(password_stdin, "New password")
    with database_conninfo(config) as conninfo:
        ended = accounts.connected(
            conninfo, lambda connection: accounts.set_password(connection, address, password)
        )
    click.echo(f"password of {address} changed; {ended} session(s) ended")
