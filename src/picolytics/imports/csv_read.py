"""One CSV file of Plausible's import format, read strictly and as a stream.

The file must be UTF-8 (a byte order mark is fine), no line may be longer than 1 MiB,
and the header must be exactly the table's documented one (imports/tables.py): a
missing, unknown, repeated or misplaced column is an error naming it. Each field is
typed as the format says: `date` as YYYY-MM-DD, counts and seconds as non-negative
integers (ASCII digits only, within PostgreSQL's bigint), text as it is.

Every problem is an ImportFileError naming the file, the line and the column. Rows are
plain tuples (tables.py order, ImportedRow), built with as little Python per field as
possible: a million rows take a few seconds.
"""

from __future__ import annotations

import contextlib
import csv
from collections.abc import Callable, Iterator
from datetime import date
from typing import BinaryIO, Final, cast

from picolytics.errors import ImportFileError
from picolytics.imports.batch import ImportedRow
from picolytics.imports.tables import TEXT_COLUMNS, TableName, header

MAX_LINE_BYTES: Final = 1 << 20  # 1 MiB, line ending not counted
MAX_COUNT: Final = 2**63 - 1  # the columns are bigint
_BOM: Final = "\ufeff"
# How often (in lines) the reader reports the bytes read so far.
_PROGRESS_LINES: Final = 65_536

Progress = Callable[[int], None]


def _lines(stream: BinaryIO, name: str, read: list[int]) -> Iterator[str]:
    """The file's lines, decoded, each checked for length, UTF-8 and NUL; `read[0]`
    counts the bytes read so far."""
    number = 0
    while True:
        raw = stream.readline(MAX_LINE_BYTES + 3)  # room for the limit and "\r\n"
        if not raw:
            return
        number += 1
        read[0] += len(raw)
        if len(raw) > MAX_LINE_BYTES and len(raw.rstrip(b"\r\n")) > MAX_LINE_BYTES:
            raise ImportFileError(name, number, None, "line longer than 1 MiB")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            reason = f"not valid UTF-8 (byte {error.start + 1} of the line)"
            raise ImportFileError(name, number, None, reason) from None
        if "\x00" in text:  # PostgreSQL text cannot hold it
            raise ImportFileError(name, number, None, "holds a NUL character")
        yield text[1:] if number == 1 and text.startswith(_BOM) else text


def _check_header(found: list[str], table: TableName, name: str) -> None:
    expected = header(table)
    if tuple(found) == expected:
        return
    documented = ", ".join(expected)
    seen: set[str] = set()
    for column in found:
        if column not in expected:
            reason = f"unknown column (the header of {table} is: {documented})"
            raise ImportFileError(name, 1, column, reason)
        if column in seen:
            raise ImportFileError(name, 1, column, "appears twice in the header")
        seen.add(column)
    for column in expected:
        if column not in seen:
            reason = f"missing from the header (the header of {table} is: {documented})"
            raise ImportFileError(name, 1, column, reason)
    raise ImportFileError(name, 1, None, f"columns out of order (expected: {documented})")


def _day(text: str, within: tuple[date, date] | None, name: str, line: int) -> date:
    """A YYYY-MM-DD date within the range (if any), or ImportFileError."""
    found = None
    if len(text) == 10 and text[4] == "-" and text[7] == "-" and text.isascii():
        with contextlib.suppress(ValueError):
            found = date.fromisoformat(text)
    if found is None:
        reason = f"{text[:40]!r} is not a date as YYYY-MM-DD"
        raise ImportFileError(name, line, "date", reason)
    if within is not None and not within[0] <= found <= within[1]:
        reason = f"{found} is outside the file's days ({within[0]} to {within[1]})"
        raise ImportFileError(name, line, "date", reason)
    return found


def read_csv(
    stream: BinaryIO,
    name: str,
    table: TableName,
    progress: Progress | None = None,
    within: tuple[date, date] | None = None,
) -> list[ImportedRow]:
    """Every row of one file of `table`, typed; ImportFileError at the first problem.

    `name` is how errors name the file; `progress` gets the bytes read so far, now and
    then; `within`, if given, are the first and last day a row may have."""
    read = [0]
    columns = header(table)
    width = len(columns)
    counts = [(n, columns[n]) for n in range(1, width) if columns[n] not in TEXT_COLUMNS]
    # One row may span lines (a quoted newline) but no field may pass the line limit.
    if csv.field_size_limit() < MAX_LINE_BYTES:
        csv.field_size_limit(MAX_LINE_BYTES)
    reader = csv.reader(_lines(stream, name, read), strict=True)
    days: dict[str, date] = {}
    rows: list[ImportedRow] = []
    try:
        first = next(reader, None)
        if first is None:
            raise ImportFileError(name, 1, None, "empty file: expected the header line")
        _check_header(first, table, name)
        for fields in reader:
            if len(fields) != width:
                if not fields:
                    continue  # a blank line
                reason = f"{len(fields)} fields, expected {width} ({', '.join(columns)})"
                raise ImportFileError(name, reader.line_num, None, reason)
            # Most rows share few days: each is parsed and checked once.
            day = days.get(fields[0])
            if day is None:
                day = days[fields[0]] = _day(fields[0], within, name, reader.line_num)
            rows.append(_typed(day, fields, counts, name, reader.line_num))
            if progress is not None and reader.line_num % _PROGRESS_LINES == 0:
                progress(read[0])
    except csv.Error as error:
        raise ImportFileError(name, reader.line_num, None, f"malformed CSV: {error}") from None
    if progress is not None:
        progress(read[0])
    return rows


def _typed(
    day: date, fields: list[str], counts: list[tuple[int, str]], name: str, line: int
) -> ImportedRow:
    """The row as a tuple: its day, text as is, counts as int. Every table has its
    text columns first (tables.py), so the counts are the fields from the first one on."""
    first = counts[0][0]
    texts = fields[first:]
    joined = "".join(texts)
    # One check for the whole row; field by field only to say which one is wrong.
    digits = joined.isascii() and joined.isdigit() and all(texts)
    if not digits or (len(joined) > 18 and max(map(len, texts)) > 18):
        _check_counts(fields, counts, name, line)
    return cast(ImportedRow, (day, *fields[1:first], *map(int, texts)))


def _check_counts(fields: list[str], counts: list[tuple[int, str]], name: str, line: int) -> None:
    for index, column in counts:
        text = fields[index]
        if not (text.isascii() and text.isdigit()) or len(text) > 19 or int(text) > MAX_COUNT:
            raise _bad_count(name, line, column, text)


def _bad_count(name: str, line: int, column: str, text: str) -> ImportFileError:
    shown = text[:40]
    if shown.startswith("-") and shown[1:].isdigit():
        return ImportFileError(name, line, column, f"{shown} is negative: expected a count")
    what = "seconds" if column == "visit_duration" else "a count"
    return ImportFileError(
        name, line, column, f"{shown!r} is not a non-negative integer ({what}, at most 2^63-1)"
    )
