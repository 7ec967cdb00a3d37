"""`picolytics user add|list|remove|set-password`: the dashboard's accounts
(storage/accounts.py, docs/dashboard-accounts.md).

A password comes from a hidden prompt, typed twice, or with `--password-stdin` from
the first line of standard input (for scripts); it is never an argument, which any
user of the machine could read in the process list. Only its hash is stored.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from picolytics.cli.common import JSON_FLAG, aligned, config_of, echo_listing, iso, when
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
    rows = [
        (item.user.email, when(item.user.created_at), str(item.sessions), when(item.last_seen_at))
        for item in found
    ]
    return aligned(COLUMNS, rows, "no dashboard accounts yet (`picolytics user add EMAIL`)")


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
@JSON_FLAG
@click.pass_context
def list_command(ctx: click.Context, as_json: bool) -> None:
    """Every account: e-mail, created, live sessions, last seen."""

    def fetch(conninfo: str) -> list[accounts.Listing]:
        return accounts.connected(conninfo, accounts.list_users)

    echo_listing(ctx, as_json, fetch, table, document)


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
