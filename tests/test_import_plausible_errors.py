"""Malformed input to `picolytics import plausible` (imports/csv_read.py,
imports/plausible_read.py): each case is one clean error naming the file, and where
there is one the line and the column, exit code 2, and not a row changed in a database
that already holds an import. Also the reader's speed, printed (never asserted)."""

from __future__ import annotations

import io
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from helpers.database import query

from picolytics.cli import cli
from picolytics.errors import ImportFileError
from picolytics.imports import plausible_read
from picolytics.imports.csv_read import read_csv
from picolytics.imports.tables import COLUMNS, TABLES, TEXT_COLUMNS

EXPORT = Path(__file__).parent / "data" / "plausible" / "export"
SITE = "example.com"
VISITORS = "imported_visitors_20240101_20240131.csv"
HEAD = '"date","visitors","pageviews","bounces","visits","visit_duration"\n'
GOOD = '"2024-01-01",1,2,0,1,30\n'


def invoke(conninfo: str, *args: str) -> Result:
    env = {"PGCONNSTRING": conninfo, "LOG_FORMAT": "text"}
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


@pytest.fixture(scope="module")
def database(module_database: str) -> str:
    """A database with one import already, so "nothing changed" has rows to keep."""
    assert (
        invoke(module_database, "import", "plausible", str(EXPORT), "--site", SITE).exit_code == 0
    )
    return module_database


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.chdir(tmp_path)
    for name in ("PGHOST", "PGCONNSTRING", "CONFIG_PATH", "CONFIG_NAME", "DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    yield


def everything(conninfo: str) -> list[tuple[Any, ...]]:
    tables = ("sites", "imports", "imported_days", *TABLES)
    return query(
        conninfo,
        "SELECT "
        + ", ".join(f"(SELECT array_agg(t::text ORDER BY t::text) FROM {t} t)" for t in tables),
    )


def csv_file(name: str, data: bytes) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = folder / name
        path.write_bytes(data)
        return path

    return make


def zip_of(entries: dict[str, bytes]) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = folder / "export.zip"
        with zipfile.ZipFile(path, "w") as archive:
            for name, data in entries.items():
                archive.writestr(name, data)
        return path

    return make


LONG = b'"2024-01-02",1,2,0,1,' + b"1" * (1 << 20) + b"\n"
CASES = {
    "missing column": (
        csv_file(
            VISITORS, b'"date","visitors","pageviews","bounces","visits"\n"2024-01-01",1,2,0,1\n'
        ),
        f"{VISITORS} line 1, column visit_duration: missing from the header (the header of"
        " imported_visitors is: date, visitors, pageviews, bounces, visits, visit_duration)",
    ),
    "unknown column": (
        csv_file(VISITORS, HEAD.replace('"visits"', '"sessions"').encode() + GOOD.encode()),
        f"{VISITORS} line 1, column sessions: unknown column (the header of imported_visitors"
        " is: date, visitors, pageviews, bounces, visits, visit_duration)",
    ),
    "bad date": (
        csv_file(VISITORS, (HEAD + GOOD + '"2024-1-02",1,2,0,1,30\n').encode()),
        f"{VISITORS} line 3, column date: '2024-1-02' is not a date as YYYY-MM-DD",
    ),
    "no such day": (
        csv_file(VISITORS, (HEAD + '"2024-02-30",1,2,0,1,30\n').encode()),
        f"{VISITORS} line 2, column date: '2024-02-30' is not a date as YYYY-MM-DD",
    ),
    "day outside the name's range": (
        csv_file(VISITORS, (HEAD + '"2024-02-01",1,2,0,1,30\n').encode()),
        f"{VISITORS} line 2, column date: 2024-02-01 is outside the file's days"
        " (2024-01-01 to 2024-01-31)",
    ),
    "negative count": (
        csv_file(VISITORS, (HEAD + GOOD + '"2024-01-02",1,-2,0,1,30\n').encode()),
        f"{VISITORS} line 3, column pageviews: -2 is negative: expected a count",
    ),
    "not an integer": (
        csv_file(VISITORS, (HEAD + '"2024-01-02",1,2,0,1,30.5\n').encode()),
        f"{VISITORS} line 2, column visit_duration: '30.5' is not a non-negative integer"
        " (seconds, at most 2^63-1)",
    ),
    "empty count": (
        csv_file(VISITORS, (HEAD + '"2024-01-02",,2,0,1,30\n').encode()),
        f"{VISITORS} line 2, column visitors: '' is not a non-negative integer"
        " (a count, at most 2^63-1)",
    ),
    "too many fields": (
        csv_file(VISITORS, (HEAD + GOOD + '"2024-01-02",1,2,0,1,30,7\n').encode()),
        f"{VISITORS} line 3: 7 fields, expected 6"
        " (date, visitors, pageviews, bounces, visits, visit_duration)",
    ),
    "invalid UTF-8": (
        csv_file(
            "imported_devices_20240101_20240131.csv",
            b'"date","device","visitors","visits","visit_duration","bounces","pageviews"\n'
            b'"2024-01-01","Desktop",1,1,0,1,1\n"2024-01-02","Mobil\xe9",1,1,0,1,1\n',
        ),
        "imported_devices_20240101_20240131.csv line 3: not valid UTF-8 (byte 20 of the line)",
    ),
    "a line over 1 MiB": (
        csv_file(VISITORS, (HEAD + GOOD).encode() + LONG),
        f"{VISITORS} line 3: line longer than 1 MiB",
    ),
    "a bad file name": (
        csv_file("visitors_2024_2025.csv", (HEAD + GOOD).encode()),
        "visitors_2024_2025.csv: not a file of Plausible's CSV format: expected a name such"
        " as imported_visitors_20240101_20241231.csv (tables: visitors, sources, pages,"
        " entry_pages, exit_pages, custom_events, locations, devices, browsers,"
        " operating_systems)",
    ),
    "a zip holding something else": (
        zip_of({VISITORS: (HEAD + GOOD).encode(), "notes/readme.txt": b"hello"}),
        "notes/readme.txt: not a file of Plausible's CSV format: expected a name such as"
        " imported_visitors_20240101_20241231.csv (tables: visitors, sources, pages,"
        " entry_pages, exit_pages, custom_events, locations, devices, browsers,"
        " operating_systems)",
    ),
    "an error inside a zip's folder": (
        zip_of({"site/" + VISITORS: (HEAD + '"2024-01-02",x,2,0,1,30\n').encode()}),
        f"site/{VISITORS} line 2, column visitors: 'x' is not a non-negative integer"
        " (a count, at most 2^63-1)",
    ),
    "an empty zip": (
        zip_of({}),
        "export.zip: holds no CSV file of Plausible's format: nothing to import",
    ),
    "not a zip": (
        csv_file("export.zip", b"PK\x03\x04 but no zip"),
        "export.zip: not a readable zip: File is not a zip file",
    ),
    "two files of one table on one day": (
        zip_of({VISITORS: (HEAD + GOOD).encode(), "visitors_20240131_20240201.csv": HEAD.encode()}),
        "visitors_20240131_20240201.csv: covers days imported_visitors_20240101_20240131.csv"
        " covers too (2024-01-31 to 2024-01-31): an import holds each table's day once",
    ),
    "an empty file": (
        csv_file(VISITORS, b""),
        f"{VISITORS} line 1: empty file: expected the header line",
    ),
    "unbalanced quotes": (
        csv_file(VISITORS, (HEAD + '"2024-01-02,1,2,0,1,30\n').encode()),
        f"{VISITORS} line 2: malformed CSV: unexpected end of data",
    ),
}


@pytest.mark.parametrize("make, message", CASES.values(), ids=list(CASES))
def test_malformed_input_is_refused_and_changes_nothing(
    database: str, tmp_path: Path, make: Callable[[Path], Path], message: str
) -> None:
    path = make(tmp_path)
    before = everything(database)
    result = invoke(database, "import", "plausible", str(path), "--site", SITE)
    # The zip's own problems name the zip as given; its entries by their name in it.
    shown = message.replace("export.zip:", f"{path}:", 1)
    assert (result.exit_code, result.output) == (2, f"picolytics: error: {shown}\n")
    assert everything(database) == before


def test_a_bom_is_fine_and_the_header_must_be_in_order() -> None:
    rows = read_csv(
        io.BytesIO(b"\xef\xbb\xbf" + (HEAD + GOOD).encode()), "f.csv", "imported_visitors"
    )
    assert len(rows) == 1
    swapped = HEAD.replace('"visitors","pageviews"', '"pageviews","visitors"')
    with pytest.raises(ImportFileError) as raised:
        read_csv(io.BytesIO((swapped + GOOD).encode()), "f.csv", "imported_visitors")
    assert str(raised.value) == (
        "f.csv line 1: columns out of order (expected: date, visitors, pageviews, bounces,"
        " visits, visit_duration)"
    )


def test_a_zip_bomb_is_refused(
    database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The cap, lowered: first on the sizes the zip's headers declare...
    path = zip_of({VISITORS: (HEAD + GOOD * 2000).encode()})(tmp_path)
    monkeypatch.setattr(plausible_read, "MAX_UNCOMPRESSED", 10_000)
    result = invoke(database, "import", "plausible", str(path), "--site", SITE)
    assert (
        result.output
        == f"picolytics: error: {path}: the zip uncompresses to more than 4 GiB: refused\n"
    )
    # ...then on the bytes really read, should the headers lie.
    counted = plausible_read._Counted(io.BytesIO(b"x" * 300), "entry.csv", [256])
    with pytest.raises(ImportFileError, match=r"entry\.csv: the zip uncompresses to more"):
        io.BufferedReader(counted, 128).read()
    monkeypatch.setattr(plausible_read, "MAX_ENTRIES", 1)
    path = zip_of({VISITORS: b"", "b/": b"", "c/": b""})(tmp_path)
    result = invoke(database, "import", "plausible", str(path), "--site", SITE)
    assert result.output == f"picolytics: error: {path}: more than 1 entries in the zip: refused\n"


def test_reading_a_million_rows(capsys: pytest.CaptureFixture[str]) -> None:
    """Prints the time (no test asserts on wall time)."""
    data = (
        HEAD + "".join(f'"2024-01-{1 + n % 31:02d}",{n},2,0,1,30\n' for n in range(1_000_000))
    ).encode()
    start = time.perf_counter()
    rows = read_csv(io.BytesIO(data), "f.csv", "imported_visitors")
    elapsed = time.perf_counter() - start
    assert len(rows) == 1_000_000 and list(rows[-1])[1] == 999_999
    with capsys.disabled():
        print(f"\n  read 1,000,000 rows in {elapsed:.2f} s")


def test_every_table_has_its_text_columns_first() -> None:
    # csv_read.py types a row's counts as one run from the first count on.
    for table, columns in COLUMNS.items():
        kinds = [column in TEXT_COLUMNS for column in columns]
        assert kinds == sorted(kinds, reverse=True), table
    with pytest.raises(ImportFileError, match="column bounces: '99999999999999999999' is not"):
        read_csv(
            io.BytesIO((HEAD + '"2024-01-01",1,2,99999999999999999999,1,3\n').encode()),
            "f.csv",
            "imported_visitors",
        )
    big = (HEAD + f'"2024-01-01",{2**63 - 1},2,0,1,3\n').encode()
    assert list(read_csv(io.BytesIO(big), "f.csv", "imported_visitors")[0])[1] == 2**63 - 1
    with pytest.raises(ImportFileError, match="column visitors: '9223372036854775808' is not"):
        read_csv(io.BytesIO(big.replace(b"807", b"808")), "f.csv", "imported_visitors")


def test_a_path_that_is_not_there(database: str, tmp_path: Path) -> None:
    missing = tmp_path / "nothing.zip"
    result = invoke(database, "import", "plausible", str(missing), "--site", SITE)
    assert (result.exit_code, result.output) == (
        2, f"picolytics: error: PATH: {str(missing)!r} is no file or folder\n"
    )  # fmt: skip
    result = invoke(database, "import", "plausible", str(EXPORT), "--site", " ")
    assert result.output == "picolytics: error: --site: give the site's domain, e.g. example.com\n"
