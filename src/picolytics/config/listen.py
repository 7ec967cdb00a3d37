"""Listening addresses ("host:port", ":port", "[v6]:port"): one parser for the config
check, the server that binds them and the TLS manager that names them."""

from __future__ import annotations

import ipaddress


def split_listen_addr(value: str) -> tuple[str, int]:
    """Split "host:port", ":port" or "[v6]:port" into host and port."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError("expected host:port, e.g. :8080 or 127.0.0.1:8080")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError("port must be between 0 and 65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        ipaddress.IPv6Address(host)
    elif ":" in host:
        raise ValueError("put an IPv6 address in brackets, e.g. [::1]:8080")
    return host, port
