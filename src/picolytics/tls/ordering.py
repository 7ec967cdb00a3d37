"""One certificate order over ACME (RFC 8555), with certbot's `acme` library (the
optional extra `picolytics[tls]`, imported only here and only when an order runs): the
account, registered once and kept in PostgreSQL; the order; its HTTP-01 challenges;
and, when the CA says no, a one-line reason for the log.

Everything here blocks (the acme client is synchronous), so it runs in a worker thread
with a database connection of its own.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING

from picolytics import __version__
from picolytics.config import Config
from picolytics.errors import first_line
from picolytics.tls import store as tls_store
from picolytics.tls.answers import ChallengeAnswers
from picolytics.tls.store import StoredCertificate
from picolytics.tls.timing import Timing

if TYPE_CHECKING:
    from acme import client as acme_client

log = logging.getLogger(__name__)

LETS_ENCRYPT_PRODUCTION = "https://acme-v02.api.letsencrypt.org/directory"
LETS_ENCRYPT_STAGING = "https://acme-staging-v02.api.letsencrypt.org/directory"


def directory_url(config: Config) -> str:
    if config.autotls_directory_url:
        return config.autotls_directory_url
    return LETS_ENCRYPT_STAGING if config.autotls_staging else LETS_ENCRYPT_PRODUCTION


class IssuanceError(Exception):
    """The CA refused or could not validate; the message says why, in one line."""


class AcmeOrderer:
    """Orders the certificate of one host from one ACME directory, proving control of
    the host over HTTP-01. One order at a time: the caller holds the issuance lock."""

    def __init__(
        self,
        *,
        host: str,
        directory_url: str,
        answers: ChallengeAnswers,
        email: str = "",
        ca_file: str = "",
        timing: Timing | None = None,
    ) -> None:
        self.host = host
        self.directory_url = directory_url
        self.answers = answers
        self.email = email
        self.ca_file = ca_file
        self.timing = timing or Timing()
        self.orders = 0  # orders placed by this process (for logs and tests)

    def order(self, connection: tls_store.Connection) -> StoredCertificate:
        """A new certificate, validated and issued (not stored yet)."""
        acme = self._client(connection)
        try:
            return self._order_with(connection, acme)
        finally:
            acme.net.session.close()

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
                self.answers.withdraw(connection, token)
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
        """Publish the answer of the authorization's HTTP-01 challenge, then ask the CA
        to validate it; returns the token to withdraw when the order is over."""
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
        ttl = int(self.timing.order_timeout.total_seconds()) + 60
        self.answers.publish(connection, token, str(validation), ttl)
        try:
            acme.answer_challenge(challenge, response)
        except BaseException:
            self.answers.withdraw(connection, token)  # the caller never sees this token
            raise
        return token


def _pem(private_key: object) -> bytes:
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415

    assert isinstance(private_key, ec.EllipticCurvePrivateKey)
    return private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def failure_reason(error: Exception) -> str:
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
        return f"the CA refused: {error.detail or error.code or first_line(error)}"
    # first_line: psycopg's messages run over several lines, and some errors have none.
    name, message = type(error).__name__, first_line(error)
    return name if message == name else f"{name}: {message}"
