"""`picolytics import` (Plausible's CSV export, GoatCounter's CSV; `import remove`)
and `picolytics export plausible` (docs/imports.md).

A file is read and checked whole before the database is touched; then it is stored
in one transaction (imports/store.py). Long files and exports show a progress bar
when stdout is a terminal; a summary line follows either way.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

import click
import psycopg

from picolytics.cli.common import ProgressBar, config_of
from picolytics.errors import ImportOptionError, ImportStoreError, first_line
from picolytics.imports import plausible_export, store
from picolytics.imports.batch import ImportBatch
from picolytics.imports.plausible_read import read_plausible
from picolytics.imports.summary import lines
from picolytics.imports.tables import TABLES
from picolytics.storage.database import database_conninfo
from picolytics.text import normalise_domain

SITE = click.option("--site", "domain", required=True, metavar="DOMAIN", help="The site.")
DRY_RUN = click.option("--dry-run", is_flag=True, help="Do everything, then roll it back.")


def _site(domain: str) -> str:
    site = normalise_domain(domain)
    if not site:
        raise ImportOptionError("--site: give the site's domain, e.g. example.com")
    return site


def _read(label: str, read: Callable[[ProgressBar], ImportBatch]) -> ImportBatch:
    bar = ProgressBar(label)
    try:
        return read(bar)
    finally:
        bar.close()


def _store(conninfo: str, site: str, batch: ImportBatch, dry_run: bool) -> None:
    summary = store.connected(
        conninfo, lambda connection: store.store(connection, site, batch, dry_run=dry_run)
    )
    for line in lines(summary):
        click.echo(line)


@click.group("import")
def import_group() -> None:
    """Import another tool's history as daily aggregates beside the site's own data."""


@import_group.command("plausible")
@click.argument("path", type=click.Path(path_type=Path))
@SITE
@DRY_RUN
@click.pass_context
def import_plausible(ctx: click.Context, path: Path, domain: str, dry_run: bool) -> None:
    """Import Plausible's CSV export: a zip, a folder of its CSV files, or one file.

    Days on or after the site's first native day (and from today on) are left out;
    days an earlier import covered are replaced. Exit codes: 0 imported, 1 database
    error, 2 bad argument or file.
    """

    site = _site(domain)
    batch = _read(f"reading {path.name}", lambda bar: read_plausible(path, bar))
    with database_conninfo(config_of(ctx)) as conninfo:
        _store(conninfo, site, batch, dry_run)


@import_group.command("goatcounter")
@click.argument("file", type=click.Path(path_type=Path))
@SITE
@DRY_RUN
@click.pass_context
def import_goatcounter(ctx: click.Context, file: Path, domain: str, dry_run: bool) -> None:
    """Import GoatCounter's CSV export (the file, or it gzipped).

    The same rules as `import plausible`; its times are counted in local days of the
    site's zone (`picolytics site set`). Exit codes: 0 imported, 1 database error,
    2 bad argument or file.
    """

    from picolytics.imports.goatcounter import read_goatcounter  # noqa: PLC0415

    site = _site(domain)
    if not file.is_file():
        raise ImportOptionError(f"FILE: {str(file)!r} is no file")
    size = file.stat().st_size
    with database_conninfo(config_of(ctx)) as conninfo:
        # GoatCounter's rows are instants: counted in local days of the site's zone.
        zone = store.connected(conninfo, lambda connection: store.site_zone(connection, site))

        def read(bar: ProgressBar) -> ImportBatch:
            return read_goatcounter(file, lambda done: bar(done, size), zone)

        _store(conninfo, site, _read(f"reading {file.name}", read), dry_run)


@import_group.command("remove")
@click.argument("import_id", metavar="[ID]", type=int, required=False)
@SITE
@click.pass_context
def import_remove(ctx: click.Context, import_id: int | None, domain: str) -> None:
    """Remove one import of the site (its ID as `picolytics site list --json` shows
    it), or every import of the site, with the rows it brought."""

    site = _site(domain)
    config = config_of(ctx)
    with database_conninfo(config) as conninfo:
        ids = store.connected(conninfo, lambda c: store.remove(c, site, import_id))
    if not ids:
        click.echo(f"{site}: no imports to remove")
    else:
        click.echo(f"{site}: removed import {', '.join(map(str, ids))}")


@click.group("export")
def export_group() -> None:
    """Export a site's own numbers in another tool's import format."""


def _day(text: str | None, flag: str) -> date | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ImportOptionError(f"{flag}: expected a day as YYYY-MM-DD, not {text!r}") from None


async def _export(
    conninfo: str, site: str, days: tuple[date | None, date | None], out: Path, bar: ProgressBar
) -> tuple[plausible_export.ExportSite, date, date, int]:
    first, last = days
    async with await psycopg.AsyncConnection.connect(conninfo) as connection:
        found = await plausible_export.find_site(connection, site)
        if first is None:
            if found.first_native_day is None:
                raise ImportOptionError(f"--site: {site} has no native data to export")
            first = found.first_native_day
        last = last or found.today - timedelta(days=1)
        if first > last:
            raise ImportOptionError(f"--from ({first}) is after --to ({last})")
        counts = await plausible_export.export(connection, found, first, last, out, progress=bar)
    return found, first, last, sum(counts.values())


@export_group.command("plausible")
@click.argument("out", type=click.Path(path_type=Path, dir_okay=False))
@SITE
@click.option("--from", "first", metavar="YYYY-MM-DD", help="First local day (default: the first).")
@click.option("--to", "last", metavar="YYYY-MM-DD", help="Last local day (default: yesterday).")
@click.pass_context
def export_plausible(
    ctx: click.Context, out: Path, domain: str, first: str | None, last: str | None
) -> None:
    """Write the site's own numbers (not imported ones) as Plausible's CSV export, a zip
    that Plausible (or `picolytics import plausible`) imports.

    Exit codes: 0 written, 1 database error, 2 bad argument.
    """

    site = _site(domain)
    first_day, last_day = _day(first, "--from"), _day(last, "--to")
    if first_day and last_day and first_day > last_day:
        raise ImportOptionError(f"--from ({first_day}) is after --to ({last_day})")
    partial = out.with_name(out.name + ".part")  # a failed export leaves no zip behind
    config = config_of(ctx)
    bar = ProgressBar(f"exporting {site}")
    try:
        with database_conninfo(config) as conninfo:
            work = _export(conninfo, site, (first_day, last_day), partial, bar)
            found, first_day, last_day, rows = asyncio.run(work)
        os.replace(partial, out)
    except psycopg.Error as error:
        raise ImportStoreError(f"cannot read the site's numbers: {first_line(error)}") from None
    except OSError as error:
        raise ImportOptionError(f"OUT: cannot write {out}: {error.strerror or error}") from None
    finally:
        bar.close()
        partial.unlink(missing_ok=True)
    click.echo(
        f"exported {found.domain} {first_day}..{last_day} to {out}:"
        f" {rows} rows in {len(TABLES)} files"
    )
