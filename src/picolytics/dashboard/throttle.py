"""Login throttling: failed attempts per account and per client, with exponential
backoff.

Each account (the address as typed, case-folded, whether an account has it or not)
and each client address has a count of failed attempts. The first few are free
(`ACCOUNT_FREE` for an account, `CLIENT_FREE` for a client, which may be many people
behind one NAT); after that each further attempt must wait `BASE_S` x 2^(failures -
free) seconds since the last one, at most `MAX_S`. A count is forgotten after
`FORGET_S` without failures, and a successful login clears its account's.

An attempt is counted before its password is checked (`attempt`), and taken back if
it succeeds (`succeeded`): attempts that run at once cannot all pass the check
before any of them is counted. Per process, like the other rate limits; the table is
bounded, and keyed by a keyed hash, so it holds no address in clear.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable

ACCOUNT_FREE = 5
CLIENT_FREE = 20
BASE_S = 1.0
MAX_S = 900.0  # 15 minutes
FORGET_S = 3600.0
MAX_ENTRIES = 10_000


class LoginThrottle:
    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        account_free: int = ACCOUNT_FREE,
        client_free: int = CLIENT_FREE,
        max_entries: int = MAX_ENTRIES,
    ) -> None:
        self.clock = clock
        self.free = {"account": account_free, "client": client_free}
        self.max_entries = max_entries
        self._secret = secrets.token_bytes(32)  # per process: keys mean nothing outside
        self._failures: OrderedDict[bytes, tuple[int, float]] = OrderedDict()

    def _key(self, kind: str, value: str) -> bytes:
        data = f"{kind}\0{value}".encode("utf-8", "surrogatepass")
        return hashlib.blake2b(data, key=self._secret, digest_size=16).digest()

    def _count(self, key: bytes, now: float) -> tuple[int, float]:
        failures, last = self._failures.get(key, (0, now))
        if now - last > FORGET_S:
            self._failures.pop(key, None)
            return 0, now
        return failures, last

    def _wait(self, kind: str, key: bytes, now: float) -> float:
        failures, last = self._count(key, now)
        free = self.free[kind]
        if failures < free:
            return 0.0
        delay = min(MAX_S, BASE_S * 2.0 ** min(failures - free, 64))
        return max(0.0, last + delay - now)

    def _add(self, key: bytes, change: int, now: float) -> None:
        failures, last = self._count(key, now)
        failures = max(0, failures + change)
        if failures:
            # A failure restarts the wait; taking one back leaves the time as it was.
            self._failures[key] = (failures, now if change > 0 else last)
            self._failures.move_to_end(key)
        else:
            self._failures.pop(key, None)
        while len(self._failures) > self.max_entries:
            self._failures.popitem(last=False)  # the longest quiet goes first

    def attempt(self, account: str, client: str) -> int:
        """0 if this attempt may go ahead (it is counted as failed until `succeeded`),
        else the whole seconds to wait, at least 1 (nothing is counted)."""
        now = self.clock()
        keys = {"account": self._key("account", account), "client": self._key("client", client)}
        wait = max(self._wait(kind, key, now) for kind, key in keys.items())
        if wait > 0:
            return max(1, math.ceil(wait - 1e-9))
        for key in keys.values():
            self._add(key, 1, now)
        return 0

    def succeeded(self, account: str, client: str) -> None:
        """The attempt was right: the account starts afresh, the client's is taken back."""
        now = self.clock()
        self._failures.pop(self._key("account", account), None)
        self._add(self._key("client", client), -1, now)
