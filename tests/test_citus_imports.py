"""Administration, imported history and the dashboard's reads on a real Citus cluster
(tests/helpers/citus.py): `migrate --check` says the mode, `site list`, a Plausible
import read back through the query layer with include_imports, an export, and the
dashboard's list of sites. Without a Citus build (PICOLYTICS_CITUS_BIN) every test
here skips and says why."""

from __future__ import annotations

import zipfile
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from helpers.database import query
from helpers.events import event, run, write
from helpers.imported import add_import
from helpers.processes import run_cli
from psycopg import AsyncConnection

from picolytics.dashboard.ui import SELECT_SITES
from picolytics.dimensions import Metric
from picolytics.stats.engine import run as run_query
from picolytics.stats.query import Period, Query, Result
from picolytics.storage import migrate
from picolytics.storage.rollup import roll_day

EXPORT = Path(__file__).parent / "data" / "plausible" / "export"
SITE = "example.com"
DAY = (datetime.now(UTC) - timedelta(days=3)).replace(hour=10, minute=0, second=0, microsecond=0)


@pytest.fixture
def migrated_citus(citus_database: str) -> str:
    migrate.apply(citus_database)
    return citus_database


def cli(conninfo: str, folder: Path, *args: str) -> str:
    result = run_cli(*args, env={"PGCONNSTRING": conninfo}, cwd=folder, timeout=120)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result.stdout


@pytest.mark.parametrize("backend", ["postgresql", "citus"])
def test_migrate_check_says_the_mode(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    conninfo = request.getfixturevalue(
        "migrated_database" if backend == "postgresql" else "migrated_citus"
    )
    first = cli(conninfo, tmp_path, "migrate", "--check").splitlines()[0]
    if backend == "postgresql":
        assert first == "database: PostgreSQL (single node)"
    else:
        assert first.startswith("database: Citus 14")
        assert first.endswith("(distributed by site_id)")


def test_site_list_on_the_cluster(migrated_citus: str, tmp_path: Path) -> None:
    batch = [event(DAY, 1), event(DAY + timedelta(days=1), 2, site="second.example")]
    run(write(migrated_citus, batch))
    listed = cli(migrated_citus, tmp_path, "site", "list").splitlines()
    first, second = str(DAY.date()), str(DAY.date() + timedelta(days=1))
    assert [line.split()[:4] for line in listed[1:]] == [
        [SITE, "UTC", first, first],
        ["second.example", "UTC", second, second],
    ]


def ask(conninfo: str, question: Query) -> Result:
    async def scenario() -> Result:
        async with await AsyncConnection.connect(conninfo, autocommit=True) as connection:
            return await run_query(connection, question)

    return run(scenario())


def totals(result: Result) -> tuple[Any, ...]:
    (row,) = result.rows
    return tuple(row.metrics.values())


def test_import_then_query_with_imports(migrated_citus: str, tmp_path: Path) -> None:
    run(write(migrated_citus, [event(DAY, 1)]))  # a native day long after the import
    cli(migrated_citus, tmp_path, "import", "plausible", str(EXPORT), "--site", SITE)
    # The imported rows live in the site's shards, with the site's native rows.
    shards = query(
        migrated_citus,
        "SELECT DISTINCT nodeport FROM citus_shards s JOIN pg_dist_shard d USING (shardid) "
        "WHERE s.table_name IN ('imported_visitors'::regclass, 'events'::regclass) "
        "AND get_shard_id_for_distribution_column(s.table_name, "
        "(SELECT site_id FROM sites WHERE domain = %s)) = shardid",
        (SITE,),
    )
    assert len(shards) == 1
    (site_id,) = query(migrated_citus, "SELECT site_id FROM sites WHERE domain = %s", (SITE,))[0]
    start = datetime(2024, 1, 1, tzinfo=UTC)
    period = Period(start, start + timedelta(days=2))
    metrics: tuple[Metric, ...] = ("visitors", "pageviews", "visits")
    with_imports = ask(migrated_citus, Query((site_id,), period, metrics, include_imports=True))
    assert with_imports.imports is not None and with_imports.imports.included
    # tests/data/plausible/export/imported_visitors_*: 12 + 8, 30 + 17, 14 + 9.
    assert totals(with_imports) == (20, 47, 23)
    without = ask(migrated_citus, Query((site_id,), period, metrics))
    assert totals(without) == (0, 0, 0)
    listed = cli(migrated_citus, tmp_path, "site", "list")
    assert "2024-01-01..2024-01-02 (plausible)" in listed


def test_export_from_the_cluster(migrated_citus: str, tmp_path: Path) -> None:
    run(write(migrated_citus, [event(DAY + timedelta(minutes=v), v) for v in range(7)]))
    out = tmp_path / "site.zip"
    day = DAY.date().isoformat()
    cli(migrated_citus, tmp_path, "export", "plausible", "--site", SITE,
        "--from", day, "--to", day, str(out))  # fmt: skip
    with zipfile.ZipFile(out) as archive:
        names = archive.namelist()
        assert len(names) == 10
        (visitors,) = [name for name in names if name.startswith("imported_visitors_")]
        lines = archive.read(visitors).decode().splitlines()
    assert lines[1].split(",")[:3] == [f'"{day}"', "7", "7"]


def test_dashboard_site_list_reads_the_cluster(migrated_citus: str) -> None:
    run(write(migrated_citus, [event(DAY, 1), event(DAY, 2, site="second.example")]))
    # One imported day for the first site (what an import leaves behind).
    query(
        migrated_citus,
        "WITH i AS (INSERT INTO imports (site_id, source, file_name, sha256, first_day, "
        "last_day) SELECT site_id, 'plausible', 'x.zip', repeat('0', 64), '2024-01-01', "
        "'2024-01-01' FROM sites WHERE domain = %s RETURNING site_id, import_id) "
        "INSERT INTO imported_days (site_id, day, import_id) "
        "SELECT site_id, '2024-01-01', import_id FROM i RETURNING site_id",
        (SITE,),
    )
    rows = query(migrated_citus, SELECT_SITES)
    assert [(domain, imported) for domain, _, imported in rows] == [
        (SITE, True),
        ("second.example", False),
    ]


# The ten daily views that read the rollups and imported days (sql/0007, sql/0015).
DAILY_VIEWS = (
    "daily_visitors", "sources", "entry_pages", "exit_pages", "countries", "browsers",
    "operating_systems", "devices", "top_pages", "daily_custom_events",
)  # fmt: skip
D8, D10, D11 = date(2024, 1, 8), date(2024, 1, 10), date(2024, 1, 11)


def seed_views(conninfo: str) -> None:
    """Native visits on D10 (rolled up) and D11 (raw only), imported history on D8."""
    at = datetime(2024, 1, 10, 10, tzinfo=UTC)
    batch = [event(at + timedelta(minutes=v), v, path=f"/p{v % 3}") for v in range(6)]
    batch += [event(at, 9, name="Signup", path="/p0"), event(at, 20, site="other.test")]
    batch += [event(at + timedelta(days=1, minutes=v), 100 + v, path="/q") for v in range(4)]
    run(write(conninfo, batch))

    async def roll() -> None:
        async with await AsyncConnection.connect(conninfo, autocommit=True) as connection:
            for (site_id,) in query(conninfo, "SELECT site_id FROM sites"):
                await roll_day(connection, site_id, D10, "UTC")

    run(roll())
    add_import(
        conninfo,
        SITE,
        {
            "imported_visitors": [(D8, 10, 30, 4, 12, 600)],
            "imported_sources": [(D8, "Google", "", "", "", "", "", "", 5, 2, 3, 50, 1)],
            "imported_pages": [(D8, SITE, "/p0", 3, 4, 9)],
        },
    )


def test_daily_views_mean_the_same_on_both(migrated_database: str, migrated_citus: str) -> None:
    """Every daily view (rolled day, raw day, imported day) on the cluster as on plain
    PostgreSQL, row for row."""
    seed_views(migrated_database)
    seed_views(migrated_citus)
    for view in DAILY_VIEWS:
        statement = f"SELECT * FROM {view} ORDER BY 1, 2, 3, 4"
        plain = query(migrated_database, statement)
        assert plain, view
        assert query(migrated_citus, statement) == plain, view
    days = query(migrated_citus, "SELECT day, visitors FROM daily_visitors WHERE site = %s "
                 "ORDER BY day", (SITE,))  # fmt: skip
    # D10: six visitors with pageviews (visitor 9 only sent a custom event).
    assert days == [(D8, 10), (D10, 6), (D11, 4)]
