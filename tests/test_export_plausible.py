"""`picolytics export plausible` (imports/plausible_export.py): a site's native
numbers written as Plausible's ten files, then imported into an empty database.

Round trip: for the exported days, the imported rows hold exactly what the query
layer answers on the source database (per day and value of each file's dimension),
and the query layer of the target, asked with include_imports, answers what the
source answers natively: totals, the day series and each breakdown the files hold.

The data (UTC, March 2024; day 1 is rolled up, so both paths of the source count):

  visitor  day  events                                          source
  1        1    09:00 load /, 09:01 nav /pricing, 09:02 signup  google.com (referrer)
  2        1    15:00 load /pricing                             newsletter (utm, email)
  3        1    16:00 load / (in the US, on Firefox)            (direct)
  2        2    10:00 load /docs, 10:05 nav /                   google.com
  4        2    11:00 load /                                    google.com, utm google
  5        3    12:00 load /missing, 12:00:10 404 {path}        (direct)
"""

from __future__ import annotations

import asyncio
import csv
import io
import zipfile
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from helpers.database import new_database, query
from helpers.events import event, run, write
from psycopg import AsyncConnection

from picolytics.cli import cli
from picolytics.dimensions import Dimension, Metric
from picolytics.events import Agent, Location, QueuedEvent
from picolytics.imports.plausible_export import BREAKDOWNS
from picolytics.imports.tables import COLUMNS, TABLES, TEXT_COLUMNS, TableName, header
from picolytics.stats import engine, periods
from picolytics.stats.query import Breakdown, Query
from picolytics.storage import migrate
from picolytics.storage.rollup import roll_day

SITE = "example.com"
DAY1 = date(2024, 3, 1)
LAST = date(2024, 3, 3)
MIN = timedelta(minutes=1)
US = Location("US", "Illinois", "Springfield")
FIREFOX = Agent("Firefox", "121", "Linux", "", "desktop", None)


def at(day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2024, 3, day, hour, minute, second, tzinfo=UTC)


def events() -> list[QueuedEvent]:
    return [
        event(at(1, 9), 1, referrer_host="google.com"),
        event(at(1, 9, 1), 1, name="nav", path="/pricing"),
        event(at(1, 9, 2), 1, name="signup", path="/pricing"),
        event(at(1, 15), 2, path="/pricing", utm_source="newsletter", utm_medium="email"),
        replace(event(at(1, 16), 3), location=US, agent=FIREFOX),
        event(at(2, 10), 2, path="/docs", referrer_host="google.com"),
        event(at(2, 10, 5), 2, name="nav", path="/"),
        event(at(2, 11), 4, referrer_host="google.com", utm_source="google"),
        event(at(3, 12), 5, path="/missing"),
        event(at(3, 12, 0, 10), 5, name="404", path="/missing", props={"path": "/missing"}),
    ]


@pytest.fixture
def invoke(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    monkeypatch.chdir(tmp_path)
    for name in ("PGHOST", "PGCONNSTRING", "CONFIG_PATH", "CONFIG_NAME", "DATA_DIR"):
        monkeypatch.delenv(name, raising=False)

    def invoke(conninfo: str, *args: str) -> Result:
        env = {"PGCONNSTRING": conninfo, "LOG_FORMAT": "text"}
        return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)

    yield invoke


async def _roll(conninfo: str) -> None:
    async with await AsyncConnection.connect(conninfo, autocommit=True) as connection:
        await roll_day(connection, 1, DAY1, "UTC")


@pytest.fixture
def source(migrated_database: str) -> str:
    run(write(migrated_database, events()))
    run(_roll(migrated_database))
    return migrated_database


@pytest.fixture
def target(admin_conninfo: str) -> Iterator[str]:
    with new_database(admin_conninfo) as conninfo:
        migrate.apply(conninfo)
        yield conninfo


def ask(conninfo: str, query: Query) -> list[tuple[Any, ...]]:
    async def answer() -> list[tuple[Any, ...]]:
        async with await AsyncConnection.connect(conninfo) as connection:
            result = await engine.run(connection, query)
            if query.include_imports:
                assert result.imports is not None and result.imports.included, result.imports
            return [(r.time, r.parent, r.value, tuple(r.metrics.values())) for r in result.rows]

    return asyncio.run(answer())


def site_id(conninfo: str) -> int:
    return int(query(conninfo, "SELECT site_id FROM sites WHERE domain = %s", (SITE,))[0][0])


def the_query(
    conninfo: str,
    metrics: tuple[Metric, ...],
    dimension: Dimension | None,
    interval: bool = True,
    imports: bool = False,
) -> Query:
    return Query(
        site_ids=(site_id(conninfo),),
        period=periods.days(DAY1, LAST),
        metrics=metrics,
        interval="day" if interval else None,
        breakdown=Breakdown(dimension) if dimension else None,
        include_imports=imports,
    )


def exported(invoke: Any, source: str, tmp_path: Path) -> Path:
    out = tmp_path / "site.zip"
    result = invoke(
        source,
        "export",
        "plausible",
        "--site",
        SITE,
        "--from",
        str(DAY1),
        "--to",
        str(LAST),
        str(out),
    )
    assert result.exit_code == 0, result.output
    assert (
        result.output == f"exported {SITE} 2024-03-01..2024-03-03 to {out}: 40 rows in 10 files\n"
    )
    return out


def test_the_zip_holds_the_ten_files_as_plausible_writes_them(
    source: str, invoke: Any, tmp_path: Path
) -> None:
    out = exported(invoke, source, tmp_path)
    with zipfile.ZipFile(out) as archive:
        assert sorted(archive.namelist()) == sorted(f"{t}_20240301_20240303.csv" for t in TABLES)
        files = {name.rsplit("_", 2)[0]: archive.read(name).decode() for name in archive.namelist()}
    for table in TABLES:
        assert files[table].splitlines()[0] == ",".join(f'"{c}"' for c in header(table))
    assert files["imported_visitors"].splitlines()[1:] == [
        # 3 visits, 1 bounce-free (visitor 1: 2 minutes); visitor 2 on day 2: 5 minutes.
        '"2024-03-01",3,4,2,3,120',
        '"2024-03-02",2,3,1,2,300',
        '"2024-03-03",1,1,0,1,10',  # the 404 event, 10 s later: engaged
    ]
    sources = list(csv.reader(io.StringIO(files["imported_sources"])))[1:]
    assert sources == [
        # The referrer where no visit of the source had UTM tags, utm_source where all had.
        ["2024-03-01", "", "", "", "", "", "", "", "1", "1", "1", "0", "1"],
        ["2024-03-01", "google.com", "google.com", "", "", "", "", "", "2", "1", "1", "120", "0"],
        ["2024-03-01", "newsletter", "", "newsletter", "", "", "", "", "1", "1", "1", "0", "1"],
        ["2024-03-02", "google", "", "google", "", "", "", "", "1", "1", "1", "0", "1"],
        ["2024-03-02", "google.com", "google.com", "", "", "", "", "", "2", "1", "1", "300", "0"],
        ["2024-03-03", "", "", "", "", "", "", "", "1", "1", "1", "10", "0"],
    ]
    assert '"2024-03-01","US","",0,1,1,0,1,1' in files["imported_locations"].splitlines()
    assert '"2024-03-01","Desktop",3,3,120,2,4' in files["imported_devices"].splitlines()
    assert files["imported_custom_events"].splitlines()[1:] == [
        '"2024-03-01","signup","","",1,1',
        '"2024-03-03","404","","",1,1',
    ]


def imported_rows(conninfo: str, table: TableName) -> dict[tuple[Any, ...], dict[str, int]]:
    columns = COLUMNS[table]
    texts = [c for c in columns if c in TEXT_COLUMNS]
    counts = [c for c in columns if c not in TEXT_COLUMNS]
    found = query(conninfo, f"SELECT day, {', '.join(columns)} FROM {table}")
    out: dict[tuple[Any, ...], dict[str, int]] = {}
    for day, *values in found:
        named = dict(zip(columns, values, strict=True))
        key = (day, *(named[c] for c in texts))
        assert key not in out  # one row per day and value
        out[key] = {c: named[c] for c in counts}
    return out


# The format's count columns, as the query layer's metrics.
METRICS: dict[str, Metric] = {
    "visitors": "visitors", "visits": "visits", "entrances": "visits", "exits": "visits",
    "pageviews": "pageviews", "bounces": "bounces", "events": "events",
    "visit_duration": "total_duration",
}  # fmt: skip


def test_the_imported_rows_are_the_query_layers_answers(
    source: str, target: str, invoke: Any, tmp_path: Path
) -> None:
    out = exported(invoke, source, tmp_path)
    result = invoke(target, "import", "plausible", str(out), "--site", SITE)
    assert result.exit_code == 0, result.output
    assert "40 rows, 3 days 2024-03-01..2024-03-03" in result.output
    for table in TABLES:
        rows = imported_rows(target, table)
        dimension = BREAKDOWNS[table]
        counts = [c for c in COLUMNS[table] if c not in TEXT_COLUMNS]
        metrics: tuple[Metric, ...] = tuple(dict.fromkeys(METRICS.get(c, "visits") for c in counts))
        answered = ask(source, the_query(source, metrics, dimension))
        assert len(answered) == len(rows), table
        for day, parent, value, values in answered:
            named = dict(zip(metrics, values, strict=True))
            key = _key(table, day, parent, value)
            assert key in rows, (table, key, rows)
            for column in counts:
                assert rows[key][column] == named[METRICS[column]], (table, key, column)


def _key(table: TableName, day: date, parent: str, value: str | None) -> tuple[Any, ...]:
    value = value or ""
    if table == "imported_visitors":
        return (day,)
    if table == "imported_sources":
        source = "" if value == "(direct)" else value
        return next_source_key(day, source)
    if table == "imported_pages":
        return (day, SITE, value)
    if table == "imported_custom_events":
        return (day, value, "", "")
    if table == "imported_locations":
        return (day, value, "", "0")
    if table == "imported_devices":
        return (day, value.capitalize())
    if table in ("imported_browsers", "imported_operating_systems"):
        return (day, parent, value)
    return (day, value)


def next_source_key(day: date, source: str) -> tuple[Any, ...]:
    """The row's text columns, as the data above makes them."""
    referrer = source if source == "google.com" else ""
    utm = source if source in ("newsletter", "google") else ""
    return (day, source, referrer, utm, "", "", "", "")


QUESTIONS: list[tuple[tuple[Metric, ...], Dimension | None, bool]] = [
    (
        (
            "visitors",
            "visits",
            "pageviews",
            "bounces",
            "bounce_rate",
            "visit_duration",
            "views_per_visit",
            "total_duration",
        ),
        None,
        False,
    ),
    (
        (
            "visitors",
            "visits",
            "pageviews",
            "bounces",
            "bounce_rate",
            "visit_duration",
            "views_per_visit",
        ),
        None,
        True,
    ),
    *[
        (("visitors", "visits", "pageviews", "bounces", "visit_duration"), dimension, interval)
        for dimension in (
            "source",
            "entry_page",
            "exit_page",
            "country",
            "device",
            "browser",
            "browser_version",
            "os",
            "os_version",
        )
        for interval in (False, True)
    ],
    *[(("visitors", "visits", "pageviews"), "page", interval) for interval in (False, True)],
    *[(("visitors", "events"), "event", interval) for interval in (False, True)],
]


@pytest.fixture(scope="module")
def round_trip(
    module_database: str, admin_conninfo: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """The source (the data above) and a target it was exported to, made once."""
    run(write(module_database, events()))
    run(_roll(module_database))
    out = tmp_path_factory.mktemp("export") / "site.zip"
    with pytest.MonkeyPatch.context() as patch, new_database(admin_conninfo) as target:
        for name in ("PGHOST", "PGCONNSTRING", "CONFIG_PATH", "CONFIG_NAME", "DATA_DIR"):
            patch.delenv(name, raising=False)
        migrate.apply(target)
        for conninfo, args in [
            (module_database, ("export", "plausible", "--site", SITE, "--from", str(DAY1),
                               "--to", str(LAST), str(out))),
            (target, ("import", "plausible", str(out), "--site", SITE)),
        ]:  # fmt: skip
            env = {"PGCONNSTRING": conninfo, "LOG_FORMAT": "text"}
            result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
            assert result.exit_code == 0, result.output
        yield module_database, target


@pytest.mark.parametrize(("metrics", "dimension", "interval"), QUESTIONS)
def test_the_target_answers_what_the_source_answers(
    round_trip: tuple[str, str],
    metrics: tuple[Metric, ...], dimension: Dimension | None, interval: bool,
) -> None:  # fmt: skip
    source, target = round_trip
    native = ask(source, the_query(source, metrics, dimension, interval))
    imported = ask(target, the_query(target, metrics, dimension, interval, imports=True))
    assert imported == native
    assert native  # the question has an answer to compare


def test_export_errors(source: str, invoke: Any, tmp_path: Path) -> None:
    out = tmp_path / "x.zip"
    cases = [
        (["--site", "nowhere.test"], "--site: no site 'nowhere.test' in the database"),
        (
            ["--site", SITE, "--from", "2024-03-05", "--to", "2024-03-01"],
            "--from (2024-03-05) is after --to (2024-03-01)",
        ),
        (["--site", SITE, "--from", "March"], "--from: expected a day as YYYY-MM-DD, not 'March'"),
    ]
    for args, message in cases:
        result = invoke(source, "export", "plausible", *args, str(out))
        assert (result.exit_code, result.output) == (2, f"picolytics: error: {message}\n")
        assert not out.exists() and not (tmp_path / "x.zip.part").exists()
    # By default, from the first native day to yesterday.
    result = invoke(source, "export", "plausible", "--site", SITE, str(out))
    assert result.exit_code == 0, result.output
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    assert result.output.startswith(f"exported {SITE} 2024-03-01..{yesterday} to {out}: 40 rows")
