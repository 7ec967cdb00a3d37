"""GoatCounter's CSV export read as a stream of checked lines: plain or gzipped (told by
the content, not the name), hashed as it is read, every line valid UTF-8 and at most
1 MiB, the header that of format version 2 (docs/imports.md, GoatCounter).

The format is GoatCounter's own (its `exportcsv.go` and help page "export"): Go's
`encoding/csv`, a header line whose first cell is the version digit glued to the first
column's name (`2Path`), then one line per hit. Blank lines are allowed, quoted fields
may hold newlines. Nothing here knows what a column means: goatcounter_aggregate.py does.
"""

from __future__ import annotations

import csv
import hashlib
import re
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, Final, NoReturn

from picolytics.errors import ImportFileError

VERSION: Final = "2"
# The columns of version 2 in GoatCounter's order; the first is written `2Path`.
HEADER: Final = (
    "Path", "Title", "Event", "UserAgent", "Browser", "System", "Session", "Bot",
    "Referrer", "Referrer scheme", "Screen size", "Location", "FirstVisit", "Date",
)  # fmt: skip
# GoatCounter's help page spells the fourth column "User-Agent"; its code "UserAgent".
_ALIASES: Final = {"User-Agent": "UserAgent"}

MAX_LINE_BYTES: Final = 1024 * 1024
# Read and inflate in blocks far below the line limit: then only a block's first line
# (the carry of the block before plus its start) can ever be over the limit.
_BLOCK: Final = 256 * 1024
_GZIP_MAGIC: Final = b"\x1f\x8b"
_LINE: Final = re.compile(r"[^\n]*\n")
_VERSION_PREFIX: Final = re.compile(r"\d*")

Fail = Callable[[int | None, str | None, str], NoReturn]


class GoatCounterCsv:
    """The records of one export file, each with the number of the line it starts on.

    Iterate once; `sha256` is the hex digest of the file's bytes once iteration ended.
    `progress` (if given) gets the bytes of the file read so far, once per block."""

    def __init__(self, path: Path, progress: Callable[[int], None] | None = None) -> None:
        self.path = path
        self.name = str(path)
        self.progress = progress
        self._digest = hashlib.sha256()

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    def fail(self, line: int | None, column: str | None, reason: str) -> NoReturn:
        raise ImportFileError(self.name, line, column, reason)

    def __iter__(self) -> Iterator[tuple[int, list[str]]]:
        try:
            handle = self.path.open("rb")
        except OSError as error:
            self.fail(None, None, f"cannot be read ({error.strerror or error})")
        with handle:
            yield from self._records(handle)

    def _records(self, handle: BinaryIO) -> Iterator[tuple[int, list[str]]]:
        blocks = self._blocks(handle)
        first = next(blocks, b"")
        gzipped = first.startswith(_GZIP_MAGIC)  # by content, whatever the name
        blocks = _gunzip(first, blocks) if gzipped else _chain(first, blocks)
        splitter = _LineSplitter(self.fail)
        # A field may be as long as a line (csv's default stops at 128 KiB).
        if csv.field_size_limit() < MAX_LINE_BYTES:
            csv.field_size_limit(MAX_LINE_BYTES)
        reader = csv.reader(splitter.lines(blocks), strict=True)
        before = 0  # the line the record before ended on
        try:
            header = next(reader, None)
            if not header:
                self.fail(1, None, "no header: a GoatCounter CSV export starts with one")
            check_header(header, self.fail)
            before = reader.line_num
            for fields in reader:
                if fields:  # blank lines are allowed
                    yield before + 1, fields
                before = reader.line_num
        except csv.Error as error:
            self.fail(before + 1, None, f"not valid CSV ({error})")

    def _blocks(self, handle: BinaryIO) -> Iterator[bytes]:
        done = 0
        while block := handle.read(_BLOCK):
            self._digest.update(block)
            done += len(block)
            yield block
            if self.progress is not None:
                self.progress(done)


def check_header(header: list[str], fail: Fail) -> None:
    """Version 2's header, or an error naming the version found or the column missing."""
    first = header[0].removeprefix("\ufeff")  # a byte order mark, if an editor added one
    version = _VERSION_PREFIX.match(first)
    found = version.group() if version else ""
    if found != VERSION:
        seen = f"version {found}" if found else f"no version (it starts {first[:20]!r})"
        fail(1, HEADER[0], f"GoatCounter export format {seen}; only version {VERSION} is read")
    names = [first[len(found) :], *(_ALIASES.get(name, name) for name in header[1:])]
    for index, expected in enumerate(HEADER):
        if index >= len(names) or names[index] != expected:
            got = f"{names[index]!r} is there" if index < len(names) else "the header ends"
            fail(1, expected, f"missing: column {index + 1} should be {expected!r}, {got}")
    if len(names) > len(HEADER):
        fail(1, names[len(HEADER)], f"unknown column: version {VERSION} has {len(HEADER)}")


def column_at(line_start: bytes) -> str | None:
    """The column a position of a line falls in, from the line's bytes before it
    (valid UTF-8): the header's name, or None past the last column."""
    try:
        cells = next(csv.reader([line_start.decode("utf-8")]), [""])
    except csv.Error:  # a quoted field left open: count it all the same
        cells = line_start.decode("utf-8").split(",")
    index = max(len(cells) - 1, 0)
    return HEADER[index] if index < len(HEADER) else None


class _LineSplitter:
    """Blocks of bytes cut into lines of text (each keeping its "\\n"), with the limit on
    a line's length and the UTF-8 check, both naming the line and the column."""

    def __init__(self, fail: Fail) -> None:
        self.fail = fail
        self.done = 0  # lines handed out

    def lines(self, blocks: Iterator[bytes]) -> Iterator[str]:
        carry = b""
        try:
            for block in blocks:
                data = carry + block if carry else block
                if data.find(b"\n", 0, MAX_LINE_BYTES + 1) == -1 and len(data) > MAX_LINE_BYTES:
                    self._fail_in(data[:MAX_LINE_BYTES], "line longer than 1 MiB")
                end = data.rfind(b"\n") + 1
                carry = data[end:]
                if end:
                    yield from _LINE.findall(self._decode(data[:end]))
        except _GzipError as error:
            # Where the good data ended: the line it cut, and the column in it.
            self._fail_in(carry, str(error))
        if carry:
            yield self._decode(carry)

    def _fail_in(self, line_start: bytes, reason: str) -> NoReturn:
        """An error in the line after the last one handed out, at the column its bytes
        `line_start` reach (cut back to whole characters)."""
        whole = line_start.decode("utf-8", errors="ignore").encode("utf-8")
        self.fail(self.done + 1, column_at(whole), reason)

    def _decode(self, data: bytes) -> str:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as error:
            line = self.done + data.count(b"\n", 0, error.start) + 1
            start = data.rfind(b"\n", 0, error.start) + 1
            column = column_at(data[start : error.start])
            self.fail(line, column, f"not valid UTF-8 (byte {data[error.start]:#04x})")
        self.done += data.count(b"\n")
        return text


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest


class _GzipError(Exception):
    """The gzip stream is corrupt or cut short (the splitter names the line)."""


def _gunzip(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    """The inflated bytes of gzip members one after another (gzip allows several),
    never more than a block at a time; a stream cut short or corrupt is _GzipError."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    fed = False  # has the current member seen any input?
    for block in _chain(first, rest):
        pending = block
        while pending:
            fed = True
            try:
                out = inflater.decompress(pending, _BLOCK)
            except zlib.error as error:
                raise _GzipError(f"not a valid gzip file ({error})") from None
            if out:
                yield out
            if inflater.eof:
                pending = inflater.unused_data
                inflater, fed = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS), False
            else:
                pending = inflater.unconsumed_tail
    # Output zlib still holds back (the limit per call) comes out before the end.
    while fed and not inflater.eof and (out := inflater.decompress(b"", _BLOCK)):
        yield out
    if fed and not inflater.eof:
        raise _GzipError("gzip data ends early: the file is truncated")
