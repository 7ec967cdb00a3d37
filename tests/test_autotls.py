"""Automatic TLS against a real ACME server: Debian's `pebble` on loopback, validating
HTTP-01 challenges for real (no PEBBLE_VA_ALWAYS_VALID) by connecting to our port-80
listener. "localhost" is the host: pebble resolves it like any name, through the
system resolver (/etc/hosts), and tries our HTTP port.

Pebble's own ACME endpoint needs a TLS certificate, which Debian's package does not
ship: the test makes a throwaway CA for it (that is AUTOTLS_CA_FILE). The certificates
pebble issues chain to a root it generates at start and serves on its management
port; HTTPS requests to picolytics are verified against that root.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import importlib.util
import ipaddress
import json
import logging
import os
import shutil
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import httpx2 as httpx
import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from helpers.database import query
from helpers.processes import RunningServer, free_port, server_process
from psycopg import sql
from psycopg.conninfo import make_conninfo
from starlette.types import Receive, Scope, Send

from picolytics.config import Config, load_config
from picolytics.errors import ConfigError
from picolytics.serve.server import Listener, bind_all, serve_bound
from picolytics.tls import store as tls_store
from picolytics.tls.answers import ChallengeAnswers
from picolytics.tls.challenge_app import ChallengeApp
from picolytics.tls.endpoints import autotls_endpoints
from picolytics.tls.ordering import (
    LETS_ENCRYPT_PRODUCTION,
    LETS_ENCRYPT_STAGING,
    directory_url,
    failure_reason,
)
from picolytics.tls.renewal import CertificateManager
from picolytics.tls.timing import Timing

T = TypeVar("T")
PEBBLE = shutil.which("pebble")
needs_pebble = pytest.mark.skipif(
    PEBBLE is None, reason="Debian's pebble ACME test server is not installed (apt install pebble)"
)
HOST = "localhost"
DEADLINE_S = 30
# Short waits so the background loop reacts within the test; not timing assertions.
FAST = Timing(
    check_interval=timedelta(seconds=0.2),
    wait_for_other=timedelta(seconds=0.2),
    retry_min=timedelta(seconds=0.5),
    retry_max=timedelta(seconds=1),
    order_timeout=timedelta(seconds=20),
    network_timeout_s=10,
)
TLS_TABLES = ("tls_accounts", "tls_certificates", "tls_challenges")


# -- pebble --------------------------------------------------------------------------


@dataclass(frozen=True)
class Pebble:
    directory: str
    ca_file: Path  # verifies pebble's ACME endpoint
    root: ssl.SSLContext  # verifies the certificates pebble issues
    http_port: int  # where pebble sends HTTP-01 validation requests
    folder: Path


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _endpoint_certificate(folder: Path) -> None:
    """A throwaway CA and a certificate for 127.0.0.1 for pebble's own HTTPS."""
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "picolytics test ACME CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    (folder / "ca.pem").write_bytes(_pem(ca))
    (folder / "cert.pem").write_bytes(_pem(leaf))
    (folder / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


@pytest.fixture(scope="module")
def pebble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pebble]:
    assert PEBBLE is not None
    folder = tmp_path_factory.mktemp("pebble")
    _endpoint_certificate(folder)
    acme_port, management_port, http_port, tls_port = (free_port() for _ in range(4))
    config = {
        "pebble": {
            "listenAddress": f"127.0.0.1:{acme_port}",
            "managementListenAddress": f"127.0.0.1:{management_port}",
            "certificate": str(folder / "cert.pem"),
            "privateKey": str(folder / "key.pem"),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
    }
    (folder / "pebble.json").write_text(json.dumps(config))
    env = {
        **os.environ,
        "PEBBLE_VA_NOSLEEP": "1",  # validate at once instead of after 0-15 s
        "PEBBLE_WFE_NONCEREJECT": "0",  # acme retries a bad nonce once; keep the test exact
    }
    with (folder / "pebble.log").open("w") as log:
        process = subprocess.Popen(
            [PEBBLE, "-config", str(folder / "pebble.json")],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        endpoint = ssl.create_default_context(cafile=str(folder / "ca.pem"))
        root_pem = _wait_for(
            lambda: (
                httpx.get(
                    f"https://127.0.0.1:{management_port}/roots/0", verify=endpoint, timeout=2
                ).text
            ),
            "pebble did not start: " + (folder / "pebble.log").read_text(),
        )
        root = ssl.create_default_context(cadata=root_pem)
        yield Pebble(
            f"https://127.0.0.1:{acme_port}/dir", folder / "ca.pem", root, http_port, folder
        )
    finally:
        process.terminate()
        process.wait(10)


def _wait_for(attempt: Callable[[], T], failure: str) -> T:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        try:
            return attempt()
        except (OSError, httpx.TransportError, AssertionError):
            assert time.monotonic() < deadline, failure
            time.sleep(0.1)


# -- serving in this process -----------------------------------------------------------


async def hello(scope: Scope, receive: Receive, send: Send) -> None:
    """The public app stand-in: answers every request with "hello"."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})


@contextlib.contextmanager
def serving(listeners: list[Listener]) -> Iterator[None]:
    """serve_bound() on its own event loop in a thread, stopped (gracefully) after."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stop: list[asyncio.Event] = []
    failures: list[BaseException] = []
    with contextlib.ExitStack() as stack:
        bound = bind_all(stack, listeners)

        async def main() -> None:
            stop.append(asyncio.Event())
            ready.set()
            await serve_bound(bound, stop[0])

        def target() -> None:
            try:
                loop.run_until_complete(main())
            except BaseException as error:
                failures.append(error)
            finally:
                ready.set()

        thread = threading.Thread(target=target, name="test-serve")
        thread.start()
        ready.wait(DEADLINE_S)
        try:
            yield
        finally:
            if stop:
                loop.call_soon_threadsafe(stop[0].set)
            thread.join(DEADLINE_S)
            assert not thread.is_alive(), "the servers did not stop"
            loop.close()
    assert not failures, failures


def build(config: Config, conninfo: str) -> tuple[CertificateManager, list[Listener]]:
    """The listeners `picolytics serve` builds from the endpoints (cli.py), serving
    `hello` as the public app."""
    tls = autotls_endpoints(config, conninfo, FAST)
    return tls.manager, [
        Listener(hello, tls.https_addr, "public", ssl_context=tls.ssl_context),
        Listener(tls.challenge_app, tls.http_addr, "HTTP (ACME challenges)"),
    ]


def autotls_config(pebble: Pebble, https_port: int, **extra: str) -> Config:
    return load_config(
        None,
        {
            "AUTOTLS_ENABLED": "true",
            "AUTOTLS_HOST": HOST,
            "AUTOTLS_DIRECTORY_URL": pebble.directory,
            "AUTOTLS_CA_FILE": str(pebble.ca_file),
            "AUTOTLS_HTTPS_ADDR": f"127.0.0.1:{https_port}",
            "AUTOTLS_HTTP_ADDR": f"127.0.0.1:{pebble.http_port}",
            **extra,
        },
    )


def peer_certificate(sock: object) -> x509.Certificate:
    assert isinstance(sock, ssl.SSLSocket)
    der = sock.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def served_certificate(port: int, root: ssl.SSLContext) -> x509.Certificate:
    """A new HTTPS connection to localhost:port, verified with pebble's root (host name
    included), one request; returns the certificate it was served."""
    connection = http.client.HTTPSConnection(HOST, port, context=root, timeout=5)
    try:
        connection.request("GET", "/")
        response = connection.getresponse()
        assert response.status == 200
        response.read()
        return peer_certificate(connection.sock)
    finally:
        connection.close()


def names(certificate: x509.Certificate) -> list[str]:
    extension = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return extension.value.get_values_for_type(x509.DNSName)


# -- the tests ---------------------------------------------------------------------------


@pytest.mark.external
@needs_pebble
def test_obtains_serves_redirects_and_renews_without_dropping_connections(
    pebble: Pebble, migrated_database: str
) -> None:
    https_port = free_port()
    config = autotls_config(pebble, https_port)
    manager, listeners = build(config, migrated_database)
    assert manager.current is None  # nothing stored yet
    with serving(listeners):
        first = _wait_for(
            lambda: served_certificate(https_port, pebble.root), "no certificate was served"
        )
        assert names(first) == [HOST]
        assert manager.orders == 1

        # Port 80: challenge path (unknown token: 404) and a redirect for the rest.
        http_base = f"http://127.0.0.1:{pebble.http_port}"
        missing = httpx.get(f"{http_base}/.well-known/acme-challenge/{'A' * 43}")
        assert missing.status_code == 404
        # Another instance's pending challenge: answered from the database.
        token = "T" * 43
        with tls_store.connect(migrated_database) as connection:
            tls_store.put_challenge(connection, token, f"{token}.thumbprint", 60)
        shared = httpx.get(f"{http_base}/.well-known/acme-challenge/{token}")
        assert (shared.status_code, shared.text) == (200, f"{token}.thumbprint")
        query(migrated_database, "DELETE FROM tls_challenges RETURNING token")
        for method in ("GET", "POST"):
            redirect = httpx.request(method, f"{http_base}/p/x%20y?a=1&b=2")
            assert redirect.status_code == 308
            assert redirect.headers["location"] == f"https://{HOST}:{https_port}/p/x%20y?a=1&b=2"

        # Stored: account, certificate (leaf first, then the chain), no challenge left.
        with tls_store.connect(migrated_database) as connection:
            stored = tls_store.load_certificate(connection, pebble.directory, HOST)
            assert tls_store.load_account(connection, pebble.directory) is not None
        assert stored is not None
        assert x509.load_pem_x509_certificate(stored.chain_pem) == first
        assert query(migrated_database, "SELECT count(*) FROM tls_challenges") == [(0,)]

        # A kept-alive connection made with the first certificate...
        kept = http.client.HTTPSConnection(HOST, https_port, context=pebble.root, timeout=5)
        kept.request("GET", "/")
        assert kept.getresponse().read() == b"hello"
        kept_socket = kept.sock
        # ...then the stored certificate enters the last third of its life (1 hour left).
        query(
            migrated_database,
            "UPDATE tls_certificates SET not_before = now() - interval '89 days', "
            "not_after = now() + interval '1 hour' RETURNING host",
        )
        deadline = time.monotonic() + DEADLINE_S
        while True:
            kept.request("GET", "/")  # the old connection keeps working throughout
            assert kept.getresponse().read() == b"hello"
            assert kept.sock is kept_socket
            renewed = served_certificate(https_port, pebble.root)
            if renewed != first:
                break
            assert time.monotonic() < deadline, "the certificate was not renewed"
            time.sleep(0.2)
        assert peer_certificate(kept.sock) == first  # not re-handshaken, not dropped
        kept.close()
        assert names(renewed) == [HOST]
        assert manager.orders == 2
        with tls_store.connect(migrated_database) as connection:
            stored = tls_store.load_certificate(connection, pebble.directory, HOST)
        assert stored is not None
        assert x509.load_pem_x509_certificate(stored.chain_pem) == renewed
        assert stored.not_after > datetime.now(UTC) + timedelta(days=30)


@pytest.mark.external
@needs_pebble
def test_two_instances_share_one_order(pebble: Pebble, migrated_database: str) -> None:
    """Two managers on one database: the advisory lock lets one order; the other waits
    and installs the stored result. Only the first serves port 80, so when the second
    wins the lock, its challenge answer reaches the CA through the database."""
    https_port = free_port()
    config = autotls_config(pebble, https_port)
    first, listeners = build(config, migrated_database)
    second = CertificateManager.from_config(config, migrated_database, FAST)
    alongside = Listener(ChallengeApp(second, 443), "127.0.0.1:0", "second instance")
    with serving([*listeners, alongside]):
        _wait_for(lambda: _assert_installed(first, second), "both did not get a certificate")
    assert first.orders + second.orders == 1
    assert first.current == second.current
    assert query(migrated_database, "SELECT count(*) FROM tls_accounts") == [(1,)]


def _assert_installed(*managers: CertificateManager) -> None:
    assert all(manager.current is not None for manager in managers)


@pytest.mark.external
@needs_pebble
def test_failed_challenge_is_logged_and_retried_while_port_80_keeps_serving(
    pebble: Pebble, migrated_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Port 80 is elsewhere: the CA's validation request finds nobody on its port.
    https_port, http_port = free_port(), free_port()
    config = autotls_config(pebble, https_port, AUTOTLS_HTTP_ADDR=f"127.0.0.1:{http_port}")
    caplog.set_level("INFO", logger="picolytics.tls")
    manager, listeners = build(config, migrated_database)
    with serving(listeners):
        _wait_for(
            lambda: _assert_logged(caplog, "could not validate the challenge", times=2),
            "no failure logged",
        )
        redirect = httpx.get(f"http://127.0.0.1:{http_port}/")
        assert redirect.status_code == 308
        with pytest.raises(ssl.SSLError):  # no certificate to offer yet
            served_certificate(https_port, pebble.root)
    assert manager.current is None
    failure = next(r for r in caplog.records if "could not validate" in r.getMessage())
    assert "retrying in" in failure.getMessage()
    assert "port 80 is reachable" in failure.getMessage()


def _assert_logged(caplog: pytest.LogCaptureFixture, text: str, times: int) -> None:
    assert sum(text in record.getMessage() for record in caplog.records) >= times


@pytest.mark.external
@needs_pebble
def test_restart_reuses_the_stored_account_and_certificate(
    pebble: Pebble, migrated_database: str, tmp_path: Path
) -> None:
    """`picolytics serve` as a real process, twice: the second start orders nothing."""
    https_port = free_port()
    settings = {
        "AUTOTLS_ENABLED": "true",
        "AUTOTLS_HOST": HOST,
        "AUTOTLS_DIRECTORY_URL": pebble.directory,
        "AUTOTLS_CA_FILE": str(pebble.ca_file),
        "AUTOTLS_HTTPS_ADDR": f"127.0.0.1:{https_port}",
        "AUTOTLS_HTTP_ADDR": f"127.0.0.1:{pebble.http_port}",
        "GEO_IP_FILE": "",
    }

    def https_answers(server: RunningServer) -> x509.Certificate:
        return served_certificate(https_port, pebble.root)

    served = []
    for run in (1, 2):
        with server_process(
            migrated_database,
            tmp_path,
            settings,
            log_name=f"server{run}.log",
            ready=https_answers,
            start_timeout_s=DEADLINE_S,
        ) as server:
            served.append(https_answers(server))
            redirect = httpx.get(f"http://127.0.0.1:{pebble.http_port}/pico.js")
            assert redirect.headers["location"] == f"https://{HOST}:{https_port}/pico.js"
            if run == 1:
                issued = query(migrated_database, "SELECT issued_at FROM tls_certificates")
            assert server.stop(DEADLINE_S) == 0, server.log()
        log = server.log()
        assert f"listening on https://127.0.0.1:{https_port}/" in log
        assert ("ordering a certificate" in log) == (run == 1), log
    assert served[0] == served[1]
    assert query(migrated_database, "SELECT issued_at FROM tls_certificates") == issued
    assert query(migrated_database, "SELECT count(*) FROM tls_accounts") == [(1,)]


@pytest.mark.external
@needs_pebble
def test_an_account_the_ca_forgot_is_registered_again(
    pebble: Pebble, migrated_database: str
) -> None:
    """A stored account the CA does not know (a test CA restarted, say): the order is
    refused with accountDoesNotExist, so the same key registers again and the order
    goes through."""
    key = ec.generate_private_key(ec.SECP256R1())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    forgotten = pebble.directory.replace("/dir", "/my-account/999999")
    with tls_store.connect(migrated_database) as connection:
        tls_store.save_account(
            connection, pebble.directory, tls_store.StoredAccount(key_pem, forgotten)
        )
    https_port = free_port()
    manager, listeners = build(autotls_config(pebble, https_port), migrated_database)
    with serving(listeners):
        _wait_for(lambda: _assert_installed(manager), "no certificate")
    ((account_url, stored_key),) = query(
        migrated_database, "SELECT account_url, key_pem FROM tls_accounts"
    )
    assert account_url != forgotten
    assert stored_key == key_pem.decode()
    assert manager.orders == 1


def test_the_reader_role_cannot_read_tls_material(
    migrated_database: str, admin_conninfo: str
) -> None:
    name = f"tlsreader_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_conninfo, autocommit=True) as connection:
        connection.execute(
            sql.SQL("CREATE ROLE {} LOGIN IN ROLE picolytics_reader").format(sql.Identifier(name))
        )
    try:
        # Granting the reader everything it should have changes nothing here.
        query(migrated_database, "SELECT picolytics_grant_reader()")
        reader = make_conninfo(migrated_database, user=name)
        assert query(reader, "SELECT count(*) FROM sites") == [(0,)]  # it can read the rest
        for table in TLS_TABLES:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                query(reader, f"SELECT * FROM {table}")
            assert query(
                migrated_database,
                "SELECT has_table_privilege('picolytics_reader', %s, 'SELECT')",
                (table,),
            ) == [(False,)]
    finally:
        with psycopg.connect(admin_conninfo, autocommit=True) as connection:
            connection.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


# -- configuration -----------------------------------------------------------------------


def test_directory_defaults_to_lets_encrypt_staging_then_production() -> None:
    config = load_config(None, {"AUTOTLS_ENABLED": "true", "AUTOTLS_HOST": "stats.example.com"})
    assert directory_url(config) == LETS_ENCRYPT_STAGING
    assert (config.autotls_https_addr, config.autotls_http_addr) == (":443", ":80")
    production = replace(config, autotls_staging=False)
    assert directory_url(production) == LETS_ENCRYPT_PRODUCTION
    other = replace(config, autotls_directory_url="https://ca.example/dir")
    assert directory_url(other) == "https://ca.example/dir"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"AUTOTLS_DIRECTORY_URL": "http://ca.example/dir"}, r"AUTOTLS_DIRECTORY_URL .*https://"),
        ({"AUTOTLS_DIRECTORY_URL": "/dir"}, r"AUTOTLS_DIRECTORY_URL .*absolute"),
        ({"AUTOTLS_HTTPS_ADDR": "443"}, r"AUTOTLS_HTTPS_ADDR .*host:port"),
        ({"AUTOTLS_HTTP_ADDR": ":99999"}, r"AUTOTLS_HTTP_ADDR .*port"),
        ({"AUTOTLS_EMAIL": "nobody"}, r"AUTOTLS_EMAIL .*e-mail"),
        ({"AUTOTLS_CA_FILE": "/nonexistent/ca.pem"}, r"AUTOTLS_CA_FILE .*no such file"),
        ({"AUTOTLS_ENABLED": "true"}, r"AUTOTLS_HOST .*required"),
        ({"AUTOTLS_ENABLED": "true", "AUTOTLS_HOST": "192.0.2.1"}, r"AUTOTLS_HOST .*no IP"),
        (
            {"AUTOTLS_ENABLED": "true", "AUTOTLS_HOST": "https://stats.example.com"},
            r"AUTOTLS_HOST .*DNS name",
        ),
        (
            {"AUTOTLS_ENABLED": "true", "AUTOTLS_HOST": "stats.example.com:443"},
            r"AUTOTLS_HOST .*DNS name",
        ),
        (
            {"AUTOTLS_ENABLED": "true", "AUTOTLS_HOST": "stats.example.com", "WORKERS": "2"},
            r"WORKERS .*autotlsEnabled",
        ),
    ],
)
def test_bad_autotls_settings_are_refused(settings: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, settings)


def test_email_and_ca_file_are_optional(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("")
    config = load_config(
        None,
        {
            "AUTOTLS_ENABLED": "true",
            "AUTOTLS_HOST": "stats.example.com",
            "AUTOTLS_EMAIL": "ops@example.com",
            "AUTOTLS_CA_FILE": str(ca),
        },
    )
    assert (config.autotls_email, config.autotls_ca_file) == ("ops@example.com", str(ca))


def test_certificate_renewal_is_due_in_the_last_third_of_its_life() -> None:
    manager = CertificateManager(host=HOST, directory_url="https://ca/dir", conninfo="")
    start = datetime(2030, 1, 1, tzinfo=UTC)
    certificate = tls_store.StoredCertificate(b"", b"", start, start + timedelta(days=90))
    assert manager.renew_at(certificate) == start + timedelta(days=60)


def test_a_missing_acme_library_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec

    def without_acme(name: str, package: str | None = None) -> object:
        return None if name == "acme" else real_find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", without_acme)
    with pytest.raises(ConfigError, match=r"AUTOTLS_ENABLED .*picolytics\[tls\]"):
        load_config(None, {"AUTOTLS_ENABLED": "true", "AUTOTLS_HOST": "stats.example.com"})


# -- failures in the renewal loop ----------------------------------------------------------


def test_the_retry_delay_doubles_up_to_its_cap_and_never_overflows() -> None:
    timing = Timing()
    minutes = [timing.retry_delay(n).total_seconds() / 60 for n in range(1, 9)]
    assert minutes == [5, 10, 20, 40, 80, 160, 240, 240]
    # retry_min * 2 ** 39 is beyond timedelta: a week of failures must not end the loop.
    assert timing.retry_delay(10_000) == timing.retry_max


def test_a_failure_without_a_message_still_has_a_reason() -> None:
    assert failure_reason(TimeoutError()) == "TimeoutError"
    assert failure_reason(OSError("refused\nhint: is it running?")) == "OSError: refused"


def test_the_renewal_loop_survives_failures(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    no_wait = Timing(retry_min=timedelta(0), retry_max=timedelta(0))
    manager = CertificateManager(
        host=HOST, directory_url="https://ca/dir", conninfo="", timing=no_wait
    )
    rounds: list[int] = []

    def failing_round() -> tuple[tls_store.StoredCertificate | None, timedelta]:
        rounds.append(len(rounds))
        raise (ValueError() if len(rounds) % 2 else StopIteration())  # no message; odd types

    monkeypatch.setattr(manager, "_refresh", failing_round)

    async def main() -> None:
        task = asyncio.create_task(manager.run())
        while len(rounds) < 4 and not task.done():
            await asyncio.sleep(0.01)
        assert not task.done(), "the loop ended"
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(asyncio.wait_for(main(), DEADLINE_S))
    failures = [r.getMessage() for r in caplog.records if "no certificate for" in r.getMessage()]
    assert len(failures) >= 3
    assert ": ValueError; " in failures[0]
    assert ": RuntimeError: StopIteration; " in failures[1]


def test_a_token_with_a_trailing_newline_is_refused_without_a_query(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`^...$` lets "token\\n" through (`$` also matches before a final newline), and a
    refused token must cost no database query: port 80 is open to anyone."""
    answers = ChallengeAnswers("host=/nonexistent-picolytics-socket dbname=x connect_timeout=1")
    token = "T" * 43
    answers._mine[token] = f"{token}.thumbprint"

    assert asyncio.run(answers.find(token)) == f"{token}.thumbprint"
    with caplog.at_level(logging.WARNING, logger="picolytics"):
        for bad in (f"{token}\n", f"\n{token}", f"{token}\r\n", "short\n"):
            assert asyncio.run(answers.find(bad)) is None
    assert caplog.records == []  # no lookup was tried (it would fail and warn)
