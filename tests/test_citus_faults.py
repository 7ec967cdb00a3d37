"""Faults on a real Citus cluster (tests/helpers/citus.py): a worker that stops while
events arrive, and a worker added with a shard rebalance while they keep arriving.
The real pipeline writes throughout; nothing accepted is lost or written twice.
Each test has a cluster of its own, so that stopping or adding nodes spoils no other."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest
from helpers.citus import CitusCluster, citus_bin, running_cluster, skip_reason
from helpers.database import query
from helpers.events import TIMEOUT, event, run

from picolytics.storage import migrate
from picolytics.storage.pipeline import Pipeline

SITES = [f"site{number}.example" for number in range(12)]


@pytest.fixture
def own_cluster() -> Iterator[tuple[CitusCluster, str]]:
    bin_dir = citus_bin()
    if bin_dir is None:
        pytest.skip(skip_reason())
    with running_cluster(bin_dir) as cluster:
        conninfo = cluster.create_database()
        migrate.apply(conninfo)
        yield cluster, conninfo


async def _offer_for(pipeline: Pipeline, seconds: float, first_visitor: int) -> int:
    """Offer one event every 10 ms across the sites for `seconds`; returns how many."""
    offered = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        at = datetime.now(UTC)
        site = SITES[offered % len(SITES)]
        assert pipeline.offer(event(at, first_visitor + offered, site=site, path=f"/{offered}"))
        offered += 1
        await asyncio.sleep(0.01)
    return offered


def _pipeline(conninfo: str) -> Pipeline:
    return Pipeline(
        conninfo,
        queue_size=100_000,
        batch_max_size=200,
        batch_max_msec=50,
        session_timeout=TIMEOUT,
    )


def _counts(conninfo: str) -> tuple[int, int, int]:
    """Events, distinct event ids, and the events the visits count."""
    ((rows, ids),) = query(conninfo, "SELECT count(*), count(DISTINCT event_id) FROM events")
    ((counted,),) = query(conninfo, "SELECT coalesce(sum(events), 0) FROM sessions")
    return int(rows), int(ids), int(counted)


def test_a_worker_outage_loses_nothing(own_cluster: tuple[CitusCluster, str]) -> None:
    cluster, conninfo = own_cluster
    worker = cluster.workers[0]

    async def scenario() -> tuple[int, Pipeline]:
        pipeline = _pipeline(conninfo)
        pipeline.start()
        offered = await _offer_for(pipeline, 1.5, 0)
        worker.stop()  # the shards on it are gone; writes to them fail and retry
        offered += await _offer_for(pipeline, 3, 100_000)
        assert pipeline.stats.written < offered  # the outage did hold writes back
        worker.start()
        offered += await _offer_for(pipeline, 1.5, 200_000)
        await pipeline.stop(deadline_s=90)
        return offered, pipeline

    offered, pipeline = run(scenario())
    assert pipeline.stats.written == offered
    assert not pipeline.stats.dropped
    assert _counts(conninfo) == (offered, offered, offered)


def test_a_new_worker_and_a_rebalance_under_load(own_cluster: tuple[CitusCluster, str]) -> None:
    cluster, conninfo = own_cluster
    name = str(psycopg.conninfo.conninfo_to_dict(conninfo)["dbname"])
    moved: list[int] = []
    failure: list[BaseException] = []

    def rebalance() -> None:
        try:
            node = cluster.add_worker([name])
            with psycopg.connect(conninfo, autocommit=True) as connection:
                # Moves shards by logical replication: writes go on meanwhile.
                connection.execute(
                    "SELECT citus_rebalance_start(shard_transfer_mode => 'force_logical')"
                )
                connection.execute("SELECT citus_rebalance_wait()")
            rows = query(
                conninfo,
                "SELECT count(*) FROM citus_shards WHERE nodeport = %s",
                (node.port,),
            )
            moved.append(int(rows[0][0]))
        except BaseException as error:  # reported by the test below
            failure.append(error)

    async def scenario() -> tuple[int, Pipeline]:
        pipeline = _pipeline(conninfo)
        pipeline.start()
        offered = await _offer_for(pipeline, 1, 0)
        thread = threading.Thread(target=rebalance)
        thread.start()
        first = 1_000_000
        while thread.is_alive():
            offered += await _offer_for(pipeline, 0.5, first + offered)
        thread.join()
        offered += await _offer_for(pipeline, 1, first * 2)
        await pipeline.stop(deadline_s=90)
        return offered, pipeline

    offered, pipeline = run(scenario())
    assert not failure, failure
    assert moved and moved[0] > 0  # the new worker holds shards now
    assert pipeline.stats.written == offered
    assert _counts(conninfo) == (offered, offered, offered)
    # Every visitor is new: one visit each.
    assert query(conninfo, "SELECT count(*) FROM sessions") == [(offered,)]
