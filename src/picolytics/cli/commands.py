"""The root command and the commands of the server's life: serve, migrate, prune,
rollup, report, site, write-default-config."""

from __future__ import annotations

import asyncio
import logging
import sys
from datetime import date
from pathlib import Path

import click

from picolytics import __version__
from picolytics.cli.common import (
    JSON_FLAG,
    PicolyticsGroup,
    ProgressBar,
    config_of,
    echo_listing,
)
from picolytics.config import write_default_config
from picolytics.dashboard.setup import announce_setup_link
from picolytics.errors import (
    PruneBusyError,
    RollupError,
    RollupOptionError,
    ServerError,
)
from picolytics.report import render as report_render
from picolytics.report.query import (
    DEFAULT_DAYS,
    DEFAULT_LIMIT,
    PeriodOptions,
    report_from,
)
from picolytics.serve.app import admin_app_for, create_app
from picolytics.serve.limits import ServerLimits
from picolytics.serve.server import Listener, run
from picolytics.serve.supervisor import serve_workers
from picolytics.stats import periods as stats_periods
from picolytics.storage import citus, migrate, prune, roller, sites_admin
from picolytics.storage.database import database_conninfo
from picolytics.storage.read_database import check_read_database, reads_conninfo
from picolytics.text import normalise_domain
from picolytics.tls.endpoints import autotls_endpoints

log = logging.getLogger(__name__)

DEFAULT_CONFIG_FILE = "config.yaml"


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

    config = config_of(ctx)
    with database_conninfo(config) as conninfo:
        if config.skip_migrations:
            log.info("SKIP_MIGRATIONS is set: not applying migrations")
        else:
            applied = migrate.apply(conninfo)
            log.info("database schema up to date (%d migration(s) applied now)", len(applied))
        check_read_database(config, conninfo)  # PGREADCONNSTRING: once, before any worker
        # Once, before any worker starts: with no account yet, the link to make one.
        asyncio.run(announce_setup_link(conninfo, config))
        if config.workers > 1:
            if not serve_workers(config, conninfo):
                raise ServerError("a worker did not stop cleanly; see the log above")
            return
        app = create_app(config, conninfo=conninfo)
        limits = ServerLimits.of(config)
        if config.autotls_enabled:  # HTTPS and port 80 instead of LISTEN_ADDR
            tls = autotls_endpoints(config, conninfo)
            listeners = [
                Listener(app, tls.https_addr, "public", ssl_context=tls.ssl_context, limits=limits),
                Listener(
                    tls.challenge_app,
                    tls.http_addr,
                    "HTTP (ACME challenges, redirect to HTTPS)",
                ),
            ]
        else:
            listeners = [
                Listener(app, config.listen_addr, "public", server=config.server, limits=limits)
            ]
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

    config = config_of(ctx)
    with database_conninfo(config) as conninfo:
        if check:
            click.echo(f"database: {citus.mode_of(conninfo)}")
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
    """Remove events, sessions and bot counts older than the retention period.

    Every due day is rolled up first, so its numbers outlive the raw rows; rollups
    older than PRUNE_ROLLUP_DAYS (if not 0) go too.
    """

    config = config_of(ctx)
    keep = days if days is not None else config.prune_days
    if keep == 0:
        click.echo("PRUNE_DAYS is 0 (keep everything) and no --days given: nothing to prune")
        return
    keep_rollups = config.prune_rollup_days
    if keep_rollups and keep_rollups <= keep:
        raise click.BadParameter(
            f"must be below PRUNE_ROLLUP_DAYS ({keep_rollups}): rollups outlive raw rows",
            param_hint="'--days'",
        )
    with database_conninfo(config) as conninfo:
        report = asyncio.run(prune.prune(conninfo, keep, rollup_days=keep_rollups, dry_run=dry_run))
    if report.skipped:
        raise PruneBusyError("another process is pruning; nothing was done")
    for line in prune.summary(report):
        click.echo(line)


def _rollup_day(text: str | None, flag: str) -> date | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise RollupOptionError(f"{flag}: expected a day as YYYY-MM-DD, not {text!r}") from None


def _waiting() -> None:
    click.echo("another process is rolling up; waiting for it to finish...", err=True)


@cli.command("rollup")
@click.option("--rebuild", is_flag=True, help="Recompute rolled-up days from raw rows.")
@click.option("--site", metavar="DOMAIN", help="With --rebuild: only this site.")
@click.option("--from", "first", metavar="YYYY-MM-DD", help="With --rebuild: the first local day.")
@click.option(
    "--to", "last", metavar="YYYY-MM-DD", help="With --rebuild: the last local day, included."
)
@click.pass_context
def rollup_command(
    ctx: click.Context, rebuild: bool, site: str | None, first: str | None, last: str | None
) -> None:
    """Bring the read model up to date now, or rebuild it from raw rows.

    Rolls up every closed day that is due (the server does this by itself every
    ROLLUP_INTERVAL_SEC); waits if another process is rolling up. With --rebuild,
    recomputes the rolled-up days of the range (default: every closed day with raw
    rows) from raw rows. Both can run any time, as often as wanted.

    Exit codes: 0 done, 1 database error or a day that failed, 2 bad option.
    """

    if not rebuild and (site or first or last):
        raise RollupOptionError("--site, --from and --to need --rebuild")
    first_day, last_day = _rollup_day(first, "--from"), _rollup_day(last, "--to")
    if first_day is not None and last_day is not None and first_day > last_day:
        raise RollupOptionError(f"--from ({first_day}) is after --to ({last_day})")
    domain = normalise_domain(site) if site is not None else None
    config = config_of(ctx)
    progress = ProgressBar("rebuilding" if rebuild else "rolling up", show_pos=True)
    try:
        with database_conninfo(config) as conninfo:
            if rebuild:
                work = roller.rebuild(
                    conninfo,
                    site=domain,
                    first=first_day,
                    last=last_day,
                    progress=progress,
                    on_wait=_waiting,
                )
            else:
                work = roller.catch_up(conninfo, progress=progress, wait=True, on_wait=_waiting)
            report = asyncio.run(work)
    finally:
        progress.close()
    click.echo(roller.summary(report))
    if report.failed:
        for failure in report.failed:
            click.echo(f"failed: {failure}", err=True)
        raise RollupError(f"{len(report.failed)} day(s) could not be rolled up")


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
    help=f"The last N local days, today included (default {DEFAULT_DAYS}).",
)
@click.option("--from", "first", metavar="YYYY-MM-DD", help="First local day of the period.")
@click.option(
    "--to",
    "last",
    metavar="YYYY-MM-DD",
    help="Last local day of the period, included (default today); needs --from.",
)
@click.option(
    "--timezone",
    "zone",
    metavar="ZONE",
    help="IANA zone of the days (default: the sites' zone if they share one, else UTC).",
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
@click.option(
    "--no-imports",
    is_flag=True,
    help="Leave imported data out (default: added on the days it covers).",
)
@click.pass_context
def report_command(
    ctx: click.Context,
    *,
    sites: tuple[str, ...],
    days: int | None,
    first: str | None,
    last: str | None,
    zone: str | None,
    output_format: str,
    output: str | None,
    limit: int,
    no_imports: bool,
) -> None:
    """Print visitors, visits, pageviews, top pages, sources... of a period.

    Exit codes: 0 report written, 1 database error, 2 bad option (date, site, zone),
    3 nothing to report (no site in the database yet).
    """

    # Checked before connecting; "today" is resolved in the report's zone.
    period = PeriodOptions(days, first, last)
    if zone is not None:
        stats_periods.zone(zone, "--timezone")
    config = config_of(ctx)
    with reads_conninfo(config) as conninfo:  # PGREADCONNSTRING alone, if set
        result = report_from(
            conninfo,
            period,
            sites,
            timezone=zone,
            limit=limit or None,
            timeout_s=config.query_timeout_sec,
            imports=not no_imports,
        )
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


@cli.group("site")
def site_group() -> None:
    """Show the sites, and set each one's time zone."""


@site_group.command("list")
@JSON_FLAG
@click.pass_context
def site_list_command(ctx: click.Context, as_json: bool) -> None:
    """Each site's time zone, first and last day with data, and rolled-up days."""

    def fetch(conninfo: str) -> list[sites_admin.SiteSummary]:
        return sites_admin.connected(conninfo, sites_admin.list_sites)

    echo_listing(ctx, as_json, fetch, sites_admin.table, sites_admin.document)


@site_group.command("set")
@click.argument("domain")
@click.option(
    "--timezone",
    "zone",
    required=True,
    metavar="ZONE",
    help="The site's IANA time zone, e.g. Europe/Berlin (default of every site: UTC).",
)
@click.pass_context
def site_set_command(ctx: click.Context, domain: str, zone: str) -> None:
    """Set a site's time zone: its periods and day, week and month buckets.

    Raw events and visits stay as they are; days rolled up in the old zone are read
    from raw rows until the roller rolls them again in the new one.
    """

    stats_periods.zone(zone, "--timezone")  # Python knows it; PostgreSQL is asked next
    site = normalise_domain(domain)
    config = config_of(ctx)
    with database_conninfo(config) as conninfo:
        change = sites_admin.connected(
            conninfo, lambda connection: sites_admin.set_timezone(connection, site, zone)
        )
    for line in sites_admin.summary(change):
        click.echo(line)


@cli.command("write-default-config")
@click.argument("path", default=DEFAULT_CONFIG_FILE)
def write_default_config_command(path: str) -> None:
    """Write a commented default config file; never overwrites."""
    _write_default_config(path)


def main() -> None:
    cli(prog_name="picolytics")
