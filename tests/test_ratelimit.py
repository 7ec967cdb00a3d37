"""REQUEST_RATE_LIMIT: token buckets per client, bounded memory (docs/guarantees.md, I5, R2)."""

from __future__ import annotations

from picolytics.ingest.ratelimit import RateLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_burst_equals_the_rate_then_refills() -> None:
    clock = FakeClock()
    limiter = RateLimiter(5, clock=clock)
    assert [limiter.allow("a") for _ in range(7)] == [True] * 5 + [False] * 2
    assert limiter.allow("b")  # buckets are per client
    clock.now += 0.2  # one token back at 5/s
    assert limiter.allow("a")
    assert not limiter.allow("a")
    clock.now += 10  # never more than the burst
    assert sum(limiter.allow("a") for _ in range(10)) == 5


def test_refused_requests_do_not_cost_tokens() -> None:
    clock = FakeClock()
    limiter = RateLimiter(2, clock=clock)
    for _ in range(100):
        limiter.allow("flood")
    clock.now += 0.5
    assert limiter.allow("flood")


def test_slow_rates_still_allow_one_event() -> None:
    clock = FakeClock()
    limiter = RateLimiter(0.5, clock=clock)
    assert limiter.allow("a")
    assert not limiter.allow("a")
    clock.now += 2
    assert limiter.allow("a")


def test_memory_is_bounded() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10, max_clients=1000, clock=clock)
    for number in range(50_000):
        limiter.allow(f"198.51.{number // 256}.{number % 256}")
        clock.now += 0.0001
    assert len(limiter) <= 1000
    # a client that keeps sending survives evictions: it stays limited throughout
    allowed = 0
    for number in range(5000):
        limiter.allow(f"203.0.{number // 256}.{number % 256}")
        allowed += limiter.allow("hot")
        clock.now += 0.0001
    assert 10 + 4 <= allowed <= 10 + 5  # its burst, then 10/s for the ~0.5 s that passed


def test_no_raw_address_is_kept() -> None:
    limiter = RateLimiter(1)
    limiter.allow("203.0.113.77")
    assert "203.0.113.77" not in repr(vars(limiter))
