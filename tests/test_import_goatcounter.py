"""The GoatCounter reader (imports/goatcounter.py): tests/data/goatcounter/export.csv,
written as GoatCounter's exportcsv.go writes version 2 (header, quoting, "0-0" for no
session, "o" for no referrer), summed by hand into every table; plain and gzipped;
every malformed case named by file, line and column; and one import stored for real.

The fixture's hits (UTC), by session:
  a1b2c3-1  2024-03-01 10:00 /  (www.example.org, Firefox 123, Linux, 1920 wide, DE-BE)
                       10:02:30 /docs, 10:03 event signup, 10:05 /docs
  d4e5f6-2  2024-03-01 11:00 /docs (Hacker News, g; Chrome 122, Windows 10, 390, US),
                       11:00:10 event signup
  0-0       2024-03-01 12:00 /  (campaign newsletter; Safari 17.3, macOS 14.3, no screen)
  0-0       2024-03-01 12:30 /wp-login.php, Bot 5: skipped
  0-0       2024-03-01 12:10 /pricing (no referrer; Safari, macOS): a visit of its own
  789abc-3  2024-03-02 09:10 /pricing (800 wide), then (listed after, earlier) 09:00 /
                       (github.com, 1280 wide): the visit's columns are the 09:00 hit's
  a1b2c3-4  2024-03-02 03:30 /about (no referrer; Firefox, Linux, 1920, DE): in New York
                       still 2024-03-01
Lines: the second and fourth hits' titles hold a newline (each hit spans two lines), so
the fifth hit starts on line 8 and the last (the twelfth) on line 15.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from datetime import date
from pathlib import Path

import psycopg
import pytest
from helpers.database import query

from picolytics.errors import ImportFileError, ImportOptionError
from picolytics.imports.goatcounter import read_goatcounter
from picolytics.imports.goatcounter_fields import agent_columns, referrer_columns
from picolytics.imports.store import store

FIXTURE = Path(__file__).parent / "data" / "goatcounter" / "export.csv"
D1, D2 = date(2024, 3, 1), date(2024, 3, 2)
HEADER = (
    "2Path,Title,Event,UserAgent,Browser,System,Session,Bot,Referrer,Referrer scheme,"
    "Screen size,Location,FirstVisit,Date\n"
)
HIT = '/,Home,0,,Firefox 123,Linux ,s-1,0,,o,"1920,0,1",DE,1,2024-03-01T10:00:00Z\n'

# Every table, in tables.COLUMNS order after the day.
EXPECTED = {
    # visitors, pageviews, bounces, visits, visit_duration
    "imported_visitors": [(D1, 4, 6, 3, 4, 300), (D2, 2, 3, 1, 2, 600)],
    # source, referrer, utm_*(5), pageviews, visitors, visits, visit_duration, bounces
    "imported_sources": [
        (D1, "", "", "", "", "", "", "", 1, 1, 1, 0, 1),
        (D1, "Hacker News", "", "", "", "", "", "", 1, 1, 1, 0, 1),
        (D1, "example.org", "example.org", "", "", "", "", "", 3, 1, 1, 300, 0),
        (D1, "newsletter", "", "newsletter", "", "", "", "", 1, 1, 1, 0, 1),
        (D2, "", "", "", "", "", "", "", 1, 1, 1, 0, 1),
        (D2, "github.com", "github.com", "", "", "", "", "", 2, 1, 1, 600, 0),
    ],
    # hostname, page, visits, visitors, pageviews
    "imported_pages": [
        (D1, "", "/", 2, 2, 2),
        (D1, "", "/docs", 2, 2, 3),
        (D1, "", "/pricing", 1, 1, 1),
        (D2, "", "/", 1, 1, 1),
        (D2, "", "/about", 1, 1, 1),
        (D2, "", "/pricing", 1, 1, 1),
    ],
    # entry_page, visitors, entrances, visit_duration, bounces, pageviews
    "imported_entry_pages": [
        (D1, "/", 2, 2, 300, 1, 4),
        (D1, "/docs", 1, 1, 0, 1, 1),
        (D1, "/pricing", 1, 1, 0, 1, 1),
        (D2, "/", 1, 1, 600, 0, 2),
        (D2, "/about", 1, 1, 0, 1, 1),
    ],
    # exit_page, visitors, visit_duration, exits, bounces, pageviews
    "imported_exit_pages": [
        (D1, "/", 1, 0, 1, 1, 1),
        (D1, "/docs", 2, 300, 2, 1, 4),
        (D1, "/pricing", 1, 0, 1, 1, 1),
        (D2, "/about", 1, 0, 1, 1, 1),
        (D2, "/pricing", 1, 600, 1, 0, 2),
    ],
    # name, link_url, path, visitors, events
    "imported_custom_events": [(D1, "signup", "", "", 2, 2)],
    # country, region, city, visitors, visits, visit_duration, bounces, pageviews
    "imported_locations": [
        (D1, "", "", "", 2, 2, 0, 2, 2),
        (D1, "DE", "DE-BE", "", 1, 1, 300, 0, 3),
        (D1, "US", "", "", 1, 1, 0, 1, 1),
        (D2, "DE", "", "", 1, 1, 0, 1, 1),
        (D2, "FR", "FR-IDF", "", 1, 1, 600, 0, 2),
    ],
    "imported_devices": [
        (D1, "", 2, 2, 0, 2, 2),
        (D1, "Desktop", 1, 1, 300, 0, 3),
        (D1, "Mobile", 1, 1, 0, 1, 1),
        (D2, "Desktop", 2, 2, 600, 1, 3),
    ],
    "imported_browsers": [
        (D1, "Chrome", "122", 1, 1, 0, 1, 1),
        (D1, "Firefox", "123", 1, 1, 300, 0, 3),
        (D1, "Safari", "17.3", 2, 2, 0, 2, 2),
        (D2, "Edge", "122", 1, 1, 600, 0, 2),
        (D2, "Firefox", "123", 1, 1, 0, 1, 1),
    ],
    "imported_operating_systems": [
        (D1, "Linux", "", 1, 1, 300, 0, 3),
        (D1, "Windows", "10", 1, 1, 0, 1, 1),
        (D1, "macOS", "14.3", 2, 2, 0, 2, 2),
        (D2, "Linux", "", 1, 1, 0, 1, 1),
        (D2, "Windows", "11", 1, 1, 600, 0, 2),
    ],
}


def gzipped(tmp_path: Path, data: bytes, name: str = "export.csv.gz") -> Path:
    path = tmp_path / name
    path.write_bytes(gzip.compress(data))
    return path


def failure(path: Path) -> ImportFileError:
    with pytest.raises(ImportFileError) as caught:
        read_goatcounter(path)
    assert caught.value.file == str(path)
    assert str(caught.value).startswith(str(path))
    return caught.value


def write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "export.csv"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def test_every_table_summed_by_hand() -> None:
    batch = read_goatcounter(FIXTURE)
    assert batch.source == "goatcounter"
    assert batch.file_name == str(FIXTURE)
    assert batch.sha256 == hashlib.sha256(FIXTURE.read_bytes()).hexdigest()
    assert batch.rows == EXPECTED
    assert batch.days() == (D1, D2)


def test_bot_rows_skipped_and_counted() -> None:
    batch = read_goatcounter(FIXTURE)
    assert batch.skipped == {"bot rows": 1}
    assert not any("/wp-login.php" in row for rows in batch.rows.values() for row in rows)


def test_user_agent_never_kept() -> None:
    # The fixture's first hit carries a raw User-Agent, as older exports did.
    batch = read_goatcounter(FIXTURE)
    values = {value for rows in batch.rows.values() for row in rows for value in row}
    assert not any(isinstance(value, str) and "Mozilla" in value for value in values)


def test_gzip_by_content_not_by_name(tmp_path: Path) -> None:
    data = FIXTURE.read_bytes()
    packed = gzipped(tmp_path, data, name="export.csv")  # gzipped, named .csv
    plain = tmp_path / "plain.csv.gz"  # plain, named .gz
    plain.write_bytes(data)
    from_gzip, from_plain = read_goatcounter(packed), read_goatcounter(plain)
    assert from_gzip.rows == from_plain.rows == EXPECTED
    assert from_gzip.sha256 == hashlib.sha256(packed.read_bytes()).hexdigest()
    assert from_plain.sha256 == hashlib.sha256(data).hexdigest()


def test_several_gzip_members_read_as_one(tmp_path: Path) -> None:
    data = FIXTURE.read_bytes()
    cut = data.index(b"\n/docs,Docs") + 1
    path = tmp_path / "export.csv.gz"
    path.write_bytes(gzip.compress(data[:cut]) + gzip.compress(data[cut:]))
    assert read_goatcounter(path).rows == EXPECTED


def test_gzip_inflating_to_many_blocks(tmp_path: Path) -> None:
    # ~3.5 MB in ~20 KB: one block of the file inflates to many (the inflater's limit).
    data = (HEADER + HIT * 50_000).encode()
    batch = read_goatcounter(gzipped(tmp_path, data))
    assert batch.rows["imported_pages"] == [(D1, "", "/", 1, 1, 50_000)]


def test_progress_reports_the_bytes_read(tmp_path: Path) -> None:
    big = write(tmp_path, HEADER + HIT * 20_000)  # ~1.3 MB: several blocks
    seen: list[int] = []
    read_goatcounter(big, progress=seen.append)
    assert len(seen) > 1
    assert seen == sorted(seen)
    assert seen[-1] == big.stat().st_size


def test_days_are_local_to_the_zone() -> None:
    batch = read_goatcounter(FIXTURE, timezone="America/New_York")
    # a1b2c3-4 (03:30 UTC on the 2nd) is 22:30 on the 1st in New York (UTC-5).
    assert batch.rows["imported_visitors"] == [(D1, 5, 7, 4, 5, 300), (D2, 1, 2, 0, 1, 600)]


def test_unknown_zone_is_an_option_error() -> None:
    with pytest.raises(ImportOptionError, match="Mars/Olympus"):
        read_goatcounter(FIXTURE, timezone="Mars/Olympus")


def test_blank_lines_true_false_and_crlf(tmp_path: Path) -> None:
    hit = HIT.replace(",0,,Firefox", ",false,,Firefox").replace(",1,2024", ",true,2024")
    path = write(tmp_path, (HEADER + "\n" + hit + "\n").replace("\n", "\r\n"))
    batch = read_goatcounter(path)
    assert batch.rows["imported_visitors"] == [(D1, 1, 1, 1, 1, 0)]


@pytest.mark.parametrize(
    ("header", "column", "reason"),
    [
        # Version 1's header (GoatCounter's help page).
        (
            "1Path,Title,Event,Bot,Session,FirstVisit,Referrer,Referrer scheme,Browser,"
            "Screen size,Location,Date\n",
            "Path",
            "version 1;",
        ),
        ("Path,Title\n", "Path", "no version"),
        (HEADER.replace("Location,", ""), "Location", "missing: column 12"),
        (HEADER.replace("Date", "Date,Extra"), "Extra", "unknown column"),
    ],
)
def test_header_errors(tmp_path: Path, header: str, column: str, reason: str) -> None:
    error = failure(write(tmp_path, header + HIT))
    assert (error.line, error.column) == (1, column)
    assert reason in error.reason


@pytest.mark.parametrize(
    ("old", "new", "column", "reason"),
    [
        ("2024-03-01T11:00:00Z", "2024-13-01T11:00:00Z", "Date", "not an RFC 3339 date"),
        ("2024-03-01T11:00:00Z", "2024-03-01 11:00:00", "Date", "no offset"),
        ("d4e5f6-2,0,Hacker", "d4e5f6-2,x,Hacker", "Bot", "not a number"),
        ('"390,844,3"', '"wide,844,3"', "Screen size", "'wide,844,3'"),
        (",0,,Chrome", ",maybe,,Chrome", "Event", "not a boolean"),
        (",US,1,", ",US,yes,", "FirstVisit", "not a boolean"),
        ("Hacker News,g", "Hacker News,z", "Referrer scheme", "'z'"),
        (",US,", ",United States,", "Location", "'United States'"),
        ("/docs,Docs,0", ",Docs,0", "Path", "empty"),
        (",2024-03-01T11:00:00Z", "", "Date", "missing: the line has 13 of 14"),
    ],
)
def test_bad_values_name_line_and_column(
    tmp_path: Path, old: str, new: str, column: str, reason: str
) -> None:
    # The fifth hit (the /docs of d4e5f6-2) is on line 8: two titles above span two lines.
    text = FIXTURE.read_text()
    line = next(line for line in text.splitlines() if "d4e5f6-2,0,Hacker" in line)
    error = failure(write(tmp_path, text.replace(line, line.replace(old, new))))
    assert (error.line, error.column) == (8, column)
    assert reason in error.reason


@pytest.mark.parametrize(
    ("screen", "device"),
    [("", ""), ("0,0,1", ""), ("599,0,1", "Mobile"), ("600,0,1", "Tablet"),
     ("999.5,0,2", "Tablet"), ("1000,0,1", "Desktop"), ("3840", "Desktop")],
)  # fmt: skip
def test_devices_by_goatcounter_screen_classes(screen: str, device: str) -> None:
    agent, bad = agent_columns("Chrome 122", "Windows 10", screen, "US")
    assert (agent[2], bad) == (device, None)


@pytest.mark.parametrize(
    ("value", "name", "version"),
    [("Chrome 122", "Chrome", "122"), ("Samsung Internet 23.0", "Samsung Internet", "23.0"),
     ("Linux ", "Linux", ""), ("Chrome OS ", "Chrome OS", ""), ("Chrome", "Chrome", ""),
     ("", "", "")],
)  # fmt: skip
def test_name_and_version_split_at_the_last_space(value: str, name: str, version: str) -> None:
    agent, _bad = agent_columns(value, value, "", "")
    assert agent[3:] == (name, version, name, version)


@pytest.mark.parametrize(
    ("referrer", "scheme", "columns"),
    [("", "o", ("", "", "")), ("", "", ("", "", "")),
     ("www.Example.org/a?b=1", "h", ("example.org", "example.org", "")),
     ("https://news.example.com:8080/x", "h", ("news.example.com", "news.example.com", "")),
     ("com.slack", "o", ("com.slack", "com.slack", "")),
     ("Hacker News", "g", ("Hacker News", "", "")),
     ("newsletter", "c", ("newsletter", "", "newsletter"))],
)  # fmt: skip
def test_referrers_by_scheme(referrer: str, scheme: str, columns: tuple[str, str, str]) -> None:
    assert referrer_columns(referrer, scheme) == columns


def test_too_many_columns(tmp_path: Path) -> None:
    error = failure(write(tmp_path, HEADER + HIT + HIT.replace("\n", ",extra\n")))
    assert (error.line, error.column) == (3, None)
    assert "15 columns" in error.reason


def test_invalid_utf8_names_line_and_column(tmp_path: Path) -> None:
    data = (HEADER + HIT + HIT).encode()
    bad = data.replace(b",Home,", b",Ho\xffme,", 2).replace(b",Ho\xffme,", b",Home,", 1)
    error = failure(write(tmp_path, bad))
    assert (error.line, error.column) == (3, "Title")
    assert "not valid UTF-8" in error.reason


def test_invalid_utf8_in_gzip_too(tmp_path: Path) -> None:
    data = (HEADER + HIT + HIT.replace("Linux ", "Lin\udcffux ")).encode(errors="surrogateescape")
    error = failure(gzipped(tmp_path, data))
    assert (error.line, error.column) == (3, "System")


def test_line_over_1_mb(tmp_path: Path) -> None:
    long_hit = HIT.replace(",Home,", "," + "x" * (1024 * 1024) + ",")
    error = failure(write(tmp_path, HEADER + HIT + long_hit + HIT))
    assert (error.line, error.column) == (3, "Title")
    assert "longer than 1 MiB" in error.reason


def test_line_of_exactly_1_mb_is_fine(tmp_path: Path) -> None:
    exact = HIT.replace(",Home,", "," + "x" * (1024 * 1024 - len(HIT) + 5) + ",")
    assert len(exact.encode()) == 1024 * 1024 + 1  # with its "\n"
    batch = read_goatcounter(write(tmp_path, HEADER + exact))
    assert batch.rows["imported_visitors"] == [(D1, 1, 1, 1, 1, 0)]


def test_truncated_gzip_names_line_and_column(tmp_path: Path) -> None:
    # Flushed where the third line's Event ends, then cut there: all the data before
    # the cut inflates, and the stream never ends.
    kept = (HEADER + HIT + "/docs,Docs,0").encode()
    packer = zlib.compressobj(wbits=31)
    data = packer.compress(kept) + packer.flush(zlib.Z_FULL_FLUSH)
    error = failure(write(tmp_path, data))
    assert (error.line, error.column) == (3, "Event")
    assert "truncated" in error.reason


def test_truncated_gzip_trailer(tmp_path: Path) -> None:
    path = gzipped(tmp_path, FIXTURE.read_bytes())
    path.write_bytes(path.read_bytes()[:-4])  # half the trailer gone
    error = failure(path)
    assert error.line == 16  # after the last line (15)
    assert "truncated" in error.reason


def test_corrupt_gzip(tmp_path: Path) -> None:
    data = bytearray(gzip.compress(FIXTURE.read_bytes()))
    data[20:30] = b"\xff" * 10
    error = failure(write(tmp_path, bytes(data)))
    assert error.line is not None
    assert "gzip" in error.reason


def test_empty_and_missing_files(tmp_path: Path) -> None:
    assert "no header" in failure(write(tmp_path, b"")).reason
    assert "cannot be read" in failure(tmp_path / "absent.csv").reason


def test_stored_through_the_import_store(migrated_database: str) -> None:
    batch = read_goatcounter(FIXTURE)
    with psycopg.connect(migrated_database) as connection:
        summary = store(connection, "example.com", batch)
    assert summary.import_id is not None
    assert summary.days == 2
    assert summary.skipped == {"bot rows": 1}
    rows = query(
        migrated_database,
        "SELECT source, file_name, sha256, first_day, last_day FROM imports",
    )
    assert rows == [("goatcounter", str(FIXTURE), batch.sha256, D1, D2)]
    sums = query(
        migrated_database,
        "SELECT day, visitors, pageviews, bounces, visits, visit_duration"
        " FROM imported_visitors ORDER BY day",
    )
    assert sums == EXPECTED["imported_visitors"]
    events = query(
        migrated_database,
        "SELECT day, name, link_url, path, visitors, events FROM imported_custom_events",
    )
    assert events == EXPECTED["imported_custom_events"]
