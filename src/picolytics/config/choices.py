"""The closed sets of values a choice setting takes, each said once, as a `Literal`.

The settings table validates against `get_args` of these types and their consumers
(the server selection, the log format, the client-IP extractor) are annotated with
them, so a value outside a set is a mypy error in code and a ConfigError at startup.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

# SERVER: the HTTP server of the public port (uvicorn is a pip extra).
ServerName = Literal["hypercorn", "uvicorn"]
SERVER_NAMES: Final[tuple[ServerName, ...]] = get_args(ServerName)

# LOG_FORMAT: one JSON object per line, or plain text for a terminal.
LogFormat = Literal["json", "text"]
LOG_FORMATS: Final[tuple[LogFormat, ...]] = get_args(LogFormat)

# IP_EXTRACTOR: the direct peer, X-Forwarded-For or X-Real-IP (ingest/clientip.py).
IpExtractor = Literal["direct", "xff", "realip"]
IP_EXTRACTORS: Final[tuple[IpExtractor, ...]] = get_args(IpExtractor)

# PGSSLMODE: libpq's sslmode values, passed through to the connection string.
SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]
SSL_MODES: Final[tuple[SslMode, ...]] = get_args(SslMode)
