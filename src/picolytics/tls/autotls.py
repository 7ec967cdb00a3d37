"""Automatic TLS (AUTOTLS_ENABLED): a certificate for AUTOTLS_HOST from an ACME CA
(Let's Encrypt by default), HTTPS on AUTOTLS_HTTPS_ADDR, and on AUTOTLS_HTTP_ADDR the
HTTP-01 challenge answers plus a redirect of everything else to HTTPS.

The ACME client is certbot's `acme` library (the optional extra `picolytics[tls]`).
Account key, certificates and pending challenge answers live in PostgreSQL
(`tls_store`), so several instances share them, a restart reuses them, and whichever
instance the CA reaches can answer the challenge. An advisory lock makes sure only one
instance orders at a time; the others wait and pick the result up from the database.

The HTTPS listener serves one `ssl.SSLContext` for its whole life. A new certificate
(first issuance, renewal, or one another instance stored) is loaded into that same
context with `load_cert_chain`: OpenSSL copies the context's certificate into each new
connection when it is accepted, so later handshakes get the new certificate while
open connections carry on untouched. Until the first certificate is there, TLS
handshakes fail (no certificate to offer) and port 80 already answers.

Failures never stop the server: they are logged with the reason and retried with a
growing delay (5 minutes doubling to 4 hours, under Let's Encrypt's failed-validation
limit).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import ssl
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import quote

import psycopg
from starlette.types import ASGIApp, Receive, Scope, Send

from picolytics import __version__
from picolytics.config.listen import split_listen_addr
from picolytics.config.load import Config
from picolytics.serve.server import Listener
from picolytics.tls import store as tls_store
from picolytics.tls.store import StoredCertificate

if TYPE_CHECKING:
    from acme import client as acme_client

log = logging.getLogger(__name__)

T = TypeVar("T")

LETS_ENCRYPT_PRODUCTION = "https://acme-v02.api.letsencrypt.org/directory"
LETS_ENCRYPT_STAGING = "https://acme-staging-v02.api.letsencrypt.org/directory"

CHALLENGE_PREFIX = "/.well-known/acme-challenge/"
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,256}$")
# Hypercorn's defaults for its own TLS contexts.
CIPHERS = "ECDHE+AESGCM"
ALPN_PROTOCOLS = ["h2", "http/1.1"]


def directory_url(config: Config) -> str:
    if config.autotls_directory_url:
        return config.autotls_directory_url
    return LETS_ENCRYPT_STAGING if config.autotls_staging else LETS_ENCRYPT_PRODUCTION


class IssuanceError(Exception):
    """The CA refused or could not validate; the message says why, in one line."""


@dataclass(frozen=True)
class Timing:
    """When to look again. The defaults suit Let's Encrypt; tests shorten them."""

    # Renew once less than this fraction of the certificate's lifetime is left:
    # 30 days before expiry for a 90-day certificate.
    renew_fraction: float = 1 / 3
    # Wake-ups to compare expiry and the database (another instance may have renewed).
    check_interval: timedelta = timedelta(hours=1)
    # While another instance holds the issuance lock.
    wait_for_other: timedelta = timedelta(seconds=15)
    # After a failure: doubling from retry_min up to retry_max.
    retry_min: timedelta = timedelta(minutes=5)
    retry_max: timedelta = timedelta(hours=4)
    # How long one order may take (validation and finalisation polling).
    order_timeout: timedelta = timedelta(seconds=90)
    network_timeout_s: int = 15


def server_ssl_context() -> ssl.SSLContext:
    """The HTTPS listener's context, as Hypercorn builds its own, without a certificate yet."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.set_ciphers(CIPHERS)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION
    context.set_alpn_protocols(ALPN_PROTOCOLS)
    return context


def _run_in_daemon_thread(function: Callable[[], T]) -> asyncio.Future[T]:
    """Run blocking ACME/database work off the event loop. A daemon thread, not the
    default executor: shutdown must not wait for an order that is polling the CA
    (an interrupted order holds nothing: its lock goes with its connection)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(outcome: Callable[[], None]) -> None:
        if not future.done():
            outcome()

    def work() -> None:
        try:
            result = function()
        except BaseException as error:  # handed to the awaiting task
            failure = error
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(settle, lambda: future.set_exception(failure))
        else:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, lambda: future.set_result(result))

    threading.Thread(target=work, name="picolytics-autotls", daemon=True).start()
    return future


class CertificateManager:
    """Obtains, stores, renews and installs the certificate of one host."""

    def __init__(
        self,
        *,
        host: str,
        directory_url: str,
        conninfo: str,
        email: str = "",
        ca_file: str = "",
        timing: Timing | None = None,
    ) -> None:
        self.host = host
        self.directory_url = directory_url
        self.conninfo = conninfo
        self.email = email
        self.ca_file = ca_file
        self.timing = timing or Timing()
        self.context = server_ssl_context()
        self.current: StoredCertificate | None = None
        # token -> key authorization of this instance's pending challenges.
        self._answers: dict[str, str] = {}
        # One connection, one query at a time, for tokens of other instances' orders:
        # this path is open to anyone on port 80.
        self._lookup_lock = asyncio.Lock()
        self._lookup: psycopg.AsyncConnection[tuple[object, ...]] | None = None
        self.orders = 0  # orders placed by this process (for logs and tests)

    @classmethod
    def from_config(
        cls, config: Config, conninfo: str, timing: Timing | None = None
    ) -> CertificateManager:
        return cls(
            host=config.autotls_host,
            directory_url=directory_url(config),
            conninfo=conninfo,
            email=config.autotls_email,
            ca_file=config.autotls_ca_file,
            timing=timing,
        )

    # -- installing ---------------------------------------------------------------

    def install(self, certificate: StoredCertificate) -> None:
        """Load the certificate into the live context: new handshakes use it at once.
        Call it on the event loop's thread (the one that accepts connections)."""
        with tempfile.TemporaryDirectory(prefix="picolytics-tls-") as folder:
            chain_path = Path(folder, "chain.pem")
            key_path = Path(folder, "key.pem")
            for path, data in (
                (chain_path, certificate.chain_pem),
                (key_path, certificate.key_pem),
            ):
                descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(descriptor, "wb") as file:
                    file.write(data)
            self.context.load_cert_chain(chain_path, key_path)
        self.current = certificate
        log.info(
            "autotls: serving the certificate of %s, valid until %s",
            self.host,
            certificate.not_after.astimezone(UTC).isoformat(timespec="seconds"),
        )

    def load_stored(self) -> bool:
        """At startup: install the stored certificate, if any (expired or not: a renewal
        starts at once, and an expired certificate is still better than none)."""
        try:
            with tls_store.connect(self.conninfo) as connection:
                stored = tls_store.load_certificate(connection, self.directory_url, self.host)
        except Exception as error:
            log.warning("autotls: cannot read the stored certificate: %s", error)
            return False
        if stored is None:
            log.info("autotls: no certificate for %s stored yet", self.host)
            return False
        try:
            self.install(stored)
        except (ssl.SSLError, OSError) as error:
            log.warning("autotls: the stored certificate is unusable: %s", error)
            return False
        return True

    # -- deciding ------------------------------------------------------------------

    def renew_at(self, certificate: StoredCertificate) -> datetime:
        lifetime = certificate.not_after - certificate.not_before
        return certificate.not_after - lifetime * self.timing.renew_fraction

    def _fresh(self, certificate: StoredCertificate | None, now: datetime) -> bool:
        return certificate is not None and now < self.renew_at(certificate)

    def _refresh(self) -> tuple[StoredCertificate | None, timedelta]:
        """One round, in a worker thread: returns a certificate to install (if it
        differs from the current one) and how long to sleep before the next round."""
        with tls_store.connect(self.conninfo) as connection:
            stored = tls_store.load_certificate(connection, self.directory_url, self.host)
            now = datetime.now(UTC)
            if not self._fresh(stored, now):
                with tls_store.issuance_lock(connection, self.directory_url, self.host) as taken:
                    if not taken:
                        log.info(
                            "autotls: another instance is ordering the certificate of %s; "
                            "waiting for it",
                            self.host,
                        )
                        return self._changed(stored), self.timing.wait_for_other
                    # Someone may have finished just before we got the lock.
                    stored = tls_store.load_certificate(connection, self.directory_url, self.host)
                    if not self._fresh(stored, now):
                        stored = self._order(connection)
                        tls_store.save_certificate(
                            connection, self.directory_url, self.host, stored
                        )
        assert stored is not None
        until_renewal = self.renew_at(stored) - datetime.now(UTC)
        sleep = max(timedelta(0), min(self.timing.check_interval, until_renewal))
        return self._changed(stored), sleep

    def _changed(self, stored: StoredCertificate | None) -> StoredCertificate | None:
        if stored is None or (self.current and self.current.chain_pem == stored.chain_pem):
            return None
        return stored

    async def run(self) -> None:
        """Keep a valid certificate installed, forever (cancel the task to stop)."""
        failures = 0
        while True:
            try:
                certificate, sleep = await _run_in_daemon_thread(self._refresh)
                if certificate is not None:
                    self.install(certificate)
            except Exception as error:
                failures += 1
                sleep = min(self.timing.retry_min * 2 ** (failures - 1), self.timing.retry_max)
                log.error(  # noqa: TRY400 - the reason is the message; no traceback needed
                    "autotls: no certificate for %s from %s: %s; %s; retrying in %s",
                    self.host,
                    self.directory_url,
                    _reason(error),
                    "HTTPS goes on with the current certificate"
                    if self.current
                    else "HTTPS handshakes fail until there is one (port 80 answers)",
                    _duration(sleep),
                )
            else:
                failures = 0
            await asyncio.sleep(sleep.total_seconds())

    # -- ordering (worker thread) -------------------------------------------------

    def _client(self, connection: tls_store.Connection) -> acme_client.ClientV2:
        from acme import client, messages  # noqa: PLC0415 - the optional [tls] extra
        from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
        from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415
        from josepy.jwa import ES256  # noqa: PLC0415
        from josepy.jwk import JWKEC  # noqa: PLC0415

        stored = tls_store.load_account(connection, self.directory_url)
        if stored is not None:
            private_key = serialization.load_pem_private_key(stored.key_pem, password=None)
            assert isinstance(private_key, ec.EllipticCurvePrivateKey)
        else:
            private_key = ec.generate_private_key(ec.SECP256R1())
        network = client.ClientNetwork(
            JWKEC(key=private_key),
            alg=ES256,
            user_agent=f"picolytics/{__version__}",
            timeout=self.timing.network_timeout_s,
        )
        if self.ca_file:
            # requests takes a CA bundle path wherever it takes verify=True.
            network.verify_ssl = self.ca_file  # type: ignore[assignment]
        try:
            directory = client.ClientV2.get_directory(self.directory_url, network)
            acme = client.ClientV2(directory, network)
            if stored is not None:
                network.account = messages.RegistrationResource(
                    uri=stored.account_url, body=messages.Registration()
                )
            else:
                self._register(connection, acme, _pem(private_key))
        except BaseException:
            network.session.close()
            raise
        return acme

    def _register(
        self, connection: tls_store.Connection, acme: acme_client.ClientV2, key_pem: bytes
    ) -> None:
        from acme import messages  # noqa: PLC0415

        registration = messages.NewRegistration.from_data(
            email=self.email or None, terms_of_service_agreed=True
        )
        account = acme.new_account(registration)
        tls_store.save_account(
            connection, self.directory_url, tls_store.StoredAccount(key_pem, account.uri)
        )
        log.info("autotls: registered an ACME account at %s", self.directory_url)

    def _order(self, connection: tls_store.Connection) -> StoredCertificate:
        acme = self._client(connection)
        try:
            return self._order_with(connection, acme)
        finally:
            acme.net.session.close()

    def _order_with(
        self, connection: tls_store.Connection, acme: acme_client.ClientV2
    ) -> StoredCertificate:
        from acme import crypto_util, messages  # noqa: PLC0415
        from cryptography import x509  # noqa: PLC0415
        from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415

        key_pem = _pem(ec.generate_private_key(ec.SECP256R1()))
        csr = crypto_util.make_csr(key_pem, [self.host])
        log.info("autotls: ordering a certificate for %s from %s", self.host, self.directory_url)
        try:
            order = acme.new_order(csr)
        except messages.Error as error:
            if error.code != "accountDoesNotExist":
                raise
            # The CA forgot the stored account (a test CA restarted): register again.
            stored = tls_store.load_account(connection, self.directory_url)
            assert stored is not None
            acme.net.account = None
            self._register(connection, acme, stored.key_pem)
            order = acme.new_order(csr)
        self.orders += 1
        tokens: list[str] = []
        try:
            for authorization in order.authorizations:
                if authorization.body.status == messages.STATUS_VALID:
                    continue  # validated recently; the CA reuses it
                tokens.append(self._answer_http01(connection, acme, authorization))
            deadline = datetime.now() + self.timing.order_timeout  # acme compares naive times
            order = acme.poll_and_finalize(order, deadline)
        finally:
            for token in tokens:
                self._answers.pop(token, None)
                with contextlib.suppress(Exception):
                    tls_store.delete_challenge(connection, token)
        chain_pem = order.fullchain_pem.encode()
        leaf = x509.load_pem_x509_certificate(chain_pem)
        log.info("autotls: obtained a certificate for %s", self.host)
        return StoredCertificate(
            chain_pem, key_pem, leaf.not_valid_before_utc, leaf.not_valid_after_utc
        )

    def _answer_http01(
        self,
        connection: tls_store.Connection,
        acme: acme_client.ClientV2,
        authorization: object,
    ) -> str:
        from acme import challenges, messages  # noqa: PLC0415

        assert isinstance(authorization, messages.AuthorizationResource)
        offered = [
            challenge
            for challenge in authorization.body.challenges
            if isinstance(challenge.chall, challenges.HTTP01)
        ]
        if not offered:
            raise IssuanceError("the CA offered no http-01 challenge")
        challenge = offered[0]
        assert acme.net.key is not None
        response, validation = challenge.response_and_validation(acme.net.key)
        token = str(challenge.chall.encode("token"))
        self._answers[token] = str(validation)
        ttl = int(self.timing.order_timeout.total_seconds()) + 60
        tls_store.put_challenge(connection, token, str(validation), ttl)
        acme.answer_challenge(challenge, response)
        return token

    # -- answering (event loop) ---------------------------------------------------

    async def answer(self, token: str) -> str | None:
        """The key authorization for a challenge token, or None."""
        if not _TOKEN.match(token):
            return None
        if token in self._answers:
            return self._answers[token]
        async with self._lookup_lock:  # maybe another instance's order
            try:
                if self._lookup is None or self._lookup.closed:
                    self._lookup = await psycopg.AsyncConnection.connect(
                        self.conninfo, autocommit=True, connect_timeout=5
                    )
                return await tls_store.find_challenge(self._lookup, token)
            except psycopg.Error as error:
                log.warning("autotls: cannot look up an ACME challenge: %s", error)
                await self.close()
                return None

    async def close(self) -> None:
        if self._lookup is not None:
            with contextlib.suppress(psycopg.Error):
                await self._lookup.close()
            self._lookup = None


def _duration(span: timedelta) -> str:
    seconds = span.total_seconds()
    return f"{seconds:.3g} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def _pem(private_key: object) -> bytes:
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415

    assert isinstance(private_key, ec.EllipticCurvePrivateKey)
    return private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _reason(error: Exception) -> str:
    """One line saying why an order failed, with a hint for validation failures."""
    from acme import errors as acme_errors  # noqa: PLC0415
    from acme import messages  # noqa: PLC0415

    if isinstance(error, acme_errors.ValidationError):
        details = [
            str(challenge.error.detail or challenge.error)
            for authorization in error.failed_authzrs
            for challenge in authorization.body.challenges
            if challenge.error is not None
        ]
        return (
            f"the CA could not validate the challenge ({'; '.join(details)}); check that "
            "the host's DNS points to this server and that port 80 is reachable from the CA"
        )
    if isinstance(error, acme_errors.TimeoutError):
        return "the CA did not finish the order in time"
    if isinstance(error, messages.Error):
        return f"the CA refused: {error.detail or error.code or error}"
    return f"{type(error).__name__}: {error}"


class ChallengeApp:
    """Port 80: ACME HTTP-01 answers, and a 308 redirect to HTTPS for everything else.
    Its lifespan runs the certificate manager (issuance and renewal)."""

    def __init__(self, manager: CertificateManager, https_port: int) -> None:
        self.manager = manager
        port = "" if https_port in (0, 443) else f":{https_port}"
        self.https_origin = f"https://{manager.host}{port}"
        self._task: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._task = asyncio.create_task(self.manager.run(), name="autotls")
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._task is not None:
                    self._task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await self._task
                await self.manager.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, send: Send) -> None:
        path: str = scope["path"]
        if path.startswith(CHALLENGE_PREFIX):
            answer = await self.manager.answer(path.removeprefix(CHALLENGE_PREFIX))
            if answer is None:
                await _respond(send, 404, b"not found\n", [])
            else:
                await _respond(send, 200, answer.encode(), [])
            return
        query: bytes = scope.get("query_string", b"")
        location = self.https_origin + quote(path)
        if query:
            location += "?" + query.decode("latin-1")
        await _respond(send, 308, b"", [(b"location", location.encode("latin-1"))])


async def _respond(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def build(
    config: Config, conninfo: str, app: ASGIApp, timing: Timing | None = None
) -> tuple[CertificateManager, list[Listener]]:
    """The public app over HTTPS and the port-80 app, sharing one certificate manager
    (which has installed the stored certificate, if there is one)."""
    manager = CertificateManager.from_config(config, conninfo, timing)
    manager.load_stored()
    _, https_port = split_listen_addr(config.autotls_https_addr)
    return manager, [
        Listener(app, config.autotls_https_addr, "public", ssl_context=manager.context),
        Listener(
            ChallengeApp(manager, https_port),
            config.autotls_http_addr,
            "HTTP (ACME challenges, redirect to HTTPS)",
        ),
    ]


def listeners(config: Config, conninfo: str, app: ASGIApp) -> list[Listener]:
    """What `picolytics serve` runs instead of LISTEN_ADDR when AUTOTLS_ENABLED is set."""
    return build(config, conninfo, app)[1]
