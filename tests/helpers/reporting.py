"""The reporting dataset, the reader role's relations and the Grafana dashboard's
queries: shared by tests/test_dashboard.py (which documents the dataset and checks
every panel's numbers on it) and tests/test_report.py (the same numbers from
`picolytics report`)."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from helpers.events import PAGE
from picolytics.events import Agent, BotHit, Location, QueuedEvent, new_id

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "grafana" / "dashboards" / "picolytics.json"

# -- the dataset (described, with every number it yields, in tests/test_dashboard.py) --

SITE = "example.com"
OTHER_SITE = "other.org"
A, B, C, D, E = 1001, 2002, 3003, 4004, 5005
CHROME = Agent("Chrome", "120", "Windows", "10", "desktop", None)
FIREFOX = Agent("Firefox", "121", "Mac OS X", "14", "desktop", None)
SAFARI = Agent("Mobile Safari", "17", "iOS", "17", "mobile", None)
BERLIN = Location("DE", "Berlin", "Berlin")
NEW_YORK = Location("US", "New York", "New York")
PARIS = Location("FR", "Île-de-France", "Paris")
PROFILE = {A: (CHROME, BERLIN), B: (FIREFOX, NEW_YORK), C: (SAFARI, PARIS)}
PROFILE |= {D: (CHROME, BERLIN), E: (CHROME, BERLIN)}
NEWSLETTER = {"utm_source": "newsletter", "utm_medium": "email", "utm_campaign": "launch"}
REPO = "https://github.com/picolytics/picolytics"
GUIDE = "https://example.com/files/guide.pdf"
REPO_URL = {"url": REPO}

# -- what the read-only role picolytics_reader may read, and what it must not -----------

VIEWS = [
    "pageviews",
    "visits",
    "daily_visitors",
    "top_pages",
    "sources",
    "entry_pages",
    "exit_pages",
    "countries",
    "browsers",
    "operating_systems",
    "devices",
    "campaigns",
    "bot_traffic",
    "custom_events",
    "daily_custom_events",
    "custom_event_props",
    "conversion_pages",
    "page_engagement",
]
READABLE_TABLES = ["sites", "sessions", "events", "bot_counts"]
# The read model's rollups, and which rolled days are stale (0006_read_model.sql): the
# query layer reads both.
READABLE_TABLES += ["rollup_days", "rollup_stale", "rollup_visits", "rollup_events"]
READABLE_TABLES += ["rollup_hours", "rollup_segment_visits", "rollup_segment_events"]
READABLE_TABLES += ["rollup_segment_splits"]
READABLE_TABLES += ["goals"]  # sql/0010_goals.sql: the query layer reads the goals
# sql/0014_imports.sql: the imported history, aggregates only; sql/0016_open_day.sql:
# which open days have a prefix rollup.
READABLE_TABLES += ["imports", "imported_days", "rollup_prefix"]
READABLE_TABLES += [
    f"imported_{name}"
    for name in (
        "visitors", "sources", "pages", "entry_pages", "exit_pages", "custom_events",
        "locations", "devices", "browsers", "operating_systems",
    )
]  # fmt: skip
PRIVATE_TABLES = ["daily_salts", "visitor_sessions", "schema_migrations", "api_keys"]
PRIVATE_TABLES += [f"dashboard_{name}" for name in ("users", "sessions", "setup_tokens", "shares")]


# -- the dataset's events -----------------------------------------------------------------


def page_event(
    at: datetime, visitor: int, name: str, path: str, site: str = SITE, **fields: Any
) -> QueuedEvent:
    agent, location = PROFILE[visitor]
    page = replace(PAGE, name=name, path=path, site=site, **fields)
    return QueuedEvent(at, new_id(), visitor, None, page, location, agent)


def dataset(now: datetime) -> list[QueuedEvent]:
    base = now - timedelta(hours=3)
    s = timedelta(seconds=1)
    return [
        # visitor A
        page_event(base, A, "load", "/", referrer_host="news.example"),
        page_event(base + 30 * s, A, "ping", "/"),
        page_event(base + 60 * s, A, "load", "/pricing"),
        page_event(base + timedelta(hours=1), A, "visible", "/pricing"),
        page_event(base + timedelta(hours=2), A, "load", "/blog", **NEWSLETTER),
        page_event(base + timedelta(hours=2) + 10 * s, A, "hidden", "/blog"),
        # visitor B
        page_event(base + 600 * s, B, "load", "/", referrer_host="search.example"),
        page_event(base + 620 * s, B, "nav", "/docs"),
        page_event(base + 640 * s, B, "hashchange", "/docs", hash_path="#/install"),
        page_event(base + 650 * s, B, "hashchange", "/docs"),  # an in-page anchor
        page_event(base + 720 * s, B, "load", "/pricing"),
        page_event(base + timedelta(hours=1), B, "load", "/pricing"),
        page_event(base + timedelta(hours=1) + 30 * s, B, "visible", "/pricing"),
        # visitor C, on the site right now
        page_event(now - 240 * s, C, "load", "/", **NEWSLETTER),
        page_event(now - 180 * s, C, "nav", "/blog"),
        page_event(now - 120 * s, C, "hashchange", "/blog", hash_path="#/post-1"),
        page_event(now - 90 * s, C, "ping", "/blog"),
        page_event(now - 60 * s, C, "nav", "/pricing"),
        # outside the filters: another site, and long ago
        page_event(base + 300 * s, D, "load", "/", site=OTHER_SITE),
        page_event(now - timedelta(days=3), E, "load", "/old"),
    ]


def bots(today: date) -> dict[BotHit, int]:
    return {
        BotHit(SITE, today, "crawler_list"): 7,
        BotHit(SITE, today, "empty_ua"): 2,
        BotHit(SITE, today - timedelta(days=10), "crawler_list"): 100,
        BotHit(OTHER_SITE, today, "parser_spider"): 5,
    }


# --- Grafana's macros, as the PostgreSQL data source expands them ---------------------

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def seconds(duration: str) -> int:
    match = re.fullmatch(r"(\d+)([smhd])", duration.strip().strip("'"))
    assert match, duration
    return int(match.group(1)) * _UNITS[match.group(2)]


def quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def expand(
    text: str,
    *,
    start: datetime,
    end: datetime,
    interval: str,
    sites: list[str],
    event: str = "signup",
) -> str:
    """Expand exactly the macros and variables the dashboard uses; fail on any other."""
    iso = "%Y-%m-%dT%H:%M:%SZ"
    start_text, end_text = quote(start.strftime(iso)), quote(end.strftime(iso))
    # Variables first (Grafana interpolates them before the data source's macros).
    # A multi-value variable becomes a quoted, comma-separated list.
    values = ",".join(quote(site) for site in sites)
    text = text.replace("${site}", values)
    text = re.sub(r"\$site\b", values, text)
    # A single-value one is inserted with its quotes doubled but unquoted: the SQL
    # quotes it (Grafana's SqlDatasource.interpolateVariable).
    escaped = event.replace("'", "''")
    text = text.replace("${event}", escaped)
    text = re.sub(r"\$event\b", escaped, text)
    text = re.sub(r"\$__interval\b", interval, text)
    text = re.sub(
        r"\$__timeFilter\(([^()]+)\)",
        lambda m: f"{m.group(1).strip()} BETWEEN {start_text} AND {end_text}",
        text,
    )
    text = text.replace("$__timeFrom()", start_text).replace("$__timeTo()", end_text)

    def group(match: re.Match[str]) -> str:
        column, step = match.group(1).strip(), seconds(match.group(2))
        return f'floor(extract(epoch from {column})/{step})*{step} AS "time"'

    text = re.sub(r"\$__timeGroupAlias\(([^,()]+),([^()]+)\)", group, text)
    assert "$" not in text, f"unexpanded macro or variable in:\n{text}"
    return text


def load_dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def all_panels() -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = []
    for panel in load_dashboard()["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return panels


def sql_panels() -> list[dict[str, Any]]:
    return [
        panel
        for panel in all_panels()
        if panel.get("datasource", {}).get("type") == "grafana-postgresql-datasource"
    ]
