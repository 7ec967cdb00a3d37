"""Per-client token buckets: REQUEST_RATE_LIMIT events per second, burst equal to the rate.

A client is an IPv4 address, or an IPv6 network of RATE_LIMIT_IPV6_PREFIX bits (64 by
default): one subscriber gets a whole /64 (often a /56 or /48), so keying by the full
address would give anyone 2**64 buckets, and rotating through them would push other
clients' buckets out. Buckets are keyed by Python's per-process randomised hash of
that client, so the bucket table holds no raw IP (the few thousand most recent
addresses sit in a cache of their networks, as in ingest/clientip.py, which saves
parsing them again for every event). Memory is bounded: when the table is full,
buckets that have refilled completely (and so carry no state worth keeping) are
forgotten first, and if that is not enough, the oldest half.
"""

from __future__ import annotations

import functools
import ipaddress
import time
from collections.abc import Callable

DEFAULT_MAX_CLIENTS = 100_000
DEFAULT_IPV6_PREFIX = 64


@functools.lru_cache(maxsize=4096)
def client_key(address: str, ipv6_prefix: int = DEFAULT_IPV6_PREFIX) -> str:
    """The client an address counts as: an IPv6 address's network of `ipv6_prefix`
    bits ("2001:db8::/64"), anything else as it is (IPv4, or "" when unknown)."""
    if ":" not in address:
        return address
    try:
        network = ipaddress.IPv6Network((address.partition("%")[0], ipv6_prefix), strict=False)
    except ValueError:
        return address
    return str(network)


class RateLimiter:
    def __init__(
        self,
        rate: float,
        *,
        max_clients: int = DEFAULT_MAX_CLIENTS,
        ipv6_prefix: int = DEFAULT_IPV6_PREFIX,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 <= ipv6_prefix <= 128:
            raise ValueError(f"an IPv6 prefix length is 0 to 128, not {ipv6_prefix}")
        self.rate = rate
        self.ipv6_prefix = ipv6_prefix
        self.burst = max(rate, 1.0)  # below 1/s a client still gets one event at a time
        self.max_clients = max_clients
        self.clock = clock
        self._buckets: dict[int, tuple[float, float]] = {}  # key -> (tokens, updated at)

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, client: str) -> bool:
        """Take one token from the bucket of the client at this address (an IPv6
        address shares its network's); False when it is empty."""
        now = self.clock()
        key = hash(client_key(client, self.ipv6_prefix))
        bucket = self._buckets.pop(key, None)  # re-inserted below: dict order ~ recency
        if bucket is None:
            if len(self._buckets) >= self.max_clients:
                self._evict(now)
            tokens = self.burst
        else:
            tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        allowed = tokens >= 1
        self._buckets[key] = (tokens - 1 if allowed else tokens, now)
        return allowed

    def _evict(self, now: float) -> None:
        full_after = self.burst / self.rate
        self._buckets = {
            key: bucket for key, bucket in self._buckets.items() if now - bucket[1] < full_after
        }
        if len(self._buckets) >= self.max_clients:
            keep = list(self._buckets.items())[len(self._buckets) // 2 :]
            self._buckets = dict(keep)
