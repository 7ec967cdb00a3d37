"""`picolytics share create|list|revoke`: read-only shared links to one site's
dashboard (storage/shares.py, docs/dashboard-accounts.md).

A link is printed once, by `create`: afterwards only its id, site and dates are
known, since only its hash is stored. A link without a password also has an
embeddable variant (`?embed=true`, for an iframe on another site).
"""

from __future__ import annotations

from typing import Any

import click

from picolytics.cli.common import JSON_FLAG, aligned, config_of, echo_listing, iso, when
from picolytics.cli.users import PASSWORD_STDIN, read_password
from picolytics.storage import accounts, shares
from picolytics.storage.database import database_conninfo
from picolytics.storage.shares import Share

COLUMNS = ("id", "site", "password", "created", "revoked")


def table(found: list[Share]) -> list[str]:
    """`picolytics share list` for a terminal."""
    rows = [
        (
            str(share.share_id),
            share.domain,
            "yes" if share.protected else "no",
            when(share.created_at),
            when(share.revoked_at),
        )
        for share in found
    ]
    return aligned(COLUMNS, rows, "no shared links yet (`picolytics share create DOMAIN`)")


def document(found: list[Share]) -> list[dict[str, Any]]:
    """`picolytics share list --json`: times in ISO 8601 UTC."""
    return [
        {
            "id": share.share_id,
            "site": share.domain,
            "password": share.protected,
            "embeddable": share.embeddable,
            "created_at": iso(share.created_at),
            "revoked_at": iso(share.revoked_at),
        }
        for share in found
    ]


@click.group("share")
def group() -> None:
    """Create, list and revoke read-only shared links to a site's dashboard."""


@group.command("create")
@click.argument("domain")
@click.option("--password", "ask", is_flag=True, help="Ask for a password to open the link.")
@PASSWORD_STDIN
@click.pass_context
def create_command(ctx: click.Context, domain: str, ask: bool, password_stdin: bool) -> None:
    """Create a link and print it, this once: only its hash is stored."""

    config = config_of(ctx)
    password = read_password(password_stdin, "Link password") if ask or password_stdin else None
    with database_conninfo(config) as conninfo:
        new = accounts.connected(
            conninfo, lambda connection: shares.create(connection, domain, password)
        )
    click.echo(new.path)
    if new.share.embeddable:
        click.echo(shares.share_path(new.token, embed=True))
    note = (
        "with a password; it cannot be embedded (a frame cannot ask for the password)"
        if new.share.protected
        else "the second line is the variant to embed in an iframe"
    )
    click.echo(
        f"shared link {new.share.share_id} to {new.share.domain} created, {note}. Prefix "
        "it with this server's address, and store it now: it cannot be shown again.",
        err=True,
    )


@group.command("list")
@JSON_FLAG
@click.pass_context
def list_command(ctx: click.Context, as_json: bool) -> None:
    """Every link: id, site, whether it has a password, created, revoked."""

    def fetch(conninfo: str) -> list[Share]:
        return accounts.connected(conninfo, shares.list_shares)

    echo_listing(ctx, as_json, fetch, table, document)


@group.command("revoke")
@click.argument("share_id", metavar="ID", type=click.IntRange(min=1))
@click.pass_context
def revoke_command(ctx: click.Context, share_id: int) -> None:
    """Revoke a link: from now on it shows nothing. Its row stays."""

    config = config_of(ctx)
    with database_conninfo(config) as conninfo:
        share, revoked_now = accounts.connected(
            conninfo, lambda connection: shares.revoke(connection, share_id)
        )
    if revoked_now:
        click.echo(f"shared link {share.share_id} to {share.domain} revoked")
    else:
        click.echo(
            f"shared link {share.share_id} to {share.domain} was revoked already, at "
            f"{when(share.revoked_at)}"
        )
