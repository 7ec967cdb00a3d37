"""`picolytics report` with imported data (report/query.py; docs/imports.md): included
by default, its header says on how many days, and `--no-imports` leaves it out.

example.com: one native visit on 2024-01-10; imported 2024-01-05 and 2024-01-06 (10
and 5 visitors, 30 and 9 pageviews, all from Google on Firefox).
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

from helpers.events import event, run, write
from helpers.imported import add_import
from helpers.processes import run_cli

from picolytics.report.model import Period
from picolytics.report.query import report_from

SITE = "example.com"


def seed(conninfo: str) -> None:
    run(write(conninfo, [event(datetime(2024, 1, 10, 10, tzinfo=UTC), 1, path="/")]))
    d0, d1 = date(2024, 1, 5), date(2024, 1, 6)
    add_import(
        conninfo,
        SITE,
        {
            "imported_visitors": [(d0, 10, 30, 4, 12, 600), (d1, 5, 9, 2, 6, 300)],
            "imported_sources": [
                (d0, "Google", "google.com", "", "", "", "", "", 30, 10, 12, 600, 4),
                (d1, "Google", "google.com", "", "", "", "", "", 9, 5, 6, 300, 2),
            ],
            "imported_browsers": [
                (d0, "Firefox", "121.0", 10, 12, 600, 4, 30),
                (d1, "Firefox", "121.0", 5, 6, 300, 2, 9),
            ],
        },
    )


def test_report_includes_imported_data_by_default(migrated_database: str) -> None:
    seed(migrated_database)
    period = Period(date(2024, 1, 1), date(2024, 1, 31))
    report = report_from(migrated_database, period, (SITE,))
    assert report.imported_days == 2
    assert (report.summary.visitors, report.summary.pageviews) == (1 + 15, 1 + 39)
    # (value, visits, visitors) per source
    assert [row[:2] for row in report.table("sources").rows] == [("Google", 18), ("(direct)", 1)]
    assert report.table("browsers").rows[0][:2] == ("Firefox", 18)
    native = report_from(migrated_database, period, (SITE,), imports=False)
    assert native.imported_days == 0
    assert (native.summary.visitors, native.summary.pageviews) == (1, 1)
    assert [row[0] for row in native.table("browsers").rows] == ["Chrome"]


def test_cli_header_and_no_imports(migrated_database: str, tmp_path: Path) -> None:
    seed(migrated_database)
    env = {"PGCONNSTRING": migrated_database, "PYTHONIOENCODING": "utf-8"}
    args = ["report", "--site", SITE, "--from", "2024-01-01", "--to", "2024-01-31"]
    text = run_cli(*args, env=env, cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    assert text.stdout.splitlines()[2] == "includes imported data for 2 days"
    plain = run_cli(*args, "--no-imports", env=env, cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr
    assert "imported" not in plain.stdout
    document = json.loads(run_cli(*args, "--format", "json", env=env, cwd=tmp_path).stdout)
    assert document["imported_days"] == 2
    assert document["summary"]["visitors"] == 16
    without = json.loads(
        run_cli(*args, "--format", "json", "--no-imports", env=env, cwd=tmp_path).stdout
    )
    assert "imported_days" not in without
    assert without["summary"]["visitors"] == 1
