"""The command line: the only place that configures logging, runs the event loop and
turns picolytics' errors into one clean line and an exit code."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import click

from picolytics import __version__, migrate
from picolytics.app import create_app
from picolytics.config import Config, load_config, write_default_config
from picolytics.database import database_conninfo
from picolytics.errors import PicolyticsError
from picolytics.logs import configure_logging
from picolytics.server import run

log = logging.getLogger(__name__)

DEFAULT_CONFIG_FILE = "config.yaml"


class PicolyticsGroup(click.Group):
    """Shows a PicolyticsError as one `picolytics: error: ...` line and its exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PicolyticsError as error:
            click.echo(f"picolytics: error: {error}", err=True)
            ctx.exit(error.exit_code)


def _config(ctx: click.Context) -> Config:
    """Load and validate the configuration, then set up logging from it."""
    config = load_config(ctx.find_root().params.get("config_file"), os.environ)
    configure_logging(config.log_format, config.debug)
    return config


def _write_default_config(path: str) -> None:
    write_default_config(Path(path))
    click.echo(f"wrote the default configuration to {path}")


@click.group(
    cls=PicolyticsGroup,
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, "--version", "-v", prog_name="picolytics")
@click.option(
    "-c",
    "--config",
    "config_file",
    metavar="FILE",
    help="YAML config file (default: CONFIG_PATH/CONFIG_NAME.yaml if present).",
)
@click.option(
    "--write-default-config",
    "default_config_path",
    metavar="[PATH]",
    is_flag=False,
    flag_value=DEFAULT_CONFIG_FILE,
    default=None,
    help=f"Write a commented default config (default {DEFAULT_CONFIG_FILE}) and exit.",
)
@click.pass_context
def cli(ctx: click.Context, config_file: str | None, default_config_path: str | None) -> None:
    """Self-hosted, privacy-first web analytics on PostgreSQL.

    With no command, runs the server (`serve`), as the original picolytics did.
    """
    if default_config_path is not None:
        _write_default_config(default_config_path)
        ctx.exit(0)
    if ctx.invoked_subcommand is None:
        ctx.invoke(serve)


@cli.command()
@click.pass_context
def serve(ctx: click.Context) -> None:
    """Run the analytics server (starts the embedded PostgreSQL if no database is set)."""

    config = _config(ctx)
    with database_conninfo(config) as conninfo:
        if config.skip_migrations:
            log.info("SKIP_MIGRATIONS is set: not applying migrations")
        else:
            applied = migrate.apply(conninfo)
            log.info("database schema up to date (%d migration(s) applied now)", len(applied))
        run(create_app(config, conninfo=conninfo), config.listen_addr)


@cli.command("migrate")
@click.option(
    "--check", is_flag=True, help="Only list pending migrations; exit 1 if there are any."
)
@click.pass_context
def migrate_command(ctx: click.Context, check: bool) -> None:
    """Apply pending database migrations."""

    config = _config(ctx)
    with database_conninfo(config) as conninfo:
        if check:
            waiting = migrate.pending(conninfo)
            for migration in waiting:
                click.echo(f"pending: {migration}")
            if waiting:
                ctx.exit(1)
            click.echo("no pending migrations")
            return
        for migration in migrate.apply(conninfo):
            click.echo(f"applied: {migration}")
        click.echo("database schema up to date")


@cli.command("write-default-config")
@click.argument("path", default=DEFAULT_CONFIG_FILE)
def write_default_config_command(path: str) -> None:
    """Write a commented default config file; never overwrites."""
    _write_default_config(path)


def main() -> None:
    cli(prog_name="picolytics")


if __name__ == "__main__":  # pragma: no cover
    main()
