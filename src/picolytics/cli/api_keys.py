"""`picolytics api-key create|list|revoke`: the Stats API's keys (storage/api_keys.py).

A key is printed once, by `create`; afterwards only its name and first characters
are known (docs/api-keys.md).
"""

from __future__ import annotations

from typing import Any

import click

from picolytics.cli.common import JSON_FLAG, aligned, config_of, echo_listing, iso, when
from picolytics.storage import api_keys
from picolytics.storage.database import database_conninfo

COLUMNS = ("name", "key", "sites", "created", "revoked")


def _sites(key: api_keys.ApiKey) -> str:
    return ", ".join(key.sites) if key.sites else "all sites"


def table(keys: list[api_keys.ApiKey]) -> list[str]:
    """`picolytics api-key list` for a terminal: one aligned line per key."""
    rows = [
        (key.name, key.prefix + "...", _sites(key), when(key.created_at), when(key.revoked_at))
        for key in keys
    ]
    return aligned(COLUMNS, rows, "no API keys yet (`picolytics api-key create --name NAME`)")


def document(keys: list[api_keys.ApiKey]) -> list[dict[str, Any]]:
    """`picolytics api-key list --json`: times in ISO 8601 UTC, sites null for all."""
    return [
        {
            "name": key.name,
            "prefix": key.prefix,
            "sites": list(key.sites) if key.sites else None,
            "created_at": iso(key.created_at),
            "revoked_at": iso(key.revoked_at),
        }
        for key in keys
    ]


@click.group("api-key")
def group() -> None:
    """Create, list and revoke the Stats API's keys."""


@group.command("create")
@click.option("--name", required=True, help="A name to tell the key by (unique, 1-64 chars).")
@click.option(
    "--site",
    "sites",
    multiple=True,
    metavar="DOMAIN",
    help="A site the key may read (repeatable); default: every site.",
)
@click.pass_context
def create_command(ctx: click.Context, name: str, sites: tuple[str, ...]) -> None:
    """Create a key and print it, this once: only its hash is stored."""

    config = config_of(ctx)
    with database_conninfo(config) as conninfo:
        new = api_keys.connected(
            conninfo, lambda connection: api_keys.create(connection, name, sites)
        )
    click.echo(new.clear)
    click.echo(
        f"API key {new.key.name!r} created, reading {_sites(new.key)}. Store it now: it "
        "cannot be shown again (only its hash is kept).",
        err=True,
    )


@group.command("list")
@JSON_FLAG
@click.pass_context
def list_command(ctx: click.Context, as_json: bool) -> None:
    """Every key: name, first characters, sites, created, revoked."""

    def fetch(conninfo: str) -> list[api_keys.ApiKey]:
        return api_keys.connected(conninfo, api_keys.list_keys)

    echo_listing(ctx, as_json, fetch, table, document)


@group.command("revoke")
@click.argument("name")
@click.pass_context
def revoke_command(ctx: click.Context, name: str) -> None:
    """Revoke a key: from now on it is refused. Its row stays, and so does its name."""

    config = config_of(ctx)
    with database_conninfo(config) as conninfo:
        key, revoked_now = api_keys.connected(
            conninfo, lambda connection: api_keys.revoke(connection, name)
        )
    if revoked_now:
        click.echo(f"API key {key.name!r} ({key.prefix}...) revoked")
    else:
        click.echo(f"API key {key.name!r} was revoked already, at {when(key.revoked_at)}")
