"""A Report as 80-column text, as JSON (shape documented in the README), or as CSV
files in a zip archive (one file per table)."""

from __future__ import annotations

import csv
import io
import json
import os
import zipfile
from dataclasses import asdict
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from picolytics.errors import ReportError
from picolytics.report.model import Report, Table

FORMATS = ("text", "json", "csv")
WIDTH = 80
JSON_VERSION = 1
BARS_UP_TO_DAYS = 31  # one bar per line up to a month; a sparkline beyond
SPARK_PER_LINE = 55  # "  FIRST-DAY <55 marks> LAST-DAY" fits 80 columns

TITLES = {
    "pages": "Top pages",
    "sources": "Top sources",
    "countries": "Countries",
    "browsers": "Browsers",
    "operating_systems": "Operating systems",
    "devices": "Devices",
    "campaigns": "Campaigns (source / medium / campaign)",
    "custom_events": "Custom events",
    "bots": "Bots filtered (not counted above), by reason",
}
# Columns that name the row (joined into one label in text); the others are counts.
LABEL_COLUMNS = {"path", "source", "country", "browser", "os", "device_type", "name", "reason"}
LABEL_COLUMNS |= {"utm_source", "utm_medium", "utm_campaign"}
EMPTY_LABEL = {"country": "(unknown)", "browser": "(unknown)", "os": "(unknown)"}


class Glyphs:
    """Bar and sparkline characters: Unicode blocks, or ASCII for other terminals."""

    def __init__(self, ascii_only: bool) -> None:
        self.ascii_only = ascii_only
        self.ellipsis = "..." if ascii_only else "…"
        self.dash = "-" if ascii_only else "\u2013"  # en dash
        self.spark = "_.:-=+*#" if ascii_only else "▁▂▃▄▅▆▇█"

    def bar(self, value: int, top: int, width: int) -> str:
        if value <= 0 or top <= 0:
            return ""
        if self.ascii_only:
            return "#" * max(1, round(width * value / top))
        eighths = max(1, round(8 * width * value / top))
        full, part = divmod(eighths, 8)
        return "█" * full + ("" if part == 0 else "▏▎▍▌▋▊▉"[part - 1])

    def sparkline(self, values: list[int]) -> str:
        top = max(values, default=0)
        if top <= 0:
            return self.spark[0] * len(values)
        last = len(self.spark) - 1
        return "".join(self.spark[0 if v <= 0 else max(1, round(last * v / top))] for v in values)


def number(value: int) -> str:
    return f"{value:,}"


def duration(seconds: Decimal | None, dash: str) -> str:
    if seconds is None:
        return dash
    whole = int(seconds.to_integral_value())
    minutes, rest = divmod(whole, 60)
    if minutes >= 60:
        return f"{minutes // 60}h {minutes % 60:02d}m"
    return f"{minutes}m {rest:02d}s" if minutes else f"{rest}s"


def _clip(text: str, width: int, glyphs: Glyphs) -> str:
    if len(text) <= width:
        return text
    return text[: width - len(glyphs.ellipsis)] + glyphs.ellipsis


def _sites_line(report: Report, glyphs: Glyphs) -> str:
    names = ", ".join(report.sites)
    if report.all_sites and len(report.sites) > 1:
        names = f"all {len(report.sites)} sites ({names})"
    return _clip(f"picolytics report: {names}", WIDTH, glyphs)


def _summary_lines(report: Report, glyphs: Glyphs) -> list[str]:
    s, dash = report.summary, glyphs.dash
    rate = dash if s.bounce_rate is None else f"{s.bounce_rate}%"
    per_visit = dash if s.pages_per_visit is None else str(s.pages_per_visit)
    cells = [
        ("Visitors", number(s.visitors)),
        ("Visits", number(s.visits)),
        ("Pageviews", number(s.pageviews)),
        ("Bounce rate", rate),
        ("Visit duration", duration(s.visit_duration_s, dash)),
        ("Pages per visit", per_visit),
    ]
    lines = []
    for row in (cells[:3], cells[3:]):
        lines.append("".join(f"  {label:<15}{value:>9}" for label, value in row).rstrip())
    lines.append(f"  {'Bots filtered':<15}{number(s.bot_hits):>9}")
    return lines


def _daily_lines(report: Report, glyphs: Glyphs) -> list[str]:
    values = [day.pageviews for day in report.daily]
    if len(report.daily) <= BARS_UP_TO_DAYS:
        top = max(values, default=0)
        digits = max(len(number(v)) for v in values) if values else 1
        width = WIDTH - 2 - 15 - 2 - digits - 1
        return [
            f"  {day.day:%Y-%m-%d %a}  {number(day.pageviews):>{digits}} "
            f"{glyphs.bar(day.pageviews, top, width)}".rstrip()
            for day in report.daily
        ]
    spark = glyphs.sparkline(values)
    lines = []
    for n in range(0, len(values), SPARK_PER_LINE):
        days = report.daily[n : n + SPARK_PER_LINE]
        marks = spark[n : n + SPARK_PER_LINE]
        lines.append(f"  {days[0].day:%Y-%m-%d} {marks} {days[-1].day:%Y-%m-%d}")
    top_day = max(report.daily, key=lambda day: day.pageviews)
    lines.append(
        f"  one mark per day; busiest {top_day.day:%Y-%m-%d} with {number(top_day.pageviews)}"
    )
    return lines


def _label(table: Table, row: tuple[Any, ...]) -> str:
    parts = []
    for column, value in zip(table.columns, row, strict=True):
        if column in LABEL_COLUMNS:
            parts.append(str(value) if value != "" else EMPTY_LABEL.get(column, "(none)"))
    return " / ".join(parts)


def _table_lines(table: Table, glyphs: Glyphs) -> list[str]:
    counts = [n for n, column in enumerate(table.columns) if column not in LABEL_COLUMNS]
    headings = [table.columns[n].replace("_", " ").capitalize() for n in counts]
    texts = [[number(row[n]) for n in counts] for row in table.rows]
    widths = [
        max([len(heading), *(len(text[i]) for text in texts)]) for i, heading in enumerate(headings)
    ]
    numbers_width = sum(width + 2 for width in widths)
    label_width = WIDTH - 2 - numbers_width
    title = _clip(TITLES.get(table.name, table.name), label_width, glyphs)
    lines = [
        f"{title:<{label_width + 2}}"
        + "".join(f"  {h:>{w}}" for h, w in zip(headings, widths, strict=True))
    ]
    if not table.rows:
        lines.append("  (none)")
    for row, text in zip(table.rows, texts, strict=True):
        label = _clip(_label(table, row), label_width, glyphs)
        cells = "".join(f"  {t:>{w}}" for t, w in zip(text, widths, strict=True))
        lines.append(f"  {label:<{label_width}}{cells}")
    return lines


def _imported_lines(report: Report) -> list[str]:
    days = report.imported_days
    if not days:
        return []
    return [f"includes imported data for {days} day{'s' if days != 1 else ''}"]


def render_text(report: Report, *, ascii_only: bool = False) -> str:
    """The report for an 80-column terminal."""
    glyphs = Glyphs(ascii_only)
    period = report.period
    days = len(report.daily)
    plural = f"{days} day{'s' if days != 1 else ''}"
    lines = [
        _sites_line(report, glyphs),
        _clip(f"{period.first} to {period.last} ({report.timezone}, {plural})", WIDTH, glyphs),
        *_imported_lines(report),
        "",
        *_summary_lines(report, glyphs),
        "",
        "Pageviews per day",
        *_daily_lines(report, glyphs),
    ]
    for table in report.tables:
        lines += ["", *_table_lines(table, glyphs)]
    if report.limit is not None:
        lines += ["", f"Tables show the top {report.limit} rows (--limit)."]
    return "\n".join(lines) + "\n"


def _plain(value: Any) -> Any:
    """JSON values: numbers stay numbers (Decimal -> float), dates ISO 8601."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    return value


def report_document(report: Report) -> dict[str, Any]:
    """The JSON shape (version 1) documented in the README; `from`, `to` and the days
    of `daily` are local dates in `timezone`."""
    document: dict[str, Any] = {
        "version": JSON_VERSION,
        "generated_at": _plain(report.generated_at),
        "sites": list(report.sites),
        "all_sites": report.all_sites,
        "from": _plain(report.period.first),
        "to": _plain(report.period.last),
        "timezone": report.timezone,
        "days": len(report.daily),
        "limit": report.limit,
        # Only when there is some, so a report without imports keeps its shape.
        **({"imported_days": report.imported_days} if report.imported_days else {}),
        "summary": {key: _plain(value) for key, value in asdict(report.summary).items()},
        "daily": [{key: _plain(v) for key, v in asdict(day).items()} for day in report.daily],
    }
    for table in report.tables:
        document[table.name] = [
            {column: _plain(value) for column, value in zip(table.columns, row, strict=True)}
            for row in table.rows
        ]
    return document


def render_json(report: Report) -> str:
    return json.dumps(report_document(report), indent=2, ensure_ascii=False) + "\n"


def _csv_text(columns: list[str], rows: list[list[Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if value is None else _plain(value) for value in row])
    return out.getvalue()


def csv_files(report: Report) -> dict[str, str]:
    """File name -> CSV text: summary.csv (one row), daily.csv, one file per table."""
    summary = asdict(report.summary)
    meta = {
        "sites": " ".join(report.sites),
        "from": report.period.first,
        "to": report.period.last,
        "timezone": report.timezone,
    }
    files = {
        "summary.csv": _csv_text([*meta, *summary], [[*meta.values(), *summary.values()]]),
        "daily.csv": _csv_text(
            ["day", "pageviews", "visits", "visitors"],
            [[d.day, d.pageviews, d.visits, d.visitors] for d in report.daily],
        ),
    }
    for table in report.tables:
        files[f"{table.name}.csv"] = _csv_text(
            list(table.columns), [list(row) for row in table.rows]
        )
    return files


def render_csv_zip(report: Report) -> bytes:
    """The CSV files in one zip archive, in a folder named after the period."""
    folder = f"picolytics-report-{report.period.first}-to-{report.period.last}"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in csv_files(report).items():
            stamp = report.generated_at.timetuple()[:6]
            info = zipfile.ZipInfo(f"{folder}/{name}", date_time=stamp)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, text.encode("utf-8"))
    return buffer.getvalue()


def default_zip_name(report: Report) -> str:
    return f"picolytics-report-{report.period.first}-to-{report.period.last}.zip"


def render(report: Report, output_format: str, *, ascii_only: bool = False) -> bytes:
    """The report in one of FORMATS, as the bytes to write (text and JSON in UTF-8)."""
    if output_format == "csv":
        return render_csv_zip(report)
    if output_format == "json":
        return render_json(report).encode("utf-8")
    return render_text(report, ascii_only=ascii_only).encode("utf-8")


def write_file(path: Path, data: bytes) -> None:
    """Write atomically (a temporary file renamed over the target): never half a report."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_bytes(data)
        temporary.replace(path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise ReportError(f"--output: cannot write {path}: {error.strerror or error}") from None
