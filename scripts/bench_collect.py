"""Microseconds per body parse on typical bodies (a benchmark, not a test).

Three kinds of body: a /p page load, a /p custom event with properties, and a
Plausible /api/event pageview. Every call gets a new body and URL, as in real traffic.
json.loads of one body is printed as a yardstick: on a busy or slow machine the ratio
says more than the absolute figure.
"""

from __future__ import annotations

import json
import re
import timeit
from collections.abc import Callable

from picolytics.events import EventNames, PageEvent
from picolytics.ingest.collect import parse_event
from picolytics.ingest.plausible import parse_plausible_event

NAMES = EventNames(
    frozenset({"load", "visible", "hidden", "hashchange", "ping"}), re.compile(r"[A-Za-z]+")
)
ROUNDS = 50_000  # number * repeat below: every call sees a new URL


def page_load(i: int) -> dict[str, object]:
    return {
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
    }


def custom_event(i: int) -> dict[str, object]:
    props = {"plan": "pro", "seats": i % 50, "yearly": True, "coupon": f"SPRING{i}"}
    return {**page_load(i), "n": "Signup", "p": props}


def plausible_pageview(i: int) -> dict[str, object]:
    return {
        "n": "pageview",
        "v": 36,
        "u": f"https://www.example.com/blog/post-{i}?utm_source=newsletter",
        "d": "example.com",
        "r": f"https://news.ycombinator.com/item?id={i}",
    }


def measure(
    label: str,
    make: Callable[[int], dict[str, object]],
    parse: Callable[[bytes, EventNames], PageEvent],
) -> None:
    bodies = [json.dumps(make(i), separators=(",", ":")).encode() for i in range(ROUNDS)]
    it = iter(bodies)
    number, repeat = 10_000, 5
    parsed = min(timeit.repeat(lambda: parse(next(it), NAMES), number=number, repeat=repeat))
    body = bodies[0]
    baseline = min(timeit.repeat(lambda: json.loads(body), number=number, repeat=repeat))
    print(
        f"{label:<28} {len(body):4d} bytes  {parsed / number * 1e6:6.2f} us/call  "
        f"json.loads {baseline / number * 1e6:5.2f} us  ratio {parsed / baseline:4.1f}x"
    )


def main() -> None:
    measure("/p page load", page_load, parse_event)
    measure("/p custom event, 4 props", custom_event, parse_event)
    measure("/api/event pageview", plausible_pageview, parse_plausible_event)


if __name__ == "__main__":
    main()
