"""Microseconds per `parse_event` call on typical tracker bodies (a benchmark, not a test).

Every call gets a new body and URL, as in real traffic. json.loads of one body is printed
as a yardstick: on a busy or slow machine the ratio says more than the absolute figure.
"""

from __future__ import annotations

import json
import timeit

from picolytics.collect import parse_event

NAMES = frozenset({"load", "visible", "hidden", "hashchange", "ping"})
ROUNDS = 50_000  # number * repeat below: every call sees a new URL


def typical_body(i: int) -> bytes:
    return json.dumps(
        {
            "n": "load",
            "l": f"https://www.example.com/blog/post-{i}?utm_source=newsletter&utm_medium=email",
            "r": f"https://news.ycombinator.com/item?id={i}",
            "lt": 812,
            "fb": 95,
            "sw": 1920,
            "sh": 1080,
            "pr": 1.5,
            "pd": 24,
            "tz": "Europe/Berlin",
        },
        separators=(",", ":"),
    ).encode()


def main() -> None:
    bodies = [typical_body(i) for i in range(ROUNDS)]
    it = iter(bodies)
    number, repeat = 10_000, 5
    parse = min(timeit.repeat(lambda: parse_event(next(it), NAMES), number=number, repeat=repeat))
    body = bodies[0]
    baseline = min(timeit.repeat(lambda: json.loads(body), number=number, repeat=repeat))
    print(f"body size: {len(body)} bytes")
    print(f"parse_event: {parse / number * 1e6:6.2f} us/call")
    print(f"json.loads:  {baseline / number * 1e6:6.2f} us/call")
    print(f"ratio:       {parse / baseline:6.1f}x")


if __name__ == "__main__":
    main()
