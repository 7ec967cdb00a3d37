"""The client's IP address: the direct peer, or a forwarded header from a trusted proxy.

Forwarded headers are believed only when the direct peer is inside TRUSTED_PROXIES;
otherwise anyone could claim any address. X-Forwarded-For is read from the right
(the hop our own proxy appended) and trusted proxies are skipped, so the first
untrusted address is the client, whatever a client put at the left of the list.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence

from starlette.requests import Request

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_address(text: str) -> Address | None:
    """An address from a header or socket: strips ports, brackets and IPv4-mapping."""
    text = text.strip()
    if text.startswith("["):  # [v6] or [v6]:port
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:  # v4:port
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class ClientIp:
    def __init__(self, extractor: str, trusted: Sequence[Network]) -> None:
        self.trusted = tuple(trusted)
        self._extract: Callable[[Address, Request], Address] = {
            "direct": self._direct,
            "xff": self._forwarded_for,
            "realip": self._real_ip,
        }[extractor]

    def is_trusted(self, address: Address) -> bool:
        return any(address in network for network in self.trusted)

    def __call__(self, request: Request) -> str:
        peer = parse_address(request.client.host) if request.client else None
        if peer is None:
            return ""
        return str(self._extract(peer, request))

    def _direct(self, peer: Address, request: Request) -> Address:
        return peer

    def _real_ip(self, peer: Address, request: Request) -> Address:
        if not self.is_trusted(peer):
            return peer
        claimed = parse_address(request.headers.get("x-real-ip", ""))
        return claimed if claimed is not None else peer

    def _forwarded_for(self, peer: Address, request: Request) -> Address:
        if not self.is_trusted(peer):
            return peer
        hops = ",".join(request.headers.getlist("x-forwarded-for")).split(",")
        client = peer
        for hop in reversed(hops):
            address = parse_address(hop)
            if address is None:
                break  # garbage: stop at the last address a trusted proxy vouched for
            client = address
            if not self.is_trusted(address):
                break
        return client
