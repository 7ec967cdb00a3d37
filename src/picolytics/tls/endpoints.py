"""What the server listens with when AUTOTLS_ENABLED is set, instead of LISTEN_ADDR: the
public app over HTTPS on AUTOTLS_HTTPS_ADDR with the managed TLS context, and the
challenge app on AUTOTLS_HTTP_ADDR.

This package sits below the serving layer, so it builds no listeners: it hands over the
addresses, the context and the app, and the caller builds its listeners from them.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from picolytics.config import Config, split_listen_addr
from picolytics.tls.challenge_app import ChallengeApp
from picolytics.tls.renewal import CertificateManager
from picolytics.tls.timing import Timing


@dataclass(frozen=True)
class AutoTlsEndpoints:
    manager: CertificateManager
    https_addr: str  # serve the public app here, with ssl_context
    ssl_context: ssl.SSLContext  # one for the listener's whole life; renewals load into it
    http_addr: str  # serve challenge_app here
    challenge_app: ChallengeApp  # its lifespan runs the renewal loop


def autotls_endpoints(
    config: Config, conninfo: str, timing: Timing | None = None
) -> AutoTlsEndpoints:
    """The endpoints around one certificate manager, which has installed the stored
    certificate, if there is one."""
    manager = CertificateManager.from_config(config, conninfo, timing)
    manager.load_stored()
    _, https_port = split_listen_addr(config.autotls_https_addr)
    return AutoTlsEndpoints(
        manager=manager,
        https_addr=config.autotls_https_addr,
        ssl_context=manager.context,
        http_addr=config.autotls_http_addr,
        challenge_app=ChallengeApp(manager, https_port),
    )
