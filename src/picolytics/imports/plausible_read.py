"""Plausible's CSV export (a zip, a folder, or one CSV file) read into an ImportBatch.

Every file must be named as Plausible names them, `{table}_{YYYYMMDD}_{YYYYMMDD}.csv`
(the `imported_` prefix may be left out), its rows must fall within the days its name
says, and two files of one table may not cover the same day. A zip may hold folders,
but nothing other than such files; an empty one is an error. Against zip bombs, a zip
may hold at most MAX_ENTRIES entries and MAX_UNCOMPRESSED bytes once uncompressed
(counted as read, whatever its headers claim).

`sha256` is of the zip's bytes, or, for a folder, of its sorted files' names and bytes.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import re
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import IO, Final

from picolytics.errors import ImportFileError, ImportOptionError
from picolytics.imports.batch import ImportBatch, ImportedRow
from picolytics.imports.csv_read import read_csv
from picolytics.imports.tables import TABLES, TableName

MAX_ENTRIES: Final = 1000
MAX_UNCOMPRESSED: Final = 4 << 30  # 4 GiB
_NAME: Final = re.compile(
    r"(?:imported_)?(?P<table>[a-z_]+?)_(?P<first>\d{8})_(?P<last>\d{8})\.csv", re.ASCII
)
_BUFFER: Final = 1 << 20

# Bytes read so far, of how many in all.
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class NamedFile:
    """One file of the export: what its name says."""

    name: str  # as errors show it: the path inside the zip or folder
    table: TableName
    first: date
    last: date


def parse_name(name: str) -> NamedFile:
    """What a file's name says, or ImportFileError if it is not of the format."""
    base = name.rsplit("/", 1)[-1]
    match = _NAME.fullmatch(base)
    table = f"imported_{match['table']}" if match else ""
    if match is None or table not in TABLES:
        raise ImportFileError(
            name, None, None,
            "not a file of Plausible's CSV format: expected a name such as "
            "imported_visitors_20240101_20241231.csv (tables: "
            + ", ".join(t.removeprefix("imported_") for t in TABLES) + ")",
        )  # fmt: skip
    try:
        first = datetime.strptime(match["first"], "%Y%m%d").date()
        last = datetime.strptime(match["last"], "%Y%m%d").date()
    except ValueError:
        raise ImportFileError(name, None, None, "the dates in the name are not days") from None
    if last < first:
        raise ImportFileError(name, None, None, f"the name's range ends ({last}) before it starts")
    return NamedFile(name, table, first, last)


def _check_overlaps(files: list[NamedFile]) -> None:
    by_table: dict[TableName, list[NamedFile]] = {}
    for found in files:
        by_table.setdefault(found.table, []).append(found)
    for group in by_table.values():
        group.sort(key=lambda f: f.first)
        for before, after in itertools.pairwise(group):
            if after.first <= before.last:
                raise ImportFileError(
                    after.name, None, None,
                    f"covers days {before.name} covers too ({after.first} to {before.last}):"
                    " an import holds each table's day once",
                )  # fmt: skip


class _Counted(io.RawIOBase):
    """A zip entry's stream that counts what it yields against the import's cap."""

    def __init__(self, inner: IO[bytes], name: str, budget: list[int]) -> None:
        self.inner, self.name, self.budget = inner, name, budget

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self.inner.read(len(buffer))
        self.budget[0] -= len(data)
        if self.budget[0] < 0:
            raise ImportFileError(
                self.name, None, None, "the zip uncompresses to more than 4 GiB: refused"
            )
        buffer[: len(data)] = data
        return len(data)


def _sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_BUFFER):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def _zip(path: Path) -> Iterator[zipfile.ZipFile]:
    try:
        with zipfile.ZipFile(path) as archive:
            yield archive
    except zipfile.BadZipFile as error:
        raise ImportFileError(str(path), None, None, f"not a readable zip: {error}") from None


def _read_zip(
    path: Path, progress: Progress | None
) -> tuple[list[tuple[NamedFile, list[ImportedRow]]], str]:
    sha = _sha256_of_file(path)
    found: list[tuple[NamedFile, list[ImportedRow]]] = []
    with _zip(path) as archive:
        entries = [e for e in archive.infolist() if not e.is_dir()]
        if len(archive.infolist()) > MAX_ENTRIES:
            raise ImportFileError(
                str(path), None, None, f"more than {MAX_ENTRIES} entries in the zip: refused"
            )
        named = [parse_name(e.filename) for e in entries]
        _check_none(path, named)
        _check_overlaps(named)
        total = sum(e.file_size for e in entries)
        if total > MAX_UNCOMPRESSED:
            raise ImportFileError(
                str(path), None, None, "the zip uncompresses to more than 4 GiB: refused"
            )
        budget, done = [MAX_UNCOMPRESSED], 0
        for entry, file in zip(entries, named, strict=True):
            if entry.flag_bits & 0x1:
                raise ImportFileError(file.name, None, None, "encrypted in the zip: refused")
            before = done

            def step(read: int, base: int = before) -> None:
                if progress is not None:
                    progress(base + read, total)

            with archive.open(entry) as inner:
                stream = io.BufferedReader(_Counted(inner, file.name, budget), _BUFFER)
                rows = read_csv(stream, file.name, file.table, step, (file.first, file.last))
            done += entry.file_size
            found.append((file, rows))
    return found, sha


def _check_none(path: Path, named: list[NamedFile]) -> None:
    if not named:
        raise ImportFileError(
            str(path), None, None, "holds no CSV file of Plausible's format: nothing to import"
        )


def _read_files(
    root: Path, files: list[Path], progress: Progress | None
) -> tuple[list[tuple[NamedFile, list[ImportedRow]]], str]:
    named = [parse_name(str(p.relative_to(root)) if p != root else p.name) for p in files]
    _check_none(root, named)
    _check_overlaps(named)
    digest, single = hashlib.sha256(), hashlib.sha256()
    total = sum(p.stat().st_size for p in files)
    found, done = [], 0
    for file, path in zip(named, files, strict=True):
        before = done

        def step(read: int, base: int = before) -> None:
            if progress is not None:
                progress(base + read, total)

        data = path.read_bytes()  # hashed and read from one copy: the same bytes
        digest.update(file.name.encode() + b"\0" + len(data).to_bytes(8, "big") + data)
        single.update(data)  # one CSV file given alone: the hash of its bytes
        rows = read_csv(io.BytesIO(data), file.name, file.table, step, (file.first, file.last))
        done += len(data)
        found.append((file, rows))
    return found, single.hexdigest() if files == [root] else digest.hexdigest()


def read_plausible(path: Path, progress: Progress | None = None) -> ImportBatch:
    """Read an export of Plausible's (a zip, a folder of CSV files, or one CSV file)."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if not p.is_dir())
        found, sha = _read_files(path, files, progress)
    elif path.is_file():
        if path.suffix.lower() == ".csv":
            found, sha = _read_files(path, [path], progress)
        else:
            found, sha = _read_zip(path, progress)
    else:
        raise ImportOptionError(f"PATH: {str(path)!r} is no file or folder")
    batch = ImportBatch(source="plausible", file_name=str(path), sha256=sha)
    for file, rows in found:
        batch.rows.setdefault(file.table, []).extend(rows)
    return batch
