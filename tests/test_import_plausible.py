"""`picolytics import plausible` (imports/plausible_read.py, imports/store.py) on a
real PostgreSQL: the documented files read and stored in one transaction, imported
twice (replaced), a dry run, the first native day, `import remove` and `site list`.
The malformed inputs are in tests/test_import_plausible_errors.py.

tests/data/plausible/export/ holds one file of each table, 2024-01-01 and 2024-01-02.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result
from helpers.database import query
from helpers.events import event, run, write

from picolytics.cli import cli
from picolytics.imports.plausible_read import read_plausible
from picolytics.imports.tables import COLUMNS, TABLES, header

EXPORT = Path(__file__).parent / "data" / "plausible" / "export"
SITE = "example.com"
ROWS = {  # rows per table in EXPORT
    "imported_visitors": 2, "imported_sources": 4, "imported_pages": 3,
    "imported_entry_pages": 3, "imported_exit_pages": 3, "imported_custom_events": 3,
    "imported_locations": 3, "imported_devices": 3, "imported_browsers": 3,
    "imported_operating_systems": 3,
}  # fmt: skip


@pytest.fixture
def invoke(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    """`picolytics ARGS` in this process against a database, from an empty folder."""
    monkeypatch.chdir(tmp_path)
    for name in ("PGHOST", "PGCONNSTRING", "CONFIG_PATH", "CONFIG_NAME", "DATA_DIR"):
        monkeypatch.delenv(name, raising=False)

    def invoke(conninfo: str, *args: str) -> Result:
        env = {"PGCONNSTRING": conninfo, "LOG_FORMAT": "text"}
        return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)

    yield invoke


def zipped(folder: Path, target: Path, inside: str = "") -> Path:
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.iterdir()):
            archive.write(path, inside + path.name)
    return target


def counts(conninfo: str) -> dict[str, int]:
    """Rows of every import table (and the imports, their days and the sites)."""
    tables = ("sites", "imports", "imported_days", *TABLES)
    sql = "SELECT " + ", ".join(f"(SELECT count(*) FROM {t})" for t in tables)
    return dict(zip(tables, query(conninfo, sql)[0], strict=True))


def test_the_documented_files_are_read_typed(tmp_path: Path) -> None:
    for path in EXPORT.glob("*.csv"):  # the fixtures have exactly the documented headers
        table = "imported_" + path.name.removeprefix("imported_").rsplit("_", 2)[0]
        assert path.read_text().splitlines()[0] == ",".join(f'"{c}"' for c in header(table))  # type: ignore[arg-type]
    batch = read_plausible(EXPORT)
    assert {table: len(rows) for table, rows in batch.rows.items()} == ROWS
    assert batch.rows["imported_visitors"][0] == (date(2024, 1, 1), 12, 30, 5, 14, 1260)
    assert batch.rows["imported_locations"][0] == (
        date(2024, 1, 1), "DE", "DE-BE", "2950159", 7, 8, 700, 3, 18,
    )  # fmt: skip
    assert list(batch.rows["imported_operating_systems"][0])[1:3] == ["GNU/Linux", ""]
    assert batch.days() == (date(2024, 1, 1), date(2024, 1, 2))
    # A zip (in a folder of its own, without the prefix) holds the same rows.
    bare = tmp_path / "bare"
    bare.mkdir()
    for path in EXPORT.iterdir():
        shutil.copy(path, bare / path.name.removeprefix("imported_"))
    archive = read_plausible(zipped(bare, tmp_path / "export.zip", "site/export/"))
    assert archive.rows == batch.rows
    assert archive.source == "plausible" and len(archive.sha256) == 64
    assert archive.sha256 != batch.sha256
    assert read_plausible(EXPORT).sha256 == batch.sha256  # a folder's hash is stable


def test_import_stores_every_row_in_one_import(migrated_database: str, invoke: Any) -> None:
    result = invoke(
        migrated_database, "import", "plausible", str(EXPORT), "--site", "WWW.Example.com"
    )
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f"{SITE} (new site): imported {EXPORT} as import 1 (plausible): 30 rows,"
        " 2 days 2024-01-01..2024-01-02"
    ]
    assert counts(migrated_database) == {"sites": 1, "imports": 1, "imported_days": 2, **ROWS}
    assert query(
        migrated_database,
        "SELECT source, file_name, length(sha256), first_day, last_day FROM imports",
    ) == [("plausible", str(EXPORT), 64, date(2024, 1, 1), date(2024, 1, 2))]
    assert query(
        migrated_database,
        f"SELECT day, {', '.join(COLUMNS['imported_sources'])} FROM imported_sources"
        " WHERE source = 'newsletter'",
    ) == [
        (
            date(2024, 1, 1),
            "newsletter",
            "",
            "newsletter",
            "email",
            "spring",
            "",
            "",
            5,
            2,
            2,
            160,
            1,
        )
    ]


def test_importing_again_replaces(migrated_database: str, invoke: Any, tmp_path: Path) -> None:
    assert (
        invoke(migrated_database, "import", "plausible", str(EXPORT), "--site", SITE).exit_code == 0
    )
    archive = zipped(EXPORT, tmp_path / "again.zip")
    result = invoke(migrated_database, "import", "plausible", str(archive), "--site", SITE)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f"{SITE}: imported {archive} as import 2 (plausible): 30 rows,"
        " 2 days 2024-01-01..2024-01-02, 2 days replaced (import 1 is now empty: removed)"
    ]
    assert counts(migrated_database) == {"sites": 1, "imports": 1, "imported_days": 2, **ROWS}
    assert query(migrated_database, "SELECT DISTINCT import_id FROM imported_pages") == [(2,)]


def test_a_later_import_of_some_days_takes_only_those(
    migrated_database: str, invoke: Any, tmp_path: Path
) -> None:
    assert (
        invoke(migrated_database, "import", "plausible", str(EXPORT), "--site", SITE).exit_code == 0
    )
    one_day = tmp_path / "imported_visitors_20240102_20240103.csv"
    one_day.write_text(
        '"date","visitors","pageviews","bounces","visits","visit_duration"\n'
        '"2024-01-02",80,170,30,90,6400\n"2024-01-03",1,1,1,1,0\n'
    )
    result = invoke(migrated_database, "import", "plausible", str(one_day), "--site", SITE)
    assert result.exit_code == 0, result.output
    assert "2 rows, 2 days 2024-01-02..2024-01-03, 1 day replaced" in result.output
    # Import 1 keeps 2024-01-01 (all its tables), import 2 owns the 2nd (its visitors only).
    assert query(
        migrated_database,
        "SELECT import_id, first_day, last_day FROM imports ORDER BY 1",
    ) == [(1, date(2024, 1, 1), date(2024, 1, 1)), (2, date(2024, 1, 2), date(2024, 1, 3))]
    assert query(
        migrated_database, "SELECT day, import_id, visitors FROM imported_visitors ORDER BY 1"
    ) == [(date(2024, 1, 1), 1, 12), (date(2024, 1, 2), 2, 80), (date(2024, 1, 3), 2, 1)]
    assert query(
        migrated_database, "SELECT count(*) FROM imported_pages WHERE day > '2024-01-01'"
    ) == [(0,)]


def test_a_dry_run_changes_nothing(migrated_database: str, invoke: Any) -> None:
    assert (
        invoke(migrated_database, "import", "plausible", str(EXPORT), "--site", SITE).exit_code == 0
    )
    before = counts(migrated_database)
    imports = query(migrated_database, "SELECT * FROM imports")
    result = invoke(
        migrated_database, "import", "plausible", str(EXPORT), "--site", SITE, "--dry-run"
    )
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f"{SITE}: would import {EXPORT} (plausible): 30 rows,"
        " 2 days 2024-01-01..2024-01-02, 2 days replaced (import 1 is now empty: removed)",
        "dry run: nothing was changed",
    ]
    assert counts(migrated_database) == before
    assert query(migrated_database, "SELECT * FROM imports") == imports
    # A dry run for a site that does not exist does not make it either.
    assert (
        invoke(
            migrated_database, "import", "plausible", str(EXPORT), "--site", "new.test", "--dry-run"
        ).exit_code
        == 0
    )
    assert counts(migrated_database) == before


def test_days_from_the_first_native_day_on_are_left_out(
    migrated_database: str, invoke: Any, tmp_path: Path
) -> None:
    # Native traffic from 2024-01-02 10:00 UTC, which is 2024-01-02 in Berlin too.
    run(write(migrated_database, [event(datetime(2024, 1, 2, 10, tzinfo=UTC), 1)]))
    assert (
        invoke(migrated_database, "site", "set", SITE, "--timezone", "Europe/Berlin").exit_code == 0
    )
    result = invoke(migrated_database, "import", "plausible", str(EXPORT), "--site", SITE)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f"{SITE}: imported {EXPORT} as import 1 (plausible): 20 rows, 1 day 2024-01-01..2024-01-01",
        "1 day on or after the first native day 2024-01-02 left out",
    ]
    assert query(migrated_database, "SELECT DISTINCT day FROM imported_browsers") == [
        (date(2024, 1, 1),)
    ]
    # The native day is local: 2023-12-31 23:30 UTC is 2024-01-01 in Berlin.
    run(write(migrated_database, [event(datetime(2023, 12, 31, 23, 30, tzinfo=UTC), 2)]))
    result = invoke(migrated_database, "import", "plausible", str(EXPORT), "--site", SITE)
    assert result.output.splitlines() == [
        f"{SITE}: nothing to import from {EXPORT}",
        "2 days on or after the first native day 2024-01-01 left out",
    ]
    assert query(migrated_database, "SELECT count(*) FROM imports") == [(1,)]  # untouched
    # A rolled-up day (its raw rows pruned) is native too.
    with psycopg.connect(migrated_database) as connection:
        connection.execute(
            "INSERT INTO rollup_days (site_id, day, timezone) VALUES (1, '2023-06-01', 'UTC')"
        )
    file = tmp_path / "visitors_20230530_20230601.csv"
    file.write_text(
        '"date","visitors","pageviews","bounces","visits","visit_duration"\n'
        '"2023-05-30",1,1,1,1,0\n"2023-05-31",1,1,1,1,0\n"2023-06-01",1,1,1,1,0\n'
    )
    result = invoke(migrated_database, "import", "plausible", str(file), "--site", SITE)
    assert "2 rows, 2 days 2023-05-30..2023-05-31" in result.output
    assert "1 day on or after the first native day 2023-06-01 left out" in result.output


def test_today_and_later_are_left_out(migrated_database: str, invoke: Any, tmp_path: Path) -> None:
    today = datetime.now(UTC).date()
    days = [today - timedelta(days=1), today, today + timedelta(days=1)]
    file = tmp_path / f"imported_visitors_{days[0]:%Y%m%d}_{days[-1]:%Y%m%d}.csv"
    file.write_text(
        '"date","visitors","pageviews","bounces","visits","visit_duration"\n'
        + "".join(f'"{day}",1,1,1,1,0\n' for day in days)
    )
    result = invoke(migrated_database, "import", "plausible", str(file), "--site", SITE)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[1] == f"2 days from today ({today}) on left out"
    assert query(migrated_database, "SELECT day FROM imported_days") == [(days[0],)]


def test_remove_and_site_list(migrated_database: str, invoke: Any, tmp_path: Path) -> None:
    run(
        write(
            migrated_database, [event(datetime(2024, 2, 1, 10, tzinfo=UTC), 1, site="other.test")]
        )
    )
    assert (
        invoke(migrated_database, "import", "plausible", str(EXPORT), "--site", SITE).exit_code == 0
    )
    listed = invoke(migrated_database, "site", "list").output.splitlines()
    assert listed[0].split("  ")[-1].strip() == "imported"
    assert listed[1].startswith("other.test") and listed[1].endswith("  -")  # no import
    assert listed[2].endswith("  2024-01-01..2024-01-02 (plausible)")
    document = json.loads(invoke(migrated_database, "site", "list", "--json").output)
    assert document[1]["imports"] == [
        {
            "import_id": 1, "source": "plausible", "file_name": str(EXPORT),
            "first_day": "2024-01-01", "last_day": "2024-01-02", "days": 2,
        }
    ]  # fmt: skip
    assert document[0]["imports"] == []
    missing = invoke(migrated_database, "import", "remove", "--site", SITE, "7")
    assert (missing.exit_code, missing.output) == (
        2, f"picolytics: error: ID: {SITE} has no import 7\n"
    )  # fmt: skip
    removed = invoke(migrated_database, "import", "remove", "--site", SITE, "1")
    assert (removed.exit_code, removed.output) == (0, f"{SITE}: removed import 1\n")
    nothing: dict[str, int] = dict.fromkeys(TABLES, 0)
    assert counts(migrated_database) == {"sites": 2, "imports": 0, "imported_days": 0, **nothing}
    assert "imported" not in invoke(migrated_database, "site", "list").output
    unknown = invoke(migrated_database, "import", "remove", "--site", "nowhere.test")
    assert unknown.exit_code == 2
    assert "no site 'nowhere.test' in the database" in unknown.output
