"""The HTTPS listener's TLS context, and loading a certificate into it while it serves.

The listener serves one `ssl.SSLContext` for its whole life. A new certificate (first
issuance, renewal, or one another instance stored) is loaded into that same context with
`load_cert_chain`: OpenSSL copies the context's certificate into each new connection when
it is accepted, so later handshakes get the new certificate while open connections carry
on untouched. Until the first certificate is there, handshakes fail (no certificate to
offer).
"""

from __future__ import annotations

import os
import ssl
import tempfile
from pathlib import Path

from picolytics.tls.store import StoredCertificate

# Hypercorn's defaults for its own TLS contexts.
CIPHERS = "ECDHE+AESGCM"
ALPN_PROTOCOLS = ["h2", "http/1.1"]


def server_ssl_context() -> ssl.SSLContext:
    """The HTTPS listener's context, as Hypercorn builds its own, without a certificate yet."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.set_ciphers(CIPHERS)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION
    context.set_alpn_protocols(ALPN_PROTOCOLS)
    return context


def install_certificate(context: ssl.SSLContext, certificate: StoredCertificate) -> None:
    """Load the certificate into the live context: new handshakes use it at once. Call it
    on the event loop's thread (the one that accepts connections).

    `load_cert_chain` reads only files, so chain and key pass through a private temporary
    folder, the key file created 0600 before anything is written to it."""
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
        context.load_cert_chain(chain_path, key_path)
