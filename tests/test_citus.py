"""picolytics on a real Citus cluster (a coordinator and two workers on loopback,
tests/helpers/citus.py): the schema distributed by site, and the event path, the
read model, the query layer, prune, the reader and `report` working on it.
Without a Citus build (PICOLYTICS_CITUS_BIN) every test here skips and says why."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2 as httpx
import psycopg
import pytest
from helpers.citus import CitusCluster
from helpers.database import query, reader_login, wait_for_count
from helpers.events import CHROME_LINUX_UA, event, run, typical_body, write
from helpers.processes import run_cli, start_server
from psycopg import AsyncConnection

from picolytics.stats.engine import run as run_query
from picolytics.stats.query import Breakdown, Period, Query, Result
from picolytics.storage import citus, migrate, prune, roller

NOW = datetime.now(UTC).replace(microsecond=0)
SERVER_SETTINGS = {"ROLLUP_INTERVAL_SEC": "0", "REQUEST_RATE_LIMIT": "0"}
DAY = (NOW - timedelta(days=3)).replace(hour=10, minute=0, second=0)  # a closed day


def distribution(conninfo: str) -> dict[str, tuple[str, str]]:
    """table -> (partmethod, repmodel) for every Citus table but events' partitions."""
    rows = query(
        conninfo,
        "SELECT logicalrelid::text, partmethod, repmodel FROM pg_dist_partition p "
        "JOIN pg_class c ON c.oid = p.logicalrelid WHERE NOT c.relispartition",
    )
    return {name: (method, model) for name, method, model in rows}


@pytest.fixture
def migrated_citus(citus_database: str) -> str:
    migrate.apply(citus_database)
    return citus_database


def test_migrate_distributes_by_site(citus_database: str) -> None:
    migrate.apply(citus_database)
    tables = distribution(citus_database)
    for name in citus.REFERENCE_TABLES:
        assert tables[name] == ("n", "t"), name
    for name in citus.DISTRIBUTED_TABLES:
        assert tables[name] == ("h", "s"), name
    assert not set(citus.LOCAL_TABLES) & set(tables)
    # One colocation group: a site's rows of every traffic table share a shard.
    groups = query(
        citus_database,
        "SELECT DISTINCT colocationid FROM pg_dist_partition WHERE partmethod = 'h'",
    )
    assert len(groups) == 1
    # Every table of the schema is in the plan (a new migration's table must be).
    with psycopg.connect(citus_database, autocommit=True) as connection:
        assert citus.unplanned_tables(connection) == []
        assert citus.detect(connection).is_citus
        assert str(citus.detect(connection)).startswith("Citus 14")
        # Idempotent: a second run changes nothing.
        assert citus.apply(connection) == []
    # Partitions made by maintenance later come out distributed, in the same group.
    far = (NOW + timedelta(days=20)).date()
    query(citus_database, "SELECT picolytics_ensure_event_partitions(%s, 1)", (far,))
    name = f"events_{far:%Y%m%d}"
    assert query(
        citus_database,
        "SELECT partmethod, colocationid FROM pg_dist_partition WHERE logicalrelid = %s::regclass",
        (name,),
    ) == [("h", groups[0][0])]
    # Shards are on the workers, not the coordinator.
    nodes = query(
        citus_database,
        "SELECT DISTINCT nodeport FROM citus_shards WHERE table_name = 'events'::regclass",
    )
    assert len(nodes) == 2


def test_plain_postgresql_is_left_alone(migrated_database: str) -> None:
    with psycopg.connect(migrated_database, autocommit=True) as connection:
        assert not citus.detect(connection).is_citus
        assert str(citus.detect(connection)) == "PostgreSQL (single node)"
        assert citus.apply(connection) == []


def test_existing_data_is_kept_when_distributed(
    citus_database: str, citus_cluster: CitusCluster
) -> None:
    """A plain database with data, then Citus: migrate moves the rows into the shards."""
    with psycopg.connect(citus_database, autocommit=True) as connection:
        connection.execute("DROP EXTENSION citus")
    migrate.apply(citus_database)  # plain PostgreSQL: nothing distributed
    run(write(citus_database, [event(DAY + timedelta(seconds=v), v) for v in range(50)]))
    with psycopg.connect(citus_database, autocommit=True) as connection:
        connection.execute("CREATE EXTENSION citus")
        port = citus_cluster.coordinator.port
        connection.execute("SELECT citus_set_coordinator_host('127.0.0.1', %s)", (port,))
        for worker in citus_cluster.workers:
            connection.execute("SELECT citus_add_node('127.0.0.1', %s)", (worker.port,))
    migrate.apply(citus_database)
    assert distribution(citus_database)["events"] == ("h", "s")
    assert query(citus_database, "SELECT count(*), count(DISTINCT session_id) FROM events") == [
        (50, 50)
    ]
    assert query(citus_database, "SELECT count(*) FROM sessions") == [(50,)]
    # The coordinator's own copies were emptied (the rows live in the shards only).
    assert query(citus_database, "SELECT pg_relation_size('sessions')") == [(0,)]


def test_p_to_the_query_layer(migrated_citus: str, tmp_path: Path) -> None:
    server = start_server(tmp_path, conninfo=migrated_citus, settings=SERVER_SETTINGS)
    try:
        with httpx.Client(base_url=server.base, timeout=10) as client:
            for number in range(30):
                answer = client.post(
                    "/p",
                    content=typical_body(number),
                    headers={"content-type": "text/plain", "user-agent": CHROME_LINUX_UA},
                )
                assert answer.status_code == 202, answer.text
        wait_for_count(migrated_citus, "SELECT count(*) FROM events", 30, timeout_s=30)
    finally:
        server.stop()
    # One visitor (one address, one browser), one visit, 30 pageviews: from the query
    # layer as from plain SQL over the same distributed tables.
    (site_id,) = query(migrated_citus, "SELECT site_id FROM sites")[0]
    today = Period(NOW - timedelta(days=1), NOW + timedelta(days=1))
    result = ask(migrated_citus, site_id, today, ("visitors", "visits", "pageviews"))
    assert totals(result) == (1, 1, 30)
    assert query(
        migrated_citus,
        "SELECT count(DISTINCT visitor_id), count(DISTINCT session_id), count(*) FROM events",
    ) == [(1, 1, 30)]


def ask(
    conninfo: str, site_id: int, period: Period, metrics: tuple[str, ...], **extra: Any
) -> Result:
    use_rollups = bool(extra.pop("rollups", True))

    async def scenario() -> Result:
        async with await AsyncConnection.connect(conninfo, autocommit=True) as connection:
            question = Query((site_id,), period, metrics, **extra)  # type: ignore[arg-type]
            return await run_query(connection, question, use_rollups=use_rollups)

    return run(scenario())


def totals(result: Result) -> tuple[Any, ...]:
    (row,) = result.rows
    return tuple(row.metrics.values())


def test_read_model_and_query_layer_match_plain_sql(migrated_citus: str) -> None:
    """Closed days rolled up on the cluster; rollups, raw rows and plain SQL agree."""
    batch = []
    for visitor in range(40):
        start = DAY + timedelta(minutes=visitor)
        batch.append(event(start, visitor, path=f"/p{visitor % 3}"))
        if visitor % 2:
            batch.append(event(start + timedelta(seconds=30), visitor, name="nav", path="/next"))
    run(write(migrated_citus, batch))
    report = run(roller.catch_up(migrated_citus))
    assert report.rolled >= 1
    (site_id,) = query(migrated_citus, "SELECT site_id FROM sites")[0]
    period = Period(DAY.replace(hour=0), DAY.replace(hour=0) + timedelta(days=1))
    metrics = ("visitors", "visits", "pageviews", "bounce_rate")
    rolled = ask(migrated_citus, site_id, period, metrics)
    raw = ask(migrated_citus, site_id, period, metrics, rollups=False)
    assert rolled.path == "rollup" and raw.path == "raw"
    assert totals(rolled) == totals(raw) == (40, 40, 60, 50)
    pages = Breakdown("page")
    by_page = ask(migrated_citus, site_id, period, ("pageviews",), breakdown=pages)
    expected = query(
        migrated_citus,
        "SELECT path, count(*) FROM events WHERE picolytics_is_pageview(name, path) "
        "GROUP BY 1 ORDER BY 2 DESC, 1",
    )
    assert [(row.value, row.metrics["pageviews"]) for row in by_page.rows] == expected


def test_two_writers_give_one_visit_per_visitor(migrated_citus: str) -> None:
    async def scenario() -> None:
        for round_number in range(6):
            at = NOW - timedelta(minutes=30) + timedelta(minutes=round_number)
            visitors = range(round_number * 1000, round_number * 1000 + 40)
            first = [event(at, visitor) for visitor in visitors]
            second = [
                event(at + timedelta(milliseconds=1), visitor, name="ping")
                for visitor in reversed(visitors)
            ]
            await asyncio.gather(write(migrated_citus, first), write(migrated_citus, second))

    run(scenario())
    per_visitor = query(
        migrated_citus, "SELECT visitor_id, count(*), sum(events) FROM sessions GROUP BY 1"
    )
    assert len(per_visitor) == 6 * 40
    assert {(count, total) for _, count, total in per_visitor} == {(1, 2)}


@pytest.mark.parametrize("backend", ["postgresql", "citus"])
def test_a_late_write_marks_old_and_new_start_days(
    backend: str, request: pytest.FixtureRequest
) -> None:
    """The writer's statement (with its late-write marks) means the same on both."""
    conninfo = request.getfixturevalue(
        "migrated_database" if backend == "postgresql" else "migrated_citus"
    )
    start = (NOW - timedelta(days=2)).replace(hour=0, minute=10)
    run(write(conninfo, [event(start, 7, path="/a")]))
    run(write(conninfo, [event(start - timedelta(minutes=15), 7, path="/early")]))
    assert query(conninfo, "SELECT entry_path, pageviews FROM sessions") == [("/early", 2)]
    marked = {day for (day,) in query(conninfo, "SELECT day FROM rollup_stale")}
    assert {start.date(), start.date() - timedelta(days=1)} <= marked
    # A retried batch adds nothing.
    batch = [event(NOW - timedelta(minutes=1), 8)]
    run(write(conninfo, batch))
    run(write(conninfo, batch))
    assert query(conninfo, "SELECT count(*) FROM events WHERE visitor_id = 8") == [(1,)]


def test_prune_drops_old_partitions(migrated_citus: str) -> None:
    old = NOW - timedelta(days=40)
    query(migrated_citus, "SELECT picolytics_ensure_event_partitions(%s, 1)", (old.date(),))
    run(write(migrated_citus, [event(old, 1), event(NOW - timedelta(minutes=5), 2)]))
    done = run(prune.prune(migrated_citus, 30))
    assert done.dropped_partitions, done
    assert query(migrated_citus, "SELECT visitor_id FROM events") == [(2,)]
    assert query(migrated_citus, "SELECT visitor_id FROM sessions") == [(2,)]
    gone = f"events_{old:%Y%m%d}"
    assert query(migrated_citus, "SELECT to_regclass(%s)", (gone,)) == [(None,)]


def test_reader_role_reads_the_shards(migrated_citus: str) -> None:
    run(write(migrated_citus, [event(DAY, visitor) for visitor in range(5)]))
    # Created through the Citus database, so that Citus creates the role on every node.
    logins = reader_login(migrated_citus, migrated_citus)
    reader = next(logins)
    try:
        assert query(reader, "SELECT count(*) FROM events") == [(5,)]
        assert query(reader, "SELECT count(*) FROM pageviews") == [(5,)]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            query(reader, "SELECT count(*) FROM visitor_sessions")
    finally:
        next(logins, None)


def test_report_on_the_cluster(migrated_citus: str, tmp_path: Path) -> None:
    run(write(migrated_citus, [event(DAY, visitor, path="/r") for visitor in range(12)]))
    result = run_cli(
        "report",
        "--from",
        DAY.date().isoformat(),
        "--to",
        DAY.date().isoformat(),
        "--format",
        "json",
        env={"PGCONNSTRING": migrated_citus},
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert '"/r"' in result.stdout
    assert "12" in result.stdout
    json.loads(result.stdout)


def test_a_site_zone_change_works(migrated_citus: str, tmp_path: Path) -> None:
    run(write(migrated_citus, [event(DAY, 1)]))
    # A prefix of the open day (storage/rollup_prefix.py): the change drops it.
    query(
        migrated_citus,
        "INSERT INTO rollup_prefix (site_id, day, timezone, until, events_until) "
        "SELECT site_id, %s, 'UTC', %s, %s FROM sites RETURNING site_id",
        (NOW.date(), NOW.replace(minute=0, second=0), NOW.replace(minute=0, second=0)),
    )
    result = run_cli(
        "site", "set", "example.com", "--timezone", "Europe/Berlin",
        env={"PGCONNSTRING": migrated_citus}, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert query(migrated_citus, "SELECT timezone FROM sites") == [("Europe/Berlin",)]
    assert query(migrated_citus, "SELECT count(*) FROM rollup_prefix") == [(0,)]


def test_api_v2_on_the_cluster(migrated_citus: str, tmp_path: Path) -> None:
    run(write(migrated_citus, [event(DAY, visitor) for visitor in range(9)]))
    created = run_cli(
        "api-key", "create", "--name", "citus", env={"PGCONNSTRING": migrated_citus}, cwd=tmp_path
    )
    assert created.returncode == 0, created.stderr
    key = next(word for word in created.stdout.split() if word.startswith("pico_"))
    server = start_server(tmp_path, conninfo=migrated_citus, settings=SERVER_SETTINGS)
    try:
        answer = httpx.post(
            server.base + "/api/v2/query",
            json={
                "site_id": "example.com",
                "metrics": ["visitors", "pageviews"],
                "date_range": [DAY.date().isoformat(), DAY.date().isoformat()],
            },
            headers={"authorization": f"Bearer {key}"},
            timeout=30,
        )
    finally:
        server.stop()
    assert answer.status_code == 200, (answer.text, server.log()[-3000:])
    assert answer.json()["results"][0]["metrics"] == [9, 9]
