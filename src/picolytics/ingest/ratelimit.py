"""Per-client token buckets: REQUEST_RATE_LIMIT events per second, burst equal to the rate.

Buckets are keyed by Python's per-process randomised hash of the client address, so
the limiter's memory holds no raw IP. Memory is bounded: when the table is full,
buckets that have refilled completely (and so carry no state worth keeping) are
forgotten first, and if that is not enough, the oldest half.
"""

from __future__ import annotations

import time
from collections.abc import Callable

DEFAULT_MAX_CLIENTS = 100_000


class RateLimiter:
    def __init__(
        self,
        rate: float,
        *,
        max_clients: int = DEFAULT_MAX_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = max(rate, 1.0)  # below 1/s a client still gets one event at a time
        self.max_clients = max_clients
        self.clock = clock
        self._buckets: dict[int, tuple[float, float]] = {}  # key -> (tokens, updated at)

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, client: str) -> bool:
        """Take one token from the client's bucket; False when it is empty."""
        now = self.clock()
        key = hash(client)
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
