"""Stats API keys: `picolytics api-key create|list|revoke` (cli/api_keys.py), what the
table keeps (storage/api_keys.py, sql/0009_api_keys.sql), and the API's side of them
(api/auth.py): the Bearer header, the key's sites, the per-key rate limit."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result
from helpers.database import query, reader_login
from helpers.events import run
from helpers.processes import run_cli
from psycopg import AsyncConnection, errors
from psycopg.sql import SQL, Identifier
from starlette.requests import Request

from picolytics.api import auth
from picolytics.cli import cli
from picolytics.config import load_config
from picolytics.errors import ApiAuthError, ConfigError
from picolytics.storage import api_keys

KEY = re.compile(r"pico_[A-Za-z0-9_-]{43}")
Invoke = Callable[..., Result]


@pytest.fixture
def invoke(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Invoke]:
    """`picolytics ARGS` in this process against a database, from an empty folder."""
    monkeypatch.chdir(tmp_path)
    for name in ("PGHOST", "PGCONNSTRING", "CONFIG_PATH", "CONFIG_NAME", "DATA_DIR"):
        monkeypatch.delenv(name, raising=False)

    def invoke(conninfo: str, *args: str) -> Result:
        env = {"PGCONNSTRING": conninfo, "LOG_FORMAT": "text"}
        return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)

    yield invoke


def create(conninfo: str, name: str, *sites: str) -> api_keys.NewKey:
    return api_keys.connected(conninfo, lambda c: api_keys.create(c, name, sites))


async def authenticate(conninfo: str, presented: str) -> api_keys.ApiKey | None:
    async with await AsyncConnection.connect(conninfo) as connection:
        return await api_keys.authenticate(connection, presented)


def request(authorization: str | None) -> Request:
    headers = [] if authorization is None else [(b"authorization", authorization.encode())]
    return Request({"type": "http", "method": "POST", "path": "/api/v2/query", "headers": headers})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def everything_stored(conninfo: str) -> str:
    """Every row of every table of the database as text, and every bytea column's bytes
    read as text too: where a clear key would show if it were kept anywhere."""
    with psycopg.connect(conninfo) as connection:
        tables = [
            str(name)
            for (name,) in connection.execute(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n"
                " ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind = 'r'"
            )
        ]
        rows = [
            str(row[0])
            for table in tables
            for row in connection.execute(SQL("SELECT t::text FROM {} t").format(Identifier(table)))
        ]
        hashes = [
            bytes(h).decode("latin-1")
            for (h,) in connection.execute("SELECT key_hash FROM api_keys")
        ]
    return "\n".join(rows + hashes)


# --- the commands ---------------------------------------------------------------------------


def test_create_list_revoke(migrated_database: str, invoke: Invoke) -> None:
    created = invoke(migrated_database, "api-key", "create", "--name", "grafana")
    assert created.exit_code == 0, created.output
    (clear,) = created.stdout.splitlines()  # the key alone on stdout, for $(...)
    assert KEY.fullmatch(clear)
    assert created.stderr == (
        "API key 'grafana' created, reading all sites. Store it now: it cannot be shown"
        " again (only its hash is kept).\n"
    )
    scoped = invoke(
        migrated_database, "api-key", "create", "--name", "blog",
        "--site", "WWW.Example.com", "--site", "bücher.example", "--site", "example.com",
    )  # fmt: skip
    assert scoped.exit_code == 0, scoped.output
    assert "reading example.com, xn--bcher-kva.example." in scoped.stderr

    listed = invoke(migrated_database, "api-key", "list")
    assert listed.exit_code == 0, listed.output
    lines = listed.stdout.splitlines()
    assert re.fullmatch(r"name +key +sites +created +revoked", lines[0])
    assert re.fullmatch(
        rf"grafana +{re.escape(clear[:12])}\.\.\. +all sites +\d{{4}}-\d\d-\d\d \d\d:\d\d UTC +-",
        lines[1],
    )
    assert lines[2].startswith("blog ")
    assert "example.com, xn--bcher-kva.example" in lines[2]
    assert clear not in listed.output and clear[:13] not in listed.output

    revoked = invoke(migrated_database, "api-key", "revoke", "grafana")
    assert (revoked.exit_code, revoked.output) == (
        0,
        f"API key 'grafana' ({clear[:12]}...) revoked\n",
    )
    again = invoke(migrated_database, "api-key", "revoke", "grafana")
    assert again.exit_code == 0
    assert again.output.startswith("API key 'grafana' was revoked already, at 20")

    document = json.loads(invoke(migrated_database, "api-key", "list", "--json").stdout)
    assert [(k["name"], k["prefix"], k["sites"]) for k in document] == [
        ("grafana", clear[:12], None),
        ("blog", scoped.stdout.strip()[:12], ["example.com", "xn--bcher-kva.example"]),
    ]
    assert document[0]["revoked_at"] is not None and document[1]["revoked_at"] is None
    assert document[0]["created_at"].endswith("+00:00")


def test_list_without_keys(migrated_database: str, invoke: Invoke) -> None:
    result = invoke(migrated_database, "api-key", "list")
    assert (result.exit_code, result.output) == (
        0,
        "no API keys yet (`picolytics api-key create --name NAME`)\n",
    )
    assert json.loads(invoke(migrated_database, "api-key", "list", "--json").stdout) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["revoke", "nobody"], "no API key named 'nobody' (`picolytics api-key list`)"),
        (["create", "--name", "taken"], "--name: a key named 'taken' exists already"),
        (["create", "--name", "-x"], "--name: '-x' is not a key name"),
        (["create", "--name", "a" * 65], "--name: 'aaaa"),
        (["create", "--name", "ok", "--site", "a/b"], "--site: 'a/b' is not a domain"),
        (["create", "--name", "ok", "--site", " "], "--site: ' ' is not a domain"),
    ],
)
def test_bad_arguments(
    migrated_database: str, invoke: Invoke, args: list[str], message: str
) -> None:
    create(migrated_database, "taken")
    before = query(migrated_database, "SELECT * FROM api_keys ORDER BY key_id")
    result = invoke(migrated_database, "api-key", *args)
    assert result.exit_code == 2
    assert result.output.startswith(f"picolytics: error: {message}")
    assert len(result.output.splitlines()) == 1
    assert query(migrated_database, "SELECT * FROM api_keys ORDER BY key_id") == before


def test_the_database_without_the_table(fresh_database: str, invoke: Invoke) -> None:
    result = invoke(fresh_database, "api-key", "create", "--name", "x")
    assert result.exit_code == 1
    assert result.output == (
        "picolytics: error: the database has no api_keys table yet: run `picolytics migrate`\n"
    )


@pytest.mark.slow
def test_the_commands_as_processes(migrated_database: str, tmp_path: Path) -> None:
    env = {"PGCONNSTRING": migrated_database}
    created = run_cli("api-key", "create", "--name", "cron", "--site", "example.com", env=env,
                      cwd=tmp_path)  # fmt: skip
    assert created.returncode == 0, created.stderr
    clear = created.stdout.strip()
    assert KEY.fullmatch(clear)
    assert "cannot be shown again" in created.stderr
    assert clear not in created.stderr
    listed = run_cli("api-key", "list", "--json", env=env, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert [(k["name"], k["sites"]) for k in json.loads(listed.stdout)] == [
        ("cron", ["example.com"])
    ]
    assert clear not in listed.stdout
    assert run_cli("api-key", "revoke", "cron", env=env, cwd=tmp_path).returncode == 0
    unknown = run_cli("api-key", "revoke", "cron2", env=env, cwd=tmp_path)
    assert unknown.returncode == 2
    assert unknown.stderr.strip().splitlines()[-1] == (
        "picolytics: error: no API key named 'cron2' (`picolytics api-key list`)"
    )
    assert "Traceback" not in unknown.stderr
    assert clear not in everything_stored(migrated_database)


# --- what is stored ---------------------------------------------------------------------------


def test_the_database_holds_no_clear_key(migrated_database: str, invoke: Invoke) -> None:
    result = invoke(migrated_database, "api-key", "create", "--name", "k", "--site", "a.example")
    clear = result.stdout.strip()
    assert KEY.fullmatch(clear)
    stored = everything_stored(migrated_database)
    assert "a.example" in stored  # the search does see the api_keys rows
    secret = clear.removeprefix("pico_")
    assert clear not in stored
    assert secret not in stored
    assert clear[:13] not in stored  # no more of the key than its 12-character prefix
    for start in range(7, len(secret) - 8):  # nor any 8 characters past it
        assert secret[start : start + 8] not in stored
    assert query(migrated_database, "SELECT key_hash, key_prefix FROM api_keys") == [
        (hashlib.sha256(clear.encode()).digest(), clear[:12])
    ]


def test_the_reader_role_cannot_read_the_keys(admin_conninfo: str, migrated_database: str) -> None:
    create(migrated_database, "k")
    # Granting the reader everything it should have changes nothing here.
    assert query(migrated_database, "SELECT picolytics_grant_reader()") == [(True,)]
    assert query(
        migrated_database, "SELECT has_table_privilege('picolytics_reader', 'api_keys', 'SELECT')"
    ) == [(False,)]
    for reader in reader_login(admin_conninfo, migrated_database):
        with psycopg.connect(reader) as connection:
            assert connection.execute("SELECT count(*) FROM sites").fetchone() == (0,)
        with psycopg.connect(reader) as connection, pytest.raises(errors.InsufficientPrivilege):
            connection.execute("SELECT key_hash FROM api_keys")
    with psycopg.connect(migrated_database) as connection, pytest.raises(errors.CheckViolation):
        connection.execute("INSERT INTO reader_grants VALUES ('api_keys', 'SELECT')")


# --- authenticate and the scope ---------------------------------------------------------------


def test_authenticate(migrated_database: str) -> None:
    new = create(migrated_database, "app")
    other = create(migrated_database, "other")
    found = run(authenticate(migrated_database, new.clear))
    assert found == new.key and found.name == "app"
    assert run(authenticate(migrated_database, other.clear)) == other.key
    wrong = new.clear[:-1] + ("A" if new.clear[-1] != "A" else "B")
    for presented in (wrong, "pico_" + "x" * 43, new.clear + " ", new.clear[5:], "", "pico_"):
        assert run(authenticate(migrated_database, presented)) is None, presented
    api_keys.connected(migrated_database, lambda c: api_keys.revoke(c, "app"))
    assert run(authenticate(migrated_database, new.clear)) is None
    assert run(authenticate(migrated_database, other.clear)) == other.key
    assert "clear" not in repr(new) and new.clear not in repr(new)


def test_authenticate_compares_in_constant_time(
    migrated_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    new = create(migrated_database, "app")
    calls: list[tuple[bytes, bytes]] = []
    compare = hmac.compare_digest

    def recording(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return compare(a, b)

    monkeypatch.setattr(hmac, "compare_digest", recording)
    assert run(authenticate(migrated_database, new.clear)) == new.key
    digest = hashlib.sha256(new.clear.encode()).digest()
    assert calls == [(digest, digest)]


def test_a_key_reads_only_its_sites(migrated_database: str) -> None:
    scoped = create(migrated_database, "blog", "Example.com", "bücher.example").key
    everything = create(migrated_database, "all").key
    assert scoped.sites == ("example.com", "xn--bcher-kva.example")
    assert everything.sites is None
    for domain in ("example.com", "WWW.example.com", "example.com.", "Bücher.example"):
        assert api_keys.may_read(scoped, domain), domain
        assert api_keys.may_read(everything, domain), domain
    for domain in ("other.org", "sub.example.com", "example.co"):
        assert not api_keys.may_read(scoped, domain), domain
        assert api_keys.may_read(everything, domain), domain
    (revoked, _) = api_keys.connected(migrated_database, lambda c: api_keys.revoke(c, "all"))
    assert not api_keys.may_read(revoked, "example.com")
    auth.authorize_site(scoped, "example.com")
    with pytest.raises(ApiAuthError) as caught:
        auth.authorize_site(scoped, "other.org")
    assert (caught.value.status, caught.value.message) == (401, auth.INVALID_KEY)


# --- the HTTP side: the header, the answers, the rate limit -------------------------------------


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer   ", "Basic abc", "pico_abc"])
def test_a_request_without_a_bearer_key(header: str | None) -> None:
    with pytest.raises(ApiAuthError) as caught:
        auth.bearer_key(request(header))
    assert (caught.value.status, caught.value.message) == (401, auth.MISSING_KEY)
    response = auth.error_response(caught.value)
    assert response.status_code == 401
    assert json.loads(bytes(response.body)) == {"error": auth.MISSING_KEY}
    assert "retry-after" not in response.headers


def test_bearer_key_reads_the_header() -> None:
    assert auth.bearer_key(request("Bearer pico_abc")) == "pico_abc"
    assert auth.bearer_key(request("bearer  pico_abc ")) == "pico_abc"


def test_requests_are_authenticated_and_rate_limited(migrated_database: str) -> None:
    new = create(migrated_database, "app")
    other = create(migrated_database, "other")
    clock = Clock()
    limiter = auth.KeyRateLimiter(3, clock=clock)  # one request every 20 s, burst 3

    async def ask(authorization: str) -> api_keys.ApiKey | ApiAuthError:
        async with await AsyncConnection.connect(migrated_database) as connection:
            try:
                return await auth.authenticate_request(request(authorization), connection, limiter)
            except ApiAuthError as error:
                return error

    assert [run(ask(f"Bearer {new.clear}")) for _ in range(3)] == [new.key] * 3
    refused = run(ask(f"Bearer {new.clear}"))
    assert isinstance(refused, ApiAuthError)
    assert (refused.status, refused.retry_after) == (429, 20)
    response = auth.error_response(refused)
    assert (response.status_code, response.headers["retry-after"]) == (429, "20")
    assert json.loads(bytes(response.body)) == {
        "error": "Too many API requests. Your API key is limited to 3 requests per minute."
    }
    assert run(ask(f"Bearer {other.clear}")) == other.key  # a bucket per key
    clock.now += 19  # 0.95 of a request refilled: 1 s to go
    early = run(ask(f"Bearer {new.clear}"))
    assert isinstance(early, ApiAuthError) and early.retry_after == 1
    clock.now += 1
    assert run(ask(f"Bearer {new.clear}")) == new.key
    wrong = run(ask("Bearer pico_" + "x" * 43))
    assert isinstance(wrong, ApiAuthError)
    assert (wrong.status, wrong.message, wrong.retry_after) == (401, auth.INVALID_KEY, None)
    missing = run(ask("Token abc"))
    assert isinstance(missing, ApiAuthError) and missing.message == auth.MISSING_KEY


def test_the_bucket_refills_evenly_up_to_a_minute_of_requests() -> None:
    clock = Clock()
    limiter = auth.KeyRateLimiter(600, clock=clock)  # 10 a second
    assert [limiter.wait(1) for _ in range(600)] == [0] * 600
    assert limiter.wait(1) == 1
    assert limiter.wait(2) == 0
    clock.now += 0.1
    assert (limiter.wait(1), limiter.wait(1)) == (0, 1)
    clock.now += 3600  # idle for an hour: the bucket holds one minute's budget, no more
    assert [limiter.wait(1) for _ in range(601)].count(0) == 600
    slow = auth.KeyRateLimiter(1, clock=clock)  # one a minute
    assert (slow.wait(1), slow.wait(1)) == (0, 60)
    clock.now += 45
    assert slow.wait(1) == 15
    unlimited = auth.KeyRateLimiter(0, clock=clock)
    assert all(unlimited.wait(1) == 0 for _ in range(10_000))


def test_the_rate_limit_setting() -> None:
    assert load_config(None, {}).api_rate_limit == 600
    assert load_config(None, {"API_RATE_LIMIT": "30"}).api_rate_limit == 30
    assert load_config(None, {"API_RATE_LIMIT": "0"}).api_rate_limit == 0
    with pytest.raises(ConfigError, match="API_RATE_LIMIT"):
        load_config(None, {"API_RATE_LIMIT": "-1"})
