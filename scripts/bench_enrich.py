"""Benchmark enrichment: µs per uncached and cached UA parse, and per GeoIP lookup.

Usage: python scripts/bench_enrich.py [GEOIP.mmdb]
Without an argument it uses MaxMind's small test database from tests/data/; pass a
real city database (e.g. DB-IP city lite) for realistic lookup figures.
UAs: the 100 top browser UAs plus every example from the crawler list (tests/data/).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from picolytics.enrich import agents
from picolytics.enrich.agents import AgentParser
from picolytics.enrich.geo import GeoLocator

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"


def per_call_us(func: Callable[[str], object], inputs: Sequence[str], rounds: int) -> float:
    """Best-of-3 mean µs per call over `rounds` passes through `inputs`."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(rounds):
            for item in inputs:
                func(item)
        best = min(best, time.perf_counter() - start)
    return best / (rounds * len(inputs)) * 1e6


def load_user_agents() -> tuple[list[str], list[str]]:
    browsers = json.loads((DATA / "top-user-agents.json").read_text(encoding="utf-8"))
    crawlers = json.loads((DATA / "crawler-user-agents.json").read_text(encoding="utf-8"))
    bots = [ua for entry in crawlers for ua in entry["instances"]]
    return browsers, bots


def bench_agents() -> None:
    browsers, bots = load_user_agents()
    start = time.perf_counter()
    uncached = AgentParser(cache_size=0)  # maxsize 0: every call parses
    print(f"AgentParser() construction: {(time.perf_counter() - start) * 1e3:.0f} ms")
    for label, uas in (("browsers", browsers), ("bots", bots)):
        us = per_call_us(uncached.parse, uas, 5)
        print(f"uncached parse, {label} ({len(uas)} UAs): {us:.1f} µs")
    cached = AgentParser()
    for ua in browsers:
        cached.parse(ua)
    print(f"cached parse (hit): {per_call_us(cached.parse, browsers, 200):.2f} µs")
    rust = agents._CrawlerMatcher(agents.load_crawler_patterns())
    python = agents._CrawlerMatcher(agents.load_crawler_patterns(), compiled=False)
    us = per_call_us(rust.matches, browsers, 20)
    print(f"crawler-list check alone, {rust.backend}: {us:.1f} µs")
    print(
        f"crawler-list check alone, {python.backend} re (fallback): "
        f"{per_call_us(python.matches, browsers, 1):.1f} µs"
    )


def bench_geoip(path: Path) -> None:
    locator = GeoLocator(path)
    ips = ["81.2.69.160", "89.160.20.112", "216.160.83.56", "2001:218::", "1.1.1.1", "8.8.8.8"]
    try:
        print(f"GeoIP lookup ({path.name}): {per_call_us(locator.lookup, ips, 20_000):.2f} µs")
        print(
            f"GeoIP lookup, invalid address: {per_call_us(locator.lookup, ['nope'], 20_000):.2f} µs"
        )
    finally:
        locator.close()


def main() -> None:
    bench_agents()
    bench_geoip(Path(sys.argv[1]) if len(sys.argv) > 1 else DATA / "GeoIP2-City-Test.mmdb")


if __name__ == "__main__":
    main()
