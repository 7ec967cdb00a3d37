"""Reads from a replica (PGREADCONNSTRING; storage/read_database.py, api/primary_auth.py,
serve/app.py): the report, the Stats API and the dashboard's numbers read from a real
streaming replica made with pg_basebackup (tests/helpers/replica.py), while writes,
logins and who asks the API stay on the primary.

Site replica.test, January 2024, visitors 1 and 2 on the 10th (a visit each); the
tests that add visitors (3, 4, now) add them to the primary and wait for the replica
to replay them, or pause its replay to show that the answer is the replica's.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from helpers.database import query
from helpers.events import event, run, write
from helpers.processes import free_port, run_cli, server_process
from helpers.replica import Pair, replicated_pair
from psycopg.conninfo import make_conninfo
from starlette.testclient import TestClient

from picolytics.api.requests import DATABASE_DOWN
from picolytics.config import Config, load_config
from picolytics.dashboard.session import SESSION_COOKIE, csrf_token
from picolytics.errors import ConfigError, DatabaseUnavailableError, ReadDatabaseError
from picolytics.serve.app import PublicApp, create_app
from picolytics.storage import accounts, api_keys
from picolytics.storage.read_database import check_read_database, read_conninfo

SITE = "replica.test"
EMAIL, PASSWORD = "rita@example.com", "a replica's password"
BODY = {"site_id": SITE, "metrics": ["visitors"], "date_range": ["2024-01-10", "2024-01-12"]}
REALTIME = f"/api/v1/stats/realtime/visitors?site_id={SITE}"
# A password the replica's trust authentication ignores: it must appear in no output.
SECRET = "s3cret-of-the-replica"


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    with replicated_pair() as made:
        run(write(made.primary, [event(at("2024-01-10 09:00"), n, site=SITE) for n in (1, 2)]))
        accounts.connected(made.primary, lambda c: accounts.add_user(c, EMAIL, PASSWORD))
        made.replica.catch_up(made.primary_admin)
        yield made


def replica_url(pair: Pair) -> str:
    return f"postgresql://picolytics:{SECRET}@127.0.0.1:{pair.replica.port}/picolytics"


def app_of(pair: Pair, reads: str) -> PublicApp:
    config = Config(pg_read_conn_string=reads, api_rate_limit=0, rollup_interval_sec=0)
    return create_app(config, conninfo=pair.primary)


def new_key(pair: Pair, name: str) -> str:
    return api_keys.connected(pair.primary, lambda c: api_keys.create(c, name, ())).clear


def visitors(client: TestClient, key: str, path: str = "/api/v2/query") -> Any:
    answer = client.post(path, json=BODY, headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 200, answer.text
    return answer.json()["results"][0]["metrics"][0]


def dead_url() -> str:
    return f"postgresql://picolytics:{SECRET}@127.0.0.1:{free_port()}/picolytics"


# --- the setting and the startup check ------------------------------------------------


def test_the_setting_is_a_secret_whose_bad_syntax_is_a_clean_error() -> None:
    assert load_config(None, {}).pg_read_conn_string == ""
    assert read_conninfo(Config(), "host=/primary") == "host=/primary"  # empty: the primary
    given = load_config(None, {"PGREADCONNSTRING": "postgresql://r@db2/pico"})
    assert "connect_timeout=5" in read_conninfo(given, "host=/primary")  # our options too
    for bad in (f"mysql://user:{SECRET}@host/db", f"host=db2 password=x {SECRET}"):
        with pytest.raises(ConfigError) as caught:
            read_conninfo(Config(pg_read_conn_string=bad), "host=/primary")
        message = str(caught.value)
        assert message.startswith("PGREADCONNSTRING (pgReadConnString) is not a valid"), message
        assert SECRET not in message


def test_the_startup_check_reaches_a_standby(pair: Pair, caplog: pytest.LogCaptureFixture) -> None:
    config = Config(pg_read_conn_string=replica_url(pair))
    with caplog.at_level(logging.INFO, "picolytics.storage.read_database"):
        reads = check_read_database(config, pair.primary)
    assert f"port={pair.replica.port}" in reads
    said = [r.getMessage() for r in caplog.records if r.name.endswith("read_database")]
    assert said == [
        "statistics are read from the read connection PGREADCONNSTRING (pgReadConnString) "
        f"at 127.0.0.1:{pair.replica.port}/picolytics, a standby in recovery"
    ]
    assert SECRET not in caplog.text


def test_the_primary_named_again_is_warned_about_once(
    pair: Pair, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, "picolytics.storage.read_database"):
        check_read_database(Config(pg_read_conn_string=pair.primary), pair.primary)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "reaches the primary itself" in warned[0], warned


def test_a_read_connection_without_our_schema_is_refused(pair: Pair) -> None:
    other = make_conninfo(pair.replica.conninfo(), dbname="postgres")
    with pytest.raises(ReadDatabaseError, match=r"PGREADCONNSTRING .* holds no picolytics"):
        check_read_database(Config(pg_read_conn_string=other), pair.primary)


def test_an_unreachable_read_connection_fails_naming_it(pair: Pair) -> None:
    config = Config(pg_read_conn_string=dead_url(), pg_conn_attempts=1)
    with pytest.raises(DatabaseUnavailableError) as caught:
        check_read_database(config, pair.primary)
    message = str(caught.value)
    assert message.startswith("PGREADCONNSTRING (pgReadConnString): cannot connect"), message
    assert SECRET not in message


# --- the Stats API and the dashboard ------------------------------------------------


def test_api_answers_are_the_replicas_once_it_has_replayed(pair: Pair) -> None:
    client, key = TestClient(app_of(pair, replica_url(pair))), new_key(pair, "replayed")
    assert visitors(client, key) == 2
    pair.replica.pause_replay()
    try:
        now = datetime.now(UTC) - timedelta(seconds=20)
        run(write(pair.primary, [event(at("2024-01-11 09:00"), 3, site=SITE)]))
        run(write(pair.primary, [event(now, 4, site=SITE, path="/now")]))
        assert query(pair.primary, "SELECT count(*) FROM sessions")[0][0] == 4
        assert visitors(client, key) == 2  # the replica has not replayed them yet
        # Realtime visitors read from the replica too: its lag delays them.
        realtime = client.get(REALTIME, headers={"Authorization": f"Bearer {key}"})
        assert (realtime.status_code, realtime.json()) == (200, 0)
    finally:
        pair.replica.resume_replay()
    pair.replica.catch_up(pair.primary_admin)
    assert visitors(client, key) == 3
    realtime = client.get(REALTIME, headers={"Authorization": f"Bearer {key}"})
    assert realtime.json() == 1


def test_who_asks_is_found_on_the_primary_at_once(pair: Pair) -> None:
    client, key = TestClient(app_of(pair, replica_url(pair))), new_key(pair, "revoked")
    assert visitors(client, key) >= 2
    pair.replica.pause_replay()
    try:
        api_keys.connected(pair.primary, lambda c: api_keys.revoke(c, "revoked"))
        headers = {"Authorization": f"Bearer {key}"}
        refused = client.post("/api/v2/query", json=BODY, headers=headers)
        assert refused.status_code == 401  # while the replica still holds it unrevoked
    finally:
        pair.replica.resume_replay()


def test_the_dashboard_logs_in_on_the_primary_and_reads_the_replica(pair: Pair) -> None:
    client = TestClient(app_of(pair, replica_url(pair)), follow_redirects=False)
    form = client.get("/dashboard/login")
    found = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert found, form.text
    fields = {"csrf": found.group(1), "next": "/dashboard/", "email": EMAIL, "password": PASSWORD}
    assert client.post("/dashboard/login", data=fields).status_code == 303
    csrf = csrf_token(client.cookies[SESSION_COOKIE])
    page = client.get("/dashboard/")
    assert page.status_code == 200 and SITE in page.text
    before = query(pair.primary, "SELECT max(last_seen_at) FROM dashboard_sessions")[0][0]
    answer = client.post("/dashboard/api/v2/query", json=BODY, headers={"X-CSRF-Token": csrf})
    assert answer.status_code == 200, answer.text  # the session's write went to the primary
    assert answer.json()["results"][0]["metrics"][0] >= 2
    after = query(pair.primary, "SELECT max(last_seen_at) FROM dashboard_sessions")[0][0]
    assert after >= before


def test_an_unreachable_replica_is_a_503(pair: Pair, caplog: pytest.LogCaptureFixture) -> None:
    client, key = TestClient(app_of(pair, dead_url())), new_key(pair, "unreachable")
    headers = {"Authorization": f"Bearer {key}"}
    for answer in (
        client.post("/api/v2/query", json=BODY, headers=headers),
        client.get(REALTIME, headers=headers),
    ):
        assert (answer.status_code, answer.json()) == (503, {"error": DATABASE_DOWN})
    assert SECRET not in caplog.text


# --- picolytics report and serve ------------------------------------------------------


def report(pair: Pair, reads: str) -> Any:
    """`picolytics report` with the primary unreachable: only the read connection works."""
    env = {
        "PGCONNSTRING": dead_url(),
        "PGREADCONNSTRING": reads,
        "PGCONNATTEMPTS": "1",
    }
    return run_cli(
        "report", "--site", SITE, "--from", "2024-01-10", "--to", "2024-01-10",
        "--format", "json", env=env,
    )  # fmt: skip


def test_the_report_reads_the_replica_alone(pair: Pair) -> None:
    done = report(pair, replica_url(pair))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["summary"]["visitors"] == 2
    pair.replica.stop()
    try:
        failed = report(pair, replica_url(pair))
    finally:
        pair.replica.start()
    assert failed.returncode == 1
    assert failed.stderr.splitlines()[-1].startswith(
        "picolytics: error: PGREADCONNSTRING (pgReadConnString): cannot connect to "
        f"PostgreSQL at 127.0.0.1:{pair.replica.port}/picolytics after 1 attempt(s)"
    ), failed.stderr
    assert SECRET not in failed.stdout + failed.stderr


def test_serve_reads_the_api_from_the_replica(pair: Pair, tmp_path: Path) -> None:
    key = new_key(pair, "served")
    # A name of its own, so that the replica's pg_stat_activity shows this server.
    reads = replica_url(pair) + "?application_name=serve-reads"
    settings = {"PGREADCONNSTRING": reads, "ROLLUP_INTERVAL_SEC": "0"}
    with server_process(pair.primary, tmp_path, settings) as server:
        answer = httpx.post(
            server.base + "/api/v2/query",
            json=BODY,
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["results"][0]["metrics"][0] >= 2
        readers = query(
            pair.replica.admin,
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'serve-reads'",
        )
        assert readers[0][0] >= 1  # the API's pool holds its connection on the replica
        assert server.stop() == 0
    log = server.log()
    assert "a standby in recovery" in log, log
    assert SECRET not in log
