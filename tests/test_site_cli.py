"""`picolytics site list` and `picolytics site set DOMAIN --timezone ZONE`
(storage/sites_admin.py, cli.py) on a real PostgreSQL.

The data: example.com has visits at 2025-03-09 23:30 UTC (already 2025-03-10 in
Berlin) and 2025-03-12 10:00 UTC; other.org one visit on 2025-03-11. Rolled-up days
are written into rollup_days directly, as the roller would leave them: example.com's
2025-03-01 (before its first raw row: pruned), 2025-03-09 and 2025-03-10 in UTC, the
last one marked stale (a stale day counts apart only while it is in the site's zone).
In Berlin, 2025-03-09 starts before the raw horizon (the UTC midnight before the first
raw event) and has no event: the roller keeps its UTC rollup, as it keeps 2025-03-01.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result
from helpers.database import query
from helpers.events import event, run, write
from helpers.processes import run_cli

from picolytics.cli import cli
from picolytics.errors import SiteOptionError
from picolytics.report.query import Period as ReportPeriod
from picolytics.report.query import Report, report_from
from picolytics.storage import roller, sites_admin

SITE, OTHER = "example.com", "other.org"
FIRST = datetime(2025, 3, 9, 23, 30, tzinfo=UTC)


def seed(conninfo: str) -> None:
    minute = timedelta(minutes=1)
    run(
        write(
            conninfo,
            [
                event(FIRST, 1),
                event(FIRST + 5 * minute, 1, name="nav", path="/docs"),
                event(datetime(2025, 3, 12, 10, tzinfo=UTC), 2),
                event(datetime(2025, 3, 11, 8, tzinfo=UTC), 3, site=OTHER),
            ],
        )
    )
    with psycopg.connect(conninfo) as connection:
        # Only the mark below: the writer marks the days of these (old) events itself.
        connection.execute("DELETE FROM rollup_stale")
        connection.execute(
            "INSERT INTO rollup_days (site_id, day, timezone)"
            " SELECT site_id, d::date, 'UTC' FROM sites,"
            " unnest(ARRAY['2025-03-01', '2025-03-09', '2025-03-10']) d"
            " WHERE domain = %s",
            (SITE,),
        )
        connection.execute(
            "INSERT INTO rollup_stale (site_id, day)"
            " SELECT site_id, '2025-03-10' FROM sites WHERE domain = %s",
            (SITE,),
        )


@pytest.fixture
def seeded(migrated_database: str) -> str:
    seed(migrated_database)
    return migrated_database


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


def raw_rows(conninfo: str) -> list[tuple[Any, ...]]:
    """Every raw row, whole, to show that a zone change leaves them alone."""
    return query(
        conninfo,
        "SELECT (SELECT array_agg(s ORDER BY session_id)::text FROM sessions s),"
        " (SELECT array_agg(e ORDER BY event_id)::text FROM events e)",
    )


# --- site list ----------------------------------------------------------------------------


def test_list_in_a_table_and_as_json(seeded: str, invoke: Any) -> None:
    result = invoke(seeded, "site", "list")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "domain       time zone  first day   last day    rolled up",
        "example.com  UTC        2025-03-01  2025-03-12  2 days (1 stale)",
        "other.org    UTC        2025-03-11  2025-03-11  0 days",
    ]
    document = json.loads(invoke(seeded, "site", "list", "--json").output)
    assert document == [
        {
            "domain": SITE,
            "timezone": "UTC",
            "first_day": "2025-03-01",  # the pruned day still has its rollup
            "last_day": "2025-03-12",
            "rolled_up_days": 2,
            "stale_days": 1,
            "other_zone_days": 0,
            "imports": [],
        },
        {
            "domain": OTHER,
            "timezone": "UTC",
            "first_day": "2025-03-11",
            "last_day": "2025-03-11",
            "rolled_up_days": 0,
            "stale_days": 0,
            "other_zone_days": 0,
            "imports": [],
        },
    ]


def test_list_without_sites(migrated_database: str, invoke: Any) -> None:
    result = invoke(migrated_database, "site", "list")
    assert (result.exit_code, result.output) == (
        0,
        "no sites yet (a site appears with its first event)\n",
    )
    assert json.loads(invoke(migrated_database, "site", "list", "--json").output) == []


def test_list_days_are_local_days(migrated_database: str) -> None:
    run(write(migrated_database, [event(FIRST, 1)]))
    with psycopg.connect(migrated_database) as connection:
        (utc,) = sites_admin.list_sites(connection)
        connection.execute("UPDATE sites SET timezone = 'Europe/Berlin'")
        connection.commit()
        (berlin,) = sites_admin.list_sites(connection)
    assert (utc.first_day, utc.last_day) == (date(2025, 3, 9), date(2025, 3, 9))
    assert (berlin.first_day, berlin.last_day) == (date(2025, 3, 10), date(2025, 3, 10))


# --- site set -----------------------------------------------------------------------------


def test_set_the_zone(seeded: str, invoke: Any) -> None:
    before = raw_rows(seeded)
    result = invoke(seeded, "site", "set", "WWW.Example.com", "--timezone", "Europe/Berlin")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "example.com: time zone UTC -> Europe/Berlin",
        "Raw events and visits are unchanged; periods and day, week and month buckets are"
        " now local days in Europe/Berlin.",
        "3 days were rolled up in another zone: queries read them from raw rows until the"
        " roller rolls them again in Europe/Berlin (the server does so by itself;"
        " `picolytics rollup` does it now).",
        "2 of them lack complete raw rows (no traffic, or pruned) and keep their rollup in"
        " the old zone, unused until the site is set back to it; in the new zone, whatever"
        " raw rows are left answer.",
    ]
    assert raw_rows(seeded) == before
    assert query(seeded, "SELECT domain, timezone FROM sites ORDER BY site_id") == [
        (SITE, "Europe/Berlin"),
        (OTHER, "UTC"),
    ]
    # The rollups are left for the roller: they no longer match the site's zone.
    assert query(seeded, "SELECT count(*) FROM rollup_days WHERE timezone = 'UTC'") == [(3,)]
    listed = invoke(seeded, "site", "list").output.splitlines()
    assert listed[1] == (
        "example.com  Europe/Berlin  2025-03-01  2025-03-12  0 days (3 in another zone)"
    )


def test_set_back_reuses_the_rollups_of_that_zone(seeded: str, invoke: Any) -> None:
    assert invoke(seeded, "site", "set", SITE, "--timezone", "America/New_York").exit_code == 0
    result = invoke(seeded, "site", "set", SITE, "--timezone", "UTC")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == "example.com: time zone America/New_York -> UTC"
    assert result.output.splitlines()[-1] == (
        "3 days already rolled up in UTC are read from the rollups again."
    )
    again = invoke(seeded, "site", "set", SITE, "--timezone", "UTC")
    assert (again.exit_code, again.output) == (
        0,
        "example.com is already in UTC: nothing changed\n",
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["nope.example", "--timezone", "Europe/Berlin"],
            "no site 'nope.example' in the database (sites: example.com, other.org)",
        ),
        (
            [SITE, "--timezone", "Mars/Olympus_Mons"],
            "--timezone: 'Mars/Olympus_Mons' is not a known IANA time zone (e.g. Europe/Berlin,",
        ),
        (
            [SITE, "--timezone", "localtime"],
            "--timezone: 'localtime' is not a known IANA time zone",
        ),
        ([SITE, "--timezone", "europe/berlin"], "--timezone: 'europe/berlin' is not a known"),
    ],
)
def test_set_refuses_unknown_sites_and_zones(
    seeded: str, invoke: Any, args: list[str], message: str
) -> None:
    before = query(seeded, "SELECT domain, timezone FROM sites ORDER BY site_id")
    result = invoke(seeded, "site", "set", *args)
    assert result.exit_code == 2
    assert result.output.startswith(f"picolytics: error: {message}")
    assert len(result.output.splitlines()) == 1
    assert query(seeded, "SELECT domain, timezone FROM sites ORDER BY site_id") == before


def test_postgresql_must_know_the_zone_too(seeded: str) -> None:
    """Python and PostgreSQL read different zone databases; both must know the name."""
    with psycopg.connect(seeded) as connection:
        sites_admin.check_zone(connection, "Europe/Berlin")
        for name, hint in [
            ("europe/berlin", "did you mean Europe/Berlin?"),
            ("Mars/Olympus_Mons", "e.g. Europe/Berlin, UTC"),
            ("CEST", "e.g. Europe/Berlin, UTC"),  # an abbreviation, which AT TIME ZONE takes
        ]:
            with pytest.raises(SiteOptionError) as caught:
                sites_admin.check_zone(connection, name)
            assert str(caught.value) == (
                f"--timezone: {name!r} is not a time zone PostgreSQL knows ({hint})"
            )
            assert caught.value.exit_code == 2
        with pytest.raises(SiteOptionError, match="is not a time zone PostgreSQL knows"):
            sites_admin.set_timezone(connection, SITE, "CEST")
    assert query(seeded, "SELECT timezone FROM sites WHERE domain = %s", (SITE,)) == [("UTC",)]


def test_the_database_without_the_schema(fresh_database: str, invoke: Any) -> None:
    result = invoke(fresh_database, "site", "list")
    assert result.exit_code == 1
    assert result.output.startswith(
        "picolytics: error: the database has no picolytics tables yet (run `picolytics migrate`"
    )


# --- as users run it ------------------------------------------------------------------------


@pytest.mark.slow
def test_the_commands_as_processes(seeded: str, tmp_path: Path) -> None:
    env = {"PGCONNSTRING": seeded}
    listed = run_cli("site", "list", "--json", env=env, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert [site["timezone"] for site in json.loads(listed.stdout)] == ["UTC", "UTC"]
    changed = run_cli("site", "set", OTHER, "--timezone", "Asia/Tokyo", env=env, cwd=tmp_path)
    assert changed.returncode == 0, changed.stderr
    assert changed.stdout.startswith("other.org: time zone UTC -> Asia/Tokyo\n")
    unknown = run_cli("site", "set", "nope.example", "--timezone", "UTC", env=env, cwd=tmp_path)
    assert unknown.returncode == 2
    assert unknown.stderr.strip().splitlines()[-1] == (
        "picolytics: error: no site 'nope.example' in the database (sites: example.com, other.org)"
    )
    assert "Traceback" not in unknown.stderr
    missing = run_cli("site", "set", SITE, env=env, cwd=tmp_path)
    assert missing.returncode == 2
    assert "Missing option '--timezone'" in missing.stderr


# --- with the roller -------------------------------------------------------------------------


def test_a_zone_change_is_rolled_again_and_keeps_the_numbers(
    migrated_database: str, invoke: Any
) -> None:
    """Rolled in UTC, then set to Berlin: the UTC rollups no longer answer Berlin's days
    (raw rows do, with the same numbers), and the roller rolls the days with raw rows
    again in Berlin. Visits every 5 hours from 2025-03-08 20:00 to 03-11 03:00 UTC."""
    hour = timedelta(hours=1)
    start = datetime(2025, 3, 8, 20, tzinfo=UTC)
    run(write(migrated_database, [event(start + n * 5 * hour, n % 3) for n in range(12)]))
    later = datetime(2025, 3, 20, tzinfo=UTC)  # days up to 03-18 closed an hour ago
    assert run(roller.catch_up(migrated_database, later)).rolled == 11
    (in_utc,) = sites_admin.connected(migrated_database, sites_admin.list_sites)
    assert (in_utc.rolled_up_days, in_utc.other_zone_days) == (11, 0)

    def berlin_report() -> Report:
        days = ReportPeriod(date(2025, 3, 8), date(2025, 3, 12))
        return report_from(migrated_database, days, limit=None)

    changed = invoke(migrated_database, "site", "set", SITE, "--timezone", "Europe/Berlin")
    assert changed.exit_code == 0, changed.output
    # 03-08 starts in Berlin at 23:00 UTC on the 7th, before the first raw event's UTC
    # day: it may lack rows, so the roller keeps its UTC rollup.
    assert changed.output.splitlines()[2:] == [
        "11 days were rolled up in another zone: queries read them from raw rows until the"
        " roller rolls them again in Europe/Berlin (the server does so by itself;"
        " `picolytics rollup` does it now).",
        "1 of them lacks complete raw rows (no traffic, or pruned) and keeps its rollup in"
        " the old zone, unused until the site is set back to it; in the new zone, whatever"
        " raw rows are left answer.",
    ]
    from_raw = berlin_report()
    assert from_raw.timezone == "Europe/Berlin"
    assert [d.visits for d in from_raw.daily] == [1, 5, 5, 1, 0]  # 21:00 UTC: the 9th
    (moved,) = sites_admin.connected(migrated_database, sites_admin.list_sites)
    assert (moved.rolled_up_days, moved.other_zone_days) == (0, 11)
    again = run(roller.catch_up(migrated_database, later))
    # 03-09 to 03-18 again, in Berlin; 03-19, closed there an hour ago, anew.
    assert (again.rolled, again.rezoned, again.new) == (11, 10, 1)
    assert (again.first, again.last) == (date(2025, 3, 9), date(2025, 3, 19))
    (rolled,) = sites_admin.connected(migrated_database, sites_admin.list_sites)
    assert (rolled.rolled_up_days, rolled.other_zone_days) == (11, 1)
    assert berlin_report().daily == from_raw.daily
    assert berlin_report().summary == from_raw.summary
