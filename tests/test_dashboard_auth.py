"""The dashboard's accounts and login (storage/accounts.py, storage/passwords.py,
dashboard/auth.py, dashboard/session.py, dashboard/throttle.py), its setup link
(dashboard/setup.py), shared links (storage/shares.py, dashboard/shared.py), and
`picolytics user` / `picolytics share` (cli/users.py, cli/shares.py), on a real
database and a small Starlette app that mounts only these routes."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import re
import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result
from helpers.database import query, reader_login
from helpers.events import run
from helpers.processes import PICOLYTICS, clean_env
from psycopg import AsyncConnection, errors
from psycopg.sql import SQL, Identifier
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from picolytics.cli import cli
from picolytics.config import load_config
from picolytics.dashboard import pages, throttle
from picolytics.dashboard.auth import DashboardAuth
from picolytics.dashboard.session import (
    COOKIE_PATH,
    SESSION_COOKIE,
    api_user,
    csrf_ok,
    current_session,
)
from picolytics.dashboard.setup import announce_setup_link, base_url, dashboard_routes
from picolytics.dashboard.shared import SHARE_COOKIE, SharePasswords, shared_view
from picolytics.dashboard.throttle import LoginThrottle
from picolytics.errors import AccountOptionError, ConfigError
from picolytics.storage import accounts, passwords, shares

PASSWORD = "correct horse battery"
OTHER_PASSWORD = "staple in the stable"
EMAIL = "ann@example.com"
TABLES = ("dashboard_users", "dashboard_sessions", "dashboard_setup_tokens", "dashboard_shares")
Invoke = Callable[..., Result]


class Now:
    """The handlers' wall clock, moved by hand."""

    def __init__(self) -> None:
        self.at = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.at


class Monotonic:
    """The throttle's clock, moved by hand: no test sleeps."""

    def __init__(self) -> None:
        self.at = 1000.0

    def __call__(self) -> float:
        return self.at


@pytest.fixture
def invoke(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Invoke]:
    """`picolytics ARGS` in this process against a database, from an empty folder."""
    monkeypatch.chdir(tmp_path)
    for name in ("PGHOST", "PGCONNSTRING", "CONFIG_PATH", "CONFIG_NAME", "DATA_DIR"):
        monkeypatch.delenv(name, raising=False)

    def invoke(conninfo: str, *args: str, input: str | None = None) -> Result:
        env = {"PGCONNSTRING": conninfo, "LOG_FORMAT": "text"}
        return CliRunner().invoke(cli, list(args), env=env, input=input, catch_exceptions=False)

    yield invoke


def add_user(conninfo: str, email: str = EMAIL, password: str = PASSWORD) -> accounts.User:
    return accounts.connected(conninfo, lambda c: accounts.add_user(c, email, password))


def add_site(conninfo: str, domain: str) -> None:
    query(conninfo, "INSERT INTO sites (domain) VALUES (%s) RETURNING site_id", (domain,))


def make_app(
    conninfo: str,
    now: Now,
    limiter: LoginThrottle,
    *,
    days: int = 14,
    secure: bool = False,
) -> Starlette:
    """The auth routes, plus stand-ins for the pages built on them: a page that needs
    a login, a state-changing POST, an API call, and a shared page."""
    auth = DashboardAuth(
        conninfo, session_days=days, force_secure=secure, clock=now, throttle=limiter
    )
    gate = SharePasswords(conninfo, session_days=days, clock=now, throttle=limiter)

    async def home(request: Request) -> Response:
        async with await AsyncConnection.connect(conninfo, autocommit=True) as connection:
            logged_in = await current_session(request, connection, now=now())
        if logged_in is None:
            return PlainTextResponse("nobody", 401)
        return PlainTextResponse(f"{logged_in.user.email} {logged_in.csrf}")

    async def change(request: Request) -> Response:
        fields = await pages.read_form(request)
        async with await AsyncConnection.connect(conninfo, autocommit=True) as connection:
            logged_in = await current_session(request, connection, now=now())
        if logged_in is None:
            return PlainTextResponse("nobody", 401)
        return PlainTextResponse("changed" if csrf_ok(request, logged_in, fields) else "no", 200)

    async def api(request: Request) -> Response:
        async with await AsyncConnection.connect(conninfo, autocommit=True) as connection:
            user = await api_user(request, connection, now=now())
        return PlainTextResponse(user.email if user else "nobody", 200 if user else 401)

    async def share_page(request: Request) -> Response:
        async with await AsyncConnection.connect(conninfo, autocommit=True) as connection:
            view = await shared_view(request, connection, request.path_params["token"], now=now())
        if view is None:
            return PlainTextResponse("no such link", 404)
        if not view.unlocked:
            return PlainTextResponse("locked", 403)
        return PlainTextResponse(view.share.domain)

    extra = [
        Route("/dashboard/", home),
        Route("/dashboard/change", change, methods=["POST"]),
        Route("/dashboard/api", api, methods=["POST"]),
        Route("/share/{token}", share_page),
    ]
    return Starlette(routes=auth.routes() + gate.routes() + extra)


def browser(app: Starlette, *, https: bool = True, address: str = "203.0.113.7") -> TestClient:
    base = "https://testserver" if https else "http://testserver"
    return TestClient(app, base_url=base, client=(address, 50000), follow_redirects=False)


def hidden(html: str, name: str) -> str:
    match = re.search(rf'<input type="hidden" name="{name}" value="([^"]*)">', html)
    assert match, html
    return match.group(1)


def login(
    client: TestClient, email: str = EMAIL, password: str = PASSWORD, *, path: str = ""
) -> Any:
    form = client.get("/dashboard/login" + path)
    assert form.status_code == 200, form.text
    fields = {"csrf": hidden(form.text, "csrf"), "next": hidden(form.text, "next")}
    return client.post("/dashboard/login", data={**fields, "email": email, "password": password})


def set_cookies(response: Any) -> dict[str, str]:
    """Each Set-Cookie header of a response by cookie name, as sent."""
    return {header.split("=", 1)[0]: header for header in response.headers.get_list("set-cookie")}


def everything_stored(conninfo: str) -> str:
    """Every row of every table as text, plus every bytea value's bytes as text: where
    a password or a token would show if it were kept anywhere."""
    with psycopg.connect(conninfo) as connection:
        tables = [
            str(name)
            for (name,) in connection.execute(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')"
            )
        ]
        rows = [
            str(row[0])
            for table in tables
            for row in connection.execute(SQL("SELECT t::text FROM {} t").format(Identifier(table)))
        ]
        for table in ("dashboard_sessions", "dashboard_setup_tokens", "dashboard_shares"):
            rows += [
                bytes(h).decode("latin-1")
                for (h,) in connection.execute(
                    SQL("SELECT token_hash FROM {}").format(Identifier(table))
                )
            ]
    return "\n".join(rows)


# --- `picolytics user` ----------------------------------------------------------------------


def test_user_commands(migrated_database: str, invoke: Invoke) -> None:
    added = invoke(migrated_database, "user", "add", "Ann@Example.COM", input=f"{PASSWORD}\n" * 2)
    assert added.exit_code == 0, added.output
    assert "account ann@example.com added: it may log in at /dashboard/login" in added.stdout
    assert PASSWORD not in added.output  # the prompt is hidden
    piped = invoke(
        migrated_database, "user", "add", "bob@example.org", "--password-stdin",
        input=OTHER_PASSWORD + "\n",
    )  # fmt: skip
    assert piped.exit_code == 0, piped.output

    listed = invoke(migrated_database, "user", "list")
    lines = listed.stdout.splitlines()
    assert re.fullmatch(r"email +created +sessions +last seen", lines[0])
    assert re.fullmatch(r"ann@example\.com +\d{4}-\d\d-\d\d \d\d:\d\d UTC +0 +-", lines[1])
    assert lines[2].startswith("bob@example.org ")
    document = json.loads(invoke(migrated_database, "user", "list", "--json").stdout)
    assert [(u["email"], u["sessions"], u["last_seen_at"]) for u in document] == [
        ("ann@example.com", 0, None),
        ("bob@example.org", 0, None),
    ]
    assert document[0]["created_at"].endswith("+00:00")

    before = query(migrated_database, "SELECT password_hash FROM dashboard_users ORDER BY user_id")
    changed = invoke(
        migrated_database, "user", "set-password", "ANN@example.com", "--password-stdin",
        input=OTHER_PASSWORD + "\n",
    )  # fmt: skip
    assert (changed.exit_code, changed.stdout) == (
        0,
        "password of ann@example.com changed; 0 session(s) ended\n",
    )
    after = query(migrated_database, "SELECT password_hash FROM dashboard_users ORDER BY user_id")
    assert after[0] != before[0] and after[1] == before[1]

    removed = invoke(migrated_database, "user", "remove", "bob@example.org")
    assert (removed.exit_code, removed.stdout) == (0, "account bob@example.org removed\n")
    assert query(migrated_database, "SELECT email FROM dashboard_users") == [(EMAIL,)]


def test_the_prompt_asks_twice(migrated_database: str, invoke: Invoke) -> None:
    # Two different answers: asked again, and the third and fourth agree.
    answers = f"{PASSWORD}\n{OTHER_PASSWORD}\n{PASSWORD}\n{PASSWORD}\n"
    result = invoke(migrated_database, "user", "add", EMAIL, input=answers)
    assert result.exit_code == 0, result.output
    assert "Password, again" in result.output
    assert "do not match" in result.output
    assert passwords.verify_password(
        query(migrated_database, "SELECT password_hash FROM dashboard_users")[0][0], PASSWORD
    )


def test_user_list_without_accounts(migrated_database: str, invoke: Invoke) -> None:
    result = invoke(migrated_database, "user", "list")
    assert result.output == "no dashboard accounts yet (`picolytics user add EMAIL`)\n"
    assert json.loads(invoke(migrated_database, "user", "list", "--json").stdout) == []


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["add", EMAIL], "short\nshort\n", "the password is too short: it needs at least 10"),
        (["add", EMAIL, "--password-stdin"], "\n", "--password-stdin: standard input holds no"),
        (["add", EMAIL, "--password-stdin"], "x" * 1025 + "\n", "the password is too long"),
        (["add", "not-an-address"], "", "'not-an-address' is not an e-mail address"),
        (["add", "taken@example.com", "--password-stdin"], PASSWORD, "an account for 'taken@"),
        (["remove", "nobody@example.com"], "", "no account for 'nobody@example.com'"),
        (["set-password", "nobody@example.com", "--password-stdin"], PASSWORD, "no account for"),
        (
            ["set-password", "taken@example.com", "--password-stdin"],
            "tiny\n",
            "the password is too short",
        ),
    ],
)
def test_bad_user_arguments(
    migrated_database: str, invoke: Invoke, args: list[str], stdin: str, message: str
) -> None:
    add_user(migrated_database, "taken@example.com")
    before = query(migrated_database, "SELECT * FROM dashboard_users ORDER BY user_id")
    result = invoke(migrated_database, "user", *args, input=stdin)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"picolytics: error: {message}"), result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert query(migrated_database, "SELECT * FROM dashboard_users ORDER BY user_id") == before


def test_the_database_without_the_tables(fresh_database: str, invoke: Invoke) -> None:
    result = invoke(fresh_database, "user", "list")
    assert result.exit_code == 1
    assert result.output == (
        "picolytics: error: the database has no dashboard tables yet: run `picolytics migrate`\n"
    )
    assert run(announce_setup_link(fresh_database, load_config(None, {}))) is None


@pytest.mark.slow
def test_the_commands_as_processes(migrated_database: str, tmp_path: Path) -> None:
    def picolytics(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*PICOLYTICS, *args], input=stdin, capture_output=True, text=True, timeout=60,
            env=clean_env({"PGCONNSTRING": migrated_database}), cwd=tmp_path, check=False,
        )  # fmt: skip

    added = picolytics("user", "add", EMAIL, "--password-stdin", stdin=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    listed = picolytics("user", "list", "--json")
    assert [u["email"] for u in json.loads(listed.stdout)] == [EMAIL]
    changed = picolytics("user", "set-password", EMAIL, "--password-stdin", stdin=OTHER_PASSWORD)
    assert changed.returncode == 0, changed.stderr
    short = picolytics("user", "add", "bob@example.org", "--password-stdin", stdin="short\n")
    assert short.returncode == 2
    assert (
        short.stderr.strip()
        .splitlines()[-1]
        .startswith("picolytics: error: the password is too short")
    )
    assert "Traceback" not in short.stderr
    add_site(migrated_database, "example.com")
    created = picolytics("share", "create", "example.com")
    assert created.returncode == 0, created.stderr
    path, embed = created.stdout.splitlines()
    assert embed == path + "?embed=true"
    assert picolytics("share", "revoke", "1").returncode == 0
    removed = picolytics("user", "remove", EMAIL)
    assert (removed.returncode, removed.stdout) == (0, f"account {EMAIL} removed\n")
    gone = picolytics("user", "remove", EMAIL)
    assert gone.returncode == 2 and "Traceback" not in gone.stderr
    stored = everything_stored(migrated_database)
    assert PASSWORD not in stored and OTHER_PASSWORD not in stored
    assert path.removeprefix("/share/") not in stored


# --- what is stored ---------------------------------------------------------------------------


def test_only_hashes_are_stored(migrated_database: str) -> None:
    now, limiter = Now(), LoginThrottle(clock=Monotonic())
    add_user(migrated_database)
    add_site(migrated_database, "example.com")
    link = run(announce_setup_link(migrated_database, load_config(None, {})))
    assert link is None  # an account exists: no setup link
    query(migrated_database, "DELETE FROM dashboard_users RETURNING 1")
    link = run(announce_setup_link(migrated_database, load_config(None, {})))
    assert link is not None
    setup_token = link.rpartition("=")[2]
    add_user(migrated_database)
    session = login(browser(make_app(migrated_database, now, limiter)))
    session_token = session.cookies[SESSION_COOKIE]
    with psycopg.connect(migrated_database) as connection:
        share = shares.create(connection, "example.com", OTHER_PASSWORD)
    secrets = [PASSWORD, OTHER_PASSWORD, setup_token, session_token, share.token]
    stored = everything_stored(migrated_database)
    assert EMAIL in stored and "example.com" in stored  # the search does see the rows
    for secret in secrets:
        assert passwords.is_token(secret) or len(secret) >= 10
        assert secret not in stored
        for start in range(len(secret) - 12):  # nor any 12 characters of it
            assert secret[start : start + 12] not in stored
    for token in (setup_token, session_token, share.token):
        digest = hashlib.sha256(token.encode()).digest()
        assert any(
            query(migrated_database, f"SELECT 1 FROM {t} WHERE token_hash = %s", (digest,))
            for t in TABLES[1:]
        )
    (stored_hash,) = query(migrated_database, "SELECT password_hash FROM dashboard_users")[0]
    assert re.fullmatch(r"scrypt\$32768\$8\$1\$[\w-]{22}\$[\w-]{43}", stored_hash)
    hashes = query(migrated_database, "SELECT password_hash FROM dashboard_shares")
    assert passwords.verify_password(hashes[0][0], OTHER_PASSWORD)


def test_each_hash_has_its_own_salt(migrated_database: str) -> None:
    add_user(migrated_database, "a@example.com")
    add_user(migrated_database, "b@example.com")
    first, second = query(migrated_database, "SELECT password_hash FROM dashboard_users")
    assert first != second
    assert first[0].split("$")[4] != second[0].split("$")[4]
    with pytest.raises(psycopg.errors.CheckViolation):  # the table takes hashes only
        query(migrated_database, "UPDATE dashboard_users SET password_hash = 'plain text here'")


def test_the_reader_role_cannot_read_the_accounts(
    admin_conninfo: str, migrated_database: str
) -> None:
    add_user(migrated_database)
    assert query(migrated_database, "SELECT picolytics_grant_reader()") == [(True,)]
    for table in TABLES:
        assert query(
            migrated_database, "SELECT has_table_privilege('picolytics_reader', %s, 'SELECT')",
            (table,),
        ) == [(False,)]  # fmt: skip
        with psycopg.connect(migrated_database) as connection, pytest.raises(errors.CheckViolation):
            connection.execute("INSERT INTO reader_grants VALUES (%s, 'SELECT')", (table,))
    for reader in reader_login(admin_conninfo, migrated_database):
        for table in TABLES:
            with psycopg.connect(reader) as c, pytest.raises(errors.InsufficientPrivilege):
                c.execute(SQL("SELECT * FROM {}").format(Identifier(table)))


# --- hashes -------------------------------------------------------------------------------------


def test_password_hashes() -> None:
    stored = passwords.hash_password(PASSWORD)
    assert passwords.verify_password(stored, PASSWORD)
    assert not passwords.verify_password(stored, PASSWORD + " ")
    assert not passwords.verify_password(stored, "")
    assert not passwords.needs_rehash(stored)
    # Unicode normalisation: the same password typed as composed or decomposed.
    accented = passwords.hash_password("caf\u00e9 au lait")
    assert passwords.verify_password(accented, "cafe\u0301 au lait")
    assert passwords.parse_hash(passwords.DUMMY_HASH)[:3] == (2**15, 8, 1)  # type: ignore[index]
    for bad in ("", "scrypt$", "bcrypt$1$2$3$a$b", stored.replace("$32768$", "$1073741824$"),
                stored.replace("$32768$", "$1000$"), stored + "$x"):  # fmt: skip
        assert not passwords.verify_password(bad, PASSWORD), bad
        assert passwords.needs_rehash(bad)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Ann@Example.COM", "ann@example.com"),
        ("  ann@example.com \n", "ann@example.com"),
        ("STRASSE@example.com", "strasse@example.com"),
        ("Stra\u00dfe@example.com", "strasse@example.com"),  # casefold, not lower
        ("admin@localhost", "admin@localhost"),
    ],
)
def test_addresses_are_case_folded(text: str, expected: str) -> None:
    assert passwords.normalise_email(text) == expected


@pytest.mark.parametrize("text", ["", "ann", "@example.com", "ann@", "a@b@c", "a b@c.d", "x" * 250])
def test_malformed_addresses(text: str) -> None:
    with pytest.raises(AccountOptionError, match="is not an e-mail address"):
        passwords.normalise_email(text + ("@example.com" if len(text) == 250 else ""))


# --- login --------------------------------------------------------------------------------------


def test_login_sets_a_session_cookie(migrated_database: str) -> None:
    add_user(migrated_database, "Ann@Example.com")
    now, limiter = Now(), LoginThrottle(clock=Monotonic())
    client = browser(make_app(migrated_database, now, limiter))
    assert client.get("/dashboard/").status_code == 401
    form = client.get("/dashboard/login")
    assert form.headers["content-type"].startswith("text/html")
    pre_session = set_cookies(form)["picolytics_form"]
    assert "HttpOnly" in pre_session and "Path=/dashboard" in pre_session
    response = login(client, "ANN@example.com")  # the address is case-folded
    assert (response.status_code, response.headers["location"]) == (303, "/dashboard/")
    cookie = set_cookies(response)[SESSION_COOKIE]
    flags = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert flags == {
        "httponly", "max-age=1209600", "path=/dashboard", "samesite=lax", "secure",
    }  # fmt: skip
    token = client.cookies[SESSION_COOKIE]
    assert passwords.is_token(token)
    home = client.get("/dashboard/")
    assert home.status_code == 200 and home.text.startswith("ann@example.com ")
    assert client.get("/dashboard/login").headers["location"] == "/dashboard/"  # logged in
    (row,) = query(migrated_database, "SELECT created_at, expires_at FROM dashboard_sessions")
    assert row == (now.at, now.at + timedelta(days=14))


@pytest.mark.parametrize(
    ("https", "headers", "force", "secure"),
    [
        (False, {}, False, False),
        (True, {}, False, True),
        (False, {"x-forwarded-proto": "https"}, False, True),
        (False, {}, True, True),  # AUTOTLS_ENABLED
    ],
)
def test_the_cookie_is_secure_under_https(
    migrated_database: str, https: bool, headers: dict[str, str], force: bool, secure: bool
) -> None:
    add_user(migrated_database)
    app = make_app(migrated_database, Now(), LoginThrottle(clock=Monotonic()), secure=force)
    client = browser(app, https=https)
    client.headers.update(headers)
    form = client.get("/dashboard/login")
    data = {"csrf": hidden(form.text, "csrf"), "email": EMAIL, "password": PASSWORD}
    # Over plain HTTP a Secure cookie would not come back: send the form token by hand.
    client.cookies.set("picolytics_form", data["csrf"])
    response = client.post("/dashboard/login", data=data)
    assert response.status_code == 303, response.text
    cookie = set_cookies(response)[SESSION_COOKIE].lower()
    assert ("; secure" in cookie) is secure
    assert "httponly" in cookie and "samesite=lax" in cookie


def test_a_wrong_password_gets_the_same_answer_as_an_unknown_account(
    migrated_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_user(migrated_database)
    calls: list[dict[str, Any]] = []
    scrypt = hashlib.scrypt

    def recording(password: bytes, **kwargs: Any) -> bytes:
        calls.append(
            {k: v for k, v in kwargs.items() if k != "salt"} | {"salt": len(kwargs["salt"])}
        )
        return scrypt(password, **kwargs)

    monkeypatch.setattr(hashlib, "scrypt", recording)
    client = browser(make_app(migrated_database, Now(), LoginThrottle(clock=Monotonic())))
    answers = {}
    work = {}
    for email, password in [
        (EMAIL, "wrong password!"),
        ("nobody@example.com", "wrong password!"),
        ("nobody@example.com", PASSWORD),
        ("not an address", PASSWORD),
    ]:
        calls.clear()
        response = login(client, email, password)
        answers[email, password] = (
            response.status_code,
            response.text.replace(email, "EMAIL"),
            SESSION_COOKIE in set_cookies(response),
        )
        work[email, password] = list(calls)
    assert len(set(answers.values())) == 1, answers
    status, text, cookie = next(iter(answers.values()))
    assert (status, cookie) == (401, False)
    assert "Wrong e-mail address or password." in text
    # One scrypt of the same cost each time, whether the account exists or not.
    expected = [{"n": 2**15, "r": 8, "p": 1, "maxmem": calls[0]["maxmem"], "dklen": 32, "salt": 16}]
    assert all(done == expected for done in work.values()), work
    assert query(migrated_database, "SELECT count(*) FROM dashboard_sessions") == [(0,)]


def test_login_goes_back_to_the_page_asked_for(migrated_database: str) -> None:
    add_user(migrated_database)
    client = browser(make_app(migrated_database, Now(), LoginThrottle(clock=Monotonic())))
    response = login(client, path="?next=/dashboard/example.com%3Fperiod%3D7d")
    assert response.headers["location"] == "/dashboard/example.com?period=7d"
    for elsewhere in ("https://evil.example/", "//evil.example/dashboard/", "/api/v2/query",
                      "/dashboard/\\evil", "/dashboard//evil.example"):  # fmt: skip
        client.cookies.clear()
        response = login(client, path="?next=" + elsewhere)
        assert response.headers["location"] == "/dashboard/", elsewhere


def test_a_session_ends_on_the_server(migrated_database: str) -> None:
    add_user(migrated_database)
    now, limiter = Now(), LoginThrottle(clock=Monotonic())
    client = browser(make_app(migrated_database, now, limiter, days=2))
    response = login(client)
    assert "max-age=172800" in set_cookies(response)[SESSION_COOKIE].lower()
    start = now.at
    now.at = start + timedelta(seconds=30)
    assert client.get("/dashboard/").status_code == 200
    seen = query(migrated_database, "SELECT last_seen_at FROM dashboard_sessions")
    assert seen == [(start,)]  # written at most once a minute
    now.at = start + timedelta(minutes=5)
    assert client.get("/dashboard/").status_code == 200
    seen = query(migrated_database, "SELECT last_seen_at FROM dashboard_sessions")
    assert seen == [(now.at,)]
    now.at = start + timedelta(days=2) - timedelta(seconds=1)
    assert client.get("/dashboard/").status_code == 200
    now.at = start + timedelta(days=2)
    assert client.get("/dashboard/").status_code == 401  # the cookie is still sent
    assert SESSION_COOKIE in client.cookies
    # The next login forgets the ended session.
    login(client)
    assert query(migrated_database, "SELECT count(*) FROM dashboard_sessions") == [(1,)]


def test_a_new_password_or_a_removed_account_ends_the_sessions(
    migrated_database: str, invoke: Invoke
) -> None:
    add_user(migrated_database)
    app = make_app(migrated_database, Now(), LoginThrottle(clock=Monotonic()))
    phone, laptop = browser(app), browser(app)
    login(phone), login(laptop)
    assert phone.get("/dashboard/").status_code == 200
    changed = invoke(
        migrated_database, "user", "set-password", EMAIL, "--password-stdin", input=OTHER_PASSWORD
    )
    assert changed.stdout == f"password of {EMAIL} changed; 2 session(s) ended\n"
    assert phone.get("/dashboard/").status_code == 401
    assert laptop.get("/dashboard/").status_code == 401
    assert login(laptop).status_code == 401  # the old password
    assert login(laptop, password=OTHER_PASSWORD).status_code == 303
    assert laptop.get("/dashboard/").status_code == 200
    invoke(migrated_database, "user", "remove", EMAIL)
    assert laptop.get("/dashboard/").status_code == 401


def test_logout(migrated_database: str) -> None:
    add_user(migrated_database)
    client = browser(make_app(migrated_database, Now(), LoginThrottle(clock=Monotonic())))
    login(client)
    token = client.cookies[SESSION_COOKIE]
    csrf = client.get("/dashboard/").text.split()[1]
    response = client.post("/dashboard/logout", data={"csrf": csrf})
    assert (response.status_code, response.headers["location"]) == (303, "/dashboard/login")
    cleared = set_cookies(response)[SESSION_COOKIE].lower()
    assert "max-age=0" in cleared and "path=/dashboard" in cleared
    assert query(migrated_database, "SELECT count(*) FROM dashboard_sessions") == [(0,)]
    # The old cookie, kept by someone, opens nothing any more.
    replay = browser(make_app(migrated_database, Now(), LoginThrottle(clock=Monotonic())))
    replay.cookies.set(SESSION_COOKIE, token)
    assert replay.get("/dashboard/").status_code == 401
    assert client.post("/dashboard/logout", data={}).status_code == 303  # nothing to end


# --- CSRF ---------------------------------------------------------------------------------------


def test_the_login_form_needs_its_csrf_token(migrated_database: str) -> None:
    add_user(migrated_database)
    client = browser(make_app(migrated_database, Now(), LoginThrottle(clock=Monotonic())))
    form = client.get("/dashboard/login")
    csrf = hidden(form.text, "csrf")
    credentials = {"email": EMAIL, "password": PASSWORD}
    for fields in ({}, {"csrf": ""}, {"csrf": csrf[:-1] + ("A" if csrf[-1] != "A" else "B")}):
        refused = client.post("/dashboard/login", data={**credentials, **fields})
        assert refused.status_code == 403, fields
        assert "This form has expired" in refused.text
        assert SESSION_COOKIE not in set_cookies(refused)
    stranger = browser(make_app(migrated_database, Now(), LoginThrottle(clock=Monotonic())))
    refused = stranger.post("/dashboard/login", data={**credentials, "csrf": csrf})  # no cookie
    assert refused.status_code == 403
    assert "picolytics_form" in set_cookies(refused)  # a fresh token to try again with
    assert client.post("/dashboard/login", data={**credentials, "csrf": csrf}).status_code == 303


def test_state_changing_requests_need_the_session_csrf_token(migrated_database: str) -> None:
    add_user(migrated_database)
    add_user(migrated_database, "bob@example.org")
    app = make_app(migrated_database, Now(), LoginThrottle(clock=Monotonic()))
    client, other = browser(app), browser(app)
    login(client), login(other, "bob@example.org")
    csrf = client.get("/dashboard/").text.split()[1]
    other_csrf = other.get("/dashboard/").text.split()[1]
    assert csrf != other_csrf
    assert client.post("/dashboard/change", data={"csrf": csrf}).text == "changed"
    assert (
        client.post("/dashboard/change", data={}, headers={"X-CSRF-Token": csrf}).text == "changed"
    )
    for fields, headers in [({}, {}), ({"csrf": other_csrf}, {}), ({}, {"X-CSRF-Token": "x"}),
                            ({"csrf": "é"}, {})]:  # fmt: skip
        assert client.post("/dashboard/change", data=fields, headers=headers).text == "no"
    # Logging out needs it too: without it the session stays.
    for fields in ({}, {"csrf": other_csrf}):
        assert client.post("/dashboard/logout", data=fields).status_code == 403
    assert client.get("/dashboard/").status_code == 200
    # The dashboard's calls to the API: the session and the header.
    assert client.post("/dashboard/api", headers={"X-CSRF-Token": csrf}).text == EMAIL
    assert client.post("/dashboard/api").status_code == 401
    assert client.post("/dashboard/api", headers={"X-CSRF-Token": other_csrf}).status_code == 401


def test_forms_are_read_strictly(migrated_database: str) -> None:
    client = browser(make_app(migrated_database, Now(), LoginThrottle(clock=Monotonic())))
    assert client.post("/dashboard/login", json={"email": EMAIL}).status_code == 415
    big = {"email": "x" * (pages.MAX_FORM_BYTES + 1)}
    assert client.post("/dashboard/login", data=big).status_code == 413
    many = "&".join(f"f{n}=1" for n in range(40))
    headers = {"content-type": "application/x-www-form-urlencoded"}
    assert client.post("/dashboard/login", content=many, headers=headers).status_code == 400
    assert client.post("/dashboard/login", content=b"\xff=1", headers=headers).status_code == 400


# --- throttling ---------------------------------------------------------------------------------


def test_failed_logins_are_throttled_with_backoff(migrated_database: str) -> None:
    add_user(migrated_database)
    clock = Monotonic()
    client = browser(make_app(migrated_database, Now(), LoginThrottle(clock=clock)))
    for email in (EMAIL, "nobody@example.com"):  # the same for an unknown account
        answers = [login(client, email, "wrong password!").status_code for _ in range(5)]
        assert answers == [401] * 5, email
        refused = login(client, email, PASSWORD)  # even the right password, now
        assert (refused.status_code, refused.headers["retry-after"]) == (429, "1"), email
        assert "Too many failed logins. Please try again in 1 second." in refused.text
        clock.at += 1
        assert login(client, email, "wrong password!").status_code == 401
        assert login(client, email, PASSWORD).headers["retry-after"] == "2"  # doubled
        clock.at += 2
        assert login(client, email, "wrong password!").status_code == 401
        assert login(client, email, PASSWORD).headers["retry-after"] == "4"
        clock.at += 4
    assert login(client).status_code == 303  # waited: the right password works
    client.cookies.delete(SESSION_COOKIE)
    assert login(client, password="wrong password!").status_code == 401  # a fresh count


def test_throttling_per_client_address(migrated_database: str) -> None:
    clock = Monotonic()
    limiter = LoginThrottle(clock=clock, account_free=100, client_free=3)
    app = make_app(migrated_database, Now(), limiter)
    guesser = browser(app, address="198.51.100.1")
    answers = [login(guesser, f"user{n}@example.com", PASSWORD).status_code for n in range(4)]
    assert answers == [401, 401, 401, 429]
    assert login(browser(app, address="198.51.100.2"), EMAIL).status_code == 401  # another client


def test_the_backoff_doubles_up_to_a_cap_and_is_forgotten() -> None:
    clock = Monotonic()
    limiter = LoginThrottle(clock=clock, account_free=2, client_free=1000)
    assert [limiter.attempt("a", "c") for _ in range(2)] == [0, 0]
    waits = []
    for _ in range(14):
        wait = limiter.attempt("a", "c")
        waits.append(wait)
        clock.at += wait
        assert limiter.attempt("a", "c") == 0
    assert waits == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 900, 900, 900, 900]
    assert limiter.attempt("b", "c") == 0  # another account
    clock.at += throttle.FORGET_S + 1
    assert [limiter.attempt("a", "c") for _ in range(2)] == [0, 0]  # forgotten
    limiter.succeeded("a", "c")
    assert limiter.attempt("a", "c") == 0


def test_the_throttle_stays_bounded_and_keeps_no_address() -> None:
    limiter = LoginThrottle(clock=Monotonic(), max_entries=50)
    for n in range(200):
        limiter.attempt(f"user{n}@example.com", f"192.0.2.{n % 250}")
    assert len(limiter._failures) == 50
    assert not any(b"example" in key or b"192.0" in key for key in limiter._failures)


# --- the setup link -----------------------------------------------------------------------------


def test_the_setup_link_creates_the_first_account_once(
    migrated_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    now = Now()
    config = load_config(None, {"LISTEN_ADDR": ":8080"})
    with caplog.at_level(logging.INFO, logger="picolytics.dashboard.setup"):
        link = run(announce_setup_link(migrated_database, config, now=now()))
    assert link is not None
    assert re.fullmatch(r"http://localhost:8080/dashboard/setup\?token=[\w-]{43}", link)
    lines = [r.getMessage() for r in caplog.records if r.name == "picolytics.dashboard.setup"]
    assert len(lines) == 1 and link in lines[0] and "valid once, for 24 hours" in lines[0]
    path = link.removeprefix("http://localhost:8080")
    token = path.rpartition("=")[2]
    client = browser(make_app(migrated_database, now, LoginThrottle(clock=Monotonic())))
    form = client.get(path)
    assert form.status_code == 200 and 'autocomplete="new-password"' in form.text
    fields = {"csrf": hidden(form.text, "csrf"), "token": hidden(form.text, "token")}
    assert fields["token"] == token
    new = {"email": "Owner@Example.com", "password": PASSWORD, "confirm": PASSWORD}
    created = client.post("/dashboard/setup", data={**fields, **new})
    assert (created.status_code, created.headers["location"]) == (303, "/dashboard/")
    assert client.get("/dashboard/").text.startswith("owner@example.com ")  # logged in
    assert query(migrated_database, "SELECT email FROM dashboard_users") == [("owner@example.com",)]
    again = client.post("/dashboard/setup", data={**fields, **new, "email": "two@example.com"})
    assert again.status_code == 404 and "cannot be used" in again.text
    assert client.get(path).status_code == 404
    assert query(migrated_database, "SELECT count(*) FROM dashboard_users") == [(1,)]
    assert run(announce_setup_link(migrated_database, config, now=now())) is None
    # Used once is used up, even once no account is left.
    query(migrated_database, "DELETE FROM dashboard_users RETURNING 1")
    assert client.get(path).status_code == 404
    assert client.post("/dashboard/setup", data={**fields, **new}).status_code == 404


def test_a_setup_link_expires_and_dies_with_the_first_account(migrated_database: str) -> None:
    now = Now()
    config = load_config(None, {})
    client = browser(make_app(migrated_database, now, LoginThrottle(clock=Monotonic())))
    first = run(announce_setup_link(migrated_database, config, now=now()))
    second = run(announce_setup_link(migrated_database, config, now=now()))
    assert first and second and first != second
    first_path, second_path = (
        link.removeprefix("http://localhost:8080") for link in (first, second)
    )
    now.at += timedelta(hours=24)
    assert client.get(first_path).status_code == 404  # expired
    now.at -= timedelta(seconds=1)
    assert client.get(first_path).status_code == 200
    add_user(migrated_database)  # an account made another way
    assert client.get(second_path).status_code == 404
    assert client.get("/dashboard/setup?token=nonsense").status_code == 404
    assert client.get("/dashboard/setup").status_code == 404


def test_setup_form_errors_keep_the_link(migrated_database: str) -> None:
    now = Now()
    link = run(announce_setup_link(migrated_database, load_config(None, {}), now=now()))
    assert link is not None
    client = browser(make_app(migrated_database, now, LoginThrottle(clock=Monotonic())))
    form = client.get(link.removeprefix("http://localhost:8080"))
    fields = {"csrf": hidden(form.text, "csrf"), "token": hidden(form.text, "token")}
    for new, message in [
        ({"email": EMAIL, "password": "short", "confirm": "short"}, "The password is too short"),
        ({"email": EMAIL, "password": PASSWORD, "confirm": OTHER_PASSWORD}, "are not the same"),
        ({"email": "nope", "password": PASSWORD, "confirm": PASSWORD}, "is not an e-mail"),
    ]:
        refused = client.post("/dashboard/setup", data={**fields, **new})
        assert refused.status_code == 400 and message in refused.text, refused.text
    ok = {"email": EMAIL, "password": PASSWORD, "confirm": PASSWORD}
    refused = client.post("/dashboard/setup", data={**fields, **ok, "csrf": "x"})
    assert refused.status_code == 403
    assert query(migrated_database, "SELECT count(*) FROM dashboard_users") == [(0,)]
    assert client.post("/dashboard/setup", data={**fields, **ok}).status_code == 303


def test_two_setup_links_cannot_both_make_a_first_account(migrated_database: str) -> None:
    now = Now()

    async def race() -> list[accounts.User | None]:
        async with await AsyncConnection.connect(migrated_database, autocommit=True) as setup:
            tokens = [await accounts.create_setup_token(setup, now()) for _ in range(2)]

        async def use(token: str | None, email: str) -> accounts.User | None:
            assert token is not None
            async with await AsyncConnection.connect(migrated_database) as connection:
                return await accounts.use_setup_token(connection, token, email, PASSWORD, now())

        return list(
            await asyncio.gather(use(tokens[0], "a@example.com"), use(tokens[1], "b@x.org"))
        )

    results = run(race())
    assert sorted(user is None for user in results) == [False, True]
    assert query(migrated_database, "SELECT count(*) FROM dashboard_users") == [(1,)]

    async def twice() -> list[accounts.User | None]:
        async with await AsyncConnection.connect(migrated_database, autocommit=True) as c:
            await c.execute("DELETE FROM dashboard_users")
            token = await accounts.create_setup_token(c, now())
            assert token is not None
            first = await accounts.use_setup_token(c, token, EMAIL, PASSWORD, now())
            await c.execute("DELETE FROM dashboard_users")
            return [first, await accounts.use_setup_token(c, token, EMAIL, PASSWORD, now())]

    first, second = run(twice())
    assert first is not None and first.email == EMAIL
    assert second is None  # used once, used up: even with no account left


def test_no_setup_link_with_the_dashboard_off(migrated_database: str) -> None:
    config = load_config(None, {"DASHBOARD_ENABLED": "false"})
    assert run(announce_setup_link(migrated_database, config)) is None
    assert query(migrated_database, "SELECT count(*) FROM dashboard_setup_tokens") == [(0,)]
    assert dashboard_routes(config, migrated_database) == []
    paths = {route.path for route in dashboard_routes(load_config(None, {}), migrated_database)}
    assert paths == {"/dashboard/login", "/dashboard/logout", "/dashboard/setup",
                     "/share/{token}/password"}  # fmt: skip


def test_the_base_url_of_the_setup_link() -> None:
    assert base_url(load_config(None, {})) == "http://localhost:8080"
    assert base_url(load_config(None, {"LISTEN_ADDR": "127.0.0.1:9000"})) == "http://127.0.0.1:9000"
    assert base_url(load_config(None, {"LISTEN_ADDR": "[::1]:80"})) == "http://[::1]:80"
    tls = {"AUTOTLS_ENABLED": "true", "AUTOTLS_HOST": "stats.example.com"}
    assert base_url(load_config(None, tls)) == "https://stats.example.com"


# --- shared links -------------------------------------------------------------------------------


def test_share_commands(migrated_database: str, invoke: Invoke) -> None:
    unknown = invoke(migrated_database, "share", "create", "example.com")
    assert unknown.exit_code == 2
    assert (
        unknown.stderr
        == "picolytics: error: no site 'example.com': the database has no sites yet\n"
    )
    add_site(migrated_database, "example.com")
    add_site(migrated_database, "other.org")
    created = invoke(migrated_database, "share", "create", "WWW.Example.com")
    assert created.exit_code == 0, created.output
    path, embed = created.stdout.splitlines()
    assert re.fullmatch(r"/share/[\w-]{43}", path)
    assert embed == path + "?embed=true"
    assert "shared link 1 to example.com created" in created.stderr
    locked = invoke(
        migrated_database, "share", "create", "other.org", "--password-stdin", input=OTHER_PASSWORD
    )
    assert locked.exit_code == 0, locked.output
    assert len(locked.stdout.splitlines()) == 1  # no embeddable variant
    assert "cannot be embedded" in locked.stderr
    prompted = invoke(
        migrated_database, "share", "create", "other.org", "--password",
        input=f"{PASSWORD}\n{PASSWORD}\n",
    )  # fmt: skip
    assert prompted.exit_code == 0, prompted.output
    short = invoke(migrated_database, "share", "create", "other.org", "--password-stdin", input="x")
    assert short.exit_code == 2 and "the password is too short" in short.stderr

    lines = invoke(migrated_database, "share", "list").stdout.splitlines()
    assert re.fullmatch(r"id +site +password +created +revoked", lines[0])
    assert re.fullmatch(r"1 +example\.com +no +\d{4}-\d\d-\d\d \d\d:\d\d UTC +-", lines[1])
    assert re.fullmatch(r"2 +other\.org +yes .*", lines[2])
    assert path not in "\n".join(lines)

    revoked = invoke(migrated_database, "share", "revoke", "1")
    assert revoked.stdout == "shared link 1 to example.com revoked\n"
    again = invoke(migrated_database, "share", "revoke", "1")
    assert again.stdout.startswith("shared link 1 to example.com was revoked already, at 20")
    missing = invoke(migrated_database, "share", "revoke", "99")
    assert (missing.exit_code, missing.stderr) == (
        2,
        "picolytics: error: no shared link 99 (`picolytics share list`)\n",
    )
    document = json.loads(invoke(migrated_database, "share", "list", "--json").stdout)
    assert [(s["id"], s["site"], s["password"], s["embeddable"]) for s in document] == [
        (1, "example.com", False, True),
        (2, "other.org", True, False),
        (3, "other.org", True, False),
    ]
    assert document[0]["revoked_at"] is not None and document[1]["revoked_at"] is None
    assert invoke(migrated_database, "share", "list").exit_code == 0
    empty = invoke(migrated_database, "user", "list")  # the groups do not mix
    assert empty.stdout.startswith("no dashboard accounts yet")


def test_a_shared_link_shows_one_site_until_revoked(migrated_database: str) -> None:
    add_site(migrated_database, "example.com")
    add_site(migrated_database, "other.org")
    with psycopg.connect(migrated_database) as connection:
        open_link = shares.create(connection, "example.com")
        other = shares.create(connection, "other.org")
    client = browser(make_app(migrated_database, Now(), LoginThrottle(clock=Monotonic())))
    assert client.get(open_link.path).text == "example.com"
    assert client.get(other.path).text == "other.org"
    assert client.get("/share/" + "A" * 43).status_code == 404
    assert client.get("/share/nonsense").status_code == 404
    assert client.get(f"/share/{open_link.token}/password").headers["location"] == open_link.path
    with psycopg.connect(migrated_database) as connection:
        shares.revoke(connection, open_link.share.share_id)
    assert client.get(open_link.path).status_code == 404
    assert client.get(other.path).status_code == 200
    assert "token" not in repr(open_link) and open_link.token not in repr(open_link)


def test_a_shared_link_with_a_password(migrated_database: str) -> None:
    add_site(migrated_database, "example.com")
    with psycopg.connect(migrated_database) as connection:
        link = shares.create(connection, "example.com", OTHER_PASSWORD)
        second = shares.create(connection, "example.com", OTHER_PASSWORD)
    now, clock = Now(), Monotonic()
    app = make_app(migrated_database, now, LoginThrottle(clock=clock, account_free=3))
    client = browser(app)
    assert client.get(link.path).text == "locked"
    gate = f"{link.path}/password"
    form = client.get(gate)
    assert (
        form.status_code == 200
        and "frame-ancestors 'none'" in form.headers["content-security-policy"]
    )
    csrf = hidden(form.text, "csrf")
    assert f"Path={link.path};" in set_cookies(form)["picolytics_form"]
    assert client.post(gate, data={"password": OTHER_PASSWORD}).status_code == 403  # no CSRF
    wrong = [
        client.post(gate, data={"csrf": csrf, "password": PASSWORD}).status_code for _ in range(3)
    ]
    assert wrong == [401, 401, 401]
    throttled = client.post(gate, data={"csrf": csrf, "password": OTHER_PASSWORD})
    assert (throttled.status_code, throttled.headers["retry-after"]) == (429, "1")
    clock.at += 1
    opened = client.post(gate, data={"csrf": csrf, "password": OTHER_PASSWORD})
    assert (opened.status_code, opened.headers["location"]) == (303, link.path)
    cookie = set_cookies(opened)[SHARE_COOKIE]
    assert f"Path={link.path};" in cookie and "HttpOnly" in cookie
    assert client.get(link.path).text == "example.com"
    # The cookie opens this link only, and only until it ends.
    value = client.cookies[SHARE_COOKIE]
    elsewhere = browser(app)
    elsewhere.cookies.set(SHARE_COOKIE, value)
    assert elsewhere.get(second.path).text == "locked"
    assert elsewhere.get(link.path).text == "example.com"
    forged = browser(app)
    forged.cookies.set(SHARE_COOKIE, str(int(now.at.timestamp()) + 10**6) + "." + "A" * 43)
    assert forged.get(link.path).text == "locked"
    now.at += timedelta(days=14)
    assert elsewhere.get(link.path).text == "locked"


# --- pages and settings ---------------------------------------------------------------------------


def test_the_pages_are_plain_accessible_forms(migrated_database: str) -> None:
    client = browser(make_app(migrated_database, Now(), LoginThrottle(clock=Monotonic())))
    form = client.get("/dashboard/login")
    headers = form.headers
    policy = headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src" not in policy
    assert "frame-ancestors 'none'" in policy and "form-action 'self'" in policy
    assert (headers["x-frame-options"], headers["referrer-policy"]) == ("DENY", "no-referrer")
    assert headers["cache-control"] == "no-store"
    assert "<script" not in form.text and '<html lang="en">' in form.text
    for name in ("email", "password"):
        assert (
            f'<label for="{name}">' in form.text
            and f'<input id="{name}" name="{name}"' in form.text
        )
    assert 'autocomplete="username"' in form.text and 'autocomplete="current-password"' in form.text
    style = re.search(r"<style>(.*)</style>", form.text)
    assert style is not None
    digest = hashlib.sha256(style.group(1).encode()).digest()
    assert f"'sha256-{base64.b64encode(digest).decode()}'" in policy  # the one style allowed
    wrong = login(client, '"><script>alert(1)</script>@x.org', "whatever!!")
    assert "<script>" not in wrong.text and "&lt;script&gt;" in wrong.text


def test_the_dashboard_settings() -> None:
    config = load_config(None, {})
    assert (config.dashboard_enabled, config.dashboard_session_days) == (True, 14)
    config = load_config(None, {"DASHBOARD_ENABLED": "false", "DASHBOARD_SESSION_DAYS": "30"})
    assert (config.dashboard_enabled, config.dashboard_session_days) == (False, 30)
    for days in ("0", "366", "x"):
        with pytest.raises(ConfigError, match="DASHBOARD_SESSION_DAYS"):
            load_config(None, {"DASHBOARD_SESSION_DAYS": days})
    assert COOKIE_PATH == "/dashboard"


def test_an_old_cheaper_hash_is_upgraded_at_login(migrated_database: str) -> None:
    add_user(migrated_database)
    salt = b"0123456789abcdef"
    key = hashlib.scrypt(PASSWORD.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)
    old = f"scrypt$16384$8$1${passwords._b64(salt)}${passwords._b64(key)}"
    query(migrated_database, "UPDATE dashboard_users SET password_hash = %s RETURNING 1", (old,))
    client = browser(make_app(migrated_database, Now(), LoginThrottle(clock=Monotonic())))
    assert login(client).status_code == 303
    (stored,) = query(migrated_database, "SELECT password_hash FROM dashboard_users")[0]
    assert stored.startswith("scrypt$32768$8$1$") and passwords.verify_password(stored, PASSWORD)
