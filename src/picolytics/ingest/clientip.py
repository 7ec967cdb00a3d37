"""The client's IP address: the direct peer, or a forwarded header from a trusted proxy.

Forwarded headers are believed only when the direct peer is inside TRUSTED_PROXIES;
otherwise anyone could claim any address. X-Forwarded-For is read from the right
(the hop our own proxy appended) and trusted proxies are skipped, so the first
untrusted address is the client, whatever a client put at the left of the list.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Sequence

from picolytics.config import IpExtractor

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@functools.lru_cache(maxsize=4096)
def parse_address(text: str) -> Address | None:
    """An address from a header or socket: strips ports, brackets and IPv4-mapping.

    Cached: the same few proxies and clients repeat, and parsing costs microseconds.
    """
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
    def __init__(self, extractor: IpExtractor, trusted: Sequence[Network]) -> None:
        self.extractor = extractor
        self.trusted = tuple(trusted)
        self.is_trusted = functools.lru_cache(maxsize=4096)(self._is_trusted)

    def _is_trusted(self, address: Address) -> bool:
        return any(address in network for network in self.trusted)

    def extract(self, peer: str, forwarded_for: Sequence[str] = (), real_ip: str = "") -> str:
        """The client address, as text; "" when the peer address is unknown."""
        address = parse_address(peer)
        if address is None:
            return ""
        if self.extractor == "direct" or not self.is_trusted(address):
            return str(address)
        if self.extractor == "realip":
            claimed = parse_address(real_ip)
            return str(claimed if claimed is not None else address)
        return str(self._forwarded_for(address, forwarded_for))

    def _forwarded_for(self, peer: Address, headers: Sequence[str]) -> Address:
        client = peer
        for hop in reversed(",".join(headers).split(",")):
            address = parse_address(hop)
            if address is None:
                break  # garbage: stop at the last address a trusted proxy vouched for
            client = address
            if not self.is_trusted(address):
                break
        return client


def trust_note(extractor: IpExtractor, trusted: Sequence[Network]) -> str | None:
    """What the server believes of forwarded headers, for the startup log; None in
    `direct` mode, where it believes none."""
    if extractor == "direct":
        return None
    header = "X-Forwarded-For" if extractor == "xff" else "X-Real-IP"
    ranges = ", ".join(str(network) for network in trusted) or "none"
    return f"IP_EXTRACTOR={extractor}: {header} is believed from TRUSTED_PROXIES {ranges}"
