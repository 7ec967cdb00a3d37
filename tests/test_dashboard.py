"""The reporting views, the read-only role and the sample Grafana dashboard.

A known dataset is written through `store.write_batch` (so sessions, bounces and entry
and exit pages come from the real session logic), then every SQL query of the
dashboard runs, with Grafana's macros expanded, as a login role that is only a member
of `picolytics_reader`, and the numbers are checked exactly.

The dataset, on site example.com, within the last 3 hours:
  visitor A: visit 1  "/" (from news.example), ping, "/pricing"          2 pageviews
             a "visible" event alone 1 h later: a session, but no visit  0 pageviews
             visit 2  "/blog" (utm newsletter/email/launch), hidden       1, bounce
  visitor B: visit 3  "/" (from search.example), nav "/docs",
                      hashchange "/docs#/install", an in-page anchor,
                      "/pricing"                                          4 pageviews
             visit 4  "/pricing", visible                                 1, bounce
  visitor C: visit 5  in the last 4 minutes: "/" (utm newsletter/email/
                      launch), nav "/blog", hashchange "/blog#/post-1",
                      ping, nav "/pricing"                                4 pageviews
=> 3 visitors, 5 visits, 12 pageviews, 2 bounces (40 %), average visit 80 s
   (60 + 10 + 120 + 30 + 180) / 5, 2.4 pages per visit, 1 current visitor.
The dataset is `dataset` in tests/helpers/reporting.py, which tests/test_report.py
shares. Plus custom events (`custom_dataset`, here), inside visits that are engaged
anyway and within their first and last event (so no number above changes): visit 1 a
signup {plan: pro} on "/" and an engagement event; visit 3 a download on "/docs" and
an outbound click on "/docs#/install"; visit 5 a signup {plan: pro, seats: 3} on
"/blog" and an outbound click on "/blog#/post-1".
Outside the filters: a visit to other.org, a visit to example.com 3 days ago, bot
counts of other.org and of 10 days ago.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from helpers.database import query, reader_login
from helpers.events import run, write
from helpers.reporting import (
    GUIDE,
    OTHER_SITE,
    PRIVATE_TABLES,
    READABLE_TABLES,
    REPO,
    REPO_URL,
    SITE,
    VIEWS,
    A,
    B,
    C,
    all_panels,
    bots,
    dataset,
    expand,
    load_dashboard,
    page_event,
    sql_panels,
)

from picolytics.events import QueuedEvent

ROOT = Path(__file__).resolve().parent.parent
METRICS_SOURCE = ROOT / "src" / "picolytics" / "serve" / "metrics.py"


def custom_dataset(now: datetime) -> list[QueuedEvent]:
    """Custom events and an engagement event, inside visits 1, 3 and 5 (see above)."""
    base = now - timedelta(hours=3)
    s = timedelta(seconds=1)
    return [
        page_event(base + 5 * s, A, "signup", "/", props={"plan": "pro"}),
        page_event(base + 50 * s, A, "engagement", "/", engaged_ms=45_000, scroll_depth=80),
        page_event(base + 625 * s, B, "download", "/docs", props={"url": GUIDE}),
        page_event(base + 645 * s, B, "outbound", "/docs", hash_path="#/install", props=REPO_URL),
        page_event(now - 175 * s, C, "signup", "/blog", props={"plan": "pro", "seats": 3}),
        page_event(now - 115 * s, C, "outbound", "/blog", hash_path="#/post-1", props=REPO_URL),
    ]


@dataclass(frozen=True)
class Seeded:
    conninfo: str  # as the migrating superuser
    reader: str  # as a login role that is only a member of picolytics_reader
    now: datetime


@pytest.fixture(scope="module")
def seeded(module_database: str, admin_conninfo: str) -> Iterator[Seeded]:
    now = datetime.now(UTC)
    run(write(module_database, dataset(now) + custom_dataset(now), bots(now.date())))
    for reader in reader_login(admin_conninfo, module_database):
        yield Seeded(module_database, reader, now)


def sqlstring_event(sql: str, event: str) -> str:
    """Grafana's `${event:sqlstring}`: the value quoted, its quotes doubled."""
    return sql.replace("${event:sqlstring}", "'" + event.replace("'", "''") + "'")


def run_panel(
    seeded: Seeded, title: str, sites: tuple[str, ...] = (SITE,), event: str = "signup"
) -> dict[str, Any]:
    """Run every query of a panel as the dashboard's reader role: refId -> rows."""
    (panel,) = [panel for panel in sql_panels() if panel["title"] == title]
    results: dict[str, Any] = {}
    with psycopg.connect(seeded.reader) as connection:
        for target in panel["targets"]:
            text = expand(
                sqlstring_event(target["rawSql"], event),
                start=seeded.now - timedelta(hours=6),
                end=seeded.now,
                interval="1h",
                sites=list(sites),
                event=event,
            )
            results[target["refId"]] = connection.execute(text.encode()).fetchall()
    return results


def rows(
    seeded: Seeded, title: str, sites: tuple[str, ...] = (SITE,), event: str = "signup"
) -> list[tuple[Any, ...]]:
    return list(run_panel(seeded, title, sites, event)["A"])


def value(seeded: Seeded, title: str, sites: tuple[str, ...] = (SITE,)) -> Any:
    ((result,),) = rows(seeded, title, sites)
    return result


# The expected result of every SQL panel on the dataset above (site example.com).
EXPECTED: dict[str, Any] = {
    "Visitors": 3,
    "Visits": 5,
    "Pageviews": 12,
    "Bounce rate": Decimal("40.0"),
    "Visit duration": Decimal("80.0"),
    "Pages per visit": Decimal("2.40"),
    "Current visitors": 1,
    "Top pages": [
        ("/pricing", 4, 3),
        ("/", 3, 3),
        ("/blog", 2, 2),
        ("/blog#/post-1", 1, 1),
        ("/docs", 1, 1),
        ("/docs#/install", 1, 1),
    ],
    "Sources": [
        ("newsletter", 2, 2),
        ("(direct)", 1, 1),
        ("news.example", 1, 1),
        ("search.example", 1, 1),
    ],
    "Entry pages": [
        ("/", 3, Decimal("0.0")),
        ("/blog", 1, Decimal("100.0")),
        ("/pricing", 1, Decimal("100.0")),
    ],
    "Exit pages": [("/pricing", 4), ("/blog", 1)],
    "Countries": [("DE", 2), ("US", 2), ("FR", 1)],
    "Campaigns": [("newsletter", "email", "launch", 2, 2, 5)],
    "Browsers": [("Chrome", 2), ("Firefox", 2), ("Mobile Safari", 1)],
    "Operating systems": [("Mac OS X", 2), ("Windows", 2), ("iOS", 1)],
    "Devices": [("desktop", 4), ("mobile", 1)],
    "Bots filtered": [("crawler_list", 7), ("empty_ua", 2)],
    # Custom events: not the pageviews, pings, visibility or engagement events.
    "Top custom events": [
        ("outbound", 2, 2, Decimal("66.7")),  # of 3 visitors
        ("signup", 2, 2, Decimal("66.7")),
        ("download", 1, 1, Decimal("33.3")),
    ],
    "Event properties": [("plan", "pro", 2, 2), ("seats", "3", 1, 1)],  # of signup
    "Conversions by page": [
        ("download", "/docs", 1, 1, Decimal("100.0")),
        ("outbound", "/blog#/post-1", 1, 1, Decimal("100.0")),
        ("outbound", "/docs#/install", 1, 1, Decimal("100.0")),
        ("signup", "/", 1, 3, Decimal("33.3")),  # visits 1, 3 and 5 viewed "/"
        ("signup", "/blog", 1, 2, Decimal("50.0")),  # visits 2 and 5 viewed "/blog"
    ],
    "Outbound links and downloads": [("outbound", REPO, 2, 2), ("download", GUIDE, 1, 1)],
}


def test_every_sql_panel_has_checked_numbers() -> None:
    titles = {panel["title"] for panel in sql_panels()}
    assert titles == set(EXPECTED) | {"Pageviews and visitors"}


@pytest.mark.parametrize("title", sorted(EXPECTED))
def test_panel_numbers(seeded: Seeded, title: str) -> None:
    expected = EXPECTED[title]
    if isinstance(expected, list):
        assert rows(seeded, title) == expected
    else:
        assert value(seeded, title) == expected


def test_pageviews_over_time(seeded: Seeded) -> None:
    result = run_panel(seeded, "Pageviews and visitors")
    pageviews, visitors = result["A"], result["B"]
    assert sum(count for _, count in pageviews) == 12
    assert all(float(time) % 3600 == 0 for time, _ in pageviews + visitors)
    # Hourly buckets: every visit start is counted once, per visitor and hour.
    assert 3 <= sum(count for _, count in visitors) <= 5


def test_site_variable_filters_every_panel(seeded: Seeded) -> None:
    for panel in sql_panels():
        for target in panel["targets"]:
            assert "site IN ($site)" in target["rawSql"], panel["title"]
    assert value(seeded, "Visits", (OTHER_SITE,)) == 1
    assert value(seeded, "Pageviews", (OTHER_SITE,)) == 1
    assert value(seeded, "Bounce rate", (OTHER_SITE,)) == Decimal("100.0")
    assert rows(seeded, "Bots filtered", (OTHER_SITE,)) == [("parser_spider", 5)]
    assert rows(seeded, "Top custom events", (OTHER_SITE,)) == []
    assert value(seeded, "Visits", (SITE, OTHER_SITE)) == 6
    assert value(seeded, "Visitors", (SITE, OTHER_SITE)) == 4


def test_site_variable_query_lists_sites(seeded: Seeded) -> None:
    (variable,) = [v for v in load_dashboard()["templating"]["list"] if v["name"] == "site"]
    assert variable["multi"] and variable["includeAll"]
    with psycopg.connect(seeded.reader) as connection:
        sites = connection.execute(variable["query"].encode()).fetchall()
    assert sites == [(SITE,), (OTHER_SITE,)]


def test_event_variable_lists_custom_events_of_the_range(seeded: Seeded) -> None:
    (variable,) = [v for v in load_dashboard()["templating"]["list"] if v["name"] == "event"]
    # One event at a time (the panel quotes it), listed again when the range changes.
    assert not variable["multi"] and not variable["includeAll"] and variable["refresh"] == 2
    text = expand(
        variable["query"],
        start=seeded.now - timedelta(hours=6),
        end=seeded.now,
        interval="1h",
        sites=[SITE],
    )
    # Outbound links and downloads have a panel of their own.
    assert query(seeded.reader, text) == [("signup",)]


def test_event_variable_value_is_escaped(seeded: Seeded) -> None:
    assert rows(seeded, "Event properties", event="download") == [("url", GUIDE, 1, 1)]
    assert rows(seeded, "Event properties", event="it's'; DROP TABLE x; --") == []


def test_the_event_variable_is_quoted_by_grafana_not_by_the_sql() -> None:
    """`'$event'` relies on the data source doubling quotes in a single value; once the
    variable allows several values (or a data source does not), a name with a quote
    breaks out of the literal. `${event:sqlstring}` quotes and escapes in every case."""
    sqls = [target["rawSql"] for panel in sql_panels() for target in panel["targets"]]
    referencing = [sql for sql in sqls if re.search(r"\$\{?event\b", sql)]
    assert referencing, "no panel uses the event variable"
    for sql in referencing:
        assert re.findall(r"\$\{?event[^\s)]*", sql) == ["${event:sqlstring}"], sql


def test_dashboard_shape() -> None:
    dashboard = load_dashboard()
    assert dashboard["uid"] == "picolytics"
    rows_ = [panel["title"] for panel in dashboard["panels"] if panel["type"] == "row"]
    assert rows_ == ["Analytics", "Custom events", "Performance", "Host"]
    (attribution,) = [panel for panel in all_panels() if panel["type"] == "text"]
    assert (
        '<a href="https://db-ip.com">IP Geolocation by DB-IP</a>'
        in (attribution["options"]["content"])
    )
    ids = [panel["id"] for panel in all_panels()]
    assert len(ids) == len(set(ids))
    # Panels reference the data sources through the dashboard's data source variables,
    # so the same file works provisioned and imported into an existing Grafana.
    for panel in all_panels():
        if "datasource" in panel:
            assert panel["datasource"]["uid"] in ("${ds_postgres}", "${ds_metrics}")


def test_prometheus_panels_use_metrics_the_server_exports() -> None:
    source = METRICS_SOURCE.read_text(encoding="utf-8")
    names: set[str] = set()
    for panel in all_panels():
        if panel.get("datasource", {}).get("type") != "prometheus":
            continue
        for target in panel["targets"]:
            names.update(re.findall(r"\b((?:picolytics|process)_[a-z0-9_]+)\b", target["expr"]))
    assert len(names) >= 10
    for name in sorted(names):
        if name.startswith("process_"):
            continue  # prometheus_client's process collector
        base = re.sub(r"_(total|bucket|count|sum)$", "", name)
        assert f'"{base}"' in source, f"{name} is not defined in metrics.py"


# --- the views --------------------------------------------------------------------------


def test_views_are_documented(seeded: Seeded) -> None:
    found = query(
        seeded.conninfo,
        "SELECT c.relname, obj_description(c.oid, 'pg_class') FROM pg_class c "
        "WHERE c.relkind = 'v' AND c.relnamespace = current_schema()::regnamespace",
    )
    assert sorted(name for name, _ in found) == sorted(VIEWS)
    assert all(comment for _, comment in found)


def test_daily_views_add_up(seeded: Seeded) -> None:
    since = (seeded.now - timedelta(hours=6)).date()

    def total(view: str, column: str, where: str = "") -> Any:
        ((result,),) = query(
            seeded.reader,
            f"SELECT sum({column}) FROM {view} WHERE site = %s AND day >= %s {where}",
            (SITE, since),
        )
        return result

    assert total("daily_visitors", "visits") == 5
    assert total("daily_visitors", "pageviews") == 12
    assert total("daily_visitors", "bounces") == 2
    assert total("top_pages", "pageviews") == 12
    assert total("top_pages", "pageviews", "AND path = '/pricing'") == 4
    assert total("sources", "visits", "AND source = 'newsletter'") == 2
    assert total("entry_pages", "bounces") == 2
    assert total("exit_pages", "visits", "AND path = '/pricing'") == 4
    assert total("countries", "visits", "AND country = 'DE'") == 2
    assert total("browsers", "visits", "AND browser = 'Firefox'") == 2
    assert total("operating_systems", "visits", "AND os = 'iOS'") == 1
    assert total("devices", "visits", "AND device_type = 'mobile'") == 1
    assert total("campaigns", "pageviews") == 5
    assert total("bot_traffic", "hits") == 9
    # All time: the visit of 3 days ago and the old bot counts are there too.
    ((visits, pageviews),) = query(
        seeded.reader,
        "SELECT sum(visits), sum(pageviews) FROM daily_visitors WHERE site = %s",
        (SITE,),
    )
    assert (visits, pageviews) == (6, 13)


def test_visits_without_pageviews_are_not_visits(seeded: Seeded) -> None:
    ((sessions,),) = query(
        seeded.conninfo,
        "SELECT count(*) FROM sessions JOIN sites USING (site_id) "
        "WHERE domain = %s AND visitor_id = %s",
        (SITE, A),
    )
    assert sessions == 3  # two visits and the "visible" event alone
    ((visits,),) = query(seeded.reader, "SELECT count(*) FROM visits WHERE visitor_id = %s", (A,))
    assert visits == 2


def test_pageview_definition(seeded: Seeded) -> None:
    counted = query(
        seeded.reader,
        "SELECT name, count(*) FROM pageviews WHERE site = %s AND time > %s "
        "GROUP BY name ORDER BY name",
        (SITE, seeded.now - timedelta(hours=6)),
    )
    assert counted == [("hashchange", 2), ("load", 7), ("nav", 3)]
    ((events,),) = query(
        seeded.reader,
        "SELECT count(*) FROM events JOIN sites USING (site_id) "
        "WHERE domain = %s AND received_at > %s",
        (SITE, seeded.now - timedelta(hours=6)),
    )
    # 12 pageviews, 2 pings, 2 visible, 1 hidden, 1 anchor, 5 custom, 1 engagement
    assert events == 24


# --- the read-only role -------------------------------------------------------------------


@pytest.mark.parametrize("relation", VIEWS + READABLE_TABLES)
def test_reader_reads_views_and_analytics_tables(seeded: Seeded, relation: str) -> None:
    query(seeded.reader, f"SELECT * FROM {relation} LIMIT 1")


@pytest.mark.parametrize("relation", PRIVATE_TABLES)
def test_reader_cannot_read_private_tables(seeded: Seeded, relation: str) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        query(seeded.reader, f"SELECT * FROM {relation} LIMIT 1")


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO sites (domain) VALUES ('evil.example')",
        "UPDATE sessions SET pageviews = 0",
        "DELETE FROM events",
        "TRUNCATE bot_counts",
        "CREATE TABLE public.mine (x int)",
        "SELECT picolytics_grant_reader()",
        "SELECT picolytics_ensure_event_partitions(current_date + 100, 1)",
    ],
)
def test_reader_cannot_write(seeded: Seeded, statement: str) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        query(seeded.reader, statement)


def test_reader_privileges_are_exactly_the_granted_ones(seeded: Seeded) -> None:
    granted = query(
        seeded.conninfo,
        "SELECT table_name, privilege_type FROM information_schema.role_table_grants "
        "WHERE grantee = 'picolytics_reader' ORDER BY 1, 2",
    )
    assert granted == [(name, "SELECT") for name in sorted(VIEWS + READABLE_TABLES)]


def test_reader_reads_partitions_created_later_through_the_parent(
    migrated_database: str, admin_conninfo: str
) -> None:
    later = datetime.now(UTC) + timedelta(days=40)
    with psycopg.connect(migrated_database) as connection:
        connection.execute("SELECT picolytics_ensure_event_partitions(%s, 1)", (later.date(),))
    run(write(migrated_database, [page_event(later, A, "load", "/future")]))
    partition = f"events_{later:%Y%m%d}"
    for reader in reader_login(admin_conninfo, migrated_database):
        assert query(reader, "SELECT path FROM pageviews") == [("/future",)]
        assert query(reader, "SELECT path FROM events") == [("/future",)]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            query(reader, f"SELECT * FROM {partition}")


def test_grant_function_is_idempotent(migrated_database: str) -> None:
    assert query(migrated_database, "SELECT picolytics_grant_reader()") == [(True,)]
    assert query(migrated_database, "SELECT picolytics_grant_reader()") == [(True,)]
