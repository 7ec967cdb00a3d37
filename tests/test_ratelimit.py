"""REQUEST_RATE_LIMIT: token buckets per client (an IPv6 client is its /64), bounded memory
(docs/guarantees.md, I5, R2)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from picolytics.config import Config, load_config
from picolytics.enrich.agents import AgentParser
from picolytics.enrich.geo import GeoLocator
from picolytics.enrich.visitor import SaltCache
from picolytics.errors import ConfigError
from picolytics.ingest.clientip import ClientIp
from picolytics.ingest.endpoint import Ingest
from picolytics.ingest.ratelimit import RateLimiter, client_key
from picolytics.storage.pipeline import Pipeline


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


def test_an_ipv6_client_is_its_64_network() -> None:
    limiter = RateLimiter(2, clock=FakeClock())
    # one /64 rotating through addresses: all share a bucket
    rotating = [f"2001:db8:1:2::{number:x}" for number in range(1, 6)]
    assert [limiter.allow(address) for address in rotating] == [True, True, False, False, False]
    assert limiter.allow("2001:db8:1:3::1")  # the next /64 is another subscriber
    assert len(limiter) == 2
    assert client_key("2001:db8:1:2:aaaa:bbbb:cccc:dddd") == "2001:db8:1:2::/64"


def test_ipv4_clients_stay_per_address() -> None:
    limiter = RateLimiter(1, clock=FakeClock())
    assert limiter.allow("198.51.100.1")
    assert limiter.allow("198.51.100.2")
    assert not limiter.allow("198.51.100.1")
    assert client_key("198.51.100.1") == "198.51.100.1"


@pytest.mark.parametrize(
    ("prefix", "shared"), [(56, "2001:db8:1:ff::9"), (48, "2001:db8:1:ff00::9")]
)
def test_the_ipv6_prefix_is_a_setting(prefix: int, shared: str) -> None:
    limiter = RateLimiter(1, ipv6_prefix=prefix, clock=FakeClock())
    assert limiter.allow("2001:db8:1::1")
    assert not limiter.allow(shared)  # inside the same /56 (or /48)
    assert limiter.allow("2001:db8:2::1")


@pytest.mark.parametrize("value", ["47", "65", "128"])
def test_the_ipv6_prefix_setting_is_48_to_64(value: str) -> None:
    with pytest.raises(ConfigError, match="RATE_LIMIT_IPV6_PREFIX"):
        load_config(None, {"RATE_LIMIT_IPV6_PREFIX": value})
    assert load_config(None, {"RATE_LIMIT_IPV6_PREFIX": "56"}).rate_limit_ipv6_prefix == 56
    assert load_config(None, {}).rate_limit_ipv6_prefix == 64


def test_the_ingest_handler_limits_ipv6_clients_by_network() -> None:
    limiter = Ingest(
        Config(request_rate_limit=1, rate_limit_ipv6_prefix=56),
        pipeline=Pipeline(
            "", queue_size=1, batch_max_size=1, batch_max_msec=1, session_timeout=timedelta(1)
        ),
        salts=SaltCache(timedelta(minutes=30)),
        geo=GeoLocator(None),
        agents=AgentParser(),
        client_ip=ClientIp("direct", ()),
    ).rate_limiter
    assert limiter is not None
    assert limiter.allow("2001:db8:1:100::1")
    assert not limiter.allow("2001:db8:1:1ff::1")
