"""What every command shares: the group class that turns picolytics' errors into one
clean line and an exit code, the loading of the configuration, and the `list [--json]`
commands' printing (rows fetched over the configured database, shown as an aligned
table or as JSON, times in UTC)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import click

from picolytics.config import Config, load_config
from picolytics.errors import PicolyticsError
from picolytics.logs import configure_logging
from picolytics.storage.database import database_conninfo

R = TypeVar("R")

JSON_FLAG = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


class PicolyticsGroup(click.Group):
    """Shows a PicolyticsError as one `picolytics: error: ...` line and its exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PicolyticsError as error:
            click.echo(f"picolytics: error: {error}", err=True)
            ctx.exit(error.exit_code)


def config_of(ctx: click.Context) -> Config:
    """Load and validate the configuration, then set up logging from it."""
    config = load_config(ctx.find_root().params.get("config_file"), os.environ)
    configure_logging(config.log_format, config.debug)
    return config


def when(moment: datetime | None) -> str:
    """A time for a table: minutes in UTC, or "-" for none."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if moment else "-"


def iso(moment: datetime | None) -> str | None:
    """A time for JSON: ISO 8601 in UTC, or null for none."""
    return moment.astimezone(UTC).isoformat() if moment else None


def aligned(columns: Sequence[str], rows: Sequence[Sequence[str]], empty: str) -> list[str]:
    """A header and rows in aligned columns, for a terminal; `empty` alone if no rows."""
    if not rows:
        return [empty]
    every = [tuple(columns), *(tuple(row) for row in rows)]
    widths = [max(len(row[n]) for row in every) for n in range(len(columns))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in every
    ]


def echo_listing(
    ctx: click.Context,
    as_json: bool,
    fetch: Callable[[str], R],
    table: Callable[[R], list[str]],
    document: Callable[[R], list[dict[str, Any]]],
) -> None:
    """A `list` command: `fetch(conninfo)` from the configured database, then print it
    as `table` lines, or with --json as `document`, indented, non-ASCII kept."""
    config = config_of(ctx)
    with database_conninfo(config) as conninfo:
        found = fetch(conninfo)
    if as_json:
        click.echo(json.dumps(document(found), indent=2, ensure_ascii=False))
        return
    for line in table(found):
        click.echo(line)


class ProgressBar:
    """Progress as a bar when stdout is a terminal, nothing elsewhere (a summary line
    follows either way): `bar(done, total)` as work goes on, `bar.close()` at the end."""

    def __init__(self, label: str, *, show_pos: bool = False) -> None:
        self.label, self.show_pos = label, show_pos
        self.shown = sys.stdout.isatty()
        self.bar: Any = None
        self.done = 0

    def __call__(self, done: int, total: int) -> None:
        if not self.shown or total == 0:
            return
        if self.bar is None:
            self.bar = click.progressbar(length=total, label=self.label, show_pos=self.show_pos)
            self.bar.__enter__()
        self.bar.update(done - self.done)
        self.done = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None
