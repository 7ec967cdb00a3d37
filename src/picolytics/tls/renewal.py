"""Keeping a valid certificate installed: `CertificateManager` installs the stored
certificate at startup, then runs a loop that orders a new one in the last third of its
life, or installs the one another instance stored meanwhile.

Instances share certificates through PostgreSQL. An advisory lock makes sure only one
instance orders at a time; the others wait and pick the result up from the database.

Failures never stop the server, nor this loop: they are logged with the reason and
retried with a growing delay (`Timing.retry_delay`), while HTTPS goes on with the
certificate it has, and port 80 answers throughout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from picolytics.config import Config
from picolytics.errors import first_line
from picolytics.tls import store as tls_store
from picolytics.tls.answers import ChallengeAnswers
from picolytics.tls.context import install_certificate, server_ssl_context
from picolytics.tls.ordering import AcmeOrderer, directory_url, failure_reason
from picolytics.tls.store import StoredCertificate
from picolytics.tls.timing import Timing, describe

log = logging.getLogger(__name__)

T = TypeVar("T")


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
        self.timing = timing or Timing()
        self.context = server_ssl_context()
        self.current: StoredCertificate | None = None
        self.answers = ChallengeAnswers(conninfo)
        self.orderer = AcmeOrderer(
            host=host,
            directory_url=directory_url,
            answers=self.answers,
            email=email,
            ca_file=ca_file,
            timing=self.timing,
        )

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

    @property
    def orders(self) -> int:
        """Orders placed by this process (for logs and tests)."""
        return self.orderer.orders

    def install(self, certificate: StoredCertificate) -> None:
        """Serve the certificate from the next handshake on (the event loop's thread)."""
        install_certificate(self.context, certificate)
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
            log.warning("autotls: cannot read the stored certificate: %s", first_line(error))
            return False
        if stored is None:
            log.info("autotls: no certificate for %s stored yet", self.host)
            return False
        try:
            self.install(stored)
        except (ssl.SSLError, OSError) as error:
            log.warning("autotls: the stored certificate is unusable: %s", first_line(error))
            return False
        return True

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
                        stored = self.orderer.order(connection)
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
        """Keep a valid certificate installed, forever (cancel the task to stop). Any
        failure of a round is logged and retried; nothing but cancellation ends it."""
        failures = 0
        while True:
            try:
                certificate, sleep = await _run_in_daemon_thread(self._refresh)
                if certificate is not None:
                    self.install(certificate)
            except Exception as error:
                failures += 1
                sleep = self.timing.retry_delay(failures)
                log.error(  # noqa: TRY400 - the reason is the message; no traceback needed
                    "autotls: no certificate for %s from %s: %s; %s; retrying in %s",
                    self.host,
                    self.directory_url,
                    _reason(error),
                    "HTTPS goes on with the current certificate"
                    if self.current
                    else "HTTPS handshakes fail until there is one (port 80 answers)",
                    describe(sleep),
                )
            else:
                failures = 0
            await asyncio.sleep(sleep.total_seconds())

    async def close(self) -> None:
        await self.answers.close()


def _reason(error: Exception) -> str:
    """failure_reason, which must not end the loop by failing itself (it digs into the
    acme library's error objects)."""
    try:
        return failure_reason(error)
    except Exception:
        return first_line(error)


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
            if isinstance(error, StopIteration):
                # A future refuses StopIteration (TypeError): the task would wait forever.
                failure = RuntimeError("StopIteration")
                failure.__cause__ = error
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(settle, lambda: future.set_exception(failure))
        else:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, lambda: future.set_result(result))

    threading.Thread(target=work, name="picolytics-autotls", daemon=True).start()
    return future
