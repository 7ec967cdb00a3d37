"""The command line: the only place that configures logging, runs the event loop and
turns picolytics' errors into one clean line and an exit code."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from picolytics import __version__
from picolytics.config import Config, load_config, write_default_config
from picolytics.errors import PicolyticsError, PruneBusyError, ServerError
from picolytics.logs import configure_logging
from picolytics.report import render as report_render
from picolytics.report.query import DEFAULT_DAYS, DEFAULT_LIMIT, report_from, resolve_period
from picolytics.serve.app import admin_app_for, create_app
from picolytics.serve.server import Listener, run
from picolytics.serve.supervisor import serve_workers
from picolytics.storage import migrate, prune
from picolytics.storage.database import database_conninfo
from picolytics.tls.endpoints import autotls_endpoints

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
        if config.workers > 1:
            if not serve_workers(config, conninfo):
                raise ServerError("a worker did not stop cleanly; see the log above")
            return
        app = create_app(config, conninfo=conninfo)
        if config.autotls_enabled:  # HTTPS and port 80 instead of LISTEN_ADDR
            tls = autotls_endpoints(config, conninfo)
            listeners = [
                Listener(app, tls.https_addr, "public", ssl_context=tls.ssl_context),
                Listener(
                    tls.challenge_app,
                    tls.http_addr,
                    "HTTP (ACME challenges, redirect to HTTPS)",
                ),
            ]
        else:
            listeners = [Listener(app, config.listen_addr, "public", server=config.server)]
        if config.admin_listen:
            listeners.append(Listener(admin_app_for(app, config), config.admin_listen, "admin"))
        run(*listeners)


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


@cli.command("prune")
@click.option(
    "--days",
    type=click.IntRange(1, 100_000),
    default=None,
    help="Keep this many days before today (UTC); overrides PRUNE_DAYS.",
)
@click.option("--dry-run", is_flag=True, help="Only show what would be removed.")
@click.pass_context
def prune_command(ctx: click.Context, days: int | None, dry_run: bool) -> None:
    """Remove events, sessions and bot counts older than the retention period."""

    config = _config(ctx)
    keep = days if days is not None else config.prune_days
    if keep == 0:
        click.echo("PRUNE_DAYS is 0 (keep everything) and no --days given: nothing to prune")
        return
    with database_conninfo(config) as conninfo:
        report = asyncio.run(prune.prune(conninfo, keep, dry_run=dry_run))
    if report.skipped:
        raise PruneBusyError("another process is pruning; nothing was done")
    for line in prune.summary(report):
        click.echo(line)


def _stdout_takes_unicode() -> bool:
    try:
        "\u2588\u2026\u2013".encode(sys.stdout.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


@cli.command("report")
@click.option(
    "--site",
    "sites",
    multiple=True,
    metavar="DOMAIN",
    help="Report on this site (repeatable); default: every site together.",
)
@click.option(
    "--days",
    type=int,
    default=None,
    help=f"The last N UTC days, today included (default {DEFAULT_DAYS}).",
)
@click.option("--from", "first", metavar="YYYY-MM-DD", help="First UTC day of the period.")
@click.option(
    "--to",
    "last",
    metavar="YYYY-MM-DD",
    help="Last UTC day of the period, included (default today); needs --from.",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(report_render.FORMATS),
    default="text",
    show_default=True,
    help="text for a terminal, json, or csv (a zip with one file per table).",
)
@click.option(
    "--output",
    "-o",
    metavar="PATH",
    help="Write to PATH (csv default: picolytics-report-FROM-to-TO.zip; - = stdout).",
)
@click.option(
    "--limit",
    type=click.IntRange(0, 1_000_000),
    default=DEFAULT_LIMIT,
    show_default=True,
    help="Rows per table; 0 for all.",
)
@click.pass_context
def report_command(
    ctx: click.Context,
    *,
    sites: tuple[str, ...],
    days: int | None,
    first: str | None,
    last: str | None,
    output_format: str,
    output: str | None,
    limit: int,
) -> None:
    """Print visitors, visits, pageviews, top pages, sources... of a period.

    Exit codes: 0 report written, 1 database error, 2 bad option (date, site),
    3 nothing to report (no site in the database yet).
    """

    period = resolve_period(days, first, last, datetime.now(UTC).date())
    config = _config(ctx)
    with database_conninfo(config) as conninfo:
        result = report_from(conninfo, period, sites, limit=limit or None)
    if output is None and output_format == "csv":
        output = report_render.default_zip_name(result)
    if output is None or output == "-":
        # Bytes (UTF-8), so no terminal encoding fails; blocks become # where unsupported.
        ascii_only = not _stdout_takes_unicode()
        sys.stdout.buffer.write(report_render.render(result, output_format, ascii_only=ascii_only))
        sys.stdout.buffer.flush()
        return
    report_render.write_file(Path(output), report_render.render(result, output_format))
    click.echo(f"wrote the report to {output}", err=True)


@cli.command("write-default-config")
@click.argument("path", default=DEFAULT_CONFIG_FILE)
def write_default_config_command(path: str) -> None:
    """Write a commented default config file; never overwrites."""
    _write_default_config(path)


def main() -> None:
    cli(prog_name="picolytics")


if __name__ == "__main__":  # pragma: no cover
    main()
